"""Batched grids: seeds, alphas and coefficient grids as array axes inside one compiled program (design.md).

Evaluating Psi_0 + sum_k c_k dPsi_k on a grid of coefficient vectors c reuses the lambda-independent products: in the
merged form the pre-activations are affine in c,
    X^T W(c) X = X^T W_0 X + sum_k c_k X^T dW_k X,      V(c) X = V_0 X + sum_k c_k dV_k X,
so each grid point pays only the softmax, the attention-weighted sum and the ReLU. Grid points are processed in
chunks (``lax.map(batch_size=...)``) so memory stays bounded whatever the grid size. On CPU a chunk of one point is
fastest: the per-point intermediates (N x P x m) then stay in cache-friendly sizes.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tvtheory import data, metrics, model, taskvec, train

# One PRNG stream per concern, derived from the seed's key (batch t of a fine-tune is fold_in(ft_key, t)).
PRETRAIN, FINETUNE, TEST = 0, 1, 2


def streams(seed_key: jax.Array, n_tasks: int) -> dict[str, jax.Array]:
    """Keys for Psi_0, the fine-tune of each task, and the test set of each task."""
    per_task = lambda s: jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(seed_key, s), i))(  # noqa: E731
        jnp.arange(n_tasks))
    return {"init": jax.random.fold_in(seed_key, PRETRAIN), "ft": per_task(FINETUNE), "test": per_task(TEST)}


def seed_keys(seed: int, n_seeds: int) -> jax.Array:
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(seed), s))(jnp.arange(n_seeds))


def grid_eval(base, taus, coeffs_GxK: jax.Array, X: jax.Array, y: jax.Array, chunk: int = 1):
    """Hinge loss and accuracy of base + sum_k c_k taus[k] on (X, y) for every row c of coeffs. Returns two (G,).

    ``taus`` is a pytree whose leaves carry a leading axis K (stacked task vectors).
    """
    if "W" not in base:                                       # four-matrix form: not affine in c
        def point(c):
            params = jax.tree.map(lambda b, t: b + jnp.tensordot(c, t, axes=1), base, taus)
            return metrics.evaluate(params, X, y)
        out = jax.lax.map(point, coeffs_GxK, batch_size=chunk)
        return out["loss"], out["acc"]

    XW0 = X @ base["W"].T
    S0_NxPxP = jnp.einsum("nsd,nld->nls", X, XW0)
    H0_NxPxM = X @ base["V"].T
    Sk_KxNxPxP = jnp.einsum("nsd,knld->knls", X, jnp.einsum("npd,ked->knpe", X, taus["W"]))
    Hk_KxNxPxM = jnp.einsum("npd,kmd->knpm", X, taus["V"])

    def point(c_K):
        S = S0_NxPxP + jnp.tensordot(c_K, Sk_KxNxPxP, axes=1)
        H = H0_NxPxM + jnp.tensordot(c_K, Hk_KxNxPxM, axes=1)
        f = model.readout_mean(jax.nn.softmax(S, axis=-1), H)
        return metrics.hinge(f, y), metrics.accuracy(f, y)

    return jax.lax.map(point, coeffs_GxK, batch_size=chunk)


class PairSweep(NamedTuple):
    """Theorems 1-2 for every (alpha, seed): Psi_0 + dPsi_T1 + lambda dPsi_T2 on T1's and T2's test sets."""

    loss: jax.Array          # (A, S, L, 2)   last axis: task T1, T2
    acc: jax.Array           # (A, S, L, 2)
    finite: jax.Array        # (A, S) both fine-tunes stayed finite
    single_loss: jax.Array   # (A, S, 2) Psi*_T1 on T1, Psi*_T2 on T2
    alpha_hat: jax.Array     # (A, S) output cosine of Psi*_T1 and Psi*_T2
    tv_cosine: jax.Array     # (A, S) cosine of dPsi_T1 and dPsi_T2 in parameter space
    norms: jax.Array         # (A, S, 2, 2) ||dW||_F, ||dV||_F for T1, T2


def pair_sweep(seed: int, n_seeds: int, alphas, lams, d: int, m: int, task: data.TaskSpec,
               spec: train.TrainSpec, *, form: str = "merged", sigma_0: float = 0.01, sigma_w: float = 0.0,
               n_test: int = 2000, n_alpha_hat: int = 500, chunk: int = 1, random_irrelevant: bool = False):
    """Run the whole Theorem 1-2 sweep as one jitted program. T1's fine-tune does not depend on alpha and is shared."""
    alphas = jnp.asarray(alphas, jnp.float32)
    lams = jnp.asarray(lams, jnp.float32)
    key = jax.random.key(seed)
    # The irrelevant patterns v_j span the complement of (e_1, e_2), which holds mu_T1 and mu_T2 for every alpha.
    irr_key = jax.random.fold_in(key, 2**31 - 1) if random_irrelevant else None
    irr = data.irrelevant_patterns(jnp.eye(d)[:2], key=irr_key)
    return _pair_sweep_jit(key, alphas, lams, irr, n_seeds=n_seeds, d=d, m=m, task=task, spec=spec, form=form,
                           sigma_0=sigma_0, sigma_w=sigma_w, n_test=n_test, n_alpha_hat=n_alpha_hat, chunk=chunk)


