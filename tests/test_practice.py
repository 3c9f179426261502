"""The practice experiment: its config checks, its measurements on hand-made tables, each claim's rule flipping
between pass, fail and inconclusive, and one tiny run end to end through the command line."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvtheory import analysis, config, results, runner
from tvtheory.experiments import practice as pr

ROOT = Path(__file__).resolve().parent.parent
CFG = config.validate(pr.Config())


def with_practice(**kw):
    return dataclasses.replace(CFG, practice=dataclasses.replace(CFG.practice, **kw))


# ------------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("kw, field", [
    ({"practice": pr.Practice(claim_probe=7)}, "practice.claim_probe=7"),
    ({"practice": pr.Practice(n_val_claim=5)}, "practice.n_val_claim=5"),
    ({"practice": pr.Practice(lambda_estimator="disentanglement")}, "practice.lambda_estimator='disentanglement'"),
    ({"practice": pr.Practice(tracked=["cka"])}, "practice.tracked[0]='cka'"),
    ({"practice": pr.Practice(probes=[16, 16])}, "practice.probes=[16, 16]"),
    ({"practice": pr.Practice(decays=[0.0])}, "practice.decays[0]=0.0"),
    ({"practice": pr.Practice(steps=[300])}, "practice.steps[0]=300"),
    ({"practice": pr.Practice(norm_lam_step=0.3)}, "practice.norm_lam_step=0.3"),
    ({"sweep": config.Sweep(lam_min=-1.05, lam_max=2.95)}, "sweep.lam_min=-1.05"),
])
def test_bad_settings_name_their_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field.replace('[', '.').replace(']', '.')}"):
        config.validate(dataclasses.replace(pr.Config(), **kw))


@pytest.mark.parametrize("path, value", [("model.arch", "mlp"), ("data.classes", 4), ("data.label_noise", 0.1)])
def test_options_beyond_the_papers_binary_model_are_refused(path, value):
    block, name = path.split(".")
    if not hasattr(getattr(pr.Config(), block), name):
        pytest.skip(f"{path} is not a config field here")
    kw = {block: dataclasses.replace(getattr(pr.Config(), block), **{name: value})}
    with pytest.raises(ValueError, match=f"^{path}=.*paper's binary model"):
        config.validate(dataclasses.replace(pr.Config(), **kw))


def test_defaults_reuse_arithmetics_sweep_and_every_variant_is_listed():
    from tvtheory.experiments import arithmetic

    a = arithmetic.Config()
    assert (CFG.data, CFG.model, CFG.train, CFG.sweep, CFG.n_seeds) == (a.data, a.model, a.train, a.sweep, a.n_seeds)
    assert pr.AFTER == ("arithmetic",) and pr.TABLES[0] == "estimators"
    assert CFG.practice.variants()[0] == ("none", 0.0)
    assert [m for m, _ in CFG.practice.variants()] == ["none"] + ["steps"] * 3 + ["decay"] * 3 + ["ball"] * 2 + [
        "rescale"] * 2
    assert 0.0 in CFG.norm_lams() and -1.0 in CFG.norm_lams()
    cost = pr.estimate(CFG)
    assert 30 < cost.seconds < 600 and cost.memory_gb < 4


# ------------------------------------------------------------------------------------------- hand-made tables
def pair_metrics(alphas, seeds, lams, L1, L2) -> pd.DataFrame:
    """A Theorem 1-2 metrics table with hinge losses L1(alpha, seed, lam), L2(...) (accuracy 1 - loss/2)."""
    rows = []
    for a in alphas:
        for s in seeds:
            for lam in lams:
                for task, f in (("T1", L1), ("T2", L2)):
                    v = float(f(a, s, lam))
                    rows.append({"alpha": a, "seed": s, "lam": lam, "task": task, "loss": v,
                                 "acc": max(0.0, 1 - v / 2), "diverged": False})
    return pd.DataFrame(rows)


def estimates(alphas, seeds, values: dict, n_probe=64) -> pd.DataFrame:
    """An estimators table: {estimator: f(alpha, seed)}."""
    return pd.DataFrame([{"alpha": a, "seed": s, "n_probe": n_probe, "estimator": e, "value": float(f(a, s)),
                          "diverged": False} for e, f in values.items() for a in alphas for s in seeds])


LAMS = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
ALPHAS = [-1.0, -0.5, 0.0, 0.5, 1.0]


def threshold_l2(a, s, lam):
    """T2 learned from lambda = 1 - alpha on (a hinge loss falling linearly to 0 there)."""
    return max(0.0, (1 - a) - lam)


def test_validation_and_norm_grids_gather_from_the_pattern_table_with_the_per_token_numbers(monkeypatch):
    """The validation and norm-control stages evaluate their grids with each task's pattern table (model.grid_eval's
    gathered values): the numbers of the per-token products (the path token noise takes), to float rounding."""
    import jax
    import jax.numpy as jnp

    from tvtheory import data, data_options, sweep

    d, m = 8, 16
    setup = sweep.Setup(config.Data(d=d, P=10, n_rel=3, n_conf=1), config.Model(m=m), config.Train())
    irr = jnp.asarray(data.irrelevant_patterns(np.eye(d)[:2]), jnp.float32)
    mus = jnp.stack([data.pair_patterns(a, d) for a in (-0.5, 0.5)])           # (A, 2, d)
    ks = jax.random.split(jax.random.key(3), 4)
    psi0 = {"W": 0.1 * jax.random.normal(ks[0], (2, d, d)), "V": 0.1 * jax.random.normal(ks[1], (2, m, d))}
    tau1 = {"W": jax.random.normal(ks[2], (2, d, d)), "V": jax.random.normal(ks[3], (2, m, d))}
    tau2 = jax.tree.map(lambda t: jnp.stack([-t, 0.5 * t], 1), tau1)            # (S, A or V, ...)
    lams = jnp.linspace(-2.0, 2.0, 5)
    key, seeds = jax.random.key(0), jnp.arange(2, dtype=jnp.int32)

    def run():
        _, validate, _, norm_eval = pr._stages()
        return (validate(key, seeds, mus, irr, psi0, tau1, tau2, lams, setup=setup, n_vals=(20, 40), chunk=1),
                norm_eval(key, seeds, mus[1], irr, psi0, tau2, tau2, lams, setup=setup, n_test=40, chunk=1))

    gathered = run()
    monkeypatch.setattr(data_options, "token_ids", lambda spec: False)           # no table: per-token products
    per_token = run()
    for a, b in zip(jax.tree.leaves(gathered), jax.tree.leaves(per_token)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert float(np.ptp(np.asarray(gathered[0]))) > 0.1                          # grids that can tell


def test_estimator_summary_correlations_errors_and_lambda_by_hand():
    c = analysis.curves(pair_metrics(ALPHAS, [0, 1], LAMS, lambda a, s, lam: 0.0, threshold_l2))
    est = estimates(ALPHAS, [0, 1], {"grad_cosine": lambda a, s: a, "output_cosine": lambda a, s: a ** 3,
                                     "param_cosine": lambda a, s: a if s == 0 else -a})
    out = pr.estimator_summary(est, c, CFG).set_index("estimator")
    g, o, p = out.loc["grad_cosine"], out.loc["output_cosine"], out.loc["param_cosine"]
    assert g["spearman"] == pytest.approx(1) and g["pearson"] == pytest.approx(1) and g["mae"] == 0
    assert g["lambda_mae"] == pytest.approx(0) and g["lambda_max_err"] == pytest.approx(0)
    assert o["spearman"] == pytest.approx(1)
    assert o["pearson"] == pytest.approx(np.corrcoef(ALPHAS, np.power(ALPHAS, 3))[0, 1])
    assert o["mae"] == pytest.approx(np.mean(np.abs(np.power(ALPHAS, 3) - ALPHAS)))
    # alpha >= 0: 1 - alpha^3 against lambda* = 1 - alpha: errors 0, 0.5 - 0.125, 0
    assert o["lambda_max_err"] == pytest.approx(0.375)
    assert p["spearman"] == pytest.approx(0) and p["spearman_sd"] == pytest.approx(np.sqrt(2))
    lp = pr.lambda_prediction(est, c, CFG)
    row = lp[(lp.estimator == "grad_cosine") & (lp.alpha == 0.5)].iloc[0]
    assert (row["predicted"], row["lambda_star"], row["err"], row["err_sd"]) == (0.5, 0.5, 0.0, 0.0)


def test_an_estimator_constant_over_the_alphas_tracks_nothing():
    """Seed 1's estimates are the same at every alpha: its correlations are 0 (no tracking), not NaN, which left the
    seed out of the mean (1 on seed 0 alone) while the claim counted it."""
    c = analysis.curves(pair_metrics(ALPHAS, [0, 1], LAMS, lambda a, s, lam: 0.0, threshold_l2))
    est = estimates(ALPHAS, [0, 1], {"grad_cosine": lambda a, s: a if s == 0 else 0.3})
    g = pr.estimator_summary(est, c, CFG).set_index("estimator").loc["grad_cosine"]
    assert (g["spearman"], g["pearson"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert g["spearman_sd"] == pytest.approx(np.sqrt(0.5)) and g["n_seeds"] == 2


def test_window_prediction_against_the_measured_negation_set():
    def l2(a, s, lam):
        return 1.5 if (lam < 0 and a < 0) else 0.0          # forgotten on the negative side for alpha < 0 only
    alphas = [-0.5, 0.3, 0.9]
    c = analysis.curves(pair_metrics(alphas, [0, 1, 2], LAMS, lambda a, s, lam: 0.0, l2))
    w = pr.window_prediction(estimates(alphas, [0, 1, 2], {"grad_cosine": lambda a, s: a}), c, CFG).set_index("alpha")
    assert list(w["relation"]) == ["contradictory", "aligned", "aligned"]
    assert list(w["predicted"]) == ["window", "not judged", "none"]
    assert list(w["measured"]) == ["window", "none", "none"]
    assert w.loc[-0.5, "agree"] is True and w.loc[0.9, "agree"] is True and w.loc[0.3, "agree"] is None
    assert (w.loc[-0.5, "measured_lo"], w.loc[-0.5, "measured_hi"]) == (-1.0, -0.5)
    assert w.loc[-0.5, "predicted_lo"] == pytest.approx(-4.0)          # -1 / alpha_hat^2


def test_theory_choice_reads_theorems_1_and_2_on_the_grid():
    lams = np.round(np.arange(-2, 3.01, 0.5), 6)
    aligned = pr.theory_choice(0.5, lams, CFG)
    assert aligned["addition"] == (0.5, True) and not aligned["negation"][1]
    contra = pr.theory_choice(-0.9, lams, CFG)
    assert not contra["addition"][1]
    assert contra["negation"] == (-1.0, True)                 # window [-1/0.81, 0) = [-1.23, 0): deepest -1
    irr = pr.theory_choice(0.0, lams, CFG)                    # T1's budget: |lambda| <= keep_tol / beta = 1.6
    assert irr["addition"] == (1.0, True) and irr["negation"] == (-1.5, True)


def test_validation_choices_against_the_oracle_by_hand():
    test_l1 = {-1.0: 0.5, -0.5: 0.02}                        # T1 broken at -1 on test
    metrics = pair_metrics([0.0], [0, 1], [-1.0, -0.5, 0.0, 0.5, 1.0], lambda a, s, lam: test_l1.get(lam, 0.0),
                           lambda a, s, lam: {-1.0: 1.5, -0.5: 1.2, 0.0: 1.0, 0.5: 0.5, 1.0: 0.0}[lam])
    c = analysis.curves(metrics)
    val = []
    for n, l1 in ((8, {}), (16, test_l1)):                    # 8 samples miss T1's damage at -1
        for s in (0, 1):
            for lam in [-1.0, -0.5, 0.0, 0.5, 1.0]:
                val.append({"alpha": 0.0, "seed": s, "n_val": n, "lam": lam, "L1": l1.get(lam, 0.0),
                            "L2": {-1.0: 1.6, -0.5: 1.2, 0.0: 1.0, 0.5: 0.4, 1.0: 0.0}[lam], "diverged": False})
    est = estimates([0.0], [0, 1], {"grad_cosine": lambda a, s: 0.0})
    ch = pr.validation_choices(pd.DataFrame(val), c, est, CFG)
    v8 = ch[(ch.chooser == "validation") & (ch.n_val == 8)].set_index(["seed", "goal"])
    assert v8.loc[(0, "addition"), "lam"] == 1.0 and v8.loc[(0, "addition"), "right"]
    assert v8.loc[(0, "negation"), "lam"] == -1.0 and v8.loc[(0, "negation"), "oracle_lam"] == -0.5
    assert not v8.loc[(0, "negation"), "success"] and not v8.loc[(0, "negation"), "right"]
    assert v8.loc[(0, "negation"), "L1_test"] == 0.5
    th = ch[ch.chooser == "theory"].set_index(["seed", "goal"])
    assert th.loc[(1, "addition"), "lam"] == 1.0 and th.loc[(1, "addition"), "right"]
    assert th.loc[(1, "negation"), "lam"] == -1.0 and not th.loc[(1, "negation"), "right"]
    s = pr.validation_summary(ch, CFG).set_index(["chooser", "n_val"])
    assert s.loc[("validation", 8), "right"] == 0.5 and s.loc[("validation", 16), "right"] == 1.0
    assert s.loc[("validation", 8), "right_negation"] == 0.0 and s.loc[("validation", 8), "lam_err"] == 0.25


def test_kept_windows_use_t1s_own_loss_as_reference():
    cur = pd.DataFrame({"L1": [0.9, 0.62, 0.6, 0.6, 0.6], "L2": [1.2, 1.1, 1.0, 0.5, 0.0]},
                       index=pd.Index([-1.0, -0.5, 0.0, 0.5, 1.0], name="lam"))
    w = pr.kept_windows(cur, CFG)
    assert w["neg_lo_kept"] == -0.5 and w["add_lo_kept"] == 1.0
    assert w["neg_window_kept"].startswith("[-0.5, -0.5]")


def norm_rows(variants: dict, seeds=(0, 1, 2)) -> pd.DataFrame:
    """A norm-control table: {(method, strength): (beta, own_loss, norm)}; T1's hinge loss beta |lambda| on the
    negative side, T2's 1 - lambda (lambda* = 1, forgotten for lambda <= 0)."""
    rows = []
    for (m, strength), (beta, own, nrm) in variants.items():
        for s in seeds:
            b = beta(s) if callable(beta) else beta
            for lam in LAMS:
                for task in ("T1", "T2"):
                    loss = own + b * max(0.0, -lam) if task == "T1" else max(0.0, 1 - lam)
                    rows.append({"method": m, "strength": strength, "alpha": 0.0, "seed": s, "lam": lam,
                                 "task": task, "loss": loss, "acc": 1.0, "norm": nrm, "own_loss": own,
                                 "own_acc": 1.0, "at_chance": False, "diverged": False})
    return pd.DataFrame(rows)


