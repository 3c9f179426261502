"""Task-vector algebra on parameter pytrees (the paper's Definition 1 and Eq. 2; theory.md sections 4-5).

A task vector dPsi_T = Psi*_T - Psi_0 has the structure of the parameters. Every operation is a tree map, so the
same code serves the merged (W, V) and the four-matrix form, and any other pytree of arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

Tree = dict

# The element-wise operations and reductions below (task_vector, add, sub, scale, inner, norm, cosine) are jitted:
# one compiled program per tree of shapes. Called eagerly on a network with many parameter shapes (a ViT, the LM), a
# tree map would compile one small program per operation and leaf shape instead (digits compiled ~100 of them for
# its cosines alone); inside a jit nothing changes.


@jax.jit
def task_vector(finetuned: Tree, pretrained: Tree) -> Tree:
    """dPsi_T = Psi*_T - Psi_0 (Definition 1)."""
    return otu.tree_sub(finetuned, pretrained)


@jax.jit
def add(a: Tree, b: Tree) -> Tree:
    return otu.tree_add(a, b)


@jax.jit
def sub(a: Tree, b: Tree) -> Tree:
    return otu.tree_sub(a, b)


@jax.jit
def scale(c, t: Tree) -> Tree:
    return otu.tree_scale(c, t)


def negate(t: Tree) -> Tree:
    return scale(-1.0, t)


def combine(taus: Sequence[Tree], lams) -> Tree:
    """sum_i lambda_i dPsi_Ti. ``lams`` may be traced (vmap over a coefficient grid)."""
    if len(taus) == 0:
        raise ValueError("taus=[]: at least one task vector is needed")
    lams = jnp.asarray(lams)
    if lams.shape != (len(taus),):
        raise ValueError(f"lams shape={lams.shape}: must be ({len(taus)},), one coefficient per task vector")
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *taus)
    return jax.tree.map(lambda x: jnp.tensordot(lams.astype(x.dtype), x, axes=1), stacked)


def tree_sum(taus: Sequence[Tree]) -> Tree:
    return combine(taus, jnp.ones(len(taus)))


def apply(psi0: Tree, taus: Sequence[Tree] | Mapping[int, Tree], lams=None) -> Tree:
    """Psi = Psi_0 + sum_i lambda_i dPsi_Ti (Eq. 2).

    Either ``apply(psi0, [tau_1, tau_2], [l1, l2])`` or ``apply(psi0, [(tau_1, l1), (tau_2, l2)])``.
    """
    if lams is None:
        pairs = list(taus)
        taus, lams = [t for t, _ in pairs], [c for _, c in pairs]
    if len(taus) == 0:
        return psi0
    return add(psi0, combine(list(taus), lams))


@jax.jit
def inner(a: Tree, b: Tree) -> jax.Array:
    return otu.tree_vdot(a, b)


@jax.jit
def norm(t: Tree) -> jax.Array:
    return otu.tree_norm(t)


@jax.jit
def cosine(a: Tree, b: Tree) -> jax.Array:
    """Signed cosine similarity <a, b> / (||a|| ||b||) of two task vectors."""
    return inner(a, b) / (norm(a) * norm(b))


def low_rank(t: Tree, rank: int) -> tuple[Tree, Tree]:
    """Rank-r truncation of every matrix leaf by SVD (Corollary 1); vectors and scalars are kept as they are.

    Returns (approximation, relative Frobenius error ||t - t_r||_F / ||t||_F per leaf; 0 for a zero leaf).
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank={rank!r}: must be an integer >= 1")

    approx = jax.tree.map(lambda x: _truncate(x, rank), t)

    def rel_err(x, xr):
        nx = jnp.linalg.norm(x)
        return jnp.where(nx > 0, jnp.linalg.norm(x - xr) / jnp.where(nx > 0, nx, 1.0), 0.0)

    return approx, jax.tree.map(rel_err, t, approx)


def prune_rows(t: Tree, keep_fraction: float, leaf: str = "V") -> tuple[Tree, jax.Array]:
    """Keep the ``round(keep_fraction * m)`` rows of ``t[leaf]`` (dV: one row u_i per hidden neuron) with the
    largest norms and zero the rest (Corollary 2). Other leaves are kept. Returns (pruned tree, boolean row mask).
    """
    if not (0.0 < keep_fraction <= 1.0):
        raise ValueError(f"keep_fraction={keep_fraction!r}: must be in (0, 1]")
    if leaf not in t:
        raise ValueError(f"leaf={leaf!r}: not a parameter of this tree (has {sorted(t)})")
    rows = t[leaf]
    m = rows.shape[0]
    mask = _largest_rows(rows, max(1, int(round(keep_fraction * m))))
    return {**t, leaf: jnp.where(mask[:, None], rows, 0.0)}, mask


def compress(t: Tree, rank=0, keep=1.0) -> Tree:
    """The task vector the corollaries speak of: rank-r truncation of every matrix (rank 0: dense), then the rows of
    dV (or W_O's rows in the four-matrix form) pruned to the largest ``keep`` fraction by norm (as ``low_rank`` and
    ``prune_rows``). ``rank`` and ``keep`` may be traced, so one compiled program serves every variant; rank 0 and
    keep 1 return the leaves untouched, bit for bit."""
    rank, keep = jnp.asarray(rank), jnp.asarray(keep)
    t = jax.tree.map(lambda x: _truncate(x, rank), t)
    leaf = "V" if "V" in t else "W_O"
    rows = t[leaf]
    mask = _largest_rows(rows, jnp.maximum(1, jnp.round(keep * rows.shape[0])))
    return {**t, leaf: jnp.where(mask[:, None], rows, 0.0)}


def _truncate(x: jax.Array, rank) -> jax.Array:
    """x with every singular value after the ``rank`` largest set to zero (matrices; other leaves as they are).
    ``rank`` may be traced; rank 0 returns x itself. Zeroing instead of slicing keeps shapes static; the product
    equals the sliced one up to float rounding (bit for bit at this suite's shapes, 32 x 32 and 256 x 32)."""
    if x.ndim < 2:
        return x
    u, s, vt = jnp.linalg.svd(x, full_matrices=False)
    s = jnp.where(jnp.arange(s.shape[-1]) < rank, s, 0.0)
    return jnp.where(rank > 0, (u * s[..., None, :]) @ vt, x)


def _largest_rows(rows: jax.Array, n_keep) -> jax.Array:
    """Boolean mask of the ``n_keep`` rows with the largest norms (ties: earlier rows first); n_keep may be traced."""
    position = jnp.argsort(jnp.argsort(-jnp.linalg.norm(rows, axis=1), stable=True), stable=True)
    return position < n_keep
