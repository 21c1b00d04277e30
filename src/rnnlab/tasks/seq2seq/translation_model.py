"""Translation's model: an encoder of the chosen cell reads the German sentence, and the
shared decoder (`decoder.conditioned_decoder`) writes English conditioned on it, with
attention over the encoder's outputs and, optionally, a dictionary's bias on its words.

Importing this module registers every layer a stored translation model needs to load:
`EachStep` and `TiedEmbedding` through `decoder`, and `LexiconBias`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import layers

from rnnlab.recurrence.stack import RecurrentStack
from rnnlab.tasks.seq2seq.decoder import conditioned_decoder
from rnnlab.tasks.seq2seq.embedding_dropout import embedding_dropouts
from rnnlab.tasks.seq2seq.lexicon_bias import LexiconBias


def encoder_decoder(
    recurrent: RecurrentStack,
    decoder: RecurrentStack,
    source_vocabulary_size: int,
    target_vocabulary_size: int,
    embedding_dim: int,
    attention: str,
    attention_units: int,
    embedding_dropout: float,
    word_dropout: float,
    tied_embeddings: bool,
    lexicon: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """[source ids, decoder tokens] -> next-token probabilities.

    `lexicon`, [source words, translations] target ids and their probabilities
    (`lexicon_bias.lexicon_table`), biases each step towards the translations of the
    German words it attends to (`lexicon_bias.LexiconBias`)."""
    source = keras.Input(shape=(None,), dtype="int64", name="source")  # any length
    # Index 0 is padding: the mask lets the encoder stop at each sentence's last word.
    embedded = layers.Embedding(source_vocabulary_size, embedding_dim, mask_zero=True)(source)
    embedded = embedding_dropouts(embedded, embedding_dropout, word_dropout, "source")
    if attention == "none":
        memory, context = None, recurrent(embedded)
    else:
        # The decoder attends over every source position; the masked mean of the
        # encoder's outputs summarises the sentence for it (bidirectional or not).
        memory = recurrent(embedded, return_sequences=True)
        context = layers.GlobalAveragePooling1D(name="source_summary")(memory)
    tokens, probabilities = conditioned_decoder(
        context,
        target_vocabulary_size,
        embedding_dim,
        decoder,
        memory=memory,
        attention=attention,
        attention_units=attention_units,
        embedding_dropout=embedding_dropout,
        output_from_attention=None if lexicon is None else biased_output(source, *lexicon),
        word_dropout=word_dropout,
        tied_embeddings=tied_embeddings,
    )
    return keras.Model([source, tokens], probabilities, name="translation")


def biased_output(
    source: keras.KerasTensor, ids: np.ndarray, probabilities: np.ndarray
) -> Callable[[keras.KerasTensor, keras.KerasTensor], keras.KerasTensor]:
    """Scores and attention weights -> probabilities biased by the lexicon's translations
    of the attended source words. The table is written into the layer's weights once it
    is built, so a stored model carries it."""
    source_vocabulary_size, translations = ids.shape
    layer = LexiconBias(source_vocabulary_size, translations, name="lexicon_bias")

    def biased(scores: keras.KerasTensor, weights: keras.KerasTensor) -> keras.KerasTensor:
        output = layer([scores, weights, source])
        layer.set_table(ids, probabilities)
        return output

    return biased
