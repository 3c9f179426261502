"""Model merging judged where the truth is known: every method of tvtheory/merge.py across the task relation alpha,
task vectors from standard and from tangent-space (linearised) fine-tuning, AdaMerging's label-free coefficients, and
merges of k = 2..8 task vectors.

1. Methods across the relations. For every alpha of the phase diagram, each method merges dPsi_T1 with r dPsi_T2 and
   the result is scaled by s: Psi_0 + s M(dPsi_T1, r dPsi_T2), on a declared (s, r) grid (r < 0: negation). For
   task arithmetic this is Psi_0 + s dPsi_T1 + s r dPsi_T2, whose s = 1 line is arithmetic's lambda = r. Every method
   named here is homogeneous of degree 1 (merge.py), so for each r the merged delta D_r is computed once and the s
   axis is model.grid_eval's exact coefficient grid. The addition and the negation coefficients are chosen per seed
   on a validation set (stream VAL) by declared rules (``choose_addition``, ``choose_negation``) and reported on a
   separate test set (stream TEST).
   The task vectors are arithmetic's (the same config blocks, stages and streams: its cache serves them).
2. Tangent space (Ortiz-Jimenez et al., 2023): T1 and T2 fine-tuned in the linearisation of model.apply at Psi_0
   (tangent.linearize; the same SGD batches as the standard fine-tunes) on the Figure 1 alphas. The linearised model
   is affine in its parameters, f_lin(Psi_0 + s(dPsi_1 + r dPsi_2)) = f0 + s (g1 + r g2) with g_k = J dPsi_k, so the
   whole (s, r) grid costs three output vectors per set. Task arithmetic with both kinds of task vectors, and the
   weight disentanglement error of both (tangent.weight_disentanglement_error's definition).
3. AdaMerging (Yang et al., 2024): per-task and per-leaf coefficients learned without labels by entropy minimisation
   on the unlabelled validation inputs of T1 and T2, against the labelled validation choice and the theory's
   Psi_0 + dPsi_T1 + (1 - alpha) dPsi_T2.
4. k task vectors, k = 2..8 (mu_i = e_i, the irrelevant patterns the basis vectors beyond the 8 tasks and the
   target's own direction, one set for every k so that each task's data and fine-tune are the same whatever k):
   all irrelevant; mixed relations (task i >= 2 at alpha_i = mixed_alphas[(i - 2) % len] to T1); and Theorem 3's
   out-of-domain target sum_i gamma_i e_i + kappa e_{9} from the first k sources. Psi_0 + s M(dPsi_1, ..., dPsi_k)
   with s chosen on validation, every task's test loss and accuracy against k.

The claims (``claims``), each on validation-chosen outcomes reported on test, with the tolerances of config.Claims
and this module's ``Merging`` block (declared, never fitted on the data they judge), pass / fail / inconclusive:
  merging.methods   every method has task arithmetic's outcome wherever that is certain (part 1; the measured text
                    names which method changes which regime)
  merging.tangent   tangent task vectors: weight disentanglement error lower by wde_margin, regimes the same (part 2)
  merging.adaptive  AdaMerging and the theory's lambda = 1 - alpha within eps of the validation choice (part 3)
  merging.k_tasks   Theorem 1's bound on k irrelevant tasks and Theorem 3's target from k sources (part 4)
"""

from __future__ import annotations

import re
import time
from functools import partial
from typing import List, NamedTuple, Optional

import numpy as np
import pandas as pd

from tvtheory import _check, analysis, claims as rules
from tvtheory.config import Node, Synthetic, check_list, config, field
from tvtheory.experiments import _pairs
from tvtheory.runner import Cost

COST, AFTER = 174, ("arithmetic",)
TABLES = ("methods", "methods_val", "diagnostics", "wde", "adaptive", "k_tasks", "k_val")
SIZE_FIELDS = ("n_seeds", "merging.phase_alphas", "merging.alphas", "merging.ratios", "merging.scales",
               "merging.n_val", "merging.n_test", "merging.methods", "merging.ks", "merging.k_scales",
               "merging.ada_steps", "merging.wde_lams", "train.steps", "train.batch", "data.d", "data.P", "model.m")

METHODS = ("task_arithmetic", "ties", "dare", "dare_ties", "tsv", "iso_c")
SPACES = ("standard", "tangent")
GOALS = ("addition", "negation")
SCENARIOS = ("irrelevant", "mixed", "ood")
SCHEMES = ("adamerging_task", "adamerging_leaf", "theory")
LAPACK = ("tsv", "iso_c")                 # the methods built on singular value decompositions
# DARE's drop masks come from one key per seed (streams.MERGING_DARE_MASKS), the same for every alpha, r and k, so
# that a task's mask never changes with the company it merges in.
# The VAL / TEST task index of the k-source out-of-domain target (the sources use their own index i).
TARGET_TASK = 99


