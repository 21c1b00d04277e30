"""xLSTM's cells (`recurrence.xlstm`), the mLSTM's chunkwise form (`recurrence.chunkwise`)
and the sLSTM's native ops (`recurrence.native_calls`).

Each cell's step is held to the paper's stabilised equations recomputed in NumPy from its
own weights, and a whole sequence to the paper's equations without the stabiliser (where
exp cannot overflow): the stabiliser must change no output. Each cell's fast route (the
mLSTM's chunks, the sLSTM's native ops, in two heads) is held to the cell's own step loop
run by Keras, outputs, final states (the stabiliser's too) and gradients, under masks,
reversal, initial states and lengths that are not a whole number of chunks; the step
loop's gradients to central differences in float64 (the native ops are float32 only:
float64 takes the step loop). Each cell's model reloads in safe mode. Then each cell's
conf trains, is stored and is rescored from its store; the mLSTM's on padded text, and it
predicts.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from mlflow import MlflowClient
from recurrence_checks import assert_gradients_match_central_differences, randomize

from rnnlab.config import ConfigError
from rnnlab.records.stored_model import load_stored_model
from rnnlab.recurrence.layer import ProbedRNN
from rnnlab.recurrence.xlstm import MLSTMCell, SLSTMCell
from rnnlab.tasks import load_task
from rnnlab.training.evaluate import evaluate, predict
from rnnlab.training.run import budgeted_cell, run


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def block_diagonal(cell):
    """sLSTM's R as one [units, 4·units] matrix, entry by entry: unit a of head g feeds gate
    q of unit j of the same head only."""
    heads, width, units = cell.heads, cell.head_units, cell.units
    per_head = cell.recurrent_kernel.numpy()
    full = np.zeros((units, 4 * units))
    for g in range(heads):
        for a in range(width):
            for q in range(4):
                for j in range(width):
                    full[g * width + a, q * units + g * width + j] = per_head[g, a, q * width + j]
    return full


def slstm_parts(cell, x, h):
    pre = x @ cell.kernel.numpy() + h @ block_diagonal(cell) + cell.bias.numpy()
    return np.split(pre, 4, axis=-1)  # ĩ, f̃, z̃, õ


def slstm_reference(cell, x, states):
    """One sLSTM step, the paper's stabilised equations (eqs. 8–17, σ forget gate)."""
    h, c, n, m = states
    i_pre, f_pre, z_pre, o_pre = slstm_parts(cell, x, h)
    m_new = np.maximum(np.log(sigmoid(f_pre)) + m, i_pre)
    i = np.exp(i_pre - m_new)
    f = np.exp(np.log(sigmoid(f_pre)) + m - m_new)
    c_new = f * c + i * np.tanh(z_pre)
    n_new = f * n + i
    h_new = sigmoid(o_pre) * c_new / n_new
    return h_new, [h_new, c_new, n_new, m_new]


def mlstm_parts(cell, x):
    """Per head g: q, k (scaled), v [B, d], ĩ, f̃ [B], and õ [B, units]."""
    width, units = cell.head_units, cell.units
    projected = x @ cell.kernel.numpy() + cell.bias.numpy()
    gates = x @ cell.gate_kernel.numpy() + cell.gate_bias.numpy()
    heads = []
    for g in range(cell.heads):
        block = slice(g * width, (g + 1) * width)
        q, k, v = (projected[:, part * units :][:, block] for part in range(3))
        heads.append((q, k / math.sqrt(width), v, gates[:, g], gates[:, cell.heads + g]))
    return heads, projected[:, 3 * units :]


def mlstm_reference(cell, x, states):
    """One mLSTM step, the paper's stabilised equations (eqs. 19–27), head by head."""
    width = cell.head_units
    memory, normaliser, stabiliser = states
    heads, o_pre = mlstm_parts(cell, x)
    outputs, memories, normalisers, stabilisers = [], [], [], []
    for g, (q, k, v, i_pre, f_pre) in enumerate(heads):
        C = memory[:, g * width * width : (g + 1) * width * width].reshape(-1, width, width)
        n = normaliser[:, g * width : (g + 1) * width]
        m = stabiliser[:, g]
        m_new = np.maximum(np.log(sigmoid(f_pre)) + m, i_pre)
        i = np.exp(i_pre - m_new)[:, None]
        f = np.exp(np.log(sigmoid(f_pre)) + m - m_new)[:, None]
        C = f[:, :, None] * C + i[:, :, None] * np.einsum("bv,bk->bvk", v, k)
        n = f * n + i * k
        h = np.einsum("bvk,bk->bv", C, q)
        h /= np.maximum(np.abs(np.sum(n * q, axis=-1)), np.exp(-m_new))[:, None]
        outputs.append(h)
        memories.append(C.reshape(len(x), -1))
        normalisers.append(n)
        stabilisers.append(m_new)
    hidden = sigmoid(o_pre) * np.concatenate(outputs, axis=-1)
    states = [np.concatenate(memories, -1), np.concatenate(normalisers, -1)]
    return hidden, [*states, np.stack(stabilisers, -1)]


