"""Figures, drawn only from result tables (never retraining). ``python -m tvtheory.plots DIR`` redraws every figure of
the result folders at or below DIR: one run's folder, a multirun's, or results/.

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
import tvtheory  # noqa: E402
from tvtheory import analysis, results, theory  # noqa: E402

T_COLORS = {"T1": "tab:blue", "T2": "tab:orange"}


def save(fig, out: Path, name: str) -> None:
    for ext in ("png", "pdf"):
        with results.atomic_path(out / f"{name}.{ext}") as tmp:
            # no creation date in the PDF: redrawing the same results gives the same bytes
            fig.savefig(tmp, format=ext, dpi=130 if ext == "png" else None, bbox_inches="tight",
                        metadata={"CreationDate": None} if ext == "pdf" else None)
    plt.close(fig)


def lambda_curves(ax, sub: pd.DataFrame, col: str) -> None:
    """T1 and T2 against lambda: seed mean with a +-1 std band; the negation side (lambda < 0) shaded."""
    for task, g in sub.groupby("task"):
        st = g.groupby("lam")[col].agg(["mean", "std"]).fillna(0.0)
        ax.plot(st.index, st["mean"], color=T_COLORS[task], label=task, lw=1.6)
        ax.fill_between(st.index, st["mean"] - st["std"], st["mean"] + st["std"], color=T_COLORS[task],
                        alpha=0.25, lw=0)
    ax.axvspan(min(sub["lam"].min(), 0), 0, color="0.85", zorder=0)


def _order(alphas) -> list[float]:
    """Irrelevant, then aligned (ascending), then contradictory (descending), as in the paper's Figure 1."""
    a = sorted(alphas)
    return [x for x in a if x == 0] + [x for x in a if x > 0] + [x for x in a if x < 0][::-1]


def _seeds(n: pd.Series) -> str:
    """The valid seeds behind a figure of several alphas (``n``: alpha -> valid seeds, 0 for some)."""
    live, dead = n[n > 0], n.index[n == 0]
    if live.empty:
        return "no valid seed"
    lo, hi = int(live.min()), int(live.max())
    text = (f"{lo} seed" + "s" * (lo > 1) if lo == hi else f"{lo}-{hi} seeds per alpha")
    return text + ("; no valid seed at alpha = " + ", ".join(f"{a:g}" for a in dead) if len(dead) else "")


def figure1(df: pd.DataFrame, cc, out: Path) -> None:
    """The paper's Figure 1: T1 and T2 against lambda per alpha, hinge loss and accuracy (a panel per alpha, empty
    where it has no valid seed)."""
    alphas = _order(df["alpha"].unique())
    n, df = analysis.seeds_at(df, "alpha", alphas), analysis.valid(df)
    fig, axes = plt.subplots(2, len(alphas), figsize=(3.1 * len(alphas), 5.6), sharex=True, squeeze=False)
    for j, a in enumerate(alphas):
        sub = df[df["alpha"] == a]
        kind = "irrelevant" if a == 0 else ("aligned" if a > 0 else "contradictory")
        for i, (col, label) in enumerate((("loss", "hinge loss"), ("acc", "accuracy"))):
            ax = axes[i, j]
            if n[a]:
                lambda_curves(ax, sub, col)
            else:
                ax.text(0.5, 0.5, "no valid seed", ha="center", va="center", transform=ax.transAxes)
            thr = float(theory.addition_threshold(a))
            if np.isfinite(thr):
                ax.axvline(thr, color="k", ls="--", lw=1, label="1 - alpha")
            if col == "loss":
                ax.axhline(cc.eps_learned, color="tab:green", ls=":", lw=1, label="eps")
                ax.axhline(cc.forget_loss, color="tab:red", ls=":", lw=1, label="forgotten")
            ax.set_ylabel(label if j == 0 else "")
            if i == 0:
                ax.set_title(f"{kind}, alpha = {a:g}")
            else:
                ax.set_xlabel("lambda")
                ax.set_ylim(-0.03, 1.03)
    axes[0, int(np.argmax(n.to_numpy() > 0))].legend(fontsize=7, loc="upper right")     # a panel with curves
    fig.suptitle("Psi_0 + dPsi_T1 + lambda dPsi_T2 (grey: negation side; dashed: Theorem 1 threshold 1 - alpha; "
                 f"{_seeds(n)})", fontsize=10)
    fig.tight_layout()
    save(fig, out, "figure1")


