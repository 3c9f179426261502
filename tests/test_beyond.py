"""The model options (config.Model.arch and its fields) and data options (token noise, non-orthogonal irrelevant
patterns, K classes, label noise) as every experiment uses them, and the beyond experiment: each option composes and
is checked with the field named; its network, samples, SGD and exact grid evaluation behave as promised; the
beyond.* rule passes, fails and is inconclusive where it should on hand-made tables; the experiment runs end to end
through the command line and its verdicts recompute from its files."""

import dataclasses
import json
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from tvtheory import architectures as ar
from tvtheory import cli, data, data_options, experiments, metrics, model, runner, sweep, train
from tvtheory.config import Data, Model, Train
from tvtheory.experiments import beyond

ROOT = Path(__file__).resolve().parent.parent


def typed(name, overrides=()):
    cli.register(name)
    with initialize_config_module("tvtheory.conf", version_base="1.3"):
        return runner.typed(experiments.get(name), compose(name, overrides=list(overrides)))


# ------------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("override, expect", [
    ("model=multihead", {"model.arch": "multihead", "model.heads": 2}),
    ("model=two_layer", {"model.arch": "two_layer"}),
    ("model=mlp", {"model.arch": "mlp"}),
    ("model=cnn", {"model.arch": "cnn", "model.width": 3}),
    ("model=gnn", {"model.arch": "gnn", "model.rounds": 1, "model.radius": 1}),
    ("model=gnn2", {"model.arch": "gnn", "model.rounds": 2}),
    ("data=noise", {"data.sigma": 0.2}),
    ("data=random_unit", {"data.irrelevant": "random_unit"}),
    ("data=correlated", {"data.irrelevant": "correlated", "data.rho": 0.3}),
    ("data=multiclass", {"data.classes": 4}),
    ("data=label_noise", {"data.label_noise": 0.1}),
    ("data=paper", {"data.classes": 2, "data.sigma": 0.0}),
])
def test_every_option_composes(override, expect):
    c = typed("arithmetic", [override])
    for path, value in expect.items():
        block, f = path.split(".")
        assert getattr(getattr(c, block), f) == value, path


def test_options_combine_and_serve_every_synthetic_experiment():
    c = typed("arithmetic", ["model=cnn", "data=label_noise"])
    assert (c.model.arch, c.data.label_noise) == ("cnn", 0.1)
    for name in ("assumptions", "corollaries", "ood", "scaling", "beyond"):
        assert typed(name, ["data=random_unit"]).data.irrelevant == "random_unit", name


