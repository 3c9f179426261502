"""tvtheory: experiments that check when task arithmetic provably works (Li et al., ICLR 2025)."""

import os as _os

__version__ = "0.1.0"

# XLA's CPU compiler, set before the first computation (XLA reads XLA_FLAGS when JAX starts its backend, not at
# import): the elemental emitters compile this suite's programs 20-57% faster than the fusion emitters (XLA's
# default) and run them as fast; a cold `make reproduce` wrote the same bits in every table but digits' (a ViT's
# losses, within 1e-5), and the same verdicts (docs/performance.md). An XLA_FLAGS that names the option wins.
# LLVM's optimisation level 1 (of 0-3; XLA's default is 3) for the generated kernels: ~40% less compilation, the
# programs run as fast, and the numbers are the same to float rounding (docs/performance.md). Level 0 would halve
# compilation again but run SGD ~5x slower; the tests use it (tests/conftest.py), where compilation is most of the
# time. The option is process-wide (a GPU backend's LLVM kernels too).
# XLA's memory-minimising instruction schedule instead of its concurrency-optimised one (the default): with the
# default, an out-of-domain evaluation stage on two CPUs (`python bench/workloads.py W2 --tiny`) hung for good, every
# XLA thread idle and the result never delivered (jaxlib 0.10.2; tests/test_bench.py runs it). With this schedule it
# finishes, with the same bits; on one CPU the programs run as fast, on two W1 is ~5% slower (docs/performance.md).
XLA_DEFAULTS = {"xla_cpu_use_fusion_emitters": "false", "xla_backend_optimization_level": "1",
                "xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def xla_options(flags: str) -> dict[str, str]:
    """The options an XLA_FLAGS value sets, name -> value (the last setting of each; "" for a bare flag)."""
    return {f.lstrip("-").split("=", 1)[0]: f.split("=", 1)[1] if "=" in f else "" for f in flags.split()}


def with_xla_defaults(flags: str) -> str:
    """``flags`` (an XLA_FLAGS value) with each option of XLA_DEFAULTS appended that it does not set itself."""
    named = xla_options(flags)
    return " ".join([*flags.split(), *(f"--{k}={v}" for k, v in XLA_DEFAULTS.items() if k not in named)])


_os.environ["XLA_FLAGS"] = with_xla_defaults(_os.environ.get("XLA_FLAGS", ""))

# Each traced operation carries its whole Python traceback into the lowered program by default (debug metadata, which
# XLA does not compile): without it tracing and lowering take less time and the programs compute the same bits (a
# cold scaling run's tables were byte-identical either way). Read when JAX is imported; an environment that sets the
# option wins.
_os.environ.setdefault("JAX_INCLUDE_FULL_TRACEBACKS_IN_LOCATIONS", "false")


def collect_garbage_less() -> None:
    """Python's cyclic garbage collector, set for a command's process (``python -m tvtheory``, the claims and plots
    commands, a lane's worker; the test suite's processes too): a young collection once 50 000 more container objects
    were made than freed rather than 700, and (where Python still collects by generations) a full one after 100 of
    the middle generation's rather than 10. Tracing JAX programs, Hydra's compositions and pandas make millions of
    short-lived objects, and the default thresholds walk the imported stack's large heap again and again: a tiny
    arithmetic run took ~5% less CPU time (docs/performance.md). What the collector frees is the same, later; the
    numbers never depend on it. ``import tvtheory`` leaves the settings alone; running a command in a process
    (``cli.main``, the claims command's function) sets them for the rest of that process."""
    import gc

    gc.set_threshold(50_000, 20, 100)
