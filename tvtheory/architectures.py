"""Models beyond the paper's one-layer, one-head transformer, for robustness studies of task arithmetic.

Every model here maps a sample X (P tokens in R^d) to hidden pre-activations G (positions x m), then applies the
paper's head: a ReLU, the mean over positions and the fixed readout a = +-1/sqrt(m) (model.readout; never trained,
never in a parameter pytree or a task vector). Only the weights before the head differ:

  paper      f = (1/P) sum_l a^T ReLU( V sum_s x_s softmax_l(x_s^T W x_l) )          the paper's Eq. 4 (model.py)
  multihead  f = (1/P) sum_l a^T ReLU( concat_h V_h sum_s x_s softmax_l(x_s^T W_h x_l) ),  V_h (m/h) x d
  two_layer  x'_l = x_l + U ReLU( V_1 sum_s x_s softmax_l(x_s^T W_1 x_l) ),  then the paper's block on x'
             with (W_2, V_2) and the readout a
  mlp        f = a^T ReLU( V (1/P) sum_s x_s )                                        attention-free, pooled first
  cnn        f = (1/P) sum_l a^T ReLU( sum_j K_j x_{l + j - k//2 mod P} )             1-D convolution of width k
  gnn        f = (1/P) sum_i a^T ReLU( V mean_{j in N[i]} x_j )                       one round of mean aggregation
             (two rounds: H = ReLU(V mean_N[i] x), f = (1/P) sum_i a^T ReLU(U mean_N[i] H))

Choices (the paper fixes none of them):
- multihead: V_h is (m/h) x d, so the width m and V's parameter count are the paper's for every h, and h = 1 is the
  paper's model exactly (tested). The heads' outputs are concatenated into the m hidden units.
- two_layer: block 1's hidden units are projected back to R^d by a trained U (d x m) and added to the tokens (a
  residual stream); block 2 is the paper's block on those tokens. U starts at N(0, 1/m) entries so that block 1 gets
  a gradient from the start (with U = 0, V_1's gradient would vanish).
- cnn: circular padding over positions, so every token enters k windows whatever its position; k = 1 is a per-token
  MLP pooled after the ReLU (tested).
- gnn: a FIXED graph over positions (a ring linking positions at circular distance <= ``radius``, or one
  Erdos-Renyi draw from a static seed), with self loops and row-normalised (mean) aggregation. Positions are shuffled
  by the sampler, so a fixed graph over positions is a fresh random graph over the tokens of each sample; a graph
  drawn per sample from a key would make f random and break the apply(params, X) signature that task arithmetic and
  grid evaluation rely on. On a ring, one round equals a width-(2 radius + 1) cnn whose k kernels are all V / k.

Multi-class (``n_classes=K``): the m hidden units are split into K blocks of m/K; output k reads block k with the
readout of a width-m/K model, A[k] = (0 .. readout(m/K) .. 0). Each output is then the paper's scalar model on its own
neurons (all sharing the layers below), and A is a function of (m, K) alone, as a is of m.

Affine in the coefficients (``LINEARITY``): in Psi_0 + sum_k c_k dPsi_k, the models with a single weight layer before
the ReLU (mlp, cnn, one-round gnn) have pre-activations G linear in the weights, so G(c) = G(Psi_0) + sum_k c_k
G(dPsi_k) and a grid point pays only the ReLU and the readout (``grid_eval_affine``). The attention models are
affine only in their logits and values (model.grid_eval's reuse, per head for multihead; quadratic in c for the
paper's four-matrix form); the softmax is paid per point. Two-layer models (two_layer, two-round gnn) are not
affine at all: ``grid_eval_direct`` evaluates each point.

Training is the project's: SGD on the hinge loss (``finetune``, train.sgd; Crammer-Singer's multi-class hinge for K
outputs), from each model's own Psi_0 (W = 0, V-like weights N(0, sigma_0^2), as model.py).

A model config (config.Model: arch, heads, width, rounds, radius) selects its network through ``of`` (the paper's
binary model is model.init and model.apply themselves) and its exact grid evaluation through ``grid_eval``; the sweeps
use both, so every experiment runs any option.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tvtheory import _check, metrics, model, streams, train
from tvtheory.config import Model, Train
from tvtheory.train import TrainResult


# ----------------------------------------------------------------------------------------------------- the head


def readout_matrix(m: int, n_classes: int) -> jax.Array:
    """A (K, m): output k reads hidden block k (m/K units) with readout(m/K), zeros elsewhere."""
    _check.integer("n_classes", n_classes, lo=2)
    if m % n_classes:
        _check.fail("n_classes", n_classes, f"must divide m={m} (each class reads m/K hidden units)")
    return jnp.kron(jnp.eye(n_classes), model.readout(m // n_classes)[None, :])


def head(G_PxM: jax.Array, n_classes: int | None = None) -> jax.Array:
    """(1/P) sum_l a^T ReLU(G_l) for G (..., P, m): (...,); with ``n_classes``, the K outputs A ReLU(.) (..., K)."""
    H_M = jax.nn.relu(G_PxM).mean(axis=-2)
    m = G_PxM.shape[-1]
    return H_M @ model.readout(m) if n_classes is None else H_M @ readout_matrix(m, n_classes).T


def _attend(W: jax.Array, X: jax.Array) -> jax.Array:
    """sum_s x_s softmax_l(x_s^T W x_l): the attended tokens A X (..., P, d), the paper's attention."""
    S = jnp.einsum("...sd,...ld->...ls", X, X @ W.T)
    return jax.nn.softmax(S, axis=-1) @ X


