"""End-to-end runs on a slice of the real data, checked through what MLflow recorded."""

from __future__ import annotations

import gc
import math

import keras
import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from omegaconf import OmegaConf

from rnnlab import tasks
from rnnlab.config import ConfigError
from rnnlab.records import names
from rnnlab.recurrence.native import recurrence_ops
from rnnlab.recurrence.native.build import this_cpu
from rnnlab.tasks import load_task
from rnnlab.tasks.sentiment import SentimentTask
from rnnlab.threads import parallel_shards
from rnnlab.training.callbacks import (
    AveragedWeights,
    AveragesOutlastStopping,
    NonFiniteLossError,
    StopOnNonFiniteLoss,
)
from rnnlab.training.run import build_compiled_model, run, training_callbacks

EPOCH_METRICS = {"loss", "accuracy", "val_loss", "val_accuracy"}


def recorded_run(tracking_uri, result):
    """What MLflow holds of the run `run()` returned."""
    return MlflowClient(tracking_uri).get_run(result.run_id)


def newest_run(tracking_uri):
    """The run that `run()` left when it raised: with no result to name it, the newest in
    the store."""
    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    [newest] = client.search_runs(
        experiments, order_by=["attributes.start_time DESC"], max_results=1
    )
    return newest


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_each_cell_trains_and_mlflow_holds_the_run(compose, tracking_uri, cell):
    cfg = compose(f"cell={cell}", "trainer.early_stopping_patience=null")
    result = run(cfg)
    metrics = result.metrics
    recorded = recorded_run(tracking_uri, result)
    client = MlflowClient(tracking_uri)

    assert recorded.info.status == "FINISHED"
    assert recorded.info.experiment_id == client.get_experiment_by_name("sentiment").experiment_id
    assert recorded.data.params["cell._target_"] == cfg.cell._target_
    assert recorded.data.params["trainer.epochs"] == "2"
    for name in EPOCH_METRICS:
        history = client.get_metric_history(recorded.info.run_id, name)
        assert [point.step for point in history] == [0, 1], name
    for name in ("test_loss", "test_accuracy", "epoch_seconds", "samples_per_second"):
        assert recorded.data.metrics[name] == pytest.approx(metrics[name])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["samples_per_second"] == pytest.approx(256 / metrics["epoch_seconds"])

    tags = recorded.data.tags
    assert len(tags[names.GIT_COMMIT]) in (40, len("unknown"))
    assert tags[names.TENSORFLOW_VERSION] and tags[names.KERAS_VERSION] == keras.__version__
    assert len(tags[names.DATA_HASH]) == 16
    # The route the recurrence took, so two numbers from two machines can be told apart.
    route = "native" if recurrence_ops() is not None else "graph"
    cell_class = {"simple_rnn": "SimpleRNNCell", "lstm": "LSTMCell", "gru": "GRUCell"}[cell]
    assert tags[names.RECURRENCE] == tags[f"{names.RECURRENCE_PREFIX}{cell_class}"] == route
    assert tags[names.RECURRENCE_SHARDS] == str(parallel_shards(route))
    assert tags[names.CPU] == this_cpu().model

    config_file = mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path=names.CONFIG_FILE, tracking_uri=tracking_uri
    )
    with open(config_file) as logged:
        assert yaml.safe_load(logged) == OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.slow
def test_a_full_lstm_run_learns_sentiment(compose):
    """Not a benchmark: a sanity bound that a broken pipeline (shuffled labels, no mask) misses."""
    metrics = run(compose("task.max_examples=2000", "trainer.epochs=3")).metrics
    assert metrics["test_accuracy"] > 0.62


def test_a_process_that_trains_many_models_keeps_only_the_last_ones_graphs(compose):
    """Sweep workers train hundreds of models: TensorFlow's custom-gradient registry kept
    every traced graph alive until rnnlab cleared it (custom_gradients.forget_custom_gradients)."""
    from tensorflow.python.framework.func_graph import FuncGraph

    cfg = compose(
        "task=adding", "task.length=10", "trainer.epochs=1", "cell=gru", "cell.units=4",
        "probe.enabled=false", "tracking.log_model=false", "tracking.system_metrics=false",
    )  # fmt: skip

    def live_graphs() -> int:
        gc.collect()
        return sum(isinstance(o, FuncGraph) for o in gc.get_objects())

    run(cfg)
    run(cfg)
    after_two = live_graphs()
    for _ in range(3):
        run(cfg)
    assert live_graphs() <= after_two


def test_mixed_bfloat16_trains_and_the_next_run_is_float32_again(compose, tracking_uri):
    """bfloat16 maths through the fused cells, the probe and the head; the policy is per run."""
    cfg = compose("cell=gru", "trainer.epochs=1", "trainer.precision=mixed_bfloat16")
    result = run(cfg)
    assert math.isfinite(result.metrics["test_loss"])
    assert math.isfinite(recorded_run(tracking_uri, result).data.metrics["grad_norm.global"])
    run(compose("cell=gru", "trainer.epochs=1"))
    assert keras.mixed_precision.global_policy().name == "float32"