@pytest.mark.parametrize("name, overrides, message", [
    ("arithmetic", ["model.arch=vit"], "model.arch='vit': must be one of"),
    ("arithmetic", ["model=multihead", "model.heads=3"], "model.heads=3: must divide m=256"),
    ("arithmetic", ["model=cnn", "model.width=30"], "model.width=30: must be <= data.P=20"),
    ("arithmetic", ["model=gnn", "model.rounds=3"], "model.rounds=3"),
    ("arithmetic", ["model.radius=-1"], "model.radius=-1"),
    ("arithmetic", ["model=four", "model.arch=cnn"], "model.form='four': the four-matrix form exists for "
                                                     "arch='paper' only"),
    ("arithmetic", ["data.irrelevant=orthogonal"], "data.irrelevant='orthogonal': must be one of"),
    ("arithmetic", ["data.rho=0.5"], "data.rho=0.5: applies to irrelevant='correlated' only"),
    ("arithmetic", ["data=correlated", "data.rho=1.0"], "data.rho=1.0"),
    ("arithmetic", ["data.classes=1"], "data.classes=1"),
    ("arithmetic", ["data.classes=3"], "model.m=256: must be divisible by data.classes=3"),
    ("arithmetic", ["data.classes=16"], "data.d=32: must be >= 33: 32 task directions"),
    ("arithmetic", ["data=multiclass", "model=pretrained"], "model.pretrain_tasks=4: pre-training is defined for "
                                                           "binary tasks only"),
    ("arithmetic", ["data.label_noise=0.5"], "data.label_noise=0.5"),
    ("ood", ["data=multiclass", "data.d=12", "model.m=32"], "data.classes=4: Theorem 3's target is defined for "
                                                            "binary tasks only"),
    ("beyond", ["beyond.models=[merged,bogus]"], "beyond.models[1]='bogus': no conf/model/bogus.yaml (options: cnn,"),
    ("beyond", ["beyond.datas=[paper,nosie]"], "beyond.datas[1]='nosie': no conf/data/nosie.yaml"),
    ("beyond", ["beyond.datas=[paper]"], "beyond.datas=['paper']: needs the reference and at least one option"),
    ("beyond", ["beyond.models=[merged,cnn,cnn]"], "beyond.models=['merged', 'cnn', 'cnn']: must not repeat"),
    ("beyond", ["beyond.sigmas=[0.0]"], "beyond.sigmas[0]=0.0: is the reference's own value"),
    ("beyond", ["beyond.sigmas=[-0.1]"], "beyond.sigmas[0]=-0.1: data.sigma=-0.1"),
    ("beyond", ["beyond.rhos=[1.5]"], "beyond.rhos[0]=1.5: data.rho=1.5"),
    ("beyond", ["beyond.heads=[3]"], "beyond.heads[0]=3: model.heads=3: must divide m=128"),
    ("beyond", ["beyond.classes=[3]"], "beyond.classes[0]=3: model.m=128: must be divisible by data.classes=3"),
    ("beyond", ["data.d=8"], "beyond.datas[4]='multiclass' (conf/data/multiclass.yaml): data.d=8: must be >= 9"),
    ("beyond", ["model.m=33"], "beyond.models[1]='multihead' (conf/model/multihead.yaml): model.heads=2: must "
                               "divide m=33"),
    ("beyond", ["model.m=30"], "beyond.datas[4]='multiclass' (conf/data/multiclass.yaml): model.m=30: must be "
                               "divisible by data.classes=4"),
    ("beyond", ["beyond.max_lost=9"], "beyond.max_lost=9"),
])
def test_bad_values_name_the_field_in_one_line(name, overrides, message):
    with pytest.raises(ValueError) as e:
        typed(name, overrides)
    text = str(e.value)
    assert text.startswith(message) and "\n" not in text, text


def test_the_beyond_plan_dedupes_and_orders_its_cells():
    c = typed("beyond")
    cells = beyond.plan(c)
    matrix = [x.keys for x in cells if x.table == "metrics"]
    assert matrix[0] == ("merged", "paper") and len(matrix) == 6 + 5            # reference, models, data options
    assert ("cnn", "noise") not in matrix and ("cnn", "noise") in [x.keys for x in beyond.plan(
        dataclasses.replace(c, beyond=dataclasses.replace(c.beyond, cross=True))) if x.table == "metrics"]
    dose = [x for x in cells if x.table == "dose"]
    assert [x.keys for x in dose if x.reference] == [("sigma", 0.0), ("rho", 0.0), ("heads", 1.0), ("classes", 2.0)]
    firsts = [x for i, x in enumerate(dose) if i == 0 or dose[i - 1].keys[0] != x.keys[0]]
    assert all(x.reference for x in firsts) and len(firsts) == 4                  # each knob starts at the reference
    by_keys = {x.keys: x for x in cells}
    assert by_keys["heads", 2.0].model == by_keys["multihead", "paper"].model    # computed once
    assert by_keys["classes", 4.0].data == by_keys["merged", "multiclass"].data
    assert by_keys["rho", 0.1].data.irrelevant == "correlated" and by_keys["rho", 0.1].data.rho == 0.1
    unique = {(x.model, x.data) for x in cells}
    assert len(unique) < len(cells)
    assert beyond.estimate(c).seconds > 0


# ------------------------------------------------------------------------------------------------- the networks


