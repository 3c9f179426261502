"""Beyond the paper's assumptions: where the Theorem 1-2 predictions survive other models and other data.

Each option of conf/model/ (multi-head attention, two layers, an attention-free MLP on pooled tokens, a 1-D CNN, a
GNN) and of conf/data/ (Gaussian token noise, random unit irrelevant patterns, irrelevant patterns correlated with
mu_T1, K-class tasks, label noise) changes one assumption of the paper's setting, the first option of each list (the
reference). Every cell of the verdict matrix is the Figure 1 sweep Psi_0 + dPsi_T1 + lambda dPsi_T2, trained by the
same SGD on the hinge loss from the model's own Psi_0, evaluated exactly (architectures.grid_eval), and judged by the
seven Theorem 1-2 rules of the arithmetic experiment (claims.pair_claims), with lambda*(alpha) against 1 - alpha
and the measured beta beside them. The dose-response cells turn the continuous knobs (token noise sigma, the
irrelevant patterns' correlation rho, the number of heads, the number of classes K) one step at a time from the
reference, so that where a prediction breaks first is a number.

Claims ``beyond.model.<option>`` and ``beyond.data.<option>``: every Theorem 1-2 rule that passes for the reference
also passes under the option (at most ``beyond.max_lost`` lost), with the changed verdicts listed; recomputed from
metrics.csv alone.
"""

from __future__ import annotations

import dataclasses
from typing import List, NamedTuple, Optional

import numpy as np
import pandas as pd

from tvtheory import _check, analysis, claims as rules
from tvtheory.config import Data, Model, Node, Sweep, Synthetic, check_list, config, field, validate
from tvtheory.experiments import _pairs
from tvtheory.runner import Cost

COST, AFTER = 146, ()
TABLES = ("metrics", "dose", "diagnostics")
SIZE_FIELDS = ("n_seeds", "beyond.models", "beyond.datas", "beyond.cross", "beyond.sigmas", "beyond.rhos",
               "beyond.heads", "beyond.classes", "sweep.alphas", "sweep.lam_step", "sweep.n_test", "train.steps",
               "train.batch", "model.m")
RULES = ("thm1.irrelevant", "thm1.aligned", "thm1.contradictory_fails", "thm1.threshold_curve", "thm2.irrelevant",
         "thm2.contradictory", "thm2.aligned_fails")
KNOBS = ("sigma", "rho", "heads", "classes")


@config
class Beyond(Node):
    """The verdict matrix's options and the dose-response knobs."""

    models: List[str] = field(help="options of conf/model/ (rows of the matrix), the first the reference (the "
                              "paper's model)", factory=lambda: ["merged", "multihead", "two_layer", "mlp", "cnn",
                                                                 "gnn"])
    datas: List[str] = field(help="options of conf/data/ (columns of the matrix), the first the reference (the "
                             "paper's data)", factory=lambda: ["paper", "noise", "random_unit", "correlated",
                                                               "multiclass", "label_noise"])
    cross: bool = field(False, "False: each option alone against the reference (the matrix's first row and column); "
                        "True: every (model, data) cell")
    sigmas: List[float] = field(help="dose-response: data.sigma on the reference, in increasing dose",
                                factory=lambda: [0.05, 0.1, 0.2])
    rhos: List[float] = field(help="dose-response: irrelevant='correlated' at these rho on the reference, in "
                              "increasing dose", factory=lambda: [0.1, 0.3])
    heads: List[int] = field(help="dose-response: arch='multihead' with these heads (the reference counts as one "
                             "head)", factory=lambda: [2, 4])
    classes: List[int] = field(help="dose-response: K-class tasks (each must divide model.m; the reference is the "
                               "binary task)", factory=lambda: [4, 8])
    max_lost: int = field(0, "a beyond.* claim passes when at most this many of the reference's passing rules stop "
                          "passing under the option (declared: none may)")

    def check(self):
        for name in ("models", "datas"):
            values = getattr(self, name)
            if len(values) < 2:
                _check.fail(name, list(values), "needs the reference and at least one option to compare with it")
            if len(set(values)) != len(values):
                _check.fail(name, list(values), "must not repeat an option")
        for knob in KNOBS:
            check_list(_list(knob), getattr(self, _list(knob)), min_len=0)
        for i, h in enumerate(self.heads):
            _check.integer(f"heads[{i}]", h, lo=2)
        for i, k in enumerate(self.classes):
            _check.integer(f"classes[{i}]", k, lo=3)
        _check.integer("max_lost", self.max_lost, lo=0, hi=len(RULES))


