import dataclasses
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvtheory import cache, data, metrics, model, streams, sweep, taskvec, train
from tvtheory.config import Data, Model, Train

D = 8
SETUP = sweep.Setup(Data(d=D, P=10, n_rel=3, n_conf=1), Model(m=16), Train(steps=40, batch=16, log_every=20))
ALPHAS, LAMS = [-0.5, 0.0, 0.5], [-1.0, 0.0, 1.0, 2.0]


def tiny_sweep(seed=0, **kw):
    args = dict(n_seeds=2, alphas=ALPHAS, lams=LAMS, setup=SETUP, n_test=64, n_alpha_hat=32, chunk=2)
    args.update(kw)
    return sweep.pair_sweep(seed, **args)


@pytest.fixture(scope="module")
def swept():
    """The tiny sweep, with the progress reports it made."""
    calls = []
    r = tiny_sweep(progress=lambda *a: calls.append(a))
    return r, calls


def test_pair_sweep_shapes_and_determinism(swept):
    a, calls = swept
    assert a.loss.shape == a.acc.shape == (3, 2, 4, 2) and a.finite.shape == (3, 2) and a.norms.shape == (3, 2, 2, 2)
    assert a.own.shape == (3, 2, 2, 2) and a.alpha_hat.shape == a.tv_cosine.shape == (3, 2)
    assert a.curves.shape == (3, 2, 2, 2)                             # steps // log_every = 2 points per fine-tune
    assert a.psi0["V"].shape == (2, 16, D) and a.psi0["W"].shape == (2, D, D)
    assert calls == [(1, 3, "alpha -0.5"), (2, 3, "alpha 0"), (3, 3, "alpha 0.5")]
    b = tiny_sweep()
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    c = tiny_sweep(seed=1)
    assert not np.array_equal(np.asarray(a.loss), np.asarray(c.loss))


def test_pair_sweep_matches_the_unbatched_pipeline(swept):
    """One (alpha, seed) cell recomputed step by step with the streams that streams.py documents."""
    r, _ = swept
    task, spec = SETUP.data, SETUP.train
    seed_key = streams.seed_key(streams.run_key(0), 1)                   # seed index 1
    mus = data.pair_patterns(0.5, D)
    irr = data.irrelevant_patterns(jnp.eye(D)[:2])
    psi0 = model.init(streams.concern(seed_key, streams.PSI0), D, SETUP.model)
    for k in psi0:
        np.testing.assert_allclose(r.psi0[k][1], psi0[k], rtol=1e-6, atol=1e-9)
    # Compiled once and called for each task (op by op, each task's calls would compile again).
    finetune = jax.jit(train.finetune, static_argnames=("task", "spec"))
    sample = jax.jit(data.sample, static_argnums=(3, 4))
    evaluate = jax.jit(metrics.evaluate)
    fts = [finetune(psi0, streams.task(seed_key, streams.FINETUNE, i), mus[i], irr, task, spec) for i in range(2)]
    t1, t2 = (taskvec.task_vector(f.params, psi0) for f in fts)
    tests = [sample(streams.task(seed_key, streams.TEST, i), mus[i], irr, 64, task) for i in range(2)]
    for i, (X, y) in enumerate(tests):
        ref = evaluate(taskvec.apply(psi0, [t1, t2], [1.0, 2.0]), X, y)              # lam = 2.0: index 3
        assert float(r.loss[2, 1, 3, i]) == pytest.approx(float(ref["loss"]), abs=1e-4)
        assert float(r.acc[2, 1, 3, i]) == pytest.approx(float(ref["acc"]), abs=1e-6)
        own = evaluate(fts[i].params, X[:32], y[:32])                                 # n_alpha_hat = 32
        assert r.own[2, 1, i] == pytest.approx([float(own["loss"]), float(own["acc"])], abs=1e-4)
        np.testing.assert_allclose(r.curves[2, 1, i], fts[i].curve_loss, atol=1e-4)
    X_mix = jnp.concatenate([X[:32] for X, _ in tests])
    assert float(r.alpha_hat[2, 1]) == pytest.approx(float(metrics.alpha_hat(fts[0].params, fts[1].params, X_mix)),
                                                     abs=1e-4)
    assert float(r.tv_cosine[2, 1]) == pytest.approx(float(taskvec.cosine(t1, t2)), abs=1e-5)
    norms = [[float(jnp.linalg.norm(x)) for x in (t["W"], t["V"])] for t in (t1, t2)]
    np.testing.assert_allclose(r.norms[2, 1], norms, rtol=1e-4)


