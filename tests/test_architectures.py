"""The architectures of tvtheory/architectures.py. Compilation dominates at these sizes, so each test compiles one
program (jit around both sides of a comparison), parameters for algebraic checks come from numpy (no PRNG program
per shape), the inits with fine-tunes and the gradient checks of all architectures are one program each (fixtures),
and keys use the "rbg" PRNG, whose programs compile ~3x faster than threefry's (nothing here depends on the PRNG)."""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvtheory import architectures as ar
from tvtheory import data, data_options, model, train
from tvtheory.config import Data, Train

key = partial(jax.random.key, impl="rbg")

D, M, P = 8, 32, 10
TASK = Data(d=D, P=P, n_rel=3, n_conf=1)
NAMES = sorted(ar.ARCHITECTURES)
N = 512             # every binary sample set of this file has this size: the sampler compiles once
MUS = data.pair_patterns(0.0, D)
IRR = data.irrelevant_patterns(MUS)
draw = jax.jit(lambda key: data.sample(key, MUS[0], IRR, N, TASK))


def inputs(n=6, seed=0, noise=0.0):
    X, y = draw(key(seed))
    X, y = X[:n], y[:n]
    return X + noise * np.random.default_rng(seed).normal(size=X.shape).astype(np.float32), y


def random_params(name, seed=0, scale=0.3, **opts):
    """Parameters of ``name``'s structure (from its init, traced, not run) with N(0, scale^2) entries."""
    shapes = jax.eval_shape(lambda k: ar.get(name).init(k, D, M, **opts), key(0))
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.normal(size=s.shape)).astype(np.float32) for k, s in shapes.items()}


