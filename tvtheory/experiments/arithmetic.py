"""Theorems 1-2: add and negate a task vector across the task relation alpha (the paper's Figure 1 and Table 1).

Psi = Psi_0 + dPsi_T1 + lambda dPsi_T2 for every alpha of the Figure 1 and the phase diagram, every seed and every
lambda of the grid, on both tasks' test sets; the seven Theorem 1-2 claims from the Figure 1 alphas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tvtheory import analysis, claims as rules
from tvtheory.config import Sweep, Synthetic, config, field
from tvtheory.experiments import _pairs

COST, AFTER = 136, ()
TABLES = ("metrics", "phase_metrics", "diagnostics", "curves")
SIZE_FIELDS = ("n_seeds", "sweep.lam_step", "sweep.n_test", "sweep.alphas", "sweep.phase_alphas", "train.steps",
               "train.batch", "data.d", "data.P", "model.m")


@config
class Config(Synthetic):
    sweep: Sweep = field(Sweep(), "the alphas and the lambda grid")


def run(cfg: Config, ctx) -> dict[str, pd.DataFrame]:
    from tvtheory import sweep                   # JAX loads only once the config is valid

    alphas, lams = cfg.sweep.all_alphas(), cfg.sweep.lams()
    r = sweep.pair_sweep(cfg.seed, cfg.n_seeds, alphas, lams, sweep.Setup(cfg.data, cfg.model, cfg.train),
                         n_test=cfg.sweep.n_test, chunk=cfg.sweep.chunk, store=ctx.store,
                         progress=ctx.progress("fine-tune and evaluate per alpha"))
    valid, at_chance = _pairs.validity(r, cfg.claims)
    _pairs.check_divergence(valid, "fine-tune pair", ctx)
    t = _pairs.pair_tables(r, alphas, lams, valid, at_chance, **_pairs.config_point(cfg))
    rows = t["metrics"]
    return {"metrics": rows[np.isin(rows["alpha"], np.round(cfg.sweep.alphas, 6))],
            "phase_metrics": rows[np.isin(rows["alpha"], np.round(cfg.sweep.phase_alphas, 6))],
            "diagnostics": t["diagnostics"], "curves": t["curves"]}


def analyse(tables, cfg: Config) -> dict:
    rows, d = tables["metrics"], cfg.data.d
    out = {"summary": summary(rows, tables["diagnostics"], cfg), "table1": table1(rows)}
    if len(tables["phase_metrics"]):
        out["phase"] = phase_table(tables["phase_metrics"], cfg.claims, d)
    out["_metrics"] = rows
    return out


def claims(a: dict, cfg: Config) -> list[rules.Claim]:
    return rules.pair_claims(a["_metrics"], cfg.claims, cfg.data.d, _pairs.smoke_reason(cfg, cfg.sweep.n_test))


def plot(tables, a: dict, cfg: Config, out) -> None:
    from tvtheory import plots

    plots.figure1(tables["metrics"], cfg.claims, out)
    plots.phase(a.get("phase"), out)
    ph = a.get("phase")
    # the phase diagram's alphas when one has a valid seed, the Figure 1 alphas otherwise
    plots.lambda_star(ph if ph is not None and (ph["n_seeds"] > 0).any() else tables["metrics"], cfg.claims, out)


def estimate(cfg: Config):
    return _pairs.pair_cost(cfg, len(cfg.sweep.all_alphas()), len(cfg.sweep.lams()), cfg.sweep.n_test)


# ------------------------------------------------------------------------------------------------ derived tables
def phase_table(rows: pd.DataFrame, cc, d: int) -> pd.DataFrame:
    """Seed means and the addition / negation flags (the verdicts' rules: certain by hinge loss and by accuracy) per
    (alpha, lambda), and the valid seeds behind each alpha (0: its rows are blank)."""
    c = analysis.curves(rows)
    beta = cc.beta(d)
    parts = []
    for a, n in c.valid_seeds.items():
        if not n:                                # no valid seed: the alpha keeps its rows, with nothing measured
            parts.append(pd.DataFrame({"alpha": a, "lam": np.unique(rows["lam"]), **dict.fromkeys(
                ("L1", "L2", "A1", "A2", "add_loss", "neg_loss", "add_acc", "neg_acc"), np.nan), "n_seeds": 0}))
            continue
        r_l, r_a = rules.pair_rules(c, a, cc, beta, "loss"), rules.pair_rules(c, a, cc, beta, "acc")
        cur = c.at(a)
        parts.append(pd.DataFrame({"alpha": a, "lam": cur.index, "L1": cur["L1"].values, "L2": cur["L2"].values,
                                   "A1": cur["A1"].values, "A2": cur["A2"].values,
                                   "add_loss": r_l.addition.yes, "neg_loss": r_l.negation.yes,
                                   "add_acc": r_a.addition.yes, "neg_acc": r_a.negation.yes, "n_seeds": n}))
    return pd.concat(parts, ignore_index=True)


def summary(rows: pd.DataFrame, diag: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Per alpha: the valid seeds behind its seed means (``n_seeds``), lambda* (seed mean and spread), the addition
    and negation windows by hinge loss and accuracy, the measured beta beside the declared one, alpha_hat and the
    task vectors' cosine and norms; an alpha without a valid seed has n_seeds 0, no lambda* and 'no valid seed' for
    windows."""
    cc, d = cfg.claims, cfg.data.d
    c = analysis.curves(rows)
    measured = analysis.beta_hat(c)
    out = []
    for a, n in c.valid_seeds.items():
        row = {"alpha": a, "relation": analysis.relation(a), "n_seeds": int(n), "lambda_star": np.nan,
               "lambda_star_seed_std": np.nan,
               "predicted_threshold": float(1 - a) if a >= 0 else float("nan"),
               **dict.fromkeys(("add_window", "neg_window", "add_window_acc", "neg_window_acc"), "no valid seed"),
               "beta_declared": cc.beta(d), **measured}
        if n:
            seeds = analysis.lambda_star_seeds(c, a, cc.eps_learned)
            r_l, r_a = rules.pair_rules(c, a, cc, cc.beta(d), "loss"), rules.pair_rules(c, a, cc, cc.beta(d), "acc")
            row.update(lambda_star=analysis.lambda_star(c.at(a), cc.eps_learned),
                       lambda_star_seed_std=float(np.nanstd(seeds, ddof=1)) if np.isfinite(seeds).sum() > 1 else 0.0,
                       add_window=rules.describe_set(r_l.lam, r_l.addition),
                       neg_window=rules.describe_set(r_l.lam, r_l.negation),
                       add_window_acc=rules.describe_set(r_a.lam, r_a.addition),
                       neg_window_acc=rules.describe_set(r_a.lam, r_a.negation))
        out.append(row)
    out = pd.DataFrame(out)
    ok = analysis.valid(diag)
    means = ok.groupby("alpha")[["alpha_hat", "tv_cosine", "dW_T2", "dV_T2"]].mean().reset_index()
    return out.merge(means, on="alpha", how="left")


# The paper's Colored-MNIST Table 1 (docs/theory.md section 6): relation -> goal -> (lambda, T1 acc %, T2 acc %).
PAPER_TABLE1 = {
    "irrelevant": {"addition": (1.4, 91.83, 88.40), "negation": (-0.6, 95.02, 50.34)},
    "aligned": {"addition": (0.2, 95.62, 92.46), "negation": (0.0, 95.20, 90.51)},
    "contradictory": {"addition": (0.6, 79.54, 62.52), "negation": (-1.0, 94.21, 4.97)},
}
PAPER_ALPHA_HAT = {"irrelevant": 0.164, "aligned": 0.891, "contradictory": -0.849}


def best_points(rows: pd.DataFrame) -> pd.DataFrame:
    """Per alpha, the best lambda for addition (min L1 + L2) and for negation (lambda <= 0, max L2 - L1), with the
    valid seeds behind the seed means (``n_seeds``); NaN for both goals of an alpha without a valid seed."""
    c = analysis.curves(rows)
    out = []
    for a, n in c.valid_seeds.items():
        if not n:
            out += [{"alpha": a, "relation": analysis.relation(a), "goal": goal, "lam": np.nan, "n_seeds": 0}
                    for goal in ("addition", "negation")]
            continue
        cur = c.at(a)
        add = cur.index[np.argmin((cur["L1"] + cur["L2"]).to_numpy())]
        neg_side = cur[cur.index <= 0]
        neg = neg_side.index[np.argmax((neg_side["L2"] - neg_side["L1"]).to_numpy())] if len(neg_side) else np.nan
        for goal, lam in (("addition", add), ("negation", neg)):
            if np.isnan(lam):
                continue
            r = cur.loc[lam]
            out.append({"alpha": a, "relation": analysis.relation(a), "goal": goal, "lam": lam, "acc_T1": r["A1"],
                        "acc_T2": r["A2"], "loss_T1": r["L1"], "loss_T2": r["L2"], "n_seeds": int(n)})
    return pd.DataFrame(out)


def table1(rows: pd.DataFrame) -> str:
    best = best_points(rows)
    order = {"irrelevant": 0, "aligned": 1, "contradictory": 2}
    best = best.sort_values(["relation", "alpha", "goal"], key=lambda col: col.map(order) if col.name == "relation"
                            else col.abs() if col.name == "alpha" else col)
    lines = ["# Table 1 for the one-layer transformer", "",
             "Psi_0 + dPsi_T1 + lambda dPsi_T2, best lambda per goal (addition: min T1 + T2 hinge loss; negation: "
             "lambda <= 0 with max T2 - T1 hinge loss), means over the valid seeds (seeds). Paper: Colored-MNIST, "
             "ViT-Small/16 (accuracy %).",
             "", "| relation | alpha | goal | seeds | lambda | T1 acc | T2 acc | T1 hinge | T2 hinge | paper lambda | "
             "paper T1 / T2 acc |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in best.iterrows():
        pl, p1, p2 = PAPER_TABLE1[r["relation"]][r["goal"]]
        if np.isnan(r["lam"]):                  # no valid seed at this alpha: nothing to report
            lines.append(f"| {r['relation']} | {r['alpha']:g} | {r['goal']} | 0 | - | - | - | - | - | {pl:g} | "
                         f"{p1:.2f} / {p2:.2f} |")
            continue
        lines.append(f"| {r['relation']} | {r['alpha']:g} | {r['goal']} | {r['n_seeds']:d} | {r['lam']:g} | "
                     f"{100 * r['acc_T1']:.2f} | "
                     f"{100 * r['acc_T2']:.2f} | {r['loss_T1']:.3f} | {r['loss_T2']:.3f} | {pl:g} | "
                     f"{p1:.2f} / {p2:.2f} |")
    lines += ["", "Paper alpha_hat: " + ", ".join(f"{k} {v:g}" for k, v in PAPER_ALPHA_HAT.items())
              + " (ours: diagnostics.csv, summary.csv)."]
    return "\n".join(lines) + "\n"