def test_stages_run_at_once_give_the_bits_of_stages_run_one_by_one(swept, monkeypatch):
    """sweep.stage_pool runs the fine-tunes and evaluations of a sweep on threads, one per CPU: one thread (a
    `make reproduce` lane) and three give the bits of the default pool."""
    a, _ = swept
    for workers in (1, 3):
        monkeypatch.setattr(sweep, "cpus", lambda w=workers: w)
        b = tiny_sweep()
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert np.array_equal(np.asarray(x), np.asarray(y))


class _Program:
    """A jitted stage program that records the signature (input types, static arguments) of what it compiles ahead
    (``lower(...).compile()``, on the thread it ran) and of what it is called with on arrays (not traced for its
    shapes, as cache.per_seed does to read a cached entry)."""

    def __init__(self, f):
        self.f, self.compiled, self.called = f, [], []

    @staticmethod
    def signature(args, kwargs):
        return str(jax.tree.map(jax.typeof, args)), sorted(kwargs.items(), key=lambda kv: kv[0])

    def lower(self, *args, **kwargs):
        lowered, sig = self.f.lower(*args, **kwargs), self.signature(args, kwargs)
        done = self.compiled

        class Lowered:
            def compile(self):
                out = lowered.compile()
                done.append((sig, threading.current_thread().name))
                return out
        return Lowered()

    def __call__(self, *args, **kwargs):
        if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):
            self.called.append(self.signature(args, kwargs))
        return self.f(*args, **kwargs)


@pytest.mark.parametrize("kind", ["pair", "ood"])
def test_with_a_cpu_to_spare_the_evaluation_is_compiled_ahead_as_the_program_the_stage_calls(monkeypatch, tmp_path,
                                                                                              kind):
    """sweep.compiled_ahead: on two CPUs a sweep compiles its evaluation on a thread of its own while the fine-tunes
    run, with the very signature of the stage's call (so the stage finds it compiled); not on one CPU, and not when the
    evaluation is cached. The numbers are the bits of a sweep without it."""
    name = "pair_eval" if kind == "pair" else "ood_eval"
    program = _Program(getattr(sweep, name))
    monkeypatch.setattr(sweep, name, program)
    store = cache.Store(tmp_path / "cache")
    run = (lambda **k: tiny_sweep(n_seeds=3, **k)) if kind == "pair" else (lambda **k: sweep.ood_sweep(
        0, 3, [0.6, -0.5], None, [(-1, 1, 1), (-1, 1, 1)], SETUP, n_test=64, n_val=48, **k))
    monkeypatch.setattr(sweep, "cpus", lambda: 2)
    ahead = run(store=store)
    assert [thread for _, thread in program.compiled] == ["compile-ahead"]
    assert program.called and all(call == program.compiled[0][0] for call in program.called)
    run(store=store)                                           # cached: nothing to compile ahead
    assert len(program.compiled) == 1
    monkeypatch.setattr(sweep, "cpus", lambda: 1)
    alone = run()
    assert len(program.compiled) == 1 and len(program.called) == (2 * len(ALPHAS) if kind == "pair" else 2)
    for x, y in zip(jax.tree.leaves(ahead), jax.tree.leaves(alone)):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_per_seed_traces_for_an_entrys_shapes_only_when_there_is_one_to_read(tmp_path):
    """cache.per_seed computes the missing seeds in one call, and traces ``compute`` for an entry's shapes (to read
    it) only when an entry is there: once, and never on a cold run."""
    calls = []

    def compute(ids):
        calls.append("traced" if isinstance(ids, jax.core.Tracer) else np.asarray(ids).tolist())
        return {"x": jnp.asarray(ids, jnp.float32)[:, None] * jnp.arange(3.0)}
    store, fields = cache.Store(tmp_path), lambda s: {"s": s}
    cold = cache.per_seed(store, "k", fields, np.arange(3, dtype=np.int32), compute)
    assert calls == [[0, 1, 2]]
    warm = cache.per_seed(store, "k", fields, np.arange(4, dtype=np.int32), compute)
    assert calls == [[0, 1, 2], "traced", [3]] and np.array_equal(warm["x"][:3], cold["x"])
    assert cache.per_seed(cache.NoStore(), "k", fields, np.arange(2, dtype=np.int32), compute)["x"].shape == (2, 3)
    assert calls[3:] == [[0, 1]]


