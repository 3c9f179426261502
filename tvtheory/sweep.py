"""The staged sweeps of Theorems 1-3: seeds and coefficient grids are array axes inside compiled code. A sweep runs in
stages (Psi_0, fine-tunes, evaluation), each compiled once per shape and reused for every alpha, and each stage's
results are cached per seed (cache.per_seed), so a killed sweep resumes where it stopped and a new coefficient grid
reuses the fine-tunes. The evaluation itself is model.grid_eval (exact, reusing the lambda-independent products);
the random streams are those of streams.py.

Random draws are programs of their own, apart from the networks: training batches as token ids into the task's
pattern table (``batch_ids``; the dense in-loop draw where tokens carry noise) and test sets (``eval_sets``). Each is
keyed by the data fields it reads, so every model trained or evaluated on the same data shares one compiled sampler,
and the training and evaluation programs carry no random-number code (half of their compilation); the bits are those
of in-stage draws (tested). ``python -m tvtheory.reproduce`` reports how many programs each experiment compiled.

The config blocks ``Data``, ``Model`` and ``Train`` are the stages' static arguments and the fields of their cache
keys. Every model option (``model.arch``, architectures.of) and data option (token noise, irrelevant patterns, K
classes, label noise: data_options) runs through the same stages: the paper's binary model is evaluated by
model.grid_eval, any other by architectures.grid_eval (exact too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tvtheory import architectures, cache, data, data_options, metrics, model, streams, taskvec, train
from tvtheory.config import Data, Model, Train, grid, to_plain


class Compression(NamedTuple):
    """The task vectors used (Corollaries 1-2): rank-r truncation (0: dense), kept fraction of dV's rows. A pytree
    of two numbers, traced inside the evaluation stages: one compiled program serves every variant."""

    rank: int = 0
    keep: float = 1.0

    def apply(self, tau):
        return taskvec.compress(tau, self.rank, self.keep)

    @property
    def name(self) -> str:
        if self == Compression():
            return "dense"
        return f"rank{self.rank}" if self.keep == 1.0 else (f"prune{1 - self.keep:g}" if not self.rank else
                                                              f"rank{self.rank}_prune{1 - self.keep:g}")

    def fields(self) -> dict:
        return {} if self == Compression() else {"rank": self.rank, "keep": self.keep}


class Setup(NamedTuple):
    """What a sweep's stages depend on: the samples, the model with its Psi_0, and SGD (hashable config blocks)."""

    data: Data
    model: Model
    train: Train

    def fields(self) -> dict:
        return {"data": to_plain(self.data), "model": to_plain(self.model), "train": to_plain(self.train)}

    @property
    def net(self) -> architectures.Network:
        """The network's init and apply (K outputs for K-class tasks)."""
        return architectures.of(self.model, self.data.classes)


# ------------------------------------------------------------------------------------------------ jitted stages
@partial(jax.jit, static_argnames=("setup",))
def init_seeds(key, seed_ids, pre_mus=None, pre_irr=None, *, setup: Setup):
    """Psi_0 for each seed index: weights from stream PSI0 of the seed's key; with ``model.pretrain_tasks``, then
    SGD on the mixture of the pre-training tasks (pre_mus (K, d), pre_irr (K, M, d); stream PRETRAIN_SGD)."""
    def init(s):
        return setup.net.init(streams.concern(streams.seed_key(key, s), streams.PSI0), setup.data.d)
    if not setup.model.pretrain_tasks:
        # One seed at a time: the same bits as a vmap, but the vmapped threefry draws took 1.4-2.8 s to compile on
        # one core against 0.7-0.9 s, and a sweep compiles this once per (d, m) shape (12 times for scaling).
        return jax.lax.map(init, seed_ids)

    def one(s):
        k = streams.concern(streams.seed_key(key, s), streams.PRETRAIN_SGD)
        return train.finetune(init(s), k, pre_mus, pre_irr, setup.data,
                              setup.train.pretraining(setup.model.pretrain_steps), setup.net.apply).params
    return jax.lax.map(one, seed_ids)


@partial(jax.jit, static_argnames=("setup",))
def finetune_seeds(key, seed_ids, psi0_S, mu, irr, task_index, *, setup: Setup):
    """Psi*_T for each seed (stream FINETUNE, task index ``task_index``, traced: one compilation serves every task);
    one run at a time (lax.map), which on CPU beats a vmapped SGD step of small matmuls."""
    def one(args):
        s, p0 = args
        k = streams.task(streams.seed_key(key, s), streams.FINETUNE, task_index)
        return train.finetune(p0, k, mu, irr, setup.data, setup.train, setup.net.apply)
    return jax.lax.map(one, (seed_ids, psi0_S))


