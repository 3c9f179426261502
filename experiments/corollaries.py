"""Corollaries 1-2: low-rank and pruned task vectors re-checked against Theorems 1-3; spectra and row norms of dV.

  python experiments/corollaries.py out_dir=results/corollaries

Writes spectra.csv, lowrank.csv, rownorms.csv, verdicts.csv (every claim of Theorems 1-3 per task-vector variant),
lambda_star.csv, claims.json and the figures corollaries_spectra, corollaries_rownorms, corollaries_verdicts.
"""

import time

import hydra

from _cli import CONF_DIR, check_divergence, out_dir, progress, run, save_run, setup_of, store, validated


@hydra.main(config_path=CONF_DIR, config_name="corollaries", version_base="1.3")
def main(cfg) -> None:
    c = validated(cfg)
    import pandas as pd

    from tvtheory import claims, plots, report, results, sweep

    out, started, st, setup = out_dir(c), time.time(), store(c), setup_of(c)
    co = c.corollaries
    variants = {"dense": sweep.Compression()}
    variants.update({f"rank{r}": sweep.Compression(rank=r) for r in co.ranks})
    variants.update({f"prune{f:g}": sweep.Compression(keep=1.0 - f) for f in co.prune})
    verdicts, stars = [], []
    for name, comp in variants.items():
        r = sweep.pair_sweep(c.seed, c.n_seeds, c.sweep.alphas, c.sweep.lams(), setup, n_test=co.n_test, store=st,
                             comp=comp)
        check_divergence(r.finite, "fine-tune pair")
        rows = results.pair_table(r, c.sweep.alphas, c.sweep.lams())
        o = sweep.ood_sweep(c.seed, c.n_seeds, c.ood.gammas, c.ood.kappa, c.ood.ranges, setup,
                            n_test=c.ood.n_test, store=st, comp=comp)
        grid = results.grid_table(o.loss, o.acc, o.coeffs, ~o.finite)
        refs = results.reference_table(o.ref_loss, o.ref_acc)
        recs = claims.arithmetic_claims(rows, c.claims) + claims.ood_claims(grid, refs, c.ood.gammas, c.claims,
                                                                            c.ood.iou_min)
        verdicts += [{"variant": name, "id": x["id"], "verdict": x["verdict"], "measured": x["measured"]}
                     for x in recs]
        cur = claims.curves(rows)
        stars += [{"variant": name, "alpha": a, "lambda_star": claims.lambda_star(cur, a, c.claims.eps_learned)}
                  for a in cur.alphas()]
        progress(f"variant {name} checked")
    taus = o.taus                      # the source tasks' task vectors, uncompressed whatever the variant
    M = c.data.d - len(c.ood.gammas) - 1                                # irrelevant patterns in play
    spectra, lowrank, norms = report.task_vector_structure(taus, o.psi0, co.spectrum_ranks, M, c.claims.eps_learned)
    with results.staged(out) as stage:
        for name, df in (("verdicts", pd.DataFrame(verdicts)), ("lambda_star", pd.DataFrame(stars)),
                         ("spectra", spectra), ("lowrank", lowrank), ("rownorms", norms)):
            results.write_csv(stage / f"{name}.csv", df)
        save_run(stage, cfg, started, list(range(c.n_seeds)))
        results.write_claims(stage, claims.corollary_claims(
            pd.DataFrame(verdicts), pd.DataFrame(stars), norms, c.model.m, c.n_seeds, c.claims, co.prune_min,
            co.two_groups_ratio), source=str(out / "verdicts.csv"))
        plots.corollaries(stage)
    progress(f"wrote {out} in {time.time() - started:.1f} s (cache: {st.hits} entries reused, {st.misses} computed)")


if __name__ == "__main__":
    run(main)
