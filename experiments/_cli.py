"""What every experiment entry point shares: config registration, validation before compute, the output folder."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from tvtheory import config, results

logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" notice on every run
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
config.register_configs()


def validated(cfg):
    """The typed, validated config; a bad value exits with one line naming the field (status 2), before compute."""
    try:
        return config.to_dataclass(cfg)
    except ValueError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)


def out_dir(c) -> Path:
    """``out_dir`` from the config, else the Hydra job's output directory (each multirun job has its own)."""
    if c.out_dir:
        return Path(c.out_dir)
    from hydra.core.hydra_config import HydraConfig
    return Path(HydraConfig.get().runtime.output_dir)


def save_run(out: Path, cfg, started: float, seeds: list[int]) -> None:
    results.write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    results.write_json(out / "provenance.json",
                       results.provenance(OmegaConf.to_container(cfg, resolve=True), started, seeds))


def now() -> float:
    os.environ.setdefault("XLA_FLAGS", "")
    return time.time()