# ------------------------------------------------------------------------------------------------------- config
@config
class Merging(Node):
    """What the merging experiment measures and its declared rules and tolerances (written before the full-size run;
    a pilot with other Psi_0 draws, seed=100, sized the grids)."""

    methods: List[str] = field(help="merging methods (tvtheory/merge.py); the first must be task_arithmetic, the "
                               "reference of merging.methods", factory=lambda: ["task_arithmetic", "ties", "dare",
                                                                                "tsv", "iso_c"])
    ties_k: float = field(0.2, "TIES: each task vector keeps its top-k fraction of entries by magnitude, over all "
                          "leaves (Yadav et al.'s default top-20%)")
    dare_p: float = field(0.5, "DARE: drop probability of each entry, survivors rescaled by 1/(1-p) (the smallest "
                          "rate of Yu et al.'s study; this model has no redundant width to drop 90% of)")
    alphas: List[float] = field(help="the Figure 1 alphas: the claims, tangent-space fine-tuning and AdaMerging",
                                factory=lambda: [-0.9, -0.5, 0.0, 0.5, 0.9])
    phase_alphas: List[float] = field(help="the methods' success map (with the Figure 1 alphas): arithmetic's phase "
                                      "diagram, whose fine-tunes its cache holds",
                                      factory=lambda: [float(round(a, 2)) for a in np.linspace(-1, 1, 21)])
    ratios: List[float] = field(help="r of Psi_0 + s M(dPsi_T1, r dPsi_T2): T2's coefficient relative to T1's "
                                "(r < 0 negates T2); spans arithmetic's lambda range [-2, 3]",
                                factory=lambda: [-2.0, -1.5, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
    scales: List[float] = field(help="s of Psi_0 + s M(dPsi_T1, r dPsi_T2): the merged vector's scale, the single "
                                "lambda of TIES, TSV and Iso-C", factory=lambda: [0.5, 1.0, 1.5, 2.0])
    n_val: int = field(200, "validation samples per task (stream VAL) on which every coefficient is chosen, and "
                       "AdaMerging's unlabelled inputs and the disentanglement error's probes")
    n_test: int = field(1000, "test samples per task (stream TEST) on which every choice is reported and judged "
                        "(>= claims.min_test for a conclusive verdict)")
    keep_tol: float = field(0.05, "negation is chosen as the largest T2 validation hinge loss among r < 0 whose T1 "
                            "validation hinge exceeds Psi*_T1's own by at most this (eps: the theorems' Theta(eps))")
    wde_lams: List[float] = field(help="the weight disentanglement error is averaged over the grid of (lambda_1, "
                                  "lambda_2) in this list squared (negation, addition below and above 1)",
                                  factory=lambda: [-1.0, 0.5, 1.0, 1.5])
    wde_margin: float = field(0.01, "merging.tangent: the tangent task vectors' mean disentanglement error must lie "
                              "below the standard ones' by at least this (one point of label disagreement summed "
                              "over both tasks: smaller differences are within n_val probes' sampling error)")
    ada_steps: int = field(100, "AdaMerging: Adam steps on the entropy (a fifth of Yang et al.'s 500)")
    ada_lr: float = field(0.01, "AdaMerging: Adam's rate (10x Yang et al.'s 1e-3, so that steps x lr = 1 crosses the "
                          "clip range)")
    ada_batch: int = field(16, "AdaMerging: unlabelled inputs per task and step (Yang et al.'s 16)")
    ada_init: float = field(0.3, "AdaMerging: initial coefficients (Yang et al.'s prior 0.3)")
    ada_clip: List[float] = field(help="AdaMerging: coefficients clamped to [lo, hi] (the reference code's [0, 1]: "
                                  "entropy alone rewards any growth of the outputs)", factory=lambda: [0.0, 1.0])
    ks: List[int] = field(help="numbers of merged task vectors", factory=lambda: [2, 3, 4, 5, 6, 7, 8])
    k_scales: List[float] = field(help="s of Psi_0 + s M(dPsi_1, ..., dPsi_k), chosen on validation; reaches the "
                                  "s >= (1 + c) / gamma^2 that Theorem 3 needs for the target",
                                  factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0])
    mixed_alphas: List[float] = field(help="mixed relations: task i >= 2 has mu_i = a e_1 + sqrt(1 - a^2) e_i with "
                                      "a = mixed_alphas[(i - 2) % len] (T2 contradicts T1)",
                                      factory=lambda: [-0.5, 0.0, 0.5])
    ood_gamma: float = field(0.8, "the k-source target: gamma_i = ood_gamma / sqrt(k) on each source, kappa = "
                             "sqrt(1 - ood_gamma^2) outside them (the same norm on the sources' span for every k)")
    ood_c: float = field(0.5, "Theorem 3's c, declared (the middle of (0, 1)): merging.k_tasks reports whether the "
                         "chosen s meets the theorem's conditions s sum gamma_i >= 1 + c, s sum gamma_i^2 >= 1 + c, "
                         "s beta <= c")

    def check(self):
        if not self.methods or len(set(self.methods)) != len(self.methods):
            _check.fail("methods", list(self.methods), "needs at least one method, none repeated")
        for i, m in enumerate(self.methods):
            if m not in METHODS:
                _check.fail(f"methods[{i}]", m, f"must be one of {METHODS}")
        if self.methods[0] != "task_arithmetic":
            _check.fail("methods", list(self.methods), "must start with task_arithmetic (every other method is "
                        "compared with it)")
        _check.in_range("ties_k", self.ties_k, 0.0, 1.0, lo_open=True)
        _check.in_range("dare_p", self.dare_p, 0.0, 1.0, hi_open=True)
        for name in ("alphas", "phase_alphas"):
            check_list(name, getattr(self, name), min_len=1 if name == "alphas" else 0)
            for i, a in enumerate(getattr(self, name)):
                _check.in_range(f"{name}[{i}]", a, -1.0, 1.0)
        for name in ("ratios", "scales", "wde_lams", "k_scales"):
            check_list(name, getattr(self, name))
            for i, v in enumerate(getattr(self, name)):
                _check.finite(f"{name}[{i}]", v)
        if not any(r < 0 for r in self.ratios) or not any(r > 0 for r in self.ratios):
            _check.fail("ratios", list(self.ratios), "needs negative (negation) and positive (addition) values")
        for name in ("scales", "k_scales"):
            for i, v in enumerate(getattr(self, name)):
                _check.in_range(f"{name}[{i}]", v, lo=0.0, lo_open=True)
        _check.integer("n_val", self.n_val, lo=1)
        _check.integer("n_test", self.n_test, lo=1)
        _check.in_range("keep_tol", self.keep_tol, lo=0.0)
        _check.in_range("wde_margin", self.wde_margin, lo=0.0)
        _check.integer("ada_steps", self.ada_steps, lo=0)
        _check.in_range("ada_lr", self.ada_lr, lo=0.0, lo_open=True)
        _check.integer("ada_batch", self.ada_batch, lo=1)
        _check.finite("ada_init", self.ada_init)
        if len(self.ada_clip) != 2 or not self.ada_clip[0] <= self.ada_clip[1]:
            _check.fail("ada_clip", list(self.ada_clip), "must be [lo, hi] with lo <= hi")
        check_list("ks", self.ks)
        for i, k in enumerate(self.ks):
            _check.integer(f"ks[{i}]", k, lo=2)
        check_list("mixed_alphas", self.mixed_alphas, unique=False)
        for i, a in enumerate(self.mixed_alphas):
            _check.in_range(f"mixed_alphas[{i}]", a, -1.0, 1.0, lo_open=True, hi_open=True)
        _check.in_range("ood_gamma", self.ood_gamma, 0.0, 1.0, lo_open=True, hi_open=True)
        _check.in_range("ood_c", self.ood_c, 0.0, 1.0, lo_open=True, hi_open=True)

    def map_alphas(self) -> np.ndarray:
        """The success map's alphas: the phase diagram's and the Figure 1 ones."""
        return np.unique(np.round(np.asarray(list(self.alphas) + list(self.phase_alphas), float), 6))

    def k_max(self) -> int:
        return max(self.ks)


@config
class Config(Synthetic):
    merging: Merging = field(Merging(), "methods, grids, budgets and the declared tolerances")

    def n_task_dirs(self) -> int:
        """The k-task part: k_max task directions and the target's own."""
        return max(2, self.merging.k_max() + 1)

    def check(self):
        super().check()
        # The merges are judged on the paper's binary model (its W and V, hinge loss and Theorems 1-2's rules).
        if getattr(self.model, "arch", "paper") != "paper":
            _check.fail("model.arch", self.model.arch, "must be 'paper' (the merging experiment's rules and "
                        "evaluation are the one-layer transformer's)")
        if getattr(self.data, "classes", 2) != 2:
            _check.fail("data.classes", self.data.classes, "must be 2 (binary tasks, the hinge loss)")
        # The tangent-space fine-tunes draw clean labels (data.sample), so standard and tangent task vectors would
        # be trained on different labels.
        if getattr(self.data, "label_noise", 0.0) != 0.0:
            _check.fail("data.label_noise", self.data.label_noise, "must be 0 (the tangent-space fine-tunes draw "
                        "clean labels)")


# ------------------------------------------------------------------------------------------------ choice rules
def choose_addition(L1_RxZ, L2_RxZ, ratios, scales) -> tuple[int, int]:
    """The (r, s) indices of the least summed validation hinge loss of T1 and T2; ties go to the smallest
    coefficients (s, s r) in norm."""
    total = np.asarray(L1_RxZ, float) + np.asarray(L2_RxZ, float)
    return _argbest(np.where(np.isfinite(total), total, np.inf), ratios, scales)


def choose_negation(L1_RxZ, L2_RxZ, own_L1: float, ratios, scales, keep_tol: float) -> tuple[int, int]:
    """Among r < 0, the largest T2 validation hinge loss whose T1 validation hinge is at most Psi*_T1's own plus
    keep_tol; when no grid point keeps T1 so, the least T1 hinge loss (negation then fails on test). Ties go to the
    smallest coefficients."""
    L1, L2 = np.asarray(L1_RxZ, float), np.asarray(L2_RxZ, float)
    neg = (np.asarray(ratios) < 0)[:, None] & np.isfinite(L1) & np.isfinite(L2)
    ok = neg & (L1 <= own_L1 + keep_tol + 1e-9)
    if ok.any():
        return _argbest(np.where(ok, -L2, np.inf), ratios, scales)
    return _argbest(np.where(neg, L1, np.inf), ratios, scales)


def _argbest(score_RxZ: np.ndarray, ratios, scales) -> tuple[int, int]:
    r, s = np.meshgrid(np.asarray(ratios, float), np.asarray(scales, float), indexing="ij")
    tied = score_RxZ <= score_RxZ.min() + 1e-9
    size = np.where(tied, np.hypot(s, s * r), np.inf)
    i, j = np.unravel_index(np.argmin(size), size.shape)
    return int(i), int(j)


def choose_scale(val_loss_Z, scales) -> int:
    """k tasks: the s of the least mean validation hinge loss; ties go to the smallest s."""
    v = np.where(np.isfinite(val_loss_Z), np.asarray(val_loss_Z, float), np.inf)
    return int(np.flatnonzero(v <= v.min() + 1e-9)[np.argmin(np.asarray(scales)[v <= v.min() + 1e-9])])


def mixed_patterns(d: int, k_max: int, mixed_alphas) -> np.ndarray:
    """mu_1 = e_1; mu_i = a_i e_1 + sqrt(1 - a_i^2) e_i for i >= 2 (a_i cycling through mixed_alphas). (k_max, d)"""
    out = np.zeros((k_max, d), np.float32)
    out[0, 0] = 1.0
    for i in range(1, k_max):
        a = float(mixed_alphas[(i - 1) % len(mixed_alphas)])
        out[i, 0], out[i, i] = a, np.sqrt(1.0 - a * a)
    return out


def ood_target(d: int, k: int, k_max: int, gamma: float) -> np.ndarray:
    """The k-source target: gamma / sqrt(k) on e_1..e_k, sqrt(1 - gamma^2) on e_{k_max + 1}. (d,)"""
    t = np.zeros(d, np.float32)
    t[:k] = gamma / np.sqrt(k)
    t[k_max] = np.sqrt(1.0 - gamma**2)
    return t


# ------------------------------------------------------------------------------------------------ compiled stages
class Opts(NamedTuple):
    """The options the compiled stages take as static arguments (hashable, unlike the config's lists)."""

    methods: tuple
    ties_k: float
    dare_p: float
    n_val: int
    n_test: int
    ada_steps: int
    ada_lr: float
    ada_batch: int
    ada_init: float
    ada_clip: tuple


def _opts(mc: Merging) -> Opts:
    return Opts(tuple(mc.methods), float(mc.ties_k), float(mc.dare_p), mc.n_val, mc.n_test, mc.ada_steps,
                float(mc.ada_lr), mc.ada_batch, float(mc.ada_init), tuple(float(c) for c in mc.ada_clip))


def _evaluator(setup) -> str:
    """'vocab' (vocab_grid) for noise-free samples of the merged form, else 'grid' (model.grid_eval)."""
    return "vocab" if setup.data.sigma == 0 and setup.model.form == "merged" else "grid"


def _grid_like(C: int, Z: int):
    """One seed's entry of an ``eval_grid`` stage: loss and accuracy (C, Z)."""
    import jax

    return tuple(jax.ShapeDtypeStruct((C, Z), np.float32) for _ in range(2))


def _stages():
    """The jitted stages (JAX is imported only once the config is valid)."""
    import jax
    import jax.numpy as jnp

    from tvtheory import data, merge, metrics, model, streams, tangent, taskvec

    def merged_delta(name, taus, c_K, key, mc):
        """M(c_1 dPsi_1, ..., c_K dPsi_K) as a delta (base zero: every method adds its merge to base). TSV and Iso-C
        run leaf by leaf, each leaf's decompositions once the previous leaf's are done (see ``deltas``)."""
        zero = jax.tree.map(jnp.zeros_like, taus[0])
        if name == "task_arithmetic":
            return merge.task_arithmetic(zero, taus, c_K)
        if name == "ties":
            return merge.ties(zero, taus, k=mc.ties_k, coeff=c_K)
        if name == "dare":
            return merge.dare(key, zero, taus, p=mc.dare_p, coeffs=c_K)
        if name == "dare_ties":
            return merge.dare_ties(key, zero, taus, p=mc.dare_p, k=mc.ties_k, coeff=c_K)
        fn = merge.tsv if name == "tsv" else merge.iso_c
        total, last = zero, None
        for path in merge.leaf_paths(zero):
            if last is not None:
                taus = jax.lax.optimization_barrier((taus, last))[0]
            last = fn(zero, taus, coeff=c_K, include=("^" + re.escape(path) + "$",))
            total = jax.tree.map(jnp.add, total, last)
        return total

    @partial(jax.jit, static_argnames=("methods", "mc"))
    def deltas(key, seed_ids, taus_SxK, coeffs_CxK, *, methods, mc):
        """D[s, m, c] = M_m(c_1 dPsi_1, ..., c_K dPsi_K) for every seed and coefficient row c: leaves (S, M, C, ...).

        One decomposition at a time: jaxlib 0.10's CPU LAPACK kernels split a batch of matrices over XLA's intra-op
        thread pool and block until it is done, so two batched SVDs running at once on a 2-thread pool wait for each
        other forever (observed: both pool threads in SingularValueDecompositionKernel). TSV and Iso-C therefore
        loop over the rows (lax.map) and over the leaves, and each method starts once the previous one is done
        (optimization_barrier); the other methods are vmapped over the rows."""
        def one(args):
            s, taus_K = args
            k = streams.concern(streams.seed_key(key, s), streams.MERGING_DARE_MASKS)
            taus = [jax.tree.map(lambda t, i=i: t[i], taus_K) for i in range(coeffs_CxK.shape[1])]
            per, last = [], None
            for m in methods:
                cs = coeffs_CxK if last is None else jax.lax.optimization_barrier((coeffs_CxK, last))[0]
                f = lambda c, m=m: merged_delta(m, taus, c, k, mc)  # noqa: E731
                last = jax.lax.map(f, cs) if m in LAPACK else jax.vmap(f)(cs)
                per.append(last)
            return jax.tree.map(lambda *x: jnp.stack(x), *per)
        return jax.lax.map(one, (seed_ids, taus_SxK))

    @partial(jax.jit, static_argnames=("setup", "n"))
    def eval_grid(key, seed_ids, stream, task_index, mu, irr, psi0_S, D_SxC, coeffs_SxCxZ, *, setup, n):
        """Hinge loss and accuracy of Psi_0 + z D_c for every delta c and coefficient z of its row, on n samples of
        one task (stream VAL or TEST, ``task_index``): two (S, C, Z), exact. Noise-free samples of the merged form
        go through ``vocab_grid``; others through model.grid_eval (one call per delta)."""
        q = setup.data.max_distinct(irr.shape[0])
        fast = _evaluator(setup) == "vocab"
        vocab = jnp.concatenate([mu[None], -mu[None], irr])

        def one(args):
            s, psi0, D_C, coeffs_CxZ = args
            X, y = data.sample(streams.task(streams.seed_key(key, s), stream, task_index), mu, irr, n, setup.data)
            if fast:
                return vocab_grid(psi0, D_C, coeffs_CxZ, X, y, vocab, q)
            return jax.lax.map(lambda a: model.grid_eval(psi0, jax.tree.map(lambda t: t[None], a[0]), a[1][:, None],
                                                          X, y, q=q), (D_C, coeffs_CxZ))
        return jax.lax.map(one, (seed_ids, psi0_S, D_SxC, coeffs_SxCxZ))

    @partial(jax.jit, static_argnames=("setup",))
    def tangent_finetune(key, seed_ids, psi0_S, mu, irr, task_index, *, setup):
        """Psi*_T trained in the linearisation of model.apply at Psi_0 (tangent.sgd: plain SGD on the hinge loss, the
        step size and batches of train.finetune: batch t from fold_in(key, t) of stream FINETUNE, this task's index).
        Returns (params, per-step batch hinge loss (steps,), finite) per seed."""
        spec, task = setup.train, setup.data

        def one(args):
            s, p0 = args
            k = streams.task(streams.seed_key(key, s), streams.FINETUNE, task_index)
            if spec.n_train:
                X_tr, y_tr = data.sample(jax.random.fold_in(k, streams.TRAIN_SET), mu, irr, spec.n_train, task)

                def sample(kt, b):
                    idx = jax.random.choice(kt, spec.n_train, (b,), replace=b > spec.n_train)
                    return X_tr[idx], y_tr[idx]
            else:
                def sample(kt, b):
                    return data.sample(kt, mu, irr, b, task)
            params, loss_T = tangent.sgd(tangent.linearize(model.apply, p0), p0, k, sample, steps=spec.steps,
                                         eta=spec.eta, batch=spec.batch)
            ok = jnp.all(jnp.isfinite(loss_T)) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                                                                     for x in jax.tree.leaves(params)]))
            return params, loss_T, ok
        return jax.lax.map(one, (seed_ids, psi0_S))

    @partial(jax.jit, static_argnames=("setup", "n_val", "n_test"))
    def tangent_outputs(key, seed_ids, mus_2xD, irr, psi0_S, tau1_S, tau2_S, *, setup, n_val, n_test):
        """The linearised model's pieces on each task's validation and test sets: f0 = f(Psi_0), g_k = J dPsi_Tk
        (jvp at Psi_0), and the labels. Returns (val (S, 2 tasks, 4, n_val), test (S, 2, 4, n_test)), the 4 rows
        f0, g1, g2, y."""
        def one(args):
            s, psi0, tau1, tau2 = args
            sk = streams.seed_key(key, s)
            out = []
            for stream, n in ((streams.VAL, n_val), (streams.TEST, n_test)):
                rows = []
                for t in (0, 1):
                    X, y = data.sample(streams.task(sk, stream, t), mus_2xD[t], irr, n, setup.data)
                    f0, g1 = jax.jvp(lambda p: model.apply(p, X), (psi0,), (tau1,))
                    g2 = jax.jvp(lambda p: model.apply(p, X), (psi0,), (tau2,))[1]
                    rows.append(jnp.stack([f0, g1, g2, y]))
                out.append(jnp.stack(rows))
            return tuple(out)
        return jax.lax.map(one, (seed_ids, psi0_S, tau1_S, tau2_S))

    @partial(jax.jit, static_argnames=("setup", "n_val"))
    def wde_standard(key, seed_ids, mus_2xD, irr, psi0_S, tau1_S, tau2_S, coeffs_GxK, *, setup, n_val):
        """tangent.weight_disentanglement_error of the standard task vectors in model.apply on both tasks'
        validation inputs: (S, G) sign and mse."""
        def one(args):
            s, psi0, tau1, tau2 = args
            sk = streams.seed_key(key, s)
            Xs = [data.sample(streams.task(sk, streams.VAL, t), mus_2xD[t], irr, n_val, setup.data)[0] for t in (0, 1)]
            e = tangent.weight_disentanglement_error(model.apply, psi0, [tau1, tau2], coeffs_GxK, Xs)
            return e["sign"], e["mse"]
        return jax.lax.map(one, (seed_ids, psi0_S, tau1_S, tau2_S))

    @partial(jax.jit, static_argnames=("setup", "mc"))
    def adaptive(key, seed_ids, mus_2xD, irr, psi0_S, tau1_S, tau2_S, alpha, *, setup, mc):
        """AdaMerging task-wise and leaf-wise on the unlabelled validation inputs of T1 and T2 (their first n_val),
        and the theory's Psi_0 + dPsi_T1 + (1 - alpha) dPsi_T2; each on both tasks' test sets. Returns (coefficients
        (S, 3 schemes, L leaves, 2 tasks), test (S, 3, 2 tasks, 2: loss, acc))."""
        def one(args):
            s, psi0, tau1, tau2 = args
            sk = streams.seed_key(key, s)
            Xv = [data.sample(streams.task(sk, streams.VAL, t), mus_2xD[t], irr, mc.n_val, setup.data)[0]
                  for t in (0, 1)]
            tests = [data.sample(streams.task(sk, streams.TEST, t), mus_2xD[t], irr, mc.n_test, setup.data)
                     for t in (0, 1)]
            kb = streams.concern(sk, streams.MERGING_ADAMERGING_BATCHES)
            L = len(jax.tree.leaves(psi0))
            models, coeffs = [], []
            for gran in ("task", "leaf"):
                p, lam = merge.adamerging(model.apply, psi0, [tau1, tau2], Xv, granularity=gran, steps=mc.ada_steps,
                                          lr=mc.ada_lr, init=mc.ada_init, clip=tuple(mc.ada_clip),
                                          batch=mc.ada_batch, key=kb)
                models.append(p)
                coeffs.append(jnp.broadcast_to(lam, (L, 2)))
            theory_c = jnp.stack([jnp.ones(()), 1.0 - alpha])
            models.append(taskvec.add(psi0, taskvec.combine([tau1, tau2], theory_c)))
            coeffs.append(jnp.broadcast_to(theory_c, (L, 2)))
            ev = jnp.stack([jnp.stack([jnp.stack(list(metrics.evaluate(p, X, y).values())) for X, y in tests])
                            for p in models])
            return jnp.stack(coeffs), ev
        return jax.lax.map(one, (seed_ids, psi0_S, tau1_S, tau2_S))

    return dict(deltas=deltas, eval_grid=eval_grid, tangent_finetune=tangent_finetune,
                tangent_outputs=tangent_outputs, wde_standard=wde_standard, adaptive=adaptive)


