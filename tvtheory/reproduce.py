"""``python -m tvtheory.reproduce [RESULTS_DIR]``: every experiment of the registry into RESULTS_DIR/<name>, on two
lanes, then every verdict merged (``python -m tvtheory.claims``) and the README's table rewritten.

The lanes are scheduled from measured costs, longest first: each experiment's seconds in the last reproduce run
(RESULTS_DIR/timings.json), or its module's COST when it has not run yet; an experiment that reuses another's cache
(its AFTER) starts only once that one has finished. Each experiment is its own process, so two lanes keep both cores
busy while one of them compiles. The last line gives the wall time and the critical path: the chain of experiments,
each waiting on the one before it (its lane or its AFTER), that ended last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from tvtheory import experiments, results


def costs(root: Path) -> dict[str, float]:
    measured = {}
    try:
        measured = json.loads((root / "timings.json").read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        pass
    return {n: float(measured.get(n, experiments.get(n).COST)) for n in experiments.NAMES}


def schedule(cost: dict[str, float], after: dict[str, tuple], lanes: int) -> list[list[str]]:
    """List scheduling: whenever a lane is free, it takes the longest experiment whose AFTER have all been placed
    earlier (simulated with the costs), so that the lanes end together."""
    free = [0.0] * lanes
    done: dict[str, float] = {}
    plan: list[list[str]] = [[] for _ in range(lanes)]
    todo = set(cost)
    while todo:
        lane = min(range(lanes), key=lambda i: free[i])
        ready = [n for n in todo if all(a in done for a in after[n])]
        if not ready:
            raise ValueError(f"AFTER cycle among {sorted(todo)}")
        n = max(ready, key=lambda x: (cost[x], x))
        start = max([free[lane]] + [done[a] for a in after[n] if a in done])
        done[n] = start + cost[n]
        free[lane] = done[n]
        plan[lane].append(n)
        todo.remove(n)
    return plan


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="results")
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated experiments (default: all)")
    ap.add_argument("overrides", nargs="*", help="key=value passed to every experiment")
    a = ap.parse_args(argv)
    root = Path(a.root)
    names = [n for n in a.only.split(",") if n] or list(experiments.NAMES)
    for n in names:
        experiments.get(n)
    cost = {n: c for n, c in costs(root).items() if n in names}
    after = {n: tuple(x for x in experiments.get(n).AFTER if x in names) for n in names}
    plan = schedule(cost, after, a.lanes)
    print("lanes: " + " | ".join(", ".join(lane) for lane in plan), file=sys.stderr, flush=True)
    finished: dict[str, float] = {}
    started_at: dict[str, float] = {}
    waited_on: dict[str, str] = {}
    cond, failed = threading.Condition(), []
    t0 = time.time()

    def lane(order: list[str]) -> None:
        prev = None
        for n in order:
            with cond:
                cond.wait_for(lambda: failed or all(x in finished for x in after[n]))
                if failed:
                    return
            blockers = [(finished[x], x) for x in after[n]] + ([(finished[prev], prev)] if prev else [])
            if blockers:
                waited_on[n] = max(blockers)[1]
            started_at[n] = time.time() - t0
            print(f"== {n} (lane of {', '.join(order)})", file=sys.stderr, flush=True)
            p = subprocess.run([sys.executable, "-m", "tvtheory", n, f"out_dir={root / n}", *a.overrides])
            with cond:
                if p.returncode:
                    failed.append(n)
                finished[n] = time.time() - t0
                cond.notify_all()
            prev = n

    threads = [threading.Thread(target=lane, args=(order,)) for order in plan if order]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        sys.exit(f"error: {', '.join(failed)} failed; the results of the others are in {root}")
    wall = time.time() - t0
    seconds = {n: round(finished[n] - started_at[n], 1) for n in names}
    compiled = {n: compile_report(root / n) for n in names}
    if set(names) == set(experiments.NAMES):
        results.write_json(root / "timings.json", {
            "seconds": seconds, "wall": round(wall, 1), "lanes": plan,
            "compile_seconds": {n: c.get("seconds") for n, c in compiled.items()},
            "programs": {n: c.get("programs") for n, c in compiled.items()},
            "persistent_cache_hits": {n: c.get("persistent_cache_hits") for n, c in compiled.items()}})
    from tvtheory import runner

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


def compile_report(folder: Path) -> dict:
    """The compile counts an experiment wrote into its provenance.json ({} when it has none)."""
    try:
        return json.loads((folder / results.MARKER).read_text()).get("compile") or {}
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    main()
