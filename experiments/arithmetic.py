"""Theorems 1-2, Figure 1, Table 1 and the phase diagram: tvtheory/experiments/arithmetic.py (conf/arithmetic.yaml)."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("arithmetic")
