"""TensorFlow's thread pools: set once, and never overriding a sweep worker's share."""

from __future__ import annotations

import tensorflow as tf

from rnnlab import threads


def test_configure_threads_keeps_pools_already_chosen(monkeypatch):
    calls = []
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 1)
    for pool in ("intra", "inter"):
        monkeypatch.setattr(
            tf.config.threading,
            f"set_{pool}_op_parallelism_threads",
            lambda n, pool=pool: calls.append((pool, n)),
        )
    threads.configure_threads()
    assert calls == []  # a sweep worker's share stays
    threads.configure_threads(cores=1)
    assert calls == [("intra", 1), ("inter", 1)]


def test_native_ops_split_a_batch_into_two_shards_per_thread_the_graph_loop_one(monkeypatch):
    """Two shards per thread for the native ops, so a thread whose core is busy hands one
    over; one for the graph loop, whose shards each cost a loop of small ops."""
    for inter_op, native, graph in ((2, 4, 2), (3, 6, 3), (1, 1, 1)):
        monkeypatch.setattr(
            tf.config.threading, "get_inter_op_parallelism_threads", lambda: inter_op
        )
        assert threads.parallel_shards() == threads.parallel_shards("native") == native
        assert threads.parallel_shards("graph") == graph
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 0)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert threads.parallel_shards() == 4  # TensorFlow's default pool: one thread per core
