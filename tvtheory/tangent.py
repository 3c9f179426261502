"""Tangent-space (linearised) models and weight disentanglement (Ortiz-Jimenez et al., NeurIPS 2023, "Task
Arithmetic in the Tangent Space").

The linearisation of f at Psi_0, f_lin(Psi, X) = f(Psi_0, X) + J_Psi f(Psi_0, X) (Psi - Psi_0), is affine in the
parameters, so task vectors trained in it (``sgd`` on ``linearize(apply_fn, params0)``) add without leaving the
regime in which they were learned. ``weight_disentanglement_error`` measures how far a model is from the ideal in
which each task vector only acts on its own task's inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from tvtheory import _check, merge, metrics

Tree = Any


def linearize(apply_fn: Callable, params0: Tree) -> Callable:
    """f_lin(params, X) = f(params0, X) + jvp of f(., X) at params0 along params - params0.

    Forward mode through ``apply_fn``: tvtheory.model.apply qualifies (its readout_relu has a custom JVP) and so
    does any plain JAX function. f_lin is affine in params, and jax.grad of f_lin w.r.t. params works (JAX
    transposes the JVP): it is J(params0)^T at every params. ``params`` must have params0's structure, float leaves.
    """
    def f_lin(params, X):
        delta = jax.tree.map(lambda p, p0: p - p0, params, params0)
        f0, df = jax.jvp(lambda p: apply_fn(p, X), (params0,), (delta,))
        return f0 + df
    return f_lin


def _disagree(fa: jax.Array, fb: jax.Array) -> jax.Array:
    if fa.ndim == 1:
        return jnp.mean((fa > 0) != (fb > 0))
    return jnp.mean(jnp.argmax(fa, axis=-1) != jnp.argmax(fb, axis=-1))


@partial(jax.jit, static_argnames=("apply_fn",))
def weight_disentanglement_error(apply_fn: Callable, base: Tree, taus: Sequence[Tree], coeffs_GxK: jax.Array,
                                 X_per_task: Sequence[jax.Array]) -> dict[str, jax.Array]:
    """The paper's xi(lambda_1..lambda_K) = sum_t E_{x in task t} dist(f(Psi_0 + sum_k lambda_k tau_k, x),
    f(Psi_0 + lambda_t tau_t, x)) at every row of ``coeffs_GxK``.

    dist: the 0/1 disagreement of the predicted labels, sign(f) for scalar outputs (N,) (f = 0 reads as the negative
    class), argmax for logits (N, C); "sign" of the result. "mse" is the same sum with the mean squared difference
    of the outputs. Both (G,). ``X_per_task``: K arrays (sizes may differ), task t's inputs. 0 for K = 1; 0 for an
    affine model whose task vectors act on disjoint parts of the input that the other tasks' inputs leave at 0.
    Works as well for ``linearize(apply_fn, base)``.
    """
    K = len(taus)
    if len(X_per_task) != K:
        _check.fail("X_per_task", f"{len(X_per_task)} arrays", f"must hold one input array per task vector ({K})")
    if coeffs_GxK.ndim != 2 or coeffs_GxK.shape[1] != K:
        _check.fail("coeffs_GxK shape", coeffs_GxK.shape, f"must be (G, {K})")

    def point(lam_K):
        full = merge.task_arithmetic(base, taus, lam_K)
        sign = mse = 0.0
        for t, X in enumerate(X_per_task):
            fa = apply_fn(full, X)
            fb = apply_fn(merge.task_arithmetic(base, [taus[t]], lam_K[t]), X)
            sign = sign + _disagree(fa, fb)
            mse = mse + jnp.mean((fa - fb) ** 2)
        return {"sign": sign, "mse": mse}

    return jax.lax.map(point, coeffs_GxK)


@partial(jax.jit, static_argnames=("apply_fn", "sample_fn", "steps", "batch"))
def sgd(apply_fn: Callable, params0: Tree, key: jax.Array, sample_fn: Callable, *, steps: int, eta, batch: int):
    """Plain SGD on the hinge loss from params0: step t trains on sample_fn(fold_in(key, t), batch) -> (X, y).

    Train ``apply_fn`` for standard task vectors or ``linearize(apply_fn, params0)`` for tangent-space ones (the
    task vector is then params - params0, to be used with that same linearisation). ``eta`` may be traced.
    Returns (params, hinge loss of each step's batch before its update, (steps,)).
    """
    _check.integer("steps", steps, lo=1)
    _check.integer("batch", batch, lo=1)
    def loss_fn(p, X, y):
        return metrics.hinge(apply_fn(p, X), y)

    def step(p, t):
        loss, g = jax.value_and_grad(loss_fn)(p, *sample_fn(jax.random.fold_in(key, t), batch))
        return jax.tree.map(lambda a, b: a - eta * b, p, g), loss

    return jax.lax.scan(step, params0, jnp.arange(steps))
