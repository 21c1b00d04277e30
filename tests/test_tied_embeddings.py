"""Tied decoder embeddings (`task.tied_embeddings`): the next-word scores read the input
embeddings' matrix, both uses train it, decoding stays causal, and a stored model keeps
the tie."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from decoding_checks import assert_decodes_match_teacher_forcing
from test_attention import NO_DICTIONARY, translation_model

from rnnlab.config import ConfigError
from rnnlab.tasks.seq2seq import decoding, tokenizing
from rnnlab.tasks.seq2seq.tied_embedding import TiedEmbedding

TIED = "task.tied_embeddings=true"


@pytest.fixture(scope="module")
def sentences():
    return ["Ich habe keine Zeit.", "Das Wetter ist heute schön.", "Wo?"]


def decoder_words(model: keras.Model) -> TiedEmbedding:
    [layer] = [layer for layer in model.layers if isinstance(layer, TiedEmbedding)]
    return layer


def some_tokens(task, rows: int) -> np.ndarray:
    tokens = np.zeros((rows, task.cfg.target_length), dtype=np.int64)
    tokens[:, :3] = [2, 5, 6]
    return tokens


def test_tied_probabilities_are_the_softmax_of_states_times_the_embeddings(compose, sentences):
    task, model = translation_model(compose, TIED, *NO_DICTIONARY, seed=2)
    words = decoder_words(model)
    # Random word biases, so that the bias's part is tested too.
    words.word_bias.assign(np.random.default_rng(0).normal(size=words.input_dim))
    projection = model.get_layer("next_token_projection")
    states = keras.Model(model.inputs, projection.output)
    source = task.source_vectorizer(tf.constant(sentences)).numpy()
    tokens = some_tokens(task, len(sentences))

    projected = states.predict_on_batch([source, tokens])
    scores = projected @ words.embeddings.numpy().T + words.word_bias.numpy()
    expected = np.exp(scores - scores.max(axis=-1, keepdims=True))
    expected /= expected.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(model.predict_on_batch([source, tokens]), expected, atol=1e-6)


def test_tying_replaces_the_output_layer_by_a_projection(compose):
    task, untied = translation_model(compose, "task.tied_embeddings=false", *NO_DICTIONARY)
    _, tied = translation_model(compose, TIED, *NO_DICTIONARY)
    vocabulary = task.target_vectorizer.vocabulary_size()
    state, width = task.cfg.attention_units, task.cfg.embedding_dim
    # Untied: a [state x vocabulary] kernel and a bias per word. Tied: a [state x width]
    # projection with its bias, and the bias per word the embeddings gain.
    removed = state * vocabulary - (state * width + width)
    assert untied.count_params() - tied.count_params() == removed


def test_target_words_never_read_get_gradients_only_when_tied(compose):
    """Every word's embedding row gets a gradient through the next-word softmax when tied;
    untied, only the rows of words the decoder reads do."""
    rows_with_gradient = {}
    for tie in (False, True):
        task, model = translation_model(compose, f"task.tied_embeddings={str(tie).lower()}")
        source = task.source_vectorizer(tf.constant(["Ich habe keine Zeit."])).numpy()
        tokens, next_tokens = some_tokens(task, 1), np.array([[5, 6, 3]])
        embedding = model.get_layer("decoder_words")
        with tf.GradientTape() as tape:
            probabilities = model([source, tokens[:, :3]], training=False)
            loss = task.loss(next_tokens, probabilities)
        [gradient] = tape.gradient(loss, [embedding.embeddings])
        gradient = tf.convert_to_tensor(gradient).numpy()
        rows_with_gradient[tie] = set(np.flatnonzero(np.abs(gradient).sum(axis=1)))
    read = {2, 5, 6}
    assert rows_with_gradient[False] == read
    assert len(rows_with_gradient[True] - read) > 100


def test_greedy_decoding_with_tied_embeddings_matches_teacher_forcing(compose, sentences):
    """At the defaults' lexicon bias, the tied model fed its own greedy output predicts it
    again at every step."""
    task, model = translation_model(compose, TIED, seed=3)
    vocabulary = task.target_vectorizer.get_vocabulary()
    words = decoder_words(model)
    bias = np.zeros(words.input_dim, dtype=np.float32)
    bias[vocabulary.index(tokenizing.END)] = -10.0  # decodes long enough to test many steps
    words.word_bias.assign(bias)
    source = task.source_vectorizer(tf.constant(sentences)).numpy()
    length = task.cfg.target_length
    decoded = decoding.decode(model, source, vocabulary, length)
    assert all(len(text.split()) >= length - 1 for text in decoded)
    assert_decodes_match_teacher_forcing(model, source, decoded, vocabulary, length)


def test_a_stored_tied_model_keeps_one_matrix_for_both_uses(compose, sentences, tmp_path):
    task, model = translation_model(compose, TIED, *NO_DICTIONARY, seed=4)
    source = task.source_vectorizer(tf.constant(sentences)).numpy()
    tokens = some_tokens(task, len(sentences))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(
        loaded.predict_on_batch([source, tokens]), model.predict_on_batch([source, tokens])
    )
    assert loaded.count_params() == model.count_params()
    decoder_words(loaded).embeddings.assign(np.zeros(decoder_words(loaded).embeddings.shape))
    # Reading and writing share the matrix: zeroed, the scores are the word biases alone.
    assert np.ptp(loaded.predict_on_batch([source, tokens])[0, 0]) < 1e-6


def test_tied_embeddings_must_be_true_or_false(compose):
    with pytest.raises(ConfigError, match="task.tied_embeddings must be true or false; got 'yes'"):
        translation_model(compose, "task.tied_embeddings=yes")