def vocab_grid(base, D_C, coeffs_CxZ, X_NxPxD, y_N, vocab_VxD, q: int, block: int = 200):
    """model.grid_eval for many deltas at once, on samples whose tokens are rows of a vocabulary (noise-free data):
    hinge loss and accuracy of base + z D_c for every delta c (leaves (C, ...), merged form W, V) and every z of its
    row of coeffs (C, Z). Two (C, Z).

    The model sees a sample only through its distinct tokens and their counts (model.distinct_tokens), and every
    token is one of the vocabulary's rows (+mu, -mu, the v_j), so the products with W and V are computed once per
    delta on the vocabulary, E W^T E^T (V x V) and E V^T (V x m), and gathered per sample: a grid point costs the
    attention over q distinct tokens alone, where model.grid_eval also pays q d m per sample and delta for the
    products. Up to model.FUSED_Q_MAX distinct tokens a point's attention-weighted sums are model.grid_eval's fused
    loop of q x q multiply-adds over the values gathered from the vocabulary (the same function to float rounding;
    on one core, 56 deltas, 4 scales, 200 samples, q = 16, m = 256: 123 ms against 184 ms for the batched product,
    0.45 s more to compile). A token that is no vocabulary row turns the result into NaN, never into a wrong
    number."""
    import jax
    import jax.numpy as jnp

    from tvtheory import model

    N, P, _ = X_NxPxD.shape
    Vb = vocab_VxD.shape[0]
    # squared distance of every token to every vocabulary row: 0 at the token's own row (any distinct vocabulary)
    dist = (jnp.sum(X_NxPxD**2, -1)[..., None] - 2.0 * X_NxPxD @ vocab_VxD.T + jnp.sum(vocab_VxD**2, -1))
    ids = jnp.argmin(dist, -1)
    exact = jnp.all(jnp.take_along_axis(dist, ids[..., None], -1) < 1e-6)
    counts_NxV = jax.nn.one_hot(ids, Vb, dtype=X_NxPxD.dtype).sum(1)
    u_Nxq = jnp.argsort(counts_NxV == 0, axis=-1, stable=True)[:, :q]      # the present tokens first
    c_Nxq = jnp.take_along_axis(counts_NxV, u_Nxq, -1)                       # 0 on padding
    complete = jnp.all(c_Nxq.sum(-1) == P)
    a = model.readout(base["V"].shape[0])

    def products(p):
        """(E W^T E^T, E V^T): attention logits between vocabulary tokens (query, key) and their values."""
        return vocab_VxD @ p["W"].T @ vocab_VxD.T, vocab_VxD @ p["V"].T

    nb = min(block, N)
    pad = -N % nb
    blocks = (jnp.concatenate([u_Nxq, jnp.zeros((pad, q), u_Nxq.dtype)]).reshape(-1, nb, q),
              # a padding sample: token 0, P times (finite attention; it weighs nothing)
              jnp.concatenate([c_Nxq, jnp.zeros((pad, q), c_Nxq.dtype).at[:, 0].set(P)]).reshape(-1, nb, q),
              jnp.concatenate([y_N, jnp.ones(pad, y_N.dtype)]).reshape(-1, nb),
              jnp.concatenate([jnp.ones(N), jnp.zeros(pad)]).reshape(-1, nb))
    S0v, H0v = products(base)
    SDv_C, HDv_C = jax.vmap(products)(D_C)

    def one_block(args):
        u, c, y, w = args
        gather_S = lambda Sv: Sv[u[:, :, None], u[:, None, :]]  # noqa: E731  (nb, q, q): query, key
        log_c = jnp.where(c > 0, jnp.log(jnp.maximum(c, 1.0)), -jnp.inf)[:, None, :]
        S0 = gather_S(S0v) + log_c
        H0 = None if q <= model.FUSED_Q_MAX else H0v[u]
        weight = c / P                      # query j stands for c_j of the P positions

        def per_delta(args):
            SDv, HDv, coeffs_Z = args
            SD, HD = gather_S(SDv), None if q <= model.FUSED_Q_MAX else HDv[u]

            def point(z):
                if q <= model.FUSED_Q_MAX:      # one fused loop over (nb, m), as in model.grid_eval
                    G = model.relu_attention_rows(S0 + z * SD, weight, u, H0v + z * HDv)
                else:
                    G = jax.nn.relu((jax.nn.softmax(S0 + z * SD, axis=-1) * weight[..., None]) @ (H0 + z * HD)).sum(-2)
                f = G @ a
                return jnp.sum(w * jax.nn.relu(1.0 - y * f)), jnp.sum(w * (y * f > 0))
            return jax.lax.map(point, coeffs_Z)
        return jax.lax.map(per_delta, (SDv_C, HDv_C, coeffs_CxZ))

    loss, correct = jax.lax.map(one_block, blocks)
    ok = jnp.where(exact & complete, 1.0, jnp.nan)
    return loss.sum(0) / N * ok, correct.sum(0) / N * ok


def hinge_acc(f, y):
    """Hinge loss and accuracy over the last axis (metrics.hinge / accuracy in numpy)."""
    return np.maximum(0.0, 1.0 - y * f).mean(-1), (y * f > 0).mean(-1)


def wde_linear(f0_TxN, g_TxKxN, coeffs_GxK) -> tuple[np.ndarray, np.ndarray]:
    """tangent.weight_disentanglement_error for a model affine in its task vectors, f(Psi_0 + sum_k c_k tau_k) =
    f0 + sum_k c_k g_k, from its pieces on each task's inputs (task t: f0[t], g[t] (K, N)): (G,) sign and mse."""
    c = np.asarray(coeffs_GxK, np.float64)
    sign, mse = np.zeros(len(c)), np.zeros(len(c))
    for t in range(len(f0_TxN)):
        f0, g = np.asarray(f0_TxN[t], np.float64), np.asarray(g_TxKxN[t], np.float64)
        fa = f0[None] + c @ g
        fb = f0[None] + c[:, t:t + 1] * g[t][None]
        sign += np.mean((fa > 0) != (fb > 0), axis=-1)
        mse += np.mean((fa - fb) ** 2, axis=-1)
    return sign, mse


def diagnostics_of(tau1: dict, tau2: dict, psi0: dict, mus_2xD, ties_k: float) -> dict[str, float]:
    """Why a merge works or not, from the two task vectors (one seed): TIES's sign conflicts and election, the
    cosines of dW and dV, the shared directions of dV (|cosine| of the top right singular vectors, in token space,
    and of the top left ones, in neuron space, which TSV orthogonalises across tasks), and Iso-C's shrinkage of the
    summed dV's top direction (its mean singular value over its largest)."""
    from tvtheory import model

    flat = [np.concatenate([np.ravel(np.asarray(t[k], np.float64)) for k in sorted(t)]) for t in (tau1, tau2)]
    keep = max(1, int(flat[0].size * ties_k))
    trimmed = []
    for f in flat:
        thr = np.sort(np.abs(f))[-keep]
        trimmed.append(np.where(np.abs(f) >= thr, f, 0.0))
    both = (trimmed[0] != 0) & (trimmed[1] != 0)
    out = {"ties_overlap": float(both.sum() / max((trimmed[1] != 0).sum(), 1)),
           "sign_conflict": float(((np.sign(trimmed[0]) != np.sign(trimmed[1])) & both).sum() / max(both.sum(), 1))}
    for name, r in (("add", 1.0), ("neg", -1.0)):
        t1, t2 = trimmed[0], r * trimmed[1]
        elected = np.sign(t1 + t2)
        kept = (np.sign(t2) == elected) & (t2 != 0)
        out[f"ties_T2_kept_{name}"] = float(np.abs(t2[kept]).sum() / max(np.abs(t2).sum(), 1e-30))
        kept1 = (np.sign(t1) == elected) & (t1 != 0)
        out[f"ties_T1_kept_{name}"] = float(np.abs(t1[kept1]).sum() / max(np.abs(t1).sum(), 1e-30))
    (dW1, dV1), (dW2, dV2) = [tuple(np.asarray(x, np.float64) for x in model.merged_delta(psi0, t))
                              for t in (tau1, tau2)]
    cos = lambda a, b: float(np.vdot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))  # noqa: E731
    (u1, v1), (u2, v2) = ((U[:, 0], Vt[0]) for U, _, Vt in (np.linalg.svd(dV, full_matrices=False)
                                                             for dV in (dV1, dV2)))
    sv = np.linalg.svd(dV1 + dV2, compute_uv=False)
    mus = np.asarray(mus_2xD, np.float64)
    out |= {"dW_cos": cos(dW1, dW2), "dV_cos": cos(dV1, dV2), "dV_top_overlap": float(abs(v1 @ v2)),
            "dV_left_overlap": float(abs(u1 @ u2)), "iso_c_signal": float(sv.mean() / sv[0]),
            "dV1_top_on_mu1": float(abs(v1 @ mus[0])), "dV2_top_on_mu2": float(abs(v2 @ mus[1])),
            "dV2_top_on_mu1": float(abs(v2 @ mus[0]))}
    return out


