"""rnnlab's modern cells (`recurrence.cells`) and the parallel scan that runs them (`scan`).

Each cell's step is held to its paper's equations, recomputed in NumPy from the cell's own
weights; its gradients to central differences in float64; the parallel scan (rnnlab's native
ops, and TensorFlow's fallback) to the cell's own step loop run by Keras, outputs and
gradients, under masks, reversal, initial states and long sequences. Then each cell's conf
trains a model end to end.
"""

from __future__ import annotations

import math

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
from mlflow import MlflowClient
from recurrence_checks import assert_gradients_match_central_differences, randomize

from rnnlab.recurrence import scan
from rnnlab.recurrence.cells import (
    HGRNCell,
    IndRNNCell,
    LRUCell,
    MinGRUCell,
    MinLSTMCell,
    RGLRUCell,
    S6Cell,
)
from rnnlab.recurrence.layer import ProbedRNN, recurrent_layers
from rnnlab.recurrence.native import recurrence_ops
from rnnlab.recurrence.native_calls import native_scan
from rnnlab.recurrence.stack import recurrent_stack
from rnnlab.training.run import run

erfc = np.vectorize(math.erfc)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def candidate(x):
    """The papers' g: x + 1/2 for x ≥ 0, else sigmoid(x)."""
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def gelu(x):
    """x Φ(x), exact (not tanh's approximation); erfc keeps it accurate for x < 0."""
    return 0.5 * x * erfc(-x / math.sqrt(2))


def lru_reference(cell, x, state):
    """The LRU step from the paper: complex λ, γ, B and C, a real readout with skip D."""
    n = cell.state_units
    lam = np.exp(-np.exp(cell.nu_log.numpy()) + 1j * np.exp(cell.theta_log.numpy()))
    gamma = np.exp(cell.gamma_log.numpy())
    kernel, readout = cell.kernel.numpy(), cell.readout_kernel.numpy()
    b = kernel[:, :n] + 1j * kernel[:, n:]  # u B, B of shape (inputs, N)
    c = (readout[:n] + 1j * readout[n:]).T  # C of shape (units, N)
    new = lam * (state[:, :n] + 1j * state[:, n:]) + gamma * (x @ b)
    skip = cell.skip.numpy()
    direct = x * skip if skip.ndim == 1 else x @ skip
    output = gelu(np.real(new @ c.T) + direct)
    return output, np.concatenate([new.real, new.imag], axis=-1)


def indrnn_reference(cell, x, state):
    new = np.maximum(x @ cell.kernel.numpy() + cell.bias.numpy() + cell.recurrent_weight * state, 0)
    return new, new


def mingru_reference(cell, x, state):
    gate, hidden = np.split(x @ cell.kernel.numpy() + cell.bias.numpy(), 2, axis=-1)
    z = sigmoid(gate)
    new = (1 - z) * state + z * candidate(hidden)
    return new, new


def minlstm_reference(cell, x, state):
    forget, remember, hidden = np.split(x @ cell.kernel.numpy() + cell.bias.numpy(), 3, axis=-1)
    f, i = sigmoid(forget), sigmoid(remember)
    new = f / (f + i) * state + i / (f + i) * candidate(hidden)
    return new, new


def rglru_reference(cell, x, state):
    """The RG-LRU step as the paper writes it: a = σ(Λ) raised to the power c·r_t."""
    recurrence, gate, value = np.split(x @ cell.kernel.numpy() + cell.bias.numpy(), 3, axis=-1)
    decay = sigmoid(cell.a_logit.numpy()) ** (cell.gate_power * sigmoid(recurrence))
    new = decay * state + np.sqrt(1 - decay**2) * (sigmoid(gate) * value)
    if not cell.output_gate:
        return new, new
    return gelu(x @ cell.gate_kernel.numpy() + cell.gate_bias.numpy()) * new, new


def hgrn_reference(cell, x, state):
    """HGRN's real step: the bounded forget gate, SiLU input, gated and normalised output."""
    forget, candidate = np.split(x @ cell.kernel.numpy() + cell.bias.numpy(), 2, axis=-1)
    bound = cell.forget_lower_bound
    f = bound + (1 - bound) * sigmoid(forget)
    new = f * state + (1 - f) * silu(candidate)
    if not cell.output_gate:
        return new, new
    gated = silu(x @ cell.gate_kernel.numpy() + cell.gate_bias.numpy()) * new
    centred = gated - gated.mean(axis=-1, keepdims=True)
    return centred / np.sqrt(gated.var(axis=-1, keepdims=True) + 1e-5), new


def s6_reference(cell, x, state):
    """Mamba's S6 step, channel by channel and state by state, as the paper writes it."""
    units, n = cell.units, cell.state_units
    value, step, b, c = np.split(
        x @ cell.kernel.numpy() + cell.bias.numpy(), [units, 2 * units, 2 * units + n], axis=-1
    )
    step = np.log1p(np.exp(step))  # softplus
    a = -np.exp(cell.a_log.numpy())
    h = state.reshape(len(x), units, n).copy()
    output = np.zeros((len(x), units))
    for row in range(len(x)):
        for d in range(units):
            for k in range(n):
                h[row, d, k] = (
                    np.exp(step[row, d] * a[d, k]) * h[row, d, k]
                    + step[row, d] * b[row, k] * value[row, d]
                )
            output[row, d] = c[row] @ h[row, d] + cell.skip.numpy()[d] * value[row, d]
    return output, h.reshape(len(x), units * n)


