"""What training a text decoder minimises and watches: the next token's cross-entropy and
token accuracy under teacher forcing, both over real tokens only.

Batches pad every text to their longest; counting padding would reward a decoder for
predicting the padding it is fed, and make a batch's score depend on its longest text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras

from rnnlab.config import ConfigError

if TYPE_CHECKING:  # types only: the losses compute with keras.ops
    import tensorflow as tf


def masked_crossentropy(
    y_true: tf.Tensor, y_pred: tf.Tensor, label_smoothing: float = 0.0
) -> tf.Tensor:
    """Cross-entropy of the next token, averaged over real tokens: padding is not learned.

    With `label_smoothing` ε the target is (1 - ε) on the right token and ε spread evenly
    over the vocabulary (Szegedy et al. 2016): the model is not pushed to certainty on a
    small training set, which Sennrich & Zhang (2019) found to help low-resource NMT.

    It reads the scores under the model's softmax where the graph has them, as
    logsumexp(z) - z_y: TensorFlow's fused sparse cross-entropy took 17 ms of a
    translation step's 200 ms of CPU (one thread an op), this about 10 (benchmarks/RESULTS.md).
    """
    scores = softmax_scores(y_pred)
    y_true = keras.ops.cast(y_true, "int32")
    # A one-hot product, not a gather: the gather's gradient is a scatter into a zeroed
    # [batch × steps × vocabulary] tensor, which took longer than the loss it replaced.
    targets = keras.ops.one_hot(y_true, keras.ops.shape(scores)[-1], dtype=scores.dtype)
    if label_smoothing:
        targets = (1.0 - label_smoothing) * targets + label_smoothing / scores.shape[-1]
    losses = keras.ops.logsumexp(scores, axis=-1) - keras.ops.sum(scores * targets, axis=-1)
    real = keras.ops.cast(y_true != 0, losses.dtype)
    return keras.ops.sum(losses * real) / keras.ops.maximum(keras.ops.sum(real), 1.0)


def softmax_scores(probabilities: tf.Tensor) -> tf.Tensor:
    """Scores whose softmax gives `probabilities`: the softmax's own input in a TensorFlow
    graph (as Keras's losses read it), else log(p), clipped as Keras clips it."""
    operation = getattr(probabilities, "op", None)
    if operation is not None and operation.type == "Softmax" and len(operation.inputs) == 1:
        return operation.inputs[0]
    probabilities = keras.ops.convert_to_tensor(probabilities, "float32")
    return keras.ops.log(keras.ops.clip(probabilities, keras.config.epsilon(), 1.0))


def smoothed_crossentropy(label_smoothing: float) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """`masked_crossentropy` with its label smoothing fixed, for `model.compile`."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
    if not label_smoothing:
        return masked_crossentropy

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return masked_crossentropy(y_true, y_pred, label_smoothing)

    return loss


class TokenAccuracy(keras.metrics.Metric):
    """Share of non-padding target tokens predicted right, under teacher forcing."""

    def __init__(self, name: str = "token_accuracy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        y_true = keras.ops.cast(y_true, "int64")
        real = keras.ops.cast(y_true != 0, "float32")
        predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int64")
        hits = keras.ops.cast(predicted == y_true, "float32")
        self.correct.assign_add(keras.ops.sum(hits * real))
        self.total.assign_add(keras.ops.sum(real))

    def result(self) -> tf.Tensor:
        return self.correct / keras.ops.maximum(self.total, 1.0)
