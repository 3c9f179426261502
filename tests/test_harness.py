"""The test suite's own settings (pyproject.toml's [tool.pytest.ini_options])."""

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANG = "import time\n\ndef test_hangs():\n    time.sleep(600)\n\ndef test_after():\n    pass\n"


def pytest_with_a_2_s_limit(folder: Path, *args) -> tuple[str, float]:
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(folder),
                        "-p", "no:cacheprovider", "-o", "timeout=2", *args, str(folder)],
                       cwd=folder, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, (p.stdout + p.stderr)[-2000:]                  # tests failed (not an internal error)
    return p.stdout + p.stderr, time.monotonic() - started


def test_a_test_that_hangs_is_stopped_and_fails_with_every_threads_stack(tmp_path, pytestconfig):
    """The suite's per-test limit and method, the limit lowered to 2 s: a hung test fails with every thread's stack
    (the watchdog thread's dump) instead of holding the run forever."""
    assert 0 < float(pytestconfig.getini("timeout")) <= 600          # in force for this suite
    (tmp_path / "test_hang.py").write_text(HANG)
    out, seconds = pytest_with_a_2_s_limit(tmp_path)
    assert seconds < 60 and "Timeout" in out and "Stack of MainThread" in out and "time.sleep(600)" in out, out[-2000:]


def make_test_arguments() -> list[str]:
    """The pytest arguments of the Makefile's ``test`` recipe."""
    recipe = re.search(r"^test: .*\n\t\$\(PY\) -m pytest (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, "no `$(PY) -m pytest ...` line under the Makefile's test target"
    return shlex.split(recipe.group(1))


def test_under_make_tests_workers_a_hung_test_fails_once_and_is_not_run_again(tmp_path):
    """With ``make test``'s own arguments (two workers taking whole files): the hung test fails once, named, and the
    run ends; its worker is not replaced by one that would start the same test again (pytest-xdist under --dist
    loadfile)."""
    (tmp_path / "test_hang.py").write_text(HANG)
    (tmp_path / "test_other.py").write_text("def test_other():\n    pass\n")
    args = make_test_arguments()
    assert "--dist" in args and "-n" in args, args
    out, seconds = pytest_with_a_2_s_limit(tmp_path, *args)
    # one "node down" line per crash; the summary's wording and truncation depend on the terminal and on CI variables
    assert seconds < 60 and out.count("node down:") == 1 and "'test_hang.py::test_hangs'" in out, out[-2000:]
    assert "1 failed, 1 passed" in out and "replacing crashed worker" not in out, out[-2000:]