def fixed_set_sampler(X_tr, y_tr):
    """Minibatches of a fixed training set, the block chosen by the step key's bits: SGD without a PRNG draw per
    step, whose compilation would cost more than the rest of a tiny fine-tune's."""
    def sampler(k, n):
        b = (jax.random.key_data(k).ravel()[-1] % (X_tr.shape[0] // n)).astype(jnp.int32)
        return jax.lax.dynamic_slice_in_dim(X_tr, b * n, n), jax.lax.dynamic_slice_in_dim(y_tr, b * n, n)
    return sampler


# -------------------------------------------------------------------------------------------------- shapes, registry


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_and_pure_dict_params(name):
    init, apply = ar.ARCHITECTURES[name]
    p = jax.eval_shape(lambda k: init(k, D, M), key(0))
    assert isinstance(p, dict) and "a" not in p                   # the fixed readout is never a parameter
    X = jax.ShapeDtypeStruct((5, P, D), jnp.float32)
    assert jax.eval_shape(apply, p, X).shape == (5,)
    assert jax.eval_shape(partial(apply, n_classes=4), p, X).shape == (5, 4)
    assert jax.eval_shape(apply, p, jax.ShapeDtypeStruct((P, D), jnp.float32)).shape == ()
    assert name in ar.LINEARITY and (ar.LINEARITY[name] == "preactivation") == (name in ar.PREACTIVATION)


def test_psi0_defaults(psi0):
    assert {k: v.shape for k, v in psi0["multihead"].items()} == {"W": (2, D, D), "V": (2, M // 2, D)}
    assert psi0["cnn"]["K"].shape == (3, M, D) and set(psi0["gnn2"]) == {"V", "U"}
    for name in NAMES:
        for leaf, x in psi0[name].items():
            std = float(jnp.std(x))
            if leaf.startswith("W"):
                assert std == 0, (name, leaf)                    # W_0 = 0, the paper's default
            elif leaf == "U":
                assert std == pytest.approx(M**-0.5, rel=0.2), name
            else:
                assert std == pytest.approx(0.01, rel=0.2), (name, leaf)


def test_init_and_finetune_are_deterministic(trained):
    first, again = trained
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), first, again))


@pytest.mark.parametrize("kw, field", [
    (("multihead", {"heads": 3}), "heads=3"), (("cnn", {"width": 0}), "width=0"),
    (("gnn", {"rounds": 3}), "rounds=3"), (("two_layer", {"sigma_u": -1.0}), "sigma_u=-1.0"),
    (("mlp", {"sigma_0": -0.1}), "sigma_0=-0.1")])
def test_bad_init_arguments(kw, field):
    name, opts = kw
    with pytest.raises(ValueError, match=field):
        jax.eval_shape(lambda k: ar.get(name).init(k, D, M, **opts), key(0))


def test_bad_apply_arguments():
    X = jax.ShapeDtypeStruct((2, P, D), jnp.float32)
    with pytest.raises(ValueError, match="n_classes=3"):
        jax.eval_shape(partial(ar.apply_mlp, n_classes=3), random_params("mlp"), X)    # 3 does not divide m
    with pytest.raises(ValueError, match="width=11"):
        jax.eval_shape(ar.apply_cnn, random_params("cnn", width=11), X)
    with pytest.raises(ValueError, match="graph='star'"):
        jax.eval_shape(partial(ar.apply_gnn, graph="star"), random_params("gnn"), X)
    with pytest.raises(ValueError, match="rounds=2"):
        jax.eval_shape(ar.pre_gnn, random_params("gnn2"), X)
    with pytest.raises(ValueError, match="arch='vit'"):
        ar.get("vit")


# ---------------------------------------------------------------------------------------- definitions by reduction


def close(a, b, rtol=1e-5, atol=1e-7):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def test_paper_entry_is_model_apply_and_one_head_is_the_paper():
    X, _ = inputs()
    p = random_params("multihead", heads=1)
    paper = {"W": p["W"][0], "V": p["V"][0]}
    ours, heads1, theirs = jax.jit(lambda: (ar.apply_paper(paper, X), ar.apply_multihead(p, X),
                                            model.apply(paper, X)))()
    assert np.array_equal(ours, theirs)
    close(heads1, theirs)


def test_heads_are_concatenated_hidden_blocks():
    # With head 2's V zero its m/2 units are ReLU(0) = 0, so f is head 1 alone: hidden units 0 .. m/2 - 1, which
    # readout(m) reads with +1/sqrt(m) (its first half).
    X, _ = inputs()
    p = random_params("multihead")
    p["V"][1] = 0.0
    W, V, Xn = np.asarray(p["W"][0]), np.asarray(p["V"][0]), np.asarray(X)
    S = np.einsum("nsd,nld->nls", Xn, Xn @ W.T)
    A = np.exp(S - S.max(-1, keepdims=True))
    T = (A / A.sum(-1, keepdims=True)) @ Xn
    expected = np.maximum(T @ V.T, 0).mean(-2).sum(-1) / np.sqrt(M)
    close(jax.jit(ar.apply_multihead)(p, X), expected)


def test_mlp_is_the_paper_model_with_uniform_attention():
    X, _ = inputs()
    p = random_params("mlp")
    close(*jax.jit(lambda: (ar.apply_mlp(p, X), model.apply({"W": jnp.zeros((D, D)), "V": p["V"]}, X)))())


def test_two_layer_with_zero_projection_is_the_paper_block_two():
    X, _ = inputs()
    p = random_params("two_layer")
    p["U"][:] = 0.0
    close(*jax.jit(lambda: (ar.apply_two_layer(p, X), model.apply({"W": p["W2"], "V": p["V2"]}, X)))())


def test_cnn_windows_by_hand():
    X, _ = inputs(n=2)
    p, p1 = random_params("cnn", width=3), random_params("cnn", width=1)
    K, Xn, a = np.asarray(p["K"]), np.asarray(X), np.asarray(model.readout(M))
    f = np.zeros(2)
    for n in range(2):
        for pos in range(P):
            g = sum(K[j] @ Xn[n, (pos + j - 1) % P] for j in range(3))      # offsets -1, 0, +1 around pos
            f[n] += a @ np.maximum(g, 0) / P
    per_token = np.maximum(Xn @ np.asarray(p1["K"][0]).T, 0).mean(-2) @ a      # width 1: pooled after the ReLU
    got, got1 = jax.jit(lambda: (ar.apply_cnn(p, X), ar.apply_cnn(p1, X)))()
    close(got, f)
    close(got1, per_token)


def test_gnn_ring_is_a_tied_cnn_and_the_complete_graph_is_the_mlp():
    X, _ = inputs()
    p = random_params("gnn")
    tied = {"K": jnp.stack([p["V"] / 3] * 3)}
    ring, conv, complete, mlp = jax.jit(lambda: (ar.apply_gnn(p, X), ar.apply_cnn(tied, X),
                                                 ar.apply_gnn(p, X, radius=P), ar.apply_mlp(p, X)))()
    close(ring, conv)
    close(complete, mlp)


def test_aggregation_matrices():
    A = ar.aggregation(6, "ring", 1)
    assert A[0].tolist() == pytest.approx([1 / 3, 1 / 3, 0, 0, 0, 1 / 3])
    E = ar.aggregation(12, "er", p_edge=0.3, graph_seed=5)
    adj = E > 0
    assert np.array_equal(adj, adj.T) and np.all(np.diag(adj)) and np.allclose(E.sum(1), 1)
    assert 0 < (adj.sum() - 12) / (12 * 11) < 0.6                   # some edges, not all
    assert np.array_equal(E, ar.aggregation(12, "er", p_edge=0.3, graph_seed=5))
    assert not np.array_equal(E, ar.aggregation(12, "er", p_edge=0.3, graph_seed=6))


def test_multiclass_outputs_are_block_models():
    # Output k of the K-ary head is the scalar model of width m/K on hidden block k.
    X, _ = inputs()
    p = random_params("paper")
    blocks = [{"W": p["W"], "V": p["V"][k * 8:(k + 1) * 8]} for k in range(4)]
    F, singles = jax.jit(lambda: (ar.apply_paper(p, X, n_classes=4), [model.apply(b, X) for b in blocks]))()
    close(F, np.stack(singles, axis=1))
    A = np.asarray(ar.readout_matrix(8, 2))
    assert A.tolist() == [[0.5, 0.5, -0.5, -0.5, 0, 0, 0, 0], [0, 0, 0, 0, 0.5, 0.5, -0.5, -0.5]]


def test_multiclass_hinge_and_accuracy_by_hand():
    F = jnp.array([[2.0, 0.5, 1.5], [0.0, 0.0, 0.0], [-1.0, 3.0, 0.0]])
    y = jnp.array([0, 1, 1])
    # margins f_y - max_other: 0.5, 0 (a tie), 3  -> losses 0.5, 1, 0; the tie counts as wrong
    assert float(ar.multiclass_hinge(F, y)) == pytest.approx(0.5)
    assert float(ar.multiclass_accuracy(F, y)) == pytest.approx(2 / 3)
    lo, ac = ar.loss_and_accuracy(jnp.array([2.0, -0.5]), jnp.array([1.0, 1.0]))
    assert (float(lo), float(ac)) == pytest.approx((0.75, 0.5))


@pytest.mark.parametrize("name", sorted(ar.PREACTIVATION))
def test_preactivations_are_linear_in_the_weights(name):
    X, _ = inputs(noise=0.1)
    pre = ar.PREACTIVATION[name]
    p, q = random_params(name, 1), random_params(name, 2)
    mix = jax.tree.map(lambda a, b: 2.0 * a - 0.5 * b, p, q)
    g_mix, g_p, g_q, f = jax.jit(lambda: (pre(mix, X), pre(p, X), pre(q, X), ar.get(name).apply(p, X)))()
    close(g_mix, 2.0 * g_p - 0.5 * g_q, atol=1e-6)
    close(ar.head(g_p), f)


# -------------------------------------------------------------------------------------------------------- gradients


@pytest.fixture(scope="module")
def gradient_pairs():
    """Per architecture and leaf: <grad L, v> and the central difference (L(p + h v) - L(p - h v)) / 2h in float64,
    for a random direction v and L smooth in the outputs (the multi-class head only changes the fixed readout)."""
    X32, _ = inputs(n=4, noise=0.1)
    ps = {name: random_params(name) for name in NAMES}          # W nonzero too, so that attention matters
    rng = np.random.default_rng(9)
    vs = {name: {k: rng.normal(size=x.shape) for k, x in p.items()} for name, p in ps.items()}
    r, h = rng.normal(size=4), 1e-6
    with jax.enable_x64(True):
        X = jnp.asarray(X32, jnp.float64)
        to64 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), t)  # noqa: E731

        @jax.jit
        def check(ps, vs):
            out = {}
            for name in NAMES:
                apply = ar.get(name).apply

                def loss(q):
                    return jnp.sum(r * apply(q, X))

                q, leaves = ps[name], sorted(ps[name])
                # The 2 x leaves perturbed parameter sets as one batch: one vmapped forward pass in the program.
                steps = [{**q, leaf: q[leaf] + s * vs[name][leaf]} for leaf in leaves for s in (h, -h)]
                L = jax.vmap(loss)(jax.tree.map(lambda *t: jnp.stack(t), *steps)).reshape(-1, 2)
                g = jax.grad(loss)(q)
                for i, leaf in enumerate(leaves):
                    out[name, leaf] = (jnp.vdot(g[leaf], vs[name][leaf]), (L[i, 0] - L[i, 1]) / (2 * h))
            return out

        return {k: (float(a), float(b)) for k, (a, b) in check(to64(ps), to64(vs)).items()}


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_central_differences_in_float64(name, gradient_pairs):
    pairs = {leaf: ab for (n, leaf), ab in gradient_pairs.items() if n == name}
    assert set(pairs) == set(random_params(name))
    for leaf, (analytic, numeric) in pairs.items():
        assert abs(analytic) > 1e-6, leaf                  # a zero gradient would pass any tolerance
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9), leaf


