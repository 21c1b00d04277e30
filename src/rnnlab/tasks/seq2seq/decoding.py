"""Writing text with a trained decoder: greedy decoding, or beam search, one token a step
fed back until `[end]`.

The model is called on the whole prefix at every step rather than carrying its states:
any cell's model, stored as Keras saved it, decodes this way, at the cost of re-reading
the prefix (target texts are at most 20 tokens).
"""

from __future__ import annotations

import keras
import numpy as np

from rnnlab.tasks.seq2seq.tokenizing import END, START, UNKNOWN


def decode(
    model: keras.Model,
    inputs: np.ndarray,
    vocabulary: list[str],
    target_length: int,
    chunk_size: int = 256,
    decode_unknown: bool = True,
    beam_size: int = 1,
    length_penalty: float = 0.6,
) -> list[str]:
    """Feed the model its own most likely token, one step at a time, until `[end]`; with
    `beam_size` > 1, keep that many best partial sentences instead (`beam_decode`).

    With `decode_unknown` false, `[UNK]` is never chosen: it can never match a reference
    word, while the most likely real word sometimes does.
    """
    banned = None if decode_unknown or UNKNOWN not in vocabulary else vocabulary.index(UNKNOWN)
    rows = max(1, chunk_size // beam_size)  # the model sees rows × beams at once
    texts = []
    for start in range(0, len(inputs), rows):
        chunk = inputs[start : start + rows]
        if beam_size == 1:
            texts += _greedy_decode_chunk(model, chunk, vocabulary, target_length, banned)
        else:
            texts += beam_decode(
                model, chunk, vocabulary, target_length, banned, beam_size, length_penalty
            )
    return texts


def _greedy_decode_chunk(
    model: keras.Model,
    inputs: np.ndarray,
    vocabulary: list[str],
    target_length: int,
    banned: int | None,
) -> list[str]:
    start, end = vocabulary.index(START), vocabulary.index(END)
    tokens = np.zeros((len(inputs), target_length), dtype=np.int64)
    tokens[:, 0] = start
    finished = np.zeros(len(inputs), dtype=bool)
    decoded = np.zeros((len(inputs), target_length), dtype=np.int64)
    for step in range(target_length):
        # The decoder is causal, so the tokens so far are all it needs for the next one.
        probabilities = np.array(model.predict_on_batch([inputs, tokens[:, : step + 1]])[:, step])
        if banned is not None:
            probabilities[:, banned] = -1.0
        decoded[:, step] = np.where(finished, 0, probabilities.argmax(axis=-1))
        finished |= decoded[:, step] == end
        if finished.all():
            break
        if step + 1 < target_length:
            tokens[:, step + 1] = decoded[:, step]
    return texts_of(decoded, vocabulary)


def beam_decode(
    model: keras.Model,
    inputs: np.ndarray,
    vocabulary: list[str],
    target_length: int,
    banned: int | None,
    beam_size: int,
    length_penalty: float = 0.6,
) -> list[str]:
    """Beam search: every step extends each of the `beam_size` best partial sentences of a
    source by every word and keeps the `beam_size` best by total log-probability. A
    sentence that wrote `[end]` stays in its beam, extended by padding at no cost; at the
    end the best by length-penalised score is written out.

    GNMT's length penalty (Wu et al. 2016): a sum of log-probabilities favours short
    sentences, so finished ones are compared by it divided by ((5 + length) / 6) ** α,
    α = `length_penalty` (GNMT's 0.6; larger favours longer sentences)."""
    start, end = vocabulary.index(START), vocabulary.index(END)
    rows, beams = len(inputs), beam_size
    tokens = np.zeros((rows, beams, target_length + 1), dtype=np.int64)
    tokens[:, :, 0] = start
    scores = np.full((rows, beams), -np.inf)
    scores[:, 0] = 0.0  # the beams start identical: one of them is expanded
    lengths = np.zeros((rows, beams))
    finished = np.zeros((rows, beams), dtype=bool)
    sources = np.repeat(inputs, beams, axis=0)
    for step in range(target_length):
        prefixes = tokens[:, :, : step + 1].reshape(rows * beams, step + 1)
        probabilities = np.asarray(model.predict_on_batch([sources, prefixes])[:, step])
        with np.errstate(divide="ignore"):
            words = np.log(probabilities.reshape(rows, beams, -1).astype(np.float64))
        words[:, :, 0] = -np.inf  # padding is not a word
        if banned is not None:
            words[:, :, banned] = -np.inf
        words[finished] = np.where(np.arange(words.shape[-1]) == 0, 0.0, -np.inf)
        candidates = (scores[:, :, None] + words).reshape(rows, -1)
        best = np.argsort(-candidates, axis=1, kind="stable")[:, :beams]
        beam, word = np.divmod(best, words.shape[-1])
        scores = np.take_along_axis(candidates, best, axis=1)
        tokens = np.take_along_axis(tokens, beam[:, :, None], axis=1)
        lengths = np.take_along_axis(lengths, beam, axis=1)
        finished = np.take_along_axis(finished, beam, axis=1)
        tokens[:, :, step + 1] = np.where(finished, 0, word)
        lengths += ~finished
        finished |= word == end
        if finished.all():
            break
    penalised = scores / ((5 + lengths) / 6) ** length_penalty
    return texts_of(tokens[np.arange(rows), penalised.argmax(axis=1), 1:], vocabulary)


def texts_of(token_ids: np.ndarray, vocabulary: list[str]) -> list[str]:
    """Each row's words up to its first `[end]`, padding left out."""
    end = vocabulary.index(END)
    return [
        " ".join(vocabulary[i] for i in row[: list(row).index(end) if end in row else None] if i)
        for row in token_ids
    ]
