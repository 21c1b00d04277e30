"""What a translation training step costs with and without three of its parts: weight
averaging (`trainer.ema_momentum`), the loss read from the softmax's scores
(`seq2seq.losses.masked_crossentropy`) rather than Keras's sparse cross-entropy, and the output
layer tied to the decoder's embeddings (`task.tied_embeddings`).

The optimizer's moving average is one more read and write of every weight per step; the
loss is a few passes over the [batch × steps × 4,000 words] scores; the tied output
multiplies 128-wide projections by the embeddings where an untied one multiplies the
256-wide attentional states by a matrix of its own. This times training
on the same batches for each contender, interleaved round by round after a warm-up
(epoch times on these machines flip between modes 2x apart); ratios are between medians
of this one run. Validation is left out: it costs the same either way.

    .venv/bin/python benchmarks/translation_step_cost.py --rounds 10 --batches 40
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rnnlab.threads import configure_threads  # noqa: E402

configure_threads()  # the threads `rnnlab train` sets, before TensorFlow starts

from throughput import EpochClock  # noqa: E402

from rnnlab.config import compose_config  # noqa: E402
from rnnlab.tasks import get_task  # noqa: E402
from rnnlab.training.run import build_compiled_model, seed_everything  # noqa: E402


def cpu_name() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def keras_crossentropy(y_true, y_pred):
    """The masked loss as runs before 2026-12-03 computed it: Keras's sparse cross-entropy
    (which finds the scores under a softmax too), then averaged over real tokens."""
    losses = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    real = keras.ops.cast(y_true != 0, losses.dtype)
    return keras.ops.sum(losses * real) / keras.ops.maximum(keras.ops.sum(real), 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per contender")
    parser.add_argument("--batches", type=int, default=40, help="training batches per round")
    args = parser.parse_args()

    base = compose_config(["task=translation", f"cell={args.cell}"])  # averaged weights
    seed_everything(base.seed, reproducible=False)
    task = get_task(base.task, base.data_dir)
    data = task.load(batch_size=base.trainer.batch_size, seed=base.seed)
    batches = data.train.take(args.batches).cache()
    raw = compose_config(["task=translation", f"cell={args.cell}", "trainer.ema_momentum=null"])
    untied = compose_config(["task=translation", f"cell={args.cell}", "task.tied_embeddings=false"])
    # The output layer is the task's choice: the untied model needs a task of its own.
    untied_task = get_task(untied.task, untied.data_dir)
    untied_task.load(batch_size=untied.trainer.batch_size, seed=untied.seed)
    keras_loss = build_compiled_model(base, task)
    keras_loss.compile(
        optimizer=keras_loss.optimizer, loss=keras_crossentropy, metrics=list(task.metrics)
    )
    contenders = {
        "defaults": build_compiled_model(base, task),
        "raw": build_compiled_model(raw, task),
        "keras_loss": keras_loss,
        "untied": build_compiled_model(untied, untied_task),
    }
    clocks = {name: EpochClock() for name in contenders}
    for round_index in range(args.rounds + 1):  # round 0 warms them all up
        for name, model in contenders.items():
            model.fit(
                batches, epochs=1, verbose=0, shuffle=False, callbacks=clocks[name].around([])
            )
            if round_index == 0:
                clocks[name].seconds.clear()
    medians = {name: statistics.median(clock.seconds) for name, clock in clocks.items()}
    print(
        f"{cpu_name()}, translation × {args.cell}, {args.batches} batches a round, "
        f"{args.rounds} rounds each, interleaved"
    )
    for name, clock in clocks.items():
        print(f"  {name:9s} median {medians[name]:.2f} s  fastest {min(clock.seconds):.2f} s")
    for name, against in (("defaults", "raw"), ("keras_loss", "defaults"), ("defaults", "untied")):
        ratio = medians[name] / medians[against]
        print(f"  {name} / {against}: {ratio:.3f} of the time a round")


if __name__ == "__main__":
    main()
