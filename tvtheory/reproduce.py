"""``python -m tvtheory.reproduce [RESULTS_DIR] [--lanes N] [--only a,b] [key=value ...]``: every experiment of the
registry into RESULTS_DIR/<name>, on two lanes, then every verdict merged (``python -m tvtheory.claims``) and the
README's table rewritten.

Whenever a lane is free it starts a ready experiment (one that reuses another's cache, its AFTER, is ready once that
one has finished): the first of that lane's order in the schedule with the earliest end found from here (``plan``),
from each experiment's seconds in the last reproduce run in which every experiment computed (RESULTS_DIR/timings.json;
a run served from the cache keeps it), or its module's COST when it has not run yet. Deciding again at every start,
from the times measured so far, lets the real times rather than a plan fixed in advance decide. Each lane runs its
experiments one after the other in a process of its own (tvtheory/lane.py: each as ``python -m tvtheory NAME`` would,
without a new interpreter), kept on the lane's logical CPUs (runner.CPUS), so that two experiments never share one.
The last line gives the wall time and the critical path: the chain of experiments, each waiting on the one before it
(its lane or its AFTER), that ended last.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

from tvtheory import _check, experiments, results, runner
from tvtheory.lane import Lane


def costs(root: Path) -> dict[str, float]:
    measured = {}
    try:
        measured = json.loads((root / "timings.json").read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        pass
    return {n: float(measured.get(n, experiments.get(n).COST)) for n in experiments.NAMES}


def levels(cost: dict[str, float], after: dict[str, tuple]) -> dict[str, float]:
    """Each experiment's level: its cost plus the longest chain of experiments that wait on it (their AFTER), the
    time that must still pass once it starts. Raises on an AFTER cycle."""
    level: dict[str, float] = {}

    def of(n: str, seen: tuple = ()) -> float:
        if n in seen:
            raise ValueError(f"AFTER cycle among {sorted(seen)}")
        if n not in level:
            level[n] = cost[n] + max([of(x, seen + (n,)) for x in cost if n in after[x]], default=0.0)
        return level[n]

    for n in cost:
        of(n)
    return level


def plan(cost: dict[str, float], after: dict[str, tuple], free: list[float], done: dict[str, float] | None = None,
         todo=None, budget: int = 50_000) -> list[list[str]]:
    """The order of experiments on each lane that ends soonest among those found: a branch-and-bound search over list
    schedules, in which a lane, whenever it is free (the lane of the earliest ``free`` time; the lowest index on a
    tie), starts one of the experiments then ready. ``done``: the end times of experiments finished or running (an
    estimate for these); ``todo``: what is still to start (default: every experiment of ``cost`` not in ``done``).

    Choices are tried highest level first (``levels``: what others wait on, then the longest), so the first complete
    schedule is the critical-path-first rule's; the search then keeps one only if it ends sooner, and cuts a branch
    that cannot (the remaining work spread over the lanes, or the longest chain still to run, ends later than the best
    found). It stops after ``budget`` branches with the best found: with ten experiments and two lanes, 50,000 took
    ~0.2 s and found the best schedule in every case tried; the critical-path-first rule alone left the lanes of the
    last measured times 35 s apart (685 s against 702 s)."""
    done = dict(done or {})
    todo = frozenset(cost if todo is None else todo) - set(done)
    lanes = len(free)
    level = levels(cost, after)
    best: dict = {"end": float("inf"), "plan": [[] for _ in range(lanes)]}
    nodes = 0

    def bound(free: list[float], todo: frozenset) -> float:
        return max(max(free), (sum(free) + sum(cost[n] for n in todo)) / lanes,
                   min(free) + max((level[n] for n in todo), default=0.0))

    def search(free: list[float], todo: frozenset, lanes_plan: list[list[str]]) -> None:
        nonlocal nodes
        nodes += 1
        if best["end"] < float("inf") and (nodes > budget or bound(free, todo) >= best["end"] - 1e-9):
            return                                  # (the first, greedy, schedule is always completed)
        if not todo:
            best["end"], best["plan"] = max(free), [list(p) for p in lanes_plan]
            return
        lane = min(range(lanes), key=lambda i: (free[i], i))
        ready = [n for n in todo if all(a in done and done[a] <= free[lane] for a in after[n])]
        if not ready:                               # wait for the next end that readies one
            later = [t for t in done.values() if t > free[lane]]
            if later:
                search([min(later) if i == lane else f for i, f in enumerate(free)], todo, lanes_plan)
            return
        for n in sorted(ready, key=lambda x: (-level[x], x)):
            ends = free[lane] + cost[n]
            done[n] = ends
            lanes_plan[lane].append(n)
            search([ends if i == lane else f for i, f in enumerate(free)], todo - {n}, lanes_plan)
            lanes_plan[lane].pop()
            del done[n]

    search(list(free), todo, [[] for _ in range(lanes)])
    if best["end"] == float("inf"):
        raise ValueError(f"{sorted(todo)}: no schedule starts them all (an AFTER names an experiment that is neither "
                         "done nor to start)")
    return best["plan"]


def schedule(cost: dict[str, float], after: dict[str, tuple], lanes: int) -> list[list[str]]:
    """The lanes ``main`` runs if every experiment takes its cost (``plan`` from the start)."""
    return plan(cost, after, [0.0] * lanes)


def is_override(arg: str) -> bool:
    """Whether the first argument is an override rather than the results folder: ``key=value`` with a key-shaped part
    before the ``=`` (a dotted path, a config group such as ``hydra/launcher``, a package such as ``model@x``, after
    ``+``, ``++`` or ``~``). An existing folder, a path whose first folder exists (``runs/x=1`` or ``runs=1/x`` where
    that folder exists, an absolute path), or a part before the ``=`` that is not key-shaped (``./a=b``) is the
    folder."""
    if "=" not in arg or Path(arg).is_dir() or ("/" in arg and Path(arg.split("/")[0] or "/").is_dir()):
        return False
    key = arg.split("=", 1)[0]
    return re.fullmatch(r"[+~]{0,2}[A-Za-z_][\w.@/-]*", key) is not None


def main(argv: list[str] | None = None) -> None:
    ap = _check.Arguments(prog="python -m tvtheory.reproduce", description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="results")
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated experiments (default: all)")
    ap.add_argument("overrides", nargs="*", help="key=value passed to every experiment")
    a = ap.parse_args(argv)
    if is_override(a.root):                 # no folder given: the first override is not one
        a.overrides, a.root = [a.root, *a.overrides], "results"
    if a.lanes < 1:
        ap.error(f"--lanes={a.lanes}: must be at least 1")
    root = Path(a.root)
    names = [n for n in a.only.split(",") if n] or list(experiments.NAMES)
    for n in names:
        try:
            experiments.get(n)
        except ValueError as e:
            ap.error(f"--only: {e}")
    # Every experiment's config with the overrides, before the first starts: a value one of them refuses stops the
    # command here, with that experiment's one line, rather than after the others have run.
    from tvtheory import cli
    cli.register(*names)
    for n in names:
        try:
            cli.precheck(n, experiments.get(n), [f"out_dir={root / n}", *a.overrides])
        except SystemExit as e:
            if e.code:
                print(f"error: {n}'s configuration is refused; nothing was run", file=sys.stderr)
            raise
    cost = {n: c for n, c in costs(root).items() if n in names}
    after = {n: tuple(x for x in experiments.get(n).AFTER if x in names) for n in names}
    planned = schedule(cost, after, a.lanes)
    print("lanes (from the last run's times): " + " | ".join(", ".join(lane) for lane in planned), file=sys.stderr,
          flush=True)
    finished: dict[str, float] = {}
    started_at: dict[str, float] = {}
    waited_on: dict[str, str] = {}
    pending = set(names)
    lanes: list[list[str]] = [[] for _ in planned]
    running: list[str | None] = [None for _ in planned]
    cond, failed = threading.Condition(), []
    cpus = lane_cpus(len(planned))
    t0 = time.time()

    def ready() -> list[str]:
        return [n for n in pending if all(x in finished for x in after[n])]

    def choose(i: int) -> str:
        """Lane i's next experiment: the search again from now (``plan``), the other lanes busy until their running
        experiment's expected end (its cost; at least a second from now once it has overrun). Lane i goes first in
        the search, free now, so its first start is an experiment ready now: one whose AFTER has finished (a running
        one is expected to end later than now)."""
        now = time.time() - t0
        ends = {n: max(started_at[n] + cost[n], now + 1.0) for n in running if n}
        order = [i] + [j for j in range(len(running)) if j != i]
        free = [now if j == i or not running[j] else ends[running[j]] for j in order]
        return plan(cost, after, free, {**finished, **ends}, pending)[0][0]

    def lane(i: int) -> None:
        try:
            workers[i].start()              # its imports before the first experiment's clock starts
        except BaseException:
            with cond:
                failed.append(f"lane {i + 1}'s worker")
                cond.notify_all()
            raise
        prev = None
        while True:
            with cond:
                cond.wait_for(lambda: failed or not pending or ready())
                if failed or not pending:
                    return
                n = choose(i)
                pending.remove(n)
                running[i] = n
                started_at[n] = time.time() - t0
            lanes[i].append(n)
            blockers = [(finished[x], x) for x in after[n]] + ([(finished[prev], prev)] if prev else [])
            if blockers:
                waited_on[n] = max(blockers)[1]
            print(f"== {n} (lane {i + 1}" + (f", CPUs {workers[i].env[runner.CPUS]})" if cpus else ")"),
                  file=sys.stderr, flush=True)
            ok = False
            try:
                ok = workers[i].run([n, f"out_dir={root / n}", *a.overrides]) == 0
            finally:                    # whatever happens here, the other lanes must not wait for n forever
                end = time.time() - t0      # before the lock, which another lane's search may hold for a moment
                with cond:
                    if not ok:
                        failed.append(n)
                    finished[n] = end
                    running[i] = None
                    cond.notify_all()
            prev = n

    # Each lane's worker process, kept on the lane's own CPUs, so that two experiments never share one (measured:
    # 10-20% faster than both spreading XLA's threads over both cores) and an experiment's bytes do not depend on the
    # schedule (the ViT and the language model round differently on one core than on two).
    workers = [Lane({**os.environ, **({runner.CPUS: ",".join(map(str, cpus[i]))} if cpus else {})})
               for i in range(len(planned))]
    threads = [threading.Thread(target=lane, args=(i,)) for i in range(len(planned))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:                   # Ctrl-C here: no lane starts another experiment, the workers end now
        with cond:
            failed.append("interrupted")
            cond.notify_all()
        for w in workers:
            w.close(kill=True)
        raise
    finally:
        for w in workers:
            w.close()
    if failed:
        sys.exit(f"error: {', '.join(failed)} failed; the results of the others are in {root}")
    wall = time.time() - t0
    seconds = {n: round(finished[n] - started_at[n], 1) for n in names}
    compiled = {n: compile_report(root / n) for n in names}
    # The measured times schedule the next run and are the suite's reported cost: only a run in which every experiment
    # computed (not one served from the cache, whose seconds say nothing of the work) replaces them.
    cached = [n for n in names if not computed(root / n)]
    if cached:
        print(f"timings.json kept: {', '.join(cached)} computed nothing (served from the cache)", file=sys.stderr)
    elif set(names) == set(experiments.NAMES):
        results.write_json(root / "timings.json", {
            "seconds": seconds, "wall": round(wall, 1), "lanes": [lane for lane in lanes if lane],
            "machine": results.machine(),
            "compile_seconds": {n: c.get("seconds") for n, c in compiled.items()},
            "programs": {n: c.get("programs") for n, c in compiled.items()},
            "persistent_cache_hits": {n: c.get("persistent_cache_hits") for n, c in compiled.items()}})
    runner.claims_main([str(root)])
    last = max(finished, key=finished.get)
    path = [last]
    while path[-1] in waited_on:
        path.append(waited_on[path[-1]])
    programs = sum(c.get("programs") or 0 for c in compiled.values())
    compile_s = sum(c.get("seconds") or 0 for c in compiled.values())
    print(f"make reproduce: {wall:.0f} s wall on {a.lanes} lanes ({programs} programs compiled or read from the "
          f"persistent cache in {compile_s:.0f} s); critical path "
          + " -> ".join(f"{n} ({seconds[n]:.0f} s)" for n in reversed(path)), file=sys.stderr, flush=True)


def lane_cpus(lanes: int) -> list[list[int]] | None:
    """Each lane's own block of the CPUs this process may use (its affinity, within runner.CPUS if set; a remainder
    goes to the last lanes), or None where there are fewer CPUs than lanes or no way to pin a process."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    available = set(os.sched_getaffinity(0))
    if os.environ.get(runner.CPUS):
        available &= runner.cpu_list(os.environ[runner.CPUS])
    available = sorted(available)
    if len(available) < lanes:
        return None
    per, extra = divmod(len(available), lanes)
    bounds = [i * per + max(0, i - (lanes - extra)) for i in range(lanes + 1)]
    return [available[bounds[i]:bounds[i + 1]] for i in range(lanes)]


def _provenance(folder: Path, block: str) -> dict:
    """One block of a finished experiment's provenance.json ({} when there is none)."""
    try:
        return json.loads((folder / results.MARKER).read_text()).get(block) or {}
    except (OSError, ValueError):
        return {}


def compile_report(folder: Path) -> dict:
    """The compile counts an experiment wrote into its provenance.json ({} when it has none)."""
    return _provenance(folder, "compile")


def computed(folder: Path) -> bool:
    """Whether a finished experiment computed any stage entry (False: everything came from the cache, or unknown)."""
    return _provenance(folder, "cache").get("computed", 0) > 0


if __name__ == "__main__":
    main()