def test_an_error_while_compiling_ahead_is_left_to_the_stage(monkeypatch):
    """An error while compiling ahead does not leave the block (the stage's own call meets it again, with its
    context); nothing is run ahead when the stage's results are cached or with one CPU."""
    monkeypatch.setattr(sweep, "cpus", lambda: 2)
    ran = []
    with sweep.compiled_ahead(lambda: ran.append(1) or _raise(ValueError("shapes"))):
        pass
    assert ran == [1]
    with sweep.compiled_ahead(lambda: ran.append(2), needed=False):
        pass
    monkeypatch.setattr(sweep, "cpus", lambda: 1)
    with sweep.compiled_ahead(lambda: ran.append(3)):
        pass
    assert ran == [1]


def test_one_cpu_runs_the_stages_in_submission_order(monkeypatch):
    """With one CPU a pair sweep's stages run one by one: T1's fine-tune, then each alpha's T2 fine-tune one ahead of
    that alpha's evaluation."""
    started, real = [], cache.per_seed

    def recorded(store, kind, fields_of, *a, **k):
        if kind in ("finetune", "pair_eval"):
            f = fields_of(0)
            started.append((kind, f["stream"] if kind == "finetune" else f["alpha"]))
        return real(store, kind, fields_of, *a, **k)
    monkeypatch.setattr(sweep, "cpus", lambda: 1)
    monkeypatch.setattr(cache, "per_seed", recorded)
    tiny_sweep()
    assert started == [("finetune", 0), ("finetune", 1), ("finetune", 1), ("pair_eval", -0.5), ("finetune", 1),
                       ("pair_eval", 0.0), ("pair_eval", 0.5)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stage_that_fails_stops_the_sweep_with_its_error(monkeypatch, workers):
    """An error in a stage on a thread reaches the caller as itself (a fine-tune on stream 1 is T2's)."""
    real = sweep.finetune_all
    monkeypatch.setattr(sweep, "cpus", lambda: workers)
    monkeypatch.setattr(sweep, "finetune_all", lambda *a: _raise(train.DivergenceError("T2 diverged")) if a[5] == 1
                        else real(*a))
    with pytest.raises(train.DivergenceError, match="T2 diverged"):
        tiny_sweep()


def _raise(error):
    raise error


def test_training_batches_are_drawn_once_for_every_fine_tune_that_shares_them(monkeypatch):
    """sweep.training_batches remembers its last draws: the same arrays as batch_ids, drawn once per stream."""
    draws = []
    real = sweep.batch_ids
    monkeypatch.setattr(sweep, "batch_ids", lambda *a, **k: draws.append(a[2]) or real(*a, **k))
    monkeypatch.setattr(sweep, "_batches", type(sweep._batches)())
    key, ids, tr, spec = streams.run_key(7), np.array([0, 1], np.int32), SETUP.train, SETUP.data.sampling(True)
    first = sweep.training_batches(key, ids, 1, 6, tr, spec)
    again = sweep.training_batches(key, ids, 1, 6, tr, spec)
    assert draws == [1] and all(x is y for x, y in zip(first, again))
    fresh = real(key, jnp.asarray(ids), 1, jnp.int32(6), steps=tr.steps, batch=tr.batch, spec=spec)
    for x, y in zip(first, fresh):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for task in (0, 2, 1):                  # two are kept: task 1's draw was dropped when task 2's came
        sweep.training_batches(key, ids, task, 6, tr, spec)
    assert draws == [1, 0, 2, 1]
    sweep.training_batches(key, ids[:1], 1, 6, tr, spec)                # other seeds: another draw
    assert draws == [1, 0, 2, 1, 1]


def test_stages_asking_for_the_same_batches_at_once_share_one_draw(monkeypatch):
    import threading
    import time

    draws, real = [], sweep.batch_ids

    def slow(*a, **k):                      # long enough that every thread asks while it is being drawn
        draws.append(a[2])
        time.sleep(0.3)
        return real(*a, **k)
    monkeypatch.setattr(sweep, "batch_ids", slow)
    monkeypatch.setattr(sweep, "_batches", type(sweep._batches)())
    key, ids, tr, spec = streams.run_key(8), np.array([0], np.int32), SETUP.train, SETUP.data.sampling(True)
    got = [None] * 3
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, sweep.training_batches(key, ids, 1, 6, tr, spec)))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert draws == [1] and all(g is got[0] for g in got)
    monkeypatch.setattr(sweep, "batch_ids", lambda *a, **k: _raise(RuntimeError("draw failed")))
    with pytest.raises(RuntimeError, match="draw failed"):
        sweep.training_batches(key, ids, 0, 6, tr, spec)
    monkeypatch.setattr(sweep, "batch_ids", slow)                   # a failed draw is not remembered: drawn again
    assert len(sweep.training_batches(key, ids, 0, 6, tr, spec)) == 2 and draws == [1, 0]


