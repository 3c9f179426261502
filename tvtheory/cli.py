"""The command line: ``python -m tvtheory <experiment> [overrides]`` (or ``tvtheory <experiment>``, or
``python experiments/<experiment>.py``), through Hydra.

A bad value stops the run before any compute with one line, ``config error: <field>=<value>: <what is allowed>``,
and exit status 2: composition errors (unknown keys, wrong types, missing options), validation errors, a result or
cache folder that cannot or must not be written, a cost beyond the budget. A multirun checks every job this way before
the first starts. ``--help`` lists every field with its default and meaning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import tvtheory
from tvtheory import experiments

CONF = "pkg://tvtheory.conf"
EXIT_CONFIG, EXIT_DIVERGED = 2, 3


class AllDiverged(RuntimeError):
    """Every seed of a run diverged: nothing is written."""


def register(*names: str) -> None:
    """The Config of each named experiment (default: every experiment) as ``<name>_schema`` in Hydra's ConfigStore,
    and no other experiment's; the ``run_id`` resolver of run folders. A command registers only its own: each schema
    costs its module's import and a structured config (0.3-0.7 s for all ten, in every process), and every Hydra
    composition deep-copies the whole store (0.12 s a composition with all ten schemas, 0.09 s with one). A process
    that runs several commands (a lane's worker, the test suite's) holds only the schemas of the last one."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    names = names or experiments.NAMES
    for other in set(experiments.NAMES) - set(names):
        cs.repo.pop(f"{other}_schema.yaml", None)
    for name in names:
        cs.store(name=f"{name}_schema", node=experiments.get(name).Config)
    if not OmegaConf.has_resolver("run_id"):
        # Two runs started in the same second get different folders.
        OmegaConf.register_new_resolver("run_id", run_id)


def run_id() -> str:
    """This run's id in its folder names: the process id of the command (``main`` sets it), which a multirun's worker
    processes inherit instead of resolving their own."""
    return os.environ.get("TVTHEORY_RUN_ID", str(os.getpid()))


def fail(message: str, code: int = EXIT_CONFIG) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def in_process():
    """Around ``main`` run in a process that lives on (a reproduce lane's worker, the tests): puts back what a command
    sets for itself, its arguments, environment and root logger (handlers and level; the run's own handlers, such as
    its log file, are closed)."""
    argv, env, level, handlers = list(sys.argv), dict(os.environ), logging.root.level, logging.root.handlers[:]
    try:
        yield
    finally:
        sys.argv[:] = argv
        for k in set(os.environ) - set(env):
            del os.environ[k]
        os.environ.update(env)
        for h in logging.root.handlers:
            if h not in handlers:
                h.close()
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)


def exit_status(e: SystemExit) -> int:
    """The status a process ending with ``e`` gives: None is 0, a message is 1 (printed on stderr, as the interpreter
    prints it)."""
    if isinstance(e.code, str):
        print(e.code, file=sys.stderr)
    return 0 if e.code is None else e.code if isinstance(e.code, int) else 1


def main(name: str | None = None, argv: list[str] | None = None) -> None:
    tvtheory.collect_garbage_less()
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ["TVTHEORY_RUN_ID"] = str(os.getpid())
    if name is None:
        if not argv or argv[0] in ("-h", "--help"):
            print("usage: python -m tvtheory <experiment> [key=value ...] [--help]\nexperiments: "
                  + ", ".join(experiments.NAMES))
            return
        name, argv = argv[0], argv[1:]
    try:
        exp = experiments.get(name)
    except ValueError as e:
        fail(f"config error: {e}")
    if "-h" in argv or "--help" in argv:
        print(help_text(name, exp))
        return
    register(name)
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ["HYDRA_FULL_ERROR"] = "1"           # let composition errors reach us instead of Hydra's report
    started = {"job": False}

    @hydra.main(config_path=CONF, config_name=name, version_base="1.3")
    def _main(cfg) -> None:
        started["job"] = True
        job(exp, cfg)

    for a in argv:          # a job in Hydra's folder would read a relative out_dir or cache.dir from there
        key, _, value = a.lstrip("+").partition("=")
        if key == "hydra.job.chdir" and any(v.strip().lower() in ("true", "yes", "y", "on", "1")
                                            for v in value.split(",")):      # OmegaConf's true, or a sweep over it
            fail(f"config error: {a}: a run stays in the folder it starts from (its relative out_dir and cache.dir "
                 "are checked there); leave hydra.job.chdir false")
    if not any(a.startswith("-") for a in argv):
        precheck(name, exp, argv)
    sys.argv = [sys.argv[0], *argv]
    try:
        _main()
    except (HydraException, OmegaConfBaseException, ValueError) as e:   # ValueError: a multirun's ``data=null``
        if started["job"] and not isinstance(e, (HydraException, OmegaConfBaseException)):
            raise
        fail(f"config error: {_empty_group(argv) or _one_line(e)}")
    except OSError as e:
        if started["job"]:
            raise
        fail(f"config error: {_path_error(e)}")


