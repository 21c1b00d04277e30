"""The UCR/UEA files from the sktime wheel: parsed, split, padded and masked."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.tasks.base import deal
from rnnlab.tasks.datasets import data_root
from rnnlab.tasks.series_classification import SeriesClassificationTask, read_ts

RAW = data_root("data") / "raw" / "series_classification"


def test_japanese_vowels_has_variable_length_cases_of_twelve_channels():
    cases, labels = read_ts(RAW / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts")
    test_cases, _ = read_ts(RAW / "JapaneseVowels" / "JapaneseVowels_TEST.ts")
    assert (len(cases), len(test_cases)) == (270, 370)
    assert {case.shape[1] for case in cases} == {12}
    lengths = [len(case) for case in cases + test_cases]
    assert (min(lengths), max(lengths)) == (7, 29)
    assert sorted(set(labels)) == list("123456789")


def test_a_univariate_set_parses_too():
    cases, labels = read_ts(RAW / "GunPoint" / "GunPoint_TRAIN.ts")
    assert len(cases) == 50 and cases[0].shape == (150, 1)
    assert sorted(set(labels)) == ["1", "2"]


def test_prepared_splits_keep_the_archive_test_set(compose):
    task = SeriesClassificationTask(compose("task=series_classification").task, "data")
    counts = {name: info.num_examples for name, info in task.builder.info.splits.items()}
    assert counts == {"train": 216, "validation": 54, "test": 370}


def test_padding_is_masked_so_it_does_not_change_the_prediction(compose):
    from rnnlab.recurrence.stack import recurrent_stack

    cfg = compose("task=series_classification", "cell.units=4")
    task = SeriesClassificationTask(cfg.task, "data")
    task.load(batch_size=32, seed=0)
    model = task.build_model(recurrent_stack(cfg.cell, cfg.model))
    case = np.random.default_rng(0).normal(size=(1, 10, 12)).astype(np.float32)
    padded = np.pad(case, ((0, 0), (0, task.steps - 10), (0, 0)))
    assert np.allclose(model.predict(case, verbose=0), model.predict(padded, verbose=0))


def test_malformed_case_names_file_and_line(tmp_path):
    broken = tmp_path / "Broken_TRAIN.ts"
    broken.write_text("@classLabel true 1 2\n@data\n1,2,3:1\n1,x,3:2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Broken_TRAIN.ts:4: expected 'values:...:label'"):
        read_ts(broken)


def test_an_unknown_label_names_file_and_line(tmp_path):
    broken = tmp_path / "Broken_TRAIN.ts"
    broken.write_text("@classLabel true 1 2\n@data\n1,2,3:7\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Broken_TRAIN.ts:3: unknown class label '7'"):
        read_ts(broken)


def test_a_file_without_cases_is_an_error(tmp_path):
    empty = tmp_path / "Empty_TRAIN.ts"
    empty.write_text("@classLabel true 1 2\n@data\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no cases after @data"):
        read_ts(empty)


def test_too_few_examples_to_split_is_an_error():
    with pytest.raises(ValueError, match="the train split is empty: 1 examples are too few"):
        deal(1, {"train": 0.8, "validation": 0.2}, seed=0)
