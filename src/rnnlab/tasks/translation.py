"""Translation: German to English with a recurrent encoder–decoder.

The sentence pairs are the example sentences of Frank Richter's Ding dictionary, shipped
by Debian as `trans-de-en` (GPL-2+: fetched at install time, never committed). The
encoder reads the German sentence into a context vector; the decoder, a second stack of
the same cell, writes English conditioned on it: teacher forcing in training, greedy
decoding at test, scored with token accuracy and sacrebleu's corpus BLEU.

`task.source=tfds:<name>` trains on a TensorFlow Datasets catalog set instead, such as
`ted_hrlr_translate/pt_to_en` (downloaded by TFDS on first use: online machines only), and
`task.source=file:PATH` on a user's sentence pairs in any two languages (`text_files`).

This module is the task: it reads its options and ties the parts in `seq2seq/` together.
The data set is `sentence_pairs`, the options' checks `translation_options`, the model
`translation_model`, writing text `decoding` and `unknown_words`, scoring it `bleu`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from keras import layers
from omegaconf import DictConfig

from rnnlab.config import stored_before
from rnnlab.recurrence.stack import RecurrentStack
from rnnlab.tasks import datasets
from rnnlab.tasks.base import (
    DatasetRecord,
    TaskData,
    batched_task_data,
    supervised_splits,
    take_each,
)
from rnnlab.tasks.data_files import DataFile, is_file_source
from rnnlab.tasks.seq2seq import bleu, decoding, lexicon_bias, tokenizing, unknown_words
from rnnlab.tasks.seq2seq.ding import (
    DICTIONARY,
    dictionary_lexicon,
    dictionary_phrases,
    ding_translations,
)
from rnnlab.tasks.seq2seq.generation_task import TextGenerationTask
from rnnlab.tasks.seq2seq.losses import smoothed_crossentropy
from rnnlab.tasks.seq2seq.sentence_pairs import (
    SOURCE_PACKAGE,
    SPLIT_FRACTIONS,
    DingSentencePairs,
    decoded_pairs,
    longer_side,
    with_phrases,
)
from rnnlab.tasks.seq2seq.subwords import SubwordCodec
from rnnlab.tasks.seq2seq.translation_model import encoder_decoder
from rnnlab.tasks.seq2seq.translation_options import check_options
from rnnlab.tasks.text_files import PAIR_FORMATS, read_sentence_pairs

if TYPE_CHECKING:  # only a type: lexicon_bias builds the matrices
    from scipy import sparse

# Keys newer than some stored runs, with what a config without them (`rnnlab evaluate`,
# `predict`, `reproduce` of such a run) means: the config package's table of migrations.
STORED_BEFORE = stored_before("translation")
# What the options that read the Ding dictionary are on a user's file: Ding translates
# German to English only, so its words, word groups and lexicon are left out; the lexicon
# bias reads IBM Model 1 of the file's own training pairs, which knows any two languages.
WITHOUT_DICTIONARY = {
    "translate_unknown": False,
    "dictionary_phrases": 0,
    "lexicon_sources": ["training"],
}


class TranslationTask(TextGenerationTask):
    """Encoder–decoder: the encoder's summary of the source conditions every decoder step."""

    def __init__(self, cfg: DictConfig, data_dir: str) -> None:
        self.cfg = cfg
        self.root = datasets.data_root(data_dir)
        self.builder = DingSentencePairs(data_dir=str(self.root / "tfds"))
        self._source_vectorizer: layers.TextVectorization | None = None
        self._target_vectorizer: layers.TextVectorization | None = None
        self.train_pairs: tf.data.Dataset | None = None
        self.test_pairs: list[tuple[str, str]] = []
        self.source_codec: SubwordCodec | None = None  # with task.tokens=subwords
        self.target_codec: SubwordCodec | None = None
        self.lexicon: dict[str, str] | None = None  # with task.translate_unknown, on first use
        self.data_file: DataFile | None = None  # with task.source=file:PATH
        self.file_rows = 0  # its sentence pairs, once loaded
        check_options(cfg, self.option)

    def prepare(self) -> None:
        raw = self.root / "raw" / "translation"
        datasets.fetch_debian_package(SOURCE_PACKAGE, raw)
        datasets.prepare(self.builder, raw)

    def option(self, key: str) -> Any:
        """`task.<key>` of a key in STORED_BEFORE, or what runs made before it did; on a
        user's file, the dictionary's options are off (WITHOUT_DICTIONARY)."""
        if key in WITHOUT_DICTIONARY and is_file_source(self.cfg.source):
            return WITHOUT_DICTIONARY[key]
        return self.cfg.get(key, STORED_BEFORE[key])

    @property
    def source_vectorizer(self) -> layers.TextVectorization:
        """German text -> the encoder's token ids; made by `load` or `restore_inputs`."""
        if self._source_vectorizer is None:
            raise ValueError("translation has no vocabularies yet: call load or restore_inputs")
        return self._source_vectorizer

    @property
    def target_vectorizer(self) -> layers.TextVectorization:
        """English text -> the decoder's token ids; made by `load` or `restore_inputs`."""
        if self._target_vectorizer is None:
            raise ValueError("translation has no vocabularies yet: call load or restore_inputs")
        return self._target_vectorizer

    def load(self, batch_size: int, seed: int) -> TaskData:
        if is_file_source(self.cfg.source):
            splits, data_hash = self._file_splits()
        else:
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
        self._source_vectorizer = layers.TextVectorization(
            max_tokens=None if self.source_codec else self.source_vocabulary_size,
            standardize=self.standardize,
            output_sequence_length=self.cfg.source_length,
        )
        self._source_vectorizer.adapt(splits["train"].map(lambda source, _: source).batch(1024))
        self._target_vectorizer = tokenizing.target_vectorizer(
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

    def _file_splits(self) -> tuple[dict[str, tf.data.Dataset], str]:
        """The user's sentence pairs, split and checked (`read_sentence_pairs`), and the
        data hash of their content and the settings that split them."""
        self.data_file = DataFile.from_source(self.cfg.source, PAIR_FORMATS)
        splits, settings = read_sentence_pairs(self.data_file, self.cfg)
        self.file_rows = sum(len(sources) for sources, _ in splits.values())
        pipelines = {
            name: tf.data.Dataset.from_tensor_slices(pair) for name, pair in splits.items()
        }
        return pipelines, self.data_file.data_hash(settings)

    def _with_phrases(self, sentences: tf.data.Dataset, seed: int) -> tf.data.Dataset:
        """The training sentences and the dictionary's word groups (`with_phrases`);
        `task.max_examples` caps the phrases too."""
        phrases = dictionary_phrases(
            self.dictionary_path,
            frozenset(self.held_out_pairs()),
            self.option("dictionary_phrases"),
            self.option("whole_annotations"),
        )
        return with_phrases(sentences, phrases[: self.cfg.max_examples], seed)

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
        "sch ö n" (`tokenizing.standardize` knows only ASCII letters)."""
        if self.option("unicode_words"):
            return tokenizing.standardize_unicode
        return tokenizing.standardize

    def standardized(self, texts: list[str]) -> list[str]:
        return tokenizing.standardized_texts(texts, self.word_standardize)

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
        target_codec = SubwordCodec.learn(self.standardized(english), self.cfg.vocabulary_size)
        self.target_codec = target_codec
        return {
            name: tf.data.Dataset.from_tensor_slices(
                (
                    self.segmented_sources(german),
                    target_codec.segment(self.standardized(english)),
                )
            )
            for name, (german, english) in texts.items()
        }

    def segmented_sources(self, texts: list[str]) -> list[str]:
        if self.source_codec is None:
            raise ValueError("task.tokens=words: the sources are words, not pieces")
        return self.source_codec.segment(self.standardized(texts))

    def source_ids(self, texts: list[str]) -> np.ndarray:
        """Token ids of German sentences, as the encoder reads them."""
        if self.source_codec:
            texts = self.segmented_sources(texts)
        return self.source_vectorizer(tf.constant(texts)).numpy()

    def _vectorize(
        self, source: tf.Tensor, target: tf.Tensor
    ) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.Tensor]:
        decoder_tokens, next_tokens = tokenizing.teacher_forcing(self.target_vectorizer, target)
        source_tokens = tokenizing.without_padding(self.source_vectorizer(source))
        return (source_tokens, decoder_tokens), next_tokens

    def build_model(
        self, recurrent: RecurrentStack, decoder: RecurrentStack | None = None
    ) -> keras.Model:
        if decoder is None:
            raise ValueError("translation writes text: build_model needs a decoder stack")
        return encoder_decoder(
            recurrent,
            decoder,
            self.source_vectorizer.vocabulary_size(),
            self.target_vectorizer.vocabulary_size(),
            self.cfg.embedding_dim,
            attention=self.cfg.attention,
            attention_units=self.cfg.attention_units,
            embedding_dropout=self.option("embedding_dropout"),
            word_dropout=self.option("word_dropout"),
            tied_embeddings=self.option("tied_embeddings"),
            lexicon=self._lexicon_table(),
        )

    def _lexicon_table(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The `task.lexicon_bias` most probable translations of each German word, from the
        `task.lexicon_sources`: the Ding dictionary, and IBM Model 1 on the training
        pairs (`lexicon_bias.lexicon_table`). None without the option."""
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
            for token in (tokenizing.UNKNOWN, tokenizing.START, tokenizing.END)
            if token in target_vocabulary
        ]
        return lexicon_bias.lexicon_table(lexicons, specials, self.option("lexicon_bias"))

    @property
    def loss(self) -> Callable:
        return smoothed_crossentropy(self.option("label_smoothing"))

    def input_state(self) -> dict[str, Any]:
        state = {
            "source_vocabulary": self.source_vectorizer.get_vocabulary(),
            "target_vocabulary": self.target_vectorizer.get_vocabulary(),
        }
        if self.source_codec and self.target_codec:
            state["source_subwords"] = self.source_codec.to_state()
            state["target_subwords"] = self.target_codec.to_state()
        return state

    def restore_inputs(self, state: dict[str, Any]) -> None:
        if "source_subwords" in state:
            self.source_codec = SubwordCodec.from_state(state["source_subwords"])
            self.target_codec = SubwordCodec.from_state(state["target_subwords"])
        self._source_vectorizer = layers.TextVectorization(
            vocabulary=state["source_vocabulary"],
            standardize=self.standardize,
            output_sequence_length=self.cfg.source_length,
        )
        self._target_vectorizer = layers.TextVectorization(
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
        join = self.join
        return [join(decode) for decode in decodes] if join else decodes

    def dictionary_lexicon(self) -> dict[str, str]:
        """`read_lexicon` of the Ding file, without the lines of held-out sentences."""
        if self.lexicon is None:
            self.lexicon = dictionary_lexicon(
                self.dictionary_path,
                frozenset(self.held_out_pairs()),
                self.word_standardize,
                self.option("dictionary_glosses"),
                self.option("whole_annotations"),
            )
        return self.lexicon

    def dictionary_translations(self) -> dict[str, collections.Counter]:
        """`ding_translations` of this task's dictionary, held-out lines left out."""
        held = frozenset(self.held_out_pairs())
        return ding_translations(
            self.dictionary_path, held, self.word_standardize, self.option("whole_annotations")
        )

    def training_lexicon(self) -> sparse.csr_matrix:
        """IBM Model 1's p(e | f) over the training pairs' token ids (phrases not included)."""
        pairs = decoded_pairs(self._loaded_train_pairs())
        sources = self.source_ids([german for german, _ in pairs])
        targets = self.target_vectorizer(tf.constant([english for _, english in pairs])).numpy()
        shape = (
            self.source_vectorizer.vocabulary_size(),
            self.target_vectorizer.vocabulary_size(),
        )
        return lexicon_bias.ibm_model1(
            [row[row > 0] for row in sources], [row[row > 0] for row in targets], shape
        )

    def _loaded_train_pairs(self) -> tf.data.Dataset:
        if self.train_pairs is None:
            raise ValueError("translation's training pairs are read by load: call it first")
        return self.train_pairs

    @property
    def dictionary_path(self) -> Path:
        return self.root / "raw" / "translation" / DICTIONARY

    def held_out_pairs(self) -> set[tuple[str, str]]:
        catalog = {name: name for name in SPLIT_FRACTIONS}
        splits, _ = supervised_splits(self.builder, self.cfg.source, catalog)
        return set(decoded_pairs(splits["validation"].concatenate(splits["test"])))

    def predict_example(self) -> list[str]:
        if self.data_file is not None:  # two of the file's test sentences, after load
            return [source for source, _ in self.test_pairs[:2]]
        return ["Ich habe keine Zeit.", "Das Wetter ist heute schön."]

    def dataset_record(self) -> DatasetRecord:
        """A user's file: its name and path; else Ding's pairs or the catalog set."""
        if self.data_file is not None:
            return self.data_file.record(self.file_rows)
        return super().dataset_record()

    def prediction_lines(self, inputs: list[str], answers: list[str]) -> list[str]:
        return [f"{german}  ->  {english}" for german, english in zip(inputs, answers, strict=True)]

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Corpus BLEU of the decodes of the whole test split beside the trivial
        baseline's (one fixed English sentence) and the German copied, and a sample of decodes."""
        sources = [source for source, _ in self.test_pairs]
        references = [target for _, target in self.test_pairs]
        metrics, table = bleu.score_decodes(
            self.predict(model, sources),
            sources,
            references,
            self.cfg.samples,
            self.word_standardize,
        )
        train_pairs = tfds.as_numpy(self._loaded_train_pairs())
        train_targets = [target.decode() for _, target in train_pairs]
        metrics |= bleu.best_constant_baseline(
            train_targets, references, standardize=self.word_standardize
        )
        metrics |= bleu.copy_bleu(sources, references, self.word_standardize)
        return metrics, {"test_translations.txt": table}