def precheck(name: str, exp, overrides: list[str]) -> None:
    """A single run's config composed and checked before Hydra starts, so that a bad value leaves no run folder
    behind (Hydra creates one before calling the job)."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module("tvtheory.conf", version_base="1.3"):
            cfg = compose(name, overrides=[o for o in overrides if not o.startswith("hydra")])
    except (HydraException, OmegaConfBaseException, ValueError) as e:       # ValueError: Hydra's, on ``data=null``
        fail(f"config error: {_empty_group(overrides) or _one_line(e)}")
    try:
        _check_job_folder_outside(cfg.get("out_dir"), overrides, name)
        check_job(exp, cfg, None, overrides)
    except ValueError as e:
        fail(f"config error: {e}")


def _check_job_folder_outside(out_dir, overrides: list[str], name: str) -> None:
    """Hydra creates its job folder (``outputs/<name>/...`` under the current folder unless hydra.run.dir says
    otherwise) before the job starts: an ``out_dir`` holding it would hold a folder that is not a result's."""
    if not out_dir:
        return
    run_dir = next((o.split("=", 1)[1] for o in reversed(overrides) if o.lstrip("+").startswith("hydra.run.dir=")),
                   None)                                     # the last setting wins, as in Hydra
    from tvtheory import results

    job = Path(run_dir) if run_dir else Path("outputs") / name
    if results.inside(job, out_dir):
        raise ValueError(f"out_dir={out_dir!r}: would hold Hydra's job folder ({job}); choose a folder outside it "
                         "or set hydra.run.dir elsewhere")


