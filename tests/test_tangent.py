import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tvtheory import model, tangent

D, M, P = 4, 8, 3                      # d < m: model.apply goes through readout_relu and its custom JVP


def normal(seed, shape, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def params(seed, scale=0.5):
    return {"W": normal(seed, (D, D), scale), "V": normal(seed + 1, (M, D), scale)}


P0, DIR = params(0), params(10)
X = normal(20, (6, P, D))
F_LIN = jax.jit(tangent.linearize(model.apply, P0))           # jitted here: eagerly, every op would compile alone
APPLY = jax.jit(model.apply)


def shift(p, d, a):
    return jax.tree.map(lambda x, y: x + a * y, p, d)


def test_linearized_equals_f_at_params0():
    np.testing.assert_allclose(F_LIN(P0, X), APPLY(P0, X), rtol=1e-6, atol=1e-7)


@jax.jit
def _lin_along(a):
    return F_LIN(shift(P0, DIR, a), X) - F_LIN(P0, X)


@given(st.floats(-3, 3))
def test_linearized_is_affine_in_params(a):
    np.testing.assert_allclose(_lin_along(a), a * _lin_along(1.0), rtol=1e-5, atol=1e-5)


def test_jvp_matches_central_finite_differences():
    eps = 1e-3
    fd = (APPLY(shift(P0, DIR, eps), X) - APPLY(shift(P0, DIR, -eps), X)) / (2 * eps)
    jvp = F_LIN(shift(P0, DIR, 1.0), X) - APPLY(P0, X)                                 # J(params0) . DIR
    assert float(jnp.max(jnp.abs(jvp))) > 1e-2                                          # not trivially 0
    np.testing.assert_allclose(jvp, fd, rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(jvp))))


