"""Worker processes on this machine: the cores split between them, and a GPU each.

The local launcher (launchers.py) starts a sweep's or a grid's workers here when there
are several. Each worker is a fresh process (spawned, so each loads its own TensorFlow)
with its share of the cores as TensorFlow threads, and, where the machine has GPUs, one
GPU given round-robin through CUDA_VISIBLE_DEVICES before TensorFlow starts. Nothing here
imports TensorFlow.

A SIGTERM (`kill`, a cluster's scheduler) is Ctrl-C here: the parent passes it on to its
workers and waits for them, and each worker ends its run as Ctrl-C ends it (KILLED, its
point or trial left to the next command). Without this a killed parent left its workers
training on as orphans. SIGTERM, not SIGINT, is what is passed on: a command started in
the background of a script inherits SIGINT ignored, and so do its workers. A parent killed
outright (SIGKILL, the OOM killer) passes on nothing, so on Linux each worker asks the
kernel for a SIGTERM of its own when its parent dies.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from rnnlab.interrupts import interrupted, stop_on_signals
from rnnlab.threads import available_cores


def visible_gpus() -> list[str]:
    """The GPUs this machine offers its workers: CUDA_VISIBLE_DEVICES where it is set (a
    SLURM job's share, or the user's choice), else every GPU `nvidia-smi` lists."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [device.strip() for device in given.split(",") if device.strip() not in ("", "-1")]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.strip().isdigit()]


def gpu_for(worker: int, gpus: Sequence[str]) -> str | None:
    """Round-robin: worker i gets GPU i mod n; more workers than GPUs share them."""
    return gpus[worker % len(gpus)] if gpus else None


# How long a stopped command waits for its workers to end their runs before it kills them.
STOP_SECONDS = 60


PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def stop_with_parent(parent: int) -> None:
    """A SIGTERM to this process when its parent dies, however it dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


def enter_worker(
    target: Callable, args: tuple, worker: int, threads: int, gpu: str | None, parent: int
):
    """In the new process, before TensorFlow loads: its GPU, then the worker's loop."""
    stop_on_signals()  # a kill ends its run as Ctrl-C
    stop_with_parent(parent)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    device = f", GPU {gpu}" if gpu is not None else ""
    try:
        target(*args, worker=worker, threads=threads, label=f"[worker {worker}{device}] ")
    except (Exception, KeyboardInterrupt) as error:
        if interrupted(error):  # its run has ended KILLED; the parent says what happened
            sys.exit(130)
        raise


def run_workers(target: Callable, args: tuple, workers: int) -> list[str]:
    """Run `target(*args, worker=, threads=, label=)` in `workers` processes and wait;
    returns a line for each one that died."""
    threads = max(1, available_cores() // workers)  # N workers together use the cores once
    gpus = visible_gpus()
    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow in each
    processes = []
    for worker in range(workers):
        gpu = gpu_for(worker, gpus)
        process = context.Process(
            target=enter_worker,
            args=(target, args, worker, threads, gpu, os.getpid()),
            daemon=False,
        )
        process.start()
        processes.append(process)
        device = f", GPU {gpu}" if gpu is not None else ""
        print(
            f"worker {worker}: pid {process.pid}, {threads} TensorFlow thread(s){device}",
            flush=True,
        )

    def pass_on(signum, frame):
        """A SIGTERM to this command alone (not to its process group, as Ctrl-C is)."""
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, pass_on)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:  # each ends its run; one that hangs is killed
            process.join(STOP_SECONDS)
            if process.is_alive():
                process.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return [
        f"worker {worker} (pid {process.pid}) exited with code {process.exitcode}"
        for worker, process in enumerate(processes)
        if process.exitcode != 0
    ]
