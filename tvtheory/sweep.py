"""Batched grids: seeds and coefficient grids are array axes inside compiled code (design.md). A sweep runs in stages
(Psi_0, fine-tunes, evaluation), each compiled once per shape and reused for every alpha, so that each stage's
results can be cached per seed and a killed sweep resumes.

Evaluating Psi_0 + sum_k c_k dPsi_k on a grid of coefficient vectors c reuses the lambda-independent products: in the
merged form the pre-activations are affine in c,
    X^T W(c) X = X^T W_0 X + sum_k c_k X^T dW_k X,      V(c) X = V_0 X + sum_k c_k dV_k X,
so each grid point pays only the softmax, the attention-weighted sum and the ReLU (in the four-matrix form the merged
weights are quadratic in c, which the same loop handles with the products c_k c_l as extra coefficients). The test
set is walked in blocks and grid points one (or ``chunk``) at a time, so memory stays bounded whatever the grid size;
on CPU one point at a time over blocks of ~3200 tokens is fastest, because the per-point work is bound by moving
those products. Samples whose P tokens come from a few patterns are first reduced to their distinct tokens and
counts (exact), which shrinks every product by the ratio of distinct tokens to P.
"""

from __future__ import annotations

import hashlib
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tvtheory import cache, data, metrics, model, taskvec, train
from tvtheory.specs import grid

# One PRNG stream per concern, derived from the seed's key (batch t of a fine-tune is fold_in(ft_key, t)).
# PRETRAIN draws Psi_0's weights; PRETRAIN_SGD the batches of its optional pre-training.
PRETRAIN, FINETUNE, TEST, PRETRAIN_SGD = 0, 1, 2, 3


def stream_key(seed_key: jax.Array, concern: int, task_index) -> jax.Array:
    """The key of one concern (FINETUNE or TEST) for one task of a seed; ``task_index`` may be traced."""
    return jax.random.fold_in(jax.random.fold_in(seed_key, concern), task_index)


def streams(seed_key: jax.Array, n_tasks: int) -> dict[str, jax.Array]:
    """Keys for Psi_0, the fine-tune of each task, and the test set of each task."""
    per_task = lambda c: jax.vmap(lambda i: stream_key(seed_key, c, i))(jnp.arange(n_tasks))  # noqa: E731
    return {"init": jax.random.fold_in(seed_key, PRETRAIN), "ft": per_task(FINETUNE), "test": per_task(TEST)}


def _seed_key(key: jax.Array, s) -> jax.Array:
    """The key of seed index ``s`` of a sweep whose key is jax.random.key(seed); ``s`` may be traced."""
    return jax.random.fold_in(key, s)


def seed_keys(seed: int, n_seeds: int) -> jax.Array:
    return jax.vmap(lambda s: _seed_key(jax.random.key(seed), s))(jnp.arange(n_seeds))


