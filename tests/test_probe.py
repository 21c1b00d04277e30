"""The gradient probe measures real physics: checked against finite differences and cells."""

from __future__ import annotations

import json
import logging

import keras
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from rnnlab.config import ConfigError, compose_config
from rnnlab.records import names
from rnnlab.records.decay import probes_to_draw
from rnnlab.records.runs import decay_curves
from rnnlab.recurrence.layer import ProbedRNN
from rnnlab.tasks import get_task
from rnnlab.training.probe import GradientProbe, decay_statistics
from rnnlab.training.run import build_compiled_model, gradient_probe, run, seed_everything


@pytest.fixture
def float64():
    """Layers built inside the test compute in float64; the rest of the session in float32."""
    for dtype in ("float64", "float32"):
        keras.config.set_floatx(dtype)
        keras.config.set_dtype_policy(dtype)
        if dtype == "float64":
            yield


def tiny_model(cell: keras.Layer, steps: int, features: int) -> keras.Model:
    inputs = keras.Input((steps, features))
    outputs = keras.layers.Dense(1)(ProbedRNN(cell, name="recurrent_0")(inputs))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("cell_class", [keras.layers.SimpleRNNCell, keras.layers.LSTMCell])
def test_probe_matches_finite_differences(float64, cell_class):
    """g_t from the probe equals the norm of a central-difference gradient, in float64."""
    keras.utils.set_random_seed(3)
    batch, steps, features, units, chosen_t = 2, 6, 3, 4, 2
    model = tiny_model(cell_class(units), steps, features)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(batch, steps, features))
    targets = rng.normal(size=(batch, 1))
    probe = GradientProbe(model, "mse")
    measured = probe.measure(inputs, targets).step_norms["recurrent_0"]["h"][chosen_t]

    state_count = 2 if cell_class is keras.layers.LSTMCell else 1
    delta = 1e-6
    gradient = np.zeros((batch, units))
    for b in range(batch):
        for j in range(units):
            losses = []
            for sign in (1, -1):
                offsets = [np.zeros((batch, steps, units)) for _ in range(state_count)]
                offsets[0][b, chosen_t, j] = sign * delta
                losses.append(probe.loss_with_offsets(inputs, targets, {"recurrent_0": offsets}))
            gradient[b, j] = (losses[0] - losses[1]) / (2 * delta)
    assert measured == pytest.approx(np.linalg.norm(gradient), rel=1e-3)
    assert measured > 0


def test_decay_statistics_on_hand_made_curves():
    assert decay_statistics(np.array([1e-3, 1e-2, 0.1, 1.0])) == {
        "log10_ratio": pytest.approx(-3.0),
        "half_life": 1.0,
    }
    # A gradient that never halves on its way back has a half-life of the whole sequence.
    assert decay_statistics(np.ones(4)) == {"log10_ratio": 0.0, "half_life": 4.0}
    # Masked padding after the last real step gets no gradient and does not count as T.
    assert decay_statistics(np.array([0.1, 0.3, 1.0, 0.0, 0.0]))["log10_ratio"] == pytest.approx(-1)
    assert decay_statistics(np.array([0.1, 0.3, 1.0, 0.0, 0.0]))["half_life"] == 1.0


def built_model(cfg):
    """The task, its data and the compiled model `run` would train, without training it."""
    seed_everything(cfg.seed, reproducible=False)
    task = get_task(cfg.task, cfg.data_dir)
    data = task.load(batch_size=32, seed=cfg.seed)
    return task, data, build_compiled_model(cfg, task)


def decay_before_and_after_training(cell: str) -> tuple[float, float]:
    cfg = compose_config(
        [
            f"cell={cell}",
            "cell.units=32",
            "task=adding",
            "task.length=100",
            "task.max_examples=2000",
        ]
    )
    task, data, model = built_model(cfg)
    probe = GradientProbe(model, task.loss)
    batch = next(iter(data.validation.unbatch().batch(64)))

    def ratio() -> float:
        return decay_statistics(probe.measure(*batch).step_norms["recurrent_0"]["h"])["log10_ratio"]

    before = ratio()
    model.fit(data.train, epochs=3, verbose=0)
    return before, ratio()


