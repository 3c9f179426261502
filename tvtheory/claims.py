"""Each claim of Theorems 1-2 as a pure function: tidy table -> verdict record (design.md).

The table has one row per (alpha, seed, lam, task) with the seed-level mean hinge ``loss`` and ``acc``; rows marked
``diverged`` are dropped before anything is measured. Verdicts use the theorems' metric (hinge loss) with the
tolerances of ``ClaimsConfig``; the accuracy view is computed beside it and any disagreement is stated in details.

Rules (theory.md sections 4-5):
  learned(T)   loss_T <= eps                          accuracy view: acc_T >= acc_learned
  kept(T1)     loss_T1 <= min(eps + |lambda| beta_side, kept_cap)                accuracy view: acc_T1 >= acc_learned
  forgotten    loss_T2 >= forget_loss (the zero predictor's hinge loss is 1)     acc_T2 <= acc_forgotten
  addition set A(alpha)  = {lambda: kept(T1) and learned(T2)}
  negation set N(alpha)  = {lambda < 0: kept(T1) and forgotten(T2)}
beta_side is measured on the irrelevant pair (alpha = 0) as the least-squares slope through the origin of
max(loss_T1(lambda) - loss_T1(0), 0) against |lambda|, separately for lambda > 0 (addition) and lambda < 0
(negation): the paper's beta, the price T1 pays for an added or negated task vector that carries nothing of it.
The bound Theta(eps) + |lambda| beta says a task is kept only while it is small next to Theta(1); kept_cap (default
0.5, half the zero predictor's hinge loss) is where we stop calling a task kept, and claims that quantify over
"every lambda" do so over the informative range where eps + |lambda| beta_side <= kept_cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tvtheory import theory
from tvtheory.config import ClaimsConfig


@dataclass
class Curves:
    """Seed means per (alpha, lam): L1, L2 (hinge), A1, A2 (accuracy); n_seeds used."""

    table: pd.DataFrame         # index (alpha, lam), columns L1 L2 A1 A2
    n_seeds: int

    def alphas(self) -> np.ndarray:
        return np.unique(self.table.index.get_level_values("alpha"))

    def at(self, alpha: float) -> pd.DataFrame:
        return self.table.xs(alpha, level="alpha")


def curves(df: pd.DataFrame) -> Curves:
    if "diverged" in df:
        df = df[~df["diverged"].astype(bool)]
    wide = df.pivot_table(index=["alpha", "lam"], columns="task", values=["loss", "acc"], aggfunc="mean")
    out = pd.DataFrame({"L1": wide["loss"]["T1"], "L2": wide["loss"]["T2"],
                        "A1": wide["acc"]["T1"], "A2": wide["acc"]["T2"]})
    return Curves(out, int(df["seed"].nunique()))


def beta_hat(c: Curves) -> dict[str, float]:
    """beta_add, beta_neg measured on alpha = 0 (NaN when alpha = 0 is not in the table)."""
    if not np.any(np.isclose(c.alphas(), 0.0)):
        return {"beta_add": float("nan"), "beta_neg": float("nan")}
    cur = c.at(float(c.alphas()[np.isclose(c.alphas(), 0.0)][0]))
    lam, L1 = cur.index.to_numpy(), cur["L1"].to_numpy()
    base = L1[np.argmin(np.abs(lam))]
    out = {}
    for name, side in (("beta_add", lam > 0), ("beta_neg", lam < 0)):
        x, yv = np.abs(lam[side]), np.maximum(L1[side] - base, 0.0)
        out[name] = float(x @ yv / (x @ x)) if x.size else float("nan")
    return out


def sets(c: Curves, alpha: float, cfg: ClaimsConfig, beta: dict, metric: str = "loss") -> pd.DataFrame:
    """Boolean columns add, neg over the lambda grid at alpha, by hinge loss or by accuracy."""
    cur = c.at(alpha)
    lam = cur.index.to_numpy()
    if metric == "loss":
        beta_add, beta_neg = _nz(beta["beta_add"]), _nz(beta["beta_neg"])
        kept = cur["L1"].to_numpy() <= theory.kept_tolerance(lam, cfg.eps_learned, beta_add, beta_neg, cfg.kept_cap)
        learned2 = cur["L2"].to_numpy() <= cfg.eps_learned
        forgotten2 = cur["L2"].to_numpy() >= cfg.forget_loss
    else:
        kept = cur["A1"].to_numpy() >= cfg.acc_learned
        learned2 = cur["A2"].to_numpy() >= cfg.acc_learned
        forgotten2 = cur["A2"].to_numpy() <= cfg.acc_forgotten
    return pd.DataFrame({"add": kept & learned2, "neg": (lam < 0) & kept & forgotten2}, index=cur.index)


def lambda_star(c: Curves, alpha: float, eps: float) -> float:
    """The smallest lambda at which T2's mean hinge loss is <= eps (NaN if none)."""
    cur = c.at(alpha)
    ok = cur.index.to_numpy()[cur["L2"].to_numpy() <= eps]
    return float(ok.min()) if ok.size else float("nan")