@partial(jax.jit, static_argnames=("steps", "batch", "spec"))
def batch_ids(key, seed_ids, task_index, M, *, steps: int, batch: int, spec: Data):
    """Per seed: the training batches of fine-tune stream ``task_index`` (batch t from fold_in(key, t), as
    train.finetune draws them) as ids into the task's pattern table (S, steps, batch, P) and labels (S, steps,
    batch), for M irrelevant patterns. Keyed by the data's sampling fields and the batch shape alone: every model
    trained on the same data shares it, whatever its d (M is traced: integer draws, the same bits as a constant)."""
    def one(s):
        k = streams.task(streams.seed_key(key, s), streams.FINETUNE, task_index)
        # One step at a time, as a loop: the same bits and run time as a vmap over the steps (0.11 s for 5 seeds of
        # 300 batches of 64), and 1.3 s of compilation instead of 1.8 s on one quiet core.
        return jax.lax.map(lambda t: data_options.train_ids(jax.random.fold_in(k, t), M, batch, spec),
                           jnp.arange(steps))
    return jax.lax.map(one, seed_ids)


def ids_step(setup: Setup, P: int) -> bool:
    """Whether SGD on ids runs the network on the ids themselves (model.apply_ids: the logits and values gathered from
    the pattern table) rather than on table[ids]: for the paper's binary merged model once d >= 2P, where its
    products with V cost P^2 m + T m d / batch per sample instead of P d m (measured on one core, 300 steps of 64,
    m = 256: 1.9x faster at d = 64, 1.1x at d = 32, 0.7x at d = 16; 2.4x at d = 128, m = 1024). The same function,
    another order of the sums: the fine-tunes it trains differ from the dense step's by rounding, which SGD grows; at
    the default d = 32 the gain is too small for that, so d < 2P keeps the dense step (and its bits)."""
    m = setup.model
    return m.arch == "paper" and m.form == "merged" and not setup.data.multiclass and setup.data.d >= 2 * P


@partial(jax.jit, static_argnames=("setup",))
def finetune_ids(psi0_S, ids_S, y_S, table, *, setup: Setup):
    """``finetune_seeds`` on batches drawn by ``batch_ids``: step t trains on table[ids[t]], the same tokens (bit for
    bit) as the in-loop draw, or on the ids themselves where ``ids_step``. ``setup``'s data block matters here only
    through d and classes (``training_setup``)."""
    if ids_step(setup, ids_S.shape[-1]):
        apply, batch = (lambda p, ids: model.apply_ids(p, ids, table)), (lambda ids, t: ids[t])
    else:
        apply, batch = setup.net.apply, (lambda ids, t: table[ids[t]])

    def one(args):
        p0, ids, y = args
        return train.sgd(apply, p0, lambda t: (batch(ids, t), y[t]), setup.train)
    return jax.lax.map(one, (psi0_S, ids_S, y_S))


def finetune_from(key, seed_ids, psi0_S, mu, irr, task_index: int, setup: Setup) -> train.TrainResult:
    """Psi*_T for each seed: tokens as ids (``batch_ids`` then ``finetune_ids``, two programs shared across models
    and across data options that do not change them) wherever the data are a finite pattern table and training
    draws fresh batches; ``finetune_seeds`` otherwise (token noise, a fixed training set). The same bits either way,
    except where ``ids_step`` trains on the ids themselves (d >= 2P: the same fine-tune to rounding)."""
    spec, tr = setup.data, setup.train
    if tr.n_train or not data_options.token_ids(spec):
        return finetune_seeds(key, seed_ids, psi0_S, mu, irr, task_index, setup=setup)
    ids, y = training_batches(key, seed_ids, task_index, irr.shape[0], tr, spec.sampling(training=True))
    return finetune_ids(psi0_S, ids, y, data_options.table(jnp.asarray(mu), jnp.asarray(irr), spec),
                        setup=training_setup(setup))


_batches: OrderedDict = OrderedDict()        # the last few draws of training_batches, as futures
_batches_lock = threading.Lock()


