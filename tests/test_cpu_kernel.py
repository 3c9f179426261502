"""The native kernel of a grid point (tvtheory/cpu_kernel.py): bit for bit what XLA's fused loop computes."""
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvtheory import cpu_kernel, model

needs_kernel = pytest.mark.skipif(not cpu_kernel.host_supported(), reason="needs llvmlite and a CPU with AVX2 and FMA")


def reference(A, rows, table):
    """XLA's fused loop as its machine code computes it, in numpy: each query's pairs a0 h0 + a1 h1 as one fused
    multiply-add of the first product onto the rounded second (the product is exact in float64), balanced trees of
    the pairs and of the queries, and a ReLU that passes NaN on."""
    A, H = np.asarray(A, np.float32), np.asarray(table, np.float32)[np.asarray(rows)]        # H (N, q, m)
    q = A.shape[-1]
    out = []
    with np.errstate(invalid="ignore"):                         # 0 x inf is NaN here as in XLA's loop
        for j in range(q):
            a = A[:, j, :, None]
            pairs = [(a[:, s].astype(np.float64) * H[:, s] + a[:, s + 1] * H[:, s + 1]).astype(np.float32)
                     for s in range(0, q, 2)]
            out.append(np.maximum(model._tree_sum(pairs), np.float32(0)))
    return model._tree_sum(out)


def logits(rng, N, q, live=None):
    """Attention logits S (N, q, q) and query weights w (N, q) of N samples, each with its own number of live tokens
    (the rest padding, as model.grid_eval's: logits -inf on padding keys, weight 0 on padding queries)."""
    live = rng.integers(1, q + 1, N) if live is None else np.asarray(live)
    S = rng.normal(size=(N, q, q)).astype(np.float32)
    S = np.where(np.arange(q) < live[:, None, None], S, -np.inf).astype(np.float32)
    return S, np.where(np.arange(q) < live[:, None], 0.05, 0.0).astype(np.float32)


def operands(seed, N, q, m, T=11, live=None):
    """The attention A = softmax(S) * w of ``logits`` (numpy's), rows into a table (T, m), the table."""
    rng = np.random.default_rng(seed)
    S, w = logits(rng, N, q, live)
    A = np.exp(S - S.max(-1, keepdims=True))
    A = A / A.sum(-1, keepdims=True) * w[..., None]
    return A.astype(np.float32), rng.integers(0, T, (N, q)).astype(np.int32), rng.normal(size=(T, m)).astype(np.float32)


@needs_kernel
@pytest.mark.parametrize("q, m", [(4, 16), (8, 32), (12, 48), (16, 256), (20, 64), (24, 16)])
def test_the_kernel_computes_xla_s_operations_bit_for_bit(q, m):
    A, rows, table = operands(q * m, 37, q, m, live=np.resize(np.arange(1, q + 1), 37))     # every count of live tokens
    A[3] = 0.0                                   # a sample with no live token
    A[5, 2] = 0.0                                # a query inside the live ones with no weight: computed, not skipped
    A[6, :, 1] = 0.0
    G = jax.jit(cpu_kernel.relu_attention)(A, rows, table)
    assert G.shape == (37, m) and G.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(G), reference(A, rows, table))
    assert np.count_nonzero(np.asarray(G)) > 0.5 * G.size


