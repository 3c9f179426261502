"""The scaling experiment with a point of its sweeps lost: a (d, m) cell or a delta_* whose every seed is invalid
stays in the tables, marked, and the claim that rests on it counts 0 seeds there; the run stops only when every point
lost every seed."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvtheory import runner, sweep
from tvtheory.experiments import _pairs

ROOT = Path(__file__).resolve().parent.parent
TINY = ["train=tiny", "n_seeds=2", "model.m=16", "scaling.ds=[6,8,10]", "scaling.ms=[16]", "scaling.n_rels=[2,4]",
        "scaling.conv_steps=60", "scaling.n_test=50", "figures=false"]


@pytest.fixture(scope="module")
def committed():
    return runner.load(ROOT / "results" / "scaling")


def verdicts_with(committed, tmp_path, metrics=None, conv=None):
    """The committed tables' claims with some points' rows marked diverged, and their figure drawn."""
    exp, cfg, tables = committed
    tables = dict(tables)
    if metrics is not None:                                   # (d, m), or (every d, every m)
        m = tables["metrics"].copy()
        m.loc[m["d"].isin(np.ravel(metrics[0])) & m["m"].isin(np.ravel(metrics[1])), "diverged"] = True
        tables["metrics"] = m
    if conv is not None:                                      # n_rel, or every n_rel
        c = tables["convergence_curves"].copy()
        c.loc[c["n_rel"].isin(np.ravel(conv)), "diverged"] = True
        tables["convergence_curves"] = c
    a = exp.analyse(tables, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        exp.plot(tables, a, cfg, tmp_path)
    return {r.id: r for r in exp.claims(a, cfg)}, a


def test_a_lost_cell_leaves_its_claim_undecided_and_names_it(committed, tmp_path):
    _, cfg, _ = committed
    base, _ = verdicts_with(committed, tmp_path / "base")
    d0 = cfg.scaling.ds[1]
    got, a = verdicts_with(committed, tmp_path / "cell", metrics=(d0, cfg.model.m))
    r = got["beta.scaling_d"]
    assert (r.verdict, r.n_seeds) == ("inconclusive", 0)
    assert f"Fewer valid seeds at d={d0} (0 of {cfg.n_seeds})" in r.details and f"d={d0}: nan" in r.measured
    assert f" (no value at d={d0})" in r.measured                     # the exponent is over the other d
    assert "the rule alone would say inconclusive" in r.details      # a missing point decides nothing
    assert "a d without a value (every seed lost)" in r.details
    assert np.isnan(a["beta"].set_index(["d", "m"]).loc[(d0, cfg.model.m), "beta_neg"])
    assert d0 not in set(a["beta_seeds"].query(f"m == {cfg.model.m}")["d"])
    assert got["conv.delta_star_exponent"] == base["conv.delta_star_exponent"]
    # a lost cell at another width is reported, not judged: the claim keeps its verdict
    other = next(m for m in cfg.scaling.ms if m != cfg.model.m)
    kept, _ = verdicts_with(committed, tmp_path / "other", metrics=(d0, other))
    assert (kept["beta.scaling_d"].verdict, kept["beta.scaling_d"].n_seeds) == (base["beta.scaling_d"].verdict,
                                                                              base["beta.scaling_d"].n_seeds)
    assert f"m={other}: exponent " in kept["beta.scaling_d"].details
    assert f" (no value at d={d0})" in kept["beta.scaling_d"].details.split(f"m={other}: exponent ")[1]
    assert sorted(p.name for p in (tmp_path / "cell").iterdir()) == ["scaling.pdf", "scaling.png"]


def test_a_lost_delta_star_leaves_the_convergence_claim_undecided(committed, tmp_path):
    _, cfg, _ = committed
    base, _ = verdicts_with(committed, tmp_path / "base")
    n0 = cfg.scaling.n_rels[0]
    got, _ = verdicts_with(committed, tmp_path / "conv", conv=n0)
    r = got["conv.delta_star_exponent"]
    assert (r.verdict, r.n_seeds) == ("inconclusive", 0) and f"n_rel={n0} (0 of {cfg.n_seeds})" in r.details
    assert f" (no value at n_rel={n0});" in r.measured
    assert got["beta.scaling_d"] == base["beta.scaling_d"]


def test_a_point_that_is_not_positive_is_named_as_left_out_of_the_fit(committed):
    """T1's hinge loss under negation made 0 at one d (beta_neg = 0 there: no increase): the fitted exponent cannot
    take its logarithm and leaves it out, and the claim says so rather than printing an exponent over fewer points
    unnamed; its local exponents are infinite, which no tolerance holds."""
    exp, cfg, tables = committed
    d0, m = cfg.scaling.ds[1], cfg.model.m
    df = tables["metrics"].copy()
    df.loc[(df["d"] == d0) & (df["m"] == m) & (df["task"] == "T1") & (df["lam"] < 0), "loss"] = 0.0
    a = exp.analyse({**tables, "metrics": df}, cfg)
    assert a["beta"].set_index(["d", "m"]).loc[(d0, m), "beta_neg"] == 0
    r = {r.id: r for r in exp.claims(a, cfg)}["beta.scaling_d"]
    assert f" (not positive at d={d0}: left out of the fit);" in r.measured and r.verdict == "fail", r


def test_tables_without_a_valid_row_give_undecided_claims(committed, tmp_path):
    _, cfg, _ = committed
    got, _ = verdicts_with(committed, tmp_path / "beta", metrics=(cfg.scaling.ds, cfg.scaling.ms))
    assert (got["beta.scaling_d"].verdict, got["beta.scaling_d"].n_seeds) == ("inconclusive", 0)
    assert "No valid seed at any d." in got["beta.scaling_d"].details
    got, _ = verdicts_with(committed, tmp_path / "conv", conv=cfg.scaling.n_rels)
    assert (got["conv.delta_star_exponent"].verdict, got["conv.delta_star_exponent"].n_seeds) == ("inconclusive", 0)


@pytest.mark.slow
def test_a_run_with_lost_points_finishes_and_one_with_every_point_lost_stops(tmp_path, command, monkeypatch):
    """Every seed of the second (d, m) cell, or of the first delta_*, made invalid: the run writes every table, that
    point's rows marked, and says which point; with every point of both sweeps lost it stops (exit 3), writing
    nothing. It used to stop at the first lost point."""
    validity, finetune_all, calls = _pairs.validity, sweep.finetune_all, []

    def losing(cells):
        def f(r, claims_cfg):
            valid, at_chance = validity(r, claims_cfg)
            calls.append(None)
            return (np.zeros_like(valid) if len(calls) in cells else valid), at_chance
        return f

    def diverging(n_rels):                    # the convergence runs' fine-tunes (logged every step) at n_rels
        def f(seed, setup, *rest):
            ft = finetune_all(seed, setup, *rest)
            lost = setup.train.log_every == 1 and setup.data.n_rel in n_rels
            return ft._replace(finite=np.zeros_like(np.asarray(ft.finite))) if lost else ft
        return f

    monkeypatch.setattr(_pairs, "validity", losing({2}))
    p = command("scaling", *TINY, f"out_dir={tmp_path / 'cell'}", "cache.dir=null")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "d=8, m=16: all fine-tune pairs diverged or stayed at chance; their rows are marked" in p.stderr
    m = pd.read_csv(tmp_path / "cell" / "metrics.csv")
    assert m.groupby("d")["diverged"].all().to_dict() == {6: False, 8: True, 10: False}
    monkeypatch.setattr(_pairs, "validity", validity)
    monkeypatch.setattr(sweep, "finetune_all", diverging({2}))
    p = command("scaling", *TINY, f"out_dir={tmp_path / 'conv'}", "cache.dir=null")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "delta_*=0.1: all fine-tunes diverged; their rows are marked" in p.stderr
    c = pd.read_csv(tmp_path / "conv" / "convergence_curves.csv")
    assert c.groupby("n_rel")["diverged"].all().to_dict() == {2: True, 4: False}
    monkeypatch.setattr(_pairs, "validity", losing({1, 2, 3}))          # every cell lost, the convergence runs not
    calls.clear()
    p = command("scaling", *TINY, f"out_dir={tmp_path / 'cells'}", "cache.dir=null")
    assert p.returncode == 0 and pd.read_csv(tmp_path / "cells" / "metrics.csv")["diverged"].all(), p.stderr[-3000:]
    monkeypatch.setattr(sweep, "finetune_all", diverging({2, 4}))
    calls.clear()
    p = command("scaling", *TINY, f"out_dir={tmp_path / 'all'}", "cache.dir=null")
    assert p.returncode == 3 and "diverged" in p.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "all").exists()