def _list(knob: str) -> str:
    return {"sigma": "sigmas", "rho": "rhos", "heads": "heads", "classes": "classes"}[knob]


@config
class Config(Synthetic):
    sweep: Sweep = field(Sweep(alphas=[-0.5, 0.0, 0.5], phase_alphas=[], n_test=1000),
                         "the alphas (one irrelevant, aligned and contradictory each: every Theorem 1-2 rule), the "
                         "lambda grid and the test sets (claims.min_test) of every cell")
    beyond: Beyond = field(Beyond(), "the options and knobs")

    def check(self):
        super().check()
        plan(self)                       # every cell's model and data, each validated with its origin named


# ------------------------------------------------------------------------------------------------------- the cells
class Cell(NamedTuple):
    """One sweep: the table it belongs to, the values that name it there, its model and data blocks."""

    table: str                   # "metrics" (the matrix) or "dose"
    keys: tuple                  # (model option, data option) or (knob, value)
    model: Model
    data: Data
    reference: bool = False      # the reference cell (the matrix's first, every knob's first dose)


def option(group: str, name: str) -> dict:
    """The fields conf/<group>/<name>.yaml sets; an unknown name raises a one-line ValueError listing the options."""
    from importlib import resources

    import yaml

    folder = resources.files("tvtheory.conf") / group
    options = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if not isinstance(name, str) or name not in options:
        raise ValueError(f"{name!r}: no conf/{group}/{name}.yaml (options: {', '.join(options)})")
    return yaml.safe_load((folder / f"{name}.yaml").read_text()) or {}


def _checked(where: str, model: Model, data: Data) -> None:
    """Validate one cell's blocks as Synthetic.check does, the error prefixed with the option that made them."""
    for prefix, block in (("data", data), ("model", model)):
        try:
            validate(block)
        except ValueError as e:
            raise ValueError(f"{where}: {prefix}.{e}") from None
    try:
        for prefix, fn, args in (("data", data.need_dims, (data.pair_dirs(),)),
                                 ("model", model.need_dims, (data.d, data.pair_dirs())),
                                 ("model", model.need_data, (data,))):
            try:
                fn(*args)
            except ValueError as e:
                raise ValueError(f"{prefix}.{e}") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _with(block, where: str, **fields):
    try:
        return dataclasses.replace(block, **fields)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


