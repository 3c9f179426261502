import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tvtheory import data
from tvtheory.config import Data

# Compiled once per shape: op-by-op sampling costs twice the CPU time (test_same_key_... checks both agree).
sample = jax.jit(data.sample, static_argnums=(3, 4))


@given(st.floats(-1, 1), st.integers(3, 64))
def test_pair_patterns_unit_norm_with_inner_product_alpha(alpha, d):
    mus = np.asarray(data.pair_patterns(alpha, d))
    assert np.linalg.norm(mus, axis=1) == pytest.approx([1, 1], abs=1e-6)
    assert mus[0] @ mus[1] == pytest.approx(alpha, abs=1e-6)


@pytest.mark.parametrize("key", [None, jax.random.key(3)])
def test_irrelevant_patterns_orthonormal_and_orthogonal_to_tasks(key):
    mus = data.pair_patterns(0.3, 16)
    irr = np.asarray(data.irrelevant_patterns(mus, key=key))
    assert irr.shape == (14, 16)
    assert irr @ irr.T == pytest.approx(np.eye(14), abs=1e-5)
    assert np.abs(irr @ np.asarray(mus).T).max() < 1e-5


def test_ood_patterns_k_sources():
    src, tgt = data.ood_patterns([0.6, -0.5, 0.3], None, 10)
    src, tgt = np.asarray(src), np.asarray(tgt)
    assert src @ src.T == pytest.approx(np.eye(3), abs=1e-6)
    assert src @ tgt == pytest.approx([0.6, -0.5, 0.3], abs=1e-6)
    assert np.linalg.norm(tgt) == pytest.approx(1.0, abs=1e-6)
    irr = np.asarray(data.irrelevant_patterns(np.vstack([src, tgt])))
    assert irr.shape == (6, 10) and np.abs(irr @ tgt).max() < 1e-6


@given(st.integers(0, 1000), st.sampled_from([(20, 4, 2), (10, 3, 0), (6, 3, 2)]))
def test_sample_counts_match_label(seed, shape):
    P, n_rel, n_conf = shape
    spec = Data(d=8, P=P, n_rel=n_rel, n_conf=n_conf)
    mus = data.pair_patterns(0.0, 8)
    irr = data.irrelevant_patterns(mus)
    X, y = sample(jax.random.key(seed), mus[0], irr, 64, spec)
    assert X.shape == (64, P, 8) and y.shape == (64,)
    proj = np.asarray(X @ mus[0])
    n_plus, n_minus = (np.isclose(proj, 1)).sum(1), (np.isclose(proj, -1)).sum(1)
    yv = np.asarray(y)
    assert np.all(np.where(yv > 0, n_plus, n_minus) == n_rel)
    assert np.all(np.where(yv > 0, n_minus, n_plus) == n_conf)
    # the rest are irrelevant patterns: unit norm, no task component
    irr_tok = np.isclose(proj, 0)
    assert np.allclose(np.linalg.norm(np.asarray(X)[irr_tok], axis=-1), 1)
    assert set(np.unique(yv)) <= {-1.0, 1.0}


def test_sample_positions_are_shuffled_and_labels_balanced():
    mus = data.pair_patterns(0.0, 8)
    X, y = sample(jax.random.key(0), mus[0], data.irrelevant_patterns(mus), 4000)
    first = np.abs(np.asarray(X[:, 0] @ mus[0]))
    assert 0.2 < first.mean() < 0.4            # 6 of 20 tokens carry mu: position 0 does so ~30% of the time
    assert abs(float(jnp.mean(y))) < 0.06


def test_same_key_same_sample_and_vmap_over_keys():
    mus = data.pair_patterns(0.5, 8)
    irr = data.irrelevant_patterns(mus)
    a = data.sample(jax.random.key(7), mus[1], irr, 5)
    b = sample(jax.random.key(7), mus[1], irr, 5, Data())
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    keys = jax.random.split(jax.random.key(0), 3)
    Xs, ys = jax.jit(jax.vmap(lambda k: data.sample(k, mus[0], irr, 5)))(keys)
    assert Xs.shape == (3, 5, 20, 8)
    assert np.array_equal(Xs[1], data.sample(keys[1], mus[0], irr, 5)[0])


