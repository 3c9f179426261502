import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tvtheory import data, metrics, model, taskvec
from tvtheory.config import Data, Model, Train


def inputs(d=8, n=6, seed=0):
    mus = data.pair_patterns(0.0, d)
    spec = Data(d=d, P=10, n_rel=3, n_conf=1)
    return data.sample(jax.random.key(seed), mus[0], data.irrelevant_patterns(mus), n, spec)[0]


def test_output_shape_and_batch_axes():
    p = model.init_params(jax.random.key(0), 8, 16)
    X = inputs()
    assert model.apply(p, X).shape == (6,)
    assert model.apply(p, X[0]).shape == ()
    assert model.apply(p, jnp.stack([X, X])).shape == (2, 6)


def test_readout_is_fixed_and_not_trainable():
    m = model.OneLayerTransformer(8, 16, rngs=nnx.Rngs(0))
    params = model.params_of(m)
    assert set(params) == {"W", "V"}
    a = np.asarray(m.a[...])
    assert sorted(set(np.round(a * 4, 6))) == [-1.0, 1.0] and a.sum() == 0
    assert not isinstance(m.a, nnx.Param)
    grads = nnx.grad(lambda mod: mod(inputs()).sum())(m)
    assert "a" not in nnx.to_pure_dict(grads)


def test_psi0_default_init():
    p = model.init_params(jax.random.key(1), 16, 512, sigma_0=0.01)
    assert np.all(np.asarray(p["W"]) == 0)
    assert np.asarray(p["V"]).std() == pytest.approx(0.01, rel=0.05)


def test_module_call_matches_pure_apply():
    m = model.OneLayerTransformer(8, 16, sigma_w=0.3, rngs=nnx.Rngs(2))
    X = inputs()
    assert np.allclose(m(X), model.apply(model.params_of(m), X))


def test_merged_form_equals_four_matrix_form():
    four = model.init_params(jax.random.key(3), 8, 16, form="four", sigma_0=0.5, sigma_w=0.5)
    assert set(four) == {"W_Q", "W_K", "W_V", "W_O"}
    W, V = four["W_K"].T @ four["W_Q"], four["W_O"] @ four["W_V"]
    X = inputs()
    assert np.allclose(model.apply(four, X), model.apply({"W": W, "V": V}, X), atol=1e-5)


def test_jit_and_no_jit_agree():
    p = model.init_params(jax.random.key(4), 8, 16, sigma_w=0.5)
    X = inputs()
    assert np.allclose(jax.jit(model.apply)(p, X), model.apply(p, X), atol=1e-6)


def test_attention_normalises_over_keys():
    # With V mapping every token to the same vector, attention weights summing to 1 give a constant output.
    d, m = 8, 16
    v = jax.random.normal(jax.random.key(5), (m, 1))
    X = inputs(d)
    p = {"W": jax.random.normal(jax.random.key(6), (d, d)), "V": v @ jnp.ones((1, d))}
    Xn = X / jnp.sum(X, axis=-1, keepdims=True)                    # every token sums to 1 -> V x = v
    expected = jax.nn.relu(v[:, 0]) @ model.readout(m)
    assert np.allclose(model.apply(p, Xn), expected, atol=1e-5)


@pytest.mark.parametrize("kw, field", [({"m": 0}, "m=0"), ({"form": "x"}, "form='x'"),
                                       ({"form": "four", "sigma_w": 0.0}, "sigma_w=0.0")])
def test_bad_model_arguments(kw, field):
    args = {"d": 8, "m": 16, **kw}
    with pytest.raises(ValueError, match=field):
        model.init_params(jax.random.key(0), args.pop("d"), args.pop("m"), **args)


@pytest.mark.parametrize("args, field", [((0, 16, "merged"), "d=0"), ((8, 0, "merged"), "m=0"),
                                         ((8, 16, "three"), "form='three'")])
def test_check_shape_names_the_argument(args, field):
    model.check_shape(8, 16, "four")
    with pytest.raises(ValueError, match=field):
        model.check_shape(*args)