@partial(jax.jit, static_argnames=("n_seeds", "d", "m", "task", "spec", "form", "sigma_0", "sigma_w", "n_test",
                                   "n_alpha_hat", "chunk"))
def _pair_sweep_jit(key, alphas_A, lams_L, irr, *, n_seeds, d, m, task, spec, form, sigma_0, sigma_w, n_test,
                    n_alpha_hat, chunk):
    A = alphas_A.shape[0]
    mus_Ax2xD = jax.vmap(lambda a: data.pair_patterns(a, d))(alphas_A)
    ks = jax.vmap(lambda k: streams(k, 2))(jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(n_seeds)))

    psi0_S = jax.vmap(lambda k: model.init_params(k, d, m, form, sigma_0, sigma_w))(ks["init"])
    ft = lambda p0, k, mu: train.finetune(p0, k, mu, irr, task, spec)  # noqa: E731
    mu1_SxD = jnp.broadcast_to(mus_Ax2xD[0, 0], (n_seeds, d))
    ft1_S = jax.lax.map(lambda x: ft(*x), (psi0_S, ks["ft"][:, 0], mu1_SxD))
    idx_a, idx_s = (i.ravel() for i in jnp.meshgrid(jnp.arange(A), jnp.arange(n_seeds), indexing="ij"))
    # lax.map, not vmap, over the A x S fine-tunes of T2: on CPU the batched small matmuls of a vmapped SGD step
    # run slower than the same steps one run at a time.
    ft2 = jax.lax.map(lambda ij: ft(jax.tree.map(lambda p: p[ij[1]], psi0_S), ks["ft"][ij[1], 1],
                                    mus_Ax2xD[ij[0], 1]), (idx_a, idx_s))
    ft2_AxS = jax.tree.map(lambda x: x.reshape((A, n_seeds) + x.shape[1:]), ft2)
    tau1_S = taskvec.task_vector(ft1_S.params, psi0_S)
    tau2_AxS = jax.tree.map(lambda p, p0: p - p0, ft2_AxS.params, psi0_S)

    coeffs_Lx1 = lams_L[:, None]

    def one_pair(a, s):
        base = jax.tree.map(lambda p0, t1: p0[s] + t1[s], psi0_S, tau1_S)
        tau2 = jax.tree.map(lambda t: t[a, s], tau2_AxS)
        out_loss, out_acc, single, Xmix = [], [], [], []
        for i in range(2):
            X, y = data.sample(ks["test"][s, i], mus_Ax2xD[a, i], irr, n_test, task)
            lo, ac = grid_eval(base, jax.tree.map(lambda t: t[None], tau2), coeffs_Lx1, X, y, chunk)
            out_loss.append(lo)
            out_acc.append(ac)
            own = base if i == 0 else jax.tree.map(lambda p0, t: p0[s] + t, psi0_S, tau2)
            single.append(metrics.hinge(model.apply(own, X[:n_alpha_hat]), y[:n_alpha_hat]))
            Xmix.append(X[:n_alpha_hat])
        Xmix = jnp.concatenate(Xmix)
        psi2 = jax.tree.map(lambda p0, t: p0[s] + t, psi0_S, tau2)
        tau1 = jax.tree.map(lambda t: t[s], tau1_S)
        return (jnp.stack(out_loss, -1), jnp.stack(out_acc, -1), jnp.stack(single),
                metrics.alpha_hat(base, psi2, Xmix), taskvec.cosine(tau1, tau2),
                jnp.array([[jnp.linalg.norm(t["W"] if "W" in t else model.merged(t)[0]),
                            jnp.linalg.norm(t["V"] if "V" in t else model.merged(t)[1])] for t in (tau1, tau2)]))

    # Sequential over (alpha, seed) pairs: each pair's L-point grid is itself chunked, which bounds memory.
    loss, acc, single, ahat, cos, norms = jax.lax.map(lambda ij: one_pair(*ij), (idx_a, idx_s))
    reshape = lambda x: x.reshape((A, n_seeds) + x.shape[1:])  # noqa: E731
    finite = ft1_S.finite[None, :] & ft2_AxS.finite
    return PairSweep(reshape(loss), reshape(acc), finite, reshape(single), reshape(ahat), reshape(cos),
                     reshape(norms))