def training_batches(key, seed_ids, task_index: int, M: int, tr: Train, spec: Data, keep: int = 2):
    """``batch_ids``, remembering its last ``keep`` draws: every alpha's T2 fine-tune of a pair sweep trains on the
    same batches (only the pattern table differs), and so does every width of a scaling cell, so each is drawn once
    per process (5 seeds of 300 batches of 64 ids: 8 MB, 0.1-0.2 s per draw), also when several stages ask for it at
    once (they wait for the one drawing it). The same arrays as a fresh draw."""
    draw = lambda: batch_ids(key, jnp.asarray(seed_ids, jnp.int32), task_index, jnp.int32(M),  # noqa: E731
                             steps=tr.steps, batch=tr.batch, spec=spec)
    if isinstance(key, jax.core.Tracer) or isinstance(seed_ids, jax.core.Tracer):
        return draw()                               # traced for its shapes (cache.per_seed): nothing to remember
    memo = (np.asarray(jax.random.key_data(key)).tobytes(), np.asarray(seed_ids, np.int32).tobytes(), int(task_index),
            int(M), tr.steps, tr.batch, spec)
    with _batches_lock:
        pending = _batches.get(memo)
        mine = pending is None
        if mine:
            pending = _batches[memo] = Future()
            while len(_batches) > keep:
                _batches.popitem(last=False)
    if not mine:
        return pending.result()                     # drawn, or being drawn by another stage
    def forget():                                   # a draw not to keep: the next call draws again
        with _batches_lock:
            if _batches.get(memo) is pending:
                del _batches[memo]
    try:
        got = draw()
    except BaseException as e:
        forget()
        pending.set_exception(e)
        raise
    if isinstance(got[0], jax.core.Tracer):         # inside another trace: arrays that must not outlive it
        forget()
    pending.set_result(got)
    return got


def training_setup(setup: Setup) -> Setup:
    """The setup with the fields that training on given tokens does not read reset: every data field but d and
    classes, and the model's initialisation and pre-training (Psi_0 arrives as an array)."""
    m = setup.model
    return setup._replace(data=Data(d=setup.data.d, classes=setup.data.classes),
                          model=dataclasses.replace(m, sigma_0=Model.sigma_0, sigma_w=Model.sigma_w,
                                                    pretrain_tasks=Model.pretrain_tasks,
                                                    pretrain_steps=Model.pretrain_steps))


@partial(jax.jit, static_argnames=("n", "spec"))
def eval_sets(key, seed_ids, stream, task_indices, mus_K, irr, *, n: int, spec: Data):
    """Per seed s and set k: n clean samples (data_options.sample) of pattern(s) ``mus_K[k]`` from stream
    task(seed_key(key, s), stream, task_indices[k]). Returns X (S, K, n, P, d) and y (S, K, n).

    A program of its own, keyed by the sampling fields of the data config alone (``Data.sampling``): the sweeps'
    evaluation stages take their test sets from it, so every model evaluated on the same data shares one compiled
    sampler (the threefry hashes are half of an evaluation stage's compilation), and the samples are the bits an
    in-stage draw gives."""
    def one(s):
        sk = streams.seed_key(key, s)
        # The sets one after the other in a loop: one sampler compiled, whatever their number.
        return jax.lax.map(lambda km: data_options.sample(streams.task(sk, stream, km[0]), km[1], irr, n, spec),
                           (task_indices, mus_K))
    return jax.lax.map(one, seed_ids)


def draw(key, seed_ids, stream: int, task_indices, mus_K, irr, n: int, data_spec: Data):
    """``eval_sets`` for a data config."""
    return eval_sets(key, jnp.asarray(seed_ids), stream, jnp.asarray(task_indices, jnp.int32), jnp.asarray(mus_K),
                     jnp.asarray(irr), n=n, spec=data_spec.sampling())


@partial(jax.jit, static_argnames=("setup", "n_alpha_hat", "chunk", "q"))
def pair_eval(X_Sx2, y_Sx2, psi0_S, tau1_S, tau2_S, lams_L, tables_2=None, *, setup: Setup, n_alpha_hat: int,
              chunk: int, q: int, comp: Compression = Compression()):
    """Per seed: Psi_0 + dPsi_T1 + lambda dPsi_T2 on both tasks' test sets (``X_Sx2``, ``y_Sx2``: eval_sets of stream
    TEST, tasks 0 and 1), each fine-tune on its own task (the first ``n_alpha_hat`` test samples), alpha_hat, the task
    vectors' cosine and the norms of dW, dV (architectures.delta_norms). ``q``: data.max_distinct; ``tables_2``: the
    two tasks' pattern tables (``pattern_tables``), or None."""
    coeffs_Lx1 = lams_L[:, None]
    net, paper = setup.net, setup.model.arch == "paper"

    def one(args):
        X2, y2, psi0, tau1, tau2 = args
        if paper:                       # compressed task vectors are the paper's model's (pair_sweep checks)
            tau1, tau2 = comp.apply(tau1), comp.apply(tau2)
        base, psi2 = taskvec.add(psi0, tau1), taskvec.add(psi0, tau2)

        def grid(args):                 # one set: a loop over the two, so that the grid is compiled once
            X, y, table = args
            return architectures.grid_eval(setup.model, setup.data.classes, base,
                                           jax.tree.map(lambda t: t[None], tau2), coeffs_Lx1, X, y, chunk, q=q,
                                           table=table)
        loss_2xL, acc_2xL = jax.lax.map(grid, (X2, y2, tables_2))
        own, X_mix = [], []
        for i, mine in enumerate((base, psi2)):
            X, y = X2[i, :n_alpha_hat], y2[i, :n_alpha_hat]
            ev = metrics.evaluate_with(net.apply, mine, X, y)
            own.append(jnp.stack([ev["loss"], ev["acc"]]))
            X_mix.append(X)
        norms = jnp.array([list(architectures.delta_norms(setup.model, psi0, t)) for t in (tau1, tau2)])
        return (loss_2xL.T, acc_2xL.T, jnp.stack(own),
                metrics.alpha_hat(base, psi2, jnp.concatenate(X_mix), net.apply), taskvec.cosine(tau1, tau2), norms)

    return jax.lax.map(one, (X_Sx2, y_Sx2, psi0_S, tau1_S, tau2_S))


