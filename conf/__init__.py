"""The Hydra configs, shipped with the package as ``tvtheory.conf`` (the defaults themselves live in the dataclasses
of tvtheory/config.py and tvtheory/experiments/; these files hold only what differs)."""
