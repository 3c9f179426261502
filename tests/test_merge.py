from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from tvtheory import merge, vit

seeds = st.integers(0, 2**31 - 1)
KEY = jax.random.key(7)


def _data(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def leaves_equal(a, b):
    return all(x.dtype == y.dtype and np.array_equal(_data(x), _data(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def leaves_close(a, b, tol=1e-5):
    return all(np.allclose(_data(x), _data(y), atol=tol, rtol=tol)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def normal(seed, shape, scale=1.0):
    """Test data from numpy: eager jax.random would compile a random-number kernel for every new shape."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def small(seed, scale=1.0):
    return {"enc": {"w": normal(seed, (4, 3), scale), "b": normal(seed + 1000, (3,), scale)},
            "head": {"w": normal(seed + 2000, (3, 2), scale)}}


class J:
    """The merges jitted, options static. A first eager call compiles every primitive on its own (TIES: ~2 s); one
    jit compiles the whole merge at once (~0.3 s)."""
    task_arithmetic = jax.jit(merge.task_arithmetic, static_argnames=("include", "exclude"))
    ties = jax.jit(merge.ties, static_argnames=("k", "scope", "include", "exclude"))
    dare = jax.jit(merge.dare, static_argnames=("p", "rescale", "include", "exclude"))
    dare_ties = jax.jit(merge.dare_ties, static_argnames=("p", "k", "scope", "include", "exclude"))
    tsv = jax.jit(merge.tsv, static_argnames=("rank_fraction", "nonmatrix", "include", "exclude"))
    iso_c = jax.jit(merge.iso_c, static_argnames=("nonmatrix", "include", "exclude"))


# Every method as f(base, taus, coefficient) with the other options fixed, for the properties they share.
METHODS = {
    "task_arithmetic": lambda b, t, c, **kw: J.task_arithmetic(b, t, c, **kw),
    "ties": lambda b, t, c, **kw: J.ties(b, t, k=0.5, coeff=c, **kw),
    "ties_tensor": lambda b, t, c, **kw: J.ties(b, t, k=0.5, coeff=c, scope="tensor", **kw),
    "dare": lambda b, t, c, **kw: J.dare(KEY, b, t, p=0.3, coeffs=c, **kw),
    "tsv": lambda b, t, c, **kw: J.tsv(b, t, coeff=c, **kw),
    "iso_c": lambda b, t, c, **kw: J.iso_c(b, t, coeff=c, **kw),
}


# ------------------------------------------------------------------------------------------------ hand-computed


def test_task_arithmetic_by_hand():
    base = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([[0.5]])}
    taus = [{"a": jnp.array([1.0, 0.0]), "b": jnp.array([[1.0]])},
            {"a": jnp.array([0.0, 4.0]), "b": jnp.array([[2.0]])}]
    out = J.task_arithmetic(base, taus, [2.0, -0.5])
    np.testing.assert_allclose(out["a"], [3.0, 0.0])
    np.testing.assert_allclose(out["b"], [[1.5]])


def test_ties_by_hand():
    # k = 0.5 keeps 2 of 4 entries: tau1 -> [4, 0, 0, -3], tau2 -> [-2, 3, 0, 0]; sum [2, 3, 0, -3] elects
    # [+, +, (0 -> majority +), -]; disjoint means [4, 3, 0, -3] (entry 0 averages only tau1's 4).
    base = {"x": jnp.zeros(4)}
    taus = [{"x": jnp.array([4.0, -1.0, 2.0, -3.0])}, {"x": jnp.array([-2.0, 3.0, 1.0, -1.0])}]
    np.testing.assert_allclose(J.ties(base, taus, k=0.5, coeff=0.5)["x"], [2.0, 1.5, 0.0, -1.5])
    # k = 1: entry 0 cancels exactly (1 - 1 = 0) and takes the majority sign (+, from entry 1): only tau1's 1 agrees.
    taus = [{"x": jnp.array([1.0, 2.0])}, {"x": jnp.array([-1.0, 1.0])}]
    np.testing.assert_allclose(J.ties({"x": jnp.zeros(2)}, taus, k=1.0)["x"], [1.0, 1.5])


def test_ties_scope_model_trims_across_leaves_tensor_within_each():
    base = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    taus = [{"a": jnp.array([10.0, 9.0]), "b": jnp.array([1.0, 0.5])}]
    model = J.ties(base, taus, k=0.5)
    tensor = J.ties(base, taus, k=0.5, scope="tensor")
    np.testing.assert_array_equal(model["a"], [10.0, 9.0])
    np.testing.assert_array_equal(model["b"], [0.0, 0.0])
    np.testing.assert_array_equal(tensor["a"], [10.0, 0.0])
    np.testing.assert_array_equal(tensor["b"], [1.0, 0.0])


def test_tsv_by_hand():
    # tau1 = e1 e1^T, tau2 = u v^T with u = (e1 + e2)/sqrt2, v = e2 (r = 2 // 2 = 1 each). U_cat = [e1, u] is not
    # orthogonal; V_cat = I is. The closest orthogonal matrix to A = [[a, b], [c, d]] (det > 0) is the rotation
    # [[a + d, b - c], [c - b, a + d]] / norm, so the merge is that rotation (both sigmas are 1).
    s = 1 / np.sqrt(2)
    base = {"W": jnp.zeros((2, 2))}
    taus = [{"W": jnp.array([[1.0, 0.0], [0.0, 0.0]])}, {"W": jnp.array([[0.0, s], [0.0, s]])}]
    expect = np.array([[1 + s, s], [-s, 1 + s]]) / np.sqrt((1 + s) ** 2 + s**2)
    np.testing.assert_allclose(J.tsv(base, taus)["W"], expect, atol=1e-6)


def test_iso_c_by_hand():
    # sum = [[0, -1], [3, 0]] = R diag(3, 1) with R the rotation by 90 degrees; flat spectrum: R diag(2, 2).
    base = {"W": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    taus = [{"W": jnp.array([[0.0, -1.0], [0.0, 0.0]]), "b": jnp.array([1.0, 2.0])},
            {"W": jnp.array([[0.0, 0.0], [3.0, 0.0]]), "b": jnp.array([3.0, 0.0])}]
    out = J.iso_c(base, taus, coeff=0.5)
    np.testing.assert_allclose(out["W"], 1.0 + 0.5 * np.array([[0.0, -2.0], [2.0, 0.0]]), atol=1e-6)
    np.testing.assert_allclose(out["b"], 0.5 * np.array([2.0, 1.0]))                  # 1-D: the mean
    np.testing.assert_allclose(J.iso_c(base, taus, nonmatrix="sum")["b"], [4.0, 2.0])


# ------------------------------------------------------------------------------------------------ properties


@given(seeds, st.floats(-2, 2))
def test_ties_k1_without_sign_conflicts_is_the_mean(seed, c):
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], (2, 12))
    taus_KxD = jnp.asarray(sign * rng.uniform(0.1, 1.0, (3, 2, 12)), jnp.float32)      # same signs in all 3 tasks
    taus = [{"a": t[0].reshape(3, 4), "b": t[1]} for t in taus_KxD]
    base = {"a": jnp.ones((3, 4)), "b": jnp.arange(12.0)}
    out = J.ties(base, taus, k=1.0, coeff=c)
    mean = jax.tree.map(lambda *x: sum(x) / 3, *taus)
    assert leaves_close(out, jax.tree.map(lambda b, m: b + c * m, base, mean))



def test_dare_p0_is_task_arithmetic_exactly():
    base, taus, c = small(0), [small(1), small(2)], jnp.array([0.7, -1.3])
    out, ta = jax.jit(lambda b, t, c: (merge.dare(KEY, b, t, p=0.0, coeffs=c), merge.task_arithmetic(b, t, c)))(
        base, taus, c)
    assert leaves_equal(out, ta)


def test_dare_is_unbiased_over_keys():
    """Mean over N keys of DARE = task arithmetic within 5 standard errors per entry; the per-entry variance of
    c tau m / (1 - p), m ~ Bernoulli(1 - p), is c^2 tau^2 p / (1 - p). The same tolerance rejects the mean without
    the rescale, (1 - p) times the mean with it (same masks): the test has power."""
    N, p, c = 4000, 0.4, jnp.array([0.8, 1.5])
    base, taus = small(0), [small(1), small(2)]
    zero = jax.tree.map(jnp.zeros_like, base)
    # lax.map, not vmap: the loop body compiles as one unbatched DARE, about a third of the batched one's time
    mean = jax.jit(lambda keys: jax.tree.map(lambda x: x.mean(0), jax.lax.map(
        lambda k: merge.dare(k, zero, taus, p=p, coeffs=c), keys)))(jax.random.split(jax.random.key(3), N))
    ta = J.task_arithmetic(zero, taus, c)
    se = jax.tree.map(lambda t1, t2: jnp.sqrt((c[0] ** 2 * t1**2 + c[1] ** 2 * t2**2) * p / (1 - p) / N), *taus)
    z = jax.tree.map(lambda m, t, s: jnp.abs(m - t) / s, mean, ta, se)
    assert max(float(x.max()) for x in jax.tree.leaves(z)) < 5.0
    z_unscaled = jax.tree.map(lambda m, t, s: jnp.abs((1 - p) * m - t) / s, mean, ta, se)
    assert max(float(x.max()) for x in jax.tree.leaves(z_unscaled)) > 5.0


def test_dare_streams_are_per_key_task_and_leaf():
    base, tau = small(0), small(1)
    a = J.dare(KEY, base, [tau, tau], p=0.5, coeffs=jnp.array([1.0, 1.0]))
    assert leaves_equal(a, J.dare(KEY, base, [tau, tau], p=0.5, coeffs=jnp.array([1.0, 1.0])))    # deterministic
    b = J.dare(jax.random.key(8), base, [tau, tau], p=0.5, coeffs=jnp.array([1.0, 1.0]))
    assert not np.array_equal(a["enc"]["w"], b["enc"]["w"])
    # the same task vector with coefficients (1, -1) cancels only where both tasks' masks agree
    diff = J.dare(KEY, base, [tau, tau], p=0.5, coeffs=jnp.array([1.0, -1.0]))
    assert not np.array_equal(diff["enc"]["w"], base["enc"]["w"])
    # a leaf's mask does not depend on which other leaves are selected
    only_head = J.dare(KEY, base, [tau, tau], p=0.5, coeffs=jnp.array([1.0, 1.0]), include=("head",))
    np.testing.assert_array_equal(only_head["head"]["w"], a["head"]["w"])


def test_dare_ties_is_ties_at_p0_and_dare_for_one_task():
    """DARE-TIES shares its code paths with DARE and TIES (not in the shared-rules test below for compile time)."""
    base, taus = small(0), [small(1), small(2)]
    dt0, ties, dt1, dare1 = jax.jit(lambda b, t: (
        merge.dare_ties(KEY, b, t, p=0.0, k=0.5), merge.ties(b, t, k=0.5),
        merge.dare_ties(KEY, b, t[:1], p=0.5, coeff=0.7), merge.dare(KEY, b, t[:1], p=0.5, coeffs=0.7)))(base, taus)
    assert leaves_equal(dt0, ties)
    assert leaves_close(dt1, dare1, tol=1e-6) and not leaves_close(dt1, base)


@given(seeds)
def test_tsv_of_orthogonal_task_vectors_is_their_sum(seed):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    P = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    s = rng.uniform(0.5, 2.0, 4)
    # r = min(6, 4) // 2 = 2 singular triples per task, on disjoint column blocks of Q and P
    taus = [{"W": jnp.asarray((Q[:, 2 * t:2 * t + 2] * s[2 * t:2 * t + 2]) @ P[:, 2 * t:2 * t + 2].T, jnp.float32),
             "b": jnp.asarray(s[:2] * (t + 1), jnp.float32)} for t in range(2)]
    out = J.tsv({"W": jnp.zeros((6, 4)), "b": jnp.zeros(2)}, taus)
    np.testing.assert_allclose(out["W"], taus[0]["W"] + taus[1]["W"], atol=2e-5)
    np.testing.assert_allclose(out["b"], 1.5 * s[:2], atol=1e-6)                       # 1-D leaves: the mean



def test_tsv_leaf_with_fewer_directions_than_tasks_is_averaged():
    base = {"h": jnp.zeros((3, 1))}
    taus = [{"h": jnp.array([[1.0], [2.0], [0.0]])}, {"h": jnp.array([[3.0], [0.0], [1.0]])}]
    np.testing.assert_allclose(J.tsv(base, taus)["h"], [[2.0], [1.0], [0.5]])
    np.testing.assert_allclose(J.tsv(base, taus, nonmatrix="sum")["h"], [[4.0], [2.0], [1.0]])


@given(seeds)
def test_iso_c_flattens_the_spectrum_of_the_sum_and_keeps_its_singular_vectors(seed):
    taus = [{"W": normal(seed + t, (5, 3))} for t in range(3)]
    out = J.iso_c({"W": jnp.zeros((5, 3))}, taus)["W"]
    U, S, Vt = np.linalg.svd(np.asarray(sum(t["W"] for t in taus)), full_matrices=False)
    np.testing.assert_allclose(np.linalg.svd(np.asarray(out), compute_uv=False), np.full(3, S.mean()), rtol=1e-4)
    np.testing.assert_allclose(out @ Vt.T, S.mean() * U, atol=1e-4)                      # same (u_i, v_i) pairs



def with_non_floats(tree):
    """A tree with the leaves an NNX state may hold besides parameters: a step counter, a flag, an RNG key."""
    return tree | {"step": jnp.array(3, jnp.uint32), "flag": jnp.array(True), "rng": jax.random.key(5)}


@pytest.mark.parametrize("name", list(METHODS))
def test_coefficients_selection_and_non_float_leaves(name):
    """Shared rules, for every method: a scalar coefficient = the per-task list; all coefficients 0 return base bit
    for bit; unselected leaves stay at base; non-float leaves (given garbage in the task vectors) are untouched;
    shapes and dtypes are kept."""
    fn = METHODS[name]
    base = with_non_floats(small(0))
    taus = [small(1) | {"step": jnp.array(9, jnp.uint32), "flag": jnp.array(False), "rng": jax.random.key(6)},
            with_non_floats(small(2, scale=0.5))]
    out = fn(base, taus, 0.7)
    assert leaves_close(out, fn(base, taus, jnp.array([0.7, 0.7])), tol=1e-5)
    assert leaves_equal(fn(base, taus, 0.0), base)
    assert leaves_equal(fn(base, taus, jnp.array([0.0, 0.0])), base)
    spec = jax.tree.map(lambda x: (x.shape, x.dtype), base)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), out) == spec
    assert not np.array_equal(out["enc"]["w"], base["enc"]["w"])
    assert out["step"] == 3 and bool(out["flag"])
    np.testing.assert_array_equal(jax.random.key_data(out["rng"]), jax.random.key_data(base["rng"]))
    no_head = fn(base, taus, 0.7, exclude=(r"\['head'\]",))
    np.testing.assert_array_equal(no_head["head"]["w"], base["head"]["w"])
    assert not np.array_equal(no_head["enc"]["w"], base["enc"]["w"])
    if name in ("task_arithmetic", "dare", "tsv", "iso_c"):          # leaf-wise methods: a selected leaf is as before
        np.testing.assert_allclose(no_head["enc"]["w"], out["enc"]["w"], rtol=1e-6)
    with pytest.raises(ValueError, match=r"shape=\(3,\)"):
        fn(base, taus, [1.0, 1.0, 1.0])


def test_include_and_exclude_and_leaf_paths():
    base, taus = small(0), [small(1), small(2)]
    only_w = J.task_arithmetic(base, taus, 1.0, include=(r"\['w'\]$",), exclude=("head",))
    np.testing.assert_allclose(only_w["enc"]["w"], base["enc"]["w"] + taus[0]["enc"]["w"] + taus[1]["enc"]["w"])
    assert leaves_equal({"b": only_w["enc"]["b"], "h": only_w["head"]}, {"b": base["enc"]["b"], "h": base["head"]})
    assert merge.leaf_paths(base, include=("w",), exclude=("head",)) == ["['enc']['w']"]
    assert merge.leaf_paths(base) == ["['enc']['b']", "['enc']['w']", "['head']['w']"]
    assert merge.leaf_paths(with_non_floats(base)) == merge.leaf_paths(base)              # non-floats never selected
    with pytest.raises(ValueError, match="include="):
        merge.ties(base, taus, include="w")                                               # a string, not a tuple
    with pytest.raises(ValueError, match="exclude="):
        merge.ties(base, taus, exclude=("(",))


def test_nnx_state_with_rng_stream_and_counter():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(3, 2, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)

    _, state = nnx.split(Net(nnx.Rngs(0, dropout=1)))
    tau = jax.tree.map(lambda x: jnp.ones_like(x) if merge._is_float(x) else x, state)
    out = J.task_arithmetic(state, [tau, tau], 0.5)
    for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree_util.tree_leaves_with_path(out),
                                 strict=True):
        assert b.dtype == a.dtype, jax.tree_util.keystr(path)
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
        else:
            np.testing.assert_array_equal(b, a + 1.0 if merge._is_float(a) else a)


def test_bad_arguments():
    base, taus = small(0), [small(1)]
    with pytest.raises(ValueError, match="k=0.0"):
        merge.ties(base, taus, k=0.0)
    with pytest.raises(ValueError, match="scope='layer'"):
        merge.ties(base, taus, scope="layer")
    with pytest.raises(ValueError, match="p=1.0"):
        merge.dare(KEY, base, taus, p=1.0)
    with pytest.raises(ValueError, match="key="):
        merge.dare(jax.random.PRNGKey(0), base, taus)                                   # legacy uint32 key
    with pytest.raises(ValueError, match=r"taus\[0\]="):
        merge.task_arithmetic(base, [{"enc": base["enc"]}])
    with pytest.raises(ValueError, match="taus="):
        merge.iso_c(base, [])
    with pytest.raises(ValueError, match="rank_fraction=0"):
        merge.tsv(base, taus, rank_fraction=0)
    with pytest.raises(ValueError, match="granularity='layer'"):
        merge.adamerging(lambda p, X: X, base, taus, jnp.zeros(1), granularity="layer")


# ------------------------------------------------------------------------------------------------ NNX models


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(5, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, X):
        return self.l2(jax.nn.relu(self.l1(X)))[:, 0]


def _all_methods(base, taus, key, optional=True):
    out = {"task_arithmetic": merge.task_arithmetic(base, taus, [0.6, 0.9]), "ties": merge.ties(base, taus),
           "dare": merge.dare(key, base, taus), "tsv": merge.tsv(base, taus), "iso_c": merge.iso_c(base, taus)}
    if optional:
        out["dare_ties"] = merge.dare_ties(key, base, taus)
    return out


@pytest.mark.parametrize("which", ["vit", "mlp"])
def test_every_method_on_nnx_models(which):
    # The modules' structure from eval_shape, the values from numpy: compiling the initializers would cost more than
    # the merges (the values themselves do not matter here).
    if which == "vit":
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: vit.ViT(dim=16, heads=2, rngs=nnx.Rngs(0))), nnx.Param)
        X = [normal(i, (8, 8, 8, 3)) for i in range(2)]
    else:
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: MLP(nnx.Rngs(0))), nnx.Param)
        X = [normal(i, (8, 5)) for i in range(2)]
    leaves, treedef = jax.tree.flatten(abstract)
    base = jax.tree.unflatten(treedef, [normal(100 + i, x.shape, 0.3) for i, x in enumerate(leaves)])
    apply_fn = partial(lambda g, p, X: nnx.merge(g, p)(X), graphdef)
    taus = [jax.tree.map(lambda x, t=t: normal(10 + t, x.shape, 0.05), base) for t in range(2)]

    @jax.jit
    def run(base, taus):
        outs = _all_methods(base, taus, KEY, optional=which == "mlp")       # DARE-TIES = DARE + TIES: MLP only
        # one forward pass, vmapped over the methods, compiles once
        f_Mx8 = jax.vmap(apply_fn, in_axes=(0, None))(jax.tree.map(lambda *x: jnp.stack(x), *outs.values()), X[0])
        return outs, f_Mx8

    outs, f_Mx8 = run(base, taus)
    spec = jax.tree.map(lambda x: (x.shape, x.dtype), base)
    for name, params in outs.items():
        assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == spec, name
        assert type(params) is type(base)
        assert not leaves_equal(params, base), name
    assert f_Mx8.shape == (len(outs), 8) and bool(jnp.all(jnp.isfinite(f_Mx8)))
    if which == "vit":
        return      # AdaMerging on the MLP only: the same code path, and the ViT's gradient would compile for ~5 s
    merged, lam = merge.adamerging(apply_fn, base, taus, X, steps=2, lr=0.05, granularity="leaf")
    assert lam.shape == (len(jax.tree.leaves(base)), 2)
    assert bool(jnp.all(jnp.isfinite(lam))) and not np.array_equal(lam, jnp.full_like(lam, 0.3))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), merged) == spec
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(merged))


# ------------------------------------------------------------------------------------------------ AdaMerging


def linear(p, X):
    return X @ p["w"] + p["b"]


def test_adamerging_moves_toward_the_entropy_optimum():
    """f = X w (0.1 + lambda_1 - lambda_2) with tau1 = w, tau2 = -w: the entropy falls as lambda_1 - lambda_2 grows,
    so within the clamp [0, 1] the optimum is (1, 0)."""
    w = jnp.array([[2.0], [-1.0], [0.5]])
    base = {"w": 0.1 * w, "b": jnp.zeros(1)}
    taus = [{"w": w, "b": jnp.zeros(1)}, {"w": -w, "b": jnp.zeros(1)}]
    X = [normal(0, (64, 3)), normal(1, (32, 3))]
    apply_fn = lambda p, X: linear(p, X)[:, 0]  # noqa: E731
    merged, lam = merge.adamerging(apply_fn, base, taus, X, steps=60, lr=0.05)
    assert lam.shape == (2,)
    assert float(lam[0]) > 0.9 and float(lam[1]) < 0.1
    assert leaves_close(merged, J.task_arithmetic(base, taus, lam))
    _, lam_leaf = merge.adamerging(apply_fn, base, taus, X, steps=60, lr=0.05, granularity="leaf")
    assert lam_leaf.shape == (2, 2)                                    # rows: leaf_paths order, ['b'] then ['w']
    np.testing.assert_allclose(lam_leaf[1], lam, atol=0.05)
    np.testing.assert_array_equal(lam_leaf[0], jnp.full(2, 0.3))              # the bias leaf's tau is 0: no gradient


def test_adamerging_softmax_minibatches_and_fixed_points():
    W = jnp.array([[3.0, -3.0], [-1.0, 1.0]])
    base = {"w": 0.1 * W, "b": jnp.zeros(2)}
    taus = [{"w": -W, "b": jnp.zeros(2)}, {"w": W, "b": jnp.zeros(2)}]
    X = normal(0, (64, 2))
    _, lam = merge.adamerging(linear, base, taus, X, entropy="softmax", steps=60, lr=0.05, batch=16,
                              key=jax.random.key(1))
    assert float(lam[1]) > 0.9 and float(lam[0]) < 0.1
    again = merge.adamerging(linear, base, taus, X, entropy="softmax", steps=60, lr=0.05, batch=16,
                             key=jax.random.key(1))
    assert np.array_equal(again[1], lam)                                                    # deterministic
    merged, lam0 = merge.adamerging(linear, base, taus, X, entropy="softmax", steps=0, init=0.0)
    assert leaves_equal(merged, base) and np.array_equal(lam0, [0.0, 0.0])
