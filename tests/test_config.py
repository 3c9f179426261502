"""Every config composes through Hydra's compose API from the configs shipped in the package, every field is defined
once with its meaning, and bad values are rejected with the field named."""

import dataclasses
import re
from importlib import resources

import pytest
import yaml
from hydra import compose, initialize_config_module

from tvtheory import cli, config, experiments, runner

CONF = resources.files("tvtheory.conf")
GROUPS = {g.name: sorted(p.name[:-5] for p in g.iterdir() if p.name.endswith(".yaml"))
          for g in CONF.iterdir() if g.is_dir() and g.name not in ("hydra", "__pycache__")}


def composed(name="arithmetic", overrides=()):
    cli.register(name)                  # a command run in this process before registered its own schema only
    with initialize_config_module("tvtheory.conf", version_base="1.3"):
        return compose(name, overrides=list(overrides))


def typed(name="arithmetic", overrides=()):
    return runner.typed(experiments.get(name), composed(name, overrides))


@pytest.mark.parametrize("name", experiments.NAMES)
def test_every_experiment_composes_validates_and_has_its_module_shape(name):
    c = typed(name)
    # Five seeds by default; beyond's 16 sweeps fit their budget with three, claims.min_seeds (still conclusive).
    assert c.n_seeds >= (3 if name == "beyond" else 5) and c.seed == 0
    exp = experiments.get(name)
    for attr in ("Config", "TABLES", "run", "analyse", "claims", "plot", "estimate", "COST", "AFTER"):
        assert hasattr(exp, attr), (name, attr)
    assert (CONF / f"{name}.yaml").is_file()
    cost = exp.estimate(c)
    assert 0 < cost.seconds < 3600 and 0 < cost.memory_gb < 8


