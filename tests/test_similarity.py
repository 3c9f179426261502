from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from tvtheory import model, similarity as sim, taskvec

seeds = st.integers(0, 2**31 - 1)


# ------------------------------------------------------------------------------------ hand-made models and trees
def linear_apply(p, X):
    """f(X) = X w: linear in the parameters, so negating w negates the output."""
    return X @ p["w"]


def given_features(p, X):
    """Features that ignore X (only its length matters): lets a test choose the feature matrices directly."""
    return p["F"]


def linear_loss(p, batch):
    """Gradient -batch: a batch is a direction the test chooses."""
    return -jnp.sum(p["w"] * batch)


class MLP(nnx.Module):
    """A plain Flax NNX MLP, not this project's model: d -> h (ReLU) -> 1."""

    def __init__(self, d: int, h: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(d, h, rngs=rngs)
        self.out = nnx.Linear(h, 1, rngs=rngs)

    def features(self, X):
        return jax.nn.relu(self.hidden(X))

    def __call__(self, X):
        return self.out(self.features(X))[:, 0]


GRAPH, STATE = nnx.split(MLP(6, 16, rngs=nnx.Rngs(0)))
MLP_PARAMS = nnx.to_pure_dict(STATE)


def mlp_apply(p, X):
    return nnx.merge(GRAPH, p)(X)


def mlp_features(p, X):
    return nnx.merge(GRAPH, p).features(X)


def mlp_loss(p, batch):
    X, y = batch
    return jnp.mean(jax.nn.relu(1.0 - y * mlp_apply(p, X)))


def mlp_params(seed):
    return nnx.to_pure_dict(nnx.split(MLP(6, 16, rngs=nnx.Rngs(seed)))[1])


# ------------------------------------------------------------------------------------------------- param_cosine
def test_param_cosine_identical_opposite_orthogonal():
    t = {"W": jnp.array([[1.0, 2.0], [0.0, -1.0]]), "V": jnp.array([3.0])}
    orth = {"W": jnp.array([[2.0, -1.0], [0.0, 0.0]]), "V": jnp.array([0.0])}       # <t, orth> = 2 - 2 = 0
    assert float(sim.param_cosine(t, t)) == pytest.approx(1.0, abs=1e-6)
    assert float(sim.param_cosine(t, taskvec.negate(t))) == pytest.approx(-1.0, abs=1e-6)
    assert float(sim.param_cosine(t, orth)) == pytest.approx(0.0, abs=1e-7)


# ------------------------------------------------------------------------------------------------ output_cosine
def test_output_cosine_hand_computed_and_budget():
    X = jnp.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    p1, p2 = {"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([1.0, 1.0])}
    # f1 = (1, 0), f2 = (1, 1) on the first two rows: cos = 1 / sqrt(2); all three: f1 = (1, 0, 5), f2 = (1, 1, 10).
    assert float(sim.output_cosine(linear_apply, p1, p2, X, n_probe=2)) == pytest.approx(2**-0.5, rel=1e-6)
    assert float(sim.output_cosine(linear_apply, p1, p2, X)) == pytest.approx(51 / (26**0.5 * 102**0.5), rel=1e-6)
    assert float(sim.output_cosine(linear_apply, p1, p1, X)) == pytest.approx(1.0, abs=1e-6)
    assert float(sim.output_cosine(linear_apply, p1, taskvec.negate(p1), X)) == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(ValueError, match="n_probe=4"):
        sim.output_cosine(linear_apply, p1, p2, X, n_probe=4)


def test_output_cosine_of_an_mlp_and_its_negated_last_layer_is_minus_one():
    neg = {**MLP_PARAMS, "out": jax.tree.map(lambda x: -x, MLP_PARAMS["out"])}
    X = jax.random.normal(jax.random.key(1), (40, 6))
    assert float(sim.output_cosine(mlp_apply, MLP_PARAMS, neg, X)) == pytest.approx(-1.0, abs=1e-5)
    assert float(sim.output_cosine(mlp_apply, MLP_PARAMS, MLP_PARAMS, X)) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------------ feature_correlation
def cka_reference(F1, F2):
    """Linear CKA by its Gram-matrix (HSIC) form, independent of the feature-space formula under test."""
    F1, F2 = np.asarray(F1, np.float64), np.asarray(F2, np.float64)
    n = F1.shape[0]
    H = np.eye(n) - 1.0 / n
    K, L = H @ F1 @ F1.T @ H, H @ F2 @ F2.T @ H
    return np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L))


def feats(F):
    return {"F": jnp.asarray(F, jnp.float32)}