@needs_kernel
@pytest.mark.parametrize("q, m", [(8, 32), (16, 256)])
def test_the_kernel_forms_the_attention_from_exponentials_and_sums_as_xla_does(q, m):
    """softmax(S) * w as XLA computes it from E = exp(S - max S) and the sums of E: E (1 / sum) w, row by row, each
    operation rounded to float32. Padding queries have exponentials and weight 0; samples have as many live keys as
    queries, or fewer, or more."""
    rng = np.random.default_rng(q)
    S, _ = logits(rng, 37, q, live=np.resize(np.arange(1, q + 1), 37))                # live keys: every count
    w = np.where(np.arange(q) < rng.integers(1, q + 1, (37, 1)), rng.uniform(0.01, 1, (37, q)), 0).astype(np.float32)
    E = np.exp(S - S.max(-1, keepdims=True)).astype(np.float32)
    sums = E.sum(-1, dtype=np.float32)
    rows, table = rng.integers(0, 11, (37, q)).astype(np.int32), rng.normal(size=(11, m)).astype(np.float32)
    formed = (E * (np.float32(1) / sums)[..., None]) * w[..., None]
    G = jax.jit(cpu_kernel.relu_attention)(E, rows, table, sums, w)
    np.testing.assert_array_equal(np.asarray(G), reference(formed, rows, table))
    assert not np.array_equal(formed, E / sums[..., None] * w[..., None])   # a division would round otherwise
    assert np.all((E != 0).sum(-1) > 0) and np.any((w == 0) & (E != 0).any(-1))   # padding queries' E is not 0
    # A sum of 0 makes a query's weights inf, and its padding keys' 0 x inf NaN: every key is then live, as in XLA.
    sums[4, 0] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        formed = (E * (np.float32(1) / sums)[..., None]) * w[..., None]
        G, ref = np.asarray(jax.jit(cpu_kernel.relu_attention)(E, rows, table, sums, w)), reference(formed, rows, table)
    np.testing.assert_array_equal(G, ref)
    assert np.isnan(G[4]).all() and np.isfinite(np.delete(G, 4, axis=0)).all()


@needs_kernel
def test_a_non_finite_value_is_multiplied_as_xla_does_even_by_a_padding_weight():
    """0 x inf is NaN in XLA's loop, so with a non-finite value in the table nothing is skipped: a sample whose only
    contact with the value is a padding key turns NaN as in the reference, and skipping would have hidden it."""
    A, rows, table = operands(0, 8, 8, 16, live=[3, 8, 2, 5, 8, 1, 4, 6])
    rows[0, 5] = 0                               # sample 0's padding key 5 reads row 0 ...
    rows[0, :3] = 1                              # ... and its live keys read row 1
    for bad in (np.inf, np.nan):
        t = table.copy()
        t[0, 3] = bad
        G, ref = np.asarray(jax.jit(cpu_kernel.relu_attention)(A, rows, t)), reference(A, rows, t)
        np.testing.assert_array_equal(G, ref)
        assert np.isnan(G[0, 3]) and np.isnan(ref[0, 3])
    finite = np.asarray(jax.jit(cpu_kernel.relu_attention)(A, rows, table))
    assert np.all(np.isfinite(finite))
    A[2] = 0.0                                   # a sample without a live token: 0 x inf still NaN
    t = table.copy()
    t[rows[2, 0], 0] = np.inf
    G, ref = np.asarray(jax.jit(cpu_kernel.relu_attention)(A, rows, t)), reference(A, rows, t)
    np.testing.assert_array_equal(G, ref)
    assert np.isnan(G[2, 0])


@needs_kernel
@pytest.mark.parametrize("N", [0, 1, 16, 17, 200])
def test_any_number_of_samples_is_split_into_chunks_that_cover_them_once(N):
    """The handler splits the samples into chunks of CHUNK that the calling thread and XLA's pool threads claim."""
    A, rows, table = operands(N + 5, N, 8, 32)
    G = np.asarray(jax.jit(cpu_kernel.relu_attention)(A, rows, table))
    assert G.shape == (N, 32)
    np.testing.assert_array_equal(G, reference(A, rows, table))


@needs_kernel
def test_calls_from_several_threads_at_once_each_get_their_own_numbers():
    """The sweeps run stages side by side on threads, each calling the kernel while the others do."""
    from concurrent.futures import ThreadPoolExecutor

    f = jax.jit(cpu_kernel.relu_attention)
    problems = [operands(seed, 150, 16, 64) for seed in range(6)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda p: [np.asarray(f(*p)) for _ in range(5)], problems))
    for p, runs in zip(problems, results):
        for G in runs:
            np.testing.assert_array_equal(G, reference(*p))


