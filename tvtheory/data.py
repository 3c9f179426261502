"""Synthetic "discriminative pattern" tasks (docs/theory.md section 1; the paper's Definition 2).

A sample is X = (x_1 .. x_P) with every token one of +mu_T, -mu_T or an irrelevant pattern v_j. For label y the
label-relevant pattern y*mu_T appears exactly ``n_rel`` times and the confusion pattern -y*mu_T ``n_conf`` times
(n_rel > n_conf, so y is the majority vote); the other tokens are v_j drawn uniformly. Positions are shuffled.

Pattern constructors are pure jnp so that alpha can be a traced (vmapped) axis; argument checks run only on
concrete Python values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tvtheory import _check
from tvtheory.config import Data, check_ood_target


def pair_patterns(alpha, d: int) -> jax.Array:
    """mu_T1 = e_1, mu_T2 = alpha e_1 + sqrt(1 - alpha^2) e_2, so that mu_T1 . mu_T2 = alpha. Returns (2, d)."""
    _check.integer("d", d, lo=2)
    if isinstance(alpha, (int, float)):
        _check.in_range("alpha", alpha, -1.0, 1.0)
    alpha = jnp.asarray(alpha, jnp.float32)
    mu1 = jnp.zeros(d).at[0].set(1.0)
    mu2 = jnp.zeros(d).at[0].set(alpha).at[1].set(jnp.sqrt(jnp.clip(1.0 - alpha**2, 0.0)))
    return jnp.stack([mu1, mu2])


def ood_patterns(gammas, kappa: float | None, d: int) -> tuple[jax.Array, jax.Array]:
    """Orthonormal sources mu_Ti = e_i (i < k) and the target mu_T' = sum_i gamma_i mu_Ti + kappa mu_perp (Theorem 3).

    ``kappa=None`` takes kappa = sqrt(1 - sum gamma_i^2) so that the target has unit norm; mu_perp = e_{k+1}.
    Returns (sources (k, d), target (d,)).
    """
    g = np.asarray(gammas, dtype=np.float64).reshape(-1)
    k = g.size
    if k == 0:
        _check.fail("gammas", list(gammas), "must hold at least one coefficient")
    kappa = check_ood_target([float(x) for x in g], kappa)
    _check.integer("d", d, lo=k + 1)
    sources = np.eye(d, dtype=np.float32)[:k]
    target = sources.T @ g.astype(np.float32) + kappa * np.eye(d, dtype=np.float32)[k]
    return jnp.asarray(sources), jnp.asarray(target)


def _free_basis(task_patterns) -> tuple[np.ndarray, np.ndarray]:
    """The task patterns as rows (n, d), and the indices j of the basis vectors e_j with no component along any."""
    T = np.asarray(task_patterns, dtype=np.float64)
    T = T.reshape(-1, T.shape[-1])
    return T, np.flatnonzero(np.all(np.abs(T) < 1e-7, axis=0))


def irrelevant_patterns(task_patterns, M: int | None = None, key: jax.Array | None = None) -> jax.Array:
    """M orthonormal patterns v_j orthogonal to every task pattern in play. Returns (M, d).

    Without a key: the standard basis vectors e_j with no component along any task pattern (the default of
    docs/theory.md: e_3..e_d for a pair). With a key: a random orthonormal basis of the orthogonal complement of the
    task patterns' span. ``M=None`` takes as many as the complement holds.
    """
    T, free = _free_basis(task_patterns)
    d = T.shape[1]
    rank = int(np.linalg.matrix_rank(T, tol=1e-6))
    if key is None:
        available = free.size
    else:
        available = d - rank
    if M is None:
        M = available
    _check.integer("M", M, lo=1)
    if M > available:
        _check.fail("d", d, f"too small: {M} irrelevant patterns need {M} free directions beside the task "
                    f"patterns, only {available} exist")
    if key is None:
        return jnp.asarray(np.eye(d, dtype=np.float32)[free[:M]])
    # Orthonormal basis of span(T)^perp, then a random rotation inside it.
    _, _, vt = np.linalg.svd(T, full_matrices=True)
    complement = vt[rank:]                                   # (d - rank, d)
    g = np.asarray(jax.random.normal(key, (d - rank, M)), dtype=np.float64)
    q, _ = np.linalg.qr(g)
    return jnp.asarray((q.T @ complement).astype(np.float32))


def pretraining_tasks(task_patterns, k: int) -> tuple[jax.Array, jax.Array]:
    """k tasks for pre-training Psi_0 whose tokens all lie outside the span of the tasks under study (docs/theory.md
    section 2, the second Psi_0): the patterns are the last k basis vectors e_j with no component along any task
    pattern, and each one's irrelevant patterns are the other such basis vectors. Returns (patterns (k, d),
    irrelevant patterns (k, M, d)), M = (free basis vectors) - 1.
    """
    T, free = _free_basis(task_patterns)
    _check.integer("pretrain_tasks", k, lo=1)
    if k > free.size - 1:
        _check.fail("pretrain_tasks", k, f"too many: d={T.shape[1]} leaves {free.size} basis vectors outside the "
                    f"tasks under study, and each pre-training task needs one more as an irrelevant pattern")
    eye = np.eye(T.shape[1], dtype=np.float32)
    own = free[free.size - k:]
    irr = np.stack([eye[free[free != j]] for j in own])
    return jnp.asarray(eye[own]), jnp.asarray(irr)


def sample(key: jax.Array, mu: jax.Array, irr: jax.Array, n: int, spec: Data = Data()):
    """Draw n samples of the task with pattern mu. Returns X (n, P, d) float32 and y (n,) in {+1, -1}.

    Pure and jit/vmap-able over ``key`` and ``mu``; ``n`` and ``spec`` (its P, n_rel, n_conf, sigma) are static.
    The tokens are rows of ``token_table(mu, irr)`` picked by ``sample_ids`` (then Gaussian noise, if sigma > 0).
    """
    ids, y = sample_ids(key, irr.shape[0], n, spec)
    X = token_table(mu, irr)[ids]
    if spec.sigma > 0:
        X = X + spec.sigma * jax.random.normal(jax.random.split(key, 4)[3], X.shape)
    return X.astype(jnp.float32), y


def token_table(mu: jax.Array, irr: jax.Array) -> jax.Array:
    """The patterns a noiseless binary sample's tokens are drawn from: +mu, -mu, then the irrelevant v_j (2 + M, d).
    Zeros are stored as +0.0, as the sample's arithmetic wrote them (y mu + 0 where a token is +-mu)."""
    mu = jnp.asarray(mu, jnp.float32)
    return jnp.concatenate([mu[None], -mu[None], jnp.asarray(irr, jnp.float32)]) + 0.0