def _normal(rngs: nnx.Rngs, shape, std: float) -> nnx.Param:
    return nnx.Param(std * jax.random.normal(rngs.params(), shape))


def params_of(module: nnx.Module) -> dict[str, jax.Array]:
    """The trainable parameters as a plain dict pytree (model.params_of for any module here)."""
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def _scales(sigma_0: float, sigma_w: float = 0.0) -> None:
    _check.in_range("sigma_0", sigma_0, lo=0.0)
    _check.in_range("sigma_w", sigma_w, lo=0.0)


# ---------------------------------------------------------------------------------------- the paper's model, K-ary


def init_paper(key: jax.Array, d: int, m: int, sigma_0: float = 0.01, sigma_w: float = 0.0,
               form: str = "merged") -> dict[str, jax.Array]:
    """The paper's Psi_0 (model.init_params)."""
    return model.init_params(key, d, m, form, sigma_0, sigma_w)


def apply_paper(params: dict, X: jax.Array, n_classes: int | None = None) -> jax.Array:
    """The paper's Eq. 4 (model.apply, bit for bit); with ``n_classes``, its K outputs through ``readout_matrix``."""
    if n_classes is None:
        return model.apply(params, X)
    W, V = model.merged(params)
    return head(_attend(W, X) @ V.T, n_classes)


# ----------------------------------------------------------------------------------------------------- multihead


