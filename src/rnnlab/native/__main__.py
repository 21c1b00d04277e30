"""`python -m rnnlab.native`: build the native ops now (make install runs it); never fails."""

from rnnlab.native import library_path, lstm_ops

if lstm_ops() is not None:
    print(f"rnnlab native ops: {library_path()}")
