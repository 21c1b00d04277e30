"""Translation's data: the Ding dictionary's example sentences as a TFDS data set in a
fixed split, read back as pairs of text, with the dictionary's word groups mixed in.

The split is dealt once by a constant seed, so every run of every cell is tested on the
same held-out sentences.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from rnnlab.tasks.base import deal
from rnnlab.tasks.seq2seq.ding import DICTIONARY, read_sentence_pairs

SOURCE_PACKAGE = "trans-de-en"
SPLIT_SEED = 19950101  # fixed forever: changing it changes the test set of every past run
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


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

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict]]]:
        pairs = read_sentence_pairs(Path(dl_manager.manual_dir) / DICTIONARY)
        splits = deal(len(pairs), SPLIT_FRACTIONS, SPLIT_SEED)
        return {name: self._generate_examples(pairs, indices) for name, indices in splits.items()}

    def _generate_examples(
        self, pairs: list[tuple[str, str]], indices: Iterable[int]
    ) -> Iterator[tuple[int, dict]]:
        for index in indices:
            german, english = pairs[index]
            yield int(index), {"de": german, "en": english}


def decoded_pairs(split: tf.data.Dataset) -> list[tuple[str, str]]:
    """A split's (German, English) pairs as Python strings."""
    return [(german.decode(), english.decode()) for german, english in tfds.as_numpy(split)]


def longer_side(inputs: tuple[tf.Tensor, tf.Tensor], _next_tokens: tf.Tensor) -> tf.Tensor:
    """A pair's length for batching by length: its longer side, in tokens."""
    source, decoder_tokens = inputs
    return tf.maximum(tf.shape(source)[0], tf.shape(decoder_tokens)[0])


def with_phrases(
    sentences: tf.data.Dataset, phrases: list[tuple[str, str]], seed: int
) -> tf.data.Dataset:
    """The training sentences and the dictionary's word groups, shuffled together once:
    the batches' shuffle buffer is smaller than both, so appended phrases would
    otherwise fill the end of every epoch."""
    pairs = decoded_pairs(sentences) + phrases
    order = np.random.default_rng(seed).permutation(len(pairs))
    german, english = zip(*(pairs[index] for index in order), strict=True)
    return tf.data.Dataset.from_tensor_slices((list(german), list(english)))