@pytest.mark.parametrize("cfg", [Model(m=16, sigma_0=0.5, sigma_w=0.3), Model(m=16, form="four", sigma_0=0.5,
                                                                              sigma_w=0.3)])
def test_init_from_a_model_block_is_init_params_with_its_fields(cfg):
    """model.init is init_params with the block's fields, bit for bit (both compiled: eager and jitted normal draws
    may differ in the last bit), and the block is a static jit argument."""
    key = jax.random.key(11)
    want = jax.jit(model.init_params, static_argnums=range(1, 6))(key, 8, cfg.m, cfg.form, cfg.sigma_0, cfg.sigma_w)
    got = jax.jit(model.init, static_argnums=(1, 2))(key, 8, cfg)
    assert set(got) == set(want)
    for k in want:
        assert np.array_equal(got[k], want[k]), k


def eq4(params, X):
    """Eq. 4 written out position by position, with no choice of product order."""
    W, V = model.merged(params)
    a = model.readout(V.shape[0])
    S = jnp.einsum("nsd,de,nle->nls", X, W, X)
    A = jax.nn.softmax(S, axis=-1)
    pre = jnp.einsum("nls,md,nsd->nlm", A, V, X)
    return jnp.einsum("nlm,m->n", jax.nn.relu(pre), a) / X.shape[1]


@pytest.mark.parametrize("m", [16, 4])          # m > d takes (A X) V^T, m <= d takes A (X V^T)
def test_apply_matches_eq4_in_either_product_order(m):
    p = model.init_params(jax.random.key(7), 8, m, sigma_0=0.5, sigma_w=0.5)
    X = inputs()
    assert np.allclose(model.apply(p, X), eq4(p, X), atol=1e-5)


def multiset_apply(params, U, c, P):
    """f from the distinct tokens and their counts (the formula in model.distinct_tokens' docstring)."""
    W, V = model.merged(params)
    S = jnp.einsum("nkd,de,nje->njk", U, W, U) + jnp.where(c > 0, jnp.log(jnp.maximum(c, 1)), -jnp.inf)[:, None, :]
    pre = jnp.einsum("njk,md,nkd->njm", jax.nn.softmax(S, axis=-1), V, U)
    return jnp.einsum("nj,njm,m->n", c, jax.nn.relu(pre), model.readout(V.shape[0])) / P


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distinct_tokens_keep_the_multiset_and_the_output(seed):
    d, spec = 8, Data(d=8, P=12, n_rel=3, n_conf=1)
    mus = data.pair_patterns(0.4, d)
    irr = data.irrelevant_patterns(mus)
    X = data.sample(jax.random.key(seed), mus[1], irr, 40, spec)[0]
    q = spec.max_distinct(irr.shape[0])
    U, c = model.distinct_tokens(X, q)
    assert U.shape == (40, q, d) and c.shape == (40, q)
    assert bool(jnp.all(model.complete(c, spec.P)))
    U_np, c_np, X_np = np.asarray(U), np.asarray(c), np.asarray(X)
    for n in range(40):
        rows = [tuple(u) for u, k in zip(U_np[n], c_np[n]) if k > 0]
        assert len(set(rows)) == len(rows)                                  # no token listed twice
        rebuilt = sorted(r for r, k in zip(rows, c_np[n][c_np[n] > 0]) for _ in range(int(k)))
        assert rebuilt == sorted(tuple(x) for x in X_np[n])                 # same multiset of tokens
    p = model.init_params(jax.random.key(seed + 10), d, 16, sigma_0=0.5, sigma_w=0.5)
    assert np.allclose(multiset_apply(p, U, c, spec.P), model.apply(p, X), atol=1e-5)


def test_distinct_tokens_report_a_too_small_q():
    X = inputs()                                         # 10 tokens, more than 2 distinct ones in some sample
    _, c = model.distinct_tokens(X, 2)
    assert not bool(jnp.all(model.complete(c, 10)))


