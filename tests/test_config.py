"""Every config composes through Hydra's compose API, and bad values are rejected with the field named."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tvtheory import config

CONF = Path(__file__).resolve().parent.parent / "conf"
config.register_configs()
PRIMARY = sorted(p.stem for p in CONF.glob("*.yaml"))
GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in CONF.iterdir() if g.is_dir()}


def composed(name="arithmetic", overrides=()):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("name", PRIMARY)
def test_primary_configs_compose_and_validate(name):
    c = config.to_dataclass(composed(name))
    assert c.n_seeds >= 5


@pytest.mark.parametrize("group, option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group, option):
    config.to_dataclass(composed("arithmetic", [f"{group}={option}"]))


def test_defaults_match_theory_section_7():
    c = config.to_dataclass(composed())
    assert (c.data.d, c.data.P, c.model.m, c.data.n_rel, c.data.n_conf) == (32, 20, 256, 4, 2)
    assert (c.train.eta, c.train.batch, c.train.steps) == (1.0, 64, 300)
    assert len(c.sweep.lams()) == 51 and c.sweep.lams()[0] == -2.0 and c.sweep.lams()[-1] == 3.0
    assert set(c.sweep.alphas) <= set(c.sweep.all_alphas())


def test_unknown_keys_and_wrong_types_are_rejected_by_the_schema():
    with pytest.raises(Exception, match="nope"):
        composed(overrides=["data.nope=1"])
    with pytest.raises(Exception, match="data.d"):
        composed(overrides=["data.d=abc"])


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
    ("sweep.lam_max=-3", "sweep.lam_max=-3.0"),
    ("sweep.lam_step=0", "sweep.lam_step=0.0"),
    ("claims.eps_learned=1.5", "claims.eps_learned=1.5"),
    ("n_seeds=0", "n_seeds=0"),
    ("model.pretrain_tasks=-1", "model.pretrain_tasks=-1"),
    ("model.pretrain_tasks=30", "model.pretrain_tasks=30: too many for data.d=32"),
    ("model.pretrain_steps=0", "model.pretrain_steps=0"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[")):
        config.to_dataclass(composed(overrides=[override]))


@pytest.mark.parametrize("launcher, target", [("local", "JoblibLauncher"), ("slurm", "SlurmLauncher"),
                                              ("slurm_local", "LocalLauncher")])
def test_launcher_configs_compose(launcher, target):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("arithmetic", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.parametrize("name, override, field", [
    ("scaling", "scaling.lam_step=0", "scaling.lam_step=0.0"),
    ("scaling", "scaling.ds=[16]", "scaling.ds=[16]"),
    ("digits", "lam_max=-9", "lam_max=-9.0: must be >= lam_min"),
    ("digits", "vit.heads=3", "vit.heads=3"),
    ("ood", "ood.ranges=[[-1,2,1],[1,0,1]]", "ood.ranges[1][1]=0"),
    ("corollaries", "corollaries.prune=[1.0]", "corollaries.prune[0]=1.0"),
    ("assumptions", "models=[merged,fuor]", "models[1]='fuor': no conf/model/fuor.yaml (options: four, merged,"),
    ("assumptions", "models=[merged]", "models=['merged']: needs a reference"),
    ("assumptions", "data.d=6", "models[1]='pretrained' (conf/model/pretrained.yaml): model.pretrain_tasks=4"),
    ("scaling", "model.pretrain_tasks=14", "scaling.ds[0]=16"),
])
def test_every_experiment_names_its_own_fields(name, override, field):
    with pytest.raises(ValueError) as e:
        config.to_dataclass(composed(name, [override]))
    assert str(e.value).startswith(field)
