"""Colored-Digits: the paper's Colored-MNIST experiments (Table 1, Figure 1, Table 2) on a small ViT, offline.

  python experiments/digits.py out_dir=results/digits          # 5 seeds, ~40 s on 2 CPU cores

Per seed: pre-train Psi_0 on 10-class digit identity with random colours, fine-tune T1 and its irrelevant, aligned
and contradictory partners (and T' for the out-of-domain check), then evaluate Psi_0 + dPsi_T1 + lambda dPsi_T2 and
Psi_0 + lambda_1 dPsi_T1 + lambda_2 dPsi_T2. Writes metrics.csv (relation, seed, lam, task, loss, acc),
alpha_hat.csv, ood.csv, reference.csv, table1.md, table2.md, claims.json, figures, config.yaml, provenance.json.
Each seed's trained models and their evaluations are cached (``cache.dir``), as the other experiments' are.
"""

import time

import hydra
import numpy as np

from _cli import CONF_DIR, out_dir, progress, run, save_run, store, validated

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

    def train_seed(k):
        _, p = vit.init(jax.random.fold_in(k, 0), **vars(c.vit))
        p0, _ = vit.pretrain(graphdef, p, jax.random.fold_in(k, 1), X_pre, jnp.asarray(splits["train"].digits),
                             steps=c.pretrain.steps, batch=c.pretrain.batch, lr=c.pretrain.lr)
        fts = {n: vit.finetune(graphdef, p0, jax.random.fold_in(k, 10 + i), *map(jnp.asarray, colored[n, "train"]),
                               steps=c.finetune.steps, batch=c.finetune.batch, lr=c.finetune.lr)[0]
               for i, n in enumerate(names)}
        return p0, {n: taskvec.task_vector(fts[n], p0) for n in names}

    # Cached per seed: the trained models, then their evaluations. Leading axis: seeds, on the host, so that picking
    # a seed or stacking task vectors costs no dispatch; every evaluation is one compiled call.
    st, seed_ids = store(c), np.arange(c.n_seeds, dtype=np.int32)
    fields = {"seed": c.seed, "split_seed": c.split_seed, "vit": vars(c.vit), "pretrain": vars(c.pretrain),
              "finetune": vars(c.finetune), "tasks": {n: list(getattr(c.tasks, n)) for n in names}}
    psi0, taus = sweep.per_seed(st, "digits_models", lambda s: {**fields, "s": s}, seed_ids,
                                lambda ids: jax.lax.map(train_seed, keys[ids]))
    progress(f"pre-trained and fine-tuned {len(names)} tasks x {c.n_seeds} seeds")
    lams = c.lams()
    grid = np.stack([np.ones_like(lams), lams], -1).astype(np.float32)
    coeffs = sweep.coefficient_grid(c.ood_ranges)
    test = {n: tuple(map(jnp.asarray, colored[n, "test"])) for n in names}
    seed_of = lambda t, s: jax.tree.map(lambda x: x[s], t)  # noqa: E731
    pair = lambda a, b: jax.tree.map(lambda x, y: jnp.stack([x, y]), a, b)  # noqa: E731
    tv_cosine = jax.jit(taskvec.cosine)

    def evaluate_seed(s):
        """Seed s's curves (relation, task, lambda), alpha_hat and accuracies per relation, the out-of-domain grid
        and the references on T' (direct fine-tune, T1, contradictory T2)."""
        p0, tv = seed_of(psi0, s), seed_of(taus, s)
        score = lambda delta, n: vit.evaluate(graphdef, p0, delta, *test[n])  # noqa: E731  (Psi_0 + delta on n)
        curves = [[vit.grid_eval(graphdef, p0, pair(tv["T1"], tv[rel]), grid, *test[name]) for name in ("T1", rel)]
                  for rel in RELATIONS]
        X_mix = {rel: jnp.concatenate([test["T1"][0], test[rel][0]]) for rel in RELATIONS}
        # Out of domain: T' (pure colour rule) from T1 and the contradictory T2.
        ood_loss, ood_acc = vit.grid_eval(graphdef, p0, pair(tv["T1"], tv["contradictory"]), coeffs, *test["target"])
        refs = [score(tv[n], "target") for n in ("target", "T1", "contradictory")]
        own_T1 = score(tv["T1"], "T1")["acc"]                      # T1's own accuracy, the same for every relation
        return {"loss": jnp.array([[lo for lo, _ in c] for c in curves]),
                "acc": jnp.array([[ac for _, ac in c] for c in curves]),
                "alpha_hat": jnp.stack([vit.output_cosine(graphdef, p0, tv["T1"], tv[r], X_mix[r]) for r in RELATIONS]),
                "tv_cosine": jnp.stack([tv_cosine(tv["T1"], tv[r]) for r in RELATIONS]),
                "own_acc": jnp.array([[own_T1, score(tv[r], r)["acc"]] for r in RELATIONS]),
                "ood_loss": ood_loss, "ood_acc": ood_acc,
                "ref_loss": jnp.stack([e["loss"] for e in refs]), "ref_acc": jnp.stack([e["acc"] for e in refs])}

    ev = sweep.per_seed(
        st, "digits_eval", lambda s: {**fields, "s": s, "lams": lams, "ood_ranges": c.ood_ranges}, seed_ids,
        lambda ids: jax.tree.map(lambda *x: jnp.stack(x), *[evaluate_seed(s) for s in ids]),
        like=jax.eval_shape(lambda: evaluate_seed(0)))              # the seed index must stay concrete
    rows, ahat, refs = [], [], []
    for s in range(c.n_seeds):
        for i, rel in enumerate(RELATIONS):
            for j, task in enumerate(("T1", "T2")):
                rows.append(pd.DataFrame({"relation": rel, "seed": s, "lam": lams, "task": task,
                                          "loss": ev["loss"][s, i, j], "acc": ev["acc"][s, i, j]}))
            ahat.append({"relation": rel, "seed": s, "alpha_hat": float(ev["alpha_hat"][s, i]),
                         "tv_cosine": float(ev["tv_cosine"][s, i]), "own_acc_T1": float(ev["own_acc"][s, i, 0]),
                         "own_acc_T2": float(ev["own_acc"][s, i, 1])})
        refs += [{"seed": s, "model": model, "loss": float(ev["ref_loss"][s, k]), "acc": float(ev["ref_acc"][s, k])}
                 for k, model in enumerate(("direct", "T1", "T2"))]
    rows = pd.concat(rows, ignore_index=True)
    ood = results.grid_table(ev["ood_loss"], ev["ood_acc"], coeffs, np.zeros(c.n_seeds, bool))
    with results.staged(out) as stage:
        results.write_csv(stage / "metrics.csv", rows)
        results.write_csv(stage / "alpha_hat.csv", pd.DataFrame(ahat))
        results.write_csv(stage / "ood.csv", ood)
        results.write_csv(stage / "reference.csv", pd.DataFrame(refs))
        save_run(stage, cfg, started, list(range(c.n_seeds)))
        report.digits(stage, c.claims, source=out / "metrics.csv")
        plots.digits(stage)
    progress(f"wrote {out} in {time.time() - started:.1f} s (cache: {st.hits} entries reused, {st.misses} computed)")


if __name__ == "__main__":
    run(main)