def test_norm_summary_measures_beta_gain_and_learned_by_hand():
    ns = pr.norm_summary(norm_rows({("none", 0.0): (0.4, 0.0, 10.0), ("decay", 0.01): (0.2, 0.01, 5.0),
                                    ("ball", 2.0): (0.1, 0.6, 2.0)}), CFG).set_index("method")
    assert list(ns.index) == ["none", "decay", "ball"]
    assert ns.loc["none", "beta_neg"] == pytest.approx(0.4) and ns.loc["decay", "gain"] == pytest.approx(0.5)
    assert ns.loc["decay", "beta_per_norm"] == pytest.approx(0.04) and ns.loc["ball", "gain"] == pytest.approx(0.75)
    assert list(ns["learned"]) == ["yes", "yes", "no"]
    assert ns.loc["none", "lambda_star"] == 1.0 and ns.loc["ball", "L1_at_m1"] == pytest.approx(0.7)
    # T1 within keep_tol = 0.05 of its own loss: |lambda| <= 0.05 / beta
    assert np.isnan(ns.loc["none", "neg_lo_kept"])            # -0.5 already costs T1 0.2
    assert ns.loc["ball", "neg_lo_kept"] == -0.5
    assert int(ns.loc["none", "n_seeds"]) == 3 and pr.norm_seeds(norm_rows({("none", 0.0): (0.4, 0.0, 1.0)})) == 3