def test_merged_delta_is_the_change_of_the_merged_weights():
    d, m = 6, 10
    for form in ("merged", "four"):
        psi0 = model.init_params(jax.random.key(0), d, m, form, sigma_0=0.5, sigma_w=0.3)
        tau = model.init_params(jax.random.key(1), d, m, form, sigma_0=0.5, sigma_w=0.3)
        after = model.merged({k: psi0[k] + tau[k] for k in psi0})
        for delta, a, b in zip(model.merged_delta(psi0, tau), after, model.merged(psi0)):
            np.testing.assert_allclose(delta, a - b, atol=1e-6)
    np.testing.assert_array_equal(model.merged_delta(psi0, tau)[0], (after[0] - model.merged(psi0)[0]))


@pytest.mark.parametrize("d, m", [(8, 16), (4, 64)])
def test_readout_relu_derivatives_equal_autodiff_of_the_plain_expression(d, m):
    """The hand-written JVP of model.readout_relu: same values, gradients and forward-mode derivatives, for any
    leading axes and under vmap."""
    k = jax.random.split(jax.random.key(7), 3)
    T = jax.random.normal(k[0], (3, 5, 10, d))
    V = jax.random.normal(k[1], (m, d))
    w = jax.random.normal(k[2], (3, 5))
    plain = lambda T, V: jax.nn.relu(T @ V.T).mean(-2) @ model.readout(m)  # noqa: E731
    value_and_grad = lambda f: jax.jit(jax.value_and_grad(lambda T, V: jnp.sum(w * f(T, V)), (0, 1)))  # noqa: E731
    want = value_and_grad(plain)(T, V)
    for f in (model.readout_relu, jax.vmap(model.readout_relu, (0, None))):
        for g, e in zip(jax.tree.leaves(value_and_grad(f)(T, V)), jax.tree.leaves(want)):
            assert np.allclose(g, e, rtol=1e-5, atol=1e-6)
    tangents = (jnp.ones_like(T), jnp.full_like(V, 0.5))
    jvp = jax.jit(lambda f: jax.jvp(f, (T, V), tangents)[1], static_argnums=0)
    assert np.allclose(jvp(model.readout_relu), jvp(plain), rtol=1e-5, atol=1e-6)


def test_fine_tune_with_the_hand_written_gradient_is_autodiffs_bit_for_bit():
    """A whole fine-tune through model.apply's hand-written derivative equals one through plain autodiff (CPU)."""
    from tvtheory import train
    d, m = 8, 32
    mus = data.pair_patterns(0.0, d)
    irr = data.irrelevant_patterns(mus)
    p0 = model.init_params(jax.random.key(0), d, m)
    spec = Train(steps=40, batch=16, log_every=40)
    fast = jax.jit(lambda p: train.finetune(p, jax.random.key(1), mus[0], irr, Data(), spec).params)(p0)

    def plain(params, X):
        A = jax.nn.softmax(jnp.einsum("...sd,...ld->...ls", X, X @ params["W"].T), axis=-1)
        return jax.nn.relu((A @ X) @ params["V"].T).mean(-2) @ model.readout(m)

    def step(p, t):
        X, y = data.sample(jax.random.fold_in(jax.random.key(1), t), mus[0], irr, 16, Data())
        g = jax.grad(lambda p: jnp.mean(jax.nn.relu(1 - y * plain(p, X))))(p)
        return jax.tree.map(lambda a, b: a - spec.eta * b, p, g), None
    ref = jax.jit(lambda p: jax.lax.scan(step, p, jnp.arange(spec.steps))[0])(p0)
    for k in p0:
        assert np.array_equal(fast[k], ref[k]), k


# ------------------------------------------------------------------------- model.grid_eval
grid_eval = jax.jit(model.grid_eval, static_argnames=("chunk", "block", "q"))


