"""Result folders and files: atomic writes, ownership, provenance, tidy tables and the merged claims.

Every file is written under a temporary name in its directory and renamed into place, so a reader never sees a
half-written file; files keep the user's umask. A run writes its whole result folder into a hidden staging folder;
only when everything succeeded does the folder replace ``out_dir`` as a whole (a rerun never leaves an older run's
files beside its own). A result folder belongs to one experiment, named in its ``provenance.json``: writing another
experiment's folder, or a folder that is not a result folder (the results root), is refused before any compute.
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
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGES = ("jax", "jaxlib", "flax", "optax", "hydra-core", "omegaconf", "numpy", "pandas", "matplotlib",
            "scikit-learn", "rouge-score")
MARKER = "provenance.json"
ROOT = Path(__file__).resolve().parent.parent      # the checkout, when the package is used from one


def _host() -> str:
    return re.sub(r"\W", "_", socket.gethostname())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


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
        os.chmod(tmp, 0o666 & ~UMASK)           # mkstemp makes 0600; a result file is as readable as any other
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def owner(folder: Path) -> str | None:
    """The experiment a result folder belongs to (None: no marker)."""
    try:
        return json.loads((folder / MARKER).read_text()).get("experiment")
    except (OSError, ValueError, AttributeError):
        return None


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def result_folder_around(path: str | os.PathLike, *, itself: bool = True) -> Path | None:
    """The result folder (one with a MARKER) that ``path`` is (``itself``) or lies in, if any: a run's next run
    replaces it as a whole, with everything inside."""
    path = Path(path).resolve()
    return next((p for p in ((path,) if itself else ()) + tuple(path.parents) if (p / MARKER).exists()), None)


def check_out_dir(out: str | os.PathLike, experiment: str, *, field: str = "out_dir") -> None:
    """Refuse, before any compute, an ``out_dir`` this run cannot or must not write: a file, a path under a file,
    an unwritable place, another experiment's result folder, or a non-empty folder that is not a result folder (the
    results root, a source folder). Raises ValueError('<field>=<value>: ...')."""
    out = Path(out)
    shown = f"{field}={str(out)!r}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{shown}: is a file, not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{shown}: {parent} is a file, so the folder cannot be created")
    # Inside another result folder, a run's folder would be deleted by that folder's next run.
    if (above := result_folder_around(out, itself=False)) is not None:
        raise ValueError(f"{shown}: lies inside the result folder {above} (of the {owner(above)!r} "
                         "experiment), which its next run replaces as a whole; choose a folder beside it")
    if out.is_dir():
        mine = owner(out)
        entries = [p.name for p in out.iterdir() if not p.name.startswith(".") and not p.name.endswith(".log")]
        if mine is None and entries:
            raise ValueError(f"{shown}: holds {len(entries)} entries (e.g. {sorted(entries)[:3]}) but no "
                             f"{MARKER}: not a result folder (the results root?); choose {out}/{experiment}")
        if mine is not None and mine != experiment:
            raise ValueError(f"{shown}: belongs to the {mine!r} experiment ({out / MARKER}); {experiment!r} "
                             "must write its own folder")
    # The stage is made beside out_dir, and out_dir itself may be created: both need its (nearest) parent. Probed
    # last, so that a refused folder's parent is not touched.
    _probe(out.parent if out.exists() else parent, shown)


def check_writable(path: str | os.PathLike, field: str) -> None:
    """A folder (created if needed) must be writable: raises ValueError('<field>=<value>: ...')."""
    p = Path(path)
    shown = f"{field}={str(p)!r}"
    q = p
    while not q.exists():
        q = q.parent
    if not q.is_dir():
        raise ValueError(f"{shown}: {q} is a file, so the folder cannot be created")
    _probe(q, shown)


def _probe(folder: Path, shown: str) -> None:
    """Create and remove a file in ``folder``: permissions alone do not tell (root, read-only mounts)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"{shown}: {folder} is not writable ({e.strerror or e})") from None


