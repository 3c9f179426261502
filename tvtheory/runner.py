"""Running an experiment module, and recomputing its verdicts and figures from its files.

``execute`` is what every entry point calls once Hydra has composed the config: type and validate it, check the
result folder, the cache folder and the estimated cost before any compute, run the experiment, then write its tables,
derived outputs, claims, figures, config and provenance into a staging folder that replaces the result folder only
when everything succeeded. ``recompute`` does the second half from the files of a finished run, which is how
``python -m tvtheory.claims`` and ``python -m tvtheory.plots`` work.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import NamedTuple, Optional

import pandas as pd

import tvtheory
from tvtheory import config as C
from tvtheory import _check, experiments, results

log = logging.getLogger("tvtheory")


class Cost(NamedTuple):
    """An estimate of a run's time on 2 CPU cores and its peak memory, before any compute."""

    seconds: float
    memory_gb: float


class ConfigError(ValueError):
    """A config value this run cannot accept: one line, naming the field."""


# ---------------------------------------------------------------------------------------------------- configs
def typed(exp: ModuleType, cfg) -> C.Node:
    """An OmegaConf config (or a dict, or the dataclass) as the experiment's validated dataclass."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(cfg, C.Node):
        _reject_unknown(OmegaConf.to_container(cfg) if not isinstance(cfg, dict) else cfg, exp.Config, "")
        try:
            cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(exp.Config), cfg))
        except OmegaConfBaseException as e:
            raise ValueError(f"{getattr(e, 'full_key', '?')}: {str(e).splitlines()[0]}") from None
    return C.validate(cfg)


def _reject_unknown(node: dict, schema, prefix: str) -> None:
    """Keys added with ``+key=value`` survive composition but would be dropped silently: refuse them."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for k, v in node.items():
        if k == "hydra":
            continue
        if k not in fields:
            raise ValueError(f"{prefix}{k}={v!r}: unknown key; {prefix.rstrip('.') or 'the config'} has "
                             f"{', '.join(sorted(fields))}")
        sub = fields[k].default_factory() if callable(fields[k].default_factory) else None
        if isinstance(v, dict) and isinstance(sub, C.Node):
            _reject_unknown(v, type(sub), f"{prefix}{k}.")


def _replace_path(cfg: C.Node, path: str, value) -> C.Node:
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: _replace_path(getattr(cfg, head), rest, value)})


