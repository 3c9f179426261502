"""Colored-Digits: the colouring holds its stated proportions in every split, splits are fixed by the seed, the
claims can pass and fail, and the experiment runs end to end at tiny size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvtheory import digits, runner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def splits():
    return digits.load(0)


def test_splits_are_fixed_by_the_seed_and_disjoint(splits):
    again, other = digits.load(0), digits.load(1)
    assert all(np.array_equal(splits[k].digits, again[k].digits) for k in splits)
    assert not np.array_equal(splits["train"].digits, other["train"].digits)
    sizes = [len(splits[k].y) for k in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes[0] > sizes[1] > 0
    assert set(np.unique(splits["test"].y)) == {-1.0, 1.0}
    assert np.all((splits["train"].digits % 2 == 1) == (splits["train"].y > 0))


@pytest.mark.parametrize("rule", [digits.ColorRule(0.9, 0.1), digits.ColorRule(0.5, 0.5), digits.ColorRule(0.1, 0.9)])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_colour_proportions_hold_in_every_split(splits, rule, split):
    X, y, red = digits.colorize(splits[split], rule, seed=3)
    n_odd, n_even = (y > 0).sum(), (y < 0).sum()
    tol = lambda n: 4 * np.sqrt(0.25 / n)  # noqa: E731  (4 standard errors)
    assert abs(red[y > 0].mean() - rule.r_odd) < tol(n_odd)
    assert abs(red[y < 0].mean() - rule.r_even) < tol(n_even)
    # red images carry intensity only in the red channel, green ones only in the green channel
    assert np.all(X[red][..., 1] == 0) and np.all(X[~red][..., 0] == 0) and np.all(X[..., 2] == 0)
    assert X.shape == (len(y), 8, 8, 3)


def test_colouring_is_deterministic_per_stream(splits):
    a = digits.colorize(splits["test"], digits.ColorRule(0.9, 0.1), 5)[2]
    b = digits.colorize(splits["test"], digits.ColorRule(0.9, 0.1), 5)[2]
    c = digits.colorize(splits["test"], digits.ColorRule(0.9, 0.1), 6)[2]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_vit_evaluations_match_their_definitions(splits):
    """vit.evaluate, vit.output_cosine and vit.grid_eval (one compiled call each) equal the plain expressions."""
    import jax
    import jax.numpy as jnp

    from tvtheory import metrics, taskvec, vit
    X, y = (jnp.asarray(a[:64]) for a in digits.colorize(splits["test"], digits.ColorRule(0.9, 0.1), 0)[:2])
    graphdef, p0 = vit.init(jax.random.key(0))
    tau1, tau2 = (jax.tree.map(lambda x, k=k: 0.1 * jax.random.normal(jax.random.key(k), x.shape), p0)
                  for k in (1, 2))
    f = jax.jit(lambda t: vit.apply(graphdef, taskvec.add(p0, t), X))
    got = vit.evaluate(graphdef, p0, tau1, X, y)
    assert np.allclose(got["loss"], metrics.hinge(f(tau1), y), atol=1e-6)
    assert float(got["acc"]) == float(metrics.accuracy(f(tau1), y))
    assert np.isclose(vit.output_cosine(graphdef, p0, tau1, tau2, X), metrics.cosine(f(tau1), f(tau2)), atol=1e-6)
    assert np.isclose(vit.output_cosine(graphdef, p0, tau1, tau1, X), 1.0, atol=1e-6)
    coeffs = jnp.array([[1.0, 0.0], [0.5, -1.0], [2.0, 1.5]])
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), tau1, tau2)
    for chunk in (1, 2):                                   # one point at a time, or vmapped chunks (padded)
        loss, acc = vit.grid_eval(graphdef, p0, stacked, coeffs, X, y, chunk=chunk)
        for c, lo, ac in zip(coeffs, loss, acc):
            f_c = vit.apply(graphdef, taskvec.apply(p0, [tau1, tau2], c), X)
            assert np.isclose(lo, metrics.hinge(f_c, y), atol=1e-6) and np.isclose(ac, metrics.accuracy(f_c, y))


def test_ink_labels_split_the_images_by_their_median_ink_and_teach_no_parity(splits):
    labels = digits.pretrain_labels(splits["train"], "ink")
    assert set(np.unique(labels)) == {0, 1} and abs(labels.mean() - 0.5) < 0.01
    odd = splits["train"].y > 0
    assert abs(labels[odd].mean() - labels[~odd].mean()) < 0.35           # not a read-out of parity
    assert np.array_equal(digits.pretrain_labels(splits["train"], "digits"), splits["train"].digits)
    with pytest.raises(ValueError, match="pretrain_labels='x'"):
        digits.pretrain_labels(splits["train"], "x")


STAGES_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from tvtheory import digits, vit
train = digits.load(0)["train"]
X = jnp.asarray(digits.random_colors(train, 7)[:200])
labels = jnp.asarray(digits.pretrain_labels(train, "ink")[:200])
graphdef, p = vit.init(jax.random.key(0))
staged = vit.pretrain_stages(graphdef, p, jax.random.key(1), X, labels, stages=(0, 3, 7), batch=16, lr=1e-3)
whole = vit.pretrain_stages(graphdef, p, jax.random.key(1), X, labels, stages=(7,), batch=16, lr=1e-3)
same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
print(same(staged[0], p), same(staged[2], whole[0]), same(staged[1], staged[2]))
"""


