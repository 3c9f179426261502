"""Seeded text corpora for the offline analogue of the paper's language experiment (unlearning one Harry Potter book
in Phi-1.5 by negating its task vector; Rouge-L on that book, on a second book of the series and on an unrelated
novel).

Nothing is downloaded: two invented fictional worlds and a pool of generic sentences are written out below, and
documents are drawn from them by templates with seeded choices.

- ``forget``: stories and biographies of world A (Brackenmoor, a school of fen wardens): its characters, places,
  objects, creatures, recurring phrases and terse style. Book 1 adds a few names, places and objects of its own.
- ``aligned``: the SAME world and style, different documents (book 2 of the series: the core lexicon and templates
  of world A plus book 2's own names, places and objects), the analogue of the paper's second Harry Potter book.
- ``unrelated``: world B (Wexley, a Regency harbour town): different names, places, objects, phrases and a long,
  ironic style, the analogue of Pride and Prejudice.
- ``general`` / ``general_test``: generic text mixing many template families (weather, market, recipes,
  directions, routines, geography) with no name of either world; Psi_0 is pre-trained on it (and the books), and the
  loss on the held-out ``general_test`` measures what an edit keeps.

Vocabulary: word level (punctuation "," and "." are tokens of their own), fixed by the lexicons below and so the
same for every seed, which lets corpora of several seeds be stacked on one array axis. Words rather than characters
because Rouge-L is computed on words: a word model's greedy continuation is scored in the unit it is produced in, a
394-word vocabulary keeps the output layer small, and the default 32-token window holds 2-3 sentences (a character
model would need ~6x longer sequences for the same text).

Documents are exactly ``seq_len`` tokens (sentences are generated until the window is full, then cut, as a book is
cut into chunks). Each document splits into a prompt (its first ``prompt_len`` tokens) and its true continuation
(the rest). Training sees whole documents; memorisation is measured, as the paper measures it on the book, on the
prompts of the training documents themselves: greedy continuation of each prompt scored by Rouge-L against the
true continuation. Prompts are unique within a set (a prompt that names one document, not several); every opening
names the protagonist within its first words, so that uniqueness rarely needs a redraw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from tvtheory import _check

SETS = ("forget", "aligned", "unrelated", "general", "general_test")
PAD = "<pad>"       # id 0; never emitted by the generator (a filler for decoding buffers)


@dataclass(frozen=True)
class World:
    """A fictional world's lexicon and style: slot pools and sentence templates.

    Slots in templates: {hero}, {friend}, {home}, {thing} are fixed per document (its protagonist, companion, home
    and object, so a document hangs together); every other slot draws afresh from its pool at each use."""

    name: str
    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]
    pools: dict[str, tuple[str, ...]]
    openings: tuple[str, ...]
    templates: tuple[str, ...]


@dataclass(frozen=True)
class Book:
    """A book of a world: its own names, places and objects, mixed into the world's pools."""

    names: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()


WORLD_A = World(
    name="brackenmoor",
    names=("aldric", "wren", "tamsin", "corvin", "isolde", "bram", "elowen", "fenwick", "hesper", "oswin", "maren",
           "quill"),
    places=("brackenmoor", "the ember hall", "the low library", "the fen gate", "the owl tower", "the black mere",
            "the warden yard", "the east stair"),
    objects=("lantern", "rune stone", "ash staff", "bone flute", "star map", "iron ring", "sealed letter",
             "hourglass"),
    pools={
        "creature": ("fenwolf", "marsh drake", "lantern moth", "grey heron", "bog wight"),
        "phrase": ("by moon and ember", "as the fen bells rang", "while the lanterns burned low",
                   "for the wardens keep the gate", "beneath the cold stars"),
        "adj": ("pale", "hollow", "silent", "ancient", "crooked", "cold", "cursed"),
        "verb": ("lit", "carried", "hid", "sealed", "mended", "stole", "found", "warded"),
        "move": ("crept to", "ran to", "climbed to", "wandered to", "fled to"),
        "time": ("at dusk", "before dawn", "at the third bell", "in the long fog", "at midnight"),
        "kept": ("hidden", "sealed", "buried", "kept", "lost"),
        "feel": ("afraid", "weary", "certain", "uneasy", "glad"),
    },
    openings=("{hero} came to {home} in the year of the long fog .",
              "{hero} was born at {home} , the child of a warden .",
              "this is the tale of {hero} of {home} and the {thing} .",
              "the wardens of {home} remember {hero} and {friend} ."),
    templates=("{hero} {verb} the {thing} {time} .",
               "{phrase} , {name} whispered that the {creature} had woken .",
               "{hero} and {friend} {move} {place} , {phrase} .",
               "the {adj} {object} was {kept} beneath {place} .",
               "{name} told {hero} that {place} was {adj} {time} .",
               "no warden had seen a {creature} in {place} since the old war .",
               "{friend} {verb} the {adj} {thing} , and {name} said nothing .",
               "{hero} was {feel} , for the {thing} had grown {adj} .",
               "{time} {friend} {move} {home} with the {object} .",
               "{name} {verb} the {object} {phrase} ."),
)

