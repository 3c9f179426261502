"""What the paper states only as Theta(.): beta against d and m, and the iterations to reach eps against delta_*.

  python experiments/scaling.py out_dir=results/scaling

Writes beta.csv (d, m, beta_add, beta_neg, lambda*, T1's own loss, m / (M^2 log M)), beta_seeds.csv,
convergence.csv (delta_*, seed, steps), claims.json and the figures scaling_beta, scaling_convergence.
"""

import time

import hydra
import numpy as np

from _cli import CONF_DIR, check_divergence, out_dir, progress, run, save_run, setup_of, store, validated


@hydra.main(config_path=CONF_DIR, config_name="scaling", version_base="1.3")
def main(cfg) -> None:
    c = validated(cfg)
    import pandas as pd

    from tvtheory import claims, plots, results, sweep

    out, started, st, sc = out_dir(c), time.time(), store(c), c.scaling
    lams, eps = sc.lams(), c.claims.eps_learned
    beta, beta_seeds = [], []
    for d in sc.ds:
        for m in sc.ms:
            r = sweep.pair_sweep(c.seed, c.n_seeds, [0.0], lams, setup_of(c)._replace(d=d, m=m), n_test=sc.n_test,
                                 store=st)
            check_divergence(r.finite, "fine-tune pair")
            rows = results.pair_table(r, [0.0], lams)
            cur = claims.curves(rows)
            M = d - 2
            beta.append({"d": d, "m": m, **claims.beta_hat(cur), "lambda_star": claims.lambda_star(cur, 0.0, eps),
                         "own_loss_T1": float(np.mean(r.single_loss[..., 0])), "one_over_d": 1 / d,
                         "m_over_M2logM": m / (M**2 * np.log(M))})
            beta_seeds += [{"d": d, "m": m, "seed": s, **claims.beta_hat(claims.curves(rows[rows["seed"] == s]))}
                           for s in range(c.n_seeds)]
            progress(f"beta at d={d}, m={m}: {beta[-1]['beta_neg']:.3g}")
    conv = []
    setup = setup_of(c)
    spec = c.train.spec()._replace(steps=sc.conv_steps, log_every=1)
    seed_ids = np.arange(c.n_seeds, dtype=np.int32)
    for n_rel in sc.n_rels:
        s_n = setup._replace(task=c.data.task_spec()._replace(n_rel=n_rel, n_conf=sc.conv_n_conf), spec=spec)
        irr = sweep.irrelevant(c.seed, s_n, np.eye(c.data.d)[:2])
        psi0 = sweep.pretrained(c.seed, s_n, seed_ids, st, np.eye(c.data.d)[:2])
        ft = sweep.finetune_all(c.seed, s_n, seed_ids, psi0, np.eye(c.data.d)[0], 0, irr, st)
        check_divergence(ft.finite, "fine-tune")
        conv += [{"n_rel": n_rel, "delta_star": n_rel / c.data.P, "seed": s,
                  "steps": claims.steps_to_eps(ft.curve_loss[s], eps, sc.conv_window)} for s in range(c.n_seeds)]
        progress(f"convergence at delta_*={n_rel / c.data.P:g} done")
    beta, conv = pd.DataFrame(beta), pd.DataFrame(conv)
    with results.staged(out) as stage:
        results.write_csv(stage / "beta.csv", beta)
        results.write_csv(stage / "beta_seeds.csv", pd.DataFrame(beta_seeds))
        results.write_csv(stage / "convergence.csv", conv)
        save_run(stage, cfg, started, list(range(c.n_seeds)))
        results.write_claims(stage, claims.scaling_claims(beta, conv, c.model.m, sc.exponent_tol, c.n_seeds),
                             source=str(out / "beta.csv"))
        plots.scaling(stage)
    progress(f"wrote {out} in {time.time() - started:.1f} s (cache: {st.hits} entries reused, {st.misses} computed)")


if __name__ == "__main__":
    run(main)
