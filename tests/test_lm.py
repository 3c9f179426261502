"""The small causal LM: shapes, causality, gradients against finite differences, training lowers the loss, greedy
decoding is the argmax of apply, Rouge-L on hand examples, alpha_hat's algebra. Every program is jitted once per
shape (compilation dominates at this size); the whole experiment, five more programs, is left to its script."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from tvtheory import lm, taskvec

V, T = 23, 10
KW = dict(vocab=V, seq_len=T, dim=16, depth=2, heads=2)
apply = jax.jit(lm.apply, static_argnames="graphdef")
nll = jax.jit(lm.nll, static_argnames="graphdef")
set_loss = jax.jit(lm.set_loss, static_argnames=("graphdef", "start"))
output_cosine = jax.jit(lm.output_cosine, static_argnames="graphdef")


@pytest.fixture(scope="module")
def model():
    return lm.init(jax.random.key(0), **KW)


def tokens(seed, n=6):
    return jax.random.randint(jax.random.key(seed), (n, T), 1, V)


def test_shapes_and_every_weight_is_a_matrix(model):
    g, p = model
    assert apply(g, p, tokens(1)).shape == (6, T, V)
    assert jax.eval_shape(lambda q: lm.apply(g, q, tokens(1)[:, :4]), p).shape == (6, 4, V)   # shorter windows
    assert nll(g, p, tokens(1)).shape == (6, T - 1)
    assert {x.ndim for x in jax.tree.leaves(p)} == {1, 2}               # low-rank truncation sees whole matrices
    g_untied, p_untied = lm.init(jax.random.key(0), **{**KW, "tied": False})
    assert jax.eval_shape(lambda q: lm.apply(g_untied, q, tokens(1)), p_untied).shape == (6, T, V)
    assert sum(x.size for x in jax.tree.leaves(p_untied)) == sum(x.size for x in jax.tree.leaves(p)) + 16 * V
    with pytest.raises(ValueError, match="dim=15"):
        lm.init(jax.random.key(0), **{**KW, "dim": 15})


def test_changing_a_future_token_leaves_earlier_logits_unchanged(model):
    g, p = model
    x = tokens(2)
    for j in (0, 4, T - 1):
        y = x.at[:, j].set((x[:, j] % (V - 1)) + 1)                  # a different token at position j
        a, b = apply(g, p, x), apply(g, p, y)
        np.testing.assert_array_equal(a[:, :j], b[:, :j])
        assert not np.allclose(a[:, j], b[:, j])


def test_gradient_matches_finite_differences(model):
    g, p = model
    x = tokens(3)
    flat, unravel = jax.flatten_util.ravel_pytree(p)
    direction = jax.random.normal(jax.random.key(4), flat.shape)

    def loss_at(q, d_flat, c):
        """The loss at q + c d, d the unit direction (central differences then err by O(eps^2))."""
        return lm.set_loss(g, taskvec.add(q, taskvec.scale(c / jnp.linalg.norm(d_flat), unravel(d_flat))), x)

    with jax.enable_x64(True):                     # everything in one float64 program: eager ops would each compile
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p)
        d64 = jnp.asarray(direction, jnp.float64)
        vg = jax.jit(jax.value_and_grad(loss_at))
        eps = 1e-5
        fd = (vg(p64, d64, eps)[0] - vg(p64, d64, -eps)[0]) / (2 * eps)
        grad_dot_d = jnp.vdot(jax.flatten_util.ravel_pytree(vg(p64, d64, 0.0)[1])[0], d64) / jnp.linalg.norm(d64)
        assert float(grad_dot_d) == pytest.approx(float(fd), rel=1e-6, abs=1e-10)


def test_training_lowers_the_loss_and_is_fixed_by_the_key(model):
    g, p = model
    x = tokens(5, n=8)
    p1, losses = lm.train(g, p, jax.random.key(1), x, steps=60, batch=4, lr=1e-2)
    assert losses.shape == (60,)
    assert float(set_loss(g, p1, x)) < 0.5 * float(set_loss(g, p, x))
    p2, _ = lm.train(g, p, jax.random.key(1), x, steps=60, batch=4, lr=1e-2)
    p3, _ = lm.train(g, p, jax.random.key(2), x, steps=60, batch=4, lr=1e-2)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, p1, p2)))
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, p1, p3)))
    # a mixture weight of zero keeps a document out of every batch: training on it alone changes nothing else
    w = jnp.zeros(8).at[0].set(1.0)
    p4, _ = lm.train(g, p, jax.random.key(1), x, steps=60, batch=4, lr=1e-2, weights_N=w)
    p5, _ = lm.train(g, p, jax.random.key(1), jnp.broadcast_to(x[0], x.shape), steps=60, batch=4, lr=1e-2)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: np.allclose(a, b, atol=1e-6), p4, p5)))


@pytest.mark.parametrize("tied", [True, False])
def test_greedy_is_deterministic_and_the_argmax_of_apply(model, tied):
    """Greedy decoding with its cache of keys and values makes the decisions of the full window recomputed at every
    step: each emitted token is the argmax of ``apply`` on the window it was read from (tied and untied heads)."""
    g, p = model if tied else lm.init(jax.random.key(3), **{**KW, "tied": False})
    prompts = tokens(6)[:, :4]
    run = jax.jit(lm.greedy, static_argnames=("graphdef", "n_new"))
    out = run(g, p, prompts, n_new=T - 4)
    assert out.shape == (6, T - 4)
    np.testing.assert_array_equal(out, run(g, p, prompts, n_new=T - 4))
    full = jnp.concatenate([prompts, out], axis=1)
    np.testing.assert_array_equal(jnp.argmax(apply(g, p, full)[:, 3:-1], axis=-1), out)
    assert len(np.unique(np.asarray(out))) > 1                      # not a constant stream that any cache would match


def test_rouge_l_on_hand_examples():
    # LCS("the cat sat on the mat", "the cat on a mat") = the cat on mat: P = 4/5, R = 4/6
    f = lm.rouge_l(["the cat on a mat", "a b c", "x y", "a , b ."], ["the cat sat on the mat", "a b c", "z", "a b"])
    np.testing.assert_allclose(f, [2 * 0.8 * (4 / 6) / (0.8 + 4 / 6), 1.0, 0.0, 1.0])
    vocab = ("<pad>", "a", "b", "c")
    np.testing.assert_allclose(lm.rouge_l_tokens(np.array([[[1, 2, 3], [3, 2, 1]]]), np.array([[[1, 2, 3]] * 2]),
                                                 vocab), [[1.0, 1 / 3]])
    with pytest.raises(ValueError, match="predictions=1"):
        lm.rouge_l(["a"], ["a", "b"])


def test_output_cosine_is_one_for_equal_and_minus_one_for_opposite_small_task_vectors(model):
    g, p = model
    x = tokens(7)
    tau = jax.tree.map(lambda a: 1e-3 * jnp.ones_like(a), p)
    assert float(output_cosine(g, p, tau, tau, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(output_cosine(g, p, tau, taskvec.negate(tau), x)) == pytest.approx(-1.0, abs=1e-2)
    assert float(output_cosine(g, p, tau, taskvec.negate(tau), x, centered=False)) > 0.99


def test_init_draws_the_stated_distributions(model):
    _, p = model
    leaves = {jax.tree_util.keystr(k): np.asarray(x) for k, x in jax.tree_util.tree_flatten_with_path(p)[0]}
    for k, x in leaves.items():
        if "bias" in k:
            assert not x.any()
        elif "scale" in k:
            assert np.all(x == 1)
        elif "mlp1" in k and "kernel" in k:
            assert x.std() * np.sqrt(x.shape[0]) == pytest.approx(1.0, rel=0.15)
        elif k.startswith("['embed']"):
            assert x.std() == pytest.approx(0.02, rel=0.15)
    again = lm.init(jax.random.key(0), **KW)[1]
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, p, again)))


def test_with_low_rank_keeps_the_books_and_truncates_forget_optimally():
    rng = np.random.default_rng(0)
    taus = {"W": rng.normal(size=(2, 3, 6, 5)).astype(np.float32), "b": rng.normal(size=(2, 3, 5)).astype(np.float32)}
    out = lm.with_low_rank(taus, (1, 2, 5))
    assert out["W"].shape == (2, 6, 6, 5) and out["b"].shape == (2, 6, 5)
    np.testing.assert_array_equal(out["W"][:, :3], taus["W"])
    np.testing.assert_array_equal(out["b"][:, 3:], np.repeat(taus["b"][:, :1], 3, axis=1))     # vectors kept
    for s in range(2):
        sv = np.linalg.svd(taus["W"][s, 0], compute_uv=False)
        for j, r in enumerate((1, 2, 5)):
            approx = np.asarray(out["W"][s, 3 + j])
            assert np.linalg.matrix_rank(approx, tol=1e-4) == r
            # Eckart-Young: the error is the norm of the dropped singular values
            assert np.linalg.norm(taus["W"][s, 0] - approx) == pytest.approx(np.sqrt((sv[r:] ** 2).sum()), abs=1e-4)


def test_config_lays_overrides_over_the_defaults():
    cfg = lm.config({"pretrain": {"steps": 7}, "ranks": (3,)})
    assert cfg["pretrain"] == {**lm.DEFAULTS["pretrain"], "steps": 7} and cfg["ranks"] == (3,)
    assert cfg["finetune"] == lm.DEFAULTS["finetune"] and lm.config() == lm.DEFAULTS
    with pytest.raises(ValueError, match="cfg='pretrian'"):
        lm.config({"pretrian": {}})
    with pytest.raises(ValueError, match="lams="):
        lm.config({"lams": (-1.0,)})
    with pytest.raises(ValueError, match="ranks=0"):
        lm.config({"ranks": (0,)})


def test_mixture_weights_and_relative_drop():
    w = lm.mixture_weights({"a": 2, "b": 3}, {"a": 0.25, "b": 0.75})
    np.testing.assert_allclose(w, [0.125, 0.125, 0.25, 0.25, 0.25])
    with pytest.raises(ValueError, match="shares.a=-1"):
        lm.mixture_weights({"a": 2}, {"a": -1.0})
    np.testing.assert_allclose(lm.relative_drop(np.array([[0.8, 0.6, 0.2]]), [0.0, -0.5, -1.0]), [0.75])


def test_unlearning_takes_one_model_key_per_corpus():
    from tvtheory import corpus

    cs = [corpus.generate(s, n_docs=4, n_general=4, n_general_test=4, seq_len=8, prompt_len=2) for s in (0, 1)]
    with pytest.raises(ValueError, match="keys=1: must give one key per corpus"):
        lm.unlearning(cs, keys=jax.random.split(jax.random.key(0), 1))