def test_t1_finetune_is_shared_across_alphas(swept):
    r, _ = swept
    # T1's fine-tune cannot depend on alpha: nor its own loss and accuracy, nor its training curve.
    assert np.array_equal(r.own[:, :, 0], np.broadcast_to(r.own[:1, :, 0], r.own[:, :, 0].shape))
    assert np.array_equal(r.curves[:, :, 0], np.broadcast_to(r.curves[:1, :, 0], r.curves[:, :, 0].shape))
    # At lambda = 0 the merged model is Psi*_T1 whatever alpha: T1's loss there is the same at every alpha.
    np.testing.assert_allclose(r.loss[:, :, 1, 0], np.broadcast_to(r.loss[:1, :, 1, 0], (3, 2)), atol=1e-6)


def test_each_fine_tune_learns_its_own_task(swept):
    """``own``: (hinge, accuracy) of Psi*_T on T; a trained tiny setup learns both tasks at every alpha."""
    r, _ = swept
    assert r.finite.all()
    assert r.own[..., 1].min() >= 0.9, r.own[..., 1]
    assert r.own[..., 0].max() < 0.5, r.own[..., 0]
    assert np.all((r.own[..., 1] >= 0) & (r.own[..., 1] <= 1))


def test_valid_is_per_leading_index():
    nan, inf = float("nan"), float("inf")
    a = np.array([[1.0, 2.0], [nan, 0.0], [3.0, 4.0]])
    b = np.array([0.0, 1.0, inf])
    assert sweep.valid(a).tolist() == [True, False, True]
    assert sweep.valid(a, b).tolist() == [True, False, False]
    c = np.ones((2, 3, 4))
    c[1, 2, 0] = nan
    assert sweep.valid(c).tolist() == [True, False]
    assert sweep.valid(c, axis_count=2).tolist() == [[True] * 3, [True, True, False]]
    assert sweep.valid(np.array([[1, 2], [3, 4]], np.int32)).tolist() == [True, True]


