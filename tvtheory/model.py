"""The one-layer, one-head nonlinear transformer of the paper's Eq. 4 (theory.md section 2).

  f(X; Psi) = (1/P) sum_l a^T ReLU( sum_s V x_s softmax_l(x_s^T W x_l) )

Merged form: Psi = {W (d x d), V (m x d)}. Four-matrix form: Psi = {W_Q, W_K (d_k x d), W_V (d_v x d), W_O (m x d_v)}
with W = W_K^T W_Q and V = W_O W_V. The readout a is fixed at +-1/sqrt(m) (first half +, second half -) and is not a
parameter: it is a function of m alone, so parameter pytrees and task vectors never contain it.

The Flax NNX module defines the architecture and its initialisation; the hot paths use the pure ``apply`` on plain
dicts of arrays (NNX's graph traversal would cost more than this model's forward pass).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tvtheory import _check
from tvtheory.specs import FORMS, check_shape  # noqa: F401  (re-exported)

class Readout(nnx.Variable):
    """The fixed output weights a_l: not an nnx.Param, so no optimizer or task vector ever touches them."""


def readout(m: int) -> jax.Array:
    """a in R^m: ceil(m/2) entries +1/sqrt(m), the rest -1/sqrt(m)."""
    return jnp.where(jnp.arange(m) < (m + 1) // 2, 1.0, -1.0) / jnp.sqrt(m)


class OneLayerTransformer(nnx.Module):
    """Psi_0 of theory.md: W (or W_Q, W_K) ~ N(0, sigma_w^2) (default 0), V (or W_V, W_O) ~ N(0, sigma_0^2)."""

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
