"""rnnlab's native ops: they build, refuse bad shapes clearly, fail soft without a compiler."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from rnnlab.recurrence import cell_kinds, fused, native
from rnnlab.recurrence.layer import ProbedRNN
from rnnlab.recurrence.native import build
from rnnlab.recurrence.native.build import NativeBuild


@pytest.fixture
def fresh_ops():
    """recurrence_ops() as a new process would see it; the real library again afterwards."""
    native.native_status.cache_clear()
    native.recurrence_ops.cache_clear()
    yield native.recurrence_ops
    native.native_status.cache_clear()
    native.recurrence_ops.cache_clear()


def build_in(directory, compiler=None) -> NativeBuild:
    """This machine's build of the real ops, kept in `directory` instead of the shared one."""
    return NativeBuild(
        build.SOURCES,
        build.this_cpu(),
        compiler or build.this_compiler(),
        tf.__version__,
        directory,
    )


def test_without_a_compiler_one_warning_and_the_lstm_still_runs(
    fresh_ops, tmp_path, monkeypatch, caplog
):
    missing = build.Compiler(str(tmp_path / "no-such-compiler"), "")
    monkeypatch.setattr(native, "native_build", lambda: build_in(tmp_path, missing))
    with caplog.at_level(logging.WARNING, logger="rnnlab"):
        assert fresh_ops() is None
    assert "native recurrence ops are off" in caplog.text
    assert "no C++ compiler" in caplog.text and "apt-get install g++" in caplog.text
    assert not list(tmp_path.glob("**/*.so*"))  # no half-written library left behind
    sequences = tf.random.normal((2, 3, 4), seed=0)
    assert ProbedRNN(layers.LSTMCell(5))(sequences).shape == (2, 5)


