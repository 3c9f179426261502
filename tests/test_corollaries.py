"""The measurements Corollaries 1-2 and the scaling experiment rest on: compressed task vectors, the structure of dW
and dV, the two groups of dV's row norms, steps to eps and power-law fits (the claims' verdicts are tested in
test_claims.py)."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from hydra import compose, initialize_config_module

from tvtheory import analysis, claims as rules, cli, model, runner, sweep, taskvec
from tvtheory.experiments import corollaries


def norms(two=True, m=100, seeds=(0, 1)):
    rng = np.random.default_rng(0)
    rows = []
    for s in seeds:
        x = np.where(np.arange(m) < m // 3, 1.0, 0.01 if two else 0.9) * m**-0.5 * (1 + 0.05 * rng.random(m))
        rows += [{"seed": s, "task": "T1", "row": i, "norm": v} for i, v in enumerate(x)]
    return pd.DataFrame(rows)


def test_two_groups_of_row_norms():
    g = analysis.two_groups(np.r_[np.full(30, 1.0), np.full(70, 0.01)])
    assert g["large_fraction"] == pytest.approx(0.3) and g["ratio"] == pytest.approx(100)
    assert 0.01 < g["threshold"] < 1.0
    two = analysis.two_groups(norms(two=True).query("seed == 0")["norm"])
    assert two["large_fraction"] == pytest.approx(0.33) and 80 < two["ratio"] < 120
    one = analysis.two_groups(norms(two=False).query("seed == 0")["norm"])
    assert one["ratio"] < 1.3                            # no second group: the split finds none worth the name


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
    traces = []

    def through_compression(tau, comp):
        traces.append(comp)
        return comp.apply(tau)

    g = jax.jit(through_compression)            # sweep.Compression is a pytree: its two numbers are traced
    for rank, keep in [(0, 1.0), (1, 1.0), (2, 1.0), (0, 0.5), (0, 0.25), (1, 0.5)]:
        ref = taskvec.low_rank(t, rank)[0] if rank else t
        ref = taskvec.prune_rows(ref, keep)[0] if keep < 1 else ref
        got = f(t, rank, keep)
        assert all(np.allclose(got[k], ref[k], atol=1e-5) for k in t), (rank, keep)
        via = g(t, sweep.Compression(rank, keep))
        assert all(np.array_equal(via[k], got[k]) for k in t), (rank, keep)
    assert f._cache_size() == 1 and len(traces) == 1
    assert all(np.array_equal(f(t, 0, 1.0)[k], t[k]) for k in t)


def test_steps_to_eps_and_exponent_fit():
    # The first index whose window average (that index and the next window - 1) is <= eps; the window is not
    # added to the count.
    assert analysis.steps_to_eps([1, 1, 0.5, 0, 0, 0, 0], 0.2, 2) == 3
    assert analysis.steps_to_eps([1, 1, 0.5, 0, 0, 0, 0], 0.3, 2) == 2
    assert analysis.steps_to_eps([1, 1, 0.5, 0, 0, 0, 0], 0.2, 1) == 3
    assert analysis.steps_to_eps([0.0, 1, 1], 0.2, 1) == 0
    # linspace(1, 0.1, 50) then zeros: the window of 5 starting at 48 averages (0.118 + 0.1) / 5 = 0.044.
    curve = np.r_[np.linspace(1, 0.1, 50), np.zeros(50)]
    assert analysis.steps_to_eps(curve, 0.05, 5) == 48
    assert np.isnan(analysis.steps_to_eps(np.ones(20), 0.05, 5))
    assert np.isnan(analysis.steps_to_eps([0.1, 0.1, 0.1], 0.07, 3))
    assert analysis.fit_exponent([1, 2, 4], [1, 0.25, 1 / 16]) == pytest.approx(-2)
    assert analysis.fit_exponent([16, 32, 64], [3 / 16, 3 / 32, np.nan]) == pytest.approx(-1)   # NaN left out
    assert np.isnan(analysis.fit_exponent([1, 2], [1, 0]))                                     # one point left
    np.testing.assert_allclose(analysis.local_exponents([1, 2, 4, 8], [1, 0.25, 1 / 16, 1 / 32]), [-2, -2, -1])


def test_task_vector_structure_measures_the_change_of_the_merged_weights():
    """In the four-matrix form dW and dV are W(Psi_0 + dPsi) - W(Psi_0), not the product of the deltas."""
    psi0 = model.init_params(jax.random.key(0), 6, 10, "four", sigma_0=0.5, sigma_w=0.3)
    tau = model.init_params(jax.random.key(1), 6, 10, "four", sigma_0=0.5, sigma_w=0.3)
    spectra, lowrank, norms = corollaries.structure({k: v[None, None] for k, v in tau.items()},
                                                    {k: v[None] for k, v in psi0.items()}, [1], M=3, eps=0.05)
    dW, dV = model.merged_delta(psi0, tau)
    sv = spectra[spectra["matrix"] == "dW"].sort_values("index")["sv"].to_numpy()
    np.testing.assert_allclose(sv, np.linalg.svd(np.asarray(dW), compute_uv=False), rtol=1e-4)
    np.testing.assert_allclose(norms["norm"], np.linalg.norm(np.asarray(dV), axis=1), rtol=1e-5)
    # Rank 1 and full rank of each matrix; the full-rank truncation is exact, rank 1 leaves the tail of the spectrum.
    assert sorted(map(tuple, lowrank[["matrix", "rank"]].values.tolist())) == [("dV", 1), ("dV", 6), ("dW", 1),
                                                                              ("dW", 6)]
    full = lowrank[lowrank["full_rank"]]
    assert full["abs_err"].max() < 1e-4 * full["norm"].min()
    r1 = lowrank[(lowrank["matrix"] == "dW") & (lowrank["rank"] == 1)].iloc[0]
    assert r1["abs_err"] == pytest.approx(np.sqrt((sv[1:] ** 2).sum()), rel=1e-4)
    assert r1["bound_term"] == pytest.approx(3 * 0.05 + 1 / np.log(3))


def test_every_seeds_out_of_domain_set_at_chance_stops_the_run_before_the_other_variants(monkeypatch):
    """As the ood experiment does: with no valid out-of-domain grid the verdicts used to stop with an error on an empty
    table after every variant had been computed; now the run stops at the dense variant, writing nothing."""
    cli.register("corollaries")
    with initialize_config_module("tvtheory.conf", version_base="1.3"):
        cfg = runner.typed(corollaries, compose("corollaries", overrides=[
            "sweep=tiny", "train=tiny", "n_seeds=2", "data.d=8", "model.m=32", "ood.ranges=[[-1,2,1],[-1,1,1]]"]))
    seen = []

    def at_chance(*args, comp, **kw):                    # every seed's source fine-tunes at chance on their own task
        seen.append(comp.name)
        return SimpleNamespace(finite=np.ones(2, bool), own_acc=np.full((2, 2), 0.5))
    monkeypatch.setattr(sweep, "ood_sweep", at_chance)
    with pytest.raises(cli.AllDiverged, match="out-of-domain fine-tune set"):
        corollaries.run(cfg, runner.Context(store=None))
    assert seen == [corollaries.variants(cfg.corollaries)[0].name]


def test_a_seed_with_non_finite_row_norms_leaves_cor2_two_groups_to_the_others(tmp_path):
    """A diverged seed's row norms (NaN) used to make the median ratio NaN and the verdict 'fail'; now they are left
    out, and with no finite (seed, task) left the verdict is inconclusive."""
    committed = Path(__file__).resolve().parent.parent / "results" / "corollaries"
    verdict = {r["id"]: r["verdict"] for r in json.loads((committed / "claims.json").read_text())}["cor2.two_groups"]
    for lost, expected in (("seed == 0", verdict), ("seed >= 0", "inconclusive")):
        folder = tmp_path / lost.replace(" ", "")
        shutil.copytree(committed, folder, ignore=shutil.ignore_patterns("*.png", "*.pdf"))
        norms = pd.read_csv(folder / "rownorms.csv")
        norms.loc[norms.eval(lost), "norm"] = np.nan
        norms.to_csv(folder / "rownorms.csv", index=False)
        got = {r["id"]: r for r in runner.recompute(folder)}["cor2.two_groups"]
        assert got["verdict"] == expected, (lost, got["measured"])
        if lost == "seed == 0":                            # measured on the other seeds
            assert "nan" not in got["measured"] and got["n_seeds"] == norms["seed"].nunique() - 1, got
        else:
            assert got["n_seeds"] == 0 and "no (seed, task) has finite row norms" in got["details"], got


COMMITTED = Path(__file__).resolve().parent.parent / "results" / "corollaries"


def committed_copy(tmp_path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(COMMITTED, folder, ignore=shutil.ignore_patterns("*.png", "*.pdf"))
    return folder


def measured_as_dense(df: pd.DataFrame, variant: str, values: list) -> pd.DataFrame:
    """``variant``'s rows given the dense rows' ``values``: a compressed variant that keeps everything."""
    keys = [c for c in df.columns if c not in values + ["diverged", "variant"]]
    dense = df[df["variant"] == "dense"].set_index(keys)[values]
    rows = df["variant"] == variant
    df.loc[rows, values] = dense.loc[pd.MultiIndex.from_frame(df.loc[rows, keys])].to_numpy()
    return df


def test_a_compressed_variant_losing_an_alpha_leaves_only_the_claims_that_need_it_undecided(tmp_path):
    """rank1 measured as dense (every cor1 claim would pass), then every seed of alpha = 0.5 and three of alpha = -0.5
    invalid in rank1 only (its compressed evaluation non-finite). keeps used to raise KeyError on the lost alpha; now
    it compares the other alphas, names the lost one, and each claim counts the seeds behind its own comparisons (0
    for the one that lost an alpha, as arithmetic's claims do)."""
    folder = committed_copy(tmp_path, "lost")
    pm = measured_as_dense(pd.read_csv(folder / "pair_metrics.csv"), "rank1", ["loss", "acc"])
    rank1 = pm["variant"] == "rank1"
    pm.loc[rank1 & ((pm["alpha"] == 0.5) | ((pm["alpha"] == -0.5) & (pm["seed"] < 3))), "diverged"] = True
    pm.to_csv(folder / "pair_metrics.csv", index=False)
    om = measured_as_dense(pd.read_csv(folder / "ood_metrics.csv"), "rank1", ["loss", "acc", "val_loss", "val_acc"])
    om.to_csv(folder / "ood_metrics.csv", index=False)
    got = {r["id"]: r for r in runner.recompute(folder)}
    thm1, thm2, thm3 = (got[f"cor1.rank1_thm{i}"] for i in (1, 2, 3))
    assert thm1["verdict"] == "inconclusive" and thm1["n_seeds"] == 0, thm1           # a lost alpha: 0 seeds behind
    assert "alpha=0.5: no valid seed (compressed)" in thm1["measured"] and "alpha=0.9: 0.1 vs 0.1" in thm1["measured"]
    assert "no valid seed in rank1 or dense" in thm1["details"] and "0 valid seed(s)" in thm1["details"]
    assert thm2["verdict"] == "inconclusive" and thm2["n_seeds"] == 2, thm2           # alpha = -0.5: seeds 3, 4
    assert "2 valid seed(s), fewer than claims.min_seeds=3" in thm2["details"]
    assert thm3["verdict"] == "pass" and thm3["n_seeds"] == 5, thm3
    kept = pd.read_csv(folder / "keeps.csv").set_index(["variant", "theorem"])
    assert kept.loc[("rank1", "thm1"), "kept"] == "undecided" and kept.loc[("rank1", "thm3"), "kept"] == "pass"
    assert [kept.loc[("rank1", f"thm{i}"), "n_seeds"] for i in (1, 2, 3)] == [0, 2, 5]      # as the claims count
    stars = pd.read_csv(folder / "lambda_star.csv").set_index(["variant", "alpha"])
    assert stars.loc[("rank1", 0.5), "n_seeds"] == 0 and np.isnan(stars.loc[("rank1", 0.5), "lambda_star"])
    assert stars.loc[("rank1", 0.9), "n_seeds"] == stars.loc[("dense", 0.9), "n_seeds"] == 5


def test_a_compressed_variant_losing_every_out_of_domain_seed_compares_no_region():
    """Theorem 3's grid with every seed invalid in the compressed variant only: variant_quantities used to raise on
    the empty grid; now keeps leaves thm3 undecided and says why (Theorems 1-2 are still compared)."""
    _, cfg, tables = runner.load(COMMITTED)
    pm, om = tables["pair_metrics"], tables["ood_metrics"].copy()
    om.loc[om["variant"] == "rank1", "diverged"] = True
    q = {v: rules.variant_quantities(pm[pm["variant"] == v], om[om["variant"] == v], cfg.claims, cfg.data.d)
         for v in ("dense", "rank1")}
    kept = rules.keeps(q["dense"], q["rank1"], cfg.claims, cfg.corollaries.region_iou)
    assert kept["thm3"] == (None, "Theorem 3's grid: no valid seed (compressed)", 0)
    assert kept["thm1"][0] is False and kept["thm1"][2] == 5                 # as committed: rank1 moves lambda*


def test_cor2_two_groups_leaves_out_the_row_norms_of_invalid_seeds(tmp_path):
    """Seeds 0 and 1 with a source fine-tune at chance (finite, but invalid: ood_metrics' diverged, as the run marks
    every variant of them) and row norms split in two groups. rownorms has no diverged column of its own, so
    cor2.two_groups used to count them; now it is what it is with their rows removed."""
    invalid = committed_copy(tmp_path, "invalid")
    om = pd.read_csv(invalid / "ood_metrics.csv")
    om.loc[om["seed"] < 2, "diverged"] = True
    om.to_csv(invalid / "ood_metrics.csv", index=False)
    rn = pd.read_csv(invalid / "rownorms.csv")
    rn.loc[(rn["seed"] < 2) & (rn["row"] < 128), "norm"] *= 0.01
    rn.to_csv(invalid / "rownorms.csv", index=False)
    removed = committed_copy(tmp_path, "removed")
    rn = pd.read_csv(removed / "rownorms.csv")
    rn[rn["seed"] >= 2].to_csv(removed / "rownorms.csv", index=False)
    got, expected = ({r["id"]: r for r in runner.recompute(f)}["cor2.two_groups"] for f in (invalid, removed))
    assert got["n_seeds"] == 3, got
    assert {k: got[k] for k in ("verdict", "measured", "details", "n_seeds")} == \
        {k: expected[k] for k in ("verdict", "measured", "details", "n_seeds")}


@pytest.mark.parametrize("lost, verdict, n_seeds, why", [
    ("alpha == 0.5", "inconclusive", 0, "no valid seed in prune0.5 or dense"),
    ("alpha == -0.5 and seed < 3", "inconclusive", 2, "2 valid seed(s), fewer than claims.min_seeds=3"),
    ("seed < 0", "pass", 5, None)])
def test_cor2_pruning_keeps_with_seeds_lost_by_a_pruned_variant(tmp_path, lost, verdict, n_seeds, why):
    """prune0.25 and prune0.5 measured as dense (pruning half the rows keeps everything: pass), then rows of
    prune0.5 invalid: a lost alpha leaves 0.5 undecided and says so (it used to say 'corollaries.prune is empty'),
    seeds lost below min_seeds leave the verdict inconclusive."""
    folder = committed_copy(tmp_path, "pruned")
    pm = pd.read_csv(folder / "pair_metrics.csv")
    om = pd.read_csv(folder / "ood_metrics.csv")
    for v in ("prune0.25", "prune0.5"):
        pm = measured_as_dense(pm, v, ["loss", "acc"])
        om = measured_as_dense(om, v, ["loss", "acc", "val_loss", "val_acc"])
    pm.loc[(pm["variant"] == "prune0.5") & pm.eval(lost), "diverged"] = True
    pm.to_csv(folder / "pair_metrics.csv", index=False)
    om.to_csv(folder / "ood_metrics.csv", index=False)
    got = {r["id"]: r for r in runner.recompute(folder)}["cor2.pruning_keeps"]
    assert (got["verdict"], got["n_seeds"]) == (verdict, n_seeds), got
    assert why is None or why in got["details"], got["details"]


def split_rows(large_by_seed, m=100, small=0.01):
    """Row norms of one task per seed: ``large_by_seed[s]`` of the m rows at 1, the others at ``small``."""
    return pd.DataFrame([{"seed": s, "task": "T1", "row": i, "norm": 1.0 if i < n else small}
                         for s, n in enumerate(large_by_seed) for i in range(m)])


@pytest.mark.parametrize("large, small, verdict", [
    ((30, 35, 40), 0.01, "pass"),
    ((97, 98, 99), 0.01, "fail"),                    # one group, beyond the spread
    ((92, 96, 98), 0.01, "inconclusive"),            # large fraction 0.953 +- 0.031 straddles 0.95
    ((30, 35, 40), 0.3, "fail"),                     # ratio 3.3 < 10
])
def test_cor2_two_groups_judges_the_seed_means_against_their_spread(large, small, verdict):
    """The verdict used to be the medians' alone: a fraction within the seed spread of its bound was decided."""
    _, cfg, _ = runner.load(COMMITTED)
    recs = rules.corollary_claims({}, 3, split_rows(large, small=small), cfg.model.m, cfg.claims, cfg.corollaries)
    got = {r.id: r for r in recs}["cor2.two_groups"]
    assert (got.verdict, got.n_seeds) == (verdict, 3), got.measured


def test_cor2_pruning_keeps_without_a_fraction_as_large_as_prune_min_says_so():
    """Every fraction compared kept, none reaching prune_min: inconclusive, and the details used to say
    'corollaries.prune is empty'."""
    _, cfg, tables = runner.load(COMMITTED)
    pm, om = tables["pair_metrics"], tables["ood_metrics"]
    dense = rules.variant_quantities(pm[pm["variant"] == "dense"], om[om["variant"] == "dense"], cfg.claims, cfg.data.d)
    kept_by = {"prune0.25": rules.keeps(dense, dense, cfg.claims, cfg.corollaries.region_iou)}
    recs = rules.corollary_claims(kept_by, dense["n_seeds"], tables["rownorms"], cfg.model.m, cfg.claims,
                                  cfg.corollaries)
    got = {r.id: r for r in recs}["cor2.pruning_keeps"]
    assert got.verdict == "inconclusive" and "no fraction as large as prune_min=0.5 is compared" in got.details, got


def test_keeps_compares_lambda_star_on_the_seeds_valid_in_both():
    """A compressed variant that lost seed 0 at alpha = 0.5 and equals dense on the others keeps lambda* there; the
    seed means used to be over different seeds (dense's with seed 0's outlying lambda*), a certain change."""
    _, cfg, tables = runner.load(COMMITTED)
    pm, om = tables["pair_metrics"], tables["ood_metrics"]
    q = rules.variant_quantities(pm[pm["variant"] == "dense"], om[om["variant"] == "dense"], cfg.claims, cfg.data.d)
    ls = q["lambda_star"][0.5]
    dense = {**q, "lambda_star": {**q["lambda_star"], 0.5: ls.where(ls.index != 0, ls.mean() + 1.0)}}
    lost = {**q, "lambda_star": {**q["lambda_star"], 0.5: ls.drop(0)},
            "valid_seeds": q["valid_seeds"].where(q["valid_seeds"].index != 0.5, len(ls) - 1)}
    ok, text, n = rules.keeps(dense, lost, cfg.claims, cfg.corollaries.region_iou)["thm1"]
    assert ok is True and n == len(ls) - 1, text


def test_a_compressed_variant_losing_every_out_of_domain_seed_still_recomputes(tmp_path):
    """The whole analysis on such a table: the variant's own Theorem 3 verdicts (verdicts.csv) are inconclusive with
    0 seeds, where ood_region_claims used to stop the recompute on the empty grid; the dense variant's are unchanged."""
    folder = committed_copy(tmp_path, "lost_ood")
    om = pd.read_csv(folder / "ood_metrics.csv")
    om.loc[om["variant"] == "rank1", "diverged"] = True
    om.to_csv(folder / "ood_metrics.csv", index=False)
    runner.recompute(folder)
    got = pd.read_csv(folder / "verdicts.csv").set_index(["variant", "id"])
    before = pd.read_csv(COMMITTED / "verdicts.csv").set_index(["variant", "id"])
    assert (got.loc["rank1"].loc[["thm3.region", "thm3.beats_single"], "measured"] == "no valid seed on the grid").all()
    assert (got.loc["rank1"].loc[["thm3.region", "thm3.beats_single"], "verdict"] == "inconclusive").all()
    assert got.loc["dense"].equals(before.loc["dense"])


def test_a_dense_variant_losing_an_alpha_leaves_the_claims_that_do_not_use_it():
    """Every seed of alpha = 0.5 invalid in every variant (the run marks a dense failure in all of them): the claims
    on the pair sweep's alpha >= 0 lose it, but Theorem 3's comparison and the row norms do not use the pair sweep and
    keep their verdicts and seed counts (a single gate on dense's fewest seeds made every claim inconclusive)."""
    exp, cfg, tables = runner.load(COMMITTED)
    before = {r.id: r for r in exp.claims(exp.analyse(tables, cfg), cfg)}
    pm = tables["pair_metrics"].copy()
    pm.loc[pm["alpha"] == 0.5, "diverged"] = True
    after = {r.id: r for r in exp.claims(exp.analyse({**tables, "pair_metrics": pm}, cfg), cfg)}
    for cid in ("cor1.rank1_thm3", "cor2.two_groups", "cor1.rank1_thm2"):
        assert (after[cid].verdict, after[cid].n_seeds, after[cid].details) == \
            (before[cid].verdict, before[cid].n_seeds, before[cid].details), cid
    assert (after["cor1.rank1_thm1"].verdict, after["cor1.rank1_thm1"].n_seeds) == ("inconclusive", 0)


def test_cor2_pruning_keeps_counts_only_the_fractions_its_verdict_rests_on():
    """prune0.25 and prune0.5 kept (the claim passes at prune_min = 0.5); a larger fraction that lost seeds, or all
    of Theorem 3's grid, changes neither the verdict nor the count behind it."""
    _, cfg, tables = runner.load(COMMITTED)
    pm, om = tables["pair_metrics"], tables["ood_metrics"]
    dense = rules.variant_quantities(pm[pm["variant"] == "dense"], om[om["variant"] == "dense"], cfg.claims, cfg.data.d)
    same = rules.keeps(dense, dense, cfg.claims, cfg.corollaries.region_iou)
    lost = {**same, "thm3": (None, "Theorem 3's grid: no valid seed (compressed)", 0)}
    recs = rules.corollary_claims({"prune0.25": same, "prune0.5": same, "prune0.75": lost}, dense["n_seeds"],
                                  tables["rownorms"], cfg.model.m, cfg.claims, cfg.corollaries)
    got = {r.id: r for r in recs}["cor2.pruning_keeps"]
    assert (got.verdict, got.n_seeds) == ("pass", 5), got


@pytest.mark.parametrize("invalid, extreme", [("rank1", "dense"), ("dense", "rank1")])
def test_compare_variants_measures_both_sides_on_the_seeds_valid_in_both(invalid, extreme):
    """rank1 equal to dense, except that seed 0 is invalid in one of them at alpha = -0.5 (and in its Theorem 3 grid),
    where the other's numbers for seed 0 are extreme: measured on that side's own seeds, the negation window and the
    best loss would move; on the seeds both have, rank1 keeps everything there. A run marks a variant invalid
    wherever dense is, so only a table holds the second case (dense invalid): it was compared on one side only."""
    _, cfg, tables = runner.load(COMMITTED)
    pm = measured_as_dense(tables["pair_metrics"].copy(), "rank1", ["loss", "acc"])
    om = measured_as_dense(tables["ood_metrics"].copy(), "rank1", ["loss", "acc", "val_loss", "val_acc"])
    seed0 = (pm["alpha"] == -0.5) & (pm["seed"] == 0)
    pm.loc[seed0 & (pm["variant"] == invalid), "diverged"] = True
    pm.loc[seed0 & (pm["variant"] == extreme), "loss"] = np.where(pm.loc[seed0 & (pm["variant"] == extreme), "task"]
                                                                  == "T1", 50.0, 0.0)
    om.loc[(om["seed"] == 0) & (om["variant"] == invalid), "diverged"] = True
    om.loc[(om["seed"] == 0) & (om["variant"] == extreme), ["loss", "val_loss"]] = 50.0
    _, kept_by = rules.compare_variants(pm, om, cfg.claims, cfg.data.d, cfg.corollaries.region_iou)
    assert kept_by["rank1"]["thm2"][0] is True and kept_by["rank1"]["thm2"][2] == 4, kept_by["rank1"]["thm2"]
    assert kept_by["rank1"]["thm3"][0] is True and kept_by["rank1"]["thm3"][2] == 4, kept_by["rank1"]["thm3"]


@pytest.mark.parametrize("lost_in, named", [
    (("dense",), "no valid seed (dense)"),
    (("rank1",), "no valid seed (compressed)"),
    (("dense", "rank1"), "no valid seed (compressed)"),
    ((), "no seed valid in both"),                    # dense valid on seeds 0-1 only, rank1 on 2-4 only
])
def test_what_compares_nothing_names_the_side_that_lost_it(lost_in, named):
    """Each side is measured on the seeds valid in both, so both come out empty where either lost everything; the
    text used to name the compressed side whichever had lost it."""
    _, cfg, tables = runner.load(COMMITTED)
    pm, om = tables["pair_metrics"].copy(), tables["ood_metrics"].copy()
    for df, where_ in ((pm, pm["alpha"] == 0.5), (om, om["seed"] >= 0)):
        for v in lost_in:
            df.loc[where_ & (df["variant"] == v), "diverged"] = True
        if not lost_in:
            df.loc[where_ & (df["variant"] == "dense") & (df["seed"] >= 2), "diverged"] = True
            df.loc[where_ & (df["variant"] == "rank1") & (df["seed"] < 2), "diverged"] = True
    _, kept_by = rules.compare_variants(pm, om, cfg.claims, cfg.data.d, cfg.corollaries.region_iou)
    assert f"alpha=0.5: {named}" in kept_by["rank1"]["thm1"][1] and kept_by["rank1"]["thm1"][2] == 0
    assert kept_by["rank1"]["thm3"] == (None, f"Theorem 3's grid: {named}", 0)


def test_keeps_reads_a_seed_that_never_learns_t2_on_the_grid_as_beyond_its_last_point():
    """A compressed variant whose seeds 1-4 never learn T2 on the grid at alpha = 0.5 (lambda* NaN) while dense's
    learn it at ~0.5: their lambda* lie beyond the grid's last point (3), so lambda* certainly moved, on all 5 seeds
    (the finite seed's mean used to hide the others and call lambda* kept)."""
    _, cfg, tables = runner.load(COMMITTED)
    pm, om = tables["pair_metrics"], tables["ood_metrics"]
    q = rules.variant_quantities(pm[pm["variant"] == "dense"], om[om["variant"] == "dense"], cfg.claims, cfg.data.d)
    ls = q["lambda_star"][0.5]
    never = {**q, "lambda_star": {**q["lambda_star"], 0.5: ls.where(ls.index == ls.index[0])}}
    ok, text, n = rules.keeps(q, never, cfg.claims, cfg.corollaries.region_iou)["thm1"]
    assert ok is False and n == len(ls) and f"({len(ls) - 1} seed(s) learn T2 on the grid in one variant only)" in \
        text, text


def test_keeps_leaves_lambda_star_undecided_where_a_seed_beyond_the_grid_may_have_moved_it_within_tolerance():
    """Dense's seed 0 never learns T2 at alpha = 0 and the variant's learns it at the grid's last point, the other
    seeds equal: that seed's lambda* may differ by less than the tolerance, or by more (undecided); the seed means
    used to be over different seeds (0.4 apart), a certain change."""
    _, cfg, tables = runner.load(COMMITTED)
    pm, om = tables["pair_metrics"], tables["ood_metrics"]
    q = rules.variant_quantities(pm[pm["variant"] == "dense"], om[om["variant"] == "dense"], cfg.claims, cfg.data.d)
    ls = q["lambda_star"][0.0]
    dense = {**q, "lambda_star": {**q["lambda_star"], 0.0: ls.where(ls.index != ls.index[0])}}
    late = {**q, "lambda_star": {**q["lambda_star"], 0.0: ls.where(ls.index != ls.index[0], q["lam_max"][0.0])}}
    ok, text, n = rules.keeps(dense, late, cfg.claims, cfg.corollaries.region_iou)["thm1"]
    assert ok is None and n == len(ls) - 1 and "(1 seed(s) learn T2 on the grid in one variant only)" in text, text


@pytest.mark.parametrize("offsets, kept", [([0.0, 0.0, 0.3, 0.0, 0.0], None), ([0.3] * 5, False),
                                           ([0.0] * 5, True)])
def test_keeps_compares_the_hinge_at_minus_one_seed_by_seed_beyond_the_spread(offsets, kept):
    """Theorem 2's comparison at lambda = -1: one seed's T1 hinge 0.3 higher moves the mean by 0.06 > eps = 0.05,
    within its seed spread (undecided; it used to compare the seed means alone, a certain change); every seed's
    0.3 higher is a certain change; equal is kept."""
    _, cfg, tables = runner.load(COMMITTED)
    pm, om = tables["pair_metrics"], tables["ood_metrics"]
    q = rules.variant_quantities(pm[pm["variant"] == "dense"], om[om["variant"] == "dense"], cfg.claims, cfg.data.d)
    per = q["at_minus_one_seeds"][-0.5].copy()
    assert len(per) == len(offsets) and cfg.claims.eps_learned == 0.05
    per["L1"] += offsets
    other = {**q, "at_minus_one_seeds": {**q["at_minus_one_seeds"], -0.5: per}}
    ok, text, n = rules.keeps(q, other, cfg.claims, cfg.corollaries.region_iou)["thm2"]
    assert ok is kept and n == len(offsets), text


def test_keeps_leaves_lambda_star_undecided_where_the_t2_rows_that_would_give_it_are_missing():
    """A variant equal to dense whose T2 rows at alpha = 0.5 from lambda = 0.45 on are missing (a damaged table):
    its lambda* is missing with them, not beyond the grid, so nothing is known (it read as a certain change)."""
    _, cfg, tables = runner.load(COMMITTED)
    pm, om = tables["pair_metrics"], tables["ood_metrics"]
    dense_pm, dense_om = pm[pm["variant"] == "dense"], om[om["variant"] == "dense"]
    q = rules.variant_quantities(dense_pm, dense_om, cfg.claims, cfg.data.d)
    cut = dense_pm[~((dense_pm["alpha"] == 0.5) & (dense_pm["task"] == "T2") & (dense_pm["lam"] >= 0.45))]
    damaged = rules.variant_quantities(cut, dense_om, cfg.claims, cfg.data.d)
    assert rules.keeps(q, q, cfg.claims, cfg.corollaries.region_iou)["thm1"][0] is True
    ok, text, n = rules.keeps(q, damaged, cfg.claims, cfg.corollaries.region_iou)["thm1"]
    assert ok is None, text
