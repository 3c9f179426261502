"""A grid point's attention-weighted sums as a native CPU kernel: the same numbers as XLA's fused loop, in less time.

``relu_attention(A, rows, table)`` computes ``model.fused_relu_attention(A, [table[rows[:, s]] for s in range(q)])``:

    G[n] = sum_j ReLU( sum_s A[n, j, s] table[rows[n, s]] )          A (N, q, q), rows (N, q), table (T, m) -> (N, m)

Given ``sums`` and ``weights`` (N, q) as well, it first forms a grid point's attention softmax(S) * weights from A =
exp(S - max S) and sums = A.sum(-1) per sample, as XLA's program does (A (1 / sums) weights, each product rounded),
which saves XLA a pass over the (N, q, q) weights (``model.relu_attention_rows``).

XLA fuses that expression into one loop over (N, m) which is bound by loading its operands: with AVX2's 16 vector
registers it keeps a sample's q^2 broadcast weights on the stack and reloads one for every multiply-add, while two
FMA pipes wait (docs/performance.md). This kernel does the same operations in the same order: each query's sum is
the same balanced tree (``model._tree_sum``) of the pairs ``fma(a0, h0, a1 * h1)`` into which LLVM contracts XLA's
``a0 h0 + a1 h1`` when it optimises (the suite's LLVM level 1 and XLA's default 3; at level 0, the tests' setting,
XLA leaves them uncontracted and differs in the last bit), then the ReLU and the same tree over queries. Its loops
are blocked for the registers: for 16 lanes of m at a time, the values of four keys stay in registers while each
query's four weights are broadcast once and serve both halves; each quad of keys' partial sums goes through a small
scratch buffer to the trees.

Queries and keys whose weights are all 0 (``grid_eval``'s padding of a sample's distinct tokens) are skipped from the
last live one on (keys by pairs), and so are their zeros in the trees: with every value of the table finite, their
terms are zeros, and a balanced tree of n terms followed by zeros adds the n terms in the very order of their own
tree. Where the table holds a non-finite value, nothing is skipped (0 x inf is NaN, as in XLA's loop). A sum that is
exactly 0 may come out as +0 where XLA's is -0.

The kernel is LLVM IR generated here for (q, m), compiled for the host CPU by llvmlite (a fraction of a second,
once per shape and process) and called by XLA through its typed FFI (``jax.ffi``); ``@handler`` reads XLA's call
frame and, as XLA spreads its own loops over its intra-op thread pool, shares the samples out in chunks among the
calling thread and that pool's idle threads (one alpha's pair evaluation of W1 on two CPUs, the kernel's first
version: XLA's loop 2.0-3.2 s, the kernel 1.5-2.5 s; on one CPU 3.2-3.5 s against 2.5-2.7 s, and 2.1-2.3 s with the
padding out of its trees and the attention formed in it: docs/performance.md). ``model.relu_attention_rows`` uses
it where it applies (``available``: a CPU backend, AVX2 with FMA, q a multiple of 4, m of 16, float32 weights and
values), and XLA's loop anywhere else; ``TVTHEORY_NATIVE=0`` keeps XLA's loop everywhere. tests/test_cpu_kernel.py
checks the kernel bit for bit against XLA's loop and against numpy.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
from functools import lru_cache

import jax
import jax.numpy as jnp

W = 8            # float32 lanes of an AVX2 vector
U = 2            # vectors of m per step: each broadcast weight serves U multiply-adds
KEYS = 4         # keys whose values stay in registers while each query's weights are broadcast
# The FFI version the handler reports to XLA, and the byte offsets of the fields of XLA's structs that it reads
# (jaxlib/include/xla/ffi/api/c_api.h: XLA_FFI_API_MAJOR and _MINOR, XLA_FFI_CallFrame, XLA_FFI_Buffer,
# XLA_FFI_Metadata_Extension and XLA_FFI_Metadata, on x86-64).
FFI_API = (0, 3)
_FRAME_EXTENSION, _FRAME_ARGS, _FRAME_RETS = 8, 72, 112        # extension_start, args.args, rets.rets
_BUFFER_DATA, _BUFFER_DIMS = 24, 40                              # data, dims
_EXTENSION_TYPE, _METADATA_EXTENSION, _EXTENSION_METADATA = 8, 1, 24   # type, XLA_FFI_Extension_Metadata, metadata

_lock = threading.Lock()
_targets: dict[tuple[int, int], str] = {}
_keep: list = []             # the compiled code and the ctypes handlers, alive as long as XLA may call them


def enabled() -> bool:
    """Whether the kernel may be used at all: ``TVTHEORY_NATIVE=0`` turns it off (read at each trace)."""
    return os.environ.get("TVTHEORY_NATIVE", "1") != "0"


@lru_cache(maxsize=None)
def host_supported() -> bool:
    """llvmlite installed, and a CPU with AVX2 and FMA."""
    try:
        import llvmlite.binding as llvm
    except ImportError:
        return False
    features = llvm.get_host_cpu_features()
    return bool(features.get("avx2") and features.get("fma"))


def available(q: int, m: int, *dtypes) -> bool:
    """Whether ``relu_attention`` runs natively for q keys and queries, m values and the dtypes of A, rows and table
    (float32, an integer, float32)."""
    return (enabled() and jax.default_backend() == "cpu" and q >= KEYS and q % KEYS == 0 and m % (W * U) == 0
            and len(dtypes) == 3 and jnp.dtype(dtypes[0]) == jnp.float32 == jnp.dtype(dtypes[2])
            and jnp.issubdtype(dtypes[1], jnp.integer) and host_supported())


def relu_attention(A_NxQxQ: jax.Array, rows_NxQ: jax.Array, table_TxM: jax.Array, sums_NxQ: jax.Array | None = None,
                   weights_NxQ: jax.Array | None = None) -> jax.Array:
    """sum_j ReLU(sum_s A[:, j, s] table[rows[:, s]]) by the native kernel, where ``available``. With ``sums`` and
    ``weights`` the kernel first forms each sample's attention as XLA forms ``softmax(S) * weights[..., None]`` from
    A = exp(S - max S) and sums = A.sum(-1): (A (1 / sums)) weights, row by row (as XLA writes the division).
    A row is read as ``table[rows]`` reads it: a negative one from the end, one out of range clamped. Not
    differentiable (JAX says so when asked); nothing in the suite differentiates a grid evaluation."""
    A, rows, table = jnp.asarray(A_NxQxQ), jnp.asarray(rows_NxQ), jnp.asarray(table_TxM)
    N, q = (A.shape[0], A.shape[-1]) if A.ndim == 3 else (-1, -1)
    ones = jnp.ones((max(N, 0), max(q, 0)), jnp.float32)                 # A itself: x (1 / 1) x 1 is x, bit for bit
    sums = ones if sums_NxQ is None else jnp.asarray(sums_NxQ)
    weights = ones if weights_NxQ is None else jnp.asarray(weights_NxQ)
    problems = [("A", A.ndim != 3 or A.shape != (N, q, q), f"(N, q, q); got {A.shape}"),
                ("rows", rows.shape != (N, q), f"(N, q) with A (N, q, q); got {rows.shape} with A {A.shape}"),
                ("table", table.ndim != 2 or table.shape[0] == 0, f"(T, m) with T > 0; got {table.shape}")]
    problems += [(name, x.shape != (N, q) or x.dtype != jnp.float32,
                  f"float32 (N, q) with A (N, q, q); got {x.dtype} {x.shape} with A {A.shape}")
                 for name, x in (("sums", sums), ("weights", weights))]
    for name, bad, need in problems:
        if bad:
            raise ValueError(f"cpu_kernel.relu_attention: {name} must be {need}")
    T, m = table.shape
    if not available(q, m, A.dtype, rows.dtype, table.dtype):
        raise ValueError(f"cpu_kernel.relu_attention: no kernel for q={q}, m={m}, dtypes {A.dtype}, {rows.dtype}, "
                         f"{table.dtype} here (see available)")
    rows = jnp.clip(jnp.where(rows < 0, rows + T, rows), 0, T - 1).astype(jnp.int32)
    call = jax.ffi.ffi_call(target(q, m), jax.ShapeDtypeStruct((N, m), jnp.float32), vmap_method="sequential")
    return call(A, sums, weights, rows, table)


def target(q: int, m: int) -> str:
    """The name of the FFI target of the kernel for (q, m), compiled and registered with XLA on first use."""
    with _lock:
        if (q, m) not in _targets:
            import llvmlite.binding as llvm

            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            module = llvm.parse_assembly(kernel_ir(q, m))
            module.verify()
            machine = llvm.Target.from_default_triple().create_target_machine(
                cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3)
            passes = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3))
            passes.getModulePassManager().run(module, passes)
            engine = llvm.create_mcjit_compiler(module, machine)
            engine.finalize_object()
            handler = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(engine.get_function_address("handler"))
            _keep.append((engine, module, machine, handler))
            name = f"tvtheory_relu_attention_q{q}_m{m}"
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler), platform="cpu")
            _targets[q, m] = name
        return _targets[q, m]


def kernel_ir(q: int, m: int) -> str:
    """LLVM IR of ``@kernel(G, A, sums, weights, rows, table, N, finite)`` for (q, m), and of ``@handler``, XLA's
    entry point."""
    from tvtheory.model import _tree_sum

    if q < KEYS or q % KEYS or m % (W * U):
        raise ValueError(f"the kernel needs q a multiple of {KEYS} and m one of {W * U}; got q={q}, m={m}")
    v, vq, quads = f"<{W} x float>", f"<{q} x float>", q // KEYS
    lines: list[str] = []
    emit = lines.append
    count = itertools.count()

    def new() -> str:
        return f"%t{next(count)}"

    def op(text: str) -> str:                   # one instruction whose result is a new value
        t = new()
        emit(f"  {t} = {text}")
        return t

    def at(base: str, index: str | int, typ: str = "float") -> str:
        return op(f"getelementptr inbounds {typ}, ptr {base}, i64 {index}")

    def add(a: str, b: str) -> str:
        return op(f"fadd {v} {a}, {b}")

    def pair(wa: str, ha: str, wb: str, hb: str) -> str:
        # XLA's a0 h0 + a1 h1 as LLVM contracts it: the first product fused, the second rounded
        # (found by emulating XLA's output: the other choices miss 14-22% of the values)
        return op(f"call {v} @llvm.fma.v{W}f32({v} {wa}, {v} {ha}, {v} {op(f'fmul {v} {wb}, {hb}')})")

    def splat_q(scalar: str) -> str:           # a float in each of q lanes
        one = op(f"insertelement {vq} poison, float {scalar}, i32 0")
        return op(f"shufflevector {vq} {one}, {vq} poison, <{q} x i32> zeroinitializer")

    def broadcast(index: str) -> str:
        s = op(f"load float, ptr {at('%Al', index)}")
        return op(f"shufflevector {v} {op(f'insertelement {v} poison, float {s}, i32 0')}, {v} poison, "
                  f"<{W} x i32> zeroinitializer")

    # the scratch: %S holds query j's partial sum over quad g of lanes u at (u q + j) quads + g, %Z its ReLU at u q + j
    emit("define void @kernel(ptr nocapture %G, ptr noalias nocapture readonly %A, ptr noalias nocapture readonly %Sm, "
         "ptr noalias nocapture readonly %Wt, ptr noalias nocapture readonly %R, ptr noalias nocapture readonly %H, "
         "i64 %N, i1 %fin) {")
    emit(f"entry:\n  %S = alloca [{U * q * quads} x {v}], align 64\n  %Z = alloca [{U * q} x {v}], align 64\n"
         f"  %rows = alloca [{q} x i64], align 64\n  %Al = alloca [{q * q} x float], align 64")
    emit("  %empty = icmp eq i64 %N, 0\n  br i1 %empty, label %exit, label %sample")
    emit("sample:\n  %n = phi i64 [0, %entry], [%n1, %next]")
    emit(f"  %a0 = mul i64 %n, {q * q}\n  %r0 = mul i64 %n, {q}\n  %g0 = mul i64 %n, {m}")
    # kq: the queries up to the last whose weights are not all 0; kk: the keys up to the last such key
    # the sample's weights as XLA forms softmax(S) * w from E = exp(S - max S) and its sums: (E (1 / sums)) w
    sums = op(f"load {vq}, ptr {at('%Sm', '%r0')}, align 4")
    recip = op(f"fdiv {vq} {splat_q('1.0')}, {sums}")
    scale = op(f"load {vq}, ptr {at('%Wt', '%r0')}, align 4")
    kq, cols = "0", None
    for j in range(q):
        row = op(f"load {vq}, ptr {at('%A', op(f'add i64 %a0, {j * q}'))}, align 4")
        by_sum = op(f"fmul {vq} {row}, {splat_q(op(f'extractelement {vq} {recip}, i32 {j}'))}")
        weights = op(f"fmul {vq} {by_sum}, {splat_q(op(f'extractelement {vq} {scale}, i32 {j}'))}")
        emit(f"  store {vq} {weights}, ptr {at('%Al', j * q)}, align 4")
        live = op(f"fcmp une {vq} {weights}, zeroinitializer")
        any_live = op(f"call i1 @llvm.vector.reduce.or.v{q}i1(<{q} x i1> {live})")
        kq = op(f"select i1 {any_live}, i64 {j + 1}, i64 {kq}")
        cols = live if cols is None else op(f"or <{q} x i1> {cols}, {live}")
    kk = "0"
    for k in range(q):
        kk = op(f"select i1 {op(f'extractelement <{q} x i1> {cols}, i32 {k}')}, i64 {k + 1}, i64 {kk}")
    # full: the quads run whole (3 or 4 of their keys below kk); half: whether one more has only 1 or 2 keys below kk,
    # run as its first pair (the other pair's products, 0 x value, would add +-0 to its sum); nq: the quads summed
    emit(f"  %kq = select i1 %fin, i64 {kq}, i64 {q}\n  %kk = select i1 %fin, i64 {kk}, i64 {q}")
    emit("  %kk1 = add i64 %kk, 1\n  %full = lshr i64 %kk1, 2\n  %rest = and i64 %kk, 3\n"
         "  %rest1 = add i64 %rest, -1\n  %half = icmp ult i64 %rest1, 2\n  %halfn = zext i1 %half to i64\n"
         "  %nq = add i64 %full, %halfn\n  %nofull = icmp eq i64 %full, 0")
    for s in range(q):                                        # each key's row of the table, as an offset
        row = op(f"load i32, ptr {at('%R', op(f'add i64 %r0, {s}'), 'i32')}")
        offset = op(f"mul i64 {op(f'sext i32 {row} to i64')}, {m}")
        emit(f"  store i64 {offset}, ptr {at('%rows', s, 'i64')}")
    emit("  %none = icmp eq i64 %kq, 0\n  %nokeys = icmp eq i64 %kk, 0\n  %idle = or i1 %none, %nokeys")
    emit("  br label %lanes")
    emit("lanes:\n  %c = phi i64 [0, %sample], [%c1, %stored]")
    emit(f"  %m0 = mul i64 %c, {W * U}")
    emit("  br i1 %idle, label %zero, label %quads")
    emit("quads:\n  br i1 %nofull, label %tail, label %quad")
    # a quad of keys: its values stay in registers while each live query's four weights are broadcast, used U times;
    # its partial sums go to the scratch as volatile stores, which LLVM may neither drop nor forward to the trees'
    # loads: forwarded, they would be registers live across the whole step again, and spilled as in XLA's loop
    def keys_block(name: str, g: str, keys: int, after: str) -> None:
        emit(f"{name}:")
        if name == "quad":
            emit("  %g = phi i64 [0, %quads], [%g1, %quad.end]")
        emit(f"  %{name}.k0 = mul i64 {g}, {KEYS}")
        h = {}
        for k in range(keys):
            row = op(f"load i64, ptr {at('%rows', op(f'add i64 %{name}.k0, {k}'), 'i64')}")
            lane = op(f"add i64 {row}, %m0")
            for u in range(U):
                h[k, u] = op(f"load {v}, ptr {at('%H', op(f'add i64 {lane}, {u * W}'))}, align 4")
        emit(f"  br label %{name}.query")
        emit(f"{name}.query:\n  %{name}.j = phi i64 [0, %{name}], [%{name}.j1, %{name}.query]")
        emit(f"  %{name}.aj = mul i64 %{name}.j, {q}\n  %{name}.ajk = add i64 %{name}.aj, %{name}.k0")
        w = [broadcast(op(f"add i64 %{name}.ajk, {k}")) for k in range(keys)]
        emit(f"  %{name}.sj = mul i64 %{name}.j, {quads}\n  %{name}.sjg = add i64 %{name}.sj, {g}")
        for u in range(U):
            part = _tree_sum([pair(w[k], h[k, u], w[k + 1], h[k + 1, u]) for k in range(0, keys, 2)], add)
            emit(f"  store volatile {v} {part}, ptr {at('%S', op(f'add i64 %{name}.sjg, {u * q * quads}'), v)}, "
                 "align 32")
        emit(f"  %{name}.j1 = add i64 %{name}.j, 1\n  %{name}.jdone = icmp eq i64 %{name}.j1, %kq\n"
             f"  br i1 %{name}.jdone, label %{after}, label %{name}.query")

    keys_block("quad", "%g", KEYS, "quad.end")
    emit("quad.end:\n  %g1 = add i64 %g, 1\n  %gdone = icmp eq i64 %g1, %full")
    emit("  br i1 %gdone, label %tail, label %quad")
    emit("tail:\n  br i1 %half, label %pair, label %sums")
    keys_block("pair", "%full", 2, "sums")
    # Each live query's tree over its nq quads and its ReLU, into %Z; then the tree over the kq queries. The trees of
    # q terms that XLA's loop sums hold 0s after these (skipped queries and quads), and a balanced tree of n terms
    # followed by 0s adds the n terms in the order of their own tree.
    emit("sums:\n  switch i64 %nq, label %relus.1 [" + " ".join(f"i64 {n}, label %relus.{n}"
                                                         for n in range(2, quads + 1)) + "]")
    for n in range(1, quads + 1):
        emit(f"relus.{n}:\n  %j.{n} = phi i64 [0, %sums], [%j1.{n}, %relus.{n}]")
        emit(f"  %sj.{n} = mul i64 %j.{n}, {quads}")
        for u in range(U):
            base = op(f"add i64 %sj.{n}, {u * q * quads}")
            z = _tree_sum([op(f"load volatile {v}, ptr {at('%S', op(f'add i64 {base}, {g}'), v)}, align 32")
                           for g in range(n)], add)
            # XLA's ReLU passes NaN on: z < 0 ? 0 : z (one vmaxps with 0 first), where maxnum would give 0
            relu = op(f"select <{W} x i1> {op(f'fcmp olt {v} {z}, zeroinitializer')}, {v} zeroinitializer, {v} {z}")
            emit(f"  store volatile {v} {relu}, ptr {at('%Z', op(f'add i64 %j.{n}, {u * q}'), v)}, align 32")
        emit(f"  %j1.{n} = add i64 %j.{n}, 1\n  %jdone.{n} = icmp eq i64 %j1.{n}, %kq\n"
             f"  br i1 %jdone.{n}, label %queries, label %relus.{n}")
    emit("queries:\n  switch i64 %kq, label %out.1 [" + " ".join(f"i64 {k}, label %out.{k}" for k in range(2, q + 1))
         + "]")
    def store_out(u: int, value: str) -> None:
        lane = op("add i64 %g0, %m0")
        emit(f"  store {v} {value}, ptr {at('%G', op(f'add i64 {lane}, {u * W}'))}, align 4")

    for k in range(1, q + 1):
        emit(f"out.{k}:")
        for u in range(U):
            store_out(u, _tree_sum([op(f"load volatile {v}, ptr {at('%Z', u * q + j, v)}, align 32")
                                    for j in range(k)], add))
        emit("  br label %stored")
    emit("zero:")                                             # no live query or key: every sum is 0
    for u in range(U):
        store_out(u, "zeroinitializer")
    emit("  br label %stored")
    emit(f"stored:\n  %c1 = add i64 %c, 1\n  %cdone = icmp eq i64 %c1, {m // (W * U)}")
    emit("  br i1 %cdone, label %next, label %lanes")
    emit("next:\n  %n1 = add i64 %n, 1\n  %ndone = icmp eq i64 %n1, %N\n  br i1 %ndone, label %exit, label %sample")
    emit("exit:\n  ret void\n}")
    emit(_handler_ir(q, m))
    emit(f"declare {v} @llvm.fma.v{W}f32({v}, {v}, {v})\n"
         f"declare i1 @llvm.vector.reduce.or.v{q}i1(<{q} x i1>)")
    return "\n".join(lines)


# XLA's entry point (an XLA_FFI_Handler). To XLA's metadata query it answers FFI_API and no traits. Otherwise it runs
# the kernel on its buffers (arguments A, sums, weights, rows, table; result G; N from A's first dimension, T from the
# table's) in chunks of CHUNK samples, which the calling thread and up to n - 1 helpers on XLA's intra-op thread pool
# (n its threads) claim one at a time from a shared counter, as XLA spreads its own loops over that pool. The caller
# returns once every chunk is done, yielding its CPU while it waits (a helper may share it); it never waits for a
# helper that has claimed none (one may start after the last chunk is taken, and then finds none), and the shared
# record is freed by the last of them to let it go.
CHUNK = 16
_API_ERROR_DESTROY, _API_SCHEDULE, _API_NUM_THREADS = 64, 136, 144   # XLA_FFI_Api's function pointers
_FRAME_API, _FRAME_CTX = 16, 24                                       # XLA_FFI_CallFrame: api, ctx
_JOB = (("next", "i64"), ("done", "i64"), ("refs", "i64"), ("chunks", "i64"), ("G", "ptr"), ("A", "ptr"),
        ("Sm", "ptr"), ("Wt", "ptr"), ("R", "ptr"), ("H", "ptr"), ("N", "i64"), ("fin", "i1"))
_FIELDS_OUT = "\n".join(f"  %{name}.p = getelementptr inbounds %Job, ptr %job, i32 0, i32 {i}\n"
                        f"  %{name} = load {typ}, ptr %{name}.p" for i, (name, typ) in enumerate(_JOB) if i > 2)
_FIELDS_IN = "\n".join(f"  %job.{i} = insertvalue %Job {'undef' if i == 0 else f'%job.{i - 1}'}, {typ} "
                        f"{'0' if i < 2 else '%' + name}, {i}" for i, (name, typ) in enumerate(_JOB))
def _handler_ir(q: int, m: int) -> str:
    return f"""
