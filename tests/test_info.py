"""`rnnlab info` tells what a bug report needs; `rnnlab native` refuses what it cannot do."""

from __future__ import annotations

import platform
import subprocess
import sys

import tensorflow as tf

from rnnlab.info import info_lines, prepared_datasets
from rnnlab.recurrence.native import describe, native_status
from rnnlab.recurrence.native.build import this_cpu


def test_info_names_versions_cpu_threads_native_ops_data_and_store():
    lines = dict(line.split(": ", 1) for line in info_lines())
    assert lines["python"].startswith(platform.python_version())
    assert f"keras {__import__('keras').__version__}" in lines["packages"]
    assert tf.__version__ in lines["packages"]
    assert lines["cpu"].startswith(this_cpu().model)
    assert lines["threads"] == (
        f"{tf.config.threading.get_intra_op_parallelism_threads()} per op, "
        f"{tf.config.threading.get_inter_op_parallelism_threads()} ops at once"
    )
    assert f"native ops: {lines['native ops']}" == describe(native_status())
    assert lines["tracking"] == "sqlite:///mlruns/mlflow.db"


def test_prepared_datasets_are_listed_with_their_versions(tmp_path):
    for folder in ("rotten_tomatoes_snippets/1.0.0", "ucr_archive/GunPoint/1.0.0"):
        (tmp_path / "tfds" / folder).mkdir(parents=True)
        (tmp_path / "tfds" / folder / "dataset_info.json").write_text("{}")
    (tmp_path / "tfds" / "half_built" / "1.0.0").mkdir(parents=True)  # no dataset_info.json
    assert prepared_datasets(tmp_path) == [
        "rotten_tomatoes_snippets 1.0.0",
        "ucr_archive/GunPoint 1.0.0",
    ]


def test_native_with_an_unknown_option_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", "native", "--rebiuld"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "rnnlab: usage: rnnlab native [--rebuild]",
    )
