"""Colored-Digits: the offline stand-in for the paper's Colored-MNIST (theory.md section 6).

scikit-learn's bundled 8x8 digits (no download) become RGB images coloured red or green; the label is parity
(odd +1, even -1). A task fixes how colour relates to the label through (r_o, r_e) = P(red | odd), P(red | even):
colour is an easy cue and shape a harder one, which is what makes aligned, irrelevant and contradictory task pairs.
Splits are fixed by a seed; each task colours every split with its own rule and its own colour stream.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tvtheory import _check

RED, GREEN = np.array([1.0, 0.0, 0.0], np.float32), np.array([0.0, 1.0, 0.0], np.float32)


class ColorRule(NamedTuple):
    """P(red | odd digit) and P(red | even digit)."""

    r_odd: float
    r_even: float

    def validate(self, name: str = "rule") -> "ColorRule":
        _check.in_range(f"{name}.r_odd", self.r_odd, 0.0, 1.0)
        _check.in_range(f"{name}.r_even", self.r_even, 0.0, 1.0)
        return self


class Split(NamedTuple):
    images: np.ndarray      # (n, 8, 8) grey intensities in [0, 1]
    digits: np.ndarray      # (n,) 0..9
    y: np.ndarray           # (n,) parity label: +1 odd, -1 even


def load(seed: int = 0, fractions=(0.6, 0.2, 0.2)) -> dict[str, Split]:
    """Train / validation / test splits of load_digits, fixed by ``seed``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    idx = np.random.default_rng(seed).permutation(len(images))
    n_tr, n_va = int(fractions[0] * len(idx)), int(fractions[1] * len(idx))
    parts = {"train": idx[:n_tr], "val": idx[n_tr:n_tr + n_va], "test": idx[n_tr + n_va:]}
    return {k: Split(images[v], d.target[v], np.where(d.target[v] % 2 == 1, 1.0, -1.0).astype(np.float32))
            for k, v in parts.items()}


def colorize(split: Split, rule: ColorRule, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB images (n, 8, 8, 3) coloured by ``rule`` from the colour stream ``seed``; returns (X, y, is_red)."""
    p_red = np.where(split.y > 0, rule.r_odd, rule.r_even)
    red = np.random.default_rng(seed).random(len(p_red)) < p_red
    color = np.where(red[:, None], RED, GREEN)
    return split.images[..., None] * color[:, None, None, :], split.y, red


PRETRAIN_LABELS = ("ink", "digits")


def ink_labels(split: Split) -> np.ndarray:
    """Pre-training labels that teach coarse shape but not digit identity: 1 where an image's total ink is above the
    split's median, else 0. A Psi_0 pre-trained on them leaves parity hard and colour the easy cue, which is what
    makes the Colored-Digits relations appear (10-class identity makes parity an easy read-out of shape)."""
    ink = split.images.reshape(len(split.images), -1).sum(axis=1)
    return (ink > np.median(ink)).astype(np.int32)


def pretrain_labels(split: Split, kind: str) -> np.ndarray:
    """Integer labels of Psi_0's pre-training task: 'ink' (``ink_labels``) or 'digits' (10-class identity)."""
    if kind == "digits":
        return split.digits.astype(np.int32)
    if kind == "ink":
        return ink_labels(split)
    _check.fail("pretrain_labels", kind, f"must be one of {', '.join(PRETRAIN_LABELS)}")


def random_colors(split: Split, seed: int) -> np.ndarray:
    """Colour chosen independently of the digit (P(red) = 1/2): the pre-training images."""
    return colorize(split, ColorRule(0.5, 0.5), seed)[0]
