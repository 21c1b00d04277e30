"""Training throughput of rnnlab against bare Keras on the same data, model and batch.

Epoch times on these machines flip between a fast and a slow mode about 2x apart, so the
two are interleaved epoch by epoch (A, B, A, B, ...) after a warm-up, and the ratio is
taken between medians of the same run. rnnlab's side is the model and callbacks `run`
uses (MLflow logging included); bare Keras is the textbook Sequential model.

    make bench            # or: .venv/bin/python benchmarks/throughput.py --epochs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import mlflow  # noqa: E402
from keras import layers  # noqa: E402

from rnnlab.config import compose_config  # noqa: E402
from rnnlab.tasks import get_task  # noqa: E402
from rnnlab.train import build_compiled_model, seed_everything, training_callbacks  # noqa: E402

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


def time_epoch(model: keras.Model, data, callbacks) -> float:
    started = time.perf_counter()
    model.fit(
        data.train,
        validation_data=data.validation,
        epochs=1,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,
    )
    return time.perf_counter() - started


def compare(cell: str, epochs: int, tracking_uri: str) -> dict[str, float]:
    cfg = compose_config([f"cell={cell}", f"tracking.uri={tracking_uri}", "trainer.verbose=0"])
    seed_everything(cfg.seed, reproducible=False)
    task = get_task(cfg.task, cfg.data_dir)
    data = task.load(batch_size=cfg.trainer.batch_size, seed=cfg.seed)
    ours = build_compiled_model(cfg, task)
    bare = bare_keras_model(cfg, cell, task.vectorizer.vocabulary_size())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("benchmark")
    times: dict[str, list[float]] = {"rnnlab": [], "bare": []}
    with mlflow.start_run(run_name=f"bench-{cell}"):
        our_callbacks, _ = training_callbacks(cfg, ours, task, data)
        for round_index in range(epochs + 1):  # round 0 warms up both
            for name, model, callbacks in (("rnnlab", ours, our_callbacks), ("bare", bare, [])):
                seconds = time_epoch(model, data, callbacks)
                if round_index > 0:
                    times[name].append(seconds)
    result = {"train_size": data.train_size}
    for name, seconds in times.items():
        result[f"{name}_median"] = statistics.median(seconds)
        result[f"{name}_fastest"] = min(seconds)
    result["ratio"] = result["bare_median"] / result["rnnlab_median"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per side")
    parser.add_argument("--cells", nargs="+", default=["simple_rnn", "lstm", "gru"])
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        uri = f"sqlite:///{store}/mlflow.db"
        print(
            f"sentiment task, batch 64, {arguments.epochs} timed epochs each, interleaved\n\n"
            "| cell | rnnlab median s | rnnlab fastest s | bare median s | bare fastest s "
            "| rnnlab samples/s | ratio rnnlab/bare |\n|---|---|---|---|---|---|---|"
        )
        for cell in arguments.cells:
            r = compare(cell, arguments.epochs, uri)
            print(
                f"| {cell} | {r['rnnlab_median']:.2f} | {r['rnnlab_fastest']:.2f} "
                f"| {r['bare_median']:.2f} | {r['bare_fastest']:.2f} "
                f"| {r['train_size'] / r['rnnlab_median']:,.0f} | {r['ratio']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
