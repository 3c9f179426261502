"""Derived tables drawn from the tidy measurements: the phase table, per-alpha summary, Table 1 for our model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tvtheory import claims, results
from tvtheory.config import ClaimsConfig

# The paper's Colored-MNIST Table 1 (theory.md section 6): relation -> goal -> (lambda, T1 acc %, T2 acc %).
PAPER_TABLE1 = {
    "irrelevant": {"addition": (1.4, 91.83, 88.40), "negation": (-0.6, 95.02, 50.34)},
    "aligned": {"addition": (0.2, 95.62, 92.46), "negation": (0.0, 95.20, 90.51)},
    "contradictory": {"addition": (0.6, 79.54, 62.52), "negation": (-1.0, 94.21, 4.97)},
}
PAPER_ALPHA_HAT = {"irrelevant": 0.164, "aligned": 0.891, "contradictory": -0.849}


def relation(alpha: float) -> str:
    return "irrelevant" if abs(alpha) < 1e-9 else ("aligned" if alpha > 0 else "contradictory")


def phase_table(rows: pd.DataFrame, cfg: ClaimsConfig) -> pd.DataFrame:
    """Seed means and the addition / negation success flags (hinge and accuracy rules) per (alpha, lambda)."""
    c = claims.curves(rows)
    beta = claims.beta_hat(c)
    parts = []
    for a in c.alphas():
        s_l, s_a = claims.sets(c, a, cfg, beta, "loss"), claims.sets(c, a, cfg, beta, "acc")
        cur = c.at(a)
        parts.append(pd.DataFrame({"alpha": a, "lam": cur.index, "L1": cur["L1"].values, "L2": cur["L2"].values,
                                   "A1": cur["A1"].values, "A2": cur["A2"].values,
                                   "add_loss": s_l["add"].values, "neg_loss": s_l["neg"].values,
                                   "add_acc": s_a["add"].values, "neg_acc": s_a["neg"].values}))
    out = pd.concat(parts, ignore_index=True)
    out["n_seeds"] = c.n_seeds
    return out


def summary(rows: pd.DataFrame, diag: pd.DataFrame, cfg: ClaimsConfig, d: int) -> pd.DataFrame:
    """Per alpha: lambda*, windows, beta (with 1/d beside it), alpha_hat and the task vectors' cosine."""
    out = claims.measure(rows, cfg)
    ok = diag[~diag["diverged"].astype(bool)] if "diverged" in diag else diag
    means = ok.groupby("alpha")[["alpha_hat", "tv_cosine", "dW_T2", "dV_T2"]].mean().reset_index()
    out = out.merge(means, on="alpha", how="left")
    out["one_over_d"] = 1.0 / d
    return out


def best_points(rows: pd.DataFrame) -> pd.DataFrame:
    """Per alpha, the best lambda for addition (min L1 + L2) and for negation (lambda <= 0, max L2 - L1)."""
    c = claims.curves(rows)
    out = []
    for a in c.alphas():
        cur = c.at(a)
        add = cur.index[np.argmin((cur["L1"] + cur["L2"]).to_numpy())]
        neg_side = cur[cur.index <= 0]
        neg = neg_side.index[np.argmax((neg_side["L2"] - neg_side["L1"]).to_numpy())] if len(neg_side) else np.nan
        for goal, lam in (("addition", add), ("negation", neg)):
            if np.isnan(lam):
                continue
            r = cur.loc[lam]
            out.append({"alpha": a, "relation": relation(a), "goal": goal, "lam": lam, "acc_T1": r["A1"],
                        "acc_T2": r["A2"], "loss_T1": r["L1"], "loss_T2": r["L2"]})
    return pd.DataFrame(out)


