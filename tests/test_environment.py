"""The pinned environment: pyproject.toml's ranges, requirements.lock's pins and what `make` installed agree."""

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(text: str) -> dict[str, str]:
    """name -> version of a lock file's lines, each ``name==version`` and each name once."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==" and not req.marker and not req.extras, \
                f"{line!r}: not name==version"
            name = canonicalize_name(req.name)
            assert name not in out, f"{req.name} pinned twice"
            out[name] = specs[0].version
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


def bench_torch(makefile: str) -> str | None:
    """The torch requirement the recipe of ``make bench`` installs."""
    recipe = re.search(r"^bench: .*\n((?:\t.*\n)+)", makefile, re.M)
    found = recipe and re.search(r"\s(torch==\S+)", recipe.group(1))
    return found.group(1) if found else None


def mismatches(lock: dict[str, str], version_of) -> dict[str, str | None]:
    """The lock's packages installed at another version (or not at all: None), by ``version_of(name)``."""
    def installed(name):
        try:
            return version_of(name)
        except metadata.PackageNotFoundError:
            return None
    return {name: v for name in lock if (v := installed(name)) != lock[name]}


def test_the_lock_pins_every_requirement_inside_its_range():
    lock = pins((ROOT / "requirements.lock").read_text())
    assert out_of_range(PROJECT, lock) == []
    # the rule flips: a pin outside its range, or missing, is named
    jax = Requirement(next(r for r in PROJECT["dependencies"] if Requirement(r).name == "jax"))
    assert out_of_range(PROJECT, {**lock, "jax": "0.1.0"}) == [f"{jax}: lock has 0.1.0"]
    uv = Requirement(*PROJECT["optional-dependencies"]["install"])
    assert out_of_range(PROJECT, {k: v for k, v in lock.items() if k != "uv"}) == [f"{uv}: lock has None"]
    with pytest.raises(AssertionError, match="pinned twice"):
        pins("uv==0.13.9\nUV==0.13.8\n")
    for line in ("uv>=0.13", "uv>=0.13,<1"):
        with pytest.raises(AssertionError, match="not name==version"):
            pins(line + "\n")


def test_make_bench_installs_the_torch_of_the_bench_extra():
    makefile = (ROOT / "Makefile").read_text()
    assert bench_torch(makefile) == PROJECT["optional-dependencies"]["bench"][0]
    assert bench_torch(makefile.replace("torch==2.13.0", "torch==2.12.0")) == "torch==2.12.0"
    assert bench_torch("bench: x\n\t$(PY) bench/run.py\n# torch==2.13.0\n") is None      # a comment is no recipe


def test_a_venv_off_the_lock_is_named():
    lock = {"jax": "0.10.2", "uv": "0.13.9"}
    assert mismatches(lock, {"jax": "0.10.2", "uv": "0.13.9"}.__getitem__) == {}

    def only_jax(name):
        if name != "jax":
            raise metadata.PackageNotFoundError(name)
        return "0.10.1"
    assert mismatches(lock, only_jax) == {"jax": "0.10.1", "uv": None}


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="not the project's .venv")
def test_the_venv_holds_the_locks_versions():
    """What uv (or pip, where uv cannot) installed is the lock, package by package (as importing finds them)."""
    assert mismatches(pins((ROOT / "requirements.lock").read_text()), metadata.version) == {}
