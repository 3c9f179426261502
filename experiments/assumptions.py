"""Theorems 1-2 under changed assumptions: the Figure 1 sweep once per model option, verdicts side by side.

  python experiments/assumptions.py out_dir=results/assumptions          # models: merged, pretrained, four
  python experiments/assumptions.py 'models=[merged,four]' n_seeds=10

Each name in ``models`` is an option of conf/model/ (a file there is a new option); the first is the reference. The
defaults compare the paper's setting (merged W and V, random Psi_0) with the second Psi_0 of theory.md (pre-trained
briefly on tasks whose tokens avoid the span of mu_T1 and mu_T2, whose patterns are therefore irrelevant patterns of
T1 and T2) and with the four-matrix form (W = W_K^T W_Q, V = W_O W_V, task vectors on the four matrices). Everything
else (fine-tunes, test sets, lambda grid, verdict rules) is the arithmetic experiment's, whose cache the reference
reuses.

Writes metrics.csv and diagnostics.csv (the arithmetic experiment's columns plus model and its fields), psi0.csv
(each Psi_0's norms and its loss on the pre-training tasks), verdicts.md and verdicts.json (the seven Theorem 1-2
claims under each model), figure1.png/pdf, config.yaml and provenance.json into out_dir. It is a robustness check,
not one of the paper's claims, so it writes no claims.json.
"""

import time

import hydra
import numpy as np

from _cli import CONF_DIR, check_divergence, out_dir, progress, run, save_run, setup_of, store, validated


@hydra.main(config_path=CONF_DIR, config_name="assumptions", version_base="1.3")
def main(cfg) -> None:
    c = validated(cfg)
    import pandas as pd

    from tvtheory import claims, config, plots, report, results, sweep  # JAX loads only once the config is valid

    out, started = out_dir(c), time.time()
    alphas, lams = c.sweep.all_alphas(), c.sweep.lams()
    st = store(c)
    seeds = np.arange(c.n_seeds)
    studied = np.eye(c.data.d)[:2]
    models = {name: config.model_option(name) for name in c.models}
    k_pre = max(m.pretrain_tasks for m in models.values())        # every Psi_0 is tried on these pre-training tasks
    common = {"d": c.data.d, "P": c.data.P, "n_rel": c.data.n_rel, "n_conf": c.data.n_conf, "sigma": c.data.sigma}
    rows, diag, psi0, records = [], [], [], {}
    for name, m in models.items():
        setup = setup_of(c, m)
        point = {**common, "model": name, "m": m.m, "form": m.form, "sigma_0": m.sigma_0, "sigma_w": m.sigma_w,
                 "pretrain_tasks": m.pretrain_tasks, "pretrain_steps": m.pretrain_steps if m.pretrain_tasks else 0}
        r = sweep.pair_sweep(c.seed, c.n_seeds, alphas, lams, setup, n_test=c.sweep.n_test, chunk=c.sweep.chunk,
                             store=st, progress=lambda msg, name=name: progress(f"{name}: {msg}"))
        check_divergence(r.finite, "fine-tune pair")
        table = results.pair_table(r, alphas, lams, **point)
        records[name] = claims.arithmetic_claims(table, c.claims)
        rows.append(table)
        diag.append(results.pair_diagnostics(r, alphas, **point))
        ev = sweep.psi0_eval(c.seed, setup, seeds, r.psi0, studied, c.sweep.n_test, k_pre)
        per_seed = {"W0_norm": ev["W0_norm"], "V0_norm": ev["V0_norm"]}
        if k_pre:
            per_seed |= {"pretrain_loss": ev["loss"].mean(1), "pretrain_acc": ev["acc"].mean(1)}
        psi0.append(results.tidy(per_seed, {"seed": seeds}, model=name))
    with results.staged(out) as stage:               # out/ changes only once everything below has succeeded
        results.write_csv(stage / "metrics.csv", pd.concat(rows, ignore_index=True))
        results.write_csv(stage / "diagnostics.csv", pd.concat(diag, ignore_index=True))
        results.write_csv(stage / "psi0.csv", pd.concat(psi0, ignore_index=True))
        save_run(stage, cfg, started, seeds.tolist())
        report.assumptions(stage, records, models, k_pre, source=out / "metrics.csv")
        plots.assumptions(stage)
    ref = c.models[0]
    for name in c.models[1:]:
        changed = [i for i, _, _ in report.changed_verdicts(records[ref], records[name])]
        progress(f"verdicts that {name} changes against {ref}: {', '.join(changed) or 'none'}")
    progress(f"wrote {out} in {time.time() - started:.1f} s (cache: {st.hits} entries reused, {st.misses} computed)")


if __name__ == "__main__":
    run(main)