@partial(jax.jit, static_argnames=("setup", "chunk", "q"))
def ood_eval(test, val, own_sets, psi0_S, taus_SxK, direct_S, coeffs_GxK, table=None, *, setup: Setup, chunk: int,
             q: int, comp: Compression = Compression()):
    """Per seed: the coefficient grid on a validation set (``val``: eval_sets of stream VAL, task 0) and a test set
    (``test``: stream TEST, task 0) of T', the references (the direct fine-tune on T', then Psi_0 + dPsi_Ti for each
    source) on the test set, and each source's fine-tune on its own task's test set (``own_sets``: TEST, task 1 + i;
    to flag a fine-tune at chance). Each is an (X, y) pair with a leading seed axis; ``own_sets`` has a set axis
    after it. ``table``: T's pattern table (``pattern_tables``), or None."""
    net, paper = setup.net, setup.model.arch == "paper"
    grid = partial(architectures.grid_eval, setup.model, setup.data.classes, chunk=chunk, q=q, table=table)

    def one(args):
        (X, y), (Xv, yv), (Xo, yo), psi0, taus, direct = args
        if paper:
            taus = jax.vmap(comp.apply)(taus)
        loss, acc = grid(psi0, taus, coeffs_GxK, X, y)
        val_loss, val_acc = grid(psi0, taus, coeffs_GxK, Xv, yv)
        refs = [direct] + [taskvec.add(psi0, jax.tree.map(lambda t: t[i], taus)) for i in range(coeffs_GxK.shape[1])]
        ev = [metrics.evaluate_with(net.apply, p, X, y) for p in refs]
        own = [metrics.evaluate_with(net.apply, p, Xo[i], yo[i])["acc"] for i, p in enumerate(refs[1:])]
        return (loss, acc, val_loss, val_acc, jnp.stack([e["loss"] for e in ev]), jnp.stack([e["acc"] for e in ev]),
                jnp.stack([ev[0]["acc"], *own]))
    return jax.lax.map(one, (test, val, own_sets, psi0_S, taus_SxK, direct_S))


def pattern_tables(mus_K, irr, spec: Data):
    """The pattern table of each task of ``mus_K`` (K, T, d) for the grid evaluations (model.grid_eval gathers the
    values of a grid point from it), or None where tokens are not rows of a table (token noise)."""
    if not data_options.token_ids(spec):
        return None
    return jnp.stack([data_options.table(jnp.asarray(mu), jnp.asarray(irr), spec) for mu in mus_K])


