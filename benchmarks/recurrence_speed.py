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
with a matmul-peak probe in every round; ratios are taken between medians of one run. Every
contender's speed is shown as its median epoch's samples/s, its slowest and fastest epochs',
and its spread: the farthest any epoch's time lies from the median's, as ± a share of it.

FLOPs of useful work per sample: forward 2·g·(inputs + units)·units per step (g = 1, 4, 3
for SimpleRNN, LSTM, GRU), times 3 for forward and backward. The peak is `cores`
independent fp32 2048² matmuls at once (rnnlab's threads: one per op, one op per core).

`--cells modern` races rnnlab's own cells (IndRNN, minGRU, minLSTM, LRU, RG-LRU, HGRN, S6:
rnnlab.recurrence.cells; mLSTM, sLSTM: rnnlab.recurrence.xlstm) against its GRU and LSTM,
all built by `recurrent_stack` from the composed config and all interleaved in one run, at
the reference shape and at T = 1000 (64 × 1000 × 2 → 64; the LRU keeps its config's 64
complex state units). For the cells with a native scan it also times their alternatives:
the TensorFlow scan that runs where the native ops did not build (`rnnlab.recurrence.scan`
traced with them off; the linear cells only, IndRNN has none) and Keras's step loop
(`model.fused=false`); for the mLSTM and the sLSTM (native ops) their step loop.
Their native scan projects the inputs itself, a block of steps at a time in cache, so per
step and sample (fp32, S the state's width: units, or 2·state_units for the LRU) the
forward op reads x (inputs) and writes the state (S), and the backward op reads both and
writes x's gradient (inputs + S + inputs): 4·T·(3·inputs + 2S) bytes. Only the last output
is read (no gradient of every state comes back) and the readout and head are left out, so
it is a floor on the traffic, over the whole training step's time; a small share of the
bandwidth means the ops are bound by their arithmetic (the gates' exponentials), not memory.
The copy bandwidth it is held to is `cores` numpy copies of 64 MB at once (buffers reused,
so no page faults), bytes read plus written, measured in every round like the peak.

    make bench   # or: .venv/bin/python benchmarks/recurrence_speed.py --epochs 10 --tasks none
    .venv/bin/python benchmarks/recurrence_speed.py --cells modern --epochs 10 --tasks none
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rnnlab.threads import available_cores, configure_threads  # noqa: E402

configure_threads()  # as `rnnlab train` does, before TensorFlow starts: both Keras sides share it

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from rnnlab.config import compose_config  # noqa: E402
from rnnlab.recurrence import fused, scan  # noqa: E402
from rnnlab.recurrence.layer import recurrent_layers  # noqa: E402
from rnnlab.recurrence.native import describe, native_status  # noqa: E402
from rnnlab.recurrence.native.build import this_cpu  # noqa: E402
from rnnlab.recurrence.stack import recurrent_stack  # noqa: E402
from rnnlab.tasks import get_task  # noqa: E402
from rnnlab.training.run import build_compiled_model  # noqa: E402

try:
    import torch
except ImportError:  # the optional `bench` extra
    torch = None

GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
BARE_KERAS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}
REFERENCE_SHAPE = (64, 100, 32, 128)  # batch, steps, inputs, units
LONG_SHAPE = (64, 1000, 2, 64)  # --cells modern: long sequences, where a scan should pay
MODERN_CELLS = (
    *("gru", "lstm", "indrnn", "mingru", "minlstm", "lru", "rglru", "hgrn"),
    *("s6", "mlstm", "slstm"),
)
LINEAR_SCAN_CELLS = ("mingru", "minlstm", "lru", "rglru", "hgrn", "s6")
# The cells whose native scan has the traffic floor below: IndRNN too (native ops, but no TF
# scan); not S6, whose op reads its states out in its loop, so none reach memory.
NATIVE_SCAN_CELLS = (*(cell for cell in LINEAR_SCAN_CELLS if cell != "s6"), "indrnn")
# IndRNN (no TF scan), the mLSTM (its own route is TensorFlow's chunks) and the sLSTM (its
# own is its native ops; it has no scan) race their step loop only; so does S6, whose
# TensorFlow scan ran at 13 samples/s at T = 1,000 (docs/results/benchmarks.md) and would take
# most of the race's time.
STEP_LOOP_ONLY = ("indrnn", "mlstm", "slstm", "s6")
# The route a cell's own contender must take, where it has one that could silently fall
# back to the step loop: the sLSTM's native ops did not run, and the race would say 1.0×.
OWN_ROUTES = {"slstm": "native", "s6": "native_scan"}
# A native-scan cell's alternatives: extra overrides, native ops on, the route its layer
# must take (what `ProbedRNN.recurrence_routes` records when the step is traced). IndRNN is
# not linear: it has no TensorFlow scan, only its step loop.
ALTERNATIVES = {
    "TF scan": (("cell.parallel_scan=true",), False, "parallel_scan"),
    "step loop": (("model.fused=false",), True, "keras"),
}


def alternatives_of(cell: str) -> list[str]:
    """The alternatives raced for this cell."""
    if cell in STEP_LOOP_ONLY:
        return ["step loop"]
    return list(ALTERNATIVES) if cell in LINEAR_SCAN_CELLS else []


BATCHES_PER_EPOCH = 20
PEAK_SIDE = 2048
COPY_BYTES = 64 * 2**20


def flops_per_sample(cell: str, steps: int, inputs: int, units: int) -> float:
    return 3 * steps * 2 * GATES[cell] * (inputs + units) * units


def scan_bytes_per_sample(layer, steps: int, inputs: int) -> float:
    """The traffic floor of a linear-scan layer (see the docstring), from its built cell."""
    return 4 * steps * (3 * inputs + 2 * layer.cell.state_size)


def chunkwise_flops_per_sample(layer, steps: int, inputs: int) -> float:
    """The mLSTM's matmul work in chunks (see the docstring), forward and backward."""
    cell = layer.cell
    units, width, chunk = cell.units, cell.head_units, cell.chunk_size
    projections = 2 * inputs * (4 * units + 2 * cell.heads)  # q, k, v, o and two gates
    within = 2 * 2 * chunk * units  # q kᵀ and its product with v, L × L per head
    memory = 2 * 2 * width * units  # the memory read by q, and its update at a chunk's end
    return 3 * steps * (projections + within + memory)


def slstm_flops_per_sample(layer, steps: int, inputs: int) -> float:
    """The sLSTM's matmuls, forward and backward: x W for its four gates, and R h per head
    (each unit reads its own head's `head_units`)."""
    cell = layer.cell
    return 3 * steps * 2 * 4 * (inputs + cell.head_units) * cell.units


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
    """While a model is traced, the fused recurrence runs in TensorFlow's graph loop and a
    linear cell's scan in TensorFlow's ops."""
    modules = (fused, scan)
    originals = [module.recurrence_ops for module in modules]
    for module in modules:
        module.recurrence_ops = lambda: None
    try:
        yield
    finally:
        for module, original in zip(modules, originals):
            module.recurrence_ops = original


class KerasContender:
    """One epoch of `fit` over cached batches, timed from the first to the last batch."""

    def __init__(
        self, recurrent, data: tf.data.Dataset, shape, native: bool = True, route=None
    ) -> None:
        """`recurrent(sequence)` applies the recurrent layer(s) under test; `route`, if
        given, is the one rnnlab's layer must have taken when its training step was traced."""
        _, steps, inputs, _ = shape
        self.routing = contextlib.nullcontext if native else native_ops_off
        with self.routing():
            sequence = keras.Input((steps, inputs))
            self.model = keras.Model(sequence, layers.Dense(1)(recurrent(sequence)))
        self.model.compile(optimizer="adam", loss="mse")
        self.data = data
        self.route = route

    @property
    def layer(self):
        """rnnlab's (first) recurrent layer in the model."""
        return recurrent_layers(self.model)[0]

    def epoch(self) -> float:
        clock = []
        timer = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda *_: clock.append(time.perf_counter()),
            on_epoch_end=lambda *_: clock.append(time.perf_counter()),
        )
        # The first epoch traces the training step: the route is fixed then.
        with self.routing():
            self.model.fit(self.data, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
        if self.route is not None:
            taken = self.layer.recurrence_routes[True][0]
            if taken != self.route:
                raise RuntimeError(f"{self.layer.name} ran by {taken}, not {self.route}")
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


class CopyBandwidth:
    """`cores` numpy copies of 64 MB at once: what the machine's memory can move."""

    def __init__(self) -> None:
        count = COPY_BYTES // 4
        self.pairs = [
            (np.ones(count, np.float32), np.empty(count, np.float32))
            for _ in range(available_cores())
        ]
        self.pool = ThreadPoolExecutor(len(self.pairs))  # numpy lets go of the GIL to copy
        self.copy()  # every page touched before the first timing

    def copy(self) -> None:
        list(self.pool.map(lambda pair: np.copyto(pair[1], pair[0]), self.pairs))

    def gbytes(self) -> float:
        repeats = 5
        started = time.perf_counter()
        for _ in range(repeats):
            self.copy()
        seconds = (time.perf_counter() - started) / repeats
        return len(self.pairs) * 2 * COPY_BYTES / seconds / 1e9  # read plus written


def training_data(shape, batches: int):
    """Random inputs and targets (arrays), and the cached dataset of their batches."""
    batch, steps, inputs, _ = shape
    rng = np.random.default_rng(0)
    inputs_array = rng.normal(size=(batch * batches, steps, inputs)).astype("float32")
    targets_array = rng.normal(size=(batch * batches, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((inputs_array, targets_array)).batch(batch).cache()
    return inputs_array, targets_array, data


def rnnlab_contender(cell: str, shape, data, overrides=(), native=True, route=None):
    """The layer rnnlab's `recurrent_stack` builds from the composed config, in training."""
    cfg = compose_config([f"cell={cell}", f"cell.units={shape[3]}", *overrides])
    return KerasContender(recurrent_stack(cfg.cell, cfg.model), data, shape, native, route)


def contenders(cell: str, shape, batches: int) -> dict[str, object]:
    inputs_array, targets_array, data = training_data(shape, batches)
    found = {
        "rnnlab": rnnlab_contender(cell, shape, data),
        "rnnlab graph loop": rnnlab_contender(cell, shape, data, native=False),
        "bare Keras": KerasContender(BARE_KERAS[cell](shape[3]), data, shape),
    }
    if torch is not None:
        found["PyTorch"] = TorchContender(cell, inputs_array, targets_array, shape)
    return found


def modern_contenders(shape, batches: int, cells=MODERN_CELLS) -> dict[str, KerasContender]:
    """rnnlab's cells by their default routes; the linear ones also by their alternatives."""
    _, _, data = training_data(shape, batches)
    found = {}
    for cell in cells:
        found[cell] = rnnlab_contender(cell, shape, data, route=OWN_ROUTES.get(cell))
        for alternative in alternatives_of(cell):
            overrides, native, route = ALTERNATIVES[alternative]
            found[f"{cell} {alternative}"] = rnnlab_contender(
                cell, shape, data, overrides, native, route
            )
    return found


def race(racing: dict, epochs: int, probes: dict) -> dict[str, list[float]]:
    """Epoch seconds per contender, and each probe's reading, from interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in [*racing, *probes]}
    for round_index in range(epochs + 1):  # round 0 warms every contender up
        for name, contender in racing.items():
            seconds = contender.epoch()
            if round_index:
                times[name].append(seconds)
        if round_index:
            for name, probe in probes.items():
                times[name].append(probe())
    return times


def spread(seconds: list[float]) -> float:
    """How far the epoch farthest from the median lies from it, as a share of the median:
    every epoch is within ± this of the median epoch."""
    median = statistics.median(seconds)
    return max(abs(value - median) for value in seconds) / median


def speed_text(times: dict[str, list[float]], name: str, samples: int) -> str:
    """Samples/s of the median epoch [slowest–fastest] ±spread."""
    if name not in times:
        return "—"
    seconds = times[name]
    median, slowest, fastest = (
        samples / statistics.median(seconds),
        samples / max(seconds),
        samples / min(seconds),
    )
    return f"{median:,.0f} [{slowest:,.0f}–{fastest:,.0f}] ±{spread(seconds):.0%}"


def share_text(achieved: float, best: float, digits: int = 0) -> str:
    return f"{achieved:.{digits}f} / {best:.{digits}f} = {achieved / best:.0%}"


def report_row(label: str, cell: str, shape, times: dict[str, list[float]], samples) -> str:
    median = {name: statistics.median(values) for name, values in times.items()}
    speed = {name: samples / median[name] for name in times if name != "peak"}
    gflops = speed["rnnlab"] * flops_per_sample(cell, *shape[1:]) / 1e9
    cells = [
        label,
        cell,
        *(
            speed_text(times, name, samples)
            for name in ("rnnlab", "rnnlab graph loop", "bare Keras", "PyTorch")
        ),
        f"{speed['rnnlab'] / speed['bare Keras']:.2f}",
        f"{speed['rnnlab'] / speed['PyTorch']:.2f}" if "PyTorch" in speed else "—",
        f"{speed['rnnlab graph loop'] / speed['bare Keras']:.2f}",
        share_text(gflops, median["peak"]),
    ]
    return "| " + " | ".join(cells) + " |"


def modern_row(label: str, cell: str, shape, racing, times, samples) -> str:
    median = {name: statistics.median(values) for name, values in times.items()}
    speed = {name: samples / median[name] for name in racing}
    alternatives = [f"{cell} {alternative}" for alternative in ALTERNATIVES]
    bandwidth = compute = "—"
    if cell in NATIVE_SCAN_CELLS:
        gbytes = speed[cell] * scan_bytes_per_sample(racing[cell].layer, *shape[1:3]) / 1e9
        bandwidth = share_text(gbytes, median["copy"], 1)
    if cell in GATES:
        compute = share_text(speed[cell] * flops_per_sample(cell, *shape[1:]) / 1e9, median["peak"])
    if cell in ("mlstm", "slstm"):
        count = chunkwise_flops_per_sample if cell == "mlstm" else slstm_flops_per_sample
        flops = count(racing[cell].layer, *shape[1:3])
        compute = share_text(speed[cell] * flops / 1e9, median["peak"])
    cells = [
        label,
        cell,
        speed_text(times, cell, samples),
        f"{speed[cell] / speed['gru']:.2f}",
        *(speed_text(times, name, samples) if name in racing else "—" for name in alternatives),
        *(f"{speed[cell] / speed[name]:.2f}" if name in racing else "—" for name in alternatives),
        bandwidth,
        compute,
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per contender")
    parser.add_argument("--batches", type=int, default=BATCHES_PER_EPOCH, help="per epoch")
    parser.add_argument(
        "--cells",
        nargs="+",
        default=list(GATES),
        help="cells to race against bare Keras and PyTorch, or 'modern': rnnlab's own cells "
        "against its GRU and LSTM, also at T = 1000",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=MODERN_CELLS,
        help="with --cells modern: race these against the GRU, not every modern cell (a "
        "change to a few cells is remeasured in minutes instead of half an hour)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["sentiment", "forecasting", "series_classification", "adding", "copy_memory"],
        help="tasks whose default shapes to add, or 'none'",
    )
    options = parser.parse_args()
    modern = options.cells == ["modern"]
    modern_cells = (
        ["gru", *(c for c in options.only if c != "gru")] if options.only else MODERN_CELLS
    )
    shapes = [("reference", REFERENCE_SHAPE), *([("long", LONG_SHAPE)] if modern else [])]
    shapes += [(task, task_shape(task)) for task in options.tasks if task != "none"]
    probes = {"peak": MatmulPeak().gflops}
    if modern:
        probes["copy"] = CopyBandwidth().gbytes
    print(
        f"CPU: {this_cpu().model}; rnnlab {describe(native_status())}\n"
        f"{options.epochs} timed epochs of {options.batches} batches per contender after a "
        f"warm-up, interleaved; samples/s of the median epoch [slowest–fastest] ±the farthest "
        f"epoch from the median (as a share of its time); ratios of medians; TensorFlow threads: "
        f"{tf.config.threading.get_intra_op_parallelism_threads()} per op, "
        f"{tf.config.threading.get_inter_op_parallelism_threads()} ops at once; PyTorch: "
        f"{torch.get_num_threads() if torch else '—'} threads\n",
        flush=True,
    )
    columns = (
        "rnnlab samples/s | / GRU | TF scan | step loop | own route / TF scan "
        "| own route / step loop "
        "| scan GB/s / copy | GFLOP/s / peak"
        if modern
        else "rnnlab samples/s | rnnlab graph loop | bare Keras | PyTorch | rnnlab / Keras "
        "| rnnlab / PyTorch | graph loop / Keras | rnnlab GFLOP/s / peak"
    )
    print(f"| shape | cell | {columns} |\n" + "|---" * 10 + "|", flush=True)
    for label, shape in shapes:
        name = f"{label} {'×'.join(map(str, shape[:3]))}→{shape[3]}"
        samples = shape[0] * options.batches
        if modern:  # every contender in one race
            racing = modern_contenders(shape, options.batches, modern_cells)
            times = race(racing, options.epochs, probes)
            for cell in modern_cells:
                print(modern_row(name, cell, shape, racing, times, samples), flush=True)
            keras.backend.clear_session()
            continue
        for cell in options.cells:
            times = race(contenders(cell, shape, options.batches), options.epochs, probes)
            print(report_row(name, cell, shape, times, samples), flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
