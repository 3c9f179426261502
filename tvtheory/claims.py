"""Verdicts: each claim of the paper as a rule on measured quantities (analysis.py), and the claim record.

The rule for rules: no parameter of a verdict is fitted on the data it judges. Every tolerance and theory constant
is a field of the config's ``claims`` block (config.Claims, or an experiment's own), declared before the data are
seen with the reason for its value; quantities fitted on the data (beta measured on the curves, the best-fitting tau
of Theorem 3's region, an exponent) are reported beside the verdict as measurements, never used as its threshold.

A verdict is "pass", "fail" or "inconclusive". Every comparison of a seed mean with a bound counts only beyond
``spread_k`` seed standard deviations: a mean inside that band is undecided, and undecided comparisons combine by
three-valued logic (an "all" with one certain failure fails; with none, but one undecided, it is inconclusive). A
verdict is also inconclusive when fewer than ``min_seeds`` valid seeds remain, when the grid lacks the coefficients
the claim needs, or when the run is a smoke configuration (too few test samples to decide).

Rules of Theorems 1-2 (docs/theory.md sections 4-5), on the seed-mean hinge loss L1 (T1) and L2 (T2):
  learned(T2)  L2 <= eps                                    accuracy view: A2 >= acc_learned
  kept(T1)     L1 <= min(eps + |lambda| beta, kept_cap)      accuracy view: A1 >= acc_learned
  forgotten    L2 >= forget_loss (the zero predictor's 1)    accuracy view: A2 <= acc_forgotten
  addition set A(alpha) = {lambda: kept and learned}; negation set N(alpha) = {lambda < 0: kept and forgotten}
with beta = beta_d / d declared (the paper's beta = Theta(1/d), constant 1), not measured.

``python -m tvtheory.claims RESULTS_DIR`` recomputes every claim of every experiment from the tables under
RESULTS_DIR alone (no training, no claims file read), rewrites the claims files, and the README's verdict table when
RESULTS_DIR is the repository's results/.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from tvtheory import analysis, theory
from tvtheory.analysis import Curves, window

VERDICTS = ("pass", "fail", "inconclusive")


@dataclass
class Claim:
    """One verdict record of results/claims.json."""

    id: str
    statement: str
    predicted: str
    measured: str
    verdict: str
    n_seeds: int
    details: str
    source: str = ""
    commit: Optional[str] = None
    dirty: Optional[bool] = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r}: must be one of {VERDICTS}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def verdict(ok: Optional[bool]) -> str:
    return {True: "pass", False: "fail", None: "inconclusive"}[ok]


def claim(cid, statement, predicted, measured, ok: Optional[bool], n_seeds: int, details: str, *,
          undecided: str = "") -> Claim:
    """A record; ``undecided`` says why a None verdict is inconclusive (appended to the details)."""
    if ok is None and undecided:
        details = f"Inconclusive: {undecided}. {details}"
    return Claim(cid, statement, predicted, measured, verdict(ok), int(n_seeds), details)


def smoke(records: list[Claim], *reasons: Optional[str]) -> list[Claim]:
    """Every verdict of a run too small to decide becomes inconclusive (its measurements are kept); ``reasons`` are
    the ways it is too small (None: not that way)."""
    reason = "; ".join(r for r in reasons if r)
    if not reason:
        return records
    return [dataclasses.replace(r, verdict="inconclusive", details=f"Inconclusive: {reason} (the rule alone would "
                                f"say {r.verdict}). {r.details}") for r in records]


# -------------------------------------------------------------------------------------- three-valued comparisons
class Tri:
    """Three-valued truth per element: ``yes`` where certainly true, ``no`` where certainly false, else undecided."""

    def __init__(self, yes, no):
        self.yes, self.no = np.asarray(yes, bool), np.asarray(no, bool)

    def __and__(self, other: "Tri") -> "Tri":
        return Tri(self.yes & other.yes, self.no | other.no)

    def __invert__(self) -> "Tri":
        return Tri(self.no, self.yes)

    def __getitem__(self, idx) -> "Tri":
        return Tri(self.yes[idx], self.no[idx])

    def all(self) -> Optional[bool]:
        """Kleene 'for all'; an empty set decides nothing (None)."""
        if self.yes.size == 0:
            return None
        return False if self.no.any() else (True if self.yes.all() else None)

    def any(self) -> Optional[bool]:
        if self.yes.size == 0:
            return None
        return True if self.yes.any() else (False if self.no.all() else None)

    def maybe(self) -> np.ndarray:
        """True where not certainly false (the grid points a window may hold)."""
        return ~self.no


def at_most(mean, std, bound, k: float) -> Tri:
    """mean <= bound, decided only beyond k standard deviations (NaN means never satisfy the bound)."""
    mean, std = np.asarray(mean, float), np.nan_to_num(np.asarray(std, float))
    nan = np.isnan(mean)
    return Tri(~nan & (mean + k * std <= bound), nan | (mean - k * std > bound))


def at_least(mean, std, bound, k: float) -> Tri:
    mean, std = np.asarray(mean, float), np.nan_to_num(np.asarray(std, float))
    nan = np.isnan(mean)
    return Tri(~nan & (mean - k * std >= bound), nan | (mean + k * std < bound))


def all3(values) -> Optional[bool]:
    values = list(values)
    if not values:
        return None
    return False if any(v is False for v in values) else (None if any(v is None for v in values) else True)


def any3(values) -> Optional[bool]:
    values = list(values)
    if not values:
        return None
    return True if any(v is True for v in values) else (None if any(v is None for v in values) else False)


def not3(v: Optional[bool]) -> Optional[bool]:
    return None if v is None else not v


def _word(v: Optional[bool]) -> str:
    return {True: "pass", False: "fail", None: "undecided"}[v]


# -------------------------------------------------------------------------------------------------- Theorems 1-2
@dataclass
class PairRules:
    """Theorem 1-2 membership of every grid lambda at one alpha, by hinge loss (``metric='loss'``) or accuracy."""

    lam: np.ndarray
    kept: Tri
    learned: Tri
    forgotten: Tri

    @property
    def addition(self) -> Tri:
        return self.kept & self.learned

    @property
    def negation(self) -> Tri:
        return self.kept & self.forgotten & Tri(self.lam < 0, self.lam >= 0)


def pair_rules(c: Curves, alpha: float, cfg, beta: float, metric: str = "loss") -> PairRules:
    """The rules' outcomes at every lambda of one alpha (by hinge loss or by accuracy); computed once per curves and
    arguments (``cfg``, a claims config block, is hashable by value)."""
    return c.memo(("rules", alpha, beta, metric, cfg), lambda: _pair_rules(c, alpha, cfg, beta, metric))


def _pair_rules(c: Curves, alpha: float, cfg, beta: float, metric: str) -> PairRules:
    m, s = c.at(alpha), c.std_at(alpha)
    lam, k = m.index.to_numpy(), cfg.spread_k

    def known(t: Tri, col: str) -> Tri:
        """A task's rule decides nothing where its seed mean is missing (no row of that task at that lambda: a
        valid seed's losses are finite). at_most/at_least count NaN as beyond the bound, which a negated rule
        (thm1.contradictory_fails, thm2.aligned_fails) would read as certainly true."""
        there = np.isfinite(m[col].to_numpy())
        return Tri(t.yes & there, t.no & there)
    if metric == "loss":
        bound = theory.kept_tolerance(lam, cfg.eps_learned, beta, beta, cfg.kept_cap)
        return PairRules(lam, known(at_most(m["L1"], s["L1"], bound, k), "L1"),
                         known(at_most(m["L2"], s["L2"], cfg.eps_learned, k), "L2"),
                         known(at_least(m["L2"], s["L2"], cfg.forget_loss, k), "L2"))
    return PairRules(lam, known(at_least(m["A1"], s["A1"], cfg.acc_learned, k), "A1"),
                     known(at_least(m["A2"], s["A2"], cfg.acc_learned, k), "A2"),
                     known(at_most(m["A2"], s["A2"], cfg.acc_forgotten, k), "A2"))


def describe_set(lam: np.ndarray, t: Tri) -> str:
    text = window(lam, t.yes)
    undecided = int((~t.yes & ~t.no).sum())
    return text + (f", {undecided} undecided" if undecided else "")


def _describe(c: Curves, alphas, cfg, beta, metric: str, which: str) -> str:
    parts = []
    for a in alphas:
        r = pair_rules(c, a, cfg, beta, metric)
        parts.append(f"alpha={a:g}: {describe_set(r.lam, getattr(r, which))}")
    return "; ".join(parts)


def _agreement(loss_ok, acc_ok) -> str:
    if loss_ok == acc_ok:
        return "Accuracy tells the same story."
    return f"Accuracy disagrees: by accuracy the rule would say {_word(acc_ok)} (hinge loss: {_word(loss_ok)})."


def _beta(c: Curves, d: int, cfg) -> tuple[float, dict]:
    return cfg.beta(d), analysis.beta_hat(c)


def thm1_addition(c: Curves, cfg, d: int, cid: str, rel: str) -> Claim:
    alphas = analysis.of_relation(c.alphas(), rel)
    beta, measured_beta = _beta(c, d, cfg)
    statement = (f"Theorem 1 ({rel}): Psi_0 + dPsi_T1 + lambda dPsi_T2 learns T2 and keeps T1 for every "
                 "lambda >= 1 - alpha")
    predicted = f"addition set holds every grid lambda >= 1 - alpha + {cfg.lam_tol:g}"
    if alphas.size == 0:
        return claim(cid, statement, predicted, f"no {rel} alpha with a valid seed", None, c.n_seeds, "",
                     undecided="the table holds no alpha of this relation with a valid seed")

    def rule(metric):
        out = []
        for a in alphas:
            r = pair_rules(c, a, cfg, beta, metric)
            need = r.lam >= 1 - a + cfg.lam_tol - 1e-9
            out.append(r.addition[need].all())
        return all3(out)
    ok, ok_acc = rule("loss"), rule("acc")
    return claim(cid, statement, predicted, "addition set " + _describe(c, alphas, cfg, beta, "loss", "addition"), ok,
                 c.n_seeds, f"T2 learned: mean hinge <= {cfg.eps_learned:g}; T1 kept: hinge <= min({cfg.eps_learned:g}"
                 f" + |lambda| beta, {cfg.kept_cap:g}) with the declared beta = {cfg.beta_d:g}/d = {beta:.3g} "
                 f"(measured beta_add = {measured_beta['beta_add']:.3g}). Accuracy view: "
                 + _describe(c, alphas, cfg, beta, "acc", "addition") + ". " + _agreement(ok, ok_acc),
                 undecided="the grid lacks lambda >= 1 - alpha + lam_tol, or a mean lies within the seed spread of "
                 "its bound")


def thm1_contradictory_fails(c: Curves, cfg, d: int) -> Claim:
    alphas = analysis.of_relation(c.alphas(), "contradictory")
    beta = cfg.beta(d)
    cid, statement = "thm1.contradictory_fails", "Theorem 1 (contradictory, alpha < 0): no lambda learns both tasks"
    predicted = "addition set empty for every alpha < 0"
    if alphas.size == 0:
        return claim(cid, statement, predicted, "no alpha < 0 with a valid seed", None, c.n_seeds, "",
                     undecided="the table holds no alpha < 0 with a valid seed")

    def rule(metric):
        out = []
        for a in alphas:
            r = pair_rules(c, a, cfg, beta, metric)
            # T2 can only be learned from about 1 - alpha on: a grid that stops short tests nothing.
            out.append(None if r.lam.max() < 1 - a + cfg.lam_tol - 1e-9 else (~r.addition).all())
        return all3(out)
    ok, ok_acc = rule("loss"), rule("acc")
    stars = ", ".join(f"alpha={a:g}: lambda*={analysis.lambda_star(c.at(a), cfg.eps_learned):g}, T1 hinge there "
                      f"{_at_lambda_star(c, a, cfg):.3g}" for a in alphas)
    return claim(cid, statement, predicted, "addition set " + _describe(c, alphas, cfg, beta, "loss", "addition"), ok,
                 c.n_seeds, f"Where T2 becomes learned, T1 is lost: {stars}. Accuracy view: "
                 + _describe(c, alphas, cfg, beta, "acc", "addition") + ". " + _agreement(ok, ok_acc),
                 undecided="the grid stops before 1 - alpha + lam_tol, or a mean lies within the seed spread of its "
                 "bound")


def _at_lambda_star(c, a, cfg):
    ls = analysis.lambda_star(c.at(a), cfg.eps_learned)
    return float("nan") if np.isnan(ls) else float(c.at(a).loc[ls, "L1"])


def _near_one_minus_alpha(star: float, target: float, seeds: np.ndarray, lams: np.ndarray, cfg) -> Optional[bool]:
    """|lambda* - (1 - alpha)| <= lam_tol for the seed-mean lambda* ``star`` and ``target`` = 1 - alpha, against the
    seeds' spread. A seed that never learns T2 on the grid (NaN) has its lambda* past the grid, where it counts at the
    first lambda beyond it (the nearest value it can have), which widens the spread both a pass and a fail must clear.
    A fail is also decided when lambda* lies above 1 - alpha and the seeds that learn show it by themselves (their
    mean beyond lam_tol by their own spread): those that never learn lie further up, and only add to it."""
    if np.isnan(star):
        return False                                    # the seed-mean curve never learns T2 on the grid
    learned, lost = seeds[~np.isnan(seeds)], bool(np.isnan(seeds).any())
    if lost and (len(lams) < 2 or not len(learned)):
        return None                                     # no step to go past the grid by, or no seed to weigh
    wide = np.where(np.isnan(seeds), lams[-1] + (lams[-1] - lams[-2]), seeds) if lost else seeds
    (m_learned, sd_learned), sd_wide = analysis.mean_sd(learned), analysis.mean_sd(wide)[1]
    dev, tol, k = abs(star - target), cfg.lam_tol + 1e-9, cfg.spread_k
    if dev + k * sd_wide <= tol:
        return True
    by_learned = lost and star > target and m_learned - target - k * sd_learned > tol
    return False if dev - k * sd_wide > tol or by_learned else None


def thm1_threshold_curve(c: Curves, cfg) -> Claim:
    alphas = c.alphas()[c.alphas() >= 0]
    lams = c.lams()
    rows, out = [], []
    for a in alphas:
        star = analysis.lambda_star(c.at(a), cfg.eps_learned)
        seeds = analysis.lambda_star_seeds(c, a, cfg.eps_learned)
        if not (lams.min() <= 1 - a <= lams.max() - cfg.lam_tol + 1e-9):
            out.append(None)
        else:
            out.append(_near_one_minus_alpha(star, 1 - a, np.asarray(seeds, float), lams, cfg))
        rows.append(f"alpha={a:g}: lambda*={star:g} (1-alpha={1 - a:g}; seeds {', '.join(f'{x:g}' for x in seeds)})")
    ok = all3(out)
    return claim("thm1.threshold_curve",
                 "Theorem 1: the smallest lambda that learns T2, lambda*(alpha), follows 1 - alpha for alpha >= 0",
                 f"|lambda*(alpha) - (1 - alpha)| <= {cfg.lam_tol:g} for every alpha >= 0", "; ".join(rows), ok,
                 c.n_seeds, f"lambda* = smallest grid lambda with mean T2 hinge <= {cfg.eps_learned:g}; the "
                 "tolerance is one grid step (the theorem's lambda >= 1 - alpha + beta shifts it by the declared "
                 f"beta = {cfg.beta_d:g}/d). For alpha < 0: " + "; ".join(
                     f"alpha={a:g}: lambda*={analysis.lambda_star(c.at(a), cfg.eps_learned):g}"
                     for a in c.alphas()[c.alphas() < 0]) + ".",
                 undecided="no alpha >= 0 whose 1 - alpha the grid holds, or the seeds' lambda* spread reaches the "
                 "tolerance")


def thm2_negation(c: Curves, cfg, d: int, cid: str, rel: str) -> Claim:
    alphas = analysis.of_relation(c.alphas(), rel)
    beta, measured_beta = _beta(c, d, cfg)
    statement, predicted = {
        "irrelevant": ("Theorem 2 (irrelevant): every lambda < 0 forgets T2 and keeps T1 within eps + |lambda| beta",
                       "negation set holds every grid lambda < 0 with eps + |lambda| beta <= kept_cap"),
        "contradictory": ("Theorem 2 (contradictory): a window -Theta(alpha^-2) <= lambda < 0 forgets T2 and keeps T1",
                          "negation set non-empty for every alpha < 0"),
        "aligned": ("Theorem 2 (aligned): negating T2 cannot forget it without hurting T1",
                    "negation set empty for every alpha > 0"),
    }[rel]
    if alphas.size == 0:
        return claim(cid, statement, predicted, f"no {rel} alpha with a valid seed", None, c.n_seeds, "",
                     undecided="the table holds no alpha of this relation with a valid seed")

    def rule(metric):
        out = []
        for a in alphas:
            r = pair_rules(c, a, cfg, beta, metric)
            neg = r.lam < 0
            if not neg.any():
                out.append(None)
            elif rel == "irrelevant":
                informative = neg & theory.informative(r.lam, cfg.eps_learned, beta, beta, cfg.kept_cap)
                out.append(r.negation[informative].all())
            elif rel == "contradictory":
                out.append(r.negation[neg].any())
            else:
                out.append((~r.negation)[neg].all())
        return all3(out)
    ok, ok_acc = rule("loss"), rule("acc")
    extra = ""
    if rel == "contradictory":
        extra = " Predicted lower ends -1/alpha^2 (constant unknown): " + ", ".join(
            f"alpha={a:g}: {float(theory.negation_lower_bound(a)):.3g}" for a in alphas) + "."
    else:
        extra = " At lambda = -1: " + ", ".join(
            f"alpha={a:g}: T1 hinge {analysis.value_at(c.at(a), -1.0, 'L1'):.3g} (bound "
            f"{min(cfg.eps_learned + beta, cfg.kept_cap):.3g}), T2 hinge {analysis.value_at(c.at(a), -1.0, 'L2'):.3g}, "
            f"T1 acc {analysis.value_at(c.at(a), -1.0, 'A1'):.3f}" for a in alphas) + "."
    return claim(cid, statement, predicted, "negation set " + _describe(c, alphas, cfg, beta, "loss", "negation"), ok,
                 c.n_seeds, f"T2 forgotten: hinge >= {cfg.forget_loss:g}; T1 kept: hinge <= min({cfg.eps_learned:g} + "
                 f"|lambda| beta, {cfg.kept_cap:g}) with the declared beta = {cfg.beta_d:g}/d = {beta:.3g}; the beta "
                 f"measured on this table is {measured_beta['beta_neg']:.3g} under negation (a measurement, not the "
                 "bound)." + extra + f" Accuracy view (T2 acc <= {cfg.acc_forgotten:g}, T1 acc >= "
                 f"{cfg.acc_learned:g}): " + _describe(c, alphas, cfg, beta, "acc", "negation") + ". "
                 + _agreement(ok, ok_acc),
                 undecided="the grid holds no lambda < 0, or a mean lies within the seed spread of its bound")


def min_seeds_reason(c_or_n, cfg) -> Optional[str]:
    n = c_or_n if isinstance(c_or_n, int) else c_or_n.n_seeds
    return f"{n} valid seed(s), fewer than claims.min_seeds={cfg.min_seeds}" if n < cfg.min_seeds else None


def pair_claims(df: pd.DataFrame, cfg, d: int, too_small: Optional[str] = None) -> list[Claim]:
    """The seven claims of Theorems 1-2 from a Figure 1 table (one row per alpha, seed, lam, task); ``too_small``:
    why the run cannot decide, if it cannot (see ``smoke``)."""
    c = analysis.curves(df)
    every = c.valid_seeds.index.to_numpy(float)
    covers = {"thm1.irrelevant": analysis.of_relation(every, "irrelevant"),
              "thm1.aligned": analysis.of_relation(every, "aligned"),
              "thm1.contradictory_fails": analysis.of_relation(every, "contradictory"),
              "thm1.threshold_curve": every[every >= 0], "thm2.irrelevant": analysis.of_relation(every, "irrelevant"),
              "thm2.contradictory": analysis.of_relation(every, "contradictory"),
              "thm2.aligned_fails": analysis.of_relation(every, "aligned")}
    records = [
        thm1_addition(c, cfg, d, "thm1.irrelevant", "irrelevant"),
        thm1_addition(c, cfg, d, "thm1.aligned", "aligned"),
        thm1_contradictory_fails(c, cfg, d),
        thm1_threshold_curve(c, cfg),
        thm2_negation(c, cfg, d, "thm2.irrelevant", "irrelevant"),
        thm2_negation(c, cfg, d, "thm2.contradictory", "contradictory"),
        thm2_negation(c, cfg, d, "thm2.aligned_fails", "aligned"),
    ]
    out = []
    for r in records:                     # each claim is as strong as the seeds behind its own alphas
        n = c.seeds_behind(covers[r.id])
        lost = "".join(f"; alpha={a:g}: no valid seed" for a in covers[r.id] if not c.valid_seeds[a])
        out += smoke([dataclasses.replace(r, measured=r.measured + lost, n_seeds=n)], min_seeds_reason(n, cfg),
                     too_small)
    return out


# ------------------------------------------------------------------------------------------------- Theorem 3
THM3 = (("thm3.region", "Theorem 3: every Psi_0 + sum_i lambda_i dPsi_Ti with sum lambda_i gamma_i >= 1 + c, "
                        "sum lambda_i gamma_i^2 >= 1 + c and |lambda_i| beta <= c generalizes to T'"),
        ("thm3.beats_single", "Theorem 3: a combination of source task vectors reaches T' better than any single task "
                              "vector, rescaled"))


def ood_region_claims(rows: pd.DataFrame, refs: pd.DataFrame, gammas, cfg, ood, d: int,
                      too_small: Optional[str] = None) -> list[Claim]:
    """thm3.region: the theorem's sufficient region, with the declared c and beta, inside the measured success
    region (precision); thm3.beats_single: the best combination, chosen on validation, beats the best rescaled
    single task vector on test by more than eps."""
    cur = analysis.ood_curves(rows)
    val = analysis.ood_curves(rows, "val_loss", "val_acc")
    cols = analysis.lam_columns(cur)
    coeffs = cur[cols].to_numpy()
    n_seeds = int(analysis.valid(rows)["seed"].nunique())
    k, eps = cfg.spread_k, cfg.eps_learned
    predicted = (f"at least {ood.precision_min:g} of the grid points in that region (declared c = {ood.c:g}, beta = "
                 f"{cfg.beta_d:g}/d) have mean T' hinge loss <= {eps:g}",
                 f"the best grid point (chosen on validation) has a T' test hinge loss lower than the best single task "
                 f"vector lambda_i dPsi_Ti (lambda_i over its whole range, chosen on validation) by at least eps = "
                 f"{eps:g}")
    if cur.empty:        # every seed invalid: a run stops before, but a compressed variant of corollaries gets here
        return [claim(*THM3[i], predicted[i], "no valid seed on the grid", None, 0, "",
                      undecided="every seed of the grid is invalid") for i in range(2)]
    success = at_most(cur["loss"], cur["loss_std"], eps, k)
    beta = cfg.beta(d)
    lam_max = ood.c / beta
    region = theory.ood_region(coeffs, gammas, 1 + ood.c, lam_max)
    reach = float(np.abs(coeffs).max())
    n_in = int(region.sum())
    sure, maybe = int((success.yes & region).sum()), int((success.maybe() & region).sum())
    prec_sure, prec_maybe = (sure / n_in, maybe / n_in) if n_in else (float("nan"), float("nan"))
    ok = None if n_in == 0 else (True if prec_sure >= ood.precision_min else
                                 (False if prec_maybe < ood.precision_min else None))
    fit = analysis.fit_ood_region(coeffs, cur["loss"].to_numpy() <= eps, gammas)
    two = analysis.fit_ood_two_thresholds(coeffs, cur["loss"].to_numpy() <= eps, gammas, fit["lam_max"])
    sweep_c = "; ".join(_precision_at(coeffs, gammas, c_, beta, success) for c_ in (0.1, 0.25, 0.5, 0.75, 0.9))
    records = [claim(
        *THM3[0],
        predicted[0],
        f"{sure}/{n_in} region points succeed (precision {prec_sure:.3g}); IoU of the best-fitting region "
        f"{fit['iou']:.3g} at tau = {fit['tau']:g}, c/beta = {fit['lam_max']:g}",
        ok, n_seeds,
        (f"The declared c/beta = {lam_max:g} exceeds the grid's reach |lambda_i| <= {reach:g}, so condition (iii) "
           "is not tested by this grid. " if lam_max >= reach else
           f"Condition (iii) bounds |lambda_i| by c/beta = {lam_max:g} inside the grid's reach {reach:g}. ")
        + f"{int(success.yes.sum())} of {len(coeffs)} grid points succeed in all. Precision "
        f"at other c (sufficiency for some c in (0, 1) is the theorem's statement): {sweep_c}. Descriptions, fitted "
        f"on these data and not part of the verdict: the single threshold tau = {fit['tau']:g} (the paper's 1 + c lies "
        f"in (1, 2)) with c/beta = {fit['lam_max']:g} gives IoU {fit['iou']:.3g} with the success region; separate "
        f"thresholds tau_i = {two['tau_i']:g}, tau_ii = {two['tau_ii']:g} give IoU {two['iou']:.3g}. gammas = "
        f"{[round(float(g), 4) for g in gammas]}.",
        undecided="the region holds no grid point, or its points' means lie within the seed spread of eps")]

    best = analysis.best_point(val)
    singles = {}
    for i in range(len(cols)):
        axis = analysis.on_axis(val, i)
        singles[f"T{i + 1}"] = analysis.best_point(axis)
    best_single_name = min(singles, key=lambda n: float(singles[n]["loss"]))      # validation, like the best point
    diff = analysis.per_seed_at(rows, singles[best_single_name]) - analysis.per_seed_at(rows, best)
    m, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    ok = at_least(m, sd, eps, k).all()
    pt = lambda p: "(" + ", ".join(f"{p[c_]:g}" for c_ in cols) + ")"  # noqa: E731
    test_of = lambda p: float(analysis.per_seed_at(rows, p).mean())  # noqa: E731
    acc_of = lambda p: float(analysis.per_seed_at(rows, p, "acc").mean())  # noqa: E731
    ref = (analysis.valid_in(refs[refs["model"] != "direct"], rows).groupby("model")[["loss", "acc"]].mean()
           if refs is not None else pd.DataFrame(columns=["loss", "acc"]))
    records.append(claim(
        *THM3[1],
        predicted[1],
        f"best {pt(best)}: test hinge {test_of(best):.3g}, acc {acc_of(best):.3f}; best single "
        + ", ".join(f"{n} {pt(p)}: hinge {test_of(p):.3g}, acc {acc_of(p):.3f}" for n, p in singles.items()),
        ok, n_seeds,
        f"Per-seed difference (best single {best_single_name} - best combination): {m:.3g} +- {sd:.3g}."
        + ("" if ref.empty else " At lambda_i = 1 (Psi*_Ti itself): " + ", ".join(
            f"{n} hinge {r['loss']:.3g}, acc {r['acc']:.3f}" for n, r in ref.iterrows()) + "."),
        undecided="the difference lies within the seed spread of eps"))
    return smoke(records, min_seeds_reason(n_seeds, cfg), too_small)


def _precision_at(coeffs, gammas, c_, beta, success: Tri) -> str:
    region = theory.ood_region(coeffs, gammas, 1 + c_, c_ / beta)
    n = int(region.sum())
    return f"c={c_:g}: {int((success.yes & region).sum())}/{n}" if n else f"c={c_:g}: empty"


# ------------------------------------------------------------------------------------------------ Corollaries 1-2
def variant_quantities(pair: pd.DataFrame, ood: pd.DataFrame, cfg, d: int) -> dict:
    """What Corollaries 1-2 compare between dense and compressed task vectors: lambda*(alpha) per seed (alpha >= 0),
    the negation window's edges (alpha <= 0) and both tasks' hinge loss at lambda = -1, Theorem 3's success region
    and its best (validation-chosen) test loss per seed, and the valid seeds of every alpha of the table (0: lost)."""
    c = analysis.curves(pair)
    beta = cfg.beta(d)
    out = {"lambda_star": {}, "lam_max": {}, "l2_complete": {}, "neg_edges": {}, "at_minus_one": {},
           "at_minus_one_seeds": {}}
    for a in c.alphas():
        if a >= 0:
            out["lambda_star"][a] = analysis.lambda_star_seeds(c, a, cfg.eps_learned)
            out["lam_max"][a] = float(c.at(a).index.max())     # a seed that never learns T2 has lambda* beyond
            # ... if its T2 hinge is there at every grid lambda (not rows missing from a damaged table)
            l2 = c.seeds.xs(a, level="alpha")["L2"]
            out["l2_complete"][a] = np.isfinite(l2).groupby(level="seed").sum() == len(c.at(a))
        if a <= 0:
            r = pair_rules(c, a, cfg, beta)
            out["neg_edges"][a] = analysis.edges(r.lam, r.negation.yes)
            out["at_minus_one"][a] = (analysis.value_at(c.at(a), -1.0, "L1"), analysis.value_at(c.at(a), -1.0, "L2"))
            per = c.seeds.xs(a, level="alpha")                 # each valid seed's hinge losses there (none: no -1)
            out["at_minus_one_seeds"][a] = per[np.isclose(per.index.get_level_values("lam"), -1.0, atol=1e-6)] \
                .droplevel("lam")[["L1", "L2"]]
    cur = analysis.ood_curves(ood)
    val = analysis.ood_curves(ood, "val_loss", "val_acc")
    if cur.empty:               # every seed of this variant's grid invalid: no region, no best loss (keeps says so)
        out["success"], out["best_loss"] = None, pd.Series(dtype=float)
    else:
        out["success"] = cur["loss"].to_numpy() <= cfg.eps_learned
        out["best_loss"] = analysis.per_seed_at(ood, analysis.best_point(val))
    out["n_seeds"], out["valid_seeds"] = c.n_seeds, c.valid_seeds
    return out


def _mean(x) -> float:
    """The mean of the finite values (NaN if none; a seed that never reaches a threshold counts as NaN)."""
    x = np.asarray(x, float)
    return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else float("nan")


def _lost(what: str, n_dense: int, n_other: int, own: Optional[tuple[int, int]] = None) -> str:
    """Why ``what`` compares nothing ('' when both sides have a valid seed of it): the side without a valid seed of
    its own (``own``: each side's count before ``compare_variants`` left out the other's invalid seeds; the
    compressed one named first), or, when each has some, that none is valid in both."""
    if n_dense and n_other:
        return ""
    own_dense, own_other = own or (n_dense, n_other)
    gone = "compressed" if not own_other else "dense" if not own_dense else ""
    return f"{what}: no valid seed ({gone})" if gone else f"{what}: no seed valid in both"


def keeps(dense: dict, other: dict, cfg, region_iou: float,
          own: Optional[tuple[dict, dict]] = None) -> dict[str, tuple[Optional[bool], str, int]]:
    """Per theorem: whether ``other`` keeps ``dense``'s measured quantities within the declared tolerances, the
    numbers, and the fewest valid seeds behind one of its comparisons (0 when one compares nothing). Both sides are
    measured on the same seeds (``compare_variants``). lambda* and the best loss are compared per seed (undecided
    within the seed spread); the negation windows and the success region are those of the seed means, compared as
    they are (a region has no seed spread). An alpha, or Theorem 3's grid, that lost every seed in either variant
    compares nothing: undecided, named in the numbers (the side that lost it, from ``own``: each side's quantities
    on its own valid seeds, when ``dense`` and ``other`` are measured on the seeds valid in both), and its theorem
    rests on 0 seeds; the others are still compared."""
    k, tol, eps = cfg.spread_k, cfg.lam_tol + 1e-9, cfg.eps_learned
    own_dense, own_other = own or (dense, other)
    count = lambda q, a: int(q["valid_seeds"].get(a, 0))  # noqa: E731
    seeds = {a: (count(dense, a), count(other, a))
             for a in sorted({*dense["valid_seeds"].index, *other["valid_seeds"].index})}
    lost = {a: _lost(f"alpha={a:g}", *n, own=(count(own_dense, a), count(own_other, a))) for a, n in seeds.items()}
    t1, parts1, n1 = [], [], []
    for a in [a for a in seeds if a >= 0]:
        if lost[a]:
            t1.append(None)
            parts1.append(lost[a])
            n1.append(0)
            continue
        ls, lo = dense["lambda_star"][a].align(other["lambda_star"][a], join="inner")   # the seeds valid in both
        # A seed that learns T2 on the grid in one variant only (its T2 hinge there at every grid lambda) has its
        # other lambda* beyond the grid's last point (censored): its difference is known only to exceed the one with
        # that point in place of the missing lambda*. With every such seed on the same side, the alpha is not kept
        # when those lower bounds move the mean beyond the tolerance by more than spread_k of their sd; otherwise it
        # is undecided, as is a lambda* missing with its T2 rows. Without one-sided seeds, the seeds that learn T2
        # in both are compared. A seed that learns it in neither is left out of either comparison.
        one = ls.isna() ^ lo.isna()
        one_sided, paired = int(one.sum()), ls.notna() & lo.notna()
        censored = (one & lo.isna() & other["l2_complete"][a].reindex(lo.index, fill_value=False)) | \
            (one & ls.isna() & dense["l2_complete"][a].reindex(ls.index, fill_value=False))
        if (one & ~censored).any():
            kept = None                         # a lambda* missing with its T2 rows: nothing known about it
        elif one_sided:
            top = max(dense["lam_max"][a], other["lam_max"][a])
            dd = (lo.fillna(top) - ls.fillna(top))[paired | one]
            up, down = bool((one & lo.isna()).any()), bool((one & ls.isna()).any())
            sd = float(dd.std(ddof=1)) if len(dd) > 1 else 0.0
            kept = False if up != down and (1 if up else -1) * float(dd.mean()) - k * sd > tol else None
        elif paired.any():
            diff = abs(_mean(lo[paired]) - _mean(ls[paired]))
            sd = float(np.std((lo - ls)[paired], ddof=1)) if paired.sum() > 1 else 0.0
            kept = at_most(diff, sd, tol, k).all()
        else:
            kept = True                                                  # no seed learns T2 in either: equal
        t1.append(kept if len(ls) else None)
        parts1.append(f"alpha={a:g}: {_mean(lo):g} vs {_mean(ls):g}"
                      + (f" ({one_sided} seed(s) learn T2 on the grid in one variant only)" if one_sided else ""))
        n1.append(int((paired | one).sum()) if one_sided and kept is False else len(ls) - one_sided)  # behind it
    t2, parts, n2 = [], [], []
    for a in [a for a in seeds if a <= 0]:
        if lost[a]:
            t2.append(None)
            parts.append(lost[a])
            n2.append(0)
            continue
        lo, hi = dense["neg_edges"][a]
        olo, ohi = other["neg_edges"][a]
        same_empty = np.isnan(lo) and np.isnan(olo)
        edges_ok = same_empty or (abs(olo - lo) <= tol and abs(ohi - hi) <= tol)
        # both tasks' hinge at lambda = -1, seed by seed: the mean difference within eps beyond the seed spread
        dl = other["at_minus_one_seeds"][a].sub(dense["at_minus_one_seeds"][a], fill_value=None).dropna()
        hinge = [at_most(abs(float(dl[t].mean())), float(dl[t].std(ddof=1)) if len(dl) > 1 else 0.0, eps, k).all()
                 if len(dl) else None for t in ("L1", "L2")]
        t2.append(all3([bool(edges_ok), *hinge]))
        parts.append(f"alpha={a:g}: window [{olo:g}, {ohi:g}] vs [{lo:g}, {hi:g}], hinge at -1 (T1, T2) "
                     f"({other['at_minus_one'][a][0]:.3g}, {other['at_minus_one'][a][1]:.3g}) vs "
                     f"({dense['at_minus_one'][a][0]:.3g}, {dense['at_minus_one'][a][1]:.3g})")
        n2.append(min(seeds[a]))
    lost3 = _lost("Theorem 3's grid", len(dense["best_loss"]), len(other["best_loss"]),
                  own=(len(own_dense["best_loss"]), len(own_other["best_loss"])))
    if lost3:
        t3, text3, n3 = None, lost3, 0
    else:
        io = float(analysis.iou(other["success"], dense["success"]))
        dl = other["best_loss"] - dense["best_loss"]
        sd = float(dl.std(ddof=1)) if len(dl) > 1 else 0.0
        t3 = all3([io >= region_iou, at_most(abs(float(dl.mean())), sd, eps, k).all()])
        text3 = (f"success-region IoU with dense {io:.3g}; best test hinge {other['best_loss'].mean():.3g} vs "
                 f"{dense['best_loss'].mean():.3g}")
        n3 = int(dl.notna().sum())
    return {"thm1": (all3(t1), f"lambda*(alpha) {', '.join(parts1)}", min(n1, default=0)),
            "thm2": (all3(t2), "; ".join(parts), min(n2, default=0)), "thm3": (t3, text3, n3)}


def compare_variants(pair: pd.DataFrame, ood: pd.DataFrame, cfg, d: int, region_iou: float) -> tuple[dict, dict]:
    """Every variant's quantities (``variant_quantities``, by the tables' ``variant`` column, dense first) and what
    ``keeps`` says of each compressed one. Both sides are measured on the seeds valid in both (an invalid (alpha,
    seed) of the pair sweep, an invalid seed of Theorem 3's grid, on either side is left out of the other's rows too;
    each reused as it is where the other leaves no further seed out), so that seed means and per-seed differences are
    over the same seeds. A run marks a variant invalid wherever dense is (corollaries.run); a table may not."""
    of = lambda df, v: df[df["variant"] == v]  # noqa: E731
    names = list(dict.fromkeys(pair["variant"]))
    q = {v: variant_quantities(of(pair, v), of(ood, v), cfg, d) for v in names}
    kept_by = {}

    def on_both(v, other):
        """v's quantities with other's invalid seeds left out too (q[v] where that leaves no further seed out)."""
        p = _invalid_as(of(pair, v), of(pair, other), ["alpha", "seed"])
        o = _invalid_as(of(ood, v), of(ood, other), ["seed"])
        same = p["diverged"].equals(of(pair, v)["diverged"].astype(bool)) and \
            o["diverged"].equals(of(ood, v)["diverged"].astype(bool))
        return q[v] if same else variant_quantities(p, o, cfg, d)
    for v in names:
        if v != "dense":
            kept_by[v] = keeps(on_both("dense", v), on_both(v, "dense"), cfg, region_iou, own=(q["dense"], q[v]))
    return q, kept_by


def _invalid_as(base: pd.DataFrame, other: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``base`` with its rows marked diverged wherever ``other`` marks the same ``keys`` diverged or has no row."""
    bad = other.groupby(keys, as_index=False)["diverged"].any()
    flag = base[keys].merge(bad, on=keys, how="left")["diverged"].fillna(True).astype(bool).to_numpy()
    return base.assign(diverged=base["diverged"].astype(bool).to_numpy() | flag)


