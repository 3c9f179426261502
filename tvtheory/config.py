"""Structured configs: the one place where every field, its default and its meaning are written.

Each concern is a dataclass (``Data``, ``Model``, ``Train``, ``Sweep``, ``Claims``, ...); an experiment's config
(in ``tvtheory/experiments/<name>.py``) composes them under ``Run``. The YAML files in ``conf/`` hold only what
differs from these defaults. Hydra registers each experiment's dataclass as ``<name>_schema`` and merges the YAML and
the command line into it, so types and unknown keys are checked by OmegaConf; ``validate`` then walks the config and
calls each block's ``check``, which raises ``ValueError("<field.path>=<value>: <what is allowed>")`` before anything
is compiled. Instances are immutable once built and hash by value, so the scalar blocks (``Data``, ``Model``,
``Train``) are the static arguments of the jitted stages, and cache keys are derived from them.

Nothing here imports JAX or Hydra: a bad value is reported in milliseconds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

from tvtheory import _check


def field(default: Any = dataclasses.MISSING, help: str = "", *, factory=None):  # noqa: A002
    """A dataclass field with its description (shown by ``--help`` and in docs/design.md's field table)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    if isinstance(default, Node):        # immutable, so one instance may be every config's default
        return dataclasses.field(default_factory=lambda: default, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


class Node:
    """Base of every config block. Immutable after construction (it may be a static argument of a jitted function),
    hashable by value (dataclass ``eq`` plus ``unsafe_hash``). The dataclasses are not ``frozen=True`` because
    OmegaConf must merge overrides into the schema, which it refuses for frozen dataclasses."""

    def __setattr__(self, name, value):
        if getattr(self, "_built", False):
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}: configs are immutable; use "
                                                  "dataclasses.replace")
        object.__setattr__(self, name, value)

    def __post_init__(self):
        object.__setattr__(self, "_built", True)

    def check(self) -> None:
        """Range and cross-field checks of this block's own fields (names without the block's path)."""


def config(cls):
    """Decorator: a config block (a dataclass with value equality and hashing)."""
    return dataclass(eq=True, unsafe_hash=True)(cls)


# The computation runs in 32-bit numbers: an integer or a float outside their range would overflow there (an error
# or an infinity after the run has started), so every numeric field, in lists too, is refused beyond it up front.
INT32_MAX = 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


def representable(name: str, value: Any) -> None:
    """Refuse a number (or a number in a list) that 32-bit integers or floats cannot hold; infinities, NaN and
    every other constraint are each block's ``check``."""
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            representable(f"{name}[{i}]", v)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int) and abs(value) > INT32_MAX:
        _check.fail(name, value, f"outside the 32-bit integer range the computation uses (|value| <= {INT32_MAX})")
    elif isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        _check.fail(name, value, f"outside the 32-bit float range the computation uses (|value| <= {FLOAT32_MAX:.4g})")