def test_pretraining_in_stages_is_one_run():
    """The map's Psi_0 after s steps is the Psi_0 of an s-step run, bit for bit: stages continue the same batches and
    Adam. Compiled as the experiments compile (the suite's LLVM level 0 rounds a 1-step and a 7-step loop apart by
    ~1e-3 after Adam's normalisation, so this runs in a process of its own, without that flag)."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_backend_optimization_level")]
    env = {**os.environ, "XLA_FLAGS": " ".join(flags)}
    p = subprocess.run([sys.executable, "-c", STAGES_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["True", "True", "False"]      # stage 0 is Psi_0; stage 7 is the 7-step run; 3 != 7


def test_pretraining_stages_and_rates_share_one_compiled_program(splits):
    """The run advances in legs of the stages' greatest common divisor, the rate traced: the map's five stages and
    both settings' rates compile one pre-training program, and the fine-tune one program for both rates."""
    import jax
    import jax.numpy as jnp

    from tvtheory import vit
    X = jnp.asarray(digits.random_colors(splits["train"], 7)[:64])
    labels = jnp.asarray(digits.pretrain_labels(splits["train"], "ink")[:64])
    graphdef, p = vit.init(jax.random.key(0))
    before = vit._pretrain._cache_size()
    out = vit.pretrain_stages(graphdef, p, jax.random.key(1), X, labels, stages=(0, 4, 8, 12), batch=8, lr=1e-3)
    vit.pretrain_stages(graphdef, p, jax.random.key(1), X, labels, stages=(4, 12), batch=8, lr=3e-4)
    assert vit._pretrain._cache_size() == before + 1 and len(out) == 4
    y = jnp.where(labels % 2 == 0, 1.0, -1.0)
    before = vit._finetune._cache_size()
    a = vit.finetune(graphdef, p, jax.random.key(2), X, y, steps=3, batch=8, lr=1e-3)[0]
    b = vit.finetune(graphdef, p, jax.random.key(2), X, y, steps=3, batch=8, lr=3e-4)[0]
    assert vit._finetune._cache_size() == before + 1
    assert not all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


LAMS = np.round(np.arange(-2, 3.0001, 0.5), 2)


def fake_tables(rel_curves, ood_best=0.99, t1=0.95, seeds=(0, 1, 2), invalid=()):
    """Tables of one setting: relation -> (T1 accuracy curve, T2 accuracy curve) on both splits, own accuracy 0.95;
    an out-of-domain grid whose best combination reaches ``ood_best`` while T1 alone reaches ``t1``; every seed of
    the relations in ``invalid`` marked diverged."""
    rows, own = [], []
    for rel, (a1, a2) in rel_curves.items():
        for s in seeds:
            for sp in ("val", "test"):
                for task, a in (("T1", a1), ("T2", a2)):
                    rows.append(pd.DataFrame({"setting": "default", "split": sp, "relation": rel, "seed": s,
                                              "lam": LAMS, "task": task, "loss": 0.1, "acc": a(LAMS),
                                              "diverged": rel in invalid}))
            own.append({"setting": "default", "relation": rel, "seed": s, "alpha_hat": 0.0, "diverged": rel in invalid,
                        **{f"own_acc_{t}_{sp}": 0.95 for t in ("T1", "T2") for sp in ("val", "test")}})
    g = [(l1, l2) for l1 in (0.0, 1.0, 1.5) for l2 in (0.0, 1.0, -1.0)]
    acc = [ood_best if (a, b) == (1.5, -1.0) else t1 if b == 0 and a > 0 else 0.5 for a, b in g]
    ood = pd.concat([pd.DataFrame({"setting": "default", "seed": s, "lam1": [a for a, _ in g],
                                   "lam2": [b for _, b in g], "acc": acc, "diverged": "contradictory" in invalid})
                     for s in seeds])                 # the grid's sources are T1 and the contradictory T2
    ood["loss"], ood["val_loss"] = 1 - ood["acc"], 1 - ood["acc"]
    ood["val_acc"] = ood["acc"]
    return {"metrics": pd.concat(rows, ignore_index=True), "alpha_hat": pd.DataFrame(own), "ood": ood}