def test_noise_is_added_when_sigma_positive():
    mus = data.pair_patterns(0.0, 8)
    irr = data.irrelevant_patterns(mus)
    X0, _ = sample(jax.random.key(1), mus[0], irr, 8, Data())
    X1, _ = sample(jax.random.key(1), mus[0], irr, 8, Data(sigma=0.1))
    diff = np.asarray(X1 - X0)
    assert 0.05 < diff.std() < 0.15


@pytest.mark.parametrize("spec", [Data(), Data(d=8, P=20, n_rel=4, n_conf=2), Data(d=6, P=10, n_rel=3, n_conf=0),
                                  Data(d=8, P=6, n_rel=4, n_conf=2)])
def test_max_distinct_bounds_the_distinct_tokens_of_every_sample(spec):
    mus = data.pair_patterns(0.5, spec.d)
    irr = data.irrelevant_patterns(mus)
    X, _ = sample(jax.random.key(3), mus[1], irr, 500, spec)
    distinct = [len({tuple(x) for x in one}) for one in np.asarray(X)]
    bound = spec.max_distinct(irr.shape[0])
    assert max(distinct) <= bound <= spec.P
    assert max(distinct) == bound                        # 500 samples reach the bound in these settings
    assert dataclasses.replace(spec, sigma=0.1).max_distinct(irr.shape[0]) == spec.P


@pytest.mark.parametrize("spec, M, bound", [
    (Data(P=20, n_rel=4, n_conf=2), 6, 8),          # +mu, -mu and all 6 patterns fit in the 14 irrelevant slots
    (Data(P=20, n_rel=4, n_conf=2), 100, 16),       # at most 14 irrelevant tokens, whatever M
    (Data(P=10, n_rel=3, n_conf=0), 4, 5),          # no confusion token: -mu never appears
    (Data(P=6, n_rel=4, n_conf=2), 6, 2),           # no irrelevant slot at all
    (Data(P=3, n_rel=1, n_conf=0), 50, 3),          # never more than P
    (Data(P=20, n_rel=4, n_conf=2, sigma=0.01), 1, 20),     # noise makes every token unique
])
def test_max_distinct_hand_computed(spec, M, bound):
    assert spec.max_distinct(M) == bound