# --------------------------------------------------------------------------------------- the claims' rules
def tracking_summary(**over):
    rows = []
    for e in pr.ESTIMATORS:
        r = {"estimator": e, "n_probe": 64, "spearman": 0.99, "spearman_sd": 0.005, "pearson": 0.98,
             "pearson_sd": 0.005, "mae": 0.1, "bias": 0.0, "lambda_mae": 0.1, "lambda_max_err": 0.2, "n_corr": 5}
        r.update(over.get(e, {}))
        rows.append(r)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("over, verdict", [
    ({}, "pass"),
    ({"disentanglement": {"spearman": -0.4, "pearson": -0.4}}, "pass"),          # reported, not judged
    ({"output_cosine": {"pearson": 0.9}}, "fail"),
    ({"grad_cosine": {"spearman": 0.5, "spearman_sd": 0.2}}, "fail"),
    ({"param_cosine": {"spearman": 0.96, "spearman_sd": 0.05}}, "inconclusive"),  # within one sd of 0.95
])
def test_tracking_claim(over, verdict):
    r = pr.tracking_claim(tracking_summary(**over), CFG, 5)
    assert r.id == "practice.similarity_tracks_alpha" and r.verdict == verdict, r.measured


def lambda_tables(err=0.05, err_sd=0.01, measured="window", agree=True):
    pred = pd.DataFrame([{"estimator": "grad_cosine", "n_probe": 64, "alpha": a, "alpha_hat": a,
                          "predicted": 1 - a, "lambda_star": 1 - a, "err": err, "err_sd": err_sd}
                         for a in (0.0, 0.5, 0.9)] + [{"estimator": "output_cosine", "n_probe": 64, "alpha": 0.5,
                                                        "alpha_hat": 0.8, "predicted": 0.2, "lambda_star": 0.5,
                                                        "err": -0.3, "err_sd": 0.0}])
    windows = pd.DataFrame([{"alpha": -0.5, "alpha_hat": -0.5, "relation": "contradictory", "predicted": "window",
                             "measured": measured, "measured_window": "[-2, -0.1]", "agree": agree},
                            {"alpha": 0.3, "alpha_hat": 0.3, "relation": "aligned", "predicted": "not judged",
                             "measured": "window", "measured_window": "[-0.2, -0.1]", "agree": None}])
    summary = tracking_summary()
    return pred, windows, summary