; the shared record of a call: next chunk, chunks done, references, chunks, G, A, sums, weights, rows, table, N,
; finite
%Job = type {{ {', '.join(t for _, t in _JOB)} }}

define internal void @claim(ptr %job) {{
entry:
  %next.p = getelementptr inbounds %Job, ptr %job, i32 0, i32 0
  %done.p = getelementptr inbounds %Job, ptr %job, i32 0, i32 1
  ; the fields after the counters never change after the record is written (before any helper starts)
{_FIELDS_OUT}
  br label %loop
loop:
  %k = atomicrmw add ptr %next.p, i64 1 seq_cst
  %more = icmp ult i64 %k, %chunks
  br i1 %more, label %work, label %out
work:
  %first = mul i64 %k, {CHUNK}
  %left = sub i64 %N, %first
  %short = icmp ult i64 %left, {CHUNK}
  %count = select i1 %short, i64 %left, i64 {CHUNK}
  %gofs = mul i64 %first, {4 * m}
  %G.k = getelementptr inbounds i8, ptr %G, i64 %gofs
  %aofs = mul i64 %first, {4 * q * q}
  %A.k = getelementptr inbounds i8, ptr %A, i64 %aofs
  %sofs = mul i64 %first, {4 * q}
  %Sm.k = getelementptr inbounds i8, ptr %Sm, i64 %sofs
  %Wt.k = getelementptr inbounds i8, ptr %Wt, i64 %sofs
  %rofs = mul i64 %first, {4 * q}
  %R.k = getelementptr inbounds i8, ptr %R, i64 %rofs
  call void @kernel(ptr %G.k, ptr %A.k, ptr %Sm.k, ptr %Wt.k, ptr %R.k, ptr %H, i64 %count, i1 %fin)
  %d = atomicrmw add ptr %done.p, i64 1 seq_cst
  br label %loop
out:
  ret void
}}

