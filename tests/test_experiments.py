"""The experiments end to end at tiny size, through the real command line, in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["sweep=tiny", "train=tiny", "n_seeds=2", "data.d=8", "model.m=32"]


def run(script, *overrides, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, str(ROOT / "experiments" / script), *overrides], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def arithmetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("arith")
    p = run("arithmetic.py", *TINY, "sweep.phase_alphas=[-0.5,0.0,0.5,1.0]", f"out_dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_arithmetic_writes_table_claims_and_figures(arithmetic_run):
    out = arithmetic_run
    df = pd.read_csv(out / "metrics.csv")
    assert {"alpha", "seed", "lam", "task", "loss", "acc", "diverged", "d", "m"} <= set(df.columns)
    assert len(df) == 3 * 2 * 7 * 2                        # alphas x seeds x lambdas x tasks
    assert set(df["task"]) == {"T1", "T2"}
    records = json.loads((out / "claims.json").read_text())
    assert {r["id"] for r in records} >= {"thm1.irrelevant", "thm1.aligned", "thm1.contradictory_fails",
                                          "thm1.threshold_curve", "thm2.irrelevant", "thm2.contradictory",
                                          "thm2.aligned_fails"}
    assert all(r["verdict"] in ("pass", "fail") for r in records)
    phase = pd.read_csv(out / "phase.csv")
    assert sorted(phase["alpha"].unique()) == [-0.5, 0.0, 0.5, 1.0]
    for name in ("figure1", "phase", "lambda_star"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert {"git", "packages", "device", "seeds", "started", "finished", "config"} <= set(prov)
    assert (out / "table1.md").read_text().count("|") > 20
    assert not list(out.glob(".*.tmp"))                    # atomic writes leave no temporaries


def test_figures_redraw_from_files_alone(arithmetic_run, tmp_path):
    import shutil
    dst = tmp_path / "arithmetic"
    shutil.copytree(arithmetic_run, dst)
    for f in dst.glob("*.png"):
        f.unlink()
    p = subprocess.run([sys.executable, "-m", "tvtheory.plots", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (dst / "figure1.png").exists() and (dst / "phase.png").exists()


def test_claims_are_collected_into_one_report(arithmetic_run, tmp_path):
    import shutil
    shutil.copytree(arithmetic_run, tmp_path / "arithmetic")
    from tvtheory import results
    records = results.collect_claims(tmp_path)
    assert len(records) == 7
    md = (tmp_path / "CLAIMS.md").read_text()
    assert "thm2.aligned_fails" in md and "| id | verdict |" in md


def test_assumptions_compare_model_options_against_the_reference(tmp_path):
    """The reference (merged, random Psi_0) gives the arithmetic experiment's numbers from its cache; the others not."""
    cache = f"cache.dir={tmp_path / 'cache'}"
    tiny = [o for o in TINY if not o.startswith("model.")]
    assert run("arithmetic.py", *tiny, "model.m=256", f"out_dir={tmp_path / 'arith'}", cache).returncode == 0
    p = run("assumptions.py", *tiny, f"out_dir={tmp_path / 'as'}", cache)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "cache: 16 entries reused" in p.stderr    # the reference's 2 Psi_0, 2 + 6 fine-tunes, 6 evaluated cells
    out = tmp_path / "as"
    df = pd.read_csv(out / "metrics.csv")
    assert list(dict.fromkeys(df["model"])) == ["merged", "pretrained", "four"]
    keys = ["alpha", "seed", "lam", "task"]
    arith = pd.read_csv(tmp_path / "arith" / "metrics.csv")[keys + ["loss", "acc"]]
    ref = df[df["model"] == "merged"][keys + ["loss", "acc"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(ref, arith)
    for other in ("pretrained", "four"):
        assert not np.array_equal(df[df["model"] == other]["loss"], ref["loss"])
    psi0 = pd.read_csv(out / "psi0.csv").groupby("model").mean(numeric_only=True)
    assert psi0.loc["merged", "W0_norm"] == 0 and psi0.loc["pretrained", "W0_norm"] > 0
    assert psi0.loc["pretrained", "pretrain_loss"] < psi0.loc["merged", "pretrain_loss"]
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert verdicts["reference"] == "merged" and verdicts["models"]["four"]["config"]["form"] == "four"
    ids = [[r["id"] for r in v["claims"]] for v in verdicts["models"].values()]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 7
    md = (out / "verdicts.md").read_text()
    assert "Verdicts that `four` changes against `merged`:" in md and "| `thm2.aligned_fails` |" in md
    assert not (out / "claims.json").exists()             # a robustness check, not one of the paper's claims
    assert (out / "figure1.png").exists()


@pytest.mark.parametrize("override, message", [
    ("data.n_rel=1", "data.n_rel=1"),
    ("sweep.alphas=[2.0]", "sweep.alphas[0]=2.0"),
    ("train.eta=-1", "train.eta=-1.0"),
])
def test_bad_override_stops_before_compute_with_one_line(tmp_path, override, message):
    out = tmp_path / "never"
    p = run("arithmetic.py", *TINY, override, f"out_dir={out}")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("config error: ") and message in p.stderr
    assert not out.exists()


def test_ood_runs_end_to_end_with_three_sources(tmp_path):
    p = run("ood.py", "train=tiny", "n_seeds=2", "data.d=8", "model.m=32", "ood.n_test=100",
            "ood.gammas=[0.6,-0.5,0.3]", "ood.ranges=[[-1,2,1],[-1,1,1],[0,1,1]]", f"out_dir={tmp_path}",
            f"cache.dir={tmp_path / 'cache'}")
    assert p.returncode == 0, p.stderr[-3000:]
    df = pd.read_csv(tmp_path / "metrics.csv")
    assert {"seed", "lam1", "lam2", "lam3", "loss", "acc"} <= set(df.columns) and len(df) == 2 * 4 * 3 * 2
    assert {r["id"] for r in json.loads((tmp_path / "claims.json").read_text())} == {"thm3.region",
                                                                                      "thm3.beats_single"}
    assert "best searched" in (tmp_path / "table2.md").read_text()


def test_corollaries_and_scaling_run_end_to_end(tmp_path):
    cache = f"cache.dir={tmp_path / 'cache'}"
    p = run("corollaries.py", "train=tiny", "sweep=tiny", "n_seeds=2", "data.d=8", "model.m=32",
            "ood.ranges=[[-1,2,1],[-1,1,1]]", "ood.n_test=100", "corollaries.n_test=100",
            "corollaries.prune=[0.5]", "corollaries.ranks=[1]",
            f"out_dir={tmp_path / 'cor'}", cache)
    assert p.returncode == 0, p.stderr[-3000:]
    ids = {r["id"] for r in json.loads((tmp_path / "cor" / "claims.json").read_text())}
    assert ids == {"cor1.rank1_thm1", "cor1.rank1_thm2", "cor1.rank1_thm3", "cor2.pruning_keeps", "cor2.two_groups"}
    lr = pd.read_csv(tmp_path / "cor" / "lowrank.csv")
    assert lr[lr["full_rank"]]["rel_err"].max() < 1e-5
    p = run("scaling.py", "train=tiny", "n_seeds=2", "model.m=16", "scaling.ds=[6,8]", "scaling.ms=[16]",
            "scaling.n_rels=[2,4]", "scaling.conv_steps=60", "scaling.n_test=50", f"out_dir={tmp_path / 'sc'}", cache)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "sc" / "beta.csv")) == 2
    assert (tmp_path / "sc" / "scaling.png").exists()


@pytest.fixture(scope="module")
def shared_xla_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("xla")


@pytest.mark.parametrize("launcher", [["hydra/launcher=local", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=slurm_local"]], ids=["joblib", "submitit_local"])
def test_multirun_through_a_real_launcher_then_gather(tmp_path, launcher, shared_xla_cache):
    """Two jobs in parallel local processes, one XLA thread each, through joblib/loky or through submitit's Slurm code
    path (each job unpickled in a fresh interpreter); their rows gather into one table. Each launcher computes every
    cell itself; only the compiled programs are shared between the two."""
    p = run("arithmetic.py", "-m", *launcher, "threads=1", "sweep=tiny", "train=tiny", "n_seeds=2", "model.m=16",
            "data.d=6,8", f"hydra.sweep.dir={tmp_path / 'mr'}", f"cache.dir={tmp_path / 'cache'}",
            env={**os.environ, "JAX_COMPILATION_CACHE_DIR": str(shared_xla_cache)})
    assert p.returncode == 0, p.stderr[-3000:]
    from tvtheory import report
    rows = report.gather(tmp_path / "mr")
    assert sorted(rows["d"].unique()) == [6, 8] and rows["job"].nunique() == 2
    assert len(rows) == 2 * 3 * 2 * 7 * 2
