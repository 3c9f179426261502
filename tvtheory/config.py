"""Structured configs: one dataclass per concern, mirrored by conf/ (data/, model/, train/, sweep/, claims/).

Types come from the dataclasses (OmegaConf rejects unknown keys and wrong types); ``validate`` checks ranges and
cross-field rules and raises ``ValueError("<field.path>=<value>: <what is allowed>")`` before anything is compiled.
Hydra itself is imported only by ``register_configs`` so the rest of the library stays Hydra-free.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from tvtheory import _check
from tvtheory.specs import TaskSpec, TrainSpec, check_shape


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
        n = int(round((self.lam_max - self.lam_min) / self.lam_step)) + 1
        return np.round(self.lam_min + self.lam_step * np.arange(n), 6)

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
class ArithmeticConfig:
    seed: int = 0
    n_seeds: int = 5
    out_dir: Optional[str] = None          # None: the Hydra job's output directory
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


SCHEMAS = {"arithmetic": ArithmeticConfig}


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


def validate(cfg: ArithmeticConfig) -> None:
    """Range and cross-field checks; the first violation raises a one-line ValueError naming the field."""
    _check.integer("seed", cfg.seed, lo=0)
    _check.integer("n_seeds", cfg.n_seeds, lo=1)
    _validate_data(cfg.data, n_task_dirs=2)
    _validate_model(cfg.model)
    _validate_train(cfg.train)
    _validate_sweep(cfg.sweep)
    _validate_claims(cfg.claims)


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


def _validate_model(c: ModelConfig) -> None:
    _prefixed("model", check_shape, 1, c.m, c.form)
    _check.in_range("model.sigma_0", c.sigma_0, lo=0.0)
    _check.in_range("model.sigma_w", c.sigma_w, lo=0.0)
    if c.form == "four" and c.sigma_w <= 0:
        _check.fail("model.sigma_w", c.sigma_w, "must be > 0 for model.form='four' (W_Q = W_K = 0 never trains)")


def _validate_train(c: TrainConfig) -> None:
    _prefixed("train", c.spec().validate)


def _validate_sweep(c: SweepConfig) -> None:
    if len(c.alphas) == 0:
        _check.fail("sweep.alphas", list(c.alphas), "must hold at least one alpha")
    for name in ("alphas", "phase_alphas"):
        for i, a in enumerate(getattr(c, name)):
            _check.in_range(f"sweep.{name}[{i}]", a, -1.0, 1.0)
    _check.finite("sweep.lam_min", c.lam_min)
    _check.finite("sweep.lam_max", c.lam_max)
    _check.in_range("sweep.lam_step", c.lam_step, lo=0.0, lo_open=True)
    if c.lam_max < c.lam_min:
        _check.fail("sweep.lam_max", c.lam_max, f"must be >= sweep.lam_min={c.lam_min} (grids ascend)")
    _check.integer("sweep.n_test", c.n_test, lo=1)
    _check.integer("sweep.chunk", c.chunk, lo=1)


def _validate_claims(c: ClaimsConfig) -> None:
    _check.in_range("claims.eps_learned", c.eps_learned, 0.0, 1.0, lo_open=True, hi_open=True)
    _check.in_range("claims.forget_loss", c.forget_loss, lo=0.0, lo_open=True)
    _check.in_range("claims.kept_cap", c.kept_cap, c.eps_learned, c.forget_loss, hi_open=True)
    _check.in_range("claims.lam_tol", c.lam_tol, lo=0.0)
    _check.in_range("claims.acc_learned", c.acc_learned, 0.5, 1.0)
    _check.in_range("claims.acc_forgotten", c.acc_forgotten, 0.0, 1.0)
