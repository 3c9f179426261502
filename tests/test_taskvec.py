import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tvtheory import taskvec

seeds = st.integers(0, 2**31 - 1)


def tree(seed, scale=1.0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {"W": scale * jax.random.normal(k1, (5, 5)), "V": scale * jax.random.normal(k2, (7, 5)),
            "b": jax.random.normal(k3, (3,))}


def close(a, b, tol=1e-5):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.allclose(x, y, atol=tol, rtol=tol)), a, b)))


@given(seeds, seeds)
def test_apply_with_zero_coefficients_is_psi0_exactly(s0, s1):
    psi0, tau = tree(s0), tree(s1)
    out = taskvec.apply(psi0, [tau, tau], [0.0, 0.0])
    assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), out, psi0)))


@given(seeds, seeds)
def test_add_then_sub_roundtrips_and_double_negation(s0, s1):
    a, b = tree(s0), tree(s1)
    assert close(taskvec.sub(taskvec.add(a, b), b), a)
    assert close(taskvec.negate(taskvec.negate(a)), a)


@given(seeds, seeds, seeds)
def test_task_vector_recovers_finetuned(s0, s1, s2):
    psi0, ft = tree(s0), tree(s1)
    tau = taskvec.task_vector(ft, psi0)
    assert close(taskvec.apply(psi0, [(tau, 1.0)]), ft)


@given(seeds, seeds, seeds, st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3))
def test_apply_is_affine_in_each_lambda(s0, s1, s2, l1, l2, t):
    psi0, t1, t2 = tree(s0), tree(s1), tree(s2)
    f = lambda lam: taskvec.apply(psi0, [t1, t2], [lam, l2])  # noqa: E731
    mix = taskvec.add(taskvec.scale(t, f(l1)), taskvec.scale(1 - t, f(0.0)))
    assert close(f(t * l1), mix, tol=1e-4)


@given(seeds, st.floats(0.1, 10))
def test_cosine_signs_and_scale_invariance(s, c):
    t = tree(s)
    assert float(taskvec.cosine(t, t)) == pytest.approx(1.0, abs=1e-6)
    assert float(taskvec.cosine(t, taskvec.negate(t))) == pytest.approx(-1.0, abs=1e-6)
    assert float(taskvec.cosine(t, taskvec.scale(c, t))) == pytest.approx(1.0, abs=1e-5)


def test_norm_and_inner_agree():
    t = tree(0)
    assert float(taskvec.norm(t)) ** 2 == pytest.approx(float(taskvec.inner(t, t)), rel=1e-5)


def test_combine_and_sum():
    a, b = tree(1), tree(2)
    assert close(taskvec.tree_sum([a, b]), taskvec.add(a, b))
    assert close(taskvec.combine([a, b], [2.0, -1.0]), taskvec.sub(taskvec.scale(2.0, a), b))
    with pytest.raises(ValueError, match="lams shape"):
        taskvec.combine([a, b], [1.0])


@given(seeds)
def test_low_rank_error_decreases_with_rank_and_vanishes_at_full_rank(s):
    t = tree(s)
    errs = [float(taskvec.low_rank(t, r)[1]["V"]) for r in range(1, 6)]
    assert all(e1 >= e2 - 1e-6 for e1, e2 in zip(errs, errs[1:]))
    assert errs[-1] < 1e-5
    approx, _ = taskvec.low_rank(t, 1)
    assert np.linalg.matrix_rank(np.asarray(approx["W"]), tol=1e-4) == 1
    assert close(approx["b"], t["b"])             # vectors are not truncated


def test_low_rank_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank=0"):
        taskvec.low_rank(tree(0), 0)


@given(seeds, st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]))
def test_prune_keeps_exactly_the_largest_rows(s, keep):
    t = tree(s)
    pruned, mask = taskvec.prune_rows(t, keep)
    n_keep = max(1, round(keep * 7))
    assert int(mask.sum()) == n_keep
    norms = np.linalg.norm(np.asarray(t["V"]), axis=1)
    assert norms[np.asarray(mask)].min() >= norms[~np.asarray(mask)].max(initial=0)
    assert np.all(np.asarray(pruned["V"])[~np.asarray(mask)] == 0)
    assert close(pruned["W"], t["W"])


def test_prune_rejects_bad_fraction():
    with pytest.raises(ValueError, match="keep_fraction=0"):
        taskvec.prune_rows(tree(0), 0.0)
