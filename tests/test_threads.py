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
