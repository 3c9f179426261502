"""The experiments end to end at tiny size through the command line (arithmetic in a process of its own, the others
through the command's function in the test process); their verdicts and figures recomputed from their files alone by
the claims and plots commands; multiruns through real launchers, gathered into one table."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tvtheory import experiments, plots, results, runner

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TINY = ["sweep=tiny", "train=tiny", "n_seeds=2", "data.d=8", "model.m=32"]


def run(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=env)


@pytest.fixture(scope="module")
def arithmetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("arith") / "arithmetic"
    p = run("tvtheory", "arithmetic", *TINY, "sweep.phase_alphas=[-0.5,0.0,0.5,1.0]", f"out_dir={out}",
            f"cache.dir={out.parent / 'cache'}", cwd=out.parent)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_arithmetic_writes_tables_claims_figures_and_a_summary(arithmetic_run):
    out = arithmetic_run
    df = pd.read_csv(out / "metrics.csv")
    assert {"alpha", "seed", "lam", "task", "loss", "acc", "diverged", "d", "m"} <= set(df.columns)
    assert len(df) == 3 * 2 * 7 * 2                        # alphas x seeds x lambdas x tasks
    curves = pd.read_csv(out / "curves.csv")                # the training curves are written
    assert len(curves) == 4 * 2 * 2 * 6 and curves["loss"].notna().all()
    records = json.loads((out / "claims.json").read_text())
    assert [r["id"] for r in records] == ["thm1.irrelevant", "thm1.aligned", "thm1.contradictory_fails",
                                          "thm1.threshold_curve", "thm2.irrelevant", "thm2.contradictory",
                                          "thm2.aligned_fails"]
    assert all(r["verdict"] == "inconclusive" and "smoke run" in r["details"] for r in records)
    assert sorted(pd.read_csv(out / "phase.csv")["alpha"].unique()) == [-0.5, 0.0, 0.5, 1.0]
    for name in ("figure1", "phase", "lambda_star"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert {"experiment", "git", "packages", "device", "seeds", "started", "finished", "config", "cache",
            "machine", "tvtheory_native"} <= set(prov)
    assert prov["machine"] == results.machine()              # the CPU that rounded these numbers
    assert (out / "table1.md").read_text().count("|") > 20
    assert not list(out.glob(".*.tmp"))                    # atomic writes leave no temporaries


def test_claims_and_figures_are_recomputed_from_the_files_alone(arithmetic_run, tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(arithmetic_run, root / "arithmetic")
    for f in [*(root / "arithmetic").glob("*.png"), root / "arithmetic" / "claims.json",
              root / "arithmetic" / "summary.csv"]:
        f.unlink()
    p = run("tvtheory.claims", str(root))
    assert p.returncode == 0, p.stderr
    assert (root / "arithmetic" / "claims.json").exists() and (root / "arithmetic" / "summary.csv").exists()
    merged = json.loads((root / "claims.json").read_text())
    assert len(merged) == 7 and "| id | verdict |" in (root / "CLAIMS.md").read_text()
    before = json.loads((arithmetic_run / "claims.json").read_text())
    assert [(r["id"], r["verdict"], r["measured"]) for r in merged] == sorted(
        (r["id"], r["verdict"], r["measured"]) for r in before)
    p = run("tvtheory.plots", str(root))                     # the command on the results root
    assert p.returncode == 0 and "redrew" in p.stdout, p.stderr
    assert (root / "arithmetic" / "figure1.png").exists()
    (root / "arithmetic" / "figure1.png").unlink()
    plots.main(str(root / "arithmetic"))                     # its function, on one run's folder
    assert f"redrew {root / 'arithmetic'}" in capsys.readouterr().out
    assert (root / "arithmetic" / "figure1.png").exists()
    with pytest.raises(SystemExit) as e:
        plots.main(str(tmp_path / "nothing"))
    assert e.value.code == 2 and "no result folder" in capsys.readouterr().err


@pytest.mark.parametrize("name, args", [
    ("ood", ["train=tiny", "n_seeds=2", "data.d=8", "model.m=32", "ood.n_test=100", "ood.n_val=50",
             "ood.gammas=[0.6,-0.5,0.3]", "ood.ranges=[[-1,2,1],[-1,1,1],[0,1,1]]"]),
    ("corollaries", [*TINY, "ood.ranges=[[-1,2,1],[-1,1,1]]", "ood.n_test=100", "ood.n_val=50",
                     "corollaries.n_test=100", "corollaries.prune=[0.5]", "corollaries.ranks=[1]"]),
    ("scaling", ["train=tiny", "n_seeds=2", "model.m=16", "scaling.ds=[6,8,10]", "scaling.ms=[16]",
                 "scaling.n_rels=[2,4]", "scaling.conv_steps=60", "scaling.n_test=50"]),
    ("assumptions", [*TINY[:-1], "sweep.alphas=[0.0]", "models=[merged,four]"]),
])
@pytest.mark.filterwarnings("error::UserWarning")         # e.g. an empty legend in a figure of a tiny run
def test_every_experiment_runs_end_to_end_and_its_claims_recompute(name, args, tmp_path, command):
    out = tmp_path / name
    p = command(name, *args, f"out_dir={out}", f"cache.dir={tmp_path / 'cache'}")
    assert p.returncode == 0, p.stderr[-3000:]
    exp = experiments.get(name)
    for t in exp.TABLES:
        assert len(pd.read_csv(out / f"{t}.csv")), t
    assert results.owner(out) == name and (out / "config.yaml").exists()
    figures = list(out.glob("*.png"))                     # ood's heatmaps are for two source tasks; here three
    assert (not figures if name == "ood" else figures) and len(figures) == len(list(out.glob("*.pdf")))
    claims = out / "claims.json"
    if claims.exists():
        before = json.loads(claims.read_text())
        assert before and all(r["verdict"] == "inconclusive" for r in before)      # tiny: nothing is decided
        assert all(Path(r["source"]).name.endswith(".csv") for r in before)
        claims.unlink()
        assert [r["id"] for r in runner.recompute(out)] == [r["id"] for r in before]   # the claims command's function
        assert [r["id"] for r in json.loads(claims.read_text())] == [r["id"] for r in before]
    if name == "ood":
        df = pd.read_csv(out / "metrics.csv")
        assert {"lam1", "lam2", "lam3", "val_loss", "val_acc"} <= set(df.columns) and len(df) == 2 * 4 * 3 * 2
    if name == "assumptions":
        md = (out / "verdicts.md").read_text()
        assert "Verdicts that `four` changes against `merged`:" in md
        verdicts = json.loads((out / "verdicts.json").read_text())
        assert verdicts["reference"] == "merged" and verdicts["models"]["four"]["config"]["form"] == "four"


@pytest.mark.parametrize("launcher, redraw", [(["hydra/launcher=local", "hydra.launcher.n_jobs=2"], False),
                                              (["hydra/launcher=slurm_local"], True)], ids=["joblib", "submitit_local"])
def test_multirun_through_a_real_launcher_then_gather_and_redraw(tmp_path, launcher, redraw, capsys):
    """Two jobs through joblib/loky or submitit's Slurm code path (each job in a fresh interpreter), one XLA thread
    each; their rows gather into one table carrying every job's config; the jobs draw no figures (figures=false) and
    ``tvtheory.plots`` draws them from the multirun folder's tables. It does so once, in submitit's folder, whose
    .submitit folder of job records lies beside the jobs' folders (the drawing does not depend on the launcher)."""
    p = subprocess.run([sys.executable, str(ROOT / "experiments" / "arithmetic.py"), "-m", *launcher, "threads=1",
                        "figures=false", *TINY[:-2], "model.m=16", "data.d=6,8", f"hydra.sweep.dir={tmp_path / 'mr'}",
                        f"cache.dir={tmp_path / 'cache'}"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = results.gather(tmp_path / "mr")
    assert sorted(rows["d"].unique()) == [6, 8] and rows["job"].nunique() == 2
    assert len(rows) == 2 * 3 * 2 * 7 * 2
    assert {"cfg.train.steps", "cfg.model.m", "cfg.n_seeds", "overrides"} <= set(rows.columns)
    assert set(rows["cfg.data.d"]) == {6, 8} and rows["overrides"].str.contains("data.d=").all()
    logs = list((tmp_path / "mr").rglob("*.log"))
    assert logs and any("[arithmetic#" in f.read_text() for f in logs)          # job-tagged lines in Hydra's logs
    assert not list((tmp_path / "mr").rglob("*.png"))
    if redraw:
        assert (tmp_path / "mr" / ".submitit").is_dir()
        plots.main(str(tmp_path / "mr"))                      # what `python -m tvtheory.plots` runs
        assert capsys.readouterr().out.count("redrew") == 2
        assert len(list((tmp_path / "mr").rglob("figure1.png"))) == 2
