"""Training throughput of rnnlab against bare Keras on the same data, model and batch.

Epoch times on these machines flip between a fast and a slow mode about 2x apart, so the
contenders are interleaved epoch by epoch (A, B, C, A, B, C, ...) after a warm-up, and
ratios are taken between medians of the same run. rnnlab's side is the model and callbacks
`run` uses (MLflow logging and the gradient probe included); bare Keras is the textbook
Sequential model; the third contender is rnnlab with `probe.enabled=false`. Ratios are
throughputs: above 1 means rnnlab (with its probe) is the faster.

    make bench            # or: .venv/bin/python benchmarks/throughput.py --epochs 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rnnlab.threads import configure_threads  # noqa: E402

configure_threads()  # the threads `rnnlab train` sets, before TensorFlow starts

import keras  # noqa: E402
import mlflow  # noqa: E402
from keras import layers  # noqa: E402

from rnnlab.config import compose_config  # noqa: E402
from rnnlab.tasks import get_task  # noqa: E402
from rnnlab.training.run import build_compiled_model, seed_everything, training_callbacks  # noqa: E402

BARE_LAYERS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def bare_keras_model(cfg, cell: str, vocabulary_size: int) -> keras.Model:
    """What a Keras user writes by hand for the same task and sizes."""
    model = keras.Sequential(
        [
            keras.Input(shape=(cfg.task.sequence_length,), dtype="int64"),
            layers.Embedding(vocabulary_size, cfg.task.embedding_dim, mask_zero=True),
            BARE_LAYERS[cell](cfg.cell.units),
            layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.optimizer.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


class EpochClock:
    """Times epochs from before the first callback's epoch start to after the last's end.

    `fit` set-up and `on_train_end` stay outside the window: they happen once per run, not
    once per epoch, and the end-of-run work (the probe's plots) is timed on its own.
    """

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def around(self, callbacks: list) -> list:
        clock = self

        class Start(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock._started = time.perf_counter()

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                clock.seconds.append(time.perf_counter() - clock._started)

        return [Start(), *callbacks, Stop()]


def train_one_epoch(model: keras.Model, data, callbacks) -> None:
    model.fit(
        data.train,
        validation_data=data.validation,
        epochs=1,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,
    )


def rnnlab_contender(cell: str, tracking_uri: str, *overrides: str):
    """rnnlab's model and the callbacks `run` would give it, on the task's data."""
    cfg = compose_config(
        [f"cell={cell}", f"tracking.uri={tracking_uri}", "trainer.verbose=0", *overrides]
    )
    seed_everything(cfg.seed, reproducible=False)
    task = get_task(cfg.task, cfg.data_dir)
    data = task.load(batch_size=cfg.trainer.batch_size, seed=cfg.seed)
    model = build_compiled_model(cfg, task)
    callbacks, _, _ = training_callbacks(cfg, model, task, data)
    return cfg, task, data, model, callbacks


def compare(cell: str, epochs: int, tracking_uri: str) -> dict[str, dict[str, float]]:
    """Median and fastest epoch of each contender, timed in interleaved rounds."""
    cfg, task, data, ours, our_callbacks = rnnlab_contender(cell, tracking_uri)
    *_, unprobed, unprobed_callbacks = rnnlab_contender(cell, tracking_uri, "probe.enabled=false")
    contenders = {
        "rnnlab": (ours, our_callbacks),
        "bare": (bare_keras_model(cfg, cell, task.vectorizer.vocabulary_size()), []),
        "no_probe": (unprobed, unprobed_callbacks),
    }
    clocks = {name: EpochClock() for name in contenders}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("benchmark")
    with mlflow.start_run(run_name=f"bench-{cell}"):
        for round_index in range(epochs + 1):  # round 0 warms every contender up
            for name, (model, callbacks) in contenders.items():
                train_one_epoch(model, data, clocks[name].around(callbacks))
                if round_index == 0:
                    clocks[name].seconds.clear()
        started = time.perf_counter()
        for callback in our_callbacks:
            callback.on_train_end()  # the probe's plots, drawn once per run
        end_of_run = time.perf_counter() - started
    results = {
        name: {
            "median": statistics.median(clock.seconds),
            "fastest": min(clock.seconds),
            "samples_per_second": data.train_size / statistics.median(clock.seconds),
        }
        for name, clock in clocks.items()
    }
    results["end_of_run"] = {"seconds": end_of_run}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=20, help="timed epochs per contender (10 proved too few)"
    )
    parser.add_argument("--cells", nargs="+", default=["simple_rnn", "lstm", "gru"])
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        uri = f"sqlite:///{store}/mlflow.db"
        print(
            f"sentiment task, batch 64, {arguments.epochs} timed epochs each after a warm-up, "
            "interleaved rnnlab / bare Keras / rnnlab without the gradient probe\n\n"
            "| cell | rnnlab median (fastest) s | bare median (fastest) s "
            "| no-probe median (fastest) s | rnnlab samples/s | rnnlab / bare "
            "| probe on / off | plots at the end of a run s |\n|---|---|---|---|---|---|---|---|"
        )
        for cell in arguments.cells:
            r = compare(cell, arguments.epochs, uri)
            cells = " | ".join(
                f"{r[name]['median']:.2f} ({r[name]['fastest']:.2f})"
                for name in ("rnnlab", "bare", "no_probe")
            )
            print(
                f"| {cell} | {cells} | {r['rnnlab']['samples_per_second']:,.0f} "
                f"| {r['bare']['median'] / r['rnnlab']['median']:.3f} "
                f"| {r['no_probe']['median'] / r['rnnlab']['median']:.3f} "
                f"| {r['end_of_run']['seconds']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
