"""Theorem 3, Figure 2 and Table 2: tvtheory/experiments/ood.py (conf/ood.yaml)."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("ood")