# ------------------------------------------------------------------------------------------------------------ run
class _Lazy:
    """A value computed on first use (merged deltas are needed only where an evaluation is not cached)."""

    def __init__(self, fn):
        self.fn, self.value, self.done = fn, None, False

    def __call__(self):
        if not self.done:
            self.value, self.done = self.fn(), True
        return self.value


def run(cfg: Config, ctx) -> dict[str, pd.DataFrame]:
    import jax

    from tvtheory import cache, data, streams, sweep, taskvec

    mc, d = cfg.merging, cfg.data.d
    opts = _opts(mc)
    st = _stages()
    setup = sweep.Setup(cfg.data, cfg.model, cfg.train)
    seed_ids = np.arange(cfg.n_seeds, dtype=np.int32)
    key = streams.run_key(cfg.seed)
    M = len(mc.methods)
    ratios, scales = np.asarray(mc.ratios, np.float32), np.asarray(mc.scales, np.float32)
    R, Z = len(ratios), len(scales)
    const = _pairs.config_point(cfg)
    base_fields = {"seed": cfg.seed, **setup.fields(), "methods": list(mc.methods), "ties_k": mc.ties_k,
                   "dare_p": mc.dare_p}
    bar = ctx.progress("merging")
    steps_total = 4
    log = ctx.log
    t_start = time.process_time()

    # ---------------------------------------------------------------- 1. methods across the relations
    # Exactly arithmetic's stages: its blocks, its irrelevant patterns and streams (T1 stream 0, T2 stream 1).
    irr = sweep.irrelevant(cfg.seed, setup, np.eye(d)[:2])
    psi0 = sweep.pretrained(cfg.seed, setup, seed_ids, ctx.store, np.eye(d)[:2])
    alphas = mc.map_alphas()
    mus = np.asarray(jax.vmap(lambda a: data.pair_patterns(a, d))(np.asarray(alphas, np.float32)))
    finetuned = lambda mu, i: sweep.finetune_all(cfg.seed, setup, seed_ids, psi0, mu, i, irr, ctx.store)  # noqa
    ft1 = finetuned(mus[0, 0], 0)
    tau1 = taskvec.task_vector(ft1.params, psi0)
    pair_fields = {**base_fields, "irr": sweep._digest(irr), "ratios": ratios, "scales": scales,
                   "evaluator": _evaluator(setup)}
    val_rows, test_rows, diag_rows, taus2, fine = [], [], [], {}, {}
    for ia, a in enumerate(alphas):
        ft2 = finetuned(mus[ia, 1], 1)
        tau2 = taskvec.task_vector(ft2.params, psi0)
        taus2[float(a)] = tau2
        deltas = _Lazy(lambda tau2=tau2: pair_deltas(st, key, seed_ids, tau1, tau2, ratios, opts))
        # validation: every (method, r) delta and, last, Psi*_Tt itself (own), at every s
        own = lambda t, tau2=tau2: tau2 if t else tau1  # noqa: E731  (Psi*_Tt's own task vector)
        val = []
        for t in (0, 1):
            def compute(ids, t=t, deltas=deltas, own=own):
                D = jax.tree.map(lambda x, o: np.concatenate([np.asarray(x)[ids].reshape(len(ids), M * R,
                                                                                          *x.shape[3:]),
                                                                np.asarray(o)[ids][:, None]], 1),
                                 deltas(), own(t))
                coeffs = np.broadcast_to(np.concatenate([np.tile(scales, (M * R, 1)), np.ones((1, Z), np.float32)]),
                                         (len(ids), M * R + 1, Z))
                return st["eval_grid"](key, ids, streams.VAL, t, mus[ia, t], irr, sweep.select(psi0, ids), D, coeffs,
                                       setup=setup, n=mc.n_val)
            val.append(cache.per_seed(ctx.store, "merging_val", lambda s, t=t: {
                **pair_fields, "alpha": float(a), "task": t, "n_val": mc.n_val, "s": s}, seed_ids, compute,
                _grid_like(M * R + 1, Z)))
        vloss = np.stack([np.asarray(v[0]) for v in val], -1)          # (S, C, Z, 2)
        vacc = np.stack([np.asarray(v[1]) for v in val], -1)
        own_val = vloss[:, -1, 0, :], vacc[:, -1, 0, :]                 # (S, 2)
        grid_L = vloss[:, :-1].reshape(cfg.n_seeds, M, R, Z, 2)
        chosen = np.zeros((cfg.n_seeds, M, 2, 2), np.int32)             # (seed, method, goal, (r index, s index))
        for s in range(cfg.n_seeds):
            for m in range(M):
                L1, L2 = grid_L[s, m, ..., 0], grid_L[s, m, ..., 1]
                chosen[s, m, 0] = choose_addition(L1, L2, ratios, scales)
                chosen[s, m, 1] = choose_negation(L1, L2, own_val[0][s, 0], ratios, scales, mc.keep_tol)
        # test: each method's two chosen merges and Psi*_Tt
        test = []
        for t in (0, 1):
            def compute(ids, t=t, deltas=deltas, own=own):
                Dall = deltas()
                D = jax.tree.map(lambda x, o: np.concatenate([np.stack([np.stack([
                    np.asarray(x)[i, m, chosen[i, m, g, 0]] for m in range(M) for g in (0, 1)]) for i in ids]),
                    np.asarray(o)[ids][:, None]], 1), Dall, own(t))
                coeffs = np.array([[[scales[chosen[i, m, g, 1]]] for m in range(M) for g in (0, 1)] + [[1.0]]
                                   for i in ids], np.float32)
                return st["eval_grid"](key, ids, streams.TEST, t, mus[ia, t], irr, sweep.select(psi0, ids), D, coeffs,
                                       setup=setup, n=mc.n_test)
            test.append(cache.per_seed(ctx.store, "merging_test", lambda s, t=t: {
                **pair_fields, "alpha": float(a), "task": t, "n_test": mc.n_test, "keep_tol": mc.keep_tol,
                "n_val": mc.n_val, "chosen": chosen[s].tolist(), "s": s}, seed_ids, compute, _grid_like(2 * M + 1, 1)))
        tloss = np.stack([np.asarray(v[0])[..., 0] for v in test], -1)   # (S, 2M + 1, 2)
        tacc = np.stack([np.asarray(v[1])[..., 0] for v in test], -1)
        own_test = tloss[:, -1], tacc[:, -1]
        valid = (np.asarray(ft1.finite) & np.asarray(ft2.finite) & np.all(own_test[1] > cfg.claims.chance_acc, -1)
                 & sweep.valid(vloss, vacc, tloss, tacc))
        fine[float(a)] = valid
        for s in range(cfg.n_seeds):
            val_rows.append(_val_rows(a, s, "standard", mc.methods, ratios, scales, grid_L[s], ~valid[s]))
            for m, name in enumerate(mc.methods):
                for g, goal in enumerate(GOALS):
                    ri, si = chosen[s, m, g]
                    c = 2 * m + g
                    test_rows.append({"space": "standard", "method": name, "alpha": float(a), "seed": s,
                                      "goal": goal, "ratio": float(ratios[ri]), "scale": float(scales[si]),
                                      "val_L1": float(grid_L[s, m, ri, si, 0]),
                                      "val_L2": float(grid_L[s, m, ri, si, 1]),
                                      "L1": tloss[s, c, 0], "L2": tloss[s, c, 1], "A1": tacc[s, c, 0],
                                      "A2": tacc[s, c, 1], "own_val_L1": own_val[0][s, 0],
                                      "own_L1": own_test[0][s, 0], "own_L2": own_test[0][s, 1],
                                      "own_A1": own_test[1][s, 0], "own_A2": own_test[1][s, 1],
                                      "diverged": not valid[s]})
            diag_rows.append({"alpha": float(a), "seed": s, **diagnostics_of(
                jax.tree.map(lambda x: np.asarray(x)[s], tau1), jax.tree.map(lambda x: np.asarray(x)[s], tau2),
                jax.tree.map(lambda x: np.asarray(x)[s], psi0), mus[ia], mc.ties_k), "diverged": not valid[s]})
        bar(ia + 1, len(alphas) + steps_total, f"methods at alpha {float(a):g}")
    all_valid = np.stack([fine[float(a)] for a in alphas])
    _pairs.check_divergence(all_valid, "fine-tune pair", ctx)
    log.info("methods across %d alphas: %.0f s of CPU", len(alphas), time.process_time() - t_start)

    # ---------------------------------------------------------------- 2. tangent space, and 3. AdaMerging
    fig_alphas = np.asarray(mc.alphas, np.float32)
    fig_mus = np.asarray(jax.vmap(lambda a: data.pair_patterns(a, d))(fig_alphas))
    tfields = {"seed": cfg.seed, **setup.fields(), "irr": sweep._digest(irr)}

    def tangent_ft(mu, i):
        mu = np.asarray(mu, np.float32)
        return cache.per_seed(ctx.store, "tangent_finetune", lambda s: {
            **tfields, "mu": np.round(mu.astype(float), 7), "stream": i, "s": s}, seed_ids,
            lambda ids: st["tangent_finetune"](key, ids, sweep.select(psi0, ids), mu, irr, i, setup=setup))

    lt1 = tangent_ft(fig_mus[0, 0], 0)
    ltau1 = taskvec.task_vector(lt1[0], psi0)
    wde_c = np.array([[a1, a2] for a1 in mc.wde_lams for a2 in mc.wde_lams], np.float32)
    wde_rows, ada_rows = [], []
    for ia, a in enumerate(fig_alphas):
        a = round(float(a), 6)
        lt2 = tangent_ft(fig_mus[ia, 1], 1)
        ltau2 = taskvec.task_vector(lt2[0], psi0)
        fv, ft = cache.per_seed(ctx.store, "tangent_outputs", lambda s: {
            **tfields, "alpha": a, "n_val": mc.n_val, "n_test": mc.n_test, "s": s}, seed_ids,
            lambda ids: st["tangent_outputs"](key, ids, fig_mus[ia], irr, sweep.select(psi0, ids),
                                              sweep.select(ltau1, ids), sweep.select(ltau2, ids), setup=setup,
                                              n_val=mc.n_val, n_test=mc.n_test))
        fv, ft = np.asarray(fv, np.float64), np.asarray(ft, np.float64)
        lin_ok = (np.asarray(lt1[2]) & np.asarray(lt2[2]) & np.all(np.isfinite(fv), (1, 2, 3))
                  & np.all(np.isfinite(ft), (1, 2, 3)))
        w_sign, w_mse = cache.per_seed(ctx.store, "merging_wde", lambda s: {
            **tfields, "alpha": a, "n_val": mc.n_val, "coeffs": wde_c, "s": s}, seed_ids,
            lambda ids: st["wde_standard"](key, ids, fig_mus[ia], irr, sweep.select(psi0, ids), sweep.select(tau1, ids),
                                           sweep.select(taus2[a], ids), wde_c, setup=setup, n_val=mc.n_val))
        std_ok = fine[a]
        for s in range(cfg.n_seeds):
            lin_L = np.zeros((R, Z, 2))
            for t in (0, 1):
                f0, g1, g2, y = fv[s, t]
                f = f0 + scales[None, :, None] * (g1 + ratios[:, None, None] * g2)
                lin_L[..., t] = hinge_acc(f, y)[0]
            own_v = [hinge_acc(fv[s, t, 0] + fv[s, t, 1 + t], fv[s, t, 3]) for t in (0, 1)]
            own_t = [hinge_acc(ft[s, t, 0] + ft[s, t, 1 + t], ft[s, t, 3]) for t in (0, 1)]
            ok = bool(lin_ok[s] and min(own_t[0][1], own_t[1][1]) > cfg.claims.chance_acc)
            val_rows.append(_val_rows(a, s, "tangent", ["task_arithmetic"], ratios, scales, lin_L[None], not ok))
            picks = [choose_addition(lin_L[..., 0], lin_L[..., 1], ratios, scales),
                     choose_negation(lin_L[..., 0], lin_L[..., 1], own_v[0][0], ratios, scales, mc.keep_tol)]
            for goal, (ri, si) in zip(GOALS, picks):
                res = [hinge_acc(ft[s, t, 0] + scales[si] * (ft[s, t, 1] + ratios[ri] * ft[s, t, 2]), ft[s, t, 3])
                       for t in (0, 1)]
                test_rows.append({"space": "tangent", "method": "task_arithmetic", "alpha": a, "seed": s,
                                  "goal": goal, "ratio": float(ratios[ri]), "scale": float(scales[si]),
                                  "val_L1": lin_L[ri, si, 0], "val_L2": lin_L[ri, si, 1], "L1": res[0][0],
                                  "L2": res[1][0], "A1": res[0][1], "A2": res[1][1], "own_val_L1": own_v[0][0],
                                  "own_L1": own_t[0][0], "own_L2": own_t[1][0], "own_A1": own_t[0][1],
                                  "own_A2": own_t[1][1], "diverged": not ok})
            g_TxKxN = fv[s, :, 1:3]
            lin_sign, lin_mse = wde_linear(fv[s, :, 0], g_TxKxN, wde_c)
            for space, sg, ms, bad in (("standard", w_sign[s], w_mse[s], not std_ok[s]),
                                       ("tangent", lin_sign, lin_mse, not ok)):
                for (l1, l2), x, y_ in zip(wde_c, sg, ms):
                    wde_rows.append({"alpha": a, "seed": s, "space": space, "lam1": float(l1), "lam2": float(l2),
                                     "wde_sign": float(x), "wde_mse": float(y_), "diverged": bad})
        coeffs, ev = cache.per_seed(ctx.store, "merging_adaptive", lambda s: {
            **tfields, "alpha": a, "n_val": mc.n_val, "n_test": mc.n_test, "steps": mc.ada_steps, "lr": mc.ada_lr,
            "batch": mc.ada_batch, "init": mc.ada_init, "clip": list(mc.ada_clip), "s": s}, seed_ids,
            lambda ids: st["adaptive"](key, ids, fig_mus[ia], irr, sweep.select(psi0, ids), sweep.select(tau1, ids),
                                       sweep.select(taus2[a], ids), np.float32(a), setup=setup, mc=opts))
        coeffs, ev = np.asarray(coeffs), np.asarray(ev)
        leaves = _leaf_names(psi0)
        for s in range(cfg.n_seeds):
            for j, scheme in enumerate(SCHEMES):
                row = {"alpha": a, "seed": s, "scheme": scheme}
                for li, leaf in enumerate(leaves):
                    row |= {f"c_{leaf}_T1": float(coeffs[s, j, li, 0]), f"c_{leaf}_T2": float(coeffs[s, j, li, 1])}
                row |= {"L1": ev[s, j, 0, 0], "L2": ev[s, j, 1, 0], "A1": ev[s, j, 0, 1], "A2": ev[s, j, 1, 1],
                        "diverged": not std_ok[s] or not np.all(np.isfinite(ev[s, j]))}
                ada_rows.append(row)
    bar(len(alphas) + 2, len(alphas) + steps_total, "tangent space and AdaMerging")
    log.info("tangent space and AdaMerging: %.0f s of CPU so far", time.process_time() - t_start)

    # ---------------------------------------------------------------- 4. k task vectors
    K = mc.k_max()
    ks = tuple(sorted(mc.ks))
    src = np.eye(d, dtype=np.float32)[:K]
    k_dirs = np.eye(d, dtype=np.float32)[:K + 1]                 # the sources and the target's own direction
    irr_k = sweep.irrelevant(cfg.seed, setup, k_dirs)
    psi0_k = sweep.pretrained(cfg.seed, setup, seed_ids, ctx.store, k_dirs)
    kfields = {**base_fields, "irr": sweep._digest(irr_k), "k_scales": np.asarray(mc.k_scales), "ks": list(ks),
               "evaluator": _evaluator(setup)}
    k_sc = np.asarray(mc.k_scales, np.float32)
    patterns = {"irrelevant": src, "mixed": mixed_patterns(d, K, mc.mixed_alphas)}
    k_rows, kval_rows, own_ok = [], [], {}
    for scen in SCENARIOS:
        pats = patterns["irrelevant" if scen == "ood" else scen]
        fts = [sweep.finetune_all(cfg.seed, setup, seed_ids, psi0_k, pats[i], i, irr_k, ctx.store) for i in range(K)]
        taus = jax.tree.map(lambda *t: np.stack(t, 1), *[taskvec.task_vector(f.params, psi0_k) for f in fts])
        ft_ok = np.all([np.asarray(f.finite) for f in fts], 0)
        D = _Lazy(lambda taus=taus: k_deltas(st, key, seed_ids, taus, ks, opts))
        own_acc, finite = np.ones((cfg.n_seeds, K)), np.ones(cfg.n_seeds, bool)
        for ik, k in enumerate(ks):
            sets = ([(TARGET_TASK, ood_target(d, k, K, mc.ood_gamma))] if scen == "ood"
                    else [(i, pats[i]) for i in range(k)])
            vals = []
            for ti, mu in sets:
                own_c = int(scen != "ood")

                def compute(ids, ik=ik, ti=ti, mu=mu, own_c=own_c, taus=taus, D=D):
                    Dk = jax.tree.map(lambda x: np.asarray(x)[ids][:, ik], D())
                    if own_c:
                        Dk = jax.tree.map(lambda x, t: np.concatenate([x, np.asarray(t)[ids][:, ti:ti + 1]], 1), Dk,
                                          taus)
                    C = M + own_c
                    coeffs = np.broadcast_to(np.concatenate([np.tile(k_sc, (M, 1)), np.ones((own_c, len(k_sc)),
                                                                                             np.float32)]),
                                             (len(ids), C, len(k_sc)))
                    return st["eval_grid"](key, ids, streams.VAL, ti, mu, irr_k, sweep.select(psi0_k, ids), Dk, coeffs,
                                           setup=setup, n=mc.n_val)
                vals.append(cache.per_seed(ctx.store, "merging_k_val", lambda s, ik=ik, ti=ti, mu=mu: {
                    **kfields, "scenario": scen, "k": ks[ik], "task": ti, "mu": np.round(mu.astype(float), 7),
                    "pats": sweep._digest(pats), "n_val": mc.n_val, "s": s}, seed_ids, compute,
                    _grid_like(M + own_c, len(k_sc))))
            vl = np.stack([np.asarray(v[0]) for v in vals], -1)          # (S, C, Z, tasks)
            if scen != "ood":
                own_acc[:, :k] = np.minimum(own_acc[:, :k], np.stack([np.asarray(v[1])[:, M, 0] for v in vals], -1))
            mean_val = vl[:, :M].mean(-1)                                # (S, M, Z)
            pick = np.array([[choose_scale(mean_val[s, m], k_sc) for m in range(M)] for s in range(cfg.n_seeds)])
            tests = []
            for ti, mu in sets:
                def compute(ids, ik=ik, ti=ti, mu=mu, D=D, pick=pick):
                    Dk = jax.tree.map(lambda x: np.asarray(x)[ids][:, ik], D())
                    coeffs = np.asarray(k_sc[pick[ids]][..., None], np.float32)
                    return st["eval_grid"](key, ids, streams.TEST, ti, mu, irr_k, sweep.select(psi0_k, ids), Dk, coeffs,
                                           setup=setup, n=mc.n_test)
                tests.append(cache.per_seed(ctx.store, "merging_k_test", lambda s, ik=ik, ti=ti, mu=mu, pick=pick: {
                    **kfields, "scenario": scen, "k": ks[ik], "task": ti, "mu": np.round(mu.astype(float), 7),
                    "pats": sweep._digest(pats), "n_val": mc.n_val, "n_test": mc.n_test, "pick": pick[s].tolist(),
                    "s": s}, seed_ids, compute, _grid_like(M, 1)))
            tl = np.stack([np.asarray(v[0])[..., 0] for v in tests], -1)  # (S, M, tasks)
            ta = np.stack([np.asarray(v[1])[..., 0] for v in tests], -1)
            finite &= sweep.valid(vl, tl, ta)
            for s in range(cfg.n_seeds):
                for m, name in enumerate(mc.methods):
                    for z, sc in enumerate(k_sc):
                        kval_rows.append({"scenario": scen, "k": k, "seed": s, "method": name, "scale": float(sc),
                                          "val_loss": float(mean_val[s, m, z])})
                    for j, (ti, _) in enumerate(sets):
                        k_rows.append({"scenario": scen, "k": k, "seed": s, "method": name,
                                       "task": "target" if scen == "ood" else f"T{ti + 1}",
                                       "scale": float(k_sc[pick[s, m]]), "val_loss": float(mean_val[s, m, pick[s, m]]),
                                       "loss": tl[s, m, j], "acc": ta[s, m, j]})
        # A seed of a scenario is valid when all its fine-tunes stayed finite and beat chance on their own task (the
        # target's sources are the irrelevant scenario's fine-tunes), and every evaluated number is finite.
        own_ok[scen] = np.all(own_acc > cfg.claims.chance_acc, -1) if scen != "ood" else own_ok["irrelevant"]
        bad = ~(ft_ok & own_ok[scen] & finite)
        for rows in (k_rows, kval_rows):
            for row in rows:
                if row["scenario"] == scen:
                    row["diverged"] = bool(bad[row["seed"]])
        log.info("k task vectors, %s: %.0f s of CPU so far", scen, time.process_time() - t_start)
    bar(len(alphas) + steps_total, len(alphas) + steps_total, "k task vectors")

    tables = {"methods": pd.DataFrame(test_rows), "methods_val": pd.concat(val_rows, ignore_index=True),
              "diagnostics": pd.DataFrame(diag_rows), "wde": pd.DataFrame(wde_rows),
              "adaptive": pd.DataFrame(ada_rows), "k_tasks": pd.DataFrame(k_rows), "k_val": pd.DataFrame(kval_rows)}
    return {name: _with_constants(t, const) for name, t in tables.items()}


