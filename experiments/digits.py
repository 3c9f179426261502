"""Colored-Digits: the paper's Colored-MNIST experiments (Table 1, Figure 1, Table 2) on a small ViT, offline.

  python experiments/digits.py out_dir=results/digits          # 5 seeds, ~40 s on 2 CPU cores

Per seed: pre-train Psi_0 on 10-class digit identity with random colours, fine-tune T1 and its irrelevant, aligned
and contradictory partners (and T' for the out-of-domain check), then evaluate Psi_0 + dPsi_T1 + lambda dPsi_T2 and
Psi_0 + lambda_1 dPsi_T1 + lambda_2 dPsi_T2. Writes metrics.csv (relation, seed, lam, task, loss, acc),
alpha_hat.csv, ood.csv, reference.csv, table1.md, table2.md, claims.json, figures, config.yaml, provenance.json.
"""

import time

import hydra
import numpy as np

from _cli import CONF_DIR, out_dir, progress, run, save_run, validated

RELATIONS = ("irrelevant", "aligned", "contradictory")


@hydra.main(config_path=CONF_DIR, config_name="digits", version_base="1.3")
def main(cfg) -> None:
    c = validated(cfg)
    import jax
    import jax.numpy as jnp
    import pandas as pd

    from tvtheory import digits, plots, report, results, sweep, taskvec, vit

    out, started = out_dir(c), time.time()
    splits = digits.load(c.split_seed)
    names = ("T1",) + RELATIONS + ("target",)
    rules = {n: digits.ColorRule(*getattr(c.tasks, n)) for n in names}
    # One colour stream per (task, split): fixed by the split seed, shared by every model seed.
    colored = {(n, sp): digits.colorize(splits[sp], rules[n], 1000 * i + j)[:2]
               for i, n in enumerate(names) for j, sp in enumerate(("train", "test"))}
    X_pre = jnp.asarray(digits.random_colors(splits["train"], 7))
    graphdef, _ = vit.init(jax.random.key(0), **vars(c.vit))
    keys = sweep.seed_keys(c.seed, c.n_seeds)

    def per_seed(k):
        _, p = vit.init(jax.random.fold_in(k, 0), **vars(c.vit))
        p0, _ = vit.pretrain(graphdef, p, jax.random.fold_in(k, 1), X_pre, jnp.asarray(splits["train"].digits),
                             steps=c.pretrain.steps, batch=c.pretrain.batch, lr=c.pretrain.lr)
        fts = {n: vit.finetune(graphdef, p0, jax.random.fold_in(k, 10 + i), *map(jnp.asarray, colored[n, "train"]),
                               steps=c.finetune.steps, batch=c.finetune.batch, lr=c.finetune.lr)[0]
               for i, n in enumerate(names)}
        return p0, {n: taskvec.task_vector(fts[n], p0) for n in names}

    # Leading axis: seeds. On the host from here on, so that picking a seed or stacking task vectors costs no
    # dispatch; every evaluation below is one compiled call.
    psi0, taus = jax.device_get(jax.lax.map(per_seed, keys))
    progress(f"pre-trained and fine-tuned {len(names)} tasks x {c.n_seeds} seeds")
    lams = c.lams()
    seed_of = lambda t, s: jax.tree.map(lambda x: x[s], t)  # noqa: E731
    stack = lambda a, b: jax.tree.map(lambda x, y: np.stack([x, y]), a, b)  # noqa: E731
    tv_cosine = jax.jit(taskvec.cosine)
    rows, ahat, refs, ood = [], [], [], []
    coeffs = sweep.coefficient_grid(c.ood_ranges)
    test = {n: tuple(map(jnp.asarray, colored[n, "test"])) for n in names}
    for s in range(c.n_seeds):
        p0, tv = seed_of(psi0, s), seed_of(taus, s)
        score = lambda delta, n: vit.evaluate(graphdef, p0, delta, *test[n])  # noqa: E731  (Psi_0 + delta on n)
        for rel in RELATIONS:
            stacked = stack(tv["T1"], tv[rel])
            grid = np.stack([np.ones_like(lams), lams], -1).astype(np.float32)
            for task, name in (("T1", "T1"), ("T2", rel)):
                loss, acc = vit.grid_eval(graphdef, p0, stacked, grid, *test[name])
                rows.append(pd.DataFrame({"relation": rel, "seed": s, "lam": lams, "task": task,
                                          "loss": np.asarray(loss), "acc": np.asarray(acc)}))
            X_mix = jnp.concatenate([test["T1"][0], test[rel][0]])
            ahat.append({"relation": rel, "seed": s,
                         "alpha_hat": float(vit.output_cosine(graphdef, p0, tv["T1"], tv[rel], X_mix)),
                         "tv_cosine": float(tv_cosine(tv["T1"], tv[rel])),
                         "own_acc_T1": float(score(tv["T1"], "T1")["acc"]),
                         "own_acc_T2": float(score(tv[rel], rel)["acc"])})
        # Out of domain: T' (pure colour rule) from T1 and the contradictory T2.
        stacked = stack(tv["T1"], tv["contradictory"])
        ood.append(vit.grid_eval(graphdef, p0, stacked, coeffs, *test["target"]))
        for model, delta in (("direct", tv["target"]), ("T1", tv["T1"]), ("T2", tv["contradictory"])):
            ev = score(delta, "target")
            refs.append({"seed": s, "model": model, "loss": float(ev["loss"]), "acc": float(ev["acc"])})
    rows = pd.concat(rows, ignore_index=True)
    ood = results.grid_table(*(np.stack(x) for x in zip(*ood)), coeffs, np.zeros(c.n_seeds, bool))
    with results.staged(out) as stage:
        results.write_csv(stage / "metrics.csv", rows)
        results.write_csv(stage / "alpha_hat.csv", pd.DataFrame(ahat))
        results.write_csv(stage / "ood.csv", ood)
        results.write_csv(stage / "reference.csv", pd.DataFrame(refs))
        save_run(stage, cfg, started, list(range(c.n_seeds)))
        report.digits(stage, c.claims, source=out / "metrics.csv")
        plots.digits(stage)
    progress(f"wrote {out} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    run(main)
