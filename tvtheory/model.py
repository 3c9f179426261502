"""The one-layer, one-head nonlinear transformer of the paper's Eq. 4 (docs/theory.md section 2), and its exact fast
evaluation on a grid of task-vector coefficients.

  f(X; Psi) = (1/P) sum_l a^T ReLU( sum_s V x_s softmax_l(x_s^T W x_l) )

Merged form: Psi = {W (d x d), V (m x d)}. Four-matrix form: Psi = {W_Q, W_K (d_k x d), W_V (d_v x d), W_O (m x d_v)}
with W = W_K^T W_Q and V = W_O W_V. The readout a is fixed at +-1/sqrt(m) (first half +, second half -) and is not a
parameter: it is a function of m alone, so parameter pytrees and task vectors never contain it.

The Flax NNX module defines the architecture and its initialisation; the hot paths use the pure ``apply`` on plain
dicts of arrays (NNX's graph traversal would cost more than this model's forward pass).
"""

from __future__ import annotations

import operator
import os

import jax
import jax.numpy as jnp
from flax import nnx

from tvtheory import _check, cpu_kernel, xla_options
from tvtheory.config import FORMS, Model


def check_shape(d: int, m: int, form: str) -> None:
    _check.integer("d", d, lo=1)
    _check.integer("m", m, lo=1)
    if form not in FORMS:
        _check.fail("form", form, f"must be one of {FORMS}")



class Readout(nnx.Variable):
    """The fixed output weights a_l: not an nnx.Param, so no optimizer or task vector ever touches them."""


