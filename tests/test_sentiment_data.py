"""The embedded sentiment data: parsed from the real file, split once and for all."""

from __future__ import annotations

import pytest

from rnnlab.tasks.datasets import DataNotPreparedError, data_root
from rnnlab.tasks.sentiment import (
    SOURCE_MEMBERS,
    SentimentTask,
    read_snippets,
    split_rows,
)

SNIPPETS = data_root("data") / "raw" / "sentiment" / SOURCE_MEMBERS[-1]


@pytest.fixture(scope="module")
def rows():
    if not SNIPPETS.exists():
        pytest.fail(f"{SNIPPETS} is missing: run `make install`")
    return read_snippets(SNIPPETS)


def test_the_file_holds_all_rated_snippets(rows):
    ratings = [rating for _, rating, _ in rows]
    assert len(rows) == 10_605
    assert sum(rating > 0 for rating in ratings) == 5_242
    assert sum(rating < 0 for rating in ratings) == 5_326
    assert all(-4 <= rating <= 4 for rating in ratings)
    assert all(text and not text.endswith("\r") for _, _, text in rows)


def test_splits_are_disjoint_80_10_10_without_neutral_snippets(rows):
    splits = split_rows(rows)
    ids = {name: {row[0] for row in split} for name, split in splits.items()}
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 8_454,
        "validation": 1_056,
        "test": 1_058,
    }
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    assert all(rating != 0 for split in splits.values() for _, rating, _ in split)


def test_split_is_fixed_whatever_the_order_of_calls(rows):
    assert split_rows(rows) == split_rows(list(rows))


def test_split_deals_the_snippets_every_past_run_was_tested_on(rows):
    """The first snippet ids of each split, as the split of the first runs dealt them."""
    firsts = {name: [row[0] for row in split[:3]] for name, split in split_rows(rows).items()}
    assert firsts == {
        "train": [9307, 5616, 7418],
        "validation": [5573, 2425, 5285],
        "test": [7012, 1284, 661],
    }


def test_prepared_dataset_matches_the_split(rows):
    task = SentimentTask(compose_task(), "data")
    counts = {name: info.num_examples for name, info in task.builder.info.splits.items()}
    assert counts == {name: len(split) for name, split in split_rows(rows).items()}


def test_test_split_labels_agree_with_the_ratings(rows):
    task = SentimentTask(compose_task(), "data")
    ratings = {text: rating for _, rating, text in rows}
    for example in task.builder.as_dataset(split="test").take(200).as_numpy_iterator():
        assert example["label"] == int(ratings[example["text"].decode()] > 0)


def test_malformed_line_names_file_and_line(tmp_path):
    broken = tmp_path / "snippets.txt"
    broken.write_text("1\t2.5\tgood film\r\n2\tnot-a-number\tbad film\r\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"snippets.txt:2: expected 'id<TAB>rating<TAB>text'"):
        read_snippets(broken)


def test_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no snippets"):
        read_snippets(empty)


def test_missing_data_says_to_run_make_install(tmp_path):
    task = SentimentTask(compose_task(), str(tmp_path))
    with pytest.raises(DataNotPreparedError, match="run `make install`"):
        task.load(batch_size=32, seed=0)


def compose_task():
    from rnnlab.config import compose_config

    return compose_config([]).task