def pair_deltas(st, key, seed_ids, tau1_S, tau2_S, ratios, opts):
    """D[s, m, r] = M_m(dPsi_T1, r dPsi_T2) in the order of opts.methods: numpy leaves (S, M, R, ...)."""
    import jax

    taus = jax.tree.map(lambda a, b: np.stack([a, b], 1), tau1_S, tau2_S)
    coeffs = np.stack([np.ones_like(ratios), ratios], 1).astype(np.float32)
    return jax.tree.map(np.asarray, st["deltas"](key, seed_ids, taus, coeffs, methods=opts.methods, mc=opts))


def k_deltas(st, key, seed_ids, taus_SxK, ks, opts):
    """D[s, k, m] = M_m(dPsi_1, ..., dPsi_k) for every k of ``ks``: numpy leaves (S, len(ks), M, ...). The methods
    without decompositions see all K task vectors, those beyond k with coefficient 0 (exactly the merge of the first
    k: a zero task vector changes no sum, no TIES election or disjoint mean, no DARE mask), in one program; TSV's rank
    per task and Iso-C's averages depend on the number of tasks, so they merge exactly the first k (a program per
    k), one k after the other."""
    import jax

    K = jax.tree.leaves(taus_SxK)[0].shape[1]
    plain = tuple(m for m in opts.methods if m not in LAPACK)
    lapack = tuple(m for m in opts.methods if m in LAPACK)
    parts = {}
    if plain:
        mask = np.array([[1.0] * k + [0.0] * (K - k) for k in ks], np.float32)
        D = jax.tree.map(np.asarray, st["deltas"](key, seed_ids, taus_SxK, mask, methods=plain, mc=opts))
        for j, m in enumerate(plain):
            parts[m] = jax.tree.map(lambda x, j=j: x[:, j], D)                        # (S, len(ks), ...)
    per_k = []
    for k in ks:
        if lapack:
            taus_k = jax.tree.map(lambda t, k=k: np.asarray(t)[:, :k], taus_SxK)
            per_k.append(jax.tree.map(np.asarray, st["deltas"](key, seed_ids, taus_k, np.ones((1, k), np.float32),
                                                                methods=lapack, mc=opts)))
    for j, m in enumerate(lapack):
        parts[m] = jax.tree.map(lambda *x, j=j: np.stack([y[:, j, 0] for y in x], 1), *per_k)
    return jax.tree.map(lambda *x: np.stack(x, 2), *[parts[m] for m in opts.methods])


