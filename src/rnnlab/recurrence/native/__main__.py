"""`python -m rnnlab.recurrence.native [--rebuild]`: build the native ops now and say, in one
line, if they are on (make install ends with it). Never fails: without them rnnlab runs,
slower."""

import sys

from rnnlab.recurrence.native import describe, native_status

print(f"rnnlab {describe(native_status(rebuild='--rebuild' in sys.argv[1:]))}")
