"""Corollaries 1-2: low-rank and row-pruned task vectors, and the structure of dW and dV they rest on.

Every Theorem 1-3 measurement (the pair sweep of Figure 1's alphas and the out-of-domain grid) is repeated with each
compressed variant of the task vectors (rank-r truncation of every matrix; dV's smallest rows pruned), reusing the
cached fine-tunes; the claims compare the measured quantities (lambda*, the negation windows, Theorem 3's success
region and best loss) with the dense ones within the declared tolerances.
"""

from __future__ import annotations

from typing import List

import numpy as np
import pandas as pd

from tvtheory import _check, analysis, claims as rules
from tvtheory.config import OOD, Node, Sweep, Synthetic, check_list, config, field
from tvtheory.experiments import _pairs, ood as ood_exp
from tvtheory.runner import Cost

COST, AFTER = 208, ("arithmetic", "ood")
TABLES = ("pair_metrics", "ood_metrics", "spectra", "lowrank", "rownorms")
SIZE_FIELDS = ("n_seeds", "sweep.lam_step", "corollaries.n_test", "ood.ranges", "ood.n_test", "corollaries.ranks",
               "corollaries.prune", "train.steps", "model.m", "data.d")


@config
class Corollaries(Node):
    ranks: List[int] = field(help="rank-r task vectors re-checked (the smallest is the claim's; rank 2 keeps dV's "
                             "second direction, the irrelevant patterns' mean)", factory=lambda: [1, 2])
    spectrum_ranks: List[int] = field(help="truncation errors reported (and full rank)", factory=lambda: [1, 2, 4])
    prune: List[float] = field(help="fractions of dV's rows removed", factory=lambda: [0.25, 0.5, 0.75, 0.9, 0.95])
    prune_min: float = field(0.5, "cor2.pruning_keeps passes if pruning this fraction keeps every quantity (the "
                             "corollary's 'constant fraction')")
    two_groups_ratio: float = field(10.0, "cor2.two_groups: large-group / small-group mean row norm; the corollary's "
                                    "ratio is ~1/eps = 20 at eps_learned = 0.05, half of it allows for its constants")
    two_groups_min_fraction: float = field(0.05, "cor2.two_groups: each group at least this fraction of the rows (the "
                                           "corollary's 'constant fraction')")
    region_iou: float = field(0.8, "Theorem 3's success region is kept when its IoU with the dense one is at least "
                              "this")
    n_test: int = field(1000, "test samples per task for the re-checks")

    def check(self):
        check_list("ranks", self.ranks)
        check_list("spectrum_ranks", self.spectrum_ranks)
        for name in ("ranks", "spectrum_ranks"):
            for i, r in enumerate(getattr(self, name)):
                _check.integer(f"{name}[{i}]", r, lo=1)
        check_list("prune", self.prune)
        for i, f in enumerate(self.prune):
            _check.in_range(f"prune[{i}]", f, 0.0, 1.0, lo_open=True, hi_open=True)
        _check.in_range("prune_min", self.prune_min, 0.0, 1.0, hi_open=True)
        _check.in_range("two_groups_ratio", self.two_groups_ratio, lo=1.0)
        _check.in_range("two_groups_min_fraction", self.two_groups_min_fraction, 0.0, 0.5)
        _check.in_range("region_iou", self.region_iou, 0.0, 1.0)
        _check.integer("n_test", self.n_test, lo=1)


@config
class Config(Synthetic):
    sweep: Sweep = field(Sweep(phase_alphas=[]), "the Figure 1 alphas and the lambda grid")
    ood: OOD = field(OOD(ranges=[[-2.0, 3.0, 0.2], [-2.0, 2.0, 0.2]], n_test=1000), "Theorem 3's target and grid")
    corollaries: Corollaries = field(Corollaries(), "the compressed variants")

    def n_task_dirs(self) -> int:
        return self.ood.n_task_dirs()

    def check(self):
        super().check()
        if self.model.arch != "paper":
            _check.fail("model.arch", self.model.arch,
                        "the corollaries compress the paper's dW and dV: must be 'paper'")
        for name in ("ranks", "spectrum_ranks"):
            for i, r in enumerate(getattr(self.corollaries, name)):
                _check.integer(f"corollaries.{name}[{i}]", r, lo=1, hi=min(self.data.d, self.model.m))
        if self.sweep.phase_alphas:                  # read by no stage here: refused rather than silently ignored
            _check.fail("sweep.phase_alphas", list(self.sweep.phase_alphas),
                        "the corollaries draw no phase diagram (their alphas: sweep.alphas)")