def test_a_failed_build_warns_with_its_first_error_and_its_log(
    fresh_ops, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(native, "native_build", lambda: build_in(tmp_path))
    monkeypatch.setattr(build, "flag_sets", lambda cpu: [("-fno-such-option-rnnlab",)])
    with caplog.at_level(logging.WARNING, logger="rnnlab"):
        assert fresh_ops() is None
    (message,) = [r.getMessage() for r in caplog.records if "native" in r.getMessage()]
    assert "error:" in message and "-fno-such-option-rnnlab" in message
    log = next(tmp_path.glob("**/build.log"))
    assert f"full log: {log}" in message
    assert native.describe(native.native_status()).startswith("native ops: off (")


def test_the_switch_turns_them_off(fresh_ops, monkeypatch):
    monkeypatch.setenv(native.SWITCH, "0")
    assert fresh_ops() is None
    assert "RNNLAB_NATIVE=0" in native.describe(native.native_status())


# A TensorFlow op of a few lines: TensorFlow's headers and flags, as the real ops take them.
ANSWER_OP = Path(__file__).parent / "fixtures" / "answer_op.cc"
# What a new process runs: the op's build from the same folder, then rnnlab's entry point
# (`python -m rnnlab.recurrence.native`) on the real ops.
SECOND_PROCESS = """
import runpy, sys
from pathlib import Path
import tensorflow as tf
from rnnlab.recurrence.native import build
source, folder = map(Path, sys.argv[1:3])
del sys.argv[1:]
op = build.NativeBuild((source,), build.this_cpu(), build.this_compiler(), tf.__version__, folder)
found = op.build(tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags())
print("answer", tf.load_op_library(str(found.library)).rnnlab_answer().numpy())
runpy.run_module("rnnlab.recurrence.native", run_name="__main__")
"""


@pytest.mark.slow
def test_a_tensorflow_op_builds_past_a_rejected_flag_and_a_second_process_reuses_the_builds(
    native_ops, tmp_path, monkeypatch
):
    """The chain with TensorFlow's headers and flags, past a rejected flag set, on an op of a
    few lines: the real sources take a minute, and this session already loaded their build
    (`make install` made it, or `native_ops` on first use), which stands for them. A new
    process then loads both without compiling: the op from the same folder, the real ops from
    RNNLAB_NATIVE_DIR."""
    real = native.native_status()  # the real ops' build, by the chain unchanged
    chain = build.flag_sets(build.this_cpu())
    monkeypatch.setattr(build, "flag_sets", lambda cpu: [("-fno-such-option-rnnlab",), *chain])
    op_build = NativeBuild(
        (ANSWER_OP,), build.this_cpu(), build.this_compiler(), tf.__version__, tmp_path
    )
    built = op_build.build(tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags())
    # The first set g++ 12 takes: -march=native itself, except on a CPU with AVX512-FP16,
    # where TensorFlow's Eigen needs -mno-avx512fp16 as well (the set after it).
    expected = chain[1] if "avx512_fp16" in build.this_cpu().flags else chain[0]
    assert built.library is not None and built.flags == expected
    assert "-fno-such-option-rnnlab" in built.log.read_text()
    assert real.library is not None and real.flags == expected
    second = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, str(ANSWER_OP), str(tmp_path)],
        env={
            **os.environ,
            build.DIRECTORY_VARIABLE: str(real.library.parents[2]),
            native.SWITCH: "1",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert "answer 42" in second.stdout
    assert f"native ops: on ({real.library}" in second.stdout
    assert "compiling" not in second.stderr


def test_shapes_that_disagree_are_refused_with_a_reason(native_ops):
    ops = native_ops
    units, rows, steps = 3, 2, 4
    states, none = tf.zeros((rows, units)), tf.zeros([0])
    kernel = tf.zeros((units, 4 * units))

    def forward(projected, kernel=kernel, bias=none, keep=none):
        return ops.rnnlab_lstm_forward(
            projected=projected,
            recurrent_kernel=kernel,
            recurrent_bias=bias,
            initial_h=states,
            initial_c=states,
            keep=keep,
        )

    projected = tf.zeros((steps, rows, 4 * units))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"recurrent_kernel must be \[H, gates × H\]"
    ):
        forward(projected, kernel=tf.zeros((units, 3 * units)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="projected must be"):
        forward(tf.zeros((steps, rows, 3 * units)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="keep must be"):
        forward(projected, keep=tf.ones((steps, rows + 1, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="recurrent_bias must be"):
        forward(projected, bias=tf.ones(5))
    h, c, gates = forward(projected)
    # Zero pre-activations: sigmoid gates at 1/2, candidate 0, so the states stay at zero.
    np.testing.assert_array_equal(gates[..., :units], 0.5)
    np.testing.assert_array_equal(h, 0.0)
    assert c.shape == (steps, rows, units)


KINDS = {"simple_rnn": cell_kinds.SIMPLE_RNN, "lstm": cell_kinds.LSTM, "gru": cell_kinds.GRU}
# The ops' inputs as REGISTER_OP names them (native/fused_cells.cc), in their order.
FORWARD_INPUTS = [
    *("projected", "recurrent_kernel", "recurrent_bias", "initial_h", "initial_c", "keep")
]
BACKWARD_INPUTS = [
    *("records", "h", "c", "initial_h", "initial_c", "recurrent_kernel"),
    *("d_h", "d_final_h", "d_final_c", "keep"),
]


SLSTM_FORWARD_INPUTS = [
    *("projected", "recurrent_kernel", "initial_h", "initial_c", "initial_n", "initial_m", "keep")
]
SLSTM_BACKWARD_INPUTS = [
    *("records", "c", "n", "initial_c", "initial_n", "recurrent_kernel", "d_h"),
    *("d_final_h", "d_final_c", "d_final_n", "d_final_m", "keep"),
]


def input_names(op) -> list[str]:
    """The inputs of a loaded op's Python function, which TensorFlow writes from its
    REGISTER_OP, in order (its attributes and `name` after them)."""
    names = list(inspect.signature(op).parameters)
    return names[: names.index("name")]


def test_the_ops_take_their_inputs_by_these_names_in_this_order(native_ops):
    """The Python side calls the ops by keyword: a renamed input fails loudly, and a reordered
    one, which positional calls would have fed the wrong tensor, changes nothing."""
    for kind in KINDS.values():
        assert input_names(getattr(native_ops, f"rnnlab_{kind.native}_forward")) == FORWARD_INPUTS
        backward = getattr(native_ops, f"rnnlab_{kind.native}_backward")
        assert input_names(backward) == BACKWARD_INPUTS
    assert input_names(native_ops.rnnlab_slstm_forward) == SLSTM_FORWARD_INPUTS
    assert input_names(native_ops.rnnlab_slstm_backward) == SLSTM_BACKWARD_INPUTS


def random_tensor(rng, *shape):
    return tf.constant(rng.normal(size=shape).astype(np.float32))


def op_arguments(ops, kind, steps=4, rows=3, units=2, seed=0):
    """Valid random arguments for `kind`'s forward op, and for its backward op after it, by
    input name."""
    rng = np.random.default_rng(seed)
    gates = kind.gates * units
    second_state = (rows, units) if kind.states == 2 else (0,)
    keep = tf.constant(rng.integers(0, 2, size=(steps, rows, 1)).astype(np.float32))
    forward = {
        "projected": random_tensor(rng, steps, rows, gates),
        "recurrent_kernel": random_tensor(rng, units, gates) * 0.5,
        "recurrent_bias": random_tensor(rng, gates) if kind is cell_kinds.GRU else tf.zeros([0]),
        "initial_h": random_tensor(rng, rows, units),
        "initial_c": random_tensor(rng, *second_state),
        "keep": keep,
    }
    h, c, records = getattr(ops, f"rnnlab_{kind.native}_forward")(**forward)
    backward = {
        "records": records,
        "h": h,
        "c": c,
        **{name: forward[name] for name in ("initial_h", "initial_c", "recurrent_kernel")},
        "d_h": random_tensor(rng, steps, rows, units),
        "d_final_h": random_tensor(rng, rows, units),
        "d_final_c": random_tensor(rng, *second_state),
        "keep": keep,
    }
    return forward, backward


def slstm_op_arguments(ops, steps=4, rows=3, heads=2, width=2, seed=0):
    """As `op_arguments`, for the sLSTM's ops: R [heads, w, 4w], four states."""
    rng = np.random.default_rng(seed)
    units = heads * width
    keep = tf.constant(rng.integers(0, 2, size=(steps, rows, 1)).astype(np.float32))
    states = ("initial_h", "initial_c", "initial_n", "initial_m")
    forward = {
        "projected": random_tensor(rng, steps, rows, 4 * units),
        "recurrent_kernel": random_tensor(rng, heads, width, 4 * width) * 0.5,
        **{name: random_tensor(rng, rows, units) for name in states},
        "keep": keep,
    }
    forward["initial_n"] = tf.abs(forward["initial_n"]) + 0.5  # a normaliser is positive
    _, c, n, _, records = ops.rnnlab_slstm_forward(**forward)
    backward = {
        "records": records,
        "c": c,
        "n": n,
        **{name: forward[name] for name in ("initial_c", "initial_n", "recurrent_kernel")},
        "d_h": random_tensor(rng, steps, rows, units),
        **{f"d_final_{s}": random_tensor(rng, rows, units) for s in "hcnm"},
        "keep": keep,
    }
    return forward, backward


def one_too_many(tensor):
    """A shape that disagrees: the last axis one longer, or a [3]-shaped where empty is due."""
    shape = tensor.shape.as_list()
    return tf.zeros([*shape[:-1], shape[-1] + 1] if shape != [0] else [3])


@pytest.mark.parametrize("name", [*KINDS, "slstm"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_every_input_of_the_raw_ops_is_checked_against_the_others(native_ops, name, direction):
    if name == "slstm":
        forward, backward = slstm_op_arguments(native_ops)
    else:
        forward, backward = op_arguments(native_ops, KINDS[name])
    arguments = forward if direction == "forward" else backward
    op = getattr(native_ops, f"rnnlab_{name}_{direction}")
    op(**arguments)  # the valid call runs
    for input_name, tensor in arguments.items():
        wrong = {**arguments, input_name: one_too_many(tensor)}
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"\b{input_name} must be"):
            op(**wrong)
    # keep as [T, B]: as many elements as [T, B, 1], but not the layout the loop reads.
    wrong = {**arguments, "keep": tf.squeeze(arguments["keep"], -1)}
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"keep must be \[T, B, 1\]"):
        op(**wrong)


@pytest.mark.parametrize("name", KINDS)
def test_the_backward_op_matches_differentiating_the_graph_loop(native_ops, name, monkeypatch):
    """Called directly, with random states, weights, masks and upstream gradients."""
    kind = KINDS[name]
    forward, backward = op_arguments(native_ops, kind, steps=6, rows=5, units=4, seed=3)
    projected, kernel, bias = (
        forward[k] for k in ("projected", "recurrent_kernel", "recurrent_bias")
    )
    states = [forward["initial_h"], forward["initial_c"]][: kind.states]
    monkeypatch.setattr(fused, "recurrence_ops", lambda: None)  # the graph loop
    with tf.GradientTape() as tape:
        tape.watch([projected, *states])
        biases = (bias,) if bias.shape[0] else ()
        history, final = fused.recurrence(kind, projected, kernel, biases, states, forward["keep"])
        upstream = [backward["d_final_h"], backward["d_final_c"]][: kind.states]
        loss = tf.reduce_sum(history * backward["d_h"]) + sum(
            tf.reduce_sum(f * u) for f, u in zip(final, upstream)
        )
    expected = tape.gradient(loss, [projected, *states])
    gradients = getattr(native_ops, f"rnnlab_{kind.native}_backward")(**backward)
    mine = [gradients.d_projected, gradients.d_initial_h, gradients.d_initial_c]
    for ours, reference in zip(mine, expected):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