BOOK_1 = Book(names=("tobin", "sable", "morrow"), places=("the drowned vault", "the reed maze"),
              objects=("glass crown", "moth cloak"))
BOOK_2 = Book(names=("ysolde", "garrick", "linnet"), places=("the sky bridge", "the salt cellar"),
              objects=("thorn key", "silver bell"))

WORLD_B = World(
    name="wexley",
    names=("mr darrow", "miss ainsley", "captain holt", "lady fairley", "eliza", "henrietta", "jonas pell",
           "mrs bingley", "lydia", "catherine", "colonel brandt", "mr thorpe"),
    places=("wexley", "the assembly rooms", "the customs house", "fairley park", "the harbour", "the vicarage",
            "the long parlour", "netherby"),
    objects=("ledger", "shawl", "invitation", "bonnet", "pianoforte", "letter of credit", "carriage", "miniature"),
    pools={
        "phrase": ("it was generally agreed", "it must be confessed", "it was universally allowed",
                   "all the neighbourhood believed", "it could not be denied"),
        "manner": ("with no small degree of satisfaction", "as propriety required", "to the astonishment of all",
                   "with perfect civility", "in very low spirits"),
        "adj": ("agreeable", "handsome", "tiresome", "amiable", "prudent", "fashionable", "vain"),
        "verb": ("called upon", "wrote to", "danced with", "dined with", "quarrelled with", "walked with"),
        "amount": ("ten thousand", "four thousand", "two hundred pounds", "five hundred pounds"),
        "season": ("in the spring", "before michaelmas", "all the summer", "at christmas", "during the races"),
    },
    openings=("{hero} , it was seldom doubted in {home} , was {adj} .",
              "{hero} of {home} had lived nearly twenty years in the world .",
              "the family of {hero} had long been settled at {home} .",
              "{hero} came of the most {adj} family in {home} ."),
    templates=("{phrase} that {hero} was the most {adj} person in {home} .",
               "{hero} {verb} {name} at {place} , {manner} .",
               "{name} remarked that the {object} was hardly {adj} .",
               "{hero} {verb} {friend} twice {season} , which was much observed .",
               "a fortune of {amount} a year made {name} very {adj} .",
               "{friend} wrote to {hero} concerning the {thing} , {manner} .",
               "{phrase} that the {thing} had been bought at {place} .",
               "{season} {hero} and {friend} removed to {place} .",
               "{name} thought {friend} {adj} , and said so {manner} ."),
)

GENERAL = {
    "pools": {
        "person": ("farmer", "teacher", "baker", "driver", "nurse", "child", "worker", "doctor", "student",
                   "fisherman"),
        "food": ("apples", "eggs", "bread", "fish", "onions", "beans", "rice", "milk", "cheese", "carrots"),
        "num": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"),
        "day": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        "weather": ("cold", "warm", "wet", "dry", "windy", "clear", "cloudy", "hot"),
        "region": ("north", "south", "east", "west", "valley", "city", "coast", "hills"),
        "building": ("school", "bank", "shop", "station", "hospital", "office", "bakery", "post office"),
        "landmark": ("bridge", "church", "park", "river", "market", "corner", "square", "fountain"),
        "dish": ("soup", "a cake", "a stew", "a salad", "bread rolls", "a pie"),
        "tool": ("pan", "pot", "bowl", "knife", "spoon", "oven"),
        "animal": ("cow", "dog", "horse", "goat", "cat", "hen", "duck", "pig"),
        "colour": ("red", "blue", "green", "yellow", "white", "brown"),
    },
    "templates": (
        "the weather in the {region} was {weather} on {day} .",
        "on {day} it will be {weather} in the {region} and {weather} by night .",
        "a {person} bought {num} {food} at the market .",
        "the {person} sold {food} and {food} to the {person} .",
        "to make {dish} , mix the {food} with water in a {tool} .",
        "cook the {food} for {num} minutes and serve it with {food} .",
        "turn left at the {landmark} and walk to the {building} .",
        "the {building} is next to the {landmark} , near the {landmark} .",
        "every morning the {person} opens the {building} at {num} o clock .",
        "the {person} asked the {person} where the {building} was .",
        "the road runs from the {region} to the {region} past the {landmark} .",
        "a {colour} {animal} stood in the field by the {landmark} .",
        "the {person} fed the {animal} before going to the {building} .",
        "there are {num} {animal}s on the farm and {num} in the barn .",
    ),
}


