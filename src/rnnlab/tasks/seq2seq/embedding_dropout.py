"""Dropout on a sequence model's input embeddings: of their entries, and of whole words.

Both the encoder's source words and the decoder's own previous words are dropped in
training, so that neither side leans on a few words alone.
"""

from __future__ import annotations

import keras
from keras import layers


def embedding_dropouts(
    embedded: keras.KerasTensor, parts: float, words: float, side: str
) -> keras.KerasTensor:
    """Embeddings with a fraction `parts` of their entries and a fraction `words` of whole
    tokens dropped in training. Dropping whole words (Gal & Ghahramani 2016; Sennrich &
    Zhang 2019 for small data) hides a word entirely, where dropping entries leaves a
    noisy trace of every word."""
    if parts:
        embedded = layers.Dropout(parts, name=f"{side}_embedding_dropout")(embedded)
    if words:
        # One draw per token, shared by all its embedding's entries.
        embedded = layers.Dropout(words, noise_shape=(None, None, 1), name=f"{side}_word_dropout")(
            embedded
        )
    return embedded