def grid_problem(form: str, K: int, P: int, n: int, task: int = 0, d: int = 8, m: int = 16):
    """n samples of P tokens of task ``task`` of a pair (alpha = 0.3), a random base and K random task vectors."""
    mus = data.pair_patterns(0.3, d)
    irr = data.irrelevant_patterns(mus)
    spec = Data(d=d, P=P, n_rel=3, n_conf=1)
    X, y = data.sample(jax.random.key(0), mus[task], irr, n, spec)
    base = model.init_params(jax.random.key(1), d, m, form, sigma_0=0.5, sigma_w=0.3)
    taus = [model.init_params(jax.random.key(2 + k), d, m, form, sigma_0=0.5, sigma_w=0.3) for k in range(K)]
    return spec, mus, irr, X, y, base, taus


@pytest.mark.parametrize("form", ["merged", "four"])
def test_grid_eval_matches_plain_evaluation(form):
    """The affine reuse of products (merged form) and its quadratic expansion (four-matrix form) equal a direct
    forward pass of base + sum_k c_k tau_k."""
    _, _, _, X, y, base, taus = grid_problem(form, 2, P=10, n=50)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *taus)
    coeffs = jnp.array([[0.0, 0.0], [1.0, -0.5], [-2.0, 3.0], [0.3, 0.7], [1.5, 1.5]])
    loss, acc = grid_eval(base, stacked, coeffs, X, y, chunk=2)
    assert loss.shape == acc.shape == (5,)
    direct = jax.jit(lambda c: metrics.evaluate(taskvec.apply(base, taus, c), X, y))
    for i, c in enumerate(coeffs):
        ref = direct(c)
        assert float(loss[i]) == pytest.approx(float(ref["loss"]), abs=1e-4)
        assert float(acc[i]) == pytest.approx(float(ref["acc"]), abs=1e-6)


def test_grid_eval_on_distinct_tokens_matches_all_tokens():
    """Reducing each sample to its distinct tokens is exact; a q too small for the data gives NaN, not a number."""
    d, m = 8, 16
    mus = data.pair_patterns(0.3, d)
    irr = data.irrelevant_patterns(mus)
    spec = Data(d=d, P=12, n_rel=3, n_conf=1)
    X, y = data.sample(jax.random.key(0), mus[0], irr, 90, spec)
    base = model.init_params(jax.random.key(1), d, m, sigma_0=0.5, sigma_w=0.3)
    tau = jax.tree.map(lambda t: t[None], model.init_params(jax.random.key(2), d, m, sigma_0=0.5, sigma_w=0.3))
    coeffs = jnp.linspace(-2, 3, 7)[:, None]
    q = spec.max_distinct(irr.shape[0])
    assert q < spec.P
    full = grid_eval(base, tau, coeffs, X, y, block=32)
    reduced = grid_eval(base, tau, coeffs, X, y, block=32, q=q)
    assert np.allclose(full[0], reduced[0], atol=1e-5) and np.allclose(full[1], reduced[1])
    assert np.all(np.isnan(model.grid_eval(base, tau, coeffs, X, y, q=2)[0]))


