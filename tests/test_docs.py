"""The docs' worked example: a new experiment in three files, copied from docs/design.md into a scratch copy of the
repository, runs end to end and is found by every command that iterates the registry."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def example_files() -> dict[str, str]:
    """The code blocks of docs/design.md's worked example, keyed by the file name written just before each."""
    text = (ROOT / "docs" / "design.md").read_text().split("## Adding an experiment", 1)[1]
    text = text.split("## Adding a claim")[0]
    blocks = re.findall(r"`([\w/]+\.(?:py|yaml))`[^\n]*\n\n```\w+\n(.*?)```", text, flags=re.S)
    return dict(blocks)


def test_the_worked_example_adds_an_experiment_in_three_files_and_it_runs(tmp_path):
    files = example_files()
    assert sorted(files) == ["conf/toy.yaml", "experiments/toy.py", "tvtheory/experiments/toy.py"]
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "tvtheory", repo / "tvtheory", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "conf", repo / "tvtheory" / "conf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "experiments", repo / "experiments")
    for name, body in files.items():
        dest = repo / name.replace("conf/", "tvtheory/conf/")
        dest.write_text(body)
    env = {"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),     # the suite's XLA settings
           **{k: v for k, v in os.environ.items() if k.startswith(("JAX_", "XLA_"))}}
    out = tmp_path / "results" / "toy"
    p = subprocess.run([sys.executable, str(repo / "experiments" / "toy.py"), "train=tiny", "data.d=8", "model.m=32",
                        f"out_dir={out}", "cache.dir=null"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    records = json.loads((out / "claims.json").read_text())
    assert [r["id"] for r in records] == ["toy.alpha_hat_tracks_alpha"] and (out / "toy.png").exists()
    p = subprocess.run([sys.executable, "-m", "tvtheory", "toy", "--help"], cwd=tmp_path, capture_output=True,
                       text=True, env=env)
    assert "alpha_hat must lie within this of alpha" in p.stdout