def plan(cfg: Config) -> list[Cell]:
    """Every cell, in order: the matrix (the reference, each model option, each data option, then with ``cross``
    the other pairs), then each knob's doses (its first the reference itself). The options modify the run's own
    ``model`` and ``data`` blocks. Raises ValueError naming the option of a cell whose blocks are invalid."""
    b = cfg.beyond
    models, datas = {}, {}
    for i, name in enumerate(b.models):
        try:
            fields = option("model", name)
        except ValueError as e:
            raise ValueError(f"beyond.models[{i}]={e}") from None
        models[name] = _with(cfg.model, f"beyond.models[{i}]={name!r}", **fields)
    for i, name in enumerate(b.datas):
        try:
            fields = option("data", name)
        except ValueError as e:
            raise ValueError(f"beyond.datas[{i}]={e}") from None
        datas[name] = _with(cfg.data, f"beyond.datas[{i}]={name!r}", **fields)
    m0, d0 = b.models[0], b.datas[0]
    pairs = [(m0, d0)] + [(m, d0) for m in b.models[1:]] + [(m0, d) for d in b.datas[1:]]
    if b.cross:
        pairs += [(m, d) for m in b.models[1:] for d in b.datas[1:]]
    cells = []
    for m, d in pairs:
        where = (f"beyond.models[{b.models.index(m)}]={m!r} (conf/model/{m}.yaml)" if d == d0 and m != m0 else
                 f"beyond.datas[{b.datas.index(d)}]={d!r} (conf/data/{d}.yaml)" if m == m0 else
                 f"beyond.cross: model {m!r} with data {d!r}")
        _checked(where, models[m], datas[d])
        cells.append(Cell("metrics", (m, d), models[m], datas[d], (m, d) == (m0, d0)))
    ref_m, ref_d = models[m0], datas[d0]
    for knob in KNOBS:
        if getattr(b, _list(knob)):
            cells.append(Cell("dose", (knob, reference_dose(knob, ref_m, ref_d)), ref_m, ref_d, True))
        for i, v in enumerate(getattr(b, _list(knob))):
            where = f"beyond.{_list(knob)}[{i}]={v!r}"
            if float(v) == reference_dose(knob, ref_m, ref_d):
                raise ValueError(f"{where}: is the reference's own value (every knob's first dose already)")
            if knob == "sigma":
                m, d = ref_m, _with(ref_d, where, sigma=float(v))
            elif knob == "rho":
                m, d = ref_m, _with(ref_d, where, irrelevant="correlated", rho=float(v))
            elif knob == "heads":
                m, d = _with(ref_m, where, arch="multihead", heads=int(v)), ref_d
            else:
                m, d = ref_m, _with(ref_d, where, classes=int(v))
            _checked(where, m, d)
            cells.append(Cell("dose", (knob, float(v)), m, d))
    return cells


def reference_dose(knob: str, model: Model, data: Data) -> float:
    """The knob's value at the reference: its sigma, rho 0 (orthonormal irrelevant patterns), one head, K = 2."""
    return {"sigma": data.sigma, "rho": data.rho, "heads": 1.0, "classes": 2.0}[knob]


# ------------------------------------------------------------------------------------------------------------- run
def run(cfg: Config, ctx) -> dict[str, pd.DataFrame]:
    from tvtheory import sweep

    alphas, lams = cfg.sweep.all_alphas(), cfg.sweep.lams()
    cells = plan(cfg)
    unique = list(dict.fromkeys((c.model, c.data) for c in cells))      # a dose equal to a matrix cell: computed once
    bar = ctx.progress("cells (model, data)")
    tables = {}
    for i, (m, d) in enumerate(unique):
        r = sweep.pair_sweep(cfg.seed, cfg.n_seeds, alphas, lams, sweep.Setup(d, m, cfg.train),
                             n_test=cfg.sweep.n_test, chunk=cfg.sweep.chunk, store=ctx.store)
        valid, at_chance = _pairs.validity(r, cfg.claims)
        n_bad = int(valid.size - valid.sum())
        if n_bad:
            ctx.log.warning("cell %s: %d of %d fine-tune pairs diverged or stayed at chance; their rows are marked "
                            "diverged=True and left out of every verdict", describe(m, d, cfg), n_bad, valid.size)
        tables[m, d] = _pairs.pair_tables(r, alphas, lams, valid, at_chance, **point(m, d))
        bar(i + 1, len(unique), describe(m, d, cfg))
    out = {"metrics": [], "dose": [], "diagnostics": []}
    for c in cells:
        names = ("model", "data") if c.table == "metrics" else ("knob", "value")
        keys = dict(zip(names, c.keys))
        out[c.table].append(_front(tables[c.model, c.data]["metrics"], keys))
        if c.table == "metrics":
            out["diagnostics"].append(_front(tables[c.model, c.data]["diagnostics"], keys))
    empty = {"dose": ["knob", "value", "alpha", "seed", "lam", "task", "loss", "acc", "diverged"]}
    return {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=empty.get(k, []))
            for k, v in out.items()}


def point(m: Model, d: Data) -> dict:
    """The constant columns of a cell's rows: what its options set."""
    return {"d": d.d, "m": m.m, "arch": m.arch, "heads": m.heads if m.arch == "multihead" else 1, "sigma": d.sigma,
            "irrelevant": d.irrelevant, "rho": d.rho, "classes": d.classes, "label_noise": d.label_noise}