def slstm_unstabilised(cell, sequence):
    """The paper's sLSTM without the stabiliser: i = exp(ĩ), f = σ(f̃), from zero states."""
    batch = len(sequence)
    h, c, n = (np.zeros((batch, cell.units)) for _ in range(3))
    outputs = []
    for t in range(sequence.shape[1]):
        i_pre, f_pre, z_pre, o_pre = slstm_parts(cell, sequence[:, t], h)
        c = sigmoid(f_pre) * c + np.exp(i_pre) * np.tanh(z_pre)
        n = sigmoid(f_pre) * n + np.exp(i_pre)
        h = sigmoid(o_pre) * c / n
        outputs.append(h)
    return np.stack(outputs, 1)


def mlstm_unstabilised(cell, sequence):
    """The paper's mLSTM without the stabiliser: h̃ = C q / max(|nᵀ q|, 1), from zero states."""
    width, batch = cell.head_units, len(sequence)
    memories = [np.zeros((batch, width, width)) for _ in range(cell.heads)]
    normalisers = [np.zeros((batch, width)) for _ in range(cell.heads)]
    outputs = []
    for t in range(sequence.shape[1]):
        heads, o_pre = mlstm_parts(cell, sequence[:, t])
        step = []
        for g, (q, k, v, i_pre, f_pre) in enumerate(heads):
            f, i = sigmoid(f_pre)[:, None], np.exp(i_pre)[:, None]
            memories[g] = f[:, :, None] * memories[g] + i[:, :, None] * v[:, :, None] * k[:, None]
            normalisers[g] = f * normalisers[g] + i * k
            overlap = np.abs(np.sum(normalisers[g] * q, axis=-1))
            step.append(np.einsum("bvk,bk->bv", memories[g], q) / np.maximum(overlap, 1)[:, None])
        outputs.append(sigmoid(o_pre) * np.concatenate(step, -1))
    return np.stack(outputs, 1)


CELLS = {  # name: (make a float64 cell of 4 units in 2 heads, reference step, unstabilised)
    "slstm": (SLSTMCell, slstm_reference, slstm_unstabilised),
    "mlstm": (MLSTMCell, mlstm_reference, mlstm_unstabilised),
}


def small_cell(name, **options):
    return CELLS[name][0](4, heads=2, dtype="float64", **options)


@pytest.mark.parametrize("name", CELLS)
def test_one_step_follows_the_papers_stabilised_equations(name):
    _, reference, _ = CELLS[name]
    cell = small_cell(name)
    cell.build((None, 3))
    randomize(cell)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 3))
    # Any state: a normaliser > 0 (it is a sum of positive gates), a stabiliser of either sign.
    states = [rng.normal(size=(3, size)) for size in cell.state_size]
    states[-2] = np.abs(states[-2]) + 0.5 if name == "slstm" else states[-2]

    output, new_states = cell(tf.constant(x), [tf.constant(s) for s in states])

    expected_output, expected_states = reference(cell, x, states)
    np.testing.assert_allclose(output, expected_output, rtol=1e-12, atol=1e-12)
    for got, want in zip(new_states, expected_states, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [False, True], ids=["step-loop", "fastest-route"])
@pytest.mark.parametrize("name", CELLS)
def test_the_stabiliser_changes_no_output(name, fused):
    """From zero states, the stabilised cell gives the paper's outputs computed without m."""
    cell = small_cell(name, chunk_size=3) if name == "mlstm" else small_cell(name)
    layer = ProbedRNN(cell, fused=fused, return_sequences=True, dtype="float64")
    sequence = np.random.default_rng(2).normal(size=(2, 7, 3))
    layer(sequence)
    randomize(cell, seed=3)

    np.testing.assert_allclose(
        layer(sequence), CELLS[name][2](cell, sequence), rtol=1e-10, atol=1e-12
    )