STEP_CASES = {  # name: (make the cell, its input width, the reference step)
    "indrnn": (lambda: IndRNNCell(4, dtype="float64"), 3, indrnn_reference),
    "mingru": (lambda: MinGRUCell(4, dtype="float64"), 3, mingru_reference),
    "minlstm": (lambda: MinLSTMCell(4, dtype="float64"), 3, minlstm_reference),
    # D is the paper's diagonal where inputs and units have one width, else a matrix.
    "lru-diagonal-skip": (lambda: LRUCell(4, state_units=3, dtype="float64"), 4, lru_reference),
    "lru-matrix-skip": (lambda: LRUCell(4, state_units=3, dtype="float64"), 5, lru_reference),
    "rglru": (lambda: RGLRUCell(4, dtype="float64"), 3, rglru_reference),
    "rglru-output-gate": (
        lambda: RGLRUCell(4, output_gate=True, dtype="float64"),
        3,
        rglru_reference,
    ),
    "hgrn": (lambda: HGRNCell(4, forget_lower_bound=0.25, dtype="float64"), 3, hgrn_reference),
    "hgrn-no-output-gate": (
        lambda: HGRNCell(4, forget_lower_bound=0.6, output_gate=False, dtype="float64"),
        3,
        hgrn_reference,
    ),
    "s6": (lambda: S6Cell(4, state_units=3, dtype="float64"), 5, s6_reference),
}


@pytest.mark.parametrize("name", STEP_CASES)
def test_one_step_follows_the_papers_equations(name):
    make, inputs, reference = STEP_CASES[name]
    cell = make()
    cell.build((None, inputs))
    randomize(cell)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, inputs))
    state = rng.normal(size=(3, cell.state_size))

    output, (new_state,) = cell(tf.constant(x), [tf.constant(state)])

    expected_output, expected_state = reference(cell, x, state)
    np.testing.assert_allclose(new_state, expected_state, rtol=1e-12, atol=1e-12)
    # tf.nn.gelu rounds its 1/√2 to float32 even in float64: ~1e-7 apart from the exact
    # GELU, 1e-4 from the tanh approximation.
    np.testing.assert_allclose(output, expected_output, rtol=1e-6, atol=1e-12)


def test_lru_eigenvalues_start_in_the_ring_with_the_papers_normalisation():
    r_min, r_max, max_phase = 0.4, 0.9, math.pi / 4
    cell = LRUCell(4, state_units=4096, r_min=r_min, r_max=r_max, max_phase=max_phase)
    cell.build((None, 3))
    real, imaginary = (np.asarray(part, np.float64) for part in cell.eigenvalues())
    radius, phase = np.hypot(real, imaginary), np.arctan2(imaginary, real)

    assert r_min - 1e-6 <= radius.min() and radius.max() <= r_max + 1e-6
    assert phase.min() >= 0 and phase.max() <= max_phase + 1e-6
    # |λ|² is uniform on [r_min², r_max²] (not |λ|), the phase uniform on [0, max_phase].
    assert np.mean(radius**2) == pytest.approx((r_min**2 + r_max**2) / 2, abs=0.01)
    assert np.mean(phase) == pytest.approx(max_phase / 2, abs=0.02)
    np.testing.assert_allclose(np.exp(cell.gamma_log.numpy()), np.sqrt(1 - radius**2), rtol=1e-4)


def test_lru_initialisation_is_reproducible_from_the_seed():
    def weights(seed, cell_seed=None):
        keras.utils.set_random_seed(seed)
        cell = LRUCell(6, state_units=3, seed=cell_seed)
        cell.build((None, 6))  # B [6, 2·3] and C [2·3, 6]: the same shape
        return {weight.name: weight.numpy() for weight in cell.weights}

    first, again, other = weights(7), weights(7), weights(8)
    assert len(first) == 6
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=name)
        assert not np.array_equal(first[name], other[name]), name
    # A cell's own seed fixes it whatever the global seed, and draws B and C apart: one seed
    # for both would make B a multiple of C (their stddevs are 1/√12 and 1/√3).
    seeded, reseeded = weights(1, cell_seed=3), weights(2, cell_seed=3)
    for name in seeded:
        np.testing.assert_array_equal(seeded[name], reseeded[name], err_msg=name)
    b, c = seeded["kernel"] * math.sqrt(12), seeded["readout_kernel"] * math.sqrt(3)
    assert not np.allclose(b, c)


def test_rglru_decay_starts_uniform_in_the_papers_range():
    cell = RGLRUCell(4096, a_min=0.9, a_max=0.999)  # a sample large enough to see its shape
    cell.build((None, 2))
    power = sigmoid(cell.a_logit.numpy().astype(np.float64)) ** cell.gate_power  # a^c

    assert power.min() >= 0.9 - 1e-5 and power.max() <= 0.999 + 1e-5
    # Uniform on [0.9, 0.999]: mean 0.9495, standard deviation 0.099/√12 = 0.0286.
    assert power.mean() == pytest.approx(0.9495, abs=0.002)
    assert power.std() == pytest.approx(0.099 / math.sqrt(12), rel=0.05)
    # The native op reads -log a^c, the decay rate per unit of the recurrence gate.
    np.testing.assert_allclose(cell.decay_rates(), -np.log(power), rtol=1e-3)


def test_s6_starts_with_the_papers_decays_and_steps():
    """A = −(n + 1) in every channel (S4D-real); Δ log-uniform in [dt_min, dt_max]; D = 1."""
    cell = S6Cell(4096, state_units=3, dt_min=0.001, dt_max=0.1)  # a sample to see Δ's shape
    cell.build((None, 2))
    np.testing.assert_allclose(-np.exp(cell.a_log.numpy()), np.tile([-1.0, -2.0, -3.0], (4096, 1)))
    np.testing.assert_array_equal(cell.skip.numpy(), 1.0)
    step = np.log1p(np.exp(cell.bias.numpy()[4096:8192].astype(np.float64)))  # softplus
    assert step.min() >= 0.001 * (1 - 1e-4) and step.max() <= 0.1 * (1 + 1e-4)
    # log Δ uniform on [log 0.001, log 0.1]: mean log 0.01, standard deviation log(100)/√12.
    assert np.log(step).mean() == pytest.approx(np.log(0.01), abs=0.05)
    assert np.log(step).std() == pytest.approx(np.log(100) / math.sqrt(12), rel=0.05)
    np.testing.assert_array_equal(np.delete(cell.bias.numpy(), np.s_[4096:8192]), 0.0)


