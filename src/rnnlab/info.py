"""`rnnlab info`: what a bug report needs to know about this machine and installation.

Versions, the CPU and the instructions the native ops care about, thread settings, whether
the native ops are on (and where their library is, or why not), the data folder and what
is prepared in it, and the default tracking store. Users paste it into an issue.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

from rnnlab.config import compose_config

PACKAGES = ("rnnlab", "tensorflow", "tensorflow-cpu", "keras", "mlflow", "optuna", "hydra-core")
# The instruction sets that decide how the native ops (and TensorFlow's kernels) are built.
INSTRUCTIONS = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "asimd",
    "sve",
)


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def prepared_datasets(data_dir: Path) -> list[str]:
    """`name version` of every TFDS dataset prepared under data_dir/tfds."""
    found = sorted((data_dir / "tfds").glob("**/dataset_info.json"))
    return [
        f"{path.parent.parent.relative_to(data_dir / 'tfds')} {path.parent.name}" for path in found
    ]


def info_lines() -> list[str]:
    from rnnlab.recurrence.native.build import this_cpu
    from rnnlab.tasks.datasets import data_root
    from rnnlab.threads import available_cores, configure_threads

    configure_threads()  # what `rnnlab train` sets, before TensorFlow starts
    import tensorflow as tf

    from rnnlab.recurrence.native import describe, native_status

    versions = [f"{name} {installed_version(name)}" for name in PACKAGES if installed_version(name)]
    cpu = this_cpu()
    instructions = [flag for flag in INSTRUCTIONS if flag in cpu.flags]
    threading = tf.config.threading
    cfg = compose_config([])
    data_dir = data_root(cfg.data_dir)
    datasets = "; ".join(prepared_datasets(data_dir)) or "nothing prepared: run make install"
    return [
        f"python: {platform.python_version()} ({sys.executable})",
        f"packages: {', '.join(versions)}",
        f"platform: {platform.platform()}",
        f"cpu: {cpu.model} ({cpu.machine}, {available_cores()} cores for this process)",
        f"instructions: {' '.join(instructions) or 'none of ' + ' '.join(INSTRUCTIONS)}",
        f"threads: {threading.get_intra_op_parallelism_threads()} per op, "
        f"{threading.get_inter_op_parallelism_threads()} ops at once",
        describe(native_status()),
        f"data: {data_dir} ({datasets})",
        f"tracking: {cfg.tracking.uri}",
    ]


def main() -> None:
    print("\n".join(info_lines()))
