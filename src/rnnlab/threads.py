"""How many cores this process may use, and how TensorFlow's thread pools share them.

TensorFlow is imported only inside the functions that set it: a sweep's parent process
counts cores for its workers without loading TensorFlow.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads(cores: int | None = None) -> None:
    """One thread per op, and as many ops at a time as this process has cores (default all).

    The recurrence's small matmuls run no faster on two threads, while independent ops (the
    fused recurrence's shards) do: measured in benchmarks/RESULTS.md. Pools set earlier (a
    sweep worker's share) stay; TensorFlow fixes its pools when it starts, so a running one
    keeps its own.
    """
    import tensorflow as tf

    threading = tf.config.threading
    if cores is None and threading.get_inter_op_parallelism_threads():
        return
    try:
        threading.set_intra_op_parallelism_threads(1)
        threading.set_inter_op_parallelism_threads(cores or available_cores())
    except RuntimeError:
        pass


def parallel_shards() -> int:
    """How many recurrences to run side by side: TensorFlow's inter-op threads, else cores."""
    import tensorflow as tf

    return tf.config.threading.get_inter_op_parallelism_threads() or available_cores()
