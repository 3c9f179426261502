"""Theorems 1-2 once per model option: tvtheory/experiments/assumptions.py (conf/assumptions.yaml)."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("assumptions")
