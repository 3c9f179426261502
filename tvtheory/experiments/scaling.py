"""What the paper states only as Theta(.): beta against d and m, and the SGD steps to reach eps against delta_*.

beta is measured per (d, m) on the irrelevant pair (alpha = 0) from Psi_0 + dPsi_T1 + lambda dPsi_T2; the steps
to eps from training curves logged at every step, at a fixed step size, as delta_* = n_rel / P varies.
"""

from __future__ import annotations

import dataclasses
from typing import List

import numpy as np
import pandas as pd

from tvtheory import _check, analysis, claims as rules
from tvtheory.config import Node, Synthetic, check_grid, check_list, config, field, grid
from tvtheory.experiments import _pairs
from tvtheory.runner import Cost

COST, AFTER = 189, ()
TABLES = ("metrics", "convergence_curves")
SIZE_FIELDS = ("n_seeds", "scaling.ds", "scaling.ms", "scaling.lam_step", "scaling.n_test", "scaling.conv_steps",
               "scaling.n_rels", "train.steps", "train.batch")


@config
class Scaling(Node):
    ds: List[int] = field(help="the d of beta against d", factory=lambda: [16, 32, 64, 128])
    ms: List[int] = field(help="the m of beta against m (the claim uses model.m)", factory=lambda: [64, 256, 1024])
    lam_min: float = field(-2.0, "smallest lambda of the beta sweeps")
    lam_max: float = field(2.0, "largest lambda (the grid needs lambda < 0 and > 0)")
    lam_step: float = field(0.2, "lambda step")
    n_test: int = field(1000, "test samples per task")
    n_rels: List[int] = field(help="label-relevant tokens for the convergence runs (delta_* = n_rel / P)",
                              factory=lambda: [2, 3, 4, 6, 8])
    conv_n_conf: int = field(1, "confusion tokens of the convergence runs")
    conv_steps: int = field(600, "SGD steps of the convergence runs (the slowest delta_* reaches eps by ~300)")
    conv_window: int = field(10, "steps averaged before comparing the training loss with eps")
    exponent_tol: float = field(0.25, "|fitted exponent - predicted| allowed: half the distance to the nearest "
                                "rival law (d^-1/2 against d^-1; delta^-1.5 against delta^-2)")
    local_tol: float = field(0.5, "each exponent between consecutive points must lie this close to the fitted one "
                             "(a power law at all)")

    def lams(self) -> np.ndarray:
        return grid(self.lam_min, self.lam_max, self.lam_step)

    def check(self):
        check_list("ds", self.ds, min_len=2)
        check_list("ms", self.ms, min_len=1)
        check_list("n_rels", self.n_rels, min_len=2)
        for i, m in enumerate(self.ms):
            _check.integer(f"ms[{i}]", m, lo=1)
        check_grid(("lam_min", "lam_max", "lam_step"), self.lam_min, self.lam_max, self.lam_step, min_points=3)
        if not (self.lam_min < 0 < self.lam_max):
            _check.fail("lam_min", self.lam_min, "the grid must hold lambdas < 0 and > 0 (beta on both sides)")
        _check.integer("n_test", self.n_test, lo=1)
        _check.integer("conv_steps", self.conv_steps, lo=2)
        _check.integer("conv_window", self.conv_window, lo=1, hi=self.conv_steps)
        _check.in_range("exponent_tol", self.exponent_tol, lo=0.0)
        _check.in_range("local_tol", self.local_tol, lo=0.0)


@config
class Config(Synthetic):
    scaling: Scaling = field(Scaling(), "the d, m and delta_* axes")

    def check(self):
        super().check()
        for i, d in enumerate(self.scaling.ds):      # e_1, e_2, the pre-training patterns, one irrelevant pattern
            _check.integer(f"scaling.ds[{i}]", d, lo=3 + self.model.pretrain_tasks)
        for i, n in enumerate(self.scaling.n_rels):
            try:
                dataclasses.replace(self.data, n_rel=n, n_conf=self.scaling.conv_n_conf).check()
            except ValueError as e:
                raise ValueError(f"scaling.n_rels[{i}]: data.{e}") from None