@needs_kernel
def test_a_batch_of_calls_under_vmap_is_each_call():
    A, rows, table = operands(1, 9, 16, 32)
    tables = np.stack([table, 2 * table, -table])
    batched = jax.jit(jax.vmap(cpu_kernel.relu_attention, in_axes=(None, None, 0)))(A, rows, tables)
    for t, G in zip(tables, np.asarray(batched)):
        np.testing.assert_array_equal(G, reference(A, rows, t))


@needs_kernel
def test_rows_out_of_range_are_read_as_jax_s_gather_reads_them(monkeypatch):
    """The kernel counts a negative row from the end and clamps one past the end, as table[rows] (and so as
    model.relu_attention_rows with XLA's loop)."""
    A, rows, table = operands(2, 6, 8, 16, T=5)
    rows[0, 0], rows[1, 1], rows[2, 2], rows[3, 3] = -1, -5, 5, 99
    native = np.asarray(jax.jit(cpu_kernel.relu_attention)(A, jnp.asarray(rows), table))
    np.testing.assert_array_equal(native, reference(A, np.clip(np.where(rows < 0, rows + 5, rows), 0, 4), table))
    S, w = logits(np.random.default_rng(2), 6, 8)
    # a new function for each setting: JAX reuses a function's trace for the same input types, and the setting is
    # read when tracing
    on_rows = lambda: np.asarray(jax.jit(lambda *a: model.relu_attention_rows(*a))(S, w, jnp.asarray(rows), table))  # noqa: E731
    native = on_rows()
    monkeypatch.setenv("TVTHEORY_NATIVE", "0")
    assert not cpu_kernel.available(8, 16, jnp.float32, jnp.int32, jnp.float32)
    np.testing.assert_allclose(on_rows(), native, rtol=1e-6, atol=1e-7)  # XLA's loop (unoptimised in the tests)


def test_the_kernel_is_used_only_where_it_applies(monkeypatch):
    f32, i32 = jnp.float32, jnp.int32
    ok = cpu_kernel.host_supported()
    assert cpu_kernel.available(16, 256, f32, i32, f32) == ok
    for q, m in ((14, 256), (2, 256), (16, 40)):
        assert not cpu_kernel.available(q, m, f32, i32, f32)
    assert not cpu_kernel.available(16, 256, jnp.float16, i32, f32) and not cpu_kernel.available(16, 256)
    assert not cpu_kernel.available(16, 256, f32, f32, f32) and not cpu_kernel.available(16, 256, f32, i32, jnp.int32)
    with pytest.raises(ValueError, match="q a multiple of 4"):
        cpu_kernel.kernel_ir(6, 16)
    monkeypatch.setenv("TVTHEORY_NATIVE", "0")
    assert not cpu_kernel.available(16, 256, f32, i32, f32)
    S, w = logits(np.random.default_rng(3), 4, 6)                        # q = 6, m = 24: XLA's loop
    A, rows, table = operands(3, 4, 6, 24)
    G = jax.jit(model.relu_attention_rows)(S, w, rows, table)
    A = np.asarray(jax.nn.softmax(S, axis=-1) * w[..., None])
    np.testing.assert_allclose(np.asarray(G), reference(A, rows, table), rtol=1e-6, atol=1e-7)


@needs_kernel
def test_operands_of_the_wrong_shape_are_refused_with_the_field_named_before_any_compute():
    """The kernel trusts the shapes its handler reads, so the call checks them: a mismatch would read past a buffer."""
    A, rows, table = operands(4, 8, 8, 16)
    sums = np.ones((8, 8), np.float32)
    cases = [("A", (A[:, :, :4], rows, table)), ("rows", (A, rows[:4], table)), ("table", (A, rows, table[:0])),
             ("table", (A, rows, table[0])), ("A", (A[0], rows, table)), ("sums", (A, rows, table, sums[:, :4])),
             ("weights", (A, rows, table, sums, sums[:7])), ("sums", (A, rows, table, sums.astype(np.int32))),
             ("weights", (A, rows, table, sums, sums.astype(np.float16)))]
    for field, args in cases:
        with pytest.raises(ValueError, match=f"relu_attention: {field} must be"):
            cpu_kernel.relu_attention(*args)
    with pytest.raises(ValueError, match="no kernel for q=8, m=16, dtypes float32, int32, float16"):
        cpu_kernel.relu_attention(A, rows, table.astype(np.float16))