def variants(co: Corollaries) -> list:
    from tvtheory import sweep

    return ([sweep.Compression()] + [sweep.Compression(rank=r) for r in co.ranks]
            + [sweep.Compression(keep=round(1.0 - f, 9)) for f in co.prune])


def run(cfg: Config, ctx) -> dict[str, pd.DataFrame]:
    from tvtheory import results, sweep

    setup, co, o = sweep.Setup(cfg.data, cfg.model, cfg.train), cfg.corollaries, cfg.ood
    pairs, grids = [], []
    point = ctx.progress("variants")
    vs = variants(co)
    for i, comp in enumerate(vs):
        r = sweep.pair_sweep(cfg.seed, cfg.n_seeds, cfg.sweep.alphas, cfg.sweep.lams(), setup, n_test=co.n_test,
                             chunk=cfg.sweep.chunk, store=ctx.store, comp=comp)
        # Whether a seed's fine-tunes trained is decided on the dense variant (the first) and holds for every
        # variant: a compressed task vector that leaves its own task at chance is a finding, not a diverged seed.
        valid, at_chance = _pairs.validity(r, cfg.claims)
        if i == 0:
            _pairs.check_divergence(valid, "fine-tune pair", ctx)
            dense_valid, dense_at_chance = valid, at_chance
        valid = np.asarray(r.finite) & dense_valid
        pairs.append(_pairs.pair_tables(r, cfg.sweep.alphas, cfg.sweep.lams(), valid, dense_at_chance)["metrics"]
                     .assign(variant=comp.name))
        g = sweep.ood_sweep(cfg.seed, cfg.n_seeds, o.gammas, o.kappa, o.ranges, setup, n_test=o.n_test,
                            n_val=o.n_val, chunk=o.chunk, store=ctx.store, comp=comp)
        if i == 0:
            dense_ok = np.asarray(g.finite) & np.all(np.asarray(g.own_acc) > cfg.claims.chance_acc, axis=1)
            _pairs.check_divergence(dense_ok, "seed's out-of-domain fine-tune set", ctx)     # as ood does
        ok = np.asarray(g.finite) & dense_ok
        grids.append(results.grid_table(g.coeffs, ~ok, loss=g.loss, acc=g.acc, val_loss=g.val_loss,
                                        val_acc=g.val_acc).assign(variant=comp.name))
        point(i + 1, len(vs), comp.name)
    # The structure the corollaries rest on, from the source tasks' task vectors (uncompressed).
    spectra, lowrank, norms = structure(g.taus, g.psi0, co.spectrum_ranks, cfg.data.d - len(o.gammas) - 1,
                                        cfg.claims.eps_learned)
    return {"pair_metrics": pd.concat(pairs, ignore_index=True), "ood_metrics": pd.concat(grids, ignore_index=True),
            "spectra": spectra, "lowrank": lowrank, "rownorms": norms}


def analyse(tables, cfg: Config) -> dict:
    pm, om = tables["pair_metrics"], tables["ood_metrics"]
    q, kept_by = rules.compare_variants(pm, om, cfg.claims, cfg.data.d, cfg.corollaries.region_iou)
    names = list(q)
    stars, verdicts = [], []
    for v in names:
        # Every alpha >= 0 of the table: the mean of the seeds' lambda* over those whose lambda* exists (n_seeds of
        # them; 0, with no lambda*, where the variant lost every seed of the alpha or none reached eps).
        for a in (a for a in q[v]["valid_seeds"].index if a >= 0):
            s = np.asarray(q[v]["lambda_star"].get(a, []), float)
            stars.append({"variant": v, "alpha": a, "lambda_star": float(np.nanmean(s)) if np.isfinite(s).any()
                          else np.nan, "n_seeds": int(np.isfinite(s).sum())})
        recs = (rules.pair_claims(pm[pm["variant"] == v], cfg.claims, cfg.data.d)
                + rules.ood_region_claims(om[om["variant"] == v], None, cfg.ood.gammas, cfg.claims, cfg.ood,
                                          cfg.data.d))
        verdicts += [{"variant": v, "id": r.id, "verdict": r.verdict, "measured": r.measured} for r in recs]
    keeps = [{"variant": v, "theorem": t, "kept": rules._word(ok), "n_seeds": n, "numbers": text}
             for v, kk in kept_by.items() for t, (ok, text, n) in kk.items()]
    return {"lambda_star": pd.DataFrame(stars), "verdicts": pd.DataFrame(verdicts), "keeps": pd.DataFrame(keeps),
            "_kept_by": kept_by, "_n_dense": q["dense"]["n_seeds"], "_rownorms": of_valid_seeds(tables, "rownorms")}