def phase(ph: pd.DataFrame, out: Path) -> None:
    """Success of addition and negation over (alpha, lambda), by hinge loss and by accuracy; the rows of alphas
    without a valid seed stay blank (grey)."""
    if ph is None or not (ph["n_seeds"] > 0).any():
        return
    alphas, lams = np.sort(ph["alpha"].unique()), np.sort(ph["lam"].unique())
    n = ph.groupby("alpha")["n_seeds"].first().loc[alphas]
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
            ax.imshow(np.where((disagree > 0) & (n.to_numpy() > 0)[:, None], disagree, np.nan), origin="lower",
                      aspect="auto", extent=ext, cmap="autumn", vmin=1, vmax=3, interpolation="nearest")
            ax.set_title("hinge loss and accuracy disagree\n(red: addition, orange: negation, yellow: both)",
                         fontsize=10)
    axes[1, 2].axis("off")
    axes[1, 2].text(0.0, 0.5, "green: success at (alpha, lambda)\n"
                    "addition: T1 kept and T2 learned\nnegation: lambda < 0, T1 kept and T2 forgotten\n"
                    "dashed: lambda = 1 - alpha (Theorem 1)\ndotted: lambda = 0\nrules: tvtheory/claims.py"
                    + ("\ngrey: no valid seed" if (n == 0).any() else ""), fontsize=10, va="center")
    a_line = np.linspace(alphas[0], alphas[-1], 100)
    row = (ext[3] - ext[2]) / len(alphas)                   # the height of one alpha's row of the images
    for ax in axes.ravel()[:5]:
        for i in np.flatnonzero(n.to_numpy() == 0):
            ax.axhspan(ext[2] + i * row, ext[2] + (i + 1) * row, color="0.8", lw=0)
        ax.plot(1 - a_line[a_line >= 0], a_line[a_line >= 0], "k--", lw=1)
        ax.plot(1 - a_line[a_line < 0], a_line[a_line < 0], "k--", lw=1, alpha=0.35)
        ax.axvline(0, color="k", ls=":", lw=1)
        ax.set_xlim(ext[0], ext[1])
    for ax in axes[:, 0]:
        ax.set_ylabel("alpha = mu_T1 . mu_T2")
    for ax in axes[1, :2]:
        ax.set_xlabel("lambda")
    fig.suptitle(f"Phase diagram of Psi_0 + dPsi_T1 + lambda dPsi_T2 ({_seeds(n)})")
    fig.tight_layout()
    save(fig, out, "phase")


