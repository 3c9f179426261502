"""Figures drawn only from result files (never retrains). ``python -m tvtheory.plots results`` redraws them all.

Every figure shows the seed mean with a band (one standard deviation across seeds) and overlays the theory's
prediction (threshold lines, windows) so prediction and measurement are read in one picture.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from tvtheory import results, theory  # noqa: E402

T_COLORS = {"T1": "tab:blue", "T2": "tab:orange"}


def save(fig, out: Path, name: str) -> None:
    for ext in ("png", "pdf"):
        with results.atomic_path(out / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=130 if ext == "png" else None, bbox_inches="tight")
    plt.close(fig)


def _claims_cfg(out: Path) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())["claims"]


def _order(alphas) -> list[float]:
    """Irrelevant, then aligned (ascending), then contradictory (descending), as in the paper's Figure 1."""
    a = sorted(alphas)
    return [x for x in a if x == 0] + [x for x in a if x > 0] + [x for x in a if x < 0][::-1]


def figure1(out: Path) -> None:
    df = pd.read_csv(out / "metrics.csv")
    df = df[~df["diverged"].astype(bool)]
    cc = _claims_cfg(out)
    alphas = _order(df["alpha"].unique())
    fig, axes = plt.subplots(2, len(alphas), figsize=(3.1 * len(alphas), 5.6), sharex=True, squeeze=False)
    for j, a in enumerate(alphas):
        sub = df[df["alpha"] == a]
        kind = "irrelevant" if a == 0 else ("aligned" if a > 0 else "contradictory")
        for i, (col, label) in enumerate((("loss", "hinge loss"), ("acc", "accuracy"))):
            ax = axes[i, j]
            for task, g in sub.groupby("task"):
                st = g.groupby("lam")[col].agg(["mean", "std"]).fillna(0.0)
                ax.plot(st.index, st["mean"], color=T_COLORS[task], label=task, lw=1.6)
                ax.fill_between(st.index, st["mean"] - st["std"], st["mean"] + st["std"], color=T_COLORS[task],
                                alpha=0.25, lw=0)
            ax.axvspan(min(sub["lam"].min(), 0), 0, color="0.85", zorder=0)
            thr = float(theory.addition_threshold(a))
            if np.isfinite(thr):
                ax.axvline(thr, color="k", ls="--", lw=1, label="1 - alpha")
            if col == "loss":
                ax.axhline(cc["eps_learned"], color="tab:green", ls=":", lw=1, label="eps")
                ax.axhline(cc["forget_loss"], color="tab:red", ls=":", lw=1, label="forgotten")
            ax.set_ylabel(label if j == 0 else "")
            if i == 0:
                ax.set_title(f"{kind}, alpha = {a:g}")
            else:
                ax.set_xlabel("lambda")
                ax.set_ylim(-0.03, 1.03)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle("Psi_0 + dPsi_T1 + lambda dPsi_T2 (grey: negation side; dashed: Theorem 1 threshold 1 - alpha)",
                 fontsize=10)
    fig.tight_layout()
    save(fig, out, "figure1")


