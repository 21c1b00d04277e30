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
    fused recurrence's shards, `parallel_shards`) do: measured in docs/results/benchmarks.md.
    Pools set earlier (a sweep worker's share) stay; TensorFlow fixes its pools when it
    starts, so a running one keeps its own.
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


# Row shards per inter-op thread, by how a recurrence runs: rnnlab's native ops (a shard
# costs little more than its rows), or TensorFlow's graph loop (a shard is a loop of ~25
# small ops a step, each paying dispatch: 4 shards took 15% more CPU than 2 on 2 cores).
SHARDS_PER_THREAD = {"native": 2, "graph": 1}


def parallel_shards(route: str = "native") -> int:
    """How many row shards a recurrence splits a batch into: for rnnlab's native ops two
    per inter-op thread (else per core), for the graph loop one; one for a single thread.

    The shards of a step are independent ops (or, for the scans, pieces one op hands out),
    and every thread takes the next one as soon as it is free. With one shard per thread, a
    core that another process shares holds every step back until its shard is done, so the
    whole step runs at that core's share (an LSTM's epochs flipped between ~2.7 s and ~5 s
    on a 2-core machine shared with other jobs); with two per thread, the free thread takes
    the other core's second one. Measured on 2 cores with a process taking half of one:
    native LSTM epochs 2.4× faster with 4 shards than 2, at the same CPU time per epoch
    (docs/results/benchmarks.md, issue 47).
    """
    import tensorflow as tf

    threads = tf.config.threading.get_inter_op_parallelism_threads() or available_cores()
    return threads if threads == 1 else SHARDS_PER_THREAD[route] * threads
