"""Fine-tuning by SGD on the hinge loss (theory.md section 3).

``finetune`` is pure: jit it, vmap it over keys (seeds) and task patterns (alphas). Step t draws a fresh batch from
fold_in(key, t) (the theorems' online setting), or, with ``n_train``, a minibatch of a fixed training set.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from tvtheory import data, metrics, model
from tvtheory.specs import TrainSpec


class TrainResult(NamedTuple):
    params: dict
    curve_loss: jax.Array        # (steps // log_every,) training-batch hinge loss at the end of each interval
    curve_acc: jax.Array
    finite: jax.Array            # bool: loss and parameters finite throughout


def hinge_objective(params, X, y):
    f = model.apply(params, X)
    return metrics.hinge(f, y), metrics.accuracy(f, y)


def finetune(params0, key: jax.Array, mu: jax.Array, irr: jax.Array, task: data.TaskSpec = data.TaskSpec(),
             spec: TrainSpec = TrainSpec()) -> TrainResult:
    """Psi*_T: SGD from Psi_0 on task mu. ``task`` and ``spec`` are static; params0, key, mu, irr may be traced.

    A mixture of K tasks: mu (K, d) and irr (K, M, d); step t trains on task t mod K (fresh samples only)."""
    opt = optax.sgd(spec.eta)
    grad_fn = jax.value_and_grad(hinge_objective, has_aux=True)
    mu, irr = jnp.asarray(mu), jnp.asarray(irr)
    mixture = mu.ndim == 2
    if mixture and spec.n_train:
        raise ValueError(f"n_train={spec.n_train}: a mixture of tasks trains on fresh samples only (n_train=0)")
    if spec.n_train:
        X_tr, y_tr = data.sample(jax.random.fold_in(key, 2**31 - 1), mu, irr, spec.n_train, task)

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
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
        ok = ok & jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
        return (params, state, ok), (loss, acc)

    (params, _, ok), (loss_T, acc_T) = jax.lax.scan(step, (params0, opt.init(params0), jnp.array(True)),
                                                     jnp.arange(spec.steps))
    every = spec.log_every
    return TrainResult(params, loss_T[every - 1::every], acc_T[every - 1::every], ok)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or parameters."""


def check_finite(result: TrainResult, what: str = "fine-tuning") -> TrainResult:
    """Raise DivergenceError unless every run in ``result`` (possibly batched) stayed finite."""
    ok = jnp.asarray(result.finite)
    if not bool(jnp.all(ok)):
        bad = int(jnp.size(ok) - jnp.sum(ok))
        raise DivergenceError(f"{what} diverged (non-finite loss or parameters) in {bad} of {jnp.size(ok)} runs; "
                              "lower train.eta")
    return result
