"""What every experiment entry point shares: config registration, validation before compute, the output folder."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from tvtheory import config

logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" notice on every run
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# A launcher that runs each job in a fresh interpreter from a pickle (submitit: locally, or through sbatch, which
# exports the submitting environment) must be able to import this module, which the entry points' code refers to.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_HERE, os.environ.get("PYTHONPATH")) if p)
config.register_configs()


def run(main) -> None:
    """Call a @hydra.main function; a composition error (unknown key, wrong type, missing option) becomes one
    line on stderr and exit status 2, like the validator's errors. Errors inside the experiment keep their trace."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ["HYDRA_FULL_ERROR"] = "1"           # let composition errors reach us instead of Hydra's report
    try:
        main()
    except (HydraException, OmegaConfBaseException) as e:
        print(f"config error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)


def _one_line(e: Exception) -> str:
    cause = e.__cause__
    if cause is not None and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {str(getattr(cause, 'msg', cause)).splitlines()[0]}"
    text = str(e).split("Config search path")[0]
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def store(c):
    from tvtheory import cache

    return cache.Store(c.cache.dir, refresh=c.cache.refresh) if c.cache.dir else cache.NoStore()


def setup_of(c, model=None):
    """The static sweep setup (shapes, Psi_0, sampler, SGD) of a validated config, with ``model`` (a ModelConfig)
    in place of ``c.model`` if given."""
    from tvtheory import sweep

    m = model or c.model
    return sweep.Setup(c.data.d, m.m, c.data.task_spec(), c.train.spec(), m.form, m.sigma_0, m.sigma_w,
                       c.data.irrelevant == "random", m.pretrain_tasks, m.pretrain_steps)


def config_point(c, model=None) -> dict:
    """The config values a multirun varies, as constant columns of a result table (report.gather keys on them);
    ``model`` (a ModelConfig) in place of ``c.model`` if given."""
    m = model or c.model
    pretrain = {"pretrain_tasks": m.pretrain_tasks, "pretrain_steps": m.pretrain_steps} if m.pretrain_tasks else {}
    return {"d": c.data.d, "m": m.m, "P": c.data.P, "n_rel": c.data.n_rel, "n_conf": c.data.n_conf,
            "sigma": c.data.sigma, "form": m.form, **pretrain}


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} {Path(sys.argv[0]).stem}] {msg}", file=sys.stderr, flush=True)


def validated(cfg):
    """The typed, validated config; a bad value exits with one line naming the field (status 2), before compute."""
    try:
        c = config.to_dataclass(cfg)
    except ValueError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    cache_dir = getattr(getattr(c, "cache", None), "dir", None)
    if cache_dir:
        # Compiled programs are kept beside the results cache: a rerun, or another experiment with the same shapes,
        # skips XLA compilation (seconds per program on 2 cores). Must also precede JAX's import.
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(cache_dir) / "xla"))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    if c.threads:
        # Must precede JAX's import (the experiments import it only after validation); a launcher that reuses a
        # worker process keeps the first job's setting, which is the same for every job of a sweep.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   f"intra_op_parallelism_threads={c.threads}").strip()
    return c


def out_dir(c) -> Path:
    """``out_dir`` from the config, else the Hydra job's output directory (each multirun job has its own)."""
    if c.out_dir:
        return Path(c.out_dir)
    from hydra.core.hydra_config import HydraConfig
    return Path(HydraConfig.get().runtime.output_dir)


def save_run(out: Path, cfg, started: float, seeds: list[int]) -> None:
    from tvtheory import results

    results.write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    results.write_json(out / "provenance.json",
                       results.provenance(OmegaConf.to_container(cfg, resolve=True), started, seeds))


def check_divergence(finite, what: str) -> None:
    """Some runs diverged: say so (their rows are marked and left out); all of them: stop before writing."""
    import numpy as np

    finite = np.asarray(finite)
    n_bad = int(finite.size - finite.sum())
    if n_bad == finite.size:
        print(f"error: every {what} diverged (non-finite loss or parameters); lower train.eta. Nothing was written.",
              file=sys.stderr)
        sys.exit(3)
    if n_bad:
        progress(f"warning: {n_bad} of {finite.size} {what}s diverged; their rows are marked diverged=True and left "
                 "out of every verdict and figure")
