"""Translation: German to English with a recurrent encoder–decoder.

The sentence pairs are the example sentences of Frank Richter's Ding dictionary, shipped
by Debian as `trans-de-en` (GPL-2+: fetched at install time, never committed). The
encoder reads the German sentence into a context vector; the decoder, a second stack of
the same cell, writes English conditioned on it: teacher forcing in training, greedy
decoding at test, scored with token accuracy and sacrebleu's corpus BLEU.

`task.source=tfds:<name>` trains on a TensorFlow Datasets catalog set instead, such as
`ted_hrlr_translate/pt_to_en` (downloaded by TFDS on first use: online machines only).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from keras import layers
from omegaconf import DictConfig

from rnnlab.config import ConfigError
from rnnlab.tasks import datasets
from rnnlab.tasks.base import TaskData, batched_task_data, deal, supervised_splits, take_each
from rnnlab.tasks.seq2seq import decoding, lexicon_bias, unknown_words
from rnnlab.tasks.seq2seq.ding import (
    DICTIONARY,
    dictionary_phrases,
    ding_translations,
    read_lexicon,
    read_sentence_pairs,
)
from rnnlab.tasks.seq2seq.subwords import SubwordCodec

SOURCE_PACKAGE = "trans-de-en"
SPLIT_SEED = 19950101  # fixed forever: changing it changes the test set of every past run
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
# Keys newer than some stored runs; a config without them (`rnnlab evaluate`, `predict`,
# `reproduce` of such a run) means what those runs did.
STORED_BEFORE = {
    "source_vocabulary_size": None,
    "embedding_dropout": 0.0,
    "label_smoothing": 0.0,
    "decode_unknown": True,
    "beam_size": 1,
    "dictionary_phrases": 0,
    "tokens": "words",
    "translate_unknown": False,
    "lexicon_bias": 0,
    "unicode_words": False,
    "dictionary_glosses": True,
    "lexicon_sources": ["dictionary", "training"],
    "whole_annotations": False,
    "word_dropout": 0.0,
    "length_penalty": 0.6,
    "tied_embeddings": False,
}
LEXICON_SOURCES = ("dictionary", "training")
TOKENS = ("words", "subwords")


class DingSentencePairs(tfds.core.GeneratorBasedBuilder):
    """TFDS builder over the dictionary file unpacked by `rnnlab prepare`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Example sentences of trans-de-en 1.9; fixed 80/10/10 split."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `make install` (or `rnnlab prepare`) to fetch the file."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="German-English example sentences of the Ding dictionary.",
            features=tfds.features.Translation(languages=("de", "en")),
            supervised_keys=("de", "en"),
            homepage="https://dict.tu-chemnitz.de/",
            citation="Richter, F. (1995-2023). Ding: German-English dictionary. "
            "TU Chemnitz. Debian package trans-de-en.",
            license="GPL-2.0-or-later",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        pairs = read_sentence_pairs(Path(dl_manager.manual_dir) / DICTIONARY)
        splits = deal(len(pairs), SPLIT_FRACTIONS, SPLIT_SEED)
        return {name: self._generate_examples(pairs, indices) for name, indices in splits.items()}

    def _generate_examples(self, pairs, indices) -> Iterator[tuple[int, dict]]:
        for index in indices:
            german, english = pairs[index]
            yield int(index), {"de": german, "en": english}


def decoded_pairs(split: tf.data.Dataset) -> list[tuple[str, str]]:
    return [(german.decode(), english.decode()) for german, english in tfds.as_numpy(split)]


def longer_side(inputs, _next_tokens) -> tf.Tensor:
    """A pair's length for batching by length: its longer side, in tokens."""
    source, decoder_tokens = inputs
    return tf.maximum(tf.shape(source)[0], tf.shape(decoder_tokens)[0])


