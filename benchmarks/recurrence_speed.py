"""Recurrent training speed side by side: rnnlab's fused cells, bare Keras and PyTorch.

For each cell (SimpleRNN, LSTM, GRU) and each shape (batch, steps, inputs, units): the
issue's reference shape 64 × 100 × 32 → 128, then the recurrent layer of every task's
default config. Each contender trains `inputs → recurrent layer → Dense(1)` on the same
random regression data with Adam and a mean squared error:
- bare Keras: `keras.layers.LSTM` etc., the textbook layer;
- rnnlab: the layer rnnlab's `recurrent_stack` builds from the composed config;
- rnnlab graph loop: the same with the native ops off, what a machine gets where they did
  not build;
- PyTorch (when `torch` imports; `pip install -e ".[bench]"`): `nn.RNN`/`nn.LSTM`/`nn.GRU`.
Epoch times on these machines flip between a fast and a slow mode about 2× apart, so the
contenders are interleaved epoch by epoch (A, B, C, A, B, C, ...) after a warm-up round,
with a matmul-peak probe in every round; ratios are taken between medians of one run.

FLOPs of useful work per sample: forward 2·g·(inputs + units)·units per step (g = 1, 4, 3
for SimpleRNN, LSTM, GRU), times 3 for forward and backward. The peak is `cores`
independent fp32 2048² matmuls at once (rnnlab's threads: one per op, one op per core).

    make bench   # or: .venv/bin/python benchmarks/recurrence_speed.py --epochs 10 --tasks none
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rnnlab.threads import available_cores, configure_threads  # noqa: E402

configure_threads()  # as `rnnlab train` does, before TensorFlow starts: both Keras sides share it

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from rnnlab import fused_rnn  # noqa: E402
from rnnlab.config import compose_config  # noqa: E402
from rnnlab.models import recurrent_stack  # noqa: E402
from rnnlab.native import describe, native_status  # noqa: E402
from rnnlab.native.build import this_cpu  # noqa: E402
from rnnlab.probe import recurrent_layers  # noqa: E402
from rnnlab.tasks import get_task  # noqa: E402
from rnnlab.train import build_compiled_model  # noqa: E402

try:
    import torch
except ImportError:  # the optional `bench` extra
    torch = None

GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
BARE_KERAS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}
REFERENCE_SHAPE = (64, 100, 32, 128)  # batch, steps, inputs, units
BATCHES_PER_EPOCH = 20
PEAK_SIDE = 2048


def flops_per_sample(cell: str, steps: int, inputs: int, units: int) -> float:
    return 3 * steps * 2 * GATES[cell] * (inputs + units) * units


def task_shape(task_name: str) -> tuple[int, int, int, int]:
    """(batch, steps, inputs, units) of the first recurrent layer in the task's default model."""
    cfg = compose_config([f"task={task_name}", "trainer.verbose=0"])
    task = get_task(cfg.task, cfg.data_dir)
    data = task.load(batch_size=cfg.trainer.batch_size, seed=cfg.seed)
    model = build_compiled_model(cfg, task)
    layer_input = recurrent_layers(model)[0].input
    _, steps, inputs = (layer_input[0] if isinstance(layer_input, list) else layer_input).shape
    if steps is None:  # series of any length: take the first training batch's
        batch_inputs = next(iter(data.train))[0]
        steps = tf.nest.flatten(batch_inputs)[0].shape[1]
    keras.backend.clear_session()
    return cfg.trainer.batch_size, steps, inputs, cfg.cell.units


@contextlib.contextmanager
def native_ops_off():
    """While a model is traced, the fused recurrence runs in TensorFlow's graph loop."""
    original = fused_rnn.recurrence_ops
    fused_rnn.recurrence_ops = lambda: None
    try:
        yield
    finally:
        fused_rnn.recurrence_ops = original


class KerasContender:
    """One epoch of `fit` over cached batches, timed from the first to the last batch."""

    def __init__(self, recurrent, data: tf.data.Dataset, shape, native: bool = True) -> None:
        """`recurrent(sequence)` applies the recurrent layer(s) under test."""
        _, steps, inputs, _ = shape
        sequence = keras.Input((steps, inputs))
        self.model = keras.Model(sequence, layers.Dense(1)(recurrent(sequence)))
        self.model.compile(optimizer="adam", loss="mse")
        self.data = data
        self.native = native

    def epoch(self) -> float:
        clock = []
        timer = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda *_: clock.append(time.perf_counter()),
            on_epoch_end=lambda *_: clock.append(time.perf_counter()),
        )
        # The first epoch traces the training step: the route is fixed then.
        with contextlib.nullcontext() if self.native else native_ops_off():
            self.model.fit(self.data, epochs=1, verbose=0, callbacks=[timer])
        return clock[1] - clock[0]