def test_grad_of_linearized_is_the_jacobian_at_params0_everywhere():
    loss = lambda f: lambda p: jnp.sum(jnp.sin(jnp.arange(X.shape[0])) * f(p, X))  # noqa: E731
    g_lin = jax.jit(jax.grad(loss(tangent.linearize(model.apply, P0))))(shift(P0, DIR, 2.0))
    g0 = jax.jit(jax.grad(loss(model.apply)))(P0)
    for k in g0:
        np.testing.assert_allclose(g_lin[k], g0[k], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------- weight disentanglement


def affine(p, X):
    return X @ p["w"] + p["b"]


def test_wde_is_zero_for_one_task_vector():
    grid = jnp.array([[0.5], [1.0], [2.0]])
    for f in (model.apply, F_LIN):
        out = tangent.weight_disentanglement_error(f, P0, [DIR], grid, [X])
        assert out["sign"].shape == (3,)
        np.testing.assert_array_equal(out["sign"], 0.0)
        np.testing.assert_array_equal(out["mse"], 0.0)


def test_wde_of_affine_model_zero_on_disjoint_supports_and_by_hand_otherwise():
    """Task t's inputs live on coordinates {2t, 2t+1}. Task vectors on their own coordinates never act on the other
    task's inputs: xi = 0. A task vector that also touches the other block adds lambda_k <tau_k, x> there; the mse
    term is then sum_t E_x (sum_{k != t} lambda_k <tau_k, x>)^2, computed here by hand."""
    base = {"w": normal(1, (4,)), "b": jnp.array(0.3)}
    Xs = [jnp.zeros((16, 4)).at[:, 0:2].set(normal(2, (16, 2))), jnp.zeros((16, 4)).at[:, 2:4].set(normal(3, (16, 2)))]
    own = [{"w": jnp.array([1.0, -2.0, 0.0, 0.0]), "b": jnp.array(0.0)},
           {"w": jnp.array([0.0, 0.0, 0.5, 1.5]), "b": jnp.array(0.0)}]
    grid = jnp.array([[1.0, 1.0], [0.3, -2.0]])
    out = tangent.weight_disentanglement_error(affine, base, own, grid, Xs)
    np.testing.assert_allclose(out["mse"], 0.0, atol=1e-10)
    np.testing.assert_array_equal(out["sign"], 0.0)
    lin = tangent.weight_disentanglement_error(tangent.linearize(affine, base), base, own, grid, Xs)
    np.testing.assert_allclose(lin["mse"], 0.0, atol=1e-10)

    leaky = [own[0], {"w": jnp.array([3.0, 1.0, 0.5, 1.5]), "b": jnp.array(0.0)}]
    out = tangent.weight_disentanglement_error(affine, base, leaky, grid, Xs)
    for g, (l1, l2) in enumerate(np.asarray(grid)):
        # task 0 sees tau_2's leak l2 * <(3, 1), x>; task 1 sees nothing of tau_1
        expect = np.mean((l2 * np.asarray(Xs[0][:, :2] @ jnp.array([3.0, 1.0]))) ** 2)
        np.testing.assert_allclose(out["mse"][g], expect, rtol=1e-5)
        f_full, f_own = (np.asarray(affine(tangent_params, Xs[0])) for tangent_params in (
            {"w": base["w"] + l1 * leaky[0]["w"] + l2 * leaky[1]["w"], "b": base["b"]},
            {"w": base["w"] + l1 * leaky[0]["w"], "b": base["b"]}))
        np.testing.assert_allclose(out["sign"][g], np.mean((f_full > 0) != (f_own > 0)), atol=1e-7)
    assert float(out["sign"].max()) > 0                                                 # the leak flips some labels


def test_wde_bad_arguments():
    with pytest.raises(ValueError, match="X_per_task"):
        tangent.weight_disentanglement_error(model.apply, P0, [DIR, DIR], jnp.ones((2, 2)), [X])
    with pytest.raises(ValueError, match=r"coeffs_GxK shape=\(2,\)"):
        tangent.weight_disentanglement_error(model.apply, P0, [DIR], jnp.ones(2), [X])


# ------------------------------------------------------------------------------------------------ sgd


def separable(key, n):
    """y = sign(x_0 - x_1) with a margin: a linear model can reach zero hinge loss."""
    x = jax.random.normal(key, (n, 4))
    y = jnp.where(x[:, 0] - x[:, 1] > 0, 1.0, -1.0)
    return x + 0.5 * y[:, None] * jnp.array([1.0, -1.0, 0.0, 0.0]), y


def test_sgd_learns_and_the_linearization_of_an_affine_model_trains_identically():
    p0 = {"w": jnp.zeros(4), "b": jnp.array(0.0)}
    p, loss = tangent.sgd(affine, p0, jax.random.key(0), separable, steps=60, eta=0.1, batch=32)
    assert loss.shape == (60,) and float(loss[-10:].mean()) < 0.3 * float(loss[0])
    p_lin, loss_lin = tangent.sgd(tangent.linearize(affine, p0), p0, jax.random.key(0), separable, steps=60, eta=0.1,
                                  batch=32)
    for k in p:
        np.testing.assert_allclose(p_lin[k], p[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss_lin, loss, rtol=1e-5, atol=1e-6)


def test_sgd_in_the_tangent_space_of_the_paper_model():
    """A tangent task vector of the one-layer transformer: the linearised model learns a task that is a sign of the
    first coordinate's sum over tokens, and its outputs stay affine in the trained task vector."""
    def sample(key, n):
        Xb = jax.random.normal(key, (n, P, D))
        return Xb, jnp.where(Xb[..., 0].sum(-1) > 0, 1.0, -1.0)

    f_lin = tangent.linearize(model.apply, P0)
    p_lin, loss = tangent.sgd(f_lin, P0, jax.random.key(1), sample, steps=80, eta=0.5, batch=32)
    assert float(loss[-10:].mean()) < 0.7 * float(loss[:10].mean())
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(p_lin))
    # the model used for the task vector is f_lin: its outputs are affine in the task vector p_lin - P0
    tau = jax.tree.map(lambda a, b: a - b, p_lin, P0)
    np.testing.assert_allclose(f_lin(shift(P0, tau, 0.5), X) - f_lin(P0, X),
                               0.5 * (f_lin(p_lin, X) - f_lin(P0, X)), rtol=1e-4, atol=1e-5)
