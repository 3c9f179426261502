"""A small Vision Transformer in Flax NNX for the Colored-Digits experiments, and its training loops.

Patches of the 8x8x3 image -> linear embedding + learned positions -> ``depth`` pre-norm attention blocks -> mean
pool -> heads. Psi_0 is pre-trained with a class head on images with random colours (digits.pretrain_labels: coarse
ink statistics by default, or 10-class digit identity); binary tasks then fine-tune every parameter, including a
scalar head that belongs to Psi_0, so task vectors span all trained parameters.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tvtheory import metrics, taskvec


class ViT(nnx.Module):
    def __init__(self, *, patch: int = 2, dim: int = 32, depth: int = 1, heads: int = 2, n_classes: int = 10,
                 rngs: nnx.Rngs):
        n_tokens, patch_dim = (8 // patch) ** 2, patch * patch * 3
        self.patch = patch
        self.embed = nnx.Linear(patch_dim, dim, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (n_tokens, dim)))
        self.blocks = nnx.List([Block(dim, heads, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.class_head = nnx.Linear(dim, n_classes, rngs=rngs)     # pre-training only
        self.task_head = nnx.Linear(dim, 1, rngs=rngs)              # the scalar output f(X) of binary tasks

    def features(self, X_Bx8x8x3):
        B, p = X_Bx8x8x3.shape[0], self.patch
        x = X_Bx8x8x3.reshape(B, 8 // p, p, 8 // p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(B, -1, p * p * 3)
        h = self.embed(x) + self.pos[...]
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h).mean(axis=1)

    def __call__(self, X):
        return self.task_head(self.features(X))[:, 0]

    def classify(self, X):
        return self.class_head(self.features(X))


class Block(nnx.Module):
    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.mlp2 = nnx.Linear(2 * dim, dim, rngs=rngs)

    def __call__(self, h):
        h = h + self.attn(self.ln1(h))
        return h + self.mlp2(jax.nn.gelu(self.mlp1(self.ln2(h))))


def init(key, **kw):
    """(graphdef, params): the module's structure and its parameters (an nnx.State, itself a pytree of arrays)."""
    return nnx.split(ViT(rngs=nnx.Rngs(params=key), **kw), nnx.Param)


def _merge(graphdef, params):
    return nnx.merge(graphdef, params)


def apply(graphdef, params, X):
    """f(X; Psi), the scalar task output. Pure in ``params``."""
    return _merge(graphdef, params)(X)


def _fit(loss_fn, params, key, X, T, steps: int, batch: int, lr: float, state=None, start: int = 0):
    """Adam on minibatches drawn with fold_in(key, step), steps start .. start + steps - 1, from the optimizer
    ``state`` (None: fresh). Returns the parameters, the loss curve and the state, so that a run split in stages is
    the same run."""
    opt = optax.adam(lr)

    def step(carry, t):
        p, s = carry
        idx = jax.random.randint(jax.random.fold_in(key, t), (batch,), 0, X.shape[0])
        loss, g = jax.value_and_grad(loss_fn)(p, X[idx], T[idx])
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    state = opt.init(params) if state is None else state
    (params, state), losses = jax.lax.scan(step, (params, state), start + jnp.arange(steps))
    return params, losses, state


def pretrain_stages(graphdef, params, key, X, labels, *, stages: tuple, batch: int, lr: float) -> list:
    """Psi_0 after each number of steps in ``stages`` (ascending) of one pre-training run: cross-entropy of the class
    head on ``labels`` (the task head is left as initialised). Stage k continues stage k - 1 (same batches, same Adam
    state), so the parameters after s steps are those of a run of s steps. The run advances in legs of the greatest
    common divisor of the stages' lengths, so that one compiled program serves every stage (and every rate)."""
    leg = math.gcd(*[int(s) for s in stages if s]) if any(stages) else 1
    out, state, done = [], optax.adam(lr).init(params), 0
    for s in stages:
        while done < s:
            params, _, state = _pretrain(graphdef, params, key, X, labels, state, jnp.float32(lr), start=done,
                                         steps=leg, batch=batch)
            done += leg
        out.append(params)
    return out


@partial(jax.jit, static_argnames=("graphdef", "steps", "batch"))
def _pretrain(graphdef, params, key, X, labels, state, lr, *, start, steps: int, batch: int):
    def loss_fn(p, Xb, db):
        return optax.softmax_cross_entropy_with_integer_labels(_merge(graphdef, p).classify(Xb), db).mean()
    return _fit(loss_fn, params, key, X, labels, steps, batch, lr, state, start)


def finetune(graphdef, params, key, X, y, *, steps: int, batch: int, lr: float):
    """Hinge loss on a binary task: Psi*_T from Psi_0 (every parameter trained). The rate is traced: one compiled
    program serves every rate."""
    return _finetune(graphdef, params, key, X, y, jnp.float32(lr), steps=steps, batch=batch)


@partial(jax.jit, static_argnames=("graphdef", "steps", "batch"))
def _finetune(graphdef, params, key, X, y, lr, *, steps: int, batch: int):
    def loss_fn(p, Xb, yb):
        return metrics.hinge(apply(graphdef, p, Xb), yb)
    return _fit(loss_fn, params, key, X, y, steps, batch, lr)[:2]


@partial(jax.jit, static_argnames=("graphdef", "chunk"))
def grid_eval(graphdef, psi0, taus, coeffs_GxK, X, y, chunk: int = 1):
    """Hinge loss, accuracy (G,) and outputs of Psi_0 + sum_k c_k taus[k] for every row c of the grid.

    ``taus`` is stacked along a leading K axis. The ViT is not affine in c, so each point is a plain forward pass,
    ``chunk`` points at a time (vmapped). One at a time is fastest on a CPU core: a 676-point grid on 360 test
    images took 3.0 ms a point against 3.5 with 4 points at a time, 5.4 with 16 and 8.0 with 64."""
    def point(c):
        f = apply(graphdef, taskvec.apply(psi0, [jax.tree.map(lambda t: t[k], taus) for k in range(c.shape[0])], c),
                  X)
        return metrics.hinge(f, y), metrics.accuracy(f, y)
    return jax.lax.map(point, coeffs_GxK, batch_size=chunk if chunk > 1 else None)


@partial(jax.jit, static_argnames=("graphdef",))
def evaluate(graphdef, psi0, tau, X, y):
    """Hinge loss and accuracy of Psi_0 + tau on (X, y)."""
    return metrics.evaluate_with(lambda p, Xb: apply(graphdef, p, Xb), taskvec.add(psi0, tau), X, y)


@partial(jax.jit, static_argnames=("graphdef",))
def output_cosine(graphdef, psi0, tau1, tau2, X):
    """The paper's alpha_hat: the cosine of the outputs of Psi_0 + tau1 and Psi_0 + tau2 on X."""
    f1, f2 = (apply(graphdef, taskvec.add(psi0, t), X) for t in (tau1, tau2))
    return metrics.cosine(f1, f2)
