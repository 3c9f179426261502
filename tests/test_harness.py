"""The test suite's own settings (pyproject.toml's [tool.pytest.ini_options])."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_test_that_hangs_is_stopped_and_fails_with_every_threads_stack(tmp_path, pytestconfig):
    """The suite's per-test timeout and method, with the limit lowered to 2 s: a hung test ends the run, failed, with
    every thread's stack (the watchdog thread's dump, which also reaches a hang in native code), instead of holding
    ``make test`` forever."""
    assert 0 < float(pytestconfig.getini("timeout")) <= 600          # in force for this suite
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(600)\n")
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
                        "-p", "no:cacheprovider", "-o", "timeout=2", str(tmp_path / "test_hang.py")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and time.monotonic() - started < 60, out[-2000:]
    assert "Timeout" in out and "Stack of MainThread" in out and "time.sleep(600)" in out, out[-2000:]