@dataclass(frozen=True)
class Corpus:
    """Token arrays (N, seq_len) int32 per set, the shared vocabulary, and the prompt length."""

    vocab: tuple[str, ...]
    tokens: dict[str, np.ndarray]
    prompt_len: int
    seed: int
    index: dict[str, int] = field(default_factory=dict, repr=False)

    def text(self, name: str, i: int) -> str:
        return decode(self.tokens[name][i], self.vocab)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return split(self.tokens[name], self.prompt_len)


def _words(s: str) -> list[str]:
    return re.sub(r"\{[a-z]+\}[a-z]*", " ", s).split()     # "{animal}s": the plural is added by vocabulary()


def _lexicon_words(world: World, books=()) -> set[str]:
    words = set()
    for s in (*world.names, *world.places, *world.objects, *world.openings, *world.templates,
              *(w for pool in world.pools.values() for w in pool),
              *(w for b in books for w in (*b.names, *b.places, *b.objects))):
        words.update(_words(s))
    return words


def world_words(world: World, books=()) -> set[str]:
    """Every word a world (with the given books) can emit."""
    return _lexicon_words(world, books)


def vocabulary() -> tuple[str, ...]:
    """The fixed word-level vocabulary: <pad> (id 0), then every word any set can emit, sorted. Seed-independent."""
    words = _lexicon_words(WORLD_A, (BOOK_1, BOOK_2)) | _lexicon_words(WORLD_B)
    for s in (*GENERAL["templates"], *(w for pool in GENERAL["pools"].values() for w in pool)):
        words.update(_words(s))
    words.update(f"{a}s" for a in GENERAL["pools"]["animal"])       # the "{animal}s" plural
    return (PAD, *sorted(words))


def encode(text: str, vocab: tuple[str, ...]) -> np.ndarray:
    idx = {w: i for i, w in enumerate(vocab)}
    try:
        return np.array([idx[w] for w in text.split()], np.int32)
    except KeyError as e:
        raise ValueError(f"text={text[:40]!r}: word {e.args[0]!r} is not in the vocabulary") from None