D, M, P = 12, 32, 10
TASK = Data(d=D, P=P, n_rel=3, n_conf=1)
OPTIONS = {"paper": Model(m=M), "multihead": Model(m=M, arch="multihead"), "two_layer": Model(m=M, arch="two_layer"),
           "mlp": Model(m=M, arch="mlp"), "cnn": Model(m=M, arch="cnn"), "gnn": Model(m=M, arch="gnn"),
           "gnn2": Model(m=M, arch="gnn", rounds=2), "four": Model(m=M, form="four", sigma_w=0.1),
           "heads4": Model(m=M, arch="multihead", heads=4), "radius2": Model(m=M, arch="gnn", radius=2)}
key = partial(jax.random.key, impl="rbg")


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_model_option_has_its_network_and_outputs(name):
    net = OPTIONS[name]
    binary, four = ar.of(net), ar.of(net, 4)
    p = jax.eval_shape(lambda k: binary.init(k, D), key(0))
    X = jax.ShapeDtypeStruct((5, P, D), jnp.float32)
    assert jax.eval_shape(binary.apply, p, X).shape == (5,)
    assert jax.eval_shape(four.apply, p, X).shape == (5, 4)
    assert ar.of(net) is binary                                   # cached: the same functions for the same config
    if name == "paper":
        assert binary.apply is model.apply
        assert {k: v.shape for k, v in p.items()} == {"W": (D, D), "V": (M, D)}
    expected = {"multihead": {"W": (2, D, D), "V": (2, M // 2, D)}, "heads4": {"W": (4, D, D), "V": (4, M // 4, D)},
                "cnn": {"K": (3, M, D)}, "gnn2": {"V": (M, D), "U": (M, M)}, "mlp": {"V": (M, D)}}
    if name in expected:
        assert {k: v.shape for k, v in p.items()} == expected[name]


def test_the_paper_model_through_the_dispatch_is_model_init_bit_for_bit():
    k = key(3)
    a, b = jax.jit(lambda k: (ar.of(Model(m=M)).init(k, D), model.init(k, D, Model(m=M))))(k)
    assert all(np.array_equal(a[x], b[x]) for x in a)


def _params(net, seed, scale=0.3):
    shapes = jax.eval_shape(lambda k: ar.of(net).init(k, D), key(0))
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.normal(size=s.shape)).astype(np.float32) for k, s in shapes.items()}


def test_grid_evaluation_of_every_option_is_exact():
    """architectures.grid_eval (model.grid_eval, the attention reuse, the affine reuse, or one pass per point) against
    a forward pass per point, binary and 4-class, with and without token noise (which turns the distinct-token
    reduction off)."""
    coeffs = jnp.array([[0.0], [1.0], [-1.5], [2.5]])
    mus = data.pair_patterns(0.0, D)
    irr = data.irrelevant_patterns(mus)
    mus4 = data_options.class_patterns(4, D)
    irr4 = data.irrelevant_patterns(mus4)
    noisy = dataclasses.replace(TASK, sigma=0.1)
    cases = [(n, k, spec) for n in sorted(OPTIONS) for k in (2, 4) for spec in (TASK, noisy)
             if spec is TASK or n in ("paper", "cnn")]
    params = {n: (_params(OPTIONS[n], 1), jax.tree.map(lambda t: t[None], _params(OPTIONS[n], 2, 0.2)))
              for n in OPTIONS}

    @jax.jit
    def run(params):
        out = {}
        for n, k, spec in cases:
            if k == 2:
                X, y = data.sample(key(4), mus[0], irr, 40, spec)
                q = spec.max_distinct(irr.shape[0])
            else:
                s4 = dataclasses.replace(spec, classes=4)
                X, y = data_options.sample(key(5), mus4, irr4, 40, s4)
                q = s4.max_distinct(irr4.shape[0])
            base, taus = params[n]
            got = ar.grid_eval(OPTIONS[n], k, base, taus, coeffs, X, y, 2, q=q)
            ref = ar.grid_eval_direct(ar.of(OPTIONS[n], k).apply, base, taus, coeffs, X, y)
            out[n, k, spec.sigma] = (got, ref)
        return out

    for case, (got, ref) in run(params).items():
        np.testing.assert_allclose(np.asarray(got[0]), np.asarray(ref[0]), rtol=2e-5, atol=1e-6, err_msg=str(case))
        np.testing.assert_allclose(np.asarray(got[1]), np.asarray(ref[1]), err_msg=str(case))
        assert len(set(np.round(np.asarray(ref[0]), 4))) > 1, case                       # the points differ


