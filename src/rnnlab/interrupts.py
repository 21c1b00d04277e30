"""A stop (Ctrl-C, or a SIGTERM from `kill` or a cluster's scheduler) and the error it leaves.

Python raises KeyboardInterrupt wherever the signal lands. When that is inside TensorFlow
(its C++ calling back into Python), the interrupt can come out as another error: a
SystemError caused by it, or a TypeError from a value converted halfway, with nothing
linking it to the interrupt (both seen in CI on a SIGTERM). So the handler here notes that
a stop was asked for before it raises, and any error after that counts as the stop: the
run ends KILLED and the command says it stopped, instead of a FAILED run and a traceback.
The stop is also sticky: code that swallows what the signal raised (a library's broad
`except`) would train on, so training checks `raise_if_stopping` after every batch and a
worker before every point or trial. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import signal

_stop_asked = False


def _stop(signum, frame):
    """The first stop signal raises; a repeat only finds the stop under way. Raising again
    would break the ending it interrupts (a run tagged but never ended KILLED, which
    MLflow's exit hook then ends FINISHED), and repeats come unasked: a worker whose parent
    was killed outright got its parent-death SIGTERM twice, one per dying thread."""
    global _stop_asked
    if _stop_asked:
        return
    _stop_asked = True
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Stop this process on SIGTERM as on Ctrl-C. SIGINT keeps being ignored where it is:
    a command started in a script's background inherits it ignored, and so do its workers."""
    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _stop)


def raise_if_stopping() -> None:
    """Raise KeyboardInterrupt, from plain Python, if a stop signal has arrived."""
    if _stop_asked:
        raise KeyboardInterrupt


def interrupted(error: BaseException | None) -> bool:
    """Whether `error` is a stop: a KeyboardInterrupt, anything raised after a stop signal
    reached this process, or an error whose cause or context is a KeyboardInterrupt."""
    if _stop_asked:
        return True
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, KeyboardInterrupt):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False