def job(exp, cfg) -> None:
    """One Hydra job: validate, check folders and budget, run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from tvtheory import runner

    hc = HydraConfig.get()
    name = runner.name_of(exp)
    try:
        c = runner.typed(exp, cfg)
        out = Path(c.out_dir) if c.out_dir else Path(hc.runtime.output_dir)
        runner.preflight(exp, c, out)
        runner.environment(c, hc.job.num if hc.mode == RunMode.MULTIRUN else 0)
    except ValueError as e:
        fail(f"config error: {e}")
    tag = f"{name}#{hc.job.num}" if hc.mode == RunMode.MULTIRUN else ""
    try:
        runner.execute(exp, c, out, raw_config=OmegaConf.to_container(cfg, resolve=True), replace=bool(c.out_dir),
                       tag=tag, overrides=tuple(hc.overrides.task))
    except AllDiverged as e:
        fail(f"error: {e}. Nothing was written.", EXIT_DIVERGED)


def check_job(exp, cfg, out: Path | None, overrides: list[str] = ()) -> None:
    """Validation, folders and budget of one job's config (the multirun's check before its first job); its
    ``overrides`` as given, for what the composition has already converted (``check_booleans``)."""
    from tvtheory import runner

    check_booleans(cfg, overrides)
    c = runner.typed(exp, cfg)
    runner.preflight(exp, c, Path(c.out_dir) if c.out_dir else out)


def check_booleans(cfg, overrides) -> None:
    """A true/false field set on the command line takes true or false: OmegaConf reads any number (and yes, no, on,
    off) into one, so that ``figures=2`` ran as figures=true. Raises ValueError naming the field. An interpolation
    (``${...}``) must give true or false too (``figures=${n_seeds}`` ran as true); one that does not resolve is left to
    the validation that reports it. A quoted "true" or "false" is a boolean."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    given = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    for o in OverridesParser.create().parse_overrides(given):
        if o.is_delete() or o.is_sweep_override():
            continue
        key, value = o.key_or_group, o.value()
        if not isinstance(OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False), bool):
            continue
        gives = ""
        if isinstance(value, str) and "${" in value:
            # resolved in an untyped copy, which keeps what the interpolation gives (the typed field converts it)
            plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
            OmegaConf.update(plain, key, value, force_add=True)
            value = OmegaConf.select(plain, key, default=None, throw_on_resolution_failure=False)
            if value is None:
                continue                                # unresolvable: the validation says so
            gives = f" (it gives {value!r})"
        if not (isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false"))):
            raise ValueError(f"{key}={o.input_line.split('=', 1)[1].strip()}: must be true or false{gives}")


def _one_line(e: Exception) -> str:
    cause = e.__cause__
    if cause is not None and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {str(getattr(cause, 'msg', cause)).splitlines()[0]}"
    text = str(e).split("Config search path")[0]
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _path_error(e: OSError) -> str:
    where = e.filename or "?"
    return f"hydra.run.dir (or hydra.sweep.dir)={str(where)!r}: cannot be created ({e.strerror or e})"


def help_text(name: str, exp) -> str:
    from tvtheory import config as C

    doc = (exp.__doc__ or "").strip().splitlines()
    rows = C.describe(exp.Config)
    width = max(len(p) for p, _, _ in rows)
    lines = [f"python -m tvtheory {name} [key=value ...]   (also: python experiments/{name}.py)", "",
             *(doc[:1] or [""]), "", "Fields (key: default  meaning):"]
    for path, default, text in rows:
        lines.append(f"  {path:<{width}}  {default:<14} {text}")
    lines += ["", "Options: model=<" + "|".join(_options("model")) + ">, data=<" + "|".join(_options("data"))
              + ">, train=<" + "|".join(_options("train")) + ">, sweep=<" + "|".join(_options("sweep")) + ">",
              "Multirun: -m key=a,b (each job validated before the first starts); hydra/launcher=local|slurm.",
              "Hydra's own flags: --hydra-help."]
    return "\n".join(lines)


def _empty_group(overrides: list[str]) -> str | None:
    """The line for a config group set to nothing (``data=null``, ``model=``), whose Hydra error names no group."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key in ("model", "data", "train", "sweep") and value in ("null", "", "~"):
            return f"{key}={value!r}: a config group takes the name of one of its options: {', '.join(_options(key))}"
    return None


def _options(group: str) -> list[str]:
    from importlib import resources

    folder = resources.files("tvtheory.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


class ValidateJobs:
    """A Hydra callback: before a multirun's first job, compose and check every job (and refuse one ``out_dir``
    shared by several jobs), so a bad value in the last job stops the sweep before any compute."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from hydra import compose
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from hydra.core.hydra_config import HydraConfig

        # The sweep folder interpolates ${hydra:job.config_name}, which resolves only once HydraConfig is set; Hydra
        # sets it for each job, not before this callback.
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
        name = config.hydra.job.config_name
        exp = experiments.get(name)
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        outs = set()
        for i, overrides in enumerate(jobs):
            try:
                cfg = compose(config_name=name, overrides=list(overrides))
                check_job(exp, cfg, Path(config.hydra.sweep.dir) / str(i), list(overrides))
                if cfg.get("out_dir"):
                    if cfg.out_dir in outs:
                        raise ValueError(f"out_dir={cfg.out_dir!r}: shared by several jobs of the multirun; leave it "
                                         "null so that each job writes its own folder")
                    outs.add(cfg.out_dir)
            except (HydraException, OmegaConfBaseException) as e:     # a value the composition itself refuses
                fail(f"config error: job {i} ({' '.join(overrides)}): {_one_line(e)}")
            except ValueError as e:
                fail(f"config error: job {i} ({' '.join(overrides)}): {e}")

    def __getattr__(self, item):          # the other callback hooks do nothing
        if item.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(item)
