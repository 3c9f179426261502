"""Theorems 1-2: add and negate a task vector across the task relation alpha (the paper's Figure 1 and Table 1).

  python experiments/arithmetic.py out_dir=results/arithmetic        # defaults: 21 alphas x 5 seeds x 51 lambdas
  python experiments/arithmetic.py -m data.d=16,32,64 model.m=64,256  # multirun; gather with tvtheory.gather

Writes metrics.csv (alpha, seed, lam, task, loss, acc), phase_metrics.csv, phase.csv, summary.csv, diagnostics.csv,
table1.md, claims.json, figures, config.yaml and provenance.json into out_dir.
"""

import time

import hydra
import numpy as np

from _cli import CONF_DIR, check_divergence, config_point, out_dir, progress, run, save_run, setup_of, store, validated


@hydra.main(config_path=CONF_DIR, config_name="arithmetic", version_base="1.3")
def main(cfg) -> None:
    c = validated(cfg)
    from tvtheory import plots, report, results, sweep  # JAX and friends load only once the config is valid

    out, started = out_dir(c), time.time()
    alphas, lams = c.sweep.all_alphas(), c.sweep.lams()
    st = store(c)
    r = sweep.pair_sweep(c.seed, c.n_seeds, alphas, lams, setup_of(c), n_test=c.sweep.n_test, chunk=c.sweep.chunk,
                         store=st, progress=progress)
    check_divergence(r.finite, "fine-tune pair")
    point = config_point(c)
    seeds = np.arange(c.n_seeds)
    rows = results.pair_table(r, alphas, lams, **point)
    diag = results.pair_diagnostics(r, alphas, **point)
    with results.staged(out) as stage:               # out/ changes only once everything below has succeeded
        results.write_csv(stage / "metrics.csv", rows[np.isin(rows["alpha"], np.round(c.sweep.alphas, 6))])
        if len(c.sweep.phase_alphas):
            phase_rows = rows[np.isin(rows["alpha"], np.round(c.sweep.phase_alphas, 6))]
            results.write_csv(stage / "phase_metrics.csv", phase_rows)
        results.write_csv(stage / "diagnostics.csv", diag)
        save_run(stage, cfg, started, seeds.tolist())
        report.arithmetic(stage, c.claims, source=out / "metrics.csv")   # phase, summary, table1, claims
        plots.arithmetic(stage)
    progress(f"wrote {out} in {time.time() - started:.1f} s (cache: {st.hits} entries reused, {st.misses} computed)")


if __name__ == "__main__":
    run(main)