def decode(ids, vocab: tuple[str, ...]) -> str:
    return " ".join(vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def split(tokens_NxT: np.ndarray, prompt_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt N x P, true continuation N x (T - P)) of each document."""
    _check.integer("prompt_len", prompt_len, 1, tokens_NxT.shape[-1] - 1)
    return tokens_NxT[..., :prompt_len], tokens_NxT[..., prompt_len:]


def _fill(template: str, rng: np.random.Generator, pools: dict[str, tuple[str, ...]], bound: dict[str, str]) -> str:
    def one(m):
        slot = m.group(1)
        if slot in bound:
            return bound[slot]
        pool = pools[slot]
        return pool[rng.integers(len(pool))]
    return re.sub(r"\{([a-z]+)\}", one, template)


def _world_doc(rng, world: World, book: Book, seq_len: int) -> list[str]:
    names = (*world.names, *book.names)
    places = (*world.places, *book.places)
    objects = (*world.objects, *book.objects)
    hero, friend = (names[i] for i in rng.choice(len(names), 2, replace=False))
    bound = {"hero": hero, "friend": friend, "home": places[rng.integers(len(places))],
             "thing": objects[rng.integers(len(objects))]}
    pools = {**world.pools, "name": names, "place": places, "object": objects}
    words = _fill(world.openings[rng.integers(len(world.openings))], rng, pools, bound).split()
    while len(words) < seq_len:
        words += _fill(world.templates[rng.integers(len(world.templates))], rng, pools, bound).split()
    return words[:seq_len]


def _general_doc(rng, seq_len: int) -> list[str]:
    words: list[str] = []
    while len(words) < seq_len:
        t = GENERAL["templates"][rng.integers(len(GENERAL["templates"]))]
        words += _fill(t, rng, GENERAL["pools"], {}).split()
    return words[:seq_len]


def _documents(rng, n: int, make, prompt_len: int, unique: bool) -> list[list[str]]:
    docs, prompts = [], set()
    for _ in range(100 * n):
        if len(docs) == n:
            return docs
        d = make(rng)
        key = tuple(d[:prompt_len])
        if unique and key in prompts:
            continue            # a repeated prompt would ask for two different continuations
        prompts.add(key)
        docs.append(d)
    raise ValueError(f"n={n}: too many documents for unique {prompt_len}-token prompts; lower n or raise prompt_len")


def generate(seed: int = 0, *, n_docs: int = 32, n_general: int = 256, n_general_test: int = 64, seq_len: int = 32,
             prompt_len: int = 8) -> Corpus:
    """The five sets for one seed. Each set draws from its own stream ``default_rng([seed, set index])``, so a set
    does not change when another set's size does."""
    _check.integer("seed", seed, 0)
    _check.integer("n_docs", n_docs, 1)
    _check.integer("n_general", n_general, 1)
    _check.integer("n_general_test", n_general_test, 1)
    _check.integer("seq_len", seq_len, 2)
    _check.integer("prompt_len", prompt_len, 1, seq_len - 1)
    vocab = vocabulary()
    makers = {
        "forget": (n_docs, lambda r: _world_doc(r, WORLD_A, BOOK_1, seq_len), True),
        "aligned": (n_docs, lambda r: _world_doc(r, WORLD_A, BOOK_2, seq_len), True),
        "unrelated": (n_docs, lambda r: _world_doc(r, WORLD_B, Book(), seq_len), True),
        "general": (n_general, lambda r: _general_doc(r, seq_len), False),
        "general_test": (n_general_test, lambda r: _general_doc(r, seq_len), False),
    }
    idx = {w: i for i, w in enumerate(vocab)}
    tokens = {}
    for k, (name, (n, make, unique)) in enumerate(makers.items()):
        docs = _documents(np.random.default_rng([seed, k]), n, make, prompt_len, unique)
        tokens[name] = np.array([[idx[w] for w in d] for d in docs], np.int32)
    return Corpus(vocab=vocab, tokens=tokens, prompt_len=prompt_len, seed=seed, index=idx)


def stack(corpora: list[Corpus]) -> dict[str, np.ndarray]:
    """Token arrays of several seeds' corpora on a leading seed axis: set -> (S, N, T)."""
    if not corpora:
        raise ValueError("corpora=[]: at least one corpus is needed")
    if len({(c.vocab, c.prompt_len) for c in corpora}) != 1:
        _check.fail("corpora", [c.seed for c in corpora], "must share one vocabulary and prompt_len")
    return {k: np.stack([c.tokens[k] for c in corpora]) for k in corpora[0].tokens}


def ngrams(tokens_NxT: np.ndarray, n: int) -> set[tuple[int, ...]]:
    """Distinct n-grams within documents (none crosses a document boundary)."""
    _check.integer("n", n, 1)
    t = np.asarray(tokens_NxT)
    return {tuple(row[i:i + n]) for row in t.tolist() for i in range(len(row) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def ngram_overlap(a_NxT: np.ndarray, b_NxT: np.ndarray, n: int) -> dict[str, float]:
    """Jaccard |A & B| / |A | B| of the two sets' distinct n-grams, and the containment |A & B| / |B| (the share of
    B's n-grams that A also has). n = 1 is the vocabulary overlap."""
    A, B = ngrams(a_NxT, n), ngrams(b_NxT, n)
    return {"jaccard": jaccard(A, B), "containment": len(A & B) / len(B) if B else 0.0}


def relations(corpus: Corpus, names=("forget", "aligned", "unrelated", "general"), max_n: int = 4) -> list[dict]:
    """One row per pair of sets and n in 1..max_n: n-gram Jaccard and containment (n = 1: vocabulary Jaccard)."""
    rows = []
    for a, b in combinations(names, 2):
        for n in range(1, max_n + 1):
            rows.append({"a": a, "b": b, "n": n, **ngram_overlap(corpus.tokens[a], corpus.tokens[b], n)})
    return rows
