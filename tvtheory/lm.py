"""A small causal transformer LM in Flax NNX for the offline analogue of the paper's language experiment (negating
the task vector of one Harry Potter book in Phi-1.5 and measuring Rouge-L on that book, an aligned book and an
unrelated one); the corpora are tvtheory/corpus.py's.

Tokens -> embedding + learned positions -> ``depth`` pre-norm blocks (causal multi-head attention, GELU MLP) ->
final LayerNorm -> logits (tied to the embedding by default). Attention uses one fused (dim, 3 dim) projection and a
(dim, dim) output projection, so every weight of the model is a 2-D matrix and a rank-r truncation of the task
vector (the paper's Corollary 1, as taskvec.low_rank) acts on each matrix as a whole. Everything is pure in the
parameters (an nnx.State pytree, as tvtheory/vit.py): ``apply(graphdef, params, tokens)``.

``unlearning`` runs the experiment with seeds on an array axis: Psi_0 pre-trained from scratch on a mixture of the
general corpus and the three books (so that, like Phi-1.5, it already half-knows the books), dPsi_book = Psi*_book -
Psi_0 from a fine-tune on each book started at Psi_0 (the fine-tune raises memorisation beyond Psi_0's, which is
what dPsi_forget then carries), and Psi_0 + lambda dPsi_forget (the paper's negation) scored over a lambda grid,
with dPsi_forget whole and truncated to rank r. Memorisation is measured as the paper measures it on the book: greedy
continuations of the prompts of the training documents, Rouge-L F against their true continuations; the per-token
loss on each book and on held-out general text is reported beside it.

What the default size shows (seeds 0-5): relative Rouge-L drops at lambda = -1 of ~0.53 / 0.39 / 0.20 (forget /
aligned / unrelated) with dPsi_forget, ~0.38 / 0.26 / 0.16 at rank 8, ~0.16 / 0.10 / 0.04 at rank 2, ordered
forget > aligned > unrelated in every seed but one at rank 2; centred alpha_hat ~0.57 (forget, aligned) and ~0.08
(forget, unrelated); general-text loss +7% (full) at lambda = -1. The ordering
depends on Psi_0: with the books at 5% of pre-training instead of 30% (seeds 0-2), Psi_0 knows world A poorly
(Rouge-L ~0.45), the aligned book has little memorisation for the negation to take, and its drop falls to the
unrelated book's level (0.24 vs 0.25). At that 5% share the fine-tuning step matters too: Adam at lr 1e-3 makes
every drop large (0.55 / 0.45 / 0.46: damage, not forgetting), at 1e-4 only the forget drop is large (0.37 / 0.12 /
0.14).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tvtheory import _check, metrics, taskvec


class LM(nnx.Module):
    def __init__(self, *, vocab: int, seq_len: int, dim: int = 64, depth: int = 2, heads: int = 4,
                 tied: bool = True, rngs: nnx.Rngs):
        if dim % heads:
            _check.fail("dim", dim, f"must be a multiple of heads={heads}")
        # plain Params rather than nnx.Embed, whose compute dtype is frozen at init: the model then runs in the
        # parameters' dtype (float64 for the gradient check)
        self.embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (vocab, dim)))
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq_len, dim)))
        self.blocks = nnx.List([Block(dim, heads, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = None if tied else nnx.Linear(dim, vocab, use_bias=False, rngs=rngs)

    def __call__(self, tokens_BxT):
        h = self.embedded(tokens_BxT)
        for blk in self.blocks:
            h = blk(h)
        return self.logits(h)

    def embedded(self, tokens_BxT, start=0):
        """Token plus position embeddings (B, T, dim) of tokens at positions start .. start + T - 1 (``start`` may be
        traced)."""
        T = tokens_BxT.shape[-1]
        pos = self.pos[...][start:start + T] if isinstance(start, int) else jax.lax.dynamic_slice_in_dim(
            self.pos[...], start, T)
        return jnp.take(self.embed[...], tokens_BxT, axis=0) + pos

    def logits(self, h_BxTxD):
        h = self.norm(h_BxTxD)
        return h @ self.embed[...].T if self.head is None else self.head(h)


class Block(nnx.Module):
    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp1 = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.mlp2 = nnx.Linear(4 * dim, dim, rngs=rngs)

    def __call__(self, h_BxTxD):
        T = h_BxTxD.shape[-2]
        return self.attend(h_BxTxD, *self.project(h_BxTxD), jnp.tril(jnp.ones((T, T), bool)))

    def project(self, h_BxTxD):
        """Queries, keys and values (B, T, heads, dim / heads) of the tokens' states."""
        *B, T, D = h_BxTxD.shape
        q, k, v = jnp.split(self.qkv(self.ln1(h_BxTxD)), 3, axis=-1)
        return tuple(x.reshape(*B, T, self.heads, D // self.heads) for x in (q, k, v))

    def attend(self, h_BxTxD, q, k, v, visible_TxS):
        """The block's output for the states h (B, T, dim) whose queries are q, over the keys and values k, v
        (B, S, heads, dim / heads), key s visible to query t where visible[t, s]."""
        *B, T, D = h_BxTxD.shape
        s = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(D // self.heads)
        s = jnp.where(visible_TxS, s, -1e9)
        a = jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(s, axis=-1), v).reshape(*B, T, D)
        h = h_BxTxD + self.out(a)
        return h + self.mlp2(jax.nn.gelu(self.mlp1(self.ln2(h))))


def init(key, **kw):
    """(graphdef, params) of an LM(**kw): its structure and its parameters (an nnx.State, a pytree of arrays).

    Weights are drawn by ``init_params`` (one normal draw for the whole model), not by the layers' own initializers:
    the same distributions up to truncation, one random-bits program instead of one per parameter shape, which cut
    the compile time of every program that initialises a model."""
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: LM(rngs=nnx.Rngs(0), **kw)))
    return graphdef, _init_params(key, tuple(sorted(kw.items())))