def claims(a: dict, cfg: Config) -> list[rules.Claim]:
    import dataclasses

    too_small = _pairs.smoke_reason(cfg, min(cfg.corollaries.n_test, cfg.ood.n_test))
    recs = rules.corollary_claims(a["_kept_by"], a["_n_dense"], a["_rownorms"], cfg.model.m, cfg.claims,
                                  cfg.corollaries, too_small)
    return [dataclasses.replace(r, source="rownorms" if r.id == "cor2.two_groups" else "pair_metrics") for r in recs]


def plot(tables, a: dict, cfg: Config, out) -> None:
    from tvtheory import plots

    plots.corollaries(of_valid_seeds(tables, "spectra"), of_valid_seeds(tables, "rownorms"), a["verdicts"], out)


def of_valid_seeds(tables, name: str) -> pd.DataFrame:
    """A structure table's rows (spectra, lowrank, rownorms: no ``diverged`` column) of the valid seeds. They measure
    the out-of-domain source fine-tunes, whose validity the run decides per seed (every fine-tune and evaluation
    finite, every source above chance on its own task) and records in the dense variant's ood_metrics rows; the
    pair_metrics flags are of other fine-tunes (each alpha's pair)."""
    om = tables["ood_metrics"]
    return analysis.valid_in(tables[name], om[om["variant"] == "dense"])


def estimate(cfg: Config) -> Cost:
    n = 1 + len(cfg.corollaries.ranks) + len(cfg.corollaries.prune)
    pair = _pairs.pair_cost(cfg, len(cfg.sweep.alphas), len(cfg.sweep.lams()), cfg.corollaries.n_test, n_models=n)
    grid = ood_exp.estimate(ood_exp.Config(data=cfg.data, model=cfg.model, train=cfg.train, ood=cfg.ood,
                                           n_seeds=cfg.n_seeds))
    return Cost(pair.seconds + n * grid.seconds, max(pair.memory_gb, grid.memory_gb))


def structure(taus, psi0, ranks, M: int, eps: float):
    """Corollaries 1-2's premises, per seed and task: the singular values of dW and dV (the change of the merged
    weights, model.merged_delta), the rank-r truncation errors ||d - d_r||_F beside the corollary's bound terms
    (constants set to 1: M eps + 1/log M for dW, eps for dV), and the norms of dV's rows (one per hidden neuron).
    ``taus`` has leaves (S, K, ...), ``psi0`` leaves (S, ...)."""
    from tvtheory import model, taskvec

    leaves = {k: np.asarray(v) for k, v in taus.items()}
    S, K = next(iter(leaves.values())).shape[:2]
    spectra, lowrank, norms = [], [], []
    for s in range(S):
        base = {n: np.asarray(v)[s] for n, v in psi0.items()}
        for k in range(K):
            W, V = (np.asarray(x) for x in model.merged_delta(base, {n: v[s, k] for n, v in leaves.items()}))
            for name, X in (("dW", W), ("dV", V)):
                sv = np.linalg.svd(X, compute_uv=False)
                spectra += [{"seed": s, "task": f"T{k + 1}", "matrix": name, "index": i, "sv": x}
                            for i, x in enumerate(sv)]
                for r in [x for x in ranks if x < len(sv)] + [len(sv)]:
                    approx, rel = taskvec.low_rank({"X": X}, int(r))
                    bound = M * eps + 1 / np.log(M) if name == "dW" else eps
                    lowrank.append({"seed": s, "task": f"T{k + 1}", "matrix": name, "rank": int(r),
                                    "full_rank": r == len(sv), "abs_err": float(np.linalg.norm(X - approx["X"])),
                                    "rel_err": float(rel["X"]), "norm": float(np.linalg.norm(X)),
                                    "bound_term": bound})
            norms += [{"seed": s, "task": f"T{k + 1}", "row": i, "norm": x} for i, x in
                      enumerate(np.linalg.norm(V, axis=1))]
    return pd.DataFrame(spectra), pd.DataFrame(lowrank), pd.DataFrame(norms)
