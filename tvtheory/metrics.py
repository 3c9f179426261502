"""Generalization metrics. The theorems' "generalization error" is the expected hinge loss (theory.md section 3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tvtheory import model


def hinge(f: jax.Array, y: jax.Array) -> jax.Array:
    """Mean of max(0, 1 - y f) over the last axis."""
    return jnp.mean(jax.nn.relu(1.0 - y * f), axis=-1)


def accuracy(f: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of sign(f) == y; f = 0 counts as wrong (a model that outputs nothing has learned nothing)."""
    return jnp.mean(y * f > 0, axis=-1)


def multiclass_hinge(F_NxK: jax.Array, y_N: jax.Array) -> jax.Array:
    """Crammer-Singer hinge (Crammer and Singer, 2001): the mean over samples of max(0, 1 + max_{j != y} f_j - f_y),
    y integer class ids. The zero predictor's loss is 1, as for the binary hinge."""
    f_y, f_other = _own_and_best_other(F_NxK, y_N)
    return jnp.mean(jax.nn.relu(1.0 + f_other - f_y), axis=-1)


def multiclass_accuracy(F_NxK: jax.Array, y_N: jax.Array) -> jax.Array:
    """Fraction with f_y > max_{j != y} f_j (a tie counts as wrong, as f = 0 does in ``accuracy``)."""
    f_y, f_other = _own_and_best_other(F_NxK, y_N)
    return jnp.mean(f_y > f_other, axis=-1)


def _own_and_best_other(F_NxK, y_N):
    K = F_NxK.shape[-1]
    own = jax.nn.one_hot(y_N, K, dtype=bool)
    f_y = jnp.sum(jnp.where(own, F_NxK, 0.0), axis=-1)
    return f_y, jnp.max(jnp.where(own, -jnp.inf, F_NxK), axis=-1)


def loss_and_accuracy(f: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Hinge loss and accuracy: binary (``hinge``, ``accuracy``) for f (N,) and y in {+1, -1}; Crammer-Singer's for
    K outputs f (N, K) and integer classes y (N,)."""
    if f.ndim == y.ndim + 1:
        return multiclass_hinge(f, y), multiclass_accuracy(f, y)
    return hinge(f, y), accuracy(f, y)


def evaluate(params, X: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Hinge loss and accuracy of the one-layer transformer."""
    return evaluate_with(model.apply, params, X, y)


def cosine(u: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.vdot(u, v) / (jnp.linalg.norm(u) * jnp.linalg.norm(v))


def alpha_hat(params_1, params_2, X: jax.Array, apply_fn=model.apply) -> jax.Array:
    """The paper's practical estimate of alpha between two fine-tuned models.

    The paper writes alpha_hat = E_X cos(f(X; Psi*_T1), f(X; Psi*_T2)). With a scalar output a per-sample cosine is
    only a sign, so we read it as the cosine similarity of the two models' output vectors over one shared set of
    inputs: alpha_hat = <f_1, f_2> / (||f_1|| ||f_2||), f_i = (f(X_n; Psi_i))_n. X should mix inputs of both tasks.
    ``apply_fn``: any model (K outputs per sample: the cosine of the flattened (N, K) outputs).
    """
    return cosine(apply_fn(params_1, X), apply_fn(params_2, X))


def evaluate_with(apply_fn, params, X: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Hinge loss and accuracy of any model ``apply_fn(params, X)`` (Crammer-Singer's for K outputs)."""
    loss, acc = loss_and_accuracy(apply_fn(params, X), y)
    return {"loss": loss, "acc": acc}
