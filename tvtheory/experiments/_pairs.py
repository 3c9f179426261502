"""What the experiments on Theorem 1-2 sweeps share: their tables, the validity of seeds, and their cost."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tvtheory import results
from tvtheory.config import Data
from tvtheory.runner import Cost

# Effective rates on 2 CPU cores (measured: SGD ~90 GFLOP/s at batch 64, grid evaluation ~60), halved so that an
# estimate errs on the long side.
SGD_FLOPS, EVAL_FLOPS = 45e9, 30e9


def config_point(cfg, model=None) -> dict:
    """The config values a table's rows carry as constant columns (a model or data option's fields only when the
    option is in use, so that the paper's setting keeps its columns)."""
    m, dt = model or cfg.model, cfg.data
    pretrain = {"pretrain_tasks": m.pretrain_tasks, "pretrain_steps": m.pretrain_steps} if m.pretrain_tasks else {}
    arch = {} if m.arch == "paper" else {"arch": m.arch, **{f: getattr(m, f) for f in ARCH_FIELDS.get(m.arch, ())}}
    options = {f: getattr(dt, f) for f, default in DATA_OPTIONS.items() if getattr(dt, f) != default}
    return {"d": dt.d, "m": m.m, "P": dt.P, "n_rel": dt.n_rel, "n_conf": dt.n_conf, "sigma": dt.sigma,
            "form": m.form, **pretrain, **arch, **options}


# The fields each model option reads, and the data options with their paper values.
ARCH_FIELDS = {"multihead": ("heads",), "cnn": ("width",), "gnn": ("rounds", "radius")}
DATA_OPTIONS = {f: getattr(Data(), f) for f in ("irrelevant", "rho", "classes", "label_noise")}


def validity(r, claims_cfg) -> tuple[np.ndarray, np.ndarray]:
    """(valid, at_chance) per (alpha, seed): a seed is valid when everything stayed finite and both fine-tunes beat
    chance on their own task (claims.chance_acc)."""
    at_chance = np.any(np.asarray(r.own)[..., 1] <= claims_cfg.chance_acc, axis=-1)
    return np.asarray(r.finite) & ~at_chance, at_chance


def check_divergence(valid: np.ndarray, what: str, ctx,
                     hint: str = "lower train.eta, or check claims.chance_acc") -> None:
    """Some seeds invalid: say so (their rows are marked and left out); all of them: stop, writing nothing."""
    from tvtheory.cli import AllDiverged

    n_bad = int(valid.size - valid.sum())
    if n_bad == valid.size:
        raise AllDiverged(f"every {what} diverged (non-finite loss, parameters or outputs) or stayed at chance; "
                          f"{hint}")
    if n_bad:
        ctx.log.warning("%d of %d: %s diverged or stayed at chance; their rows are marked diverged=True and left "
                        "out of every verdict and figure", n_bad, valid.size, what)


def pair_tables(r, alphas, lams, valid, at_chance, **constants) -> dict[str, pd.DataFrame]:
    """metrics (alpha, seed, lam, task), diagnostics (alpha, seed) and curves (alpha, seed, task, step) of a sweep."""
    diverged = ~np.asarray(valid)
    seeds = np.arange(diverged.shape[1])
    metrics = results.tidy({"loss": r.loss, "acc": r.acc,
                            "diverged": np.broadcast_to(diverged[:, :, None, None], np.shape(r.loss))},
                           {"alpha": alphas, "seed": seeds, "lam": lams, "task": ["T1", "T2"]}, **constants)
    diagnostics = results.tidy(
        {"alpha_hat": r.alpha_hat, "tv_cosine": r.tv_cosine, "diverged": diverged, "at_chance": at_chance,
         "own_loss_T1": r.own[..., 0, 0], "own_loss_T2": r.own[..., 1, 0],
         "own_acc_T1": r.own[..., 0, 1], "own_acc_T2": r.own[..., 1, 1],
         "dW_T1": r.norms[..., 0, 0], "dV_T1": r.norms[..., 0, 1],
         "dW_T2": r.norms[..., 1, 0], "dV_T2": r.norms[..., 1, 1]}, {"alpha": alphas, "seed": seeds}, **constants)
    n_log = np.shape(r.curves)[-1]
    curves = results.tidy({"loss": r.curves, "diverged": np.broadcast_to(diverged[:, :, None, None],
                                                                        np.shape(r.curves))},
                          {"alpha": alphas, "seed": seeds, "task": ["T1", "T2"], "log": np.arange(n_log)},
                          **constants)
    return {"metrics": metrics, "diagnostics": diagnostics, "curves": curves}


def training_extra(cfg) -> Cost:
    """What a synthetic run's Psi_0 and fine-tunes add beyond the fine-tunes' SGD steps: the pre-training of Psi_0
    on ``model.pretrain_tasks`` tasks (``model.pretrain_steps`` SGD steps per seed), and the fixed training sets of
    ``train.n_train`` samples (each seed's, both tasks', held at once)."""
    d, P, m, S = cfg.data.d, cfg.data.P, cfg.model.m, cfg.n_seeds
    pre = 6.0 * cfg.train.batch * P * d * (P + m) * cfg.model.pretrain_steps * S if cfg.model.pretrain_tasks else 0.0
    return Cost(pre / SGD_FLOPS, 2 * 4.0 * S * cfg.train.n_train * P * d / 1e9)


def pair_cost(cfg, n_alphas: int, n_lams: int, n_test: int, n_models: int = 1) -> Cost:
    """Time and memory of ``n_models`` Theorem 1-2 sweeps from the sizes alone."""
    d, P, m, S = cfg.data.d, cfg.data.P, cfg.model.m, cfg.n_seeds
    q = min(P, 16)
    sgd = 6.0 * cfg.train.batch * P * d * (P + m) * cfg.train.steps * S * (1 + n_alphas)
    evals = 2.0 * n_alphas * S * n_lams * 2 * n_test * (q * m + q * q) + 2.0 * n_alphas * S * 2 * n_test * P * d * m
    extra = training_extra(cfg)
    seconds = n_models * (sgd / SGD_FLOPS + evals / EVAL_FLOPS + extra.seconds)
    # Every seed's two test sets and training batches (as ids) are drawn at once (sweep.eval_sets, batch_ids).
    draws = 4.0 * S * (2 * n_test * P * d + cfg.train.steps * cfg.train.batch * (P + 1))
    memory = (0.5e9 + n_models * (4.0 * n_alphas * S * n_lams * 2 * 4 + draws
                                  + 4.0 * cfg.train.batch * P * (m + d) * 4 + 4.0 * min(n_test, 3200) * q * m * 3))
    return Cost(seconds, memory / 1e9 + extra.memory_gb)


def smoke_reason(cfg, n_test: int) -> str | None:
    if n_test < cfg.claims.min_test:
        return f"{n_test} test samples per task, fewer than claims.min_test={cfg.claims.min_test} (a smoke run)"
    return None