# ------------------------------------------------------------------------------------------------ cached stages
def cpus() -> int:
    """The CPUs this process may run on (its affinity: a `make reproduce` lane has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def stage_pool():
    """Threads that run a sweep's independent stages at once (fine-tunes, each alpha's evaluation), one per CPU. One
    compiled program keeps two CPUs busy only in its larger products: two fine-tunes of W1 at once take 57% of their
    time one after the other (2.8 s against 5.0 s). A program computes the same bits whichever thread starts it and
    whatever runs beside it (XLA splits its work by the process's CPUs, not by the threads free at the time), so
    results do not depend on the pool (tested); with one CPU, as on a `make reproduce` lane, the stages run one by
    one in submission order. When a stage raises, the sweep raises its error as it reaches that stage's result (in
    alpha order), and the stages not yet started are cancelled; running ones finish first."""
    pool = ThreadPoolExecutor(max_workers=cpus(), thread_name_prefix="stage")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def compiled_ahead(later_call, needed: bool = True):
    """Compile a sweep's later program on a thread of its own while its first stages run, where the process has a
    CPU to spare: at a sweep's start both stages wait on the programs of the first fine-tunes (one compiles them,
    the other waits), and with three fine-tunes on two CPUs the third runs alone. ``later_call()`` builds the later
    stage's call without making it (a functools.partial of a jitted program and its arguments, after at most a
    cheap draw), which is lowered and compiled here (``jit(f).lower(...).compile()``); the stage's own call then
    finds the program compiled, the one it would have compiled itself (JAX keys a program by its inputs' types and
    its static arguments), so every number is the same bits. An error there is left for the stage's own call to
    raise. Skipped with one CPU (a `make reproduce` lane: nothing to spare) or when not ``needed`` (the stage's
    results are cached); the block ends once the thread has."""
    if not needed or cpus() < 2:
        yield
        return

    def run():
        try:
            call = later_call()
            call.func.lower(*call.args, **call.keywords).compile()
        except Exception:       # noqa: BLE001  (the stage's own call raises it, with its context)
            pass
    thread = threading.Thread(target=run, name="compile-ahead")
    thread.start()
    try:
        yield
    finally:
        thread.join()


def select(tree, ids):
    """The seeds ``ids`` of a pytree whose leaves carry the seed axis first."""
    return jax.tree.map(lambda x: jnp.asarray(x)[ids], tree)


def _digest(*arrays) -> str:
    """A short hash of arrays' values (rounded to 6 decimals), for cache keys."""
    import hashlib
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.round(a, 6), np.float32).tobytes())
    return h.hexdigest()[:16]


def irrelevant(seed: int, setup: Setup, task_patterns) -> np.ndarray:
    """The v_j for a sweep (``data.irrelevant``): basis vectors, a random orthonormal basis of the complement of the
    task patterns, isotropic random unit vectors, or unit vectors at inner product ``data.rho`` with the first task
    pattern (data_options); the random ones drawn from the run's key (stream RUN_IRRELEVANT), as many as the
    complement's dimension."""
    kind, task_patterns = setup.data.irrelevant, np.asarray(task_patterns)
    key = jax.random.fold_in(streams.run_key(seed), streams.RUN_IRRELEVANT) if kind != "basis" else None
    if kind in ("basis", "random"):
        return np.asarray(data.irrelevant_patterns(task_patterns, key=key))
    T = task_patterns.reshape(-1, task_patterns.shape[-1])
    M = T.shape[1] - int(np.linalg.matrix_rank(T, tol=1e-6))
    if kind == "random_unit":
        return np.asarray(data_options.random_unit_patterns(key, M, T.shape[1]))
    return np.asarray(data_options.correlated_irrelevant(key, M, T, setup.data.rho))


def pretrained(seed: int, setup: Setup, seed_ids: np.ndarray, store: cache.Store, task_patterns):
    """Psi_0 for every seed index, cached per seed. With ``model.pretrain_tasks``, Psi_0 is pre-trained on tasks
    whose tokens avoid the span of ``task_patterns`` (the patterns of the tasks under study)."""
    key, fields = streams.run_key(seed), {"seed": seed, "d": setup.data.d, "model": to_plain(setup.model)}
    if not setup.model.pretrain_tasks:
        return cache.per_seed(store, "psi0", lambda s: {**fields, "s": s}, seed_ids,
                              lambda ids: init_seeds(key, ids, setup=setup))
    pre_mus, pre_irr = (np.asarray(x) for x in data.pretraining_tasks(task_patterns, setup.model.pretrain_tasks))
    fields |= {"pre": _digest(pre_mus, pre_irr), **setup.fields()}
    psi0 = cache.per_seed(store, "psi0", lambda s: {**fields, "s": s}, seed_ids,
                          lambda ids: init_seeds(key, ids, pre_mus, pre_irr, setup=setup))
    if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(psi0)):
        raise train.DivergenceError("Psi_0's pre-training diverged (non-finite parameters); lower train.eta or "
                                    "model.pretrain_steps")
    return psi0


