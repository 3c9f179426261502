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
# finishes, the programs run as fast, and the numbers are the same bits (docs/performance.md).
for _flag, _value in (("xla_cpu_use_fusion_emitters", "false"), ("xla_backend_optimization_level", "1"),
                      ("xla_cpu_enable_concurrency_optimized_scheduler", "false")):
    if _flag not in _os.environ.get("XLA_FLAGS", ""):
        _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + f" --{_flag}={_value}").strip()