@settings(max_examples=10)
@given(seeds, st.floats(0.1, 10.0))
def test_cka_matches_the_gram_form_and_is_invariant_to_rotation_and_isotropic_scaling(s, c):
    rng = np.random.default_rng(s)
    F1 = rng.normal(size=(30, 5))
    F2 = F1 @ rng.normal(size=(5, 4)) + 0.5 * rng.normal(size=(30, 4))
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    X = jnp.zeros((30, 1))
    cka = partial(sim.feature_correlation, given_features, X=X, method="cka")
    base = float(cka(feats(F1), feats(F2)))
    assert base == pytest.approx(cka_reference(F1, F2), rel=1e-4)
    assert float(cka(feats(F1 @ Q), feats(c * F2))) == pytest.approx(base, rel=1e-4)
    assert float(cka(feats(F1), feats(-F1))) == pytest.approx(1.0, rel=1e-5)     # blind to the relation's sign
    assert 0.0 <= base <= 1.0 + 1e-6


@settings(max_examples=10)
@given(seeds, st.floats(0.1, 10.0), st.floats(-5.0, 5.0))
def test_pearson_is_mean_per_unit_correlation_signed_and_skips_constant_units(s, c, shift):
    rng = np.random.default_rng(s)
    F1 = rng.normal(size=(25, 3))
    F2 = F1 + rng.normal(size=(25, 3))
    X = jnp.zeros((25, 1))
    pear = partial(sim.feature_correlation, given_features, X=X, method="pearson")
    want = np.mean([np.corrcoef(F1[:, i], F2[:, i])[0, 1] for i in range(3)])
    assert float(pear(feats(F1), feats(F2))) == pytest.approx(want, abs=1e-5)
    assert float(pear(feats(F1), feats(c * F2 + shift))) == pytest.approx(want, abs=1e-4)   # per-unit affine
    assert float(pear(feats(F1), feats(-F1))) == pytest.approx(-1.0, abs=1e-5)
    # A dead unit (constant in one model) carries no correlation and is left out, not counted as 0.
    dead = np.concatenate([F2, np.full((25, 1), 3.0)], axis=1)
    assert float(pear(feats(np.concatenate([F1, F1[:, :1]], axis=1)), feats(dead))) == pytest.approx(want, abs=1e-5)


def test_feature_correlation_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="method='svcca'"):
        sim.feature_correlation(given_features, feats(np.eye(3)), feats(np.eye(3)), jnp.zeros((3, 1)), "svcca")


def test_model_features_read_out_to_the_model_output_in_both_forms():
    k = jax.random.split(jax.random.key(1), 5)
    X = jax.random.normal(k[0], (12, 10, 8))
    merged = {"W": 0.3 * jax.random.normal(k[1], (8, 8)), "V": jax.random.normal(k[2], (16, 8))}
    four = {"W_Q": jax.random.normal(k[1], (8, 8)), "W_K": 0.3 * jax.random.normal(k[2], (8, 8)),
            "W_V": jax.random.normal(k[3], (8, 8)), "W_O": jax.random.normal(k[4], (16, 8))}

    @jax.jit
    def read(p):
        return sim.model_features(p, X, "pre"), sim.model_post_features(p, X), model.apply(p, X)

    for p in (merged, four):
        pre, post, f = read(p)
        assert pre.shape == post.shape == (12, 16)
        np.testing.assert_allclose(post @ model.readout(16), f, atol=1e-5)
        assert bool(jnp.all(post >= 0)) and bool(jnp.any(pre < 0))
    with pytest.raises(ValueError, match="which='mid'"):
        sim.model_features(merged, X, "mid")