def psi0_eval(seed: int, setup: Setup, seed_ids: np.ndarray, psi0, task_patterns, n_test: int,
              k: int = 0) -> dict[str, np.ndarray]:
    """Psi_0 per seed (leaves (S, ...), as a sweep returns it): the Frobenius norms of its merged W_0 and V_0 (S,),
    and, with k > 0, its hinge loss and accuracy on a test set of each of the k pre-training tasks of
    ``task_patterns`` (S, k; stream TEST, task index PRETRAIN_TASK_TEST + j)."""
    norms = np.array([[np.linalg.norm(x) for x in architectures.weight_norms(setup.model, select(psi0, i))]
                      for i in range(len(seed_ids))])
    out = {"W0_norm": norms[:, 0], "V0_norm": norms[:, 1]}
    if k:
        mus, irr = data.pretraining_tasks(task_patterns, k)
        key = streams.run_key(seed)

        @jax.jit
        def one(p, s, j):
            X, y = data.sample(streams.task(streams.seed_key(key, s), streams.TEST, streams.PRETRAIN_TASK_TEST + j),
                               mus[j], irr[j], n_test, setup.data)
            return metrics.evaluate_with(setup.net.apply, p, X, y)

        ev = [[one(select(psi0, i), s, j) for j in range(k)] for i, s in enumerate(seed_ids)]
        out |= {name: np.array([[float(e[name]) for e in row] for row in ev]) for name in ("loss", "acc")}
    return out


def finetune_all(seed: int, setup: Setup, seed_ids: np.ndarray, psi0, mu, stream: int, irr, store: cache.Store):
    """Psi*_T for every seed from its Psi_0 (TrainResult with a leading seed axis), cached per seed. ``stream`` is the
    task's index among the fine-tune streams of a seed."""
    key = streams.run_key(seed)
    mu = np.asarray(mu, np.float32)
    base = {"seed": seed, **setup.fields(), "irr": _digest(irr), "mu": np.round(mu.astype(float), 7),
            "stream": stream}
    return cache.per_seed(store, "finetune", lambda s: {**base, "s": s}, seed_ids, lambda ids: finetune_from(
        key, ids, select(psi0, ids), mu, irr, stream, setup))


def valid(*arrays, axis_count: int = 1) -> np.ndarray:
    """True where every value of every array is finite, per leading index (the first ``axis_count`` axes)."""
    ok = None
    for a in arrays:
        a = np.asarray(a, float)
        f = np.isfinite(a).reshape(*a.shape[:axis_count], -1).all(-1)
        ok = f if ok is None else ok & f
    return ok


# ------------------------------------------------------------------------------------------------ Theorems 1-2
class PairSweep(NamedTuple):
    """Theorems 1-2 for every (alpha, seed): Psi_0 + dPsi_T1 + lambda dPsi_T2 on T1's and T2's test sets."""

    loss: np.ndarray         # (A, S, L, 2)   last axis: task T1, T2
    acc: np.ndarray          # (A, S, L, 2)
    finite: np.ndarray       # (A, S) both fine-tunes and every evaluated quantity stayed finite
    own: np.ndarray          # (A, S, 2, 2) Psi*_T1 on T1, Psi*_T2 on T2: (hinge loss, accuracy)
    alpha_hat: np.ndarray    # (A, S) output cosine of Psi*_T1 and Psi*_T2
    tv_cosine: np.ndarray    # (A, S) cosine of dPsi_T1 and dPsi_T2 in parameter space
    norms: np.ndarray        # (A, S, 2, 2) ||dW||_F, ||dV||_F for T1, T2 (architectures.delta_norms)
    curves: np.ndarray       # (A, S, 2, steps // log_every) each fine-tune's training hinge loss
    psi0: dict               # Psi_0, leaves (S, ...)


