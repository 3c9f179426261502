"""Colored-Digits: the colouring holds its stated proportions in every split, splits are fixed by the seed, the
claims can pass and fail, and the experiment runs end to end at tiny size."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvtheory import claims, digits

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
    """vit.evaluate and vit.output_cosine (one compiled call each) equal the plain expressions."""
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


def fake(rel_curves, ood_best=0.99, t1=0.95):
    lams = np.round(np.arange(-2, 3.0001, 0.5), 2)
    rows = []
    for rel, (a1, a2) in rel_curves.items():
        for s in (0, 1):
            rows.append(pd.DataFrame({"relation": rel, "seed": s, "lam": lams, "task": "T1", "loss": 0.1,
                                      "acc": a1(lams)}))
            rows.append(pd.DataFrame({"relation": rel, "seed": s, "lam": lams, "task": "T2", "loss": 0.1,
                                      "acc": a2(lams)}))
    own = pd.DataFrame([{"relation": r, "seed": s, "own_acc_T1": 0.95, "own_acc_T2": 0.95}
                        for r in rel_curves for s in (0, 1)])
    ood = pd.DataFrame({"seed": 0, "lam1": [1.0, 1.5], "lam2": [0.0, -1.0], "loss": [0.2, 0.01],
                        "acc": [t1, ood_best], "diverged": False})
    refs = pd.DataFrame([{"seed": 0, "model": m, "loss": v, "acc": a} for m, v, a in
                         (("direct", 0.0, 1.0), ("T1", 0.2, t1), ("T2", 0.9, 0.6))])
    return {r["id"]: r["verdict"] for r in claims.digits_claims(pd.concat(rows), own, ood, refs, 0.05, 0.6)}


def GOOD(x):
    return np.full(x.shape, 0.95)


def LOW(x):                   # forgotten on the negation side, learned elsewhere
    return np.where(x < 0, 0.3, 0.95)


def test_digits_claims_pass_and_fail():
    ideal = {"irrelevant": (GOOD, LOW), "aligned": (lambda x: np.where(x < 0, 0.6, 0.95), LOW),
             "contradictory": (lambda x: np.where(x > 0, 0.6, 0.95), LOW)}
    assert set(fake(ideal).values()) == {"pass"}
    broken = {"irrelevant": (GOOD, GOOD), "aligned": (GOOD, LOW), "contradictory": (GOOD, LOW)}
    v = fake(broken, ood_best=0.9)
    assert v == {"digits.irrelevant": "fail", "digits.aligned": "fail", "digits.contradictory": "fail",
                 "digits.ood": "fail"}


def test_digits_experiment_end_to_end_and_rerun_from_its_cache(tmp_path):
    def run(out):
        p = subprocess.run([sys.executable, str(ROOT / "experiments" / "digits.py"), "n_seeds=2", "pretrain.steps=20",
                            "finetune.steps=10", "lam_step=1.0", "ood_ranges=[[-1,2,1],[-1,1,1]]", f"out_dir={out}",
                            f"cache.dir={tmp_path / 'cache'}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        return p.stderr
    assert "0 entries reused, 4 computed" in run(tmp_path)
    assert "4 entries reused, 0 computed" in run(tmp_path / "again")      # models and evaluations, per seed
    assert all((tmp_path / f).read_bytes() == (tmp_path / "again" / f).read_bytes()
               for f in ("metrics.csv", "alpha_hat.csv", "ood.csv", "reference.csv"))
    df = pd.read_csv(tmp_path / "metrics.csv")
    assert {"relation", "seed", "lam", "task", "loss", "acc"} <= set(df.columns)
    assert len(df) == 3 * 2 * 6 * 2
    ids = {r["id"] for r in json.loads((tmp_path / "claims.json").read_text())}
    assert ids == {"digits.irrelevant", "digits.aligned", "digits.contradictory", "digits.ood"}
    assert "paper" in (tmp_path / "table1.md").read_text() and (tmp_path / "figure1.png").exists()