# Why a variant's keeps is undecided (the variant's numbers in keeps.csv name a lost alpha).
_UNDECIDED_KEEP = ("a difference lies within the seed spread of its tolerance, or an alpha (or Theorem 3's grid) "
                   "has no valid seed in {} or dense")


def corollary_claims(kept_by: dict[str, dict], n_dense: int, row_norms: pd.DataFrame, m: int, cfg, cor,
                     too_small: Optional[str] = None) -> list[Claim]:
    """Corollaries 1-2 from what ``keeps`` says of each compressed variant (``compare_variants``; keyed by variant
    name: 'rank<r>', 'prune<f>'), the dense variant's valid seeds and dV's row norms of the valid seeds (seed, task,
    row, norm). Each claim counts the seeds behind its own comparisons and is inconclusive with fewer than
    min_seeds."""
    records = []
    what = {"thm1": "lambda*(alpha) within lam_tol (alpha >= 0)",
            "thm2": "the negation window's edges within lam_tol and both tasks' hinge at lambda = -1 within eps "
                    "(alpha <= 0)",
            "thm3": f"Theorem 3's success region with IoU >= {cor.region_iou:g} and the best test hinge within eps"}
    rank_name = f"rank{min(cor.ranks)}" if cor.ranks else None
    for thm in ("thm1", "thm2", "thm3"):
        cid = f"cor1.{rank_name}_{thm}"
        statement = (f"Corollary 1: rank-{min(cor.ranks) if cor.ranks else '?'} task vectors keep what "
                     f"{thm.replace('thm', 'Theorem ')} measures")
        if rank_name is None or rank_name not in kept_by:
            records.append(claim(cid, statement, what[thm], "no low-rank variant", None, n_dense, "",
                                 undecided="corollaries.ranks is empty"))
            continue
        ok, text, n = kept_by[rank_name][thm]
        others = "; ".join(f"{v}: {_word(kk[thm][0])}" for v, kk in kept_by.items() if v != rank_name)
        records.append(claim(cid, statement, f"{what[thm]}, against the dense task vectors", text, ok, n,
                             f"Other variants: {others}.", undecided=_UNDECIDED_KEEP.format(rank_name)))
    prunes = sorted((float(v[len("prune"):]), v) for v in kept_by if v.startswith("prune"))
    largest, changed, stop, stop_at, behind = 0.0, [], None, None, []
    for f, v in prunes:
        kk = kept_by[v]
        kept = all3(ok for ok, _, _ in kk.values())
        bad = [t for t, (ok, _, _) in kk.items() if ok is not True]
        if largest < cor.prune_min - 1e-9:       # up to the first fraction >= prune_min: what the verdict rests on
            behind.append(min(n for _, _, n in kk.values()))
        changed.append(f"prune {f:g}: " + ("all kept" if not bad else "changes or leaves undecided " + ", ".join(bad)))
        if kept is not True:
            stop, stop_at = kept, v
            break
        largest = f
    # Undecided at the first fraction that is not clearly kept: the largest kept fraction is undecided too.
    ok = (None if not prunes else True if largest >= cor.prune_min - 1e-9 else None if stop is None else False)
    records.append(claim(
        "cor2.pruning_keeps", "Corollary 2: pruning the small rows of dV keeps what Theorems 1-3 measure",
        f"pruning a fraction {cor.prune_min:g} of dV's rows keeps {what['thm1']}, {what['thm2']} and {what['thm3']}",
        f"largest pruned fraction keeping every quantity: {largest:g}", ok, min(behind, default=n_dense),
        "; ".join(changed) + ".",
        undecided=("corollaries.prune is empty" if not prunes else _UNDECIDED_KEEP.format(stop_at) if stop_at
                   else f"no fraction as large as prune_min={cor.prune_min:g} is compared")))
    split = {k: analysis.two_groups(g["norm"].to_numpy()) for k, g in row_norms.groupby(["seed", "task"])}
    finite = pd.DataFrame([{"seed": seed, "log_ratio": np.log(g["ratio"]), "frac": g["large_fraction"]}
                           for (seed, _), g in split.items()       # a diverged seed's: left out
                           if np.isfinite(g["ratio"]) and g["ratio"] > 0 and np.isfinite(g["large_fraction"])],
                          columns=["seed", "log_ratio", "frac"])
    per_seed = finite.groupby("seed")[["log_ratio", "frac"]].mean()          # each seed's tasks, averaged
    n_norms, lo, k = len(per_seed), cor.two_groups_min_fraction, cfg.spread_k
    (lr, lr_sd), (frac, frac_sd) = (analysis.mean_sd(per_seed[c]) for c in ("log_ratio", "frac"))
    ratio = float(np.exp(lr))
    ok = ((at_least(lr, lr_sd, np.log(cor.two_groups_ratio), k) & at_least(frac, frac_sd, lo, k)
           & at_most(frac, frac_sd, 1 - lo, k)).all() if n_norms else None)
    records.append(claim(
        "cor2.two_groups", "Corollary 2: dV's rows form two groups, norms >= Omega(m^-1/2) and O(m^-1/2 eps)",
        f"a 2-means split of log row norms separates groups whose mean norms differ by >= {cor.two_groups_ratio:g}x, "
        f"each group at least a fraction {cor.two_groups_min_fraction:g} of the rows (each beyond spread_k = {k:g} "
        "seed standard deviation(s))",
        f"over seeds (each the mean of its tasks): ratio {ratio:.3g} (geometric mean; x/ {np.exp(lr_sd):.3g} per "
        f"seed standard deviation), large-group fraction {frac:.3f} +- {frac_sd:.3f}", ok, n_norms,
        f"m^-1/2 = {m ** -0.5:.3g}; median row norm {row_norms['norm'].median():.3g}, 5-95% range "
        f"[{row_norms['norm'].quantile(0.05):.3g}, {row_norms['norm'].quantile(0.95):.3g}].",
        undecided="a ratio or fraction lies within the seed spread of its bound" if n_norms
        else "no (seed, task) has finite row norms"))
    # Each claim as strong as the seeds behind its own comparisons.
    return [r2 for r in records for r2 in smoke([r], min_seeds_reason(r.n_seeds, cfg), too_small)]