def grid_eval(base, taus, coeffs_GxK: jax.Array, X: jax.Array, y: jax.Array, chunk: int = 1,
              block: int | None = None, q: int | None = None):
    """Hinge loss and accuracy of base + sum_k c_k taus[k] on (X, y) for every row c of coeffs. Returns two (G,).

    ``taus`` is a pytree whose leaves carry a leading axis K (stacked task vectors). The merged form walks the test
    set in blocks of ``block`` samples (default: ~3200 tokens' worth) and, inside a block, the whole grid: the
    block's precomputed products stay in cache while every grid point reuses them (the loop is memory-bound the
    other way round). With ``q`` < P each sample is first reduced to its at most q distinct tokens and their counts
    (model.distinct_tokens; exact), which shrinks those products by q/P; a sample with more than q distinct tokens
    turns the result into NaN, never into a wrong number.
    """
    if "W" not in base:                                       # four-matrix form: quadratic in c
        base, taus, coeffs_GxK = _four_as_merged(base, taus, coeffs_GxK)
    N, P, D = X.shape
    q = P if q is None else min(q, P)
    nb = min(block or max(1, 3200 // q), N)          # measured on 2 cores: larger blocks spill out of cache
    pad = -N % nb
    w = jnp.concatenate([jnp.ones(N), jnp.zeros(pad)]).reshape(-1, nb)      # padding samples weigh nothing
    Xb = jnp.concatenate([X, jnp.zeros((pad, P, D), X.dtype)]).reshape(-1, nb, P, D)
    yb = jnp.concatenate([y, jnp.ones(pad, y.dtype)]).reshape(-1, nb)
    a = model.readout(base["V"].shape[0])

    def one_block(args):
        X, y, w = args
        U, c = model.distinct_tokens(X, q) if q < P else (X, jnp.ones(X.shape[:2], X.dtype))
        log_c = jnp.where(c > 0, jnp.log(jnp.maximum(c, 1.0)), -jnp.inf)[:, None, :]     # key k counts c_k times
        S0_NxQxQ = jnp.einsum("nsd,nld->nls", U, U @ base["W"].T) + log_c
        H0_NxQxM = U @ base["V"].T
        Sk_KxNxQxQ = jnp.einsum("nsd,knld->knls", U, jnp.einsum("npd,ked->knpe", U, taus["W"]))
        Hk_KxNxQxM = jnp.einsum("npd,kmd->knpm", U, taus["V"])
        # Split by task vector here, once per block: indexing the stacked products inside ``point`` made XLA copy
        # each (N, Q, M) slice once per grid point, which made a point 1.1-1.2x as costly at K = 1 and 1.7x at K = 3.
        Sk = [Sk_KxNxQxQ[k] for k in range(Sk_KxNxQxQ.shape[0])]
        Hk = [Hk_KxNxQxM[k] for k in range(Hk_KxNxQxM.shape[0])]
        weight_NxQ = c / P                                     # query j stands for c_j of the P positions

        def point(c_K):
            # An unrolled sum over the K task vectors fuses into the attention kernel; a tensordot over K does not.
            S, H = S0_NxQxQ, H0_NxQxM
            for k in range(c_K.shape[0]):
                S, H = S + c_K[k] * Sk[k], H + c_K[k] * Hk[k]
            # c_j ReLU(z) = ReLU(c_j z) for c_j >= 0: weighting the rows of the attention keeps ReLU and the sum
            # over queries inside the attention kernel.
            G = jax.nn.relu((jax.nn.softmax(S, axis=-1) * weight_NxQ[..., None]) @ H)
            f = G.sum(axis=-2) @ a
            return jnp.sum(w * jax.nn.relu(1.0 - y * f)), jnp.sum(w * (y * f > 0))

        loss, correct = jax.lax.map(point, coeffs_GxK, batch_size=chunk if chunk > 1 else None)
        return loss, correct, jnp.all(model.complete(c, P) | (w == 0))

    loss_sum, correct, ok = jax.lax.map(one_block, (Xb, yb, w))
    nan_unless_ok = jnp.where(jnp.all(ok), 1.0, jnp.nan)
    return loss_sum.sum(0) / N * nan_unless_ok, correct.sum(0) / N * nan_unless_ok


def _four_as_merged(base, taus, coeffs_GxK):
    """The four-matrix form's grid as a merged-form grid with K + K^2 terms. With W_Q(c) = W_Q + sum_k c_k dW_Q,k and
    so on, the merged weights are quadratic in c:
        W_K(c)^T W_Q(c) = W_0 + sum_k c_k (W_K^T dW_Q,k + dW_K,k^T W_Q) + sum_kl c_k c_l dW_K,k^T dW_Q,l
    (and V(c) = W_O(c) W_V(c) likewise), so each product with the test set is still computed once and each grid point
    pays only for its coefficients (c_k, then c_k c_l)."""
    def expand(A0, B0, dA, dB):                # A(c) B(c): constant, linear and quadratic terms
        lin = jnp.einsum("kij,jl->kil", dA, B0) + jnp.einsum("ij,kjl->kil", A0, dB)
        quad = jnp.einsum("kij,ljm->klim", dA, dB).reshape(-1, *lin.shape[1:])
        return A0 @ B0, jnp.concatenate([lin, quad])

    W0, dW = expand(base["W_K"].T, base["W_Q"], jnp.swapaxes(taus["W_K"], 1, 2), taus["W_Q"])
    V0, dV = expand(base["W_O"], base["W_V"], taus["W_O"], taus["W_V"])
    quad_coeffs = jnp.einsum("gk,gl->gkl", coeffs_GxK, coeffs_GxK).reshape(coeffs_GxK.shape[0], -1)
    return {"W": W0, "V": V0}, {"W": dW, "V": dV}, jnp.concatenate([coeffs_GxK, quad_coeffs], axis=1)


class PairSweep(NamedTuple):
    """Theorems 1-2 for every (alpha, seed): Psi_0 + dPsi_T1 + lambda dPsi_T2 on T1's and T2's test sets."""

    loss: jax.Array          # (A, S, L, 2)   last axis: task T1, T2
    acc: jax.Array           # (A, S, L, 2)
    finite: jax.Array        # (A, S) both fine-tunes stayed finite
    single_loss: jax.Array   # (A, S, 2) Psi*_T1 on T1, Psi*_T2 on T2
    alpha_hat: jax.Array     # (A, S) output cosine of Psi*_T1 and Psi*_T2
    tv_cosine: jax.Array     # (A, S) cosine of dPsi_T1 and dPsi_T2 in parameter space
    norms: jax.Array         # (A, S, 2, 2) ||dW||_F, ||dV||_F for T1, T2 (merged weights: model.merged_delta)
    psi0: dict               # Psi_0, leaves (S, ...)


class Setup(NamedTuple):
    """Everything static about a sweep: shapes, Psi_0's distribution, the task sampler and SGD."""

    d: int
    m: int
    task: data.TaskSpec
    spec: train.TrainSpec
    form: str = "merged"
    sigma_0: float = 0.01
    sigma_w: float = 0.0
    random_irrelevant: bool = False
    pretrain_tasks: int = 0              # > 0: Psi_0 is SGD-trained briefly on that many tasks outside the studied span
    pretrain_steps: int = 0

    def fields(self) -> dict:
        f = {"d": self.d, "m": self.m, "form": self.form, "sigma_0": self.sigma_0, "sigma_w": self.sigma_w,
             "task": list(self.task), "train": list(self.spec), "irrelevant": self.random_irrelevant}
        if self.pretrain_tasks:          # absent otherwise, so that the random Psi_0's cache keys stay as they were
            f["pretrain"] = [self.pretrain_tasks, self.pretrain_steps]
        return f

    def pretrain_spec(self) -> train.TrainSpec:
        """Psi_0's pre-training: the fine-tunes' step size and batch, ``pretrain_steps`` steps of fresh samples."""
        return self.spec._replace(steps=self.pretrain_steps, log_every=self.pretrain_steps, n_train=0)


@partial(jax.jit, static_argnames=("setup",))
def init_seeds(key, seed_ids, pre_mus=None, pre_irr=None, *, setup: Setup):
    """Psi_0 for each seed index: weights from stream PRETRAIN of the seed's key; with ``setup.pretrain_tasks``,
    then SGD on the mixture of the pre-training tasks (pre_mus (K, d), pre_irr (K, M, d); stream PRETRAIN_SGD)."""
    def init(s):
        return model.init_params(streams(_seed_key(key, s), 1)["init"], setup.d, setup.m, setup.form, setup.sigma_0,
                                 setup.sigma_w)
    if not setup.pretrain_tasks:
        # One seed at a time: the same bits as a vmap, but the vmapped threefry draws took 1.4-2.8 s to compile on
        # one core against 0.7-0.9 s, and a sweep compiles this once per (d, m) shape (12 times for scaling).
        return jax.lax.map(init, seed_ids)

    def one(s):
        k = jax.random.fold_in(_seed_key(key, s), PRETRAIN_SGD)
        return train.finetune(init(s), k, pre_mus, pre_irr, setup.task, setup.pretrain_spec()).params
    return jax.lax.map(one, seed_ids)


@partial(jax.jit, static_argnames=("setup",))
def finetune_seeds(key, seed_ids, psi0_S, mu, irr, task_index, *, setup: Setup):
    """Psi*_T for each seed (stream FINETUNE, task index ``task_index``, traced: one compilation serves every task);
    one run at a time (lax.map), which on CPU beats a vmapped SGD step of small matmuls."""
    def one(args):
        s, p0 = args
        k = stream_key(_seed_key(key, s), FINETUNE, task_index)
        return train.finetune(p0, k, mu, irr, setup.task, setup.spec)
    return jax.lax.map(one, (seed_ids, psi0_S))


class Compression(NamedTuple):
    """The task vectors used (Corollaries 1-2): rank-r truncation (0: dense), kept fraction of dV's rows."""

    rank: int = 0
    keep: float = 1.0

    def apply(self, tau):
        return taskvec.compress(tau, self.rank, self.keep)


@partial(jax.jit, static_argnames=("setup", "n_test", "n_alpha_hat", "chunk"))
def pair_eval(key, seed_ids, mus_2xD, irr, psi0_S, tau1_S, tau2_S, lams_L, *, setup: Setup, n_test: int,
              n_alpha_hat: int, chunk: int, comp: Compression = Compression()):
    """Per seed: Psi_0 + dPsi_T1 + lambda dPsi_T2 on both tasks' test sets (stream TEST), plus diagnostics."""
    coeffs_Lx1 = lams_L[:, None]
    q = setup.task.max_distinct(irr.shape[0])

    def one(args):
        s, psi0, tau1, tau2 = args
        tau1, tau2 = comp.apply(tau1), comp.apply(tau2)
        test_keys = streams(_seed_key(key, s), 2)["test"]
        base = taskvec.add(psi0, tau1)
        psi2 = taskvec.add(psi0, tau2)
        out_loss, out_acc, single, Xmix = [], [], [], []
        for i, own in enumerate((base, psi2)):
            X, y = data.sample(test_keys[i], mus_2xD[i], irr, n_test, setup.task)
            lo, ac = grid_eval(base, jax.tree.map(lambda t: t[None], tau2), coeffs_Lx1, X, y, chunk, q=q)
            out_loss.append(lo)
            out_acc.append(ac)
            single.append(metrics.hinge(model.apply(own, X[:n_alpha_hat]), y[:n_alpha_hat]))
            Xmix.append(X[:n_alpha_hat])
        norms = jnp.array([[jnp.linalg.norm(x) for x in model.merged_delta(psi0, t)] for t in (tau1, tau2)])
        return (jnp.stack(out_loss, -1), jnp.stack(out_acc, -1), jnp.stack(single),
                metrics.alpha_hat(base, psi2, jnp.concatenate(Xmix)), taskvec.cosine(tau1, tau2), norms)

    return jax.lax.map(one, (seed_ids, psi0_S, tau1_S, tau2_S))


def _comp_fields(comp: Compression) -> dict:
    return {} if comp == Compression() else {"rank": comp.rank, "keep": comp.keep}


def _select(tree, ids):
    return jax.tree.map(lambda x: jnp.asarray(x)[ids], tree)


def per_seed(store: cache.Store, kind: str, fields_of, seed_ids: np.ndarray, compute, like=None):
    """Each seed's entry of ``kind`` (fields ``fields_of(s)``), stacked along a leading seed axis: loaded where cached,
    the missing seeds computed in one call ``compute(ids)`` (a pytree with a leading axis over ids) and stored one by
    one. Results stay the same bits whichever seeds were cached, as long as ``compute`` treats each seed alone.
    ``like``: one seed's entry (arrays or ShapeDtypeStructs); by default traced from ``compute`` on one seed."""
    if like is None:
        like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                            jax.eval_shape(compute, seed_ids[:1]))
    got = {int(s): store.load(kind, fields_of(int(s)), like) for s in seed_ids}
    missing = np.array([s for s in seed_ids if got[int(s)] is None], dtype=np.int32)
    if missing.size:
        batch = jax.device_get(compute(missing))
        for i, s in enumerate(missing):
            one = jax.tree.map(lambda x: x[i], batch)
            store.save(kind, fields_of(int(s)), one)
            got[int(s)] = one
    return jax.tree.map(lambda *xs: np.stack(xs), *[got[int(s)] for s in seed_ids])


def irrelevant(seed: int, setup: Setup, task_patterns) -> np.ndarray:
    """The v_j for a sweep: basis vectors, or a random orthonormal basis (drawn from the seed) of the complement."""
    key = jax.random.fold_in(jax.random.key(seed), 2**31 - 1) if setup.random_irrelevant else None
    return np.asarray(data.irrelevant_patterns(np.asarray(task_patterns), key=key))


def _digest(*arrays) -> str:
    """A short hash of arrays' values (rounded to 6 decimals), for cache keys."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.round(a, 6), np.float32).tobytes())
    return h.hexdigest()[:16]


def _base_fields(seed: int, setup: Setup, irr=None) -> dict:
    f = {"seed": seed, **setup.fields()}
    if irr is not None:      # the irrelevant patterns shape every sample: a fine-tune's key must see them
        f["irr"] = _digest(irr)
    return f


def pretrained(seed: int, setup: Setup, seed_ids: np.ndarray, store: cache.Store, task_patterns=None):
    """Psi_0 for every seed index, cached per seed. With ``setup.pretrain_tasks``, Psi_0 is pre-trained on tasks
    whose tokens avoid the span of ``task_patterns`` (the patterns of the tasks under study, required then)."""
    key, fields = jax.random.key(seed), _base_fields(seed, setup)
    if not setup.pretrain_tasks:
        return per_seed(store, "psi0", lambda s: {**fields, "s": s}, seed_ids,
                        lambda ids: init_seeds(key, ids, setup=setup))
    if task_patterns is None:
        raise ValueError("pretrain_tasks > 0: Psi_0's pre-training needs the patterns of the tasks under study")
    pre_mus, pre_irr = (np.asarray(x) for x in data.pretraining_tasks(task_patterns, setup.pretrain_tasks))
    fields["pre"] = _digest(pre_mus, pre_irr)
    psi0 = per_seed(store, "psi0", lambda s: {**fields, "s": s}, seed_ids,
                    lambda ids: init_seeds(key, ids, pre_mus, pre_irr, setup=setup))
    if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(psi0)):
        raise train.DivergenceError("Psi_0's pre-training diverged (non-finite parameters); lower train.eta or "
                                    "model.pretrain_steps")
    return psi0


def psi0_eval(seed: int, setup: Setup, seed_ids: np.ndarray, psi0, task_patterns, n_test: int,
              k: int = 0) -> dict[str, np.ndarray]:
    """Psi_0 per seed (leaves (S, ...), as a sweep returns it): the Frobenius norms of its merged W_0 and V_0 (S,),
    and, with k > 0, its hinge loss and accuracy on a test set of each of the k pre-training tasks of
    ``task_patterns`` (S, k; stream TEST, task index 1000 + j)."""
    norms = np.array([[np.linalg.norm(x) for x in model.merged(_select(psi0, i))] for i in range(len(seed_ids))])
    out = {"W0_norm": norms[:, 0], "V0_norm": norms[:, 1]}
    if k:
        mus, irr = data.pretraining_tasks(task_patterns, k)
        key = jax.random.key(seed)

        @jax.jit
        def one(p, s, j):
            X, y = data.sample(stream_key(_seed_key(key, s), TEST, 1000 + j), mus[j], irr[j], n_test, setup.task)
            return metrics.evaluate(p, X, y)

        ev = [[one(_select(psi0, i), s, j) for j in range(k)] for i, s in enumerate(seed_ids)]
        out |= {name: np.array([[float(e[name]) for e in row] for row in ev]) for name in ("loss", "acc")}
    return out


def finetune_all(seed: int, setup: Setup, seed_ids: np.ndarray, psi0, mu, stream: int, irr, store: cache.Store):
    """Psi*_T for every seed from its Psi_0 (TrainResult with a leading seed axis), cached per seed. ``stream`` is the
    task's index among the fine-tune streams of a seed."""
    key, base = jax.random.key(seed), _base_fields(seed, setup, irr)
    mu = np.asarray(mu, np.float32)
    f = lambda s: {**base, "s": s, "mu": np.round(mu.astype(float), 7), "stream": stream}  # noqa: E731
    return per_seed(store, "finetune", f, seed_ids, lambda ids: finetune_seeds(
        key, ids, _select(psi0, ids), mu, irr, stream, setup=setup))


def pair_sweep(seed: int, n_seeds: int, alphas, lams, setup: Setup, *, n_test: int = 2000, n_alpha_hat: int = 500,
               chunk: int = 1, store: cache.Store | None = None, progress=None,
               comp: Compression = Compression()) -> PairSweep:
    """The Theorem 1-2 sweep. Seeds and lambdas are array axes inside compiled code; each stage is compiled once
    and reused for every alpha. T1's fine-tune does not depend on alpha and is shared. With a ``store``, Psi_0,
    every fine-tune and every (alpha, seed) evaluation are cached, so a killed sweep resumes where it stopped and a
    new coefficient grid reuses the fine-tunes."""
    store = store or cache.NoStore()
    d = setup.d
    seed_ids = np.arange(n_seeds, dtype=np.int32)
    alphas = np.asarray(alphas, np.float32)
    lams = np.asarray(lams, np.float32)
    # The irrelevant patterns span the complement of (e_1, e_2), which holds mu_T1 and mu_T2 for every alpha.
    irr = irrelevant(seed, setup, np.eye(d)[:2])
    key, base = jax.random.key(seed), _base_fields(seed, setup, irr)
    psi0 = pretrained(seed, setup, seed_ids, store, np.eye(d)[:2])
    mus = np.asarray(jax.vmap(lambda a: data.pair_patterns(a, d))(alphas))
    finetuned = lambda mu, i: finetune_all(seed, setup, seed_ids, psi0, mu, i, irr, store)  # noqa: E731
    ft1 = finetuned(mus[0, 0], 0)
    tau1 = taskvec.task_vector(ft1.params, psi0)
    cells = []
    for i, a in enumerate(alphas):
        ft2 = finetuned(mus[i, 1], 1)
        tau2 = taskvec.task_vector(ft2.params, psi0)
        f = lambda s: {**base, "s": s, "alpha": float(a), "lams": lams, "n_test": n_test,  # noqa: E731
                       "n_alpha_hat": n_alpha_hat, **_comp_fields(comp)}
        ev = per_seed(store, "pair_eval", f, seed_ids, lambda ids: pair_eval(
            key, ids, mus[i], irr, _select(psi0, ids), _select(tau1, ids), _select(tau2, ids), lams, setup=setup,
            n_test=n_test, n_alpha_hat=n_alpha_hat, chunk=chunk, comp=comp))
        cells.append((*ev, np.asarray(ft1.finite) & np.asarray(ft2.finite)))
        if progress:
            progress(f"alpha {i + 1}/{len(alphas)} ({float(a):g}) done")
    loss, acc, single, ahat, cos, norms, finite = (np.stack(x) for x in zip(*cells))
    return PairSweep(loss, acc, finite, single, ahat, cos, norms, psi0)


class OODSweep(NamedTuple):
    """Theorem 3 for every seed: Psi_0 + sum_i lambda_i dPsi_Ti on the out-of-domain task T'."""

    coeffs: np.ndarray       # (G, K) the coefficient grid
    loss: np.ndarray         # (S, G)
    acc: np.ndarray          # (S, G)
    ref_loss: np.ndarray     # (S, 1 + K) on T': direct fine-tune on T', then Psi_0 + dPsi_Ti for each source
    ref_acc: np.ndarray      # (S, 1 + K)
    finite: np.ndarray       # (S,) every fine-tune of the seed stayed finite
    taus: dict               # task vectors, leaves (S, K, ...)
    psi0: dict               # Psi_0, leaves (S, ...)


def coefficient_grid(ranges) -> np.ndarray:
    """The product grid of per-source ranges [(min, max, step), ...] as rows (G, K), lambda_1 varying slowest."""
    axes = [grid(lo, hi, st) for lo, hi, st in ranges]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=-1).astype(np.float32)