def test_multiclass_sgd_objective_gradient_matches_central_differences():
    """The loss SGD follows for K outputs (Crammer-Singer through metrics.loss_and_accuracy), per architecture, in
    float64 against central differences along a random direction."""
    names = ("paper", "multihead", "cnn", "gnn2")
    mus4 = data_options.class_patterns(4, D)
    X32, y = data_options.sample_multiclass(key(6), mus4, data.irrelevant_patterns(mus4), 6, TASK)
    rng = np.random.default_rng(7)
    ps = {n: _params(OPTIONS[n], 8) for n in names}
    vs = {n: {k: rng.normal(size=x.shape) for k, x in p.items()} for n, p in ps.items()}
    h = 1e-6
    with jax.enable_x64(True):
        X = jnp.asarray(X32, jnp.float64)
        to64 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), t)  # noqa: E731

        @jax.jit
        def check(ps, vs):
            out = {}
            for n in names:
                apply = ar.of(OPTIONS[n], 4).apply
                loss = lambda q, apply=apply: metrics.loss_and_accuracy(apply(q, X), y)[0]  # noqa: E731
                g = jax.grad(loss)(ps[n])
                step = lambda s, n=n: jax.tree.map(lambda p, v: p + s * v, ps[n], vs[n])  # noqa: E731
                out[n] = (sum(jnp.vdot(g[k], vs[n][k]) for k in g), (loss(step(h)) - loss(step(-h))) / (2 * h))
            return out

        got = check(to64(ps), to64(vs))
    for n, (analytic, numeric) in got.items():
        assert abs(float(analytic)) > 1e-6, n
        assert float(analytic) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9), n


# --------------------------------------------------------------------------------------------------- the samples


def test_training_samples_carry_label_noise_and_test_samples_do_not():
    mus = data.pair_patterns(0.0, D)
    irr = data.irrelevant_patterns(mus)
    mus4 = data_options.class_patterns(4, D)
    irr4 = data.irrelevant_patterns(mus4)
    noisy, noisy4 = dataclasses.replace(TASK, label_noise=0.25), Data(d=D, P=P, n_rel=3, n_conf=1, classes=4,
                                                                     label_noise=0.25)

    @jax.jit
    def draw(k):
        n = 3000
        return (data.sample(k, mus[0], irr, n, TASK), data_options.sample(k, mus[0], irr, n, noisy),
                data_options.train_sample(k, mus[0], irr, n, TASK), data_options.train_sample(k, mus[0], irr, n, noisy),
                data_options.sample_flipped(k, mus[0], irr, n, TASK, 0.25),
                data_options.sample(k, mus4, irr4, n, noisy4), data_options.train_sample(k, mus4, irr4, n, noisy4))

    (X, y), (Xt, yt), (Xc, yc), (Xn, yn), (Xf, yf), (X4, y4), (X4n, y4n) = draw(key(9))
    for a, b in ((X, Xt), (X, Xc), (X, Xn), (y, yt), (y, yc), (yn, yf), (X4, X4n)):
        assert np.array_equal(a, b)                         # the same samples; only training labels flip
    assert abs(float(np.mean(np.asarray(yn) != np.asarray(y))) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 3000)
    assert abs(float(np.mean(np.asarray(y4n) != np.asarray(y4))) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 3000)
    assert y4.dtype == jnp.int32 and set(np.unique(np.asarray(y4))) == {0, 1, 2, 3}