# -------------------------------------------------------------------------------------- disentanglement_error
def test_disentanglement_error_hand_computed():
    base = {"w": jnp.zeros(2)}
    tau1, tau2 = {"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([0.0, 1.0])}
    # Each task's inputs live on its own coordinate: each task vector acts only on its own task, xi = 0.
    X1, X2 = jnp.array([[1.0, 0.0], [-2.0, 0.0]]), jnp.array([[0.0, 3.0]])
    for dist in ("sign", "abs"):
        assert float(sim.disentanglement_error(linear_apply, base, tau1, tau2, X1, X2, dist=dist)) == 0.0
    # T1's second input leaks onto T2's coordinate: alone f = 1, merged f = 1 - 2 = -1 (the prediction flips).
    X1 = jnp.array([[1.0, 0.0], [1.0, -2.0]])
    xi = partial(sim.disentanglement_error, linear_apply, base, tau1, tau2, X1, X2)
    assert float(xi(dist="sign")) == pytest.approx(0.5)
    assert float(xi(dist="abs")) == pytest.approx(1.0)            # mean(|1 - 1|, |1 - (-1)|) = 1
    assert float(xi(dist="sign", n_probe=1)) == 0.0
    # lam2 = 0.25: merged f = 1 - 0.5 > 0, no flip; traced coefficients vmap.
    grid = jax.vmap(lambda l2: xi(1.0, l2, dist="sign"))(jnp.array([0.25, 1.0]))
    np.testing.assert_allclose(grid, [0.0, 0.5])


# ------------------------------------------------------------------------------------------ gradient_alignment
def test_gradient_alignment_hand_computed():
    base = {"w": jnp.zeros(2)}
    b1 = jnp.array([[1.0, 0.0], [1.0, 2.0]])            # K = 2 batches; the gradient of batch b is -b
    b2 = jnp.array([[0.0, 1.0], [2.0, 1.0]])
    # Mean gradients -(1, 1) and -(1, 1): cosine 1. Per-batch cosines 0 and 4/5: mean 0.4.
    assert float(sim.gradient_alignment(linear_loss, base, b1, b2)) == pytest.approx(1.0, abs=1e-6)
    assert float(sim.gradient_alignment(linear_loss, base, b1, b2, "cosine")) == pytest.approx(0.4, abs=1e-6)
    assert float(sim.gradient_alignment(linear_loss, base, b1, b2, n_batches=1)) == pytest.approx(0.0, abs=1e-7)
    assert float(sim.gradient_alignment(linear_loss, base, b1, -b1)) == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(ValueError, match="average='median'"):
        sim.gradient_alignment(linear_loss, base, b1, b2, "median")


# ------------------------------------------------------------------------------------------- selection rules
LAMS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])


def test_choose_addition_takes_the_smallest_lambda_that_learns_t2_and_keeps_t1():
    loss2 = np.array([2.0, 1.5, 1.0, 0.5, 0.03, 0.0])
    loss1 = np.array([0.5, 0.2, 0.01, 0.02, 0.04, 0.3])
    c = sim.choose_addition(LAMS, loss1, loss2)                   # 1.0: T2 0.03 <= 0.05, T1 0.04 <= 0.01 + 0.05
    assert (float(c.lam), bool(c.found)) == (1.0, True)
    c = sim.choose_addition(LAMS, loss1, loss2, tol=0.02)         # T1 0.04 > 0.03 at 1.0, 0.3 at 1.5: none
    assert np.isnan(c.lam) and not c.found
    c = sim.choose_addition(LAMS, loss1, loss2, eps=0.6)          # T2 learned from 0.5 on
    assert float(c.lam) == 0.5
    # Leading axes broadcast: a second curve (contradictory: T1 lost wherever T2 is learned) gives none.
    both = sim.choose_addition(LAMS, np.stack([loss1, loss1 + np.where(loss2 < 0.1, 1.0, 0.0)]),
                               np.stack([loss2, loss2]))
    np.testing.assert_array_equal(both.found, [True, False])
    assert both.lam[0] == 1.0 and np.isnan(both.lam[1])


def test_choose_negation_maximises_t2_loss_within_t1_budget_and_says_none():
    loss1 = np.array([0.40, 0.08, 0.05, 0.06, 0.1, 0.2])          # T1 own (lambda = 0): 0.05
    loss2 = np.array([2.0, 1.5, 1.0, 0.5, 0.0, 0.0])
    c = sim.choose_negation(LAMS, loss1, loss2)                   # -0.5 keeps T1 (0.08 <= 0.10); -1 does not
    assert (float(c.lam), bool(c.found)) == (-0.5, True)
    assert float(sim.choose_negation(LAMS, loss1, loss2, tol=0.5).lam) == -1.0
    # Aligned: wherever T2 is forgotten, T1 is lost too.
    aligned = sim.choose_negation(LAMS, loss1, np.array([1.0, 0.6, 0.0, 0.0, 0.0, 0.0]))
    assert np.isnan(aligned.lam) and not aligned.found
    # Ties in T2's loss go to the smallest |lambda|; lambda = 0 never counts as negation.
    tie = sim.choose_negation(LAMS, np.full(6, 0.05), np.array([1.2, 1.2, 1.2, 0.0, 0.0, 0.0]))
    assert float(tie.lam) == -0.5
    # ref1 given explicitly: the grid need not contain 0.
    c = sim.choose_negation(LAMS[:2], loss1[:2], loss2[:2], ref1=0.35, tol=0.1)
    assert float(c.lam) == -1.0
    with pytest.raises(ValueError, match="lams=.*must contain 0"):
        sim.choose_negation(LAMS[:2], loss1[:2], loss2[:2])
    with pytest.raises(ValueError, match="loss1=.*same shape"):
        sim.choose_negation(LAMS, loss1[:3], loss2[:3])