@pytest.mark.parametrize("kw, verdict", [
    ({}, "pass"),
    ({"err": 0.3}, "fail"),                                   # 1 - alpha_hat off by 0.3 > lambda_tol = 0.2
    ({"err": np.nan}, "fail"),                                # a seed never learns T2
    ({"err": 0.15, "err_sd": 0.1}, "inconclusive"),           # within the seeds' spread of 0.2
    ({"measured": "none", "agree": False}, "fail"),           # contradictory, yet no negation window
    ({"measured": "undecided", "agree": None}, "inconclusive"),
])
def test_lambda_claim(kw, verdict):
    r = pr.lambda_claim(*lambda_tables(**kw), CFG, 5)
    assert r.id == "practice.lambda_from_similarity" and r.verdict == verdict, (r.measured, r.details)


def test_lambda_claim_leaves_an_alpha_whose_threshold_is_off_the_grid_undecided():
    cfg = dataclasses.replace(CFG, sweep=config.Sweep(lam_min=-2.0, lam_max=0.5))   # 1 - 0 = 1 is beyond the grid
    assert pr.lambda_claim(*lambda_tables(), cfg, 5).verdict == "inconclusive"


def validation_summary_table(right=1.0, right_sd=0.0):
    rows = [{"chooser": "validation", "n_val": n, "right": right if n == 32 else 1.0,
             "right_sd": right_sd if n == 32 else 0.0, "right_addition": 1.0, "right_negation": right,
             "lam_err": 0.01} for n in (8, 32, 256)]
    rows.append({"chooser": "theory", "n_val": 0, "right": 0.7, "right_sd": 0.0, "right_addition": 0.9,
                 "right_negation": 0.5, "lam_err": 0.5})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kw, verdict", [({}, "pass"), ({"right": 0.8, "right_sd": 0.05}, "fail"),
                                         ({"right": 0.97, "right_sd": 0.05}, "inconclusive")])
