import dataclasses

import jax
import numpy as np
import pytest

from tvtheory import data, metrics, model, taskvec, train
from tvtheory.config import Data, Train

D, M = 32, 256


@pytest.fixture(scope="module")
def pair():
    """Two fine-tunes at alpha = 0 with the defaults of theory.md section 7."""
    mus = data.pair_patterns(0.0, D)
    irr = data.irrelevant_patterns(mus)
    psi0 = model.init_params(jax.random.key(0), D, M)
    ft = jax.jit(train.finetune, static_argnames=("task", "spec"))
    runs = [train.check_finite(ft(psi0, jax.random.key(10 + i), mus[i], irr)) for i in range(2)]
    tests = [data.sample(jax.random.key(20 + i), mus[i], irr, 1000) for i in range(2)]
    return psi0, runs, tests


def test_finetuned_model_learns_its_task(pair):
    psi0, runs, tests = pair
    for run, (X, y) in zip(runs, tests):
        assert float(metrics.evaluate(run.params, X, y)["loss"]) < 0.05
        assert run.curve_loss.shape == (30,)
        assert run.curve_loss[0] > run.curve_loss[-1]
    assert float(metrics.evaluate(psi0, *tests[0])["loss"]) > 0.9        # Psi_0 knows nothing


def test_adding_irrelevant_task_vectors_learns_both(pair):
    psi0, runs, tests = pair
    taus = [taskvec.task_vector(r.params, psi0) for r in runs]
    merged = taskvec.apply(psi0, taus, [1.0, 1.0])
    for X, y in tests:
        assert float(metrics.evaluate(merged, X, y)["loss"]) < 0.05


def test_same_key_same_parameters(pair):
    psi0, runs, _ = pair
    mus = data.pair_patterns(0.0, D)
    again = jax.jit(train.finetune, static_argnames=("task", "spec"))(psi0, jax.random.key(10), mus[0],
                                                                       data.irrelevant_patterns(mus))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(runs[0].params)))


def test_fixed_training_set_option():
    mus = data.pair_patterns(0.0, 8)
    irr = data.irrelevant_patterns(mus)
    psi0 = model.init_params(jax.random.key(0), 8, 32)
    r = train.finetune(psi0, jax.random.key(1), mus[0], irr, Data(d=8, P=10, n_rel=3, n_conf=1),
                       Train(steps=50, batch=16, n_train=64, log_every=25))
    assert r.curve_loss.shape == (2,) and bool(r.finite)


def test_divergence_is_detected_not_returned():
    mus = data.pair_patterns(0.0, 8)
    irr = data.irrelevant_patterns(mus)
    psi0 = model.init_params(jax.random.key(0), 8, 32, sigma_w=1.0)
    r = train.finetune(psi0, jax.random.key(1), mus[0], irr, Data(d=8, P=10, n_rel=3, n_conf=1),
                       Train(eta=1e30, steps=20, batch=16, log_every=10))
    assert not bool(r.finite)
    with pytest.raises(train.DivergenceError, match="diverged"):
        train.check_finite(r)


@pytest.mark.parametrize("spec, field", [(Train(eta=0.0), "eta=0.0"),
                                         (Train(eta=float("inf")), "eta=inf"),
                                         (Train(batch=0), "batch=0"),
                                         (Train(steps=0), "steps=0")])
def test_bad_train_spec(spec, field):
    with pytest.raises(ValueError, match=field):
        spec.check()


def test_train_block_is_an_immutable_static_argument():
    """Equal blocks share one trace of the jitted fine-tune, a different block is another program; fields never
    change."""
    a, b = Train(eta=0.5, batch=8, steps=4, log_every=2), Train(eta=0.5, batch=8, steps=4, log_every=2)
    assert a == b and hash(a) == hash(b) and a is not b and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.steps = 10
    pre = a.pretraining(6)
    assert (pre.eta, pre.batch, pre.steps, pre.log_every, pre.n_train) == (0.5, 8, 6, 6, 0) and a.steps == 4
    mus = data.pair_patterns(0.0, 8)
    irr = data.irrelevant_patterns(mus)
    psi0 = model.init_params(jax.random.key(0), 8, 16)
    task = Data(d=8, P=10, n_rel=3, n_conf=1)
    traces = []

    def ft(key, spec):
        traces.append(spec)
        return train.finetune(psi0, key, mus[0], irr, task, spec)

    f = jax.jit(ft, static_argnames="spec")
    ra, rb = f(jax.random.key(1), spec=a), f(jax.random.key(1), spec=b)
    assert traces == [a] and ra.curve_loss.shape == (2,)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(ra), jax.tree.leaves(rb)))
    # A block that differs in one field is another static argument (a cheap program shows it).
    g = jax.jit(lambda x, spec: x * spec.log_every, static_argnames="spec")
    assert float(g(1.0, spec=a)) == 2 and float(g(1.0, spec=dataclasses.replace(a, log_every=1))) == 1


def test_mixture_step_t_trains_on_task_t_mod_k():
    """Two steps on a mixture of two tasks equal one step on each task in turn, with the same batch keys."""
    mus = np.eye(8)[[6, 7]].astype(np.float32)
    irr = np.stack([np.eye(8)[[2, 3, 4, 5, 7 - j]] for j in range(2)]).astype(np.float32)
    psi0 = model.init_params(jax.random.key(0), 8, 32, sigma_w=0.1)
    task, key = Data(d=8, P=10, n_rel=3, n_conf=1), jax.random.key(5)
    mix = train.finetune(psi0, key, mus, irr, task, Train(steps=2, batch=16, log_every=1))
    p = psi0
    for t in range(2):
        X, y = data.sample(jax.random.fold_in(key, t), mus[t], irr[t], 16, task)
        g = jax.grad(lambda q: train.hinge_objective(q, X, y)[0])(p)
        p = jax.tree.map(lambda a, b: a - b, p, g)
    for a, b in zip(jax.tree.leaves(mix.params), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="n_train=32"):
        train.finetune(psi0, key, mus, irr, task, Train(steps=2, batch=16, log_every=1, n_train=32))
