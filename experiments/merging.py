"""Model merging across task relations, tangent space, AdaMerging, k tasks: tvtheory/experiments/merging.py."""

from tvtheory.cli import main

if __name__ == "__main__":
    main("merging")
