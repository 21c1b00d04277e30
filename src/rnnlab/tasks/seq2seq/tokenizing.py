"""Text into the decoder's tokens: the special tokens, how text is standardized into
words, and the token ids a decoder reads and is trained to write (teacher forcing).

Translation and captioning read their targets the same way, so their vocabularies, and
the references BLEU compares with, are standardized by the same functions.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
from keras import layers

START, END = "[start]", "[end]"  # brackets survive `standardize`, so these stay one token
UNKNOWN = "[UNK]"  # TextVectorization's token for words outside the vocabulary


def standardize(text: tf.Tensor) -> tf.Tensor:
    """Lower-case and split punctuation off words: `Go!` becomes `go !`.

    ASCII only: RE2's `\\w` is [0-9A-Za-z_], so "schön" becomes "sch ö n". Runs stored
    before `standardize_unicode` read their text this way; captions are English names."""
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"([^\w\s\[\]])", r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def standardize_unicode(text: tf.Tensor) -> tf.Tensor:
    """`standardize` for any alphabet: "Schön!" becomes "schön !", a word of its own."""
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"([^\pL\pM\pN_\s\[\]])", r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def standardized_texts(texts: list[str], standardize: Callable = standardize) -> list[str]:
    """Python strings standardized as the vectorizers standardize them, so that a
    reference or a dictionary word is compared with the decoder's words as they are."""
    if not texts:
        return []  # tf.constant([]) would be a float tensor
    return [text.decode() for text in standardize(tf.constant(texts)).numpy()]


def target_vectorizer(
    texts: tf.data.Dataset,
    vocabulary_size: int | None,
    length: int,
    standardize: Callable | None = standardize,
) -> layers.TextVectorization:
    """Token ids of `[start] text [end]`, `length + 1` long: decoder input and target overlap.

    `standardize=None` takes the text's space-separated tokens as they are (subwords)."""
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
    """The decoder reads `[start] w1 .. wt` and is trained to predict `w1 .. wt [end]`.

    Both are as long as the text (batches pad them to their longest, see `batches`).
    """
    token_ids = without_padding(vectorizer(with_start_and_end(text)))
    return token_ids[..., :-1], token_ids[..., 1:]


def without_padding(token_ids: tf.Tensor) -> tf.Tensor:
    """One text's token ids up to its last real one (at least one id, so never empty)."""
    length = tf.maximum(tf.reduce_sum(tf.cast(token_ids != 0, tf.int32)), 1)
    return token_ids[:length]
