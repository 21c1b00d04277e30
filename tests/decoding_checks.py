"""What the decoding tests share: a greedy decode fed back under teacher forcing, and a
greedy decode written out step by step, to compare `decoding.decode` and `predict` with."""

from __future__ import annotations

import numpy as np

from rnnlab.tasks.seq2seq import tokenizing


def assert_decodes_match_teacher_forcing(
    model, source: np.ndarray, decoded: list[str], vocabulary: list[str], target_length: int
) -> None:
    """Fed its own greedy decode, the model predicts that decode again at every step, and
    `[end]` after one that stopped short: each step depends only on the tokens before it."""
    ids = {word: index for index, word in enumerate(vocabulary)}
    words = [[ids[word] for word in text.split()] for text in decoded]
    tokens = np.zeros((len(decoded), target_length), dtype=np.int64)
    tokens[:, 0] = ids[tokenizing.START]
    for row, written in enumerate(words):
        tokens[row, 1 : 1 + len(written)] = written[: target_length - 1]
    forced = model.predict_on_batch([source, tokens]).argmax(axis=-1)
    for row, written in enumerate(words):
        assert forced[row, : len(written)].tolist() == written
        if len(written) < target_length:
            assert forced[row, len(written)] == ids[tokenizing.END]


def greedy_by_hand(
    model, source: np.ndarray, vocabulary: list[str], target_length: int, banned: str | None
) -> list[str]:
    """Each source's greedy decode, one sentence and one step at a time: the most likely
    word other than `banned` is appended until `[end]` or `target_length` words."""
    texts = []
    for row in source:
        written = [vocabulary.index(tokenizing.START)]
        for step in range(target_length):
            probabilities = model.predict_on_batch([row[None], np.array([written])])[0, step]
            ranked = [int(word) for word in np.argsort(-np.asarray(probabilities), kind="stable")]
            word = next(word for word in ranked if vocabulary[word] != banned)
            if vocabulary[word] == tokenizing.END:
                break
            written.append(word)
        texts.append(" ".join(vocabulary[word] for word in written[1:]))
    return texts
