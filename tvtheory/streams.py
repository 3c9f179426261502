"""Every random stream of the suite, named in one place.

A run's key is ``jax.random.key(seed)``; seed index s of a sweep uses ``seed_key = fold_in(key, s)``, and each
concern of that seed has its own stream, ``fold_in(seed_key, CONCERN)``, split per task where a concern has several
tasks. Batch t of a fine-tune is ``fold_in(finetune_key, t)`` (train.py). Streams never share a key, so changing how
much one concern draws (more test samples, more steps) leaves every other concern's numbers as they were.

The numeric values are part of the results: changing one changes every number drawn from that stream.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Concerns of a seed (fold_in(seed_key, CONCERN)).
PSI0 = 0              # Psi_0's initial weights
FINETUNE = 1          # each task's fine-tune batches (then fold_in(., task index), then fold_in(., step))
TEST = 2              # each task's test set (then fold_in(., task index))
PRETRAIN_SGD = 3      # the batches of Psi_0's optional pre-training
VAL = 4               # each task's validation set, for choices a verdict must not make on the test set

# Task indices of streams that are not a sweep's own tasks.
PRETRAIN_TASK_TEST = 1000     # + j: the test set of pre-training task j (TEST stream)
# Draws made once per run (from the run's key, not a seed's).
RUN_IRRELEVANT = 2**31 - 1    # the random irrelevant patterns (data.irrelevant 'random', 'random_unit', 'correlated')
# Within a fine-tune's key: its fixed training set (train.n_train > 0); steps use 0 .. steps - 1.
TRAIN_SET = 2**31 - 1
# Within a training sample's key (a batch's, or the fixed training set's): which labels flip (data.label_noise), so
# that the samples X are the clean sampler's for the same key.
LABEL_FLIP = 7

# Colored-Digits (numpy streams of the colouring, and the ViT's keys per seed).
DIGITS_INIT, DIGITS_PRETRAIN, DIGITS_FINETUNE = 0, 1, 10     # fold_in(seed_key, .) (+ task index for fine-tunes)
DIGITS_PRETRAIN_COLOURS = 7                                  # numpy seed of the pre-training images' colours

# Concerns of a seed's key that belong to one experiment (fold_in(seed_key, .)): numbered apart from the shared ones
# above and from each other, so that no two concerns of the suite ever draw from one key.
MERGING_DARE_MASKS = 20        # DARE's drop masks (one per seed, whatever alpha, ratio or k)
MERGING_ADAMERGING_BATCHES = 21   # AdaMerging's unlabelled batches
UNLEARNING_CORPUS = 22         # the seed's corpus (an integer drawn from it seeds corpus.generate)
UNLEARNING_MODEL = 23          # the language model's initialisation, pre-training and fine-tuning batches


def run_key(seed: int) -> jax.Array:
    return jax.random.key(seed)


def seed_key(key: jax.Array, s) -> jax.Array:
    """The key of seed index ``s`` (may be traced) of a run whose key is ``key``."""
    return jax.random.fold_in(key, s)


def seed_keys(seed: int, n_seeds: int) -> jax.Array:
    return jax.vmap(lambda s: seed_key(run_key(seed), s))(jnp.arange(n_seeds))


def concern(seed_key_: jax.Array, which: int) -> jax.Array:
    return jax.random.fold_in(seed_key_, which)


def task(seed_key_: jax.Array, which: int, task_index) -> jax.Array:
    """The key of concern ``which`` (FINETUNE, TEST, VAL) for one task of a seed; ``task_index`` may be traced."""
    return jax.random.fold_in(concern(seed_key_, which), task_index)


def digits_colours(task_index: int, split_index: int) -> int:
    """The numpy seed colouring split ``split_index`` (train 0, test 1, val 2) of Colored-Digits task ``task_index``:
    fixed by the split, shared by every model seed."""
    return 1000 * task_index + split_index