def test_the_handler_speaks_the_ffi_version_of_the_installed_xla():
    header = Path(jax.ffi.include_dir()) / "xla" / "ffi" / "api" / "c_api.h"
    text = header.read_text()
    version = tuple(int(re.search(rf"#define XLA_FFI_API_{part} (\d+)", text).group(1)) for part in ("MAJOR", "MINOR"))
    assert version == cpu_kernel.FFI_API
    ir = cpu_kernel.kernel_ir(8, 16)
    assert f"store i32 {version[0]}, ptr %major" in ir and f"store i32 {version[1]}, ptr %minor" in ir


@needs_kernel
@pytest.mark.slow
def test_grid_eval_gives_the_same_bits_with_the_kernel_as_with_xla_s_optimised_loop():
    """With the suite's own XLA options (not the tests' LLVM level 0), a grid of one and of two task vectors, point by
    point and in chunks (vmap), on a sample set with padding tokens: losses, accuracies and each grid point's sums
    are the same bits with the kernel as with XLA's fused loop."""
    script = r"""
import os, numpy as np, jax, jax.numpy as jnp
from tvtheory import cpu_kernel, model
rng = np.random.default_rng(0)
d, m, P, N, q = 12, 64, 20, 150, 16
table = jnp.asarray(np.concatenate([np.eye(d), -np.eye(d)[:4]]), jnp.float32)
X = table[rng.integers(0, table.shape[0], (N, P))]
y = jnp.asarray(rng.choice([-1.0, 1.0], N), jnp.float32)
base = {"W": jnp.asarray(rng.normal(size=(d, d)), jnp.float32), "V": jnp.asarray(rng.normal(size=(m, d)), jnp.float32)}
taus = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=(2,) + x.shape) * 0.3, jnp.float32), base)
out = {}
for native in ("1", "0"):
    os.environ["TVTHEORY_NATIVE"] = native
    assert cpu_kernel.available(q, m, jnp.float32, jnp.int32, jnp.float32) == (native == "1")
    for K, chunk in ((1, 1), (2, 1), (2, 3)):
        c = jnp.asarray(rng.uniform(-1, 2, (7, K)) if native == "1" else out["c", K, chunk], jnp.float32)
        out["c", K, chunk] = c
        t = jax.tree.map(lambda x: x[:K], taus)
        f = jax.jit(lambda c: model.grid_eval(base, t, c, X, y, chunk=chunk, q=q, table=table, block=40))
        out[native, K, chunk] = [np.asarray(r) for r in f(c)]
for key in [k for k in out if k[0] == "1"]:
    for a, b in zip(out[key], out[("0",) + key[1:]]):
        assert np.isfinite(a).all() and a.tobytes() == b.tobytes(), key
S = jnp.asarray(rng.normal(size=(30, q, q)), jnp.float32).at[:, :, 12:].set(-jnp.inf)
w = jnp.broadcast_to(jnp.where(jnp.arange(q) < 13, 0.05, 0.0), (30, q))
rows, H = jnp.asarray(rng.integers(0, 26, (30, q)), jnp.int32), jnp.asarray(rng.normal(size=(26, m)), jnp.float32)
G = {}
for native in ("1", "0"):
    os.environ["TVTHEORY_NATIVE"] = native
    G[native] = np.asarray(jax.jit(lambda *a: model.relu_attention_rows(*a))(S, w, rows, H))   # a trace per setting
assert np.array_equal(G["1"], G["0"]), np.abs(G["1"] - G["0"]).max()
print("same bits")
"""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "same bits" in out.stdout, out.stderr[-3000:]
