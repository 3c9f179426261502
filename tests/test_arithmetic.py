"""Arithmetic's analysis, claims and figures on hand-made Theorem 1-2 tables whose seeds are partly invalid: what has
no valid seed is marked (dashes, 'no valid seed', blank rows), everything else goes on, and every count says how many
valid seeds stand behind it."""

import numpy as np
import pandas as pd
import pytest

from tvtheory import plots
from tvtheory.config import Sweep
from tvtheory.experiments import arithmetic as ar

LAMS = np.round(np.arange(-1.0, 2.0001, 0.25), 2)
SEEDS = (0, 1, 2)


def tables(alphas, phase_alphas, invalid=lambda a, s: False) -> dict[str, pd.DataFrame]:
    """The tables of a run over the Figure 1 and phase alphas: T2 learned from lambda = 1 - alpha on, T1 kept; the
    (alpha, seed) for which ``invalid`` holds marked diverged, with losses no valid seed has."""
    rows, diag = [], []
    for a in sorted(set(alphas) | set(phase_alphas)):
        for s in SEEDS:
            bad = invalid(a, s)
            for task, L in (("T1", np.zeros_like(LAMS)), ("T2", np.maximum(1 - a - LAMS, 0.0))):
                rows.append(pd.DataFrame({"alpha": a, "seed": s, "lam": LAMS, "task": task,
                                          "loss": 1e30 if bad else L, "acc": np.where(L < 0.5, 1.0, 0.0),
                                          "diverged": bad}))
            diag.append({"alpha": a, "seed": s, "alpha_hat": a, "tv_cosine": a, "dW_T2": 1.0, "dV_T2": 1.0,
                         "diverged": bad})
    m = pd.concat(rows, ignore_index=True)
    return {"metrics": m[m["alpha"].isin(alphas)], "phase_metrics": m[m["alpha"].isin(phase_alphas)],
            "diagnostics": pd.DataFrame(diag)}


def config(alphas, phase_alphas) -> ar.Config:
    return ar.Config(sweep=Sweep(alphas=alphas, phase_alphas=phase_alphas, lam_min=-1.0, lam_max=2.0, lam_step=0.25))


@pytest.fixture
def figures(monkeypatch, tmp_path):
    """Draw a run's figures, keeping them open: name -> matplotlib figure."""
    figs = {}
    monkeypatch.setattr(plots, "save", lambda fig, out, name: figs.setdefault(name, fig))

    def draw(t, a, cfg):
        ar.plot(t, a, cfg, tmp_path)
        return figs
    yield draw
    plots.plt.close("all")


FIG1, PHASE = [-0.5, 0.0, 0.5], [-1.0, 1.0]


def test_the_figure_1_alphas_without_a_valid_seed_leave_dashes_and_inconclusive_claims(figures):
    """Every seed invalid at every Figure 1 alpha, the phase diagram's alphas valid: analysing used to stop on the
    empty curves (KeyError 'loss')."""
    cfg = config(FIG1, PHASE)
    t = tables(FIG1, PHASE, invalid=lambda a, s: a in FIG1)
    a = ar.analyse(t, cfg)
    windows = a["summary"][["add_window", "neg_window", "add_window_acc", "neg_window_acc"]]
    assert (windows == "no valid seed").all(axis=None)
    assert a["summary"]["lambda_star"].isna().all() and list(a["summary"]["alpha"]) == FIG1
    assert (a["summary"]["n_seeds"] == 0).all()
    assert a["table1"].count("| 0 | - | - | - | - | - |") == 2 * len(FIG1)
    recs = ar.claims(a, cfg)
    assert [r.verdict for r in recs] == ["inconclusive"] * 7 and {r.n_seeds for r in recs} == {0}
    assert all("no valid seed" in r.measured for r in recs)
    assert dict(zip(a["phase"]["alpha"], a["phase"]["n_seeds"])) == {-1.0: 3, 1.0: 3}
    figs = figures(t, a, cfg)
    assert {"figure1", "phase", "lambda_star"} <= set(figs)
    assert figs["figure1"].get_suptitle().endswith("no valid seed)")