@pytest.mark.parametrize("comp, name, fields", [
    (sweep.Compression(), "dense", {}),
    (sweep.Compression(rank=1), "rank1", {"rank": 1, "keep": 1.0}),
    (sweep.Compression(keep=0.75), "prune0.25", {"rank": 0, "keep": 0.75}),
    (sweep.Compression(keep=round(1 - 0.9, 9)), "prune0.9", {"rank": 0, "keep": 0.1}),
    (sweep.Compression(rank=2, keep=0.5), "rank2_prune0.5", {"rank": 2, "keep": 0.5}),
])
def test_compression_name_and_cache_fields(comp, name, fields):
    assert comp.name == name and comp.fields() == fields


def test_compression_names_are_distinct():
    comps = [sweep.Compression()] + [sweep.Compression(rank=r) for r in (1, 2, 4)] + [
        sweep.Compression(keep=round(1.0 - f, 9)) for f in (0.25, 0.5, 0.75, 0.9, 0.95)] + [
        sweep.Compression(rank=1, keep=0.5)]
    assert len({c.name for c in comps}) == len(comps)


def test_stream_keys_are_all_distinct():
    """Every concern of every seed, and every task of a per-task concern, draws from its own key."""
    concerns = (streams.PSI0, streams.FINETUNE, streams.TEST, streams.PRETRAIN_SGD, streams.VAL)
    assert len(set(concerns)) == len(concerns)
    keys = {}
    for s in range(3):
        sk = streams.seed_key(streams.run_key(0), s)
        keys[("seed", s)] = sk
        for c in concerns:
            keys[("concern", s, c)] = streams.concern(sk, c)
        for c in (streams.FINETUNE, streams.TEST, streams.VAL):
            for i in (0, 1, 2, streams.PRETRAIN_TASK_TEST):
                keys[("task", s, c, i)] = streams.task(sk, c, i)
    keys["run"] = streams.run_key(0)
    keys["run1"] = streams.run_key(1)
    keys["irrelevant"] = jax.random.fold_in(streams.run_key(0), streams.RUN_IRRELEVANT)
    data_of = {name: tuple(np.asarray(jax.random.key_data(k)).ravel()) for name, k in keys.items()}
    assert len(set(data_of.values())) == len(data_of)
    # The documented composition, and the batched seed keys.
    sk = streams.seed_key(streams.run_key(5), 2)
    assert np.array_equal(jax.random.key_data(streams.task(sk, streams.TEST, 1)),
                          jax.random.key_data(jax.random.fold_in(jax.random.fold_in(sk, streams.TEST), 1)))
    batched = streams.seed_keys(5, 3)
    assert np.array_equal(jax.random.key_data(batched[2]), jax.random.key_data(sk))


def test_random_irrelevant_patterns_come_from_the_run_seed():
    studied = np.eye(D)[:2]
    basis = sweep.irrelevant(0, SETUP, studied)
    np.testing.assert_array_equal(basis, np.eye(D)[2:])
    rnd = sweep.Setup(dataclasses.replace(SETUP.data, irrelevant="random"), SETUP.model, SETUP.train)
    a, b, c = (sweep.irrelevant(s, rnd, studied) for s in (0, 0, 1))
    assert a.shape == (D - 2, D) and np.array_equal(a, b) and not np.allclose(a, c)
    assert a @ a.T == pytest.approx(np.eye(D - 2), abs=1e-5) and np.abs(a @ studied.T).max() < 1e-5


class Recording(cache.NoStore):
    """Computes everything, and records the fields of every entry asked for."""

    def __init__(self):
        super().__init__()
        self.asked = []

    def load(self, kind, fields, like):
        self.asked.append((kind, fields))
        return super().load(kind, fields, like)