@pytest.mark.slow
def test_adding_problem_shows_gated_cells_learning_to_carry_the_gradient():
    """Adding problem, T=100, seed 0, 3 epochs on 2,000 examples: log10(g_1/g_T) per cell.

    Measured (seeds 0, 1, 2): at initialisation SimpleRNN -5.4/-2.7/-2.9, LSTM -10.1/-8.5/-8.3,
    GRU below -37 (g_1 underflows float32); after training SimpleRNN falls by 2.3-3.2 decades,
    the LSTM rises by 0.8-3.5 and the GRU by more than 20.

    Why. Keras starts the recurrent weights orthogonal, so the tanh SimpleRNN's Jacobian is
    nearly norm-preserving while its units are unsaturated: at first it decays least. The
    gated cells multiply the carried gradient by their gates each step: the GRU's update gate
    sits at sigmoid(0) = 0.5 (0.5^100 = 1e-30) and the LSTM's forget gate at sigmoid(1) = 0.73.
    Training then tells them apart: the sum needs values from up to T steps back, the gated
    cells open their carry gates and their decay shrinks, while the SimpleRNN saturates and
    contracts and its gradient vanishes further. That is the textbook contrast, seen as a
    trend over training rather than at initialisation (the textbook's SimpleRNN has a random
    Gaussian, not orthogonal, recurrent matrix).
    """
    simple_before, simple_after = decay_before_and_after_training("simple_rnn")
    lstm_before, lstm_after = decay_before_and_after_training("lstm")
    gru_before, gru_after = decay_before_and_after_training("gru")
    assert simple_before > lstm_before + 2 > gru_before + 2 + 5
    assert simple_after < simple_before - 1.5
    assert lstm_after > lstm_before + 0.3
    assert gru_after > gru_before + 10


@pytest.mark.slow
def test_decay_metrics_curves_and_plots_reach_mlflow(compose, tracking_uri):
    cfg = compose(
        "task=adding",
        "task.length=20",
        "cell=lstm",
        "cell.units=8",
        "model.layers=2",
        "probe.layers=all",
    )
    run_id = run(cfg).run_id
    client = MlflowClient(tracking_uri)
    metrics = client.get_run(run_id).data.metrics
    for name in (
        "grad_decay_log10_ratio",
        "grad_decay_half_life",
        "grad_decay_log10_ratio_c",
        "recurrent_0.grad_decay_log10_ratio",
        "recurrent_1.grad_decay_log10_ratio",
        "grad_norm.global",
        "grad_norm.recurrent_0",
    ):
        history = client.get_metric_history(run_id, name)
        assert [point.step for point in history] == [0, 1], name
        assert f"{name}_at_init" in metrics, name  # the probe before the first epoch
    assert metrics["grad_decay_log10_ratio"] == metrics["recurrent_1.grad_decay_log10_ratio"]

    artifacts = {item.path for item in client.list_artifacts(run_id, names.DECAY_FOLDER)}
    # The stored paths are spelled out: runs written before today are read by them.
    assert artifacts == {
        "gradient_decay/all_epochs.png",
        *(
            f"gradient_decay/epoch_00{epoch}.{kind}"
            for epoch in (0, 1, 2)
            for kind in ("json", "png")
        ),
    }
    curve_file = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="gradient_decay/epoch_002.json", tracking_uri=tracking_uri
    )
    with open(curve_file) as curves:
        stored = json.load(curves)
    assert set(stored) == {"epoch", "loss", "norms"} and stored["epoch"] == 2
    norms = stored["norms"]
    assert set(norms) == {"recurrent_0", "recurrent_1"}
    assert len(norms["recurrent_1"]["h"]) == 20
    last = decay_statistics(np.array(norms["recurrent_1"]["h"]))["log10_ratio"]
    assert last == pytest.approx(metrics["grad_decay_log10_ratio"])
    # The report reads the curves back through records.runs: the last probe's headline
    # curve, and the probe at initialisation.
    assert decay_curves(client, run_id).headline() == norms["recurrent_1"]["h"]
    untrained = decay_curves(client, run_id, at_init=True)
    assert untrained.epoch == 0
    first = decay_statistics(np.array(untrained.norms["recurrent_1"]["h"]))["log10_ratio"]
    assert first == pytest.approx(metrics["grad_decay_log10_ratio_at_init"])
    assert first != pytest.approx(last)  # two epochs of training moved it


