"""The decoder that translation and captioning share: a stack of the cell under comparison
that writes the next token, every step seeing a context vector (the source sentence's or
the image's), optionally attending over the encoder's outputs.

The layers a stored model of either task needs to load are registered with Keras by
importing this module: `EachStep` here, and `TiedEmbedding` through its import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import keras
from keras import layers

from rnnlab.config import ConfigError
from rnnlab.tasks.seq2seq.attention import attend
from rnnlab.tasks.seq2seq.embedding_dropout import embedding_dropouts
from rnnlab.tasks.seq2seq.tied_embedding import TiedEmbedding

if TYPE_CHECKING:  # types only: the layers compute with keras.ops
    import tensorflow as tf


def conditioned_decoder(
    context: keras.KerasTensor,
    vocabulary_size: int,
    embedding_dim: int,
    decoder: Callable[[keras.KerasTensor], keras.KerasTensor],
    memory: keras.KerasTensor | None = None,
    attention: str = "none",
    attention_units: int = 128,
    embedding_dropout: float = 0.0,
    output_from_attention: Callable | None = None,
    word_dropout: float = 0.0,
    tied_embeddings: bool = False,
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Decoder input tokens and next-token probabilities, every step seeing the context.

    As in Cho et al. (2014), the context vector is fed to the decoder at each step rather
    than through its initial state, so any cell works, whatever its states look like.
    With `attention` other than "none", each decoder output also looks back over `memory`
    (the encoder's outputs, one per source position) before the next token is chosen.
    `embedding_dropout` and `word_dropout` drop parts of the input tokens' embeddings and
    whole input tokens in training (`embedding_dropouts`): the decoder learns not to lean
    on its own previous words alone.
    `output_from_attention(scores, attention weights)`, if given, turns the next-token
    scores into probabilities instead of a plain softmax (`lexicon_bias.LexiconBias`).
    With `tied_embeddings`, the next-token scores read the input embeddings' matrix
    (`TiedEmbedding`) after a projection to their width, instead of a layer of their own.
    """
    # Any number of steps: training batches are as long as their longest text.
    tokens = keras.Input(shape=(None,), dtype="int64", name="decoder_tokens")
    # Index 0 is padding: the mask keeps it out of the loss.
    embedding = TiedEmbedding if tied_embeddings else layers.Embedding
    words = embedding(vocabulary_size, embedding_dim, mask_zero=True, name="decoder_words")
    embedded = embedding_dropouts(words(tokens), embedding_dropout, word_dropout, "decoder")
    repeated = EachStep(name="context_each_step")([context, embedded])
    decoded = decoder(layers.Concatenate(name="token_and_context")([embedded, repeated]))
    if attention == "none":
        if output_from_attention:
            raise ConfigError("an output that reads the attention needs attention")
        weights = None
    else:
        decoded, weights = attend(decoded, memory, attention, attention_units)
    if tied_embeddings:
        projected = layers.Dense(embedding_dim, name="next_token_projection")(decoded)
        scores = words(projected, reverse=True)
        if not output_from_attention:
            return tokens, layers.Activation("softmax", name="next_token")(scores)
    elif output_from_attention:
        scores = layers.Dense(vocabulary_size, name="next_token")(decoded)
    else:
        probabilities = layers.Dense(vocabulary_size, activation="softmax", name="next_token")
        return tokens, probabilities(decoded)
    return tokens, output_from_attention(scores, weights)


@keras.saving.register_keras_serializable(package="rnnlab")
class EachStep(layers.Layer):
    """[context, sequence] -> the context repeated at each of the sequence's steps.

    Keras's RepeatVector needs the number of steps when the model is built; here it is
    known only when a batch arrives.
    """

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        context, sequence = inputs
        steps = keras.ops.shape(sequence)[1]
        return keras.ops.repeat(keras.ops.expand_dims(context, 1), steps, axis=1)

    def compute_mask(
        self, inputs: Sequence[tf.Tensor], mask: Sequence[tf.Tensor | None] | None = None
    ) -> None:
        return None  # the decoder's mask comes from its tokens

    def compute_output_shape(
        self, input_shapes: Sequence[tuple[int | None, ...]]
    ) -> tuple[int | None, ...]:
        context, sequence = input_shapes
        return (context[0], sequence[1], context[-1])
