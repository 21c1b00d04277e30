"""Every research task trains end to end with every cell, on a tiny slice of its data."""

from __future__ import annotations

import collections

import mlflow
import numpy as np
import pytest
import sacrebleu
import tensorflow_datasets as tfds
from mlflow import MlflowClient

from rnnlab.tasks import get_task
from rnnlab.tasks.datasets import DataNotPreparedError
from rnnlab.tasks.forecasting import ForecastingTask, split_bounds
from rnnlab.tasks.seq2seq import tokenizing
from rnnlab.training.run import run

CELLS = ["simple_rnn", "lstm", "gru"]
TASKS = ["forecasting", "series_classification", "translation", "captioning"]
TINY_MODEL = ["cell.units=8", "trainer.epochs=1"]


def bleu(hypotheses, references, standardize=tokenizing.standardize) -> float:
    """sacrebleu's corpus BLEU on the tasks' tokens (lower case, punctuation split off;
    translation reads letters beyond ASCII as letters)."""
    return sacrebleu.corpus_bleu(
        tokenizing.standardized_texts(list(hypotheses), standardize),
        [tokenizing.standardized_texts(list(references), standardize)],
    ).score


def best_fixed_answer_bleu(train_texts, test_texts, standardize=tokenizing.standardize) -> float:
    """The test BLEU of the one text, of the training split's 50 most frequent, that scores
    best when answered to every training example."""
    train = tokenizing.standardized_texts(list(train_texts), standardize)
    frequent = [text for text, _ in collections.Counter(train).most_common(50)]
    best = max(frequent, key=lambda text: bleu([text] * len(train), train, standardize))
    return bleu([best] * len(test_texts), test_texts, standardize)


def last_run(tracking_uri):
    return MlflowClient(tracking_uri).get_run(mlflow.last_active_run().info.run_id)


@pytest.mark.parametrize("task", TASKS)
def test_missing_data_says_to_run_make_install(compose, tmp_path, task):
    cfg = compose(f"task={task}")
    with pytest.raises(DataNotPreparedError, match="run `make install`"):
        get_task(cfg.task, str(tmp_path)).load(batch_size=32, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_forecasting_logs_the_model_beside_the_naive_forecasts(compose, tracking_uri, cell):
    cfg = compose("task=forecasting", "task.series=elec_equip", f"cell={cell}", *TINY_MODEL)
    metrics = run(cfg).metrics
    recorded = last_run(tracking_uri).data.metrics

    task = ForecastingTask(cfg.task, cfg.data_dir)
    values = task.series()
    steps = np.arange(*split_bounds(257)["test"])  # 40 months, all later than the 24-month window
    assert metrics["test_naive_mae"] == pytest.approx(
        np.abs(values[steps] - values[steps - 1]).mean()
    )
    assert metrics["test_seasonal_naive_mae"] == pytest.approx(
        np.abs(values[steps] - values[steps - 12]).mean()
    )
    for name in ("test_mae", "test_rmse", "test_naive_mae", "test_seasonal_naive_rmse"):
        assert recorded[name] == pytest.approx(metrics[name])
    assert metrics["test_rmse"] >= metrics["test_mae"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_series_classification_trains_on_variable_length_series(compose, cell):
    metrics = run(compose("task=series_classification", f"cell={cell}", *TINY_MODEL)).metrics
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


@pytest.mark.slow
def test_translation_logs_bleu_and_decoded_samples(compose, tracking_uri):
    """What a translation run logs does not depend on the cell (one cell here; every cell
    trains with attention and the lexicon bias in test_attention)."""
    cfg = compose(
        "task=translation", "cell=gru", "task.samples=5", "task.target_length=10", *TINY_MODEL
    )
    metrics = run(cfg).metrics
    recorded = last_run(tracking_uri)
    assert 0.0 <= metrics["test_bleu"] <= 100.0
    assert 0.0 <= metrics["test_token_accuracy"] <= 1.0
    assert recorded.data.metrics["test_bleu"] == pytest.approx(metrics["test_bleu"])
    # BLEU is computed on the test split only: validation chose the epoch by token accuracy.
    history = mlflow.MlflowClient(tracking_uri).get_metric_history(
        recorded.info.run_id, "val_token_accuracy"
    )
    scores = [point.value for point in sorted(history, key=lambda point: point.step)]
    assert metrics["best_epoch"] == 1 + scores.index(max(scores)) == metrics["tested_epoch"]
    assert metrics["best_val_token_accuracy"] == max(scores)
    samples = mlflow.artifacts.load_text(f"runs:/{recorded.info.run_id}/test_translations.txt")
    assert samples.count("reference: ") == 5
    # The floors, computed here from the data: the German copied, and one fixed sentence.
    builder = get_task(cfg.task, cfg.data_dir).builder
    train, test = (
        list(tfds.as_numpy(builder.as_dataset(split=name, as_supervised=True).take(256)))
        for name in ("train", "test")
    )
    test_german, test_english = ([text.decode() for text in side] for side in zip(*test))
    copied = bleu(test_german, test_english, tokenizing.standardize_unicode)
    assert metrics["test_copy_bleu"] == pytest.approx(copied)
    assert metrics["test_baseline_bleu"] == pytest.approx(
        best_fixed_answer_bleu(
            [en.decode() for _, en in train], test_english, tokenizing.standardize_unicode
        )
    )


def test_translation_reads_a_tfds_catalog_set_by_config(compose):
    cfg = compose(
        "task=translation",
        "task.source=tfds:ted_hrlr_translate/pt_to_en",
        "task.translate_unknown=false",  # the Ding dictionary translates German only
        "task.lexicon_bias=0",
        "task.dictionary_phrases=0",
        *TINY_MODEL,
    )
    with tfds.testing.mock_data(num_examples=64):
        metrics = run(cfg).metrics
    assert 0.0 <= metrics["test_bleu"] <= 100.0


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_captioning_logs_bleu_and_sample_captions(compose, tracking_uri, cell):
    cfg = compose("task=captioning", f"cell={cell}", "task.samples=5", *TINY_MODEL)
    metrics = run(cfg).metrics
    recorded = last_run(tracking_uri)
    assert 0.0 <= metrics["test_bleu"] <= 100.0
    assert 0.0 <= metrics["test_token_accuracy"] <= 1.0
    samples = mlflow.artifacts.load_text(f"runs:/{recorded.info.run_id}/test_captions.txt")
    assert samples.count("reference: ") == 5
    # The floor, computed here from the data: one fixed caption for every picture.
    builder = get_task(cfg.task, cfg.data_dir).builder
    train, test = (
        [e["metadata_caption"].decode() for e in tfds.as_numpy(builder.as_dataset(split=name))]
        for name in ("train", "test")
    )
    baseline = best_fixed_answer_bleu(train[:256], test[:256])
    assert metrics["test_baseline_bleu"] == pytest.approx(baseline) and baseline > 10


def test_sentiment_reads_imdb_reviews_from_the_tfds_catalog_by_config(compose):
    cfg = compose("task.source=tfds:imdb_reviews", *TINY_MODEL)
    with tfds.testing.mock_data(num_examples=64):
        metrics = run(cfg).metrics
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    # mock_data makes 64 examples for any split string, the sliced train[:90%] included.
    assert metrics["samples_per_second"] == pytest.approx(64 / metrics["epoch_seconds"])