def test_hgrn_forget_lower_bound_rises_with_depth(compose):
    def bounds(*overrides):
        cfg = compose("task=adding", "cell=hgrn", "cell.units=4", *overrides)
        inputs = keras.Input((5, 2))
        model = keras.Model(inputs, recurrent_stack(cfg.cell, cfg.model)(inputs))
        return [layer.cell for layer in recurrent_layers(model)]

    cells = bounds("model.layers=3")
    # The paper's bounds at their start: 0 for the first layer, then k/L.
    assert [cell.forget_lower_bound for cell in cells] == pytest.approx([0, 1 / 3, 2 / 3])
    # The gate never closes below its bound, however negative its input.
    closed = [
        np.asarray(cell.coefficients([tf.fill((1, 4), -60.0), tf.zeros((1, 4))])[0])
        for cell in cells
    ]
    np.testing.assert_allclose(
        np.concatenate(closed), np.repeat([[0], [1 / 3], [2 / 3]], 4, axis=1), atol=1e-6
    )
    # A stored model rebuilds each cell with its own bound.
    assert HGRNCell.from_config(cells[2].get_config()).forget_lower_bound == pytest.approx(2 / 3)
    # A number in the config fixes the bound for every layer.
    fixed = bounds("model.layers=2", "cell.forget_lower_bound=0.5")
    assert [cell.forget_lower_bound for cell in fixed] == [0.5, 0.5]


def test_indrnn_recurrent_weights_start_in_the_unit_interval():
    cell = IndRNNCell(1000)
    cell.build((None, 2))
    start = cell.recurrent_weight.numpy()
    assert start.min() >= 0 and start.max() <= 1 and start.std() > 0.2


def test_indrnn_recurrent_weights_stay_within_their_bound():
    cell = IndRNNCell(1000, recurrent_max_abs=0.5)
    cell.build((None, 2))
    # One optimizer step that pushes every u far out: the constraint clips it to ±0.5.
    push = np.where(np.arange(1000) % 2 == 0, -10.0, 10.0).astype("float32")
    keras.optimizers.SGD(1.0).apply_gradients([(tf.constant(push), cell.recurrent_weight)])
    after = cell.recurrent_weight.numpy()
    np.testing.assert_array_equal(after, np.where(push < 0, 0.5, -0.5))

    free = IndRNNCell(3, recurrent_max_abs=None)
    free.build((None, 2))
    keras.optimizers.SGD(1.0).apply_gradients([(tf.fill((3,), -10.0), free.recurrent_weight)])
    assert free.recurrent_weight.numpy().min() >= 10


# Step loop, float64: tape gradients against central differences ---------------------------

GRADIENT_CELLS = {
    "indrnn": lambda: IndRNNCell(3, dtype="float64"),
    "mingru": lambda: MinGRUCell(3, dtype="float64"),
    "minlstm": lambda: MinLSTMCell(3, dtype="float64"),
    "lru": lambda: LRUCell(3, state_units=2, dtype="float64"),
    "lru-matrix-skip": lambda: LRUCell(2, state_units=2, dtype="float64"),
    "rglru": lambda: RGLRUCell(3, dtype="float64"),
    "rglru-output-gate": lambda: RGLRUCell(3, output_gate=True, dtype="float64"),
    "hgrn": lambda: HGRNCell(3, forget_lower_bound=0.25, dtype="float64"),
    "s6": lambda: S6Cell(3, state_units=2, dtype="float64"),
}


@pytest.mark.parametrize("name", GRADIENT_CELLS)
def test_step_loop_gradients_match_central_differences(name):
    cell = GRADIENT_CELLS[name]()
    layer = ProbedRNN(cell, fused=False, return_sequences=True, dtype="float64")
    rng = np.random.default_rng(2)
    inputs = tf.Variable(rng.normal(size=(2, 4, 3)))
    initial = tf.Variable(rng.normal(size=(2, cell.state_size)) * 0.5)
    layer(inputs, initial_state=[initial])
    randomize(cell, seed=3, scale=0.5)
    weighting = tf.constant(rng.normal(size=(2, 4, cell.output_size)))

    @tf.function
    def loss():
        return tf.reduce_sum(layer(inputs, initial_state=[initial]) * weighting)

    variables = [inputs, initial, *layer.trainable_variables]
    assert_gradients_match_central_differences(loss, variables)


# The parallel scan against the step loop ----------------------------------------------------

SCAN_CELLS = {
    "mingru": lambda units, **options: MinGRUCell(units, **options),
    "minlstm": lambda units, **options: MinLSTMCell(units, **options),
    "lru": lambda units, **options: LRUCell(units, state_units=3, **options),
    "rglru": lambda units, **options: RGLRUCell(units, **options),
    "rglru-output-gate": lambda units, **options: RGLRUCell(units, output_gate=True, **options),
    # A nonzero bound: the native op reads it as a parameter.
    "hgrn": lambda units, **options: HGRNCell(units, forget_lower_bound=0.3, **options),
    "s6": lambda units, **options: S6Cell(units, state_units=3, **options),
}
BATCH, STEPS, FEATURES, UNITS = 3, 9, 4, 4  # FEATURES == UNITS: the LRU's diagonal skip
SHARDS = 4


@pytest.fixture
def route(request, monkeypatch):
    """Sends the scan through rnnlab's native ops or through TensorFlow's fallback (the
    tests name it with `routed`)."""
    if request.param == "native":
        request.getfixturevalue("native_ops")  # skips, or fails in CI, without them
        # More shards than rows, whatever this machine's cores: uneven and empty shards too.
        monkeypatch.setattr(scan, "parallel_shards", lambda: SHARDS)
    else:
        monkeypatch.setattr(scan, "recurrence_ops", lambda: None)
    return request.param