@contextlib.contextmanager
def staged(out_dir: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Write a run's files into a hidden staging folder beside ``out_dir``; when the block succeeds, the folder
    replaces ``out_dir`` as a whole (``replace``), or its files move into ``out_dir`` (a fresh Hydra job folder,
    which holds Hydra's own files). A crash or kill leaves the previous results complete; the next run removes what a
    killed run left (a stage, or the previous folder set aside for the swap, which it puts back if the swap was cut
    short)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    for p in orphans(out.parent, f".{out.name}.staging."):
        shutil.rmtree(p, ignore_errors=True)
    for p in orphans(out.parent, f".{out.name}.old."):
        if out.exists():
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.replace(p, out)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging.{_host()}-{os.getpid()}.", dir=out.parent))
    try:
        yield stage
        os.chmod(stage, 0o777 & ~UMASK)
        if replace or not out.exists():
            old = None
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.{_host()}-{os.getpid()}.", dir=out.parent))
                os.rmdir(old)                   # a unique name, freed for the rename
                os.replace(out, old)
            os.replace(stage, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
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


def read_csv(path) -> pd.DataFrame:
    """A table as ``write_csv`` wrote it (an empty table, written without columns, reads back empty). A blank line,
    which ``write_csv`` never writes, is read as a row of blanks, so that a row's line in the file is always its
    index + 2."""
    try:
        with warnings.catch_warnings():
            # index_col=False: a row longer than the header is an error (or this warning, when every row is), not a
            # first column quietly taken for the index, every other column shifted one place to the left.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, index_col=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except pd.errors.ParserWarning:
        raise ValueError("every row has more fields than the header") from None


# ------------------------------------------------------------------------------------ tables read back from files
# A run records the kind of every column of its tables, as read back from the files it wrote (``column_kinds``), in
# its provenance.json; the commands that recompute from a folder check the tables against it (``check_table``), so
# that a hand-edited or damaged table is refused in one line naming the file, the column, the line and the value,
# rather than judged: one damaged cell turns its column into text, and a blank in a True/False column reads as NaN.
def column_kinds(df: pd.DataFrame) -> dict[str, str]:
    """Each column's kind: bool, int, float, label (text the run wrote without an empty or blank cell: the names of
    tasks, models, methods, and generated text that happens to have none) or text (anything else pandas reads).
    Records written before labels were told apart say text for both."""
    def kind(col: pd.Series) -> str:
        if pd.api.types.is_bool_dtype(col):
            return "bool"
        if pd.api.types.is_integer_dtype(col):
            return "int"
        if pd.api.types.is_float_dtype(col):
            return "float"
        return "label" if len(col) and not (_texts(col).str.strip() == "").any() else "text"
    return {str(c): kind(df[c]) for c in df.columns}


def _texts(col: pd.Series) -> pd.Series:
    return col.map(lambda v: "" if pd.isna(v) else str(v))


def _numbers(texts: pd.Series) -> pd.Series:
    """Which cells pandas reads as numbers (a blank is none)."""
    return pd.to_numeric(texts.where(texts != ""), errors="coerce").notna()


def _first_bad(texts: pd.Series, ok: pd.Series) -> str:
    """'line N: <value>' of the first cell (``texts``, from ``_texts``) where ``ok`` is False."""
    bad = ok.index[~ok.to_numpy(bool)]
    if not len(bad):
        return "no row" if not len(texts) else "its cells as a whole"
    i, text = bad[0], texts[bad[0]]
    return f"line {int(i) + 2}: {text!r}" if text else f"line {int(i) + 2}: an empty or NaN cell"


KINDS = ("bool", "int", "float", "label", "text")


def check_kinds(kinds, tables: tuple) -> None:
    """A provenance.json's record of column kinds: one entry per table of ``tables``, each a mapping of column
    names to one of KINDS. Raises ValueError naming the entry."""
    if not isinstance(kinds, dict):
        raise ValueError(f"tables: {type(kinds).__name__}, not a mapping of the tables to their column kinds")
    for t in tables:
        k = kinds.get(t)
        if not isinstance(k, dict):
            raise ValueError(f"tables.{t}: {'missing' if k is None else type(k).__name__}, not a mapping of the "
                             "columns to their kinds")
        for c, v in k.items():
            if v not in KINDS:
                raise ValueError(f"tables.{t}.{c}: {v!r}, not one of {', '.join(KINDS)}")


def check_table(df: pd.DataFrame, kinds: dict[str, str]) -> None:
    """Refuse a table whose columns or kinds differ from those its run wrote (``kinds``, from ``column_kinds``):
    ValueError naming the columns missing or unexpected, or the column, line and value of the first cell out of
    its kind: a number may be edited into another (integers into fractions too), but not into text, nor into a blank
    or NaN among whole numbers; True/False stays True/False; a label (a name) may not be emptied; a text or label
    column turned into numbers or True/False is refused (a single number among text is not: text columns are not
    checked cell by cell, and a new name in a label column is judged)."""
    have = [str(c) for c in df.columns]
    if have != list(kinds):
        missing, extra = [c for c in kinds if c not in have], [c for c in have if c not in kinds]
        parts = ([f"no column {', '.join(map(repr, missing))}"] if missing else []) + \
                ([f"unexpected column {', '.join(map(repr, extra))}"] if extra else [])
        raise ValueError(f"{'; '.join(parts) or 'its columns in another order'} (the run wrote "
                         f"{', '.join(kinds)})")
    read, numeric = column_kinds(df), ("int", "float")
    for c, want in kinds.items():
        got = read[c]
        if got == want or (want in numeric and got in numeric and not (want == "int" and df[c].isna().any())) \
                or (want == "text" and got == "label"):
            continue                # a number edited into another (a perturbed table) is a table still
        texts = _texts(df[c])
        ok, wrote = {"bool": (lambda: texts.isin(["True", "False"]), "True/False"),
                     "int": (lambda: (texts != "") & _numbers(texts), "numbers, none empty or NaN,"),
                     "float": (lambda: (texts == "") | _numbers(texts), "numbers"),
                     # a text or label column read as numbers or True/False: every cell turned, the first is named
                     "label": (lambda: (texts.str.strip() != "") & (got == "text"), "a name in every cell"),
                     "text": (lambda: pd.Series(False, texts.index), "text")}[want]
        raise ValueError(f"column {c!r}, {_first_bad(texts, ok())}: the run wrote {wrote} in this column")


def check_cells(df: pd.DataFrame) -> None:
    """For a folder whose provenance.json records no column kinds (written before they were recorded): refuse a
    column that mixes kinds of value (True/False, numbers, other text), which ``write_csv`` never writes. Raises
    ValueError naming the column, the line of the file and the first value of the rarer kind (text, when as many
    values are text as not)."""
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        texts = _texts(col[col.notna()])
        kinds = pd.Series(np.where(texts.isin(["True", "False"]), "True/False",
                                   np.where(_numbers(texts), "numbers", "text")), index=texts.index)
        counts = kinds.value_counts()
        if len(counts) > 1:
            rank = lambda k: (counts[k], k != "text")  # noqa: E731  (on a tie, the text is the damage)
            odd = min(counts.index, key=rank)
            usual = max((k for k in counts.index if k != odd), key=rank)
            i = kinds.index[kinds == odd][0]
            raise ValueError(f"column {c!r}, line {i + 2}: {texts[i]!r} where the column's other values are {usual}")


def write_table(folder: Path, name: str, obj) -> Path:
    """A derived output by type: DataFrame -> name.csv, str -> name.md, dict or list -> name.json (a ``name`` with a
    suffix is the file name itself)."""
    suffix = "" if "." in name else {pd.DataFrame: ".csv", str: ".md"}.get(type(obj), ".json")
    path = Path(folder) / f"{name}{suffix}"
    if isinstance(obj, pd.DataFrame):
        return write_csv(path, obj)
    return write_text(path, obj) if isinstance(obj, str) else write_json(path, obj)


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "as_dict"):
        return x.as_dict()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def git_state(cwd: str | os.PathLike | None = None) -> dict:
    """The commit of the code and whether it differs from it (result files do not count)."""
    def run(*args):
        return subprocess.run(["git", *args], cwd=cwd or Path(__file__).resolve().parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        top = run("rev-parse", "--show-toplevel")
        return {"commit": run("rev-parse", "HEAD"),
                "dirty": bool(run("-C", top, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def machine(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict:
    """The machine a result comes from. Results depend on its CPU as well as on the code: XLA compiles for the host's
    vector instructions, so a CPU with AVX-512 rounds the same fine-tunes differently from one with AVX2 alone (~1e-4
    in the weights), enough to move a verdict decided at a grid point's edge (docs/performance.md)."""
    cpu: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(cpuinfo).read_text().splitlines():
            if not line.strip() and cpu:                    # the first processor's block is enough
                break
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "cpu family", "model", "flags"):
                cpu.setdefault(key.strip(), value.strip())
    flags = set(cpu.get("flags", "").split())
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu": cpu.get("model name") or platform.processor() or None,
            "cpu_family_model": f"{cpu['cpu family']}/{cpu['model']}" if {"cpu family", "model"} <= set(cpu) else None,
            "vector_isa": [f for f in ("avx2", "fma", "avx512f") if f in flags] if flags else None}


def provenance(experiment: str, config: dict, started: float, seeds: list[int], **extra) -> dict:
    import jax

    versions = {}
    for p in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[p] = metadata.version(p)
    return {
        "experiment": experiment,
        "git": git_state(),
        "packages": versions,
        "python": platform.python_version(),
        "device": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),          # the compiler's options round some results (digits)
        "tvtheory_native": os.environ.get("TVTHEORY_NATIVE", ""),  # "0": XLA's grid loop, not the kernel (same bits)
        "machine": machine(),
        "argv": sys.argv,
        "seeds": seeds,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 2),
        "config": config,
        **extra,
    }


# ------------------------------------------------------------------------------------------------ tidy tables
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


def grid_table(coeffs_GxK, diverged_S, **arrays_SxG) -> pd.DataFrame:
    """One row per (seed, grid point): seed, lam1..lamK, then each (S, G) array as a column, and diverged."""
    S, G = np.shape(next(iter(arrays_SxG.values())))
    K = np.shape(coeffs_GxK)[1]
    df = pd.DataFrame({"seed": np.repeat(np.arange(S), G)})
    for k in range(K):
        df[f"lam{k + 1}"] = np.tile(np.asarray(coeffs_GxK)[:, k], S)
    for name, a in arrays_SxG.items():
        df[name] = np.asarray(a).ravel()
    df["diverged"] = np.repeat(np.asarray(diverged_S), G)
    return df


# ----------------------------------------------------------------------------------------------------- claims
def write_claims(out_dir, records) -> Path:
    """One experiment's claim records (claims.Claim, each naming the result file it came from), stamped with the
    commit of the code that judged them and whether that code differed from the commit."""
    git = git_state()
    rows = [{**r.as_dict(), "commit": git["commit"], "dirty": git["dirty"]} for r in records]
    return write_json(Path(out_dir) / "claims.json", rows)


def collect_claims(results_dir) -> list[dict]:
    """Merge <results_dir>/*/claims.json into <results_dir>/claims.json and CLAIMS.md (sorted by id)."""
    results_dir = Path(results_dir)
    records = []
    for f in sorted(results_dir.glob("*/claims.json")):
        records.extend(json.loads(f.read_text()))
    records.sort(key=lambda r: r["id"])
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"results_dir={str(results_dir)!r}: claim ids {dup} appear in more than one folder")
    write_json(results_dir / "claims.json", records)
    write_text(results_dir / "CLAIMS.md", claims_markdown(records))
    return records


def _mark(v: str) -> str:
    return {"pass": "pass", "fail": "**FAIL**", "inconclusive": "*inconclusive*"}[v]


def claims_markdown(records: list[dict]) -> str:
    counts = {v: sum(r["verdict"] == v for r in records) for v in ("pass", "fail", "inconclusive")}
    lines = ["# Claims", "",
             f"{counts['pass']} of {len(records)} claims pass, {counts['fail']} fail, {counts['inconclusive']} are "
             "inconclusive. Each verdict is computed from the result table named in its row by the rules of "
             "`tvtheory/claims.py` (and the experiment's module), with the tolerances declared in its config; "
             "recompute them all with `python -m tvtheory.claims results`.", "",
             "| id | verdict | statement | predicted | measured | seeds |", "|---|---|---|---|---|---|"]
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    for r in records:
        lines.append(f"| `{r['id']}` | {_mark(r['verdict'])} | {esc(r['statement'])} | {esc(r['predicted'])} | "
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
        f"| `{r['id']}` | {_mark(r['verdict'])} | {esc(r['measured'])} |" for r in records]
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    write_text(readme, head + README_BEGIN + "\n" + "\n".join(rows) + "\n" + README_END + tail)
    return True


def gather(root: str | os.PathLike, name: str = "metrics.csv") -> pd.DataFrame:
    """Concatenate <root>/**/<name> of a multirun into one table; each job's rows carry its job folder, its command
    line overrides and every field of its config (from its provenance.json), so jobs differing in any field can be
    told apart."""
    files = sorted(Path(root).rglob(name))
    if not files:
        raise FileNotFoundError(f"root={str(root)!r}: no {name} below it")
    from tvtheory.config import flat

    parts = []
    for f in files:
        df = pd.read_csv(f)
        extra = {"job": str(f.parent.relative_to(root))}
        try:
            prov = json.loads((f.parent / MARKER).read_text())
            extra["overrides"] = " ".join(prov.get("overrides", []))
            extra.update({f"cfg.{k}": v for k, v in flat(prov.get("config", {})).items()})
        except (OSError, ValueError):
            pass
        parts.append(df.assign(**{k: v for k, v in extra.items() if k not in df.columns}))
    return pd.concat(parts, ignore_index=True)