class MultiHead(nnx.Module):
    """h heads, merged per head: W_h (d x d), V_h (m/h x d); outputs concatenated into the ReLU layer."""

    def __init__(self, d: int, m: int, *, heads: int = 2, sigma_0: float = 0.01, sigma_w: float = 0.0,
                 rngs: nnx.Rngs):
        model.check_shape(d, m, "merged")
        _check.integer("heads", heads, lo=1)
        if m % heads:
            _check.fail("heads", heads, f"must divide m={m} (each head feeds m/h hidden units)")
        _scales(sigma_0, sigma_w)
        self.W = _normal(rngs, (heads, d, d), sigma_w)
        self.V = _normal(rngs, (heads, m // heads, d), sigma_0)

    def __call__(self, X, n_classes=None):
        return apply_multihead(params_of(self), X, n_classes)


def init_multihead(key, d: int, m: int, heads: int = 2, sigma_0: float = 0.01, sigma_w: float = 0.0) -> dict:
    return params_of(MultiHead(d, m, heads=heads, sigma_0=sigma_0, sigma_w=sigma_w, rngs=nnx.Rngs(params=key)))


def apply_multihead(params: dict, X: jax.Array, n_classes: int | None = None) -> jax.Array:
    W_HxDxD, V_HxMhxD = params["W"], params["V"]
    T_HxPxD = jax.vmap(_attend, in_axes=(0, None), out_axes=-3)(W_HxDxD, X)          # (..., h, P, d)
    G = jnp.einsum("...hpd,hkd->...phk", T_HxPxD, V_HxMhxD)                          # (..., P, h, m/h)
    return head(G.reshape(*G.shape[:-2], -1), n_classes)


# ----------------------------------------------------------------------------------------------------- two_layer


class TwoLayer(nnx.Module):
    """The paper's block twice with a residual: x' = x + U ReLU(V_1 A_1 x), then ReLU(V_2 A_2 x') and the readout."""

    def __init__(self, d: int, m: int, *, sigma_0: float = 0.01, sigma_w: float = 0.0, sigma_u: float | None = None,
                 rngs: nnx.Rngs):
        model.check_shape(d, m, "merged")
        _scales(sigma_0, sigma_w)
        sigma_u = m**-0.5 if sigma_u is None else _check.in_range("sigma_u", sigma_u, lo=0.0)
        self.W1 = _normal(rngs, (d, d), sigma_w)
        self.V1 = _normal(rngs, (m, d), sigma_0)
        self.U = _normal(rngs, (d, m), sigma_u)
        self.W2 = _normal(rngs, (d, d), sigma_w)
        self.V2 = _normal(rngs, (m, d), sigma_0)

    def __call__(self, X, n_classes=None):
        return apply_two_layer(params_of(self), X, n_classes)


def init_two_layer(key, d: int, m: int, sigma_0: float = 0.01, sigma_w: float = 0.0,
                   sigma_u: float | None = None) -> dict:
    return params_of(TwoLayer(d, m, sigma_0=sigma_0, sigma_w=sigma_w, sigma_u=sigma_u, rngs=nnx.Rngs(params=key)))


def apply_two_layer(params: dict, X: jax.Array, n_classes: int | None = None) -> jax.Array:
    H1 = jax.nn.relu(_attend(params["W1"], X) @ params["V1"].T)                      # (..., P, m)
    X2 = X + H1 @ params["U"].T
    return head(_attend(params["W2"], X2) @ params["V2"].T, n_classes)


# ----------------------------------------------------------------------------------------------------------- mlp


class PooledMLP(nnx.Module):
    """Attention-free: a^T ReLU(V mean_s x_s) (the paper's model with uniform attention, W = 0, is exactly this)."""

    def __init__(self, d: int, m: int, *, sigma_0: float = 0.01, rngs: nnx.Rngs):
        model.check_shape(d, m, "merged")
        _scales(sigma_0)
        self.V = _normal(rngs, (m, d), sigma_0)

    def __call__(self, X, n_classes=None):
        return apply_mlp(params_of(self), X, n_classes)


def init_mlp(key, d: int, m: int, sigma_0: float = 0.01) -> dict:
    return params_of(PooledMLP(d, m, sigma_0=sigma_0, rngs=nnx.Rngs(params=key)))


def pre_mlp(params: dict, X: jax.Array) -> jax.Array:
    """V mean_s x_s as one position (..., 1, m): linear in V."""
    return X.mean(axis=-2, keepdims=True) @ params["V"].T


def apply_mlp(params: dict, X: jax.Array, n_classes: int | None = None) -> jax.Array:
    return head(pre_mlp(params, X), n_classes)


# ----------------------------------------------------------------------------------------------------------- cnn


class Conv1D(nnx.Module):
    """A width-k circular convolution over token positions with m channels: kernels K_j (m x d), j < k."""

    def __init__(self, d: int, m: int, *, width: int = 3, sigma_0: float = 0.01, rngs: nnx.Rngs):
        model.check_shape(d, m, "merged")
        _check.integer("width", width, lo=1)
        _scales(sigma_0)
        self.K = _normal(rngs, (width, m, d), sigma_0)

    def __call__(self, X, n_classes=None):
        return apply_cnn(params_of(self), X, n_classes)


def init_cnn(key, d: int, m: int, width: int = 3, sigma_0: float = 0.01) -> dict:
    return params_of(Conv1D(d, m, width=width, sigma_0=sigma_0, rngs=nnx.Rngs(params=key)))


def pre_cnn(params: dict, X: jax.Array) -> jax.Array:
    """sum_j K_j x_{l + j - k//2 mod P} (..., P, m): linear in K."""
    K_KxMxD = params["K"]
    k, P = K_KxMxD.shape[0], X.shape[-2]
    if k > P:
        _check.fail("width", k, f"must be <= P={P} (a window longer than the sample would wrap onto itself)")
    # window[l, j] = x_{l + j - k//2}: a roll by -(j - k//2) brings that token to position l.
    Xw = jnp.stack([jnp.roll(X, k // 2 - j, axis=-2) for j in range(k)], axis=-2)          # (..., P, k, d)
    return jnp.einsum("...pjd,jmd->...pm", Xw, K_KxMxD)


def apply_cnn(params: dict, X: jax.Array, n_classes: int | None = None) -> jax.Array:
    return head(pre_cnn(params, X), n_classes)


# ----------------------------------------------------------------------------------------------------------- gnn


def aggregation(P: int, graph: str = "ring", radius: int = 1, p_edge: float = 0.2, graph_seed: int = 0) -> np.ndarray:
    """The mean-aggregation matrix A (P x P) over closed neighbourhoods N[i] (self loop included), rows summing to 1.

    ``graph="ring"``: j in N[i] iff the circular distance of positions i and j is <= radius. ``graph="er"``: one
    Erdos-Renyi graph G(P, p_edge) drawn from ``graph_seed`` (numpy, at trace time: a constant of the program).
    """
    _check.integer("P", P, lo=1)
    if graph == "ring":
        _check.integer("radius", radius, lo=0)
        i = np.arange(P)
        dist = np.abs(i[:, None] - i[None, :])
        adj = np.minimum(dist, P - dist) <= radius
    elif graph == "er":
        _check.in_range("p_edge", p_edge, 0.0, 1.0)
        upper = np.triu(np.random.default_rng(graph_seed).random((P, P)) < p_edge, k=1)
        adj = upper | upper.T | np.eye(P, dtype=bool)
    else:
        _check.fail("graph", graph, "must be 'ring' or 'er'")
    return (adj / adj.sum(axis=1, keepdims=True)).astype(np.float32)


class GraphNet(nnx.Module):
    """Mean-aggregation message passing: one round (V, m x d) or two (then U, m x m, on the first round's units)."""

    def __init__(self, d: int, m: int, *, rounds: int = 1, sigma_0: float = 0.01, sigma_u: float | None = None,
                 rngs: nnx.Rngs):
        model.check_shape(d, m, "merged")
        _check.integer("rounds", rounds, lo=1, hi=2)
        _scales(sigma_0)
        self.V = _normal(rngs, (m, d), sigma_0)
        if rounds == 2:
            # N(0, 1/m): the second layer passes the first layer's (small) units on at their scale, so both layers
            # get a gradient from the start.
            self.U = _normal(rngs, (m, m), m**-0.5 if sigma_u is None else _check.in_range("sigma_u", sigma_u, lo=0.0))

    def __call__(self, X, n_classes=None):
        return apply_gnn(params_of(self), X, n_classes)


def init_gnn(key, d: int, m: int, rounds: int = 1, sigma_0: float = 0.01, sigma_u: float | None = None) -> dict:
    return params_of(GraphNet(d, m, rounds=rounds, sigma_0=sigma_0, sigma_u=sigma_u, rngs=nnx.Rngs(params=key)))


def pre_gnn(params: dict, X: jax.Array, *, graph: str = "ring", radius: int = 1, p_edge: float = 0.2,
            graph_seed: int = 0) -> jax.Array:
    """V mean_{j in N[i]} x_j (..., P, m): one round's pre-activations, linear in V (one-round models only)."""
    if "U" in params:
        _check.fail("rounds", 2, "a two-round gnn is not affine in its weights (use apply_gnn)")
    A = aggregation(X.shape[-2], graph, radius, p_edge, graph_seed)
    return (A @ X) @ params["V"].T


def apply_gnn(params: dict, X: jax.Array, n_classes: int | None = None, *, graph: str = "ring", radius: int = 1,
              p_edge: float = 0.2, graph_seed: int = 0) -> jax.Array:
    """The round count is read from the parameters (a "U" means two rounds); the graph is a static option."""
    A = aggregation(X.shape[-2], graph, radius, p_edge, graph_seed)
    G = (A @ X) @ params["V"].T
    if "U" in params:
        G = (A @ jax.nn.relu(G)) @ params["U"].T
    return head(G, n_classes)


def init_gnn2(key, d: int, m: int, sigma_0: float = 0.01, sigma_u: float | None = None) -> dict:
    return init_gnn(key, d, m, rounds=2, sigma_0=sigma_0, sigma_u=sigma_u)


# ------------------------------------------------------------------------------------------------------ registry


class Arch(NamedTuple):
    init: Callable          # (key, d, m, **opts) -> params
    apply: Callable         # (params, X (..., P, d), n_classes=None) -> (...,) or (..., K)


ARCHITECTURES: dict[str, Arch] = {
    "paper": Arch(init_paper, apply_paper),
    "multihead": Arch(init_multihead, apply_multihead),
    "two_layer": Arch(init_two_layer, apply_two_layer),
    "mlp": Arch(init_mlp, apply_mlp),
    "cnn": Arch(init_cnn, apply_cnn),
    "gnn": Arch(init_gnn, apply_gnn),
    "gnn2": Arch(init_gnn2, apply_gnn),
}

# How Psi_0 + sum_k c_k dPsi_k depends on c, i.e. which grid evaluator can reuse products across grid points:
#   "preactivation": the ReLU inputs are linear in the weights -> grid_eval_affine with PREACTIVATION[name]
#   "logits_values": attention logits and values are affine in c, the softmax is not -> model.grid_eval's reuse
#                    (the paper's merged form; per head for multihead, which model.grid_eval does not implement)
#   "none":          a second layer takes a nonlinear function of c -> grid_eval_direct
LINEARITY: dict[str, str] = {
    "paper": "logits_values", "multihead": "logits_values", "two_layer": "none",
    "mlp": "preactivation", "cnn": "preactivation", "gnn": "preactivation", "gnn2": "none",
}
PREACTIVATION: dict[str, Callable] = {"mlp": pre_mlp, "cnn": pre_cnn, "gnn": pre_gnn}


def get(name: str) -> Arch:
    if name not in ARCHITECTURES:
        _check.fail("arch", name, f"must be one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


# ------------------------------------------------------------------------------------------------------- metrics


# Crammer-Singer's multi-class hinge loss and its accuracy live in metrics.py (the SGD loop uses them); named here too.
multiclass_hinge, multiclass_accuracy = metrics.multiclass_hinge, metrics.multiclass_accuracy
loss_and_accuracy = metrics.loss_and_accuracy


# ---------------------------------------------------------------------------------------------------- fine-tuning


def finetune(apply_fn: Callable, params0: dict, key: jax.Array, sampler: Callable,
             spec: Train = Train()) -> TrainResult:
    """Psi*_T of any model: SGD (step spec.eta) on the hinge loss from ``params0`` (train.sgd, the loop of
    train.finetune).

    ``sampler(key, n) -> (X, y)`` draws n samples (e.g. functools.partial of data.sample, or of a data_options
    sampler); step t uses fold_in(key, t), or, with ``spec.n_train``, a minibatch of one training set drawn from
    fold_in(key, streams.TRAIN_SET) (the keys train.finetune uses: apply_fn=model.apply gives its numbers). Pure:
    jit it with apply_fn and sampler closed over.
    """
    if spec.n_train:
        X_tr, y_tr = sampler(jax.random.fold_in(key, streams.TRAIN_SET), spec.n_train)

    def batch(t):
        k = jax.random.fold_in(key, t)
        if not spec.n_train:
            return sampler(k, spec.batch)
        idx = jax.random.choice(k, spec.n_train, (spec.batch,), replace=spec.batch > spec.n_train)
        return X_tr[idx], y_tr[idx]

    return train.sgd(apply_fn, params0, batch, spec)


# --------------------------------------------------------------------------------------------------- grid evaluation


def _point_params(base, taus_K, c_K):
    return jax.tree.map(lambda b, t: b + jnp.tensordot(c_K.astype(t.dtype), t, axes=1), base, taus_K)


@partial(jax.jit, static_argnames=("apply_fn", "chunk"))
def grid_eval_direct(apply_fn: Callable, base: dict, taus_K: dict, coeffs_GxK: jax.Array, X: jax.Array,
                     y: jax.Array, chunk: int = 1) -> tuple[jax.Array, jax.Array]:
    """Hinge loss and accuracy (two (G,)) of base + sum_k c_k taus[k] on (X, y) for every row c of ``coeffs``, one
    exact forward pass per point (lax.map over the grid, ``chunk`` points vmapped at a time). For any model; the
    loss is Crammer-Singer's where apply_fn returns (N, K). ``taus_K``: leaves with a leading axis K."""
    def point(c_K):
        return loss_and_accuracy(apply_fn(_point_params(base, taus_K, c_K), X), y)
    return jax.lax.map(point, coeffs_GxK, batch_size=chunk if chunk > 1 else None)


@partial(jax.jit, static_argnames=("pre_fn", "chunk", "n_classes"))
def grid_eval_affine(pre_fn: Callable, base: dict, taus_K: dict, coeffs_GxK: jax.Array, X: jax.Array, y: jax.Array,
                     chunk: int = 1, n_classes: int | None = None) -> tuple[jax.Array, jax.Array]:
    """``grid_eval_direct`` for a model f = head(pre_fn(params, X)) whose pre-activations are linear in its weights
    (PREACTIVATION): G(c) = G(base) + sum_k c_k G(taus[k]) is formed from K + 1 products computed once, and each
    point pays only the ReLU and the readout. Holds (K + 1) N P m floats at once."""
    G0 = pre_fn(base, X)
    Gk = [pre_fn(jax.tree.map(lambda t: t[k], taus_K), X) for k in range(coeffs_GxK.shape[1])]

    def point(c_K):
        G = G0
        for k, Gk_ in enumerate(Gk):
            G = G + c_K[k] * Gk_
        return loss_and_accuracy(head(G, n_classes), y)
    return jax.lax.map(point, coeffs_GxK, batch_size=chunk if chunk > 1 else None)


@partial(jax.jit, static_argnames=("chunk", "n_classes", "q"))
def grid_eval_attention(base: dict, taus_K: dict, coeffs_GxK: jax.Array, X: jax.Array, y: jax.Array,
                        chunk: int = 1, n_classes: int | None = None, q: int | None = None):
    """``grid_eval_direct`` for the merged attention models, multihead (W (h, d, d), V (h, m/h, d)) and the paper's
    merged form (W (d, d), V (m, d): one head), with one output or K (``n_classes``), by model.grid_eval's reuse:
    per head, the logits x_s^T W_h(c) x_l and the values V_h(c) x_s are affine in c, so their products with the test
    set are formed once and a grid point pays only the softmax, its product with the values, the ReLU and the
    readout. With ``q`` < P each sample is first reduced to its at most q distinct tokens and their counts
    (model.distinct_tokens; exact; a sample with more turns the result into NaN, never into a wrong number)."""
    one_head = base["W"].ndim == 2
    if one_head:
        base, taus_K = (jax.tree.map(lambda x, ax=ax: jnp.expand_dims(x, ax), t) for t, ax in ((base, 0), (taus_K, 1)))
    H, m = base["V"].shape[0], base["V"].shape[0] * base["V"].shape[1]
    A_OxM = model.readout(m)[None, :] if n_classes is None else readout_matrix(m, n_classes)
    A_HxOxMh = A_OxM.reshape(A_OxM.shape[0], H, -1).transpose(1, 0, 2)        # head h reads its block of units
    N, P, D = X.shape
    q = P if q is None else min(q, P)
    nb = min(max(1, 3200 // q), N)
    pad = -N % nb
    w = jnp.concatenate([jnp.ones(N), jnp.zeros(pad)]).reshape(-1, nb)           # padding samples weigh nothing
    Xb = jnp.concatenate([X, jnp.zeros((pad, P, D), X.dtype)]).reshape(-1, nb, P, D)
    yb = jnp.concatenate([y, jnp.ones(pad, y.dtype) if n_classes is None else jnp.zeros(pad, y.dtype)]).reshape(-1, nb)
    K = coeffs_GxK.shape[1]

    def one_block(args):
        X, y, w = args
        U, c = model.distinct_tokens(X, q) if q < P else (X, jnp.ones(X.shape[:2], X.dtype))
        log_c = jnp.where(c > 0, jnp.log(jnp.maximum(c, 1.0)), -jnp.inf)[:, None, :]
        S0 = [jnp.einsum("nsd,nld->nls", U, U @ base["W"][h].T) + log_c for h in range(H)]
        V0 = [U @ base["V"][h].T for h in range(H)]
        Sk = [[jnp.einsum("nsd,nld->nls", U, U @ taus_K["W"][k, h].T) for h in range(H)] for k in range(K)]
        Vk = [[U @ taus_K["V"][k, h].T for h in range(H)] for k in range(K)]
        weight_NxQ = c / P                                       # query j stands for c_j of the P positions

        def point(c_K):
            F = 0.0
            for h in range(H):
                S, V = S0[h], V0[h]
                for k in range(K):
                    S, V = S + c_K[k] * Sk[k][h], V + c_K[k] * Vk[k][h]
                G = jax.nn.relu((jax.nn.softmax(S, axis=-1) * weight_NxQ[..., None]) @ V)
                F = F + G.sum(axis=-2) @ A_HxOxMh[h].T                                   # (N, outputs)
            if n_classes is None:
                f = F[:, 0]
                return jnp.sum(w * jax.nn.relu(1.0 - y * f)), jnp.sum(w * (y * f > 0))
            f_y, f_other = metrics._own_and_best_other(F, y)
            return jnp.sum(w * jax.nn.relu(1.0 + f_other - f_y)), jnp.sum(w * (f_y > f_other))

        loss, correct = jax.lax.map(point, coeffs_GxK, batch_size=chunk if chunk > 1 else None)
        return loss, correct, jnp.all(model.complete(c, P) | (w == 0))

    loss_sum, correct, ok = jax.lax.map(one_block, (Xb, yb, w))
    nan_unless_ok = jnp.where(jnp.all(ok), 1.0, jnp.nan)
    return loss_sum.sum(0) / N * nan_unless_ok, correct.sum(0) / N * nan_unless_ok


# --------------------------------------------------------------------------------------------------- a model config


class Network(NamedTuple):
    """A model config's network: ``init(key, d)`` -> Psi_0 and ``apply(params, X)`` -> (...,) or, for K classes,
    (..., K); ``name`` is its entry in ARCHITECTURES."""

    init: Callable
    apply: Callable
    name: str


@lru_cache(maxsize=None)
def of(net: Model, classes: int = 2) -> Network:
    """The network of a config.Model (``arch`` and its options) for tasks of ``classes`` classes (2: the paper's
    binary task, one output; K >= 3: K outputs through ``readout_matrix``). The paper's binary model is model.init
    and model.apply themselves. Cached, so that the same config gives the same function objects (static arguments
    of the jitted evaluators)."""
    K = classes if classes > 2 else None
    if net.arch == "paper":
        return Network(lambda key, d: model.init(key, d, net),
                       model.apply if K is None else partial(apply_paper, n_classes=K), "paper")
    name = "gnn2" if net.arch == "gnn" and net.rounds == 2 else net.arch
    init = {"multihead": lambda key, d: init_multihead(key, d, net.m, net.heads, net.sigma_0, net.sigma_w),
            "two_layer": lambda key, d: init_two_layer(key, d, net.m, net.sigma_0, net.sigma_w),
            "mlp": lambda key, d: init_mlp(key, d, net.m, net.sigma_0),
            "cnn": lambda key, d: init_cnn(key, d, net.m, net.width, net.sigma_0),
            "gnn": lambda key, d: init_gnn(key, d, net.m, net.rounds, net.sigma_0)}[net.arch]
    apply = get(name).apply
    if net.arch == "gnn":
        apply = partial(apply, radius=net.radius)
    return Network(init, apply if K is None else partial(apply, n_classes=K), name)


@lru_cache(maxsize=None)
def _preactivation(net: Model) -> Callable:
    pre = PREACTIVATION[of(net).name]
    return partial(pre, radius=net.radius) if net.arch == "gnn" else pre


def grid_eval(net: Model, classes: int, base, taus_K, coeffs_GxK: jax.Array, X: jax.Array, y: jax.Array,
              chunk: int = 1, q: int | None = None, table: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Hinge loss and accuracy (two (G,)) of base + sum_k c_k taus[k] for every row c of the grid, exactly, for any
    model config: model.grid_eval for the paper's binary model (its lambda-independent products reused, ``q``
    distinct tokens per sample); ``grid_eval_attention`` (the same reuse per head, K outputs) for multihead and the
    paper's merged form with K classes; ``grid_eval_affine`` where the pre-activations are linear in the weights
    (mlp, cnn, one-round gnn: LINEARITY); ``grid_eval_direct`` (a forward pass per point, ``chunk`` at a time)
    otherwise (two_layer, two-round gnn, the four-matrix form with K classes). ``table``: the pattern table every
    token of X is a row of, if any (model.grid_eval uses it; the others need not)."""
    if net.arch == "paper" and classes == 2:
        return model.grid_eval(base, taus_K, coeffs_GxK, X, y, chunk, q=q, table=table)
    K = classes if classes > 2 else None
    if net.arch == "multihead" or net.arch == "paper" and net.form == "merged":
        return grid_eval_attention(base, taus_K, coeffs_GxK, X, y, chunk, K, q)
    name = of(net).name
    if LINEARITY[name] == "preactivation":
        return grid_eval_affine(_preactivation(net), base, taus_K, coeffs_GxK, X, y, chunk, K)
    return grid_eval_direct(of(net, classes).apply, base, taus_K, coeffs_GxK, X, y, chunk)


def weight_norms(net: Model, params: dict) -> tuple[jax.Array, jax.Array]:
    """(||W||_F, ||V||_F) of a model config's parameters: for the paper's model its merged W and V (either form);
    otherwise the attention weights (the leaves named W...) and all other leaves (||W|| = 0 without attention)."""
    if net.arch == "paper":
        return tuple(jnp.linalg.norm(x) for x in model.merged(params))
    return _split_norms(params)


def delta_norms(net: Model, psi0: dict, tau: dict) -> tuple[jax.Array, jax.Array]:
    """(||dW||_F, ||dV||_F) of a task vector: for the paper's model, the change of the merged weights
    (model.merged_delta); otherwise the split of ``weight_norms`` on the task vector itself."""
    if net.arch == "paper":
        return tuple(jnp.linalg.norm(x) for x in model.merged_delta(psi0, tau))
    return _split_norms(tau)


def _split_norms(params: dict) -> tuple[jax.Array, jax.Array]:
    sq = [sum((jnp.sum(x**2) for k, x in params.items() if k.startswith("W") == attn), jnp.float32(0.0))
          for attn in (True, False)]
    return tuple(jnp.sqrt(s) for s in sq)
