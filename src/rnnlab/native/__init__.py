"""rnnlab's own TensorFlow ops: compiled once on this machine, for its CPU, then loaded.

`make install` builds them (`python -m rnnlab.native`); a changed source or TensorFlow
rebuilds on first use. Where they cannot build (no C++ compiler), one warning says why and
rnnlab.fused_rnn computes the same maths in TensorFlow's graph, slower. RNNLAB_NATIVE=0
turns them off.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import tensorflow as tf

SOURCE = Path(__file__).with_name("recurrence_kernels.cc")
SWITCH = "RNNLAB_NATIVE"


def library_path() -> Path:
    """Named by the source's hash and TensorFlow's version: either changing rebuilds."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    return SOURCE.with_name(f"_recurrence_kernels.{digest}.tf{tf.__version__}.so")


def build(compiler: str | None = None) -> Path:
    """Compiles the ops unless this source's library exists; returns the library's path."""
    target = library_path()
    if target.exists():
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # workers may race
    command = [
        compiler or os.environ.get("CXX", "g++"),
        *("-std=c++17", "-shared", "-fPIC", "-O3", "-march=native"),
        "-Wno-deprecated-declarations",
        *tf.sysconfig.get_compile_flags(),
        str(SOURCE),
        *("-o", str(partial)),
        *tf.sysconfig.get_link_flags(),
    ]
    print("compiling rnnlab's native ops for this CPU (once, about 30 s)", file=sys.stderr)
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


@functools.cache
def recurrence_ops():
    """The loaded recurrence ops, or None when they are switched off or cannot be built."""
    if os.environ.get(SWITCH, "1") == "0":
        return None
    try:
        return tf.load_op_library(str(build()))
    except (OSError, subprocess.CalledProcessError, tf.errors.OpError) as error:
        output = getattr(error, "stderr", None) or str(error)
        reason = output.strip().splitlines()[-1] if output.strip() else type(error).__name__
        logging.getLogger("rnnlab").warning(
            "rnnlab's native recurrence ops are unavailable (%s); cells run in TensorFlow's graph",
            reason,
        )
        return None
