"""A grid point's attention-weighted sums as a native CPU kernel: the same numbers as XLA's fused loop, in less time.

``relu_attention(A, rows, table)`` computes ``model.fused_relu_attention(A, [table[rows[:, s]] for s in range(q)])``:

    G[n] = sum_j ReLU( sum_s A[n, j, s] table[rows[n, s]] )          A (N, q, q), rows (N, q), table (T, m) -> (N, m)

XLA fuses that expression into one loop over (N, m) which is bound by loading its operands: with AVX2's 16 vector
registers it keeps a sample's q^2 broadcast weights on the stack and reloads one for every multiply-add, while two FMA
pipes wait (docs/performance.md). This kernel does the same operations in the same order: each query's sum is the
same balanced tree (``model._tree_sum``) of the pairs ``fma(a0, h0, a1 * h1)`` into which LLVM contracts XLA's
``a0 h0 + a1 h1``, then the ReLU and the same tree over queries. Its loops are blocked for the registers: for 16
lanes of m at a time, the values of four keys stay in registers while each query's four weights are broadcast once
and serve both halves; each quad of keys' partial sums goes through a small scratch buffer to the trees.

Queries and keys whose weights are all 0 (``grid_eval``'s padding of a sample's distinct tokens) are skipped from the
last live one on: with every value of the table finite, their terms are zeros, and a balanced tree of n terms
followed by zeros adds the n terms in the very order of their own tree. Where the table holds a non-finite value,
nothing is skipped (0 x inf is NaN, as in XLA's loop). A sum that is exactly 0 may come out as +0 where XLA's is -0.

The kernel is LLVM IR generated here for (q, m), compiled for the host CPU by llvmlite (a fraction of a second,
once per shape and process) and called by XLA through its typed FFI (``jax.ffi``); ``@handler`` reads XLA's call
frame. ``model.relu_attention_rows`` uses it where it applies (``available``: a CPU backend, AVX2 with FMA, q a
multiple of 4, m of 16, float32 weights and values), and XLA's loop anywhere else; ``TVTHEORY_NATIVE=0`` keeps XLA's
loop everywhere. tests/test_cpu_kernel.py checks the kernel bit for bit against XLA's loop and against numpy.
"""

from __future__ import annotations

import ctypes
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
    """Whether ``relu_attention`` runs natively for q keys and queries, m values, and (if given) the dtypes of A,
    rows and table."""
    return (enabled() and jax.default_backend() == "cpu" and q >= KEYS and q % KEYS == 0 and m % (W * U) == 0
            and (not dtypes or tuple(jnp.dtype(d) for d in dtypes) == _DTYPES) and host_supported())


_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.int32), jnp.dtype(jnp.float32))


