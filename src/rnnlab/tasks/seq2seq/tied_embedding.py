"""One word matrix read both ways: token ids -> embeddings, and states -> word scores.

Tying the decoder's input embedding to its output layer (Press & Wolf 2017; Inan et al.
2017) shares what a word means between reading and writing it. On a small corpus the
output layer's rows for rare words see few gradients; tied, each row also learns from
every time the word is read. It also shrinks the output layer, the largest matmul of a
translation step: states are projected to the embedding width before the scores.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import keras
from keras import layers

if TYPE_CHECKING:  # types only: the layer computes with keras.ops
    import tensorflow as tf


@keras.saving.register_keras_serializable(package="rnnlab")
class TiedEmbedding(layers.Embedding):
    """An `Embedding` that, called with `reverse=True` on float states [..., dim], returns
    word scores [..., words] = states · embeddingsᵀ + a bias per word."""

    def build(self, input_shape: tuple[int | None, ...] | None = None) -> None:
        super().build(input_shape)
        self.word_bias = self.add_weight(
            shape=(self.input_dim,), initializer="zeros", name="word_bias"
        )

    # Keras's Embedding stores only its own matrix; the word biases are stored beside it.
    def save_own_variables(self, store: MutableMapping[str, Any]) -> None:
        super().save_own_variables(store)
        store["word_bias"] = self.word_bias

    def load_own_variables(self, store: MutableMapping[str, Any]) -> None:
        super().load_own_variables(store)
        self.word_bias.assign(store["word_bias"])

    def call(self, inputs: tf.Tensor, reverse: bool = False) -> tf.Tensor:
        if not reverse:
            return super().call(inputs)
        scores = keras.ops.matmul(inputs, keras.ops.transpose(self.embeddings))
        return scores + self.word_bias

    def compute_mask(self, inputs: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor | None:
        # Read backwards, the inputs are states: their mask passes through unchanged.
        if keras.backend.is_float_dtype(inputs.dtype):
            return mask
        return super().compute_mask(inputs, mask)

    def compute_output_spec(
        self, inputs: keras.KerasTensor, reverse: bool = False
    ) -> keras.KerasTensor:
        if reverse:
            shape = (*inputs.shape[:-1], self.input_dim)
        else:
            shape = self.compute_output_shape(inputs.shape)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)
