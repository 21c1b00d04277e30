"""A command's stderr is rnnlab's own: TensorFlow's and MLflow's start-up notes show only with
--verbose, and the filter that hides them loses nothing, even when the command aborts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from command_checks import TINY_ADDING

from rnnlab.chatter import forward, is_chatter

# As TensorFlow 2.21 and MLflow 3 write them, on a CPU with AVX-512.
CHATTER_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796450629.265201   28187 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors.",
    "E0000 00:00:1796450631.112233   28187 util.cc:131] oneDNN supports DT_BOOL only on "
    "platforms with AVX-512. Falling back to the default Eigen-based implementation if present.",
]
KEPT_LINES = [
    "W0000 00:00:1796450631.112233   28187 cpu_allocator_impl.cc:83] Allocation of 400000000 "
    "exceeds 10% of free system memory.",
    "Epoch 1/3",
    "rnnlab: task.length must be at least 1, got 0",
    "I0000 but not the format of TensorFlow's notes",
]


def filtered(data: bytes) -> bytes:
    source, sink = os.pipe()
    result, out = os.pipe()
    os.write(sink, data)
    os.close(sink)
    forward(source, out)
    os.close(out)
    with os.fdopen(result, "rb") as reader:
        return reader.read()


def test_only_the_known_chatter_is_dropped():
    assert all(is_chatter(line.encode()) for line in CHATTER_LINES)
    mixed = [line for pair in zip(CHATTER_LINES, KEPT_LINES, strict=False) for line in pair]
    text = "\n".join([*mixed, *KEPT_LINES[3:]]) + "\n"
    assert filtered(text.encode()).decode() == "\n".join(KEPT_LINES) + "\n"
    assert filtered(b"progress 10%\rprogress 20%") == b"progress 10%\rprogress 20%"


def test_what_a_command_wrote_before_it_aborted_is_forwarded():
    """The filter is a process of its own: a native abort of the command loses no line."""
    script = textwrap.dedent(
        """
        import os, sys
        from rnnlab.chatter import quiet_stderr
        quiet_stderr()
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. x\\n")
        for number in range(2000):
            os.write(2, f"line {number}\\n".encode())
        os.abort()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode < 0  # SIGABRT
    assert result.stderr.splitlines() == [f"line {number}" for number in range(2000)]


TINY_TRAIN = ["train", *TINY_ADDING]


@pytest.mark.slow
def test_rnnlab_train_prints_its_own_lines_and_the_libraries_with_verbose(tmp_path):
    def train(*extra: str) -> subprocess.CompletedProcess:
        uri = f"sqlite:///{tmp_path}/{len(extra)}/mlflow.db"  # a new store: MLflow notes it
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_LOG")}
        return subprocess.run(
            [sys.executable, "-m", "rnnlab.cli", *TINY_TRAIN, f"tracking.uri={uri}", *extra],
            cwd=tmp_path,
            env={**environment, "RNNLAB_VERBOSE": ""},
            capture_output=True,
            text=True,
            timeout=300,
        )

    quiet = train()
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr == "", "no line on stderr when nothing went wrong"
    assert "test loss: " in quiet.stdout
    verbose = train("--verbose")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert CHATTER_LINES[0] in verbose.stderr.splitlines()
    assert "oneDNN custom operations are on" in verbose.stderr
    assert "Creating initial MLflow database tables" in verbose.stderr