def _leaf_names(params) -> list[str]:
    import jax

    return [jax.tree_util.keystr(p).strip("[]'") for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _val_rows(alpha, seed, space, methods, ratios, scales, L_MxRxZx2, diverged) -> pd.DataFrame:
    M, R, Z = len(methods), len(ratios), len(scales)
    L = np.asarray(L_MxRxZx2)
    return pd.DataFrame({"space": space, "method": np.repeat(methods, R * Z), "alpha": float(alpha), "seed": seed,
                         "ratio": np.tile(np.repeat(ratios, Z), M), "scale": np.tile(scales, M * R),
                         "L1": L[..., 0].ravel(), "L2": L[..., 1].ravel(), "diverged": bool(diverged)})


def _with_constants(df: pd.DataFrame, const: dict) -> pd.DataFrame:
    for k, v in reversed(list(const.items())):
        df.insert(0, k, v)
    return df




# ------------------------------------------------------------------------------------------------------- analyse
def analyse(tables, cfg: Config) -> dict:
    outcomes = outcome_table(tables["methods"], cfg)
    return {"success_map": outcomes, "diagnostics_summary": diagnostics_summary(tables["diagnostics"]),
            "wde_summary": wde_summary(tables["wde"]), "adaptive_summary": adaptive_summary(tables, cfg),
            "k_summary": k_summary(tables["k_tasks"]), "_tables": tables}


def _word3(t: rules.Tri) -> str:
    return "yes" if bool(t.yes) else ("no" if bool(t.no) else "undecided")


def outcome_table(methods: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Per (space, method, alpha, goal), over valid seeds: the chosen coefficients, both tasks' test hinge loss and
    accuracy (mean and seed std), T1's cost (its hinge loss above Psi*_T1's own), and whether the goal succeeds
    ('yes', 'no', 'undecided' beyond spread_k seed stds). The rules are Theorems 1-2's (claims.pair_rules) with
    lambda = s r, T2's coefficient: addition when T2 is learned (hinge <= eps) and T1 kept (hinge <= min(eps +
    |s r| beta, kept_cap), per seed); negation when T2 is forgotten (hinge >= forget_loss) and T1 kept. Accuracy view:
    learned / kept >= acc_learned, forgotten <= acc_forgotten."""
    cc, k = cfg.claims, cfg.claims.spread_k
    beta = cc.beta(cfg.data.d)
    rows = []
    for (space, method, alpha, goal), g in analysis.valid(methods).groupby(["space", "method", "alpha", "goal"],
                                                                           sort=False):
        lam = (g["scale"] * g["ratio"]).abs()
        margin = np.minimum(cc.eps_learned + lam * beta, cc.kept_cap) - g["L1"]
        stats = {c: analysis.mean_sd(g[c]) for c in ("L1", "L2", "A1", "A2")}
        mg = analysis.mean_sd(margin)
        kept = rules.at_least(*mg, 0.0, k)
        kept_acc = rules.at_least(*stats["A1"], cc.acc_learned, k)
        if goal == "addition":
            ok = kept & rules.at_most(*stats["L2"], cc.eps_learned, k)
            ok_acc = kept_acc & rules.at_least(*stats["A2"], cc.acc_learned, k)
        else:
            ok = kept & rules.at_least(*stats["L2"], cc.forget_loss, k)
            ok_acc = kept_acc & rules.at_most(*stats["A2"], cc.acc_forgotten, k)
        rows.append({"space": space, "method": method, "alpha": alpha, "relation": analysis.relation(alpha),
                     "goal": goal, "n_seeds": g["seed"].nunique(), "scale": g["scale"].mean(),
                     "ratio": g["ratio"].mean(),
                     **{f"{c}{sfx}": v for c, (m_, s_) in stats.items() for sfx, v in (("", m_), ("_std", s_))},
                     "kept_margin": mg[0], "kept_margin_std": mg[1], "T1_cost": float((g["L1"] - g["own_L1"]).mean()),
                     "ok_loss": _word3(ok), "ok_acc": _word3(ok_acc)})
    return pd.DataFrame(rows)


def diagnostics_summary(diag: pd.DataFrame) -> pd.DataFrame:
    """Seed means per alpha of the task vectors' sign conflicts, TIES's election and dV's shared directions."""
    const = ({"d", "m", "P", "n_rel", "n_conf", "sigma", "form", "pretrain_tasks", "pretrain_steps", "arch"}
             | set(_pairs.DATA_OPTIONS) | {f for fs in _pairs.ARCH_FIELDS.values() for f in fs})
    # numeric columns by kind, ints included: a float column of whole numbers reads back from its CSV as int
    cols = [c for c in diag.columns if c not in {"alpha", "seed", "diverged"} | const and diag[c].dtype.kind in "fiu"]
    return analysis.valid(diag).groupby("alpha")[cols].mean().reset_index()


def wde_per_seed(wde: pd.DataFrame) -> pd.DataFrame:
    """Per (alpha, space, seed): the weight disentanglement error averaged over the coefficient grid."""
    return analysis.valid(wde).groupby(["alpha", "space", "seed"])[["wde_sign", "wde_mse"]].mean().reset_index()


def wde_summary(wde: pd.DataFrame) -> pd.DataFrame:
    g = wde_per_seed(wde).groupby(["alpha", "space"])[["wde_sign", "wde_mse"]]
    return g.mean().join(g.std(ddof=1).fillna(0.0).add_suffix("_std")).reset_index()


def _validation_addition(methods: pd.DataFrame) -> pd.DataFrame:
    """Standard task arithmetic's validation-chosen addition per (alpha, seed), as AdaMerging's rows."""
    v = analysis.valid(methods)
    v = v[(v["space"] == "standard") & (v["method"] == "task_arithmetic") & (v["goal"] == "addition")]
    return v.assign(scheme="validation", c_T1=v["scale"], c_T2=v["scale"] * v["ratio"])[
        ["alpha", "seed", "scheme", "c_T1", "c_T2", "L1", "L2", "A1", "A2"]]


def adaptive_summary(tables, cfg: Config) -> pd.DataFrame:
    """Per (alpha, scheme): the coefficients (mean over leaves for leaf-wise AdaMerging) and both tasks' test hinge
    loss and accuracy, beside the labelled validation choice of task arithmetic."""
    ada = analysis.valid(tables["adaptive"])
    t1 = [c for c in ada.columns if c.startswith("c_") and c.endswith("_T1")]
    t2 = [c for c in ada.columns if c.startswith("c_") and c.endswith("_T2")]
    ada = ada.assign(c_T1=ada[t1].mean(axis=1), c_T2=ada[t2].mean(axis=1))[
        ["alpha", "seed", "scheme", "c_T1", "c_T2", "L1", "L2", "A1", "A2"]]
    both = pd.concat([ada, _validation_addition(tables["methods"])], ignore_index=True)
    both = both[both["alpha"].isin(ada["alpha"].unique())]
    g = both.assign(L_sum=both["L1"] + both["L2"]).groupby(["alpha", "scheme"])
    return g[["c_T1", "c_T2", "L1", "L2", "A1", "A2", "L_sum"]].mean().join(
        g["L_sum"].std(ddof=1).fillna(0.0).rename("L_sum_std")).join(
        g["seed"].nunique().rename("n_seeds")).reset_index()


def k_summary(k_tasks: pd.DataFrame) -> pd.DataFrame:
    """Per (scenario, method, k): the chosen s, the mean and the worst task's test hinge loss and accuracy (seed
    means)."""
    v = analysis.valid(k_tasks)
    per_seed = v.groupby(["scenario", "method", "k", "seed"]).agg(
        scale=("scale", "first"), loss_mean=("loss", "mean"), loss_worst=("loss", "max"), acc_mean=("acc", "mean"),
        acc_worst=("acc", "min"))
    g = per_seed.groupby(level=["scenario", "method", "k"])
    return g.mean().join(g.size().rename("n_seeds")).reset_index()


# -------------------------------------------------------------------------------------------------------- claims
def _tri(words) -> rules.Tri:
    w = np.asarray(words)
    return rules.Tri(w == "yes", w == "no")


def _agree(a: rules.Tri, b: rules.Tri) -> rules.Tri:
    return rules.Tri((a.yes & b.yes) | (a.no & b.no), (a.yes & b.no) | (a.no & b.yes))


def _fig_alphas(cfg: Config) -> np.ndarray:
    return np.round(np.asarray(cfg.merging.alphas, float), 6)


def _cells(out: pd.DataFrame, space: str, method: str, alphas) -> pd.DataFrame:
    c = out[(out["space"] == space) & (out["method"] == method) & out["alpha"].round(6).isin(alphas)]
    return c.set_index(["alpha", "goal"]).sort_index()


def _regime_text(c: pd.DataFrame, col: str = "ok_loss") -> str:
    parts = []
    for goal in GOALS:
        sub = c.xs(goal, level="goal") if goal in c.index.get_level_values("goal") else c.iloc[:0]
        words = {w: [f"{a:g}" for a, x in sub[col].items() if x == w] for w in ("yes", "no", "undecided")}
        parts.append(f"{goal} succeeds at alpha {', '.join(words['yes']) or 'none'}"
                     + (f" (undecided {', '.join(words['undecided'])})" if words["undecided"] else ""))
    return "; ".join(parts)


class Comparison(NamedTuple):
    """A (space, method)'s outcomes against a reference's on the Figure 1 (alpha, goal) cells where the reference's
    outcome by hinge loss is certain (``_compare``)."""

    ok: Optional[bool]          # every judged cell certainly the same (three-valued)
    ok_acc: Optional[bool]      # the same by the accuracy view
    changed: list               # the cells where the outcome certainly differs, with their numbers
    open: list                  # the judged cells where the method's outcome is undecided, and cells without a row
    not_judged: list            # the cells where the reference's own outcome is undecided
    lost: list                  # the alphas where either has no valid seed (absent from the outcome table)
    n_seeds: int                # the fewest valid seeds behind a cell (0 with a lost alpha or a missing cell)


def _compare(out: pd.DataFrame, alphas, ref: tuple[str, str], other: tuple[str, str]) -> Comparison:
    """Three-valued agreement of ``other``'s outcome with ``ref``'s, cell by cell: yes where both are certain and
    equal, no where both are certain and differ, undecided where ``other``'s lies within the seed spread. A cell where
    the reference itself is undecided is not judged (nothing to compare with); none judged: None. A lost alpha (no
    valid seed on one side or both) is undecided and leaves no seed behind the comparison."""
    a, b = _cells(out, *ref, alphas), _cells(out, *other, alphas)
    have = set(a.index.get_level_values("alpha").round(6)) & set(b.index.get_level_values("alpha").round(6))
    lost = [al for al in alphas if al not in have]
    idx = a.index.intersection(b.index)
    # a cell either side lacks at an alpha both have (a damaged table) compares nothing: undecided, named, and the
    # comparison rests on 0 seeds; except where the reference's own outcome is undecided (never judged)
    sure_in_a = {(round(al, 6), g) for (al, g), v in a["ok_loss"].items() if v != "undecided"}
    in_a = {(round(al, 6), g) for al, g in a.index}
    in_b = {(round(al, 6), g) for al, g in b.index}
    missing = [f"{goal} at alpha={al:g} (no row)" for al in sorted(have) for goal in GOALS
               if (al, goal) not in in_a or ((al, goal) in sure_in_a and (al, goal) not in in_b)]
    n = int(min(a.loc[idx, "n_seeds"].min(), b.loc[idx, "n_seeds"].min())) if len(idx) and not lost + missing else 0
    sure = (a.loc[idx, "ok_loss"] != "undecided").to_numpy()
    not_judged = [f"{goal} at alpha={al:g}" for (al, goal) in idx[~sure]]
    idx = idx[sure]
    a, b = a.loc[idx], b.loc[idx]
    agree = _agree(_tri(a["ok_loss"]), _tri(b["ok_loss"]))
    agree_acc = _agree(_tri(a["ok_acc"]), _tri(b["ok_acc"]))
    changed, still_open = [], list(missing)
    for (al, goal), yes, no in zip(idx, agree.yes, agree.no):
        ra, rb = a.loc[(al, goal)], b.loc[(al, goal)]
        if no:
            changed.append(f"{'gains' if ra['ok_loss'] == 'no' else 'loses'} {analysis.relation(al)} {goal} at "
                           f"alpha={al:g} (T1 hinge {rb['L1']:.3g} vs {ra['L1']:.3g}, T2 hinge {rb['L2']:.3g} vs "
                           f"{ra['L2']:.3g})")
        elif not yes:
            still_open.append(f"{goal} at alpha={al:g}")
    gap = [None] if lost or missing else []
    return Comparison(rules.all3([agree.all(), *gap]), rules.all3([agree_acc.all(), *gap]), changed, still_open,
                      not_judged, lost, n)


