"""One-line argument checks shared by the library and the config validator.

Every failure raises ``ValueError("<field>=<value>: <what is allowed>")`` so that a bad setting is reported the same
way whether it comes from Python or from the command line.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any


def fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{field}={value!r}: {allowed}")


def finite(field: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        fail(field, value, "must be a finite number")
    return float(value)


def in_range(field: str, value: float, lo: float | None = None, hi: float | None = None,
             lo_open: bool = False, hi_open: bool = False) -> float:
    v = finite(field, value)
    too_low = lo is not None and (v <= lo if lo_open else v < lo)
    too_high = hi is not None and (v >= hi if hi_open else v > hi)
    if too_low or too_high:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        fail(field, value, f"must be in {left}{lo_s}, {hi_s}{right}")
    return v


def integer(field: str, value: int, lo: int | None = None, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        fail(field, value, "must be an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        fail(field, value, f"must be an integer {bounds}")
    return value


class Arguments(argparse.ArgumentParser):
    """An argument parser whose refusal is one line, ``<prog>: error: <what>`` (exit 2), without the usage that
    argparse prints first (``--help`` shows it)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
