"""`make bench`: W1-W3 from cold starts (median of --repeats runs, each a fresh process so compilation counts),
peak resident memory per run, the machine's matmul peak, and W1's PyTorch baseline when torch is installed, each of
its runs next to one of W1's, after and before it in turn (the machine's speed drifts over minutes: the ratio of the
medians, and each adjacent pair's ratio, compare runs made minutes apart at most). Writes results/bench/bench.json.

GPU check (on a machine with one): `python bench/run.py --seeds 50 --workloads W1,W3 --repeats 3 --repeats-large 1
--no-baseline --out results/bench/gpu.json`; the device name is recorded in each workload's entry.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from tvtheory import results

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> tuple[dict, float]:
    """Run a command, return its JSON line and its peak resident memory in GB (from wait4's rusage)."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024**2


def torch_version():
    """The installed torch's version, or None (read from its metadata: importing torch here would raise the peak
    memory that every later child process reports, which starts as a copy of this one's)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def speedups(w1_seconds: list[float], baseline_seconds: list[float]) -> dict:
    """W1 against its PyTorch baseline: the ratio of the medians, and each adjacent pair's (baseline run i over W1
    run i, made right before or after it)."""
    pairs = [b / w for w, b in zip(w1_seconds, baseline_seconds)]
    return {"W1_speedup_vs_torch": statistics.median(baseline_seconds) / statistics.median(w1_seconds),
            "W1_speedup_per_pair": pairs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="cold runs of W1 (median reported)")
    ap.add_argument("--repeats-large", type=int, default=3, help="cold runs of W2 and W3")
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per workload (the GPU check uses 50 for W1)")
    ap.add_argument("--baseline-repeats", type=int, help="cold runs of the PyTorch baseline (default and at most: "
                    "--repeats), run i next to W1's run i: after it for even i, before it for odd i (median reported)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baseline")
    ap.add_argument("--tiny", action="store_true", help="check that the benchmark runs end to end, at a size whose "
                    "numbers measure nothing (the report says so)")
    ap.add_argument("--out", help="default: results/bench/bench.json, or bench_tiny.json with --tiny (so that a smoke "
                    "run never overwrites the measured numbers)")
    a = ap.parse_args()
    for w in a.workloads.split(","):
        if w not in ("W1", "W2", "W3"):
            raise SystemExit(f"--workloads: {w!r} is not one of W1, W2, W3")
    a.baseline_repeats = a.repeats if a.baseline_repeats is None else a.baseline_repeats
    for name in ("seeds", "repeats", "repeats_large", "baseline_repeats"):
        if getattr(a, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}: {getattr(a, name)} must be >= 1")
    if a.baseline_repeats > a.repeats:
        raise SystemExit(f"--baseline-repeats: {a.baseline_repeats} must be <= --repeats ({a.repeats}): each baseline "
                         "run is paired with one of W1's")
    a.out = a.out or str(ROOT / "results" / "bench" / ("bench_tiny.json" if a.tiny else "bench.json"))
    py, tiny = sys.executable, ["--tiny"] if a.tiny else []
    report = {"machine": results.machine(),
              "repeats": {"W1": a.repeats, "W2": a.repeats_large, "W3": a.repeats_large}}
    if a.tiny:
        report["tiny"] = "a smoke run at tiny size: these numbers measure nothing"
    peak, _ = timed([py, "bench/workloads.py", "peak", *tiny])
    report["matmul_peak_gflops_per_s"] = peak["gflops_per_s"]
    if a.no_baseline or a.tiny:
        report["W1_torch_baseline"] = "skipped (--no-baseline or --tiny)"
    elif torch_version() is None:
        report["W1_torch_baseline"] = "torch not installed (`make bench` installs it): baseline not run"
    elif "W1" not in a.workloads.split(","):
        report["W1_torch_baseline"] = "skipped (W1 is not among --workloads)"
    else:
        report["repeats"]["W1_torch_baseline"] = a.baseline_repeats
    paired = "W1_torch_baseline" in report["repeats"]
    base_cmd, base_runs = [py, "bench/torch_baseline.py"], []
    for w in a.workloads.split(","):
        cmd, runs = [py, "bench/workloads.py", w, "--seeds", str(a.seeds), *tiny], []
        for i in range(a.repeats if w == "W1" else a.repeats_large):
            # Pair i: W1's run then the baseline's, the other way round for odd i, so that neither always runs second.
            with_base = paired and w == "W1" and i < a.baseline_repeats
            if with_base and i % 2:
                base_runs.append(timed(base_cmd))
            runs.append(timed(cmd))
            if with_base and not i % 2:
                base_runs.append(timed(base_cmd))
        secs = [r["seconds"] for r, _ in runs]
        first = runs[0][0]
        report[w] = {"seconds_median": statistics.median(secs), "seconds_all": secs,
                     "peak_rss_gb": max(m for _, m in runs), "gflop": first["flops"] / 1e9,
                     "gflops_per_s": first["flops"] / statistics.median(secs) / 1e9,
                     "fraction_of_matmul_peak": first["flops"] / statistics.median(secs) / 1e9 / peak["gflops_per_s"],
                     "flops_per_unit": first["flops_per_unit"], "grid": first["grid"], "device": first["device"],
                     "jax": first["jax"]}
        print(w, json.dumps(report[w]), flush=True)
    if base_runs:
        base_secs = [r["seconds"] for r, _ in base_runs]
        first = {k: v for k, v in base_runs[0][0].items() if k != "seconds"}
        report["W1_torch_baseline"] = {**first, "seconds_median": statistics.median(base_secs),
                                       "seconds_all": base_secs, "peak_rss_gb": max(m for _, m in base_runs)}
        report.update(speedups(report["W1"]["seconds_all"], base_secs))
        print("torch", json.dumps(report["W1_torch_baseline"]), flush=True)
    timings = ROOT / "results" / "timings.json"
    if timings.exists() and not a.tiny:           # the latest `make reproduce` (its own run, on its own spell)
        t = json.loads(timings.read_text())
        report["make_reproduce"] = {"wall_seconds": t.get("wall"), "lanes": t.get("lanes"),
                                    "experiment_seconds": sum((t.get("seconds") or {}).values()),
                                    "compile_seconds": sum(v or 0 for v in (t.get("compile_seconds") or {}).values()),
                                    "programs": sum(v or 0 for v in (t.get("programs") or {}).values()),
                                    # Not always this call's machine: the CPU of that run (absent before it was kept).
                                    "machine": t.get("machine"),
                                    "source": "results/timings.json, written by the latest make reproduce"}
    results.write_json(a.out, report)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
