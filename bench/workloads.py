"""The benchmark workloads, one per process call: `python bench/workloads.py W1 [--seeds 5] [--tiny]`.

Each call runs one workload from a cold start (compilation included, no cache) and prints one JSON line with its wall
time, its FLOP count and the device. ``--tiny`` shrinks steps, test sets and grids to check that the benchmark runs end
to end (its numbers measure nothing). The count is the arithmetic executed: SGD steps from XLA's cost analysis of one
step (times the step count: XLA counts a loop body once), test-set forward passes analytically (cross-checked against
XLA's count in the output), and grid points analytically from the distinct tokens of the samples they evaluate (the
native kernel skips a sample's padding: ``grid_point_flops``).
"""

import argparse
import json
import time
from typing import NamedTuple

import numpy as np

from tvtheory.config import Data, Model, Train, grid

D, P, M, N_REL, N_CONF, BATCH = 32, 20, 256, 4, 2, 64


class Size(NamedTuple):
    """What a workload runs: SGD steps per fine-tune, test samples per task, and the grids (range steps)."""

    steps: int = 300
    n_test: int = 2000
    lam_step: float = 0.1                 # W1, W3: lambda in [-2, 3]; W2: lambda_1 in [-2, 3] x lambda_2 in [-2, 2]
    w3_alphas: int = 21

    def lams(self) -> np.ndarray:
        return grid(-2, 3, self.lam_step)


FULL, TINY = Size(), Size(steps=20, n_test=200, lam_step=1.0, w3_alphas=3)


def forward_flops(n: int) -> float:
    """Multiply-adds x 2 of one forward pass on n samples (merged form), in the product order model.apply uses."""
    values = 2 * P * P * D + 2 * P * D * M if D < M else 2 * P * D * M + 2 * P * P * M     # (A X) V^T or A (X V^T)
    return float(n * (2 * P * D * D + 2 * P * P * D + values + P * M))


Q = Data(D, P, N_REL, N_CONF).max_distinct(D - 3)     # distinct tokens per sample (16 of 20), pair and OOD