def window(flags: pd.Series) -> str:
    lam = flags.index.to_numpy()[flags.to_numpy()]
    if lam.size == 0:
        return "empty"
    n_grid = flags.size
    return f"[{lam.min():g}, {lam.max():g}] ({lam.size}/{n_grid} grid points)"


def measure(df: pd.DataFrame, cfg: ClaimsConfig) -> pd.DataFrame:
    """Per alpha: lambda*, addition and negation windows (hinge and accuracy), the predicted threshold."""
    c = curves(df)
    beta = beta_hat(c)
    rows = []
    for a in c.alphas():
        s_loss, s_acc = sets(c, a, cfg, beta, "loss"), sets(c, a, cfg, beta, "acc")
        rows.append({"alpha": a, "lambda_star": lambda_star(c, a, cfg.eps_learned),
                     "predicted_threshold": float(theory.addition_threshold(a)),
                     "add_window": window(s_loss["add"]), "neg_window": window(s_loss["neg"]),
                     "add_window_acc": window(s_acc["add"]), "neg_window_acc": window(s_acc["neg"]), **beta})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ the claims
def _record(cid, statement, predicted, measured, ok, c: Curves, details) -> dict:
    return {"id": cid, "statement": statement, "predicted": predicted, "measured": measured,
            "verdict": "pass" if ok else "fail", "n_seeds": c.n_seeds, "details": details}


def _alphas(c: Curves, sign: int) -> np.ndarray:
    a = c.alphas()
    return a[np.sign(np.round(a, 9)) == sign]


def _agreement(loss_ok: bool, acc_ok: bool) -> str:
    if loss_ok == acc_ok:
        return "Accuracy tells the same story."
    return (f"Accuracy disagrees: by accuracy the claim would {'pass' if acc_ok else 'fail'} "
            f"(hinge loss says {'pass' if loss_ok else 'fail'}).")


def _addition_works(c, alphas, cfg, beta, metric):
    """For each alpha: every grid lambda >= 1 - alpha + lam_tol is in A(alpha)."""
    out = {}
    for a in alphas:
        s = sets(c, a, cfg, beta, metric)["add"]
        lam = s.index.to_numpy()
        need = (lam >= 1 - a + cfg.lam_tol - 1e-9) & _informative(lam, cfg, beta)
        out[a] = bool(need.any() and s.to_numpy()[need].all())
    return out


def _describe(c, alphas, cfg, beta, metric, col):
    return "; ".join(f"alpha={a:g}: {window(sets(c, a, cfg, beta, metric)[col])}" for a in alphas)


