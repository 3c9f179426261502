"""The paper's practical advice tested where alpha is known: tvtheory/experiments/practice.py (conf/practice.yaml)."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("practice")