def outputs_and_gradients(layer, inputs, mask=None, initial=None):
    """All outputs, and the gradients of an uneven weighting of them with respect to the
    inputs, the initial state and every weight."""
    watched = [inputs] if initial is None else [inputs, initial]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        outputs = layer(
            inputs, mask=mask, initial_state=None if initial is None else [initial], training=True
        )
        outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        loss = sum(
            tf.reduce_sum(
                o * tf.sin(1.0 + tf.reshape(tf.range(tf.size(o), dtype=o.dtype), o.shape))
            )
            for o in outputs
        )
    gradients = tape.gradient(loss, [*watched, *layer.trainable_variables])
    return [*outputs, *gradients]


def compare_scan_with_step_loop(
    cell, inputs, mask=None, initial=None, compile_loop=False, **options
):
    """Asserts that the scan and Keras's step loop over the same cell agree; returns the
    route the scan took. `compile_loop` traces the loop (1000 steps in eager take seconds)."""
    scan = ProbedRNN(cell, fused=True, **options)
    loop = ProbedRNN(cell, fused=False, **options)  # the same cell: the same weights
    scan(inputs[:, :1])
    loop(inputs[:, :1])
    randomize(cell, seed=4, scale=0.5)
    for variable in cell.weights:  # within their constraints (IndRNN's |u|), as training keeps them
        if variable.constraint is not None:
            variable.assign(variable.constraint(variable))

    def run_loop():
        return outputs_and_gradients(loop, inputs, mask, initial)

    want = (tf.function(run_loop) if compile_loop else run_loop)()
    got = outputs_and_gradients(scan, inputs, mask, initial)
    gradients = ["d_inputs", *["d_initial_state"] * (initial is not None)]
    gradients += [f"d_{variable.name}" for variable in cell.trainable_variables]
    names = [f"output {index}" for index in range(len(got) - len(gradients))] + gradients
    for name, a, b in zip(names, got, want, strict=True):
        # float32 sums over 1,000 steps err in proportion to their largest terms, so a small
        # entry beside large ones (a kernel gradient of 0.23 beside 280) is held to the
        # array's scale, not its own.
        scale = max(1.0, float(np.max(np.abs(b))))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
    assert loop.recurrence_routes[True] == ("keras", 1)
    return scan.recurrence_routes[True]


def routed(names, options=(None,), routes=("native", "tensorflow")):
    """(route, cell, option) cases, the route for the `route` fixture."""
    return [
        pytest.param(
            route, name, *filter(None, [option]), id="-".join(filter(None, [route, name, option]))
        )
        for route in routes
        for name in names
        for option in options
    ]


def expected_route(route, name):
    if route == "native":
        return ("native_scan", SHARDS)
    return ("parallel_scan", 1)


SCAN_OPTIONS = {  # name: (ProbedRNN options, masked, a nonzero initial state)
    "masked": ({"return_sequences": True, "return_state": True}, True, False),
    "masked-last": ({}, True, False),
    "masked-zero-output": ({"return_sequences": True, "zero_output_for_mask": True}, True, False),
    "backwards-masked": ({"return_sequences": True, "go_backwards": True}, True, False),
    "initial-state": ({"return_sequences": True, "return_state": True}, False, True),
    "initial-state-last": ({}, False, True),
    "initial-state-masked": ({"return_sequences": True, "return_state": True}, True, True),
    "initial-state-backwards": ({"return_sequences": True, "go_backwards": True}, False, True),
    # Reversed post-padded rows start with masked steps: Keras outputs zeros there, not h_0.
    "initial-state-backwards-masked": (
        {"return_sequences": True, "return_state": True, "go_backwards": True},
        True,
        True,
    ),
}


# The options (masks, reversal, initial states, what is returned) are handled by the scan's and
# the native ops' own code, the same for every cell: the first cells take every option; the
# later ones take the cases that mix them most, the last output alone, and zeros at masked steps.
# S6's native op reads its outputs out itself, so what it returns has code of its own: the
# last output of unmasked rows too.
EVERY_OPTION_CELLS = ["mingru", "minlstm", "lru"]
FEW_OPTIONS = ["masked-last", "masked-zero-output", "initial-state-backwards-masked"]


@pytest.mark.parametrize(
    "route, name, options",
    routed(EVERY_OPTION_CELLS, list(SCAN_OPTIONS))
    + routed([name for name in SCAN_CELLS if name not in EVERY_OPTION_CELLS], FEW_OPTIONS)
    + routed(["s6"], ["initial-state-last"], routes=["native"]),
    indirect=["route"],
)
def test_parallel_scan_matches_the_step_loop(name, options, route):
    options, masked, with_initial = SCAN_OPTIONS[options]
    cell = SCAN_CELLS[name](UNITS)
    inputs = tf.random.normal((BATCH, STEPS, FEATURES), seed=5)
    # Post-padded rows of 9, 4 and 1 steps; the padding holds values the scan must ignore.
    mask = tf.sequence_mask([STEPS, 4, 1], STEPS) if masked else None
    initial = tf.random.normal((BATCH, cell.state_size), seed=6) if with_initial else None
    taken = compare_scan_with_step_loop(cell, inputs, mask, initial, **options)
    assert taken == expected_route(route, name)


# TensorFlow's route computes every real cell's states by one associative scan: its long-range
# numerics are the minGRU's and minLSTM's there, the LRU's in complex numbers, and S6's (on a
# state N times its width). Each native op has its own kernel: all of them.
LONG_TENSORFLOW_SCAN_CELLS = ["mingru", "minlstm", "lru", "s6"]


@pytest.mark.parametrize(
    "route, name",
    routed(SCAN_CELLS, routes=["native"])
    + routed(LONG_TENSORFLOW_SCAN_CELLS, routes=["tensorflow"]),
    indirect=["route"],
)
def test_parallel_scan_matches_the_step_loop_over_1000_steps(name, route):
    cell = SCAN_CELLS[name](UNITS)
    inputs = tf.random.normal((2, 1000, FEATURES), seed=7)
    initial = tf.random.normal((2, cell.state_size), seed=8)
    taken = compare_scan_with_step_loop(
        cell, inputs, initial=initial, compile_loop=True, return_sequences=True
    )
    assert taken == expected_route(route, name)


