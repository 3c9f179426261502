"""Tidy result tables, atomic writes and provenance. The only module that touches the file system.

Every file is written to a temporary name in the same directory and renamed into place, so a reader never sees a
half-written result. Each experiment keeps its claims in ``<out_dir>/claims.json``; ``collect_claims`` merges every
experiment's claims into results/claims.json and results/CLAIMS.md.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGES = ("jax", "jaxlib", "flax", "optax", "hydra-core", "omegaconf", "numpy", "pandas", "matplotlib")


def _host() -> str:
    return re.sub(r"\W", "_", socket.gethostname())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's process
        return True
    return True


def orphans(directory: Path, prefix: str) -> list[Path]:
    """The temporary files and folders ``<prefix><host>-<pid>.<random>[.tmp]`` in ``directory`` whose writer ran on
    this host and no longer runs: a killed writer (SIGKILL skips every cleanup) leaves them behind. Those of a live
    writer, or of another host sharing the directory, are never counted."""
    pattern = re.compile(re.escape(prefix) + r"(\w+)-(\d+)\.\w+(\.tmp)?")
    found = []
    for p in directory.glob(f"{glob.escape(prefix)}*"):
        m = pattern.fullmatch(p.name)
        if m and m.group(1) == _host() and not _alive(int(m.group(2))):
            found.append(p)
    return found


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds. Temporary copies
    of ``path`` left by killed writers are removed first (rewriting an entry is how a killed sweep resumes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in orphans(path.parent, f".{path.name}."):
        p.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def staged(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Write a run's files into a hidden staging folder; move them into ``out_dir`` only when the block succeeds.

    A run that crashes or is killed leaves the previous results in ``out_dir`` untouched and complete; the next run
    into ``out_dir`` removes the stage a killed run left.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    for p in orphans(out.parent, f".{out.name}.staging."):          # the stages of killed runs
        shutil.rmtree(p, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging.{_host()}-{os.getpid()}.", dir=out.parent))
    try:
        yield stage
        out.mkdir(exist_ok=True)
        for f in sorted(stage.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_csv(path, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def git_state(cwd: str | os.PathLike | None = None) -> dict:
    def run(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    try:
        top = run("rev-parse", "--show-toplevel")
        # "dirty" asks whether the code differs from the commit; rewritten result files do not count
        return {"commit": run("rev-parse", "HEAD"),
                "dirty": bool(run("-C", top, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def provenance(config: dict, started: float, seeds: list[int]) -> dict:
    import jax

    versions = {}
    for p in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[p] = metadata.version(p)
    return {
        "git": git_state(Path(__file__).resolve().parent),
        "packages": versions,
        "python": platform.python_version(),
        "device": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "seeds": seeds,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 2),
        "config": config,
    }


def tidy(arrays: dict[str, np.ndarray], axes: dict[str, np.ndarray], **constants) -> pd.DataFrame:
    """Long table from arrays that share the axes ``axes`` (name -> coordinate values), one row per cell."""
    names = list(axes)
    grids = np.meshgrid(*[np.asarray(v) for v in axes.values()], indexing="ij")
    cols = {n: g.ravel() for n, g in zip(names, grids)}
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.shape != grids[0].shape:
            raise ValueError(f"{k} shape={v.shape}: must match the axes {dict(zip(names, grids[0].shape))}")
        cols[k] = v.ravel()
    df = pd.DataFrame(cols)
    for k, v in constants.items():
        df.insert(0, k, v)
    return df


def pair_table(r, alphas, lams, **constants) -> pd.DataFrame:
    """One row per (alpha, seed, lambda, task) of a Theorem 1-2 sweep (sweep.PairSweep): loss, acc, diverged."""
    finite = np.asarray(r.finite)
    diverged = np.broadcast_to(~finite[:, :, None, None], np.shape(r.loss))
    return tidy({"loss": r.loss, "acc": r.acc, "diverged": diverged},
                {"alpha": alphas, "seed": np.arange(finite.shape[1]), "lam": lams, "task": ["T1", "T2"]}, **constants)


def pair_diagnostics(r, alphas, **constants) -> pd.DataFrame:
    """One row per (alpha, seed) of a Theorem 1-2 sweep: alpha_hat, the task vectors' cosine, divergence, each
    fine-tune's loss on its own task and the norms of dW and dV."""
    return tidy({"alpha_hat": r.alpha_hat, "tv_cosine": r.tv_cosine, "diverged": ~np.asarray(r.finite),
                 "own_loss_T1": r.single_loss[..., 0], "own_loss_T2": r.single_loss[..., 1],
                 "dW_T1": r.norms[..., 0, 0], "dV_T1": r.norms[..., 0, 1],
                 "dW_T2": r.norms[..., 1, 0], "dV_T2": r.norms[..., 1, 1]},
                {"alpha": alphas, "seed": np.arange(np.shape(r.finite)[1])}, **constants)


