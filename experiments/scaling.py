"""beta against d and m, steps to eps against delta_*: tvtheory/experiments/scaling.py (conf/scaling.yaml)."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("scaling")