# ------------------------------------------------------------------------------------------------ scaling
def power_law(x, y_mean, y_seeds: list[np.ndarray], predicted: float, tol: float, local_tol: float, k: float):
    """Whether y ~ x^predicted: the fitted exponent within ``tol`` of the prediction and every local exponent within
    ``local_tol`` of the fitted one (a power law at all). Undecided when the per-seed exponents' spread reaches the
    tolerance, or when a point has no value (NaN: every seed lost there). Returns (verdict, exponent, local
    exponents, per-seed exponents)."""
    slope = analysis.fit_exponent(x, y_mean)
    local = analysis.local_exponents(x, y_mean)
    seeds = np.array([analysis.fit_exponent(x, ys) for ys in y_seeds])
    sd = float(np.nanstd(seeds, ddof=1)) if np.isfinite(seeds).sum() > 1 else 0.0
    if not np.isfinite(slope) or len(x) < 3 or np.isnan(np.asarray(y_mean, float)).any():
        return None, slope, local, seeds
    near = at_most(abs(slope - predicted), sd, tol, k).all()
    consistent = bool(np.all(np.abs(local - slope) <= local_tol))
    return all3([near, consistent]), slope, local, seeds


def _per_seed(df: pd.DataFrame, x: str, y: str, xs) -> np.ndarray:
    """One row of ``y`` per seed at the points ``xs`` (NaN where that seed has no valid value there: a seed can be
    invalid in one cell of the sweep and valid in the others)."""
    if df.empty:
        return np.empty((0, len(xs)))
    return df.pivot(index="seed", columns=x, values=y).reindex(columns=np.asarray(xs)).to_numpy(float)


