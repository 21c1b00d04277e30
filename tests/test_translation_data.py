"""The Ding sentence pairs and the pieces of text generation shared with captioning."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import sacrebleu
import tensorflow as tf
from omegaconf import OmegaConf

from rnnlab.config import ConfigError
from rnnlab.tasks.base import batches
from rnnlab.tasks.datasets import data_root
from rnnlab.tasks.seq2seq import (
    bleu,
    decoding,
    embedding_dropout,
    losses,
    tokenizing,
    unknown_words,
)
from rnnlab.tasks.seq2seq.ding import (
    DICTIONARY,
    aligned_synonyms,
    ding_translations,
    read_lexicon,
    read_phrase_pairs,
    read_sentence_pairs,
)
from rnnlab.tasks.seq2seq.subwords import SubwordCodec
from rnnlab.tasks.translation import STORED_BEFORE, TranslationTask
from rnnlab.training.run import build_model

DICTIONARY_FILE = data_root("data") / "raw" / "translation" / DICTIONARY


@pytest.fixture(scope="module")
def pairs():
    return read_sentence_pairs(DICTIONARY_FILE)


def test_the_dictionary_yields_clean_sentence_pairs(pairs):
    assert len(pairs) == 20_498
    assert len(set(pairs)) == len(pairs)
    for german, english in pairs:
        assert german.endswith((".", "!", "?")) and english.endswith((".", "!", "?"))
        assert not any(mark in german + english for mark in "{}[]<>")
    assert ("Schieß los!", "Shoot!") in pairs


def test_prepared_splits_are_80_10_10(compose):
    task = TranslationTask(compose("task=translation").task, "data")
    counts = {name: info.num_examples for name, info in task.builder.info.splits.items()}
    assert counts == {"train": 16_398, "validation": 2_049, "test": 2_051}


def test_malformed_line_names_file_and_line(tmp_path):
    broken = tmp_path / "de-en"
    broken.write_text("# header\nHaus {n} :: house\nHaus | Häuser :: house\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"de-en:3: expected 'DE \| ... :: EN \| ...'"):
        read_sentence_pairs(broken)


def test_a_file_without_sentences_is_an_error(tmp_path):
    words = tmp_path / "de-en"
    words.write_text("Haus {n} :: house\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no sentence pairs"):
        read_sentence_pairs(words)


def test_phrases_are_long_enough_word_groups_from_lines_without_a_held_out_sentence(tmp_path):
    dictionary = tmp_path / "de-en"
    dictionary.write_text(
        "# header\n"
        "in den Alpen {pl} :: in the Alps\n"
        "bekehren | jdn. zu etw. bekehren | Sie bekehrt ihn. :: to convert | to convert "
        "sb. to sth. | She converts him.\n"
        "Haus {n}; Gebäude {n} | ein großes Haus :: house; building | a big house\n"
        "Geh! | geh weg von hier :: Go! | go away from here\n"
        "in den Alpen :: in the Alps\n",
        encoding="utf-8",
    )
    held_out = {("Sie bekehrt ihn.", "She converts him.")}
    assert read_phrase_pairs(dictionary, held_out, min_words=2) == [
        ("in den Alpen", "in the Alps"),  # once, though the file has it twice
        ("ein großes Haus", "a big house"),
        ("geh weg von hier", "go away from here"),  # "Geh! :: Go!" is a sentence, not a phrase
    ]
    assert read_phrase_pairs(dictionary, held_out, min_words=4) == [
        ("geh weg von hier", "go away from here")
    ]
    assert read_phrase_pairs(dictionary, set(), min_words=3)[1] == (
        "jdn. zu etw. bekehren",
        "to convert sb. to sth.",
    )


def test_the_lexicon_takes_one_word_entries_outside_held_out_lines(tmp_path):
    dictionary = tmp_path / "de-en"
    dictionary.write_text(
        "bekehren | Sie bekehrt ihn. :: to convert | She converts him.\n"
        "Denkungsart {f} :: way of thinking\n"
        "Haus {n}; Gebäude {n} | Häuser {pl} :: house; building | houses\n"
        "Haus {n} :: home\n"
        "Haus {n} :: house\n"
        "E-Mail {f} :: e-mail\n"
        "ein großes Haus :: a big house\n",
        encoding="utf-8",
    )
    held_out = {("Sie bekehrt ihn.", "She converts him.")}
    assert read_lexicon(dictionary, held_out) == {
        "denkungsart": "way of thinking",
        "haus": "house",  # twice against once for "home"
        "häuser": "houses",
        # "e-mail" standardizes to three tokens: no source word to attend to
    }
    assert read_lexicon(dictionary, set())["bekehren"] == "convert"  # "to " dropped


def test_the_lexicon_can_drop_the_dictionarys_glosses(tmp_path):
    dictionary = tmp_path / "de-en"
    dictionary.write_text("Orange {f} (Frucht) :: orange (fruit)\n", encoding="utf-8")
    assert read_lexicon(dictionary, set()) == {}  # "orange (frucht)" is no single word
    assert read_lexicon(dictionary, set(), glosses=False) == {"orange": "orange"}


def test_whole_annotations_keep_irregular_verbs_and_glosses_with_a_semicolon(tmp_path):
    dictionary = tmp_path / "de-en"
    dictionary.write_text(
        "gehen {vi}; laufen {vi} | Geh! :: to go {went; gone}; to walk | Go!\n"
        "Aufwand {m} (Geld; Zeit) :: effort (money; time)\n",
        encoding="utf-8",
    )
    split = read_lexicon(dictionary, set(), glosses=False)
    whole = read_lexicon(dictionary, set(), glosses=False, whole_annotations=True)
    assert split["gehen"] == "go { went"  # what the decoder wrote for "gehen" before
    assert whole == {"gehen": "go", "aufwand": "effort"}  # first synonyms only
    assert read_sentence_pairs(dictionary) == [("Geh!", "Go!")]
    translations = ding_translations(dictionary, frozenset(), tokenizing.standardize_unicode, True)
    assert translations["gehen"] == {"go": 1, "walk": 1}


def test_whole_annotations_find_the_same_sentences_in_the_shipped_dictionary(pairs):
    """Sentences are read with the split at every "; ", so the fixed split never moves;
    the lexicons' way must still recognise each held-out sentence's line."""
    whole = {
        (german[0], english[0])
        for line in aligned_synonyms(DICTIONARY_FILE, whole_annotations=True)
        for german, english in line
    }
    assert set(pairs) <= whole


def test_unknown_words_take_the_attended_words_translation_or_are_left_out():
    decodes = ["she tries to [UNK] me to her [UNK] .", "[UNK] !", "no unknown here"]
    positions = [[0, 1, 4, 8, 3, 4, 5, 6, 9], [1, 2], [0, 1, 2]]
    words = [
        ["sie", "versucht", ",", "mich", "zu", "ihrer", "denkungsart", "zu", "bekehren", "."],
        ["schieß", "los", "!"],
        ["x"],
    ]
    lexicon = {"denkungsart": "way of thinking", "bekehren": "convert", "schieß": "shoot"}
    assert unknown_words.replace_unknown(decodes, positions, words, lexicon, False) == [
        "she tries to convert me to her way of thinking .",
        "!",  # "los" has no entry
        "no unknown here",
    ]
    kept = unknown_words.replace_unknown(decodes, positions, words, lexicon, True)
    assert kept[1] == "[UNK] !"


@pytest.mark.parametrize(
    ("override", "need"),
    [
        ("task.attention=none", "task.attention=additive or dot"),
        ("task.source=tfds:ted_hrlr_translate/pt_to_en", "task.source=embedded"),
        ("task.tokens=subwords", "task.tokens=words"),
    ],
)
def test_the_dictionary_options_need_attention_ding_and_words(compose, override, need):
    no_phrases = "task.dictionary_phrases=0"  # the phrases need only the Ding source
    alone = compose("task=translation", "task.lexicon_bias=0", no_phrases, override)
    with pytest.raises(ConfigError, match=f"translate_unknown needs {need}.*=false$"):
        TranslationTask(alone.task, "data")
    both = compose("task=translation", no_phrases, override)
    fix = "task.translate_unknown=false task.lexicon_bias=0"
    with pytest.raises(ConfigError, match=f"and task.lexicon_bias need {need}.*; or set {fix}$"):
        TranslationTask(both.task, "data")


def test_the_defaults_on_another_source_name_all_three_dictionary_options(compose):
    other = compose("task=translation", "task.source=tfds:ted_hrlr_translate/pt_to_en")
    fix = "task.translate_unknown=false task.lexicon_bias=0 task.dictionary_phrases=0"
    with pytest.raises(ConfigError, match=f"and task.dictionary_phrases need .*; or set {fix}$"):
        TranslationTask(other.task, "data")
    subwords = compose("task=translation", "task.tokens=subwords", "task.lexicon_bias=0")
    with pytest.raises(ConfigError, match="^task.translate_unknown needs task.tokens=words"):
        TranslationTask(subwords.task, "data")  # the phrases feed subwords as well


def test_phrases_join_the_training_split_only_and_keep_the_baseline_on_sentences(compose):
    cfg = compose("task=translation", "task.max_examples=64", "task.dictionary_phrases=5")
    task = TranslationTask(cfg.task, "data")
    data = task.load(batch_size=32, seed=0)
    assert data.train_size == 128  # 64 sentences and 64 phrases: max_examples caps both
    assert sum(1 for _ in task.train_pairs) == 64  # the fixed-answer baseline's candidates
    assert sum(1 for _ in data.validation.unbatch()) == 64
    assert data.data_hash.endswith("+phrases5")


def test_subwords_spell_unseen_words_from_pieces_and_join_back_to_the_text(pairs):
    english = tokenizing.standardized_texts([en for _, en in pairs[:2000]])
    codec = SubwordCodec.learn(english, vocabulary_size=500)
    assert len({piece for text in codec.segment(english) for piece in text.split()}) <= 500
    unseen = "the unconvertible houses ' roofs were repainted ."
    assert not any(unseen.split()[1] in text.split() for text in english)
    [segmented] = codec.segment([unseen])
    assert len(segmented.split()) > len(unseen.split())  # the rare words come in pieces
    assert codec.join(segmented) == unseen
    assert [codec.join(text) for text in codec.segment(english[:50])] == english[:50]
    restored = SubwordCodec.from_state(codec.to_state())
    assert restored.segment(english[:50]) == codec.segment(english[:50])
    assert SubwordCodec.learn(english, 500).model_proto == codec.model_proto  # deterministic


def test_subword_translation_reads_every_split_as_pieces_learnt_on_training(compose):
    cfg = compose(
        "task=translation",
        "task.tokens=subwords",
        "task.vocabulary_size=300",
        "task.source_vocabulary_size=null",  # 300 German pieces too
        "task.translate_unknown=false",
        "task.lexicon_bias=0",
    )
    task = TranslationTask(cfg.task, "data")
    data = task.load(batch_size=32, seed=0)
    assert task.target_vectorizer.vocabulary_size() <= 300 + 4  # pad, [UNK], [start], [end]
    (source, decoder_tokens), next_tokens = next(iter(data.test))
    unknown = 1
    # 300 pieces of 256 sentences still spell every word of a test sentence they cover.
    assert np.mean(source.numpy() == unknown) < 0.01
    assert np.mean(next_tokens.numpy() == unknown) < 0.01
    assert task.test_pairs[0][1][0].isupper()  # scored against the text, not its pieces
    with pytest.raises(ConfigError, match="task.tokens must be one of words, subwords"):
        TranslationTask(compose("task=translation", "task.tokens=letters").task, "data")


def test_standardize_lowercases_and_splits_punctuation_but_keeps_markers():
    text = tokenizing.standardize(tf.constant("[start] Go, now!  [end]")).numpy().decode()
    assert text == "[start] go , now ! [end]"


def test_translation_words_keep_their_umlauts_and_older_runs_read_as_they_did(compose):
    """RE2's `\\w` is ASCII: the first standardizer cut "schön" into three tokens. Runs
    stored before `task.unicode_words` must still read German that way, or their
    vocabularies no longer match."""
    text = ["Schön, ÄRGER in der Straße!"]
    words = TranslationTask(compose("task=translation").task, "data")
    assert words.standardized(text) == ["schön , ärger in der straße !"]
    older = TranslationTask(compose("task=translation", "task.unicode_words=false").task, "data")
    assert older.standardized(text) == ["sch ö n , Ä rger in der stra ß e !"]


class ScriptedDecoder:
    """Stands in for a model: predicts `a`, `b`, `[end]`, and records what it was fed."""

    vocabulary = ["", "[UNK]", "[start]", "[end]", "a", "b"]
    script = [4, 5, 3, 4, 4]

    def __init__(self):
        self.fed = []

    def predict_on_batch(self, inputs):
        _, tokens = inputs
        self.fed.append(tokens.copy())
        probabilities = np.zeros((len(tokens), tokens.shape[1], len(self.vocabulary)))
        steps = tokens.shape[1]
        probabilities[:, np.arange(steps), self.script[:steps]] = 1.0
        return probabilities


def test_greedy_decoding_feeds_back_its_own_tokens_and_stops_at_end():
    model = ScriptedDecoder()
    decoded = decoding.decode(model, np.zeros((2, 3)), model.vocabulary, target_length=5)
    assert decoded == ["a b", "a b"]
    assert len(model.fed) == 3  # every sentence ended at step 3
    assert model.fed[-1][0].tolist() == [2, 4, 5]  # the tokens so far: the decoder is causal


class UnknownFirst:
    """Stands in for a model that likes `[UNK]` best, then `a`, at the first step."""

    vocabulary = ["", "[UNK]", "[start]", "[end]", "a"]

    def predict_on_batch(self, inputs):
        _, tokens = inputs
        probabilities = np.zeros((len(tokens), tokens.shape[1], len(self.vocabulary)))
        probabilities[:, 0, [1, 4]] = [0.6, 0.4]
        probabilities[:, 1:, 3] = 1.0
        return probabilities


@pytest.mark.parametrize(("decode_unknown", "expected"), [(True, "[UNK]"), (False, "a")])
def test_greedy_decoding_can_leave_out_unknown_words(decode_unknown, expected):
    model = UnknownFirst()
    decoded = decoding.decode(
        model, np.zeros((1, 3)), model.vocabulary, target_length=4, decode_unknown=decode_unknown
    )
    assert decoded == [expected]


def test_token_accuracy_ignores_padding():
    metric = losses.TokenAccuracy()
    y_true = np.array([[4, 5, 0, 0]])
    y_pred = np.eye(6)[[[4, 4, 0, 0]]]  # one of two real tokens right; padding "right" too
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == pytest.approx(0.5)


def test_masked_crossentropy_ignores_padding():
    y_true = np.array([[4, 0]])
    confident = np.array([[[0.0, 0, 0, 0, 1, 0], [0.0, 0, 0, 0, 1, 0]]])
    assert float(losses.masked_crossentropy(y_true, confident)) == pytest.approx(0.0, abs=1e-5)


def reference_crossentropy(y_true, scores, label_smoothing=0.0):
    """The masked, smoothed cross-entropy computed in float64 numpy from the scores."""
    log_p = scores - np.log(np.exp(scores).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, y_true[..., None], -1)[..., 0]
    losses = -(1 - label_smoothing) * picked - label_smoothing * log_p.mean(-1)
    real = y_true != 0
    return (losses * real).sum() / real.sum()


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_in_a_graph_the_loss_reads_the_softmax_scores_even_where_probabilities_underflow(
    label_smoothing,
):
    y_true = np.array([[3, 1, 0], [2, 0, 0]])
    scores = np.random.default_rng(0).normal(size=(2, 3, 5)) * 3
    scores[0, 0, 3] = -150.0  # exp(-150) underflows float32: p = 0, and log p would be -inf

    @tf.function
    def loss_and_gradient(scores):
        with tf.GradientTape() as tape:
            tape.watch(scores)
            loss = losses.masked_crossentropy(
                y_true, tf.nn.softmax(scores), label_smoothing=label_smoothing
            )
        return loss, tape.gradient(loss, scores)

    loss, gradient = loss_and_gradient(tf.constant(scores, tf.float32))
    expected = reference_crossentropy(y_true, scores, label_smoothing)
    assert float(loss) > 30  # the one underflowing token alone adds about 150 / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert np.all(np.isfinite(gradient.numpy()))
    assert np.all(gradient.numpy()[1, 1:] == 0)  # padding steps learn nothing


def test_label_smoothing_spreads_the_target_over_the_vocabulary_and_ignores_padding():
    y_true = np.array([[1, 0]])
    y_pred = np.array([[[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]])  # the second step is padding
    smoothed = float(losses.masked_crossentropy(y_true, y_pred, label_smoothing=0.1))
    spread = -np.log([0.5, 0.25, 0.25]).mean()
    assert smoothed == pytest.approx(0.9 * -np.log(0.25) + 0.1 * spread, rel=1e-5)
    assert losses.smoothed_crossentropy(0.0) is losses.masked_crossentropy
    with pytest.raises(ConfigError, match="label_smoothing"):
        losses.smoothed_crossentropy(1.0)


def test_translation_regularisation_and_source_vocabulary_are_set_by_config(compose):
    cfg = compose(
        "task=translation",
        "task.max_examples=64",
        "task.vocabulary_size=20",
        "task.source_vocabulary_size=50",
        "task.embedding_dropout=0.2",
        "task.label_smoothing=0.1",
        "cell=gru",
        "cell.units=8",
    )
    task = TranslationTask(cfg.task, "data")
    task.load(batch_size=32, seed=0)
    assert task.source_vectorizer.vocabulary_size() == 50  # 64 sentences have more words
    assert task.target_vectorizer.vocabulary_size() == 20
    model = build_model(cfg.cell, cfg.model, task)
    names = {layer.name for layer in model.layers}
    assert {"source_embedding_dropout", "decoder_embedding_dropout"} <= names
    y_true, y_pred = np.array([[1]]), np.array([[[0.5, 0.25, 0.25]]])
    assert float(task.loss(y_true, y_pred)) == pytest.approx(
        float(losses.masked_crossentropy(y_true, y_pred, label_smoothing=0.1))
    )


def test_a_config_stored_before_the_newer_keys_means_what_its_run_did(compose):
    stored = OmegaConf.to_container(compose("task=translation").task)
    old = OmegaConf.create({k: v for k, v in stored.items() if k not in STORED_BEFORE})
    task = TranslationTask(old, "data")
    assert {key: task.option(key) for key in STORED_BEFORE} == STORED_BEFORE
    assert task.loss is losses.masked_crossentropy


def test_bleu_is_100_for_a_perfect_decode_and_low_for_a_wrong_one():
    references = ["the cat sat on the mat .", "shoot !"]
    assert bleu.corpus_bleu(references, references) == pytest.approx(100.0)
    assert bleu.corpus_bleu(["a dog .", "run !"], references) < 10


def test_teacher_forcing_starts_with_start_and_targets_end():
    vectorizer = tokenizing.target_vectorizer(
        tf.data.Dataset.from_tensor_slices(["Hello world."]), vocabulary_size=50, length=5
    )
    decoder_tokens, next_tokens = tokenizing.teacher_forcing(
        vectorizer, tf.constant("Hello world.")
    )
    vocabulary = vectorizer.get_vocabulary()
    decoder_words = [vocabulary[i] for i in decoder_tokens.numpy()]
    # As long as the text: batches pad to their longest (the vectorizer pads to 6).
    assert decoder_words == ["[start]", "hello", "world", "."]
    assert [vocabulary[i] for i in next_tokens.numpy()] == ["hello", "world", ".", "[end]"]


def test_the_fixed_answer_baseline_prefers_a_text_with_4_grams_to_the_most_frequent():
    train = ["Yes!"] * 3 + ["The cat sat on the mat."] * 2 + ["The cat sat on a hat."]
    test = ["the cat sat on the mat today .", "yes !"]
    baseline = bleu.best_constant_baseline(train, test)["baseline_bleu"]
    chosen = sacrebleu.corpus_bleu(["the cat sat on the mat ."] * 2, [test]).score
    assert baseline == pytest.approx(chosen) and chosen > 0
    assert sacrebleu.corpus_bleu(["yes !"] * 2, [test]).score == 0.0  # no 4-grams


def test_the_copy_floor_scores_the_source_as_the_translation():
    same = ["Berlin, 1990: Tokio, Paris, Rom."]
    assert bleu.copy_bleu(same, same)["copy_bleu"] == pytest.approx(100.0)
    only_the_full_stop = bleu.copy_bleu(["Ich bin müde."], ["I am tired."])["copy_bleu"]
    assert 0.0 < only_the_full_stop < 10.0


def test_batches_by_length_pad_each_batch_to_its_longest_and_keep_every_example():
    lengths = [3, 15, 4, 16, 3, 15, 5, 2]
    examples = tf.data.Dataset.from_generator(
        lambda: ((np.arange(1, n + 1), n) for n in lengths),
        output_signature=(tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int64)),
    )
    batched = list(batches(examples, 4, length_of=lambda tokens, _: tf.shape(tokens)[0]))
    seen = sorted(int(n) for _, sizes in batched for n in sizes.numpy())
    assert seen == sorted(lengths)
    for tokens, sizes in batched:
        assert tokens.shape[1] == max(sizes.numpy())  # padded to its own longest, not to 16
        assert (tokens.numpy() != 0).sum(axis=1).tolist() == sizes.numpy().tolist()
    assert min(tokens.shape[1] for tokens, _ in batched) < 6  # short ones batched together


def test_batches_by_length_tell_keras_their_number_whatever_the_shuffle():
    lengths = [3, 15, 4, 16, 3, 15, 5, 2, 9, 9, 1]
    examples = tf.data.Dataset.from_generator(
        lambda: ((np.arange(1, n + 1), n) for n in lengths),
        output_signature=(tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int64)),
    ).cache()
    shuffled = batches(examples, 2, shuffle_seed=0, length_of=lambda tokens, _: tf.shape(tokens)[0])
    known = int(shuffled.cardinality())
    assert known > 0, "unknown, Keras warns that its input ran out of data every epoch"
    for _ in range(3):  # each pass is a new order, of as many batches
        assert sum(1 for _ in shuffled) == known


class TwoRoads:
    """Stands in for a model whose likeliest first word leads nowhere: `a` (0.6) is followed
    by `a`, `b` or `[end]` (a third each), `b` (0.4) by `[end]` (0.9). Greedy writes `a`
    and wanders; the likeliest sentence is `b`, at 0.36 against 0.2 for `a`."""

    vocabulary = ["", "[UNK]", "[start]", "[end]", "a", "b"]

    def predict_on_batch(self, inputs):
        _, tokens = inputs
        probabilities = np.zeros((len(tokens), tokens.shape[1], len(self.vocabulary)))
        probabilities[:, 0, [4, 5]] = [0.6, 0.4]
        for row, prefix in enumerate(tokens):
            for step in range(1, len(prefix)):
                if prefix[1] == 5:
                    probabilities[row, step, [3, 4]] = [0.9, 0.1]
                else:
                    probabilities[row, step, [3, 4, 5]] = [0.33, 0.34, 0.33]
        return probabilities


def test_beam_search_finds_the_likelier_sentence_that_greedy_decoding_misses():
    model = TwoRoads()
    greedy = decoding.decode(model, np.zeros((3, 2)), model.vocabulary, target_length=4)
    beam = decoding.decode(model, np.zeros((3, 2)), model.vocabulary, 4, beam_size=3)
    assert greedy == ["a a a a"] * 3
    assert beam == ["b"] * 3


def test_a_larger_length_penalty_lets_the_beam_prefer_longer_sentences():
    model = TwoRoads()
    usual = decoding.decode(model, np.zeros((1, 2)), model.vocabulary, 4, beam_size=3)
    longer = decoding.decode(
        model, np.zeros((1, 2)), model.vocabulary, 4, beam_size=3, length_penalty=10.0
    )
    assert usual == ["b"]
    assert len(longer[0].split()) > 1 and longer[0].startswith("a")


def test_a_beam_on_a_certain_model_agrees_with_greedy_and_a_bad_beam_is_a_config_error(compose):
    model = ScriptedDecoder()
    assert decoding.decode(model, np.zeros((2, 3)), model.vocabulary, 5, beam_size=2) == [
        "a b",
        "a b",
    ]
    with pytest.raises(ConfigError, match="task.beam_size must be at least 1, got 0"):
        TranslationTask(compose("task=translation", "task.beam_size=0").task, "data")
    with pytest.raises(ConfigError, match="task.length_penalty must be a number ≥ 0; got -1"):
        TranslationTask(compose("task=translation", "task.length_penalty=-1").task, "data")


def test_word_dropout_drops_whole_tokens_and_only_in_training():
    inputs = keras.Input(shape=(None, 8))
    model = keras.Model(inputs, embedding_dropout.embedding_dropouts(inputs, 0.0, 0.5, "source"))
    ones = np.ones((4, 100, 8), dtype="float32")
    dropped = np.asarray(model(ones, training=True))
    per_token = dropped.min(axis=-1), dropped.max(axis=-1)
    assert np.array_equal(per_token[0], per_token[1])  # all of a token's entries, or none
    assert set(np.unique(dropped)) == {0.0, 2.0}  # the rest scaled by 1 / (1 - 0.5)
    assert 0.35 < (per_token[0] == 0).mean() < 0.65
    assert np.array_equal(np.asarray(model(ones, training=False)), ones)


# The rnnlab layers in the `.keras` file of a stored model of each task at its defaults,
# besides ProbedRNN (which the loader registers itself): Keras finds them by these names.
STORED_LAYERS = {
    "translation": ["rnnlab>EachStep", "rnnlab>TiedEmbedding", "rnnlab>LexiconBias"],
    "captioning": ["rnnlab>EachStep"],
}


@pytest.mark.parametrize("task", sorted(STORED_LAYERS))
def test_importing_a_text_task_registers_the_layers_its_stored_models_hold(task):
    """A fresh process that imports only the task's module (as `get_task` does when a
    stored model is loaded) can deserialize every rnnlab layer of that task's models."""
    check = (
        f"import rnnlab.tasks.{task}, keras; "
        f"missing = [n for n in {STORED_LAYERS[task]!r} "
        "if keras.saving.get_registered_object(n) is None]; "
        "print(missing)"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