def validate(cfg: Node, prefix: str = "") -> Node:
    """Check every block, depth first: a failing field raises ValueError("<path>.<field>=<value>: ...")."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, Node):
            validate(v, f"{prefix}{f.name}.")
        else:
            try:
                representable(f.name, v)
            except ValueError as e:
                raise ValueError(f"{prefix}{e}") from None
    try:
        cfg.check()
    except ValueError as e:
        raise ValueError(f"{prefix}{e}") from None
    return cfg


def to_plain(cfg) -> Any:
    """The config as plain JSON values (cache keys, provenance, tables)."""
    if isinstance(cfg, Node):
        return {f.name: to_plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_plain(x) for x in cfg]
    if isinstance(cfg, (np.floating, np.integer)):
        return cfg.item()
    return cfg


def flat(cfg, prefix: str = "") -> dict[str, Any]:
    """Every leaf field as ``{"data.d": 32, ...}`` (the columns a multirun's gathered table carries)."""
    out = {}
    for k, v in (to_plain(cfg) if isinstance(cfg, Node) else cfg).items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if not isinstance(v, list) else str(v)
    return out


def describe(cls_or_node, prefix: str = "") -> list[tuple[str, str, str]]:
    """(field path, default, description) for every leaf field of a config class, for ``--help``. A nested block's
    defaults are the ones its field sets (digits' ``pretrain`` block), not its class's."""
    rows = []
    node = cls_or_node if isinstance(cls_or_node, Node) else None
    for f in dataclasses.fields(cls_or_node):
        if node is not None:
            default = getattr(node, f.name)
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if isinstance(default, Node):
            rows += describe(default, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", repr(to_plain(default)), f.metadata.get("help", "")))
    return rows


# -------------------------------------------------------------------------------------------------- the blocks
IRRELEVANT = ("basis", "random", "random_unit", "correlated")


@config
class Data(Node):
    """Samples of a task (docs/theory.md section 1): P tokens, n_rel label-relevant, n_conf confusion, the rest
    irrelevant patterns; fixed counts per sample, positions shuffled."""

    d: int = field(32, "token dimension")
    P: int = field(20, "tokens per sample")
    n_rel: int = field(4, "label-relevant tokens per sample (delta_* = n_rel / P)")
    n_conf: int = field(2, "confusion tokens per sample (delta_# = n_conf / P); the label is the majority vote")
    sigma: float = field(0.0, "std of Gaussian noise added to every coordinate of every token (0: the paper's "
                         "noise-free data; a token's noise has norm ~ sigma sqrt(d), its pattern norm 1)")
    irrelevant: str = field("basis", "irrelevant patterns v_j: 'basis' (e_3..e_d), 'random' (a random orthonormal "
                            "basis of the task patterns' complement), 'random_unit' (isotropic random unit vectors: "
                            "they overlap each other and mu_T by ~1/sqrt(d)) or 'correlated' (unit vectors with "
                            "v_j . mu_T1 = rho, random off the task patterns otherwise); as many as 'basis' gives")
    rho: float = field(0.0, "irrelevant='correlated': every irrelevant pattern's inner product with mu_T1 (with "
                       "mu_T2: rho alpha), so every irrelevant token carries rho mu_T1 whatever the label")
    classes: int = field(2, "2: the paper's binary task (tokens +-mu_T, hinge loss); K >= 3: K orthonormal class "
                         "patterns per task, n_conf confusion tokens of other classes, Crammer-Singer's multi-class "
                         "hinge loss; class k of T1 and of T2 have inner product alpha")
    label_noise: float = field(0.0, "probability that a training label (fine-tunes and pre-training) is replaced "
                               "by another (the other sign, or a uniformly drawn other class); test sets stay clean")

    def check(self):
        _check.integer("P", self.P, lo=1)
        _check.integer("n_conf", self.n_conf, lo=0)
        _check.integer("n_rel", self.n_rel, lo=1)
        if self.n_rel <= self.n_conf:
            _check.fail("n_rel", self.n_rel, f"must be > n_conf={self.n_conf} (the label is a majority vote)")
        if self.n_rel + self.n_conf > self.P:
            _check.fail("n_rel", self.n_rel, f"n_rel + n_conf must be <= P={self.P}")
        _check.in_range("sigma", self.sigma, lo=0.0)
        if self.irrelevant not in IRRELEVANT:
            _check.fail("irrelevant", self.irrelevant, f"must be one of {IRRELEVANT}")
        _check.in_range("rho", self.rho, -1.0, 1.0, lo_open=True, hi_open=True)
        if self.rho != 0 and self.irrelevant != "correlated":
            _check.fail("rho", self.rho, f"applies to irrelevant='correlated' only (irrelevant={self.irrelevant!r})")
        _check.integer("classes", self.classes, lo=2)
        _check.in_range("label_noise", self.label_noise, 0.0, 0.5, hi_open=True)
        _check.integer("d", self.d, lo=3)

    @property
    def multiclass(self) -> bool:
        """K >= 3 class patterns per task (else the paper's binary +-mu task)."""
        return self.classes > 2

    def pair_dirs(self) -> int:
        """Directions a pair of tasks occupies: e_1, e_2 (binary), or e_1..e_2K (K classes each)."""
        return 2 * self.classes if self.multiclass else 2

    def need_dims(self, n_task_dirs: int) -> None:
        """d must hold the task directions plus at least one irrelevant pattern."""
        if self.d < n_task_dirs + 1:
            _check.fail("d", self.d, f"must be >= {n_task_dirs + 1}: {n_task_dirs} task directions plus at least "
                        "one irrelevant pattern")

    def sampling(self, training: bool = False) -> "Data":
        """This config with the fields its samples do not depend on reset: the static key of the samplers
        sweep.eval_sets (clean test sets) and, with ``training``, sweep.batch_ids (label noise kept), so that data
        options differing only there share one compiled sampler. The irrelevant patterns arrive as an array, so their
        kind and rho never matter; label noise touches training labels only, and training draws ids, which know
        nothing of d (every width of scaling's d axis draws its batches with one program)."""
        return dataclasses.replace(self, irrelevant=Data.irrelevant, rho=Data.rho,
                                   label_noise=self.label_noise if training else Data.label_noise,
                                   d=Data.d if training else self.d)

    def max_distinct(self, M: int) -> int:
        """An upper bound on the distinct tokens of one sample with M irrelevant patterns: +mu and -mu (the label's
        pattern and at most min(n_conf, K - 1) other classes') and at most min(n_irr, M) patterns v_j, or P once
        noise makes every token unique."""
        if self.sigma > 0:
            return self.P
        n_irr = self.P - self.n_rel - self.n_conf
        n_conf = min(self.n_conf, self.classes - 1) if self.multiclass else int(self.n_conf > 0)
        return min(self.P, 1 + n_conf + min(n_irr, M))


FORMS = ("merged", "four")
ARCHS = ("paper", "multihead", "two_layer", "mlp", "cnn", "gnn")


@config
class Model(Node):
    """The network and its Psi_0: the paper's one-layer transformer (docs/theory.md section 2), or, with ``arch``,
    a network beyond it (tvtheory/architectures.py), trained by the same SGD on the hinge loss from its own Psi_0."""

    m: int = field(256, "width of the ReLU layer (the readout a is fixed at +-1/sqrt(m))")
    form: str = field("merged", "'merged': W = W_K^T W_Q and V = W_O W_V trained; 'four': the four matrices")
    sigma_0: float = field(0.01, "std of V_0's entries (of W_O's for the four-matrix form)")
    sigma_w: float = field(0.0, "std of W_0's entries; must be > 0 for the four-matrix form (W_Q = W_K = 0 is a "
                           "saddle)")
    pretrain_tasks: int = field(0, "> 0: Psi_0 is SGD-trained on that many tasks whose tokens avoid the span of "
                                "the tasks under study (the second Psi_0 of docs/theory.md); 0: random Psi_0")
    pretrain_steps: int = field(100, "SGD steps of that pre-training (train.eta and train.batch)")
    arch: str = field("paper", "the network: 'paper' (the one-layer transformer, in ``form``), 'multihead' (heads "
                      "W_h, V_h of m/h units each), 'two_layer' (the paper's block twice, with a residual), 'mlp' "
                      "(attention-free: a^T ReLU(V mean_s x_s)), 'cnn' (a circular 1-D convolution over positions), "
                      "'gnn' (mean aggregation over a ring of positions); each keeps the paper's ReLU, mean over "
                      "positions and fixed readout a (tvtheory/architectures.py)")
    heads: int = field(2, "arch='multihead': attention heads (must divide m; 1 is the paper's model)")
    width: int = field(3, "arch='cnn': kernel width in positions (<= data.P; 1 is a per-token MLP)")
    rounds: int = field(1, "arch='gnn': message-passing rounds, 1 (affine in the weights) or 2 (a hidden layer "
                        "between them)")
    radius: int = field(1, "arch='gnn': each position aggregates the positions within this circular distance "
                        "(itself included)")

    def check(self):
        _check.integer("m", self.m, lo=1)
        if self.form not in FORMS:
            _check.fail("form", self.form, f"must be one of {FORMS}")
        _check.integer("pretrain_steps", self.pretrain_steps, lo=1)
        _check.integer("pretrain_tasks", self.pretrain_tasks, lo=0)
        _check.in_range("sigma_0", self.sigma_0, lo=0.0)
        _check.in_range("sigma_w", self.sigma_w, lo=0.0)
        if self.form == "four" and self.sigma_w <= 0:
            _check.fail("sigma_w", self.sigma_w, "must be > 0 for model.form='four' (W_Q = W_K = 0 never trains)")
        if self.arch not in ARCHS:
            _check.fail("arch", self.arch, f"must be one of {ARCHS}")
        if self.form != "merged" and self.arch != "paper":
            _check.fail("form", self.form, f"the four-matrix form exists for arch='paper' only (arch={self.arch!r})")
        _check.integer("heads", self.heads, lo=1)
        if self.arch == "multihead" and self.m % self.heads:
            _check.fail("heads", self.heads, f"must divide m={self.m} (each head feeds m/h hidden units)")
        _check.integer("width", self.width, lo=1)
        _check.integer("rounds", self.rounds, lo=1, hi=2)
        _check.integer("radius", self.radius, lo=0)

    def need_data(self, task: "Data") -> None:
        """The options that depend on the samples: a window within P, K outputs from m units."""
        if self.arch == "cnn" and self.width > task.P:
            _check.fail("width", self.width, f"must be <= data.P={task.P} (a window longer than the sample would "
                        "wrap onto itself)")
        if task.multiclass:
            if self.m % task.classes:
                _check.fail("m", self.m, f"must be divisible by data.classes={task.classes} (output k reads m/K "
                            "hidden units)")
            if self.pretrain_tasks:
                _check.fail("pretrain_tasks", self.pretrain_tasks, f"pre-training is defined for binary tasks only "
                            f"(data.classes={task.classes})")

    def need_dims(self, d: int, n_task_dirs: int) -> None:
        if self.pretrain_tasks and n_task_dirs + self.pretrain_tasks + 1 > d:
            _check.fail("pretrain_tasks", self.pretrain_tasks, f"too many for data.d={d}: the pre-training "
                        f"patterns and one irrelevant pattern need {self.pretrain_tasks + 1} directions beside the "
                        f"{n_task_dirs} of the tasks under study")


@config
class Train(Node):
    """SGD on the hinge loss (docs/theory.md section 3)."""

    eta: float = field(1.0, "step size")
    batch: int = field(64, "samples per step")
    steps: int = field(300, "SGD steps")
    log_every: int = field(10, "training curve: the batch loss every this many steps")
    n_train: int = field(0, "0: a fresh batch every step (the theorems' online setting); > 0: minibatches of a "
                         "fixed training set of this size")

    def check(self):
        _check.in_range("eta", self.eta, lo=0.0, lo_open=True)
        _check.integer("batch", self.batch, lo=1)
        _check.integer("steps", self.steps, lo=1)
        _check.integer("log_every", self.log_every, lo=1, hi=self.steps)
        _check.integer("n_train", self.n_train, lo=0)

    def pretraining(self, steps: int) -> "Train":
        """Psi_0's pre-training: this step size and batch, ``steps`` steps of fresh samples."""
        return dataclasses.replace(self, steps=steps, log_every=steps, n_train=0)


def grid(lo: float, hi: float, step: float) -> np.ndarray:
    """lo, lo + step, ..., hi (rounded to 6 decimals so that grid values compare and print cleanly)."""
    return np.round(lo + step * np.arange(int(round((hi - lo) / step)) + 1), 6)


MAX_GRID = 1_000_000


def check_grid(names: tuple[str, str, str], lo, hi, step, *, min_points: int = 2) -> int:
    """A [lo, hi] grid with a positive step that lands on hi; returns its number of points."""
    _check.finite(names[0], lo)
    _check.finite(names[1], hi)
    _check.in_range(names[2], step, lo=0.0, lo_open=True)
    if hi < lo:
        _check.fail(names[1], hi, f"must be >= {names[0]}={lo} (grids ascend)")
    n = (hi - lo) / step
    if n > MAX_GRID:
        _check.fail(names[2], step, f"gives {n:.3g} grid points on [{lo:g}, {hi:g}]; at most {MAX_GRID} are allowed")
    if abs(n - round(n)) > 1e-6 * max(1.0, n):
        _check.fail(names[2], step, f"must divide {names[1]} - {names[0]} = {hi - lo:g} (the grid would run past "
                    f"or stop short of {hi:g})")
    if round(n) + 1 < min_points:
        _check.fail(names[1], hi, f"gives {round(n) + 1} grid point(s) from {names[0]}={lo:g}; at least "
                    f"{min_points} are needed")
    return int(round(n)) + 1


def check_ranges(name: str, ranges, n: int | None = None) -> None:
    """A list of [min, max, step] grids (``n`` of them when given)."""
    if n is not None and len(ranges) != n:
        _check.fail(name, _plainlist(ranges), f"needs {n} [min, max, step] (one per source task)")
    for i, r in enumerate(ranges):
        if not isinstance(r, (list, tuple)) or len(r) != 3:
            _check.fail(f"{name}[{i}]", _plainlist(r), "must be [min, max, step]")
        check_grid((f"{name}[{i}][0]", f"{name}[{i}][1]", f"{name}[{i}][2]"), *r)


def _plainlist(x):
    return [_plainlist(v) for v in x] if isinstance(x, (list, tuple)) else x


def check_list(name: str, values, *, min_len: int = 1, unique: bool = True) -> None:
    if len(values) < min_len:
        _check.fail(name, _plainlist(values), f"needs at least {min_len} value(s)")
    if unique and len(set(map(float, values))) != len(values):
        _check.fail(name, _plainlist(values), "must not repeat a value")


@config
class Sweep(Node):
    """The Theorem 1-2 grid: Psi_0 + dPsi_T1 + lambda dPsi_T2 for every alpha, seed and lambda."""

    alphas: List[float] = field(help="the Figure 1 alphas (alpha = mu_T1 . mu_T2)",
                                factory=lambda: [-0.9, -0.5, 0.0, 0.5, 0.9])
    phase_alphas: List[float] = field(help="the phase diagram's alphas; empty for none (the default holds every "
                                      "Figure 1 alpha, so one sweep serves both)",
                                      factory=lambda: [float(round(a, 2)) for a in np.linspace(-1, 1, 21)])
    lam_min: float = field(-2.0, "smallest lambda")
    lam_max: float = field(3.0, "largest lambda")
    lam_step: float = field(0.1, "lambda grid step (must divide lam_max - lam_min)")
    n_test: int = field(2000, "test samples per task")
    chunk: int = field(1, "grid points evaluated at once (memory; 1 is fastest on CPU)")

    def lams(self) -> np.ndarray:
        return grid(self.lam_min, self.lam_max, self.lam_step)

    def all_alphas(self) -> np.ndarray:
        return np.unique(np.round(np.asarray(list(self.alphas) + list(self.phase_alphas), float), 6))

    def check(self):
        check_list("alphas", self.alphas)
        if self.phase_alphas:
            check_list("phase_alphas", self.phase_alphas)
        for name in ("alphas", "phase_alphas"):
            for i, a in enumerate(getattr(self, name)):
                _check.in_range(f"{name}[{i}]", a, -1.0, 1.0)
        check_grid(("lam_min", "lam_max", "lam_step"), self.lam_min, self.lam_max, self.lam_step, min_points=3)
        _check.integer("n_test", self.n_test, lo=1)
        _check.integer("chunk", self.chunk, lo=1)


@config
class Claims(Node):
    """Verdict tolerances, declared before the data are seen (docs/theory.md, 'The rule for verdicts')."""

    eps_learned: float = field(0.05, "a task is learned when its mean hinge loss is <= eps (the theorems' "
                               "Theta(eps)): 5% of the zero predictor's hinge loss of 1")
    forget_loss: float = field(1.0, "forgotten when the hinge loss is >= that of the zero predictor (Theta(1))")
    beta_d: float = field(1.0, "the declared beta of 'Theta(eps) + |lambda| beta' is beta_d / d: the paper's "
                          "simplification beta = Theta(1/d), with constant 1")
    kept_cap: float = field(0.5, "a kept task's hinge loss never exceeds this, whatever eps + |lambda| beta "
                            "(half the zero predictor's)")
    lam_tol: float = field(0.1, "tolerance on a lambda threshold or window edge: one grid step of the default "
                           "grid")
    acc_learned: float = field(0.95, "accuracy view: learned / kept")
    acc_forgotten: float = field(0.55, "accuracy view: forgotten (chance is 0.5)")
    min_seeds: int = field(3, "fewer valid (non-diverged) seeds than this make a verdict 'inconclusive'")
    min_test: int = field(1000, "fewer test samples per task than this make every verdict 'inconclusive' (a smoke "
                          "configuration)")
    chance_acc: float = field(0.6, "a fine-tune whose accuracy on its own task is at most this is treated like a "
                              "diverged one (its seed is left out)")
    spread_k: float = field(1.0, "a margin counts only beyond this many seed standard deviations of the "
                            "quantity; inside, the verdict is 'inconclusive'")

    def check(self):
        _check.in_range("eps_learned", self.eps_learned, 0.0, 1.0, lo_open=True, hi_open=True)
        _check.in_range("forget_loss", self.forget_loss, lo=0.0, lo_open=True)
        _check.in_range("beta_d", self.beta_d, lo=0.0)
        _check.in_range("kept_cap", self.kept_cap, self.eps_learned, self.forget_loss, hi_open=True)
        _check.in_range("lam_tol", self.lam_tol, lo=0.0)
        _check.in_range("acc_learned", self.acc_learned, 0.5, 1.0)
        _check.in_range("acc_forgotten", self.acc_forgotten, 0.0, 1.0)
        _check.integer("min_seeds", self.min_seeds, lo=1)
        _check.integer("min_test", self.min_test, lo=1)
        _check.in_range("chance_acc", self.chance_acc, 0.0, 1.0)
        _check.in_range("spread_k", self.spread_k, lo=0.0)

    def beta(self, d: int) -> float:
        return self.beta_d / d


@config
class Cache(Node):
    dir: Optional[str] = field(".cache/tvtheory", "Psi_0, fine-tunes and evaluated cells; null: no cache")
    refresh: bool = field(False, "recompute everything (and overwrite the cached entries)")


@config
class Budget(Node):
    """Limits checked against an estimate from the config before any compute (raise them to run larger)."""

    max_memory_gb: float = field(16.0, "refuse a run whose estimated peak memory exceeds this")
    max_minutes: float = field(240.0, "refuse a run whose estimated time on 2 CPU cores exceeds this")

    def check(self):
        _check.in_range("max_memory_gb", self.max_memory_gb, lo=0.0, lo_open=True)
        _check.in_range("max_minutes", self.max_minutes, lo=0.0, lo_open=True)


@config
class Run(Node):
    """What every experiment has: seeds, where results go, XLA's threads, the cache and the budget."""

    seed: int = field(0, "base seed: seed index s uses fold_in(key(seed), s)")
    n_seeds: int = field(5, "seeds (>= claims.min_seeds for a conclusive verdict)")
    out_dir: Optional[str] = field(None, "result folder; null: the Hydra job's output folder")
    threads: Optional[int] = field(None, "CPUs this process runs on (null: all; at most those it may run on): a run "
                                   "takes the first this many, job j of a parallel launcher the j-th block (a worker "
                                   "keeps its first job's)")
    cache: Cache = field(Cache(), "the cache of stages")
    budget: Budget = field(Budget(), "limits on the estimated cost")
    figures: bool = field(True, "draw the figures; false: tables and verdicts only (`python -m tvtheory.plots DIR` "
                          "draws them later from the tables)")

    def check(self):
        _check.integer("seed", self.seed, lo=0)
        _check.integer("n_seeds", self.n_seeds, lo=1, hi=10_000)
        if self.threads is not None:
            _check.integer("threads", self.threads, lo=1)


@config
class Synthetic(Run):
    """The experiments on the paper's synthetic tasks: data, model, training and verdict tolerances."""

    data: Data = field(Data(), "the task samples")
    model: Model = field(Model(), "the model and its Psi_0")
    train: Train = field(Train(), "fine-tuning")
    claims: Claims = field(Claims(), "verdict tolerances")

    def check(self):
        super().check()
        _prefixed("data", self.data.need_dims, self.n_task_dirs())
        _prefixed("model", self.model.need_dims, self.data.d, self.n_task_dirs())
        _prefixed("model", self.model.need_data, self.data)
        if self.data.multiclass and any(isinstance(getattr(self, f.name), OOD) for f in dataclasses.fields(self)):
            _check.fail("data.classes", self.data.classes, "Theorem 3's target is defined for binary tasks only (2)")

    def n_task_dirs(self) -> int:
        """Directions the tasks under study occupy (a pair: e_1, e_2; e_1..e_2K for K-class tasks)."""
        return self.data.pair_dirs()


def _prefixed(prefix: str, fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ValueError as e:
        raise ValueError(f"{prefix}.{e}") from None


def check_ood_target(gammas: list, kappa: float | None) -> float:
    """Theorem 3's target: gammas finite and not all zero, sum gamma_i^2 + kappa^2 = 1. Returns kappa."""
    for i, g in enumerate(gammas):
        _check.finite(f"gammas[{i}]", g)
    if not any(g != 0 for g in gammas):
        _check.fail("gammas", list(gammas), "must not be all zero (Theorem 3)")
    sq = sum(g * g for g in gammas)
    if sq > 1.0 + 1e-9:
        _check.fail("gammas", list(gammas), f"sum of squares {sq:.4g} must be <= 1")
    if kappa is None:
        return max(1.0 - sq, 0.0) ** 0.5
    _check.finite("kappa", kappa)
    if abs(sq + kappa**2 - 1.0) > 1e-6:
        _check.fail("kappa", kappa, f"sum gamma_i^2 + kappa^2 must be 1 (sum gamma_i^2 = {sq:.4g})")
    return kappa


@config
class OOD(Node):
    """Theorem 3: sources mu_Ti = e_i, target mu_T' = sum_i gamma_i mu_Ti + kappa mu_perp, a coefficient grid."""

    gammas: List[float] = field(help="the target's coefficients on the sources (the paper's Colored-MNIST estimate, "
                                "normalised)", factory=lambda: [0.75, -0.6])
    kappa: Optional[float] = field(None, "the target's component outside the sources; null: sqrt(1 - sum gamma^2)")
    ranges: List[Any] = field(help="[min, max, step] of lambda_i per source", factory=lambda: [[-2.0, 3.0, 0.1],
                                                                                              [-2.0, 2.0, 0.1]])
    n_test: int = field(2000, "test samples of T'")
    n_val: int = field(500, "validation samples of T' (the best point is chosen on them, reported on test)")
    chunk: int = field(1, "grid points evaluated at once")
    c: float = field(0.5, "the theorem's c in (0, 1), declared: tau = 1 + c and |lambda_i| beta <= c (the middle of "
                     "the interval the theorem allows)")
    precision_min: float = field(0.95, "thm3.region passes when at least this fraction of the theorem's region "
                                 "succeeds (5% for grid points at the region's edge)")

    def check(self):
        if len(self.gammas) == 0:
            _check.fail("gammas", list(self.gammas), "must hold at least one coefficient")
        check_ood_target(list(self.gammas), self.kappa)
        check_ranges("ranges", self.ranges, len(self.gammas))
        points = math.prod(len(grid(*r)) for r in self.ranges)
        if points > MAX_GRID:
            _check.fail("ranges", _plainlist(self.ranges), f"make a grid of {points} points; at most {MAX_GRID} "
                        "are allowed")
        _check.integer("n_test", self.n_test, lo=1)
        _check.integer("n_val", self.n_val, lo=1)
        _check.integer("chunk", self.chunk, lo=1)
        _check.in_range("c", self.c, 0.0, 1.0, lo_open=True, hi_open=True)
        _check.in_range("precision_min", self.precision_min, 0.0, 1.0)

    def n_task_dirs(self) -> int:
        """The sources and mu_perp."""
        return len(self.gammas) + 1
