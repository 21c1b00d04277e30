"""`python -m rnnlab.native`: build the native ops now (make install runs it)."""

from rnnlab.native import build

print(f"rnnlab native ops: {build()}")