# The native ops' routes: inputs up to 4 wide are projected inside the step loop, wider ones
# by a GEMM per block of 64 steps; lanes go by whole SIMD packets (8 or 16) and a partial
# last one. 19 lanes take both kinds of packet, and 70 steps two blocks.
WIDE_SHAPES = {"narrow-inputs": 2, "wide-inputs": 7}


# The projections' code depends on the number of gates only: the RG-LRU's three are the
# minLSTM's, HGRN's two the minGRU's, so they take one width each (their own step, both).
# S6's op takes its inputs projected (any width): its packets run over channels, and its
# backward pass recomputes the states from a checkpoint every 64 steps, so 70 take two.
PACKET_CASES = [
    *((name, width) for name in ("mingru", "minlstm", "lru") for width in WIDE_SHAPES),
    ("rglru", "narrow-inputs"),
    ("hgrn", "wide-inputs"),
    ("s6", "narrow-inputs"),
]


@pytest.mark.parametrize(
    "name, features",
    [pytest.param(name, WIDE_SHAPES[width], id=f"{name}-{width}") for name, width in PACKET_CASES],
)
def test_native_scan_matches_the_step_loop_on_whole_packets_and_blocks(name, features, native_ops):
    cell = {"lru": lambda: LRUCell(5, state_units=19)}.get(name, lambda: SCAN_CELLS[name](19))()
    inputs = tf.random.normal((3, 70, features), seed=10)
    mask = tf.sequence_mask([70, 66, 3], 70)
    initial = tf.random.normal((3, cell.state_size), seed=11)
    taken = compare_scan_with_step_loop(
        cell, inputs, mask, initial, compile_loop=True, return_sequences=True
    )
    assert taken[0] == "native_scan"


def test_native_s6_reads_out_the_undropped_inputs_as_its_step_does(native_ops, monkeypatch):
    """With input dropout, S6's step feeds its recurrence the dropped inputs and its readout
    (C and D v) the inputs as they came: the native op, given both, matches it, gradients too."""
    monkeypatch.setattr(scan, "parallel_shards", lambda: SHARDS)
    layer = ProbedRNN(S6Cell(UNITS, state_units=3, dropout=0.5), return_sequences=True)
    sequences = tf.random.normal((BATCH, STEPS, FEATURES), seed=6)
    weighting = tf.random.normal((BATCH, STEPS, UNITS), seed=7)
    layer(sequences[:, :1])
    randomize(layer.cell, seed=4, scale=0.5)
    states = layer.get_initial_state(BATCH)
    layer._maybe_config_dropout_masks(layer.cell, sequences[:, 0, :], states)
    results = []
    for loop in (scan.scan_layer, keras.layers.RNN.inner_loop):
        with tf.GradientTape() as tape:
            tape.watch(sequences)
            outputs = loop(layer, sequences, states, None, training=True)[1]
            loss = tf.reduce_sum(outputs * weighting)
        results.append([outputs, *tape.gradient(loss, [sequences, *layer.trainable_variables])])
    layer._maybe_reset_dropout_masks(layer.cell)
    assert layer.recurrence_routes[True] == ("native_scan", SHARDS)
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    undropped = scan.scan_layer(layer, sequences, states, None, training=False)[1]
    assert not np.allclose(results[0][0], undropped)  # the mask did something


@pytest.mark.parametrize("name", SCAN_CELLS)
def test_the_scan_computes_in_bfloat16_with_a_mask(name):
    """trainer.precision=mixed_bfloat16: the native ops are float32 only, so the TensorFlow
    scan runs, and it matches the step loop to bfloat16's precision."""
    cell = SCAN_CELLS[name](UNITS, dtype="mixed_bfloat16")
    scan = ProbedRNN(cell, return_sequences=True, dtype="mixed_bfloat16")
    loop = ProbedRNN(cell, return_sequences=True, fused=False, dtype="mixed_bfloat16")
    inputs = tf.random.normal((BATCH, STEPS, FEATURES), seed=9)
    mask = tf.sequence_mask([STEPS, 4, 1], STEPS)
    got, want = scan(inputs, mask=mask), loop(inputs, mask=mask)
    assert got.dtype == want.dtype == tf.bfloat16
    assert scan.recurrence_routes[False] == ("parallel_scan", 1)
    np.testing.assert_allclose(
        tf.cast(got, tf.float32), tf.cast(want, tf.float32), rtol=0.05, atol=0.02
    )


def test_native_hgrn_scan_gives_the_gradient_of_its_lower_bounds(native_ops):
    """A config fixes HGRN's bounds, but the op returns their gradient like any parameter's
    (the paper learns them): held to TensorFlow's, with a different bound in every lane."""
    cell = HGRNCell(5, output_gate=False)
    cell.build((None, 2))
    randomize(cell, seed=13, scale=0.5)
    inputs = tf.random.normal((2, 7, 2), seed=14)
    initial = tf.random.normal((2, 5), seed=15)
    weighting = tf.random.normal((2, 7, 5), seed=16)
    bounds = tf.Variable([0.0, 0.2, 0.4, 0.6, 0.8])
    cell.scan_parameters = lambda: bounds

    def by_tensorflow():
        forget, candidate = cell.project(inputs)
        forget = bounds + (1 - bounds) * tf.sigmoid(forget)
        return scan.associative_scan(forget, (1 - forget) * tf.nn.silu(candidate), initial)

    def by_native_op():
        return native_scan(native_ops, cell, inputs, initial, None)[0]

    gradients = []
    for states in (by_tensorflow, by_native_op):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(states() * weighting)
        gradients.append(tape.gradient(loss, bounds))
    np.testing.assert_allclose(gradients[1], gradients[0], rtol=1e-4, atol=1e-5)
    assert np.abs(gradients[0]).min() > 1e-3  # every lane's bound matters


