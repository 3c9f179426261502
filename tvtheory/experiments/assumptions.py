"""Theorems 1-2 under changed assumptions: the Figure 1 sweep once per model option of conf/model/, side by side.

Each name in ``models`` is an option of conf/model/ (a file there is a new option); the first is the reference. The
defaults compare the paper's setting (merged W and V, random Psi_0) with the second Psi_0 of docs/theory.md
(pre-trained briefly on tasks whose tokens avoid the span of mu_T1 and mu_T2) and with the four-matrix form
(W = W_K^T W_Q, V = W_O W_V, task vectors on the four matrices). Everything else (fine-tunes, test sets, lambda grid,
verdict rules) is the arithmetic experiment's, whose cache the reference reuses. A robustness check rather than one of
the paper's claims: it writes verdicts.md and verdicts.json, not claims.json.
"""

from __future__ import annotations

import dataclasses
from typing import List

import numpy as np
import pandas as pd

from tvtheory import claims as rules
from tvtheory.config import Model, Sweep, Synthetic, config, field, validate
from tvtheory.experiments import _pairs
from tvtheory.runner import Cost

COST, AFTER = 78, ("arithmetic",)
TABLES = ("metrics", "diagnostics", "psi0")
SIZE_FIELDS = ("n_seeds", "models", "sweep.lam_step", "sweep.n_test", "sweep.alphas", "train.steps", "data.d")


def model_option(name: str) -> Model:
    """The Model of conf/model/<name>.yaml; an unknown name raises a one-line ValueError listing the options."""
    from importlib import resources

    import yaml

    folder = resources.files("tvtheory.conf") / "model"
    options = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if not isinstance(name, str) or name not in options:
        raise ValueError(f"{name!r}: no conf/model/{name}.yaml (options: {', '.join(options)})")
    return Model(**(yaml.safe_load((folder / f"{name}.yaml").read_text()) or {}))


@config
class Config(Synthetic):
    models: List[str] = field(help="options of conf/model/, the first the reference",
                              factory=lambda: ["merged", "pretrained", "four"])
    sweep: Sweep = field(Sweep(phase_alphas=[]), "the Figure 1 alphas and the lambda grid")

    def check(self):
        super().check()
        if len(self.models) < 2:
            raise ValueError(f"models={list(self.models)!r}: needs a reference and at least one model to compare "
                             "with it")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models={list(self.models)!r}: must not repeat a model")
        for i, name in enumerate(self.models):
            try:
                m = model_option(name)
            except ValueError as e:
                raise ValueError(f"models[{i}]={e}") from None
            try:
                validate(m)
                m.need_dims(self.data.d, self.n_task_dirs())
            except ValueError as e:
                raise ValueError(f"models[{i}]={name!r} (conf/model/{name}.yaml): model.{e}") from None


def run(cfg: Config, ctx) -> dict[str, pd.DataFrame]:
    from tvtheory import sweep

    alphas, lams, seeds = cfg.sweep.all_alphas(), cfg.sweep.lams(), np.arange(cfg.n_seeds)
    models = {name: model_option(name) for name in cfg.models}
    k_pre = max(m.pretrain_tasks for m in models.values())        # every Psi_0 is tried on these pre-training tasks
    rows, diag, psi0 = [], [], []
    for name, m in models.items():
        setup = sweep.Setup(cfg.data, m, cfg.train)
        r = sweep.pair_sweep(cfg.seed, cfg.n_seeds, alphas, lams, setup, n_test=cfg.sweep.n_test,
                             chunk=cfg.sweep.chunk, store=ctx.store, progress=ctx.progress(f"{name}: per alpha"))
        valid, at_chance = _pairs.validity(r, cfg.claims)
        _pairs.check_divergence(valid, "fine-tune pair", ctx)
        point = {**_pairs.config_point(cfg, m), "model": name, "sigma_0": m.sigma_0, "sigma_w": m.sigma_w,
                 "pretrain_tasks": m.pretrain_tasks, "pretrain_steps": m.pretrain_steps if m.pretrain_tasks else 0}
        t = _pairs.pair_tables(r, alphas, lams, valid, at_chance, **point)
        rows.append(t["metrics"])
        diag.append(t["diagnostics"])
        ev = sweep.psi0_eval(cfg.seed, setup, seeds, r.psi0, np.eye(cfg.data.d)[:2], cfg.sweep.n_test, k_pre)
        per_seed = {"W0_norm": ev["W0_norm"], "V0_norm": ev["V0_norm"]}
        if k_pre:
            per_seed |= {"pretrain_loss": ev["loss"].mean(1), "pretrain_acc": ev["acc"].mean(1)}
        psi0.append(pd.DataFrame({"model": name, "seed": seeds, **per_seed}))
    return {"metrics": pd.concat(rows, ignore_index=True), "diagnostics": pd.concat(diag, ignore_index=True),
            "psi0": pd.concat(psi0, ignore_index=True)}