def pair_sweep(seed: int, n_seeds: int, alphas, lams, setup: Setup, *, n_test: int = 2000, n_alpha_hat: int = 500,
               chunk: int = 1, store: cache.Store | None = None, progress=None,
               comp: Compression = Compression()) -> PairSweep:
    """The Theorem 1-2 sweep. T1's fine-tune does not depend on alpha and is shared; every stage is compiled once
    and reused for every alpha, and cached per seed. Any model and data option of ``setup``; compressed task
    vectors (``comp``) for the paper's model only."""
    if comp != Compression() and setup.model.arch != "paper":
        raise ValueError(f"model.arch={setup.model.arch!r}: compressed task vectors ({comp.name}) are defined for "
                         "arch='paper' only")
    store = store or cache.NoStore()
    d = setup.data.d
    seed_ids = np.arange(n_seeds, dtype=np.int32)
    alphas = np.asarray(alphas, np.float32)
    lams = np.asarray(lams, np.float32)
    # The irrelevant patterns span the complement of (e_1, e_2) (e_1..e_2K for K classes), which holds mu_T1 and
    # mu_T2 for every alpha.
    span = np.eye(d)[:setup.data.pair_dirs()]
    irr = irrelevant(seed, setup, span)
    key = streams.run_key(seed)
    psi0 = pretrained(seed, setup, seed_ids, store, span)
    mus = np.asarray(jax.vmap(lambda a: data_options.pair_patterns(a, setup.data))(alphas))
    finetuned = lambda mu, i: finetune_all(seed, setup, seed_ids, psi0, mu, i, irr, store)  # noqa: E731
    fields = {"seed": seed, **setup.fields(), "irr": _digest(irr), "lams": lams, "n_test": n_test,
              "n_alpha_hat": n_alpha_hat, **comp.fields()}
    q = setup.data.max_distinct(irr.shape[0])

    def first():
        ft1 = finetuned(mus[0, 0], 0)
        return ft1, taskvec.task_vector(ft1.params, psi0)

    eval_fields = lambda a, s: {**fields, "s": s, "alpha": float(a)}  # noqa: E731

    def evaluation(i, ids, psi0_S, tau1_S, tau2_S):
        """Alpha i's pair_eval on seeds ``ids``, as a call not yet made (the stage makes it, compiled_ahead
        compiles it)."""
        return partial(pair_eval, *draw(key, ids, streams.TEST, (0, 1), mus[i], irr, n_test, setup.data),
                       psi0_S, tau1_S, tau2_S, lams, pattern_tables(mus[i], irr, setup.data), setup=setup,
                       n_alpha_hat=n_alpha_hat, chunk=chunk, q=q, comp=comp)

    def evaluate(i, a, t1, t2):               # alpha i, once both fine-tunes (futures t1, t2) are done
        (ft1, tau1), ft2 = t1.result(), t2.result()
        tau2 = taskvec.task_vector(ft2.params, psi0)
        ev = cache.per_seed(store, "pair_eval", lambda s: eval_fields(a, s), seed_ids, lambda ids: evaluation(
            i, ids, select(psi0, ids), select(tau1, ids), select(tau2, ids))())
        ok = np.asarray(ft1.finite) & np.asarray(ft2.finite) & valid(*ev)
        curves = np.stack([np.asarray(ft1.curve_loss), np.asarray(ft2.curve_loss)], axis=1)
        return (*ev, ok, curves)

    def first_evaluation():                   # alpha 0's, Psi_0 standing in for the task vectors (their shapes)
        p = select(psi0, seed_ids)
        return evaluation(0, seed_ids, p, p, p)

    # Stages in the order the pool starts them: T1's fine-tune, then T2's for each alpha one ahead of that alpha's
    # evaluation, so that on two CPUs the last two evaluations end the sweep together. A stage only waits for
    # stages submitted before it (already started), so one CPU runs them in this order.
    cold = not any(store.has("pair_eval", eval_fields(alphas[0], int(s))) for s in seed_ids)
    with compiled_ahead(first_evaluation, cold), stage_pool() as pool:
        ft1, evals = pool.submit(first), []
        ft2 = [pool.submit(finetuned, mus[0, 1], 1)]
        for i, a in enumerate(alphas):
            if i + 1 < len(alphas):
                ft2.append(pool.submit(finetuned, mus[i + 1, 1], 1))
            evals.append(pool.submit(evaluate, i, a, ft1, ft2[i]))
        cells = []
        for i, (a, done) in enumerate(zip(alphas, evals)):
            cells.append(done.result())
            if progress:
                progress(i + 1, len(alphas), f"alpha {float(a):g}")
    loss, acc, own, ahat, cos, norms, finite, curves = (np.stack(x) for x in zip(*cells))
    return PairSweep(loss, acc, finite, own, ahat, cos, norms, curves, psi0)


# ------------------------------------------------------------------------------------------------ Theorem 3
class OODSweep(NamedTuple):
    """Theorem 3 for every seed: Psi_0 + sum_i lambda_i dPsi_Ti on the out-of-domain task T'."""

    coeffs: np.ndarray       # (G, K) the coefficient grid
    loss: np.ndarray         # (S, G) on T's test set
    acc: np.ndarray          # (S, G)
    val_loss: np.ndarray     # (S, G) on T's validation set (choices are made here, reported on test)
    val_acc: np.ndarray      # (S, G)
    ref_loss: np.ndarray     # (S, 1 + K) on T' (test): direct fine-tune on T', then Psi_0 + dPsi_Ti per source
    ref_acc: np.ndarray      # (S, 1 + K)
    own_acc: np.ndarray      # (S, 1 + K) the direct fine-tune on T', each source's on its own task
    finite: np.ndarray       # (S,) every fine-tune of the seed and every evaluated quantity stayed finite
    taus: dict               # task vectors, leaves (S, K, ...)
    psi0: dict               # Psi_0, leaves (S, ...)