def test_same_seed_same_result_whether_the_data_is_loaded_afresh_or_reused(compose, monkeypatch):
    """A sweep's trials reuse the loaded data; each must still train as a new process would."""
    cfg = compose("cell.units=4", "trainer.epochs=2", "reproducible=true")
    monkeypatch.setattr(tasks, "_LOADED", {})
    fresh = run(cfg).metrics["test_loss"]
    loads = []
    load = SentimentTask.load
    monkeypatch.setattr(
        SentimentTask, "load", lambda task, **kw: loads.append(kw) or load(task, **kw)
    )
    assert run(cfg).metrics["test_loss"] == fresh  # two epochs: both shuffles as a fresh load's
    assert loads == []
    run(compose("cell.units=4", "trainer.epochs=1", "trainer.batch_size=16"))
    assert loads == [{"batch_size": 16, "seed": cfg.seed}]  # other arguments load again


def test_an_error_during_training_marks_the_run_failed(compose, tracking_uri, monkeypatch):
    def broken_fit(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(keras.Model, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="injected failure"):
        run(compose("cell.units=4"))
    recorded = newest_run(tracking_uri)
    assert recorded.info.status == "FAILED"
    assert recorded.data.tags[names.FAILURE] == "RuntimeError: injected failure"


def test_ctrl_c_marks_the_run_killed(compose, tracking_uri, monkeypatch):
    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        run(compose("cell.units=4"))
    assert newest_run(tracking_uri).info.status == "KILLED"


def test_nan_loss_fails_the_run_with_the_reason(compose, tracking_uri, monkeypatch):
    monkeypatch.setattr(
        SentimentTask, "loss", staticmethod(lambda y, p: keras.ops.mean(p) * math.nan)
    )
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 1, batch 1"):
        run(compose("cell.units=4"))
    recorded = newest_run(tracking_uri)
    assert recorded.info.status == "FAILED"
    assert "lower optimizer.learning_rate" in recorded.data.tags[names.FAILURE]


@pytest.mark.parametrize("loss", [math.inf, -math.inf, math.nan])
def test_non_finite_guard_stops_on_any_non_finite_loss(loss):
    guard = StopOnNonFiniteLoss()
    guard.set_model(keras.Sequential([keras.layers.Dense(1)]))
    guard.on_train_batch_end(0, {"loss": 0.5})
    with pytest.raises(NonFiniteLossError):
        guard.on_train_batch_end(1, {"loss": loss})
    assert guard.model.stop_training


def test_a_users_own_cell_plugs_in_by_target(compose, tracking_uri, tmp_path, monkeypatch):
    (tmp_path / "my_cells.py").write_text(
        "import keras\n"
        "class LeakyCell(keras.layers.Layer):\n"
        "    '''h_t = 0.5 h_{t-1} + 0.5 tanh(W x_t): a cell no library ships.'''\n"
        "    def __init__(self, units, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.units = units\n"
        "        self.state_size = units\n"
        "    def build(self, input_shape):\n"
        "        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))\n"
        "    def call(self, inputs, states):\n"
        "        h = 0.5 * states[0] + 0.5 * keras.ops.tanh(inputs @ self.kernel)\n"
        "        return h, [h]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose(
        "cell=simple_rnn",
        "cell._target_=my_cells.LeakyCell",
        "~cell.dropout",
        "~cell.recurrent_dropout",
    )
    recorded = recorded_run(tracking_uri, run(cfg))
    assert recorded.data.params["cell._target_"] == "my_cells.LeakyCell"
    assert recorded.data.tags[names.RECURRENCE] == "keras"
    assert recorded.data.tags[f"{names.RECURRENCE_PREFIX}LeakyCell"] == "keras"
    assert math.isfinite(recorded.data.metrics["grad_decay_log10_ratio"]), "the probe sees it too"


def test_a_target_that_is_not_a_cell_is_a_config_error(compose):
    with pytest.raises(ConfigError, match="is not a Keras RNN cell"):
        run(
            compose(
                "cell=gru",
                "cell._target_=keras.layers.Dense",
                "~cell.dropout",
                "~cell.recurrent_dropout",
            )
        )


@pytest.mark.slow
def test_the_test_split_scores_the_weights_of_the_epoch_validation_chose(compose, tracking_uri):
    # Sentiment judged by its validation loss overfits after an epoch: the best epoch is
    # early, and a run stopped there (bit-exact with reproducible=true) holds its weights.
    overfitting = (
        "cell=gru",
        "cell.units=32",
        "optimizer.learning_rate=0.01",
        "task.metric=loss",
        "task.direction=minimize",
        "trainer.early_stopping_patience=null",
        "reproducible=true",
    )
    result = run(compose(*overfitting, "trainer.epochs=4"))
    longer = result.metrics
    history = MlflowClient(tracking_uri).get_metric_history(result.run_id, "val_loss")
    validation = [point.value for point in sorted(history, key=lambda point: point.step)]
    best_epoch = 1 + validation.index(min(validation))
    assert best_epoch < 4, f"no early peak to test with: {validation}"
    assert longer["best_epoch"] == longer["tested_epoch"] == best_epoch
    assert longer["epochs_trained"] == 4 and longer["best_val_loss"] == min(validation)

    stopped_there = run(compose(*overfitting, f"trainer.epochs={best_epoch}")).metrics
    assert stopped_there["test_loss"] == longer["test_loss"]
    assert stopped_there["test_accuracy"] == longer["test_accuracy"]


@pytest.mark.slow
def test_without_restoring_the_last_epoch_is_tested_and_early_stopping_watches_the_metric(
    compose,
):
    settings = ("cell=gru", "optimizer.learning_rate=0.01", "task.metric=loss")
    last = run(
        compose(
            *settings,
            "task.direction=minimize",
            "trainer.epochs=3",
            "trainer.early_stopping_patience=null",
            "trainer.restore_best_weights=false",
        )
    ).metrics
    assert last["tested_epoch"] == last["epochs_trained"] == 3
    stopped = run(
        compose(
            *settings,
            "task.direction=minimize",
            "trainer.epochs=6",
            "trainer.early_stopping_patience=1",
        )
    ).metrics
    assert stopped["epochs_trained"] == stopped["best_epoch"] + 1 < 6  # patience 1


def test_averaged_weights_are_what_is_validated_and_tested(compose, tracking_uri):
    """A momentum near 0 averages nothing: the raw run's scores. A real one changes them,
    and the run records the momentum it averaged with."""
    settings = ("cell=gru", "trainer.epochs=2", "optimizer.learning_rate=0.01", "reproducible=true")
    raw = run(compose(*settings)).metrics
    nearly_raw = run(compose(*settings, "trainer.ema_momentum=1e-9")).metrics
    assert nearly_raw["test_loss"] == pytest.approx(raw["test_loss"], rel=1e-5)
    averaged = run(compose(*settings, "trainer.ema_momentum=0.9"))
    assert averaged.metrics["test_loss"] != pytest.approx(raw["test_loss"], rel=1e-3)
    assert recorded_run(tracking_uri, averaged).data.params["trainer.ema_momentum"] == "0.9"


def test_the_average_is_swapped_in_before_any_callback_and_kept_after_any_stop(compose):
    """Every callback must see the averaged weights, as validation did, and the average must
    be restored after whichever callback may stop training."""
    cfg = compose("cell=gru", "trainer.ema_momentum=0.99", "trainer.early_stopping_patience=1")
    task, data = load_task(cfg.task, cfg.data_dir, cfg.trainer.batch_size, cfg.seed)
    model = build_compiled_model(cfg, task)
    callbacks, *_ = training_callbacks(cfg, model, task, data)
    kinds = [type(callback) for callback in callbacks]
    assert kinds[0] is AveragedWeights
    assert kinds.index(keras.callbacks.EarlyStopping) < kinds.index(AveragesOutlastStopping)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == 0.99
    plain = compose("cell=gru")
    callbacks, *_ = training_callbacks(plain, build_compiled_model(plain, task), task, data)
    assert not {AveragedWeights, AveragesOutlastStopping} & {type(c) for c in callbacks}


def test_a_dataset_another_run_created_at_the_same_moment_is_linked_not_fatal(
    tracking_uri, monkeypatch
):
    """Two workers logging the same new dataset at once: the store refuses the second
    insert (PostgreSQL's words below); rnnlab tries again and the run gets its inputs.
    Any other refusal still fails the run."""
    from mlflow.exceptions import MlflowException

    from rnnlab.records.tracking import log_datasets
    from rnnlab.tasks.base import DatasetRecord

    real_log_input = mlflow.log_input
    refused = []

    def racing_log_input(dataset, context=None):
        if not refused:
            real_log_input(dataset, context=context)  # the other worker's insert...
            refused.append(dataset.name)
            raise MlflowException(
                "BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates "
                'unique constraint "dataset_pk"'
            )
        real_log_input(dataset, context=context)

    mlflow.set_tracking_uri(tracking_uri)
    monkeypatch.setattr(mlflow, "log_input", racing_log_input)
    with mlflow.start_run() as run:
        log_datasets(DatasetRecord(name="raced", location=None), data_hash="abc")
    logged = MlflowClient(tracking_uri).get_run(run.info.run_id).inputs.dataset_inputs
    assert refused == ["raced [train]"]
    assert sorted(d.dataset.name for d in logged) == [
        f"raced [{s}]" for s in ("test", "train", "validation")
    ]

    def refusing_log_input(dataset, context=None):
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such experiment")

    monkeypatch.setattr(mlflow, "log_input", refusing_log_input)
    with mlflow.start_run(), pytest.raises(MlflowException, match="no such experiment"):
        log_datasets(DatasetRecord(name="raced", location=None), data_hash="abc")
