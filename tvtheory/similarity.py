"""How related are two tasks, measured, and which coefficient to use: the paper's practical advice as tools.

A practitioner never knows alpha = mu_T1 . mu_T2; the paper (its closing advice and theory.md's "Practice") says to
estimate it from the fine-tuned models and pick lambda accordingly. The estimators below take ANY model as a pure
``apply_fn(params, X) -> (N,)`` (scalar output per sample) and parameter pytrees, so the same code serves this
project's transformer (``tvtheory.model.apply``), the ViT of ``tvtheory.vit`` or a plain Flax NNX MLP split into a
graph and a pure dict (``apply_fn = lambda p, X: nnx.merge(graphdef, p)(X)``).

Each estimator states its budget: ``n_probe`` probe samples (the first n rows of each probe set; None: all rows) or
``n_batches`` loss batches. ``param_cosine`` needs no samples at all. Estimators that take a function argument are
jitted with that function static: pass the same function object on every call, or each call compiles anew.

Selection rules (``choose_addition``, ``choose_negation``) are pure numpy on per-lambda validation curves that the
caller computes on its validation samples (``lambda_curves`` does that for any model); they broadcast over leading
axes (seeds, alphas). ``lambda_from_similarity`` turns an estimate alpha_hat into Theorems 1-2's predictions.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tvtheory import _check, metrics, model, taskvec, theory

ApplyFn = Callable[..., jax.Array]


# --------------------------------------------------------------------------------------------- estimators of alpha
def param_cosine(tau1, tau2) -> jax.Array:
    """Cosine of the two task vectors in parameter space, <dPsi_T1, dPsi_T2> / (||dPsi_T1|| ||dPsi_T2||).

    Budget: none (no samples; the fine-tunes only). A direction every task vector shares (here the mean of the
    irrelevant patterns in dV) biases it towards +1 whatever alpha is."""
    return taskvec.cosine(tau1, tau2)


@partial(jax.jit, static_argnames=("apply_fn", "n_probe"))
def output_cosine(apply_fn: ApplyFn, p1, p2, X: jax.Array, n_probe: int | None = None) -> jax.Array:
    """The paper's alpha_hat = E_X cos(f(X; Psi*_T1), f(X; Psi*_T2)), read as in ``metrics.alpha_hat``: the cosine
    of the two output vectors (f(X_n; Psi_i))_n over one shared set of probe inputs (uncentred).

    Budget: ``n_probe`` probe inputs (the first rows of X; X should mix inputs of both tasks). Labels not needed."""
    X = _first("n_probe", X, n_probe)
    return metrics.cosine(apply_fn(p1, X), apply_fn(p2, X))


@partial(jax.jit, static_argnames=("features_fn", "method", "n_probe"))
def feature_correlation(features_fn: ApplyFn, p1, p2, X: jax.Array, method: str = "pearson",
                        n_probe: int | None = None) -> jax.Array:
    """Similarity of the hidden features two fine-tuned models compute on the same probe inputs.

    ``features_fn(params, X)`` returns (N, ...) features per sample (flattened to (N, F)); for this project's model
    use ``model_features``. Methods:
      "pearson": the mean over units of the Pearson correlation across samples of unit i in model 1 with unit i in
        model 2. Signed, in [-1, 1]; it relies on unit i meaning the same in both models, which holds when both were
        fine-tuned from one Psi_0 (task arithmetic's premise). Units constant over the probe set in either model
        (dead ReLUs) are left out; NaN if every unit is.
      "cka": linear CKA (Kornblith et al., 2019), ||F2c^T F1c||_F^2 / (||F1c^T F1c||_F ||F2c^T F2c||_F) on the
        column-centred features. In [0, 1], invariant to orthogonal transforms and isotropic scaling of either
        model's features, and therefore blind to the sign of the relation: CKA(F, -F) = 1, so it cannot tell
        aligned tasks from contradictory ones.
    Budget: ``n_probe`` probe inputs (the first rows of X). Labels not needed."""
    if method not in ("pearson", "cka"):
        _check.fail("method", method, "must be 'pearson' or 'cka'")
    X = _first("n_probe", X, n_probe)
    raw1, raw2 = (features_fn(p, X).reshape(X.shape[0], -1) for p in (p1, p2))
    F1, F2 = raw1 - raw1.mean(0), raw2 - raw2.mean(0)
    if method == "cka":
        cross = jnp.sum((F2.T @ F1) ** 2)
        return cross / (jnp.linalg.norm(F1.T @ F1) * jnp.linalg.norm(F2.T @ F2))
    s1, s2 = jnp.sqrt(jnp.mean(F1**2, 0)), jnp.sqrt(jnp.mean(F2**2, 0))
    ok = _varies(raw1, s1) & _varies(raw2, s2)
    r = jnp.mean(F1 * F2, 0) / jnp.where(ok, s1 * s2, 1.0)
    return jnp.sum(jnp.where(ok, r, 0.0)) / jnp.sum(ok)


def _varies(F: jax.Array, std: jax.Array) -> jax.Array:
    """A unit varies over the probe set when its std exceeds 1e-4 of its RMS: a constant unit's centred values are
    float rounding (~1e-7 relative per sample), not signal."""
    return std > 1e-4 * jnp.sqrt(jnp.mean(F**2, 0)) + 1e-30


def model_features(params, X: jax.Array, which: str = "pre") -> jax.Array:
    """The ReLU layer of the paper's model, pooled over tokens: "pre" (1/P) sum_l V (A X)_l, "post"
    (1/P) sum_l ReLU(V (A X)_l); both (..., m). f(X) = model_features(params, X, "post") @ a, with a the readout.
    Serves as ``features_fn`` (with ``functools.partial`` for which="post"), in either parameter form."""
    if which not in ("pre", "post"):
        _check.fail("which", which, "must be 'pre' or 'post'")
    W, V = model.merged(params)
    A = jax.nn.softmax(jnp.einsum("...sd,...ld->...ls", X, X @ W.T), axis=-1)
    G_PxM = (A @ X) @ V.T
    return (G_PxM if which == "pre" else jax.nn.relu(G_PxM)).mean(axis=-2)


def model_post_features(params, X: jax.Array) -> jax.Array:
    """``model_features(params, X, "post")`` as a module-level function (a stable static argument for jit)."""
    return model_features(params, X, "post")


@partial(jax.jit, static_argnames=("apply_fn", "dist", "n_probe"))
def disentanglement_error(apply_fn: ApplyFn, base, tau1, tau2, X1: jax.Array, X2: jax.Array, lam1=1.0, lam2=1.0,
                          dist: str = "sign", n_probe: int | None = None) -> jax.Array:
    """Weight disentanglement error (Ortiz-Jimenez et al., 2023, "Task Arithmetic in the Tangent Space", their
    xi(alpha_1, alpha_2)):
        xi = sum_{t=1,2} E_{X ~ T_t} dist( f(X; base + lam_t tau_t), f(X; base + lam1 tau1 + lam2 tau2) ),
    a sum over the two tasks as in the paper (so in [0, 2] for "sign"). 0 when each task vector acts only on its own
    task's inputs. dist: "sign" (their classification distance, 1[predictions differ]; a zero output counts as
    negative) or "abs" (|f - f'|, which still moves when noise-free predictions have saturated).

    lam1, lam2 may be traced (vmap over a coefficient grid). Budget: ``n_probe`` inputs of each task (first rows of
    X1 and X2). Labels not needed. (A ``weight_disentanglement_error`` may also exist in ``tvtheory.tangent``.)"""
    if dist not in ("sign", "abs"):
        _check.fail("dist", dist, "must be 'sign' or 'abs'")
    X1, X2 = _first("n_probe", X1, n_probe), _first("n_probe", X2, n_probe)
    merged_params = taskvec.apply(base, [tau1, tau2], jnp.stack([jnp.asarray(lam1), jnp.asarray(lam2)]))
    total = 0.0
    for X, tau, lam in ((X1, tau1, lam1), (X2, tau2, lam2)):
        alone, both = apply_fn(taskvec.add(base, taskvec.scale(lam, tau)), X), apply_fn(merged_params, X)
        total = total + (jnp.mean((alone > 0) != (both > 0)) if dist == "sign" else jnp.mean(jnp.abs(alone - both)))
    return total


@partial(jax.jit, static_argnames=("loss_fn", "average", "n_batches"))
def gradient_alignment(loss_fn: Callable, base, batches1, batches2, average: str = "gradient",
                       n_batches: int | None = None) -> jax.Array:
    """Cosine of the two tasks' loss gradients at Psi_0 (``base``): cheap, since it needs no fine-tuning.

    ``loss_fn(params, batch) -> scalar``; ``batches1``/``batches2`` are pytrees of batches stacked on a leading axis
    K (e.g. (X (K, B, ...), y (K, B))), labelled samples of T1 and T2. average="gradient" (default): the cosine of
    the two mean gradients over the K batches, i.e. of the gradient on all K B samples: the noise of a small batch
    averages out before the cosine. "cosine": the mean over k of the per-batch cosines (biased towards 0 by batch
    noise). Budget: ``n_batches`` batches of each task (the first ones; None: all K)."""
    if average not in ("gradient", "cosine"):
        _check.fail("average", average, "must be 'gradient' or 'cosine'")
    b1, b2 = (jax.tree.map(lambda x: _first("n_batches", x, n_batches), b) for b in (batches1, batches2))
    grad = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))
    g1, g2 = grad(base, b1), grad(base, b2)
    if average == "gradient":
        mean = lambda g: jax.tree.map(lambda x: x.mean(0), g)  # noqa: E731
        return taskvec.cosine(mean(g1), mean(g2))
    return jnp.mean(jax.vmap(taskvec.cosine)(g1, g2))


def model_hinge_loss(params, batch) -> jax.Array:
    """This project's loss as a ``loss_fn`` for ``gradient_alignment``: the hinge loss of model.apply on (X, y)."""
    X, y = batch
    return metrics.hinge(model.apply(params, X), y)


def _first(field: str, x: jax.Array, n: int | None) -> jax.Array:
    if n is None:
        return x
    _check.integer(field, n, lo=1, hi=x.shape[0])
    return x[:n]


# --------------------------------------------------------------------------------------------- choosing lambda
@partial(jax.jit, static_argnames=("apply_fn",))
def lambda_curves(apply_fn: ApplyFn, base, tau, lams_L: jax.Array, X: jax.Array, y: jax.Array) -> dict:
    """Hinge loss and accuracy of base + lambda tau on (X, y) for every lambda: {"loss": (L,), "acc": (L,)}.

    The validation curve the selection rules take, for any model (for Psi_0 + dPsi_T1 + lambda dPsi_T2 pass
    base = Psi_0 + dPsi_T1). One lambda at a time (lax.map), so memory does not grow with the grid; for this
    project's model ``sweep.grid_eval`` computes the same faster."""
    def one(lam):
        return metrics.evaluate_with(apply_fn, taskvec.add(base, taskvec.scale(lam, tau)), X, y)
    return jax.lax.map(one, jnp.asarray(lams_L))


class Choice(NamedTuple):
    """A chosen coefficient: ``lam`` (NaN where none qualifies) and ``found`` (False: "none")."""

    lam: np.ndarray
    found: np.ndarray


def choose_addition(lams, loss1, loss2, *, eps: float = 0.05, tol: float = 0.05, ref1=None) -> Choice:
    """Addition (Theorem 1's goal, both tasks learned): the SMALLEST lambda at which
        T2 is learned:  loss2(lambda) <= eps,
        T1 is kept:     loss1(lambda) <= ref1 + tol,
    with loss1, loss2 the validation hinge losses of Psi_0 + dPsi_T1 + lambda dPsi_T2 on T1 and T2 (..., L) and ref1
    T1's own fine-tuned validation loss (default: loss1 at lambda = 0, which must then be on the grid). "none" where
    no lambda qualifies (Theorem 1: contradictory tasks).

    Why the smallest: above the threshold T2's noise-free hinge loss is flat at ~0, so "the smallest sum of the two
    losses" is a tie over a wide range, decided by validation noise; the smallest qualifying lambda is the minimal
    edit (T1 pays |lambda| beta), and it is the quantity Theorem 1 predicts, 1 - alpha + beta. Defaults: eps as the
    claims' eps_learned; tol = eps."""
    lams, loss1, loss2, ref1 = _curves(lams, loss1, loss2, ref1)
    ok = (loss2 <= eps) & (loss1 <= ref1[..., None] + tol)
    return _pick(np.where(ok, lams, np.inf).min(axis=-1), ok)


def choose_negation(lams, loss1, loss2, *, tol: float = 0.05, forget: float = 1.0, ref1=None) -> Choice:
    """Negation (Theorem 2's goal, forget T2 and keep T1): among lambda < 0 with
        T1 kept (the control constraint):  loss1(lambda) <= ref1 + tol,
        T2 forgotten:                       loss2(lambda) >= forget,
    the lambda with the LARGEST T2 validation loss (ties: the smallest |lambda|); "none" where no lambda < 0
    qualifies (Theorem 2: aligned tasks). loss1, loss2 and ref1 as in ``choose_addition``; forget = 1 is the zero
    predictor's hinge loss (the claims' forget_loss, Theta(1)).

    Why the deepest forgetting rather than the smallest |lambda| that forgets: for alpha <= 0, Psi*_T1 alone already
    has T2 loss ~1 or more (it carries nothing of T2, or its opposite), so the smallest |lambda| would always be the
    first grid step below 0. Maximising T2's loss inside T1's budget finds the edge of the window instead: set by
    T1's budget (|lambda| ~ tol / beta) for irrelevant tasks, by -Theta(alpha^-2) or the grid for contradictory."""
    lams, loss1, loss2, ref1 = _curves(lams, loss1, loss2, ref1)
    ok = (lams < 0) & (loss1 <= ref1[..., None] + tol) & (loss2 >= forget)
    order = np.argsort(np.abs(lams), kind="stable")              # argmax takes the first of ties: smallest |lambda|
    score = np.where(ok, loss2, -np.inf)[..., order]
    lam = lams[order][np.argmax(score, axis=-1)]
    return _pick(lam, ok)


def _curves(lams, loss1, loss2, ref1):
    lams = np.asarray(lams, float)
    loss1, loss2 = np.asarray(loss1, float), np.asarray(loss2, float)
    if lams.ndim != 1 or loss1.shape[-1:] != lams.shape or loss2.shape != loss1.shape:
        _check.fail("loss1", loss1.shape, f"loss1 and loss2 must have the same shape (..., L) with L = {lams.size} "
                    "lambdas")
    if ref1 is None:
        at0 = np.flatnonzero(np.isclose(lams, 0.0))
        if at0.size == 0:
            _check.fail("lams", lams.tolist(), "must contain 0 unless ref1 (T1's own validation loss) is given")
        ref1 = loss1[..., at0[0]]
    return lams, loss1, loss2, np.asarray(ref1, float) * np.ones(loss1.shape[:-1])


def _pick(lam, ok) -> Choice:
    found = ok.any(axis=-1)
    return Choice(np.where(found, lam, np.nan), found)


class Advice(NamedTuple):
    """Theorems 1-2 read with an estimate alpha_hat in place of alpha (arrays of alpha_hat's shape)."""

    learn_t2: np.ndarray       # 1 - alpha_hat + beta: the smallest lambda that learns T2 (any alpha)
    addition: np.ndarray       # learn_t2 where both tasks can be learned (alpha_hat > -tol), NaN otherwise
    neg_lo: np.ndarray         # negation window [neg_lo, neg_hi): -inf (irrelevant), -C / alpha_hat^2
    neg_hi: np.ndarray         #   (contradictory); NaN, NaN where no lambda forgets T2 and keeps T1 (aligned)
    relation: np.ndarray       # "contradictory" | "irrelevant" | "aligned"


def lambda_from_similarity(alpha_hat, *, beta: float = 0.0, C: float = 1.0, tol: float = 0.1) -> Advice:
    """The theory as a tool: lambda from a measured alpha_hat (``theory.addition_threshold``,
    ``theory.negation_lower_bound``).

    Relation: alpha_hat <= -tol contradictory, |alpha_hat| < tol irrelevant, alpha_hat >= tol aligned (an estimate
    is never exactly 0; tol = 0.1 by default). Addition (Theorem 1): lambda >= 1 - alpha_hat + beta, NaN for
    contradictory tasks (no lambda learns both). Negation (Theorem 2): irrelevant, any lambda < 0 (window
    [-inf, 0)); contradictory, [-C / alpha_hat^2, 0); aligned, none (NaN). C is the paper's uncalibrated Theta(1)."""
    _check.in_range("tol", tol, lo=0.0)
    _check.in_range("C", C, lo=0.0, lo_open=True)
    a = np.asarray(alpha_hat, float)
    relation = np.where(a <= -tol, "contradictory", np.where(a < tol, "irrelevant", "aligned"))
    learn_t2 = 1.0 - a + beta
    # Theorem 1 as stated covers alpha >= 0; the irrelevant band just below 0 is read as alpha ~ 0.
    addition = np.where(relation == "irrelevant", learn_t2, theory.addition_threshold(a, beta))
    lo = np.where(relation == "contradictory", theory.negation_lower_bound(np.minimum(a, -1e-12), C),
                  np.where(relation == "irrelevant", -np.inf, np.nan))
    hi = np.where(relation == "aligned", np.nan, 0.0)
    return Advice(learn_t2, addition, lo, hi, relation)