def init_params(key, **kw):
    """Parameters of an LM(**kw) from one normal draw: kernels N(0, 1/fan_in) (LeCun, as nnx.Linear's default but
    untruncated), embedding and positions N(0, 0.02^2), biases 0, LayerNorm scales 1. Traceable (vmap over keys)."""
    state = nnx.state(nnx.eval_shape(lambda: LM(rngs=nnx.Rngs(0), **kw)), nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    z = jax.random.normal(key, (sum(int(np.prod(x.shape)) for _, x in leaves),))
    out, at = [], 0
    for path, x in leaves:
        name = next(k.key for k in reversed(path) if isinstance(k, jax.tree_util.DictKey))
        size = int(np.prod(x.shape))
        draw = z[at:at + size].reshape(x.shape)
        at += size
        if name == "kernel":
            out.append(draw / np.sqrt(x.shape[0]))
        elif name in ("embed", "pos"):
            out.append(0.02 * draw)
        else:
            out.append(jnp.ones(x.shape) if name == "scale" else jnp.zeros(x.shape))
    return jax.tree_util.tree_unflatten(treedef, out)


@partial(jax.jit, static_argnames=("kw",))
def _init_params(key, kw):
    return init_params(key, **dict(kw))


def apply(graphdef, params, tokens_BxT):
    """Next-token logits (B, T, vocab): position t sees tokens 0..t only. Pure in ``params``."""
    return nnx.merge(graphdef, params)(tokens_BxT)


def nll(graphdef, params, tokens_NxT):
    """Per-token negative log-likelihood (N, T-1) of tokens 1..T-1 given their prefixes."""
    logits = apply(graphdef, params, tokens_NxT[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens_NxT[:, 1:])


def set_loss(graphdef, params, tokens_NxT, start: int = 1):
    """Mean per-token loss over the set's tokens at positions >= ``start`` (1: the whole document but its first
    token; the prompt length: the continuation only)."""
    _check.integer("start", start, 1, tokens_NxT.shape[1] - 1)
    return nll(graphdef, params, tokens_NxT)[:, start - 1:].mean()


def train(graphdef, params, key, tokens_NxT, *, steps: int, batch: int, lr: float, weights_N=None):
    """Adam on next-token cross-entropy over whole documents; batch t is ``batch`` documents drawn with replacement
    from fold_in(key, t), with probabilities proportional to ``weights_N`` (uniform if None; a mixture for
    pre-training). Returns (params, loss per step). Jitted (one program for uniform and weighted draws)."""
    _check.integer("steps", steps, 1)
    _check.integer("batch", batch, 1)
    _check.in_range("lr", lr, 0.0, lo_open=True)
    w = jnp.ones(tokens_NxT.shape[0]) if weights_N is None else jnp.asarray(weights_N)
    return _train(graphdef, params, key, tokens_NxT, w, steps=steps, batch=batch, lr=lr)


@partial(jax.jit, static_argnames=("graphdef", "steps", "batch", "lr"))
def _train(graphdef, params, key, tokens_NxT, weights_N, *, steps: int, batch: int, lr: float):
    opt = optax.adam(lr)
    p_N = weights_N / weights_N.sum()

    def step(carry, t):
        p, s = carry
        idx = jax.random.choice(jax.random.fold_in(key, t), tokens_NxT.shape[0], (batch,), p=p_N)
        loss, g = jax.value_and_grad(lambda q: set_loss(graphdef, q, tokens_NxT[idx]))(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return params, losses


def greedy(graphdef, params, prompts_BxP, n_new: int):
    """Greedy continuation (B, n_new) of each prompt: argmax of the next-token logits, fed back. The keys and values
    of every block are cached: one pass over the whole window (the prompt, then <pad> = 0 in the future slots, which
    the causal mask keeps from mattering) fills them, and each later step runs its one new token through the blocks
    against them; the logits are formed at the one position read. The decisions of recomputing the window at every
    step (tested against ``apply``; the products of one row and of the window may round apart, which could only
    matter at an exact tie of two logits), with the work of ~2 windows instead of ``n_new``: a greedy pass of the
    unlearning experiment's 96 prompts took 31 ms instead of 298 ms on one core, the same tokens. ``n_new`` must be
    static (jit it with ``static_argnames``)."""
    model = nnx.merge(graphdef, params)
    B, P = prompts_BxP.shape
    T = P + n_new
    buf = jnp.concatenate([prompts_BxP, jnp.zeros((B, n_new), prompts_BxP.dtype)], axis=1)
    h = model.embedded(buf)
    kv = []
    for blk in model.blocks:
        q, k, v = blk.project(h)
        kv.append((k, v))
        h = blk.attend(h, q, k, v, jnp.tril(jnp.ones((T, T), bool)))

    def emit(buf, h_Bx1xD, t):                      # the token after position t, written at t + 1
        nxt = jnp.argmax(model.logits(h_Bx1xD)[:, 0], axis=-1)
        return jax.lax.dynamic_update_index_in_dim(buf, nxt.astype(buf.dtype), t + 1, axis=1)

    def step(t, carry):
        buf, kv = carry
        h = model.embedded(jax.lax.dynamic_slice_in_dim(buf, t, 1, axis=1), t)       # (B, 1, dim)
        new = []
        for blk, (k, v) in zip(model.blocks, kv):
            q, k1, v1 = blk.project(h)
            k, v = (jax.lax.dynamic_update_slice_in_dim(c, x, t, axis=1) for c, x in ((k, k1), (v, v1)))
            new.append((k, v))
            h = blk.attend(h, q, k, v, (jnp.arange(T) <= t)[None, :])
        return emit(buf, h, t), new

    buf = emit(buf, h[:, P - 1:P], P - 1)
    buf, _ = jax.lax.fori_loop(P, T - 1, step, (buf, kv))
    return buf[:, P:]


_SCORER = None


def rouge_l(predictions: list[str], references: list[str]) -> np.ndarray:
    """Rouge-L F-measure of each prediction against its reference, with the ``rouge-score`` package (Lin, 2004; the
    paper's metric): longest common subsequence of words after its default tokenizer (lower case, letters and
    digits only, so "," and "." do not count), no stemming."""
    global _SCORER
    if len(predictions) != len(references):
        _check.fail("predictions", len(predictions), f"must have one per reference ({len(references)})")
    if _SCORER is None:
        from rouge_score import rouge_scorer
        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array([_SCORER.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)], np.float64)


def rouge_l_tokens(pred_NxC, true_NxC, vocab) -> np.ndarray:
    """Rouge-L F of token-id continuations (decoded with ``vocab``), one value per row; rows are (..., C)."""
    pred, true = np.asarray(pred_NxC), np.asarray(true_NxC)
    shape = pred.shape[:-1]
    words = lambda a: [" ".join(vocab[i] for i in row) for row in a.reshape(-1, a.shape[-1]).tolist()]  # noqa: E731
    return rouge_l(words(pred), words(true)).reshape(shape)


def log_probs(graphdef, params, tokens_NxT):
    """Next-token log-probabilities (N, T, vocab): the LM's output f(X; Psi) for alpha_hat."""
    return jax.nn.log_softmax(apply(graphdef, params, tokens_NxT), axis=-1)


def output_cosine(graphdef, psi0, tau1, tau2, tokens_NxT, centered=True):
    """The paper's alpha_hat between the fine-tuned LMs Psi_0 + tau1 and Psi_0 + tau2: the cosine of their outputs
    on shared inputs, the outputs being the flattened next-token log-probability vectors over every position of
    ``tokens_NxT`` (which should mix documents of both sets).

    ``centered=True`` (our reading) takes the cosine of the output changes f(X; Psi_0 + tau_i) - f(X; Psi_0): two
    models fine-tuned from one Psi_0 agree on almost every log-probability (grammar, the vocabulary's tail), so the
    raw cosine sits near 1 for any pair; the changes carry what each fine-tune did. ``centered=False`` is the raw
    cosine of f(X; Psi*_1) and f(X; Psi*_2). ``centered`` may be traced."""
    f0 = log_probs(graphdef, psi0, tokens_NxT)
    f1, f2 = (log_probs(graphdef, taskvec.add(psi0, t), tokens_NxT) for t in (tau1, tau2))
    f1, f2 = (jnp.where(centered, f - f0, f) for f in (f1, f2))
    return metrics.cosine(f1.ravel(), f2.ravel())


def mixture_weights(sizes: dict[str, int], shares: dict[str, float]) -> np.ndarray:
    """Per-document sampling weights that give each set its share of a batch (documents of one set equally likely);
    the order is the insertion order of ``sizes``."""
    for k, s in shares.items():
        _check.in_range(f"shares.{k}", s, 0.0)
    total = sum(shares[k] for k in sizes)
    if total <= 0:
        _check.fail("shares", shares, "must give a positive share to at least one set")
    return np.concatenate([np.full(n, shares[k] / total / n, np.float32) for k, n in sizes.items()])


DEFAULTS = dict(
    model=dict(dim=64, depth=2, heads=4, tied=True),
    # The books are 30% of pre-training (10% each): Psi_0 knows them well but not fully (Rouge-L ~0.75 forget, ~0.8
    # aligned, ~0.93 unrelated, where a style-only continuation scores ~0.22), so fine-tuning on a book still raises
    # its memorisation (to ~1.0) and dPsi_book carries that. At 5% each Psi_0 knows little of world A (Rouge-L
    # ~0.45) and the aligned book's drop is no longer above the unrelated one's (see the module docstring).
    pretrain=dict(steps=400, batch=32, lr=3e-3),
    shares=dict(general=0.7, forget=0.1, aligned=0.1, unrelated=0.1),
    finetune=dict(steps=100, batch=16, lr=3e-4),
    lams=(0.0, -0.5, -1.0, -1.5, -2.0),
    ranks=(2, 8),
)
BOOKS = ("forget", "aligned", "unrelated")


# The experiment runs as compiled stages, seeds vmapped in each: one program of them all took XLA ~1.4x as long to
# compile as the stages apart (51 s vs 36 s of CPU at toy size), and compilation is a large part of a run.

@partial(jax.jit, static_argnames=("graphdef", "model", "steps", "batch", "lr"))
def _pretrain(graphdef, model, keys_S, mix_SxNxT, weights_N, *, steps, batch, lr):
    def one(key, mix):
        params = init_params(jax.random.fold_in(key, 0), **dict(model))
        return _train(graphdef, params, jax.random.fold_in(key, 1), mix, weights_N, steps=steps, batch=batch, lr=lr)
    return jax.vmap(one)(keys_S, mix_SxNxT)


@partial(jax.jit, static_argnames=("graphdef", "steps", "batch", "lr"))
def _finetune(graphdef, keys_S, psi0, books_SxBxNxT, *, steps, batch, lr):
    """dPsi_book = Psi*_book - Psi_0 for every seed and book, each fine-tuned from Psi_0."""
    def one(key, p0, x, i):
        p, _ = _train(graphdef, p0, jax.random.fold_in(jax.random.fold_in(key, 2), i), x, jnp.ones(x.shape[0]),
                      steps=steps, batch=batch, lr=lr)
        return taskvec.task_vector(p, p0)
    # One vmap over the (seed, book) pairs: the same numbers as a vmap over books inside one over seeds, and ~25%
    # less compilation.
    S, nb = books_SxBxNxT.shape[:2]
    each = lambda x: jnp.repeat(x, nb, axis=0)  # noqa: E731
    books = books_SxBxNxT.reshape(S * nb, *books_SxBxNxT.shape[2:])
    taus = jax.vmap(one)(each(keys_S), jax.tree.map(each, psi0), books, jnp.tile(jnp.arange(nb), S))
    return jax.tree.map(lambda t: t.reshape(S, nb, *t.shape[1:]), taus)


PAIRS = ("forget/aligned", "forget/unrelated", "aligned/unrelated")
_PAIR_IDX = ((0, 0, 1), (1, 2, 2))


@partial(jax.jit, static_argnames=("graphdef",))
def _alphas(graphdef, psi0, taus, books_SxBxNxT):
    """alpha_hat (centred, raw) (S, 3) for the pairs of PAIRS, on the union of each pair's documents."""
    def one_seed(p0, t, books):
        def pair(a, b):
            X = jnp.concatenate([books[a], books[b]])
            f0 = log_probs(graphdef, p0, X)
            f1, f2 = (log_probs(graphdef, taskvec.add(p0, jax.tree.map(lambda x, i=i: x[i], t)), X) for i in (a, b))
            return metrics.cosine((f1 - f0).ravel(), (f2 - f0).ravel()), metrics.cosine(f1.ravel(), f2.ravel())
        return jax.vmap(pair)(jnp.array(_PAIR_IDX[0]), jnp.array(_PAIR_IDX[1]))
    return jax.vmap(one_seed)(psi0, taus, books_SxBxNxT)


def with_low_rank(taus, ranks):
    """(S, B + R, ...): each seed's task vectors, then dPsi_forget (book 0) truncated to each rank of ``ranks`` in
    every matrix, the vectors kept (taskvec.low_rank's truncation).

    On the host in numpy: the same truncation as a vmapped, jitted taskvec.low_rank of this model's 28 leaves
    deadlocked on the XLA CPU runtime (jax 0.10.2: block_until_ready never returned, with no CPU in use), and numpy's
    SVD of these small matrices takes milliseconds."""
    def truncate(x_SxMxN, r):
        if x_SxMxN.ndim < 3:
            return x_SxMxN
        u, s, vt = np.linalg.svd(x_SxMxN, full_matrices=False)
        return (u[..., :r] * s[..., None, :r]) @ vt[..., :r, :]

    def stack(t):
        x = np.asarray(t)
        low = [truncate(x[:, 0], r) for r in ranks]
        return jnp.asarray(np.concatenate([x, np.stack(low, axis=1)], axis=1) if low else x)
    return jax.tree.map(stack, taus)


@partial(jax.jit, static_argnames=("graphdef", "prompt_len"))
def _evaluate(graphdef, psi0, stack, which_M, coef_M, books_SxBxNxT, general_SxNxT, *, prompt_len):
    """Psi_0 + coef_m stack[which_m] for every point m and seed: per-book whole-document and continuation losses
    (M, B), greedy continuations (M, B, N, C), general-corpus loss (M,)."""
    def one_seed(p0, st, books, general):
        nb, n, T = books.shape
        flat = books.reshape(nb * n, T)

        def point(args):
            i, c = args
            p = taskvec.add(p0, taskvec.scale(c, jax.tree.map(lambda x: x[i], st)))
            nll_BxNxT = nll(graphdef, p, flat).reshape(nb, n, T - 1)
            gen = greedy(graphdef, p, flat[:, :prompt_len], T - prompt_len).reshape(nb, n, T - prompt_len)
            return (nll_BxNxT.mean((1, 2)), nll_BxNxT[:, :, prompt_len - 1:].mean((1, 2)), gen,
                    set_loss(graphdef, p, general))
        return jax.lax.map(point, (which_M, coef_M))
    return jax.vmap(one_seed)(psi0, stack, books_SxBxNxT, general_SxNxT)


def config(overrides=None) -> dict:
    """DEFAULTS with ``overrides`` laid over it (nested dicts key by key: {"pretrain": {"steps": 10}} keeps the
    default batch and lr)."""
    cfg = dict(DEFAULTS)
    for k, v in (overrides or {}).items():
        if k not in DEFAULTS:
            _check.fail("cfg", k, f"must be one of {sorted(DEFAULTS)}")
        cfg[k] = {**DEFAULTS[k], **v} if isinstance(DEFAULTS[k], dict) else v
    for r in cfg["ranks"]:
        _check.integer("ranks", r, 1)
    if 0.0 not in [float(x) for x in cfg["lams"]]:
        _check.fail("lams", cfg["lams"], "must contain 0 (Psi_0, the reference of every drop)")
    return cfg


def unlearning(corpora, cfg=None, keys=None):
    """The language experiment, one seed per corpus (seed s: corpus ``generate(s)`` and model key s), the seeds on an
    array axis of each compiled stage. Every book must have the same number of documents. ``keys``: the model's key
    per corpus instead (typed keys, one per corpus; the experiment passes the suite's per-seed streams), from which
    Psi_0's initialisation, its pre-training batches and the fine-tunes' batches are folded (0, 1, 2).

    Psi_0 is pre-trained on a mixture of every set (``cfg["shares"]``), then fine-tuned from Psi_0 on each book to
    give dPsi_forget, dPsi_aligned, dPsi_unrelated; the model Psi_0 + lambda dPsi_forget (the paper's negation),
    with dPsi_forget whole and truncated to rank r in every matrix (Corollary 1), is scored over ``cfg["lams"]``.

    Returns a dict of numpy arrays with the seed as leading axis; ``variant`` axes are (full, *ranks) and ``lam``
    axes follow ``cfg["lams"]``: rouge[book] and cont_loss[book] (S, variant, lam): mean Rouge-L F of the greedy
    continuations of the book's prompts and the per-token loss of its continuations; loss[set] (S, variant, lam):
    per-token loss of whole documents, for the books and general_test; gen[book] (S, variant, lam, N, C) the
    continuations; tuned_rouge[book], tuned_loss[book], tau_norm[book] (S,): Psi_0 + dPsi_book on its own book and
    ||dPsi_book||; alpha[pair], alpha_raw[pair] (S,): alpha_hat, centred and raw (see ``output_cosine``), on the
    union of the pair's documents; pretrain_loss (S, steps); config, the settings used."""
    from tvtheory import corpus as corpus_mod

    cfg = config(cfg)
    toks = {k: jnp.asarray(v) for k, v in corpus_mod.stack(corpora).items()}
    c0 = corpora[0]
    vocab, seq_len, prompt_len = len(c0.vocab), c0.tokens["forget"].shape[1], c0.prompt_len
    model = dict(vocab=vocab, seq_len=seq_len, **cfg["model"])
    if keys is None:
        keys = jax.vmap(jax.random.key)(jnp.asarray([c.seed for c in corpora], jnp.uint32))
    elif len(keys) != len(corpora):
        _check.fail("keys", len(keys), f"must give one key per corpus ({len(corpora)})")
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: LM(rngs=nnx.Rngs(0), **model)))

    sizes = {k: c0.tokens[k].shape[0] for k in ("general", *BOOKS)}
    mix = jnp.concatenate([toks[k] for k in sizes], axis=1)
    psi0, pre_losses = _pretrain(graphdef, tuple(sorted(model.items())), keys, mix,
                                 jnp.asarray(mixture_weights(sizes, cfg["shares"])), **cfg["pretrain"])
    books = jnp.stack([toks[k] for k in BOOKS], axis=1)                           # (S, B, N, T)
    taus = _finetune(graphdef, keys, psi0, books, **cfg["finetune"])              # leaves (S, B, ...)
    alpha, alpha_raw = _alphas(graphdef, psi0, taus, books)
    stack = with_low_rank(taus, tuple(cfg["ranks"]))          # (S, B + R): the books' taus, then low-rank forget
    nb, n_var, lams = len(BOOKS), 1 + len(cfg["ranks"]), [float(x) for x in cfg["lams"]]
    variant_idx = [0] + [nb + r for r in range(len(cfg["ranks"]))]
    which = [v for v in variant_idx for _ in lams] + list(range(nb))                # the grid, then each Psi*_book
    coef = [lam for _ in variant_idx for lam in lams] + [1.0] * nb
    loss, cont_loss, gen, general_loss = jax.tree.map(np.asarray, _evaluate(
        graphdef, psi0, stack, jnp.asarray(which), jnp.asarray(coef, jnp.float32), books, toks["general_test"],
        prompt_len=prompt_len))
    G = n_var * len(lams)
    grid = lambda a: a[:, :G].reshape(a.shape[0], n_var, len(lams), *a.shape[2:])        # noqa: E731

    out = {"rouge": {}, "cont_loss": {}, "loss": {}, "gen": {}, "tuned_rouge": {}, "tuned_loss": {}, "tau_norm": {}}
    norms = np.asarray(jax.vmap(jax.vmap(taskvec.norm))(taus))
    for b, k in enumerate(BOOKS):
        true_SxNxC = np.asarray(toks[k])[..., prompt_len:]
        g = grid(gen)[:, :, :, b]                                                 # (S, variant, lam, N, C)
        out["gen"][k] = g
        out["rouge"][k] = rouge_l_tokens(g, np.broadcast_to(true_SxNxC[:, None, None], g.shape), c0.vocab).mean(-1)
        out["cont_loss"][k] = grid(cont_loss)[..., b]
        out["loss"][k] = grid(loss)[..., b]
        out["tuned_rouge"][k] = rouge_l_tokens(gen[:, G + b, b], true_SxNxC, c0.vocab).mean(-1)
        out["tuned_loss"][k] = loss[:, G + b, b]
        out["tau_norm"][k] = norms[:, b]
    out["loss"]["general_test"] = grid(general_loss)
    out["alpha"] = {p: np.asarray(alpha)[:, i] for i, p in enumerate(PAIRS)}
    out["alpha_raw"] = {p: np.asarray(alpha_raw)[:, i] for i, p in enumerate(PAIRS)}
    out["pretrain_loss"] = np.asarray(pre_losses)
    out["config"] = cfg
    return out


def relative_drop(curve_lam, lams, at: float = -1.0):
    """(R(0) - R(at)) / R(0) along the last axis: the paper's relative Rouge-L drop at lambda = ``at``."""
    lams = list(np.asarray(lams, np.float64))
    i0, i1 = lams.index(0.0), lams.index(at)
    c = np.asarray(curve_lam)
    return (c[..., i0] - c[..., i1]) / c[..., i0]