def run(cfg: Config, ctx) -> dict[str, pd.DataFrame]:
    from tvtheory import sweep

    sc, point = cfg.scaling, ctx.progress("beta per (d, m)")
    lams, metrics, valids = sc.lams(), [], []
    cells = [(d, m) for d in sc.ds for m in sc.ms]
    for i, (d, m) in enumerate(cells):
        setup = sweep.Setup(dataclasses.replace(cfg.data, d=d), dataclasses.replace(cfg.model, m=m), cfg.train)
        r = sweep.pair_sweep(cfg.seed, cfg.n_seeds, [0.0], lams, setup, n_test=sc.n_test, store=ctx.store)
        valid, at_chance = _pairs.validity(r, cfg.claims)
        _say_lost(valid, f"d={d}, m={m}: {{}} fine-tune pairs diverged or stayed at chance", ctx)
        valids.append(np.ravel(valid))
        metrics.append(_pairs.pair_tables(r, [0.0], lams, valid, at_chance)["metrics"].assign(d=d, m=m))
        point(i + 1, len(cells), f"d={d}, m={m}")
    setup = sweep.Setup(cfg.data, cfg.model, dataclasses.replace(cfg.train, steps=sc.conv_steps, log_every=1))
    seed_ids = np.arange(cfg.n_seeds, dtype=np.int32)
    curves, oks, point = [], [], ctx.progress("convergence per delta_*")
    for i, n_rel in enumerate(sc.n_rels):
        s_n = setup._replace(data=dataclasses.replace(cfg.data, n_rel=n_rel, n_conf=sc.conv_n_conf))
        irr = sweep.irrelevant(cfg.seed, s_n, np.eye(cfg.data.d)[:2])
        psi0 = sweep.pretrained(cfg.seed, s_n, seed_ids, ctx.store, np.eye(cfg.data.d)[:2])
        ft = sweep.finetune_all(cfg.seed, s_n, seed_ids, psi0, np.eye(cfg.data.d)[0], 0, irr, ctx.store)
        loss = np.asarray(ft.curve_loss)
        ok = np.asarray(ft.finite) & np.all(np.isfinite(loss), axis=1)
        _say_lost(ok, f"delta_*={n_rel / cfg.data.P:g}: {{}} fine-tunes diverged", ctx)
        oks.append(ok)
        curves.append(pd.DataFrame({"n_rel": n_rel, "delta_star": n_rel / cfg.data.P,
                                    "seed": np.repeat(seed_ids, loss.shape[1]),
                                    "step": np.tile(np.arange(loss.shape[1]), len(seed_ids)), "loss": loss.ravel(),
                                    "diverged": np.repeat(~ok, loss.shape[1])}))
        point(i + 1, len(sc.n_rels), f"delta_*={n_rel / cfg.data.P:g}")
    # The two sweeps' claims stand apart: the run stops only when neither has a valid seed anywhere.
    every = np.concatenate([*valids, *oks])
    if not every.any():                                # check_divergence's stop (each point has warned already)
        _pairs.check_divergence(every, "fine-tune (pair or convergence run)", ctx)
    return {"metrics": pd.concat(metrics, ignore_index=True), "convergence_curves": pd.concat(curves,
                                                                                              ignore_index=True)}


def _say_lost(valid, what: str, ctx) -> None:
    """Warn of a point of a sweep that lost seeds (``what``: its message, '{}' for how many). Its rows stay in the
    tables, marked diverged, and are left out of every verdict; a point that lost every seed leaves its claim 0 seeds
    there, which the claim says. The run stops only when every point of both sweeps lost every seed."""
    n_bad = int(np.size(valid) - np.sum(valid))
    if n_bad:
        ctx.log.warning(what.format("all" if n_bad == np.size(valid) else f"{n_bad} of {np.size(valid)}")
                        + "; their rows are marked diverged=True and left out of every verdict")


def analyse(tables, cfg: Config) -> dict:
    eps, beta, beta_seeds = cfg.claims.eps_learned, [], []
    for (d, m), g in tables["metrics"].groupby(["d", "m"]):
        c = analysis.curves(g)
        M = d - 2
        own = g[(g["lam"] == 0) & (g["task"] == "T1")]
        # a cell whose every seed is invalid has no curve: NaN here, and 0 seeds behind it (the claims say so)
        a0 = c.alpha_near(0.0)
        star = analysis.lambda_star(c.at(a0), eps) if a0 is not None else np.nan
        beta.append({"d": d, "m": m, **analysis.beta_hat(c), "lambda_star": star,
                     "own_loss_T1": float(analysis.valid(own)["loss"].mean()), "one_over_d": 1 / d,
                     "m_over_M2logM": m / (M**2 * np.log(M))})
        beta_seeds += [{"d": d, "m": m, **r} for r in analysis.beta_seeds(c).to_dict("records")]
    conv = []
    for (n_rel, ds, s), g in analysis.valid(tables["convergence_curves"]).groupby(["n_rel", "delta_star", "seed"]):
        conv.append({"n_rel": n_rel, "delta_star": ds, "seed": s,
                     "steps": analysis.steps_to_eps(g.sort_values("step")["loss"].to_numpy(), eps,
                                                    cfg.scaling.conv_window)})
    # named columns, so that a table with no valid row at all still gives frames the claims can read
    return {"beta": pd.DataFrame(beta), "beta_seeds": pd.DataFrame(beta_seeds, columns=["d", "m", "seed", "beta_add",
                                                                                         "beta_neg"]),
            "convergence": pd.DataFrame(conv, columns=["n_rel", "delta_star", "seed", "steps"])}


def claims(a: dict, cfg: Config) -> list[rules.Claim]:
    recs = rules.scaling_claims(a["beta"], a["beta_seeds"], a["convergence"], cfg.model.m, cfg.claims, cfg.scaling,
                                _pairs.smoke_reason(cfg, cfg.scaling.n_test))
    return [dataclasses.replace(recs[0], source="metrics"), dataclasses.replace(recs[1], source="convergence_curves")]


def plot(tables, a: dict, cfg: Config, out) -> None:
    from tvtheory import plots

    plots.scaling(a["beta"], a["beta_seeds"], a["convergence"], out)


def estimate(cfg: Config) -> Cost:
    sc, total = cfg.scaling, Cost(0.0, 0.0)
    for d in sc.ds:
        for m in sc.ms:
            sub = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, d=d),
                                      model=dataclasses.replace(cfg.model, m=m))
            c = _pairs.pair_cost(sub, 1, len(sc.lams()), sc.n_test)
            total = Cost(total.seconds + c.seconds, max(total.memory_gb, c.memory_gb))
    conv = 6.0 * cfg.train.batch * cfg.data.P * cfg.data.d * (cfg.data.P + cfg.model.m) * sc.conv_steps
    return Cost(total.seconds + len(sc.n_rels) * cfg.n_seeds * conv / _pairs.SGD_FLOPS, total.memory_gb)