def describe(m: Model, d: Data, cfg: Config) -> str:
    """A cell as the fields in which it differs from the run's own blocks."""
    diff = [f"model.{f.name}={getattr(m, f.name)!r}" for f in dataclasses.fields(m)
            if getattr(m, f.name) != getattr(cfg.model, f.name)]
    diff += [f"data.{f.name}={getattr(d, f.name)!r}" for f in dataclasses.fields(d)
             if getattr(d, f.name) != getattr(cfg.data, f.name)]
    return ", ".join(diff) or "the reference"


def _front(df: pd.DataFrame, keys: dict) -> pd.DataFrame:
    df = df.copy()
    for i, (k, v) in enumerate(keys.items()):
        df.insert(i, k, v)
    return df




# --------------------------------------------------------------------------------------------------------- analyse
def cell_verdicts(rows: pd.DataFrame, cfg: Config) -> tuple[dict, dict]:
    """The seven Theorem 1-2 verdicts of one cell's rows ({claim id: Claim}) and its measurements: lambda*(alpha)
    (seed-mean curve) per alpha, the measured beta_add and beta_neg, the valid seeds."""
    too_small = _pairs.smoke_reason(cfg, cfg.sweep.n_test)
    if analysis.valid(rows).empty:
        reason = "every seed diverged or stayed at chance"
        recs = {cid: rules.claim(cid, "", "", "no valid seed", None, 0, "", undecided=reason) for cid in RULES}
        return recs, {"n_seeds": 0, "beta_add": np.nan, "beta_neg": np.nan}
    recs = {r.id: r for r in rules.pair_claims(rows, cfg.claims, cfg.data.d, too_small)}
    c = analysis.curves(rows)
    meas = {"n_seeds": c.n_seeds, **analysis.beta_hat(c)}
    for a in c.alphas():
        meas[f"lambda_star({a:g})"] = analysis.lambda_star(c.at(a), cfg.claims.eps_learned)
    return recs, meas


def own_losses(diag: pd.DataFrame, keys: tuple) -> dict:
    """The fine-tunes' own hinge loss, Psi*_T1 on T1 and Psi*_T2 on T2 (seed and alpha mean over valid seeds): how
    far the option lets a fine-tune get below eps at all."""
    need = {"model", "data", "own_loss_T1", "own_loss_T2"}
    if not need <= set(diag.columns):
        return {"own_loss_T1": np.nan, "own_loss_T2": np.nan}
    d = analysis.valid(diag)
    d = d[(d["model"] == keys[0]) & (d["data"] == keys[1])]
    return {"own_loss_T1": float(d["own_loss_T1"].mean()), "own_loss_T2": float(d["own_loss_T2"].mean())}


def kept(reference: dict[str, str], other: dict[str, str], max_lost: int = 0) -> dict:
    """The beyond.* rule on two cells' verdicts ({claim id: verdict}): every rule that passes for the reference must
    pass under the option. A lost rule fails (fail) or leaves the question open (inconclusive); the rule passes
    when lost + open <= max_lost, fails when the certainly lost exceed max_lost, and is inconclusive otherwise, or
    when no rule passes for the reference (nothing to keep). Returns ok (True/False/None), the reference's passing
    rules, and the lost, open and gained rules."""
    need = [cid for cid in RULES if reference.get(cid) == "pass"]
    lost = [cid for cid in need if other.get(cid) == "fail"]
    undecided = [cid for cid in need if other.get(cid) not in ("pass", "fail")]
    gained = [cid for cid in RULES if reference.get(cid) != "pass" and other.get(cid) == "pass"]
    if not need:
        ok = None
    elif len(lost) + len(undecided) <= max_lost:
        ok = True
    elif len(lost) > max_lost:
        ok = False
    else:
        ok = None
    return {"ok": ok, "need": need, "lost": lost, "undecided": undecided, "gained": gained}


def _summary_row(keys: dict, recs: dict, meas: dict, ref: Optional[dict], cfg: Config) -> dict:
    row = {**keys, **{cid: recs[cid].verdict for cid in RULES}, **meas}
    if ref is not None:
        k = kept({c: r.verdict for c, r in ref.items()}, {c: r.verdict for c, r in recs.items()},
                 cfg.beyond.max_lost)
        row |= {"kept": rules.verdict(k["ok"]), "n_kept": len(k["need"]) - len(k["lost"]) - len(k["undecided"]),
                "n_reference": len(k["need"]), "lost": " ".join(k["lost"]), "open": " ".join(k["undecided"]),
                "gained": " ".join(k["gained"])}
    return row