def sample_ids(key: jax.Array, M: int, n: int, spec: Data = Data()):
    """The draws of ``sample`` without the patterns: each token as its row of ``token_table`` (n, P) int32 (0: +mu,
    1: -mu, 2 + j: v_j) and the labels y (n,). The same random streams, so table[ids] is ``sample``'s X when
    sigma = 0, bit for bit. Tokens as ids let training batches be drawn apart from the network that trains on
    them, in one program that every model on the same data shares (sweep.batch_ids)."""
    P, n_rel, n_conf = spec.P, spec.n_rel, spec.n_conf
    n_irr = P - n_rel - n_conf
    k_y, k_pos, k_irr, _ = jax.random.split(key, 4)
    y = jnp.where(jax.random.bernoulli(k_y, 0.5, (n,)), 1.0, -1.0)
    # Token sign before shuffling: +1 label-relevant (y mu), -1 confusion (-y mu), 0 irrelevant.
    sign_P = jnp.concatenate([jnp.ones(n_rel), -jnp.ones(n_conf), jnp.zeros(n_irr)])
    perm_NxP = argsort_rows(jax.random.uniform(k_pos, (n, P)))
    sign_NxP = sign_P[perm_NxP] * y[:, None]
    j_NxP = jax.random.randint(k_irr, (n, P), 0, M)
    return jnp.where(sign_NxP == 0, 2 + j_NxP, jnp.where(sign_NxP > 0, 0, 1)).astype(jnp.int32), y


def argsort_rows(u_NxP: jax.Array) -> jax.Array:
    """jnp.argsort(u, axis=-1, stable=True) for short rows, by counting: the rank of u_i is the number of entries
    before it in a stable order (smaller, or equal with a smaller index), and the sorted position r holds the i of
    rank r. P^2 comparisons per row, exactly the same permutation, ties included; on CPU ~10x faster than a sort at
    P = 20 (a sort was ~10% of an SGD step). Rows longer than 64 use the sort."""
    P = u_NxP.shape[-1]
    if P > 64:
        return jnp.argsort(u_NxP, axis=-1, stable=True)
    i = jnp.arange(P)
    ui, uj = u_NxP[..., :, None], u_NxP[..., None, :]
    before = (uj < ui) | ((uj == ui) & (i[None, :] < i[:, None]))            # before[i, j]: j sorts before i
    rank = before.sum(-1)
    return jnp.argmax(rank[..., None, :] == i[:, None], axis=-1)
