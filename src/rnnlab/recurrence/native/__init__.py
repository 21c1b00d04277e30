"""rnnlab's own TensorFlow ops: compiled once per CPU, compiler and TensorFlow, then loaded.

A recurrence's time loop in TensorFlow's graph pays a few microseconds of dispatch for each
of a step's small ops; in C++ a whole sequence is one op each way. The sources: checks.h
(the inputs by name and their shape checks), fused_cells.cc (Keras's SimpleRNN, LSTM and
GRU; xLSTM's sLSTM) and scans.cc (minGRU, minLSTM, LRU, RG-LRU, HGRN, IndRNN, S6);
`rnnlab.recurrence.native_calls` calls them.
`make install` builds them (`python -m rnnlab.recurrence.native`); `build` says where and
with which flags. Where they cannot build, one warning names the compiler's first error
and its log, and the same maths runs in TensorFlow's ops, slower
(`rnnlab.recurrence.graph_loop`, `rnnlab.recurrence.scan`). RNNLAB_NATIVE=0 turns them
off; RNNLAB_NATIVE=rebuild (or `rnnlab native --rebuild`) forgets an earlier outcome and
compiles again.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import replace

import tensorflow as tf

from rnnlab.recurrence.native.build import (
    SOURCES,
    BuildResult,
    NativeBuild,
    default_directory,
    this_compiler,
    this_cpu,
)

SWITCH = "RNNLAB_NATIVE"


def native_build() -> NativeBuild:
    """This machine's build of the ops: its CPU, compiler and TensorFlow."""
    return NativeBuild(SOURCES, this_cpu(), this_compiler(), tf.__version__, default_directory())


@functools.cache
def native_status(rebuild: bool = False) -> BuildResult:
    """The library to load, or why there is none; builds it on first use."""
    switch = os.environ.get(SWITCH, "1")
    if switch == "0":
        return BuildResult(None, reason=f"switched off by {SWITCH}=0", fix=f"unset {SWITCH}")
    build = native_build()
    if rebuild or switch == "rebuild":
        build.forget()
    result = build.build(tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags())
    if result.library is None:
        return result
    try:
        tf.load_op_library(str(result.library))
    except (OSError, tf.errors.OpError) as error:
        message = str(error).strip().splitlines()
        reason = f"the library did not load: {message[0] if message else type(error).__name__}"
        return replace(result, library=None, reason=reason, fix="`rnnlab native --rebuild`")
    return result


@functools.cache
def recurrence_ops():
    """The loaded recurrence ops, or None (with one warning saying why) when unavailable."""
    status = native_status()
    if status.library is None:
        if not status.reason.startswith("switched off"):
            logging.getLogger("rnnlab").warning(
                "rnnlab's native recurrence ops are off, cells run in TensorFlow's graph, "
                "slower: %s%s; fix: %s",
                status.reason,
                f" (full log: {status.log})" if status.log and status.log.exists() else "",
                status.fix,
            )
        return None
    return tf.load_op_library(str(status.library))


def describe(status: BuildResult) -> str:
    """One plain line: on (where, with which flags) or off (why, and how to fix it)."""
    if status.library is not None:
        flags = " ".join(status.flags) or "the compiler's portable defaults"
        return f"native ops: on ({status.library}, built with {flags})"
    log = f"; log: {status.log}" if status.log and status.log.exists() else ""
    return f"native ops: off ({status.reason}{log}); fix: {status.fix}"
