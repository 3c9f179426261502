"""Each claim function on a table that satisfies the theorems and on tables that violate them."""

import numpy as np
import pandas as pd
import pytest

from tvtheory import claims
from tvtheory.config import ClaimsConfig

CFG = ClaimsConfig()
LAMS = np.round(np.arange(-2, 3.0001, 0.1), 2)
ALPHAS = [-0.9, -0.5, 0.0, 0.5, 0.9]


def ideal(alpha, lam):
    """Losses shaped like the theory: T2 learned from 1 - alpha, T1 kept unless contradictory; beta = 0.3."""
    L2 = np.where(lam >= 1 - alpha, 0.0, np.maximum(1.0 - lam * 0.9 / max(1 - alpha, 0.1), 0.0))
    # negation: forgotten (>= 1) unless aligned, where T2's loss grows only slowly
    L2 = np.where(lam < 0, 1.0 + 0.5 * np.abs(lam) if alpha <= 0 else 0.5 + 0.2 * np.abs(lam), L2)
    if alpha >= 0:
        L1 = np.where(lam < 0, 0.3 * np.abs(lam) * (1 + 3 * alpha), 0.0)
    else:
        L1 = np.where(lam > 0, 0.8 * lam * abs(alpha) * 2, 0.0)
    return L1, L2


def table(fn=ideal, alphas=ALPHAS, seeds=(0, 1)):
    rows = []
    for a in alphas:
        L1, L2 = fn(a, LAMS)
        for s in seeds:
            for task, L in (("T1", L1), ("T2", L2)):
                L = np.broadcast_to(L, LAMS.shape)
                acc = np.where(L < 0.5, 1.0, np.where(L > 1.0, 0.0, 0.5))
                rows.append(pd.DataFrame({"alpha": a, "seed": s, "lam": LAMS, "task": task, "loss": L, "acc": acc}))
    return pd.concat(rows, ignore_index=True)


def verdicts(df):
    return {r["id"]: r["verdict"] for r in claims.arithmetic_claims(df, CFG)}


def test_ideal_table_passes_every_claim():
    v = verdicts(table())
    assert v == {k: "pass" for k in v} and len(v) == 7


def test_records_have_the_required_fields():
    for r in claims.arithmetic_claims(table(), CFG):
        assert {"id", "statement", "predicted", "measured", "verdict", "n_seeds", "details"} <= set(r)
        assert r["n_seeds"] == 2


def test_beta_is_measured_on_the_irrelevant_pair():
    beta = claims.beta_hat(claims.curves(table()))
    assert beta["beta_neg"] == pytest.approx(0.3, abs=1e-6)
    assert beta["beta_add"] == pytest.approx(0.0, abs=1e-9)


def test_threshold_curve_fails_when_lambda_star_is_shifted():
    def shifted(a, lam):
        L1, L2 = ideal(a, lam)
        return L1, np.where((lam >= 0) & (lam < 1 - a + 0.5), 0.5, L2)
    assert verdicts(table(shifted))["thm1.threshold_curve"] == "fail"
    assert verdicts(table(shifted))["thm1.irrelevant"] == "fail"


def test_contradictory_addition_claim_fails_when_both_tasks_are_learned():
    def both(a, lam):
        L1, L2 = ideal(a, lam)
        return (np.where(lam > 0, 0.0, L1), L2) if a < 0 else (L1, L2)
    assert verdicts(table(both))["thm1.contradictory_fails"] == "fail"


def test_aligned_addition_fails_when_t1_is_lost():
    def lost(a, lam):
        L1, L2 = ideal(a, lam)
        return (np.where(lam > 1.5, 0.9, L1), L2) if a > 0 else (L1, L2)
    assert verdicts(table(lost))["thm1.aligned"] == "fail"


def test_negation_claims_fail_on_violating_tables():
    def no_forgetting(a, lam):
        L1, L2 = ideal(a, lam)
        return L1, np.where(lam < 0, 0.2, L2)           # T2 never forgotten
    v = verdicts(table(no_forgetting))
    assert v["thm2.irrelevant"] == "fail" and v["thm2.contradictory"] == "fail"
    assert v["thm2.aligned_fails"] == "pass"

    def aligned_forgets(a, lam):
        L1, L2 = ideal(a, lam)
        return (np.where(lam < 0, 0.0, L1), np.where(lam < 0, 1.5, L2)) if a > 0 else (L1, L2)
    assert verdicts(table(aligned_forgets))["thm2.aligned_fails"] == "fail"


def test_missing_relation_fails_rather_than_passing_vacuously():
    v = verdicts(table(alphas=[0.0]))
    assert v["thm1.aligned"] == "fail" and v["thm2.contradictory"] == "fail"


def test_diverged_rows_are_ignored():
    df = table()
    bad = df.copy()
    bad["seed"] += 10
    bad["loss"] = 99.0
    bad["diverged"] = True
    df["diverged"] = False
    v = verdicts(pd.concat([df, bad], ignore_index=True))
    assert v == {k: "pass" for k in v}


def test_theory_predictions():
    from tvtheory import theory
    assert np.allclose(theory.addition_threshold([0.0, 0.5, 0.9]), [1.0, 0.5, 0.1])
    assert np.isnan(theory.addition_threshold(-0.5))
    assert theory.negation_lower_bound(-0.5) == pytest.approx(-4.0) and theory.negation_lower_bound(0.0) == -np.inf
    assert np.allclose(theory.kept_tolerance([-2.0, 1.0], 0.05, 0.1, 0.5, cap=0.6), [0.6, 0.15])
    region = theory.ood_region(np.array([[2.0, 0.0], [0.0, 2.0], [4.0, 0.0]]), [0.75, -0.6], 1.0, lam_max=3.0)
    assert region.tolist() == [True, False, False]
