"""What the decoding tests share: a greedy decode fed back under teacher forcing."""

from __future__ import annotations

import numpy as np

from rnnlab.tasks.seq2seq import decoding


def assert_decodes_match_teacher_forcing(
    model, source: np.ndarray, decoded: list[str], vocabulary: list[str], target_length: int
) -> None:
    """Fed its own greedy decode, the model predicts that decode again at every step, and
    `[end]` after one that stopped short: each step depends only on the tokens before it."""
    ids = {word: index for index, word in enumerate(vocabulary)}
    words = [[ids[word] for word in text.split()] for text in decoded]
    tokens = np.zeros((len(decoded), target_length), dtype=np.int64)
    tokens[:, 0] = ids[decoding.START]
    for row, written in enumerate(words):
        tokens[row, 1 : 1 + len(written)] = written[: target_length - 1]
    forced = model.predict_on_batch([source, tokens]).argmax(axis=-1)
    for row, written in enumerate(words):
        assert forced[row, : len(written)].tolist() == written
        if len(written) < target_length:
            assert forced[row, len(written)] == ids[decoding.END]