@pytest.mark.parametrize("group, option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group, option):
    typed("arithmetic", [f"{group}={option}"])


def test_defaults_match_the_papers_setting():
    c = typed()
    assert (c.data.d, c.data.P, c.model.m, c.data.n_rel, c.data.n_conf) == (32, 20, 256, 4, 2)
    assert (c.train.eta, c.train.batch, c.train.steps) == (1.0, 64, 300)
    assert len(c.sweep.lams()) == 51 and c.sweep.lams()[0] == -2.0 and c.sweep.lams()[-1] == 3.0
    assert set(c.sweep.alphas) <= set(c.sweep.all_alphas())


def _leaves(cls, prefix=""):
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if isinstance(default, config.Node):
            out += _leaves(type(default), f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", default, f.metadata.get("help", "")))
    return out


@pytest.mark.parametrize("name", experiments.NAMES)
def test_every_field_is_described_and_the_yaml_holds_only_what_differs(name):
    exp = experiments.get(name)
    for path, _, text in _leaves(exp.Config):
        assert text, f"{name}: field {path} has no description"
    defaults = dict((p, d) for p, d, _ in _leaves(exp.Config))
    own = yaml.safe_load((CONF / f"{name}.yaml").read_text()) or {}
    flat = config.flat({k: v for k, v in own.items() if k not in ("defaults", "hydra")})
    same = [k for k, v in flat.items() if k in defaults and str(defaults[k]) == str(v)]
    assert not same, f"conf/{name}.yaml repeats defaults of its dataclass: {same}"


def test_help_lists_every_field_with_its_meaning(capsys):
    cli.main("arithmetic", ["--help"])
    out = capsys.readouterr().out
    for path, _, text in _leaves(experiments.get("arithmetic").Config):
        assert path in out
    assert "declared beta" in out and "model=<cnn|four|gnn|gnn2|merged|mlp|multihead|pretrained|two_layer>" in out
    assert "data=<correlated|label_noise|multiclass|noise|paper|random_unit>" in out


def test_configs_are_immutable_hashable_static_arguments():
    import jax

    c = typed()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.data.d = 8                                                    # type: ignore[misc]
    assert hash(c.data) == hash(config.Data()) and c.train == config.Train()
    f = jax.jit(lambda x, spec: x * spec.P, static_argnames="spec")
    assert float(f(1.0, spec=c.data)) == 20.0


def test_unknown_keys_and_wrong_types_are_rejected_by_the_schema():
    with pytest.raises(Exception, match="nope"):
        composed(overrides=["data.nope=1"])
    with pytest.raises(Exception, match="data.d"):
        composed(overrides=["data.d=abc"])
    with pytest.raises(ValueError, match="bar=1: unknown key"):
        runner.typed(experiments.get("arithmetic"), {"data": {"bar": 1}})


@pytest.mark.parametrize("override, field", [
    ("data.n_rel=2", "data.n_rel=2"),
    ("data.n_rel=19", "data.n_rel=19"),
    ("data.d=2", "data.d=2"),
    ("data.sigma=-0.5", "data.sigma=-0.5"),
    ("model.m=0", "model.m=0"),
    ("model.form=five", "model.form='five'"),
    ("train.eta=0", "train.eta=0.0"),
    ("train.steps=0", "train.steps=0"),
    ("sweep.alphas=[0.5,1.5]", "sweep.alphas[1]=1.5"),
    ("sweep.alphas=[]", "sweep.alphas=[]"),
    ("sweep.alphas=[0.5,0.5]", "sweep.alphas=[0.5, 0.5]: must not repeat"),
    ("sweep.lam_max=-3", "sweep.lam_max=-3.0"),
    ("sweep.lam_step=0", "sweep.lam_step=0.0"),
    ("sweep.lam_step=0.8", "sweep.lam_step=0.8: must divide"),
    ("sweep.lam_step=1e-7", "sweep.lam_step=1e-07: gives 5e+07 grid points"),
    ("sweep.lam_min=1", "sweep.lam_max=3.0: gives 21 grid"),
    ("claims.eps_learned=1.5", "claims.eps_learned=1.5"),
    ("n_seeds=0", "n_seeds=0"),
    ("n_seeds=100000000", "n_seeds=100000000"),
    ("model.pretrain_tasks=-1", "model.pretrain_tasks=-1"),
    ("model.pretrain_tasks=30", "model.pretrain_tasks=30: too many for data.d=32"),
    ("model.pretrain_steps=0", "model.pretrain_steps=0"),
])
def test_bad_values_name_the_field(override, field):
    if override == "sweep.lam_min=1":
        override, field = "sweep.lam_min=3", "sweep.lam_max=3.0: gives 1 grid point"
    with pytest.raises(ValueError) as e:
        typed(overrides=[override])
    assert str(e.value).startswith(field), str(e.value)


@pytest.mark.parametrize("launcher, target", [("local", "JoblibLauncher"), ("slurm", "SlurmLauncher"),
                                              ("slurm_local", "LocalLauncher")])
def test_launcher_configs_compose(launcher, target):
    cli.register("arithmetic")
    with initialize_config_module("tvtheory.conf", version_base="1.3"):
        cfg = compose("arithmetic", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.parametrize("name, override, field", [
    ("scaling", "scaling.lam_step=0", "scaling.lam_step=0.0"),
    ("scaling", "scaling.ds=[16]", "scaling.ds=[16]"),
    ("scaling", "scaling.ds=[16,16]", "scaling.ds=[16, 16]: must not repeat"),
    ("digits", "lam_max=-9", "lam_max=-9.0: must be >= lam_min"),
    ("digits", "vit.heads=3", "vit.heads=3"),
    ("digits", "ood_ranges=[1,2]", "ood_ranges[0]=1: must be [min, max, step]"),
    ("digits", "setting.finetune_lr=0", "setting.finetune_lr=0.0"),
    ("digits", "setting.pretrain_labels=shapes", "setting.pretrain_labels='shapes': must be one of ink, digits"),
    ("digits", "map_steps=[0,800]", "map_steps[1]=800"),
    ("ood", "ood.ranges=[[-1,2,1],[1,0,1]]", "ood.ranges[1][1]=0"),
    ("ood", "ood.ranges=[5,6]", "ood.ranges[0]=5: must be [min, max, step]"),
    ("ood", "ood.ranges=[[-2,3,1e-5],[-2,2,1e-5]]", "ood.ranges=[[-2, 3, 1e-05], [-2, 2, 1e-05]]: make a grid of "
     "200000900001 points"),
    ("corollaries", "corollaries.prune=[1.0]", "corollaries.prune[0]=1.0"),
    ("corollaries", "corollaries.ranks=[]", "corollaries.ranks=[]: needs at least 1"),
    ("assumptions", "models=[merged,fuor]", "models[1]='fuor': no conf/model/fuor.yaml (options: cnn, four, gnn,"),
    ("assumptions", "models=[merged]", "models=['merged']: needs a reference"),
    ("assumptions", "data.d=6", "models[1]='pretrained' (conf/model/pretrained.yaml): model.pretrain_tasks=4"),
    ("scaling", "model.pretrain_tasks=14", "scaling.ds[0]=16"),
    ("corollaries", "corollaries.spectrum_ranks=[]", "corollaries.spectrum_ranks=[]: needs at least 1"),
    ("corollaries", "corollaries.spectrum_ranks=[2,2]", "corollaries.spectrum_ranks=[2, 2]: must not repeat"),
    ("corollaries", "sweep.phase_alphas=[0.3]", "sweep.phase_alphas=[0.3]: the corollaries draw no phase"),  # ignored
])
def test_every_experiment_names_its_own_fields(name, override, field):
    with pytest.raises(ValueError) as e:
        typed(name, [override])
    assert str(e.value).startswith(field), str(e.value)


@pytest.mark.parametrize("name, overrides, field", [
    ("arithmetic", ["n_seeds=5000"], "n_seeds=5000: the run would need"),
    ("arithmetic", ["train.steps=1000000000"], "train.steps=1000000000: the run would need"),
    ("arithmetic", ["sweep.n_test=100000000"], "sweep.n_test=100000000: the run would need"),
    # costs the estimates used to leave out (the runs were accepted and ran for hours, or ran out of memory)
    ("arithmetic", ["train.n_train=100000000"], "train.n_train=100000000: the run would need"),
    # (resetting pretrain_tasks removes the pre-training whole: the larger ratio of the two fields set)
    ("arithmetic", ["model.pretrain_tasks=1", "model.pretrain_steps=100000000"], "model.pretrain_tasks=1: the run"),
    ("ood", ["model.pretrain_tasks=1", "model.pretrain_steps=100000000"], "model.pretrain_tasks=1: the run"),
    ("unlearning", ["corpus.n_general=100000000"], "corpus.n_general=100000000: the run would need"),
    # fields outside the experiment's SIZE_FIELDS: the refusal used to name one of those, which the user never set
    ("assumptions", ["train.batch=100000000"], "train.batch=100000000: the run would need"),
    ("corollaries", ["ood.n_val=1000000000"], "ood.n_val=1000000000: the run would need"),
    ("scaling", ["data.P=1000000"], "data.P=1000000: the run would need"),
    ("merging", ["merging.ada_batch=1000000000"], "merging.ada_batch=1000000000: the run would need"),
])
def test_the_budget_refuses_a_run_before_compute_naming_the_largest_field(name, overrides, field):
    exp = experiments.get(name)
    with pytest.raises(runner.ConfigError) as e:
        runner.check_budget(exp, typed(name, overrides))
    assert str(e.value).startswith(field) and "raise budget.max_" in str(e.value), str(e.value)
    runner.check_budget(exp, typed(name, [*overrides, "budget.max_minutes=1e12", "budget.max_memory_gb=1e12"]))


@pytest.mark.slow
def test_a_non_editable_install_ships_configs_and_experiments_and_runs_outside_the_checkout(tmp_path):
    """The package reads its configs as package data (tvtheory.conf), never the checkout's folders."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "whl"), str(root)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next((tmp_path / "whl").glob("tvtheory-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"tvtheory/conf/arithmetic.yaml", "tvtheory/conf/model/four.yaml", "tvtheory/conf/common.yaml",
            "tvtheory/experiments/arithmetic.py"} <= set(names)
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    p = subprocess.run([sys.executable, "-c", "import tvtheory.cli as c, tvtheory; print(tvtheory.__file__); "
                        "c.main('ood', ['--help'])"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert str(tmp_path / "site") in p.stdout and "ood.gammas" in p.stdout
    assert "model=<cnn|four|gnn|gnn2|merged|mlp|multihead|pretrained|two_layer>" in p.stdout


def test_compiled_programs_are_kept_beside_the_cache_and_threads_pin_the_process(monkeypatch):
    """``threads`` keeps the process on that many CPUs (XLA's CPU thread pool follows the affinity), job j of a
    launcher on the j-th block; the CPUS variable (reproduce's lanes) names them; a process is pinned once."""
    import os
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv(runner.CPUS, raising=False)
    pinned = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: pinned.append(set(cpus)), raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(runner, "_pinned", False)
    runner.environment(typed(overrides=["cache.dir=/tmp/somewhere", "threads=1"]), job=2)
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == "/tmp/somewhere/xla"
    assert pinned == [{2}]
    runner.environment(typed(overrides=["threads=2"]), job=1)
    assert pinned == [{2}]                                          # a launcher's worker keeps its first job's CPUs
    assert runner.cpus_for(2, 3, [0, 1, 2, 3]) == {2, 3} and runner.cpus_for(None, 0, [0, 1]) is None
    assert runner.cpus_for(4, 0, [0, 1]) is None                    # no fewer than there are: every CPU
    assert runner.cpus_for(None, 0, [0, 1, 2, 3], "1,3-5") == {1, 3}
    for bad in ("x", "2-a", ",", "7", "0,3-1"):
        with pytest.raises(ValueError, match=runner.CPUS):
            runner.cpus_for(None, 0, [0, 1], bad)


def test_help_shows_the_defaults_a_nested_block_is_given_not_its_class_defaults():
    from tvtheory import config as C
    from tvtheory.experiments import digits

    rows = {path: default for path, default, _ in C.describe(digits.Config)}
    cfg = digits.Config()
    assert rows["pretrain.steps"] == repr(cfg.pretrain.steps) != repr(type(cfg.pretrain)().steps)
    assert rows["second.pretrain_labels"] == repr(cfg.second.pretrain_labels)


@pytest.mark.parametrize("name, override, text", [
    ("digits", "map_steps=[]", "map_steps=[]: needs at least 1"),
    ("digits", "map_steps=[5,5]", "map_steps=[5, 5]: must not repeat"),
    ("digits", "lam_min=0.5", "lam_min=0.5: the grid must hold negative lambdas"),
    ("practice", "practice.tracked=[grad_cosine,grad_cosine]", "must not repeat an estimator"),
    ("merging", "data=label_noise", "data.label_noise=0.1: must be 0"),
])
def test_the_newer_experiments_refuse_what_would_fail_after_compute(name, override, text):
    with pytest.raises(ValueError, match=re.escape(text)):
        typed(name, [override])


def test_a_command_sets_the_collectors_thresholds_and_importing_the_library_does_not():
    import subprocess
    import sys

    code = ("import gc; default = gc.get_threshold(); import tvtheory; imported = gc.get_threshold(); "
            "from tvtheory import cli; cli.main('arithmetic', ['--help']); "
            "print(default, imported, gc.get_threshold())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    default, imported, command = (eval(t) for t in re.findall(r"\([^)]*\)", out.strip().splitlines()[-1]))
    assert imported == default and command[:2] == (50_000, 20) and command != default


def test_registering_experiments_leaves_only_their_schemas_in_the_store():
    from hydra.core.config_store import ConfigStore

    schemas = lambda: sorted(k for k in ConfigStore.instance().repo if k.endswith("_schema.yaml"))  # noqa: E731
    cli.register("arithmetic", "ood")
    assert schemas() == ["arithmetic_schema.yaml", "ood_schema.yaml"]
    cli.register("practice")                  # the next command run in the same process
    assert schemas() == ["practice_schema.yaml"]
    cli.register()
    assert len(schemas()) == len(experiments.NAMES)