def readout(m: int) -> jax.Array:
    """a in R^m: ceil(m/2) entries +1/sqrt(m), the rest -1/sqrt(m)."""
    return jnp.where(jnp.arange(m) < (m + 1) // 2, 1.0, -1.0) / jnp.sqrt(m)


class OneLayerTransformer(nnx.Module):
    """Psi_0 of docs/theory.md: W (or W_Q, W_K) ~ N(0, sigma_w^2) (default 0), V (or W_V, W_O) ~ N(0, sigma_0^2)."""

    def __init__(self, d: int, m: int, *, form: str = "merged", sigma_0: float = 0.01, sigma_w: float = 0.0,
                 d_k: int | None = None, d_v: int | None = None, rngs: nnx.Rngs):
        check_shape(d, m, form)
        _check.in_range("sigma_0", sigma_0, lo=0.0)
        _check.in_range("sigma_w", sigma_w, lo=0.0)
        d_k, d_v = d_k or d, d_v or d
        normal = lambda shape, s: s * jax.random.normal(rngs.params(), shape)  # noqa: E731
        if form == "merged":
            self.W = nnx.Param(normal((d, d), sigma_w))
            self.V = nnx.Param(normal((m, d), sigma_0))
        else:
            # Scales chosen so that the merged W = W_K^T W_Q and V = W_O W_V have entries of std sigma_w and
            # sigma_0, as in the merged form. Both W_Q and W_K at zero would get no gradient, hence sigma_w > 0.
            if sigma_w <= 0:
                _check.fail("sigma_w", sigma_w, "must be > 0 for form='four' (W_Q = W_K = 0 is a saddle)")
            self.W_Q = nnx.Param(normal((d_k, d), (sigma_w / d_k**0.5) ** 0.5))
            self.W_K = nnx.Param(normal((d_k, d), (sigma_w / d_k**0.5) ** 0.5))
            self.W_V = nnx.Param(normal((d_v, d), 1.0 / d_v**0.5))
            self.W_O = nnx.Param(normal((m, d_v), sigma_0))
        self.a = Readout(readout(m))

    def __call__(self, X: jax.Array) -> jax.Array:
        return apply(params_of(self), X)


def params_of(model: OneLayerTransformer) -> dict[str, jax.Array]:
    """The trainable parameters Psi as a plain dict pytree (the readout is excluded by construction)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def init_params(key: jax.Array, d: int, m: int, form: str = "merged", sigma_0: float = 0.01,
                sigma_w: float = 0.0) -> dict[str, jax.Array]:
    """Psi_0 as a pure pytree from a typed key (jit/vmap-able over ``key``)."""
    return params_of(OneLayerTransformer(d, m, form=form, sigma_0=sigma_0, sigma_w=sigma_w,
                                         rngs=nnx.Rngs(params=key)))


def init(key: jax.Array, d: int, cfg: Model) -> dict[str, jax.Array]:
    """Psi_0 of a model config (its random initialisation; pre-training is a stage of sweep.py)."""
    return init_params(key, d, cfg.m, cfg.form, cfg.sigma_0, cfg.sigma_w)


def merged(params: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(W, V) of either form: W = W_K^T W_Q, V = W_O W_V for the four-matrix form."""
    if "W" in params:
        return params["W"], params["V"]
    return params["W_K"].T @ params["W_Q"], params["W_O"] @ params["W_V"]


def merged_delta(psi0: dict[str, jax.Array], tau: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(dW, dV): the change a task vector makes to the merged weights. In the merged form that is the task vector
    itself; in the four-matrix form it is W(Psi_0 + dPsi) - W(Psi_0), not the product of the deltas."""
    if "W" in tau:
        return tau["W"], tau["V"]
    after = merged({k: psi0[k] + tau[k] for k in psi0})
    return tuple(a - b for a, b in zip(after, merged(psi0)))


def apply(params: dict[str, jax.Array], X: jax.Array) -> jax.Array:
    """f(X; Psi) for X (..., P, d); returns (...,). Pure: jit/vmap/grad freely."""
    W, V = merged(params)
    S = jnp.einsum("...sd,...ld->...ls", X, X @ W.T)          # S[l, s] = x_s^T W x_l
    A = jax.nn.softmax(S, axis=-1)
    m, d = V.shape
    if d < m:
        # A (X V^T) = (A X) V^T: P d (P + m) multiply-adds per sample instead of P m (P + d), and the large product
        # becomes one plain matmul over all tokens of the batch (the gradient's two as well): ~30% faster SGD.
        if "V" in params:
            return readout_relu(A @ X, V)
        # The four-matrix form keeps plain autodiff: with V's derivative written by hand, XLA orders the products
        # that carry it on to W_O and W_V differently, which would move its (few) fine-tunes by ~1e-5.
        return _readout(jax.nn.relu((A @ X) @ V.T))
    return readout_mean(A, X @ V.T)


def apply_ids(params: dict[str, jax.Array], ids: jax.Array, table: jax.Array) -> jax.Array:
    """``apply(params, table[ids])`` for the merged form, with every token a row of a pattern table (T, d) and ids
    (..., P) its rows: the logits x_s^T W x_l and the values V x_s are gathered from their table-sized products
    instead of formed per token, so that the products with V cost T m d per call plus P^2 m per sample (the
    attention times the gathered values) instead of P d m per sample. The same function; its rounding differs from
    ``apply``'s (another order of the sums). SGD on ids uses it where it is the cheaper order (sweep.ids_step)."""
    W, V = params["W"], params["V"]
    S_TxT = (table @ W.T) @ table.T                                       # [l, s] = t_s^T W t_l
    A = jax.nn.softmax(S_TxT[ids[..., :, None], ids[..., None, :]], axis=-1)
    return readout_mean(A, (table @ V.T)[ids])


@jax.custom_jvp
def readout_relu(T_PxD: jax.Array, V: jax.Array) -> jax.Array:
    """(1/P) sum_l a^T ReLU(V T_l) for the attended tokens T = A X (..., P, d): the same numbers as autodiff of the
    plain expression (bit for bit on CPU, through whole fine-tunes; tested), with a faster gradient for V. Forward
    and reverse mode both work (a custom JVP, which JAX transposes for the gradient)."""
    return _readout(jax.nn.relu(T_PxD @ V.T))


@readout_relu.defjvp
def _readout_relu_jvp(primals, tangents):
    # V's gradient contracts the ReLU mask over all tokens, so it needs the mask laid out (m, tokens). Autodiff of
    # the plain expression transposes G's mask in memory, which on CPU costs ~4x the matmul V T^T that gives the
    # transposed pre-activations directly. Writing V's tangent in that layout makes its transpose, the gradient, a
    # plain matmul: SGD runs ~1.7x faster at m = 1024 and 5-10% faster at m = 256. Where V T^T rounded differently
    # from T V^T, the only effect would be the other valid subgradient of ReLU at a pre-activation within rounding of 0.
    (T_PxD, V), (dT, dV) = primals, tangents
    m, d = V.shape
    T_tok = T_PxD.reshape(-1, d)                                          # (tokens, d)
    G = T_PxD @ V.T                                                       # (..., P, m)
    on_T = V @ T_tok.T > 0                                                # (m, tokens): G's mask, transposed
    d_from_T = _readout(jnp.where(G > 0, dT @ V.T, 0.0))
    d_from_V = (readout(m) @ jnp.where(on_T, dV @ T_tok.T, 0.0)).reshape(T_PxD.shape[:-1]).mean(-1)
    return _readout(jax.nn.relu(G)), d_from_T + d_from_V


def readout_mean(A_PxP: jax.Array, H_PxM: jax.Array) -> jax.Array:
    """(1/P) sum_l a^T ReLU(sum_s A[l, s] H[s]) for attention A (..., P, P) and values H = X V^T (..., P, m)."""
    return _readout(jax.nn.relu(A_PxP @ H_PxM))


def _readout(G_PxM: jax.Array) -> jax.Array:
    return G_PxM.mean(axis=-2) @ readout(G_PxM.shape[-1])


def distinct_tokens(X_NxPxD: jax.Array, q: int) -> tuple[jax.Array, jax.Array]:
    """Each sample as the multiset of its tokens: the distinct tokens U (..., q, d), first occurrences in order,
    and their counts c (..., q), zero on padding rows. As the readout a is the same at every position, f depends
    on X only through this multiset,
      f(X) = (1/P) sum_j c_j a^T ReLU( sum_k softmax_k(u_k^T W u_j + log c_k) V u_k ),
    so a sample of P tokens drawn from a few patterns costs q^2 instead of P^2 per attention product.
    ``q`` (static) must be at least the number of distinct tokens of every sample: check ``complete``.
    """
    eq = jnp.all(X_NxPxD[..., :, None, :] == X_NxPxD[..., None, :, :], axis=-1)     # eq[l, s]: x_l == x_s
    first = ~jnp.any(jnp.tril(eq, k=-1), axis=-1)                                     # no equal token before l
    count = jnp.where(first, eq.sum(-1), 0)
    order = jnp.argsort(~first, axis=-1, stable=True)[..., :q]
    U = jnp.take_along_axis(X_NxPxD, order[..., None], axis=-2)
    return U, jnp.take_along_axis(count, order, axis=-1).astype(X_NxPxD.dtype)


def complete(c_Nxq: jax.Array, P: int) -> jax.Array:
    """True where the counts of ``distinct_tokens`` cover all P tokens (q was large enough)."""
    return jnp.sum(c_Nxq, axis=-1) == P


# ------------------------------------------------------------------------- exact evaluation on a coefficient grid
def grid_eval(base, taus, coeffs_GxK: jax.Array, X: jax.Array, y: jax.Array, chunk: int = 1,
              block: int | None = None, q: int | None = None, table: jax.Array | None = None):
    """Hinge loss and accuracy of base + sum_k c_k taus[k] on (X, y) for every row c of coeffs. Returns two (G,).

    ``taus`` is a pytree whose leaves carry a leading axis K (stacked task vectors). The merged form walks the test
    set in blocks of ``block`` samples (default: ~3200 tokens' worth) and, inside a block, the whole grid: the
    block's precomputed products stay in cache while every grid point reuses them (the loop is memory-bound the
    other way round). With ``q`` < P each sample is first reduced to its at most q distinct tokens and their counts
    (model.distinct_tokens; exact), which shrinks those products by q/P; a sample with more than q distinct tokens
    turns the result into NaN, never into a wrong number.

    With ``table`` (T, d), the rows every token of X is drawn from (noiseless data: data.token_table), a grid point
    forms the values V(c) t of the T patterns once and gathers them for every distinct token of the block, instead of
    summing the precomputed (N, q, m) products for each. A token that is not a row of the table turns the result
    into NaN.

    Either way, up to ``FUSED_Q_MAX`` distinct tokens, a point's attention-weighted sums are written as q x q
    multiply-adds of (N, m) rows, each sum a balanced tree (``_tree_sum``): XLA fuses the whole point into one loop
    over (N, m) that never writes the (N, q, m) products, which a batched product and its ReLU streamed through
    memory. The same function to float rounding (another order of the sums); measured on one core at K = 1, d = 32,
    m = 256, q = 16, N = 2000, 51 points: 243 ms against 346 ms for the batched product with the table, 315 ms
    against 364 ms without. Beyond ``FUSED_Q_MAX`` (0 where LLVM does not optimise: the tests) the batched product
    is kept. With ``table``, on a CPU with AVX2 and FMA, the fused loop runs as tvtheory.cpu_kernel's native loop
    (``relu_attention_rows``: the same bits, in less time).
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
    a = readout(base["V"].shape[0])
    K = coeffs_GxK.shape[1]
    if table is not None:                                     # the values of the table's patterns, (T, m) each
        H0_TxM, Hk_TxM = table @ base["V"].T, [table @ taus["V"][k].T for k in range(K)]

    def one_block(args):
        X, y, w = args
        U, c = distinct_tokens(X, q) if q < P else (X, jnp.ones(X.shape[:2], X.dtype))
        log_c = jnp.where(c > 0, jnp.log(jnp.maximum(c, 1.0)), -jnp.inf)[:, None, :]     # key k counts c_k times
        S0_NxQxQ = jnp.einsum("nsd,nld->nls", U, U @ base["W"].T) + log_c
        Sk_KxNxQxQ = jnp.einsum("nsd,knld->knls", U, jnp.einsum("npd,ked->knpe", U, taus["W"]))
        # Split by task vector here, once per block: indexing the stacked products inside ``point`` made XLA copy
        # each (N, Q, M) slice once per grid point, which made a point 1.1-1.2x as costly at K = 1 and 1.7x at K = 3.
        Sk = [Sk_KxNxQxQ[k] for k in range(K)]
        if table is None:
            H0_NxQxM = U @ base["V"].T
            Hk_KxNxQxM = jnp.einsum("npd,kmd->knpm", U, taus["V"])
            Hk = [Hk_KxNxQxM[k] for k in range(K)]
            in_table = True
        else:
            on_row = jnp.all(U[..., None, :] == table, axis=-1)                 # (N, Q, T)
            row_NxQ = jnp.argmax(on_row, axis=-1)
            in_table = jnp.all(jnp.all(jnp.any(on_row, axis=-1) | (c == 0), axis=-1) | (w == 0))
        weight_NxQ = c / P                                     # query j stands for c_j of the P positions

        def values(c_K):
            H = H0_NxQxM if table is None else H0_TxM
            for k in range(K):
                H = H + c_K[k] * (Hk if table is None else Hk_TxM)[k]
            return H

        def point(c_K):
            # An unrolled sum over the K task vectors fuses into the attention kernel; a tensordot over K does not.
            S = S0_NxQxQ
            for k in range(K):
                S = S + c_K[k] * Sk[k]
            # c_j ReLU(z) = ReLU(c_j z) for c_j >= 0: weighting the rows of the attention keeps ReLU and the sum
            # over queries inside the attention kernel.
            H = values(c_K)                     # (T, m) gathered per key inside the fused loop, or (N, q, m)
            if q <= FUSED_Q_MAX and table is not None:
                G = relu_attention_rows(S, weight_NxQ, row_NxQ, H)
            else:
                A = jax.nn.softmax(S, axis=-1) * weight_NxQ[..., None]
                G = (fused_relu_attention(A, [H[:, s] for s in range(q)]) if q <= FUSED_Q_MAX
                     else jax.nn.relu(A @ (H if table is None else H[row_NxQ])).sum(axis=-2))
            f = G @ a
            return jnp.sum(w * jax.nn.relu(1.0 - y * f)), jnp.sum(w * (y * f > 0))

        loss, correct = jax.lax.map(point, coeffs_GxK, batch_size=chunk if chunk > 1 else None)
        return loss, correct, jnp.all(complete(c, P) | (w == 0)) & in_table

    loss_sum, correct, ok = jax.lax.map(one_block, (Xb, yb, w))
    nan_unless_ok = jnp.where(jnp.all(ok), 1.0, jnp.nan)
    return loss_sum.sum(0) / N * nan_unless_ok, correct.sum(0) / N * nan_unless_ok


# The largest q whose grid points grid_eval writes as one fused loop of q^2 multiply-adds. Its program grows with q^2:
# a grid_eval compiled at LLVM level 1 in 0.46 s at q = 16, 0.57 s at q = 20 (P = 20, the largest q of the suite's
# configs) and 1.74 s at q = 32, against 0.16-0.22 s with the batched product. At LLVM level 0 (the tests' setting,
# tests/conftest.py) the loop is left unoptimised and the batched product, a library kernel, wins both ways (q = 12,
# m = 64, 200 samples, 21 points: 0.21 s to compile and 12 ms to run, against 0.46 s and 25 ms fused), so there
# none is fused. Read once, as XLA reads its flags once per process.
_LLVM_LEVEL = int(xla_options(os.environ.get("XLA_FLAGS", "")).get("xla_backend_optimization_level", 3))
FUSED_Q_MAX = 24 if _LLVM_LEVEL > 0 else 0


def fused_relu_attention(A_NxQxQ: jax.Array, H_s: list) -> jax.Array:
    """sum_j ReLU(sum_s A[:, j, s] H_s[s]) for attention A (N, q, q) and each key's values H_s[s] (N, m): q x q
    multiply-adds of (N, m) rows, each sum a balanced tree (``_tree_sum``), which XLA fuses into one loop over (N, m)
    (``grid_eval``'s grid points up to FUSED_Q_MAX distinct tokens)."""
    q = len(H_s)
    return _tree_sum([jax.nn.relu(_tree_sum([A_NxQxQ[:, j, s, None] * H_s[s] for s in range(q)])) for j in range(q)])


def relu_attention_rows(S_NxQxQ: jax.Array, weight_NxQ: jax.Array, rows_NxQ: jax.Array,
                        table_TxM: jax.Array) -> jax.Array:
    """``fused_relu_attention(A, [table[rows[:, s]] for s in range(q)])`` for the attention A = softmax(S) *
    weight[..., None]: each key's values a row of a table. On a CPU with AVX2 and FMA it runs as tvtheory.cpu_kernel's
    native loop, which forms A from exp(S - max S) and its sums as XLA does (the bits of XLA's optimised program,
    faster; not differentiable); elsewhere as XLA's fused loop."""
    q, m = S_NxQxQ.shape[-1], table_TxM.shape[-1]
    if cpu_kernel.available(q, m, S_NxQxQ.dtype, rows_NxQ.dtype, table_TxM.dtype) and weight_NxQ.dtype == jnp.float32:
        E = jnp.exp(S_NxQxQ - jnp.max(S_NxQxQ, -1, initial=-jnp.inf, keepdims=True))    # jax.nn.softmax's steps
        return cpu_kernel.relu_attention(E, rows_NxQ, table_TxM, E.sum(-1), weight_NxQ)
    A = jax.nn.softmax(S_NxQxQ, axis=-1) * weight_NxQ[..., None]
    return fused_relu_attention(A, [table_TxM[rows_NxQ[:, s]] for s in range(q)])


def _tree_sum(terms: list, add=operator.add):
    """The sum of arrays as a balanced tree of additions: independent additions the CPU overlaps, where a chain
    waits on each (a grid point 1.2x faster than the chain, on one core). ``add`` lets tvtheory.cpu_kernel build the
    very same tree of its own additions."""
    while len(terms) > 1:
        terms = [add(a, b) for a, b in zip(terms[::2], terms[1::2])] + terms[len(terms) - len(terms) % 2:]
    return terms[0]


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