def test_validation_claim(kw, verdict):
    r = pr.validation_claim(validation_summary_table(**kw), CFG, 5)
    assert r.id == "practice.validation_lambda" and r.verdict == verdict, r.measured
    assert "Smallest budget meeting the bar: 8" in r.details
    assert "The theory's choice" in r.details


@pytest.mark.parametrize("variants, verdict", [
    ({("none", 0.0): (0.4, 0.0, 10.0), ("decay", 0.01): (0.2, 0.01, 5.0)}, "pass"),      # learned, beta halved
    ({("none", 0.0): (0.4, 0.0, 10.0), ("decay", 0.01): (0.39, 0.01, 9.8)}, "fail"),     # learned, beta kept
    ({("none", 0.0): (0.4, 0.0, 10.0), ("ball", 2.0): (0.1, 0.6, 2.0)}, "inconclusive"),  # lower beta, task lost
    ({("none", 0.0): (0.0, 0.0, 10.0), ("decay", 0.01): (0.0, 0.0, 5.0)}, "inconclusive"),  # nothing to lower
    ({("none", 0.0): (0.4, 0.0, 10.0), ("decay", 0.01): (lambda s: 0.4 - 0.1 * s, 0.01, 5.0)},
     "inconclusive"),                                                                      # gain 0.25 +- 0.25
])
def test_norm_claim(variants, verdict):
    r = pr.norm_claim(pr.norm_summary(norm_rows(variants), CFG), CFG, 3)
    assert r.id == "practice.norm_control" and r.verdict == verdict, (r.measured, r.details)


