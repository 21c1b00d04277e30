"""rnnlab: compare recurrent cells honestly."""

import os

# TensorFlow's default CPU allocator hands large tensors back to the system after each op, so
# the next op's output is fresh memory that the kernel must fault in page by page: on these
# virtual machines that costs about 1 ms per MB, more than the arithmetic. Its BFC allocator
# keeps the pages: a GRU at T = 1000 trains 1.3-1.5x faster (benchmarks/RESULTS.md). It
# must be chosen before TensorFlow starts; a user's own setting wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

__version__ = "0.1.0"
