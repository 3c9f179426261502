"""make reproduce's scheduling and its accounting of compiled programs (tvtheory/reproduce.py, tvtheory/compiles.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np

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


def test_compile_report_reads_a_finished_run_and_tolerates_none(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "provenance.json").write_text(json.dumps({"compile": {"programs": 3, "seconds": 1.5}}))
    assert reproduce.compile_report(tmp_path / "x") == {"programs": 3, "seconds": 1.5}
    assert reproduce.compile_report(tmp_path / "missing") == {}
    assert np.isfinite(reproduce.compile_report(tmp_path / "x")["seconds"])