def test_claims_are_inconclusive_with_too_few_seeds_or_test_samples():
    a = {"estimator_summary": tracking_summary(), "validation_summary": validation_summary_table(),
         "norm_summary": pr.norm_summary(norm_rows({("none", 0.0): (0.4, 0.0, 10.0),
                                                    ("decay", 0.01): (0.2, 0.01, 5.0)}), CFG),
         "_n_seeds": 5, "_n_seeds_norm": 3, "_lost": []}
    a["lambda_prediction"], a["windows"], _ = lambda_tables()
    full = pr.claims(a, CFG)
    assert [r.id for r in full] == ["practice.similarity_tracks_alpha", "practice.lambda_from_similarity",
                                    "practice.validation_lambda", "practice.norm_control"]
    assert [r.verdict for r in full] == ["pass"] * 4
    assert [r.source for r in full] == ["estimators", "estimators", "validation", "norm"]
    few = pr.claims({**a, "_n_seeds_norm": 2}, CFG)
    assert [r.verdict for r in few] == ["pass"] * 3 + ["inconclusive"] and "min_seeds" in few[3].details
    lost = pr.claims({**a, "_n_seeds": 0, "_lost": [0.5]}, CFG)               # an alpha without a valid seed: named
    assert [r.verdict for r in lost] == ["inconclusive"] * 3 + ["pass"]
    assert all("0 valid seed(s), fewer than claims.min_seeds=3 (no valid seed at alpha = 0.5)" in r.details
               for r in lost[:3]) and "no valid seed" not in lost[3].details
    smoke = pr.claims(a, dataclasses.replace(CFG, sweep=config.Sweep(n_test=200)))
    assert all(r.verdict == "inconclusive" and "smoke run" in r.details for r in smoke)


def test_the_tracking_claim_counts_the_seeds_with_a_correlation():
    """A seed with a NaN estimate at one alpha has no correlation for that estimator: left out of its mean and sd,
    and out of the seeds the tracking claim counts (it counted them, and 2 seeds passed as 3)."""
    c = analysis.curves(pair_metrics(ALPHAS, [0, 1, 2], LAMS, lambda a, s, lam: 0.0, threshold_l2))
    fs = {e: (lambda a, s: a) for e in CFG.practice.tracked}
    fs["grad_cosine"] = lambda a, s: np.nan if (s, a) == (2, 0.5) else a
    summary = pr.estimator_summary(estimates(ALPHAS, [0, 1, 2], fs), c, CFG).set_index("estimator")
    assert summary.loc["grad_cosine", ["n_seeds", "n_corr"]].tolist() == [3, 2]
    assert summary.loc["param_cosine", ["n_seeds", "n_corr"]].tolist() == [3, 3]
    a = {"estimator_summary": summary.reset_index(), "validation_summary": validation_summary_table(),
         "norm_summary": pr.norm_summary(norm_rows({("none", 0.0): (0.4, 0.0, 10.0),
                                                    ("decay", 0.01): (0.2, 0.01, 5.0)}), CFG),
         "_n_seeds": 3, "_n_seeds_norm": 3, "_lost": []}
    a["lambda_prediction"], a["windows"], _ = lambda_tables()
    got = pr.claims(a, CFG)
    assert (got[0].verdict, got[0].n_seeds) == ("inconclusive", 2)
    assert "2 valid seed(s), fewer than claims.min_seeds=3" in got[0].details
    assert "n_seeds: the fewest seeds behind a tracked estimator's correlations (2 of 3)." in got[0].details
    assert [r.n_seeds for r in got[1:]] == [3, 3, 3]
    judged = pr.claims(a, dataclasses.replace(CFG, claims=dataclasses.replace(CFG.claims, min_seeds=2)))[0]
    assert (judged.verdict, judged.n_seeds) == ("pass", 2)                # enough seeds, and the count said why
    assert judged.details.endswith("n_seeds: the fewest seeds behind a tracked estimator's correlations (2 of 3).")
    fs["grad_cosine"] = lambda a, s: a                                   # every seed correlated: judged on 3
    whole = pr.claims({**a, "estimator_summary": pr.estimator_summary(estimates(ALPHAS, [0, 1, 2], fs), c, CFG)}, CFG)
    assert (whole[0].verdict, whole[0].n_seeds) == ("pass", 3)