@pytest.mark.parametrize("form, K", [("merged", 1), ("merged", 2), ("four", 2)])
def test_grid_eval_gathering_values_from_the_pattern_table_matches_the_sums_per_token(form, K):
    """With the pattern table, a grid point's values are formed for the table's rows and gathered: the numbers of
    the per-token sums to float rounding, for either form and any number of task vectors; a token that is not a row
    of the table gives NaN, not a number."""
    spec, mus, irr, X, y, base, taus = grid_problem(form, K, P=12, n=90, task=1)
    taus = jax.tree.map(lambda *x: jnp.stack(x), *taus)
    coeffs = jax.random.uniform(jax.random.key(9), (7, K), minval=-2, maxval=3)
    q, table = spec.max_distinct(irr.shape[0]), data.token_table(mus[1], irr)
    per_token = grid_eval(base, taus, coeffs, X, y, block=32, q=q)
    gathered = grid_eval(base, taus, coeffs, X, y, block=32, q=q, table=table)
    np.testing.assert_allclose(gathered[0], per_token[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gathered[1], per_token[1], atol=1e-6)
    assert np.all(np.isfinite(gathered[0]))
    assert np.all(np.isnan(grid_eval(base, taus, coeffs, X, y, block=32, q=q, table=table.at[3].multiply(2.0))[0]))


@pytest.mark.parametrize("with_table", [False, True])
def test_grid_eval_as_one_fused_loop_and_as_a_batched_product_agree(monkeypatch, with_table):
    """Up to model.FUSED_Q_MAX distinct tokens a grid point's attention-weighted sums are unrolled multiply-adds
    summed as balanced trees (with the pattern table on this CPU, tvtheory.cpu_kernel's loop); beyond, a batched
    product: the same numbers to float rounding, with and without the pattern table."""
    spec, mus, irr, X, y, base, taus = grid_problem("merged", 2, P=12, n=90, task=1)
    taus = jax.tree.map(lambda *x: jnp.stack(x), *taus)
    coeffs = jax.random.uniform(jax.random.key(4), (5, 2), minval=-2, maxval=3)
    kw = dict(block=32, q=spec.max_distinct(irr.shape[0]), table=data.token_table(mus[1], irr) if with_table else None)
    fused_calls = []                                              # the fused form's calls (XLA's loop or the kernel)
    for name in ("fused_relu_attention", "relu_attention_rows"):
        monkeypatch.setattr(model, name, lambda *a, f=getattr(model, name): fused_calls.append(f) or f(*a))
    monkeypatch.setattr(model, "FUSED_Q_MAX", 24)                   # the suite's default (tests run LLVM level 0)
    fused = model.grid_eval(base, taus, coeffs, X, y, **kw)            # not jitted: each call traces its own form
    assert fused_calls
    fused_calls.clear()
    monkeypatch.setattr(model, "FUSED_Q_MAX", 0)
    batched = model.grid_eval(base, taus, coeffs, X, y, **kw)
    assert not fused_calls
    np.testing.assert_allclose(fused[0], batched[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused[1], batched[1], atol=1e-6)
    assert np.all(np.isfinite(fused[0]))


def test_the_fused_grid_point_is_for_optimised_code_only():
    """A process with the package's XLA settings (LLVM level 1) fuses grid points; one at level 0 (the tests') does
    not; the last setting of the option counts."""
    import subprocess
    import sys

    def fused(flags):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | ({"XLA_FLAGS": flags} if flags else {})
        out = subprocess.run([sys.executable, "-c", "import tvtheory.model as m; print(m.FUSED_Q_MAX)"], env=env,
                             capture_output=True, text=True, timeout=120, check=True)
        return int(out.stdout)
    assert fused(None) == 24 and fused("--xla_backend_optimization_level=0") == 0
    assert fused("--xla_backend_optimization_level=0 --xla_backend_optimization_level=2") == 24


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7])
def test_tree_sum_adds_every_term_once(n):
    terms = [jnp.full(3, 2.0 ** i) for i in range(n)]
    np.testing.assert_array_equal(model._tree_sum(terms), jnp.full(3, 2.0 ** n - 1))


def test_apply_on_ids_is_apply_on_the_tokens_they_name():
    """model.apply_ids gathers the logits and values from the pattern table: the same outputs and gradients as
    model.apply on table[ids], to float rounding, for any leading axes."""
    d, m, T = 6, 16, 9
    k = jax.random.split(jax.random.key(3), 4)
    params = {"W": jax.random.normal(k[0], (d, d)), "V": jax.random.normal(k[1], (m, d)) / 3}
    table = jax.random.normal(k[2], (T, d))
    ids = jax.random.randint(k[3], (2, 5, 7), 0, T)
    w = jnp.arange(10.0).reshape(2, 5) - 4
    dense = jax.jit(jax.value_and_grad(lambda p: jnp.sum(w * model.apply(p, table[ids]))))
    on_ids = jax.jit(jax.value_and_grad(lambda p: jnp.sum(w * model.apply_ids(p, ids, table))))
    for got, want in zip(jax.tree.leaves(on_ids(params)), jax.tree.leaves(dense(params))):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(model.apply_ids(params, ids[0, 0], table), model.apply(params, table[ids[0, 0]]),
                               rtol=2e-5, atol=2e-6)