def test_each_cell_starts_as_the_authors_code_does():
    slstm = SLSTMCell(8, heads=2)
    slstm.build((None, 3))
    gates = slstm.bias.numpy().reshape(4, 2, 4)  # [gate, head, unit]
    assert not gates[[0, 2, 3]].any() and not slstm.recurrent_kernel.numpy().any()
    for head in gates[1]:  # forget biases fall from 5 to -7 across each head, as a power law
        np.testing.assert_allclose(head, 5 - 12 * (np.arange(4) / 3) ** 0.3, rtol=1e-6)

    mlstm = MLSTMCell(4096, heads=4096)
    mlstm.build((None, 2))
    input_bias, forget_bias = np.split(mlstm.gate_bias.numpy(), 2)
    np.testing.assert_allclose(forget_bias, np.linspace(3, 6, 4096), rtol=1e-6)
    assert abs(input_bias.mean()) < 0.01 and input_bias.std() == pytest.approx(0.1, rel=0.05)
    assert not mlstm.gate_kernel.numpy().any()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SLSTMCell(10, heads=4), r"cell.units \(10\) must be a multiple of cell.heads"),
        (lambda: MLSTMCell(8, heads=0), r"must be a multiple of cell.heads \(0\)"),
        (lambda: MLSTMCell(8, chunk_size=0), "cell.chunk_size must be a positive integer"),
    ],
)
def test_bad_widths_are_one_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_width_that_heads_do_not_divide_is_caught_before_tensorflow_loads(compose):
    with pytest.raises(ConfigError, match=r"cell.units \(10\) must be a multiple of cell.heads"):
        compose("cell=mlstm", "cell.units=10")
    with pytest.raises(ConfigError, match="cell.heads must be a positive integer, got -2"):
        compose("cell=slstm", "cell.heads=-2")


# Step loop, float64: tape gradients against central differences ---------------------------


@pytest.mark.parametrize(
    "name, fused",
    [("slstm", False), ("mlstm", False), ("mlstm", True)],  # the sLSTM has no parallel form
    ids=["slstm-step-loop", "mlstm-step-loop", "mlstm-chunkwise"],
)
def test_gradients_match_central_differences(name, fused):
    cell = small_cell(name, chunk_size=2) if name == "mlstm" else small_cell(name)
    layer = ProbedRNN(cell, fused=fused, return_sequences=True, dtype="float64")
    rng = np.random.default_rng(4)
    inputs = tf.Variable(rng.normal(size=(2, 3, 2)))
    layer(inputs)
    randomize(cell, seed=5, scale=0.5)
    weighting = tf.constant(rng.normal(size=(2, 3, cell.output_size)))

    @tf.function
    def loss():
        return tf.reduce_sum(layer(inputs) * weighting)

    variables = [inputs, *layer.trainable_variables]
    assert_gradients_match_central_differences(loss, variables)


# The fast routes against the step loop ------------------------------------------------------


def outputs_and_gradients(layer, inputs, mask=None, initial=None):
    """All outputs and states, and the gradients of an uneven weighting of them with respect
    to the inputs, the initial states and every weight."""
    watched = [inputs, *(initial or [])]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        outputs = layer(inputs, mask=mask, initial_state=initial, training=True)
        outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        loss = sum(tf.reduce_sum(o * tf.sin(tf.cumsum(tf.ones_like(o)))) for o in outputs)
    gradients = tape.gradient(loss, [*watched, *layer.trainable_variables])
    return [*outputs, *gradients]


CHUNK_OPTIONS = {  # name: (ProbedRNN options, masked, nonzero initial states, chunk size)
    # 10 steps in chunks of 4: the last chunk is padded; rows of 10, 6 and 1 steps.
    "masked-states": ({"return_sequences": True, "return_state": True}, True, False, 4),
    "masked-last": ({}, True, False, 4),
    "masked-zero-output": (
        {"return_sequences": True, "zero_output_for_mask": True},
        True,
        False,
        4,
    ),
    "backwards-masked": ({"return_sequences": True, "go_backwards": True}, True, False, 3),
    "initial-states": ({"return_sequences": True, "return_state": True}, False, True, 4),
    "initial-states-masked-backwards": (
        {"return_sequences": True, "return_state": True, "go_backwards": True},
        True,
        True,
        4,
    ),
    "one-step-chunks": ({"return_sequences": True, "return_state": True}, True, True, 1),
    "one-chunk-longer-than-the-sequence": ({"return_sequences": True}, True, False, 64),
}