def grid_point_flops(distinct: np.ndarray, native: bool) -> float:
    """One coefficient-grid point on samples with ``distinct`` tokens each, once the lambda-independent products are
    reused: the attention weights (4 Q^2, XLA's softmax over all Q slots), the attention-weighted sums and the sum of
    their ReLUs. XLA's fused loop multiplies and adds every one of the Q^2 (query, key) pairs, padding included
    (2 Q^2 m + Q m); the native kernel (``native``: tvtheory.cpu_kernel) only a sample's k live queries by its keys
    up to the last live one, in quads and a last pair (2 k keys(k) m + k m), so that the count is the arithmetic
    executed."""
    k = np.asarray(distinct, np.int64)
    if native:
        keys = 4 * ((k + 1) // 4) + 2 * np.isin(k % 4, (1, 2))
        return float(np.sum(2 * k * keys * M + k * M + 4 * Q * Q))
    return float(k.size * (2 * Q * Q * M + Q * M + 4 * Q * Q))


def distinct_rows(X: np.ndarray) -> np.ndarray:
    """The number of distinct tokens of each sample of X (..., P, d): its rows compared as bytes, exactly (a noiseless
    sample's tokens are rows of its pattern table, their zeros all +0)."""
    X = np.ascontiguousarray(X).reshape(-1, X.shape[-2], X.shape[-1])
    tokens = np.sort(X.view(np.dtype((np.void, X.shape[-1] * X.itemsize)))[..., 0], axis=-1)
    return 1 + np.count_nonzero(tokens[:, 1:] != tokens[:, :-1], axis=-1)


def grid_distinct(workload: str, seeds: int, alphas, size: Size) -> np.ndarray:
    """The distinct tokens of every sample a workload's grids evaluate, each sample once per alpha (W1, W3) or once
    (W2: the test and validation sets of T'), from the very draws the sweeps make (same keys and streams), one set at
    a time (the process's peak memory is the workload's)."""
    from tvtheory import data, data_options, streams, sweep

    setup = sweep.Setup(Data(D, P, N_REL, N_CONF), Model(M), Train(1.0, BATCH, size.steps, 10, 0))
    key, ids = streams.run_key(0), np.arange(seeds, dtype=np.int32)
    if workload == "W2":
        sources, target = (np.asarray(x) for x in data.ood_patterns([0.75, -0.6], None, D))
        irr = sweep.irrelevant(0, setup, np.vstack([sources, target]))
        sets = [(streams.TEST, (0,), target[None], size.n_test), (streams.VAL, (0,), target[None], size.n_test // 4)]
    else:
        irr = sweep.irrelevant(0, setup, np.eye(D)[:setup.data.pair_dirs()])
        sets = [(streams.TEST, (0, 1), np.asarray(data_options.pair_patterns(a, setup.data)), size.n_test)
                for a in np.asarray(alphas, np.float32)]
    return np.concatenate([distinct_rows(np.asarray(sweep.draw(key, ids, stream, tasks, mus, irr, n, setup.data)[0]))
                           for stream, tasks, mus, n in sets])


def xla_flops() -> dict:
    """XLA's cost analysis of one forward pass and of one SGD gradient on a batch. A loop body (scan, lax.map) is
    counted once by XLA, so the totals multiply these per-step counts by the trip counts."""
    import jax

    from tvtheory import data, model, train

    p = model.init_params(jax.random.key(0), D, M)
    mus = data.pair_patterns(0.0, D)
    X, y = data.sample(jax.random.key(1), mus[0], data.irrelevant_patterns(mus), BATCH, Data(D, P, N_REL, N_CONF))
    cost = lambda f, *a: float(jax.jit(f).lower(*a).compile().cost_analysis()["flops"])  # noqa: E731
    return {"forward_batch": cost(model.apply, p, X),
            "sgd_step": cost(jax.value_and_grad(train.hinge_objective, has_aux=True), p, X, y)}


def run(workload: str, seeds: int, size: Size = FULL) -> dict:
    import jax

    from tvtheory import cpu_kernel, model, sweep

    if workload not in ("W1", "W2", "W3"):
        raise SystemExit(f"workload={workload!r}: must be W1, W2 or W3")
    setup = sweep.Setup(Data(D, P, N_REL, N_CONF), Model(M), Train(1.0, BATCH, size.steps, 10, 0))
    lams, n_test, n_val = size.lams(), size.n_test, size.n_test // 4
    t0 = time.perf_counter()
    if workload == "W2":
        ranges = [(-2, 3, size.lam_step), (-2, 2, size.lam_step)]
        r = sweep.ood_sweep(0, seeds, [0.75, -0.6], None, ranges, setup, n_test=n_test, n_val=n_val)
    else:
        alphas = [-0.9, -0.5, 0.0, 0.5, 0.9] if workload == "W1" else np.round(np.linspace(-1, 1, size.w3_alphas), 2)
        r = sweep.pair_sweep(0, seeds, alphas, lams, setup, n_test=n_test)
        jax.block_until_ready(r.loss)
    wall = time.perf_counter() - t0
    xla = xla_flops()                                       # after the clock: not part of the workload
    train_flops = lambda runs: runs * size.steps * xla["sgd_step"]  # noqa: E731
    # grid_eval runs the kernel on a pattern table up to FUSED_Q_MAX distinct tokens (XLA's batched product beyond)
    native = cpu_kernel.available(Q, M, np.float32, np.int32, np.float32) and Q <= model.FUSED_Q_MAX
    distinct = grid_distinct(workload, seeds, None if workload == "W2" else alphas, size)
    if workload == "W2":
        flops = (train_flops(seeds * 3) + len(r.coeffs) * grid_point_flops(distinct, native)
                 + seeds * 6 * forward_flops(n_test))
    else:
        A = len(alphas)
        flops = (train_flops(seeds * (1 + A)) + len(lams) * grid_point_flops(distinct, native)
                 + A * seeds * 2 * 3 * forward_flops(n_test))
    return {"workload": workload, "seeds": seeds, "size": size._asdict(), "seconds": wall, "flops": flops,
            "gflops_per_s": flops / wall / 1e9,
            "device": str(jax.devices()[0]), "jax": jax.__version__,
            "flops_per_unit": {"sgd_step_xla": xla["sgd_step"], "forward_batch_xla": xla["forward_batch"],
                               "forward_batch_analytic": forward_flops(BATCH)},
            "grid": {"native_kernel": native, "distinct_tokens_mean": float(distinct.mean()),
                     "executed_share_of_padded": (grid_point_flops(distinct, native)
                                                  / grid_point_flops(distinct, False))}}


def matmul_peak(n: int = 4096) -> dict:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return {"workload": "matmul_peak", "gflops_per_s": 2 * n**3 / min(times) / 1e9, "device": str(jax.devices()[0])}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="a smoke run at tiny size (its numbers measure nothing)")
    a = ap.parse_args()
    out = (matmul_peak(512 if a.tiny else 4096) if a.workload == "peak"
           else run(a.workload, a.seeds, TINY if a.tiny else FULL))
    print(json.dumps(out))
