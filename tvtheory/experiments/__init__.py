"""The experiments, one module each, all of one shape (docs/design.md, "Adding an experiment"):

  Config                         a dataclass (config.py blocks); conf/<name>.yaml holds only what differs from it
  TABLES                         the measurement tables ``run`` returns, in order (the first is the main one)
  run(cfg, ctx) -> tables        the computing: training and evaluation, cached per seed through ``ctx.store``
  analyse(tables, cfg) -> dict   pure: derived outputs (DataFrame -> csv, str -> md, dict -> json; "_" names stay
                                 in memory)
  claims(analysis, cfg)          the verdict records (claims.Claim)
  plot(tables, analysis, cfg, out)  the figures, from the tables alone
  estimate(cfg) -> runner.Cost   time and memory before any compute (the budget check)
  COST, AFTER                    measured seconds of the default run (one core, cold cache), and the experiments
                                 whose cache it reuses (the reproduce scheduler)

This package is the registry: every module here that does not start with "_" is an experiment.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

NAMES: tuple[str, ...] = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def get(name: str) -> ModuleType:
    if name not in NAMES:
        raise ValueError(f"experiment={name!r}: no such experiment (one of {', '.join(NAMES)})")
    return importlib.import_module(f"{__name__}.{name}")