def _fewer_seeds(n: pd.Series, x: str) -> str:
    """The points with fewer valid seeds than the best-covered one ('' when none)."""
    if len(n) and n.max() == 0:
        return f" No valid seed at any {x}."
    few = n[n < n.max()]
    return (" Fewer valid seeds at " + ", ".join(f"{x}={k:g} ({v} of {n.max()})" for k, v in few.items()) + "."
            if len(few) else "")


def _no_value_at(points, name: str) -> str:
    """' (no value at name=...)' for the points a fitted exponent leaves out (every seed lost there), or ''."""
    points = list(points)
    return f" (no value at {name}={', '.join(f'{v:g}' for v in points)})" if points else ""


def _not_positive_at(x, y, name: str) -> str:
    """' (not positive at name=...: left out of the fit)' for the points whose value a fitted exponent cannot take the
    logarithm of (analysis.fit_exponent drops them; their local exponents are infinite or NaN, which no tolerance
    holds), or ''."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    bad = x[y <= 0]
    return f" (not positive at {name}={', '.join(f'{v:g}' for v in bad)}: left out of the fit)" if bad.size else ""


def _left_out(x, y, name: str) -> str:
    """The points of (x, y) a fitted exponent leaves out, named: those without a value, then those not positive."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return _no_value_at(x[np.isnan(y)], name) + _not_positive_at(x, y, name)


