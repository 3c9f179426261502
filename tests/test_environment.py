"""The pinned environment: pyproject.toml's ranges, requirements.lock's pins and what `make` installed agree."""

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins(text: str) -> dict[str, str]:
    """name -> version of a lock file's ``name==version`` lines (each name once)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert canonicalize_name(name) not in out, f"{name} pinned twice"
            out[canonicalize_name(name)] = version.strip()
    return out


def out_of_range(project: dict, lock: dict[str, str]) -> list[str]:
    """The requirements of the project's dependencies and extras (but ``bench``: torch, installed by ``make bench``
    itself) that the lock leaves unpinned or pins outside their range."""
    extras = project.get("optional-dependencies", {})
    wanted = [*project["dependencies"], *(r for name, rs in extras.items() if name != "bench" for r in rs)]
    bad = []
    for text in wanted:
        req = Requirement(text)
        pin = lock.get(canonicalize_name(req.name))
        if pin is None or not req.specifier.contains(pin, prereleases=True):
            bad.append(f"{req}: lock has {pin}")
    return bad


def test_the_lock_pins_every_requirement_inside_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = pins((ROOT / "requirements.lock").read_text())
    assert out_of_range(project, lock) == []
    # the rule flips: a pin outside its range, or missing, is named
    assert out_of_range(project, {**lock, "jax": "0.9.0"}) == [f"{Requirement('jax>=0.10.2,<0.11')}: lock has 0.9.0"]
    assert out_of_range(project, {k: v for k, v in lock.items() if k != "uv"}) == ["uv<1,>=0.9: lock has None"]
    with pytest.raises(AssertionError, match="pinned twice"):
        pins("uv==0.13.9\nUV==0.13.8\n")


def test_make_bench_installs_the_torch_of_the_bench_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch,) = project["optional-dependencies"]["bench"]
    assert f" {torch}" in (ROOT / "Makefile").read_text()


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="not the project's .venv")
def test_the_venv_holds_the_locks_versions():
    """What uv (or pip, where uv cannot) installed is the lock, package by package."""
    lock = pins((ROOT / "requirements.lock").read_text())
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    assert {name: installed.get(name) for name in lock if installed.get(name) != lock[name]} == {}
