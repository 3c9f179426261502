"""Validation through the real command line, bit-for-bit reruns, cache and resume after SIGKILL, divergence."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvtheory import cache, model

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "experiments" / "arithmetic.py")
TINY = ["sweep=tiny", "train=tiny", "n_seeds=2", "data.d=8", "model.m=32"]

BAD = [  # (override, text the one-line message must contain)
    ("data.alpha=0.3", "data.alpha"),                     # unknown key
    ("+data.bar=1", "data.bar=1: unknown key"),
    ("+foo=1", "foo=1: unknown key"),
    ("data.d=abc", "data.d"),                             # wrong type
    ("n_seeds=1.5", "n_seeds"),
    ("sweep=nope", "sweep/nope"),                         # missing option
    ("sweep.alphas=[0.2,1.5]", "sweep.alphas[1]=1.5"),    # |alpha| <= 1
    ("sweep.phase_alphas=[-2.0]", "sweep.phase_alphas[0]=-2.0"),
    ("data.n_rel=2", "data.n_rel=2"),                     # n_rel > n_conf
    ("data.n_conf=-1", "data.n_conf=-1"),
    ("data.n_rel=19", "data.n_rel=19"),                   # n_rel + n_conf <= P
    ("data.d=2", "data.d=2"),                             # room for the patterns
    ("data.sigma=-0.1", "data.sigma=-0.1"),
    ("data.irrelevant=spiral", "data.irrelevant='spiral'"),
    ("model.m=0", "model.m=0"),
    ("model.form=five", "model.form='five'"),
    ("model.form=four", "model.sigma_w=0.0"),
    ("train.eta=0", "train.eta=0.0"),
    ("train.eta=nan", "train.eta=nan"),
    ("train.steps=0", "train.steps=0"),
    ("train.batch=0", "train.batch=0"),
    ("train.log_every=1000", "train.log_every=1000"),
    ("sweep.lam_max=-5", "sweep.lam_max=-5.0"),
    ("sweep.lam_step=0", "sweep.lam_step=0.0"),
    ("sweep.lam_min=inf", "sweep.lam_min=inf"),
    ("sweep.n_test=0", "sweep.n_test=0"),
    ("sweep.alphas=[]", "sweep.alphas=[]"),
    ("claims.eps_learned=0", "claims.eps_learned=0.0"),
    ("claims.kept_cap=2", "claims.kept_cap=2.0"),
    ("n_seeds=0", "n_seeds=0"),
    ("seed=-1", "seed=-1"),
]


def run(*overrides, **kw):
    return subprocess.Popen([sys.executable, SCRIPT, *overrides], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_bad_overrides_stop_with_one_line_naming_the_field(tmp_path):
    out, cache_dir = tmp_path / "results", tmp_path / "cache"
    procs = [(o, msg, run(*TINY, o, f"out_dir={out}", f"cache.dir={cache_dir}")) for o, msg in BAD]
    for override, msg, p in procs:
        _, err = p.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert p.returncode == 2, (override, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("config error: ") and msg in lines[0], (override, lines)
    assert not out.exists() and not cache_dir.exists()
    assert not list(tmp_path.glob(".*staging*"))


def files(d: Path) -> dict:
    return {f.name: f.read_bytes() for f in d.glob("*.csv")}


def test_rerun_is_byte_identical_with_and_without_cache_and_refresh_recomputes(tmp_path):
    cdir = f"cache.dir={tmp_path / 'cache'}"
    outs = {name: tmp_path / name for name in ("plain", "cold", "warm", "refresh")}
    extra = {"plain": ["cache.dir=null"], "cold": [cdir], "warm": [cdir], "refresh": [cdir, "cache.refresh=true"]}
    logs = {}
    for name, out in outs.items():                     # in order: the warm run reads what the cold run stored
        _, logs[name] = (p := run(*TINY, f"out_dir={out}", *extra[name])).communicate(timeout=300)
        assert p.returncode == 0, logs[name]
    assert " 0 computed" in logs["warm"] and " 0 entries reused" in logs["refresh"]
    assert any((tmp_path / "cache" / "xla").iterdir())            # compiled programs are kept beside the cache
    tables = [files(out) for out in outs.values()]
    assert all(t == tables[0] for t in tables) and len(tables[0]) == 3


def test_a_killed_writers_leftovers_go_when_the_file_is_written_again_and_no_live_writers_do(tmp_path):
    from tvtheory import results

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                      # a pid that no longer runs
    host = results._host()
    target, out = tmp_path / "abc.npz", tmp_path / "run"
    left = {"dead": tmp_path / f".abc.npz.{host}-{dead.pid}.x1y2z3ab.tmp",
            "live": tmp_path / f".abc.npz.{host}-{os.getpid()}.q9w8e7rt.tmp",             # a writer still running
            "other host": tmp_path / f".abc.npz.elsewhere_{host}-{dead.pid}.k3j4h5g6.tmp",
            "other file": tmp_path / f".abd.npz.{host}-{dead.pid}.m1n2b3v4.tmp",
            "stage": tmp_path / f".run.staging.{host}-{dead.pid}.p0o9i8u7"}
    for name, p in left.items():
        p.mkdir() if name == "stage" else p.write_bytes(b"half")
    results.write_text(target, "whole")
    assert target.read_text() == "whole"
    assert {n for n, p in left.items() if p.exists()} == {"live", "other host", "other file", "stage"}
    with results.staged(out) as stage:
        (stage / "t.csv").write_text("x")
    assert {n for n, p in left.items() if p.exists()} == {"live", "other host", "other file"}
    assert (out / "t.csv").read_text() == "x" and not list(tmp_path.glob(f".run.staging.{host}-{os.getpid()}.*"))


def test_sigkill_mid_sweep_then_resume_finishes_without_redoing_work(tmp_path):
    out, cdir = tmp_path / "out", tmp_path / "cache"
    args = [*TINY, "sweep.alphas=[-0.8,-0.4,0.0,0.4,0.8,1.0]", "sweep.lam_step=0.1", "sweep.n_test=2000",
            f"out_dir={out}", f"cache.dir={cdir}"]
    p = run(*args, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((cdir / "pair_eval").glob("*.npz"))) < 4:
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done = len(list((cdir / "pair_eval").glob("*.npz")))
    assert 4 <= done < 12, "the kill should land mid-sweep"
    assert not out.exists()                                         # nothing half-written in the results
    p = run(*args)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    reused = int(err.split("cache: ")[1].split(" entries reused")[0])
    assert reused >= done + 2 + 2                                   # finished cells, Psi_0 and T1 fine-tunes
    rows = __import__("pandas").read_csv(out / "metrics.csv")
    assert len(rows) == 6 * 2 * 31 * 2 and not rows.duplicated(["alpha", "seed", "lam", "task"]).any()
    assert not list(cdir.rglob("*.tmp")) and not list(tmp_path.glob(".*staging*"))
    ref = run(*args[:-2], f"out_dir={tmp_path / 'ref'}", "cache.dir=null")
    assert ref.wait(300) == 0
    assert (tmp_path / "ref" / "metrics.csv").read_bytes() == (out / "metrics.csv").read_bytes()


def test_all_diverged_stops_with_a_message_and_writes_nothing(tmp_path):
    out = tmp_path / "o"
    _, err = (p := run(*TINY, "train.eta=1e30", "model.sigma_w=1.0", f"out_dir={out}", "cache.dir=null")).communicate(
        timeout=300)
    assert p.returncode == 3 and "diverged" in err.strip().splitlines()[-1]
    assert not out.exists()


def test_cache_checks_shapes_and_dtypes(tmp_path):
    store = cache.Store(tmp_path)
    p = model.init_params(jax.random.key(0), 8, 16)
    fields = {"seed": 0, "d": 8}
    store.save("psi0", fields, p)
    back = store.load("psi0", fields, p)
    assert all(np.array_equal(back[k], p[k]) for k in p)
    wrong = {"W": jnp.zeros((8, 8)), "V": jnp.zeros((32, 8))}
    with pytest.raises(cache.CacheMismatch, match=r"\['V'\]: stored float32\[16, 8\], expected float32\[32, 8\]"):
        store.load("psi0", fields, wrong)
    assert store.load("psi0", {**fields, "d": 9}, p) is None        # another config, another key
    assert cache.Store(tmp_path, refresh=True).load("psi0", fields, p) is None
