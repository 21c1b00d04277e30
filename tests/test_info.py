"""`rnnlab info` tells what a bug report needs; `rnnlab native` refuses what it cannot do.

Each line is checked against a source of its own (the process's affinity mask, the
environment the command ran in, /proc/cpuinfo, the library file on disk), not against the
expression `info.py` prints.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from rnnlab.info import info_lines, prepared_datasets


def rnnlab_info(env: dict[str, str], core: int | None = None) -> dict[str, str]:
    """`rnnlab info` in a fresh process, optionally pinned to one core: {label: text}."""
    result = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", "info"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=None if core is None else (lambda: os.sched_setaffinity(0, {core})),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())


def first_cpuinfo_model() -> str | None:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs affinity masks")
def test_info_on_one_core_with_native_ops_off_and_a_data_folder_of_its_own(tmp_path):
    prepared = tmp_path / "tfds" / "rotten_tomatoes_snippets" / "1.0.0"
    prepared.mkdir(parents=True)
    (prepared / "dataset_info.json").write_text("{}")
    core = min(os.sched_getaffinity(0))
    lines = rnnlab_info({"RNNLAB_NATIVE": "0", "RNNLAB_DATA_DIR": str(tmp_path)}, core=core)

    assert lines["python"] == f"{platform.python_version()} ({sys.executable})"
    packages = lines["packages"].split(", ")
    assert f"keras {metadata.version('keras')}" in packages
    assert f"optuna {metadata.version('optuna')}" in packages
    if first_cpuinfo_model():
        assert lines["cpu"].startswith(first_cpuinfo_model())
    # The mask this process was given, not the machine's count, and what training then uses.
    assert lines["cpu"].endswith(f"({platform.machine()}, 1 cores for this process)")
    assert lines["threads"] == "1 per op, 1 ops at once"
    assert lines["native ops"] == "off (switched off by RNNLAB_NATIVE=0); fix: unset RNNLAB_NATIVE"
    assert lines["data"] == f"{tmp_path} (rotten_tomatoes_snippets 1.0.0)"
    assert lines["tracking"] == "sqlite:///mlruns/mlflow.db"  # the shipped default store


def test_info_says_where_the_native_library_is_when_the_ops_are_on(native_ops, monkeypatch):
    monkeypatch.delenv("RNNLAB_NATIVE", raising=False)
    lines = dict(line.split(": ", 1) for line in info_lines())
    found = re.fullmatch(r"on \((\S+), built with (.+)\)", lines["native ops"])
    assert found, lines["native ops"]
    assert Path(found.group(1)).is_file() and found.group(1).endswith(".so")
    # The cores of this process's own mask.
    assert lines["cpu"].endswith(f"{len(os.sched_getaffinity(0))} cores for this process)")


def test_a_folder_with_nothing_prepared_says_to_run_make_install(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path))
    lines = dict(line.split(": ", 1) for line in info_lines())
    assert lines["data"] == f"{tmp_path} (nothing prepared: run make install)"


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
