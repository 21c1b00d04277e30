"""One word matrix read both ways: token ids -> embeddings, and states -> word scores.

Tying the decoder's input embedding to its output layer (Press & Wolf 2017; Inan et al.
2017) shares what a word means between reading and writing it. On a small corpus the
output layer's rows for rare words see few gradients; tied, each row also learns from
every time the word is read. It also shrinks the output layer, the largest matmul of a
translation step: states are projected to the embedding width before the scores.
"""

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="rnnlab")
class TiedEmbedding(layers.Embedding):
    """An `Embedding` that, called with `reverse=True` on float states [..., dim], returns
    word scores [..., words] = states · embeddingsᵀ + a bias per word."""

    def build(self, input_shape=None) -> None:
        super().build(input_shape)
        self.word_bias = self.add_weight(
            shape=(self.input_dim,), initializer="zeros", name="word_bias"
        )

    # Keras's Embedding stores only its own matrix; the word biases are stored beside it.
    def save_own_variables(self, store) -> None:
        super().save_own_variables(store)
        store["word_bias"] = self.word_bias

    def load_own_variables(self, store) -> None:
        super().load_own_variables(store)
        self.word_bias.assign(store["word_bias"])

    def call(self, inputs, reverse: bool = False):
        if not reverse:
            return super().call(inputs)
        scores = keras.ops.matmul(inputs, keras.ops.transpose(self.embeddings))
        return scores + self.word_bias

    def compute_mask(self, inputs, mask=None):
        # Read backwards, the inputs are states: their mask passes through unchanged.
        if keras.backend.is_float_dtype(inputs.dtype):
            return mask
        return super().compute_mask(inputs, mask)

    def compute_output_spec(self, inputs, reverse: bool = False):
        if reverse:
            shape = (*inputs.shape[:-1], self.input_dim)
        else:
            shape = self.compute_output_shape(inputs.shape)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)
