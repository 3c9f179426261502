"""The unlearning experiment (Table 3): its config checks, its measurements on hand-made tables, each claim's rule
flipped between pass, fail and inconclusive by perturbing a passing results table, and one tiny run end to end
through the command line (cached rerun: the same bytes)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvtheory import config, experiments, lm, results, runner
from tvtheory.experiments import unlearning as ul

ROOT = Path(__file__).resolve().parent.parent
CFG = config.validate(ul.Config())
LAMS = [0.0, -0.5, -1.0, -1.5, -2.0]


# ------------------------------------------------------------------------------------------------------ config
def test_defaults_are_lm_defaults_and_the_module_is_registered():
    assert "unlearning" in experiments.NAMES
    assert CFG.lm_config() == {**lm.DEFAULTS, "lams": tuple(lm.DEFAULTS["lams"]), "ranks": (2, 8, 16)}
    assert CFG.variants() == ["full", "rank2", "rank8", "rank16"] and CFG.n_seeds >= 5
    cost = ul.estimate(CFG)
    assert 30 < cost.seconds < 300 and cost.memory_gb < 4


@pytest.mark.parametrize("override, field", [
    ({"lams": [-0.5, -1.0]}, "lams=[-0.5, -1.0]: must contain 0"),
    ({"lams": [0.0, -0.5]}, "lams=[0.0, -0.5]: must contain -1"),
    ({"lams": [0.0, -1.0, -1.0]}, "lams=[0.0, -1.0, -1.0]: must not repeat"),
    ({"ranks": [0, 8]}, "ranks[0]=0"),
    ({"ranks": [2, 65]}, "ranks[1]=65"),
    ({"ranks": [2, 4]}, "claims.rank=16: must be one of ranks=[2, 4]"),
    ({"lm": {"heads": 3}}, "lm.heads=3"),
    ({"corpus": {"prompt_len": 32}}, "corpus.prompt_len=32"),
    ({"pretrain": {"lr": 0.0}}, "pretrain.lr=0.0"),
    ({"shares": {"forget": -0.1}}, "shares.forget=-0.1"),
    ({"n_samples": 40}, "n_samples=40"),
    ({"log_every": 500}, "log_every=500"),
    ({"claims": {"forget_drop": 1.5}}, "claims.forget_drop=1.5"),
])
def test_bad_settings_name_their_field(override, field):
    with pytest.raises(ValueError) as e:
        runner.typed(ul, override)
    assert str(e.value).startswith(field), str(e.value)


def test_bad_input_stops_before_compute_with_one_line():
    p = subprocess.run([sys.executable, "experiments/unlearning.py", "lams=[-1.0,-2.0]", "out_dir=/nonexistent/x"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "config error: lams=[-1.0, -2.0]: must contain 0, the reference of every drop (Psi_0)"]


# ------------------------------------------------------------------------------------------------------ tables
DROPS = {"full": {"forget": 0.50, "aligned": 0.35, "unrelated": 0.15},
         "rank2": {"forget": 0.15, "aligned": 0.08, "unrelated": 0.03},
         "rank8": {"forget": 0.30, "aligned": 0.15, "unrelated": 0.14},
         "rank16": {"forget": 0.40, "aligned": 0.25, "unrelated": 0.12}}
ALPHA = {"forget/aligned": 0.55, "forget/unrelated": 0.10, "aligned/unrelated": 0.08}


def make_tables(n_seeds=5, drops=DROPS, rise=0.07, alpha=ALPHA, jitter=0.01, rouge0=0.8, loss0=1.4):
    """A results table that passes every claim: Rouge-L falls linearly in |lambda| to (1 - drop) R0 at -1, the
    general loss rises by rise * |lambda|; seed s shifts every drop and alpha_hat by jitter * (s - mean)."""
    rows, arows = [], []
    for s in range(n_seeds):
        e = jitter * (s - (n_seeds - 1) / 2)
        for v, per_set in drops.items():
            for lam in LAMS:
                for name in ul.SETS:
                    if name == "general_test":
                        rouge, cont, loss = np.nan, np.nan, loss0 * (1 + (rise + e) * abs(lam))
                    else:
                        rouge = rouge0 * (1 - (per_set[name] + e) * abs(lam))
                        cont, loss = 1.0 + abs(lam), 1.0 + abs(lam)
                    rows.append({"seed": s, "set": name, "variant": v, "lam": lam, "rouge": rouge, "cont_loss": cont,
                                 "loss": loss, "diverged": False})
        for p, a in alpha.items():
            arows.append({"seed": s, "pair": p, "alpha_hat": a + e, "alpha_raw": 0.99, "diverged": False})
    models = pd.DataFrame([{"seed": s, "set": b, "corpus_seed": 7, "tuned_rouge": 0.99, "tuned_loss": 0.1,
                            "tau_norm": 3.0, "diverged": False} for s in range(n_seeds) for b in ul.BOOKS])
    relations = pd.DataFrame([{"seed": s, "a": a, "b": b, "n": n, "jaccard": 0.5 / n, "containment": 0.6 / n}
                              for s in range(n_seeds) for a, b in (p.split("/") for p in ul.PAIRS)
                              for n in (1, 2, 3, 4)])
    return {"metrics": pd.DataFrame(rows), "alpha_hat": pd.DataFrame(arows), "models": models,
            "relations": relations, "curves": pd.DataFrame(), "samples": pd.DataFrame()}


def verdicts(tables, cfg=CFG) -> dict:
    return {r.id: r.verdict for r in ul.claims(ul.analyse(tables, cfg), cfg)}


def set_drop(tables, variant, name, drop, spread=0.01):
    """Perturb the table: Rouge-L at lambda = -1 of one (variant, set) gives this drop (per seed +- spread)."""
    m = tables["metrics"]
    at = (m["variant"] == variant) & (m["set"] == name)
    r0 = m[at & (m["lam"] == 0.0)].set_index("seed")["rouge"]
    sel = at & (m["lam"] == -1.0)
    seeds = m.loc[sel, "seed"]
    e = spread * (seeds - seeds.mean()) / max(seeds.std(ddof=1), 1e-12)
    m.loc[sel, "rouge"] = r0.reindex(seeds).to_numpy() * (1 - drop - e.to_numpy())
    return tables


def test_drops_and_summary_by_hand():
    t = make_tables(n_seeds=3, jitter=0.0)
    d = ul.drops(t["metrics"])
    row = d[(d["variant"] == "full") & (d["set"] == "forget")].iloc[0]
    assert row["rouge0"] == pytest.approx(0.8) and row["rouge"] == pytest.approx(0.4)
    assert row["rouge_drop"] == pytest.approx(0.5)
    g = d[(d["variant"] == "full") & (d["set"] == "general_test")].iloc[0]
    assert g["loss_rise"] == pytest.approx(0.07) and np.isnan(g["rouge_drop"])
    assert len(d) == 3 * 4 * 4
    s = ul.summary(d)
    assert list(s["variant"].unique()) == ["full", "rank2", "rank8", "rank16"] and list(s["set"][:4]) == list(ul.SETS)
    assert s["n_seeds"].eq(3).all() and s["rouge_drop_std"].fillna(0).abs().max() < 1e-12


def test_diverged_seeds_are_left_out():
    t = make_tables()
    m = t["metrics"]
    bad = m["seed"] == 0
    m.loc[bad, "rouge"], m.loc[bad, "diverged"] = 0.0, True
    t["alpha_hat"].loc[t["alpha_hat"]["seed"] == 0, "diverged"] = True
    d = ul.drops(m)
    assert 0 not in set(d["seed"]) and verdicts(t) == {c: "pass" for c in verdicts(make_tables())}


def test_table3_sits_beside_the_papers_numbers():
    a = ul.analyse(make_tables(), CFG)
    md = a["table3"]
    for x in ("37.23", "34.71", "15.13", "35.53", "24.11", "13.83", "0.498", "0.239", "50.00 +- 1.58", "+7.0%"):
        assert x in md, x
    assert "| forget/aligned | 0.500 | 0.250 | 0.125 | 0.550 +- 0.016 | 0.990 |" in md
    assert set(a) >= {"drops", "summary", "alpha_summary", "relations_summary", "table3"}


# ------------------------------------------------------------------------------------------------------ claims
IDS = ["unlearning.forget", "unlearning.ordering", "unlearning.kept", "unlearning.low_rank"]


def test_the_passing_table_passes_every_claim():
    recs = ul.claims(ul.analyse(make_tables(), CFG), CFG)
    assert [r.id for r in recs] == IDS and all(r.verdict == "pass" for r in recs), [r.details for r in recs]


@pytest.mark.parametrize("perturb, verdict", [
    (lambda t: set_drop(t, "full", "forget", 0.10), "fail"),                  # barely dented
    (lambda t: set_drop(t, "full", "forget", 0.27, spread=0.05), "inconclusive"),    # margin inside the spread
    (lambda t: set_drop(t, "full", "forget", 0.30), "pass"),
])
def test_forget_claim(perturb, verdict):
    assert verdicts(perturb(make_tables()))["unlearning.forget"] == verdict


def swap_alpha(t):
    a = t["alpha_hat"]
    fa, fu = a["pair"] == "forget/aligned", a["pair"] == "forget/unrelated"
    x, y = a.loc[fa, "alpha_hat"].to_numpy(), a.loc[fu, "alpha_hat"].to_numpy()
    a.loc[fa, "alpha_hat"], a.loc[fu, "alpha_hat"] = y, x
    return t


def tie_alpha(t):
    a = t["alpha_hat"]
    a.loc[a["pair"] == "forget/aligned", "alpha_hat"] = 0.10 + 0.2 * (a["seed"] % 2 - 0.5)
    return t


@pytest.mark.parametrize("perturb, verdict", [
    (lambda t: set_drop(t, "full", "aligned", 0.10), "fail"),                 # unrelated above aligned
    (lambda t: set_drop(t, "full", "aligned", 0.55), "fail"),                 # aligned above forget
    (lambda t: set_drop(t, "full", "aligned", 0.17, spread=0.05), "inconclusive"),   # gap inside the spread
    (lambda t: swap_alpha(t), "fail"),                  # alpha_hat now predicts unrelated above aligned
    (lambda t: swap_alpha(set_drop(t, "full", "aligned", 0.10)), "pass"),    # ... and the drops follow alpha_hat
    (lambda t: tie_alpha(t), "inconclusive"),           # alpha_hat cannot tell which book should drop more
])
def test_ordering_claim_follows_alpha_hat(perturb, verdict):
    assert verdicts(perturb(make_tables()))["unlearning.ordering"] == verdict


@pytest.mark.parametrize("rise, jitter, verdict", [(0.07, 0.01, "pass"), (0.30, 0.01, "fail"),
                                                   (0.14, 0.03, "inconclusive")])
def test_kept_claim(rise, jitter, verdict):
    assert verdicts(make_tables(rise=rise, jitter=jitter))["unlearning.kept"] == verdict


@pytest.mark.parametrize("perturb, verdict", [
    (lambda t: set_drop(t, "rank16", "forget", 0.10), "fail"),                # the low-rank vector barely forgets
    (lambda t: set_drop(t, "rank16", "aligned", 0.05), "fail"),               # its ordering breaks
    (lambda t: set_drop(t, "rank16", "forget", 0.27, spread=0.05), "inconclusive"),
    (lambda t: set_drop(t, "rank8", "aligned", 0.01), "pass"),                # another rank is only reported
])
def test_low_rank_claim(perturb, verdict):
    assert verdicts(perturb(make_tables()))["unlearning.low_rank"] == verdict


def test_low_rank_claim_judges_the_declared_rank():
    cfg = dataclasses.replace(CFG, claims=dataclasses.replace(CFG.claims, rank=2))
    assert verdicts(make_tables(), cfg)["unlearning.low_rank"] == "fail"         # rank 2 forgets 0.15 < 0.25


def test_too_few_seeds_or_documents_leave_every_verdict_inconclusive():
    few = verdicts(make_tables(n_seeds=2))
    assert set(few.values()) == {"inconclusive"}
    smoke = dataclasses.replace(CFG, corpus=dataclasses.replace(CFG.corpus, n_docs=8))
    recs = ul.claims(ul.analyse(make_tables(), smoke), smoke)
    assert all(r.verdict == "inconclusive" and "smoke run" in r.details for r in recs)


# ------------------------------------------------------------------------------------------------------ end to end
TINY = ["n_seeds=2", "corpus.n_docs=8", "corpus.n_general=32", "corpus.n_general_test=8", "corpus.seq_len=16",
        "corpus.prompt_len=4", "lm.dim=16", "lm.depth=1", "lm.heads=2", "pretrain.steps=20", "finetune.steps=10",
        "lams=[0,-1]", "ranks=[1]", "claims.rank=1", "log_every=5"]


@pytest.mark.slow
def test_tiny_run_end_to_end_rerun_from_the_cache_gives_the_same_bytes(tmp_path, command):
    """A run in a process of its own, then its rerun through the command's function in the test process."""
    out, again = tmp_path / "a", tmp_path / "b"
    p = subprocess.run([sys.executable, str(ROOT / "experiments" / "unlearning.py"), *TINY, f"out_dir={out}",
                        f"cache.dir={tmp_path / 'cache'}"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "2 computed" in p.stderr, p.stderr[-3000:]
    assert results.owner(out) == "unlearning"
    t = {n: pd.read_csv(out / f"{n}.csv") for n in ul.TABLES}
    assert len(t["metrics"]) == 2 * 4 * 2 * 2                               # seeds x sets x variants x lambdas
    assert set(t["metrics"]["variant"]) == {"full", "rank1"} and t["metrics"]["loss"].notna().all()
    assert len(t["alpha_hat"]) == 2 * 3 and len(t["models"]) == 2 * 3 and len(t["curves"]) == 2 * 4
    assert len(t["samples"]) == 3 * 2 * 2 * 2 and len(t["relations"]) == 2 * 6 * 4
    assert (out / "unlearning.png").stat().st_size > 0 and "37.23" in (out / "table3.md").read_text()
    before = json.loads((out / "claims.json").read_text())
    assert [r["id"] for r in before] == IDS
    assert all(r["verdict"] == "inconclusive" and "smoke run" in r["details"] for r in before)
    p = command("unlearning", *TINY, f"out_dir={again}", f"cache.dir={tmp_path / 'cache'}")
    assert p.returncode == 0 and "2 entries reused, 0 computed" in p.stderr, p.stderr[-3000:]
    for f in sorted(out.glob("*.csv")) + [out / "table3.md", out / "unlearning.png"]:
        assert f.read_bytes() == (again / f.name).read_bytes(), f.name
    (out / "claims.json").unlink()
    recs = runner.recompute(out)
    assert [(r["id"], r["verdict"], r["measured"]) for r in recs] == [
        (r["id"], r["verdict"], r["measured"]) for r in before]


def test_a_whole_vector_that_forgets_nothing_still_gets_verdicts():
    t = set_drop(make_tables(), "full", "forget", 0.0, spread=0.0)
    recs = {r.id: r for r in ul.claims(ul.analyse(t, CFG), CFG)}
    assert recs["unlearning.forget"].verdict == "fail"
    # the low-rank vector is judged on its own drops; its ratio to a zero drop is reported as nan, not a crash
    assert recs["unlearning.low_rank"].verdict == "pass" and "(nan of the whole vector's)" in recs[
        "unlearning.low_rank"].measured