def test_pretrained_psi0_learns_its_tasks_and_leaves_the_studied_directions_alone():
    d = 12
    task = Data(d=d, P=10, n_rel=3, n_conf=1)
    setup = sweep.Setup(task, Model(m=32, pretrain_tasks=2, pretrain_steps=120),
                        Train(steps=40, batch=32, log_every=20))
    plain = setup._replace(model=dataclasses.replace(setup.model, pretrain_tasks=0))
    ids = np.arange(2, dtype=np.int32)
    studied = np.eye(d)[:2]
    stores = [Recording() for _ in range(3)]
    random = sweep.pretrained(0, plain, ids, stores[0], studied)
    pre = sweep.pretrained(0, setup, ids, stores[1], studied)
    again = sweep.pretrained(0, setup, ids, stores[2], studied)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(pre), jax.tree.leaves(again)))
    # Pre-training starts from the random Psi_0 and never sees a token along e_1 or e_2.
    np.testing.assert_array_equal(pre["V"][..., :2], random["V"][..., :2])
    np.testing.assert_array_equal(pre["W"][:, :2], 0.0)
    np.testing.assert_array_equal(pre["W"][:, :, :2], 0.0)
    assert not np.array_equal(pre["V"], random["V"])
    # Psi_0 on the pre-training tasks' test sets (stream TEST, task PRETRAIN_TASK_TEST + j): learned, or not at all.
    ev_pre = sweep.psi0_eval(0, setup, ids, pre, studied, n_test=500, k=2)
    assert ev_pre["acc"].shape == ev_pre["loss"].shape == (2, 2)
    assert ev_pre["acc"].min() > 0.8 and ev_pre["loss"].max() < 0.6
    ev_random = sweep.psi0_eval(0, plain, ids, random, studied, n_test=500)
    assert set(ev_random) == {"W0_norm", "V0_norm"} and ev_random["V0_norm"].min() > 0
    np.testing.assert_array_equal(ev_random["W0_norm"], 0.0)              # sigma_w = 0: W_0 = 0
    assert ev_pre["W0_norm"].min() > 0
    mus, irr = data.pretraining_tasks(studied, 2)
    X, y = data.sample(streams.task(streams.seed_key(streams.run_key(0), 1), streams.TEST,
                                    streams.PRETRAIN_TASK_TEST + 1), mus[1], irr[1], 500, task)
    evaluate = jax.jit(metrics.evaluate)
    ref = evaluate(jax.tree.map(lambda x: x[1], pre), X, y)
    assert ev_pre["loss"][1, 1] == pytest.approx(float(ref["loss"]), abs=1e-5)
    for s in range(2):
        assert float(evaluate(jax.tree.map(lambda x: x[s], random), X, y)["loss"]) > 0.9
    # A random Psi_0's cache key holds the seed, d and the model only (so a new training setup reuses it); a
    # pre-trained one's also holds the training setup and the pre-training tasks.
    (kind, f_random), (_, f_pre) = stores[0].asked[0], stores[1].asked[0]
    assert kind == "psi0" and set(f_random) == {"seed", "d", "model", "s"}
    assert f_random["model"]["pretrain_tasks"] == 0 and f_pre["model"]["pretrain_tasks"] == 2
    assert f_pre["train"]["steps"] == 40 and "pre" in f_pre


def test_test_sets_are_the_stage_streams_and_one_program_serves_data_options_that_do_not_change_them():
    """The evaluation stages' test sets come from sweep.eval_sets: the same bits as data_options.sample on the
    documented stream, and one compiled sampler for data configs that differ only in what clean test samples do not
    depend on (the irrelevant patterns arrive as an array; label noise flips training labels only)."""
    from tvtheory import data_options

    key, ids = streams.run_key(3), np.array([0, 2], np.int32)
    mus = np.asarray(data.pair_patterns(0.5, D))
    irr = np.asarray(data.irrelevant_patterns(jnp.eye(D)[:2]))
    before = sweep.eval_sets._cache_size()
    X, y = sweep.draw(key, ids, streams.TEST, (0, 1), mus, irr, 40, Data(d=D))
    for spec in (Data(d=D, irrelevant="correlated", rho=0.3), Data(d=D, label_noise=0.2),
                 Data(d=D, irrelevant="random_unit")):
        X2, y2 = sweep.draw(key, ids, streams.TEST, (0, 1), mus, irr, 40, spec)
        np.testing.assert_array_equal(X2, X)
        np.testing.assert_array_equal(y2, y)
    assert sweep.eval_sets._cache_size() == before + 1
    assert X.shape == (2, 2, 40, Data().P, D) and y.shape == (2, 2, 40)
    for i, s in enumerate(ids):
        for k in range(2):
            Xr, yr = data_options.sample(streams.task(streams.seed_key(key, int(s)), streams.TEST, k), mus[k], irr,
                                         40, Data(d=D))
            np.testing.assert_array_equal(X[i, k], Xr)
            np.testing.assert_array_equal(y[i, k], yr)
    X3, _ = sweep.draw(key, ids, streams.TEST, (0, 1), mus, irr, 40, Data(d=D, sigma=0.1))    # noise: its own
    assert sweep.eval_sets._cache_size() == before + 2 and not np.array_equal(X3, X)


