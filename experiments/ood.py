"""Theorem 3: reach an out-of-domain task T' with Psi_0 + sum_i lambda_i dPsi_Ti (the paper's Figure 2, Table 2).

  python experiments/ood.py out_dir=results/ood                 # 51 x 41 grid x 5 seeds, ~2 min
  python experiments/ood.py ood.gammas=[0.6,-0.5,0.3] 'ood.ranges=[[-1,2,0.5],[-1,2,0.5],[-1,2,0.5]]'   # k = 3

Writes metrics.csv (seed, lam1..lamK, loss, acc), reference.csv (direct fine-tune on T' and each single task
vector), region.json, table2.md, claims.json, figure2 (PNG, PDF), config.yaml and provenance.json into out_dir.
"""

import time

import hydra
import numpy as np

from _cli import CONF_DIR, check_divergence, out_dir, progress, run, save_run, setup_of, store, validated


@hydra.main(config_path=CONF_DIR, config_name="ood", version_base="1.3")
def main(cfg) -> None:
    c = validated(cfg)
    from tvtheory import plots, report, results, sweep  # JAX and friends load only once the config is valid

    out, started, st = out_dir(c), time.time(), store(c)
    r = sweep.ood_sweep(c.seed, c.n_seeds, c.ood.gammas, c.ood.kappa, c.ood.ranges, setup_of(c),
                        n_test=c.ood.n_test, chunk=c.ood.chunk, store=st, progress=progress)
    check_divergence(r.finite, "seed's fine-tune set")
    rows = results.grid_table(r.loss, r.acc, r.coeffs, ~np.asarray(r.finite))
    refs = results.reference_table(r.ref_loss, r.ref_acc)
    with results.staged(out) as stage:
        results.write_csv(stage / "metrics.csv", rows)
        results.write_csv(stage / "reference.csv", refs)
        save_run(stage, cfg, started, list(range(c.n_seeds)))
        report.ood(stage, c.ood.gammas, c.claims, c.ood.iou_min, source=out / "metrics.csv")
        plots.ood(stage)
    progress(f"wrote {out} in {time.time() - started:.1f} s (cache: {st.hits} entries reused, {st.misses} computed)")


if __name__ == "__main__":
    run(main)
