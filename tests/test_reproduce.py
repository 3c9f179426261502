"""make reproduce's scheduling and its accounting of compiled programs (tvtheory/reproduce.py, tvtheory/compiles.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvtheory import compiles, reproduce


def test_schedule_puts_the_longest_first_and_ends_the_lanes_together():
    cost = {"a": 10.0, "b": 6.0, "c": 5.0, "d": 1.0}
    plan = reproduce.schedule(cost, {n: () for n in cost}, 2)
    # a and b start at once; c goes to the lane free first (b's, at 6), d to a's at 10: both lanes end at 11.
    assert plan == [["a", "d"], ["b", "c"]]
    assert [sum(cost[n] for n in lane) for lane in plan] == [11.0, 11.0]


def test_schedule_starts_an_experiment_only_after_what_it_reuses():
    cost = {"a": 1.0, "b": 10.0, "c": 5.0}
    plan = reproduce.schedule(cost, {"a": ("b",), "b": (), "c": ()}, 2)
    lane_of = {n: i for i, lane in enumerate(plan) for n in lane}
    # a is the cheapest but waits for b: it runs after c on c's lane, or after b on b's.
    assert plan[lane_of["a"]].index("a") > 0
    assert plan[lane_of["b"]][0] == "b"


def test_schedule_starts_first_what_the_longest_chain_waits_on():
    """Critical path first: x is short but z (the longest) waits on it, so x starts at once and z right after; the
    longest-first order (y, then z waiting for x on the other lane) would end at 17 instead of 12."""
    cost = {"x": 3.0, "y": 6.0, "z": 9.0, "w": 5.0}
    after = {"x": (), "y": (), "z": ("x",), "w": ()}
    assert reproduce.levels(cost, after) == {"x": 12.0, "y": 6.0, "z": 9.0, "w": 5.0}
    plan = reproduce.schedule(cost, after, 2)
    assert plan == [["x", "z"], ["y", "w"]]
    assert max(sum(cost[n] for n in lane) for lane in plan) == 12.0
    with pytest.raises(ValueError, match="cycle"):
        reproduce.levels({"a": 1.0, "b": 1.0}, {"a": ("b",), "b": ("a",)})


def test_the_search_beats_the_critical_path_rule_and_keeps_its_schedule_within_its_budget():
    """Longest first puts a and b side by side and ends at 7; the search finds the split that ends both lanes at 6.
    With a budget of one branch it still returns a whole schedule: the critical-path-first one."""
    cost = {"a": 3.0, "b": 3.0, "c": 2.0, "d": 2.0, "e": 2.0}
    after = {n: () for n in cost}
    ends = lambda p: max(sum(cost[n] for n in lane) for lane in p)  # noqa: E731
    plan = reproduce.schedule(cost, after, 2)
    assert ends(plan) == 6.0 and sorted(sum(plan, [])) == sorted(cost)
    greedy = reproduce.plan(cost, after, [0.0, 0.0], budget=1)
    assert ends(greedy) == 7.0 and greedy[0][0] == "a" and sorted(sum(greedy, [])) == sorted(cost)


def test_a_plan_from_mid_run_waits_for_what_is_running_and_skips_what_is_done():
    """Lane 0 is free at 10 while lane 1 runs r until 14 (an estimate); f finished. x reuses r's cache, so lane 0 cannot
    start it before 14: it starts y (and only y and z, which are still to start, are placed before x)."""
    cost = {"f": 5.0, "r": 8.0, "x": 6.0, "y": 4.0, "z": 1.0}
    after = {"f": (), "r": (), "x": ("r",), "y": (), "z": ()}
    p = reproduce.plan(cost, after, [10.0, 14.0], {"f": 9.0, "r": 14.0}, {"x", "y", "z"})
    assert p[0][0] == "y" and sorted(sum(p, [])) == ["x", "y", "z"]
    # y on lane 0 (10 -> 14), then x at 14 on whichever lane is free (-> 20) and z on the other: 20, the least possible
    assert max(14.0 + sum(cost[n] for n in p[1]), 10.0 + sum(cost[n] for n in p[0])) == 20.0
    with pytest.raises(ValueError, match="no schedule"):                 # x waits on r, which is neither done nor to do
        reproduce.plan(cost, after, [0.0, 0.0], {}, {"x"})


def test_compile_counter_counts_each_program_once_under_its_name():
    counter = compiles.Counter().start()

    @jax.jit
    def distinctly_named_program(x):
        return jnp.sin(x) * 3.0 + x.sum()

    x = jnp.arange(7.0)
    distinctly_named_program(x).block_until_ready()
    distinctly_named_program(x).block_until_ready()                          # the compiled program, again
    distinctly_named_program(jnp.arange(5.0)).block_until_ready()            # a new shape: a second program
    rep = counter.report()
    assert rep["by_function"]["jit(distinctly_named_program)"][0] == 2
    assert rep["programs"] >= 2 and rep["seconds"] >= 0 and rep["trace_seconds"] >= 0
    assert json.loads(json.dumps(rep)) == rep                                 # plain JSON for provenance.json
    counter.stop()
    distinctly_named_program(jnp.arange(3.0)).block_until_ready()            # compiled after the run: not counted
    assert counter.report() == rep


def test_only_a_run_that_computed_counts_as_a_measured_time(tmp_path):
    (tmp_path / "cold").mkdir()
    (tmp_path / "cold" / "provenance.json").write_text(json.dumps({"cache": {"computed": 4, "reused": 1}}))
    (tmp_path / "warm").mkdir()
    (tmp_path / "warm" / "provenance.json").write_text(json.dumps({"cache": {"computed": 0, "reused": 5}}))
    assert reproduce.computed(tmp_path / "cold")
    assert not reproduce.computed(tmp_path / "warm") and not reproduce.computed(tmp_path / "missing")


def test_compile_report_reads_a_finished_run_and_tolerates_none(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "provenance.json").write_text(json.dumps({"compile": {"programs": 3, "seconds": 1.5}}))
    assert reproduce.compile_report(tmp_path / "x") == {"programs": 3, "seconds": 1.5}
    assert reproduce.compile_report(tmp_path / "missing") == {}
    assert np.isfinite(reproduce.compile_report(tmp_path / "x")["seconds"])


def test_each_lane_gets_its_own_cpus_and_an_experiment_process_keeps_to_them(monkeypatch):
    """reproduce splits the CPUs among the lanes; an experiment's process pins itself to the CPUS it is given."""
    import os
    import subprocess
    import sys

    from tvtheory import runner

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 5}, raising=False)
    assert reproduce.lane_cpus(2) == [[0, 1], [2, 3, 5]]                     # the remainder to the last lane
    assert reproduce.lane_cpus(6) is None                                    # fewer CPUs than lanes: no pinning
    monkeypatch.setenv(runner.CPUS, "1-3")                                   # a user's restriction holds
    assert reproduce.lane_cpus(2) == [[1], [2, 3]]
    monkeypatch.undo()
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    one = min(os.sched_getaffinity(0))
    code = ("import os; from tvtheory import runner; from tvtheory.experiments import arithmetic; "
            "runner.environment(arithmetic.Config()); print(sorted(os.sched_getaffinity(0)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, runner.CPUS: str(one)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"[{one}]"


# The shapes of tests/test_experiments.py's tiny ood and scaling runs, whose programs the suite has compiled by then.
OOD_TINY = ["train=tiny", "n_seeds=2", "data.d=8", "model.m=32", "ood.n_test=100", "ood.n_val=50",
            "ood.gammas=[0.6,-0.5,0.3]", "ood.ranges=[[-1,2,1],[-1,1,1],[0,1,1]]", "figures=false", "cache.dir=null"]
# A run that cannot end before the 1-s timers that kill it: a tiny run whose programs are in the suite's cache of
# compiled programs can finish in under a second.
OOD_LONG = [*OOD_TINY, "train.steps=20000"]
SCALING_TINY = ["train=tiny", "n_seeds=2", "model.m=16", "scaling.ds=[6,8]", "scaling.ms=[16]", "scaling.n_rels=[2,4]",
                "scaling.conv_steps=60", "scaling.n_test=50", "figures=false", "cache.dir=null"]


@pytest.mark.slow
def test_a_lane_runs_experiments_in_one_worker_with_the_bytes_of_separate_processes(tmp_path, monkeypatch):
    """A lane's worker (pinned to one CPU, as in make reproduce) answers each run with the command's exit status (a
    bad value: 2, and the worker lives on); a worker that dies during a run fails it and the next run gets a fresh
    one; an experiment run after another one in the same worker writes the files a separate ``python -m tvtheory``
    writes (no stage cache; the separate process with a cache of compiled programs of its own, so that it compiles
    every program anew); a lane closed from another thread ends its running experiment and starts no other."""
    import os
    import subprocess
    import sys
    import threading

    from tvtheory import runner
    from tvtheory.lane import Lane

    monkeypatch.chdir(tmp_path)                 # Hydra's job folders (outputs/) go here, not into the repository
    one = str(min(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "0"
    env = {**os.environ, "PYTHONHASHSEED": "0", runner.CPUS: one}
    lane = Lane(env)                                                    # the suite's cache of compiled programs
    try:
        assert lane.run(["ood", "n_seeds=-1", f"out_dir={tmp_path / 'bad'}"]) == 2
        first = lane.proc.pid
        threading.Timer(1.0, lane.proc.kill).start()                    # dies in the middle of a run
        assert lane.run(["ood", *OOD_LONG, f"out_dir={tmp_path / 'killed'}"]) == 1 and lane.proc is None
        assert lane.run(["scaling", *SCALING_TINY, f"out_dir={tmp_path / 'scaling'}"]) == 0
        assert lane.proc.pid != first
        assert lane.run(["ood", *OOD_TINY, f"out_dir={tmp_path / 'lane'}"]) == 0
        threading.Timer(1.0, lane.close, kwargs={"kill": True}).start()  # closed from another thread
        assert lane.run(["ood", *OOD_LONG, f"out_dir={tmp_path / 'closed'}"]) == 1
        assert lane.run(["ood", "n_seeds=-1"]) == 1 and lane.proc is None   # no worker once closed
    finally:
        lane.close(kill=True)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "killed").exists()
    p = subprocess.run([sys.executable, "-m", "tvtheory", "ood", *OOD_TINY, f"out_dir={tmp_path / 'process'}"],
                       env={**env, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla-process")}, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    files = sorted(f.name for f in (tmp_path / "process").iterdir() if f.name != "provenance.json")
    assert "metrics.csv" in files and "claims.json" in files
    assert files == sorted(f.name for f in (tmp_path / "lane").iterdir() if f.name != "provenance.json")
    for name in files:                                  # claims.json names its folder
        lane_bytes = (tmp_path / "lane" / name).read_bytes().replace(str(tmp_path / "lane").encode(),
                                                                      str(tmp_path / "process").encode())
        assert lane_bytes == (tmp_path / "process" / name).read_bytes(), name
    argv = json.loads((tmp_path / "lane" / "provenance.json").read_text())["argv"]
    assert argv[0].endswith(os.path.join("tvtheory", "__main__.py"))
    assert argv[1:] == [*OOD_TINY, f"out_dir={tmp_path / 'lane'}"]


@pytest.mark.parametrize("args, says", [
    (["--only", "nope"], "--only: experiment='nope': no such experiment"),
    (["--lanes", "0"], "--lanes=0: must be at least 1"),
    (["--only", "arithmetic,ood", "{root}", "sweep=tiny"], "ood's configuration is refused; nothing was run"),
    (["--only", "arithmetic", "n_seeds=0"], "arithmetic's configuration is refused; nothing was run"),  # no folder
])
def test_reproduce_refuses_bad_arguments_and_overrides_before_any_experiment_runs(tmp_path, monkeypatch, capsys, args,
                                                                                    says):
    """Each used to be a traceback, or (an override one experiment refuses) a failure after the others had run and
    written their folders; a first override was taken for the results folder."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(SystemExit) as e:
        reproduce.main([a.format(root=root) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and says in err[-1], err
    assert not root.exists() and not (tmp_path / "results").exists()


def test_the_first_argument_is_an_override_only_when_it_reads_as_one(tmp_path, monkeypatch):
    """A results folder whose name holds '=' used to be read as an override (and the run went to results/)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs=1").mkdir()
    (tmp_path / "runs").mkdir()
    for arg in ("n_seeds=2", "sweep.n_test=10", "+data.x=1", "~figures=1", "hydra/launcher=joblib", "model@x=1",
                "new/x=1", "cache.dir=/tmp/x", "out_dir=runs/a"):
        assert reproduce.is_override(arg), arg
    for arg in ("results", "runs=1", "./new=1", "runs/x=1", "runs=1/x", "runs/x=1/y", str(tmp_path / "a=b")):
        assert not reproduce.is_override(arg), arg
