"""The emoji images and names: every record finds its picture; features are fixed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rnnlab.tasks.base import deal
from rnnlab.tasks.captioning import (
    FEATURE_SIZE,
    SPLIT_FRACTIONS,
    SPLIT_SEED,
    CaptioningTask,
    deal_groups,
    emoji_files,
    image_features,
    image_path,
    read_emoji_records,
)


@pytest.fixture(scope="module")
def emoji():
    records, _ = emoji_files()
    return read_emoji_records(records)


def test_every_emoji_and_skin_tone_variant_has_an_image(emoji):
    _, images = emoji_files()
    assert len({one.group for one in emoji}) == 1_903 and len(emoji) == 3_778
    assert all(image_path(images, one.code_points).exists() for one in emoji)
    by_points = {one.code_points: one for one in emoji}
    assert by_points["1F600"].name == "grinning face"
    waving = by_points["1F44B-1F3FD"]  # waving hand, medium skin tone
    assert waving.name == "waving hand sign medium skin tone"
    assert waving.caption("metadata") == "people & body hand fingers open medium skin tone"
    assert by_points["1F44B"].caption("metadata") == "people & body hand fingers open"
    assert waving.group == by_points["1F44B"].group


def test_a_couple_names_each_tone_in_order_and_a_shared_tone_once(emoji):
    kiss = [one for one in emoji if one.name.startswith("kiss: man, man")]
    tones = {one.skin_tones for one in kiss}
    assert len(kiss) == 26 and {(), ("light",), ("light", "dark"), ("dark", "light")} <= tones


def test_variants_share_their_base_emojis_split(emoji):
    splits = deal_groups(emoji)
    groups = {name: {emoji[i].group for i in indices} for name, indices in splits.items()}
    assert not (groups["train"] & groups["test"]) and not (groups["validation"] & groups["test"])
    assert sum(len(indices) for indices in splits.values()) == len(emoji)
    # The base emoji of each split are those version 1.0.0 (no variants) dealt to it.
    legacy = deal(1_903, SPLIT_FRACTIONS, SPLIT_SEED)
    assert groups["test"] == set(legacy["test"].tolist())


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


def test_prepared_splits_hold_each_base_emoji_with_its_variants(compose):
    task = CaptioningTask(compose("task=captioning").task, "data")
    counts = {name: info.num_examples for name, info in task.builder.info.splits.items()}
    assert sum(counts.values()) == 3_778
    assert counts["test"] == len(deal_groups(read_emoji_records(emoji_files()[0]))["test"])


def test_a_broken_record_names_file_and_index(tmp_path):
    broken = tmp_path / "emoji.json"
    good = '{"unified": "1F600", "name": "GRINNING FACE", "category": "c", "subcategory": "s"}'
    broken.write_text(f'[{good}, {{"unified": "1F601"}}]')
    with pytest.raises(ValueError, match=r"emoji.json: record 1: expected 'unified', 'name'"):
        read_emoji_records(broken)


def test_no_records_is_an_error(tmp_path):
    empty = tmp_path / "emoji.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match="no emoji records"):
        read_emoji_records(empty)


def test_a_missing_image_names_the_emoji(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image for emoji 1F600"):
        image_path(tmp_path, "1F600")