@pytest.mark.parametrize("spec", [Data(d=D), Data(d=D, label_noise=0.2), Data(d=D, classes=3),
                                  Data(d=D, irrelevant="correlated", rho=0.3)],
                         ids=["paper", "label_noise", "3_classes", "correlated"])
def test_training_on_token_ids_is_the_in_loop_draw_bit_for_bit(spec):
    """sweep.finetune_from draws every batch as ids in a program of its own and gathers the tokens at each step: the
    fine-tuned parameters, curves and flags are those of the in-loop draw (finetune_seeds), bit for bit."""
    from tvtheory import data_options

    setup = sweep.Setup(spec, Model(m=12), Train(steps=12, log_every=3))
    key, ids = streams.run_key(1), np.array([0, 1], np.int32)
    span = np.eye(D)[:spec.pair_dirs()]
    mu = np.asarray(data_options.pair_patterns(0.5, spec))[1]
    irr = sweep.irrelevant(0, setup, span)
    psi0 = sweep.init_seeds(key, ids, setup=setup)
    a = sweep.finetune_seeds(key, ids, psi0, mu, irr, 1, setup=setup)
    b = sweep.finetune_from(key, ids, psi0, mu, irr, 1, setup)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_token_id_programs_are_shared_by_what_does_not_change_them():
    """One training program for data configs that differ only in how batches are drawn (n_rel, label noise, the
    irrelevant patterns' kind), one draw program for models that differ (width) and for every d; token noise trains in
    the loop."""
    key, ids = streams.run_key(2), np.array([0], np.int32)
    mu, irr = np.eye(D, dtype=np.float32)[0], np.eye(D, dtype=np.float32)[2:]

    def train_on(spec, m=16):
        setup = sweep.Setup(spec, Model(m=m), Train(steps=6, log_every=3))
        return sweep.finetune_from(key, ids, sweep.init_seeds(key, ids, setup=setup), mu, irr, 0, setup)

    train_on(Data(d=D))
    fits, draws = sweep.finetune_ids._cache_size(), sweep.batch_ids._cache_size()
    for spec in (Data(d=D, n_rel=5), Data(d=D, label_noise=0.1), Data(d=D, irrelevant="random_unit")):
        train_on(spec)
    assert sweep.finetune_ids._cache_size() == fits
    assert sweep.batch_ids._cache_size() == draws + 2               # n_rel and label noise change the draws
    train_on(Data(d=D), m=8)
    assert sweep.batch_ids._cache_size() == draws + 2 and sweep.finetune_ids._cache_size() == fits + 1
    noisy = sweep.finetune_seeds._cache_size()
    train_on(Data(d=D, sigma=0.1))
    assert sweep.finetune_seeds._cache_size() == noisy + 1 and sweep.finetune_ids._cache_size() == fits + 1
    wider = np.eye(D + 4, dtype=np.float32)                          # another d: the draws' program is shared
    setup = sweep.Setup(Data(d=D + 4), Model(m=16), Train(steps=6, log_every=3))
    psi0 = sweep.init_seeds(key, ids, setup=setup)
    got = sweep.finetune_from(key, ids, psi0, wider[0], wider[2:], 0, setup)
    assert sweep.batch_ids._cache_size() == draws + 2
    want = sweep.finetune_seeds(key, ids, psi0, wider[0], wider[2:], 0, setup=setup)     # M traced: the same bits
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sgd_on_ids_where_it_is_cheaper_trains_the_same_fine_tunes_to_rounding(monkeypatch):
    """Once d >= 2P the paper's binary merged model trains on the ids themselves (model.apply_ids): a short fine-tune
    equals the dense step's (finetune_seeds) to float rounding. The rule holds for that model alone."""
    traced = []
    real = model.apply_ids
    monkeypatch.setattr(model, "apply_ids", lambda *a: traced.append(1) or real(*a))
    spec = Data(d=12, P=6, n_rel=2, n_conf=1)
    setup = sweep.Setup(spec, Model(m=16), Train(steps=8, log_every=4))
    assert sweep.ids_step(setup, spec.P) and not sweep.ids_step(setup, 7)
    for other in (setup._replace(model=Model(m=16, form="four", sigma_w=0.1)),
                  setup._replace(model=Model(m=16, arch="mlp")), setup._replace(data=Data(d=12, P=6, classes=3))):
        assert not sweep.ids_step(other, spec.P)
    key, ids = streams.run_key(4), np.array([0, 1], np.int32)
    mu, irr = np.eye(12, dtype=np.float32)[0], np.eye(12, dtype=np.float32)[2:]
    psi0 = sweep.init_seeds(key, ids, setup=setup)
    got = sweep.finetune_from(key, ids, psi0, mu, irr, 0, setup)
    want = sweep.finetune_seeds(key, ids, psi0, mu, irr, 0, setup=setup)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g, float), np.asarray(w, float), rtol=1e-4, atol=1e-6)
    assert traced                                            # the step ran on the ids