def test_irrelevant_pattern_options_of_a_sweep():
    span = np.eye(D)[:2]
    setup = lambda **kw: sweep.Setup(Data(d=D, **kw), Model(m=M), Train())  # noqa: E731
    basis = sweep.irrelevant(0, setup(), span)
    assert np.array_equal(basis, np.eye(D, dtype=np.float32)[2:])
    for kind, rho in (("random_unit", 0.0), ("correlated", 0.0), ("correlated", 0.4)):
        V = sweep.irrelevant(0, setup(irrelevant=kind, rho=rho), span)
        assert V.shape == (D - 2, D)
        np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, atol=1e-5)
        assert np.array_equal(V, sweep.irrelevant(0, setup(irrelevant=kind, rho=rho), span))       # per run seed
        assert not np.array_equal(V, sweep.irrelevant(1, setup(irrelevant=kind, rho=rho), span))
        if kind == "correlated":
            np.testing.assert_allclose(V @ span[0], rho, atol=1e-5)              # v_j . mu_T1 = rho
            np.testing.assert_allclose(V @ span[1], 0.0, atol=1e-5)              # mu_T2 sees rho alpha
        else:
            assert np.abs(V @ span[0]).max() > 0.05                             # unconstrained overlap with mu
    four = sweep.irrelevant(0, setup(classes=4), np.eye(D)[:8])
    assert four.shape == (D - 8, D) and np.abs(four[:, :8]).max() == 0


def test_finetune_trains_every_option_as_architectures_finetune_does():
    """train.finetune (the sweeps' training) with a model option's network and a data option's training samples is
    architectures.finetune with that sampler, bit for bit (one SGD loop, train.sgd), and it learns."""
    spec = Train(eta=1.0, batch=32, steps=40, log_every=20)
    task4 = Data(d=D, P=P, n_rel=3, n_conf=1, classes=4, label_noise=0.1)
    mus4 = data_options.class_patterns(4, D)
    irr4 = data.irrelevant_patterns(mus4)
    nets = {n: OPTIONS[n] for n in ("paper", "cnn")}

    @jax.jit
    def both(k):
        out = {}
        for n, net in nets.items():
            f = ar.of(net, 4)
            p0 = f.init(jax.random.fold_in(k, 1), D)
            ours = train.finetune(p0, k, mus4, irr4, task4, spec, f.apply)
            theirs = ar.finetune(f.apply, p0, k, lambda kk, nn: data_options.train_sample(kk, mus4, irr4, nn, task4),
                                 spec)
            X, y = data_options.sample(jax.random.fold_in(k, 2), mus4, irr4, 500, task4)
            out[n] = (ours, theirs, metrics.evaluate_with(f.apply, ours.params, X, y)["acc"])
        return out

    for n, (ours, theirs, acc) in both(key(10)).items():
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            assert np.array_equal(a, b), n
        assert bool(ours.finite) and float(acc) > 0.5, (n, float(acc))          # chance is 0.25


# ---------------------------------------------------------------------------------------------- the beyond rule


@pytest.mark.parametrize("ref, other, max_lost, ok, lost, undecided, gained", [
    ({"thm1.aligned": "pass", "thm2.irrelevant": "fail"}, {"thm1.aligned": "pass", "thm2.irrelevant": "pass"}, 0,
     True, [], [], ["thm2.irrelevant"]),
    ({"thm1.aligned": "pass", "thm1.irrelevant": "pass"}, {"thm1.aligned": "fail", "thm1.irrelevant": "pass"}, 0,
     False, ["thm1.aligned"], [], []),
    ({"thm1.aligned": "pass", "thm1.irrelevant": "pass"}, {"thm1.aligned": "fail", "thm1.irrelevant": "pass"}, 1,
     True, ["thm1.aligned"], [], []),
    ({"thm1.aligned": "pass"}, {"thm1.aligned": "inconclusive"}, 0, None, [], ["thm1.aligned"], []),
    ({"thm1.aligned": "pass", "thm1.irrelevant": "pass"}, {"thm1.aligned": "inconclusive", "thm1.irrelevant": "fail"},
     1, None, ["thm1.irrelevant"], ["thm1.aligned"], []),
    ({"thm1.aligned": "inconclusive"}, {"thm1.aligned": "pass"}, 0, None, [], [], ["thm1.aligned"]),
])
def test_kept_rule_by_hand(ref, other, max_lost, ok, lost, undecided, gained):
    k = beyond.kept(ref, other, max_lost)
    assert (k["ok"], k["lost"], k["undecided"], k["gained"]) == (ok, lost, undecided, gained)


