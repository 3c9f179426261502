"""Theorems 1-2 beyond the paper's assumptions: tvtheory/experiments/beyond.py (conf/beyond.yaml)."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("beyond")