class TorchContender:
    """The same model, data, optimizer and batch in PyTorch, with its default threads."""

    MODULES = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}

    def __init__(self, cell: str, inputs_array, targets_array, shape) -> None:
        batch, _, inputs, units = shape
        recurrent = getattr(torch.nn, self.MODULES[cell])(inputs, units, batch_first=True)
        self.recurrent, self.head = recurrent, torch.nn.Linear(units, 1)
        parameters = [*recurrent.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.Adam(parameters, lr=1e-3)
        self.batches = list(
            zip(
                torch.from_numpy(inputs_array).split(batch),
                torch.from_numpy(targets_array).split(batch),
            )
        )

    def epoch(self) -> float:
        started = time.perf_counter()
        for inputs, targets in self.batches:
            self.optimizer.zero_grad()
            outputs, _ = self.recurrent(inputs)
            loss = torch.nn.functional.mse_loss(self.head(outputs[:, -1]), targets)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - started


class MatmulPeak:
    """`cores` independent fp32 matmuls at once: what the machine's cores can multiply."""

    def __init__(self) -> None:
        self.matrices = [tf.random.normal((PEAK_SIDE, PEAK_SIDE)) for _ in range(available_cores())]
        self.product = tf.function(lambda ms: [tf.reduce_sum(tf.matmul(m, m)) for m in ms])
        self.product(self.matrices)

    def gflops(self) -> float:
        repeats = 5
        started = time.perf_counter()
        for _ in range(repeats):
            [float(total) for total in self.product(self.matrices)]
        seconds = (time.perf_counter() - started) / repeats
        return len(self.matrices) * 2 * PEAK_SIDE**3 / seconds / 1e9


def contenders(cell: str, shape) -> dict[str, object]:
    batch, steps, inputs, units = shape
    rng = np.random.default_rng(0)
    count = batch * BATCHES_PER_EPOCH
    inputs_array = rng.normal(size=(count, steps, inputs)).astype("float32")
    targets_array = rng.normal(size=(count, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((inputs_array, targets_array)).batch(batch).cache()
    cfg = compose_config([f"cell={cell}", f"cell.units={units}"])
    found = {
        "rnnlab": KerasContender(recurrent_stack(cfg.cell, cfg.model), data, shape),
        "rnnlab graph loop": KerasContender(
            recurrent_stack(cfg.cell, cfg.model), data, shape, native=False
        ),
        "bare Keras": KerasContender(BARE_KERAS[cell](units), data, shape),
    }
    if torch is not None:
        found["PyTorch"] = TorchContender(cell, inputs_array, targets_array, shape)
    return found


def compare(cell: str, shape, epochs: int, peak: MatmulPeak) -> dict[str, list[float]]:
    """Epoch seconds per contender, and the peak GFLOP/s, from interleaved rounds."""
    racing = contenders(cell, shape)
    times: dict[str, list[float]] = {name: [] for name in [*racing, "peak"]}
    for round_index in range(epochs + 1):  # round 0 warms every contender up
        for name, contender in racing.items():
            seconds = contender.epoch()
            if round_index:
                times[name].append(seconds)
        if round_index:
            times["peak"].append(peak.gflops())
    return times


def report_row(label: str, cell: str, shape, times: dict[str, list[float]]) -> str:
    batch = shape[0]
    samples = batch * BATCHES_PER_EPOCH
    median = {name: statistics.median(values) for name, values in times.items()}
    speed = {name: samples / median[name] for name in times if name != "peak"}
    gflops = speed["rnnlab"] * flops_per_sample(cell, *shape[1:]) / 1e9
    cells = [
        label,
        cell,
        *(
            f"{speed[name]:,.0f} ({samples / min(times[name]):,.0f})" if name in speed else "—"
            for name in ("rnnlab", "rnnlab graph loop", "bare Keras", "PyTorch")
        ),
        f"{speed['rnnlab'] / speed['bare Keras']:.2f}",
        f"{speed['rnnlab'] / speed['PyTorch']:.2f}" if "PyTorch" in speed else "—",
        f"{speed['rnnlab graph loop'] / speed['bare Keras']:.2f}",
        f"{gflops:.0f} / {median['peak']:.0f} = {gflops / median['peak']:.0%}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per contender")
    parser.add_argument("--cells", nargs="+", default=list(GATES))
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["sentiment", "forecasting", "series_classification", "adding", "copy_memory"],
        help="tasks whose default shapes to add, or 'none'",
    )
    options = parser.parse_args()
    shapes = [("reference", REFERENCE_SHAPE)]
    shapes += [(task, task_shape(task)) for task in options.tasks if task != "none"]
    peak = MatmulPeak()
    print(
        f"CPU: {this_cpu().model}; rnnlab {describe(native_status())}\n"
        f"{options.epochs} timed epochs of {BATCHES_PER_EPOCH} batches per contender after a "
        f"warm-up, interleaved; samples/s as median (fastest); TensorFlow threads: "
        f"{tf.config.threading.get_intra_op_parallelism_threads()} per op, "
        f"{tf.config.threading.get_inter_op_parallelism_threads()} ops at once; PyTorch: "
        f"{torch.get_num_threads() if torch else '—'} threads\n\n"
        "| shape | cell | rnnlab samples/s | rnnlab graph loop | bare Keras | PyTorch "
        "| rnnlab / Keras | rnnlab / PyTorch | graph loop / Keras | rnnlab GFLOP/s / peak |\n"
        "|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    for label, shape in shapes:
        name = f"{label} {'×'.join(map(str, shape[:3]))}→{shape[3]}"
        for cell in options.cells:
            times = compare(cell, shape, options.epochs, peak)
            print(report_row(name, cell, shape, times), flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