define internal void @release(ptr %job) {{
  %refs.p = getelementptr inbounds %Job, ptr %job, i32 0, i32 2
  %before = atomicrmw sub ptr %refs.p, i64 1 seq_cst
  %last = icmp eq i64 %before, 1
  br i1 %last, label %free, label %keep
free:
  call void @free(ptr %job)
  ret void
keep:
  ret void
}}

define internal void @helper(ptr %job) {{              ; an XLA_FFI_Task
  call void @claim(ptr %job)
  call void @release(ptr %job)
  ret void
}}

define internal void @drop_error(ptr %api, ptr %error) {{
  %args = alloca {{ i64, ptr, ptr }}, align 8
  store {{ i64, ptr, ptr }} {{ i64 24, ptr null, ptr undef }}, ptr %args
  %e.p = getelementptr inbounds {{ i64, ptr, ptr }}, ptr %args, i32 0, i32 2
  store ptr %error, ptr %e.p
  %fn.p = getelementptr inbounds i8, ptr %api, i64 {_API_ERROR_DESTROY}
  %fn = load ptr, ptr %fn.p
  call void %fn(ptr %args)
  ret void
}}

define ptr @handler(ptr %frame) {{
entry:
  %ext.p = getelementptr inbounds i8, ptr %frame, i64 {_FRAME_EXTENSION}
  %ext = load ptr, ptr %ext.p
  %noext = icmp eq ptr %ext, null
  br i1 %noext, label %run, label %extension
extension:
  %type.p = getelementptr inbounds i8, ptr %ext, i64 {_EXTENSION_TYPE}
  %type = load i32, ptr %type.p
  %ismeta = icmp eq i32 %type, {_METADATA_EXTENSION}
  br i1 %ismeta, label %metadata, label %run
metadata:
  %md.p = getelementptr inbounds i8, ptr %ext, i64 {_EXTENSION_METADATA}
  %md = load ptr, ptr %md.p
  %version = getelementptr inbounds i8, ptr %md, i64 8
  store i64 24, ptr %version
  %version.ext = getelementptr inbounds i8, ptr %md, i64 16
  store ptr null, ptr %version.ext
  %major = getelementptr inbounds i8, ptr %md, i64 24
  store i32 {FFI_API[0]}, ptr %major
  %minor = getelementptr inbounds i8, ptr %md, i64 28
  store i32 {FFI_API[1]}, ptr %minor
  %traits = getelementptr inbounds i8, ptr %md, i64 32
  store i32 0, ptr %traits
  %state = getelementptr inbounds i8, ptr %md, i64 40
  store i64 0, ptr %state                               ; XLA_FFI_UNKNOWN_TYPE_ID: the handler keeps no state
  ret ptr null
run:
  %api.p = getelementptr inbounds i8, ptr %frame, i64 {_FRAME_API}
  %api = load ptr, ptr %api.p
  %ctx.p = getelementptr inbounds i8, ptr %frame, i64 {_FRAME_CTX}
  %ctx = load ptr, ptr %ctx.p
  %args.p = getelementptr inbounds i8, ptr %frame, i64 {_FRAME_ARGS}
  %args = load ptr, ptr %args.p
  %rets.p = getelementptr inbounds i8, ptr %frame, i64 {_FRAME_RETS}
  %rets = load ptr, ptr %rets.p
  %bA = load ptr, ptr %args
  %bSm.p = getelementptr inbounds ptr, ptr %args, i64 1
  %bSm = load ptr, ptr %bSm.p
  %bWt.p = getelementptr inbounds ptr, ptr %args, i64 2
  %bWt = load ptr, ptr %bWt.p
  %bR.p = getelementptr inbounds ptr, ptr %args, i64 3
  %bR = load ptr, ptr %bR.p
  %bH.p = getelementptr inbounds ptr, ptr %args, i64 4
  %bH = load ptr, ptr %bH.p
  %bG = load ptr, ptr %rets
  %A = call ptr @data(ptr %bA)
  %Sm = call ptr @data(ptr %bSm)
  %Wt = call ptr @data(ptr %bWt)
  %R = call ptr @data(ptr %bR)
  %H = call ptr @data(ptr %bH)
  %G = call ptr @data(ptr %bG)
  %dimsA.p = getelementptr inbounds i8, ptr %bA, i64 {_BUFFER_DIMS}
  %dimsA = load ptr, ptr %dimsA.p
  %N = load i64, ptr %dimsA
  %dimsH.p = getelementptr inbounds i8, ptr %bH, i64 {_BUFFER_DIMS}
  %dimsH = load ptr, ptr %dimsH.p
  %T = load i64, ptr %dimsH
  %TM = mul i64 %T, {m}
  %fin = call i1 @finite(ptr %H, i64 %TM)
  %n15 = add i64 %N, {CHUNK - 1}
  %chunks = udiv i64 %n15, {CHUNK}
  ; helpers: min(threads of XLA's pool, chunks) - 1
  %nt.args = alloca {{ i64, ptr, ptr, ptr }}, align 8
  %nt = alloca i64, align 8
  store i64 0, ptr %nt
  store {{ i64, ptr, ptr, ptr }} {{ i64 32, ptr null, ptr undef, ptr undef }}, ptr %nt.args
  %nt.ctx = getelementptr inbounds {{ i64, ptr, ptr, ptr }}, ptr %nt.args, i32 0, i32 2
  store ptr %ctx, ptr %nt.ctx
  %nt.out = getelementptr inbounds {{ i64, ptr, ptr, ptr }}, ptr %nt.args, i32 0, i32 3
  store ptr %nt, ptr %nt.out
  %ntfn.p = getelementptr inbounds i8, ptr %api, i64 {_API_NUM_THREADS}
  %ntfn = load ptr, ptr %ntfn.p
  %nterr = call ptr %ntfn(ptr %nt.args)
  %ntfailed = icmp ne ptr %nterr, null
  br i1 %ntfailed, label %nt.drop, label %nt.ok
nt.drop:
  call void @drop_error(ptr %api, ptr %nterr)
  store i64 0, ptr %nt
  br label %nt.ok
nt.ok:
  %threads = load i64, ptr %nt
  %few = icmp slt i64 %chunks, %threads
  %workers1 = select i1 %few, i64 %chunks, i64 %threads
  %hasw = icmp sgt i64 %workers1, 0
  %workers = select i1 %hasw, i64 %workers1, i64 1
  %helpers = sub i64 %workers, 1
  %size.p = getelementptr %Job, ptr null, i32 1
  %size = ptrtoint ptr %size.p to i64
  %job = call ptr @malloc(i64 %size)
  %refs = add i64 %helpers, 1
{_FIELDS_IN}
  store %Job %job.{len(_JOB) - 1}, ptr %job
  %sc.args = alloca {{ i64, ptr, ptr, ptr, ptr }}, align 8
  store {{ i64, ptr, ptr, ptr, ptr }} {{ i64 40, ptr null, ptr undef, ptr @helper, ptr undef }}, ptr %sc.args
  %sc.ctx = getelementptr inbounds {{ i64, ptr, ptr, ptr, ptr }}, ptr %sc.args, i32 0, i32 2
  store ptr %ctx, ptr %sc.ctx
  %sc.data = getelementptr inbounds {{ i64, ptr, ptr, ptr, ptr }}, ptr %sc.args, i32 0, i32 4
  store ptr %job, ptr %sc.data
  %scfn.p = getelementptr inbounds i8, ptr %api, i64 {_API_SCHEDULE}
  %scfn = load ptr, ptr %scfn.p
  br label %schedule
schedule:
  %h = phi i64 [0, %nt.ok], [%h1, %scheduled]
  %hmore = icmp ult i64 %h, %helpers
  br i1 %hmore, label %sched.one, label %own
sched.one:
  %scerr = call ptr %scfn(ptr %sc.args)
  %scfailed = icmp ne ptr %scerr, null
  br i1 %scfailed, label %sc.inline, label %scheduled
sc.inline:                                              ; no pool: the helper's share runs here
  call void @drop_error(ptr %api, ptr %scerr)
  call void @helper(ptr %job)
  br label %scheduled
scheduled:
  %h1 = add i64 %h, 1
  br label %schedule
own:
  call void @claim(ptr %job)
  %done.p = getelementptr inbounds %Job, ptr %job, i32 0, i32 1
  br label %wait
wait:                                                   ; chunks that helpers claimed and are running
  %done = load atomic i64, ptr %done.p seq_cst, align 8
  %all = icmp uge i64 %done, %chunks
  br i1 %all, label %finish, label %yield
yield:                                                  ; a helper may share this thread's CPU (a lane has one)
  %y = call i32 @sched_yield()
  br label %wait
finish:
  call void @release(ptr %job)
  ret ptr null
}}

define internal i1 @finite(ptr %H, i64 %TM) {{      ; is every value finite? (x - x == 0 fails for inf and NaN)
entry:
  %none = icmp eq i64 %TM, 0
  br i1 %none, label %out, label %scan
scan:
  %i = phi i64 [0, %entry], [%i1, %scan]
  %ok = phi i1 [1, %entry], [%ok1, %scan]
  %p = getelementptr inbounds float, ptr %H, i64 %i
  %x = load float, ptr %p
  %d = fsub float %x, %x
  %fine = fcmp oeq float %d, 0.0
  %ok1 = and i1 %ok, %fine
  %i1 = add i64 %i, 1
  %end = icmp eq i64 %i1, %TM
  br i1 %end, label %out, label %scan
out:
  %r = phi i1 [1, %entry], [%ok1, %scan]
  ret i1 %r
}}

define internal ptr @data(ptr %buffer) alwaysinline {{
  %p = getelementptr inbounds i8, ptr %buffer, i64 {_BUFFER_DATA}
  %data = load ptr, ptr %p
  ret ptr %data
}}

declare ptr @malloc(i64)
declare void @free(ptr)
declare i32 @sched_yield()
"""