def relu_attention(A_NxQxQ: jax.Array, rows_NxQ: jax.Array, table_TxM: jax.Array) -> jax.Array:
    """sum_j ReLU(sum_s A[:, j, s] table[rows[:, s]]) by the native kernel (call only where ``available``). rows must
    lie in [0, T): ``model.relu_attention_rows`` clamps them as JAX's gather does."""
    N, q, _ = A_NxQxQ.shape
    m = table_TxM.shape[1]
    call = jax.ffi.ffi_call(target(q, m), jax.ShapeDtypeStruct((N, m), jnp.float32), vmap_method="sequential")
    return call(A_NxQxQ, rows_NxQ.astype(jnp.int32), table_TxM)


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
    """LLVM IR of ``@kernel(G, A, rows, table, N, T*m)`` for (q, m), and of ``@handler``, XLA's entry point."""
    from tvtheory.model import _tree_sum

    if q < KEYS or q % KEYS or m % (W * U):
        raise ValueError(f"the kernel needs q a multiple of {KEYS} and m one of {W * U}; got q={q}, m={m}")
    v, vq, quads = f"<{W} x float>", f"<{q} x float>", q // KEYS
    lines: list[str] = []
    emit = lines.append
    count = iter(range(1 << 30))

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
        return op(f"call {v} @llvm.fma.v{W}f32({v} {wa}, {v} {ha}, {v} {op(f'fmul {v} {wb}, {hb}')})")

    def broadcast(index: str) -> str:
        s = op(f"load float, ptr {at('%A', index)}")
        return op(f"shufflevector {v} {op(f'insertelement {v} poison, float {s}, i32 0')}, {v} poison, "
                  f"<{W} x i32> zeroinitializer")

    slot = lambda j, g, u: (u * q + j) * quads + g            # noqa: E731  a quad's partial sum in the scratch
    emit("define void @kernel(ptr nocapture %G, ptr noalias nocapture readonly %A, ptr noalias nocapture readonly %R, "
         "ptr noalias nocapture readonly %H, i64 %N, i64 %TM) {")
    emit(f"entry:\n  %S = alloca [{U * q * quads} x {v}], align 64\n  %rows = alloca [{q} x i64], align 64")
    # Is every value of the table finite? (x - x == 0 fails for inf and NaN.) Only then is anything skipped.
    emit("  br label %scan")
    emit("scan:\n  %i = phi i64 [0, %entry], [%i1, %scan]\n  %fin = phi i1 [1, %entry], [%fin1, %scan]")
    emit("  %hp = getelementptr inbounds float, ptr %H, i64 %i\n  %hx = load float, ptr %hp")
    emit("  %hd = fsub float %hx, %hx\n  %hok = fcmp oeq float %hd, 0.0\n  %fin1 = and i1 %fin, %hok")
    emit("  %i1 = add i64 %i, 1\n  %idone = icmp uge i64 %i1, %TM\n  br i1 %idone, label %scanned, label %scan")
    emit("scanned:\n  %empty = icmp eq i64 %N, 0\n  br i1 %empty, label %exit, label %sample")
    emit("sample:\n  %n = phi i64 [0, %scanned], [%n1, %next]")
    emit(f"  %a0 = mul i64 %n, {q * q}\n  %r0 = mul i64 %n, {q}\n  %g0 = mul i64 %n, {m}")
    # kq: the queries up to the last whose weights are not all 0; kk: the keys up to the last such key
    kq, cols = "0", None
    for j in range(q):
        weights = op(f"load {vq}, ptr {at('%A', op(f'add i64 %a0, {j * q}'))}, align 4")
        live = op(f"fcmp une {vq} {weights}, zeroinitializer")
        any_live = op(f"call i1 @llvm.vector.reduce.or.v{q}i1(<{q} x i1> {live})")
        kq = op(f"select i1 {any_live}, i64 {j + 1}, i64 {kq}")
        cols = live if cols is None else op(f"or <{q} x i1> {cols}, {live}")
    kk = "0"
    for k in range(q):
        kk = op(f"select i1 {op(f'extractelement <{q} x i1> {cols}, i32 {k}')}, i64 {k + 1}, i64 {kk}")
    emit(f"  %kq = select i1 %fin, i64 {kq}, i64 {q}\n  %kk = select i1 %fin, i64 {kk}, i64 {q}")
    for s in range(q):                                        # each key's row of the table, as an offset
        row = op(f"load i32, ptr {at('%R', op(f'add i64 %r0, {s}'), 'i32')}")
        offset = op(f"mul i64 {op(f'sext i32 {row} to i64')}, {m}")
        emit(f"  store i64 {offset}, ptr {at('%rows', s, 'i64')}")
    for i in range(U * q * quads):                            # skipped queries' and quads' partial sums are 0
        emit(f"  store volatile {v} zeroinitializer, ptr {at('%S', i, v)}, align 32")
    emit("  %none = icmp eq i64 %kq, 0\n  %nokeys = icmp eq i64 %kk, 0\n  %idle = or i1 %none, %nokeys")
    emit("  br label %lanes")
    emit("lanes:\n  %c = phi i64 [0, %sample], [%c1, %trees]")
    emit(f"  %m0 = mul i64 %c, {W * U}")
    emit("  br i1 %idle, label %trees, label %quad")
    # a quad of keys: its values stay in registers while each live query's four weights are broadcast, used U times
    emit("quad:\n  %g = phi i64 [0, %lanes], [%g1, %quad.end]")
    emit(f"  %k0 = mul i64 %g, {KEYS}")
    h = {}
    for k in range(KEYS):
        row = op(f"load i64, ptr {at('%rows', op(f'add i64 %k0, {k}'), 'i64')}")
        lane = op(f"add i64 {row}, %m0")
        for u in range(U):
            h[k, u] = op(f"load {v}, ptr {at('%H', op(f'add i64 {lane}, {u * W}'))}, align 4")
    emit("  br label %query")
    emit("query:\n  %j = phi i64 [0, %quad], [%j1, %query]")
    emit(f"  %aj = mul i64 %j, {q}\n  %ajn = add i64 %a0, %aj\n  %ajk = add i64 %ajn, %k0")
    w = [broadcast(op(f"add i64 %ajk, {k}")) for k in range(KEYS)]
    emit(f"  %sj = mul i64 %j, {quads}\n  %sjg = add i64 %sj, %g")
    for u in range(U):
        part = _tree_sum([pair(w[k], h[k, u], w[k + 1], h[k + 1, u]) for k in range(0, KEYS, 2)], add)
        emit(f"  store volatile {v} {part}, ptr {at('%S', op(f'add i64 %sjg, {u * q * quads}'), v)}, align 32")
    emit("  %j1 = add i64 %j, 1\n  %jdone = icmp eq i64 %j1, %kq\n  br i1 %jdone, label %quad.end, label %query")
    emit(f"quad.end:\n  %g1 = add i64 %g, 1\n  %k1 = mul i64 %g1, {KEYS}\n  %gdone = icmp uge i64 %k1, %kk")
    emit("  br i1 %gdone, label %trees, label %quad")
    emit("trees:")                                            # the trees over quads, the ReLU, the tree over queries
    for u in range(U):
        relus = []
        for j in range(q):
            parts = [op(f"load volatile {v}, ptr {at('%S', slot(j, g, u), v)}, align 32") for g in range(quads)]
            z = _tree_sum(parts, add)
            # XLA's ReLU passes NaN on: z < 0 ? 0 : z (one vmaxps with 0 first), where maxnum would give 0
            negative = op(f"fcmp olt {v} {z}, zeroinitializer")
            relus.append(op(f"select <{W} x i1> {negative}, {v} zeroinitializer, {v} {z}"))
        out = at("%G", op(f"add i64 {op('add i64 %g0, %m0')}, {u * W}"))
        emit(f"  store {v} {_tree_sum(relus, add)}, ptr {out}, align 4")
    emit(f"  %c1 = add i64 %c, 1\n  %cdone = icmp eq i64 %c1, {m // (W * U)}")
    emit("  br i1 %cdone, label %next, label %lanes")
    emit("next:\n  %n1 = add i64 %n, 1\n  %ndone = icmp eq i64 %n1, %N\n  br i1 %ndone, label %exit, label %sample")
    emit("exit:\n  ret void\n}")
    emit(_HANDLER_IR.replace("{M}", str(m)))
    emit(f"declare {v} @llvm.fma.v{W}f32({v}, {v}, {v})\n"
         f"declare i1 @llvm.vector.reduce.or.v{q}i1(<{q} x i1>)")
    return "\n".join(lines)