# ------------------------------------------------------------------------------------------------------ fine-tuning


SPEC = Train(eta=1.0, batch=32, steps=100, log_every=100)


@pytest.fixture(scope="module")
def trained():
    """Every architecture's Psi_0 from its own init, fine-tuned by SGD on the hinge loss (one program), with its test
    loss and accuracy before and after."""
    X_tr, y_tr = draw(key(1))
    X, y = draw(key(2))

    @jax.jit
    def run(k):
        psi0, out = {}, {}
        for name in NAMES:
            init, apply = ar.get(name)
            psi0[name] = init(jax.random.fold_in(k, 0), D, M)
            res = ar.finetune(apply, psi0[name], k, fixed_set_sampler(X_tr, y_tr), SPEC)
            out[name] = (res.finite, ar.loss_and_accuracy(apply(psi0[name], X), y),
                         ar.loss_and_accuracy(apply(res.params, X), y))
        return psi0, out
    first, again = jax.device_get(run(key(3))), jax.device_get(run(key(3)))
    return first, again


@pytest.fixture(scope="module")
def psi0(trained):
    return jax.tree.map(jnp.asarray, trained[0][0])


@pytest.mark.parametrize("name", NAMES)
def test_sgd_learns_the_task(name, trained):
    finite, (loss0, _), (loss, acc) = trained[0][1][name]
    assert finite and acc > 0.9 and loss < 0.5 * loss0, (acc, loss, loss0)