def table1(rows: pd.DataFrame) -> str:
    best = best_points(rows)
    order = {"irrelevant": 0, "aligned": 1, "contradictory": 2}
    best = best.sort_values(["relation", "alpha", "goal"], key=lambda col: col.map(order) if col.name == "relation"
                            else col.abs() if col.name == "alpha" else col)
    lines = ["# Table 1 for the one-layer transformer", "",
             "Psi_0 + dPsi_T1 + lambda dPsi_T2, best lambda per goal (addition: min T1 + T2 hinge loss; negation: "
             "lambda <= 0 with max T2 - T1 hinge loss), seed means. Paper: Colored-MNIST, ViT-Small/16 (accuracy %).",
             "", "| relation | alpha | goal | lambda | T1 acc | T2 acc | T1 hinge | T2 hinge | paper lambda | "
             "paper T1 / T2 acc |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in best.iterrows():
        pl, p1, p2 = PAPER_TABLE1[r["relation"]][r["goal"]]
        lines.append(f"| {r['relation']} | {r['alpha']:g} | {r['goal']} | {r['lam']:g} | {100 * r['acc_T1']:.2f} | "
                     f"{100 * r['acc_T2']:.2f} | {r['loss_T1']:.3f} | {r['loss_T2']:.3f} | {pl:g} | "
                     f"{p1:.2f} / {p2:.2f} |")
    lines += ["", "Paper alpha_hat: " + ", ".join(f"{k} {v:g}" for k, v in PAPER_ALPHA_HAT.items())
              + " (ours: diagnostics.csv, summary.csv)."]
    return "\n".join(lines) + "\n"


def arithmetic(out: str | Path, cfg: ClaimsConfig, source: str | Path | None = None) -> None:
    """Derive phase.csv, summary.csv, table1.md and claims.json from the measurement files in ``out``
    (``source``: the path the claims cite for metrics.csv, when ``out`` is a staging folder)."""
    out = Path(out)
    rows, diag = pd.read_csv(out / "metrics.csv"), pd.read_csv(out / "diagnostics.csv")
    if (out / "phase_metrics.csv").exists():
        results.write_csv(out / "phase.csv", phase_table(pd.read_csv(out / "phase_metrics.csv"), cfg))
    d = int(rows["d"].iloc[0])
    results.write_csv(out / "summary.csv", summary(rows, diag, cfg, d))
    results.write_text(out / "table1.md", table1(rows))
    results.write_claims(out, claims.arithmetic_claims(rows, cfg), source=str(source or out / "metrics.csv"))


def changed_verdicts(reference: list[dict], other: list[dict]) -> list[tuple[str, str, str]]:
    """(claim id, reference verdict, other verdict) for each claim whose verdict differs between two record lists
    of the same claims."""
    return [(a["id"], a["verdict"], b["verdict"]) for a, b in zip(reference, other) if a["verdict"] != b["verdict"]]


def assumptions(out: str | Path, records: dict[str, list[dict]], models: dict, k_pre: int,
                source: str | Path) -> None:
    """verdicts.md and verdicts.json of the assumptions experiment: each model option's Psi_0 and the Theorem 1-2
    claims under it, side by side; ``records`` and ``models`` (ModelConfigs) are keyed by option, reference first."""
    import dataclasses

    out = Path(out)
    names = list(records)
    results.write_json(out / "verdicts.json", {"source": str(source), "reference": names[0], "models": {
        n: {"config": dataclasses.asdict(models[n]), "claims": records[n]} for n in names}})
    psi0 = pd.read_csv(out / "psi0.csv").groupby("model").mean(numeric_only=True)
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    pre_cols = f" | hinge / acc on the {k_pre} pre-training tasks" if k_pre else ""
    lines = ["# Theorems 1-2 under changed assumptions", "",
             f"The Figure 1 sweep once per model option of conf/model/ (reference: `{names[0]}`), judged by the rules "
             f"of results/CLAIMS.md, from `{source}`. Psi_0 per model (seed means, psi0.csv):", "",
             r"| model | form | sigma_0 | sigma_w | Psi_0 | \|\|W_0\|\|_F | \|\|V_0\|\|_F" + pre_cols + " |",
             "|---|---|---|---|---|---|---" + ("|---" if k_pre else "") + "|"]
    for n in names:
        m, p = models[n], psi0.loc[n]
        init = (f"pre-trained: {m.pretrain_tasks} tasks, {m.pretrain_steps} steps" if m.pretrain_tasks else "random")
        pre = f" | {p['pretrain_loss']:.3f} / {p['pretrain_acc']:.3f}" if k_pre else ""
        lines.append(f"| `{n}` | {m.form} | {m.sigma_0:g} | {m.sigma_w:g} | {init} | {p['W0_norm']:.3f} | "
                     f"{p['V0_norm']:.3f}{pre} |")
    lines += ["", "| claim | " + " | ".join(f"`{n}`" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    mark = lambda r: ("pass" if r["verdict"] == "pass" else "**FAIL**") + ": " + esc(r["measured"])  # noqa: E731
    for i, r in enumerate(records[names[0]]):
        lines.append(f"| `{r['id']}` | " + " | ".join(mark(records[n][i]) for n in names) + " |")
    lines.append("")
    for n in names[1:]:
        changed = [f"`{i}` ({a} -> {b})" for i, a, b in changed_verdicts(records[names[0]], records[n])]
        lines.append(f"Verdicts that `{n}` changes against `{names[0]}`: " + (", ".join(changed) or "none") + ".")
    results.write_text(out / "verdicts.md", "\n".join(lines) + "\n")


PAPER_TABLE2 = {"direct": ("direct fine-tune on T'", None, 92.21), "T1": ("Psi*_T1", (1, 0), 88.10),
                "T2": ("Psi*_T2", (0, 1), 45.06), "best": ("best searched", (1.2, -0.6), 91.74)}


def ood(out: str | Path, gammas, cfg: ClaimsConfig, iou_min: float, source: str | Path | None = None) -> None:
    """Derive region.json, table2.md and claims.json from metrics.csv and reference.csv in ``out``."""
    out = Path(out)
    rows, refs = pd.read_csv(out / "metrics.csv"), pd.read_csv(out / "reference.csv")
    _, fit, two = claims.ood_fits(claims.ood_curves(rows), gammas, cfg.eps_learned)
    results.write_json(out / "region.json", {**fit, "two_thresholds": two, "gammas": [float(g) for g in gammas],
                                             "eps_learned": cfg.eps_learned})
    results.write_text(out / "table2.md", table2(rows, refs))
    results.write_claims(out, claims.ood_claims(rows, refs, gammas, cfg, iou_min),
                         source=str(source or out / "metrics.csv"))


def table2(rows: pd.DataFrame, refs: pd.DataFrame) -> str:
    cur = claims.ood_curves(rows)
    lam_cols = [c for c in cur.columns if c.startswith("lam")]
    best = claims.best_point(cur)
    best_pt = tuple(float(best[c]) for c in lam_cols)
    ok = rows[~rows["diverged"].astype(bool)] if "diverged" in rows else rows
    mask = np.all([np.isclose(ok[c], v) for c, v in zip(lam_cols, best_pt)], axis=0)
    per_seed_best = ok[mask]
    stats = {m: g[["loss", "acc"]] for m, g in refs.groupby("model")}
    stats["best"] = per_seed_best[["loss", "acc"]]
    lines = ["# Table 2 for the one-layer transformer", "",
             "Accuracy and hinge loss on the out-of-domain task T' (seed mean +- std); best searched = lowest mean "
             "hinge loss, ties broken by the smallest ||lambda||. Paper: Colored-MNIST, ViT-Small/16.", "",
             "| model | coefficients | T' acc (%) | T' hinge | paper coefficients | paper T' acc (%) |",
             "|---|---|---|---|---|---|"]
    for m in ["direct"] + sorted(k for k in stats if k.startswith("T")) + ["best"]:
        st = stats[m]
        name, pc, pacc = PAPER_TABLE2.get(m, (m, None, None))
        if m.startswith("T"):
            i = int(m[1:]) - 1
            coeff = tuple(1.0 if j == i else 0.0 for j in range(len(lam_cols)))
            name = f"Psi*_{m}"
        else:
            coeff = best_pt if m == "best" else None
        fmt = lambda t: "-" if t is None else "(" + ", ".join(f"{x:g}" for x in t) + ")"  # noqa: E731
        lines.append(f"| {name} | {fmt(coeff)} | {100 * st['acc'].mean():.2f} +- {100 * st['acc'].std(ddof=0):.2f} "
                     f"| {st['loss'].mean():.3f} +- {st['loss'].std(ddof=0):.3f} | {fmt(pc)} | "
                     f"{'-' if pacc is None else f'{pacc:.2f}'} |")
    return "\n".join(lines) + "\n"


def task_vector_structure(taus, psi0, ranks, M: int, eps: float):
    """Corollaries 1-2's premises, per seed and task: the singular values of dW and dV (the change of the merged
    weights, model.merged_delta), the rank-r truncation errors ||d - d_r||_F beside the corollary's bound terms
    (constants set to 1: M eps + 1/log M for dW, eps for dV), and the norms of dV's rows (one per hidden neuron).
    ``taus`` has leaves (S, K, ...), ``psi0`` leaves (S, ...)."""
    from tvtheory import model, taskvec

    leaves = {k: np.asarray(v) for k, v in taus.items()}
    S, K = next(iter(leaves.values())).shape[:2]
    spectra, lowrank, norms = [], [], []
    for s in range(S):
        base = {n: np.asarray(v)[s] for n, v in psi0.items()}
        for k in range(K):
            W, V = (np.asarray(x) for x in model.merged_delta(base, {n: v[s, k] for n, v in leaves.items()}))
            for name, X in (("dW", W), ("dV", V)):
                sv = np.linalg.svd(X, compute_uv=False)
                spectra += [{"seed": s, "task": f"T{k + 1}", "matrix": name, "index": i, "sv": x}
                            for i, x in enumerate(sv)]
                for r in list(ranks) + [len(sv)]:
                    approx, rel = taskvec.low_rank({"X": X}, int(r))
                    bound = M * eps + 1 / np.log(M) if name == "dW" else eps
                    lowrank.append({"seed": s, "task": f"T{k + 1}", "matrix": name, "rank": int(r),
                                    "full_rank": r == len(sv), "abs_err": float(np.linalg.norm(X - approx["X"])),
                                    "rel_err": float(rel["X"]), "norm": float(np.linalg.norm(X)),
                                    "bound_term": bound})
            norms += [{"seed": s, "task": f"T{k + 1}", "row": i, "norm": x} for i, x in
                      enumerate(np.linalg.norm(V, axis=1))]
    return pd.DataFrame(spectra), pd.DataFrame(lowrank), pd.DataFrame(norms)


def digits(out: str | Path, cfg, source: str | Path | None = None) -> None:
    """Derive table1.md, table2.md and claims.json of the Colored-Digits run from its files."""
    out = Path(out)
    rows, ah = pd.read_csv(out / "metrics.csv"), pd.read_csv(out / "alpha_hat.csv")
    ood_rows, refs = pd.read_csv(out / "ood.csv"), pd.read_csv(out / "reference.csv")
    lines = ["# Table 1 for Colored-Digits (small ViT)", "",
             "Psi_0 + dPsi_T1 + lambda dPsi_T2, best lambda per goal by accuracy (addition: max T1 + T2 accuracy; "
             "negation: lambda <= 0 with max T1 - T2 accuracy), seed means; paper: Colored-MNIST, ViT-Small/16.", "",
             "| relation | alpha_hat (paper) | goal | lambda | T1 acc | T2 acc | T1 hinge | T2 hinge | paper lambda | "
             "paper T1 / T2 acc |", "|---|---|---|---|---|---|---|---|---|---|"]
    for rel in ("irrelevant", "aligned", "contradictory"):
        sub = rows[rows["relation"] == rel]
        A = sub.pivot_table(index="lam", columns="task", values="acc", aggfunc="mean")
        L = sub.pivot_table(index="lam", columns="task", values="loss", aggfunc="mean")
        a_hat = ah[ah["relation"] == rel]["alpha_hat"].mean()
        neg = A[A.index <= 0]
        for goal, lam in (("addition", (A["T1"] + A["T2"]).idxmax()), ("negation", (neg["T1"] - neg["T2"]).idxmax())):
            pl, p1, p2 = PAPER_TABLE1[rel][goal]
            lines.append(f"| {rel} | {a_hat:.3f} ({PAPER_ALPHA_HAT[rel]:g}) | {goal} | {lam:g} | "
                         f"{100 * A.loc[lam, 'T1']:.2f} | {100 * A.loc[lam, 'T2']:.2f} | {L.loc[lam, 'T1']:.3f} | "
                         f"{L.loc[lam, 'T2']:.3f} | {pl:g} | {p1:.2f} / {p2:.2f} |")
    results.write_text(out / "table1.md", "\n".join(lines) + "\n")
    results.write_text(out / "table2.md", table2(ood_rows, refs).replace(
        "one-layer transformer", "Colored-Digits (sources: T1 and the contradictory T2)"))
    results.write_claims(out, claims.digits_claims(rows, ah, ood_rows, refs, cfg.kept_drop, cfg.forget_acc),
                         source=str(source or out / "metrics.csv"))


def gather(root: str | Path, name: str = "metrics.csv") -> pd.DataFrame:
    """Concatenate <root>/**/<name> of a multirun; each job's rows carry its config point (d, m, ...) columns."""
    files = sorted(Path(root).rglob(name))
    if not files:
        raise FileNotFoundError(f"root={str(root)!r}: no {name} below it")
    return pd.concat([pd.read_csv(f).assign(job=str(f.parent.relative_to(root))) for f in files], ignore_index=True)
