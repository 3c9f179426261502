"""Theorem 3: the region fit, the OOD claims on passing and failing tables, and k = 3 source tasks end to end."""

import numpy as np
import pandas as pd
import pytest

from tvtheory import claims, data, sweep, theory, train
from tvtheory.config import ClaimsConfig

G = (0.75, -0.6)
CFG = ClaimsConfig()


def grid(step=0.1):
    return sweep.coefficient_grid([(-2, 3, step), (-2, 2, step)])


def table(loss_of, seeds=(0, 1, 2)):
    coeffs = grid()
    rows = [pd.DataFrame({"seed": s, "lam1": coeffs[:, 0], "lam2": coeffs[:, 1], "loss": loss_of(coeffs),
                          "acc": (loss_of(coeffs) < 0.5).astype(float)}) for s in seeds]
    return pd.concat(rows, ignore_index=True)


def refs(t1=0.2, t2=1.5, seeds=(0, 1, 2)):
    return pd.DataFrame([{"seed": s, "model": m, "loss": v, "acc": float(v < 0.5)}
                         for s in seeds for m, v in (("direct", 0.0), ("T1", t1), ("T2", t2))])


def theorem3_loss(coeffs, tau=1.2, lam_max=2.5):
    return np.where(theory.ood_region(coeffs, G, tau, lam_max), 0.0, 0.8)


def test_fit_recovers_the_generating_region():
    coeffs = grid()
    fit = claims.fit_ood_region(coeffs, theorem3_loss(coeffs) <= 0.05, G)
    assert fit["iou"] == pytest.approx(1.0) and fit["tau"] == pytest.approx(1.2, abs=0.011)
    assert fit["lam_max"] == pytest.approx(2.5)


def verdicts(df, r):
    return {c["id"]: c["verdict"] for c in claims.ood_claims(df, r, G, CFG)}


def test_claims_pass_on_a_theorem3_table():
    assert verdicts(table(theorem3_loss), refs()) == {"thm3.region": "pass", "thm3.beats_single": "pass"}


def test_region_claim_fails_when_success_is_not_a_half_plane_intersection():
    rng = np.random.default_rng(0)
    noise = rng.random(len(grid())) < 0.5               # a checkerboard of successes fits no half-planes
    assert verdicts(table(lambda c: np.where(noise, 0.0, 0.8)), refs())["thm3.region"] == "fail"


def test_region_claim_fails_when_nothing_succeeds():
    assert verdicts(table(lambda c: np.full(len(c), 0.8)), refs())["thm3.region"] == "fail"


def test_beats_single_fails_when_a_single_vector_is_best():
    assert verdicts(table(theorem3_loss), refs(t1=0.0))["thm3.beats_single"] == "fail"


def test_three_source_tasks_through_the_library():
    setup = sweep.Setup(8, 16, data.TaskSpec(10, 3, 1), train.TrainSpec(steps=30, batch=16, log_every=10))
    r = sweep.ood_sweep(0, 2, [0.6, -0.5, 0.3], None, [(-1, 1, 1), (-1, 1, 1), (0, 1, 1)], setup, n_test=64)
    assert r.coeffs.shape == (18, 3) and r.loss.shape == (2, 18) and r.ref_loss.shape == (2, 4)
    assert r.taus["V"].shape == (2, 3, 16, 8)
    # the grid point (1, 0, 0) is the single task vector T1 evaluated by the reference path too
    i = int(np.flatnonzero((r.coeffs == [1, 0, 0]).all(1))[0])
    assert np.allclose(r.loss[:, i], r.ref_loss[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match="ranges"):
        sweep.ood_sweep(0, 1, [0.6, -0.5], None, [(-1, 1, 1)], setup, n_test=8)