def thm1_addition(c: Curves, cfg: ClaimsConfig, beta: dict, cid: str, sign: int) -> dict:
    alphas = _alphas(c, sign)
    name = "irrelevant" if sign == 0 else "aligned"
    if alphas.size == 0:
        return _record(cid, f"Addition learns both {name} tasks", "-", f"no {name} alpha in the table", False, c,
                       "The table holds no alpha of this relation, so the claim cannot be checked.")
    ok_l = _addition_works(c, alphas, cfg, beta, "loss")
    ok_a = _addition_works(c, alphas, cfg, beta, "acc")
    return _record(
        cid, f"Theorem 1 ({name}): Psi_0 + dPsi_T1 + lambda dPsi_T2 learns T1 and T2 for lambda >= 1 - alpha",
        f"addition set contains every grid lambda >= 1 - alpha + {cfg.lam_tol:g}",
        "addition set " + _describe(c, alphas, cfg, beta, "loss", "add"), all(ok_l.values()), c,
        f"T2 learned: mean hinge <= {cfg.eps_learned:g}; T1 kept: hinge <= min({cfg.eps_learned:g} + |lambda| "
        f"beta_add, {cfg.kept_cap:g}) (beta_add = {beta['beta_add']:.3g}). Accuracy view: "
        + _describe(c, alphas, cfg, beta, "acc", "add") + ". " + _agreement(all(ok_l.values()), all(ok_a.values())))


def thm1_contradictory_fails(c: Curves, cfg: ClaimsConfig, beta: dict) -> dict:
    alphas = _alphas(c, -1)
    if alphas.size == 0:
        return _record("thm1.contradictory_fails", "Addition fails for contradictory tasks", "-",
                       "no alpha < 0 in the table", False, c, "Cannot be checked without alpha < 0.")
    empty = lambda metric: all(not sets(c, a, cfg, beta, metric)["add"].any() for a in alphas)  # noqa: E731
    stars = ", ".join(f"alpha={a:g}: lambda*={lambda_star(c, a, cfg.eps_learned):g}, T1 hinge there "
                      f"{_at_lambda_star(c, a, cfg):.3g}" for a in alphas)
    return _record(
        "thm1.contradictory_fails",
        "Theorem 1 (contradictory, alpha < 0): no lambda learns both T1 and T2",
        "addition set empty for every alpha < 0", "addition set " + _describe(c, alphas, cfg, beta, "loss", "add"),
        empty("loss"), c,
        f"Where T2 becomes learned, T1 is lost: {stars}. Accuracy view: "
        + _describe(c, alphas, cfg, beta, "acc", "add") + ". " + _agreement(empty("loss"), empty("acc")))


def _at_lambda_star(c, a, cfg):
    ls = lambda_star(c, a, cfg.eps_learned)
    return float("nan") if np.isnan(ls) else float(c.at(a).loc[ls, "L1"])


def thm1_threshold_curve(c: Curves, cfg: ClaimsConfig) -> dict:
    alphas = c.alphas()[c.alphas() >= 0]
    stars = {a: lambda_star(c, a, cfg.eps_learned) for a in alphas}
    errs = {a: abs(s - (1 - a)) for a, s in stars.items()}
    ok = bool(alphas.size) and all(np.isfinite(e) and e <= cfg.lam_tol + 1e-9 for e in errs.values())
    return _record(
        "thm1.threshold_curve",
        "Theorem 1: the smallest lambda that learns T2, lambda*(alpha), follows 1 - alpha for alpha >= 0",
        f"|lambda*(alpha) - (1 - alpha)| <= {cfg.lam_tol:g} for every alpha >= 0",
        "; ".join(f"alpha={a:g}: lambda*={s:g} (1-alpha={1 - a:g})" for a, s in stars.items()), ok, c,
        f"lambda* = smallest grid lambda with mean T2 hinge <= {cfg.eps_learned:g}. The tolerance is one grid step; "
        "the paper's beta term (lambda >= 1 - alpha + beta) would shift the threshold up by beta. For alpha < 0: "
        + "; ".join(f"alpha={a:g}: lambda*={lambda_star(c, a, cfg.eps_learned):g} (1-alpha={1 - a:g})"
                    for a in c.alphas()[c.alphas() < 0]) + ".")