# XLA's entry point (an XLA_FFI_Handler): answers XLA's metadata query with FFI_API and no traits; otherwise runs the
# kernel on its buffers (arguments A, rows, table; result G), with N from A's first dimension and T from the table's.
_HANDLER_IR = f"""
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
  ret ptr null
run:
  %args.p = getelementptr inbounds i8, ptr %frame, i64 {_FRAME_ARGS}
  %args = load ptr, ptr %args.p
  %rets.p = getelementptr inbounds i8, ptr %frame, i64 {_FRAME_RETS}
  %rets = load ptr, ptr %rets.p
  %bA = load ptr, ptr %args
  %bR.p = getelementptr inbounds ptr, ptr %args, i64 1
  %bR = load ptr, ptr %bR.p
  %bH.p = getelementptr inbounds ptr, ptr %args, i64 2
  %bH = load ptr, ptr %bH.p
  %bG = load ptr, ptr %rets
  %A = call ptr @data(ptr %bA)
  %R = call ptr @data(ptr %bR)
  %H = call ptr @data(ptr %bH)
  %G = call ptr @data(ptr %bG)
  %dimsA.p = getelementptr inbounds i8, ptr %bA, i64 {_BUFFER_DIMS}
  %dimsA = load ptr, ptr %dimsA.p
  %N = load i64, ptr %dimsA
  %dimsH.p = getelementptr inbounds i8, ptr %bH, i64 {_BUFFER_DIMS}
  %dimsH = load ptr, ptr %dimsH.p
  %T = load i64, ptr %dimsH
  %TM = mul i64 %T, {{M}}
  call void @kernel(ptr %G, ptr %A, ptr %R, ptr %H, i64 %N, i64 %TM)
  ret ptr null
}}
define internal ptr @data(ptr %buffer) alwaysinline {{
  %p = getelementptr inbounds i8, ptr %buffer, i64 {_BUFFER_DATA}
  %data = load ptr, ptr %p
  ret ptr %data
}}
"""
