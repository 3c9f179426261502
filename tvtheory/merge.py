"""Model merging on any pytree of task vectors: Psi = Psi_0 + (a merged combination of dPsi_T1, ..., dPsi_TK).

Every method takes ``base`` (Psi_0: a plain dict, an ``nnx.State``, any pytree of arrays) and ``taus`` (a list of
task vectors with base's structure) and returns the merged parameters, base + merged delta. Shared rules:

- Leaf selection: ``include`` / ``exclude`` are tuples of regular expressions, each tried with ``re.search`` on the
  leaf's ``jax.tree_util.keystr(path)`` (e.g. ``"['blocks'][0]['mlp1']['kernel'].value"`` for an nnx.State). A leaf
  is selected when it matches some include pattern (include=None: every leaf) and no exclude pattern. Leaves that
  are not selected are LEFT AT BASE: a merge only ever changes its selected leaves. To give the other leaves plain
  task arithmetic, merge them in a second call, e.g.
  ``task_arithmetic(ties(base, taus, exclude=P), taus, c, include=P)``.
- Non-float leaves (ints, bools, typed PRNG keys: NNX counters and RNG streams) are never touched (base's value),
  whatever the selection; the task vectors' values there are ignored.
- Coefficients: a scalar (broadcast to every task) or one per task, shape (K,). For the methods that return one
  merged vector scaled by one lambda in their papers (TIES, TSV, Iso-C), a per-task list scales each task vector
  before merging; since each of these methods is homogeneous of degree 1, a scalar c gives exactly c times the
  merge and equals the list [c, ..., c] (up to rounding). All coefficients 0 return base's leaves unchanged.
- Every merged leaf keeps base's shape and dtype. The functions are pure and deterministic; jit them with the
  options static, e.g. ``jax.jit(merge.ties, static_argnames=("k", "scope", "include", "exclude"))``.

Methods: task arithmetic (Ilharco et al., 2023), TIES-Merging (Yadav et al., 2023), DARE and DARE-TIES (Yu et al.,
2024), TSV-Merge (Gargiulo et al., 2025), Iso-C (Marczak et al., 2025) and AdaMerging (Yang et al., 2024).
Model Breadcrumbs and EMR-Merging are not implemented (left out for time).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from tvtheory import _check

Tree = Any
Patterns = Sequence[str] | None

SCOPES = ("model", "tensor")
NONMATRIX = ("mean", "sum")
GRANULARITIES = ("task", "leaf")
ENTROPIES = ("binary", "softmax")


# --------------------------------------------------------------------------------------------------------------------
# Leaves, selection, coefficients


class _Split(NamedTuple):
    treedef: Any
    paths: list[str]
    base: list[jax.Array]
    taus: list                         # taus[i]: leaf i of the K task vectors (a tuple, or stacked (K, *shape));
                                       # None where not selected. Stacked only when used (see _stacked), so that
                                       # nothing is computed outside the caller's jit.
    selected: list[bool]
    K: int                             # number of task vectors


def _is_float(x) -> bool:
    return jnp.issubdtype(x.dtype if hasattr(x, "dtype") else jnp.result_type(x), jnp.floating)


def _patterns(field: str, value: Patterns) -> tuple[re.Pattern, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        _check.fail(field, value, "must be a tuple of regular expressions (strings)")
    try:
        return tuple(re.compile(v) for v in value)
    except re.error as e:
        _check.fail(field, value, f"is not a valid regular expression ({e})")


def _split(base: Tree, taus: Sequence[Tree], include: Patterns = None, exclude: Patterns = ()) -> _Split:
    if isinstance(taus, dict) or not isinstance(taus, Sequence) or len(taus) == 0:
        _check.fail("taus", type(taus).__name__ if not isinstance(taus, Sequence) else taus,
                    "must be a non-empty list of task vectors with base's structure")
    inc, exc = _patterns("include", include), _patterns("exclude", exclude) or ()
    with_path, treedef = jax.tree_util.tree_flatten_with_path(base)
    paths = [jax.tree_util.keystr(p) for p, _ in with_path]
    leaves_T = []
    for t, tau in enumerate(taus):
        leaves, td = jax.tree_util.tree_flatten(tau)
        if td != treedef:
            _check.fail(f"taus[{t}]", td, f"must have base's tree structure {treedef}")
        leaves_T.append(leaves)
    selected = [_is_float(leaf) and (inc is None or any(r.search(p) for r in inc)) and not any(r.search(p) for r in exc)
                for p, (_, leaf) in zip(paths, with_path)]
    by_leaf = [tuple(ls) if sel else None for ls, sel in zip(zip(*leaves_T), selected)]
    return _Split(treedef, paths, [leaf for _, leaf in with_path], by_leaf, selected, len(taus))


def _stacked(s: _Split, i: int) -> jax.Array:
    """Leaf i of the K task vectors as one (K, *shape) array."""
    x = s.taus[i]
    return jnp.stack(x) if isinstance(x, tuple) else x


def _rebuild(s: _Split, deltas: dict[int, jax.Array]) -> Tree:
    """Psi_0 + delta on the leaves in ``deltas`` (cast to base's dtype), base's leaf everywhere else."""
    out = [b + deltas[i].astype(jnp.result_type(b)) if i in deltas else b for i, b in enumerate(s.base)]
    return jax.tree_util.tree_unflatten(s.treedef, out)


def _coeffs(field: str, c, K: int) -> jax.Array:
    """The coefficients as an array of shape () (one for all tasks) or (K,); may be traced."""
    c = jnp.asarray(c)
    if c.shape not in ((), (K,)):
        _check.fail(f"{field} shape", c.shape, f"must be () (one for all tasks) or ({K},) (one per task)")
    return c


def _combine(X: jax.Array, c_K: jax.Array) -> jax.Array:
    """sum_k c_k tau_k for one stacked leaf (K, *shape) (c of shape () is broadcast)."""
    # An elementwise product and a sum over K, not tensordot: a dot per leaf triples the compile time.
    return (_per_task(c_K, X) * X).sum(0)


def _per_task(c, X: jax.Array) -> jax.Array:
    """c (shape () or (K,)) shaped to broadcast against stacked leaves X (K, *shape)."""
    return jnp.broadcast_to(c, (X.shape[0],)).astype(X.dtype).reshape((-1,) + (1,) * (X.ndim - 1))


def _homogeneous(s: _Split, coeff, merge_fn) -> Tree:
    """c * merge(taus) for a scalar c, merge(c_1 tau_1, ..., c_K tau_K) for one coefficient per task."""
    c = _coeffs("coeff", coeff, s.K)
    idx = [i for i, sel in enumerate(s.selected) if sel]
    taus = [_stacked(s, i) for i in idx]
    if c.ndim == 1:
        taus = [_per_task(c, x) * x for x in taus]
        c = jnp.ones(())
    merged = merge_fn(taus)
    return _rebuild(s, {i: c.astype(m.dtype) * m for i, m in zip(idx, merged)})


def leaf_paths(base: Tree, include: Patterns = None, exclude: Patterns = ()) -> list[str]:
    """keystr paths of the leaves a merge with this selection changes, in flatten order (the rows of AdaMerging's
    leaf-wise coefficients)."""
    s = _split(base, [base], include, exclude)
    return [p for p, sel in zip(s.paths, s.selected) if sel]


# --------------------------------------------------------------------------------------------------------------------
# Task arithmetic and DARE


def task_arithmetic(base: Tree, taus: Sequence[Tree], coeffs=1.0, *, include: Patterns = None,
                    exclude: Patterns = ()) -> Tree:
    """Psi_0 + sum_k lambda_k dPsi_Tk (the paper's Eq. 2; Ilharco et al., 2023) on the selected float leaves."""
    s = _split(base, taus, include, exclude)
    c = _coeffs("coeffs", coeffs, len(taus))
    return _rebuild(s, {i: _combine(_stacked(s, i), c) for i, sel in enumerate(s.selected) if sel})


def _check_key(key) -> None:
    if not (hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        _check.fail("key", key, "must be a typed key from jax.random.key")


def _flat(X: list[jax.Array]) -> tuple[jax.Array, list[int]]:
    """Stacked leaves (K, *shape_i) side by side as one K x D matrix, and the leaves' sizes."""
    K = X[0].shape[0]
    return jnp.concatenate([x.reshape(K, -1) for x in X], axis=1), [x[0].size for x in X]


def _unflat(F_xD: jax.Array, X: list[jax.Array]) -> list[jax.Array]:
    """The inverse of _flat along the last axis: (..., D) back to leaves (..., *shape_i) in each leaf's dtype."""
    parts = jnp.split(F_xD, list(itertools.accumulate(x[0].size for x in X))[:-1], axis=-1)
    return [f.reshape(f.shape[:-1] + x.shape[1:]).astype(x.dtype) for f, x in zip(parts, X)]


def _segments(sizes: list[int]) -> tuple[jax.Array, jax.Array]:
    """For each entry of the flat vector: its segment (leaf) number and its position within that leaf."""
    seg_D = jnp.repeat(jnp.arange(len(sizes)), jnp.array(sizes), total_repeat_length=sum(sizes))
    starts = jnp.array([0, *itertools.accumulate(sizes)][:-1])
    return seg_D, jnp.arange(sum(sizes)) - starts[seg_D]


def _dare_drop(key, s: _Split, p: float, rescale: bool) -> list[jax.Array | None]:
    """Each selected entry dropped with probability p, survivors scaled by 1/(1-p).

    Entry j of leaf i of task t is kept when uniform(fold_in(fold_in(fold_in(key, i), t), j)) < 1 - p, with i the
    leaf's index in base's flatten order: one stream per task and leaf, independent of which other leaves are
    selected. Drawn for all entries at once: each call site of a random-number function compiles its own hash, so a
    fixed four sites (instead of some per leaf) keep the compile time small on models with many leaves."""
    idx = [i for i, sel in enumerate(s.selected) if sel]
    if not idx:
        return s.taus
    X = [_stacked(s, i) for i in idx]
    F_KxD, sizes = _flat(X)
    K = F_KxD.shape[0]
    seg_D, pos_D = _segments(sizes)
    leaf_keys = jax.vmap(partial(jax.random.fold_in, key))(jnp.array(idx))                       # (L,)
    keys_KxL = jax.vmap(lambda t: jax.vmap(lambda k: jax.random.fold_in(k, t))(leaf_keys))(jnp.arange(K))
    u_KxD = jax.vmap(jax.vmap(lambda k, j: jax.random.uniform(jax.random.fold_in(k, j))), in_axes=(0, None))(
        keys_KxL[:, seg_D], pos_D)
    dropped = jnp.where(u_KxD < 1.0 - p, F_KxD / (1.0 - p) if rescale else F_KxD, jnp.zeros_like(F_KxD))
    out = list(s.taus)
    for i, x in zip(idx, _unflat(dropped, X)):
        out[i] = x
    return out


def dare(key: jax.Array, base: Tree, taus: Sequence[Tree], *, p: float = 0.5, coeffs=1.0, rescale: bool = True,
         include: Patterns = None, exclude: Patterns = ()) -> Tree:
    """DARE (Drop And REscale; Yu et al., 2024): drop each entry of each task vector with probability p, rescale
    the survivors by 1/(1-p) (so each entry is unbiased), then task arithmetic with ``coeffs``. ``key`` is a typed
    key; p = 0 is task arithmetic exactly."""
    _check_key(key)
    _check.in_range("p", p, lo=0.0, hi=1.0, hi_open=True)
    s = _split(base, taus, include, exclude)
    c = _coeffs("coeffs", coeffs, len(taus))
    dropped = _dare_drop(key, s, p, rescale)
    return _rebuild(s, {i: _combine(dropped[i], c) for i, sel in enumerate(s.selected) if sel})


# --------------------------------------------------------------------------------------------------------------------
# TIES


def _check_ties(k: float, scope: str) -> None:
    _check.in_range("k", k, lo=0.0, hi=1.0, lo_open=True)
    if scope not in SCOPES:
        _check.fail("scope", scope, f"must be one of {SCOPES}")


def _n_keep(d: int, k: float) -> int:
    # int(), as the reference code, so that k = 0.2 of 10 entries keeps 2; at least one entry.
    return max(1, int(d * k))


def _ties(X: list[jax.Array], k: float, scope: str) -> list[jax.Array]:
    """Trim, elect, disjoint mean over stacked leaves (K, *shape); the merged delta of each (coefficient 1).

    Works on the K x D matrix of flattened task vectors (all selected leaves side by side), as the reference code."""
    if not X:
        return []
    flat_KxD, sizes = _flat(X)
    abs_KxD = jnp.abs(flat_KxD).astype(jnp.float32)
    # The k-th largest magnitude is the threshold, so every entry tied with it is kept (as the reference's kthvalue).
    if scope == "model":
        thr_KxD = jax.lax.top_k(abs_KxD, _n_keep(abs_KxD.shape[1], k))[0][:, -1:]
    else:
        # One sort by (leaf, -|x|) for all leaves at once; leaf i's threshold sits at its start + n_keep_i - 1.
        seg_D, _ = _segments(sizes)
        desc_KxD = jax.vmap(lambda a: jax.lax.sort((seg_D, -a), num_keys=2)[1])(abs_KxD)
        at_S = jnp.array([a + _n_keep(n, k) - 1 for a, n in zip([0, *itertools.accumulate(sizes)], sizes)])
        thr_KxD = -desc_KxD[:, at_S][:, seg_D]
    trimmed = jnp.where(abs_KxD >= thr_KxD, flat_KxD, 0)
    sign_D = jnp.sign(trimmed.sum(0))
    # An entry whose trimmed values cancel exactly gets the sign of the majority of elected signs (the reference's
    # "majority" rule), over the scope of the trimming. Where all trimmed values are 0 the result is 0 either way.
    if scope == "model":
        majority = jnp.sign(sign_D.sum())
    else:
        majority = jnp.sign(jax.ops.segment_sum(sign_D, seg_D, num_segments=len(sizes)))[seg_D]
    sign_D = jnp.where(sign_D == 0, majority, sign_D)
    agree = jnp.where(sign_D > 0, trimmed > 0, trimmed < 0)
    mean_D = jnp.where(agree, trimmed, 0).sum(0) / jnp.maximum(agree.sum(0), 1).astype(flat_KxD.dtype)
    return _unflat(mean_D, X)


def ties(base: Tree, taus: Sequence[Tree], *, k: float = 0.2, coeff=1.0, scope: str = "model",
         include: Patterns = None, exclude: Patterns = ()) -> Tree:
    """TIES-Merging (Yadav et al., 2023): Psi_0 + lambda * disjoint_mean(elect(trim_k(dPsi_T1..K))).

    Trim: keep each task vector's top-k fraction of entries by magnitude (``int(k * d)`` entries, at least one, and
    every entry tied with the last); elect: sign of the sum of the trimmed values per entry; disjoint mean: the
    mean over the tasks whose trimmed entry is non-zero and has the elected sign (0 where none has).

    scope="model" (default) trims each task vector over all selected leaves together, as the reference code (it
    flattens every parameter of a task into one vector before the top-k) and the paper's description (top-k% of
    the task vector's values); scope="tensor" takes the top-k fraction of each leaf separately (as some later
    implementations do), which keeps every leaf partly alive but no longer prefers the leaves that changed most.
    """
    _check_ties(k, scope)
    s = _split(base, taus, include, exclude)
    return _homogeneous(s, coeff, partial(_ties, k=k, scope=scope))


def dare_ties(key: jax.Array, base: Tree, taus: Sequence[Tree], *, p: float = 0.5, k: float = 1.0, coeff=1.0,
              scope: str = "model", include: Patterns = None, exclude: Patterns = ()) -> Tree:
    """DARE-TIES (Yu et al., 2024, Sec. 4): DARE's random drop and rescale instead of (k=1) or before (k<1)
    TIES's magnitude trim, then TIES's sign election and disjoint mean."""
    _check_key(key)
    _check.in_range("p", p, lo=0.0, hi=1.0, hi_open=True)
    _check_ties(k, scope)
    s = _split(base, taus, include, exclude)
    s = s._replace(taus=_dare_drop(key, s, p, rescale=True))
    return _homogeneous(s, coeff, partial(_ties, k=k, scope=scope))


# --------------------------------------------------------------------------------------------------------------------
# TSV-Merge and Iso-C


def _polar(A: jax.Array) -> jax.Array:
    """The (semi-)orthogonal matrix closest to A in Frobenius norm: P Q^T for A = P S Q^T."""
    P, _, Qt = jnp.linalg.svd(A, full_matrices=False)
    return P @ Qt


def _nonmatrix(X: jax.Array, how: str) -> jax.Array:
    return X.mean(0) if how == "mean" else X.sum(0)


def _tsv(taus: list[jax.Array], rank_fraction: float | None, nonmatrix: str) -> list[jax.Array]:
    out = []
    for leaf in taus:
        K, shape = leaf.shape[0], leaf.shape[1:]
        r = 0
        if len(shape) == 2:
            n = min(shape)
            r = n // K if rank_fraction is None else int(n * rank_fraction)
        if r < 1:
            out.append(_nonmatrix(leaf, nonmatrix))
            continue
        U, S, Vt = jnp.linalg.svd(leaf.astype(jnp.float32), full_matrices=False)   # batched over the K tasks
        U_cat = jnp.concatenate(list(U[:, :, :r]), axis=1)                             # (m, K r)
        s_cat = S[:, :r].reshape(-1)                                                   # (K r,)
        V_cat = jnp.concatenate(list(jnp.swapaxes(Vt[:, :r], 1, 2)), axis=1)           # (n, K r)
        out.append(((_polar(U_cat) * s_cat) @ _polar(V_cat).T).astype(leaf.dtype))
    return out


def tsv(base: Tree, taus: Sequence[Tree], *, coeff=1.0, rank_fraction: float | None = None,
        nonmatrix: str = "mean", include: Patterns = None, exclude: Patterns = ()) -> Tree:
    """TSV-Merge (Gargiulo et al., CVPR 2025, "Task Singular Vectors"): per 2-D leaf, keep each task's top-r
    singular triples (u, sigma, v), concatenate them over tasks (U_cat, sigma_cat, V_cat), replace U_cat and V_cat
    by their closest orthogonal matrices (U_perp = P Q^T for U_cat = P S Q^T; likewise V), and return
    Psi_0 + lambda U_perp diag(sigma_cat) V_perp^T. The orthogonalisation removes the interference between tasks'
    singular directions; task vectors whose row and column spaces are mutually orthogonal are summed exactly.

    r = floor(rank_fraction * min(shape)); rank_fraction=None is 1/K (r = min(shape) // K), the reference's choice,
    so that the K r concatenated directions fit in min(shape). With K r > min(shape) (a larger rank_fraction) the
    polar factor is only semi-orthogonal. A 2-D leaf where r would be 0 (K > min(shape), e.g. a (d, 1) head for two
    tasks) is merged as the other leaves: the reference would zero it (all of its singular values are dropped).

    Other leaves (1-D, scalars, and tensors of 3 or more dimensions such as NNX's attention kernels, since the
    method is defined on matrices) are merged by ``nonmatrix``: "mean" (default; the reference code averages them)
    or "sum" (plain task arithmetic with lambda).
    """
    if rank_fraction is not None:
        _check.in_range("rank_fraction", rank_fraction, lo=0.0, hi=1.0, lo_open=True)
    if nonmatrix not in NONMATRIX:
        _check.fail("nonmatrix", nonmatrix, f"must be one of {NONMATRIX}")
    s = _split(base, taus, include, exclude)
    return _homogeneous(s, coeff, partial(_tsv, rank_fraction=rank_fraction, nonmatrix=nonmatrix))


def _iso_c(taus: list[jax.Array], nonmatrix: str) -> list[jax.Array]:
    out = []
    for leaf in taus:
        if leaf.ndim != 3:                                      # stacked (K, m, n): a matrix leaf
            out.append(_nonmatrix(leaf, nonmatrix))
            continue
        U, S, Vt = jnp.linalg.svd(leaf.sum(0).astype(jnp.float32), full_matrices=False)
        out.append(((U * S.mean()) @ Vt).astype(leaf.dtype))
    return out


def iso_c(base: Tree, taus: Sequence[Tree], *, coeff=1.0, nonmatrix: str = "mean", include: Patterns = None,
          exclude: Patterns = ()) -> Tree:
    """Iso-C (Marczak et al., ICML 2025, "No task left behind: isotropic model merging"): per 2-D leaf, the sum
    Delta = sum_k dPsi_Tk = U diag(sigma) V^T is replaced by mean(sigma) U V^T, a flat spectrum on the same singular
    vectors (every direction of the sum counts equally, so no task's direction is drowned by a dominant one);
    returns Psi_0 + lambda * that.

    Other leaves (1-D, scalars, tensors of 3 or more dimensions): ``nonmatrix="mean"`` (default) as the reference
    code does, or "sum" (plain task arithmetic, the unflattened Delta).
    """
    if nonmatrix not in NONMATRIX:
        _check.fail("nonmatrix", nonmatrix, f"must be one of {NONMATRIX}")
    s = _split(base, taus, include, exclude)
    return _homogeneous(s, coeff, partial(_iso_c, nonmatrix=nonmatrix))


# --------------------------------------------------------------------------------------------------------------------
# AdaMerging


def _entropy(f: jax.Array, kind: str) -> jax.Array:
    """Prediction entropy per input: binary reads p = sigmoid(f) from scalar outputs (N,), softmax logits (N, C)."""
    if kind == "binary":
        # H = p softplus(-f) + (1 - p) softplus(f): stable for large |f|.
        p = jax.nn.sigmoid(f)
        return p * jax.nn.softplus(-f) + (1.0 - p) * jax.nn.softplus(f)
    logp = jax.nn.log_softmax(f, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


@partial(jax.jit, static_argnames=("apply_fn", "treedef", "sel", "steps", "lr", "entropy", "clip", "batch"))
def _adamerge(lam0, base_leaves, tau_leaves, Xs, key, *, apply_fn, treedef, sel, steps, lr, entropy, clip, batch):
    stacked = [jnp.stack(x) for x in tau_leaves]                                     # (K, *shape) per leaf

    def params(lam):
        lam = lam if clip is None else jnp.clip(lam, *clip)
        leaves = list(base_leaves)
        for j, i in enumerate(sel):
            c = lam if lam.ndim == 1 else lam[j]
            leaves[i] = leaves[i] + _combine(stacked[j], c)
        return jax.tree_util.tree_unflatten(treedef, leaves)

    # All tasks' inputs go through one forward pass (one copy of the model in the compiled program); weights
    # 1 / N_t turn the sum of per-input entropies into the sum over tasks of their means.
    sizes = [X.shape[0] if batch is None else batch for X in Xs]
    w_N = jnp.concatenate([jnp.full(n, 1.0 / n) for n in sizes])

    def loss(lam, step):
        if batch is None:
            X = jnp.concatenate(Xs)
        else:
            X = jnp.concatenate([X[jax.random.randint(jax.random.fold_in(jax.random.fold_in(key, step), t), (batch,),
                                                      0, X.shape[0])] for t, X in enumerate(Xs)])
        return jnp.sum(w_N * _entropy(apply_fn(params(lam), X), entropy))

    opt = optax.adam(lr)

    def step(carry, t):
        lam, state = carry
        g = jax.grad(loss)(lam, t)
        u, state = opt.update(g, state, lam)
        return (optax.apply_updates(lam, u), state), None

    (lam, _), _ = jax.lax.scan(step, (lam0, opt.init(lam0)), jnp.arange(steps))
    lam = lam if clip is None else jnp.clip(lam, *clip)
    return params(lam), lam


def adamerging(apply_fn, base: Tree, taus: Sequence[Tree], X_unlabeled, *, granularity: str = "task",
               steps: int = 100, lr: float = 1e-2, init=0.3, entropy: str = "binary",
               clip: tuple[float, float] | None = (0.0, 1.0), batch: int | None = None, key: jax.Array | None = None,
               include: Patterns = None, exclude: Patterns = ()) -> tuple[Tree, jax.Array]:
    """AdaMerging (Yang et al., ICLR 2024): the coefficients of Psi_0 + sum_k lambda_k dPsi_Tk learned without
    labels, by Adam on the summed mean prediction entropy of the merged model ``apply_fn(params, X)`` over the
    unlabeled inputs of the target tasks.

    X_unlabeled: one array (all tasks' inputs pooled) or a list with one array per task (the loss sums the tasks'
    mean entropies, as the reference does). entropy="binary" reads p = sigmoid(f) from scalar outputs (N,) (this
    project's binary models); "softmax" reads logits (N, C). granularity="task": one lambda per task, shape (K,);
    "leaf": one per selected leaf and task, shape (L, K), rows in the order of ``leaf_paths(base, include,
    exclude)`` (the paper's layer-wise AdaMerging, with each parameter tensor as a layer).

    ``init``: the starting coefficient(s), a scalar (the paper's prior 0.3) or an array of the coefficients' shape.
    ``clip``: lambda is clamped to this interval inside the loss and on return, as in the reference code: entropy
    alone rewards any growth of the output scale, so an unclamped lambda may grow without bound (clip=None turns it
    off). ``batch``: inputs drawn per task and step with fold_in(fold_in(key, step), task); None uses every input at
    every step (no key needed).

    The whole loop is one jitted lax.scan. Returns (merged params, learned coefficients). Unselected leaves are left
    at base; with every coefficient fixed at 0 (init=0, steps=0) the result is base.
    """
    if granularity not in GRANULARITIES:
        _check.fail("granularity", granularity, f"must be one of {GRANULARITIES}")
    if entropy not in ENTROPIES:
        _check.fail("entropy", entropy, f"must be one of {ENTROPIES}")
    _check.integer("steps", steps, lo=0)
    _check.in_range("lr", lr, lo=0.0, lo_open=True)
    if clip is not None and not (len(clip) == 2 and clip[0] <= clip[1]):
        _check.fail("clip", clip, "must be None or (lo, hi) with lo <= hi")
    if batch is not None:
        _check.integer("batch", batch, lo=1)
        _check_key(key)
    s = _split(base, taus, include, exclude)
    sel = tuple(i for i, x in enumerate(s.selected) if x)
    K = len(taus)
    shape = (K,) if granularity == "task" else (len(sel), K)
    lam0 = jnp.broadcast_to(jnp.asarray(init, jnp.float32), shape)
    Xs = tuple(X_unlabeled) if isinstance(X_unlabeled, (list, tuple)) else (X_unlabeled,)
    return _adamerge(lam0, s.base, [s.taus[i] for i in sel], Xs, key, apply_fn=apply_fn, treedef=s.treedef, sel=sel,
                     steps=steps, lr=float(lr), entropy=entropy, clip=None if clip is None else tuple(map(float, clip)),
                     batch=batch)