def test_the_phase_alphas_without_a_valid_seed_leave_blank_rows_and_the_figure_1_claims(figures):
    """The reverse: every seed invalid at the phase diagram's own alphas; the Figure 1 claims keep their verdicts."""
    cfg = config(FIG1, PHASE)
    t = tables(FIG1, PHASE, invalid=lambda a, s: a in PHASE)
    a = ar.analyse(t, cfg)
    ph = a["phase"]
    assert (ph["n_seeds"] == 0).all() and ph["L2"].isna().all() and sorted(ph["alpha"].unique()) == PHASE
    clean = ar.claims(ar.analyse(tables(FIG1, PHASE), cfg), cfg)
    assert [(r.verdict, r.n_seeds) for r in ar.claims(a, cfg)] == [(r.verdict, r.n_seeds) for r in clean]
    assert {r.n_seeds for r in clean} == {3}
    figs = figures(t, a, cfg)
    assert "figure1" in figs and "phase" not in figs                   # a diagram without one measured cell
    assert list(figs["lambda_star"].axes[0].lines[1].get_xdata()) == FIG1    # lambda* from the Figure 1 alphas


def test_the_phase_diagram_counts_the_seeds_of_each_alpha_and_keeps_a_blank_row_for_one_without(figures):
    """One phase alpha without a valid seed: the figure said '(0 seeds)' for all of them and drew the other alphas'
    rows into its place."""
    phase = [-0.5, 0.0, 0.25, 0.5]
    cfg = config(FIG1, phase)
    t = tables(FIG1, phase, invalid=lambda a, s: a == 0.25 or (a == -0.5 and s == 0))
    a = ar.analyse(t, cfg)
    assert a["phase"].groupby("alpha")["n_seeds"].first().to_dict() == {-0.5: 2, 0.0: 3, 0.25: 0, 0.5: 3}
    figs = figures(t, a, cfg)
    assert figs["phase"].get_suptitle().endswith("(2-3 seeds per alpha; no valid seed at alpha = 0.25)")
    rows = figs["phase"].axes[0].images[0].get_array()
    assert rows.shape[0] == len(phase) and np.ma.getmaskarray(rows)[phase.index(0.25)].all()
    assert not np.ma.getmaskarray(rows)[phase.index(0.5)].any()
    assert "no valid seed at alpha = 0.25" in figs["lambda_star"].axes[0].get_title()


def test_lambda_star_from_a_metrics_table_leaves_out_invalid_seeds(figures):
    """Without phase alphas the figure reads the metrics table: its seed means took in the invalid seeds' rows."""
    cfg = config(FIG1, [])
    t = tables(FIG1, [], invalid=lambda a, s: a == 0.0 and s == 0)
    a = ar.analyse(t, cfg)
    assert dict(zip(a["summary"]["alpha"], a["summary"]["n_seeds"])) == {-0.5: 3, 0.0: 2, 0.5: 3}
    assert "| irrelevant | 0 | addition | 2 | 1 |" in a["table1"] and "| aligned | 0.5 | addition | 3 | 0.5 |" in a[
        "table1"], a["table1"]
    figs = figures(t, a, cfg)
    ax = figs["lambda_star"].axes[0]
    measured = ax.lines[1]                                             # T2 hinge <= eps
    assert list(measured.get_xdata()) == FIG1 and list(measured.get_ydata()) == [1.5, 1.0, 0.5]   # 1 - alpha
    assert "(2-3 seeds per alpha)" in ax.get_title()


@pytest.mark.parametrize("rule, alpha, task", [("thm1.contradictory_fails", -0.5, "T1"),
                                                ("thm2.aligned_fails", 0.5, "T2")])
def test_a_task_whose_rows_are_missing_decides_no_rule_that_reads_it(rule, alpha, task):
    """The two rules that pass where a set is empty: without the rows of the task they read, a missing seed mean
    used to count as beyond every bound, so the set was certainly empty and the claim passed on missing data."""
    cfg = config(FIG1, [])
    t = tables(FIG1, [])
    before = {r.id: r.verdict for r in ar.claims(ar.analyse(t, cfg), cfg)}
    m = t["metrics"]
    t["metrics"] = m[~((m["alpha"] == alpha) & (m["task"] == task))]
    after = {r.id: r for r in ar.claims(ar.analyse(t, cfg), cfg)}
    assert before[rule] == "fail" and after[rule].verdict == "inconclusive", (before[rule], after[rule])
