"""One process per lane of ``make reproduce``, which runs that lane's experiments one after the other.

``Lane`` starts ``python -m tvtheory.lane FD`` on the lane's CPUs and sends it one experiment at a time (its command
line as a JSON list on the worker's stdin); the worker runs it as ``python -m tvtheory NAME ...`` would
(``cli.main``: the same parsing, check, Hydra job, output and exit status) and answers with the exit status on pipe
FD. Between runs it puts back what a command sets for itself (``cli.in_process``: arguments, environment, the root
logger's handlers), as the test suite's in-process runs do (tests/conftest.py, ``command``).

What a lane saves is each later experiment's start: the interpreter, the imports (jax, pandas, flax, matplotlib,
Hydra: ~2.5 s on one core), JAX's backend, and the programs an earlier experiment of the lane already traced and
compiled with the same shapes (so a later experiment's provenance.json counts fewer compiled programs). A program
computes the same bits whichever process compiled it, so the results are those of separate processes (tested). An
experiment that ends its worker (a crash, a signal) reports a failure, as does one that fails otherwise, and the
lane's next experiment gets a fresh worker; Ctrl-C (exit status 130) ends the worker too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import traceback

INTERRUPTED = 130


class Lane:
    """A worker process kept on ``env``'s CPUs (runner.CPUS), started on first use (or by ``start``). Safe to call
    from two threads: ``close`` from one ends a ``run`` waiting in another (it then returns 1), and no worker starts
    once the lane is closed."""

    def __init__(self, env: dict | None = None):
        self.env, self.proc, self.replies = env, None, None
        self._lock, self._closed = threading.Lock(), False

    def start(self) -> None:
        """Starts the worker now and waits until it has imported what it runs experiments with."""
        with self._lock:
            if not self._closed and (self.proc is None or self.proc.poll() is not None):
                self._start()

    def run(self, argv: list[str]) -> int:
        """``python -m tvtheory *argv`` in the worker: its exit status (1 where the worker died during the run, or the
        lane is closed). A worker left after a failed run is ended, so that the next run starts from a fresh one."""
        self.start()
        with self._lock:
            proc, replies = self.proc, self.replies
        if proc is None:                            # closed
            return 1
        try:
            proc.stdin.write(json.dumps([str(a) for a in argv]) + "\n")
            proc.stdin.flush()
            reply = replies.readline()
        except (OSError, ValueError):               # a pipe closed under us (the worker died, or close())
            reply = ""
        code = int(reply) if reply.strip() else 1
        if not reply.strip() or code not in (0, 2):
            self._end(proc, kill=not reply.strip())  # a dead worker, or one a failed run may have left half-way
        return code

    def _start(self) -> None:
        if self.proc is not None:
            self._end(self.proc, kill=True, locked=True)
        read, write = os.pipe()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "tvtheory.lane", str(write)], stdin=subprocess.PIPE,
                                         text=True, env=self.env, pass_fds=(write,))
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        self.replies = os.fdopen(read, "r")
        self.replies.readline()                     # "ready" once its imports are done ("" if it died: run sees it)

    def close(self, kill: bool = False) -> None:
        """Ends the worker: its stdin closed, so that it exits once its current run is done; with ``kill``, at once
        (SIGTERM, then SIGKILL after 10 s)."""
        with self._lock:
            self._closed = True
            proc = self.proc
        if proc is not None:
            self._end(proc, kill)

    def _end(self, proc, kill: bool, locked: bool = False) -> None:
        ended_here = kill and proc.poll() is None
        if ended_here:
            proc.terminate()
        try:
            proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            code = proc.wait(timeout=10 if kill else None)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0 and not ended_here:                # e.g. -9: killed from outside (out of memory)
            print(f"lane worker {proc.pid} ended with status {code}", file=sys.stderr, flush=True)
        if not locked:
            self._lock.acquire()
        try:
            if self.proc is proc:
                self.replies.close()
                self.proc = self.replies = None
        finally:
            if not locked:
                self._lock.release()


def serve(reply_fd: int) -> None:
    """The worker: each line of stdin, a JSON list NAME, KEY=VALUE..., runs as ``python -m tvtheory`` would; its exit
    status goes to ``reply_fd`` as a line. Ends at the end of stdin, or after a run interrupted by Ctrl-C."""
    os.set_inheritable(reply_fd, False)             # no child of an experiment holds the parent's reply pipe open
    from tvtheory import cli

    main_path = os.path.join(os.path.dirname(os.path.abspath(cli.__file__)), "__main__.py")
    with os.fdopen(reply_fd, "w", buffering=1) as replies:
        replies.write("ready\n")
        for line in sys.stdin:
            name, *args = json.loads(line)
            code = run_one(cli, main_path, name, args)
            replies.write(f"{code}\n")
            if code == INTERRUPTED:
                return


def run_one(cli, main_path: str, name: str, args: list[str]) -> int:
    code = 0
    with cli.in_process():
        sys.argv[:] = [main_path]                   # what ``python -m tvtheory`` shows the run (provenance.json)
        try:
            cli.main(name, args)
        except SystemExit as e:
            code = cli.exit_status(e)
        except KeyboardInterrupt:
            traceback.print_exc()
            code = INTERRUPTED
        except Exception:                           # as an uncaught error ends a process
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    return code


if __name__ == "__main__":
    serve(int(sys.argv[1]))
