"""Data beyond the paper's Definition 2: token noise, non-orthogonal irrelevant patterns, multi-class tasks and label
noise. Samplers keep data.sample's shape, (key, patterns, irr, n, spec) -> (X (n, P, d) float32, y (n,)), are pure
and jit/vmap-able over keys and patterns (``n`` and ``spec`` static); pattern constructors are pure jnp, with
argument checks only on concrete Python values.

- Token noise: data.sample already adds N(0, sigma^2) to every coordinate of every token (Data.sigma); ``noisy``
  sets it. The noise vector of a token has norm ~ sigma sqrt(d), the patterns norm 1: sigma = 1/sqrt(d) already
  puts as much noise in a token as signal.
- Non-orthogonal irrelevant patterns (``correlated_irrelevant``): v_j = rho mu + sqrt(1 - rho^2) u_j with u_j random
  unit vectors orthogonal to the task patterns but not to each other (u_i . u_j ~ 1/sqrt(d - rank)). rho = 0 keeps
  the v_j off the task span; rho != 0 gives every irrelevant token a component rho along mu whatever the label, so a
  sample of label y carries y (n_rel - n_conf) + rho n_irr along mu: the classes stay separable by that count, but
  its zero moves, and the paper's models have no bias (positively homogeneous in the attended tokens).
- Multi-class (``sample_multiclass``): K orthonormal class patterns; a sample of class c holds n_rel tokens mu_c,
  n_conf confusion tokens each of a class drawn uniformly from the other K - 1, and irrelevant tokens; the class is
  the plurality of pattern counts (n_rel > n_conf). Labels are uniform over the K classes. K = 2 is NOT the binary
  task: the classes own two orthogonal patterns instead of +-mu. Two multi-class tasks relate through alpha, the
  inner product of each class's patterns (``multiclass_pair_patterns``).
- Label noise (``sample_flipped``): each training label is replaced, with probability eta_flip, by the other label
  (binary) or a uniformly drawn other class; ``train=False`` returns the clean labels of the same samples.

A data config (config.Data: sigma, irrelevant, rho, classes, label_noise) selects them through ``pair_patterns``,
``sample`` (test sets) and ``train_sample`` (training batches), which the sweeps and train.finetune use; the irrelevant
patterns of a sweep are sweep.irrelevant's.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from tvtheory import _check, data, streams
from tvtheory.config import Data

LABEL_NOISE = streams.LABEL_FLIP     # the label-flip stream within a sample's key (X stays the clean sampler's)


def noisy(spec: Data, sigma: float) -> Data:
    """``spec`` with token noise N(0, sigma^2) per coordinate (data.sample's Data.sigma)."""
    return dataclasses.replace(spec, sigma=_check.in_range("sigma", sigma, lo=0.0))


# ---------------------------------------------------------------------------------------- non-orthogonal patterns


def correlated_irrelevant(key: jax.Array, M: int, task_patterns, rho=0.0, along=None) -> jax.Array:
    """M unit irrelevant patterns v_j = rho along + sqrt(1 - rho^2) u_j (M, d).

    u_j: Gaussian directions projected off span(task_patterns) (rows, (n, d) or (d,)) and normalised, drawn
    independently (not orthogonal to each other). ``along``: a unit vector in that span, default the first task
    pattern (mu_T1); then v_j . along = rho exactly and, for a second pattern mu_T2, v_j . mu_T2 = rho alpha.
    ``rho`` may be traced; the task patterns must be linearly independent.
    """
    _check.integer("M", M, lo=1)
    if isinstance(rho, (int, float)):
        _check.in_range("rho", rho, -1.0, 1.0)
    T_NxD = jnp.atleast_2d(jnp.asarray(task_patterns, jnp.float32))
    d = T_NxD.shape[-1]
    if T_NxD.shape[0] >= d:
        _check.fail("d", d, f"too small: {T_NxD.shape[0]} task patterns leave no direction for irrelevant ones")
    along = T_NxD[0] if along is None else jnp.asarray(along, jnp.float32)
    Q_DxN, _ = jnp.linalg.qr(T_NxD.T)                                           # orthonormal basis of the span
    g_MxD = jax.random.normal(key, (M, d))
    u_MxD = g_MxD - (g_MxD @ Q_DxN) @ Q_DxN.T
    u_MxD = u_MxD / jnp.linalg.norm(u_MxD, axis=-1, keepdims=True)
    rho = jnp.asarray(rho, jnp.float32)
    return rho * along + jnp.sqrt(jnp.clip(1.0 - rho**2, 0.0)) * u_MxD


def random_unit_patterns(key: jax.Array, M: int, d: int) -> jax.Array:
    """M isotropic random unit vectors (M, d), with no constraint at all: they overlap each other and the task
    patterns by ~1/sqrt(d) (the "irrelevant" tokens then carry a small random component along mu)."""
    _check.integer("M", M, lo=1)
    _check.integer("d", d, lo=1)
    g = jax.random.normal(key, (M, d))
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------- multi-class


def class_patterns(K: int, d: int) -> jax.Array:
    """K orthonormal class patterns e_1 .. e_K (K, d)."""
    _check.integer("K", K, lo=2)
    _check.integer("d", d, lo=K + 1)
    return jnp.eye(K, d)


def multiclass_pair_patterns(alpha, K: int, d: int) -> jax.Array:
    """Two K-class tasks (2, K, d): task 1's class k is e_k, task 2's is alpha e_k + sqrt(1 - alpha^2) e_{K+k}, so
    each task's patterns are orthonormal and class k of task 1 . class j of task 2 = alpha [j = k]. ``alpha`` may be
    traced; irrelevant patterns: data.irrelevant_patterns(patterns.reshape(-1, d))."""
    _check.integer("K", K, lo=2)
    _check.integer("d", d, lo=2 * K + 1)
    if isinstance(alpha, (int, float)):
        _check.in_range("alpha", alpha, -1.0, 1.0)
    alpha = jnp.asarray(alpha, jnp.float32)
    eye = jnp.eye(2 * K, d)
    t1 = eye[:K]
    t2 = alpha * t1 + jnp.sqrt(jnp.clip(1.0 - alpha**2, 0.0)) * eye[K:]
    return jnp.stack([t1, t2])


def sample_multiclass(key: jax.Array, mus_KxD: jax.Array, irr: jax.Array, n: int, spec: Data = Data()):
    """n samples of the K-class task with class patterns ``mus`` (K, d). Returns X (n, P, d) float32 and y (n,)
    int32 class ids, uniform over the K classes. Pure and jit/vmap-able over ``key`` and ``mus``. The tokens are
    rows of ``multiclass_table(mus, irr)`` picked by ``multiclass_ids`` (then Gaussian noise, if sigma > 0)."""
    ids, y = multiclass_ids(key, mus_KxD.shape[0], irr.shape[0], n, spec)
    X = multiclass_table(mus_KxD, irr)[ids]
    if spec.sigma > 0:
        X = X + spec.sigma * jax.random.normal(jax.random.split(key, 5)[4], X.shape)
    return X.astype(jnp.float32), y


def multiclass_table(mus_KxD: jax.Array, irr: jax.Array) -> jax.Array:
    """The patterns a noiseless K-class sample's tokens are drawn from: the K class patterns, then the v_j."""
    return jnp.concatenate([jnp.asarray(mus_KxD, jnp.float32), jnp.asarray(irr, jnp.float32)])


def multiclass_ids(key: jax.Array, K: int, M: int, n: int, spec: Data = Data()):
    """The draws of ``sample_multiclass`` as rows of ``multiclass_table`` (n, P) int32 (class c: c; v_j: K + j) and
    the labels y (n,) int32; the same random streams."""
    P, n_rel, n_conf = spec.P, spec.n_rel, spec.n_conf
    if K < 2:
        _check.fail("K", K, "must be >= 2 (a multi-class task needs another class for its confusion tokens)")
    n_irr = P - n_rel - n_conf
    k_y, k_conf, k_pos, k_irr, _ = jax.random.split(key, 5)
    y = jax.random.randint(k_y, (n,), 0, K)
    other_NxC = (y[:, None] + jax.random.randint(k_conf, (n, n_conf), 1, K)) % K     # uniform over the K-1 others
    # Token class before shuffling: the label n_rel times, the confusion classes, then -1 for irrelevant tokens.
    cls_NxP = jnp.concatenate([jnp.repeat(y[:, None], n_rel, 1), other_NxC, jnp.full((n, n_irr), -1, y.dtype)], 1)
    cls_NxP = jnp.take_along_axis(cls_NxP, data.argsort_rows(jax.random.uniform(k_pos, (n, P))), axis=1)
    j_NxP = jax.random.randint(k_irr, (n, P), 0, M)
    return jnp.where(cls_NxP >= 0, cls_NxP, K + j_NxP).astype(jnp.int32), y.astype(jnp.int32)


# ---------------------------------------------------------------------------------------------------- label noise


def flip_labels(key: jax.Array, y: jax.Array, eta_flip, n_classes: int | None = None) -> jax.Array:
    """Each label, with probability eta_flip: -y (binary, y in {+1, -1}) or, with ``n_classes``, a class drawn
    uniformly from the other K - 1. ``eta_flip`` may be traced."""
    if isinstance(eta_flip, (int, float)):
        _check.in_range("eta_flip", eta_flip, 0.0, 1.0)
    k_flip, k_to = jax.random.split(key)
    flip = jax.random.bernoulli(k_flip, eta_flip, y.shape)
    if n_classes is None:
        return jnp.where(flip, -y, y)
    _check.integer("n_classes", n_classes, lo=2)
    return jnp.where(flip, (y + jax.random.randint(k_to, y.shape, 1, n_classes)) % n_classes, y).astype(y.dtype)


def sample_flipped(key: jax.Array, mu: jax.Array, irr: jax.Array, n: int, spec: Data = Data(),
                   eta_flip=0.0, *, train: bool = True, sampler: Callable = data.sample):
    """``sampler(key, mu, irr, n, spec)`` (data.sample, or sample_multiclass with mu (K, d)) with the labels of a
    training set flipped at rate eta_flip (``flip_labels``; stream fold_in(key, LABEL_NOISE)). ``train=False``: the
    same X with clean labels, for test sets. ``train`` and ``sampler`` are static."""
    X, y = sampler(key, mu, irr, n, spec)
    if not train:
        return X, y
    multiclass = jnp.issubdtype(y.dtype, jnp.integer)
    return X, flip_labels(jax.random.fold_in(key, LABEL_NOISE), y, eta_flip, mu.shape[0] if multiclass else None)


# ------------------------------------------------------------------------------------------- a config's samples


def pair_patterns(alpha, spec: Data) -> jax.Array:
    """The pair of tasks of a data config at relation alpha: (2, d) binary patterns (data.pair_patterns), or
    (2, K, d) class patterns with ``spec.classes`` = K >= 3 (``multiclass_pair_patterns``). ``alpha`` may be
    traced."""
    if spec.multiclass:
        return multiclass_pair_patterns(alpha, spec.classes, spec.d)
    return data.pair_patterns(alpha, spec.d)


def sample(key: jax.Array, mu: jax.Array, irr: jax.Array, n: int, spec: Data = Data()):
    """Clean samples (test and validation sets) of a data config's task: data.sample, or ``sample_multiclass`` for
    K >= 3 classes (``mu`` then (K, d))."""
    if spec.multiclass:
        return sample_multiclass(key, mu, irr, n, spec)
    return data.sample(key, mu, irr, n, spec)


def train_sample(key: jax.Array, mu: jax.Array, irr: jax.Array, n: int, spec: Data = Data()):
    """Training samples of a data config's task: ``sample``, with the labels flipped at rate ``spec.label_noise``
    (stream streams.LABEL_FLIP of ``key``). Without label noise these are ``sample``'s, bit for bit."""
    X, y = sample(key, mu, irr, n, spec)
    return X, _training_labels(key, y, spec)


def _training_labels(key: jax.Array, y: jax.Array, spec: Data) -> jax.Array:
    """The labels of a training sample drawn from ``key``: y, flipped at rate ``spec.label_noise`` (stream
    LABEL_FLIP of ``key``); y itself, untouched, without label noise."""
    if spec.label_noise == 0:
        return y
    return flip_labels(jax.random.fold_in(key, LABEL_NOISE), y, spec.label_noise,
                       spec.classes if spec.multiclass else None)


# ------------------------------------------------------------------------------------------------ tokens as ids


def token_ids(spec: Data) -> bool:
    """Whether a data config's tokens are rows of a finite pattern table (no token noise): then training batches
    can be drawn as ids (``train_ids``) apart from the network, and gathered from ``table`` at each step."""
    return spec.sigma == 0


def table(mu: jax.Array, irr: jax.Array, spec: Data) -> jax.Array:
    """The pattern table of a task of a data config (``data.token_table``, or ``multiclass_table``)."""
    return multiclass_table(mu, irr) if spec.multiclass else data.token_table(mu, irr)


def train_ids(key: jax.Array, M: int, n: int, spec: Data = Data()):
    """``train_sample``'s draws as ids into ``table(mu, irr, spec)`` (n, P), for M irrelevant patterns, and its
    labels (label noise included): table[ids] is train_sample's X, bit for bit, when ``token_ids(spec)``."""
    if spec.multiclass:
        ids, y = multiclass_ids(key, spec.classes, M, n, spec)
    else:
        ids, y = data.sample_ids(key, M, n, spec)
    return ids, _training_labels(key, y, spec)