@partial(jax.jit, static_argnames=("setup", "n_test", "chunk"))
def ood_eval(key, seed_ids, target, irr, psi0_S, taus_SxK, direct_S, coeffs_GxK, *, setup: Setup, n_test: int,
             chunk: int, comp: Compression = Compression()):
    """Per seed: the coefficient grid and the references on a test set of T' (stream TEST, index 0)."""
    q = setup.task.max_distinct(irr.shape[0])
    def one(args):
        s, psi0, taus, direct = args
        taus = jax.vmap(comp.apply)(taus)
        X, y = data.sample(streams(_seed_key(key, s), 1)["test"][0], target, irr, n_test, setup.task)
        loss, acc = grid_eval(psi0, taus, coeffs_GxK, X, y, chunk, q=q)
        refs = [direct] + [taskvec.add(psi0, jax.tree.map(lambda t: t[i], taus)) for i in range(coeffs_GxK.shape[1])]
        ev = [metrics.evaluate(p, X, y) for p in refs]
        return loss, acc, jnp.stack([e["loss"] for e in ev]), jnp.stack([e["acc"] for e in ev])
    return jax.lax.map(one, (seed_ids, psi0_S, taus_SxK, direct_S))


def ood_sweep(seed: int, n_seeds: int, gammas, kappa, ranges, setup: Setup, *, n_test: int = 2000, chunk: int = 1,
              store: cache.Store | None = None, comp: Compression = Compression(), progress=None) -> OODSweep:
    """Theorem 3: fine-tune each source task T_i (mu_Ti = e_i) and, as the reference, T' itself; evaluate the
    coefficient grid on T'. Psi_0 and fine-tunes share the cache with the other sweeps."""
    store = store or cache.NoStore()
    sources, target = (np.asarray(x) for x in data.ood_patterns(gammas, kappa, setup.d))
    K = sources.shape[0]
    irr = irrelevant(seed, setup, np.vstack([sources, target]))
    seed_ids = np.arange(n_seeds, dtype=np.int32)
    psi0 = pretrained(seed, setup, seed_ids, store, np.vstack([sources, target]))
    fts = [finetune_all(seed, setup, seed_ids, psi0, sources[i], i, irr, store) for i in range(K)]
    direct = finetune_all(seed, setup, seed_ids, psi0, target, K, irr, store)
    taus = jax.tree.map(lambda *t: np.stack(t, axis=1), *[taskvec.task_vector(f.params, psi0) for f in fts])
    coeffs = coefficient_grid(ranges)
    if coeffs.shape[1] != K:
        raise ValueError(f"ranges: {coeffs.shape[1]} coefficient ranges for {K} source tasks (gammas)")
    fields = {**_base_fields(seed, setup, irr), "gammas": np.round(np.asarray(gammas, float), 7), "kappa": kappa,
              "coeffs": coeffs, "n_test": n_test, **_comp_fields(comp)}
    key = jax.random.key(seed)
    loss, acc, ref_loss, ref_acc = per_seed(
        store, "ood_eval", lambda s: {**fields, "s": s}, seed_ids,
        lambda ids: ood_eval(key, ids, target, irr, _select(psi0, ids), _select(taus, ids), _select(direct.params, ids),
                             coeffs, setup=setup, n_test=n_test, chunk=chunk, comp=comp))
    finite = np.all([np.asarray(f.finite) for f in fts + [direct]], axis=0)
    if progress:
        progress(f"out-of-domain grid of {len(coeffs)} points x {n_seeds} seeds done")
    return OODSweep(coeffs, loss, acc, ref_loss, ref_acc, finite, taus, psi0)
