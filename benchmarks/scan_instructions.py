"""Instructions per lane and step of rnnlab's native scan kernels, counted by callgrind.

Wall-clock times on these machines are noisy (epochs flip between modes 2× apart, and
another job on the second core halves a race). Valgrind's callgrind counts the
instructions a function executes, the same on a loaded machine as on an idle one, so it
compares two versions of a kernel steadily: build one, count, change, count again.

`scan_instructions.cc` runs the forward and the backward row functions of each scan cell
(minGRU, minLSTM, LRU) over a few rows of 1,000 steps and 64 lanes, outside TensorFlow;
each pass is counted on its own (`--toggle-collect`). Inputs 2 wide take the narrow route
(the projection inside the step loop), 32 wide the GEMM route. Instructions are not time:
the exp's multiply-adds pipeline better than loads and branches, so read the counts
beside `recurrence_speed.py --cells modern`. Needs valgrind (Debian: `apt-get install
valgrind`) and a C++ compiler.

    .venv/bin/python benchmarks/scan_instructions.py
    .venv/bin/python benchmarks/scan_instructions.py --kernels /tmp/other_version/scans.cc
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

from rnnlab.recurrence.native.build import SOURCE_DIRECTORY, flag_sets, this_compiler, this_cpu

DRIVER = Path(__file__).with_name("scan_instructions.cc")
SCANS = SOURCE_DIRECTORY / "scans.cc"  # the scan kernels; it includes checks.h beside it
CELLS = ("mingru", "minlstm", "lru", "rglru", "hgrn")
STEPS, LANES = 1000, 64  # as in the driver
PASSES = {"forward": "ScanForwardRow", "backward": "ScanBackwardRow"}


def build_driver(kernels: Path, folder: Path) -> Path:
    """The driver compiled against `kernels` with the first flags this CPU accepts."""
    compiler = this_compiler()
    program = folder / "scan_instructions"
    errors = []
    for flags in flag_sets(this_cpu()):
        command = [
            compiler.command,
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
            return program
        errors.append(result.stderr.strip().splitlines()[-1:])
    raise SystemExit(f"could not build {DRIVER.name}: {errors}")


def count(program: Path, cell: str, rows: int, inputs: int, function: str, folder: Path) -> int:
    """Instructions executed inside `function` (and what it calls) for one run."""
    output = folder / f"callgrind.{cell}.{inputs}.{function}"
    return callgrind_count([str(program), cell, str(rows), str(inputs)], function, output)


def callgrind_count(command: list[str], function: str, output: Path) -> int:
    """Instructions callgrind counts inside `function` (and what it calls) while `command`
    runs: steady where wall clocks are not (fused_instructions.py counts with it too)."""
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={output}",
            f"--toggle-collect=*{function}*",
            *command,
        ],
        check=True,
        capture_output=True,
    )
    summary = re.search(r"^summary:\s*(\d+)", output.read_text(), re.MULTILINE)
    if summary is None:
        raise SystemExit(f"no summary line in {output}")
    return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=Path, default=SCANS, help="the scan kernels' source")
    parser.add_argument("--rows", type=int, default=4, help="batch rows counted")
    parser.add_argument("--inputs", type=int, nargs="+", default=[2, 32])
    options = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    print(f"{options.kernels} on {this_cpu().model}; instructions per lane and step\n")
    print("| cell | inputs | forward | backward | both |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        program = build_driver(options.kernels, Path(folder))
        lane_steps = options.rows * STEPS * LANES
        for cell in CELLS:
            for inputs in options.inputs:
                counts = {
                    name: count(program, cell, options.rows, inputs, function, Path(folder))
                    / lane_steps
                    for name, function in PASSES.items()
                }
                both = sum(counts.values())
                print(
                    f"| {cell} | {inputs} | {counts['forward']:.1f} | {counts['backward']:.1f} "
                    f"| {both:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
