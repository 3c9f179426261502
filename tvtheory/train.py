"""Fine-tuning by SGD on the hinge loss (docs/theory.md section 3).

``finetune`` is pure: jit it, vmap it over keys (seeds) and task patterns (alphas). Step t draws a fresh batch from
fold_in(key, t) (the theorems' online setting), or, with ``n_train``, a minibatch of a fixed training set. ``sgd`` is
the loop itself, for any network and any batches (architectures.finetune is it with a sampler).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from tvtheory import data_options, metrics, model, streams
from tvtheory.config import Data, Train


class TrainResult(NamedTuple):
    params: dict
    curve_loss: jax.Array        # (steps // log_every,) training-batch hinge loss at the end of each interval
    curve_acc: jax.Array
    finite: jax.Array            # bool: loss and parameters finite throughout


def hinge_objective(params, X, y):
    f = model.apply(params, X)
    return metrics.hinge(f, y), metrics.accuracy(f, y)


def finetune(params0, key: jax.Array, mu: jax.Array, irr: jax.Array, task: Data = Data(),
             spec: Train = Train(), apply_fn: Callable = model.apply) -> TrainResult:
    """Psi*_T: SGD from Psi_0 on task mu. ``task`` and ``spec`` are static; params0, key, mu, irr may be traced.

    A mixture of tasks: mu (T, d) (or (T, K, d) for K-class tasks) and irr (T, M, d); step t trains on task t mod T
    (fresh samples only). Training labels carry ``task.label_noise`` (data_options.train_sample). ``apply_fn``: the
    network (default the paper's model; architectures.of for any model config)."""
    mu, irr = jnp.asarray(mu), jnp.asarray(irr)
    mixture = mu.ndim == (3 if task.multiclass else 2)
    if mixture and spec.n_train:
        raise ValueError(f"n_train={spec.n_train}: a mixture of tasks trains on fresh samples only (n_train=0)")
    if spec.n_train:
        X_tr, y_tr = data_options.train_sample(jax.random.fold_in(key, streams.TRAIN_SET), mu, irr, spec.n_train,
                                               task)

    def batch(t):
        k = jax.random.fold_in(key, t)
        if mixture:
            return data_options.train_sample(k, mu[t % mu.shape[0]], irr[t % mu.shape[0]], spec.batch, task)
        if not spec.n_train:
            return data_options.train_sample(k, mu, irr, spec.batch, task)
        idx = jax.random.choice(k, spec.n_train, (spec.batch,), replace=spec.batch > spec.n_train)
        return X_tr[idx], y_tr[idx]

    return sgd(apply_fn, params0, batch, spec)


def sgd(apply_fn: Callable, params0, batch: Callable, spec: Train = Train()) -> TrainResult:
    """The suite's one SGD loop: step t (of ``spec.steps``, step size ``spec.eta``) on ``batch(t) = (X, y)`` and the
    hinge loss of ``apply_fn(params, X)`` (Crammer-Singer's for K outputs: metrics.loss_and_accuracy), from
    ``params0``. Pure: lax.scan over the steps, with a flag for any non-finite loss or parameter."""
    opt = optax.sgd(spec.eta)

    def objective(params, X, y):
        return metrics.loss_and_accuracy(apply_fn(params, X), y)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

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