def _get_path(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_budget(exp: ModuleType, cfg: C.Node) -> Cost:
    """Refuse a run whose estimated time or memory exceeds ``budget``, naming the field that contributes most (its
    cost against the same config with that field at its default; the experiment's SIZE_FIELDS and every field set
    off its default are candidates) and the override that lifts the bound."""
    cost = exp.estimate(cfg)
    default = exp.Config()
    for what, value, bound, knob in (("time", cost.seconds / 60, cfg.budget.max_minutes, "budget.max_minutes"),
                                     ("memory", cost.memory_gb, cfg.budget.max_memory_gb, "budget.max_memory_gb")):
        if value <= bound:
            continue
        ratios = {}
        mine_flat, default_flat = C.flat(cfg), C.flat(default)
        changed = [p for p in mine_flat if p in default_flat and mine_flat[p] != default_flat[p]]
        for path in dict.fromkeys([*getattr(exp, "SIZE_FIELDS", ()), *changed]):   # every field set off its default
            try:
                base = exp.estimate(_replace_path(cfg, path, _get_path(default, path)))
            except (ValueError, TypeError, ZeroDivisionError):
                continue
            mine, theirs = (cost.seconds, base.seconds) if what == "time" else (cost.memory_gb, base.memory_gb)
            ratios[path] = mine / max(theirs, 1e-12)
        field = max(ratios, key=ratios.get) if ratios else "n_seeds"
        unit = "min" if what == "time" else "GB"
        raise ConfigError(f"{field}={_get_path(cfg, field)!r}: the run would need ~{value:.3g} {unit} of {what} "
                          f"(budget {knob}={bound:g}); raise {knob} to run it anyway")
    return cost


# ---------------------------------------------------------------------------------------------------- context
class Context:
    """What ``run`` gets besides its config: the cache, the log, progress reporting."""

    def __init__(self, store, tag: str = ""):
        self.store, self.tag = store, tag
        self.log = logging.LoggerAdapter(log, {}) if not tag else _Tagged(log, tag)

    def progress(self, desc: str):
        """A callback ``(done, total, what)`` drawing a progress bar with an ETA on a terminal, and a log line per
        step otherwise (Hydra's job log, parallel jobs)."""
        started, bar = time.time(), None
        interactive = sys.stderr.isatty()

        def update(done: int, total: int, what: str = "") -> None:
            nonlocal bar
            if interactive:
                from tqdm import tqdm
                if bar is None:
                    bar = tqdm(total=total, desc=f"{self.tag}{desc}", leave=False, dynamic_ncols=True)
                bar.update(done - bar.n)
                bar.set_postfix_str(what)
                if done >= total:
                    bar.close()
                return
            eta = (time.time() - started) / max(done, 1) * (total - done)
            self.log.info("%s: %d/%d %s (ETA %.0f s)", desc, done, total, what, eta)
        return update


class _Tagged(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"[{self.extra['tag']}] {msg}", kwargs

    def __init__(self, logger, tag):
        super().__init__(logger, {"tag": tag})


CPUS = "TVTHEORY_CPUS"      # the CPUs a run may use, as a list ("1", "0,2", "4-7"); python -m tvtheory.reproduce
                            # gives each lane its own
_pinned = False


def cpu_list(text: str) -> set[int]:
    """The CPUs of a list like "0,2-3" (CPUS)."""
    cpus: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            if int(hi or lo) < int(lo):
                raise ValueError
            cpus |= set(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"{CPUS}={text!r}: must list CPUs like 0,2-3") from None
    if not cpus:
        raise ValueError(f"{CPUS}={text!r}: must list at least one CPU")
    return cpus


def cpus_for(threads: int | None, job: int, available: list[int], listed: str | None = None) -> set[int] | None:
    """The CPUs a run is kept on: those ``listed`` (the CPUS variable) among the ``available`` ones; else, with
    ``threads`` fewer than available, the block of ``threads`` CPUs numbered ``job`` (modulo the blocks there are),
    so that the jobs of a parallel launcher spread over the machine; else None (every CPU)."""
    if listed:
        cpus = cpu_list(listed) & set(available)
        if not cpus:
            raise ValueError(f"{CPUS}={listed!r}: none of these CPUs is available to this process {available}")
        return cpus
    if threads and threads < len(available):
        i = job % (len(available) // threads)
        return set(available[i * threads:(i + 1) * threads])
    return None


def check_threads(threads: int | None, available: int | None = None) -> None:
    """``threads`` beyond the CPUs this process may run on is refused (it used to run on all of them, silently), unless
    the CPUS variable chooses the CPUs (a `make reproduce` lane), which ``threads`` then does not, or the process is
    already kept on its first job's CPUs (a launcher's worker, or a sequential multirun, whose later jobs keep them)."""
    if threads is None or os.environ.get(CPUS) or _pinned or not hasattr(os, "sched_getaffinity"):
        return
    available = len(os.sched_getaffinity(0)) if available is None else available
    if threads > available:
        raise ValueError(f"threads={threads}: this process may run on {available} CPU{'s' * (available != 1)}; "
                         "ask for at most that many, or null for all")


def check_folder(name: str, value: Optional[str], null_means: str) -> None:
    """A folder field of a run about to start: a path, or null. An empty or blank path used to act as null, silently
    (checked here, as a run starts, rather than as a config is read, so that a folder written before still loads)."""
    if value is not None and not str(value).strip():
        _check.fail(name, value, f"must be a folder path, or null for {null_means}")


def cache_dir_of(cfg) -> Optional[str]:
    """The config's cache.dir: a folder path, None (no cache), or whatever was given (checked by check_folder)."""
    return getattr(getattr(cfg, "cache", None), "dir", None)


def environment(cfg: C.Node, job: int = 0) -> None:
    """Settings that must precede JAX's first computation: the CPUs (``threads``, or the CPUS variable), and the
    persistent cache of compiled programs. XLA's CPU runtime sizes its thread pool by the CPUs the process may run
    on, so the CPUs are set as the process's affinity (flags such as intra_op_parallelism_threads no longer limit
    it); a launcher's worker keeps its first job's CPUs, for every job it runs after."""
    global _pinned
    cache_dir = cache_dir_of(cfg)
    if cache_dir:
        # Compiled programs are kept beside the stage cache: a rerun, or another experiment with the same shapes,
        # skips XLA compilation (seconds per program on 2 cores).
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(cache_dir) / "xla"))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    if not hasattr(os, "sched_setaffinity"):
        if cfg.threads or os.environ.get(CPUS):
            log.warning("threads / %s: this platform cannot keep a process on given CPUs; using them all", CPUS)
    elif not _pinned:
        cpus = cpus_for(cfg.threads, job, sorted(os.sched_getaffinity(0)), os.environ.get(CPUS))
        if cpus:
            os.sched_setaffinity(0, cpus)
            _pinned = True
    elif cfg.threads and cfg.threads != (kept := len(os.sched_getaffinity(0))) and not os.environ.get(CPUS):
        log.warning("threads=%d: this process keeps its first job's %d CPU(s)", cfg.threads, kept)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)       # "no TPU" notice on every run


