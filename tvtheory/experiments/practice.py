"""The paper's practical advice, tested where the true alpha is known (docs/theory.md, "Practice").

A practitioner never knows alpha = mu_T1 . mu_T2: the paper advises estimating it from the fine-tuned models and
reading lambda off Theorems 1-2. On the phase diagram's alphas, whose fine-tunes and test curves are arithmetic's
(the same config blocks, so its cache serves them), this experiment measures:

1. similarity before merging: the estimators of tvtheory/similarity.py (parameter cosine, output cosine = the paper's
   alpha_hat, feature Pearson correlation, weight disentanglement error, gradient alignment at Psi_0), each from
   ``practice.probes`` probe samples per task, against the true alpha;
2. the theory as a tool: lambda = 1 - alpha_hat against the measured lambda* (the smallest grid lambda whose T2 test
   hinge loss is <= eps), and the negation window predicted from alpha_hat's relation against the measured one;
3. lambda chosen on ``practice.n_vals`` validation samples per task (similarity.choose_addition / choose_negation),
   its test outcome against the oracle (the same rule on the test curves) and against the theory's choice;
4. norm control at alpha = 0 (tvtheory/norm_control.py): fewer SGD steps, weight decay towards Psi_0, a norm ball,
   post-hoc rescaling; beta, lambda* and the windows against the task vectors' norm, beside each fine-tune's own
   hinge loss (the task loss a control may cost).
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache, partial
from typing import List

import numpy as np
import pandas as pd

from tvtheory import _check, analysis, claims as rules
from tvtheory.config import Node, Sweep, Synthetic, check_grid, check_list, config, field, grid
from tvtheory.experiments import _pairs
from tvtheory.runner import Cost

COST, AFTER = 77, ("arithmetic",)
TABLES = ("estimators", "metrics", "validation", "norm")
SIZE_FIELDS = ("n_seeds", "sweep.n_test", "sweep.lam_step", "sweep.phase_alphas", "practice.probes",
               "practice.n_vals", "practice.norm_n_test", "practice.norm_seeds", "practice.norm_lam_step",
               "practice.steps", "practice.decays", "practice.radii", "train.steps", "train.batch", "data.d",
               "data.P", "model.m")

# The estimators, in the order of the stage's output. The disentanglement error (Ortiz-Jimenez et al., 2023) measures
# interference, not alpha: it is reported against alpha but never read as an estimate of it.
ESTIMATORS = ("param_cosine", "output_cosine", "feature_pearson", "disentanglement", "grad_cosine")
ALPHA_SCALE = tuple(e for e in ESTIMATORS if e != "disentanglement")
METHODS = ("none", "steps", "decay", "ball", "rescale")
GOALS = ("addition", "negation")
# The probe sets of the estimators: stream VAL, task index PROBE_TASK + i for task i. A concern of its own inside
# VAL (streams.py has no probe stream), so the probes are independent of the validation sets (VAL, task i) on which
# lambda is chosen, and the estimators' and the validation's choices of lambda are compared on independent samples.
PROBE_TASK = 100


@config
class Practice(Node):
    """What the practical-advice experiment measures and its declared tolerances. The tolerances were written before
    the full-size run (docs/theory.md section 8); a scratch pilot with other Psi_0 draws sized the grids."""

    probes: List[int] = field(help="probe samples per task given to each similarity estimator: the first n of one "
                              "probe set per task and seed (output cosine and feature correlation see both tasks' "
                              "n, pooled; the parameter cosine needs none)", factory=lambda: [16, 64, 256, 1024])
    n_vals: List[int] = field(help="validation samples per task from which lambda is chosen: the first n of one "
                              "validation set per task and seed", factory=lambda: [8, 16, 32, 64, 128, 256])
    keep_tol: float = field(0.05, "the control constraint on T1 when lambda is chosen (and judged on test): T1's "
                            "hinge loss may exceed that of Psi*_T1 itself (lambda = 0) by at most this; eps, the "
                            "theorems' Theta(eps)")
    relation_tol: float = field(0.1, "alpha_hat within +-this of 0 reads as irrelevant, below as contradictory, "
                                "above as aligned (similarity.lambda_from_similarity's band; one lambda grid step)")
    steps: List[int] = field(help="norm control (a): fine-tunes with these fewer SGD steps than train.steps",
                             factory=lambda: [50, 100, 150])
    decays: List[float] = field(help="norm control (b): weight decay towards Psi_0, the mu of mu/2 ||Psi - Psi_0||^2 "
                                "added to the hinge loss", factory=lambda: [0.003, 0.01, 0.03])
    radii: List[float] = field(help="norm control (c) the radius of a norm ball around Psi_0 kept during SGD, and "
                               "(d) the norm to which the uncontrolled task vector is rescaled after it",
                               factory=lambda: [2.0, 8.0])
    norm_lam_step: float = field(0.2, "lambda step of the norm-control curves, over the sweep's [lam_min, lam_max] "
                                 "(twice its step: beta is a slope over the negative side, and a shrunk task vector's "
                                 "lambda* lies beyond 1 - alpha anyway)")
    norm_seeds: int = field(3, "seeds of the norm-control study (the first ones, at most n_seeds): claims.min_seeds, "
                            "the fewest that decide; the pilot's seed spread of beta was ~1%")
    norm_n_test: int = field(1000, "test samples per task of the norm-control curves (claims.min_test, enough to "
                             "decide)")
    claim_probe: int = field(64, "the probe budget the claims judge (one of probes): 64 samples per task, a budget "
                             "any practitioner has; every other budget is reported beside it")
    tracked: List[str] = field(help="the estimators practice.similarity_tracks_alpha judges: every estimator on "
                               "alpha's scale (the disentanglement error measures interference, not alpha, and is "
                               "only reported)", factory=lambda: list(ALPHA_SCALE))
    rank_min: float = field(0.95, "Spearman correlation with alpha over the alphas (per seed, seed mean decided "
                            "beyond spread_k seed sds) each tracked estimator must reach: the alphas in order but for "
                            "a few swaps of neighbours")
    linear_min: float = field(0.95, "Pearson correlation with alpha each tracked estimator must reach: a linear "
                              "read-out explaining >= 90% of alpha's variance")
    lambda_estimator: str = field("grad_cosine", "the estimator whose alpha_hat gives lambda = 1 - alpha_hat and the "
                                  "predicted windows (practice.lambda_from_similarity, the theory's choices): "
                                  "gradient alignment at Psi_0, the most accurate in the pilot study (independent "
                                  "Psi_0 draws), declared from it; the paper's output cosine is reported beside it")
    lambda_tol: float = field(0.2, "|mean(1 - alpha_hat) - mean(lambda*)| allowed per alpha >= 0: two grid steps, one "
                              "for lambda*'s grid resolution (thm1.threshold_curve's lam_tol), one for the estimate "
                              "(an alpha_hat within relation_tol of alpha)")
    aligned_large: float = field(0.5, "alpha_hat at or above which Theorem 2's 'a good lambda exists only when alpha "
                                 "is small' is read as 'no negation window' (as thm2.aligned_fails reads alpha = 0.5, "
                                 "0.9); between relation_tol and this the predicted window is not judged")
    n_val_claim: int = field(32, "the validation budget practice.validation_lambda judges (one of n_vals): a few "
                             "dozen labelled samples per task; the smallest sufficient budget is reported beside it")
    success_min: float = field(0.95, "fraction of (alpha, goal) cells in which the validation-chosen lambda must do "
                               "on test what the oracle does (succeed where it finds a lambda, find none where it "
                               "finds none): one cell in twenty may miss")
    beta_gain: float = field(0.25, "practice.norm_control passes when a controlled fine-tune that still learns its "
                             "task (own hinge <= eps) has a beta_neg lower than the uncontrolled one's by at least "
                             "this fraction (per seed, paired; beyond the seed spread): a change a practitioner would "
                             "notice, well beyond the seeds' spread of beta")

    def check(self):
        for name in ("probes", "n_vals", "steps"):
            values = getattr(self, name)
            check_list(name, values, min_len=0 if name == "steps" else 1)
            for i, n in enumerate(values):
                _check.integer(f"{name}[{i}]", n, lo=1)
        for name in ("decays", "radii"):
            check_list(name, getattr(self, name), min_len=0)
            for i, v in enumerate(getattr(self, name)):
                _check.in_range(f"{name}[{i}]", v, lo=0.0, lo_open=True)
        _check.in_range("keep_tol", self.keep_tol, lo=0.0)
        _check.in_range("relation_tol", self.relation_tol, 0.0, 1.0)
        _check.integer("norm_n_test", self.norm_n_test, lo=1)
        _check.integer("norm_seeds", self.norm_seeds, lo=1)
        _check.in_range("norm_lam_step", self.norm_lam_step, lo=0.0, lo_open=True)
        if self.claim_probe not in self.probes:
            _check.fail("claim_probe", self.claim_probe, f"must be one of probes={list(self.probes)}")
        if self.n_val_claim not in self.n_vals:
            _check.fail("n_val_claim", self.n_val_claim, f"must be one of n_vals={list(self.n_vals)}")
        if not self.tracked:
            _check.fail("tracked", list(self.tracked), "needs at least one estimator")
        if len(set(self.tracked)) != len(self.tracked):
            _check.fail("tracked", list(self.tracked), "must not repeat an estimator")
        for i, e in enumerate(self.tracked):
            if e not in ALPHA_SCALE:
                _check.fail(f"tracked[{i}]", e, f"must be one of {ALPHA_SCALE}")
        if self.lambda_estimator not in ALPHA_SCALE:
            _check.fail("lambda_estimator", self.lambda_estimator, f"must be one of {ALPHA_SCALE}")
        for name in ("rank_min", "linear_min"):
            _check.in_range(name, getattr(self, name), -1.0, 1.0)
        _check.in_range("lambda_tol", self.lambda_tol, lo=0.0)
        _check.in_range("aligned_large", self.aligned_large, self.relation_tol, 1.0)
        _check.in_range("success_min", self.success_min, 0.0, 1.0)
        _check.in_range("beta_gain", self.beta_gain, hi=1.0)

    def variants(self) -> list[tuple[str, float]]:
        """The norm-control fine-tunes, (method, strength), in the stage's order; ('none', 0): uncontrolled."""
        return ([("none", 0.0)] + [("steps", float(n)) for n in self.steps] + [("decay", float(x)) for x in self.decays]
                + [("ball", float(r)) for r in self.radii] + [("rescale", float(r)) for r in self.radii])