def _comparison_text(name: str, c: Comparison) -> str:
    return (f"{name}: " + ("; ".join(c.changed) if c.changed else "no certain change")
            + (f" (undecided: {', '.join(c.open)})" if c.open else "")
            + (f" (no valid seed at alpha {', '.join(f'{al:g}' for al in c.lost)})" if c.lost else ""))


def claims(a: dict, cfg: Config) -> list[rules.Claim]:
    t, out = a["_tables"], a["success_map"]
    records = [methods_claim(out, a["diagnostics_summary"], cfg), tangent_claim(t["wde"], out, cfg),
               adaptive_claim(t, cfg), k_tasks_claim(t["k_tasks"], cfg)]
    too_small = _pairs.smoke_reason(cfg, cfg.merging.n_test)
    return [r2 for r in records for r2 in rules.smoke([r], rules.min_seeds_reason(r.n_seeds, cfg.claims), too_small)]


def methods_claim(out: pd.DataFrame, diag: pd.DataFrame, cfg: Config) -> rules.Claim:
    """merging.methods: every method has task arithmetic's outcome in every (relation, goal) where task arithmetic's
    is certain; the measured text names which method changes which regime."""
    mc = cfg.merging
    alphas, ref = _fig_alphas(cfg), ("standard", "task_arithmetic")
    per = {m: _compare(out, alphas, ref, ("standard", m)) for m in mc.methods[1:]}
    ta = _cells(out, *ref, alphas)
    rows = out[(out["space"] == "standard") & out["alpha"].round(6).isin(alphas)]
    at = "; ".join(f"{r.method} {r.goal} alpha={r.alpha:g}: {r.ok_loss} (T1 hinge {r.L1:.3g}, +{r.T1_cost:.3g} over "
                   f"Psi*_T1; T2 hinge {r.L2:.3g}; acc {r.A1:.3f}/{r.A2:.3f}; s={r.scale:.3g}, r={r.ratio:.3g})"
                   for r in rows.itertuples())
    d = diag[diag["alpha"].round(6).isin(alphas)]
    why = "; ".join(f"alpha={r.alpha:g}: dPsi_T1 and dPsi_T2 disagree in sign on {r.sign_conflict:.2f} of their shared "
                    f"top-k entries (TIES keeps {r.ties_T2_kept_add:.2f} of T2's trimmed mass adding, "
                    f"{r.ties_T2_kept_neg:.2f} negating), cos(dV) {r.dV_cos:.2f}, cos(dW) {r.dW_cos:.2f}, top right "
                    f"(token) directions of dV overlap {r.dV_top_overlap:.2f}, top left (neuron) directions "
                    f"{r.dV_left_overlap:.2f}, Iso-C's flat spectrum keeps {r.iso_c_signal:.2f} of the sum's top "
                    f"singular value" for r in d.itertuples())
    not_judged = sorted({c for p in per.values() for c in p.not_judged})
    return rules.claim(
        "merging.methods", "The task relation, not the merging method, decides: in each of the paper's regimes "
        "(aligned, irrelevant, contradictory), TIES, DARE, TSV-Merge and Iso-C add and negate a task vector where "
        "task arithmetic does and fail where it fails",
        "at every Figure 1 alpha and goal (addition, negation) where task arithmetic's outcome is certain, every other "
        "method's validation-chosen merge has the same outcome on test (Theorems 1-2's rules, lambda = s r: T2 "
        f"learned, hinge <= eps = {cfg.claims.eps_learned:g}, or forgotten, hinge >= {cfg.claims.forget_loss:g}; T1 "
        f"kept, hinge <= min(eps + |lambda| beta, {cfg.claims.kept_cap:g}), beta = {cfg.claims.beta_d:g}/d; beyond "
        f"{cfg.claims.spread_k:g} seed std)",
        f"task arithmetic: {_regime_text(ta)}. Changes against it (gains: succeeds where task arithmetic fails; "
        "loses: the reverse; T1, T2 test hinge of the method vs task arithmetic): "
        + " | ".join(_comparison_text(m, p) for m, p in per.items()),
        rules.all3(p.ok for p in per.values()), min((p.n_seeds for p in per.values()), default=0),
        f"Psi_0 + s M(dPsi_T1, r dPsi_T2), (s, r) chosen per seed on {mc.n_val} validation samples per task (s in "
        f"{list(mc.scales)}, r in {list(mc.ratios)}; addition: least T1 + T2 hinge; negation: largest T2 hinge with "
        f"T1 within keep_tol = {mc.keep_tol:g} of Psi*_T1's), reported on {mc.n_test} test samples. Not judged "
        f"(task arithmetic undecided): {', '.join(not_judged) or 'none'}. Accuracy view: "
        + ", ".join(f"{m}: {rules._word(p.ok_acc)}" for m, p in per.items())
        + f". Outcomes (seed means): {at}. Why, from the task vectors: {why}. The success map over every alpha: "
        "success_map.csv, methods_map.png.",
        undecided="task arithmetic's outcome is certain nowhere, or a method's outcome lies within the seed spread "
        "of its bound, or a Figure 1 alpha has no valid seed")


def tangent_claim(wde: pd.DataFrame, out: pd.DataFrame, cfg: Config) -> rules.Claim:
    """merging.tangent: (a) the tangent task vectors' weight disentanglement error is below the standard ones' by
    wde_margin at every Figure 1 alpha (paired per seed), and (b) tangent task arithmetic has standard task
    arithmetic's outcomes (``_compare``)."""
    mc, alphas = cfg.merging, _fig_alphas(cfg)
    ps = wde_per_seed(wde)
    lower, parts, n = [], [], []
    for al in alphas:
        w = ps[ps["alpha"].round(6) == al].pivot(index="seed", columns="space", values="wde_sign").dropna()
        if not {"standard", "tangent"} <= set(w.columns) or not len(w):
            lower.append(None)
            n.append(0)
            parts.append(f"alpha={al:g}: no valid seed")
            continue
        m, sd = analysis.mean_sd(w["tangent"] - w["standard"])
        lower.append(rules.at_most(m, sd, -mc.wde_margin, cfg.claims.spread_k).all())
        n.append(len(w))
        parts.append(f"alpha={al:g}: {w['tangent'].mean():.3g} vs {w['standard'].mean():.3g} ({m:+.3g} +- {sd:.2g})")
    same = _compare(out, alphas, ("standard", "task_arithmetic"), ("tangent", "task_arithmetic"))
    ok_lower = rules.all3(lower)
    tan = _cells(out, "tangent", "task_arithmetic", alphas)
    chosen = "; ".join(f"{r.goal} alpha={r.alpha:g}: T1 hinge {r.L1:.3g}, T2 hinge {r.L2:.3g}, s={r.scale:.3g}, "
                       f"r={r.ratio:.3g}" for r in tan.reset_index().itertuples())
    return rules.claim(
        "merging.tangent", "Tangent-space fine-tuning (Ortiz-Jimenez et al., 2023) disentangles the task vectors "
        "but leaves the regimes: their weight disentanglement error is lower, and task arithmetic with them succeeds "
        "and fails where it does with standard task vectors",
        f"(a) at every Figure 1 alpha, the weight disentanglement error (label disagreement summed over both tasks, "
        f"mean over lambda_1, lambda_2 in {list(mc.wde_lams)}) of the tangent task vectors in the linearised model is "
        f"below the standard ones' in the model by at least wde_margin = {mc.wde_margin:g} (per seed, paired); (b) "
        "at every Figure 1 (alpha, goal) where standard task arithmetic's outcome is certain, tangent task arithmetic "
        "has the same (the rules of merging.methods)",
        f"(a) {rules._word(ok_lower)}, error tangent vs standard: " + "; ".join(parts)
        + f". (b) {rules._word(same.ok)}, tangent task arithmetic: {_regime_text(tan) if len(tan) else 'no rows'}; "
        + _comparison_text("tangent", same), rules.all3([ok_lower, same.ok]), min(n + [same.n_seeds]),
        "Probes: the validation inputs of each task. The linearised model is evaluated exactly through its affine "
        f"form f0 + sum_k lambda_k J dPsi_k. Not judged in (b) (standard undecided): "
        f"{', '.join(same.not_judged) or 'none'}. Accuracy view of (b): {rules._word(same.ok_acc)}. Tangent choices "
        f"(seed means): {chosen}.",
        undecided="a difference lies within the seed spread of its margin, or no cell has a certain standard outcome, "
        "or a Figure 1 alpha has no valid seed")


def adaptive_claim(t: dict, cfg: Config) -> rules.Claim:
    """merging.adaptive: task-wise AdaMerging and the theory's (1, 1 - alpha) against the labelled validation choice
    of task arithmetic, T1 + T2 test hinge paired per seed, at the Figure 1 alphas >= 0."""
    cc, mc = cfg.claims, cfg.merging
    ada = analysis.valid(t["adaptive"])
    val = _validation_addition(t["methods"]).set_index(["alpha", "seed"])
    alphas = [al for al in _fig_alphas(cfg) if al >= 0]
    verdicts, parts, n = [], [], []
    for scheme in ("adamerging_task", "theory"):
        texts = []
        for al in alphas:
            s_ = ada[(ada["alpha"].round(6) == al) & (ada["scheme"] == scheme)].set_index("seed")
            v = val[val.index.get_level_values("alpha").round(6) == al].droplevel("alpha")
            seeds = s_.index.intersection(v.index)
            if not len(seeds):
                verdicts.append(None)
                n.append(0)
                texts.append(f"alpha={al:g}: no valid seed")
                continue
            mine, ref = (x.loc[seeds, "L1"] + x.loc[seeds, "L2"] for x in (s_, v))
            m, sd = analysis.mean_sd(mine - ref)
            verdicts.append(rules.at_most(m, sd, cc.eps_learned, cc.spread_k).all())
            n.append(len(seeds))
            texts.append(f"alpha={al:g}: {mine.mean():.3g} vs {ref.mean():.3g} ({m:+.3g} +- {sd:.2g})")
        parts.append(f"{scheme} vs validation: " + ("; ".join(texts) or "no rows"))
    summ = adaptive_summary(t, cfg)
    txt = "; ".join(f"alpha={r.alpha:g} {r.scheme}: (c1, c2) = ({r.c_T1:.2f}, {r.c_T2:.2f}), hinge {r.L1:.3g} / "
                    f"{r.L2:.3g}, acc {r.A1:.3f} / {r.A2:.3f}" for r in summ.itertuples())
    return rules.claim(
        "merging.adaptive", "Coefficients found without labels add T2 to T1 as well as coefficients chosen on "
        "labelled validation data: AdaMerging's (entropy minimisation on unlabelled inputs) and the theory's lambda "
        "= 1 - alpha",
        f"at every Figure 1 alpha >= 0 (where Theorem 1 allows addition), the T1 + T2 test hinge of task-wise "
        f"AdaMerging and of Psi_0 + dPsi_T1 + (1 - alpha) dPsi_T2 each exceeds the validation-chosen task "
        f"arithmetic's by at most eps = {cc.eps_learned:g} (per seed, paired)",
        "T1 + T2 test hinge, " + "; ".join(parts), rules.all3(verdicts), min(n, default=0),
        f"AdaMerging: Adam, {mc.ada_steps} steps, rate {mc.ada_lr:g}, {mc.ada_batch} unlabelled inputs per task and "
        f"step, init {mc.ada_init:g}, clip {list(mc.ada_clip)}; leaf-wise AdaMerging and the contradictory alphas "
        f"are reported, not judged. Seed means: {txt}.",
        undecided="a difference lies within the seed spread of eps, or an alpha >= 0 has no valid seed, or none was "
        "measured")


