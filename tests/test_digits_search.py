"""experiments/digits_search.py: the criterion that chose Colored-Digits' Psi_0 on hand-made tables, and the --quick
run end to end (its tables, their columns, and the ranking it prints and writes)."""

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SEARCH_COLUMNS = ["variant", "pre_steps", "pre_lr", "ft_steps", "ft_lr", "t1_r_odd", "t1_r_even", "aligned", "seed",
                  "pre_train_acc", "alpha_irrelevant", "alpha_aligned", "alpha_contradictory", "tvcos_irrelevant",
                  "tvcos_aligned", "tvcos_contradictory", "own_T1", "own_irrelevant", "own_aligned",
                  "own_contradictory", "T1_on_irrelevant", "config_seconds"]


def load_script():
    spec = importlib.util.spec_from_file_location("digits_search", ROOT / "experiments" / "digits_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ds = load_script()


def rows(variant, pre_steps, ft_lr, alphas, own_T1=0.9, own_T2=0.8):
    """One config's table: a seed per (irrelevant, aligned, contradictory) alpha_hat triple."""
    return [{"variant": variant, "pre_steps": pre_steps, "ft_steps": 60, "ft_lr": ft_lr, "t1_r_odd": 0.9,
             "t1_r_even": 0.1, "seed": 100 + s, "alpha_irrelevant": a[0], "alpha_aligned": a[1],
             "alpha_contradictory": a[2], "own_T1": own_T1[s] if isinstance(own_T1, list) else own_T1,
             "own_irrelevant": 0.7, "own_aligned": own_T2, "own_contradictory": own_T2} for s, a in enumerate(alphas)]


def test_a_config_failing_one_seed_is_not_chosen_even_with_the_larger_margins_elsewhere():
    table = pd.DataFrame(
        rows("col", 30, 1e-3, [(0.0, 0.99, -0.99), (0.05, 0.99, -0.99), (0.35, 0.99, -0.99)])        # seed 102 fails
        + rows("ink", 400, 3e-4, [(0.25, 0.9, -0.8), (0.1, 0.75, -0.9), (-0.28, 0.95, -0.95)]))      # passes
    r = ds.rank(table)
    assert list(r["variant"]) == ["ink", "col"]
    assert list(r["passes"]) == [True, False] and list(r["seeds_pass"]) == [3, 2]
    # the ink config's margins per seed: min(0.3 - |a_irr|, a_ali - 0.7, -0.5 - a_con) = 0.05, 0.05, 0.02
    assert r["worst_margin"].iloc[0] == pytest.approx(0.02)
    assert r["worst_margin"].iloc[1] == pytest.approx(-0.05)


def test_an_accuracy_floor_missed_on_one_seed_fails_the_config():
    good = [(0.0, 0.99, -0.99)] * 3
    table = pd.DataFrame(rows("ink", 100, 1e-3, good, own_T1=[0.9, 0.84, 0.9])                      # T1 < 0.85
                         + rows("ink", 30, 1e-3, good, own_T2=0.74)                                  # T2 < 0.75
                         + rows("d10", 400, 1e-3, [(0.29, 0.71, -0.51)] * 3))                        # thin but passes
    r = ds.rank(table)
    assert r["passes"].tolist() == [True, False, False] and r["variant"].iloc[0] == "d10"
    assert r["seeds_pass"].tolist()[1:] == [2, 0]


def test_equal_margins_go_to_the_config_with_fewer_changes_to_the_previous_defaults():
    alphas = [(0.1, 0.9, -0.9)] * 2
    table = pd.DataFrame(rows("ink+zerohead", 100, 3e-4, alphas) + rows("ink", 10, 3e-4, alphas)
                         + rows("ink", 400, 3e-4, alphas) + rows("d10", 400, 1e-3, alphas))
    r = ds.rank(table)
    assert list(zip(r["variant"], r["pre_steps"], r["changes"])) == [
        ("d10", 400, 0), ("ink", 400, 2), ("ink", 10, 3), ("ink+zerohead", 100, 4)]


def config(variant, pre_steps, ft_steps, ft_lr, t1_r_odd, t1_r_even):
    return dict(variant=variant, pre_steps=pre_steps, ft_steps=ft_steps, ft_lr=ft_lr, t1_r_odd=t1_r_odd,
                t1_r_even=t1_r_even)


def test_changes_count_settings_not_fields():
    assert ds.changes(config("d10", 400, 60, 1e-3, 0.9, 0.1)) == 0
    assert ds.changes(config("ink", 400, 60, 1e-3, 0.8, 0.2)) == 2        # T1's rule is one setting
    assert ds.changes(config("ink+zerohead", 400, 120, 3e-4, 0.9, 0.1)) == 4


def test_the_candidates_are_distinct_and_include_the_previous_defaults():
    assert len(set(ds.CANDIDATES)) == len(ds.CANDIDATES) == 43
    assert ds.PREVIOUS in ds.CANDIDATES and set(ds.QUICK) <= set(ds.CANDIDATES)
    with pytest.raises(ValueError, match="variant='inkx'"):
        ds.pretrain_set(None, "inkx")


@pytest.mark.slow
def test_the_quick_search_writes_its_three_tables_and_applies_the_criterion(tmp_path, monkeypatch, capsys):
    """The script's main in this process (its command line: ``python experiments/digits_search.py --quick --out``)."""
    monkeypatch.setattr(sys, "argv", ["digits_search.py", "--quick", "--out", str(tmp_path)])
    ds.main()
    stdout = capsys.readouterr().out
    search, replication = (pd.read_csv(tmp_path / f"{name}.csv") for name in ("search", "replication"))
    ranking = pd.read_csv(tmp_path / "ranking.csv")
    assert list(search.columns) == list(replication.columns) == SEARCH_COLUMNS
    assert len(search) == len(replication) == 4
    assert sorted(search["seed"].unique()) == [100, 101] and sorted(replication["seed"].unique()) == [105, 106]
    assert search[[c for c in search if c.startswith("alpha_")]].abs().le(1 + 1e-6).all().all()
    assert search[[c for c in search if c.startswith("own_")]].apply(lambda c: c.between(0, 1)).all().all()
    # ranking.csv is the criterion applied to search.csv, and the first row is what the script prints as chosen
    again = ds.rank(search).round(4)
    assert list(ranking.columns) == list(again.columns)
    pd.testing.assert_frame_equal(ranking.drop(columns="sec_per_config"), again.drop(columns="sec_per_config"),
                                  check_dtype=False)
    first = ds.as_candidate(ranking.iloc[0])
    assert (f"chosen: {first}" if ranking["passes"].iloc[0] else "no config passes") in stdout
    # the replication reruns the two best configs on fresh seeds
    top = {ds.as_candidate(r) for _, r in ranking.head(2).iterrows()}
    assert {ds.as_candidate(r) for _, r in replication.iterrows()} == top