def coefficient_grid(ranges) -> np.ndarray:
    """The product grid of per-source ranges [(min, max, step), ...] as rows (G, K), lambda_1 varying slowest."""
    axes = [grid(lo, hi, st) for lo, hi, st in ranges]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=-1).astype(np.float32)


def ood_sweep(seed: int, n_seeds: int, gammas, kappa, ranges, setup: Setup, *, n_test: int = 2000,
              n_val: int = 500, chunk: int = 1, store: cache.Store | None = None,
              comp: Compression = Compression(), progress=None) -> OODSweep:
    """Theorem 3: fine-tune each source task T_i (mu_Ti = e_i) and, as the reference, T' itself; evaluate the
    coefficient grid on T'. Psi_0 and fine-tunes share the cache with the other sweeps. Binary tasks only; any
    model option (compressed task vectors for arch='paper' only)."""
    if setup.data.multiclass:
        raise ValueError(f"data.classes={setup.data.classes}: Theorem 3's target is defined for binary tasks only (2)")
    if comp != Compression() and setup.model.arch != "paper":
        raise ValueError(f"model.arch={setup.model.arch!r}: compressed task vectors ({comp.name}) are defined for "
                         "arch='paper' only")
    store = store or cache.NoStore()
    sources, target = (np.asarray(x) for x in data.ood_patterns(gammas, kappa, setup.data.d))
    K = sources.shape[0]
    coeffs = coefficient_grid(ranges)
    if coeffs.shape[1] != K:                # before any compute
        raise ValueError(f"ranges: {coeffs.shape[1]} coefficient ranges for {K} source tasks (gammas)")
    irr = irrelevant(seed, setup, np.vstack([sources, target]))
    seed_ids = np.arange(n_seeds, dtype=np.int32)
    psi0 = pretrained(seed, setup, seed_ids, store, np.vstack([sources, target]))
    fields = {"seed": seed, **setup.fields(), "irr": _digest(irr), "gammas": np.round(np.asarray(gammas, float), 7),
              "kappa": kappa, "coeffs": coeffs, "n_test": n_test, "n_val": n_val, **comp.fields()}
    key = streams.run_key(seed)

    eval_fields = lambda s: {**fields, "s": s}  # noqa: E731

    def evaluation(ids, psi0_S, taus_S, direct_S):
        """ood_eval on seeds ``ids``, as a call not yet made (the stage makes it, compiled_ahead compiles it)."""
        only = lambda sets: jax.tree.map(lambda a: a[:, 0], sets)  # noqa: E731  (T' is the one set drawn)
        test = only(draw(key, ids, streams.TEST, (0,), target[None], irr, n_test, setup.data))
        val = only(draw(key, ids, streams.VAL, (0,), target[None], irr, n_val, setup.data))
        own = draw(key, ids, streams.TEST, 1 + np.arange(K), sources, irr, min(n_test, 500), setup.data)
        tables = pattern_tables(target[None], irr, setup.data)
        return partial(ood_eval, test, val, own, psi0_S, taus_S, direct_S, coeffs,
                       None if tables is None else tables[0], setup=setup, chunk=chunk,
                       q=setup.data.max_distinct(irr.shape[0]), comp=comp)

    def first_evaluation():                    # Psi_0 standing in for the task vectors and the direct fine-tune
        p = select(psi0, seed_ids)
        return evaluation(seed_ids, p, jax.tree.map(lambda x: jnp.stack([x] * K, axis=1), p), p)

    cold = not any(store.has("ood_eval", eval_fields(int(s))) for s in seed_ids)
    with compiled_ahead(first_evaluation, cold), stage_pool() as pool:   # the sources' fine-tunes, the direct one on T'
        *fts, direct = [f.result() for f in [pool.submit(finetune_all, seed, setup, seed_ids, psi0, mu, i, irr, store)
                                             for i, mu in enumerate([*sources, target])]]
    taus = jax.tree.map(lambda *t: np.stack(t, axis=1), *[taskvec.task_vector(f.params, psi0) for f in fts])
    ev = cache.per_seed(store, "ood_eval", eval_fields, seed_ids, lambda ids: evaluation(
        ids, select(psi0, ids), select(taus, ids), select(direct.params, ids))())
    finite = np.all([np.asarray(f.finite) for f in fts + [direct]], axis=0) & valid(*ev)
    if progress:
        progress(1, 1, f"out-of-domain grid of {len(coeffs)} points x {n_seeds} seeds")
    return OODSweep(coeffs, *ev, finite, taus, psi0)
