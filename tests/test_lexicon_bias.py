"""The lexicon bias: word translations counted from the dictionary and learnt from sentence
pairs, the table the decoder reads, the layer's arithmetic, and the model it joins."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from decoding_checks import assert_decodes_match_teacher_forcing

from rnnlab.config import ConfigError
from rnnlab.tasks import get_task
from rnnlab.tasks.seq2seq import decoding, lexicon_bias, tokenizing
from rnnlab.tasks.seq2seq.ding import synonyms_outside
from rnnlab.tasks.translation import TranslationTask
from rnnlab.training.run import build_model

TINY = ["task=translation", "cell.units=8", "task.embedding_dim=8", "task.attention_units=8"]


def test_dictionary_counts_pair_every_one_word_synonym_on_both_sides(tmp_path):
    dictionary = tmp_path / "de-en"
    dictionary.write_text(
        "Haus {n}; Gebäude {n} | Häuser {pl} :: house; building | houses\n"
        "Haus {n} :: home\n"
        "bekehren {vt} :: to convert\n"
        "ein großes Haus :: a big house\n"
        "E-Mail {f} :: e-mail\n"
        "Lila {n} :: purple (colloquial term for a shade)\n"
        "bekehren | Sie bekehrt ihn. :: to proselytize | She converts him.\n",
        encoding="utf-8",
    )
    held_out = {("Sie bekehrt ihn.", "She converts him.")}
    counts = lexicon_bias.word_translation_counts(synonyms_outside(dictionary, held_out))
    assert counts == {
        "haus": {"house": 1, "building": 1, "home": 1},
        "gebäude": {"house": 1, "building": 1},
        "häuser": {"houses": 1},
        "bekehren": {"convert": 1},  # "to " dropped from verbs
        "lila": {"purple": 1},  # the gloss dropped
        # word groups and "e-mail" (three tokens once standardized) give nothing
    }


def test_counts_keep_the_writable_words_and_a_shared_word_translates_to_itself():
    source = ["", "[UNK]", "haus", "berlin", "zeit"]
    target = ["", "[UNK]", "[start]", "[end]", "house", "home", "berlin"]
    counts = {"haus": {"house": 3, "home": 1, "dwelling": 5}}
    matrix = lexicon_bias.counts_matrix(counts, source, target).toarray()
    assert matrix[2].tolist() == [0, 0, 0, 0, 3, 1, 0]  # "dwelling" cannot be written
    assert matrix[3].tolist() == [0, 0, 0, 0, 0, 0, 1]  # berlin -> berlin
    assert not matrix[4].any() and not matrix[:2].any()


def test_ibm_model_1_aligns_the_words_that_co_occur_beyond_chance():
    """das haus / the house, das buch / the book, ein buch / a book: co-occurrence alone
    ties "haus" to "the" and "house" alike; EM sends "the" to "das", which explains it in
    two sentences, and leaves "house" to "haus"."""
    source = {"das": 1, "haus": 2, "buch": 3, "ein": 4}
    target = {"the": 1, "house": 2, "book": 3, "a": 4}
    pairs = [("das haus", "the house"), ("das buch", "the book"), ("ein buch", "a book")]
    sources = [np.array([source[w] for w in german.split()]) for german, _ in pairs]
    targets = [np.array([target[w] for w in english.split()]) for _, english in pairs]
    probabilities = lexicon_bias.ibm_model1(sources, targets, (5, 5), iterations=10).toarray()
    np.testing.assert_allclose(probabilities[1:].sum(axis=1), 1.0)
    for german, english in [("das", "the"), ("haus", "house"), ("buch", "book"), ("ein", "a")]:
        assert probabilities[source[german]].argmax() == target[english]
    once = lexicon_bias.ibm_model1(sources, targets, (5, 5), iterations=1).toarray()
    assert probabilities[2, 2] > once[2, 2]  # EM sharpens what co-occurrence left tied


def test_the_table_averages_the_lexicons_that_know_a_word_and_keeps_its_best():
    dictionary = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2, 2], [0, 0, 0, 0]])
    training = np.array([[5, 0, 0, 0], [0, 0, 0, 0], [0, 1, 3, 0], [0, 1, 0, 3]])
    from scipy import sparse

    ids, probabilities = lexicon_bias.lexicon_table(
        [sparse.csr_matrix(dictionary), sparse.csr_matrix(training)],
        special_targets=[0, 1],
        translations=2,
    )
    # row 2: (0.5, 0.5) and (column 1 is special, so 1.0 on column 2) averaged: 0.75, 0.25
    assert ids[2].tolist() == [2, 3]
    np.testing.assert_allclose(probabilities[2], [0.75, 0.25])
    assert ids[3].tolist()[0] == 3 and probabilities[3].tolist() == [1.0, 0.0]
    assert not probabilities[:2].any()  # padding and [UNK] favour nothing


def test_the_layer_adds_the_attended_words_translations_to_the_scores():
    rng = np.random.default_rng(0)
    batch, steps, positions, vocabulary, sources, k = 2, 3, 4, 6, 5, 2
    ids = rng.integers(1, vocabulary, (sources, k)).astype(np.int32)
    ids[:, 1] = (ids[:, 0] + 1) % vocabulary  # two different words per row
    shares = rng.dirichlet(np.ones(k), sources).astype(np.float32)
    shares[0] = 0  # padding
    scores = rng.normal(size=(batch, steps, vocabulary)).astype(np.float32)
    weights = rng.dirichlet(np.ones(positions), (batch, steps)).astype(np.float32)
    source = rng.integers(0, sources, (batch, positions))
    layer = lexicon_bias.LexiconBias(sources, k)
    layer.build(None)
    layer.set_table(ids, shares)
    dense = np.zeros((sources, vocabulary), dtype=np.float32)
    for row in range(sources):
        for column in range(k):
            dense[row, ids[row, column]] += shares[row, column]
    lexical = np.einsum("bts,bsv->btv", weights, dense[source])
    biased = scores + np.log(lexical + lexicon_bias.EPSILON)
    expected = np.exp(biased) / np.exp(biased).sum(axis=-1, keepdims=True)
    actual = np.asarray(layer([scores, weights, source]))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


@pytest.fixture(scope="module")
def biased_task():
    """A translation task on 64 pairs with a lexicon bias of 4 (the dictionary is read
    once: models built from it share its counts)."""
    from rnnlab.config import compose_config

    cfg = compose_config([*TINY, "task.max_examples=64", "task.lexicon_bias=4"])
    task = get_task(cfg.task, cfg.data_dir)
    return cfg, task, task.load(batch_size=16, seed=0)


def biased_model(biased_task):
    cfg, task, data = biased_task
    keras.utils.set_random_seed(0)
    return task, data, build_model(cfg.cell, cfg.model, task)


def test_a_biased_model_trains_decodes_causally_and_stores_its_table(biased_task, tmp_path):
    task, data, model = biased_model(biased_task)
    table = model.get_layer("lexicon_bias")
    assert np.asarray(table.probabilities).sum() > 0  # the table was filled
    model.compile(optimizer="adam", loss=task.loss, metrics=list(task.metrics))
    history = model.fit(data.train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    sentences = ["Ich habe keine Zeit.", "Das Wetter ist heute schön."]
    source = task.source_ids(sentences)
    vocabulary = task.target_vectorizer.get_vocabulary()
    length = task.cfg.target_length
    decoded = decoding.decode(model, source, vocabulary, length)
    assert_decodes_match_teacher_forcing(model, source, decoded, vocabulary, length)

    path = tmp_path / "biased.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    tokens = np.array([[vocabulary.index(tokenizing.START), 5, 6, 7]] * len(sentences))
    np.testing.assert_allclose(
        loaded.predict_on_batch([source, tokens]),
        model.predict_on_batch([source, tokens]),
        rtol=1e-5,
    )


def test_an_empty_table_leaves_the_plain_softmax_and_a_full_one_moves_it(biased_task):
    task, _, model = biased_model(biased_task)
    source = task.source_ids(["Ich habe keine Zeit.", "Das Wetter ist heute schön."])
    start = task.target_vectorizer.get_vocabulary().index(tokenizing.START)
    tokens = np.full((2, 1), start)
    biased = model.predict_on_batch([source, tokens])
    layer = model.get_layer("lexicon_bias")
    layer.set_table(np.zeros(layer.target_ids.shape, "int32"), np.zeros(layer.target_ids.shape))
    plain = model.predict_on_batch([source, tokens])
    scores = keras.Model(model.inputs, layer.input[0])  # the next-word scores it biases
    expected = np.asarray(keras.ops.softmax(scores.predict_on_batch([source, tokens])))
    np.testing.assert_allclose(plain, expected, rtol=1e-5)
    assert np.abs(biased - plain).max() > 1e-3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.attention=none", "lexicon_bias needs task.attention=additive or dot"),
        ("task.lexicon_bias=-1", "lexicon_bias must be a whole number ≥ 0; got -1"),
        ("task.lexicon_sources=[corpus]", "lexicon_sources must list some of dictionary, training"),
    ],
)
def test_a_bad_lexicon_setting_is_a_config_error(compose, override, message):
    cfg = compose(
        "task=translation", "task.lexicon_bias=4", "task.translate_unknown=false", override
    )
    with pytest.raises(ConfigError, match=message):
        TranslationTask(cfg.task, "data")