def preflight(exp: ModuleType, cfg: C.Node, out: Optional[Path]) -> Cost:
    """Everything that can be refused before compute: the result folder (None: a new folder of Hydra's, named by
    time and process, which needs no check), the cache folder, the budget."""
    cache_dir = cache_dir_of(cfg)
    check_folder("out_dir", getattr(cfg, "out_dir", None), "the Hydra job's output folder")
    check_folder("cache.dir", cache_dir, "no cache")
    if out is not None:
        results.check_out_dir(out, name_of(exp))
    check_threads(getattr(cfg, "threads", None))
    if cache_dir:
        check_cache_outside_results(cache_dir, out)
        results.check_writable(cache_dir, "cache.dir")
    return check_budget(exp, cfg)


def check_cache_outside_results(cache_dir: str, out: Optional[Path]) -> None:
    """A finished run replaces its result folder whole, so a cache inside ``out`` (or inside any result folder, which
    its own rerun replaces) would be deleted with it: refused."""
    if out is not None and results.inside(cache_dir, out):
        raise ConfigError(f"cache.dir={cache_dir!r}: inside out_dir={str(out)!r}, which the finished run replaces "
                          "whole (the cache would be deleted with it); put the cache elsewhere")
    if (folder := results.result_folder_around(cache_dir)) is not None:
        raise ConfigError(f"cache.dir={cache_dir!r}: inside the result folder {str(folder)!r}, which its rerun "
                          "replaces whole (the cache would be deleted with it); put the cache elsewhere")


# ---------------------------------------------------------------------------------------------------- running
def name_of(exp: ModuleType) -> str:
    return exp.__name__.rsplit(".", 1)[-1]


def execute(exp: ModuleType, cfg: C.Node, out: Path, *, raw_config: Optional[dict] = None, replace: bool = True,
            tag: str = "", overrides: tuple = ()) -> list[dict]:
    """Run a validated config into ``out`` (already checked by ``preflight``); returns the claim records."""
    from tvtheory import cache, compiles

    # preflight's checks of the cache folder, for a caller that skipped it: a blank cache.dir is neither a folder nor
    # null, and a cache inside the result folder would be deleted when the finished run replaces it
    cache_dir = cache_dir_of(cfg)
    check_folder("cache.dir", cache_dir, "no cache")
    if cache_dir:
        check_cache_outside_results(cache_dir, out)
    started = time.time()
    compiled = compiles.Counter().start()
    try:
        name = name_of(exp)
        store = cache.open_store(cfg.cache) if getattr(cfg, "cache", None) is not None else cache.NoStore()
        ctx = Context(store, tag)
        tables = exp.run(cfg, ctx)
        if len(tables) and list(tables) != list(exp.TABLES):
            raise RuntimeError(f"{name}.run returned tables {list(tables)}, its TABLES say {list(exp.TABLES)}")
        plain = raw_config if raw_config is not None else C.to_plain(cfg)
        with results.staged(out, replace=replace) as stage:
            for t, df in tables.items():
                results.write_csv(stage / f"{t}.csv", df)
            # Analysis, claims and figures read the tables back from the files, so that a run derives exactly what
            # ``python -m tvtheory.claims`` later derives from its folder (the CSVs keep 6 significant digits).
            tables = {t: results.read_csv(stage / f"{t}.csv") for t in tables}
            _write_config(stage, plain)
            records = derive(exp, stage, tables, cfg, final=out, figures=getattr(cfg, "figures", True))
            results.write_json(stage / results.MARKER, results.provenance(
                name, plain, started, list(range(getattr(cfg, "n_seeds", 1))), cache=store.provenance(),
                tables={t: results.column_kinds(df) for t, df in tables.items()},
                overrides=list(overrides), compile=compiled.report()))
    finally:
        compiled.stop()                              # a launcher's next job in this process counts anew
    ctx.log.info("wrote %s in %.1f s (%s)", out, time.time() - started, store.summary())
    summary(name, out, records, time.time() - started, store.summary())
    return records