def thm2_negation(c: Curves, cfg: ClaimsConfig, beta: dict, cid: str, sign: int) -> dict:
    alphas = _alphas(c, sign)
    name = {0: "irrelevant", -1: "contradictory", 1: "aligned"}[sign]
    if alphas.size == 0:
        return _record(cid, f"Negation, {name} tasks", "-", f"no {name} alpha in the table", False, c,
                       "Cannot be checked without such an alpha.")

    def verdict(metric):
        ok = []
        for a in alphas:
            s = sets(c, a, cfg, beta, metric)["neg"]
            if sign == 0:       # every lambda < 0 in the informative range forgets T2 and keeps T1
                neg = (s.index.to_numpy() < 0) & _informative(s.index.to_numpy(), cfg, beta)
                ok.append(bool(neg.any() and s.to_numpy()[neg].all()))
            elif sign < 0:      # some window -Theta(alpha^-2) <= lambda < 0 exists
                ok.append(bool(s.any()))
            else:               # aligned: no lambda forgets T2 without hurting T1
                ok.append(not bool(s.any()))
        return all(ok)

    statement, predicted = {
        0: ("Theorem 2 (irrelevant): every lambda < 0 forgets T2 and keeps T1 (within eps + |lambda| beta)",
            "negation set holds every grid lambda < 0 with eps + |lambda| beta_neg <= kept_cap"),
        -1: ("Theorem 2 (contradictory): a window -Theta(alpha^-2) <= lambda < 0 forgets T2 and keeps T1",
             "negation set non-empty for every alpha < 0"),
        1: ("Theorem 2 (aligned): negating T2 cannot forget it without hurting T1",
            "negation set empty for every alpha > 0"),
    }[sign]
    extra = ""
    if sign < 0:
        extra = " Predicted lower ends -1/alpha^2 (constant unknown): " + ", ".join(
            f"alpha={a:g}: {float(theory.negation_lower_bound(a)):.3g}" for a in alphas) + "."
    if sign > 0:
        extra = " T1 hinge at lambda=-1: " + ", ".join(
            f"alpha={a:g}: {_value(c, a, -1.0, 'L1'):.3g} (T2 {_value(c, a, -1.0, 'L2'):.3g})" for a in alphas) + "."
    return _record(
        cid, statement, predicted, "negation set " + _describe(c, alphas, cfg, beta, "loss", "neg"), verdict("loss"),
        c, f"T2 forgotten: hinge >= {cfg.forget_loss:g}; T1 kept: hinge <= min({cfg.eps_learned:g} + |lambda| "
        f"beta_neg, {cfg.kept_cap:g}) (beta_neg = {beta['beta_neg']:.3g}, measured at alpha = 0, so the bound is "
        f"informative for lambda >= {-_reach(cfg, beta['beta_neg']):.3g})." + extra
        + f" Accuracy view (T2 acc <= {cfg.acc_forgotten:g}, T1 acc >= {cfg.acc_learned:g}): "
        + _describe(c, alphas, cfg, beta, "acc", "neg") + ". " + _agreement(verdict("loss"), verdict("acc")))


def _informative(lam, cfg: ClaimsConfig, beta: dict):
    return theory.informative(lam, cfg.eps_learned, _nz(beta["beta_add"]), _nz(beta["beta_neg"]), cfg.kept_cap)


def _nz(x: float) -> float:
    return 0.0 if np.isnan(x) else x


def _reach(cfg: ClaimsConfig, beta: float) -> float:
    """The largest |lambda| at which eps + |lambda| beta <= kept_cap."""
    return np.inf if _nz(beta) <= 0 else (cfg.kept_cap - cfg.eps_learned) / beta


def _value(c, a, lam, col):
    cur = c.at(a)
    lams = cur.index.to_numpy()
    i = int(np.argmin(np.abs(lams - lam)))
    return float(cur[col].iloc[i]) if abs(lams[i] - lam) < 1e-6 else float("nan")


def arithmetic_claims(df: pd.DataFrame, cfg: ClaimsConfig) -> list[dict]:
    """The seven claims of Theorems 1-2 from the Figure 1 table."""
    c = curves(df)
    beta = beta_hat(c)
    return [
        thm1_addition(c, cfg, beta, "thm1.irrelevant", 0),
        thm1_addition(c, cfg, beta, "thm1.aligned", 1),
        thm1_contradictory_fails(c, cfg, beta),
        thm1_threshold_curve(c, cfg),
        thm2_negation(c, cfg, beta, "thm2.irrelevant", 0),
        thm2_negation(c, cfg, beta, "thm2.contradictory", -1),
        thm2_negation(c, cfg, beta, "thm2.aligned_fails", 1),
    ]
