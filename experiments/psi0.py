"""Does Psi_0 matter? Theorems 1-2 with the random Psi_0 and with a pre-trained one (theory.md section 2).

  python experiments/psi0.py out_dir=results/psi0                          # 5 alphas x 5 seeds x 51 lambdas, twice
  python experiments/psi0.py model.pretrain_tasks=8 model.pretrain_steps=300

The pre-trained Psi_0 starts from the random one and takes model.pretrain_steps SGD steps on a mixture of
model.pretrain_tasks tasks whose tokens all lie outside the span of mu_T1 and mu_T2 (step t: task t mod K). Its
patterns are irrelevant patterns of T1 and T2, so Psi_0 now responds strongly to some of the tokens that the theorems
assume carry no signal. Everything else (fine-tunes, test sets, lambda grid, verdict rules) is the arithmetic
experiment's.

Writes metrics.csv and diagnostics.csv (the arithmetic experiment's columns plus psi0 = random | pretrained),
pretraining.csv (Psi_0 on its own pre-training tasks and on T1), verdicts.md and verdicts.json (the seven Theorem 1-2
claims under each Psi_0), figure1.png/pdf, config.yaml and provenance.json into out_dir.
"""

import time

import hydra
import numpy as np

from _cli import CONF_DIR, check_divergence, config_point, out_dir, progress, run, save_run, setup_of, store, validated


@hydra.main(config_path=CONF_DIR, config_name="psi0", version_base="1.3")
def main(cfg) -> None:
    c = validated(cfg)
    import pandas as pd

    from tvtheory import claims, plots, report, results, sweep  # JAX and friends load only once the config is valid

    out, started = out_dir(c), time.time()
    alphas, lams = c.sweep.all_alphas(), c.sweep.lams()
    st, pre = store(c), setup_of(c)
    point = {k: v for k, v in config_point(c).items() if not k.startswith("pretrain")}   # the psi0 column says it
    seeds = np.arange(c.n_seeds)
    rows, diag, records = [], [], {}
    for name, setup in (("random", pre._replace(pretrain_tasks=0)), ("pretrained", pre)):
        r = sweep.pair_sweep(c.seed, c.n_seeds, alphas, lams, setup, n_test=c.sweep.n_test, chunk=c.sweep.chunk,
                             store=st, progress=lambda msg, name=name: progress(f"{name} Psi_0: {msg}"))
        check_divergence(r.finite, "fine-tune pair")
        table = results.pair_table(r, alphas, lams, **point)
        records[name] = claims.arithmetic_claims(table, c.claims)
        rows.append(table.assign(psi0=name))
        diag.append(results.tidy({"alpha_hat": r.alpha_hat, "tv_cosine": r.tv_cosine, "diverged": ~np.asarray(r.finite),
                                  "own_loss_T1": r.single_loss[..., 0], "own_loss_T2": r.single_loss[..., 1],
                                  "dW_T1": r.norms[..., 0, 0], "dV_T1": r.norms[..., 0, 1],
                                  "dW_T2": r.norms[..., 1, 0], "dV_T2": r.norms[..., 1, 1]},
                                 {"alpha": alphas, "seed": seeds}, psi0=name, **point))
    ev = sweep.pretraining_eval(c.seed, pre, np.arange(c.n_seeds, dtype=np.int32), st, np.eye(c.data.d)[:2],
                                c.sweep.n_test)
    K = c.model.pretrain_tasks
    ev["W_norm"], ev["V_norm"] = (np.repeat(ev[k][..., None], K, axis=-1) for k in ("W_norm", "V_norm"))
    pretraining = results.tidy(ev, {"psi0": ["random", "pretrained"], "seed": seeds,
                                    "task": [f"P{j + 1}" for j in range(K)]})
    with results.staged(out) as stage:               # out/ changes only once everything below has succeeded
        results.write_csv(stage / "metrics.csv", pd.concat(rows, ignore_index=True))
        results.write_csv(stage / "diagnostics.csv", pd.concat(diag, ignore_index=True))
        results.write_csv(stage / "pretraining.csv", pretraining)
        save_run(stage, cfg, started, seeds.tolist())
        report.psi0(stage, records, pretraining, (c.model.pretrain_tasks, c.model.pretrain_steps),
                    source=out / "metrics.csv")
        plots.psi0(stage)
    changed = [r["id"] for r, q in zip(records["random"], records["pretrained"]) if r["verdict"] != q["verdict"]]
    progress(f"verdicts changed by pre-training Psi_0: {', '.join(changed) or 'none'}")
    progress(f"wrote {out} in {time.time() - started:.1f} s (cache: {st.hits} entries reused, {st.misses} computed)")


if __name__ == "__main__":
    run(main)