def _write_config(folder: Path, plain: dict) -> None:
    import yaml

    results.write_text(folder / "config.yaml", yaml.safe_dump(plain, sort_keys=False))


def derive(exp: ModuleType, folder: Path, tables: dict, cfg: C.Node, *, final: Path | None = None,
           figures: bool = True) -> list[dict]:
    """Analysis, claims and figures of a run into ``folder``; claim sources name files under ``final``."""
    final = final or folder
    analysis = exp.analyse(tables, cfg)
    for k, v in analysis.items():
        if not k.startswith("_"):
            results.write_table(folder, k, v)
    records = exp.claims(analysis, cfg)
    main = exp.TABLES[0] if exp.TABLES else ""
    stamped = [dataclasses.replace(r, source=str(final / f"{r.source or main}.csv")) for r in records]
    if stamped:
        results.write_claims(folder, stamped)
    if figures:
        exp.plot(tables, analysis, cfg, folder)
    return [r.as_dict() for r in stamped]


def load(folder: Path) -> tuple[ModuleType, C.Node, dict[str, pd.DataFrame]]:
    """A finished run's experiment module, typed config and tables, from its files alone; a folder whose files are
    missing or damaged raises ValueError naming the folder and the file."""
    import json

    import yaml

    folder = Path(folder)
    try:
        prov = json.loads((folder / results.MARKER).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"folder={str(folder)!r}: unreadable {results.MARKER} ({e})") from None
    prov = prov if isinstance(prov, dict) else {}
    name = prov.get("experiment")
    if name is None:
        raise ValueError(f"folder={str(folder)!r}: no {results.MARKER} naming its experiment")
    try:
        exp = experiments.get(name)
    except ValueError as e:
        raise ValueError(f"folder={str(folder)!r}: {results.MARKER} names {e}") from None
    # The column kinds its run recorded (a folder written before they were recorded has none: the generic check).
    kinds = prov.get("tables")
    if kinds is not None:
        try:
            results.check_kinds(kinds, exp.TABLES)
        except ValueError as e:
            raise ValueError(f"folder={str(folder)!r}: {results.MARKER}: {e}") from None
    path = folder / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError("not a mapping of fields")
        cfg = typed(exp, raw)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ValueError(f"folder={str(folder)!r}: config.yaml: {str(e).splitlines()[0] if str(e) else e!r}") from None
    tables = {}
    for t in exp.TABLES:
        try:
            tables[t] = results.read_csv(folder / f"{t}.csv")
            if kinds is not None:
                results.check_table(tables[t], kinds[t])
            else:
                results.check_cells(tables[t])
        except (OSError, ValueError) as e:
            raise ValueError(f"folder={str(folder)!r}: {t}.csv: {str(e).splitlines()[0]}") from None
    return exp, cfg, tables


def run_folders(root: Path) -> list[Path]:
    """Every result folder at or below ``root`` (a run, a multirun, the results root)."""
    root = Path(root)
    if (root / results.MARKER).exists():
        return [root]
    return sorted(p.parent for p in root.rglob(results.MARKER) if not any(x.startswith(".") for x in p.parts))