def test_native_rglru_scan_caps_the_gradient_of_saturated_decays(native_ops):
    """Decay rates s so small that a_t = e^(-s r_t) rounds to 1 (1 - a_t² = 0) or next to it:
    √(1 - a_t²)'s gradient is capped as bounded_sqrt caps it, and the rates' gradients, 2000
    times d√ there, are TensorFlow's (the native op takes √u as u/√u, infinite at u = 0). The
    states near a = 1 differ by the rounding of 1 - a_t² in float, √u ≤ 5e-4 times the input."""
    cell = RGLRUCell(4)
    cell.build((None, 2))
    randomize(cell, seed=17, scale=0.5)
    inputs = tf.random.normal((2, 7, 2), seed=18)
    initial = tf.random.normal((2, 4), seed=19)
    weighting = tf.random.normal((2, 7, 4), seed=20)
    # a = 1 in float; √(1 - a²) < 5e-4, the cap's threshold, at every r < 1; two open lanes.
    rates = tf.Variable([1e-12, 1e-7, 0.05, 0.5])
    cell.decay_rates = lambda: rates

    def by_tensorflow():
        return scan.associative_scan(*cell.coefficients(cell.project(inputs)), initial)

    def by_native_op():
        return native_scan(native_ops, cell, inputs, initial, None)[0]

    results = []
    for states in (by_tensorflow, by_native_op):
        with tf.GradientTape() as tape:
            computed = states()
            loss = tf.reduce_sum(computed * weighting)
        results.append((computed, tape.gradient(loss, rates)))
    (want_states, want), (got_states, got) = results
    np.testing.assert_allclose(got_states, want_states, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(want[:2]).min() > 10 * np.abs(want[2:]).max()  # the capped lanes' 2000


# IndRNN's native op against its step loop -------------------------------------------------
# Not linear, so no TensorFlow scan: the native ops run it, or Keras's step loop does.


@pytest.fixture
def native_route(native_ops, monkeypatch):
    """The native ops, with more shards than rows: uneven and empty shards too."""
    monkeypatch.setattr(scan, "parallel_shards", lambda: SHARDS)


# The options' code is the same for both activations: ReLU takes every option, tanh the one
# that mixes them most.
INDRNN_CASES = [("relu", option) for option in SCAN_OPTIONS]
INDRNN_CASES += [("tanh", "initial-state-backwards-masked")]


@pytest.mark.parametrize(
    "activation, options",
    [pytest.param(*case, id="-".join(case)) for case in INDRNN_CASES],
)
def test_native_indrnn_matches_the_step_loop(options, activation, native_route):
    options, masked, with_initial = SCAN_OPTIONS[options]
    cell = IndRNNCell(UNITS, activation=activation)
    inputs = tf.random.normal((BATCH, STEPS, FEATURES), seed=5)
    mask = tf.sequence_mask([STEPS, 4, 1], STEPS) if masked else None
    initial = tf.random.normal((BATCH, UNITS), seed=6) if with_initial else None
    taken = compare_scan_with_step_loop(cell, inputs, mask, initial, **options)
    assert taken == ("native_scan", SHARDS)


# The projection's code is the same for both activations: each takes one width.
@pytest.mark.parametrize(
    "activation, features",
    [("relu", WIDE_SHAPES["narrow-inputs"]), ("tanh", WIDE_SHAPES["wide-inputs"])],
    ids=["relu-narrow-inputs", "tanh-wide-inputs"],
)
def test_native_indrnn_matches_the_step_loop_on_whole_packets_and_blocks(
    activation, features, native_route
):
    cell = IndRNNCell(19, activation=activation)
    inputs = tf.random.normal((3, 70, features), seed=10)
    mask = tf.sequence_mask([70, 66, 3], 70)
    initial = tf.random.normal((3, 19), seed=11)
    taken = compare_scan_with_step_loop(
        cell, inputs, mask, initial, compile_loop=True, return_sequences=True
    )
    assert taken[0] == "native_scan"


def test_native_indrnn_matches_the_step_loop_over_1000_steps(native_route):
    """The paper's regime: |u| near 1, so the state and its gradient carry over 1,000 steps."""
    cell = IndRNNCell(UNITS, recurrent_max_abs=2 ** (1 / 1000))
    inputs = tf.random.normal((2, 1000, 2), seed=7)
    initial = tf.random.normal((2, UNITS), seed=8)
    taken = compare_scan_with_step_loop(cell, inputs, initial=initial, compile_loop=True)
    assert taken[0] == "native_scan"


def test_native_indrnn_passes_no_gradient_through_dead_units(native_route):
    """ReLU units whose pre-activation is negative at every step output 0 and send no
    gradient to their weights; the others do, as in the step loop."""
    cell = IndRNNCell(UNITS)
    inputs = tf.random.uniform((BATCH, STEPS, FEATURES), seed=12)  # ≥ 0
    layer = ProbedRNN(cell, return_sequences=True)
    loop = ProbedRNN(cell, fused=False, return_sequences=True)
    layer(inputs)
    loop(inputs)
    randomize(cell, seed=5, scale=0.5)
    dead = np.array([True, False, True, False])
    # Dead: a negative kernel and bias on inputs ≥ 0 keep the pre-activation below 0.
    kernel = cell.kernel.numpy()
    kernel[:, dead] = -np.abs(kernel[:, dead])
    cell.kernel.assign(kernel)
    cell.bias.assign(np.where(dead, -1.0, 2.0))
    outputs, *gradients = outputs_and_gradients(layer, inputs)
    assert layer.recurrence_routes[True][0] == "native_scan"
    d_inputs, d_kernel, d_bias, d_u = (np.asarray(g) for g in gradients)
    assert not np.asarray(outputs)[..., dead].any()
    assert np.asarray(outputs)[..., ~dead].min() > 0
    for gradient in (d_kernel, d_bias, d_u):
        assert not gradient[..., dead].any()
        assert np.abs(gradient[..., ~dead]).min() > 0
    for got, want in zip([outputs, *gradients], outputs_and_gradients(loop, inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_indrnn_keeps_its_step_loop_without_the_native_ops(monkeypatch):
    """No associative scan computes it: without the ops (or in bfloat16), Keras's loop."""
    monkeypatch.setattr(scan, "recurrence_ops", lambda: None)
    layer = ProbedRNN(IndRNNCell(UNITS), return_sequences=True)
    layer(tf.random.normal((BATCH, STEPS, FEATURES), seed=13), training=True)
    assert layer.recurrence_routes[True] == ("keras", 1)
    monkeypatch.undo()
    half = ProbedRNN(IndRNNCell(UNITS, dtype="mixed_bfloat16"), dtype="mixed_bfloat16")
    half(tf.random.normal((BATCH, STEPS, FEATURES), seed=13), training=True)
    assert half.recurrence_routes[True] == ("keras", 1)
    other = ProbedRNN(IndRNNCell(UNITS, activation="sigmoid"))  # no op for sigmoid
    other(tf.random.normal((BATCH, STEPS, FEATURES), seed=13), training=True)
    assert other.recurrence_routes[True] == ("keras", 1)


def test_a_saved_indrnn_model_loads_and_trains_natively_within_its_bound(native_ops, tmp_path):
    """The native route changes nothing stored: a saved model loads with its weights and
    predicts the same, and Keras still clips u to its bound after each native update."""
    inputs = keras.Input((STEPS, 2))
    hidden = ProbedRNN(IndRNNCell(UNITS, recurrent_max_abs=0.5))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(keras.optimizers.SGD(100.0), "mse")
    x = np.random.default_rng(0).normal(size=(16, STEPS, 2)).astype("float32")
    y = np.full((16, 1), 50.0, "float32")  # far off: large steps that push u past the bound
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    (layer,) = recurrent_layers(model)
    assert layer.recurrence_routes[True][0] == "native_scan"
    u = layer.cell.recurrent_weight.numpy()
    assert np.abs(u).max() <= 0.5 and (np.abs(u) == 0.5).any()

    model.save(tmp_path / "indrnn.keras")
    loaded = keras.saving.load_model(tmp_path / "indrnn.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert recurrent_layers(loaded)[0].recurrence_routes[False][0] == "native_scan"


# The native ops check what they are given --------------------------------------------------

NOTHING = tf.zeros([0])


X, H0 = tf.zeros([2, 5, 3]), tf.zeros([2, 4])  # inputs [B, T, I] and h0 [B, S]


@pytest.mark.parametrize(
    "op, arguments, message",
    [
        (
            "rnnlab_min_gru_scan_forward",
            (X, tf.zeros([3, 7]), NOTHING, NOTHING, H0, NOTHING),
            r"kernel must be \[I, W\] = \[3, 8\], got \[3,7\]",
        ),
        (
            "rnnlab_min_lstm_scan_forward",
            (X, tf.zeros([3, 8]), NOTHING, NOTHING, H0, NOTHING),
            r"kernel must be \[I, W\] = \[3, 12\]",
        ),
        (
            "rnnlab_min_gru_scan_forward",
            (X, tf.zeros([3, 8]), tf.zeros([7]), NOTHING, H0, NOTHING),
            r"bias must be \[W\] or empty = \[8\]",
        ),
        (
            "rnnlab_min_gru_scan_forward",
            (X, tf.zeros([3, 8]), NOTHING, tf.zeros([3]), H0, NOTHING),
            "parameters must be empty for this cell",
        ),
        (
            "rnnlab_lru_scan_forward",
            (X, tf.zeros([3, 4]), NOTHING, tf.zeros([4]), H0, NOTHING),
            r"parameters must be \[Q\] = \[6\]",
        ),
        (
            "rnnlab_rg_lru_scan_forward",
            (X, tf.zeros([3, 12]), NOTHING, NOTHING, H0, NOTHING),
            r"parameters must be \[Q\] = \[4\]",
        ),
        (
            "rnnlab_min_gru_scan_forward",
            (X, tf.zeros([3, 8]), NOTHING, NOTHING, H0, tf.zeros([5, 2])),
            r"keep must be \[B, T\] or empty = \[2, 5\]",
        ),
        (
            "rnnlab_selective_scan_forward",
            (X, NOTHING, tf.zeros([3, 13]), NOTHING, tf.zeros([4, 3]), tf.zeros([4]))
            + (tf.zeros([2, 12]), NOTHING),
            r"kernel must be \[I, 2D \+ 2N\] = \[3, 14\], got \[3,13\]",
        ),
        (
            "rnnlab_min_gru_scan_backward",
            (X, tf.zeros([3, 8]), NOTHING, NOTHING, tf.zeros([2, 4, 4]), H0)
            + (NOTHING, H0, NOTHING),
            r"states must be \[B, T, S\] = \[2, 5, 4\]",
        ),
    ],
)
def test_native_scan_ops_reject_wrong_shapes(native_ops, op, arguments, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        getattr(native_ops, op)(*arguments)


# Each cell's conf trains -------------------------------------------------------------------

TRAINED = {
    "indrnn": ("IndRNNCell", []),
    "mingru": ("MinGRUCell", []),
    "minlstm": ("MinLSTMCell", []),
    "lru": ("LRUCell", ["cell.state_units=8"]),
    "rglru": ("RGLRUCell", []),
    "hgrn": ("HGRNCell", ["model.layers=2"]),  # two layers: two lower bounds
    "s6": ("S6Cell", ["cell.state_units=4"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("cell", TRAINED)
def test_each_cells_conf_trains_on_the_adding_task(compose, tracking_uri, cell):
    class_name, overrides = TRAINED[cell]
    cfg = compose(
        "task=adding",
        "task.length=10",
        "task.max_examples=32",
        f"cell={cell}",
        "cell.units=8",
        "trainer.epochs=1",
        "probe.plots=false",
        *overrides,
    )
    metrics = run(cfg).metrics
    recorded = MlflowClient(tracking_uri).get_run(mlflow.last_active_run().info.run_id)

    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["cell._target_"] == f"rnnlab.recurrence.cells.{class_name}"
    assert math.isfinite(metrics["test_loss"])
    if recurrence_ops() is not None:
        route = "native_scan"
    else:  # IndRNN's recurrence is not linear: no TensorFlow scan, Keras's step loop
        route = "keras" if cell == "indrnn" else "parallel_scan"
    assert recorded.data.tags[f"rnnlab.recurrence.{class_name}"] == route


@pytest.mark.parametrize("dtype", [tf.float32, tf.complex64])
def test_the_scan_runs_on_sequences_whose_length_is_known_only_at_run_time(dtype):
    """Text batched by length gives the layers no static length: the scan steps instead."""
    rng = np.random.default_rng(0)
    a, b = (
        tf.cast(rng.uniform(0.5, 1.0, (2, 7, 3)), dtype),
        tf.cast(rng.normal(size=(2, 7, 3)), dtype),
    )
    initial = tf.cast(rng.normal(size=(2, 3)), dtype)
    sequence, state = tf.TensorSpec([None, None, 3], dtype), tf.TensorSpec([None, 3], dtype)
    unknown_length = tf.function(scan.associative_scan, input_signature=[sequence, sequence, state])
    expected, h = [], initial.numpy()
    for t in range(7):
        h = a.numpy()[:, t] * h + b.numpy()[:, t]
        expected.append(h)
    np.testing.assert_allclose(unknown_length(a, b, initial), np.stack(expected, 1), rtol=1e-5)


def test_a_layer_that_reads_its_last_state_asks_for_no_gradient_of_the_others(native_ops):
    """TensorFlow's symbolic gradient (a traced function called from another, as in
    Keras's `fit`) hands an output nobody reads a gradient of zeros: for the native scan's
    [B, T, S] states that was 1.2 ms a batch at 64 × 1,000 × 64. A layer that returns its
    last state only must leave no such tensor in the graph."""
    layer = ProbedRNN(MinLSTMCell(UNITS))
    inputs = tf.random.normal((BATCH, STEPS, 2), seed=12)  # not UNITS wide: states only
    layer(inputs)
    forward = tf.function(lambda: tf.reduce_sum(layer(inputs, training=True)))

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            loss = forward()
        return tape.gradient(loss, layer.trainable_variables)

    graph = gradients.get_concrete_function().graph
    operations = [op for f in graph._functions.values() for op in f.graph.get_operations()]
    assert "RnnlabMinLstmScanBackward" in {op.type for op in operations}
    zeros = [op.outputs[0].shape for op in operations if op.type == "ZerosLike"]
    assert (BATCH, STEPS, UNITS) not in [tuple(shape) for shape in zeros]


# The short convolution before a recurrence (model.short_conv) ------------------------------


def test_the_short_convolution_is_causal_and_reaches_back_its_width():
    from rnnlab.recurrence.stack import ShortConv

    conv = ShortConv(3)
    x = np.random.default_rng(0).normal(size=(2, 10, 4)).astype("float32")
    changed = x.copy()
    changed[:, 5] += 1.0
    difference = np.abs(conv(changed).numpy() - conv(x).numpy()).max(axis=(0, 2))
    assert (difference[:5] == 0).all(), "an output saw a later step"
    assert (difference[5:8] > 0).all(), "step 5 reaches the next width - 1 outputs"
    assert (difference[8:] == 0).all(), "step 5 reaches no further than the width"


def test_the_short_convolution_zeroes_padding_and_hands_the_mask_to_the_recurrence():
    """A right-padded sequence gives the recurrence what the unpadded one gives it."""
    tokens = np.array([[3, 5, 7, 2, 0, 0]])  # 0: padding
    embed = keras.layers.Embedding(10, 4, mask_zero=True)
    inputs = keras.Input((None,), dtype="int32")
    from rnnlab.recurrence.stack import ShortConv

    mixed = ShortConv(2)(embed(inputs))
    model = keras.Model(inputs, keras.layers.GRU(3)(mixed))
    padded, unpadded = model(tokens).numpy(), model(tokens[:, :4]).numpy()
    np.testing.assert_allclose(padded, unpadded, rtol=1e-6)
    changed = ShortConv(2)
    changed.build((None, None, 4))
    x = np.ones((1, 4, 4), "float32")
    mask = np.array([[True, False, True, True]])
    spiked = x.copy()
    spiked[:, 1] = 100.0  # a padded step's value
    np.testing.assert_allclose(changed(spiked, mask=mask), changed(x, mask=mask))


@pytest.mark.slow
def test_a_stack_with_short_convolutions_trains_and_its_stored_model_predicts_the_same(
    compose, tracking_uri, tmp_path
):
    """Two mLSTM layers, each after its own convolution: trained, recorded, saved, loaded."""
    cfg = compose(
        "task=associative_recall",
        "task.max_examples=32",
        "cell=mlstm",
        "cell.units=8",
        "cell.heads=2",
        "model.layers=2",
        "model.short_conv=4",
        "trainer.epochs=1",
        "probe.plots=false",
        "tracking.log_model=true",
    )
    metrics = run(cfg).metrics
    recorded = MlflowClient(tracking_uri).get_run(mlflow.last_active_run().info.run_id)
    assert recorded.info.status == "FINISHED" and math.isfinite(metrics["test_loss"])
    assert recorded.data.params["model.short_conv"] == "4"
    from rnnlab.records.stored_model import load_stored_model

    model = load_stored_model(MlflowClient(tracking_uri), recorded.info.run_id).keras_model
    convs = [layer for layer in model.layers if layer.name.startswith("recurrent_conv_")]
    assert [layer.name for layer in convs] == ["recurrent_conv_0", "recurrent_conv_1"]
    assert convs[0].kernel.shape[0] == 4
    model.save(tmp_path / "again.keras")
    symbols = model.inputs[0].shape[-1]  # the task feeds one-hot symbols
    x = np.eye(symbols, dtype="float32")[np.random.default_rng(0).integers(symbols, size=(4, 64))]
    again = keras.saving.load_model(tmp_path / "again.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)
