"""`python -m rnnlab.native`: build the native ops now (make install runs it); never fails."""

from rnnlab.native import library_path, recurrence_ops

if recurrence_ops() is not None:
    print(f"rnnlab native ops: {library_path()}")