def fake(rel_curves, **kw):
    from tvtheory.experiments import digits as exp
    tables, cfg = fake_tables(rel_curves, **kw), exp.Config()
    recs = exp.digits_claims(tables, exp.choices(tables, cfg), cfg)
    return {r.id: r.verdict for r in recs}


def GOOD(x):
    return np.full(x.shape, 0.95)


def LOW(x):                   # forgotten on the negation side, learned elsewhere
    return np.where(x < 0, 0.3, 0.95)


def test_digits_claims_pass_and_fail():
    ideal = {"irrelevant": (GOOD, LOW), "aligned": (lambda x: np.where(x < 0, 0.6, 0.95), LOW),
             "contradictory": (lambda x: np.where(x > 0, 0.6, 0.95), LOW)}
    assert set(fake(ideal).values()) == {"pass"}
    broken = {"irrelevant": (GOOD, GOOD), "aligned": (GOOD, LOW), "contradictory": (GOOD, LOW)}
    v = fake(broken, ood_best=0.95)
    assert v == {"digits.irrelevant": "fail", "digits.aligned": "fail", "digits.contradictory": "fail",
                 "digits.ood": "fail"}
    assert set(fake(ideal, seeds=(0, 1)).values()) == {"inconclusive"}


@pytest.mark.filterwarnings("error::UserWarning")             # an empty legend was a warning
@pytest.mark.parametrize("lost", ["irrelevant", "contradictory"])
def test_a_relation_whose_every_seed_is_invalid_leaves_its_table_rows_empty_and_its_claims_undecided(tmp_path, lost):
    """Short fine-tunes can leave one relation's pairs all at chance while the others learned (the run goes on, with
    that relation's rows marked): Table 1 shows dashes for it, its claims are inconclusive, the others are judged, the
    figures are drawn. The out-of-domain grid's sources are T1 and the contradictory T2: without a valid
    contradictory pair, Table 2's searched row is empty and its map is not drawn."""
    from tvtheory import plots
    from tvtheory.experiments import digits as exp
    from tvtheory.experiments.ood import table2

    ideal = {"irrelevant": (GOOD, LOW), "aligned": (lambda x: np.where(x < 0, 0.6, 0.95), LOW),
             "contradictory": (lambda x: np.where(x > 0, 0.6, 0.95), LOW)}
    tables, cfg = fake_tables(ideal, invalid=(lost,)), exp.Config()
    ch = exp.choices(tables, cfg)
    md = exp.table1(tables, ch, cfg.settings()["default"])
    rows = [line for line in md.splitlines() if line.startswith(f"| {lost} |")]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert len(rows) == 2 and all(c[1].startswith("- (") and c[3:8] == ["-"] * 5 for c in cells), rows
    assert all(md.count(f"| {rel} |") == 2 for rel in exp.RELATIONS)
    verdicts = {r.id: r.verdict for r in exp.digits_claims(tables, ch, cfg)}
    assert verdicts[f"digits.{lost}"] == "inconclusive" and verdicts["digits.aligned"] == "pass"
    assert verdicts["digits.ood"] == ("inconclusive" if lost == "contradictory" else "pass")
    refs = pd.DataFrame({"seed": [0, 1, 2] * 3, "model": np.repeat(["direct", "T1", "T2"], 3), "loss": 0.1,
                         "acc": 0.9})
    searched = next(line for line in table2(tables["ood"], refs).splitlines() if line.startswith("| best searched"))
    assert ("| - | - (no valid seed) | - |" in searched) == (lost == "contradictory"), searched
    plots.digits(tables["metrics"], tables["ood"], tmp_path)
    assert (tmp_path / "figure1.png").stat().st_size > 0
    assert (tmp_path / "figure2.png").exists() == (lost != "contradictory")