LAMS = np.round(np.arange(-2, 3.0001, 0.1), 2)
ALPHAS = (-0.5, 0.0, 0.5)


def ideal(alpha, lam, neg_damage=0.02, shift=0.0):
    """Curves shaped like the theory (as tests/test_claims.py's): T2 learned from 1 - alpha (+ shift), forgotten under
    negation unless aligned; T1 kept within eps + |lambda| / d, lost when aligned tasks are negated or contradictory
    ones added. ``neg_damage``: T1's loss per unit of |lambda| when an irrelevant task is negated."""
    thr = 1 - alpha + shift
    L2 = np.where(lam >= thr - 1e-9, 0.0, np.maximum(1.0 - lam * 0.9 / max(thr, 0.1), 0.0))
    L2 = np.where(lam < 0, 1.0 + 0.5 * np.abs(lam) if alpha <= 0 else 0.5 + 0.2 * np.abs(lam), L2)
    if alpha >= 0:
        L1 = np.where(lam < 0, (neg_damage if alpha == 0 else 0.3 * (1 + 3 * alpha)) * np.abs(lam), 0.0)
    else:
        L1 = np.where(lam > 0, 0.8 * lam * abs(alpha) * 2, 0.0)
    return L1, L2


def cell_rows(keys: dict, noise=0.002, **shape) -> pd.DataFrame:
    rows = []
    for a in ALPHAS:
        L1, L2 = ideal(a, LAMS, **shape)
        for s in range(3):
            for task, L in (("T1", L1), ("T2", L2)):
                loss = np.maximum(L + noise * (s - 1), 0.0)
                rows.append(pd.DataFrame({**keys, "alpha": a, "seed": s, "lam": LAMS, "task": task, "loss": loss,
                                          "acc": np.where(loss < 0.5, 1.0, 0.3), "diverged": False}))
    return pd.concat(rows, ignore_index=True)


def small_config():
    c = typed("beyond", ["beyond.models=[merged,mlp,cnn]", "beyond.datas=[paper,noise,label_noise]",
                         "beyond.sigmas=[0.2,0.4]", "beyond.rhos=[]", "beyond.heads=[]", "beyond.classes=[]",
                         "sweep.n_test=1000"])
    return c


def test_beyond_claims_pass_fail_and_stay_undecided_on_hand_made_tables():
    cfg = small_config()
    cells = {("merged", "paper"): {}, ("mlp", "paper"): {},                         # keeps every rule: pass
             ("cnn", "paper"): {"neg_damage": 0.2},                                  # T1 hurt by negation
             ("merged", "noise"): {"shift": 0.5},                                     # threshold moved
             ("merged", "label_noise"): {"noise": 0.1}}                               # seeds too spread to decide
    metrics_t = pd.concat([cell_rows({"model": m, "data": d}, **kw) for (m, d), kw in cells.items()],
                          ignore_index=True)
    dose = pd.concat([cell_rows({"knob": "sigma", "value": v}, **kw)
                      for v, kw in ((0.0, {}), (0.2, {"shift": 0.5}), (0.4, {"shift": 1.0}))], ignore_index=True)
    tables = {"metrics": metrics_t, "dose": dose, "diagnostics": pd.DataFrame()}
    a = beyond.analyse(tables, cfg)
    got = {r.id: r for r in beyond.claims(a, cfg)}
    assert list(got) == ["beyond.model.mlp", "beyond.model.cnn", "beyond.data.noise", "beyond.data.label_noise"]
    ref = a["matrix"].iloc[0]
    assert all(ref[c] == "pass" for c in beyond.RULES), ref
    assert got["beyond.model.mlp"].verdict == "pass" and got["beyond.model.mlp"].measured.startswith("7/7 kept")
    assert got["beyond.model.cnn"].verdict == "fail" and "lost thm2.irrelevant" in got["beyond.model.cnn"].measured
    assert got["beyond.data.noise"].verdict == "fail" and "thm1.threshold_curve" in got["beyond.data.noise"].measured
    assert got["beyond.data.label_noise"].verdict == "inconclusive"
    assert "thm1.threshold_curve: pass -> fail" in got["beyond.data.noise"].details
    brk = a["breaks"].set_index("knob")
    assert brk.loc["sigma", "breaks_at"] == 0.2 and brk.loc["sigma", "last_kept"] == 0.0
    assert "thm1.threshold_curve" in brk.loc["sigma", "lost_there"]
    assert "| `merged` | reference;" in a["matrix.md"]
    # A smoke-sized run decides nothing, whatever the tables say.
    smoke = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, n_test=200))
    assert {r.verdict for r in beyond.claims(beyond.analyse(tables, smoke), smoke)} == {"inconclusive"}