def test_an_alpha_without_a_valid_seed_is_named_in_the_sweeps_claims():
    """Every seed of alpha = 0.5 invalid in the committed metrics: the three claims on the sweep (each uses every
    alpha) rest on 0 seeds and say which alpha was lost; the norm study, a run of its own, keeps its verdict."""
    _, cfg, tables = runner.load(Path(__file__).resolve().parent.parent / "results" / "practice")
    m = tables["metrics"].copy()
    m.loc[m["alpha"] == 0.5, "diverged"] = True
    got = pr.claims(pr.analyse({**tables, "metrics": m}, cfg), cfg)
    before = pr.claims(pr.analyse(tables, cfg), cfg)
    assert [(r.verdict, r.n_seeds) for r in got[:3]] == [("inconclusive", 0)] * 3
    assert all("(no valid seed at alpha = 0.5)" in r.details for r in got[:3])
    assert (got[3].verdict, got[3].n_seeds, got[3].details) == (before[3].verdict, before[3].n_seeds, before[3].details)


# ------------------------------------------------------------------------------------------------- end to end
TINY = ["sweep=tiny", "train=tiny", "n_seeds=3", "data.d=8", "model.m=32", "practice.probes=[8,16]",
        "practice.claim_probe=16", "practice.n_vals=[8,16]", "practice.n_val_claim=8", "practice.steps=[20]",
        "practice.decays=[0.01]", "practice.radii=[1.0]", "practice.norm_n_test=100", "practice.norm_lam_step=0.5"]


@pytest.mark.slow
def test_tiny_run_end_to_end_and_its_claims_recompute(tmp_path, command):
    out = tmp_path / "practice"
    p = command("practice", *TINY, f"out_dir={out}", f"cache.dir={tmp_path / 'cache'}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert results.owner(out) == "practice"
    tables = {t: pd.read_csv(out / f"{t}.csv") for t in pr.TABLES}
    assert len(tables["estimators"]) == 3 * 3 * 2 * len(pr.ESTIMATORS)     # alphas x seeds x probes x estimators
    assert len(tables["metrics"]) == 3 * 3 * 7 * 2                        # alphas x seeds x lambdas x tasks
    assert len(tables["validation"]) == 3 * 3 * 2 * 7                     # alphas x seeds x n_vals x lambdas
    assert len(tables["norm"]) == 5 * 3 * 7 * 2                          # variants x seeds x lambdas x tasks
    assert set(tables["norm"]["method"]) == set(pr.METHODS)
    assert "diverged" in tables["estimators"] and "diverged" in tables["norm"]
    for name in ("estimator_summary", "lambda_prediction", "windows", "validation_choices", "validation_summary",
                 "norm_summary"):
        assert len(pd.read_csv(out / f"{name}.csv")), name
    for fig in ("estimators", "validation", "norm_control"):
        assert (out / f"{fig}.png").stat().st_size > 0 and (out / f"{fig}.pdf").exists()
    before = json.loads((out / "claims.json").read_text())
    assert [r["id"] for r in before] == ["practice.similarity_tracks_alpha", "practice.lambda_from_similarity",
                                         "practice.validation_lambda", "practice.norm_control"]
    assert all(r["verdict"] == "inconclusive" and "smoke run" in r["details"] for r in before)
    (out / "claims.json").unlink()
    runner.recompute(out)                                     # what `python -m tvtheory.claims` runs
    again = json.loads((out / "claims.json").read_text())
    assert [(r["id"], r["verdict"], r["measured"], r["details"]) for r in again] == [
        (r["id"], r["verdict"], r["measured"], r["details"]) for r in before]
