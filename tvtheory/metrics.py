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


def evaluate(params, X: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Hinge loss and accuracy of the one-layer transformer."""
    return evaluate_with(model.apply, params, X, y)


def cosine(u: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.vdot(u, v) / (jnp.linalg.norm(u) * jnp.linalg.norm(v))


def alpha_hat(params_1, params_2, X: jax.Array) -> jax.Array:
    """The paper's practical estimate of alpha between two fine-tuned models.

    The paper writes alpha_hat = E_X cos(f(X; Psi*_T1), f(X; Psi*_T2)). With a scalar output a per-sample cosine is
    only a sign, so we read it as the cosine similarity of the two models' output vectors over one shared set of
    inputs: alpha_hat = <f_1, f_2> / (||f_1|| ||f_2||), f_i = (f(X_n; Psi_i))_n. X should mix inputs of both tasks.
    """
    return cosine(model.apply(params_1, X), model.apply(params_2, X))


def evaluate_with(apply_fn, params, X: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Hinge loss and accuracy of any model ``apply_fn(params, X)``."""
    f = apply_fn(params, X)
    return {"loss": hinge(f, y), "acc": accuracy(f, y)}
