"""Corollary 1-2 and scaling claims on tables that pass and tables that fail; the helpers they rest on."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from tvtheory import claims, model, report, taskvec
from tvtheory.config import ClaimsConfig

CFG = ClaimsConfig()
IDS = ["thm1.irrelevant", "thm1.aligned", "thm1.contradictory_fails", "thm1.threshold_curve", "thm2.irrelevant",
       "thm2.contradictory", "thm2.aligned_fails", "thm3.region", "thm3.beats_single"]


def verdict_table(changed: dict):
    """Every variant agrees with dense except where ``changed[variant]`` lists claim ids."""
    rows = []
    for variant in ["dense", "rank1", "prune0.25", "prune0.5", "prune0.75"]:
        for i in IDS:
            v = "pass"
            if i in changed.get(variant, []):
                v = "fail"
            rows.append({"variant": variant, "id": i, "verdict": v})
    return pd.DataFrame(rows)


def stars(shift=0.0):
    return pd.DataFrame([{"variant": v, "alpha": a, "lambda_star": 1 - a + (shift if v == "rank1" else 0.0)}
                         for v in ("dense", "rank1") for a in (-0.5, 0.0, 0.5)])


def norms(two=True, m=100, seeds=(0, 1)):
    rng = np.random.default_rng(0)
    rows = []
    for s in seeds:
        x = np.where(np.arange(m) < m // 3, 1.0, 0.01 if two else 0.9) * m**-0.5 * (1 + 0.05 * rng.random(m))
        rows += [{"seed": s, "task": "T1", "row": i, "norm": v} for i, v in enumerate(x)]
    return pd.DataFrame(rows)


def verdicts(vt, st=None, rn=None):
    recs = claims.corollary_claims(vt, stars() if st is None else st, norms() if rn is None else rn, 100, 2, CFG,
                                   prune_min=0.5, two_groups_ratio=10)
    return {r["id"]: r["verdict"] for r in recs}


def test_corollary_claims_pass_when_nothing_changes():
    assert set(verdicts(verdict_table({})).values()) == {"pass"}


def test_rank1_claims_fail_on_changed_verdicts_or_shifted_threshold():
    v = verdicts(verdict_table({"rank1": ["thm2.irrelevant", "thm3.region"]}))
    assert v["cor1.rank1_thm2"] == "fail" and v["cor1.rank1_thm3"] == "fail" and v["cor1.rank1_thm1"] == "pass"
    assert verdicts(verdict_table({}), st=stars(shift=0.3))["cor1.rank1_thm1"] == "fail"


def test_pruning_claim_reports_the_largest_fraction_that_keeps_everything():
    recs = claims.corollary_claims(verdict_table({"prune0.5": ["thm1.aligned"]}), stars(), norms(), 100, 2, CFG,
                                   0.5, 10)
    rec = {r["id"]: r for r in recs}["cor2.pruning_keeps"]
    assert rec["verdict"] == "fail" and "0.25" in rec["measured"]


def test_two_groups_detected_only_when_present():
    assert verdicts(verdict_table({}), rn=norms(two=True))["cor2.two_groups"] == "pass"
    assert verdicts(verdict_table({}), rn=norms(two=False))["cor2.two_groups"] == "fail"
    g = claims.two_groups(np.r_[np.full(30, 1.0), np.full(70, 0.01)])
    assert g["large_fraction"] == pytest.approx(0.3) and g["ratio"] == pytest.approx(100)


def test_compress_composes_rank_and_pruning():
    rng = np.random.default_rng(1)
    t = {"W": rng.normal(size=(6, 6)), "V": rng.normal(size=(10, 6))}
    r1 = taskvec.compress(t, rank=1)
    assert np.linalg.matrix_rank(np.asarray(r1["V"]), tol=1e-5) == 1
    p = taskvec.compress(t, keep=0.5)
    assert int((np.abs(np.asarray(p["V"])).sum(1) > 0).sum()) == 5 and np.allclose(p["W"], t["W"])



def test_compress_is_one_compiled_program_for_every_variant():
    """Traced rank and keep (as the corollaries' sweeps pass them) match low_rank and prune_rows; dense is exact."""
    rng = np.random.default_rng(2)
    t = {k: jnp.asarray(rng.normal(size=shape), jnp.float32) for k, shape in (("W", (6, 6)), ("V", (10, 6)))}
    f = jax.jit(taskvec.compress)
    for rank, keep in [(0, 1.0), (1, 1.0), (2, 1.0), (0, 0.5), (0, 0.25), (1, 0.5)]:
        ref = taskvec.low_rank(t, rank)[0] if rank else t
        ref = taskvec.prune_rows(ref, keep)[0] if keep < 1 else ref
        got = f(t, rank, keep)
        assert all(np.allclose(got[k], ref[k], atol=1e-5) for k in t), (rank, keep)
    assert f._cache_size() == 1
    assert all(np.array_equal(f(t, 0, 1.0)[k], t[k]) for k in t)


def scaling(beta_exp=-1.0, t_exp=-2.0, never=False):
    ds = np.array([16, 32, 64, 128])
    beta = pd.DataFrame({"d": ds, "m": 256, "beta_neg": 3.0 * ds**beta_exp, "beta_add": 0.0})
    deltas = np.array([0.1, 0.2, 0.4])
    steps = 10 * deltas**t_exp
    if never:
        steps[0] = np.nan
    conv = pd.DataFrame([{"delta_star": d, "seed": s, "steps": t} for d, t in zip(deltas, steps) for s in (0, 1)])
    return {r["id"]: r["verdict"] for r in claims.scaling_claims(beta, conv, 256, 0.5, 2)}


def test_scaling_claims_pass_and_fail():
    assert scaling() == {"beta.scaling_d": "pass", "conv.delta_star_exponent": "pass"}
    assert scaling(beta_exp=0.0)["beta.scaling_d"] == "fail"
    assert scaling(t_exp=-1.0)["conv.delta_star_exponent"] == "fail"
    assert scaling(never=True)["conv.delta_star_exponent"] == "fail"


def test_steps_to_eps_and_exponent_fit():
    curve = np.r_[np.linspace(1, 0.1, 50), np.zeros(50)]
    assert claims.steps_to_eps(curve, 0.05, 5) == pytest.approx(55, abs=3)
    assert np.isnan(claims.steps_to_eps(np.ones(20), 0.05, 5))
    assert claims.fit_exponent([1, 2, 4], [1, 0.25, 1 / 16]) == pytest.approx(-2)


def test_task_vector_structure_measures_the_change_of_the_merged_weights():
    """In the four-matrix form dW and dV are W(Psi_0 + dPsi) - W(Psi_0), not the product of the deltas."""
    psi0 = model.init_params(jax.random.key(0), 6, 10, "four", sigma_0=0.5, sigma_w=0.3)
    tau = model.init_params(jax.random.key(1), 6, 10, "four", sigma_0=0.5, sigma_w=0.3)
    spectra, _, norms = report.task_vector_structure({k: v[None, None] for k, v in tau.items()},
                                                     {k: v[None] for k, v in psi0.items()}, [1], M=3, eps=0.05)
    dW, dV = model.merged_delta(psi0, tau)
    sv = spectra[spectra["matrix"] == "dW"].sort_values("index")["sv"].to_numpy()
    np.testing.assert_allclose(sv, np.linalg.svd(np.asarray(dW), compute_uv=False), rtol=1e-4)
    np.testing.assert_allclose(norms["norm"], np.linalg.norm(np.asarray(dV), axis=1), rtol=1e-5)
