"""Corollaries 1-2, low-rank and pruned task vectors: tvtheory/experiments/corollaries.py (conf/corollaries.yaml)."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("corollaries")