def analyse(tables, cfg: Config) -> dict:
    cells = plan(cfg)
    rows, dose = tables["metrics"], tables["dose"]
    b = cfg.beyond
    m0, d0 = b.models[0], b.datas[0]
    verdicts, matrix, dose_rows = {}, [], []
    for c in cells:
        df = rows if c.table == "metrics" else dose
        names = ("model", "data") if c.table == "metrics" else ("knob", "value")
        sel = df[(df[names[0]] == c.keys[0]) & (np.isclose(df[names[1]], c.keys[1]) if c.table == "dose"
                                                  else df[names[1]] == c.keys[1])]
        verdicts[c.table, c.keys] = cell_verdicts(sel, cfg)
        if c.table == "metrics":
            verdicts[c.table, c.keys][1].update(own_losses(tables["diagnostics"], c.keys))
    ref = verdicts["metrics", (m0, d0)][0]
    for c in cells:
        recs, meas = verdicts[c.table, c.keys]
        keys = dict(zip(("model", "data") if c.table == "metrics" else ("knob", "value"), c.keys))
        row = _summary_row(keys, recs, meas, ref, cfg)
        if c.reference:
            row |= {"kept": "reference", "lost": "", "open": "", "gained": ""}
        (matrix if c.table == "metrics" else dose_rows).append(row)
    matrix, dose_df = pd.DataFrame(matrix), pd.DataFrame(dose_rows)
    out = {"matrix": matrix, "dose_response": dose_df, "breaks": breaks(dose_df),
           "_verdicts": verdicts, "_cells": cells}
    out["matrix.md"] = markdown(matrix, out["breaks"], cfg)
    return out


def breaks(dose: pd.DataFrame) -> pd.DataFrame:
    """Per knob: the first dose (in the listed order) at which a rule that passes for the reference no longer
    passes for certain (the beyond.* rule is not 'pass'), which rules, and the last dose before it."""
    out = []
    if dose.empty:
        return pd.DataFrame(columns=["knob", "breaks_at", "verdict_there", "lost_there", "last_kept"])
    for knob, g in dose.groupby("knob", sort=False):
        last, first = np.nan, None
        for r in g.itertuples():
            if r.kept in ("reference", "pass"):
                last = r.value
                continue
            first = r
            break
        there = "" if first is None else "; ".join(f"{w} {x}" for w, x in (("lost", first.lost),
                                                                             ("undecided", first.open)) if x)
        out.append({"knob": knob, "breaks_at": first.value if first is not None else np.nan,
                    "verdict_there": first.kept if first is not None else "", "lost_there": there,
                    "last_kept": last})
    return pd.DataFrame(out)


def _stars(row) -> str:
    cols = sorted((c for c in row.index if str(c).startswith("lambda_star(")), key=lambda c: float(c[12:-1]))
    return ", ".join(f"{c[12:-1]}: {row[c]:g}" for c in cols)


