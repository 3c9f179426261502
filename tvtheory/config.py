"""Structured configs: one dataclass per concern, mirrored by conf/ (data/, model/, train/, sweep/, claims/).

Types come from the dataclasses (OmegaConf rejects unknown keys and wrong types); ``validate`` checks ranges and
cross-field rules and raises ``ValueError("<field.path>=<value>: <what is allowed>")`` before anything is compiled.
Hydra itself is imported only by ``register_configs`` so the rest of the library stays Hydra-free.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from tvtheory import _check
from tvtheory.specs import TaskSpec, TrainSpec, check_grid, check_ood_target, check_shape, grid


@dataclass
class DataConfig:
    d: int = 32
    P: int = 20
    n_rel: int = 4
    n_conf: int = 2
    sigma: float = 0.0
    irrelevant: str = "basis"           # "basis": e_3..e_d; "random": random orthonormal basis of the complement

    def task_spec(self) -> TaskSpec:
        return TaskSpec(self.P, self.n_rel, self.n_conf, self.sigma)


@dataclass
class ModelConfig:
    m: int = 256
    form: str = "merged"                # "merged" (W, V) or "four" (W_Q, W_K, W_V, W_O)
    sigma_0: float = 0.01               # std of V_0 (Psi_0)
    sigma_w: float = 0.0                # std of W_0; must be > 0 for the four-matrix form
    # The second Psi_0 of theory.md: pre-trained (train.eta, train.batch) on this many tasks whose tokens avoid the
    # span of the tasks under study; 0: Psi_0 is the random initialisation.
    pretrain_tasks: int = 0
    pretrain_steps: int = 100


@dataclass
class TrainConfig:
    eta: float = 1.0
    batch: int = 64
    steps: int = 300
    log_every: int = 10
    n_train: int = 0                    # 0: a fresh batch every step

    def spec(self) -> TrainSpec:
        return TrainSpec(self.eta, self.batch, self.steps, self.log_every, self.n_train)


@dataclass
class SweepConfig:
    alphas: List[float] = field(default_factory=lambda: [-0.9, -0.5, 0.0, 0.5, 0.9])
    # The phase diagram's alpha grid; empty for none. The default holds every value of ``alphas``, so one sweep
    # serves both the Figure 1 table and the phase diagram.
    phase_alphas: List[float] = field(default_factory=lambda: [float(round(a, 2)) for a in np.linspace(-1, 1, 21)])
    lam_min: float = -2.0
    lam_max: float = 3.0
    lam_step: float = 0.1
    n_test: int = 2000
    chunk: int = 1                      # grid points evaluated at once (memory; 1 is fastest on CPU)

    def lams(self) -> np.ndarray:
        return grid(self.lam_min, self.lam_max, self.lam_step)

    def all_alphas(self) -> np.ndarray:
        return np.unique(np.round(np.asarray(list(self.alphas) + list(self.phase_alphas), float), 6))


@dataclass
class ClaimsConfig:
    eps_learned: float = 0.05           # a task is learned when its mean hinge loss is <= eps (Theta(eps))
    forget_loss: float = 1.0            # forgotten when the hinge loss is >= that of the zero predictor (Theta(1))
    kept_cap: float = 0.5               # a kept task's hinge loss never exceeds this, whatever eps + |lambda| beta
    lam_tol: float = 0.1                # tolerance on lambda*(alpha) - (1 - alpha): one grid step
    acc_learned: float = 0.95           # accuracy view: learned / kept
    acc_forgotten: float = 0.55         # accuracy view: forgotten (chance is 0.5)


@dataclass
class CacheConfig:
    dir: Optional[str] = ".cache/tvtheory"   # Psi_0, fine-tunes and evaluated cells; null: no cache
    refresh: bool = False                   # recompute everything (and overwrite the cached entries)


@dataclass
class RunBase:
    """What every experiment has: seeds, where results go, XLA's threads."""

    seed: int = 0
    n_seeds: int = 5
    out_dir: Optional[str] = None          # None: the Hydra job's output directory
    threads: Optional[int] = None          # cores for XLA in this process (None: all); for parallel launchers


