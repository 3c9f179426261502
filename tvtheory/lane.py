"""One process per lane of ``make reproduce``, which runs that lane's experiments one after the other.

``Lane`` starts ``python -m tvtheory.lane FD`` on the lane's CPUs and sends it one experiment at a time (its command
line as a JSON list on the worker's stdin); the worker runs it as ``python -m tvtheory NAME ...`` would
(``cli.main``: the same parsing, check, Hydra job, output and exit status) and answers with the exit status on pipe
FD. Between runs it puts back what a command sets for itself (arguments, environment, the root logger's handlers), as
the test suite's in-process runs do (tests/conftest.py, ``command``).

What a lane saves is each later experiment's start: the interpreter, the imports (jax, pandas, flax, matplotlib,
Hydra: ~2.5 s on one core), JAX's backend, and the programs an earlier experiment of the lane already traced and
compiled with the same shapes. A program computes the same bits whichever process compiled it, so the results are
those of separate processes (tested). An experiment that kills its worker (a crash, a signal) reports a failure, and
the lane's next experiment gets a fresh worker.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback


class Lane:
    """A worker process kept on ``env``'s CPUs (runner.CPUS), started on first use."""

    def __init__(self, env: dict | None = None):
        self.env, self.proc, self.replies = env, None, None

    def run(self, argv: list[str]) -> int:
        """``python -m tvtheory *argv`` in the worker: its exit status (1 where the worker died during the run)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(json.dumps([str(a) for a in argv]) + "\n")
            self.proc.stdin.flush()
            reply = self.replies.readline()
        except (BrokenPipeError, OSError):
            reply = ""
        if not reply:                               # the worker died: the next run starts another
            self.close()
            return 1
        return int(reply)

    def _start(self) -> None:
        read, write = os.pipe()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "tvtheory.lane", str(write)], stdin=subprocess.PIPE,
                                         text=True, env=self.env, pass_fds=(write,))
        finally:
            os.close(write)
        self.replies = os.fdopen(read, "r")

    def close(self) -> None:
        """Ends the worker (its stdin closed: it exits once its current run, if any, is done)."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()
        self.replies.close()
        self.proc = self.replies = None


def serve(reply_fd: int) -> None:
    """The worker: each line of stdin, a JSON list NAME, KEY=VALUE..., runs as ``python -m tvtheory`` would; its exit
    status goes to ``reply_fd`` as a line."""
    from tvtheory import cli

    main_path = os.path.join(os.path.dirname(os.path.abspath(cli.__file__)), "__main__.py")
    with os.fdopen(reply_fd, "w", buffering=1) as replies:
        for line in sys.stdin:
            name, *args = json.loads(line)
            replies.write(f"{run_one(cli, main_path, name, args)}\n")


def run_one(cli, main_path: str, name: str, args: list[str]) -> int:
    env, level, handlers = dict(os.environ), logging.root.level, logging.root.handlers[:]
    sys.argv[:] = [main_path]                       # what ``python -m tvtheory`` shows the run (provenance.json)
    code = 0
    try:
        cli.main(name, args)
    except SystemExit as e:                         # as the interpreter exits: None is 0, a message is 1
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:                           # noqa: BLE001  (as an uncaught error ends a process)
        traceback.print_exc()
        code = 1
    finally:
        for k in set(os.environ) - set(env):
            del os.environ[k]
        os.environ.update(env)
        for h in logging.root.handlers:
            if h not in handlers:
                h.close()                           # the run's log file
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
        sys.stdout.flush()
        sys.stderr.flush()
    return code


if __name__ == "__main__":
    serve(int(sys.argv[1]))