def markdown(matrix: pd.DataFrame, brk: pd.DataFrame, cfg: Config) -> str:
    b = cfg.beyond
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    lines = ["# Theorems 1-2 beyond the paper's assumptions", "",
             f"Each cell: the Figure 1 sweep (alphas {', '.join(f'{a:g}' for a in cfg.sweep.alphas)}) under a model "
             f"option (rows, conf/model/) and a data option (columns, conf/data/), judged by the seven Theorem 1-2 "
             f"rules; reference `{b.models[0]}` x `{b.datas[0]}`. Entry: how many of the reference's passing rules "
             "still pass (the beyond.* rule), lambda*(alpha) (1 - alpha: "
             + ", ".join(f"{1 - a:g}" for a in cfg.sweep.alphas if a >= 0) + "), the measured beta_neg, and the "
             f"fine-tune Psi*_T2's own hinge loss on T2 (a task counts as learned at <= eps = "
             f"{cfg.claims.eps_learned:g}).", "",
             "| model \\ data | " + " | ".join(f"`{d}`" for d in b.datas) + " |", "|---" * (len(b.datas) + 1) + "|"]
    for m in b.models:
        cells = []
        for d in b.datas:
            r = matrix[(matrix["model"] == m) & (matrix["data"] == d)]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            head = ("reference" if r["kept"] == "reference" else
                    f"**{r['kept']}** {int(r['n_kept'])}/{int(r['n_reference'])}")
            lost = f"; lost {r['lost']}" if r["lost"] else ""
            gained = f"; gained {r['gained']}" if r["gained"] else ""
            cells.append(esc(f"{head}; lambda* {_stars(r)}; beta_neg {r['beta_neg']:.3g}; own T2 hinge "
                             f"{r['own_loss_T2']:.2g}{lost}{gained}"))
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    lines += ["", "Verdicts per cell (pass / fail / inconclusive of " + ", ".join(f"`{c}`" for c in RULES) + "):", ""]
    for _, r in matrix.iterrows():
        v = " ".join({"pass": "P", "fail": "F", "inconclusive": "?"}[r[c]] for c in RULES)
        lines.append(f"- `{r['model']}` x `{r['data']}`: {v}")
    lines += ["", "Where it breaks first (dose_response.csv): "]
    for r in brk.itertuples(index=False):
        if np.isnan(r.breaks_at):
            lines.append(f"- {r.knob}: every listed dose keeps the reference's passing rules")
        else:
            lines.append(f"- {r.knob}: {r.verdict_there} at {r.breaks_at:g} ({r.lost_there}); last kept "
                         f"{r.last_kept:g}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------- claims
def claims(a: dict, cfg: Config) -> list[rules.Claim]:
    b = cfg.beyond
    m0, d0 = b.models[0], b.datas[0]
    ref_recs, ref_meas = a["_verdicts"]["metrics", (m0, d0)]
    records = []
    for kind, names in (("model", b.models[1:]), ("data", b.datas[1:])):
        for name in names:
            cell = (name, d0) if kind == "model" else (m0, name)
            recs, meas = a["_verdicts"]["metrics", cell]
            records.append(option_claim(kind, name, ref_recs, ref_meas, recs, meas, cfg))
    too_small = _pairs.smoke_reason(cfg, cfg.sweep.n_test)
    return rules.smoke(records, too_small)


def option_claim(kind: str, name: str, ref_recs: dict, ref_meas: dict, recs: dict, meas: dict,
                 cfg: Config) -> rules.Claim:
    b = cfg.beyond
    ref_name = b.models[0] if kind == "model" else b.datas[0]
    k = kept({c: r.verdict for c, r in ref_recs.items()}, {c: r.verdict for c, r in recs.items()}, b.max_lost)
    fields = ", ".join(f"{f}={v!r}" for f, v in option(kind, name).items()) or "no field changed"
    statement = (f"Beyond the paper's {'model' if kind == 'model' else 'data'}: under {kind} option `{name}` "
                 f"({fields}), every Theorem 1-2 rule that passes for `{ref_name}` still passes")
    predicted = (f"the {len(k['need'])} rule(s) passing for the reference ({', '.join(k['need']) or 'none'}) pass, "
                 f"at most {b.max_lost} lost (thm1.threshold_curve: lambda*(alpha) within lam_tol = "
                 f"{cfg.claims.lam_tol:g} of 1 - alpha)")
    n_kept = len(k["need"]) - len(k["lost"]) - len(k["undecided"])
    stars = ", ".join(f"alpha={c[12:-1]}: {meas[c]:g} (reference {ref_meas.get(c, np.nan):g})"
                      for c in sorted((c for c in meas if c.startswith("lambda_star(")), key=lambda c: float(c[12:-1])))
    measured = (f"{n_kept}/{len(k['need'])} kept"
                + (f"; lost {', '.join(k['lost'])}" if k["lost"] else "")
                + (f"; undecided {', '.join(k['undecided'])}" if k["undecided"] else "")
                + (f"; gained {', '.join(k['gained'])}" if k["gained"] else "")
                + f"; lambda* {stars}; beta_neg {meas.get('beta_neg', np.nan):.3g} (reference "
                f"{ref_meas.get('beta_neg', np.nan):.3g})")
    changed = [f"{c}: {ref_recs[c].verdict} -> {recs[c].verdict} ({recs[c].measured})" for c in RULES
               if ref_recs[c].verdict != recs[c].verdict]
    details = ("Verdicts that differ from the reference: " + ("; ".join(changed) or "none") + ". Measured beta_add "
               f"{meas.get('beta_add', np.nan):.3g} (reference {ref_meas.get('beta_add', np.nan):.3g}). The "
               f"fine-tunes' own hinge loss (Psi*_T on T): T1 {meas.get('own_loss_T1', np.nan):.3g}, T2 "
               f"{meas.get('own_loss_T2', np.nan):.3g} (reference {ref_meas.get('own_loss_T1', np.nan):.3g}, "
               f"{ref_meas.get('own_loss_T2', np.nan):.3g}; a learned task needs <= eps = "
               f"{cfg.claims.eps_learned:g}). Cell "
               f"{'(' + name + ', ' + b.datas[0] + ')' if kind == 'model' else '(' + b.models[0] + ', ' + name + ')'}"
               " of matrix.csv; the rules and tolerances are those of claims.pair_claims.")
    n = min([r.n_seeds for r in recs.values()] + [r.n_seeds for r in ref_recs.values()])
    return rules.claim(f"beyond.{kind}.{name}", statement, predicted, measured, k["ok"], n, details,
                       undecided=("no rule passes for the reference" if not k["need"] else
                                  "a rule the reference passes is inconclusive under the option"))


# ------------------------------------------------------------------------------------------------------------ plot
VERDICT_COLORS = {"pass": "#8fd19e", "fail": "#f4a3a3", "inconclusive": "#d9d9d9", "reference": "#a9c8f0"}


def plot(tables, a: dict, cfg: Config, out) -> None:
    matrix_figure(a["matrix"], cfg, out)
    if len(a["dose_response"]):
        dose_figure(a["dose_response"], a["breaks"], cfg, out)


def matrix_figure(matrix: pd.DataFrame, cfg: Config, out) -> None:
    """Left: the model x data grid, each cell coloured by its beyond.* verdict (the reference blue, cells not run
    blank), with lambda*(alpha) and the measured beta_neg. Right: the seven Theorem 1-2 verdicts of every cell."""
    from tvtheory import plots

    b = cfg.beyond
    fig, (ax, ax2) = plots.plt.subplots(1, 2, figsize=(2.3 * len(b.datas) + 6.5, 1.05 * len(b.models) + 1.8),
                                        gridspec_kw={"width_ratios": [len(b.datas), 4.5]})
    for i, m in enumerate(b.models):
        for j, d in enumerate(b.datas):
            r = matrix[(matrix["model"] == m) & (matrix["data"] == d)]
            if r.empty:
                ax.add_patch(plots.plt.Rectangle((j, i), 1, 1, color="white", ec="0.8"))
                continue
            r = r.iloc[0]
            ax.add_patch(plots.plt.Rectangle((j, i), 1, 1, color=VERDICT_COLORS[r["kept"]], ec="white", lw=2))
            head = ("reference" if r["kept"] == "reference" else
                    f"{r['kept']} {int(r['n_kept'])}/{int(r['n_reference'])}")
            ax.text(j + 0.5, i + 0.5, f"{head}\nlambda*(alpha)\n{_stars(r).replace(', ', ' | ')}\nbeta_neg "
                    f"{r['beta_neg']:.2g}", ha="center", va="center", fontsize=6.5)
    ax.set_xlim(0, len(b.datas))
    ax.set_ylim(len(b.models), 0)
    ax.set_xticks(np.arange(len(b.datas)) + 0.5, [f"data={d}" for d in b.datas], rotation=25, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(b.models)) + 0.5, [f"model={m}" for m in b.models], fontsize=8)
    ax.set_title("beyond.* per cell: reference's passing rules kept; lambda*(alpha); measured beta_neg", fontsize=9)
    labels = [f"{r['model']} x {r['data']}" for _, r in matrix.iterrows()]
    for i, (_, r) in enumerate(matrix.iterrows()):
        for j, c in enumerate(RULES):
            ax2.add_patch(plots.plt.Rectangle((j, i), 1, 1, color=VERDICT_COLORS[r[c]], ec="white", lw=1.5))
    ax2.set_xlim(0, len(RULES))
    ax2.set_ylim(len(matrix), 0)
    ax2.set_xticks(np.arange(len(RULES)) + 0.5, RULES, rotation=40, ha="right", fontsize=7)
    ax2.set_yticks(np.arange(len(matrix)) + 0.5, labels, fontsize=7)
    ax2.set_title("Theorem 1-2 verdicts (green pass, red fail, grey inconclusive)", fontsize=9)
    fig.tight_layout()
    plots.save(fig, out, "matrix")


