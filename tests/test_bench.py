"""`make bench`: the report it writes (end to end at tiny size, and its pairing of W1 with the PyTorch baseline on
fake runs), not the speed (speed is measured, never tested)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tvtheory

ROOT = Path(__file__).resolve().parent.parent


def test_bench_writes_its_report_and_counts_flops_like_xla(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "bench/run.py", "--tiny", "--seeds", "1", "--workloads", "W1", "--repeats", "1",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "measure nothing" in report["tiny"]                  # a smoke run cannot pass for a measurement
    assert report["matmul_peak_gflops_per_s"] > 0
    assert report["machine"]["cpus"] >= 1 and "vector_isa" in report["machine"]   # the CPU the seconds are of
    w1 = report["W1"]
    assert len(w1["seconds_all"]) == 1 and w1["seconds_median"] > 0
    assert 0 < w1["peak_rss_gb"] < 2                             # the memory bound, here at tiny size
    assert abs(w1["gflops_per_s"] * w1["seconds_median"] - w1["gflop"]) < 1e-6 * w1["gflop"]
    units = w1["flops_per_unit"]
    # The analytic forward count (used for the grid's references) agrees with XLA's cost analysis.
    assert abs(units["forward_batch_analytic"] / units["forward_batch_xla"] - 1) < 0.05
    # A gradient step costs more than a forward pass; the total covers at least 6 fine-tunes of 20 steps.
    assert units["sgd_step_xla"] > units["forward_batch_xla"]
    assert w1["gflop"] * 1e9 > 6 * 20 * units["sgd_step_xla"]
    # The grids' count is of what ran: the native kernel skips padding, XLA's loop does not.
    grid = w1["grid"]
    assert 9 <= grid["distinct_tokens_mean"] <= 16
    assert (grid["executed_share_of_padded"] < 1) if grid["native_kernel"] else grid["executed_share_of_padded"] == 1
    assert "skipped" in report["W1_torch_baseline"]


def _workloads():
    spec = importlib.util.spec_from_file_location("bench_workloads", ROOT / "bench" / "workloads.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_grid_point_counts_the_pairs_each_loop_multiplies():
    w = _workloads()
    Q, M = w.Q, w.M
    k = np.array([16, 15, 13, 11, 9, 4, 2])
    # XLA's loop: every (query, key) pair of Q x Q; the kernel: k live queries x the keys up to k in quads of 4, a last
    # quad with one or two live keys as one pair.
    assert w.grid_point_flops(k, native=False) == k.size * (2 * Q * Q * M + Q * M + 4 * Q * Q)
    keys = {16: 16, 15: 16, 13: 14, 11: 12, 9: 10, 4: 4, 2: 2}
    assert w.grid_point_flops(k, native=True) == sum(2 * n * keys[n] * M + n * M + 4 * Q * Q for n in k)
    assert w.grid_point_flops(np.array([Q]), native=True) == w.grid_point_flops(np.array([Q]), native=False)
    # A sample's distinct tokens: its rows compared whole.
    X = np.zeros((3, 4, 2), np.float32)
    X[0, 1], X[1, :2], X[2] = 1.0, 2.0, np.arange(8).reshape(4, 2)
    X[1, 3, 1] = 5.0                                                # a row that differs in one coordinate only
    assert w.distinct_rows(X).tolist() == [2, 3, 4]


def test_bench_rejects_a_bad_workload_before_running_anything(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "bench/run.py", "--workloads", "W1,W4", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == ["--workloads: 'W4' is not one of W1, W2, W3"]
    assert not out.exists()


def test_the_out_of_domain_workload_finishes_on_two_cpus():
    """XLA's default (concurrency-optimised) schedule made this stage hang for good on two CPUs (one CPU never hung):
    every XLA thread idle, the result never delivered. tvtheory/__init__.py sets the other schedule; a hang fails here
    by timeout (it takes ~10 s). The subprocess inherits this process's XLA_FLAGS on purpose: forcing the default
    schedule there (``--xla_cpu_enable_concurrency_optimized_scheduler=true``) makes this test fail."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        pytest.skip("needs two CPUs (the hang needs XLA's intra-op threads)")
    try:
        # The child pins itself before JAX starts (a preexec_fn would fork this multithreaded process).
        child = (f"import os, runpy, sys; os.sched_setaffinity(0, {cpus[:2]}); "
                 "sys.argv = ['bench/workloads.py', 'W2', '--tiny', '--seeds', '2']; "
                 "runpy.run_path('bench/workloads.py', run_name='__main__')")
        p = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        raise AssertionError("bench/workloads.py W2 --tiny --seeds 2 did not finish in 240 s") from None
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["workload"] == "W2"


def test_the_xla_defaults_yield_to_options_that_xla_flags_sets():
    defaults = ["--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1",
                "--xla_cpu_enable_concurrency_optimized_scheduler=false"]
    assert tvtheory.with_xla_defaults("").split() == defaults
    for i, d in enumerate(defaults):
        mine = d.replace("=false", "=true").replace("=1", "=3")
        assert tvtheory.with_xla_defaults(f"--xla_dump_to=/tmp/x {mine}").split() == [
            "--xla_dump_to=/tmp/x", mine, *defaults[:i], *defaults[i + 1:]]
    # A name inside another option's value is not the option.
    assert tvtheory.with_xla_defaults("--xla_dump_to=/tmp/xla_backend_optimization_level").split()[1:] == defaults
    # This process got them (or its own settings of them) at import, before JAX started its backend.
    assert tvtheory.with_xla_defaults(os.environ["XLA_FLAGS"]) == os.environ["XLA_FLAGS"]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_each_baseline_run_is_paired_with_a_w1_run_and_the_ratios_compare_them(tmp_path, monkeypatch):
    """The machine's speed drifts over minutes: the PyTorch baseline's run i comes next to W1's run i (after it, then
    before it, in turn), and the report gives the ratio of the medians and each pair's ratio (fake runs: no process is
    started)."""
    bench, order = _bench_module(), []
    seconds = {}

    def fake_timed(cmd):
        what = cmd[2] if cmd[1] == "bench/workloads.py" else "torch"
        order.append(what)
        if what == "peak":
            return {"gflops_per_s": 160.0}, 0.1
        if what == "torch":
            return {"workload": "W1_torch", "seconds": next(seconds[what]), "torch": "2.13.0", "threads": 2}, 0.5
        return {"seconds": next(seconds[what]), "flops": 1.6e12, "flops_per_unit": {}, "grid": {}, "device": "cpu:0",
                "jax": "x"}, 0.7
    monkeypatch.setattr(bench, "timed", fake_timed)
    monkeypatch.setattr(bench, "torch_version", lambda: "2.13.0")

    def run(*args):
        order.clear()
        seconds.update({"W1": iter([20.0, 18.0, 22.0]), "W3": iter([60.0]), "torch": iter([190.0, 200.0, 210.0])})
        monkeypatch.setattr(sys, "argv", ["run.py", *args, "--out", str(tmp_path / "bench.json")])
        bench.main()
        return json.loads((tmp_path / "bench.json").read_text())

    # The latest make reproduce's timing comes with the CPU it ran on, which need not be this call's.
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "timings.json").write_text(json.dumps(
        {"wall": 600.0, "seconds": {"a": 400.0, "b": 500.0}, "machine": {"cpu_family_model": "25/1"}}))
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    report = run("--workloads", "W3,W1", "--repeats", "3", "--baseline-repeats", "2", "--repeats-large", "1")
    assert report["make_reproduce"]["wall_seconds"] == 600.0 and report["make_reproduce"]["experiment_seconds"] == 900
    assert report["make_reproduce"]["machine"] == {"cpu_family_model": "25/1"}
    assert order == ["peak", "W3", "W1", "torch", "torch", "W1", "W1"]
    assert report["W1_torch_baseline"]["seconds_all"] == [190.0, 200.0]
    assert report["W1_torch_baseline"]["seconds_median"] == 195.0 and "seconds" not in report["W1_torch_baseline"]
    assert report["W1_speedup_vs_torch"] == pytest.approx(195.0 / 20.0)
    assert report["W1_speedup_per_pair"] == pytest.approx([190.0 / 20.0, 200.0 / 18.0])
    assert report["repeats"]["W1_torch_baseline"] == 2
    report = run("--workloads", "W1")                       # by default as many baseline runs as W1's
    assert order == ["peak", "W1", "torch", "torch", "W1", "W1", "torch"]
    assert report["W1_speedup_per_pair"] == pytest.approx([190.0 / 20.0, 200.0 / 18.0, 210.0 / 22.0])
    # Without W1 there is nothing to compare the baseline with, and without torch nothing to run: W1 runs alone.
    report = run("--workloads", "W3", "--repeats-large", "1")
    assert order == ["peak", "W3"] and "W1 is not among" in report["W1_torch_baseline"]
    monkeypatch.setattr(bench, "torch_version", lambda: None)
    report = run("--workloads", "W1")
    assert order == ["peak", "W1", "W1", "W1"] and "torch not installed" in report["W1_torch_baseline"]
    assert "W1_speedup_vs_torch" not in report and "W1_torch_baseline" not in report["repeats"]
    monkeypatch.setattr(bench, "torch_version", lambda: "2.13.0")
    # A pairing that cannot be made is refused in one line, before anything runs.
    for bad, line in [(["--baseline-repeats", "4"], "--baseline-repeats: 4 must be <= --repeats (3)"),
                      (["--baseline-repeats", "0"], "--baseline-repeats: 0 must be >= 1")]:
        with pytest.raises(SystemExit, match="^" + re.escape(line)):
            run("--workloads", "W1", *bad)
        assert order == []