def recompute(folder: Path, *, figures: bool = False) -> list[dict]:
    """The verdicts (and derived files, and figures if asked) of a result folder from its tables alone. Everything
    is written into a staging folder and moved in only when all of it succeeded: a failure changes no file."""
    exp, cfg, tables = load(folder)
    with results.staged(folder, replace=False) as stage:
        try:
            return derive(exp, stage, tables, cfg, final=_display(folder), figures=figures)
        except KeyError as e:
            raise missing_column(folder, tables, e) from None


def missing_column(folder: Path, tables: dict, e: KeyError) -> Exception:
    """A KeyError raised while analysing the tables of a folder that records no column kinds (those that do are
    checked column by column when loaded): the one-line error naming the file when exactly one of several tables
    lacks a column the KeyError names, else the KeyError itself."""
    import re

    for name in re.findall(r"(?<!dtype=)'([^']+)'", str(e)):
        lacking = [f"{t}.csv" for t, df in tables.items() if name not in df.columns]
        if len(lacking) == 1 and len(tables) > 1:
            return ValueError(f"folder={str(folder)!r}: {lacking[0]}: no column {name!r}, which the analysis reads "
                              f"(KeyError: {e})")
    return e


def _display(folder: Path) -> Path:
    try:
        return folder.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return folder


def folder_argument(prog: str, description: str, argv: list[str]) -> Path:
    """The one optional argument of the commands that work on result folders (``--help``; anything more is refused
    in one line)."""
    ap = _check.Arguments(prog=prog, description=description)
    ap.add_argument("folder", nargs="?", default="results",
                    help="a result folder, or a folder of them such as results/ (default: results)")
    return Path(ap.parse_args(argv).folder)


def claims_main(argv: list[str] | None = None) -> None:
    """``python -m tvtheory.claims RESULTS_DIR``: every claim recomputed from the tables, merged, README updated."""
    tvtheory.collect_garbage_less()
    root = folder_argument("python -m tvtheory.claims", "Recompute every verdict (and the derived tables) of the "
                           "result folders from their tables alone; merge them into claims.json and CLAIMS.md.",
                           sys.argv[1:] if argv is None else argv)
    folders = run_folders(root)
    if not folders:
        print(f"error: {root} holds no result folder ({results.MARKER})", file=sys.stderr)
        sys.exit(2)
    failed = []
    for f in folders:
        try:
            recs = recompute(f)
        except Exception as e:                  # one line per folder; the other folders are still recomputed
            failed.append(f)
            msg = str(e) if isinstance(e, ValueError) and str(e).startswith("folder=") else \
                f"folder={str(f)!r}: {type(e).__name__}: {e}"
            print(f"error: {msg}", file=sys.stderr)
            continue
        print(f"{f}: " + ", ".join(f"{r['id']} {r['verdict']}" for r in recs))
    if failed:
        sys.exit(2)
    if (root / results.MARKER).exists():
        return
    recs = results.collect_claims(root)
    repo = results.ROOT / "results"
    updated = root.resolve() == repo.resolve() and results.update_readme(results.ROOT / "README.md", recs)
    counts = {v: sum(r["verdict"] == v for r in recs) for v in ("pass", "fail", "inconclusive")}
    print(f"{counts['pass']} pass, {counts['fail']} fail, {counts['inconclusive']} inconclusive of {len(recs)} claims "
          f"({root}/claims.json, {root}/CLAIMS.md{', README.md' if updated else ''})")


def summary(name: str, out: Path, records: list[dict], seconds: float, cache_line: str) -> None:
    """One screen at the end of a run: where its results went and its verdicts."""
    width = 100
    lines = [f"{name}: {out} ({seconds:.0f} s; {cache_line})"]
    for r in records:
        text = f"  {r['verdict']:<12} {r['id']:<28} {r['measured']}"
        lines.append(text if len(text) <= width else text[:width - 3] + "...")
    if not records:
        lines.append("  (no claims: a descriptive experiment)")
    print("\n".join(lines), file=sys.stderr, flush=True)