FAST_ROUTES = {"mlstm": "chunkwise", "slstm": "native"}
ROUTE_CASES = [  # the sLSTM has no chunks: it takes the cases that are not about their sizes
    *(pytest.param("mlstm", option, id=f"mlstm-{option}") for option in CHUNK_OPTIONS),
    *(pytest.param("slstm", o, id=f"slstm-{o}") for o in CHUNK_OPTIONS if "chunk" not in o),
]


def random_initial_states(cell, batch):
    """Any states the cell could hold: its normaliser positive, its stabiliser of either sign."""
    states = [
        tf.random.normal((batch, size), seed=8 + index)
        for index, size in enumerate(cell.state_size)
    ]
    if isinstance(cell, MLSTMCell):
        memory, normaliser, stabiliser = states
        return [memory * 0.3, tf.abs(normaliser), stabiliser]
    hidden, memory, normaliser, stabiliser = states
    return [hidden, memory, tf.abs(normaliser) + 0.5, stabiliser]


@pytest.mark.parametrize("name, options", ROUTE_CASES)
def test_the_fast_route_matches_the_step_loop(name, options, request):
    options, masked, with_initial, chunk_size = CHUNK_OPTIONS[options]
    if name == "slstm":
        request.getfixturevalue("native_ops")  # skips, or fails in CI, without them
        cell = SLSTMCell(8, heads=2)
    else:
        cell = MLSTMCell(8, heads=2, chunk_size=chunk_size)
    fast = ProbedRNN(cell, **options)
    loop = ProbedRNN(cell, fused=False, **options)  # the same cell: the same weights
    inputs = tf.random.normal((3, 10, 5), seed=6)
    fast(inputs[:, :1])
    loop(inputs[:, :1])
    randomize(cell, seed=7, scale=0.5)
    mask = tf.sequence_mask([10, 6, 1], 10) if masked else None
    initial = random_initial_states(cell, 3) if with_initial else None

    want = outputs_and_gradients(loop, inputs, mask, initial)
    got = outputs_and_gradients(fast, inputs, mask, initial)

    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"result {index}")
    assert fast.recurrence_routes[True][0] == FAST_ROUTES[name]
    assert loop.recurrence_routes[True] == ("keras", 1)


def test_the_chunkwise_form_holds_over_300_steps_with_strong_gates():
    """Input gates up to e^6 and forgets near 1 over many chunks: the stabiliser keeps every
    exp in range. In float64 the chunks are the loop to rounding; in float32 they stay
    within 1e-4 of the largest value (the float32 loop itself is 5 times further off)."""
    sequence = np.random.default_rng(9).normal(size=(2, 300, 3))
    results = {}
    for dtype, fused in (("float64", False), ("float64", True), ("float32", True)):
        cell = MLSTMCell(8, heads=2, chunk_size=16, dtype=dtype)
        layer = ProbedRNN(cell, fused=fused, return_sequences=True, dtype=dtype)
        inputs = tf.constant(sequence, dtype)
        layer(inputs[:, :1])
        randomize(cell, seed=10, scale=0.5)
        cell.gate_bias.assign([6.0, -2.0, 5.0, 8.0])  # ĩ about 6 and -2; f̃ about 5 and 8
        compute = tf.function(
            lambda layer=layer, inputs=inputs: outputs_and_gradients(layer, inputs)
        )
        results[dtype, fused] = [np.asarray(x, np.float64) for x in compute()]
    truth = results["float64", False]
    for index, want in enumerate(truth):
        scale = np.abs(want).max()
        np.testing.assert_allclose(
            results["float64", True][index], want, rtol=1e-9, atol=1e-12 * scale
        )
        np.testing.assert_allclose(results["float32", True][index], want, rtol=0, atol=1e-4 * scale)


def test_the_chunkwise_form_runs_on_sequences_whose_length_is_known_only_at_run_time():
    """Text batched by length gives the layer no static length: the chunks are padded then."""
    cell = MLSTMCell(4, heads=2, chunk_size=4)
    chunks, loop = (ProbedRNN(cell, fused=fused, return_sequences=True) for fused in (True, False))
    inputs = tf.random.normal((2, 7, 3), seed=11)
    chunks(inputs)
    loop(inputs)
    randomize(cell, seed=12)
    unknown_length = tf.function(chunks, input_signature=[tf.TensorSpec([None, None, 3])])
    np.testing.assert_allclose(unknown_length(inputs), loop(inputs), rtol=1e-5, atol=1e-6)


