"""Attention in the translation model: it changes the model, ignores padding, stays causal
at decoding, trains every cell, and a bad choice is a one-line error."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from decoding_checks import assert_decodes_match_teacher_forcing, greedy_by_hand

from rnnlab.config import ConfigError
from rnnlab.tasks import get_task
from rnnlab.tasks.seq2seq import decoding, tokenizing, unknown_words
from rnnlab.training.run import build_model

TINY = ["task=translation", "cell.units=8", "task.embedding_dim=8", "task.attention_units=8"]
NO_DICTIONARY = ["task.translate_unknown=false", "task.lexicon_bias=0"]  # they need attention
CELLS = ["simple_rnn", "irnn", "lstm", "gru", "indrnn", "mingru", "minlstm", "lru"]


@pytest.fixture(scope="module")
def sentences():
    return ["Ich habe keine Zeit.", "Das Wetter ist heute schön.", "Wo?"]


def translation_model(compose, *overrides: str, seed: int = 0):
    """A translation task on 200 pairs and its untrained model."""
    cfg = compose(*TINY, "task.max_examples=200", *overrides)
    task = get_task(cfg.task, cfg.data_dir)
    task.load(batch_size=32, seed=0)
    keras.utils.set_random_seed(seed)
    return task, build_model(cfg.cell, cfg.model, task)


@pytest.mark.parametrize("kind", ["dot", "additive"])
def test_attention_adds_its_layers_to_the_single_context_model(compose, kind):
    _, plain = translation_model(compose, "task.attention=none", *NO_DICTIONARY)
    _, attentive = translation_model(compose, f"task.attention={kind}")
    names = {layer.name for layer in attentive.layers}
    assert {"attention", "attention_keys", "attentional_state"} <= names
    assert "attention" not in {layer.name for layer in plain.layers}
    assert attentive.count_params() > plain.count_params()


@pytest.mark.parametrize("kind", ["dot", "additive"])
def test_attention_ignores_source_padding(compose, sentences, kind):
    """The same weights read a sentence padded to 12 or to 30 tokens: the same probabilities,
    so padded positions get no attention and do not enter the summary."""
    short_task, short = translation_model(
        compose, f"task.attention={kind}", "task.source_length=12"
    )
    long_task, long = translation_model(compose, f"task.attention={kind}", "task.source_length=30")
    long.set_weights(short.get_weights())
    tokens = np.zeros((len(sentences), short_task.cfg.target_length), dtype=np.int64)
    tokens[:, :3] = [2, 5, 6]
    short_source, long_source = (
        task.source_vectorizer(tf.constant(sentences)).numpy() for task in (short_task, long_task)
    )
    assert long_source.shape[1] == 30 and not long_source[:, 12:].any()
    np.testing.assert_allclose(
        short.predict_on_batch([short_source, tokens]),
        long.predict_on_batch([long_source, tokens]),
        rtol=1e-4,  # untrained, every probability is near 1/vocabulary: compare relatively
    )


def test_greedy_decoding_with_attention_matches_teacher_forcing(compose, sentences):
    """Fed its own greedy output, the model predicts that output again at every step: each
    step's attention depends only on the tokens before it."""
    # The output layer of its own (tied, `test_tied_embeddings` makes [end] unlikely).
    untied = "task.tied_embeddings=false"
    task, model = translation_model(compose, "task.attention=additive", untied, seed=3)
    vocabulary = task.target_vectorizer.get_vocabulary()
    # Make [end] unlikely so that the decodes run long enough to test many steps.
    head = model.get_layer("next_token")
    kernel, bias = head.get_weights()
    bias[vocabulary.index(tokenizing.END)] = -10.0
    head.set_weights([kernel, bias])
    source = task.source_vectorizer(tf.constant(sentences)).numpy()
    length = task.cfg.target_length
    decoded = decoding.decode(model, source, vocabulary, length)
    assert all(len(text.split()) >= length - 1 for text in decoded)
    assert_decodes_match_teacher_forcing(model, source, decoded, vocabulary, length)


def test_an_unknown_attention_is_a_config_error(compose):
    with pytest.raises(ConfigError, match="must be one of none, dot, additive; got 'soft'"):
        translation_model(compose, "task.attention=soft")


@pytest.fixture(scope="module")
def bucketed_pairs(tmp_path_factory):
    """64 translation pairs batched by length, as training sees them: each batch is as long
    as its longest sentence, a length known only when the batch arrives. Whole words are
    dropped too, so every cell trains with word dropout on. Unknown words are not
    translated, so that `predict` writes the model's own greedy decode."""
    from rnnlab.config import compose_config

    cfg = compose_config(
        [*TINY, "task.max_examples=64", "task.word_dropout=0.2", "task.translate_unknown=false"]
    )
    task = get_task(cfg.task, cfg.data_dir)
    return task, task.load(batch_size=16, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_trains_with_attention(compose, bucketed_pairs, cell):
    """One epoch trains to a finite loss, and `predict` then writes the trained model's
    greedy decode, `[UNK]` never chosen (`task.decode_unknown=false`)."""
    task, data = bucketed_pairs
    cfg = compose(*TINY, f"cell={cell}")
    keras.utils.set_random_seed(0)
    model = build_model(cfg.cell, cfg.model, task)
    model.compile(optimizer="adam", loss=task.loss, metrics=list(task.metrics))
    history = model.fit(data.train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    sentence = "Ich habe keine Zeit."
    [decoded] = task.predict(model, [sentence])
    vocabulary = task.target_vectorizer.get_vocabulary()
    source = task.source_vectorizer(tf.constant([sentence])).numpy()
    length = task.cfg.target_length
    assert task.option("decode_unknown") is False
    assert decoded == greedy_by_hand(model, source, vocabulary, length, tokenizing.UNKNOWN)[0]


@pytest.mark.parametrize("kind", ["dot", "additive"])
def test_unknown_words_are_aligned_by_the_attention_layers_own_scores(compose, sentences, kind):
    """The source position each decoded word attended to most, recomputed from the layer's
    query and keys, is the argmax of the scores Keras's own layer returns."""
    task, model = translation_model(compose, f"task.attention={kind}", seed=1)
    vocabulary = task.target_vectorizer.get_vocabulary()
    source = task.source_vectorizer(tf.constant(sentences)).numpy()
    decodes = ["i have no [UNK] .", "[UNK]", "the [UNK] is [UNK] today !"]
    positions = unknown_words.attended_positions(model, source, decodes, vocabulary)

    layer = model.get_layer("attention")
    query, value, keys = layer.input
    inputs = keras.Model(model.inputs, [query, value, keys])
    ids = {word: index for index, word in enumerate(vocabulary)}
    for row, decode in enumerate(decodes):
        words = [tokenizing.START, *decode.split()]
        tokens = np.array([[ids.get(word, ids[tokenizing.UNKNOWN]) for word in words]])
        q, v, k = inputs.predict_on_batch([source[row : row + 1], tokens])
        _, scores = layer(
            [q, v, k], mask=[None, source[row : row + 1] != 0], return_attention_scores=True
        )
        expected = np.asarray(scores)[0].argmax(axis=-1)[: len(words) - 1]
        assert positions[row] == list(expected)
        assert max(positions[row]) < (source[row] != 0).sum()  # never a padded position
