"""Colored-Digits, the paper's Colored-MNIST experiments offline: tvtheory/experiments/digits.py (conf/digits.yaml)."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("digits")
