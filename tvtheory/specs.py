"""Static run specifications and their checks: plain Python, no JAX, so a bad setting is reported in milliseconds.

``TaskSpec`` and ``TrainSpec`` are hashable NamedTuples, passed to jitted functions as static arguments.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tvtheory import _check

FORMS = ("merged", "four")


class TaskSpec(NamedTuple):
    """Static shape of a task's samples: P tokens, n_rel label-relevant, n_conf confusion, token noise sigma."""

    P: int = 20
    n_rel: int = 4
    n_conf: int = 2
    sigma: float = 0.0

    def validate(self) -> "TaskSpec":
        _check.integer("P", self.P, lo=1)
        _check.integer("n_conf", self.n_conf, lo=0)
        _check.integer("n_rel", self.n_rel, lo=1)
        if self.n_rel <= self.n_conf:
            _check.fail("n_rel", self.n_rel, f"must be > n_conf={self.n_conf} (the label is a majority vote)")
        if self.n_rel + self.n_conf > self.P:
            _check.fail("n_rel", self.n_rel, f"n_rel + n_conf must be <= P={self.P}")
        _check.in_range("sigma", self.sigma, lo=0.0)
        return self

    def max_distinct(self, M: int) -> int:
        """An upper bound on the distinct tokens of one sample with M irrelevant patterns: +mu and -mu and at most
        min(n_irr, M) patterns v_j, or P once noise makes every token unique."""
        if self.sigma > 0:
            return self.P
        n_irr = self.P - self.n_rel - self.n_conf
        return min(self.P, 1 + (self.n_conf > 0) + min(n_irr, M))


class TrainSpec(NamedTuple):
    """SGD with step size eta, batch B, T steps; log every ``log_every`` steps; optional fixed training set."""

    eta: float = 1.0
    batch: int = 64
    steps: int = 300
    log_every: int = 10
    n_train: int = 0            # 0: fresh samples every step

    def validate(self) -> "TrainSpec":
        _check.in_range("eta", self.eta, lo=0.0, lo_open=True)
        _check.integer("batch", self.batch, lo=1)
        _check.integer("steps", self.steps, lo=1)
        _check.integer("log_every", self.log_every, lo=1, hi=self.steps)
        _check.integer("n_train", self.n_train, lo=0)
        return self


def check_shape(d: int, m: int, form: str) -> None:
    _check.integer("d", d, lo=1)
    _check.integer("m", m, lo=1)
    if form not in FORMS:
        _check.fail("form", form, f"must be one of {FORMS}")


def check_ood_target(gammas: list, kappa: float | None) -> float:
    """Theorem 3's target: gammas finite and not all zero, sum gamma_i^2 + kappa^2 = 1. Returns kappa."""
    for i, g in enumerate(gammas):
        _check.finite(f"gammas[{i}]", g)
    if not any(g != 0 for g in gammas):
        _check.fail("gammas", list(gammas), "must not be all zero (Theorem 3)")
    sq = sum(g * g for g in gammas)
    if sq > 1.0 + 1e-9:
        _check.fail("gammas", list(gammas), f"sum of squares {sq:.4g} must be <= 1")
    if kappa is None:
        return max(1.0 - sq, 0.0) ** 0.5
    _check.finite("kappa", kappa)
    if abs(sq + kappa**2 - 1.0) > 1e-6:
        _check.fail("kappa", kappa, f"sum gamma_i^2 + kappa^2 must be 1 (sum gamma_i^2 = {sq:.4g})")
    return kappa


def grid(lo: float, hi: float, step: float) -> np.ndarray:
    """lo, lo + step, ..., hi (rounded to 6 decimals so that grid values compare and print cleanly)."""
    return np.round(lo + step * np.arange(int(round((hi - lo) / step)) + 1), 6)


def check_grid(names: tuple[str, str, str], lo, hi, step) -> None:
    """A [lo, hi] grid with a positive step, ascending; ``names`` are the three fields' names for the message."""
    _check.finite(names[0], lo)
    _check.finite(names[1], hi)
    _check.in_range(names[2], step, lo=0.0, lo_open=True)
    if hi < lo:
        _check.fail(names[1], hi, f"must be >= {names[0]}={lo} (grids ascend)")
