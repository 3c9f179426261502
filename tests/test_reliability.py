"""What a user can get wrong, and what can go wrong under them, through the command line: bad values and paths
stop before compute with one line; reruns are byte-identical; a damaged cache heals; a killed run resumes; a result
folder belongs to one experiment and is replaced as a whole; divergence is caught.

Runs go through real processes where the process matters (the bad values' one line and exit status, a kill, two runs
at once, a multirun, the first run of each rerun and resume test, so that bytes are compared across processes), and
through the command's own function in the test process otherwise (the ``command`` fixture of tests/conftest.py)."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# No figures: no test here looks at one (tests/test_experiments.py does), and drawing them is a third of a tiny run.
TINY = ["sweep=tiny", "train=tiny", "n_seeds=2", "data.d=8", "model.m=32", "figures=false"]

BAD = [  # (override, text the one-line message must contain)
    ("data.alpha=0.3", "data.alpha"),                     # unknown key
    ("+data.bar=1", "data.bar=1: unknown key"),
    ("+foo=1", "foo=1: unknown key"),
    ("data.d=abc", "data.d"),                             # wrong type
    ("n_seeds=1.5", "n_seeds"),
    ("sweep=nope", "sweep/nope"),                         # missing option
    ("sweep.alphas=[0.2,1.5]", "sweep.alphas[1]=1.5"),    # |alpha| <= 1
    ("data.n_rel=2", "data.n_rel=2"),                     # n_rel > n_conf
    ("data.d=2", "data.d=2"),                             # room for the patterns
    ("model.form=four", "model.sigma_w=0.0"),
    ("train.eta=nan", "train.eta=nan"),
    ("train.log_every=1000", "train.log_every=1000"),
    ("sweep.lam_step=0.8", "sweep.lam_step=0.8: must divide"),          # used to run past lam_max
    ("sweep.lam_step=1e-7", "sweep.lam_step=1e-07: gives"),            # used to hang
    ("sweep.lam_step=1e-300", "sweep.lam_step=1e-300: gives"),         # used to fail allocating
    ("n_seeds=100000000", "n_seeds=100000000"),                         # used to hang
    ("train.steps=1000000000", "train.steps=1000000000: the run would need"),
    ("sweep.n_test=100000000", "sweep.n_test=100000000: the run would need"),
    ("sweep.lam_min=2", "sweep.lam_max=2.0: gives 1 grid point"),         # used to 'pass' with nothing tested
    ("out_dir=/proc/nope", "out_dir='/proc/nope': /proc is not writable"),
    ("cache.dir=/proc/nope", "cache.dir='/proc/nope': /proc is not writable"),
    ("hydra.run.dir=/proc/nope/run", "hydra.run.dir (or hydra.sweep.dir)="),
    # numbers 32-bit arithmetic cannot hold: used to overflow after the job had started (a traceback, or an
    # infinity that read as divergence)
    ("seed=18446744073709551616", "seed=18446744073709551616: outside the 32-bit integer range"),
    ("train.n_train=10000000000", "train.n_train=10000000000: outside the 32-bit integer range"),
    ("sweep.lam_max=1e300", "sweep.lam_max=1e+300: outside the 32-bit float range"),
    ("sweep.alphas=[0.5,-1e39]", "sweep.alphas[1]=-1e+39: outside the 32-bit float range"),
    ("data=null", "data='null': a config group takes the name of one of its options"),   # used to be a traceback
    ("hydra.job.chdir=true", "hydra.job.chdir=true: a run stays in the folder it starts from"),  # wrote elsewhere
    ("hydra.job.chdir=yes", "hydra.job.chdir=yes: a run stays in the folder it starts from"),
    ("out_dir=outputs", "out_dir='outputs': would hold Hydra's job folder"),   # refused once Hydra had made it
    ("out_dir=", "out_dir='': must be a folder path, or null"),             # used to act as null
    ("cache.dir=' '", "cache.dir=' ': must be a folder path, or null"),
    ("threads=4096", "threads=4096: this process may run on"),              # used to run on every CPU, silently
    ("figures=2", "figures=2: must be true or false"),                      # used to run as figures=true
    ("figures=${n_seeds}", "figures=${n_seeds}: must be true or false (it gives 2)"),   # so did this
    ("cache.refresh=yes", "cache.refresh=yes: must be true or false"),
]


def run(script, *overrides, cwd, **kw):
    """The experiment's script in a process of its own, from ``cwd`` (a test's temporary folder: Hydra's job folder of
    a run goes there, under outputs/, not into the repository)."""
    return subprocess.Popen([sys.executable, str(ROOT / "experiments" / script), *overrides], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def one_line_error(p, code=2):
    """A bad input's one line (exit 2: before any compute, so nothing else is printed); a run stopped later (exit 3)
    ends with one such line after its log. ``p``: a process, or what the ``command`` fixture returns."""
    err = p.communicate(timeout=300)[1] if hasattr(p, "communicate") else p.stderr
    lines = err.strip().splitlines()
    assert p.returncode == code, err[-2000:]
    assert len(lines) == 1 or (code != 2 and "[tvtheory]" not in lines[-1]), lines
    return lines[-1]


# Through the real command line, one case of each kind (the others take the same path, checked in-process below):
# an unknown key, a wrong type, a missing option, a value out of range, a cost beyond the budget, unwritable folders.
THROUGH_CLI = ("+foo=1", "data.d=abc", "sweep=nope", "sweep.alphas=[0.2,1.5]", "train.steps=1000000000",
               "out_dir=/proc/nope", "cache.dir=/proc/nope", "hydra.run.dir=/proc/nope/run", "hydra.job.chdir=true",
               "hydra.job.chdir=yes")


def bad_cases(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    done = tmp_path / "done"                                  # another run's result folder
    done.mkdir()
    (done / "provenance.json").write_text("{}")
    inside = tmp_path / "results" / "cache"                   # results: the tests' out_dir
    return BAD + [(f"out_dir={a_file}", f"out_dir='{a_file}': is a file"),
                  (f"out_dir={a_file}/sub", f"out_dir='{a_file}/sub': {a_file} is a file"),
                  (f"cache.dir={a_file}", f"cache.dir='{a_file}': {a_file} is a file"),
                  # a cache the finished run's folder swap would delete (it used to, silently)
                  (f"cache.dir={inside}", f"cache.dir='{inside}': inside out_dir="),
                  (f"cache.dir={done / 'c'}", f"cache.dir='{done / 'c'}': inside the result folder")]


def test_bad_values_and_paths_stop_with_one_line_naming_the_field(tmp_path):
    out, cache_dir = tmp_path / "results", tmp_path / "cache"
    cases = [(o, msg) for o, msg in bad_cases(tmp_path) if o in THROUGH_CLI or "a_file" in o]
    assert len(cases) == len(THROUGH_CLI) + 3
    procs = [(o, msg, run("arithmetic.py", *TINY, f"out_dir={out}", f"cache.dir={cache_dir}", o, cwd=tmp_path))
             for o, msg in cases]
    for override, msg, p in procs:
        line = one_line_error(p)
        assert line.startswith("config error: ") and msg in line, (override, line)
    assert not out.exists() and not cache_dir.exists() and not list(tmp_path.glob(".*staging*"))
    assert not (tmp_path / "outputs").exists()                # not even Hydra's run folder


def test_every_bad_value_stops_the_commands_check_with_one_line(tmp_path, capsys, monkeypatch):
    """Every case, through the check the command runs before Hydra starts (``cli.precheck``), in this process, from
    an empty folder (relative paths, such as out_dir=outputs, are read from there)."""
    from tvtheory import cli, experiments

    monkeypatch.chdir(tmp_path)
    cli.register("arithmetic")                                # as cli.main does first, for its experiment
    out, cache_dir = tmp_path / "results", tmp_path / "cache"
    for override, msg in bad_cases(tmp_path):
        if override.startswith("hydra."):
            continue                                          # Hydra's own folders: the command line above
        with pytest.raises(SystemExit) as e:
            cli.precheck("arithmetic", experiments.get("arithmetic"),
                         [*TINY, f"out_dir={out}", f"cache.dir={cache_dir}", override])
        lines = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1, (override, lines)
        assert lines[0].startswith("config error: ") and msg in lines[0], (override, lines[0])
    assert not out.exists() and not cache_dir.exists() and not (tmp_path / "outputs").exists()


def test_a_multirun_checks_every_job_before_the_first_starts(tmp_path):
    p = run("arithmetic.py", "-m", *TINY, "data.d=8,2", f"hydra.sweep.dir={tmp_path / 'mr'}",
            f"cache.dir={tmp_path / 'cache'}", cwd=tmp_path)
    line = one_line_error(p)
    assert line.startswith("config error: job 1 (") and line.endswith("data.d=2: must be an integer >= 3")
    assert not list((tmp_path / "mr").rglob("metrics.csv")) and not (tmp_path / "cache").exists()
    p = run("arithmetic.py", "-m", *TINY, "data.d=6,8", f"out_dir={tmp_path / 'same'}",
            f"hydra.sweep.dir={tmp_path / 'mr2'}", cwd=tmp_path)
    assert "shared by several jobs" in one_line_error(p)
    # with the default sweep folder (it interpolates the experiment's name, resolvable only once Hydra is set up)
    p = run("arithmetic.py", "-m", *TINY, "data.d=8,2", cwd=tmp_path)
    assert one_line_error(p).startswith("config error: job 1 (")
    # a value the composition refuses (a type): one line too, not Hydra's warning about its callback before it
    p = run("arithmetic.py", "-m", *TINY, "data.d=8,abc", f"hydra.sweep.dir={tmp_path / 'mr3'}", cwd=tmp_path)
    assert one_line_error(p).startswith("config error: job 1 (") and not (tmp_path / "mr3").exists()
    p = run("arithmetic.py", "-m", *TINY, "data=null", f"hydra.sweep.dir={tmp_path / 'mr4'}", cwd=tmp_path)
    assert one_line_error(p).startswith("config error: data='null': a config group")     # was a traceback


def tables(d: Path) -> dict:
    return {f.name: f.read_bytes() for f in d.glob("*.csv")}


def test_reruns_are_byte_identical_with_and_without_cache_refresh_recomputes_and_the_folder_is_replaced(tmp_path,
                                                                                                        command):
    """The run without a cache in a process of its own; the cached runs through the command's function in this one."""
    cdir = f"cache.dir={tmp_path / 'cache'}"
    outs = {name: tmp_path / name for name in ("plain", "cold", "warm", "refresh")}
    extra = {"plain": ["cache.dir=null"], "cold": [cdir], "warm": [cdir], "refresh": [cdir, "cache.refresh=true"]}
    (tmp_path / "warm").mkdir()
    logs = {}
    for name, out in outs.items():                     # in order: the warm run reads what the cold run stored
        if name == "warm":                             # a previous run's leftover must not survive the replacement
            (out / "provenance.json").write_text(json.dumps({"experiment": "arithmetic"}))
            (out / "old_figure.png").write_text("stale")
        args = [*TINY, f"out_dir={out}", *extra[name]]
        if name == "plain":
            _, logs[name] = (p := run("arithmetic.py", *args, cwd=tmp_path)).communicate(timeout=300)
        else:
            logs[name] = (p := command("arithmetic", *args)).stderr
        assert p.returncode == 0, logs[name]
    assert " 0 computed" in logs["warm"] and " 0 entries reused" in logs["refresh"]
    assert not (outs["warm"] / "old_figure.png").exists()
    assert not [f for out in outs.values() for f in out.iterdir() if f.suffix in (".png", ".pdf")]   # figures=false
    got = [tables(out) for out in outs.values()]
    assert all(t == got[0] for t in got) and len(got[0]) == 5         # 4 measurement tables, summary
    prov = json.loads((outs["warm"] / "provenance.json").read_text())
    assert prov["experiment"] == "arithmetic" and prov["cache"]["reused"] > 0
    assert all(Path(e).exists() for e in prov["cache"]["entries"]) and prov["cache"]["written_by"]
    claims = json.loads((outs["warm"] / "claims.json").read_text())
    assert all({"commit", "dirty", "source"} <= set(r) for r in claims)
    assert {r["verdict"] for r in claims} == {"inconclusive"}      # a tiny config decides nothing
    mode = stat.S_IMODE((outs["cold"] / "metrics.csv").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_a_result_folder_belongs_to_one_experiment_and_the_results_root_is_refused(tmp_path):
    ood = tmp_path / "results" / "ood"
    ood.mkdir(parents=True)
    (ood / "provenance.json").write_text(json.dumps({"experiment": "ood"}))
    (ood / "metrics.csv").write_text("keep me")
    (tmp_path / "results" / "claims.json").write_text("[]")
    for target, msg in ((ood, "belongs to the 'ood' experiment"), (tmp_path / "results", "not a result folder")):
        line = one_line_error(run("arithmetic.py", *TINY, f"out_dir={target}", "cache.dir=null", cwd=tmp_path))
        assert msg in line, line
    assert (ood / "metrics.csv").read_text() == "keep me"


def test_two_runs_without_out_dir_in_the_same_second_get_their_own_folders(tmp_path):
    procs = [run("arithmetic.py", *TINY, "cache.dir=null", cwd=tmp_path)      # TINY's programs: compiled already
             for _ in range(2)]
    for p in procs:
        assert p.wait(300) == 0
    folders = sorted((tmp_path / "outputs" / "arithmetic").iterdir())
    assert len(folders) == 2 and all((f / "metrics.csv").exists() for f in folders)


def test_a_damaged_cache_heals_with_a_cold_runs_numbers(tmp_path, command):
    """The cold run in a process of its own; the runs on the damaged cache through the command's function in this
    one."""
    cdir, args = tmp_path / "cache", [*TINY, "n_seeds=1", "sweep.alphas=[0.0]"]
    assert run("arithmetic.py", *args, f"out_dir={tmp_path / 'cold'}", f"cache.dir={cdir}", cwd=tmp_path).wait(300) == 0
    entries = sorted(cdir.glob("finetune/*.npz"))
    evals = sorted(cdir.glob("pair_eval/*.npz"))
    assert len(entries) == 2 and len(evals) == 1
    data = entries[0].read_bytes()
    entries[0].write_bytes(data[:3000])                                   # truncated
    raw = bytearray(entries[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF                                            # one flipped byte
    entries[1].write_bytes(bytes(raw))
    import io

    with np.load(evals[0]) as z:                                          # well-formed, values edited
        arrays = {k: z[k] for k in z.files}
    key = next(k for k in arrays if k != "__meta__")
    arrays[key] = arrays[key] + 1.0
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    evals[0].write_bytes(buf.getvalue())
    p = command("arithmetic", *args, f"out_dir={tmp_path / 'healed'}", f"cache.dir={cdir}")
    err = p.stderr
    assert p.returncode == 0, err
    warnings = [line for line in err.splitlines() if "is damaged" in line]
    assert len(warnings) == 3 and all("moved to" in w for w in warnings)
    assert "3 damaged entries recomputed" in err
    assert len(list((cdir / "quarantine").iterdir())) == 3
    assert tables(tmp_path / "healed") == tables(tmp_path / "cold")
    copied = sorted(cdir.glob("finetune/*.npz"))                          # an entry copied over another
    copied[1].write_bytes(copied[0].read_bytes())
    p = command("arithmetic", *args, f"out_dir={tmp_path / 'again'}", f"cache.dir={cdir}")
    assert p.returncode == 0 and "fields differ" in p.stderr, p.stderr[-3000:]
    assert tables(tmp_path / "again") == tables(tmp_path / "cold")


def test_sigkill_mid_sweep_then_resume_finishes_without_redoing_work(tmp_path, command):
    """The killed run in a process of its own; the resumed run and the uninterrupted reference through the command's
    function in this one."""
    out, cdir = tmp_path / "out", tmp_path / "cache"
    args = [*TINY, "sweep.alphas=[-0.8,-0.4,0.0,0.4,0.8,1.0]", "sweep.lam_step=0.1", "sweep.n_test=2000",
            f"out_dir={out}", f"cache.dir={cdir}"]
    p = run("arithmetic.py", *args, cwd=tmp_path, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((cdir / "pair_eval").glob("*.npz"))) < 4:
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done = len(list((cdir / "pair_eval").glob("*.npz")))
    assert 4 <= done < 12, "the kill should land mid-sweep"
    assert not out.exists()                                         # nothing half-written in the results
    p = command("arithmetic", *args)
    err = p.stderr
    assert p.returncode == 0, err
    reused = int(err.split("cache: ")[1].split(" entries reused")[0])
    assert reused >= done + 2 + 2                                   # finished cells, Psi_0 and T1 fine-tunes
    rows = pd.read_csv(out / "metrics.csv")
    assert len(rows) == 6 * 2 * 31 * 2 and not rows.duplicated(["alpha", "seed", "lam", "task"]).any()
    assert not list(cdir.rglob("*.tmp")) and not list(tmp_path.glob(".*staging*"))
    assert command("arithmetic", *args[:-2], f"out_dir={tmp_path / 'ref'}", "cache.dir=null").returncode == 0
    assert (tmp_path / "ref" / "metrics.csv").read_bytes() == (out / "metrics.csv").read_bytes()


def test_divergence_is_caught_in_every_quantity(tmp_path, command):
    """Finding 2: step size 1e30 used to leave a seed with infinite norms marked valid; now every seed is caught (exit
    3, nothing written); in Colored-Digits too. Through the command's function in this process."""
    line = one_line_error(command("arithmetic", *TINY, "n_seeds=4", "train.eta=1e30", f"out_dir={tmp_path / 'a'}",
                                  "cache.dir=null"), code=3)
    assert "diverged" in line and "Nothing was written" in line and not (tmp_path / "a").exists()
    dig = ["n_seeds=2", "pretrain.steps=5", "map_steps=[0,5]", "finetune.steps=5", "lam_step=1.0",
           "ood_ranges=[[-1,2,1],[-1,1,1]]", "cache.dir=null"]
    line = one_line_error(command("digits", *dig, "setting.finetune_lr=1e30", f"out_dir={tmp_path / 'd'}"), code=3)
    assert "diverged" in line and not (tmp_path / "d").exists()


def test_a_run_derives_its_verdicts_from_the_tables_as_written(tmp_path):
    """analyse sees the numbers the CSVs give back (6 significant digits), so a run's claims are exactly what
    ``python -m tvtheory.claims`` recomputes from its folder."""
    import types

    from tvtheory import claims as rules, config as C, runner

    seen = {}
    exp = types.ModuleType("tvtheory.experiments.fake")
    exp.TABLES = ("metrics",)
    exp.run = lambda cfg, ctx: {"metrics": pd.DataFrame({"x": [0.123456789, 1 / 3], "seed": [0, 1]})}
    exp.analyse = lambda tables, cfg: seen.setdefault(len(seen), {"_x": tables["metrics"]["x"].tolist()})
    exp.claims = lambda a, cfg: [rules.Claim("fake.x", "x is written", "x > 0", str(a["_x"]), "pass", 2, "")]
    exp.plot = lambda tables, a, cfg, out: None
    runner.execute(exp, C.Run(), tmp_path / "run", raw_config={})
    assert seen[0]["_x"] == [0.123457, 0.333333]


@pytest.mark.parametrize("damage", ["config", "provenance", "table", "experiment", "cell", "blank", "column",
                                    "header", "cell, no kinds recorded", "kinds"])
def test_claims_and_plots_on_a_damaged_folder_say_which_file_in_one_line_and_change_nothing(tmp_path, damage,
                                                                                              capfd, caplog):
    """A damaged cell (text, or a blank, in the True/False column ``diverged``) used to turn every verdict
    inconclusive without a word, a header short of a name shifted every column, and a renamed column was a KeyError
    naming the folder only. A folder whose provenance.json records no column kinds gets the generic check. A damaged
    cell goes through both commands as processes of their own, the other damages through the commands' functions in
    this process (``in_process``: the same exit status and stderr, a warning or logged record counted as a line)."""
    folder = tmp_path / "ood"
    shutil.copytree(ROOT / "results" / "ood", folder)
    table = folder / "metrics.csv"
    if damage in ("cell", "blank", "column", "header", "cell, no kinds recorded"):
        lines = table.read_text().splitlines(keepends=True)
        assert lines[0] == "seed,lam1,lam2,loss,acc,val_loss,val_acc,diverged\n" and lines[2].endswith(",False\n")
        if damage.startswith("cell") or damage == "blank":
            lines[2] = lines[2][:-len("False\n")] + ("\n" if damage == "blank" else "abc\n")
        else:
            lines[0] = lines[0].replace(",loss,", ",lost,") if damage == "column" else lines[0].replace(",diverged", "")
        table.write_text("".join(lines))
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["tables"]["metrics"]["diverged"] == "bool"
        if damage.endswith("no kinds recorded"):
            del prov["tables"]
            (folder / "provenance.json").write_text(json.dumps(prov))
    elif damage == "kinds":
        prov = json.loads((folder / "provenance.json").read_text())
        prov["tables"]["metrics"]["diverged"] = "string"
        (folder / "provenance.json").write_text(json.dumps(prov))
    elif damage == "config":
        (folder / "config.yaml").write_text("n_seeds: [unclosed\n")
    elif damage == "provenance":
        (folder / "provenance.json").write_text("{not json")
    elif damage == "table":
        (folder / "metrics.csv").unlink()
    else:
        (folder / "provenance.json").write_text(json.dumps({"experiment": "nope"}))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for module in ("tvtheory.claims", "tvtheory.plots"):
        if damage == "cell":
            p = subprocess.run([sys.executable, "-m", module, str(folder)], capture_output=True, text=True,
                               timeout=300)
            code, err = p.returncode, p.stderr
        else:
            code, err = in_process(module, folder, capfd, caplog)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: folder="), err[-2000:]
        assert {"config": "config.yaml", "provenance": "provenance.json", "table": "metrics.csv",
                "experiment": "nope", "cell": "metrics.csv: column 'diverged', line 3: 'abc': the run wrote True/False",
                "blank": "metrics.csv: column 'diverged', line 3: an empty or NaN cell: the run wrote True/False",
                "column": "metrics.csv: no column 'loss'; unexpected column 'lost'",
                "header": "metrics.csv: every row has more fields than the header",
                "cell, no kinds recorded": "metrics.csv: column 'diverged', line 3: 'abc' where the column's other "
                                           "values are True/False",
                "kinds": "provenance.json: tables.metrics.diverged: 'string', not one of bool, int, float, label, text",
                }[damage] in lines[0]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def in_process(module: str, folder: Path, capfd, caplog) -> tuple[int, str]:
    """``python -m MODULE FOLDER`` (the claims or plots command) through its function in this process: the exit
    status and what it wrote to stderr, with a line for each warning and each record logged at WARNING or above
    (which pytest would otherwise catch before they reach stderr, as a process of its own would print them)."""
    import logging
    import warnings

    from tvtheory import plots, runner

    capfd.readouterr()
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        try:
            runner.claims_main([str(folder)]) if module == "tvtheory.claims" else plots.main(str(folder))
            code = 0
        except SystemExit as e:
            code = e.code
    extra = [f"warning: {w.message}" for w in caught] + [r.getMessage() for r in caplog.records]
    return code, capfd.readouterr().err + "".join(f"\n{line}" for line in extra)


def test_a_failing_recompute_leaves_every_file_as_it_was(tmp_path):
    """A table that loads but breaks the analysis (a header-only table): no derived file is rewritten."""
    folder = tmp_path / "ood"
    shutil.copytree(ROOT / "results" / "ood", folder)
    (folder / "reference.csv").write_text("seed,model\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    p = subprocess.run([sys.executable, "-m", "tvtheory.claims", str(folder)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: folder="), p.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_result_folder_inside_another_is_refused(tmp_path):
    run_dir = tmp_path / "arith"
    run_dir.mkdir()
    (run_dir / "provenance.json").write_text(json.dumps({"experiment": "arithmetic"}))
    p = run("ood.py", f"out_dir={run_dir / 'sub'}", cwd=tmp_path)
    assert "lies inside the result folder" in one_line_error(p)
    assert sorted(x.name for x in run_dir.iterdir()) == ["provenance.json"]


def test_the_folder_commands_and_the_digits_search_refuse_bad_arguments_in_one_line(tmp_path):
    """claims and plots take one folder (extra arguments used to be a traceback, or ignored); the digits search
    checks --out before computing (a file there used to be a traceback after the search)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cmds = {("-m", "tvtheory.claims", "a", "b"): "python -m tvtheory.claims: error: unrecognized arguments: b",
            ("-m", "tvtheory.plots", "a", "b"): "python -m tvtheory.plots: error: unrecognized arguments: b",
            (str(ROOT / "experiments" / "digits_search.py"), "--quick", "--out", str(a_file / "sub")):
                f"error: --out='{a_file / 'sub'}': {a_file} is a file, so the folder cannot be created"}
    procs = {args: subprocess.Popen([sys.executable, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for args in cmds}
    for args, says in cmds.items():
        line = one_line_error(procs[args])
        assert line.endswith(says), (args, line)
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_threads_beyond_the_cpus_are_refused_unless_the_cpus_are_already_chosen(monkeypatch, caplog):
    """A first job asks for what the process may run on; a later job of a worker already kept on its first job's
    CPUs keeps them (it is not refused for asking more than those), and a lane's CPUS variable overrides threads."""
    from tvtheory import runner

    monkeypatch.delenv(runner.CPUS, raising=False)
    monkeypatch.setattr(runner, "_pinned", False)
    runner.check_threads(None, available=1)
    runner.check_threads(2, available=2)
    with pytest.raises(ValueError, match=r"^threads=3: this process may run on 2 CPUs; ask for at most that many"):
        runner.check_threads(3, available=2)
    monkeypatch.setattr(runner, "_pinned", True)
    runner.check_threads(3, available=1)
    import logging

    from tvtheory import config as C

    kept = len(os.sched_getaffinity(0))
    with caplog.at_level(logging.WARNING, logger=runner.log.name):
        runner.environment(C.Run(threads=kept + 1, cache=C.Cache(dir=None)))   # a later job: kept, and said
    assert f"threads={kept + 1}: this process keeps its first job's {kept} CPU(s)" in caplog.text
    assert len(os.sched_getaffinity(0)) == kept
    monkeypatch.setattr(runner, "_pinned", False)
    monkeypatch.setenv(runner.CPUS, "0")
    runner.check_threads(3, available=1)


def test_a_blank_folder_field_loads_from_an_old_folder_but_no_run_starts_with_it(tmp_path):
    """A blank out_dir or cache.dir is refused when a run starts, by preflight and by runner.execute itself; a folder
    written while it meant null still loads."""
    from tvtheory import runner

    folder = tmp_path / "ood"
    shutil.copytree(ROOT / "results" / "ood", folder, ignore=shutil.ignore_patterns("*.png", "*.pdf"))
    text = (folder / "config.yaml").read_text()
    assert "  dir: .cache/tvtheory\n" in text
    (folder / "config.yaml").write_text(text.replace("  dir: .cache/tvtheory\n", "  dir: ''\n"))
    exp, cfg, _ = runner.load(folder)
    assert cfg.cache.dir == ""
    # run again from Python, without preflight: refused before any compute, nothing written
    with pytest.raises(ValueError, match=r"^cache.dir='': must be a folder path, or null for no cache"):
        runner.execute(exp, cfg, tmp_path / "again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ood"]


def test_execute_refuses_a_cache_its_finished_run_would_delete(tmp_path):
    """A cache inside the result folder, or inside another result folder, is refused by runner.execute itself too,
    for a caller from Python that skipped preflight: the finished run (or that folder's rerun) replaces the folder
    whole, cache and all. Before any compute, nothing written."""
    import dataclasses
    import types

    from tvtheory import config as C, runner

    exp = types.ModuleType("tvtheory.experiments.fake")
    exp.TABLES = ("metrics",)
    exp.run = lambda cfg, ctx: pytest.fail("computed: the cache was not refused before the run")
    cfg, out = C.Run(), tmp_path / "run"
    inside = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, dir=str(out / "cache")))
    with pytest.raises(ValueError, match=r"^cache.dir=.*: inside out_dir="):
        runner.execute(exp, inside, out)
    shutil.copytree(ROOT / "results" / "ood", tmp_path / "old", ignore=shutil.ignore_patterns("*.png", "*.pdf"))
    other = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, dir=str(tmp_path / "old" / "cache")))
    with pytest.raises(ValueError, match=r"^cache.dir=.*: inside the result folder "):
        runner.execute(exp, other, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_a_true_false_field_takes_true_or_false_only():
    from omegaconf import OmegaConf

    from tvtheory import cli

    cfg = OmegaConf.create({"figures": True, "cache": {"refresh": False}, "n_seeds": 2})
    for ok in (["figures=true"], ["figures=False"], ["n_seeds=3"], ["figures=${cache.refresh}"], ["figures=true,2"],
               ["~figures"], ["hydra.job.chdir=false"], ['figures="true"'], ["n_seeds=${nosuch}"]):
        cli.check_booleans(cfg, ok)                   # a sweep's values are checked job by job
    for bad, says in ((["figures=0"], "figures=0"), (["cache.refresh=1.0"], "cache.refresh=1.0"),
                      (["n_seeds=3", "figures=on"], "figures=on"),
                      (["figures=${n_seeds}"], "figures=${n_seeds}: must be true or false (it gives 2)"),
                      (["cache.refresh=${n_seeds}"], "cache.refresh=${n_seeds}: must be true or false (it gives 2)")):
        says = says if "(it gives" in says else f"{says}: must be true or false"
        with pytest.raises(ValueError, match=f"^{re.escape(says)}$"):
            cli.check_booleans(cfg, bad)