def analyse(tables, cfg: Config) -> dict:
    rows = tables["metrics"]
    too_small = _pairs.smoke_reason(cfg, cfg.sweep.n_test)
    records = {n: [r.as_dict() for r in rules.pair_claims(rows[rows["model"] == n], cfg.claims, cfg.data.d,
                                                          too_small)]
               for n in cfg.models}
    models = {n: dataclasses.asdict(model_option(n)) for n in cfg.models}
    return {"verdicts": {"reference": cfg.models[0], "models": {n: {"config": models[n], "claims": records[n]}
                                                                for n in cfg.models}},
            "verdicts.md": verdicts_markdown(records, models, tables["psi0"])}


def claims(a: dict, cfg: Config) -> list:
    return []


def plot(tables, a: dict, cfg: Config, out) -> None:
    from tvtheory import plots

    plots.assumptions(tables["metrics"], cfg.claims, out)


def estimate(cfg: Config) -> Cost:
    return _pairs.pair_cost(cfg, len(cfg.sweep.all_alphas()), len(cfg.sweep.lams()), cfg.sweep.n_test,
                            n_models=len(cfg.models))


def changed_verdicts(reference: list[dict], other: list[dict]) -> list[tuple[str, str, str]]:
    """(claim id, reference verdict, other verdict) for each claim whose verdict differs."""
    return [(a["id"], a["verdict"], b["verdict"]) for a, b in zip(reference, other) if a["verdict"] != b["verdict"]]


def verdicts_markdown(records: dict[str, list[dict]], models: dict, psi0: pd.DataFrame) -> str:
    names = list(records)
    p0 = psi0.groupby("model").mean(numeric_only=True)
    k_pre = "pretrain_loss" in p0
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    lines = ["# Theorems 1-2 under changed assumptions", "",
             f"The Figure 1 sweep once per model option of conf/model/ (reference: `{names[0]}`), judged by the rules "
             "of results/CLAIMS.md, from metrics.csv. Psi_0 per model (seed means, psi0.csv):", "",
             r"| model | form | sigma_0 | sigma_w | Psi_0 | \|\|W_0\|\|_F | \|\|V_0\|\|_F"
             + (" | hinge / acc on the pre-training tasks" if k_pre else "") + " |",
             "|---|---|---|---|---|---|---" + ("|---" if k_pre else "") + "|"]
    for n in names:
        m, p = models[n], p0.loc[n]
        init = (f"pre-trained: {m['pretrain_tasks']} tasks, {m['pretrain_steps']} steps" if m["pretrain_tasks"]
                else "random")
        pre = f" | {p['pretrain_loss']:.3f} / {p['pretrain_acc']:.3f}" if k_pre else ""
        lines.append(f"| `{n}` | {m['form']} | {m['sigma_0']:g} | {m['sigma_w']:g} | {init} | {p['W0_norm']:.3f} | "
                     f"{p['V0_norm']:.3f}{pre} |")
    lines += ["", "| claim | " + " | ".join(f"`{n}`" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    mark = lambda r: {"pass": "pass", "fail": "**FAIL**", "inconclusive": "*inconclusive*"}[r["verdict"]] + ": " \
        + esc(r["measured"])  # noqa: E731
    for i, r in enumerate(records[names[0]]):
        lines.append(f"| `{r['id']}` | " + " | ".join(mark(records[n][i]) for n in names) + " |")
    lines.append("")
    for n in names[1:]:
        changed = [f"`{i}` ({a} -> {b})" for i, a, b in changed_verdicts(records[names[0]], records[n])]
        lines.append(f"Verdicts that `{n}` changes against `{names[0]}`: " + (", ".join(changed) or "none") + ".")
    return "\n".join(lines) + "\n"
