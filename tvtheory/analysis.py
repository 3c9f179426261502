"""Measurements derived from result tables: pure functions, no verdicts (those are claims.py's).

Theorems 1-2 tables have one row per (alpha, seed, lam, task) with the seed's hinge ``loss`` and ``acc`` and a
``diverged`` flag; Theorem 3 tables one row per (seed, lam1..lamK). Rows of invalid seeds (``diverged``: a non-finite
loss, parameter, norm or output anywhere, or a fine-tune at chance on its own task) are dropped before anything is
measured, and every measurement comes with its seed spread where a verdict needs one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from tvtheory import theory


def valid(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of valid seeds (``diverged`` False, when the column exists)."""
    return df[~df["diverged"].astype(bool)] if "diverged" in df else df


def seeds_at(df: pd.DataFrame, by: str, points) -> pd.Series:
    """The valid seeds at each of ``points`` of column ``by`` (0 where every seed was lost, or none was run): what
    stands behind a measurement at that point."""
    counts = valid(df).groupby(by)["seed"].nunique() if len(df) else pd.Series(dtype=int)
    return counts.reindex(list(points), fill_value=0).astype(int)


def valid_in(df: pd.DataFrame, grid: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` whose seed is valid in ``grid``: for a table without a ``diverged`` column of its own (Theorem
    3's references), whose seeds' validity the run's grid table records."""
    return df[df["seed"].isin(valid(grid)["seed"])]


def relation(alpha: float) -> str:
    """The paper's name for a task relation alpha = mu_T1 . mu_T2."""
    return "irrelevant" if abs(alpha) < 1e-9 else ("aligned" if alpha > 0 else "contradictory")


def of_relation(alphas, name: str) -> np.ndarray:
    a = np.asarray(alphas, float)
    return a[[relation(x) == name for x in a]]


# ------------------------------------------------------------------------------------------------ Theorems 1-2
@dataclass(frozen=True)
class Curves:
    """Seed means and seed standard deviations per (alpha, lam) of L1, L2 (hinge) and A1, A2 (accuracy), and the
    per-seed table they come from."""

    mean: pd.DataFrame          # index (alpha, lam), columns L1 L2 A1 A2
    std: pd.DataFrame           # same shape; 0 with one seed
    seeds: pd.DataFrame         # index (alpha, seed, lam), columns L1 L2 A1 A2
    valid_seeds: pd.Series      # alpha -> valid seeds, for every alpha of the table (0: all diverged)
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def memo(self, key, make):
        """``make()``, computed once per key for these curves: the rules read the same alpha's frames and outcomes
        many times (a claim per relation, metric and window), and their frames are never modified."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @property
    def n_seeds(self) -> int:
        """The fewest valid seeds of any alpha."""
        return int(self.valid_seeds.min()) if len(self.valid_seeds) else 0

    def seeds_behind(self, alphas) -> int:
        """The fewest valid seeds of the given alphas."""
        alphas = list(alphas)
        return int(self.valid_seeds.reindex(alphas).fillna(0).min()) if alphas else self.n_seeds

    def alphas(self) -> np.ndarray:
        return np.unique(self.mean.index.get_level_values("alpha"))

    def alpha_near(self, alpha: float) -> Optional[float]:
        """The table's alpha equal to ``alpha`` up to float rounding (None: no valid seed there, or none run)."""
        near = self.alphas()[np.isclose(self.alphas(), alpha)]
        return float(near[0]) if near.size else None

    def at(self, alpha: float) -> pd.DataFrame:
        return self.memo(("mean", alpha), lambda: self.mean.xs(alpha, level="alpha"))

    def std_at(self, alpha: float) -> pd.DataFrame:
        return self.memo(("std", alpha), lambda: self.std.xs(alpha, level="alpha"))

    def lams(self) -> np.ndarray:
        return np.unique(self.mean.index.get_level_values("lam"))


def curves(df: pd.DataFrame) -> Curves:
    """Seed means per (alpha, lam) over valid seeds, and how many valid seeds stand behind each alpha of the table
    (0 when an alpha lost every seed: it is then absent from the means)."""
    counts, df = seeds_at(df, "alpha", np.unique(df["alpha"])), valid(df)
    # One row per (alpha, seed, lam, task): the mean is the row's value (a groupby and unstack: the numbers of a pivot
    # table in half its time). No valid seed at all: the curves are empty frames of the usual columns.
    wide = df.groupby(["alpha", "seed", "lam", "task"])[["loss", "acc"]].mean().dropna(how="all").unstack("task")
    wide = wide.reindex(columns=pd.MultiIndex.from_product([["loss", "acc"], ["T1", "T2"]]))
    per_seed = pd.DataFrame({"L1": wide["loss"]["T1"], "L2": wide["loss"]["T2"], "A1": wide["acc"]["T1"],
                             "A2": wide["acc"]["T2"]})
    g = per_seed.groupby(level=["alpha", "lam"])
    return Curves(g.mean(), g.std(ddof=1).fillna(0.0), per_seed, counts)


def beta_hat(c: Curves) -> dict[str, float]:
    """The measured beta: the least-squares slope through the origin of T1's hinge loss increase against |lambda| at
    alpha = 0, separately for lambda > 0 (beta_add) and lambda < 0 (beta_neg); NaN without alpha = 0. A
    measurement reported beside the verdicts, never a threshold of one."""
    a0 = c.alpha_near(0.0)
    return {"beta_add": float("nan"), "beta_neg": float("nan")} if a0 is None else _beta_of(c.at(a0))


def _beta_of(cur: pd.DataFrame) -> dict[str, float]:
    lam, L1 = cur.index.to_numpy(), cur["L1"].to_numpy()
    base = L1[np.argmin(np.abs(lam))]
    out = {}
    for name, side in (("beta_add", lam > 0), ("beta_neg", lam < 0)):
        x, yv = np.abs(lam[side]), np.maximum(L1[side] - base, 0.0)
        out[name] = float(x @ yv / (x @ x)) if x.size else float("nan")
    return out


def beta_seeds(c: Curves | pd.DataFrame) -> pd.DataFrame:
    """beta_add and beta_neg of every valid seed (alpha = 0), from a table or its curves (computed once by the caller
    that needs them too); no row where alpha = 0 has no valid seed."""
    c = c if isinstance(c, Curves) else curves(c)
    rows, a0 = [], c.alpha_near(0.0)
    if a0 is not None:
        for s, g in c.seeds.xs(a0, level="alpha").groupby(level="seed"):
            rows.append({"seed": s, **_beta_of(g.droplevel("seed"))})
    return pd.DataFrame(rows, columns=["seed", "beta_add", "beta_neg"])


def lambda_star(cur: pd.DataFrame, eps: float) -> float:
    """The smallest lambda at which T2's hinge loss (column L2 of a per-lambda frame) is <= eps (NaN if none)."""
    ok = cur.index.to_numpy()[cur["L2"].to_numpy() <= eps]
    return float(ok.min()) if ok.size else float("nan")


def mean_sd(x) -> tuple[float, float]:
    """Mean and seed standard deviation (ddof 1) of per-seed values: NaN mean for none, sd 0 for one."""
    x = np.asarray(x, float)
    return (float(x.mean()) if x.size else float("nan"), float(x.std(ddof=1)) if x.size > 1 else 0.0)


def lambda_star_seeds(c: Curves, alpha: float, eps: float) -> pd.Series:
    """lambda*(alpha) of every valid seed, indexed by seed (NaN where a seed never learns T2 on the grid), so that
    two variants' values subtract seed by seed even when one of them lost a seed to divergence."""
    cur = c.seeds.xs(alpha, level="alpha")
    return pd.Series({s: lambda_star(g.droplevel("seed"), eps) for s, g in cur.groupby(level="seed")}, dtype=float)


def window(lam: np.ndarray, flags: np.ndarray) -> str:
    """A set of grid lambdas as text: '[lo, hi] (n/N grid points)' or 'empty'."""
    inside = np.asarray(lam)[np.asarray(flags, bool)]
    if inside.size == 0:
        return "empty"
    return f"[{inside.min():g}, {inside.max():g}] ({inside.size}/{len(flags)} grid points)"


def edges(lam: np.ndarray, flags: np.ndarray) -> tuple[float, float]:
    inside = np.asarray(lam)[np.asarray(flags, bool)]
    return (float(inside.min()), float(inside.max())) if inside.size else (float("nan"), float("nan"))


def value_at(cur: pd.DataFrame, lam: float, col: str) -> float:
    lams = cur.index.to_numpy()
    i = int(np.argmin(np.abs(lams - lam)))
    return float(cur[col].iloc[i]) if abs(lams[i] - lam) < 1e-6 else float("nan")


# ------------------------------------------------------------------------------------------------ Theorem 3
def lam_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("lam") and c[3:].isdigit()]


def ood_curves(df: pd.DataFrame, loss: str = "loss", acc: str = "acc") -> pd.DataFrame:
    """Seed means and standard deviations per grid point: columns lam1..lamK, loss, acc, loss_std, acc_std."""
    df = valid(df)
    cols = lam_columns(df)
    g = df.groupby(cols)[[loss, acc]]
    out = g.mean().join(g.std(ddof=1).fillna(0.0).add_suffix("_std")).reset_index()
    return out.rename(columns={loss: "loss", acc: "acc", f"{loss}_std": "loss_std", f"{acc}_std": "acc_std"})


def iou(region_xG: np.ndarray, success_G: np.ndarray) -> np.ndarray:
    """Intersection over union of boolean regions (last axis: grid points) with a measured region; 0 where both are
    empty."""
    union = (region_xG | success_G).sum(-1)
    return np.where(union > 0, (region_xG & success_G).sum(-1) / np.maximum(union, 1), 0.0)


def fit_ood_region(coeffs: np.ndarray, success: np.ndarray, gammas) -> dict:
    """The tau (conditions i-ii) and lam_max = c / beta (condition iii) whose region best matches the measured
    success region by IoU, on a grid of tau in [0, 3] and lam_max in the grid's |lambda| values (plus no bound);
    ties go to the smallest lam_max, then the smallest tau. A description of the region's shape, fitted on the data:
    never a verdict's threshold."""
    taus = np.round(np.arange(0.0, 3.0001, 0.01), 4)
    lam_maxes = np.concatenate([np.unique(np.abs(coeffs)), [np.inf]])
    scores = iou(theory.ood_region(coeffs, gammas, taus[None, :], lam_maxes[:, None]), success)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    return {"tau": float(taus[j]), "lam_max": float(lam_maxes[i]), "iou": float(scores[i, j])}


def fit_ood_two_thresholds(coeffs: np.ndarray, success: np.ndarray, gammas, lam_max: float) -> dict:
    """Beyond the paper: a separate threshold for condition (i) and for condition (ii) at the given lam_max."""
    t = np.round(np.arange(0.0, 3.0001, 0.02), 4)
    scores = iou(theory.ood_region(coeffs, gammas, t[:, None], lam_max, tau_ii=t[None, :]), success)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    return {"tau_i": float(t[i]), "tau_ii": float(t[j]), "lam_max": float(lam_max), "iou": float(scores[i, j])}


def best_point(cur: pd.DataFrame, by: str = "loss") -> pd.Series:
    """The grid point with the lowest mean ``by`` (NaN never the lowest); among ties, the smallest edit (least
    ||lambda||). ValueError naming ``by`` when no point has a number (a run marks a seed with a non-finite quantity
    diverged, so only an edited table gets here; it was numpy's 'argmin of an empty sequence')."""
    cols = lam_columns(cur)
    v = cur[by].to_numpy(float)
    if np.isnan(v).all():
        raise ValueError(f"no grid point has a number to choose the best by ({by!r} is NaN at every point)")
    v = np.where(np.isnan(v), np.inf, v)
    tied = np.flatnonzero(v <= v.min() + 1e-9)
    return cur.iloc[tied[np.argmin(np.linalg.norm(cur[cols].to_numpy()[tied], axis=1))]]


def on_axis(cur: pd.DataFrame, k: int) -> pd.DataFrame:
    """The grid points where only source k (0-based) has a non-zero coefficient: task vector k alone, rescaled."""
    cols = lam_columns(cur)
    others = [c for i, c in enumerate(cols) if i != k]
    return cur[np.all(np.isclose(cur[others].to_numpy(), 0.0), axis=1)] if others else cur


def per_seed_at(df: pd.DataFrame, point: pd.Series, col: str = "loss") -> pd.Series:
    """``col`` of every valid seed at one grid point (indexed by seed)."""
    df = valid(df)
    cols = lam_columns(df)
    mask = np.all([np.isclose(df[c], point[c]) for c in cols], axis=0)
    return df[mask].set_index("seed")[col]


# ------------------------------------------------------------------------------------------------ Corollaries
def two_groups(norms: np.ndarray) -> dict:
    """Split row norms in two by 2-means on log norm; the ratio of the groups' mean norms and the large fraction."""
    x = np.sort(np.log(np.maximum(np.asarray(norms, float), 1e-30)))
    sse = [((x[:c] - x[:c].mean()) ** 2).sum() + ((x[c:] - x[c:].mean()) ** 2).sum() for c in range(1, len(x))]
    cut = 1 + int(np.argmin(sse))
    small, large = np.exp(x[:cut]), np.exp(x[cut:])
    return {"ratio": float(large.mean() / small.mean()), "large_fraction": float(len(large) / len(x)),
            "threshold": float(np.exp((x[cut - 1] + x[cut]) / 2))}


# ------------------------------------------------------------------------------------------------ scaling
def fit_exponent(x, y) -> float:
    """Least-squares slope of log y on log x (NaN unless at least two positive, finite points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")


def local_exponents(x, y) -> np.ndarray:
    """The slopes of log y on log x between consecutive points (a power law keeps them equal)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.diff(np.log(y)) / np.diff(np.log(x))


def steps_to_eps(curve_T: np.ndarray, eps: float, window: int) -> float:
    """The number of SGD steps after which the training hinge loss, averaged over the next ``window`` steps, is first
    <= eps (NaN: never). The window smooths the batch noise; it is not added to the count."""
    curve_T = np.asarray(curve_T, float)
    if window > len(curve_T):                    # no full window: never (np.convolve would swap its arguments)
        return float("nan")
    c = np.convolve(curve_T, np.ones(window) / window, mode="valid")
    hit = np.flatnonzero(c <= eps)
    return float(hit[0]) if hit.size else float("nan")
