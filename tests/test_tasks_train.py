"""Every research task trains end to end with every cell, on a tiny slice of its data."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from rnnlab.datasets import DataNotPreparedError
from rnnlab.tasks import get_task
from rnnlab.tasks.forecasting import ForecastingTask, split_bounds
from rnnlab.train import run

CELLS = ["simple_rnn", "lstm", "gru"]
TASKS = ["forecasting", "series_classification", "translation", "captioning"]
TINY_MODEL = ["cell.units=8", "trainer.epochs=1"]


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
    metrics = run(cfg)
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
    metrics = run(compose("task=series_classification", f"cell={cell}", *TINY_MODEL))
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_translation_logs_bleu_and_decoded_samples(compose, tracking_uri, cell):
    cfg = compose(
        "task=translation", f"cell={cell}", "task.samples=5", "task.target_length=10", *TINY_MODEL
    )
    metrics = run(cfg)
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


def test_translation_reads_a_tfds_catalog_set_by_config(compose):
    import tensorflow_datasets as tfds

    cfg = compose("task=translation", "task.source=tfds:ted_hrlr_translate/pt_to_en", *TINY_MODEL)
    with tfds.testing.mock_data(num_examples=64):
        metrics = run(cfg)
    assert 0.0 <= metrics["test_bleu"] <= 100.0


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_captioning_logs_bleu_and_sample_captions(compose, tracking_uri, cell):
    metrics = run(compose("task=captioning", f"cell={cell}", "task.samples=5", *TINY_MODEL))
    recorded = last_run(tracking_uri)
    assert 0.0 <= metrics["test_bleu"] <= 100.0
    assert 0.0 <= metrics["test_token_accuracy"] <= 1.0
    samples = mlflow.artifacts.load_text(f"runs:/{recorded.info.run_id}/test_captions.txt")
    assert samples.count("reference: ") == 5


def test_sentiment_reads_imdb_reviews_from_the_tfds_catalog_by_config(compose):
    import tensorflow_datasets as tfds

    cfg = compose("task.source=tfds:imdb_reviews", *TINY_MODEL)
    with tfds.testing.mock_data(num_examples=64):
        metrics = run(cfg)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    # mock_data makes 64 examples for any split string, the sliced train[:90%] included.
    assert metrics["samples_per_second"] == pytest.approx(64 / metrics["epoch_seconds"])