def lambda_star(df: pd.DataFrame, cc, out: Path) -> None:
    """lambda*(alpha) measured (hinge and accuracy) against 1 - alpha; ``df`` is a phase table or a metrics table (its
    valid seeds' means)."""
    if "L2" in df:
        n = df.groupby("alpha")["n_seeds"].first()
    else:
        c = analysis.curves(df)
        df, n = c.mean.reset_index(), c.valid_seeds
    if not (n > 0).any():
        return
    rows = []
    for a, g in df.groupby("alpha"):
        ok_l, ok_a = g[g["L2"] <= cc.eps_learned], g[g["A2"] >= cc.acc_learned]
        rows.append((a, ok_l["lam"].min() if len(ok_l) else np.nan, ok_a["lam"].min() if len(ok_a) else np.nan))
    a, ls_l, ls_a = map(np.asarray, zip(*rows))
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot(a, 1 - a, "k--", lw=1, label="1 - alpha (Theorem 1)")
    ax.plot(a, ls_l, "o-", color="tab:orange", label=f"measured: T2 hinge <= {cc.eps_learned:g}")
    ax.plot(a, ls_a, "x", color="tab:purple", label=f"measured: T2 acc >= {cc.acc_learned:g}")
    ax.axvspan(a.min(), 0, color="0.9", zorder=0)
    ax.text(a.min() + 0.02, 0.05, "contradictory:\naddition cannot\nkeep T1", fontsize=8,
            transform=ax.get_xaxis_transform())
    ax.set_xlabel("alpha")
    ax.set_ylabel("lambda*(alpha): smallest lambda learning T2")
    ax.set_title(f"seed means ({_seeds(n)})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, out, "lambda_star")


def ood(rows: pd.DataFrame, fit: dict, out: Path, title: str = "") -> None:
    """Figure 2: T' accuracy and hinge loss over (lambda_1, lambda_2) (test set); the measured success region with
    Theorem 3's region for the declared c (black) and, as descriptions fitted on these data, the best single- and
    two-threshold regions."""
    rows = analysis.valid(rows)
    lam_cols = analysis.lam_columns(rows)
    if len(lam_cols) != 2:
        return                                   # heatmaps only for two source tasks
    cur = analysis.ood_curves(rows)
    l1, l2 = np.sort(cur["lam1"].unique()), np.sort(cur["lam2"].unique())
    grid = lambda col: cur.pivot(index="lam2", columns="lam1", values=col).loc[l2, l1].to_numpy()  # noqa: E731
    L1, L2 = np.meshgrid(l1, l2)
    coeffs = np.stack([L1.ravel(), L2.ravel()], -1)
    region = lambda tau, lam_max, **kw: theory.ood_region(coeffs, fit["gammas"], tau, lam_max, **kw).reshape(  # noqa
        L1.shape).astype(float)
    best = analysis.best_point(analysis.ood_curves(rows, "val_loss", "val_acc")) if "val_loss" in rows else \
        analysis.best_point(cur)
    n_seeds = rows["seed"].nunique()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, col, cmap, label in ((axes[0], "acc", "viridis", "T' accuracy"),
                                 (axes[1], "loss", "magma_r", "T' hinge loss")):
        im = ax.pcolormesh(l1, l2, grid(col), cmap=cmap, shading="nearest")
        fig.colorbar(im, ax=ax, label=label)
        ax.set_title(f"(A) {label} ({n_seeds} seeds, test)")
    ax = axes[2]
    ax.pcolormesh(l1, l2, (grid("loss") <= fit["eps_learned"]).astype(float), cmap="Greens", vmin=0, vmax=1.4,
                  shading="nearest")
    dec = fit.get("declared")
    if dec and dec["points"]:
        ax.contour(L1, L2, region(dec["tau"], dec["lam_max"]), levels=[0.5], colors="k", linewidths=1.8)
    ax.contour(L1, L2, region(fit["tau"], fit["lam_max"]), levels=[0.5], colors="tab:gray", linewidths=1,
               linestyles=":")
    two = fit["two_thresholds"]
    ax.contour(L1, L2, region(two["tau_i"], two["lam_max"], tau_ii=two["tau_ii"]), levels=[0.5], colors="tab:purple",
               linewidths=1, linestyles="--")
    decl = (f"Theorem 3 (black): c = {dec['c']:g}, tau = {dec['tau']:g}: {dec['succeed']}/{dec['points']} succeed"
            if dec else "")
    ax.set_title(f"(B) success (green, hinge <= {fit['eps_learned']:g}). {decl}\nfitted descriptions: one tau = "
                 f"{fit['tau']:g} (grey, IoU {fit['iou']:.2f}); tau_i = {two['tau_i']:g}, tau_ii = {two['tau_ii']:g} "
                 f"(purple, IoU {two['iou']:.2f})", fontsize=8)
    for ax in axes:
        ax.plot([1], [0], "o", mfc="none", mec="tab:blue", ms=9, label="Psi*_T1 (1, 0)")
        ax.plot([0], [1], "s", mfc="none", mec="tab:red", ms=9, label="Psi*_T2 (0, 1)")
        ax.plot([best["lam1"]], [best["lam2"]], "*", color="w", mec="k", ms=13,
                label=f"best on validation ({best['lam1']:g}, {best['lam2']:g})")
        ax.set_xlabel("lambda_1")
        ax.set_ylabel("lambda_2")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title or f"Psi_0 + lambda_1 dPsi_T1 + lambda_2 dPsi_T2 on T' (gamma = {fit['gammas']})", fontsize=10)
    fig.tight_layout()
    save(fig, out, "figure2")


