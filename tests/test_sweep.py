import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvtheory import data, metrics, model, sweep, taskvec, train


@pytest.mark.parametrize("form", ["merged", "four"])
def test_grid_eval_matches_plain_evaluation(form):
    """The affine reuse of products (merged form) and its quadratic expansion (four-matrix form) equal a direct
    forward pass of base + sum_k c_k tau_k."""
    d, m = 8, 16
    mus = data.pair_patterns(0.3, d)
    irr = data.irrelevant_patterns(mus)
    spec = data.TaskSpec(10, 3, 1)
    X, y = data.sample(jax.random.key(0), mus[0], irr, 50, spec)
    base = model.init_params(jax.random.key(1), d, m, form, sigma_0=0.5, sigma_w=0.3)
    taus = [model.init_params(jax.random.key(k), d, m, form, sigma_0=0.5, sigma_w=0.3) for k in (2, 3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *taus)
    coeffs = jnp.array([[0.0, 0.0], [1.0, -0.5], [-2.0, 3.0], [0.3, 0.7], [1.5, 1.5]])
    loss, acc = sweep.grid_eval(base, stacked, coeffs, X, y, chunk=2)
    for i, c in enumerate(coeffs):
        ref = metrics.evaluate(taskvec.apply(base, taus, c), X, y)
        assert float(loss[i]) == pytest.approx(float(ref["loss"]), abs=1e-4)
        assert float(acc[i]) == pytest.approx(float(ref["acc"]), abs=1e-6)


def tiny_sweep(seed=0, **kw):
    setup = sweep.Setup(8, 16, data.TaskSpec(10, 3, 1), train.TrainSpec(steps=40, batch=16, log_every=20))
    args = dict(n_seeds=2, alphas=[-0.5, 0.0, 0.5], lams=[-1.0, 0.0, 1.0, 2.0], setup=setup, n_test=64,
                n_alpha_hat=32, chunk=2)
    args.update(kw)
    return sweep.pair_sweep(seed, **args)


def test_pair_sweep_shapes_and_determinism():
    a, b = tiny_sweep(), tiny_sweep()
    assert a.loss.shape == (3, 2, 4, 2) and a.finite.shape == (3, 2) and a.norms.shape == (3, 2, 2, 2)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    c = tiny_sweep(seed=1)
    assert not np.array_equal(np.asarray(a.loss), np.asarray(c.loss))


def test_pair_sweep_matches_the_unbatched_pipeline():
    """One (alpha, seed) cell recomputed step by step with the streams the sweep documents."""
    r = tiny_sweep()
    d, m, task = 8, 16, data.TaskSpec(10, 3, 1)
    spec = train.TrainSpec(steps=40, batch=16, log_every=20)
    seed_key = jax.random.fold_in(jax.random.key(0), 1)                # seed index 1
    ks = sweep.streams(seed_key, 2)
    mus = data.pair_patterns(0.5, d)
    irr = data.irrelevant_patterns(jnp.eye(d)[:2])
    psi0 = model.init_params(ks["init"], d, m)
    t1 = taskvec.task_vector(train.finetune(psi0, ks["ft"][0], mus[0], irr, task, spec).params, psi0)
    t2 = taskvec.task_vector(train.finetune(psi0, ks["ft"][1], mus[1], irr, task, spec).params, psi0)
    X, y = data.sample(ks["test"][1], mus[1], irr, 64, task)
    ref = metrics.evaluate(taskvec.apply(psi0, [t1, t2], [1.0, 2.0]), X, y)
    assert float(r.loss[2, 1, 3, 1]) == pytest.approx(float(ref["loss"]), abs=1e-4)


def test_t1_finetune_is_shared_across_alphas():
    r = tiny_sweep()
    # T1's own loss (Psi*_T1 on T1) cannot depend on alpha.
    assert np.allclose(r.single_loss[:, :, 0], r.single_loss[:1, :, 0])


def test_grid_eval_on_distinct_tokens_matches_all_tokens():
    """Reducing each sample to its distinct tokens is exact; a q too small for the data gives NaN, not a number."""
    d, m = 8, 16
    mus = data.pair_patterns(0.3, d)
    irr = data.irrelevant_patterns(mus)
    spec = data.TaskSpec(12, 3, 1)
    X, y = data.sample(jax.random.key(0), mus[0], irr, 90, spec)
    base = model.init_params(jax.random.key(1), d, m, sigma_0=0.5, sigma_w=0.3)
    tau = jax.tree.map(lambda t: t[None], model.init_params(jax.random.key(2), d, m, sigma_0=0.5, sigma_w=0.3))
    coeffs = jnp.linspace(-2, 3, 7)[:, None]
    q = spec.max_distinct(irr.shape[0])
    assert q < spec.P
    full = sweep.grid_eval(base, tau, coeffs, X, y, block=32)
    reduced = sweep.grid_eval(base, tau, coeffs, X, y, block=32, q=q)
    assert np.allclose(full[0], reduced[0], atol=1e-5) and np.allclose(full[1], reduced[1])
    assert np.all(np.isnan(sweep.grid_eval(base, tau, coeffs, X, y, q=2)[0]))


def test_pretrained_psi0_learns_its_tasks_and_leaves_the_studied_directions_alone():
    from tvtheory import cache

    d, task = 12, data.TaskSpec(10, 3, 1)
    setup = sweep.Setup(d, 32, task, train.TrainSpec(steps=40, batch=32, log_every=20), pretrain_tasks=2,
                        pretrain_steps=120)
    ids = np.arange(2, dtype=np.int32)
    studied = np.eye(d)[:2]
    random = sweep.pretrained(0, setup._replace(pretrain_tasks=0), ids, cache.NoStore())
    pre = sweep.pretrained(0, setup, ids, cache.NoStore(), studied)
    again = sweep.pretrained(0, setup, ids, cache.NoStore(), studied)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(pre), jax.tree.leaves(again)))
    # Pre-training starts from the random Psi_0 and never sees a token along e_1 or e_2.
    np.testing.assert_array_equal(pre["V"][..., :2], random["V"][..., :2])
    np.testing.assert_array_equal(pre["W"][:, :2], 0.0)
    np.testing.assert_array_equal(pre["W"][:, :, :2], 0.0)
    mus, irr = data.pretraining_tasks(studied, 2)
    for j in range(2):
        X, y = data.sample(jax.random.key(50 + j), mus[j], irr[j], 500, task)
        for s in range(2):
            psi = jax.tree.map(lambda x: x[s], pre)
            assert float(metrics.evaluate(psi, X, y)["acc"]) > 0.8
            assert float(metrics.evaluate(psi, X, y)["loss"]) < 0.6
            assert float(metrics.evaluate(jax.tree.map(lambda x: x[s], random), X, y)["loss"]) > 0.9
    # The cache keys of the random Psi_0 do not mention pre-training; those of a pre-trained one do.
    assert "pretrain" not in setup._replace(pretrain_tasks=0).fields() and "pretrain" in setup.fields()
    with pytest.raises(ValueError, match="patterns of the tasks under study"):
        sweep.pretrained(0, setup, ids, cache.NoStore())
