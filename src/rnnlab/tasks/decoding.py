"""Shared by the tasks that generate text (translation, captioning): tokens in and out,
a decoder conditioned on a context vector, greedy decoding, token accuracy and BLEU.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import sacrebleu
import tensorflow as tf
from keras import layers

from rnnlab.tasks.base import TaskDefaults

START, END = "[start]", "[end]"  # brackets survive `standardize`, so these stay one token


def standardize(text: tf.Tensor) -> tf.Tensor:
    """Lower-case and split punctuation off words: `Go!` becomes `go !`."""
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"([^\w\s\[\]])", r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def target_vectorizer(
    texts: tf.data.Dataset, vocabulary_size: int, length: int
) -> layers.TextVectorization:
    """Token ids of `[start] text [end]`, `length + 1` long: decoder input and target overlap."""
    vectorizer = layers.TextVectorization(
        max_tokens=vocabulary_size, standardize=standardize, output_sequence_length=length + 1
    )
    vectorizer.adapt(texts.map(with_start_and_end).batch(1024))
    return vectorizer


def with_start_and_end(text: tf.Tensor) -> tf.Tensor:
    return tf.strings.join([START, text, END], separator=" ")


def teacher_forcing(
    vectorizer: layers.TextVectorization, text: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The decoder reads `[start] w1 .. wt` and is trained to predict `w1 .. wt [end]`."""
    token_ids = vectorizer(with_start_and_end(text))
    return token_ids[..., :-1], token_ids[..., 1:]


def masked_crossentropy(y_true, y_pred):
    """Cross-entropy of the next token, averaged over real tokens: padding is not learned."""
    losses = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    real = keras.ops.cast(y_true != 0, losses.dtype)
    return keras.ops.sum(losses * real) / keras.ops.maximum(keras.ops.sum(real), 1.0)


class TextGenerationTask(TaskDefaults):
    """What the tasks that write text share: a decoder stack, the masked loss, token accuracy."""

    has_decoder = True  # train.run passes them a decoder stack of the chosen cell
    loss = staticmethod(masked_crossentropy)

    @property
    def metrics(self) -> list:
        return [TokenAccuracy()]  # a fresh metric for every compiled model


class TokenAccuracy(keras.metrics.Metric):
    """Share of non-padding target tokens predicted right, under teacher forcing."""

    def __init__(self, name: str = "token_accuracy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_true = keras.ops.cast(y_true, "int64")
        real = keras.ops.cast(y_true != 0, "float32")
        predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int64")
        hits = keras.ops.cast(predicted == y_true, "float32")
        self.correct.assign_add(keras.ops.sum(hits * real))
        self.total.assign_add(keras.ops.sum(real))

    def result(self):
        return self.correct / keras.ops.maximum(self.total, 1.0)


def conditioned_decoder(
    context: keras.KerasTensor,
    target_length: int,
    vocabulary_size: int,
    embedding_dim: int,
    decoder: Callable[[keras.KerasTensor], keras.KerasTensor],
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Decoder input tokens and next-token probabilities, every step seeing the context.

    As in Cho et al. (2014), the context vector is fed to the decoder at each step rather
    than through its initial state, so any cell works, whatever its states look like.
    """
    tokens = keras.Input(shape=(target_length,), dtype="int64", name="decoder_tokens")
    # Index 0 is padding: the mask keeps it out of the loss.
    embedded = layers.Embedding(vocabulary_size, embedding_dim, mask_zero=True)(tokens)
    repeated = layers.RepeatVector(target_length, name="context_each_step")(context)
    decoded = decoder(layers.Concatenate(name="token_and_context")([embedded, repeated]))
    probabilities = layers.Dense(vocabulary_size, activation="softmax", name="next_token")(decoded)
    return tokens, probabilities


def greedy_decode(
    model: keras.Model,
    inputs: np.ndarray,
    vocabulary: list[str],
    target_length: int,
    chunk_size: int = 256,
) -> list[str]:
    """Feed the model its own most likely token, one step at a time, until `[end]`."""
    return [
        text
        for start in range(0, len(inputs), chunk_size)
        for text in _greedy_decode_chunk(
            model, inputs[start : start + chunk_size], vocabulary, target_length
        )
    ]


def _greedy_decode_chunk(model, inputs, vocabulary, target_length) -> list[str]:
    start, end = vocabulary.index(START), vocabulary.index(END)
    tokens = np.zeros((len(inputs), target_length), dtype=np.int64)
    tokens[:, 0] = start
    finished = np.zeros(len(inputs), dtype=bool)
    decoded = np.zeros((len(inputs), target_length), dtype=np.int64)
    for step in range(target_length):
        # The decoder is causal: padding after `step` cannot change the prediction at `step`.
        probabilities = model.predict_on_batch([inputs, tokens])
        decoded[:, step] = np.where(finished, 0, probabilities[:, step].argmax(axis=-1))
        finished |= decoded[:, step] == end
        if finished.all():
            break
        if step + 1 < target_length:
            tokens[:, step + 1] = decoded[:, step]
    return [
        " ".join(vocabulary[i] for i in row[: list(row).index(end) if end in row else None] if i)
        for row in decoded
    ]


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU (0-100) on standardized text, so casing and spacing don't count."""
    return sacrebleu.corpus_bleu(hypotheses, [references], force=True).score


def score_decodes(
    model: keras.Model,
    inputs: np.ndarray,
    sources: list[str],
    references: list[str],
    vectorizer: layers.TextVectorization,
    target_length: int,
    samples: int,
) -> tuple[dict[str, float], str]:
    """Corpus BLEU of greedy decodes against standardized references, and a sample table."""
    hypotheses = greedy_decode(model, inputs, vectorizer.get_vocabulary(), target_length)
    references = [text.decode() for text in standardize(tf.constant(references)).numpy()]
    table = samples_table(sources[:samples], references[:samples], hypotheses[:samples])
    return {"bleu": corpus_bleu(hypotheses, references)}, table


def samples_table(sources: list[str], references: list[str], hypotheses: list[str]) -> str:
    rows = zip(sources, references, hypotheses, strict=True)
    return "".join(f"source:    {s}\nreference: {r}\ndecoded:   {h}\n\n" for s, r, h in rows)