def test_sgd_learns_a_multiclass_task(psi0):
    K = 4
    mus = data_options.class_patterns(K, D)
    irr = data.irrelevant_patterns(mus)
    apply = partial(ar.apply_paper, n_classes=K)

    @jax.jit
    def run(p0, k):
        X, y = data_options.sample_multiclass(k, mus, irr, 2 * N, TASK)
        spec = dataclasses.replace(SPEC, steps=150, log_every=150)
        res = ar.finetune(apply, p0, k, fixed_set_sampler(X[:N], y[:N]), spec)
        return ar.loss_and_accuracy(apply(p0, X[N:]), y[N:]), ar.loss_and_accuracy(apply(res.params, X[N:]), y[N:])

    (loss0, acc0), (loss, acc) = run(psi0["paper"], key(1))
    assert float(acc0) < 0.5 and float(acc) > 0.9 and float(loss) < 0.5, (float(acc0), float(acc), float(loss))


def test_finetune_of_the_paper_model_is_train_finetune(psi0):
    # The fixed-training-set path: its draw (streams.TRAIN_SET), its minibatches and SGD, bit for bit.
    spec = Train(eta=1.0, batch=16, steps=12, log_every=4, n_train=48)

    @jax.jit
    def both(p0, k):
        ours = ar.finetune(model.apply, p0, k, lambda kk, n: data.sample(kk, MUS[0], IRR, n, TASK), spec)
        return ours, train.finetune(p0, k, MUS[0], IRR, TASK, spec)

    ours, theirs = both(psi0["paper"], key(3))
    assert float(ours.curve_loss[0]) > 0 and not np.array_equal(ours.params["V"], psi0["paper"]["V"])
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert np.array_equal(a, b)