@pytest.mark.slow
def test_digits_experiment_end_to_end_and_rerun_from_its_cache(tmp_path, command):
    """A run in a process of its own, then its rerun through the command's function in the test process."""
    args = ["n_seeds=2", "pretrain.steps=20", "map_steps=[0,20]", "finetune.steps=10", "lam_step=1.0",
            "ood_ranges=[[-1,2,1],[-1,1,1]]", "claims.chance_acc=0", f"cache.dir={tmp_path / 'cache'}"]
    p = subprocess.run([sys.executable, str(ROOT / "experiments" / "digits.py"), *args, f"out_dir={tmp_path / 'cold'}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "0 entries reused, 8 computed" in p.stderr, p.stderr[-3000:]
    # the rerun reads the cold run's 8 entries (models and evaluations, per seed and setting)
    p = command("digits", *args, f"out_dir={tmp_path / 'again'}", "figures=false")
    assert p.returncode == 0 and "8 entries reused, 0 computed" in p.stderr, p.stderr[-3000:]
    assert all((tmp_path / "cold" / f).read_bytes() == (tmp_path / "again" / f).read_bytes()
               for f in ("metrics.csv", "alpha_hat.csv", "ood.csv", "reference.csv", "map.csv"))
    out = tmp_path / "cold"
    df = pd.read_csv(out / "metrics.csv")
    assert {"setting", "split", "relation", "seed", "lam", "task", "loss", "acc", "diverged"} <= set(df.columns)
    assert len(df) == 2 * 2 * 3 * 2 * 6 * 2                   # settings x splits x relations x seeds x lams x tasks
    assert sorted(pd.read_csv(out / "map.csv")["pretrain_steps"].unique()) == [0, 20]
    ids = {r["id"] for r in json.loads((out / "claims.json").read_text())}
    assert ids == {"digits.relations", "digits.irrelevant", "digits.aligned", "digits.contradictory", "digits.ood",
                   "digits.shape_psi0.irrelevant", "digits.shape_psi0.aligned", "digits.shape_psi0.contradictory",
                   "digits.shape_psi0.ood"}
    assert "paper" in (out / "table1.md").read_text() and (out / "figure1.png").exists()
    assert (out / "alpha_hat_map.png").exists() and (out / "table1_shape_psi0.md").exists()


def test_table2_references_leave_out_the_seeds_the_grid_marks_invalid():
    """Table 2's direct / T1 / T2 rows (the reference table, no diverged column) use the seeds the setting's
    out-of-domain grid marks valid: an invalid seed's references, however extreme, do not move them, and the table
    says how many seeds stand behind it; the other setting's table is untouched."""
    exp, cfg, tables = runner.load(ROOT / "results" / "digits")
    ood = tables["ood"].copy()
    ood.loc[(ood["setting"] == "default") & (ood["seed"] == 1), "diverged"] = True
    extreme = tables["reference"].copy()
    extreme.loc[(extreme["setting"] == "default") & (extreme["seed"] == 1), ["loss", "acc"]] = [1e6, 0.0]
    out = [exp.analyse({**tables, "ood": ood, "reference": refs}, cfg) for refs in (tables["reference"], extreme)]
    assert out[1]["table2"] == out[0]["table2"] and "Over the 4 valid seeds of 5:" in out[0]["table2"]
    assert out[1]["table2_shape_psi0"] == (ROOT / "results" / "digits" / "table2_shape_psi0.md").read_text()


def test_a_direct_fine_tune_at_chance_leaves_its_seed_out_of_the_out_of_domain_grid_only():
    """Seed 1's fine-tune on T' itself learned nothing: Table 2 would compare the grid with a failed reference, so the
    seed leaves the out-of-domain grid (as in the ood experiment); its relation pairs still count. Seed 2's aligned
    T2 at chance leaves that pair only; seed 3 is non-finite."""
    from tvtheory.experiments import digits as exp

    own = np.full((4, 4), 0.95)                          # (seed, T1 + irrelevant, aligned, contradictory)
    own[2, 2] = 0.5
    ok, ok_ood = exp.validity(np.array([True, True, True, False]), own, np.array([0.9, 0.55, 0.9, 0.9]), 0.6)
    assert ok.tolist() == [[True] * 3, [True] * 3, [True, False, True], [False] * 3]
    assert ok_ood.tolist() == [True, False, True, False]