def test_a_cell_whose_every_seed_diverged_is_undecided_not_an_error():
    cfg = small_config()
    bad = cell_rows({"model": "cnn", "data": "paper"}).assign(diverged=True)
    metrics_t = pd.concat([cell_rows({"model": m, "data": d}) for m, d in (("merged", "paper"), ("mlp", "paper"),
                                                                            ("merged", "noise"),
                                                                            ("merged", "label_noise"))] + [bad],
                          ignore_index=True)
    dose = pd.concat([cell_rows({"knob": "sigma", "value": v}) for v in (0.0, 0.2, 0.4)], ignore_index=True)
    a = beyond.analyse({"metrics": metrics_t, "dose": dose, "diagnostics": pd.DataFrame()}, cfg)
    got = {r.id: r for r in beyond.claims(a, cfg)}
    assert got["beyond.model.cnn"].verdict == "inconclusive"
    assert np.isnan(a["breaks"].set_index("knob").loc["sigma", "breaks_at"])            # every dose keeps them


# ------------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_beyond_runs_end_to_end_and_its_claims_recompute(tmp_path, command):
    out = tmp_path / "beyond"
    p = command("beyond", "sweep=tiny", "train=tiny", "n_seeds=2", "data.d=12", "model.m=32",
                "beyond.models=[merged,mlp]", "beyond.datas=[paper,label_noise]", "beyond.sigmas=[0.1]",
                "beyond.rhos=[]", "beyond.heads=[]", "beyond.classes=[]", f"out_dir={out}",
                f"cache.dir={tmp_path / 'cache'}")
    assert p.returncode == 0, p.stderr[-3000:]
    for t in beyond.TABLES:
        assert len(pd.read_csv(out / f"{t}.csv")), t
    rows = pd.read_csv(out / "metrics.csv")
    assert set(zip(rows["model"], rows["data"])) == {("merged", "paper"), ("mlp", "paper"), ("merged", "label_noise")}
    assert len(rows) == 3 * 3 * 2 * 7 * 2                         # cells x alphas x seeds x lambdas x tasks
    dose = pd.read_csv(out / "dose.csv")
    assert sorted(dose["value"].unique()) == [0.0, 0.1] and set(dose["knob"]) == {"sigma"}
    for name in ("matrix.csv", "dose_response.csv", "breaks.csv", "matrix.md", "matrix.png", "dose_response.png"):
        assert (out / name).stat().st_size > 0, name
    before = json.loads((out / "claims.json").read_text())
    assert [r["id"] for r in before] == ["beyond.model.mlp", "beyond.data.label_noise"]
    assert all(r["verdict"] == "inconclusive" for r in before)               # tiny: nothing is decided
    (out / "claims.json").unlink()
    runner.recompute(out)                                     # what `python -m tvtheory.claims` runs
    again = json.loads((out / "claims.json").read_text())
    assert [(r["id"], r["verdict"], r["measured"]) for r in again] == [(r["id"], r["verdict"], r["measured"])
                                                                       for r in before]
