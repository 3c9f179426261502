"""Unlearning by negation in a small LM, Table 3: tvtheory/experiments/unlearning.py (conf/unlearning.yaml)."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("unlearning")