def scaling_claims(beta: pd.DataFrame, beta_seeds: pd.DataFrame, conv: pd.DataFrame, m: int, cfg, sc,
                   too_small: Optional[str] = None) -> list[Claim]:
    """beta.scaling_d (beta_neg ~ d^-1 at model.m) and conv.delta_star_exponent (T ~ delta_*^-2), each with the
    fewest valid seeds of any of its points (sc.ds at width m; sc.n_rels) behind it."""
    b = beta[beta["m"] == m].sort_values("d")
    bs = beta_seeds[beta_seeds["m"] == m]
    n_b = analysis.seeds_at(bs, "d", sc.ds)
    per_seed = _per_seed(bs, "d", "beta_neg", b["d"])
    ok, slope, local, seeds = power_law(b["d"], b["beta_neg"], per_seed, -1.0, sc.exponent_tol, sc.local_tol,
                                        cfg.spread_k)
    loc = ", ".join(f"{int(d0)}->{int(d1)}: {x:.2f}" for d0, d1, x in zip(b["d"], b["d"][1:], local))
    rec_b = claim(
        "beta.scaling_d", "beta = Theta(1/d) (the paper's simplification of the error constant)",
        f"beta_neg against d (m = {m}) follows a power law (every local exponent within {sc.local_tol:g} of the fitted "
        f"one) whose exponent is within {sc.exponent_tol:g} of -1 (a tolerance that rejects d^-1/2)",
        f"exponent {slope:.3g}{_left_out(b['d'], b['beta_neg'], 'd')}; local exponents {loc}; beta_neg "
        + ", ".join(
            f"d={int(r.d)}: {r.beta_neg:.3g}" for r in b.itertuples()), ok, int(n_b.min()),
        "beta_neg = slope of T1's hinge loss against |lambda| when negating an irrelevant task vector (alpha = 0), a "
        f"measurement per d; per-seed exponents {', '.join(f'{x:.2f}' for x in seeds)}. beta_add (adding it) per d: "
        + ", ".join(f"{r.beta_add:.2g}" for r in b.itertuples()) + ". Other widths: " + "; ".join(
            f"m={mm}: exponent {analysis.fit_exponent(g['d'], g['beta_neg']):.3g}"
            f"{_left_out(g['d'], g['beta_neg'], 'd')}"
            for mm, g in beta.sort_values("d").groupby("m") if mm != m) + "." + _fewer_seeds(n_b, "d"),
        undecided="fewer than three d, a d without a value (every seed lost), or the per-seed exponents' spread "
                  "reaches the tolerance")
    n_c = analysis.seeds_at(conv, "n_rel", sc.n_rels)
    lost_c = [k for k, v in n_c.items() if v == 0]           # no row at all: absent from the means below
    means = conv.groupby("delta_star")["steps"].mean()
    per_seed = _per_seed(conv, "delta_star", "steps", means.index)
    never = int(conv["steps"].isna().sum())
    ok_c, slope_t, local_t, seeds_t = power_law(means.index.to_numpy(), means.to_numpy(), per_seed, -2.0,
                                                sc.exponent_tol, sc.local_tol, cfg.spread_k)
    if never:
        ok_c = False
    loc_t = ", ".join(f"{d0:g}->{d1:g}: {x:.2f}" for d0, d1, x in zip(means.index, means.index[1:], local_t))
    rec_c = claim(
        "conv.delta_star_exponent", "T = Theta(eta^-1 delta_*^-2): iterations to reach eps scale as delta_*^-2",
        f"the steps to eps against delta_* follow a power law (local exponents within {sc.local_tol:g} of the fitted "
        f"one) with exponent within {sc.exponent_tol:g} of -2, and every run reaches eps",
        f"exponent {slope_t:.3g}{_no_value_at(lost_c, 'n_rel')}{_not_positive_at(means.index, means, 'delta_*')}; "
        f"local exponents {loc_t}; mean steps " + ", ".join(
            f"delta_*={k_:g}: {v:.0f}" for k_, v in means.items()), ok_c, int(n_c.min()),
        f"Fixed step size; steps = SGD steps after which the training hinge loss, averaged over the next "
        f"{sc.conv_window} steps, is first <= eps (the window is not added). Per-seed exponents "
        f"{', '.join(f'{x:.2f}' for x in seeds_t)}. Runs that never reached eps: {never}." + _fewer_seeds(n_c, "n_rel"),
        undecided="fewer than three delta_*, or the per-seed exponents' spread reaches the tolerance")
    return [r2 for r in (rec_b, rec_c) for r2 in smoke([r], min_seeds_reason(r.n_seeds, cfg), too_small)]


if __name__ == "__main__":
    from tvtheory import runner

    runner.claims_main()