@dataclass
class RunConfig(RunBase):
    """The synthetic-task experiments add the data, the model and its training, verdict rules and the cache."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


@dataclass
class ArithmeticConfig(RunConfig):
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass
class AssumptionsConfig(RunBase):
    """Theorems 1-2 once per model option of conf/model/ (the first is the reference); no ``model`` of its own."""

    models: List[str] = field(default_factory=lambda: ["merged", "pretrained", "four"])
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


MODEL_OPTIONS = Path(__file__).resolve().parent.parent / "conf" / "model"


def model_option(name: str) -> ModelConfig:
    """The ModelConfig of conf/model/<name>.yaml; an unknown name raises a one-line ValueError listing the options."""
    from omegaconf import OmegaConf

    path = MODEL_OPTIONS / f"{name}.yaml"
    if not isinstance(name, str) or "/" in name or not path.is_file():
        options = ", ".join(sorted(p.stem for p in MODEL_OPTIONS.glob("*.yaml")))
        raise ValueError(f"{name!r}: no conf/model/{name}.yaml (options: {options})")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path)))


@dataclass
class OODGridConfig:
    gammas: List[float] = field(default_factory=lambda: [0.75, -0.6])   # mu_T' = sum gamma_i mu_Ti + kappa mu_perp
    kappa: Optional[float] = None                                     # None: unit norm
    ranges: List[Any] = field(default_factory=lambda: [[-2.0, 3.0, 0.1], [-2.0, 2.0, 0.1]])  # per source
    n_test: int = 2000
    chunk: int = 1
    iou_min: float = 0.8                # thm3.region passes at this IoU


@dataclass
class OODConfig(RunConfig):
    ood: OODGridConfig = field(default_factory=OODGridConfig)


@dataclass
class CorollaryGridConfig:
    ranks: List[int] = field(default_factory=lambda: [1])                 # rank-r task vectors re-checked
    spectrum_ranks: List[int] = field(default_factory=lambda: [1, 2, 4])  # truncation errors reported (and full)
    prune: List[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 0.9, 0.95])  # fractions of dV rows removed
    prune_min: float = 0.5              # cor2.pruning_keeps passes if pruning this fraction keeps every verdict
    two_groups_ratio: float = 10.0      # cor2.two_groups: large-group / small-group mean row norm (~1/eps)
    n_test: int = 1000                  # test samples per task for the re-checks


@dataclass
class CorollariesConfig(RunConfig):
    sweep: SweepConfig = field(default_factory=SweepConfig)
    ood: OODGridConfig = field(default_factory=OODGridConfig)
    corollaries: CorollaryGridConfig = field(default_factory=CorollaryGridConfig)


@dataclass
class ScalingGridConfig:
    ds: List[int] = field(default_factory=lambda: [16, 32, 64, 128])     # beta against d ...
    ms: List[int] = field(default_factory=lambda: [64, 256, 1024])       # ... and m (the fit uses model.m)
    lam_min: float = -2.0
    lam_max: float = 2.0
    lam_step: float = 0.2
    n_test: int = 1000
    n_rels: List[int] = field(default_factory=lambda: [2, 3, 4, 6, 8])   # delta_* = n_rel / P for convergence
    conv_n_conf: int = 1
    conv_steps: int = 600
    conv_window: int = 10               # steps averaged before comparing the training loss with eps
    exponent_tol: float = 0.5           # |fitted exponent - predicted| allowed

    def lams(self) -> np.ndarray:
        return grid(self.lam_min, self.lam_max, self.lam_step)


@dataclass
class ScalingConfig(RunConfig):
    scaling: ScalingGridConfig = field(default_factory=ScalingGridConfig)


@dataclass
class ViTConfig:
    patch: int = 2
    dim: int = 32
    depth: int = 1
    heads: int = 2


@dataclass
class OptConfig:
    steps: int = 60
    batch: int = 64
    lr: float = 1e-3


@dataclass
class DigitsTasksConfig:
    # [P(red | odd), P(red | even)] per task; T1 and its partners of each relation.
    T1: List[float] = field(default_factory=lambda: [0.9, 0.1])
    irrelevant: List[float] = field(default_factory=lambda: [0.5, 0.5])
    aligned: List[float] = field(default_factory=lambda: [0.8, 0.2])
    contradictory: List[float] = field(default_factory=lambda: [0.1, 0.9])
    target: List[float] = field(default_factory=lambda: [1.0, 0.0])      # T' of the out-of-domain check


@dataclass
class DigitsClaimsConfig:
    kept_drop: float = 0.05             # kept / learned: accuracy within this of the task's own fine-tuned model
    forget_acc: float = 0.6             # forgotten: accuracy at most this (chance is 0.5)


@dataclass
class DigitsConfig(RunBase):
    split_seed: int = 0
    vit: ViTConfig = field(default_factory=ViTConfig)
    pretrain: OptConfig = field(default_factory=lambda: OptConfig(steps=400, batch=128, lr=3e-3))
    finetune: OptConfig = field(default_factory=OptConfig)
    tasks: DigitsTasksConfig = field(default_factory=DigitsTasksConfig)
    lam_min: float = -2.0
    lam_max: float = 3.0
    lam_step: float = 0.1
    ood_ranges: List[Any] = field(default_factory=lambda: [[-2.0, 3.0, 0.2], [-2.0, 2.0, 0.2]])
    claims: DigitsClaimsConfig = field(default_factory=DigitsClaimsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def lams(self) -> np.ndarray:
        return grid(self.lam_min, self.lam_max, self.lam_step)


SCHEMAS = {"digits": DigitsConfig, "arithmetic": ArithmeticConfig, "ood": OODConfig, "corollaries": CorollariesConfig,
           "scaling": ScalingConfig, "assumptions": AssumptionsConfig}


def register_configs() -> None:
    """Store each experiment's schema as ``<name>_schema`` in Hydra's ConfigStore (conf/<name>.yaml extends it)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=node)