def test_the_chunkwise_form_computes_in_bfloat16_with_a_mask():
    cell = MLSTMCell(8, heads=2, chunk_size=4, dtype="mixed_bfloat16")
    chunks = ProbedRNN(cell, return_sequences=True, dtype="mixed_bfloat16")
    loop = ProbedRNN(cell, return_sequences=True, fused=False, dtype="mixed_bfloat16")
    inputs = tf.random.normal((3, 10, 5), seed=13)
    mask = tf.sequence_mask([10, 6, 1], 10)
    got, want = chunks(inputs, mask=mask), loop(inputs, mask=mask)
    assert got.dtype == want.dtype == tf.bfloat16
    np.testing.assert_allclose(
        tf.cast(got, tf.float32), tf.cast(want, tf.float32), rtol=0.05, atol=0.02
    )


# Each cell's conf: budgets, training, stored models, predict ---------------------------------


def test_a_budget_gives_a_width_of_whole_heads(compose):
    cfg = compose("task=adding", "cell=mlstm", "cell.heads=4", "model.param_budget=3000")
    task, _ = load_task(cfg.task, cfg.data_dir, 32, 0)
    assert budgeted_cell(cfg, task).units % 4 == 0


@pytest.mark.parametrize("name", CELLS)
def test_a_model_of_each_cell_saves_and_loads_in_safe_mode(tmp_path, name):
    cell = CELLS[name][0](4, heads=2, chunk_size=3) if name == "mlstm" else SLSTMCell(4, heads=2)
    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, ProbedRNN(cell, return_sequences=True)(inputs))
    randomize(cell, seed=14)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    sequences = np.random.default_rng(15).normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.predict(sequences, verbose=0), model.predict(sequences, verbose=0), rtol=1e-6
    )
    restored = loaded.layers[1].cell
    assert type(restored) is type(cell) and restored.get_config() == cell.get_config()


def trained_and_stored(compose, tracking_uri, name, *overrides):
    """Trains `name`'s conf (dropout on the inputs) with its model stored, checks the record,
    and rescores the stored model on the run's test split; returns the run's id."""
    cfg = compose(
        f"cell={name}",
        "cell.units=8",
        "cell.heads=2",
        "cell.dropout=0.1",
        "model.layers=1",
        "trainer.epochs=1",
        "probe.plots=false",
        "tracking.log_model=true",
        *overrides,
    )
    result = run(cfg)
    recorded = MlflowClient(tracking_uri).get_run(result.run_id)

    assert recorded.info.status == "FINISHED"
    assert math.isfinite(result.metrics["test_loss"])
    route = FAST_ROUTES[name]
    cell_class = {"mlstm": "MLSTMCell", "slstm": "SLSTMCell"}[name]
    assert recorded.data.tags[f"rnnlab.recurrence.{cell_class}"] == route
    # The probe saw the state the gradient travels through: sLSTM's h, mLSTM's memory C.
    assert math.isfinite(recorded.data.metrics["grad_decay_log10_ratio"])
    for metric, logged, recomputed in evaluate(result.run_id, tracking_uri):
        assert recomputed == pytest.approx(logged, rel=1e-5, abs=1e-6), metric
    return result.run_id


@pytest.mark.slow
def test_the_mlstm_conf_trains_on_padded_text_is_stored_and_predicts(compose, tracking_uri):
    """Sentiment: padded text through an embedding, so the chunks see a mask; 40 steps in
    chunks of 16, the last one padded. The masked-text run of this file: the sLSTM's masks
    are held to the step loop's above."""
    run_id = trained_and_stored(
        compose,
        tracking_uri,
        "mlstm",
        "task=sentiment",
        "task.max_examples=64",
        "cell.chunk_size=16",
    )
    texts = ["A gripping, funny and moving film.", "Dull, and far too long."]
    stored = load_stored_model(MlflowClient(tracking_uri), run_id)
    expected = stored.keras_model.predict(stored.task.vectorizer(texts), verbose=0)[:, 0]
    lines = predict(run_id, tracking_uri, texts)
    assert [float(line.split()[0]) for line in lines] == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_the_slstm_conf_trains_and_is_stored(compose, tracking_uri):
    """A tiny adding task, by the sLSTM's native ops. Its stored model reloads for
    `evaluate` as `predict` reloads the mLSTM's."""
    trained_and_stored(
        compose, tracking_uri, "slstm", "task=adding", "task.length=10", "task.max_examples=32"
    )