def corollaries(sp: pd.DataFrame, rn: pd.DataFrame, v: pd.DataFrame, out: Path) -> None:
    """Corollary 1's spectra of dW and dV, Corollary 2's row norms of dV, and each variant's own verdicts."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, name in zip(axes[:2], ("dW", "dV")):
        for task, g in sp[sp["matrix"] == name].groupby("task"):
            st = g.groupby("index")["sv"].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(st.index[:12], st["mean"][:12], yerr=st["std"][:12], marker="o", ms=3, capsize=2,
                        label=task)
        ax.set_yscale("log")
        ax.set_xlabel("index")
        ax.set_ylabel("singular value")
        ax.set_title(f"Corollary 1: spectrum of {name} (seed mean +- std)")
        ax.legend(fontsize=8)
    m = rn["row"].nunique()
    ax = axes[2]
    ax.hist(rn["norm"], bins=60, color="tab:gray")
    ax.axvline(m ** -0.5, color="k", ls="--", label="m^-1/2")
    ax.set_xlabel("norm of a row u_i of dV")
    ax.set_ylabel("rows (valid seeds, all tasks)")
    ax.set_title("Corollary 2 predicts two groups of row norms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, out, "corollaries_structure")

    piv = v.pivot(index="variant", columns="id", values="verdict")
    order = ["dense"] + sorted(i for i in piv.index if i.startswith("rank")) + sorted(
        (i for i in piv.index if i.startswith("prune")), key=lambda x: float(x[5:]))
    piv = piv.loc[order]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * piv.shape[1], 0.8 + 0.45 * piv.shape[0]))
    ax.imshow(piv.replace({"pass": 1.0, "inconclusive": 0.5, "fail": 0.0}).to_numpy(float), cmap="RdYlGn",
              vmin=-0.3, vmax=1.3, aspect="auto")
    for (i, j), val in np.ndenumerate(piv.to_numpy()):
        ax.text(j, i, val, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(piv.shape[1]), piv.columns, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(piv.shape[0]), piv.index, fontsize=8)
    ax.set_title("Each variant judged on its own by the Theorem 1-3 rules (the corollaries' claims compare the "
                 "measured quantities instead)", fontsize=9)
    fig.tight_layout()
    save(fig, out, "corollaries_verdicts")


def scaling(b: pd.DataFrame, bs: pd.DataFrame, conv: pd.DataFrame, out: Path) -> None:
    """beta against d per m (seed bands) with Theta(1/d); SGD steps to eps against delta_* with Theta(delta_*^-2)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    b = b[b["beta_neg"] > 0]                          # a log axis: beta = 0 (nothing degraded) is not drawn
    for m, g in b.groupby("m"):
        sd = bs[bs["m"] == m].groupby("d")["beta_neg"].std()
        axes[0].errorbar(g["d"], g["beta_neg"], yerr=sd.loc[g["d"]].to_numpy(), marker="o", capsize=3,
                         label=f"beta_neg, m = {m}")
    d = np.asarray(sorted(b["d"].unique()), float)
    widths = sorted(b["m"].unique())                  # the middle width's first drawn point anchors the line
    ref = b[b["m"] == widths[len(widths) // 2]].sort_values("d") if widths else b
    scale = float(ref["beta_neg"].iloc[0] * ref["d"].iloc[0]) if len(ref) else 1.0
    axes[0].plot(d, scale / d, "k--", label="Theta(1/d) through the first point")
    axes[0].set_xscale("log")
    if len(b):
        axes[0].set_yscale("log")
    axes[0].set_xlabel("d")
    axes[0].set_ylabel("beta (T1 hinge loss per unit |lambda|)")
    axes[0].set_title("beta measured under negation of an irrelevant task")
    axes[0].legend(fontsize=7)
    st = conv.groupby("delta_star")["steps"].agg(["mean", "std"]).dropna(subset=["mean"])
    if len(st):
        axes[1].errorbar(st.index, st["mean"], yerr=st["std"].fillna(0), marker="o", capsize=3,
                         label=f"measured ({conv['seed'].nunique()} seeds)")
        x = st.index.to_numpy(float)
        axes[1].plot(x, st["mean"].iloc[0] * (x / x[0]) ** -2, "k--", label="Theta(delta_*^-2) through the first point")
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].legend(fontsize=7)
    else:
        axes[1].text(0.5, 0.5, "no run reached eps", ha="center", transform=axes[1].transAxes)
    axes[1].set_xlabel("delta_* (fraction of label-relevant tokens)")
    axes[1].set_ylabel("SGD steps to reach eps")
    axes[1].set_title("iterations to learn a task")
    fig.tight_layout()
    save(fig, out, "scaling")


def digits(df: pd.DataFrame, ood: pd.DataFrame, out: Path) -> None:
    """Colored-Digits Figure 1 (test split) and the out-of-domain accuracy map (Figure 2A)."""
    df = analysis.valid(df[df["split"] == "test"]) if "split" in df else analysis.valid(df)
    rels = ["irrelevant", "aligned", "contradictory"]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    for j, rel in enumerate(rels):
        sub = df[df["relation"] == rel]
        for i, (col, label) in enumerate((("acc", "accuracy"), ("loss", "hinge loss"))):
            ax = axes[i, j]
            lambda_curves(ax, sub, col)
            ax.set_ylabel(label if j == 0 else "")
            if i == 0:
                ax.set_title(f"{rel}")
                ax.axhline(0.5, color="k", ls=":", lw=0.8)
            else:
                ax.set_xlabel("lambda")
    labelled = [ax for ax in axes[0] if ax.get_legend_handles_labels()[0]]    # a relation may have no valid seed
    if labelled:
        labelled[0].legend(fontsize=8)
    fig.suptitle("Colored-Digits: Psi_0 + dPsi_T1 + lambda dPsi_T2 (small ViT; grey: negation side)", fontsize=10)
    fig.tight_layout()
    save(fig, out, "figure1")
    o = analysis.valid(ood).groupby(["lam1", "lam2"], as_index=False)["acc"].mean()
    if o.empty:                                       # no seed's contradictory pair was valid: no map to draw
        return
    l1, l2 = np.sort(o["lam1"].unique()), np.sort(o["lam2"].unique())
    fig, ax = plt.subplots(figsize=(6, 4.5))
    im = ax.pcolormesh(l1, l2, o.pivot(index="lam2", columns="lam1", values="acc").loc[l2, l1].to_numpy(),
                       cmap="viridis", shading="nearest")
    fig.colorbar(im, ax=ax, label="T' accuracy")
    ax.plot([1], [0], "o", mfc="none", mec="w", ms=9, label="Psi*_T1")
    ax.plot([0], [1], "s", mfc="none", mec="r", ms=9, label="Psi*_T2")
    ax.set_xlabel("lambda_1 (T1)")
    ax.set_ylabel("lambda_2 (contradictory T2)")
    ax.legend(fontsize=8)
    ax.set_title("Colored-Digits out-of-domain map (Figure 2A)")
    fig.tight_layout()
    save(fig, out, "figure2")


def digits_map(mp: pd.DataFrame, out: Path) -> None:
    """alpha_hat of each task pair against Psi_0's pre-training strength, one line per pre-training task (seed mean
    +- std): the relation between two tasks is a property of the pair and of Psi_0 together."""
    mp = analysis.valid(mp)
    rels = ["irrelevant", "aligned", "contradictory"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, rel in zip(axes, rels):
        for (setting, labels), g in mp[mp["relation"] == rel].groupby(["setting", "pretrain_labels"]):
            st = g.groupby("pretrain_steps")["alpha_hat"].agg(["mean", "std"]).fillna(0.0)
            x = np.maximum(st.index.to_numpy(float), 1.0)          # 0 steps drawn at 1 on the log axis
            ax.plot(x, st["mean"], "o-", label=f"pre-trained on '{labels}' ({setting})")
            ax.fill_between(x, st["mean"] - st["std"], st["mean"] + st["std"], alpha=0.25, lw=0)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("pre-training steps (0 drawn at 1)")
        ax.set_title(rel)
    axes[0].set_ylabel("alpha_hat (output cosine of Psi*_T1, Psi*_T2)")
    axes[0].legend(fontsize=7)
    fig.suptitle("How Psi_0 decides the relation of two Colored-Digits tasks", fontsize=10)
    fig.tight_layout()
    save(fig, out, "alpha_hat_map")


def assumptions(df: pd.DataFrame, cc, out: Path) -> None:
    """Figure 1's hinge-loss panels once per model option (rows; the reference on top)."""
    df = analysis.valid(df)
    alphas = _order(df["alpha"].unique())
    names = list(dict.fromkeys(df["model"]))
    fig, axes = plt.subplots(len(names), len(alphas), figsize=(3.1 * len(alphas), 2.8 * len(names)), sharex=True,
                             sharey="row", squeeze=False)
    for i, name in enumerate(names):
        for j, a in enumerate(alphas):
            ax = axes[i, j]
            lambda_curves(ax, df[(df["model"] == name) & (df["alpha"] == a)], "loss")
            thr = float(theory.addition_threshold(a))
            if np.isfinite(thr):
                ax.axvline(thr, color="k", ls="--", lw=1, label="1 - alpha")
            ax.axhline(cc.eps_learned, color="tab:green", ls=":", lw=1, label="eps")
            ax.axhline(cc.forget_loss, color="tab:red", ls=":", lw=1, label="forgotten")
            if i == 0:
                ax.set_title(f"alpha = {a:g}")
            if i == len(names) - 1:
                ax.set_xlabel("lambda")
            if j == 0:
                ax.set_ylabel(f"model={name}\nhinge loss")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle("Psi_0 + dPsi_T1 + lambda dPsi_T2 under each model option (seed mean +- std)", fontsize=10)
    fig.tight_layout()
    save(fig, out, "figure1")


def main(root: str = "results") -> None:
    """Redraw the figures of every result folder at or below ``root`` from its tables alone."""
    from tvtheory import runner

    tvtheory.collect_garbage_less()
    folders = runner.run_folders(Path(root))
    if not folders:
        print(f"error: {root} holds no result folder ({results.MARKER})", file=sys.stderr)
        sys.exit(2)
    failed = False
    for folder in folders:
        try:
            exp, cfg, tables = runner.load(folder)
            with results.staged(folder, replace=False) as stage:          # a failure changes no figure
                try:
                    exp.plot(tables, exp.analyse(tables, cfg), cfg, stage)
                except KeyError as e:
                    raise runner.missing_column(folder, tables, e) from None
        except Exception as e:                  # one line per folder; the other folders are still drawn
            failed = True
            print(f"error: {e}" if str(e).startswith("folder=") else
                  f"error: folder={str(folder)!r}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        print(f"redrew {folder}")
    if failed:
        sys.exit(2)


if __name__ == "__main__":
    from tvtheory import runner

    main(str(runner.folder_argument("python -m tvtheory.plots", "Redraw the figures of every result folder from its "
                                    "tables alone.", sys.argv[1:])))
