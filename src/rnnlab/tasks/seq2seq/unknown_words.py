"""Unknown words translated through a dictionary: where the decoder writes `[UNK]`, write the
dictionary's translation of the source word it attended to most at that step.

A 4,000-word English vocabulary leaves a tenth of the test words unknown, and no cell can
write them. The attention already says which German word each output word comes from, and
the Ding dictionary translates most of the rare ones: the "unknown word replacement" of
Luong et al. (2015) and Jean et al. (2015), after decoding and without retraining.
"""

from __future__ import annotations

import keras
import numpy as np

from rnnlab.tasks.seq2seq.tokenizing import START, UNKNOWN


def translate_unknown(
    model: keras.Model,
    sources: np.ndarray,
    decodes: list[str],
    vocabulary: list[str],
    source_words: list[list[str]],
    lexicon: dict[str, str],
    keep_unknown: bool,
) -> list[str]:
    """The decodes with their `[UNK]`s translated (`replace_unknown`); only decodes that
    hold one are fed through the model again."""
    rows = [row for row, decode in enumerate(decodes) if UNKNOWN in decode.split()]
    if not rows:
        return list(decodes)
    picked = [decodes[row] for row in rows]
    positions = attended_positions(model, sources[rows], picked, vocabulary)
    replaced = replace_unknown(
        picked, positions, [source_words[row] for row in rows], lexicon, keep_unknown
    )
    result = list(decodes)
    for row, text in zip(rows, replaced, strict=True):
        result[row] = text
    return result


def attended_positions(
    model: keras.Model, sources: np.ndarray, decodes: list[str], vocabulary: list[str]
) -> list[list[int]]:
    """For each decode, the source position of highest attention at each of its words.

    The decoder is causal, so feeding it the decode itself (teacher forcing) gives the
    attention that each word was chosen under. Scores are recomputed from the attention
    layer's own query and keys, with its score: Luong's dot or Bahdanau's additive.
    """
    layer = model.get_layer("attention")
    query, _, keys = layer.input
    scorer = keras.Model(model.inputs, [query, keys])
    ids = {word: index for index, word in enumerate(vocabulary)}
    steps = max(len(decode.split()) for decode in decodes) + 1
    tokens = np.zeros((len(decodes), steps), dtype=np.int64)
    for row, decode in enumerate(decodes):
        words = [START, *decode.split()]
        tokens[row, : len(words)] = [ids.get(word, ids[UNKNOWN]) for word in words]
    positions = []
    for start in range(0, len(decodes), 256):
        rows = slice(start, start + 256)
        queries, keyed = (
            np.asarray(part) for part in scorer.predict_on_batch([sources[rows], tokens[rows]])
        )
        scores = attention_scores(layer, queries, keyed)
        scores[np.broadcast_to(sources[rows][:, None, :] == 0, scores.shape)] = -np.inf
        positions += [list(row) for row in scores.argmax(axis=-1)]
    return [row[: len(decode.split())] for row, decode in zip(positions, decodes, strict=True)]


def attention_scores(
    layer: keras.layers.Layer, queries: np.ndarray, keys: np.ndarray
) -> np.ndarray:
    """[batch, target step, source position] scores of a Keras Attention or AdditiveAttention."""
    scale = np.asarray(layer.scale) if layer.use_scale else 1.0
    if isinstance(layer, keras.layers.AdditiveAttention):
        return (scale * np.tanh(queries[:, :, None, :] + keys[:, None, :, :])).sum(axis=-1)
    return scale * np.einsum("btd,bsd->bts", queries, keys)


def replace_unknown(
    decodes: list[str],
    positions: list[list[int]],
    source_words: list[list[str]],
    lexicon: dict[str, str],
    keep_unknown: bool,
) -> list[str]:
    """Each decode with its `[UNK]`s translated from the attended source word; one the
    lexicon lacks stays `[UNK]` with `keep_unknown`, else is left out."""
    replaced = []
    for decode, attended, words in zip(decodes, positions, source_words, strict=True):
        out = []
        for word, position in zip(decode.split(), attended, strict=True):
            if word != UNKNOWN:
                out.append(word)
                continue
            source_word = words[position] if position < len(words) else None
            if source_word in lexicon:
                out.append(lexicon[source_word])
            elif keep_unknown:
                out.append(word)
        replaced.append(" ".join(out))
    return replaced
