"""Fine-tuning with a controlled task-vector norm ||dPsi_T|| = ||Psi*_T - Psi_0|| (the paper's practical advice: the
kept task's cost |lambda| beta grows with what the task vector carries, so keep it small).

Four controls:
  (a) fewer SGD steps: ``train.finetune`` with a smaller ``TrainSpec.steps`` (no code here);
  (b) weight decay towards Psi_0: SGD on hinge + decay/2 ||Psi - Psi_0||^2 (``finetune_controlled(decay=...)``);
  (c) a norm ball: after every step Psi - Psi_0 is projected onto ||.|| <= radius (``finetune_controlled(radius=...)``);
  (d) post-hoc rescaling of the task vector to a norm r (``rescale``).
Norms are the Frobenius norm of the whole parameter pytree (every leaf together), as ``taskvec.norm``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from tvtheory import _check, data, streams, taskvec, train
from tvtheory.config import Data, Train


class ControlledResult(NamedTuple):
    """``train.TrainResult``'s fields in its order, plus the task-vector norm at the same logged steps."""

    params: dict
    curve_loss: jax.Array        # (steps // log_every,) training-batch hinge loss (without the decay term)
    curve_acc: jax.Array
    finite: jax.Array
    curve_norm: jax.Array        # (steps // log_every,) ||Psi_t - Psi_0|| after step t (after the projection)


def finetune_controlled(params0, key: jax.Array, mu: jax.Array, irr: jax.Array,
                        task: Data = Data(), spec: Train = Train(), *,
                        decay=0.0, radius=None) -> ControlledResult:
    """``train.finetune`` (same batches fold_in(key, t), same ``data.sample``, same SGD) with the norm controls:
    ``decay`` mu adds mu (Psi - Psi_0) to every gradient, the gradient of mu/2 ||Psi - Psi_0||^2; ``radius`` r
    projects Psi - Psi_0 onto the ball ||.|| <= r after every step (only when outside it, so an inactive ball
    changes no bit). decay and radius may be traced (vmap over a grid); radius=None means no ball. With decay=0 and
    radius=None the parameters and curves are train.finetune's, bit for bit (tested; binary tasks with clean labels,
    the only data practice gives it).

    Weight decay towards Psi_0 (not towards 0) is L2-SP (Li, Grandvalet and Davoine, 2018); the ball is projected
    SGD onto the trust region ||Psi - Psi_0|| <= r."""
    if isinstance(decay, (int, float)):
        _check.in_range("decay", decay, lo=0.0)
    if isinstance(radius, (int, float)):
        _check.in_range("radius", radius, lo=0.0)
    opt = optax.sgd(spec.eta)
    grad_fn = jax.value_and_grad(train.hinge_objective, has_aux=True)
    mu, irr = jnp.asarray(mu), jnp.asarray(irr)
    mixture = mu.ndim == 2
    if mixture and spec.n_train:
        raise ValueError(f"n_train={spec.n_train}: a mixture of tasks trains on fresh samples only (n_train=0)")
    if spec.n_train:
        X_tr, y_tr = data.sample(jax.random.fold_in(key, streams.TRAIN_SET), mu, irr, spec.n_train, task)
    use_decay = not (isinstance(decay, (int, float)) and decay == 0)

    # The same batch stream as train.finetune; test_norm_control checks the two agree bit for bit.
    def batch(t):
        k = jax.random.fold_in(key, t)
        if mixture:
            return data.sample(k, mu[t % mu.shape[0]], irr[t % mu.shape[0]], spec.batch, task)
        if not spec.n_train:
            return data.sample(k, mu, irr, spec.batch, task)
        idx = jax.random.choice(k, spec.n_train, (spec.batch,), replace=spec.batch > spec.n_train)
        return X_tr[idx], y_tr[idx]

    def step(carry, t):
        params, state, ok = carry
        (loss, acc), g = grad_fn(params, *batch(t))
        if use_decay:
            g = jax.tree.map(lambda gi, p, p0: gi + decay * (p - p0), g, params, params0)
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
        if radius is not None:
            params = project(params0, params, radius)
        ok = ok & jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
        return (params, state, ok), (loss, acc, taskvec.norm(taskvec.sub(params, params0)))

    (params, _, ok), (loss_T, acc_T, norm_T) = jax.lax.scan(step, (params0, opt.init(params0), jnp.array(True)),
                                                             jnp.arange(spec.steps))
    every = spec.log_every
    pick = lambda x: x[every - 1::every]  # noqa: E731
    return ControlledResult(params, pick(loss_T), pick(acc_T), ok, pick(norm_T))


def project(params0, params, radius):
    """Psi_0 + (Psi - Psi_0) min(1, r / ||Psi - Psi_0||): the nearest point of the ball around Psi_0. Inside the
    ball Psi is returned as it is (not recomputed as Psi_0 + (Psi - Psi_0), which could round differently)."""
    delta = taskvec.sub(params, params0)
    n = taskvec.norm(delta)
    outside = n > radius
    shrink = jnp.where(outside, radius / jnp.where(outside, n, 1.0), 1.0)
    return jax.tree.map(lambda p, p0, dx: jnp.where(outside, p0 + shrink * dx, p), params, params0, delta)


def rescale(tau, radius):
    """dPsi r / ||dPsi||: the task vector's direction at norm r (post-hoc control (d)); a zero vector stays zero."""
    n = taskvec.norm(tau)
    return taskvec.scale(jnp.where(n > 0, radius / jnp.where(n > 0, n, 1.0), 0.0), tau)