# --------------------------------------------------------------------------------------------------- grid evaluation


COEFFS = jnp.array([[0.0, 0.0], [1.0, -0.5], [-1.0, 2.0], [0.5, 0.5], [2.0, 1.0]])


def stacked_taus(name, K=2):
    base = random_params(name, 0)
    return base, jax.tree.map(lambda *t: jnp.stack(t), *[random_params(name, 10 + k) for k in range(K)])


def test_grid_eval_direct_equals_a_loop_over_points():
    base, taus = stacked_taus("gnn2")                     # not affine in the coefficients
    X, y = inputs(n=40, noise=0.05)
    one = jax.jit(lambda c: ar.apply_gnn(jax.tree.map(lambda b, t: b + c[0] * t[0] + c[1] * t[1], base, taus), X))
    loss, acc = ar.grid_eval_direct(ar.apply_gnn, base, taus, COEFFS, X, y, 2)
    for g, c in enumerate(COEFFS):
        f = np.asarray(one(c))
        assert float(loss[g]) == pytest.approx(np.mean(np.maximum(1 - y * f, 0)), rel=1e-5, abs=1e-7)
        assert float(acc[g]) == pytest.approx(np.mean(y * f > 0))
    assert len(set(np.round(np.asarray(loss), 4))) == len(COEFFS)       # the points differ


def test_grid_eval_direct_agrees_with_the_project_evaluator():
    base, taus = stacked_taus("paper")
    X, y = inputs(n=40)
    ours, theirs = jax.jit(lambda: (ar.grid_eval_direct(model.apply, base, taus, COEFFS, X, y),
                                    model.grid_eval(base, taus, COEFFS, X, y)))()
    close(ours[0], theirs[0], rtol=1e-4, atol=1e-6)
    close(ours[1], theirs[1])


@pytest.mark.parametrize("name", sorted(ar.PREACTIVATION))
def test_grid_eval_affine_equals_direct(name):
    base, taus = stacked_taus(name)
    X, y = inputs(n=40, noise=0.05)
    yk = jnp.arange(40) % 4                                 # the multi-class loss goes through the same path
    pre, apply = ar.PREACTIVATION[name], ar.get(name).apply

    @jax.jit
    def both():
        return (ar.grid_eval_affine(pre, base, taus, COEFFS, X, y, 2),
                ar.grid_eval_direct(apply, base, taus, COEFFS, X, y),
                ar.grid_eval_affine(pre, base, taus, COEFFS, X, yk, n_classes=4),
                ar.grid_eval_direct(partial(apply, n_classes=4), base, taus, COEFFS, X, yk))

    aff, direct, aff_k, direct_k = both()
    close(aff, direct, rtol=1e-4, atol=1e-6)
    close(aff_k, direct_k, rtol=1e-4, atol=1e-6)