def _k_bound(kt: pd.DataFrame, cfg: Config, method: str) -> tuple:
    """Theorem 1's bound for k irrelevant tasks merged by ``method`` at its validation-chosen s: per (k, task), the
    seed mean of min(eps + (k - 1) s beta, kept_cap) - test hinge (per seed) must be >= 0 beyond the seed spread.
    Returns (verdict, {k: verdict}, text per k, fewest seeds: 0 when a k has no valid seed)."""
    cc = cfg.claims
    beta = cc.beta(cfg.data.d)
    v = analysis.valid(kt)
    v = v[(v["scenario"] == "irrelevant") & (v["method"] == method)]
    per_k, texts, n = {}, [], []
    for k in sorted(cfg.merging.ks):
        g = v[v["k"] == k]
        if not len(g):
            per_k[k] = None
            n.append(0)
            texts.append(f"k={k}: no valid seed")
            continue
        margin = np.minimum(cc.eps_learned + (k - 1) * g["scale"] * beta, cc.kept_cap) - g["loss"]
        per_task = g.assign(margin=margin).groupby("task")["margin"]
        per_k[k] = rules.at_least(per_task.mean(), per_task.std(ddof=1).fillna(0.0), 0.0, cc.spread_k).all()
        n.append(g["seed"].nunique())
        s = g["scale"].mean()
        texts.append(f"k={k}: {g.groupby('task')['loss'].mean().max():.3g} (bound "
                     f"{min(cc.eps_learned + (k - 1) * s * beta, cc.kept_cap):.3g}, s={s:.3g})")
    return rules.all3(per_k.values()), per_k, texts, min(n, default=0)


def _k_ood(kt: pd.DataFrame, cfg: Config) -> tuple:
    """Theorem 3 from k sources: the target's test hinge at task arithmetic's validation-chosen s <= eps per k.
    Returns (verdict, text per k, fewest seeds: 0 when a k has no valid seed)."""
    mc, cc = cfg.merging, cfg.claims
    beta = cc.beta(cfg.data.d)
    v = analysis.valid(kt)
    v = v[(v["scenario"] == "ood") & (v["method"] == "task_arithmetic")]
    out, texts, n = [], [], []
    for k in sorted(mc.ks):
        g = v[v["k"] == k]
        if not len(g):
            out.append(None)
            n.append(0)
            texts.append(f"k={k}: no valid seed")
            continue
        m, sd = analysis.mean_sd(g["loss"])
        out.append(rules.at_most(m, sd, cc.eps_learned, cc.spread_k).all())
        n.append(g["seed"].nunique())
        s = g["scale"].mean()
        gam = mc.ood_gamma / np.sqrt(k)
        inside = s * k * gam >= 1 + mc.ood_c and s * k * gam**2 >= 1 + mc.ood_c and s * beta <= mc.ood_c
        texts.append(f"k={k}: {m:.3g} (acc {g['acc'].mean():.3f}, s={s:.3g}, {'inside' if inside else 'outside'} "
                     "the theorem's region)")
    return rules.all3(out), texts, min(n, default=0)


def _k_overview(kt: pd.DataFrame) -> str:
    return "; ".join(f"{sc} {m}: worst-task hinge " + ", ".join(f"k={r.k}: {r.loss_worst:.3g}" for r in g.itertuples())
                     for (sc, m), g in k_summary(kt).groupby(["scenario", "method"]))


def k_tasks_claim(kt: pd.DataFrame, cfg: Config) -> rules.Claim:
    """merging.k_tasks: task arithmetic's Theorem 1 bound on k irrelevant tasks and Theorem 3's target from k
    sources, for every k; the other methods' bound and the mixed relations are reported."""
    cc, mc = cfg.claims, cfg.merging
    ok_bound, _, bound, n1 = _k_bound(kt, cfg, "task_arithmetic")
    ok_ood, ood, n2 = _k_ood(kt, cfg)
    others = []
    for m in mc.methods[1:]:
        ok_m, per_k, texts, _ = _k_bound(kt, cfg, m)
        over = [str(k) for k, ok in per_k.items() if ok is False]
        others.append(f"{m}: {rules._word(ok_m)}" + (f", over it at k = {', '.join(over)}" if over else "")
                      + (f" (largest {texts[-1]})" if texts else ""))
    return rules.claim(
        "merging.k_tasks", "The theorems hold for k = 2..8 merged task vectors: task arithmetic learns every one of k "
        "irrelevant tasks, each losing at most beta s per other task vector (Theorem 1), and reaches Theorem 3's "
        "out-of-domain target from k sources",
        f"for every k in {sorted(mc.ks)}, at the s chosen on validation: (a) every irrelevant task's test hinge <= "
        f"min(eps + (k - 1) s beta, kept_cap) (eps = {cc.eps_learned:g}, beta = {cc.beta_d:g}/d, kept_cap = "
        f"{cc.kept_cap:g}; per seed); (b) the target sum_i gamma_i mu_Ti + kappa mu_perp (gamma_i = "
        f"{mc.ood_gamma:g}/sqrt(k)) has test hinge <= eps",
        f"(a) {rules._word(ok_bound)}, worst task's hinge: " + "; ".join(bound) + f". (b) {rules._word(ok_ood)}, "
        "target hinge: " + "; ".join(ood) + ". Other methods against (a)'s bound, not judged (the theorems are task "
        "arithmetic's): " + "; ".join(others),
        rules.all3([ok_bound, ok_ood]), min(n1, n2),
        f"Theorem 3's region for c = {mc.ood_c:g}: s >= (1 + c) / (k gamma_i^2) = "
        f"{(1 + mc.ood_c) / mc.ood_gamma**2:.3g} and s <= c / beta = {mc.ood_c / cc.beta(cfg.data.d):g}. Mixed "
        f"relations (task i >= 2 at alpha {list(mc.mixed_alphas)} to T1) are reported, not judged. Every method "
        f"and scenario (seed means): {_k_overview(kt)}.",
        undecided="a loss lies within the seed spread of its bound, or a k has no valid seed")


# ---------------------------------------------------------------------------------------------------------- plot
def plot(tables, a: dict, cfg: Config, out) -> None:
    from tvtheory import plots

    plt = plots.plt
    sm = a["success_map"]
    if len(sm):
        rows = [("standard", m) for m in cfg.merging.methods] + [("tangent", "task_arithmetic")]
        alphas = np.sort(sm["alpha"].unique())
        color = {"yes": 1.0, "undecided": 0.5, "no": 0.0}
        fig, axes = plt.subplots(2, 2, figsize=(max(9, 0.45 * len(alphas) * 2), 6.5), squeeze=False)
        for i, goal in enumerate(GOALS):
            for j, (col, label) in enumerate((("ok_loss", "hinge loss"), ("ok_acc", "accuracy"))):
                grid = np.full((len(rows), len(alphas)), np.nan)
                for r, (space, m) in enumerate(rows):
                    sub = sm[(sm["space"] == space) & (sm["method"] == m) & (sm["goal"] == goal)]
                    for x in sub.itertuples():
                        grid[r, np.searchsorted(alphas, x.alpha)] = color[getattr(x, col)]
                ax = axes[i, j]
                ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
                ax.set_yticks(range(len(rows)), [m if s == "standard" else f"{m} (tangent)" for s, m in rows],
                              fontsize=8)
                ax.set_xticks(range(len(alphas)), [f"{x:g}" for x in alphas], fontsize=7, rotation=90)
                ax.set_title(f"{goal} by {label}", fontsize=10)
                ax.set_xlabel("alpha")
        fig.suptitle("Validation-chosen merges on test: green succeeds, red fails, yellow undecided (seed spread), "
                     "white not measured; the rules of Theorems 1-2", fontsize=10)
        fig.tight_layout()
        plots.save(fig, out, "methods_map")
    ks = a["k_summary"]
    if len(ks):
        fig, axes = plt.subplots(2, len(SCENARIOS), figsize=(4.2 * len(SCENARIOS), 6.5), squeeze=False)
        for j, scen in enumerate(SCENARIOS):
            for i, (col, label) in enumerate((("loss", "test hinge loss"), ("acc", "test accuracy"))):
                ax = axes[i, j]
                for m, g in ks[ks["scenario"] == scen].groupby("method", sort=False):
                    line, = ax.plot(g["k"], g[f"{col}_mean"], marker="o", label=m, lw=1.4)
                    if scen != "ood":
                        ax.plot(g["k"], g[f"{col}_worst"], ls="--", color=line.get_color(), lw=1)
                ax.set_title(f"{scen}: {label}" + (" (dashed: worst task)" if scen != "ood" else " (target)"),
                             fontsize=9)
                ax.set_xlabel("k (merged task vectors)")
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        plots.save(fig, out, "k_tasks")
    ws = a["wde_summary"]
    ad = a["adaptive_summary"]
    if len(ws) or len(ad):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for space, g in ws.groupby("space"):
            axes[0].errorbar(g["alpha"], g["wde_sign"], yerr=g["wde_sign_std"], marker="o", label=space, capsize=3)
        axes[0].set_title("weight disentanglement error (label disagreement)", fontsize=9)
        axes[0].set_xlabel("alpha")
        axes[0].legend(fontsize=8)
        for scheme, g in ad.groupby("scheme"):
            axes[1].plot(g["alpha"], g["c_T2"], marker="o", label=scheme)
            axes[2].plot(g["alpha"], g["L_sum"], marker="o", label=scheme)
        al = np.linspace(-1, 1, 50)
        axes[1].plot(al, 1 - al, "k--", lw=1, label="1 - alpha")
        axes[1].set_title("T2's coefficient (c_T1 = 1 for theory)", fontsize=9)
        axes[2].set_title("T1 + T2 test hinge loss", fontsize=9)
        for ax in axes[1:]:
            ax.set_xlabel("alpha")
            ax.legend(fontsize=7)
        fig.tight_layout()
        plots.save(fig, out, "tangent_adaptive")


# -------------------------------------------------------------------------------------------------------- budget
def estimate(cfg: Config) -> Cost:
    """Time and memory from the sizes (arithmetic's fine-tunes cached): the tangent and k-task fine-tunes, every
    evaluated grid point (model.grid_eval: per sample, a delta's block products and each point's attention), the
    disentanglement error and AdaMerging, and ~40 s of compilation."""
    mc, dd, mm, S = cfg.merging, cfg.data, cfg.model, cfg.n_seeds
    d, P, m, K = dd.d, dd.P, mm.m, mc.k_max()
    q = min(P, 16)
    sgd = 6.0 * cfg.train.batch * P * d * (P + m) * cfg.train.steps
    mixed_new = sum(mc.mixed_alphas[(i - 1) % len(mc.mixed_alphas)] != 0 for i in range(1, K))
    n_ft = (1 + len(mc.alphas)) * S * 1.5 + (K + mixed_new) * S
    block, point, fwd = 2.0 * q * d * m, 2.0 * q * q * m, 2.0 * P * d * (P + m)
    M, R, Z, A = len(mc.methods), len(mc.ratios), len(mc.scales), len(mc.map_alphas())
    pair = A * S * 2 * ((M * R + 1) * mc.n_val * (block + Z * point) + (2 * M + 1) * mc.n_test * (block + point))
    n_sets = 2 * sum(mc.ks) + len(mc.ks)
    kk = S * n_sets * ((M + 1) * mc.n_val * (block + len(mc.k_scales) * point) + M * mc.n_test * (block + point))
    G = len(mc.wde_lams) ** 2
    extra = len(mc.alphas) * S * (4 * G * mc.n_val * fwd + 2 * 3 * mc.ada_steps * 2 * mc.ada_batch * fwd
                                 + 6 * 2 * (mc.n_val + mc.n_test) * fwd)
    seconds = 40.0 + n_ft * sgd / _pairs.SGD_FLOPS + (pair + kk + extra) / _pairs.EVAL_FLOPS
    memory = 0.6e9 + 4.0 * S * max(M * R, K * M) * (d * d + m * d) * 2 + 4.0 * S * mc.n_test * P * d * 4
    extra = _pairs.training_extra(cfg)
    return Cost(seconds + extra.seconds, memory / 1e9 + extra.memory_gb)
