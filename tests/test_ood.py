"""Theorem 3 through the library: the region fits, the per-grid-point measurements, and k = 3 source tasks end to
end (the claims' verdicts are tested in test_claims.py)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from tvtheory import analysis, data, metrics, runner, streams, sweep, taskvec, theory
from tvtheory.config import Data, Model, Train

G = (0.75, -0.6)
COMMITTED = Path(__file__).resolve().parent.parent / "results" / "ood"


def grid(step=0.1):
    return sweep.coefficient_grid([(-2, 3, step), (-2, 2, step)])


def theorem3_loss(coeffs, tau=1.2, lam_max=2.5):
    return np.where(theory.ood_region(coeffs, G, tau, lam_max), 0.0, 0.8)


def test_coefficient_grid_is_the_product_grid_lambda1_slowest():
    c = sweep.coefficient_grid([(-1, 1, 1), (0, 0.5, 0.5)])
    assert c.dtype == np.float32
    assert c.tolist() == [[-1, 0], [-1, 0.5], [0, 0], [0, 0.5], [1, 0], [1, 0.5]]
    assert grid().shape == (51 * 41, 2)


def test_fit_recovers_the_generating_region():
    coeffs = grid()
    fit = analysis.fit_ood_region(coeffs, theorem3_loss(coeffs) <= 0.05, G)
    assert fit["iou"] == pytest.approx(1.0) and fit["tau"] == pytest.approx(1.2, abs=0.011)
    assert fit["lam_max"] == pytest.approx(2.5)


def test_fit_of_a_region_that_is_not_theorem3s_shape_scores_below_one():
    rng = np.random.default_rng(0)
    noise = rng.random(len(grid())) < 0.5               # a checkerboard of successes fits no half-planes
    assert analysis.fit_ood_region(grid(), noise, G)["iou"] < 0.6


def test_two_threshold_fit_recovers_separate_thresholds():
    coeffs = grid()
    success = theory.ood_region(coeffs, G, 0.8, 2.5, tau_ii=1.0)
    fit = analysis.fit_ood_two_thresholds(coeffs, success, G, 2.5)
    assert fit["iou"] == pytest.approx(1.0) and fit["lam_max"] == 2.5
    assert fit["tau_i"] == pytest.approx(0.8, abs=0.05) and fit["tau_ii"] == pytest.approx(1.0, abs=0.05)
    np.testing.assert_array_equal(theory.ood_region(coeffs, G, fit["tau_i"], 2.5, tau_ii=fit["tau_ii"]), success)


def test_iou_by_hand():
    a = np.array([[True, True, False, False], [False, False, False, False]])
    b = np.array([True, False, True, False])
    assert analysis.iou(a, b).tolist() == [1 / 3, 0.0]
    assert analysis.iou(np.zeros(3, bool), np.zeros(3, bool)) == 0.0            # both empty


def hand_table():
    """Six grid points, seeds 0 and 1 (seed 1's loss 0.1 higher) and a diverged seed 2."""
    pts = [(0, 0, 0.9), (0, 1, 0.5), (1, 0, 0.2), (1, 1, 0.2), (2, 0, 0.2), (2, 1, 0.7)]
    rows = [{"seed": s, "lam1": float(a), "lam2": float(b), "loss": v + 0.1 * s if s < 2 else np.nan,
             "acc": 1.0 - v, "val_loss": 2 * v, "val_acc": 0.5, "diverged": s == 2}
            for s in range(3) for a, b, v in pts]
    return pd.DataFrame(rows)


def test_ood_curves_best_point_and_axes_by_hand():
    cur = analysis.ood_curves(hand_table())
    assert list(cur.columns) == ["lam1", "lam2", "loss", "acc", "loss_std", "acc_std"] and len(cur) == 6
    row = cur[(cur.lam1 == 0) & (cur.lam2 == 1)].iloc[0]
    assert row["loss"] == pytest.approx(0.55) and row["loss_std"] == pytest.approx(0.1 / np.sqrt(2))
    assert row["acc"] == pytest.approx(0.5) and row["acc_std"] == 0.0            # the diverged seed is left out
    best = analysis.best_point(cur)                      # three ties at 0.25: the smallest edit wins
    assert (best["lam1"], best["lam2"]) == (1.0, 0.0)
    assert analysis.on_axis(cur, 0)[["lam1", "lam2"]].values.tolist() == [[0, 0], [1, 0], [2, 0]]
    assert analysis.on_axis(cur, 1)[["lam1", "lam2"]].values.tolist() == [[0, 0], [0, 1]]
    val = analysis.ood_curves(hand_table(), loss="val_loss", acc="val_acc")
    assert list(val.columns) == list(cur.columns)
    np.testing.assert_allclose(val["loss"], [1.8, 1.0, 0.4, 0.4, 0.4, 1.4])
    np.testing.assert_allclose(val["acc"], 0.5)


def test_the_best_point_never_takes_a_nan_and_says_when_every_point_is_one():
    """A point with no number is never the best; a grid of NaN (a hand-damaged table: a run marks such seeds diverged)
    used to be numpy's 'argmin of an empty sequence'."""
    cur = analysis.ood_curves(hand_table())
    cur.loc[(cur.lam1 == 1) & (cur.lam2 == 0), "loss"] = np.nan
    assert tuple(analysis.best_point(cur)[["lam1", "lam2"]]) == (1.0, 1.0)       # the next smallest edit at 0.25
    with pytest.raises(ValueError, match=r"^no grid point has a number to choose the best by \('loss' is NaN"):
        analysis.best_point(cur.assign(loss=np.nan))


def test_three_source_tasks_through_the_library():
    gammas = [0.6, -0.5, 0.3]
    setup = sweep.Setup(Data(d=8, P=10, n_rel=3, n_conf=1), Model(m=16), Train(steps=30, batch=16, log_every=10))
    calls = []
    r = sweep.ood_sweep(0, 2, gammas, None, [(-1, 1, 1), (-1, 1, 1), (0, 1, 1)], setup, n_test=64, n_val=48,
                        progress=lambda *a: calls.append(a))
    assert r.coeffs.shape == (18, 3) and r.loss.shape == (2, 18) and r.ref_loss.shape == (2, 4)
    assert r.taus["V"].shape == (2, 3, 16, 8) and r.psi0["V"].shape == (2, 16, 8) and r.finite.shape == (2,)
    assert len(calls) == 1 and calls[0][:2] == (1, 1)
    # The validation arrays: the test arrays' shapes, other samples (hence other numbers).
    for v, t in ((r.val_loss, r.loss), (r.val_acc, r.acc)):
        assert v.shape == t.shape and np.all(np.isfinite(v)) and not np.array_equal(v, t)
    # The grid point (1, 0, 0) is the single task vector T1, which the reference path evaluates too.
    i = int(np.flatnonzero((r.coeffs == [1, 0, 0]).all(1))[0])
    assert np.allclose(r.loss[:, i], r.ref_loss[:, 1], atol=1e-5)
    # The validation set is stream VAL's (task index 0) of each seed, with T''s pattern and the run's v_j.
    sources, target = data.ood_patterns(gammas, None, 8)
    irr = jnp.asarray(sweep.irrelevant(0, setup, np.vstack([sources, target])))

    @jax.jit
    def on_val(s, psi0, tau1):
        Xv, yv = data.sample(streams.task(streams.seed_key(streams.run_key(0), s), streams.VAL, 0), target, irr, 48,
                             setup.data)
        return metrics.evaluate(taskvec.add(psi0, tau1), Xv, yv)

    for s in range(2):
        ref = on_val(s, jax.tree.map(lambda p: p[s], r.psi0), jax.tree.map(lambda t: t[s, 0], r.taus))
        assert float(r.val_loss[s, i]) == pytest.approx(float(ref["loss"]), abs=1e-5)
        assert float(r.val_acc[s, i]) == pytest.approx(float(ref["acc"]), abs=1e-6)


def test_ood_sweep_rejects_ranges_that_do_not_match_the_sources():
    # The shapes of the three-source test above, so that only the evaluation compiles again.
    setup = sweep.Setup(Data(d=8, P=10, n_rel=3, n_conf=1), Model(m=16), Train(steps=30, batch=16, log_every=10))
    with pytest.raises(ValueError, match="ranges"):
        sweep.ood_sweep(0, 2, [0.6, -0.5, 0.3], None, [(-1, 1, 1), (-1, 1, 1)], setup, n_test=64, n_val=48)


def test_grid_points_on_the_region_boundary_belong_to_it_whatever_the_rounding():
    """0.7 + 0.1 rounds to 0.7999999999999999 < 0.8 in floats: a point on the boundary in decimals is in Theorem 3's
    region (>= and <=), so that the count does not depend on how a CPU's dot kernel rounds the sum."""
    from tvtheory import theory

    assert 0.7 * 1 + 0.1 * 1 < 0.8
    assert theory.ood_region(np.array([[1.0, 1.0]]), [0.7, 0.1], 0.8, tau_ii=0.0)[0]
    assert theory.ood_region(np.array([[3.0, 0.0]]), [0.7, 0.1], 0.0, lam_max=3.0, tau_ii=0.0)[0]
    assert not theory.ood_region(np.array([[1.0, 1.0]]), [0.7, 0.1], 0.8 + 1e-6, tau_ii=0.0)[0]
    assert not theory.ood_region(np.array([[3.0 + 1e-6, 0.0]]), [0.7, 0.1], 0.0, lam_max=3.0, tau_ii=0.0)[0]


def test_references_leave_out_the_seeds_the_grid_marks_invalid():
    """The reference table has no diverged column: Table 2's direct / T1 / T2 rows and thm3's "at lambda_i = 1"
    reference take validity from the grid table, so a seed invalid there does not move them however extreme its
    references, and the table says how many seeds stand behind it (unchanged when every seed is valid)."""
    exp, cfg, tables = runner.load(COMMITTED)
    assert exp.table2(tables["metrics"], tables["reference"]) == (COMMITTED / "table2.md").read_text()
    rows = tables["metrics"].assign(diverged=tables["metrics"]["diverged"] | (tables["metrics"]["seed"] == 1))
    extreme = tables["reference"].copy()
    extreme.loc[extreme["seed"] == 1, ["loss", "acc"]] = [1e6, 0.0]
    out = []
    for refs in (tables["reference"], extreme):
        a = exp.analyse({"metrics": rows, "reference": refs}, cfg)
        out.append((a["table2"], [r.details for r in exp.claims(a, cfg) if r.id == "thm3.beats_single"]))
    assert out[1] == out[0]
    assert "Over the 4 valid seeds of 5:" in out[0][0] and "At lambda_i = 1" in out[0][1][0]
