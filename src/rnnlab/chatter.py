"""The libraries' start-up chatter kept off a command's stderr, by a process of its own.

TensorFlow's C++ static initialisers write to fd 2 while it is imported, before any setting
that Python can make is read: `TF_CPP_MIN_LOG_LEVEL` does not stop them, and only
`TF_ENABLE_ONEDNN_OPTS=0`, which changes the numerics, silences the oneDNN lines. A newcomer
reads their `E0000 ...` as a failure. So the command's fd 2 becomes a pipe into a small filter
process that forwards every line except the known chatter (CHATTER) to the real stderr.

The filter is a separate process, not a thread of the command: whatever the command wrote
before a native abort is in the pipe, and the filter forwards it after the command is gone.
The command keeps its pid and receives its signals itself; the filter ignores Ctrl-C (the
terminal sends it to both) and ends when every writer of the pipe has closed it. `--verbose`
(or RNNLAB_VERBOSE=1) starts no filter. Run as a script, this module is the filter: it
imports nothing but the standard library, and starts with `python -I -S` in about 20 ms.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import sys

# Each a line TensorFlow writes on every start-up, whatever the run does. Anything else,
# TensorFlow's real warnings and errors included, is forwarded.
CHATTER = (
    # absl's note on its first message, before TensorFlow has set its logging up.
    re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    # oneDNN's note that results may differ in the last bits from other orders of summing.
    re.compile(rb"^I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\."),
    # On a CPU with AVX-512, oneDNN's note that its bool kernels need it: no failure.
    re.compile(rb"^E\d{4} [\d:. ]+\d+ \S+\] oneDNN supports DT_BOOL only on platforms with"),
    # The build's note that it could use more CPU instructions than it was compiled for.
    re.compile(rb"^I\d{4} [\d:. ]+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary"),
)
# A line that may still grow into chatter is held until it ends; any other is forwarded at
# once, so a progress bar that redraws with \r shows as it goes.
MAY_BE_CHATTER = re.compile(rb"^(W|WA|WAR|WARN|WARNI|WARNIN|WARNING.*|[IE]\d{0,4}( .*)?)$")
FILTER_WAIT_SECONDS = 5.0  # at exit, for the filter to write the last lines out


def is_chatter(line: bytes) -> bool:
    return any(pattern.match(line) for pattern in CHATTER)


def forward(source: int = 0, target: int = 1) -> None:
    """Copy `source` to `target`, dropping the chatter lines, until `source` ends."""
    pending = b""
    while chunk := os.read(source, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = [line + b"\n" for line in lines if not is_chatter(line)]
        if pending and not MAY_BE_CHATTER.match(pending):
            kept.append(pending)
            pending = b""
        if kept:
            os.write(target, b"".join(kept))
    if pending and not is_chatter(pending):
        os.write(target, pending)


def quiet_stderr() -> None:
    """Route this process's fd 2 (and its children's) through a filter process. The real
    stderr is put back at exit, and the filter waited for, so its last lines come before the
    shell's prompt."""
    if os.environ.get("RNNLAB_VERBOSE") == "1":
        return
    read_end, write_end = os.pipe()
    original = os.dup(2)
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__)],
            stdin=read_end,
            stdout=original,
            close_fds=True,
        )
    except OSError:  # no filter: the chatter shows, nothing else changes
        for descriptor in (read_end, write_end, original):
            os.close(descriptor)
        return
    os.close(read_end)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last writer here: the filter then sees its end
        # A child that still holds the pipe: the filter ends with it, on its own.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=FILTER_WAIT_SECONDS)

    atexit.register(restore)


if __name__ == "__main__":
    # Ctrl-C, or a SIGTERM to the whole job, is the command's to handle: the filter ends
    # when the command's last line is out, not before.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    forward()