def dose_figure(dose: pd.DataFrame, brk: pd.DataFrame, cfg: Config, out) -> None:
    """Per knob: lambda*(alpha) against the dose (1 - alpha dashed), and the reference's passing rules still passing
    (right axis); a vertical line where the first one is lost."""
    from tvtheory import plots

    knobs = list(dict.fromkeys(dose["knob"]))
    fig, axes = plots.plt.subplots(1, len(knobs), figsize=(3.4 * len(knobs), 3.2), squeeze=False)
    cols = sorted((c for c in dose.columns if str(c).startswith("lambda_star(")), key=lambda c: float(c[12:-1]))
    for ax, knob in zip(axes[0], knobs):
        g = dose[dose["knob"] == knob]
        x = np.arange(len(g))
        for c in cols:
            a = float(c[12:-1])
            line, = ax.plot(x, g[c], marker="o", label=f"alpha={a:g}")
            if a >= 0:
                ax.axhline(1 - a, color=line.get_color(), ls="--", lw=0.8)
        ax.set_xticks(x, [f"{v:g}" for v in g["value"]])
        ax.set_xlabel(knob)
        ax.set_ylabel("lambda*")
        twin = ax.twinx()
        n_kept = np.where(g["kept"] == "reference", g["n_reference"].max(), g["n_kept"])
        twin.step(x, n_kept, where="mid", color="0.3", lw=1.2)
        twin.set_ylim(-0.3, len(RULES) + 0.3)
        twin.set_ylabel("reference's passing rules kept", fontsize=7)
        b = brk[brk["knob"] == knob]
        if len(b) and np.isfinite(b["breaks_at"].iloc[0]):
            ax.axvline(x[np.isclose(g["value"], b["breaks_at"].iloc[0])][0], color="tab:red", lw=1, ls=":")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Dose-response: lambda*(alpha) (dashed: 1 - alpha) and the rules kept; red: where one breaks first",
                 fontsize=9)
    fig.tight_layout()
    plots.save(fig, out, "dose_response")


# -------------------------------------------------------------------------------------------------------- estimate
# Seconds of one fine-tune relative to the paper's model at the same width (measured on 2 cores, m = 256): the
# two-layer and two-round networks run two blocks, the MLP one matmul per sample.
ARCH_COST = {"paper": 1.0, "multihead": 1.3, "two_layer": 2.6, "mlp": 0.2, "cnn": 1.2, "gnn": 0.6, "gnn2": 4.1}
COMPILE_S = 13.0         # compiling one cell's programs (each cell is a new static setup), and its share of the rest


def estimate(cfg: Config) -> Cost:
    total, memory = 0.0, 0.0
    unique = list(dict.fromkeys((c.model, c.data) for c in plan(cfg)))
    for m, d in unique:
        sub = dataclasses.replace(cfg, data=d, model=m)
        c = _pairs.pair_cost(sub, len(cfg.sweep.all_alphas()), len(cfg.sweep.lams()), cfg.sweep.n_test)
        name = "gnn2" if m.arch == "gnn" and m.rounds == 2 else m.arch
        total += c.seconds * ARCH_COST[name] + COMPILE_S
        memory = max(memory, c.memory_gb)
    return Cost(total, memory)