def test_lambda_curves_hand_computed():
    X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1.0, 1.0])
    base, tau = {"w": jnp.array([0.5, 0.5])}, {"w": jnp.array([1.0, -1.0])}
    cur = sim.lambda_curves(linear_apply, base, tau, jnp.array([0.0, 0.5, 1.0]), X, y)
    # f = (0.5 + lam, 0.5 - lam): hinge (0.5, 0.5), (0, 1), (0, 1.5); sign: both right, then one (f = 0 is wrong).
    np.testing.assert_allclose(cur["loss"], [0.5, 0.5, 0.75])
    np.testing.assert_allclose(cur["acc"], [1.0, 0.5, 0.5])


def test_lambda_from_similarity_reads_theorems_1_and_2():
    adv = sim.lambda_from_similarity([-0.5, -0.05, 0.05, 0.5], beta=0.1, C=2.0)
    assert list(adv.relation) == ["contradictory", "irrelevant", "irrelevant", "aligned"]
    np.testing.assert_allclose(adv.learn_t2, [1.6, 1.15, 1.05, 0.6])
    np.testing.assert_allclose(adv.addition, [np.nan, 1.15, 1.05, 0.6])
    np.testing.assert_allclose(adv.neg_lo, [-8.0, -np.inf, -np.inf, np.nan])        # -C / alpha^2
    np.testing.assert_allclose(adv.neg_hi, [0.0, 0.0, 0.0, np.nan])
    assert float(sim.lambda_from_similarity(0.3, tol=0.5).neg_lo) == -np.inf
    with pytest.raises(ValueError, match="tol=-1"):
        sim.lambda_from_similarity(0.0, tol=-1)


# ------------------------------------------------------------------------- every estimator on a foreign model
def test_every_estimator_runs_on_a_plain_nnx_mlp():
    k1, k2 = jax.random.split(jax.random.key(3))
    X1, X2 = jax.random.normal(k1, (32, 6)), jax.random.normal(k2, (32, 6))
    p1, p2 = mlp_params(1), mlp_params(2)
    tau1, tau2 = taskvec.task_vector(p1, MLP_PARAMS), taskvec.task_vector(p2, MLP_PARAMS)
    Xmix = jnp.concatenate([X1, X2])
    b1 = (X1.reshape(4, 8, 6), jnp.sign(X1[:, 0]).reshape(4, 8))
    b2 = (X2.reshape(4, 8, 6), jnp.sign(X2[:, 1]).reshape(4, 8))

    @jax.jit      # one compilation for every estimator (each is jitted; inside this jit they inline)
    def estimate(q1, q2, t1, t2, c1, c2):
        return {"param": sim.param_cosine(t1, t2),
                "output": sim.output_cosine(mlp_apply, q1, q2, Xmix, n_probe=16),
                "pearson": sim.feature_correlation(mlp_features, q1, q2, Xmix, n_probe=16),
                "cka": sim.feature_correlation(mlp_features, q1, q2, Xmix, "cka", n_probe=16),
                "grad": sim.gradient_alignment(mlp_loss, MLP_PARAMS, c1, c2, n_batches=2),
                "xi": sim.disentanglement_error(mlp_apply, MLP_PARAMS, t1, t2, X1, X2, 0.5, 0.5, n_probe=16),
                "curve": sim.lambda_curves(mlp_apply, MLP_PARAMS, t1, jnp.array([0.0, 1.0]), X1, c1[1].reshape(-1))}

    vals = estimate(p1, p2, tau1, tau2, b1, b2)
    for name in ("param", "output", "pearson", "cka", "grad"):
        assert -1.0 - 1e-6 <= float(vals[name]) <= 1.0 + 1e-6, name
    assert 0.0 <= float(vals["xi"]) <= 2.0
    f1 = mlp_apply(p1, X1)
    assert float(vals["curve"]["loss"][1]) == pytest.approx(float(jnp.mean(jax.nn.relu(1 - b1[1].reshape(-1) * f1))),
                                                            rel=1e-5)
    # The same model twice: every similarity is 1; a task vector with a zero partner disentangles on its own task.
    zero = taskvec.scale(0.0, tau2)
    same = estimate(p1, p1, tau1, zero, b1, b1)
    for name in ("output", "pearson", "cka", "grad"):
        assert float(same[name]) == pytest.approx(1.0, abs=1e-5), name
    xi_zero = same["xi"]                       # lam = 0.5 on both
    # Task 1 agrees exactly; task 2's term compares f(base) with f(base + tau1 / 2), which can differ.
    merged = mlp_apply(taskvec.add(MLP_PARAMS, taskvec.scale(0.5, tau1)), X2[:16])
    want = float(jnp.mean((mlp_apply(MLP_PARAMS, X2[:16]) > 0) != (merged > 0)))
    assert float(xi_zero) == pytest.approx(want)