@config
class Config(Synthetic):
    sweep: Sweep = field(Sweep(), "the alphas and the lambda grid: arithmetic's (its cache serves the fine-tunes and "
                         "test curves)")
    practice: Practice = field(Practice(), "budgets, norm control and the declared tolerances")

    def check(self):
        super().check()
        # The feature estimator (similarity.model_features), the hinge-loss choosing rules and the norm-controlled
        # fine-tunes (norm_control, clean labels) are the paper's binary model's.
        for path, value, default in (("model.arch", getattr(self.model, "arch", "paper"), "paper"),
                                     ("data.classes", getattr(self.data, "classes", 2), 2),
                                     ("data.label_noise", getattr(self.data, "label_noise", 0.0), 0.0)):
            if value != default:
                _check.fail(path, value, f"the practice experiment runs the paper's binary model on clean labels "
                            f"only (must be {default!r})")
        for i, n in enumerate(self.practice.steps):
            if n >= self.train.steps:
                _check.fail(f"practice.steps[{i}]", n, f"must be < train.steps={self.train.steps} (fewer steps)")
        if not np.any(np.isclose(self.sweep.lams(), 0.0)):
            _check.fail("sweep.lam_min", self.sweep.lam_min, "the lambda grid must hold 0 (Psi*_T1 itself, the "
                        "reference of T1's control constraint)")
        check_grid(("sweep.lam_min", "sweep.lam_max", "practice.norm_lam_step"), self.sweep.lam_min,
                   self.sweep.lam_max, self.practice.norm_lam_step, min_points=3)
        if not np.any(np.isclose(self.norm_lams(), 0.0)):
            _check.fail("practice.norm_lam_step", self.practice.norm_lam_step, "the norm-control grid from "
                        f"sweep.lam_min={self.sweep.lam_min:g} must hold 0 (beta is measured from lambda = 0)")

    def norm_lams(self) -> np.ndarray:
        """The norm-control curves' lambdas: the sweep's range at practice.norm_lam_step."""
        return grid(self.sweep.lam_min, self.sweep.lam_max, self.practice.norm_lam_step)


# ------------------------------------------------------------------------------------------------ compiled stages
class _Memo:
    """The run's store, remembering every entry this run read or wrote: the fine-tunes pair_sweep has just read are
    read again for their task vectors without a second computation, also when the cache is off or refreshed."""

    def __init__(self, store):
        self.store, self.mem = store, {}
        self.timed, self.lock = store.timed, store.lock     # stage seconds land in the run's store (provenance.json)

    def load(self, kind, fields, like):
        from tvtheory import cache

        k = (kind, cache.key(fields))
        if k not in self.mem:
            got = self.store.load(kind, fields, like)
            if got is None:
                return None
            self.mem[k] = got
        return self.mem[k]

    def has(self, kind, fields):
        from tvtheory import cache

        return (kind, cache.key(fields)) in self.mem or self.store.has(kind, fields)

    def save(self, kind, fields, tree):
        from tvtheory import cache

        self.mem[(kind, cache.key(fields))] = tree
        return self.store.save(kind, fields, tree)


