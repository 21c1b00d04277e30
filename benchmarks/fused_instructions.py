"""CPU time and instructions of rnnlab's fused-cell kernels (SimpleRNN, LSTM, GRU) per pass.

`fused_instructions.cc` runs the forward and the backward pass of one shard of the
reference shape (100 steps, 32 rows, 128 units) outside TensorFlow. Each pass is timed by
its thread's CPU clock, fastest of `--repeats`: on a machine whose cores other jobs share,
a thread's CPU time moves a few percent where a wall clock moves 2×. With `--callgrind`,
valgrind also counts the instructions of each pass, which do not move at all; valgrind
3.19 cannot decode AVX-512, so that count is of a build for x86-64-v3 (AVX2), the
nearest that it runs. Needs a C++ compiler; valgrind for `--callgrind`.

    .venv/bin/python benchmarks/fused_instructions.py
    .venv/bin/python benchmarks/fused_instructions.py --kernels /tmp/old/fused_cells.cc --callgrind
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tensorflow as tf
from scan_instructions import callgrind_count  # benchmarks/, the script's own folder

from rnnlab.recurrence.native.build import SOURCE_DIRECTORY, flag_sets, this_compiler, this_cpu

DRIVER = Path(__file__).with_name("fused_instructions.cc")
KERNELS = SOURCE_DIRECTORY / "fused_cells.cc"  # it includes checks.h beside it
CELLS = ("simple_rnn", "lstm", "gru")
PASSES = {"forward": "ForwardSequence", "backward": "BackwardSequence"}
AVX2 = ("-march=x86-64-v3",)


def build_driver(kernels: Path, program: Path, flag_choices) -> tuple[Path, tuple[str, ...]]:
    """The driver compiled against `kernels` with the first of `flag_choices` that builds."""
    errors = []
    for flags in flag_choices:
        command = [
            this_compiler().command,
            *("-std=c++17", "-O3", "-g", *flags, "-Wno-deprecated-declarations"),
            *tf.sysconfig.get_compile_flags(),
            f'-DKERNELS="{kernels.resolve()}"',
            str(DRIVER),
            *("-o", str(program)),
            *tf.sysconfig.get_link_flags(),
            f"-Wl,-rpath,{tf.sysconfig.get_lib()}",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            return program, flags
        errors.append(result.stderr.strip().splitlines()[-1:])
    raise SystemExit(f"could not build {DRIVER.name}: {errors}")


def milliseconds(program: Path, cell: str, repeats: int) -> tuple[float, float]:
    """(forward, backward) thread CPU milliseconds, fastest of `repeats`."""
    output = subprocess.run(
        [str(program), cell, "100", "32", "128", str(repeats)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.search(r"forward ([\d.]+) ms, backward ([\d.]+) ms", output)
    if found is None:
        raise SystemExit(f"unexpected output from {program.name}: {output}")
    return float(found.group(1)), float(found.group(2))


def instructions(program: Path, cell: str, function: str, folder: Path) -> int:
    """Instructions executed inside `function` (and what it calls) for one pass."""
    command = [str(program), cell, "100", "32", "128", "1"]
    return callgrind_count(command, function, folder / f"callgrind.{cell}.{function}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=Path, default=KERNELS, help="the fused cells' source")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--repeats", type=int, default=30, help="passes timed; fastest kept")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions")
    options = parser.parse_args()
    if options.callgrind and shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as folder:
        native, flags = build_driver(
            options.kernels, Path(folder) / "native", flag_sets(this_cpu())
        )
        counted = None
        if options.callgrind:
            counted, _ = build_driver(options.kernels, Path(folder) / "avx2", [AVX2])
        print(f"{options.kernels} on {this_cpu().model}, built with {' '.join(flags)}")
        print("100 steps × 32 rows × 128 units; ms of thread CPU, fastest pass")
        header = "| cell | forward ms | backward ms |"
        if counted:
            header += " forward instructions (AVX2) | backward instructions (AVX2) |"
        print(f"\n{header}\n" + "|---" * header.count(" |") + "|")
        for cell in options.cells:
            forward, backward = milliseconds(native, cell, options.repeats)
            row = f"| {cell} | {forward:.2f} | {backward:.2f} |"
            if counted:
                counts = [
                    instructions(counted, cell, function, Path(folder))
                    for function in PASSES.values()
                ]
                row += "".join(f" {count / 1e6:.1f} M |" for count in counts)
            print(row, flush=True)


if __name__ == "__main__":
    main()
