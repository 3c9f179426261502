import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Every test process, and every experiment a test runs in a subprocess, shares one cache of compiled programs: a shape
# compiled once serves the whole suite (both workers). Numbers never depend on it. Every program is kept, however
# fast it compiled: the suite runs the same tiny configs in many processes (reruns, resumes, launchers), and a tiny
# run's programs each compile in well under a second (a rerun of a tiny arithmetic run: 11 s cold, 7.6 s from it).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "xla-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The suite's time is mostly XLA compiling the programs of tiny runs; LLVM's optimisation level 0 compiles them ~30%
# faster. Programs compared with each other in a test are compiled with the same flags, and no test compares a
# number with the committed results' (those are recomputed from their tables, without JAX). At level 0 a grid point
# keeps the batched product rather than the fused loop (model.FUSED_Q_MAX): faster there to compile and to run; the
# fused form is tested against it explicitly (tests/test_model.py).
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

# Each traced operation carries its whole Python traceback into the lowered program by default; the suite traces its
# programs anew in ~100 processes, and without the tracebacks tracing and lowering take ~25% less (the programs
# compute the same: locations are debug metadata). `import tvtheory` sets the same default; here it precedes any
# plugin's import of JAX.
os.environ.setdefault("JAX_INCLUDE_FULL_TRACEBACKS_IN_LOCATIONS", "false")

import subprocess  # noqa: E402

import pytest  # noqa: E402
import tvtheory  # noqa: E402  (the package's XLA defaults, in force before any test computes)
from hypothesis import settings  # noqa: E402

tvtheory.collect_garbage_less()             # as a command's process does (the test process runs commands too)

# JAX compiles on first call: wall-clock deadlines would measure the compiler, not the property.
settings.register_profile("tvtheory", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("tvtheory")

# A scheduling hint, not a test selection: `make test` runs two workers that take whole files in collection order
# (`--dist loadfile --no-loadscope-reorder`), so the files of end-to-end runs go first, longest first, and the many
# short files fill in behind them. A file missing here only runs later.
LONGEST_FIRST = ("test_reliability.py", "test_experiments.py", "test_mutations.py", "test_digits.py", "test_beyond.py",
                 "test_merging.py", "test_practice.py", "test_unlearning.py", "test_digits_search.py", "test_docs.py",
                 "test_bench.py", "test_config.py", "test_data.py", "test_sweep.py", "test_reproduce.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))        # stable: each file keeps its order


@pytest.fixture
def command(capfd, monkeypatch, tmp_path_factory):
    """``python -m tvtheory NAME OVERRIDES...`` in the test's own process: ``cli.main``, the function behind the
    command (the same parsing, precheck, Hydra job, run and exit status), without a new interpreter. A second run of
    the same shapes in a process reuses its traced and compiled programs: a tiny end-to-end run takes about half the
    time it takes as a new process (imports, tracing and reading the compiled programs back are most of a tiny run).
    The tests that need a process of their own (a kill, two runs at once, launchers, the bad values' one line before
    Hydra, a rerun across processes) start one. Hydra's job folder (its .hydra and cli.log, and a run's results when
    it has no ``out_dir``) goes to a temporary folder rather than the repository's outputs/, unless the test names one
    or asks for a multirun. ``hydra.run.dir`` is not a config field: the tables and the task overrides provenance
    records are the same; only its ``argv`` shows the added override."""
    import logging.config

    from tvtheory import cli

    # Hydra sets up the job's log with logging.config.dictConfig, which closes every handler alive in the process,
    # pytest's capture handlers included; here it only forgets them (cli.in_process puts them back on the root logger).
    monkeypatch.setattr(logging.config, "_clearExistingHandlers", logging._handlers.clear)

    def run(name: str, *overrides) -> subprocess.CompletedProcess:
        code, args = 0, [str(o) for o in overrides]
        if not any(a.lstrip("+~").startswith(("hydra.run.dir=", "hydra.sweep.dir=", "hydra.mode=", "-m",
                                                  "--multirun")) for a in args):
            args.append(f"hydra.run.dir={tmp_path_factory.mktemp('hydra-job')}")
        with cli.in_process():                    # what the command sets for itself: arguments, environment, log
            try:
                cli.main(name, args)
            except SystemExit as e:               # as the interpreter exits
                code = cli.exit_status(e)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess([name, *overrides], code, out, err)
    return run