def reference_table(ref_loss_SxR, ref_acc_SxR) -> pd.DataFrame:
    """One row per (seed, reference model) of a Theorem 3 sweep: the direct fine-tune on T', then Psi*_Ti."""
    S, R = np.shape(ref_loss_SxR)
    return tidy({"loss": ref_loss_SxR, "acc": ref_acc_SxR},
                {"seed": np.arange(S), "model": ["direct"] + [f"T{i + 1}" for i in range(R - 1)]})


def grid_table(loss_SxG, acc_SxG, coeffs_GxK, diverged_S) -> pd.DataFrame:
    """One row per (seed, grid point): seed, lam1..lamK, loss, acc, diverged."""
    S, G = np.shape(loss_SxG)
    K = np.shape(coeffs_GxK)[1]
    df = pd.DataFrame({"seed": np.repeat(np.arange(S), G)})
    for k in range(K):
        df[f"lam{k + 1}"] = np.tile(np.asarray(coeffs_GxK)[:, k], S)
    df["loss"], df["acc"] = np.asarray(loss_SxG).ravel(), np.asarray(acc_SxG).ravel()
    df["diverged"] = np.repeat(np.asarray(diverged_S), G)
    return df


# ----------------------------------------------------------------------------------------------------- claims
CLAIM_KEYS = ("id", "statement", "predicted", "measured", "verdict", "n_seeds", "details")


def write_claims(out_dir, records: list[dict], source: str) -> Path:
    """Write one experiment's claim records, each stamped with the commit and the result file it came from."""
    git = git_state(Path(__file__).resolve().parent)
    stamped = [{**r, "source": source, "commit": git["commit"]} for r in records]
    for r in stamped:
        missing = [k for k in CLAIM_KEYS if k not in r]
        if missing or r["verdict"] not in ("pass", "fail"):
            raise ValueError(f"claim {r.get('id')!r}: missing {missing} or verdict not pass/fail")
    return write_json(Path(out_dir) / "claims.json", stamped)


def collect_claims(results_dir) -> list[dict]:
    """Merge <results_dir>/*/claims.json into <results_dir>/claims.json and CLAIMS.md (sorted by id)."""
    results_dir = Path(results_dir)
    records = []
    for f in sorted(results_dir.glob("*/claims.json")):
        records.extend(json.loads(f.read_text()))
    records.sort(key=lambda r: r["id"])
    write_json(results_dir / "claims.json", records)
    write_text(results_dir / "CLAIMS.md", claims_markdown(records))
    return records


def claims_markdown(records: list[dict]) -> str:
    n_pass = sum(r["verdict"] == "pass" for r in records)
    lines = ["# Claims", "",
             f"{n_pass} of {len(records)} claims pass. Each verdict is computed from the result table named in its "
             "row by the claim's function in `tvtheory/claims.py`; regenerate with `make reproduce`.", "",
             "| id | verdict | statement | predicted | measured | seeds |", "|---|---|---|---|---|---|"]
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    for r in records:
        mark = "**pass**" if r["verdict"] == "pass" else "**FAIL**"
        lines.append(f"| `{r['id']}` | {mark} | {esc(r['statement'])} | {esc(r['predicted'])} | "
                     f"{esc(r['measured'])} | {r['n_seeds']} |")
    lines += ["", "## Details", ""]
    for r in records:
        lines.append(f"- `{r['id']}` ({r['verdict']}, from `{r.get('source', '?')}`): {esc(r['details'])}")
    return "\n".join(lines) + "\n"


README_BEGIN, README_END = "<!-- claims:begin -->", "<!-- claims:end -->"


def update_readme(readme, records: list[dict]) -> bool:
    """Replace the block between the claims markers of ``readme`` with a verdict table of ``records``."""
    readme = Path(readme)
    text = readme.read_text() if readme.exists() else ""
    if README_BEGIN not in text or README_END not in text:
        return False
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    rows = ["| claim | verdict | measured |", "|---|---|---|"] + [
        f"| `{r['id']}` | {'pass' if r['verdict'] == 'pass' else '**FAIL**'} | {esc(r['measured'])} |" for r in records]
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    write_text(readme, head + README_BEGIN + "\n" + "\n".join(rows) + "\n" + README_END + tail)
    return True


if __name__ == "__main__":
    import sys

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    recs = collect_claims(root)
    updated = update_readme(root.parent / "README.md", recs)
    print(f"{sum(r['verdict'] == 'pass' for r in recs)} of {len(recs)} claims pass ({root}/claims.json, "
          f"{root}/CLAIMS.md{', README.md' if updated else ''})")
