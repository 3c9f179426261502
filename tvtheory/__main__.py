"""``python -m tvtheory <experiment> [key=value ...]``: run one experiment (tvtheory.cli)."""

from tvtheory.cli import main

main()