def test_evaluations_with_each_sets_pattern_table_equal_those_without():
    """pair_eval and ood_eval given each test set's pattern table (sweep.pattern_tables) equal the per-token sums to
    rounding; a set given the other task's table gives NaN (the guard), not numbers."""
    setup = sweep.Setup(Data(d=D), Model(m=12), Train(steps=4, log_every=2))
    key, ids = streams.run_key(5), np.array([0, 1], np.int32)
    mus = np.asarray(data.pair_patterns(0.6, D))
    irr = sweep.irrelevant(0, setup, np.eye(D)[:2])
    psi0 = sweep.init_seeds(key, ids, setup=setup)
    taus = [jax.tree.map(lambda x, k=k: 0.3 * jax.random.normal(jax.random.key(k), x.shape), psi0) for k in (1, 2)]
    X, y = sweep.draw(key, ids, streams.TEST, (0, 1), mus, irr, 60, setup.data)
    tables = sweep.pattern_tables(mus, irr, setup.data)
    kw = dict(setup=setup, n_alpha_hat=20, chunk=1, q=setup.data.max_distinct(irr.shape[0]))
    lams = np.linspace(-1, 2, 4).astype(np.float32)
    plain = sweep.pair_eval(X, y, psi0, *taus, lams, **kw)
    gathered = sweep.pair_eval(X, y, psi0, *taus, lams, tables, **kw)
    for g, p in zip(gathered, plain):
        np.testing.assert_allclose(np.asarray(g), np.asarray(p), rtol=1e-5, atol=1e-6)
    swapped = sweep.pair_eval(X, y, psi0, *taus, lams, tables[::-1], **kw)
    assert np.all(np.isnan(np.asarray(swapped[0])))
    assert sweep.pattern_tables(mus, irr, Data(d=D, sigma=0.1)) is None
    test = jax.tree.map(lambda a: a[:, 0], (X, y))
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b], 1), *taus)
    coeffs = np.array([[0.0, 0.5], [1.0, -1.0], [2.0, 1.0]], np.float32)
    args = (test, test, (X, y), psi0, stacked, psi0, coeffs)
    ood_kw = dict(setup=setup, chunk=1, q=kw["q"])
    for g, p in zip(sweep.ood_eval(*args, tables[0], **ood_kw), sweep.ood_eval(*args, **ood_kw)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(p), rtol=1e-5, atol=1e-6)