class TranslationTask(decoding.TextGenerationTask):
    """Encoder–decoder: the encoder's summary of the source conditions every decoder step."""

    def __init__(self, cfg: DictConfig, data_dir: str) -> None:
        self.cfg = cfg
        self.root = datasets.data_root(data_dir)
        self.builder = DingSentencePairs(data_dir=str(self.root / "tfds"))
        self.source_vectorizer: layers.TextVectorization | None = None
        self.target_vectorizer: layers.TextVectorization | None = None
        self.train_pairs: tf.data.Dataset | None = None
        self.test_pairs: list[tuple[str, str]] = []
        self.source_codec: SubwordCodec | None = None  # with task.tokens=subwords
        self.target_codec: SubwordCodec | None = None
        if self.option("tokens") not in TOKENS:
            raise ConfigError(
                f"task.tokens must be one of {', '.join(TOKENS)}; got {self.option('tokens')!r}"
            )
        self.lexicon: dict[str, str] | None = None  # with task.translate_unknown, on first use
        self._check_dictionary_needs()
        unknown_sources = set(self.option("lexicon_sources")) - set(LEXICON_SOURCES)
        if unknown_sources or not self.option("lexicon_sources"):
            raise ConfigError(
                f"task.lexicon_sources must list some of {', '.join(LEXICON_SOURCES)}; "
                f"got {list(self.option('lexicon_sources'))}"
            )
        for key, least in (("lexicon_bias", 0), ("beam_size", 1)):
            value = self.option(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"task.{key} must be a whole number ≥ {least}; got {value}")
        tied = self.option("tied_embeddings")
        if not isinstance(tied, bool):
            raise ConfigError(f"task.tied_embeddings must be true or false; got {tied!r}")
        penalty = self.option("length_penalty")
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or penalty < 0:
            raise ConfigError(f"task.length_penalty must be a number ≥ 0; got {penalty}")

    def _check_dictionary_needs(self) -> None:
        """The options that read the Ding dictionary need it, and those that read it through
        the attention need both: one error names every option on that lacks a need."""
        attention, ding, words = (
            "task.attention=additive or dot",
            "task.source=embedded (Ding)",
            "task.tokens=words",
        )
        missing = {
            attention: self.cfg.attention == "none",
            ding: self.cfg.source != "embedded",
            words: self.option("tokens") != "words",
        }
        needs = {  # option: (its value when off, what it needs)
            "translate_unknown": ("false", (attention, ding, words)),
            "lexicon_bias": ("0", (attention, ding, words)),
            "dictionary_phrases": ("0", (ding,)),
        }
        for need in (need for need, lacking in missing.items() if lacking):
            on = [
                option for option, (_, its) in needs.items() if need in its and self.option(option)
            ]
            if on:
                options = " and ".join(f"task.{option}" for option in on)
                fixes = " ".join(f"task.{option}={needs[option][0]}" for option in on)
                verb = "needs" if len(on) == 1 else "need"
                raise ConfigError(f"{options} {verb} {need}; or set {fixes}")

    def prepare(self) -> None:
        raw = self.root / "raw" / "translation"
        datasets.fetch_debian_package(SOURCE_PACKAGE, raw)
        datasets.prepare(self.builder, raw)

    def option(self, key: str):
        """`task.<key>` of a key in STORED_BEFORE, or what runs made before it did."""
        return self.cfg.get(key, STORED_BEFORE[key])

    def load(self, batch_size: int, seed: int) -> TaskData:
        catalog = {name: name for name in SPLIT_FRACTIONS}  # ted_hrlr_translate's are ours
        splits, data_hash = supervised_splits(self.builder, self.cfg.source, catalog)
        splits = take_each(splits, self.cfg.max_examples)
        self.train_pairs = splits["train"]  # the trivial baseline's candidates
        if self.option("dictionary_phrases"):
            splits["train"] = self._with_phrases(splits["train"], seed)
            data_hash += f"+phrases{self.option('dictionary_phrases')}"
        self.test_pairs = decoded_pairs(splits["test"])  # scored as text, never as pieces
        if self.option("tokens") == "subwords":
            splits = self._segmented(splits)
        # Vocabularies come from the training split only: test words stay unseen.
        # The source vocabulary costs only embedding rows, the target's a wider softmax.
        # Subwords: the pieces' own vocabularies, learnt to those sizes, are taken whole.
        self.source_vectorizer = layers.TextVectorization(
            max_tokens=None if self.source_codec else self.source_vocabulary_size,
            standardize=self.standardize,
            output_sequence_length=self.cfg.source_length,
        )
        self.source_vectorizer.adapt(splits["train"].map(lambda source, _: source).batch(1024))
        self.target_vectorizer = decoding.target_vectorizer(
            splits["train"].map(lambda _, target: target),
            None if self.target_codec else self.cfg.vocabulary_size,
            self.cfg.target_length,
            standardize=self.standardize,
        )
        vectorized = {
            name: split.map(self._vectorize, num_parallel_calls=tf.data.AUTOTUNE)
            for name, split in splits.items()
        }
        return batched_task_data(vectorized, batch_size, seed, data_hash, longer_side)

    def _with_phrases(self, sentences: tf.data.Dataset, seed: int) -> tf.data.Dataset:
        """The training sentences and the dictionary's word groups, shuffled together once:
        the batches' shuffle buffer is smaller than both, so appended phrases would
        otherwise fill the end of every epoch. `task.max_examples` caps the phrases too."""
        phrases = dictionary_phrases(
            self.dictionary_path,
            frozenset(self.held_out_pairs()),
            self.option("dictionary_phrases"),
            self.option("whole_annotations"),
        )
        pairs = decoded_pairs(sentences) + phrases[: self.cfg.max_examples]
        order = np.random.default_rng(seed).permutation(len(pairs))
        german, english = zip(*(pairs[index] for index in order), strict=True)
        return tf.data.Dataset.from_tensor_slices((list(german), list(english)))

    @property
    def source_vocabulary_size(self) -> int:
        return self.option("source_vocabulary_size") or self.cfg.vocabulary_size

    @property
    def standardize(self) -> Callable | None:
        """Words are standardized by the vectorizers; pieces were, before segmenting."""
        return None if self.source_codec else self.word_standardize

    @property
    def word_standardize(self) -> Callable:
        """With `task.unicode_words`, "schön" is one word; runs stored before it read
        "sch ö n" (`decoding.standardize` knows only ASCII letters)."""
        if self.option("unicode_words"):
            return decoding.standardize_unicode
        return decoding.standardize

    def standardized(self, texts: list[str]) -> list[str]:
        return decoding.standardized_texts(texts, self.word_standardize)

    def _segmented(self, splits: dict[str, tf.data.Dataset]) -> dict[str, tf.data.Dataset]:
        """Every split as standardized pieces, of codecs learnt on the training split."""
        texts = {
            name: tuple(map(list, zip(*decoded_pairs(split), strict=True)))
            for name, split in splits.items()
        }
        german, english = texts["train"]
        self.source_codec = SubwordCodec.learn(
            self.standardized(german), self.source_vocabulary_size
        )
        self.target_codec = SubwordCodec.learn(self.standardized(english), self.cfg.vocabulary_size)
        return {
            name: tf.data.Dataset.from_tensor_slices(
                (
                    self.segmented_sources(german),
                    self.target_codec.segment(self.standardized(english)),
                )
            )
            for name, (german, english) in texts.items()
        }

    def segmented_sources(self, texts: list[str]) -> list[str]:
        return self.source_codec.segment(self.standardized(texts))

    def source_ids(self, texts: list[str]) -> np.ndarray:
        """Token ids of German sentences, as the encoder reads them."""
        if self.source_codec:
            texts = self.segmented_sources(texts)
        return self.source_vectorizer(tf.constant(texts)).numpy()

    def _vectorize(self, source: tf.Tensor, target: tf.Tensor):
        decoder_tokens, next_tokens = decoding.teacher_forcing(self.target_vectorizer, target)
        source_tokens = decoding.without_padding(self.source_vectorizer(source))
        return (source_tokens, decoder_tokens), next_tokens

    def build_model(
        self,
        recurrent: Callable[[keras.KerasTensor], keras.KerasTensor],
        decoder: Callable[[keras.KerasTensor], keras.KerasTensor],
    ) -> keras.Model:
        source = keras.Input(shape=(None,), dtype="int64", name="source")  # any length
        # Index 0 is padding: the mask lets the encoder stop at each sentence's last word.
        embedded = layers.Embedding(
            self.source_vectorizer.vocabulary_size(), self.cfg.embedding_dim, mask_zero=True
        )(source)
        embedded = decoding.embedding_dropouts(
            embedded, self.option("embedding_dropout"), self.option("word_dropout"), "source"
        )
        if self.cfg.attention == "none":
            memory, context = None, recurrent(embedded)
        else:
            # The decoder attends over every source position; the masked mean of the
            # encoder's outputs summarises the sentence for it (bidirectional or not).
            memory = recurrent(embedded, return_sequences=True)
            context = layers.GlobalAveragePooling1D(name="source_summary")(memory)
        tokens, probabilities = decoding.conditioned_decoder(
            context,
            self.target_vectorizer.vocabulary_size(),
            self.cfg.embedding_dim,
            decoder,
            memory=memory,
            attention=self.cfg.attention,
            attention_units=self.cfg.attention_units,
            embedding_dropout=self.option("embedding_dropout"),
            output_from_attention=self._lexicon_bias(source),
            word_dropout=self.option("word_dropout"),
            tied_embeddings=self.option("tied_embeddings"),
        )
        return keras.Model([source, tokens], probabilities, name="translation")

    def _lexicon_bias(self, source: keras.KerasTensor) -> Callable | None:
        """Scores and attention weights -> probabilities biased by the translations of the
        attended German words (`task.lexicon_bias`) from the `task.lexicon_sources`: the
        Ding dictionary, and IBM Model 1 on the training pairs. None without the option."""
        if not self.option("lexicon_bias"):
            return None
        source_vocabulary = self.source_vectorizer.get_vocabulary()
        target_vocabulary = self.target_vectorizer.get_vocabulary()
        lexicons = []
        if "dictionary" in self.option("lexicon_sources"):
            counts = self.dictionary_translations()
            lexicons.append(
                lexicon_bias.counts_matrix(counts, source_vocabulary, target_vocabulary)
            )
        if "training" in self.option("lexicon_sources"):
            lexicons.append(self.training_lexicon())
        specials = [0] + [
            target_vocabulary.index(token)
            for token in (decoding.UNKNOWN, decoding.START, decoding.END)
            if token in target_vocabulary
        ]
        ids, probabilities = lexicon_bias.lexicon_table(
            lexicons, specials, self.option("lexicon_bias")
        )
        layer = lexicon_bias.LexiconBias(
            len(source_vocabulary), self.option("lexicon_bias"), name="lexicon_bias"
        )

        def biased(scores, weights):
            output = layer([scores, weights, source])
            layer.set_table(ids, probabilities)
            return output

        return biased

    @property
    def loss(self) -> Callable:
        return decoding.smoothed_crossentropy(self.option("label_smoothing"))

    def input_state(self) -> dict:
        state = {
            "source_vocabulary": self.source_vectorizer.get_vocabulary(),
            "target_vocabulary": self.target_vectorizer.get_vocabulary(),
        }
        if self.source_codec:
            state["source_subwords"] = self.source_codec.to_state()
            state["target_subwords"] = self.target_codec.to_state()
        return state

    def restore_inputs(self, state: dict) -> None:
        if "source_subwords" in state:
            self.source_codec = SubwordCodec.from_state(state["source_subwords"])
            self.target_codec = SubwordCodec.from_state(state["target_subwords"])
        self.source_vectorizer = layers.TextVectorization(
            vocabulary=state["source_vocabulary"],
            standardize=self.standardize,
            output_sequence_length=self.cfg.source_length,
        )
        self.target_vectorizer = layers.TextVectorization(
            vocabulary=state["target_vocabulary"],
            standardize=self.standardize,
            output_sequence_length=self.cfg.target_length + 1,
        )

    @property
    def join(self) -> Callable[[str], str] | None:
        """What turns a decode's tokens into words: pieces are joined, words stay."""
        return self.target_codec.join if self.target_codec else None

    def predict(self, model: keras.Model, inputs: list[str]) -> list[str]:
        """English for each German sentence, decoded as at test."""
        source_ids = self.source_ids(inputs)
        decodes = decoding.decode(
            model,
            source_ids,
            self.target_vectorizer.get_vocabulary(),
            self.cfg.target_length,
            # [UNK] is written first when the dictionary is to translate it
            decode_unknown=self.option("decode_unknown") or self.option("translate_unknown"),
            beam_size=self.option("beam_size"),
            length_penalty=self.option("length_penalty"),
        )
        if self.option("translate_unknown"):
            decodes = unknown_words.translate_unknown(
                model,
                source_ids,
                decodes,
                self.target_vectorizer.get_vocabulary(),
                [words.split() for words in self.standardized(inputs)],
                self.dictionary_lexicon(),
                keep_unknown=self.option("decode_unknown"),
            )
        return [self.join(decode) for decode in decodes] if self.join else decodes

    def dictionary_lexicon(self) -> dict[str, str]:
        """`read_lexicon` of the Ding file, without the lines of held-out sentences."""
        if self.lexicon is None:
            self.lexicon = read_lexicon(
                self.dictionary_path,
                self.held_out_pairs(),
                self.word_standardize,
                glosses=self.option("dictionary_glosses"),
                whole_annotations=self.option("whole_annotations"),
            )
        return self.lexicon

    def dictionary_translations(self) -> dict[str, collections.Counter]:
        """`ding_translations` of this task's dictionary, held-out lines left out."""
        held = frozenset(self.held_out_pairs())
        return ding_translations(
            self.dictionary_path, held, self.word_standardize, self.option("whole_annotations")
        )

    def training_lexicon(self):
        """IBM Model 1's p(e | f) over the training pairs' token ids (phrases not included)."""
        pairs = decoded_pairs(self.train_pairs)
        sources = self.source_ids([german for german, _ in pairs])
        targets = self.target_vectorizer(tf.constant([english for _, english in pairs])).numpy()
        shape = (
            self.source_vectorizer.vocabulary_size(),
            self.target_vectorizer.vocabulary_size(),
        )
        return lexicon_bias.ibm_model1(
            [row[row > 0] for row in sources], [row[row > 0] for row in targets], shape
        )

    @property
    def dictionary_path(self) -> Path:
        return self.root / "raw" / "translation" / DICTIONARY

    def held_out_pairs(self) -> set[tuple[str, str]]:
        catalog = {name: name for name in SPLIT_FRACTIONS}
        splits, _ = supervised_splits(self.builder, self.cfg.source, catalog)
        return set(decoded_pairs(splits["validation"].concatenate(splits["test"])))

    def predict_example(self) -> list[str]:
        return ["Ich habe keine Zeit.", "Das Wetter ist heute schön."]

    def prediction_lines(self, inputs: list[str], answers: list[str]) -> list[str]:
        return [f"{german}  ->  {english}" for german, english in zip(inputs, answers, strict=True)]

    def evaluate_extra(self, model: keras.Model, data: TaskData):
        """Corpus BLEU of the decodes of the whole test split beside the trivial
        baseline's (one fixed English sentence) and the German copied, and a sample of decodes."""
        sources = [source for source, _ in self.test_pairs]
        references = [target for _, target in self.test_pairs]
        metrics, table = decoding.score_decodes(
            self.predict(model, sources),
            sources,
            references,
            self.cfg.samples,
            self.word_standardize,
        )
        train_targets = [target.decode() for _, target in tfds.as_numpy(self.train_pairs)]
        metrics |= decoding.best_constant_baseline(
            train_targets, references, standardize=self.word_standardize
        )
        metrics |= decoding.copy_bleu(sources, references, self.word_standardize)
        return metrics, {"test_translations.txt": table}
