"""The emoji images and names: every record finds its picture; features are fixed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rnnlab.tasks.captioning import (
    FEATURE_SIZE,
    CaptioningTask,
    emoji_files,
    image_features,
    image_path,
    read_emoji_records,
)


@pytest.fixture(scope="module")
def emoji():
    records, _ = emoji_files()
    return read_emoji_records(records)


def test_every_named_emoji_has_an_image(emoji):
    _, images = emoji_files()
    assert len(emoji) == 1_903
    assert all(image_path(images, code_points).exists() for code_points, _ in emoji)
    assert ("1F600", "grinning face") in emoji


def test_image_names_drop_leading_zeros_and_mostly_the_variation_selector():
    _, images = emoji_files()
    assert image_path(images, "0023-FE0F-20E3").name == "23-20e3.png"
    assert image_path(images, "1F9D1-200D-2696-FE0F").name == "1f9d1-200d-2696-fe0f.png"


def test_features_average_the_image_composited_on_white(tmp_path):
    picture = np.zeros((72, 72, 4), dtype=np.uint8)
    picture[:6, :6] = [255, 0, 0, 255]  # one opaque red block; the rest transparent
    Image.fromarray(picture, "RGBA").save(tmp_path / "red.png")
    features = image_features(tmp_path / "red.png").reshape(12, 12, 3)
    assert features.shape == (12, 12, 3) and FEATURE_SIZE == 432
    assert features[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert np.allclose(features[1:, 1:], 1.0)  # transparent is white


def test_prepared_splits_are_80_10_10(compose):
    task = CaptioningTask(compose("task=captioning").task, "data")
    counts = {name: info.num_examples for name, info in task.builder.info.splits.items()}
    assert counts == {"train": 1_522, "validation": 190, "test": 191}


def test_a_broken_record_names_file_and_index(tmp_path):
    broken = tmp_path / "emoji.json"
    broken.write_text('[{"unified": "1F600", "name": "GRINNING FACE"}, {"unified": "1F601"}]')
    with pytest.raises(ValueError, match=r"emoji.json: record 1: expected 'unified' and 'name'"):
        read_emoji_records(broken)


def test_no_records_is_an_error(tmp_path):
    empty = tmp_path / "emoji.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match="no emoji records"):
        read_emoji_records(empty)


def test_a_missing_image_names_the_emoji(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image for emoji 1F600"):
        image_path(tmp_path, "1F600")
