import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvtheory import data, metrics, model, norm_control as nc, streams, taskvec, train
from tvtheory.config import Data, Train

TASK = Data(d=8, P=10, n_rel=3, n_conf=1)
FRESH = Train(eta=1.0, batch=16, steps=20, log_every=1)
# The traced-control runs train on a fixed set, so that its minibatch branch (a copy of train.finetune's) is
# checked against train.finetune too, at the cost of one more compilation.
FIXED = dataclasses.replace(FRESH, n_train=64)
MU = jnp.eye(8)[0]
IRR = jnp.eye(8)[2:]
P0 = {"W": jnp.zeros((8, 8)), "V": 0.1 * jax.random.normal(jax.random.key(0), (16, 8))}     # W_0 = 0 as in Psi_0
KEY = jax.random.key(1)


def leaves_equal(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@jax.jit
def controlled(p0, key, decay, radius):
    return nc.finetune_controlled(p0, key, MU, IRR, TASK, FIXED, decay=decay, radius=radius)


def test_reduces_to_train_finetune_bit_for_bit():
    ref, got = jax.jit(lambda p, k: (train.finetune(p, k, MU, IRR, TASK, FRESH),
                                     nc.finetune_controlled(p, k, MU, IRR, TASK, FRESH)))(P0, KEY)
    assert leaves_equal(got[:4], ref)
    np.testing.assert_allclose(got.curve_norm[-1], taskvec.norm(taskvec.task_vector(ref.params, P0)), rtol=1e-6)


def test_fixed_training_set_draws_the_same_minibatches_and_traced_zero_controls_change_nothing():
    ref = jax.jit(lambda p, k: train.finetune(p, k, MU, IRR, TASK, FIXED))(P0, KEY)
    assert leaves_equal(controlled(P0, KEY, 0.0, 1e9)[:4], ref)          # decay 0 and an inactive ball


def test_decay_is_sgd_on_hinge_plus_half_mu_squared_distance():
    mu_decay = 0.3
    X_tr, y_tr = data.sample(jax.random.fold_in(KEY, streams.TRAIN_SET), MU, IRR, FIXED.n_train, TASK)

    def objective(p, X, y):
        d = taskvec.sub(p, P0)
        return metrics.hinge(model.apply(p, X), y) + 0.5 * mu_decay * taskvec.inner(d, d)

    @jax.jit
    def step(p, t):
        idx = jax.random.choice(jax.random.fold_in(KEY, t), FIXED.n_train, (FIXED.batch,), replace=False)
        return jax.tree.map(lambda a, g: a - FIXED.eta * g, p, jax.grad(objective)(p, X_tr[idx], y_tr[idx]))

    p = P0
    for t in range(FIXED.steps):
        p = step(p, t)
    got = controlled(P0, KEY, mu_decay, 1e9).params
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ball_constraint_holds_after_every_step():
    free = controlled(P0, KEY, 0.0, 1e9)
    r = 0.5 * float(free.curve_norm[-1])
    ball = controlled(P0, KEY, 0.0, r)
    assert float(jnp.max(ball.curve_norm)) <= r * (1 + 1e-5)
    assert float(ball.curve_norm[-1]) == pytest.approx(r, rel=1e-5)            # active at the end
    assert float(taskvec.norm(taskvec.task_vector(ball.params, P0))) <= r * (1 + 1e-5)
    # While inside the ball, the run is the free run's.
    inside = np.asarray(free.curve_norm) <= r
    first_out = int(np.argmin(inside))
    np.testing.assert_array_equal(ball.curve_loss[:first_out + 1], free.curve_loss[:first_out + 1])


def test_decay_shrinks_the_norm_monotonically_in_mu():
    norms = np.array([float(controlled(P0, KEY, m, 1e9).curve_norm[-1]) for m in (0.0, 0.03, 0.1, 0.3, 1.0)])
    assert np.all(np.diff(norms) < 0), norms


def test_project_and_rescale():
    tau = {"W": jnp.array([[3.0, 0.0]]), "V": jnp.array([4.0])}            # norm 5
    p0 = {"W": jnp.array([[1.0, 1.0]]), "V": jnp.array([-1.0])}
    p = taskvec.add(p0, tau)
    assert leaves_equal(nc.project(p0, p, 6.0), p)                         # inside: untouched
    out = nc.project(p0, p, 2.5)
    np.testing.assert_allclose(out["W"], [[2.5, 1.0]])
    np.testing.assert_allclose(out["V"], [1.0])
    r = nc.rescale(tau, 10.0)
    np.testing.assert_allclose(r["W"], [[6.0, 0.0]])
    np.testing.assert_allclose(r["V"], [8.0])
    zero = taskvec.scale(0.0, tau)
    assert leaves_equal(nc.rescale(zero, 3.0), zero)


def test_bad_arguments():
    with pytest.raises(ValueError, match="decay=-0.1"):
        nc.finetune_controlled(P0, KEY, MU, IRR, TASK, FIXED, decay=-0.1)
    with pytest.raises(ValueError, match="radius=-1"):
        nc.finetune_controlled(P0, KEY, MU, IRR, TASK, FIXED, radius=-1)