def test_data_block_is_an_immutable_static_argument():
    """Equal blocks hash alike and share one compiled program; a different block compiles its own."""
    a, b = Data(d=8, P=10, n_rel=3, n_conf=1), Data(d=8, P=10, n_rel=3, n_conf=1)
    assert a == b and hash(a) == hash(b) and a is not b
    c = dataclasses.replace(a, n_conf=0)
    assert c != a and (c.n_conf, a.n_conf) == (0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.P = 12
    mus = data.pair_patterns(0.0, 8)
    irr = data.irrelevant_patterns(mus)
    traces = []

    def draw(key, spec):
        traces.append(spec)
        return data.sample(key, mus[0], irr, 4, spec)

    f = jax.jit(draw, static_argnames="spec")
    Xa, _ = f(jax.random.key(0), spec=a)
    Xb, _ = f(jax.random.key(0), spec=b)
    assert traces == [a] and np.array_equal(Xa, Xb)
    Xc, _ = f(jax.random.key(0), spec=c)
    assert traces == [a, c]
    assert (np.abs(np.asarray(Xc) @ np.asarray(mus[0])) > 0.5).sum(1).tolist() == [3] * 4


@pytest.mark.parametrize("call, field", [
    (lambda: data.pair_patterns(1.5, 8), "alpha=1.5"),
    (lambda: data.pair_patterns(float("nan"), 8), "alpha=nan"),
    (lambda: Data(P=20, n_rel=2, n_conf=2).check(), "n_rel=2"),
    (lambda: Data(P=5, n_rel=4, n_conf=2).check(), "n_rel=4"),
    (lambda: Data(P=20, n_rel=4, n_conf=2, sigma=-1.0).check(), "sigma=-1.0"),
    (lambda: data.ood_patterns([0.9, 0.9], None, 8), "gammas="),
    (lambda: data.ood_patterns([0.0, 0.0], None, 8), "gammas="),
    (lambda: data.ood_patterns([0.6], 0.1, 8), "kappa=0.1"),
    (lambda: data.ood_patterns([0.6, 0.5], None, 2), "d=2"),
    (lambda: data.irrelevant_patterns(data.pair_patterns(0.0, 4), M=5), "d=4"),
])
def test_bad_input_names_the_argument(call, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[")):
        call()


def test_pretraining_tasks_avoid_the_studied_span():
    studied = np.vstack([np.asarray(data.pair_patterns(0.5, 12)), np.eye(12)[2]])
    mus, irr = (np.asarray(x) for x in data.pretraining_tasks(studied, 3))
    assert mus.shape == (3, 12) and irr.shape == (3, 8, 12)
    assert np.abs(mus @ studied.T).max() == 0 and np.abs(irr @ studied.T).max() == 0
    assert mus @ mus.T == pytest.approx(np.eye(3))
    for j in range(3):            # each task's irrelevant patterns: the other free basis vectors, never its own
        assert irr[j] @ irr[j].T == pytest.approx(np.eye(8))
        assert np.abs(irr[j] @ mus[j]).max() == 0
    with pytest.raises(ValueError, match="pretrain_tasks=9: too many"):
        data.pretraining_tasks(studied, 9)


@pytest.mark.parametrize("P", [1, 2, 20, 64, 65])             # 65: past the counting path's limit, a plain sort
def test_argsort_rows_is_a_stable_argsort_ties_included(P):
    u = jax.random.uniform(jax.random.key(P), (50, 3, P))
    both = jax.jit(lambda k: (data.argsort_rows(k), jnp.argsort(k, axis=-1, stable=True)))
    for levels in (None, 5, 2):                                # with few levels, many ties
        keys = u if levels is None else jnp.floor(u * levels) / levels
        assert np.array_equal(*both(keys))


@pytest.mark.parametrize("classes", [2, 4])
def test_samples_are_rows_of_the_pattern_table_picked_by_their_ids(classes):
    """Tokens as ids: table[ids] is the sampled X and the labels are the sampled ones, bit for bit (the training path
    of sweep.finetune_from rests on it), and each id names the row its token is."""
    from tvtheory import data_options

    spec = Data(d=12, classes=classes)
    mu = np.asarray(data_options.pair_patterns(0.3, spec))[1]
    irr = np.asarray(data.irrelevant_patterns(np.eye(12)[:spec.pair_dirs()]))
    key = jax.random.key(5)
    X, y = data_options.train_sample(key, mu, irr, 50, spec)
    ids, y_ids = data_options.train_ids(key, irr.shape[0], 50, spec)
    table = np.asarray(data_options.table(mu, irr, spec))
    np.testing.assert_array_equal(table[np.asarray(ids)], np.asarray(X))
    np.testing.assert_array_equal(np.asarray(y_ids), np.asarray(y))
    assert ids.dtype == jnp.int32 and ids.shape == (50, spec.P) and 0 <= int(ids.min()) and int(ids.max()) < len(table)
    if classes == 2:                        # the label's pattern is row 0 (+mu) when y = +1, row 1 (-mu) when y = -1
        relevant = (np.asarray(ids) == np.where(np.asarray(y) > 0, 0, 1)[:, None]).sum(1)
        assert np.all(relevant == spec.n_rel)