def to_dataclass(cfg):
    """An OmegaConf config (or a dataclass) as the typed dataclass, validated."""
    if not dataclasses.is_dataclass(cfg):
        from omegaconf import OmegaConf
        schema = OmegaConf.get_type(cfg)
        if dataclasses.is_dataclass(schema):
            _reject_unknown(OmegaConf.to_container(cfg), schema, "")
        cfg = OmegaConf.to_object(cfg)
    validate(cfg)
    return cfg


def _reject_unknown(node: dict, schema, prefix: str) -> None:
    """Keys added with ``+key=value`` survive composition but are silently dropped by to_object: refuse them."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for k, v in node.items():
        if k not in fields:
            _check.fail(f"{prefix}{k}", v, f"unknown key; {prefix.rstrip('.') or 'the config'} has "
                        f"{', '.join(sorted(fields))}")
        sub = fields[k].default_factory() if callable(fields[k].default_factory) else None
        if isinstance(v, dict) and dataclasses.is_dataclass(sub):
            _reject_unknown(v, type(sub), f"{prefix}{k}.")


def validate(cfg) -> None:
    """Range and cross-field checks; the first violation raises a one-line ValueError naming the field."""
    _check.integer("seed", cfg.seed, lo=0)
    _check.integer("n_seeds", cfg.n_seeds, lo=1)
    if cfg.threads is not None:
        _check.integer("threads", cfg.threads, lo=1)
    if isinstance(cfg, DigitsConfig):
        return _validate_digits(cfg)
    n_dirs = len(cfg.ood.gammas) + 1 if hasattr(cfg, "ood") else 2     # sources + mu_perp, or the pair's e_1, e_2
    _validate_data(cfg.data, n_task_dirs=n_dirs)
    if isinstance(cfg, AssumptionsConfig):
        _validate_models(cfg.models, cfg.data.d)
    else:
        _validate_model(cfg.model, cfg.data.d, n_task_dirs=n_dirs)
    _validate_train(cfg.train)
    if hasattr(cfg, "sweep"):
        _validate_sweep(cfg.sweep)
    if hasattr(cfg, "ood"):
        _validate_ood(cfg.ood)
    if hasattr(cfg, "scaling"):
        _validate_scaling(cfg.scaling, cfg.data.P, cfg.model.pretrain_tasks)
    if hasattr(cfg, "corollaries"):
        _validate_corollaries(cfg.corollaries, cfg.data.d, cfg.model.m)
    _validate_claims(cfg.claims)


def _validate_ranges(name: str, ranges) -> None:
    for i, r in enumerate(ranges):
        if len(r) != 3:
            _check.fail(f"{name}[{i}]", list(r), "must be [min, max, step]")
        check_grid((f"{name}[{i}][0]", f"{name}[{i}][1]", f"{name}[{i}][2]"), *r)


def _validate_digits(c: DigitsConfig) -> None:
    from tvtheory.digits import ColorRule

    _check.integer("split_seed", c.split_seed, lo=0)
    if c.vit.patch not in (1, 2, 4, 8):
        _check.fail("vit.patch", c.vit.patch, "must divide 8 (1, 2, 4 or 8)")
    _check.integer("vit.dim", c.vit.dim, lo=1)
    _check.integer("vit.depth", c.vit.depth, lo=1)
    _check.integer("vit.heads", c.vit.heads, lo=1)
    if c.vit.dim % c.vit.heads:
        _check.fail("vit.heads", c.vit.heads, f"must divide vit.dim={c.vit.dim}")
    for name in ("pretrain", "finetune"):
        o = getattr(c, name)
        _check.integer(f"{name}.steps", o.steps, lo=1)
        _check.integer(f"{name}.batch", o.batch, lo=1)
        _check.in_range(f"{name}.lr", o.lr, lo=0.0, lo_open=True)
    for name in ("T1", "irrelevant", "aligned", "contradictory", "target"):
        rule = getattr(c.tasks, name)
        if len(rule) != 2:
            _check.fail(f"tasks.{name}", list(rule), "must be [P(red | odd), P(red | even)]")
        ColorRule(*rule).validate(f"tasks.{name}")
    check_grid(("lam_min", "lam_max", "lam_step"), c.lam_min, c.lam_max, c.lam_step)
    if len(c.ood_ranges) != 2:
        _check.fail("ood_ranges", [list(r) for r in c.ood_ranges], "needs two [min, max, step]: T1 and T2")
    _validate_ranges("ood_ranges", c.ood_ranges)
    _check.in_range("claims.kept_drop", c.claims.kept_drop, 0.0, 1.0)
    _check.in_range("claims.forget_acc", c.claims.forget_acc, 0.0, 1.0)


def _validate_scaling(c: ScalingGridConfig, P: int, pretrain_tasks: int = 0) -> None:
    for i, d in enumerate(c.ds):
        _check.integer(f"scaling.ds[{i}]", d, lo=3 + pretrain_tasks)       # e_1, e_2, pre-training, 1 irrelevant
    for i, m in enumerate(c.ms):
        _check.integer(f"scaling.ms[{i}]", m, lo=1)
    if len(c.ds) < 2:
        _check.fail("scaling.ds", list(c.ds), "needs at least two values to fit an exponent")
    if len(c.n_rels) < 2:
        _check.fail("scaling.n_rels", list(c.n_rels), "needs at least two values to fit an exponent")
    check_grid(("scaling.lam_min", "scaling.lam_max", "scaling.lam_step"), c.lam_min, c.lam_max, c.lam_step)
    if not (c.lam_min < 0 < c.lam_max):
        _check.fail("scaling.lam_min", c.lam_min, "the grid must hold lambdas < 0 and > 0 (beta on both sides)")
    for i, n in enumerate(c.n_rels):
        _prefixed(f"scaling.n_rels[{i}]", TaskSpec(P, n, c.conv_n_conf).validate)
    _check.integer("scaling.n_test", c.n_test, lo=1)
    _check.integer("scaling.conv_steps", c.conv_steps, lo=2)
    _check.integer("scaling.conv_window", c.conv_window, lo=1, hi=c.conv_steps)
    _check.in_range("scaling.exponent_tol", c.exponent_tol, lo=0.0)


def _validate_corollaries(c: CorollaryGridConfig, d: int, m: int) -> None:
    for name in ("ranks", "spectrum_ranks"):
        for i, r in enumerate(getattr(c, name)):
            _check.integer(f"corollaries.{name}[{i}]", r, lo=1, hi=min(d, m))
    for i, f in enumerate(c.prune):
        _check.in_range(f"corollaries.prune[{i}]", f, 0.0, 1.0, hi_open=True)
    _check.in_range("corollaries.prune_min", c.prune_min, 0.0, 1.0, hi_open=True)
    _check.in_range("corollaries.two_groups_ratio", c.two_groups_ratio, lo=1.0)
    _check.integer("corollaries.n_test", c.n_test, lo=1)


def _validate_ood(c: OODGridConfig) -> None:
    if len(c.gammas) == 0:
        _check.fail("ood.gammas", list(c.gammas), "must hold at least one coefficient")
    _prefixed("ood", check_ood_target, list(c.gammas), c.kappa)
    if len(c.ranges) != len(c.gammas):
        _check.fail("ood.ranges", [list(r) for r in c.ranges], f"needs one [min, max, step] per source task "
                    f"({len(c.gammas)} gammas)")
    _validate_ranges("ood.ranges", c.ranges)
    _check.integer("ood.n_test", c.n_test, lo=1)
    _check.integer("ood.chunk", c.chunk, lo=1)
    _check.in_range("ood.iou_min", c.iou_min, 0.0, 1.0)


def _prefixed(prefix: str, fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ValueError as e:
        raise ValueError(f"{prefix}.{e}") from None


def _validate_data(c: DataConfig, n_task_dirs: int) -> None:
    _prefixed("data", TaskSpec(c.P, c.n_rel, c.n_conf, c.sigma).validate)
    if c.irrelevant not in ("basis", "random"):
        _check.fail("data.irrelevant", c.irrelevant, "must be 'basis' or 'random'")
    if _check.integer("data.d", c.d, lo=1) < n_task_dirs + 1:
        _check.fail("data.d", c.d, f"must be >= {n_task_dirs + 1}: {n_task_dirs} task directions plus at least one "
                    "irrelevant pattern")


def _validate_model(c: ModelConfig, d: int, n_task_dirs: int) -> None:
    _prefixed("model", check_shape, 1, c.m, c.form)
    _check.integer("model.pretrain_steps", c.pretrain_steps, lo=1)
    if _check.integer("model.pretrain_tasks", c.pretrain_tasks, lo=0):
        if n_task_dirs + c.pretrain_tasks + 1 > d:
            _check.fail("model.pretrain_tasks", c.pretrain_tasks, f"too many for data.d={d}: the pre-training "
                        f"patterns and one irrelevant pattern need {c.pretrain_tasks + 1} directions beside the "
                        f"{n_task_dirs} of the tasks under study")
    _check.in_range("model.sigma_0", c.sigma_0, lo=0.0)
    _check.in_range("model.sigma_w", c.sigma_w, lo=0.0)
    if c.form == "four" and c.sigma_w <= 0:
        _check.fail("model.sigma_w", c.sigma_w, "must be > 0 for model.form='four' (W_Q = W_K = 0 never trains)")


def _validate_models(names: list, d: int) -> None:
    if len(names) < 2:
        _check.fail("models", list(names), "needs a reference and at least one model to compare with it")
    if len(set(names)) != len(names):
        _check.fail("models", list(names), "must not repeat a model")
    for i, name in enumerate(names):
        try:
            m = model_option(name)
        except ValueError as e:
            raise ValueError(f"models[{i}]={e}") from None
        try:
            _validate_model(m, d, n_task_dirs=2)
        except ValueError as e:
            raise ValueError(f"models[{i}]={name!r} (conf/model/{name}.yaml): {e}") from None


def _validate_train(c: TrainConfig) -> None:
    _prefixed("train", c.spec().validate)


def _validate_sweep(c: SweepConfig) -> None:
    if len(c.alphas) == 0:
        _check.fail("sweep.alphas", list(c.alphas), "must hold at least one alpha")
    for name in ("alphas", "phase_alphas"):
        for i, a in enumerate(getattr(c, name)):
            _check.in_range(f"sweep.{name}[{i}]", a, -1.0, 1.0)
    check_grid(("sweep.lam_min", "sweep.lam_max", "sweep.lam_step"), c.lam_min, c.lam_max, c.lam_step)
    _check.integer("sweep.n_test", c.n_test, lo=1)
    _check.integer("sweep.chunk", c.chunk, lo=1)


def _validate_claims(c: ClaimsConfig) -> None:
    _check.in_range("claims.eps_learned", c.eps_learned, 0.0, 1.0, lo_open=True, hi_open=True)
    _check.in_range("claims.forget_loss", c.forget_loss, lo=0.0, lo_open=True)
    _check.in_range("claims.kept_cap", c.kept_cap, c.eps_learned, c.forget_loss, hi_open=True)
    _check.in_range("claims.lam_tol", c.lam_tol, lo=0.0)
    _check.in_range("claims.acc_learned", c.acc_learned, 0.5, 1.0)
    _check.in_range("claims.acc_forgotten", c.acc_forgotten, 0.0, 1.0)
