"""The text corpora: fixed by the seed, the sets related as designed (the aligned book shares the forget book's world,
the unrelated book does not), prompt / continuation splits consistent, overlap measures right on hand examples."""

import numpy as np
import pytest

from tvtheory import corpus as C

KW = dict(n_docs=24, n_general=40, n_general_test=10, seq_len=32, prompt_len=8)


@pytest.fixture(scope="module")
def c0():
    return C.generate(0, **KW)


def words(c, name):
    return set(c.vocab[i] for i in np.unique(c.tokens[name]))


def name_words(world, books=()):
    return {w for n in (*world.names, *(x for b in books for x in b.names)) for w in n.split()}


def test_fixed_by_the_seed_and_different_across_seeds(c0):
    again, other = C.generate(0, **KW), C.generate(1, **KW)
    for k in C.SETS:
        assert np.array_equal(c0.tokens[k], again.tokens[k])
        assert not np.array_equal(c0.tokens[k], other.tokens[k])
    assert c0.vocab == other.vocab == C.vocabulary()


def test_a_set_does_not_change_when_another_sets_size_does(c0):
    more_general = C.generate(0, **{**KW, "n_general": 80})
    for k in ("forget", "aligned", "unrelated", "general_test"):
        assert np.array_equal(c0.tokens[k], more_general.tokens[k])


def test_shapes_ids_and_sizes(c0):
    sizes = {"forget": 24, "aligned": 24, "unrelated": 24, "general": 40, "general_test": 10}
    for k, n in sizes.items():
        t = c0.tokens[k]
        assert t.shape == (n, 32) and t.dtype == np.int32
        assert t.min() >= 1 and t.max() < len(c0.vocab)         # id 0 is <pad>, never emitted
    assert c0.vocab[0] == C.PAD and len(set(c0.vocab)) == len(c0.vocab)


def test_aligned_shares_the_forget_world_and_unrelated_does_not(c0):
    a_names, b_names = name_words(C.WORLD_A), name_words(C.WORLD_B)
    book1, book2 = name_words(C.WORLD_A, (C.BOOK_1,)) - a_names, name_words(C.WORLD_A, (C.BOOK_2,)) - a_names
    forget, aligned, unrelated, general = (words(c0, k) for k in ("forget", "aligned", "unrelated", "general"))
    # most of the world's core characters appear in both books; each book keeps its own
    assert len(a_names & forget & aligned) >= len(a_names) - 2
    assert book1 <= forget and not book1 & aligned
    assert book2 <= aligned and not book2 & forget
    assert not (a_names | book1 | book2) & unrelated and not b_names & (forget | aligned)
    assert not (a_names | b_names | book1 | book2) & general
    # every word of a set is one its world can emit
    assert forget <= C.world_words(C.WORLD_A, (C.BOOK_1,))
    assert unrelated <= C.world_words(C.WORLD_B)


def test_ngram_overlap_ranks_aligned_above_unrelated_for_every_n(c0):
    rows = {(r["a"], r["b"], r["n"]): r for r in C.relations(c0)}
    assert len(rows) == 6 * 4
    for n in range(1, 5):
        fa, fu = rows[("forget", "aligned", n)], rows[("forget", "unrelated", n)]
        assert fa["jaccard"] > fu["jaccard"] and fa["containment"] > fu["containment"]
    assert rows[("forget", "aligned", 1)]["jaccard"] > 0.6
    assert rows[("forget", "unrelated", 4)]["jaccard"] < 0.01


def test_ngram_measures_on_hand_examples():
    assert C.ngrams(np.array([[1, 2, 3]]), 2) == {(1, 2), (2, 3)}
    assert C.ngrams(np.array([[1, 2], [3, 4]]), 2) == {(1, 2), (3, 4)}        # none across documents
    o = C.ngram_overlap(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]), 2)
    assert o == {"jaccard": pytest.approx(1 / 3), "containment": pytest.approx(1 / 2)}
    assert C.ngram_overlap(np.array([[1, 2]]), np.array([[1, 2]]), 1)["jaccard"] == 1.0
    assert C.jaccard(set(), set()) == 0.0
    with pytest.raises(ValueError, match="n=0"):
        C.ngrams(np.array([[1]]), 0)


def test_prompt_continuation_split_is_consistent(c0):
    for k in ("forget", "aligned", "unrelated"):
        p, cont = c0.split(k)
        assert p.shape == (24, 8) and cont.shape == (24, 24)
        assert np.array_equal(np.concatenate([p, cont], axis=1), c0.tokens[k])
        assert len({tuple(r) for r in p.tolist()}) == 24               # one document per prompt
        q, r = C.split(c0.tokens[k], 8)
        assert np.array_equal(p, q) and np.array_equal(cont, r)
    with pytest.raises(ValueError, match="prompt_len=32"):
        C.split(c0.tokens["forget"], 32)


def test_text_round_trips_and_bad_arguments_raise(c0):
    text = c0.text("forget", 3)
    assert np.array_equal(C.encode(text, c0.vocab), c0.tokens["forget"][3])
    with pytest.raises(ValueError, match="'dragon'"):
        C.encode("the dragon", c0.vocab)
    with pytest.raises(ValueError, match="prompt_len=32"):
        C.generate(0, seq_len=32, prompt_len=32)
    with pytest.raises(ValueError, match="too many documents"):
        C.generate(0, n_docs=30, prompt_len=1, seq_len=4)
    stacked = C.stack([c0, C.generate(1, **KW)])
    assert stacked["forget"].shape == (2, 24, 32)