def phase(out: Path) -> None:
    if not (out / "phase.csv").exists():
        return
    ph = pd.read_csv(out / "phase.csv")
    alphas, lams = np.sort(ph["alpha"].unique()), np.sort(ph["lam"].unique())
    grid = lambda col: ph.pivot(index="alpha", columns="lam", values=col).loc[alphas, lams].to_numpy(float)  # noqa
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), sharex=True, sharey=True)
    ext = [lams[0] - 0.05, lams[-1] + 0.05, alphas[0] - 0.05, alphas[-1] + 0.05]
    for i, metric in enumerate(("loss", "acc")):
        for j, goal in enumerate(("add", "neg")):
            ax = axes[i, j]
            ax.imshow(grid(f"{goal}_{metric}"), origin="lower", aspect="auto", extent=ext, cmap="Greens",
                      vmin=0, vmax=1.3, interpolation="nearest")
            ax.set_title(f"{'addition' if goal == 'add' else 'negation'} success by "
                         f"{'hinge loss' if metric == 'loss' else 'accuracy'}", fontsize=10)
        if i == 0:
            ax = axes[0, 2]
            disagree = (grid("add_loss") != grid("add_acc")).astype(float) + \
                2 * (grid("neg_loss") != grid("neg_acc")).astype(float)
            ax.imshow(np.where(disagree > 0, disagree, np.nan), origin="lower", aspect="auto", extent=ext,
                      cmap="autumn", vmin=1, vmax=3, interpolation="nearest")
            ax.set_title("hinge loss and accuracy disagree\n(red: addition, orange: negation, yellow: both)",
                         fontsize=10)
    axes[1, 2].axis("off")
    axes[1, 2].text(0.0, 0.5, "green: success at (alpha, lambda)\n"
                    "addition: T1 kept and T2 learned\nnegation: lambda < 0, T1 kept and T2 forgotten\n"
                    "dashed: lambda = 1 - alpha (Theorem 1)\ndotted: lambda = 0\nrules: tvtheory/claims.py",
                    fontsize=10, va="center")
    a_line = np.linspace(alphas[0], alphas[-1], 100)
    for ax in axes.ravel()[:5]:
        ax.plot(1 - a_line[a_line >= 0], a_line[a_line >= 0], "k--", lw=1)
        ax.plot(1 - a_line[a_line < 0], a_line[a_line < 0], "k--", lw=1, alpha=0.35)
        ax.axvline(0, color="k", ls=":", lw=1)
        ax.set_xlim(ext[0], ext[1])
    for ax in axes[:, 0]:
        ax.set_ylabel("alpha = mu_T1 . mu_T2")
    for ax in axes[1, :2]:
        ax.set_xlabel("lambda")
    fig.suptitle(f"Phase diagram of Psi_0 + dPsi_T1 + lambda dPsi_T2 ({int(ph['n_seeds'].iloc[0])} seeds)")
    fig.tight_layout()
    save(fig, out, "phase")


def lambda_star(out: Path) -> None:
    src = out / ("phase.csv" if (out / "phase.csv").exists() else "metrics.csv")
    cc = _claims_cfg(out)
    df = pd.read_csv(src)
    if "L2" not in df:
        df = df[df["task"] == "T2"].groupby(["alpha", "lam"], as_index=False)[["loss", "acc"]].mean()
        df = df.rename(columns={"loss": "L2", "acc": "A2"})
    rows = []
    for a, g in df.groupby("alpha"):
        ok_l, ok_a = g[g["L2"] <= cc["eps_learned"]], g[g["A2"] >= cc["acc_learned"]]
        rows.append((a, ok_l["lam"].min() if len(ok_l) else np.nan, ok_a["lam"].min() if len(ok_a) else np.nan))
    a, ls_l, ls_a = map(np.asarray, zip(*rows))
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot(a, 1 - a, "k--", lw=1, label="1 - alpha (Theorem 1)")
    ax.plot(a, ls_l, "o-", color="tab:orange", label=f"measured: T2 hinge <= {cc['eps_learned']:g}")
    ax.plot(a, ls_a, "x", color="tab:purple", label=f"measured: T2 acc >= {cc['acc_learned']:g}")
    ax.axvspan(a.min(), 0, color="0.9", zorder=0)
    ax.text(a.min() + 0.02, 0.05, "contradictory:\naddition cannot\nkeep T1", fontsize=8,
            transform=ax.get_xaxis_transform())
    ax.set_xlabel("alpha")
    ax.set_ylabel("lambda*(alpha): smallest lambda learning T2")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, out, "lambda_star")


def arithmetic(out) -> None:
    out = Path(out)
    figure1(out)
    phase(out)
    lambda_star(out)


DRAWERS = {"arithmetic": arithmetic}


def main(root: str = "results") -> None:
    for name, draw in DRAWERS.items():
        if (Path(root) / name / "metrics.csv").exists():
            draw(Path(root) / name)
            print(f"redrew {Path(root) / name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
