"""A dictionary's word translations as a bias on the decoder's next-word scores: the
"discrete translation lexicon" of Arthur, Neubig & Nakamura (2016).

16k training pairs teach a decoder the frequent words, and the Ding dictionary knows the
rare ones. At each decoder step the attention says which German words are being
translated. The dictionary's probabilities p(e | f) of their English translations,
averaged with the attention's weights, are added to the scores as log(p + ε) before the
softmax. The network still learns everything else, and learns how far to trust the
dictionary: large scores of its own outweigh the bias.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from scipy import sparse

from rnnlab.tasks.seq2seq import tokenizing

if TYPE_CHECKING:  # types only: the layer computes with keras.ops
    import tensorflow as tf

# Arthur et al.'s ε: a word no attended German word translates to loses log(1e-3) ≈ -6.9.
EPSILON = 1e-3

SubEntry = tuple[list[str], list[str]]  # (German synonyms, English synonyms)
GLOSS = re.compile(r"\([^)]*\)")  # "orange (fruit)": kept in sentences, not in translations


def word_translation_counts(
    lines: Iterable[list[SubEntry]], standardize: Callable = tokenizing.standardize_unicode
) -> dict[str, collections.Counter]:
    """German word -> how often each English word translates it, over every pair of
    one-word synonyms of the dictionary's aligned sub-entries ("Haus {n}; Zuhause {n} ::
    home" counts haus -> home and zuhause -> home), both sides standardized as the
    vectorizers do, parenthesised glosses dropped ("orange (fruit)" is "orange") and "to "
    dropped from verbs."""
    words = [
        (german, english.removeprefix("to "))
        for line in lines
        for germans, englishes in line
        for german in map(without_glosses, germans)
        for english in map(without_glosses, englishes)
        # standardizing only splits words: a synonym with a space stays more than one
        if german and english and " " not in german and " " not in english.removeprefix("to ")
    ]
    if not words:
        return {}
    germans = tokenizing.standardized_texts([german for german, _ in words], standardize)
    englishes = tokenizing.standardized_texts([english for _, english in words], standardize)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for german, english in zip(germans, englishes, strict=True):
        if german and english and " " not in german and " " not in english:
            counts[german][english] += 1
    return dict(counts)


def counts_matrix(
    counts: dict[str, collections.Counter],
    source_vocabulary: list[str],
    target_vocabulary: list[str],
) -> sparse.csr_matrix:
    """Word translation counts as a [source ids, target ids] matrix; words outside either
    vocabulary drop out. A source word with no count but in both vocabularies (numbers,
    names, punctuation) translates to itself."""
    target_ids = {word: index for index, word in enumerate(target_vocabulary)}
    rows, columns, values = [], [], []
    for row, word in enumerate(source_vocabulary):
        if word in ("", tokenizing.UNKNOWN):
            continue
        known = {e: n for e, n in counts.get(word, {}).items() if e in target_ids}
        if not known and word in target_ids:
            known = {word: 1}
        for english, n in known.items():
            rows.append(row)
            columns.append(target_ids[english])
            values.append(n)
    shape = (len(source_vocabulary), len(target_vocabulary))
    return sparse.csr_matrix((values, (rows, columns)), shape=shape, dtype=np.float64)


def ibm_model1(
    sources: list[np.ndarray],
    targets: list[np.ndarray],
    shape: tuple[int, int],
    iterations: int = 5,
) -> sparse.csr_matrix:
    """p(e | f) learnt from sentence pairs of token ids by IBM Model 1's EM (Brown et al.
    1993): each target word is explained by the source words of its sentence, and by
    id 0 (padding, standing in for NULL) for the words no source word explains.

    Every (source word, target word) pair of a sentence is one entry of flat arrays, so
    an iteration is a few `bincount`s over about 2M entries."""
    pair_keys, step_positions, position = [], [], 0
    for source, target in zip(sources, targets, strict=True):
        source = np.concatenate([[0], source])
        pair_keys.append(np.repeat(source, len(target)) * shape[1] + np.tile(target, len(source)))
        step_positions.append(np.tile(np.arange(position, position + len(target)), len(source)))
        position += len(target)
    pairs, pair_of = np.unique(np.concatenate(pair_keys), return_inverse=True)
    positions = np.concatenate(step_positions)
    source_of = pairs // shape[1]
    probability = np.ones(len(pairs))  # uniform: the first E-step counts co-occurrence
    for _ in range(iterations):
        weight = probability[pair_of]
        explained = np.bincount(positions, weights=weight, minlength=position)
        expected = np.bincount(pair_of, weights=weight / explained[positions], minlength=len(pairs))
        totals = np.bincount(source_of, weights=expected, minlength=shape[0])
        probability = expected / totals[source_of]
    return sparse.csr_matrix((probability, (source_of, pairs % shape[1])), shape=shape)


def without_glosses(entry: str) -> str:
    return " ".join(GLOSS.sub(" ", entry).split())


def lexicon_table(
    lexicons: list[sparse.csr_matrix], special_targets: list[int], translations: int
) -> tuple[np.ndarray, np.ndarray]:
    """[source words, translations] target ids and their probabilities p(e | f).

    Each lexicon's rows are normalized, then averaged over the lexicons that know the
    source word; a row keeps its `translations` most probable target words, renormalized.
    `special_targets` (padding, `[UNK]`, `[start]`, `[end]`) are never translations.
    Padding, `[UNK]` and rows no lexicon knows keep zeros: they favour no word.
    """
    writable = np.ones(lexicons[0].shape[1])
    writable[special_targets] = 0
    mixed = sparse.csr_matrix(lexicons[0].shape)
    known = np.zeros(lexicons[0].shape[0])
    for lexicon in lexicons:
        lexicon = sparse.csr_matrix(lexicon @ sparse.diags(writable))
        lexicon.eliminate_zeros()
        sums = np.asarray(lexicon.sum(axis=1)).ravel()
        mixed = (
            mixed
            + sparse.diags(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)) @ lexicon
        )
        known += sums > 0
    mixed = sparse.csr_matrix(sparse.diags(1.0 / np.maximum(known, 1)) @ mixed)
    ids = np.zeros((mixed.shape[0], translations), dtype=np.int32)
    probabilities = np.zeros((mixed.shape[0], translations), dtype=np.float32)
    for row in range(2, mixed.shape[0]):  # rows 0 and 1: padding and [UNK]
        start, end = mixed.indptr[row], mixed.indptr[row + 1]
        columns, values = mixed.indices[start:end], mixed.data[start:end]
        best = np.argsort(-values, kind="stable")[:translations]
        if len(best):
            ids[row, : len(best)] = columns[best]
            probabilities[row, : len(best)] = values[best] / values[best].sum()
    return ids, probabilities


@keras.saving.register_keras_serializable(package="rnnlab")
class LexiconBias(keras.layers.Layer):
    """[scores, attention weights, source ids] -> next-word probabilities:
    softmax(scores + log(Σ_s a_ts p(e | f_s) + ε)).

    The lexicon is two non-trainable weights, [source words, translations] target ids and
    probabilities, so a stored model carries the table it was trained with.
    """

    def __init__(self, source_vocabulary_size: int, translations: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_vocabulary_size = source_vocabulary_size
        self.translations = translations
        self.supports_masking = True

    def build(self, input_shapes: Sequence[tuple[int | None, ...]]) -> None:
        shape = (self.source_vocabulary_size, self.translations)
        self.target_ids = self.add_weight(
            shape=shape, dtype="int32", initializer="zeros", trainable=False, name="target_ids"
        )
        self.probabilities = self.add_weight(
            shape=shape, initializer="zeros", trainable=False, name="probabilities"
        )

    def set_table(self, ids: np.ndarray, probabilities: np.ndarray) -> None:
        self.target_ids.assign(ids)
        self.probabilities.assign(probabilities)

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        scores, weights, source = inputs  # [B, T, V], [B, T, S], [B, S]
        ops = keras.ops
        batch, steps, vocabulary = ops.shape(scores)[0], ops.shape(scores)[1], ops.shape(scores)[2]
        source = ops.cast(source, "int32")
        ids = ops.take(self.target_ids, source, axis=0)  # [B, S, K]
        shares = ops.take(self.probabilities, source, axis=0)
        spread = ops.einsum("bts,bsk->btsk", weights, shares)
        # Scatter-add each (step, source word, translation) share into its target word:
        # a few thousand values a step instead of a dense [S, V] matrix per sentence.
        rows = ops.reshape(ops.arange(batch * steps, dtype="int32"), (batch, steps, 1, 1))
        segments = rows * vocabulary + ops.expand_dims(ids, 1)
        lexical = ops.segment_sum(
            ops.reshape(spread, (-1,)),
            ops.reshape(segments, (-1,)),
            num_segments=batch * steps * vocabulary,
        )
        lexical = ops.reshape(lexical, (batch, steps, vocabulary))
        return ops.softmax(scores + ops.log(lexical + EPSILON), axis=-1)

    def compute_mask(
        self,
        inputs: Sequence[tf.Tensor],
        mask: Sequence[tf.Tensor | None] | tf.Tensor | None = None,
    ) -> tf.Tensor | None:
        return mask[0] if isinstance(mask, list | tuple) else mask

    def compute_output_shape(
        self, input_shapes: Sequence[tuple[int | None, ...]]
    ) -> tuple[int | None, ...]:
        return input_shapes[0]

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {
            "source_vocabulary_size": self.source_vocabulary_size,
            "translations": self.translations,
        }