@lru_cache(maxsize=None)
def _stages():
    """The jitted stages, built once per process (JAX is imported only once the config is valid)."""
    import jax
    import jax.numpy as jnp

    from tvtheory import data, metrics, model, norm_control, similarity as sim, streams, sweep, taskvec

    @partial(jax.jit, static_argnames=("setup", "probes"))
    def estimate(key, seed_ids, mus_Ax2xD, irr, psi0_S, tau1_S, tau2_SxA, *, setup, probes):
        """Per seed and alpha, every estimator at every probe budget: (S, A, B, E) in ESTIMATORS' order."""
        n_max = max(probes)

        def one_seed(args):
            s, psi0, tau1, tau2_A = args
            sk = streams.seed_key(key, s)
            X1, y1 = data.sample(streams.task(sk, streams.VAL, PROBE_TASK), mus_Ax2xD[0, 0], irr, n_max, setup.data)
            p1 = taskvec.add(psi0, tau1)

            def one_alpha(args):
                mu2, tau2 = args
                X2, y2 = data.sample(streams.task(sk, streams.VAL, PROBE_TASK + 1), mu2, irr, n_max, setup.data)
                p2 = taskvec.add(psi0, tau2)
                out = []
                for n in probes:
                    Xmix = jnp.concatenate([X1[:n], X2[:n]])
                    out.append(jnp.stack([
                        sim.param_cosine(tau1, tau2),
                        sim.output_cosine(model.apply, p1, p2, Xmix),
                        sim.feature_correlation(sim.model_features, p1, p2, Xmix, "pearson"),
                        sim.disentanglement_error(model.apply, psi0, tau1, tau2, X1, X2, n_probe=n),
                        # one batch of n labelled samples per task: the cosine of the two tasks' mean gradients
                        sim.gradient_alignment(sim.model_hinge_loss, psi0, (X1[None, :n], y1[None, :n]),
                                               (X2[None, :n], y2[None, :n]))]))
                return jnp.stack(out)
            return jax.lax.map(one_alpha, (mus_Ax2xD[:, 1], tau2_A))
        return jax.lax.map(one_seed, (seed_ids, psi0_S, tau1_S, tau2_SxA))

    @partial(jax.jit, static_argnames=("setup", "n_vals", "chunk"))
    def validate(key, seed_ids, mus_Ax2xD, irr, psi0_S, tau1_S, tau2_SxA, lams_L, *, setup, n_vals, chunk):
        """Validation hinge loss of Psi_0 + dPsi_T1 + lambda dPsi_T2 on T1 and T2 for every budget n (the first n
        samples of each task's validation set, stream VAL): (S, A, V, L, 2). The set is evaluated in pieces of
        g = gcd(n_vals) samples (one compiled evaluation), whose running sums give every budget at the cost of the
        largest."""
        q = setup.data.max_distinct(irr.shape[0])
        g = math.gcd(*n_vals)
        n_max = max(n_vals)
        upto = jnp.asarray([n // g - 1 for n in n_vals])
        coeffs_Lx1 = lams_L[:, None]

        def one_seed(args):
            s, psi0, tau1, tau2_A = args
            sk = streams.seed_key(key, s)
            base = taskvec.add(psi0, tau1)
            X1, y1 = data.sample(streams.task(sk, streams.VAL, 0), mus_Ax2xD[0, 0], irr, n_max, setup.data)

            def one_alpha(args):
                mu2, tau2 = args
                X2, y2 = data.sample(streams.task(sk, streams.VAL, 1), mu2, irr, n_max, setup.data)
                taus = jax.tree.map(lambda t: t[None], tau2)
                pieces = lambda x: x.reshape(n_max // g, g, *x.shape[1:])  # noqa: E731
                out = []
                tables = sweep.pattern_tables(jnp.stack([mus_Ax2xD[0, 0], mu2]), irr, setup.data)
                for i, (X, y) in enumerate(((X1, y1), (X2, y2))):
                    table = None if tables is None else tables[i]
                    sums = jax.lax.map(lambda xy, table=table: model.grid_eval(base, taus, coeffs_Lx1, *xy, chunk, q=q,
                                                                               table=table)[0] * g,
                                       (pieces(X), pieces(y)))
                    out.append(jnp.cumsum(sums, 0)[upto] / jnp.asarray(n_vals, jnp.float32)[:, None])
                return jnp.stack(out, -1)
            return jax.lax.map(one_alpha, (mus_Ax2xD[:, 1], tau2_A))
        return jax.lax.map(one_seed, (seed_ids, psi0_S, tau1_S, tau2_SxA))

    @partial(jax.jit, static_argnames=("setup",))
    def controlled(key, seed_ids, psi0_S, mus_2xD, irr, decays_C, radii_C, *, setup):
        """Norm controls (b) and (c) per seed: the fine-tunes of both tasks (streams FINETUNE 0 and 1, the batches of
        the uncontrolled ones) for every (decay, radius) pair; params (S, C, 2, ...), finite (S, C, 2). An infinite
        radius is no ball and a zero decay no decay (norm_control: bit for bit train.finetune)."""
        def one_seed(args):
            s, psi0 = args
            sk = streams.seed_key(key, s)

            def one(args):
                decay, radius, t = args
                r = norm_control.finetune_controlled(psi0, streams.task(sk, streams.FINETUNE, t), mus_2xD[t], irr,
                                                     setup.data, setup.train, decay=decay, radius=radius)
                return r.params, r.finite
            C = decays_C.shape[0]
            out = jax.lax.map(one, (jnp.repeat(decays_C, 2), jnp.repeat(radii_C, 2), jnp.tile(jnp.arange(2), C)))
            return jax.tree.map(lambda x: x.reshape(C, 2, *x.shape[1:]), out)
        return jax.lax.map(one_seed, (seed_ids, psi0_S))

    @partial(jax.jit, static_argnames=("setup", "n_test", "chunk"))
    def norm_eval(key, seed_ids, mus_2xD, irr, psi0_S, tau1_SxV, tau2_SxV, lams_L, *, setup, n_test, chunk):
        """Per seed and variant: Psi_0 + dPsi_T1 + lambda dPsi_T2 on both tasks' test sets (stream TEST, tasks 0 and
        1): loss and accuracy (S, V, L, 2); each fine-tune on its own task, (hinge, accuracy) (S, V, 2, 2); the task
        vectors' norms (S, V, 2)."""
        q = setup.data.max_distinct(irr.shape[0])

        def one_seed(args):
            s, psi0, tau1_V, tau2_V = args
            sk = streams.seed_key(key, s)
            sets = [data.sample(streams.task(sk, streams.TEST, t), mus_2xD[t], irr, n_test, setup.data)
                    for t in (0, 1)]
            tables = sweep.pattern_tables(mus_2xD, irr, setup.data)

            def one_variant(args):
                tau1, tau2 = args
                base = taskvec.add(psi0, tau1)
                taus = jax.tree.map(lambda t: t[None], tau2)
                grids = [model.grid_eval(base, taus, lams_L[:, None], X, y, chunk, q=q,
                                         table=None if tables is None else tables[t]) for t, (X, y) in enumerate(sets)]
                own = [metrics.evaluate(taskvec.add(psi0, tau), X, y) for tau, (X, y) in zip((tau1, tau2), sets)]
                return (jnp.stack([g[0] for g in grids], -1), jnp.stack([g[1] for g in grids], -1),
                        jnp.stack([jnp.stack([o["loss"], o["acc"]]) for o in own]),
                        jnp.stack([taskvec.norm(tau1), taskvec.norm(tau2)]))
            return jax.lax.map(one_variant, (tau1_V, tau2_V))
        return jax.lax.map(one_seed, (seed_ids, psi0_S, tau1_SxV, tau2_SxV))

    return estimate, validate, controlled, norm_eval


# ------------------------------------------------------------------------------------------------------------ run
def run(cfg: Config, ctx) -> dict[str, pd.DataFrame]:
    import jax

    from tvtheory import cache, data, norm_control, results, streams, sweep, taskvec

    p, d = cfg.practice, cfg.data.d
    setup = sweep.Setup(cfg.data, cfg.model, cfg.train)
    alphas, lams = cfg.sweep.all_alphas(), cfg.sweep.lams()
    store = _Memo(ctx.store)
    # Exactly arithmetic's sweep (its blocks, alphas, grid, n_test and defaults): every stage is a hit of its cache.
    r = sweep.pair_sweep(cfg.seed, cfg.n_seeds, alphas, lams, setup, n_test=cfg.sweep.n_test, chunk=cfg.sweep.chunk,
                         store=store, progress=ctx.progress("phase diagram (arithmetic's stages)"))
    valid, at_chance = _pairs.validity(r, cfg.claims)
    _pairs.check_divergence(valid, "fine-tune pair", ctx)
    const = _pairs.config_point(cfg)
    metrics_rows = _pairs.pair_tables(r, alphas, lams, valid, at_chance, **const)["metrics"]

    # The task vectors: the same stage calls as pair_sweep's, so the fine-tunes it has just read.
    seed_ids = np.arange(cfg.n_seeds, dtype=np.int32)
    irr = sweep.irrelevant(cfg.seed, setup, np.eye(d)[:2])
    mus = np.asarray(jax.vmap(lambda a: data.pair_patterns(a, d))(np.asarray(alphas, np.float32)))
    psi0 = r.psi0
    finetuned = lambda mu, i, st=setup: sweep.finetune_all(cfg.seed, st, seed_ids, psi0, mu, i, irr, store)  # noqa
    tau1 = taskvec.task_vector(finetuned(mus[0, 0], 0).params, psi0)
    tau2_SxA = jax.tree.map(lambda *t: np.stack(t, 1), *[taskvec.task_vector(finetuned(mus[i, 1], 1).params, psi0)
                                                          for i in range(len(alphas))])
    estimate, validate, controlled, norm_eval = _stages()
    key = streams.run_key(cfg.seed)
    base = {"seed": cfg.seed, **setup.fields(), "alphas": np.round(np.asarray(alphas, float), 6)}
    inputs = lambda ids: (key, ids, mus, irr, sweep.select(psi0, ids), sweep.select(tau1, ids), sweep.select(tau2_SxA, ids))  # noqa
    bar = ctx.progress("similarity, validation and norm control")

    est = cache.per_seed(store, "practice_estimates", lambda s: {**base, "probes": list(p.probes),
                                                                  "probe_task": PROBE_TASK, "s": s}, seed_ids,
                         lambda ids: estimate(*inputs(ids), setup=setup, probes=tuple(p.probes)))
    bar(1, 4, "estimators")
    val = cache.per_seed(store, "practice_validation", lambda s: {**base, "n_vals": sorted(p.n_vals), "lams": lams,
                                                                   "s": s}, seed_ids,
                         lambda ids: validate(*inputs(ids), lams, setup=setup, n_vals=tuple(sorted(p.n_vals)),
                                              chunk=cfg.sweep.chunk))
    bar(2, 4, "validation curves")

    # Norm control at alpha = 0 (T1 = e_1, T2 = e_2): the uncontrolled fine-tunes are arithmetic's.
    m0 = np.asarray(data.pair_patterns(np.float32(0.0), d))
    nid = seed_ids[:min(p.norm_seeds, cfg.n_seeds)]
    none = [finetuned(m0[t], t) for t in (0, 1)]
    tau_none = [sweep.select(taskvec.task_vector(f.params, psi0), nid) for f in none]
    ok_none = (np.asarray(none[0].finite) & np.asarray(none[1].finite))[nid]
    variants = p.variants()
    taus = {("none", 0.0): (*tau_none, ok_none)}
    for n in p.steps:
        spec = dataclasses.replace(cfg.train, steps=n, log_every=min(cfg.train.log_every, n))
        fts = [sweep.finetune_all(cfg.seed, sweep.Setup(cfg.data, cfg.model, spec), nid, psi0, m0[t], t, irr, store)
               for t in (0, 1)]
        taus[("steps", float(n))] = (*[taskvec.task_vector(f.params, sweep.select(psi0, nid)) for f in fts],
                                     np.asarray(fts[0].finite) & np.asarray(fts[1].finite))
    grid_c = [(x, np.inf) for x in p.decays] + [(0.0, x) for x in p.radii]
    if grid_c:
        decays_C, radii_C = (np.asarray(v, np.float32) for v in zip(*grid_c))
        ctl_params, ctl_ok = cache.per_seed(
            store, "practice_norm_finetune", lambda s: {**base, "mu": m0, "controls": [list(map(float, c))
                                                                                      for c in grid_c], "s": s},
            nid, lambda ids: controlled(key, ids, sweep.select(psi0, ids), m0, irr, decays_C, radii_C, setup=setup))
        for c, (method, strength) in enumerate([("decay", float(x)) for x in p.decays]
                                               + [("ball", float(x)) for x in p.radii]):
            pick = [jax.tree.map(lambda x: x[:, c, t], ctl_params) for t in (0, 1)]
            taus[(method, strength)] = (*[taskvec.task_vector(q, sweep.select(psi0, nid)) for q in pick],
                                        np.all(ctl_ok[:, c], -1))
    rescale = jax.vmap(norm_control.rescale, in_axes=(0, None))
    for rad in p.radii:
        taus[("rescale", float(rad))] = (*[rescale(t, np.float32(rad)) for t in tau_none], ok_none)
    stack = lambda i: jax.tree.map(lambda *t: np.stack(t, 1), *[taus[v][i] for v in variants])  # noqa: E731
    tau1_SxV, tau2_SxV = stack(0), stack(1)
    ft_ok_SxV = np.stack([taus[v][2] for v in variants], 1)
    bar(3, 4, "norm-control fine-tunes")
    norm_lams = cfg.norm_lams()
    ev = cache.per_seed(store, "practice_norm_eval", lambda s: {**base, "variants": [list(v) for v in variants],
                                                                "lams": norm_lams, "n_test": p.norm_n_test, "s": s},
                        nid, lambda ids: norm_eval(key, ids, m0, irr, sweep.select(psi0, ids),
                                                        sweep.select(tau1_SxV, ids), sweep.select(tau2_SxV, ids),
                                                        norm_lams, setup=setup,
                                                        n_test=p.norm_n_test, chunk=cfg.sweep.chunk))
    bar(4, 4, "norm-control curves")
    n_loss, n_acc, own, norms = (np.asarray(x) for x in ev)
    norm_ok = ft_ok_SxV & sweep.valid(n_loss, n_acc, own, norms, axis_count=2)
    _pairs.check_divergence(norm_ok, "norm-control fine-tune pair", ctx)

    # Tables (values rounded as their csv is written, so that verdicts from memory and from files agree).
    A, S = len(alphas), cfg.n_seeds
    div_AxS = ~np.asarray(valid)
    estimates = results.tidy(
        {"value": np.moveaxis(np.asarray(est), 0, 1),
         "diverged": np.broadcast_to(div_AxS[:, :, None, None], (A, S, len(p.probes), len(ESTIMATORS)))},
        {"alpha": alphas, "seed": np.arange(S), "n_probe": np.asarray(p.probes), "estimator": list(ESTIMATORS)},
        **const)
    val_AxSxVxLx2 = np.moveaxis(np.asarray(val), 0, 1)
    validation = results.tidy(
        {"L1": val_AxSxVxLx2[..., 0], "L2": val_AxSxVxLx2[..., 1],
         "diverged": np.broadcast_to(div_AxS[:, :, None, None], val_AxSxVxLx2.shape[:-1])},
        {"alpha": alphas, "seed": np.arange(S), "n_val": np.asarray(sorted(p.n_vals)), "lam": lams}, **const)
    norm = norm_table(variants, norm_lams, n_loss, n_acc, own, norms, ~norm_ok, cfg.claims.chance_acc, const)
    return {name: t for name, t in (("estimators", estimates), ("metrics", metrics_rows),
                                                ("validation", validation), ("norm", norm))}


def norm_table(variants, lams, loss_SxVxLx2, acc_SxVxLx2, own_SxVx2x2, norms_SxVx2, diverged_SxV, chance_acc,
               const) -> pd.DataFrame:
    """One row per (variant, seed, lam, task) at alpha = 0: the hinge loss and accuracy of Psi_0 + dPsi_T1 +
    lambda dPsi_T2, and per (variant, seed, task) the task vector's norm and its fine-tune's own hinge loss and
    accuracy; ``at_chance`` where a fine-tune's own accuracy is at most claims.chance_acc (a control that destroyed
    learning: reported, not left out; it cannot meet the matched-loss rule)."""
    from tvtheory import results

    S, V, L, _ = np.shape(loss_SxVxLx2)
    shape = (V, S, L, 2)
    per_task = lambda x: np.broadcast_to(np.moveaxis(np.asarray(x), 0, 1)[:, :, None, :], shape)  # noqa: E731
    per_seed = lambda x: np.broadcast_to(np.moveaxis(np.asarray(x), 0, 1)[:, :, None, None], shape)  # noqa: E731
    at_chance = np.any(np.asarray(own_SxVx2x2)[..., 1] <= chance_acc, axis=-1)
    df = results.tidy({"loss": np.moveaxis(loss_SxVxLx2, 0, 1), "acc": np.moveaxis(acc_SxVxLx2, 0, 1),
                       "norm": per_task(norms_SxVx2), "own_loss": per_task(np.asarray(own_SxVx2x2)[..., 0]),
                       "own_acc": per_task(np.asarray(own_SxVx2x2)[..., 1]), "at_chance": per_seed(at_chance),
                       "diverged": per_seed(diverged_SxV)},
                      {"variant": np.arange(V), "seed": np.arange(S), "lam": lams, "task": ["T1", "T2"]}, **const)
    df.insert(len(const), "method", [variants[i][0] for i in df["variant"]])
    df.insert(len(const) + 1, "strength", [variants[i][1] for i in df["variant"]])
    df.insert(len(const) + 2, "alpha", 0.0)
    return df.drop(columns="variant")




# ------------------------------------------------------------------------------------------------------- analyse
def analyse(tables, cfg: Config) -> dict:
    c = analysis.curves(tables["metrics"])
    est = analysis.valid(tables["estimators"])
    choices = validation_choices(tables["validation"], c, est, cfg)
    return {"estimator_summary": estimator_summary(est, c, cfg), "lambda_prediction": lambda_prediction(est, c, cfg),
            "windows": window_prediction(est, c, cfg), "validation_choices": choices,
            "validation_summary": validation_summary(choices, cfg), "norm_summary": norm_summary(tables["norm"], cfg),
            "_n_seeds": c.n_seeds, "_n_seeds_norm": norm_seeds(tables["norm"]),
            "_lost": [float(al) for al, k in c.valid_seeds.items() if not k]}


def lambda_star_by_seed(c: analysis.Curves, eps: float) -> pd.Series:
    """lambda* of every (alpha, seed): the smallest grid lambda whose T2 test hinge loss is <= eps (NaN: none)."""
    return c.seeds.groupby(level=["alpha", "seed"]).apply(
        lambda g: analysis.lambda_star(g.droplevel(["alpha", "seed"]), eps)).rename("lambda_star")


def _corr(x, y) -> float:
    """The correlation of an estimator's values ``y`` with the alphas ``x`` over one seed's alphas: NaN with fewer than
    three alphas; 0 for an estimator that gives every alpha the same value (it does not track alpha: it used to be
    NaN, and the seed was left out of the mean while n_seeds counted it)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.std(x) == 0:
        return float("nan")
    if np.std(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _mean(x) -> float:
    x = np.asarray(x, float)
    return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else float("nan")


def _sd(x) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def estimator_summary(est: pd.DataFrame, c: analysis.Curves, cfg: Config) -> pd.DataFrame:
    """Per (estimator, n_probe): Spearman and Pearson correlation with alpha over the alphas (per seed; seed mean and
    sd), the error against alpha (mean |value - alpha|, bias), the seed sd at a fixed alpha (averaged over alphas),
    and the error of lambda = 1 - value against each seed's lambda* for alpha >= 0 (mean and largest |error|).
    ``n_corr``: the seeds behind the correlations' mean and sd (those with both correlations; one with fewer than
    three alphas, or a NaN estimate, has none), which the tracking claim counts as its seeds."""
    ls = lambda_star_by_seed(c, cfg.claims.eps_learned)
    rows = []
    for (e, n), g in est.groupby(["estimator", "n_probe"], sort=False):
        sp = [_corr(h["alpha"].rank(), h["value"].rank()) for _, h in g.groupby("seed")]
        pe = [_corr(h["alpha"], h["value"]) for _, h in g.groupby("seed")]
        j = g.join(ls, on=["alpha", "seed"])
        err = (1 - j["value"] - j["lambda_star"])[j["alpha"] >= 0]
        on_scale = e in ALPHA_SCALE
        rows.append({"estimator": e, "n_probe": n, "spearman": _mean(sp), "spearman_sd": _sd(sp),
                     "pearson": _mean(pe), "pearson_sd": _sd(pe),
                     "mae": float((g["value"] - g["alpha"]).abs().mean()) if on_scale else np.nan,
                     "bias": float((g["value"] - g["alpha"]).mean()) if on_scale else np.nan,
                     "seed_sd": float(g.groupby("alpha")["value"].std(ddof=1).fillna(0).mean()),
                     "lambda_mae": float(err.abs().mean()) if on_scale else np.nan,
                     "lambda_max_err": float(err.abs().max()) if on_scale else np.nan,
                     "n_seeds": g["seed"].nunique(),
                     "n_corr": int(np.sum(np.isfinite(sp) & np.isfinite(pe)))})
    return pd.DataFrame(rows)


def _estimates(est: pd.DataFrame, name: str, n: int) -> pd.Series:
    """The values of one estimator at one budget, indexed by (alpha, seed)."""
    g = est[(est["estimator"] == name) & (est["n_probe"] == n)]
    return g.set_index(["alpha", "seed"])["value"]


def lambda_prediction(est: pd.DataFrame, c: analysis.Curves, cfg: Config) -> pd.DataFrame:
    """Per (estimator on alpha's scale, n_probe, alpha): alpha_hat (seed mean, sd), the predicted lambda = 1 -
    alpha_hat, lambda* of the seed-mean curve, and the per-seed error 1 - alpha_hat_s - lambda*_s (mean, sd; NaN
    where a seed never learns T2 on the grid). An alpha of the sweep without an estimate has a row with lambda*
    alone (alpha_hat NaN, n_seeds 0)."""
    ls = lambda_star_by_seed(c, cfg.claims.eps_learned)
    star = {a: analysis.lambda_star(c.at(a), cfg.claims.eps_learned) for a in c.alphas()}
    rows = []
    for (e, n), g in est[est["estimator"].isin(ALPHA_SCALE)].groupby(["estimator", "n_probe"], sort=False):
        j = g.join(ls, on=["alpha", "seed"])
        j["err"] = 1 - j["value"] - j["lambda_star"]
        group = [{"estimator": e, "n_probe": n, "alpha": a, "lambda_star": star[a], "n_seeds": 0}   # no estimate
                 for a in c.alphas() if not np.isclose(g["alpha"], a).any()]
        for a, h in j.groupby("alpha"):
            group.append({"estimator": e, "n_probe": n, "alpha": a, "alpha_hat": h["value"].mean(),
                          "alpha_hat_sd": _sd(h["value"]), "predicted": 1 - h["value"].mean(),
                          "lambda_star": star.get(a, np.nan), "lambda_star_seeds": h["lambda_star"].mean(),
                          "err": h["err"].mean() if h["err"].notna().all() else np.nan, "err_sd": _sd(h["err"]),
                          "n_seeds": h["seed"].nunique()})
        rows += sorted(group, key=lambda r: r["alpha"])
    return pd.DataFrame(rows)


def window_prediction(est: pd.DataFrame, c: analysis.Curves, cfg: Config) -> pd.DataFrame:
    """Per alpha: the relation and negation window predicted from alpha_hat (lambda_estimator at claim_probe, seed
    mean; similarity.lambda_from_similarity with C = 1) against the measured negation set N(alpha) (claims.pair_rules,
    hinge loss, the declared beta). ``predicted``: 'window' (contradictory or irrelevant), 'none' (alpha_hat >=
    aligned_large), 'not judged' (aligned, but small), 'no estimate' (no alpha_hat at that alpha: not judged either);
    ``measured``: 'window', 'none' or 'undecided'."""
    from tvtheory import similarity as sim

    p, cc = cfg.practice, cfg.claims
    ah = _estimates(est, p.lambda_estimator, p.claim_probe).groupby("alpha").mean()
    rows = []
    for a in c.alphas():
        if a not in ah.index:                   # no estimate (a damaged table): nothing predicted, nothing judged
            rows.append({"alpha": a, "alpha_hat": np.nan, "relation": "", "predicted": "no estimate",
                         "measured": "undecided", "agree": None})
            continue
        adv = sim.lambda_from_similarity(float(ah[a]), tol=p.relation_tol)
        rel = str(adv.relation)
        pred = "window" if rel != "aligned" else ("none" if ah[a] >= p.aligned_large else "not judged")
        r = rules.pair_rules(c, a, cc, cc.beta(cfg.data.d), "loss")
        exists = r.negation.any()
        lo, hi = analysis.edges(r.lam, r.negation.yes)
        rows.append({"alpha": a, "alpha_hat": float(ah[a]), "relation": rel, "predicted": pred,
                     "predicted_lo": float(adv.neg_lo), "measured": {True: "window", False: "none",
                                                                     None: "undecided"}[exists],
                     "measured_lo": lo, "measured_hi": hi, "measured_window": rules.describe_set(r.lam, r.negation),
                     "agree": None if pred == "not judged" or exists is None else (pred == "window") == exists})
    return pd.DataFrame(rows)


def theory_choice(alpha_hat, lams, cfg: Config) -> dict[str, tuple[float, bool]]:
    """Theorems 1-2 read with alpha_hat as a choice of lambda on the grid. Addition: the smallest grid lambda >= 1 -
    alpha_hat (none for contradictory tasks). Negation (none for aligned tasks): the deepest grid lambda < 0 inside
    the predicted window [-1 / alpha_hat^2, 0) (irrelevant: [-inf, 0)) whose declared cost |lambda| beta stays within
    T1's budget keep_tol."""
    from tvtheory import similarity as sim

    p, cc = cfg.practice, cfg.claims
    adv = sim.lambda_from_similarity(alpha_hat, tol=p.relation_tol)
    out = {"addition": (np.nan, False), "negation": (np.nan, False)}
    if np.isfinite(adv.addition):
        above = lams[lams >= float(adv.addition) - 1e-6]
        if above.size:
            out["addition"] = (float(above.min()), True)
    if str(adv.relation) != "aligned":
        beta = cc.beta(cfg.data.d)
        lo = max(float(adv.neg_lo), -p.keep_tol / beta if beta > 0 else -np.inf)
        inside = lams[(lams < 0) & (lams >= lo - 1e-6)]
        if inside.size:
            out["negation"] = (float(inside.min()), True)
    return out


def validation_choices(val: pd.DataFrame, c: analysis.Curves, est: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Per (chooser, n_val, alpha, seed, goal): the chosen lambda, the oracle's (the same rule on the test curves),
    both tasks' test hinge loss at the choice, whether it succeeds on test (the chooser's own rule, on the test
    curve), and whether it does what the oracle does (``right``: succeeds where the oracle finds a lambda, finds none
    where it finds none). Choosers: 'validation' (similarity.choose_addition / choose_negation on the first n_val
    validation samples, T1's constraint keep_tol), 'theory' (``theory_choice`` from each seed's alpha_hat; n_val 0)."""
    from tvtheory import similarity as sim

    p, cc = cfg.practice, cfg.claims
    val = analysis.valid(val)
    lams = np.sort(val["lam"].unique())
    keys = pd.MultiIndex.from_tuples(sorted(set(zip(val["alpha"], val["seed"])) & set(
        zip(c.seeds.index.get_level_values("alpha"), c.seeds.index.get_level_values("seed")))), names=["alpha", "seed"])
    if not len(keys):
        return pd.DataFrame(columns=["chooser", "n_val", "alpha", "seed", "goal", "lam", "found", "oracle_lam",
                                     "oracle_found", "L1_test", "L2_test", "success", "right"])
    wide = lambda df, col: df[col].unstack("lam").reindex(index=keys, columns=lams).to_numpy(float)  # noqa: E731
    T1, T2 = wide(c.seeds, "L1"), wide(c.seeds, "L2")
    K, at0 = len(keys), int(np.argmin(np.abs(lams)))
    choose = {"addition": lambda L1, L2: sim.choose_addition(lams, L1, L2, eps=cc.eps_learned, tol=p.keep_tol),
              "negation": lambda L1, L2: sim.choose_negation(lams, L1, L2, tol=p.keep_tol, forget=cc.forget_loss)}
    oracle = {goal: choose[goal](T1, T2) for goal in GOALS}
    parts = []

    def outcome(chooser, n, goal, lam_K, found_K):
        i = np.argmin(np.abs(lams[None, :] - np.nan_to_num(lam_K)[:, None]), axis=1)
        L1, L2 = T1[np.arange(K), i], T2[np.arange(K), i]
        kept = L1 <= T1[:, at0] + p.keep_tol
        ok = (L2 <= cc.eps_learned) if goal == "addition" else (lam_K < 0) & (L2 >= cc.forget_loss)
        success = found_K & kept & ok
        o = oracle[goal]
        parts.append(pd.DataFrame({"chooser": chooser, "n_val": n, "alpha": keys.get_level_values("alpha"),
                                   "seed": keys.get_level_values("seed"), "goal": goal, "lam": lam_K,
                                   "found": found_K, "oracle_lam": o.lam, "oracle_found": o.found,
                                   "L1_test": np.where(found_K, L1, np.nan), "L2_test": np.where(found_K, L2, np.nan),
                                   "success": success, "right": np.where(o.found, success, ~found_K)}))

    for n, g in val.groupby("n_val"):
        w = g.set_index(["alpha", "seed", "lam"])
        V1, V2 = wide(w, "L1"), wide(w, "L2")
        for goal in GOALS:
            ch = choose[goal](V1, V2)
            outcome("validation", int(n), goal, ch.lam, ch.found)
    ah = _estimates(est, p.lambda_estimator, p.claim_probe).reindex(keys)
    if ah.notna().any():
        th = [theory_choice(float(x), lams, cfg) if np.isfinite(x) else None for x in ah.to_numpy()]
        for goal in GOALS:
            lam = np.array([np.nan if t is None else t[goal][0] for t in th])
            outcome("theory", 0, goal, lam, np.array([t is not None and t[goal][1] for t in th]))
    out = pd.concat(parts, ignore_index=True)
    out["right"] = out["right"].astype(bool)
    return out


def validation_summary(ch: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Per (chooser, n_val): the fraction of (alpha, goal) cells done right (per seed; seed mean and sd), per goal,
    how often a lambda is found where the oracle finds one, and the mean |lambda - oracle lambda| where both do."""
    rows = []
    for (who, n), g in ch.groupby(["chooser", "n_val"]):
        per_seed = g.groupby("seed")["right"].mean()
        both = g["found"] & g["oracle_found"]
        row = {"chooser": who, "n_val": n, "right": per_seed.mean(), "right_sd": _sd(per_seed)}
        for goal in GOALS:
            h = g[g["goal"] == goal]
            row[f"right_{goal}"] = h["right"].mean()
            hb = h["found"] & h["oracle_found"]
            row[f"lam_err_{goal}"] = float((h["lam"] - h["oracle_lam"])[hb].abs().mean()) if hb.any() else np.nan
        row["found_where_oracle"] = g.loc[g["oracle_found"], "found"].mean() if g["oracle_found"].any() else np.nan
        row["lam_err"] = float((g["lam"] - g["oracle_lam"])[both].abs().mean()) if both.any() else np.nan
        row["n_seeds"] = g["seed"].nunique()
        rows.append(row)
    return pd.DataFrame(rows)


def norm_seeds(norm: pd.DataFrame) -> int:
    """The fewest valid seeds of any norm-control variant."""
    ok = analysis.valid(norm).groupby(["method", "strength"])["seed"].nunique()
    every = norm.groupby(["method", "strength"])["seed"].nunique()
    return int(ok.reindex(every.index).fillna(0).min()) if len(every) else 0


def kept_windows(cur: pd.DataFrame, cfg: Config) -> dict:
    """The windows under the practitioner's constraint on T1 (seed-mean curves L1, L2 indexed by lambda): T1 within
    keep_tol of its own fine-tune's hinge loss (lambda = 0), rather than the theorems' absolute eps + |lambda| beta,
    which a fine-tune that has not fully learned its task never meets. Addition: T2 learned (<= eps); negation:
    lambda < 0 and T2 forgotten (>= forget_loss). Returns the text of each and their ends."""
    lam = cur.index.to_numpy()
    kept = cur["L1"].to_numpy() <= float(cur["L1"].iloc[int(np.argmin(np.abs(lam)))]) + cfg.practice.keep_tol
    add = kept & (cur["L2"].to_numpy() <= cfg.claims.eps_learned)
    neg = kept & (lam < 0) & (cur["L2"].to_numpy() >= cfg.claims.forget_loss)
    return {"add_window_kept": analysis.window(lam, add), "add_lo_kept": analysis.edges(lam, add)[0],
            "neg_window_kept": analysis.window(lam, neg), "neg_lo_kept": analysis.edges(lam, neg)[0]}


def norm_summary(norm: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Per norm-control variant (method, strength), at alpha = 0: the task vectors' norms, each fine-tune's own hinge
    loss (seed mean, sd), beta_neg and beta_add (analysis.beta_hat's definition, per seed), beta_neg per unit norm of
    dPsi_T2, lambda*, the addition and negation windows (claims.pair_rules, the declared beta), both tasks' hinge loss
    at lambda = -1, the windows under the practitioner's constraint (``kept_windows``), and beta_neg's per-seed
    reduction against the uncontrolled fine-tune (gain = 1 - beta / beta_none, seed mean and sd). ``learned``:
    whether both fine-tunes still learn their task (own hinge <= eps; 'undecided' within the seed spread)."""
    cc, eps = cfg.claims, cfg.claims.eps_learned
    order = {m: i for i, m in enumerate(METHODS)}
    rows = []
    groups = sorted(analysis.valid(norm).groupby(["method", "strength"]), key=lambda kv: (order.get(kv[0][0], 9),
                                                                                          kv[0][1]))
    curves = {key: analysis.curves(g) for key, g in groups}
    betas = {key: analysis.beta_seeds(c).set_index("seed") for key, c in curves.items()}
    ref = betas.get(("none", 0.0))
    for (m, s), g in groups:
        c = curves[(m, s)]
        b = betas[(m, s)]
        own = g.groupby(["seed", "task"])[["own_loss", "norm", "own_acc"]].first().unstack("task")
        worst = own["own_loss"].max(axis=1)                                  # the worse of the two fine-tunes
        learned = rules.at_most(worst.mean(), _sd(worst), eps, cc.spread_k)
        r = rules.pair_rules(c, 0.0, cc, cc.beta(cfg.data.d), "loss")
        lo, hi = analysis.edges(r.lam, r.negation.yes)
        seeds_ls = analysis.lambda_star_seeds(c, 0.0, eps)
        gain = (1 - b["beta_neg"] / ref["beta_neg"]).dropna() if ref is not None else pd.Series(dtype=float)
        cur = c.at(0.0)
        rows.append({"method": m, "strength": s, "norm_T1": own["norm"]["T1"].mean(),
                     "norm_T2": own["norm"]["T2"].mean(), "own_T1": own["own_loss"]["T1"].mean(),
                     "own_T1_sd": _sd(own["own_loss"]["T1"]), "own_T2": own["own_loss"]["T2"].mean(),
                     "own_T2_sd": _sd(own["own_loss"]["T2"]), "own_worst": worst.mean(), "own_worst_sd": _sd(worst),
                     "own_acc_min": float(own["own_acc"].min().min()),
                     "learned": {True: "yes", False: "no", None: "undecided"}[learned.all()],
                     "beta_neg": b["beta_neg"].mean(), "beta_neg_sd": _sd(b["beta_neg"]),
                     "beta_add": b["beta_add"].mean(),
                     "beta_per_norm": b["beta_neg"].mean() / own["norm"]["T2"].mean(),
                     "gain": gain.mean() if len(gain) else np.nan, "gain_sd": _sd(gain),
                     "lambda_star": analysis.lambda_star(cur, eps), "lambda_star_sd": _sd(seeds_ls),
                     "add_window": rules.describe_set(r.lam, r.addition),
                     "neg_window": rules.describe_set(r.lam, r.negation), "neg_lo": lo, "neg_hi": hi,
                     "add_lo": analysis.edges(r.lam, r.addition.yes)[0],
                     **kept_windows(cur, cfg),
                     "L1_at_m1": analysis.value_at(cur, -1.0, "L1"), "L2_at_m1": analysis.value_at(cur, -1.0, "L2"),
                     "n_seeds": g["seed"].nunique()})
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------------------- claims
def claims(a: dict, cfg: Config) -> list[rules.Claim]:
    n, n_norm = a["_n_seeds"], a["_n_seeds_norm"]
    too_small = _pairs.smoke_reason(cfg, min(cfg.sweep.n_test, cfg.practice.norm_n_test))
    tracking = tracking_claim(a["estimator_summary"], cfg, n)     # on fewer seeds where some lack a correlation
    records = [(tracking, "estimators", tracking.n_seeds),
               (lambda_claim(a["lambda_prediction"], a["windows"], a["estimator_summary"], cfg, n), "estimators", n),
               (validation_claim(a["validation_summary"], cfg, n), "validation", n),
               (norm_claim(a["norm_summary"], cfg, n_norm), "norm", n_norm)]
    # The three claims on the sweep use every alpha: one without a valid seed leaves them 0 seeds, named.
    lost = f" (no valid seed at alpha = {', '.join(f'{al:g}' for al in a['_lost'])})" if a["_lost"] else ""

    def few(k, src):
        reason = rules.min_seeds_reason(k, cfg.claims)
        return reason and reason + (lost if src != "norm" else "")
    return [dataclasses.replace(r, source=src) for rec, src, k in records
            for r in rules.smoke([rec], few(k, src), too_small)]


def tracked_seed_counts(summary: pd.DataFrame, cfg: Config) -> list[int]:
    """The seeds behind each tracked estimator's correlations at the claim budget (``n_corr``): a seed without a
    correlation is left out of their mean and sd, so the tracking claim rests on the fewest of them."""
    p = cfg.practice
    at = summary[(summary["n_probe"] == p.claim_probe) & summary["estimator"].isin(list(p.tracked))]
    return [int(k) for k in at["n_corr"]]


def tracking_claim(summary: pd.DataFrame, cfg: Config, n_seeds: int) -> rules.Claim:
    """practice.similarity_tracks_alpha: at the claim budget, every tracked estimator's per-seed Spearman and Pearson
    correlation with alpha (over the alphas) reaches rank_min and linear_min (seed mean, beyond spread_k sds). Each
    estimator is judged on the seeds behind its correlations, so the claim rests on the fewest of them (at most
    ``n_seeds``, the valid seeds)."""
    p, k = cfg.practice, cfg.claims.spread_k
    n_corr = min([n_seeds, *tracked_seed_counts(summary, cfg)])
    at = summary[summary["n_probe"] == p.claim_probe].set_index("estimator")
    oks, parts = [], []
    for e in p.tracked:
        if e not in at.index:
            oks.append(None)
            continue
        r = at.loc[e]
        oks.append(rules.all3([rules.at_least(r["spearman"], r["spearman_sd"], p.rank_min, k).all(),
                               rules.at_least(r["pearson"], r["pearson_sd"], p.linear_min, k).all()]))
        parts.append(f"{e}: rho {r['spearman']:.3f}+-{r['spearman_sd']:.3f}, r {r['pearson']:.3f}+-"
                     f"{r['pearson_sd']:.3f}")
    others = at[~at.index.isin(list(p.tracked))]
    best = summary[summary["estimator"].isin(ALPHA_SCALE)].sort_values(["mae", "n_probe"]).head(1)
    smallest = {}
    for e, g in summary.groupby("estimator", sort=False):
        meets = g[(g["spearman"] - k * g["spearman_sd"] >= p.rank_min) & (g["pearson"] - k * g["pearson_sd"]
                                                                           >= p.linear_min)]
        smallest[e] = int(meets["n_probe"].min()) if len(meets) else None
    details = ("Correlations per seed over the alphas, then seed mean +- sd. Not judged: " + ("; ".join(
        f"{e}: rho {r['spearman']:.3f}, r {r['pearson']:.3f}" for e, r in others.iterrows()) or "none")
               + ". Smallest budget meeting both bars: " + ", ".join(
                   f"{e} {v if v is not None else 'none'}" for e, v in smallest.items())
               + ". Closest to alpha itself (mean |alpha_hat - alpha|): " + ", ".join(
                   f"{r.estimator} at {r.n_probe}: {r.mae:.3f} (bias {r.bias:+.3f})" for r in best.itertuples())
               + "; every budget in estimator_summary.csv."
               + (f" n_seeds: the fewest seeds behind a tracked estimator's correlations ({n_corr} of {n_seeds})."
                  if n_corr < n_seeds else ""))
    return rules.claim("practice.similarity_tracks_alpha",
                       "Similarity measured before merging tracks the task relation alpha (the paper's practical "
                       "advice: estimate alpha from the fine-tuned models)",
                       f"at {p.claim_probe} probe samples per task, each of {', '.join(p.tracked)} has Spearman >= "
                       f"{p.rank_min:g} and Pearson >= {p.linear_min:g} with alpha over the alphas (seed mean)",
                       "; ".join(parts), rules.all3(oks), n_corr, details,
                       undecided="a correlation lies within the seed spread of its bound, or an estimator is missing")


def lambda_claim(pred: pd.DataFrame, windows: pd.DataFrame, summary: pd.DataFrame, cfg: Config,
                 n_seeds: int) -> rules.Claim:
    """practice.lambda_from_similarity: (a) for every alpha >= 0 whose 1 - alpha the grid holds, |mean(1 - alpha_hat_s
    - lambda*_s)| <= lambda_tol (beyond the seeds' spread; a seed that never learns T2 fails it); (b) wherever the
    theory is definite, the negation window exists as predicted from alpha_hat's relation (Kleene 'for all')."""
    p, k = cfg.practice, cfg.claims.spread_k
    g = pred[(pred["estimator"] == p.lambda_estimator) & (pred["n_probe"] == p.claim_probe)]
    lams = cfg.sweep.lams()
    part_a, texts = [], []
    for r in g[g["alpha"] >= 0].itertuples():
        if pd.isna(r.alpha_hat):
            part_a.append(None)                                  # no estimate at this alpha: nothing predicted
            texts.append(f"alpha={r.alpha:g}: no estimate vs {r.lambda_star:g}")
            continue
        if not (lams.min() <= 1 - r.alpha <= lams.max() - cfg.claims.lam_tol + 1e-9):
            part_a.append(None)                                  # the grid cannot show lambda* near 1 - alpha
        elif np.isnan(r.err):
            part_a.append(False)                                 # a seed never learns T2 on the grid
        else:
            part_a.append(rules.at_most(abs(r.err), r.err_sd, p.lambda_tol + 1e-9, k).all())
        texts.append(f"alpha={r.alpha:g}: {r.predicted:.2f} vs {r.lambda_star:g}")
    judged = [w for w in windows.itertuples() if w.predicted != "not judged"] if len(windows) else []
    part_b = [None if w.measured == "undecided" or w.predicted == "no estimate" else bool(w.agree) for w in judged]
    disagree = [f"alpha={w.alpha:g} ({w.relation}, alpha_hat {w.alpha_hat:.2f}): predicted {w.predicted}, measured "
                f"{w.measured_window}" for w in judged if w.measured != "undecided" and not w.agree]
    paper = pred[(pred["estimator"] == "output_cosine") & (pred["n_probe"] == p.claim_probe) & (pred["alpha"] >= 0)]
    others = summary[(summary["n_probe"] == p.claim_probe) & summary["estimator"].isin(ALPHA_SCALE)]
    ok = rules.all3([rules.all3(part_a), rules.all3(part_b)])
    return rules.claim(
        "practice.lambda_from_similarity",
        "The theory as a tool: lambda = 1 - alpha_hat, estimated before merging, finds the smallest lambda that "
        "learns T2, and alpha_hat's relation predicts whether negation works",
        f"with alpha_hat = {p.lambda_estimator} at {p.claim_probe} probe samples: |1 - alpha_hat - lambda*| <= "
        f"{p.lambda_tol:g} for every alpha >= 0 (seed mean), and a negation window exactly where the relation "
        f"predicts one (contradictory or irrelevant: a window; alpha_hat >= {p.aligned_large:g}: none)",
        "1 - alpha_hat vs lambda*: " + ", ".join(texts) + f"; windows as predicted at {sum(x is True for x in part_b)}"
        f"/{len(part_b)} judged alphas", ok, n_seeds,
        ("Disagreements: " + "; ".join(disagree) + ". " if disagree else "")
        + "The paper's alpha_hat (output cosine) instead: " + ", ".join(
            f"alpha={r.alpha:g}: {r.predicted:.2f}" for r in paper.itertuples())
        + ". Mean |1 - alpha_hat - lambda*| over alpha >= 0 per estimator: " + ", ".join(
            f"{r.estimator} {r.lambda_mae:.3f} (max {r.lambda_max_err:.3f})" for r in others.itertuples())
        + ". Predicted windows use C = 1 in -C / alpha_hat^2 (not judged: C is unknown); windows.csv.",
        undecided="an error lies within the seed spread of lambda_tol, or a measured window is undecided")


def validation_claim(summary: pd.DataFrame, cfg: Config, n_seeds: int) -> rules.Claim:
    """practice.validation_lambda: at n_val_claim validation samples per task, the fraction of (alpha, goal) cells
    done right on test (per seed) reaches success_min (seed mean, beyond spread_k sds)."""
    p, k = cfg.practice, cfg.claims.spread_k
    v = summary[summary["chooser"] == "validation"].set_index("n_val")
    th = summary[summary["chooser"] == "theory"]
    if p.n_val_claim not in v.index:
        return rules.claim("practice.validation_lambda", "", "", "no validation rows", None, n_seeds, "",
                           undecided="the table lacks the claim's validation budget")
    r = v.loc[p.n_val_claim]
    ok = rules.at_least(r["right"], r["right_sd"], p.success_min, k).all()
    enough = v[(v["right"] - k * v["right_sd"]) >= p.success_min].index
    smallest = f"{int(min(enough))}" if len(enough) else "none of the budgets"
    theory = (f"The theory's choice from each seed's alpha_hat ({p.lambda_estimator}, {p.claim_probe} probes): right "
              f"{th['right'].iloc[0]:.3f} (addition {th['right_addition'].iloc[0]:.3f}, negation "
              f"{th['right_negation'].iloc[0]:.3f}). " if len(th) else "")
    return rules.claim(
        "practice.validation_lambda",
        "A lambda chosen on a few validation samples per task does on test what the best choice on the test curves "
        "does (addition: both tasks learned; negation: T2 forgotten while T1 loses at most keep_tol)",
        f"with {p.n_val_claim} validation samples per task, at least {p.success_min:g} of the (alpha, goal) cells are "
        f"right on test (seed mean)",
        f"right {r['right']:.3f}+-{r['right_sd']:.3f} (addition {r['right_addition']:.3f}, negation "
        f"{r['right_negation']:.3f}); mean |lambda - oracle lambda| {r['lam_err']:.3f}",
        ok, n_seeds,
        f"Smallest budget meeting the bar: {smallest}. Per budget (right, |lambda - oracle|): " + ", ".join(
            f"{int(n)}: {x['right']:.3f}, {x['lam_err']:.3f}" for n, x in v.iterrows()) + ". " + theory
        + f"T1's constraint: hinge <= its own fine-tune's + {p.keep_tol:g}; T2 learned: hinge <= "
        f"{cfg.claims.eps_learned:g}; forgotten: >= {cfg.claims.forget_loss:g}.",
        undecided="the fraction lies within the seed spread of success_min")


def norm_claim(ns: pd.DataFrame, cfg: Config, n_seeds: int) -> rules.Claim:
    """practice.norm_control: some controlled fine-tune that still learns its task (own hinge <= eps for both tasks)
    lowers beta_neg by at least beta_gain against the uncontrolled one (per-seed gain, beyond the spread); 'any'
    over the controls (Kleene). Inconclusive when no control keeps its task learned, or the uncontrolled beta is 0."""
    p, cc, k = cfg.practice, cfg.claims, cfg.claims.spread_k
    statement = ("Norm control (fewer steps, weight decay towards Psi_0, a norm ball, rescaling) lowers beta, T1's "
                 "damage per unit |lambda| when negating an irrelevant task, without losing the task")
    predicted = (f"some control whose fine-tunes keep own hinge <= {cc.eps_learned:g} has beta_neg at least "
                 f"{p.beta_gain:g} below the uncontrolled fine-tune's (per seed, seed mean)")
    ref = ns[ns["method"] == "none"]
    ctl = ns[ns["method"] != "none"]
    measured = ", ".join(f"{r.method} {r.strength:g}: norm {r.norm_T2:.2f}, own {r.own_worst:.3g}, beta "
                         f"{r.beta_neg:.3g}" for r in ns.itertuples())
    if ref.empty or not (ref["beta_neg"].iloc[0] > 0):
        return rules.claim("practice.norm_control", statement, predicted, measured, None, n_seeds, "",
                           undecided="no uncontrolled fine-tune, or its beta_neg is 0 (nothing to lower)")
    cands = ctl[ctl["learned"] != "no"]
    oks = [rules.all3([None if r.learned == "undecided" else True,
                       rules.at_least(r.gain, r.gain_sd, p.beta_gain, k).all()]) for r in cands.itertuples()]
    ok = rules.any3(oks) if len(cands) else None
    finite = ctl.dropna(subset=["beta_per_norm"])
    best = finite.loc[finite.groupby("method")["beta_per_norm"].idxmin()] if len(finite) else finite
    r0 = ref.iloc[0]
    learned = ", ".join(f"{r.method} {r.strength:g} (gain {r.gain:+.3f}+-{r.gain_sd:.3f})" for r in cands.itertuples())
    return rules.claim(
        "practice.norm_control", statement, predicted, measured, ok, n_seeds,
        f"Uncontrolled: norm {r0.norm_T2:.2f}, own hinge {r0.own_worst:.3g}, beta_neg {r0.beta_neg:.3g}+-"
        f"{r0.beta_neg_sd:.2g}, lambda* {r0.lambda_star:g}, negation window (the theorems' rules) {r0.neg_window}. "
        f"Still learned (own <= eps): {learned or 'none'}. beta_neg per unit norm of dPsi_T2: uncontrolled "
        f"{r0.beta_per_norm:.4f}; lowest per method " + ", ".join(
            f"{r.method} {r.strength:g}: {r.beta_per_norm:.4f}" for r in best.itertuples())
        + ". lambda* and the negation window with T1 within keep_tol of its own loss, against the norm: " + "; ".join(
            f"{r.method} {r.strength:g}: {r.lambda_star:g}, {r.neg_window_kept}" for r in ns.itertuples()) + ".",
        undecided="no control keeps both fine-tunes' own hinge <= eps (the grid cannot match the task loss), or a "
        "gain lies within the seed spread of beta_gain")


# --------------------------------------------------------------------------------------------------------- plots
def plot(tables, a: dict, cfg: Config, out) -> None:
    from tvtheory import plots

    plt, p = plots.plt, cfg.practice
    est = analysis.valid(tables["estimators"])
    # 1. each estimator against alpha, per budget; the last panel: lambda = 1 - alpha_hat against lambda*.
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(p.probes)))
    for ax, e in zip(axes.ravel(), ESTIMATORS):
        for col, n in zip(colors, sorted(p.probes)):
            st = est[(est["estimator"] == e) & (est["n_probe"] == n)].groupby("alpha")["value"].agg(["mean", "std"])
            st = st.fillna(0.0)
            ax.plot(st.index, st["mean"], color=col, lw=1.4, label=f"{n} probes")
            ax.fill_between(st.index, st["mean"] - st["std"], st["mean"] + st["std"], color=col, alpha=0.25, lw=0)
        if e in ALPHA_SCALE:
            ax.plot([-1, 1], [-1, 1], "k--", lw=1, label="alpha")
        ax.set_title(e + (" (the paper's alpha_hat)" if e == "output_cosine" else ""), fontsize=10)
        ax.set_xlabel("alpha")
    axes[0, 0].legend(fontsize=7)
    ax = axes[1, 2]
    lp = a["lambda_prediction"]
    for e in ALPHA_SCALE:
        g = lp[(lp["estimator"] == e) & (lp["n_probe"] == p.claim_probe)]
        ax.plot(g["alpha"], g["predicted"], marker="." if e != p.lambda_estimator else "o", lw=1,
                label=f"1 - {e}" + (" (claim)" if e == p.lambda_estimator else ""))
    if len(lp):
        g = lp.drop_duplicates("alpha")
        ax.plot(g["alpha"], g["lambda_star"], "k-", lw=2.2, alpha=0.6, label="lambda* measured")
    ax.set_xlabel("alpha")
    ax.set_ylabel("lambda")
    ax.set_title(f"lambda from alpha_hat ({p.claim_probe} probes) against lambda*", fontsize=10)
    ax.legend(fontsize=7)
    fig.suptitle("Similarity estimators before merging against the true alpha (seed mean +- std)", fontsize=11)
    fig.tight_layout()
    plots.save(fig, out, "estimators")

    # 2. validation samples against the test outcome.
    vs = a["validation_summary"]
    v, th = vs[vs["chooser"] == "validation"].sort_values("n_val"), vs[vs["chooser"] == "theory"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    ax.errorbar(v["n_val"], v["right"], yerr=v["right_sd"], marker="o", capsize=3, label="validation: both goals")
    for goal, ls in (("addition", "--"), ("negation", ":")):
        ax.plot(v["n_val"], v[f"right_{goal}"], ls, marker=".", label=f"validation: {goal}")
        if len(th):
            ax.axhline(float(th[f"right_{goal}"].iloc[0]), color="tab:red", ls=ls, lw=1,
                       label=f"theory (1 - alpha_hat): {goal}")
    ax.axhline(p.success_min, color="k", lw=0.8, label=f"success_min {p.success_min:g}")
    ax.axvline(p.n_val_claim, color="0.6", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("validation samples per task")
    ax.set_ylabel("fraction of (alpha, goal) cells right on test")
    ax.legend(fontsize=7)
    ax = axes[1]
    for goal in GOALS:
        ax.plot(v["n_val"], v[f"lam_err_{goal}"], marker="o", label=goal)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("validation samples per task")
    ax.set_ylabel("mean |lambda - oracle lambda|")
    ax.legend(fontsize=8)
    fig.suptitle("lambda chosen on validation, judged on test (oracle: the same rule on the test curves)",
                 fontsize=10)
    fig.tight_layout()
    plots.save(fig, out, "validation")

    # 3. beta, own loss, lambda* and the windows against the norm of the negated task vector.
    ns = a["norm_summary"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    marks = {"none": "*", "steps": "o", "decay": "s", "ball": "^", "rescale": "D"}
    for m, g in ns.groupby("method", sort=False):
        g = g.sort_values("norm_T2")
        kw = dict(marker=marks.get(m, "o"), label=m, ms=11 if m == "none" else 6)
        axes[0, 0].errorbar(g["norm_T2"], g["beta_neg"], yerr=g["beta_neg_sd"], capsize=2, **kw)
        axes[0, 1].errorbar(g["norm_T2"], g["own_worst"], yerr=g["own_worst_sd"], capsize=2, **kw)
        axes[1, 0].plot(g["norm_T2"], g["lambda_star"], **kw)
        line = axes[1, 1].plot(g["norm_T2"], g["neg_lo_kept"], **kw)[0]
        axes[1, 1].plot(g["norm_T2"], g["add_lo_kept"], marker=kw["marker"], ls="--", color=line.get_color(),
                        ms=kw["ms"])
    axes[0, 0].set_ylabel("beta_neg: T1 hinge per unit |lambda| (alpha = 0)")
    axes[0, 1].set_ylabel("own hinge loss (worse of the two fine-tunes)")
    axes[0, 1].axhline(cfg.claims.eps_learned, color="tab:green", ls=":", label="eps")
    axes[1, 0].set_ylabel("lambda*: smallest lambda learning T2")
    axes[1, 0].set_title(f"a variant without a point: no lambda <= {cfg.sweep.lam_max:g} learns T2", fontsize=8)
    axes[1, 1].set_ylabel(f"T1 within {p.keep_tol:g} of its own loss: negation window's\n"
                          "lower end (solid), addition window's lower end (dashed)")
    for ax in axes.ravel():
        ax.set_xlabel("||dPsi_T2|| (Frobenius, whole task vector)")
        ax.legend(fontsize=7)
    fig.suptitle("Norm control at alpha = 0 (seed mean +- std; beside each, the fine-tunes' own hinge loss)",
                 fontsize=10)
    fig.tight_layout()
    plots.save(fig, out, "norm_control")


# ------------------------------------------------------------------------------------------------------- estimate
def estimate(cfg: Config) -> Cost:
    p, d, P, m, S = cfg.practice, cfg.data.d, cfg.data.P, cfg.model.m, cfg.n_seeds
    A, L = len(cfg.sweep.all_alphas()), len(cfg.sweep.lams())
    q = min(P, 16)
    forward = 2.0 * P * d * (P + m)                          # one sample through model.apply
    pairs = _pairs.pair_cost(cfg, A, L, cfg.sweep.n_test)
    # output cosine and features: 2 models x 2n; disentanglement: 4 n; gradients: ~3 x 2 n
    estimators = 18.0 * forward * S * A * sum(p.probes)
    validation = 2.0 * S * A * 2 * max(p.n_vals) * L * (q * m + q * q)
    steps = sum(p.steps) + (len(p.decays) + len(p.radii)) * cfg.train.steps
    Sn = min(p.norm_seeds, S)
    sgd = 6.0 * cfg.train.batch * P * d * (P + m) * steps * Sn * 2
    V = len(p.variants())
    norm_eval = 2.0 * Sn * V * 2 * p.norm_n_test * len(cfg.norm_lams()) * (q * m + q * q)
    seconds = pairs.seconds + (estimators + sgd) / _pairs.SGD_FLOPS + (validation + norm_eval) / _pairs.EVAL_FLOPS
    # the validation and norm-control test sets are built whole: samples x P x d floats per task
    sets = 4.0 * 2 * (max(p.n_vals) + p.norm_n_test) * P * d
    memory = pairs.memory_gb + (4.0 * 2 * max(p.probes) * P * m * 4 + 4.0 * S * V * 2 * (d * d + m * d) + sets) / 1e9
    return Cost(seconds, memory)