def test_without_plots_the_curves_still_reach_mlflow(compose, tracking_uri):
    """Sweep trials skip the PNGs: a second a run, while the JSON curves hold the same data."""
    run_id = run(
        compose("task=adding", "task.length=10", "cell.units=4", "probe.plots=false")
    ).run_id
    client = MlflowClient(tracking_uri)
    artifacts = {item.path for item in client.list_artifacts(run_id, names.DECAY_FOLDER)}
    assert artifacts == {f"gradient_decay/epoch_00{epoch}.json" for epoch in (0, 1, 2)}


def test_unknown_probe_layer_names_the_recurrent_layers(compose):
    with pytest.raises(ConfigError, match="no recurrent layer nope; the model has: recurrent_0"):
        run(compose("task=adding", "task.length=10", "probe.layers=[nope]"))


def test_a_model_without_recurrent_layers_skips_the_probe(compose, caplog):
    cfg = compose("task=adding", "task.length=10")
    model = keras.Sequential([keras.Input((10, 2)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with caplog.at_level(logging.WARNING, logger="rnnlab"):
        assert gradient_probe(cfg, model, task=None, data=None) == []
    assert "no recurrent layer to probe" in caplog.text


@pytest.mark.parametrize(
    ("clipnorm", "advice"),
    [
        ("null", "consider trainer.clipnorm"),
        ("0.5", "the updates are clipped to norm 0.5 (trainer.clipnorm)"),
    ],
)
def test_exploding_gradients_are_flagged(compose, tracking_uri, caplog, clipnorm, advice):
    """The advice fits the run: clipping is suggested only to a run that does not clip."""
    cfg = compose(
        "task=adding",
        "task.length=10",
        "cell.units=4",
        "probe.explode_norm=1e-12",
        f"trainer.clipnorm={clipnorm}",
    )
    with caplog.at_level(logging.WARNING, logger="rnnlab"):
        result = run(cfg)
    assert f"passed probe.explode_norm=1e-12: {advice}" in caplog.text
    tags = MlflowClient(tracking_uri).get_run(result.run_id).data.tags
    assert tags[names.GRADIENTS_EXPLODED].endswith(advice)


def test_bidirectional_probe_reads_the_backward_layer_in_its_own_order(compose):
    cfg = compose(
        "task=adding",
        "task.length=12",
        "cell=gru",
        "cell.units=4",
        "model.bidirectional=true",
        "probe.layers=all",
    )
    task, data, model = built_model(cfg)
    probe = GradientProbe(model, task.loss, "all")
    result = probe.measure(*next(iter(data.validation.unbatch().batch(16))))
    by_direction = {
        layer.go_backwards: result.step_norms[layer.name]["h"] for layer in probe.layers
    }
    forward, backward = by_direction[False], by_direction[True]
    # Each direction's last read step feeds the head directly: it has the largest gradient.
    assert forward.argmax() == 11 and backward.argmax() == 11


def test_the_all_probes_plot_of_a_long_run_draws_a_few_probes_spread_from_first_to_last():
    probed = list(range(41))  # at initialisation and after each of 40 epochs
    drawn = probes_to_draw(probed, at_most=8)
    assert len(drawn) == 8 and drawn[0] == 0 and drawn[-1] == 40
    gaps = np.diff(drawn)
    assert gaps.min() > 0 and gaps.max() - gaps.min() <= 1  # evenly spread
    assert probes_to_draw([0, 1, 2], at_most=8) == [0, 1, 2]  # a short run draws every probe
