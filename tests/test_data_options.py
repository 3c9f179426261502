"""The data options of tvtheory/data_options.py, each tested for what it promises. Samplers are jitted once per
shape; keys use the "rbg" PRNG, whose programs compile ~3x faster than threefry's (nothing here depends on it)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tvtheory import data, data_options
from tvtheory.config import Data

key = partial(jax.random.key, impl="rbg")
D = 16
TASK = Data(d=D, P=20, n_rel=4, n_conf=2)


def four_sigma(p, n):
    """Four binomial standard deviations of a rate p measured on n draws."""
    return 4 * np.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------------------------------------------ token noise


def test_token_noise_has_the_requested_std():
    mus = data.pair_patterns(0.0, D)
    irr = data.irrelevant_patterns(mus)
    spec = data_options.noisy(TASK, 0.3)
    assert spec.sigma == 0.3 and data_options.noisy(spec, 0.0) == TASK
    both = jax.jit(lambda k: (data.sample(k, mus[0], irr, 500, TASK), data.sample(k, mus[0], irr, 500, spec)))
    (X0, y0), (X, y) = both(key(0))
    assert np.array_equal(y0, y)                                  # the same samples, noise added
    dev = np.asarray(X - X0)
    assert dev.std() == pytest.approx(0.3, rel=0.01) and abs(dev.mean()) < 0.003
    r = np.corrcoef(dev[:, :, 0].ravel(), dev[:, :, 1].ravel())[0, 1]
    assert abs(r) < 4 / np.sqrt(dev[:, :, 0].size)                                     # independent coordinates
    with pytest.raises(ValueError, match="sigma=-0.1"):
        data_options.noisy(TASK, -0.1)


# ------------------------------------------------------------------------------------------ non-orthogonal patterns


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_correlated_irrelevant_patterns(alpha):
    mus = data.pair_patterns(alpha, D)
    rhos = jnp.array([0.0, 0.3, -0.5])
    V_RxMxD = np.asarray(jax.jit(jax.vmap(lambda r: data_options.correlated_irrelevant(key(1), 12, mus, r)))(rhos))
    for rho, V in zip(np.asarray(rhos), V_RxMxD):
        assert np.linalg.norm(V, axis=1) == pytest.approx(np.ones(12), abs=1e-5)
        assert V @ np.asarray(mus[0]) == pytest.approx(np.full(12, rho), abs=1e-5)
        assert V @ np.asarray(mus[1]) == pytest.approx(np.full(12, rho * alpha), abs=1e-5)
        off = (V @ V.T)[~np.eye(12, dtype=bool)]
        assert np.abs(off - rho**2).max() > 0.05                     # not orthogonal to each other beyond rho
        u = (V - rho * np.asarray(mus[0])) / np.sqrt(1 - rho**2)      # the random part
        assert np.abs(u @ np.asarray(mus).T).max() < 1e-5            # lies off the task span


def test_correlated_irrelevant_tokens_shift_the_mean_along_mu():
    # Every irrelevant token carries rho mu whatever the label: a sample's mu-component sums to
    # y (n_rel - n_conf) + rho n_irr.
    mus = data.pair_patterns(0.0, D)
    rho = 0.4
    irr = data_options.correlated_irrelevant(key(2), 12, mus, rho)
    X, y = jax.jit(lambda k: data.sample(k, mus[0], irr, 300, TASK))(key(3))
    along = np.asarray(X @ mus[0]).sum(1)
    assert along == pytest.approx(np.asarray(y) * 2 + rho * 14, abs=1e-4)


def test_random_unit_patterns_and_bad_arguments():
    V = np.asarray(jax.jit(lambda k: data_options.random_unit_patterns(k, 50, D))(key(4)))
    assert np.linalg.norm(V, axis=1) == pytest.approx(np.ones(50), abs=1e-5)
    assert np.abs(V[:, 0]).max() > 0.1                          # no constraint: they overlap e_1 = mu_T1
    with pytest.raises(ValueError, match="rho=1.5"):
        data_options.correlated_irrelevant(key(0), 3, data.pair_patterns(0.0, D), 1.5)
    with pytest.raises(ValueError, match="d=2"):
        data_options.correlated_irrelevant(key(0), 3, data.pair_patterns(0.0, 2))


# ----------------------------------------------------------------------------------------------------- multi-class


@given(st.floats(-1, 1))
def test_multiclass_pair_patterns_have_inner_product_alpha(alpha):
    K = 3                                  # one shape: the eager ops compile once for every example
    T = np.asarray(data_options.multiclass_pair_patterns(alpha, K, D))
    assert T.shape == (2, K, D)
    for t in T:
        assert t @ t.T == pytest.approx(np.eye(K), abs=1e-6)        # each task's classes orthonormal
    assert T[0] @ T[1].T == pytest.approx(alpha * np.eye(K), abs=1e-6)
    irr = np.asarray(data.irrelevant_patterns(T.reshape(-1, D)))
    assert irr.shape == (D - (2 * K if abs(alpha) < 1 else K), D) and np.abs(irr @ T.reshape(-1, D).T).max() < 1e-6


K = 3


@pytest.fixture(scope="module")
def multiclass_samples():
    mus = data_options.class_patterns(K, D)
    irr = data.irrelevant_patterns(mus)
    X, y = jax.jit(lambda k: data_options.sample_multiclass(k, mus, irr, 3000, TASK))(key(5))
    return np.asarray(mus), np.asarray(X), np.asarray(y)


def test_multiclass_counts_and_majority(multiclass_samples):
    mus, X, y = multiclass_samples
    assert X.shape == (3000, 20, D) and X.dtype == np.float32 and y.dtype == np.int32
    counts = np.isclose(X @ mus.T, 1).sum(1)                         # (n, K) tokens of each class pattern
    own = counts[np.arange(len(y)), y]
    assert np.all(own == 4)                                          # n_rel of its own class
    assert np.all(counts.sum(1) == 6)                                # plus n_conf of the others
    assert np.all(np.argmax(counts, 1) == y)                         # the class is the plurality
    irr_tok = np.isclose(np.abs(X @ mus.T).sum(-1), 0)
    assert np.all(irr_tok.sum(1) == 14) and np.allclose(np.linalg.norm(X[irr_tok], axis=-1), 1)


def test_multiclass_balance_and_confusion_uniform(multiclass_samples):
    mus, X, y = multiclass_samples
    freq = np.bincount(y, minlength=K) / len(y)
    assert np.all(np.abs(freq - 1 / K) < four_sigma(1 / K, len(y)))
    counts = np.isclose(X @ mus.T, 1).sum(1)
    # Confusion tokens of class 0 samples split evenly between classes 1 and 2.
    conf = counts[y == 0][:, 1:].sum(0)
    share = conf[0] / conf.sum()
    assert abs(share - 0.5) < four_sigma(0.5, conf.sum())
    positions = np.isclose(X[:, 0] @ mus.T, 1).any(-1).mean()        # position 0 holds a class token ~6/20
    assert abs(positions - 0.3) < four_sigma(0.3, len(y))


def test_multiclass_sampler_is_vmappable_and_deterministic():
    mus = data_options.multiclass_pair_patterns(0.5, K, D)
    irr = data.irrelevant_patterns(mus.reshape(-1, D))
    f = jax.jit(jax.vmap(lambda k, m: data_options.sample_multiclass(k, m, irr, 8, TASK)))
    keys = jax.random.split(key(8), 2)
    (X, y), (X2, y2) = f(keys, mus), f(keys, mus)
    assert X.shape == (2, 8, 20, D) and np.array_equal(X, X2) and np.array_equal(y, y2)
    # task 2's samples are made of its own patterns
    assert np.isclose(np.asarray(X[1]) @ np.asarray(mus[1]).T, 1).sum() == 8 * 6


# ----------------------------------------------------------------------------------------------------- label noise


def test_label_flip_rate_and_clean_test_sets():
    mus = data.pair_patterns(0.0, D)
    irr = data.irrelevant_patterns(mus)

    @jax.jit
    def draws(k):
        noisy = data_options.sample_flipped(k, mus[0], irr, 4000, TASK, 0.2)
        clean = data_options.sample_flipped(k, mus[0], irr, 4000, TASK, 0.2, train=False)
        return noisy, clean, data.sample(k, mus[0], irr, 4000, TASK)

    (X, y), (Xc, yc), (X0, y0) = draws(key(6))
    assert np.array_equal(X, X0) and np.array_equal(Xc, X0) and np.array_equal(yc, y0)
    flipped = np.asarray(y) != np.asarray(y0)
    assert np.all(np.asarray(y)[flipped] == -np.asarray(y0)[flipped])
    assert abs(flipped.mean() - 0.2) < four_sigma(0.2, 4000)


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_multiclass_label_flips(eta):
    y = jnp.arange(6000) % 4
    y2 = np.asarray(jax.jit(lambda k: data_options.flip_labels(k, y, eta, 4))(key(7)))
    changed = y2 != np.asarray(y)
    assert abs(changed.mean() - eta) < four_sigma(eta, 6000) + 1e-12
    assert y2.dtype == np.asarray(y).dtype and set(np.unique(y2)) <= {0, 1, 2, 3}
    if eta == 1.0:                                                    # a flip lands on each other class evenly
        shares = np.bincount(y2[np.asarray(y) == 0], minlength=4)[1:] / 1500
        assert np.all(np.abs(shares - 1 / 3) < four_sigma(1 / 3, 1500))


def test_bad_label_noise_arguments():
    with pytest.raises(ValueError, match="eta_flip=1.5"):
        data_options.flip_labels(key(0), jnp.ones(3), 1.5)
    with pytest.raises(ValueError, match="n_classes=1"):
        data_options.flip_labels(key(0), jnp.zeros(3, jnp.int32), 0.1, 1)
