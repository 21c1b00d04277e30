"""Fetch raw data from package registries and prepare it as TensorFlow Datasets, once.

Nothing here downloads at training time: `rnnlab prepare` (run by `make install`) fetches
each task's source with pip into `<data_dir>/raw` and builds it into `<data_dir>/tfds`.
Training only reads what was prepared and says to run `make install` when it is missing.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import tensorflow_datasets as tfds

from rnnlab.config import PROJECT_ROOT


class DataNotPreparedError(FileNotFoundError):
    """A task's data is missing; the message says how to prepare it."""


def data_root(data_dir: str) -> Path:
    path = Path(data_dir)
    return path if path.is_absolute() else PROJECT_ROOT / path


def fetch_sdist_member(requirement: str, members: list[str], destination: Path) -> Path:
    """Download a source distribution with pip and extract nested members into destination.

    `members` is a path inside the sdist, then optionally a path inside a tarball found
    there, and so on: the vaderSentiment sdist keeps its data in a tarball of its own.
    """
    target = destination / members[-1]
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        pip_download(requirement, Path(scratch), "--no-binary", ":all:")
        (archive,) = Path(scratch).glob("*.tar.gz")
        for member in members:
            with tarfile.open(archive) as tar:
                inner = next((name for name in tar.getnames() if name.endswith(member)), None)
                if inner is None:
                    raise FileNotFoundError(f"{member} is not in {archive.name}")
                tar.extract(inner, scratch, filter="data")
            archive = Path(scratch) / inner
        target.parent.mkdir(parents=True, exist_ok=True)
        archive.replace(target)
    return target


def fetch_wheel_folder(requirement: str, folder: str, destination: Path) -> Path:
    """Download a wheel with pip and unzip only the files under `folder` into destination.

    Nothing of the package is imported: sktime's wheel is used for its data files alone.
    """
    if destination.exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Scratch beside the destination, so that the final move is a rename on one disk.
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        pip_download(requirement, Path(scratch), "--only-binary", ":all:")
        (wheel,) = Path(scratch).glob("*.whl")
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            members = [name for name in archive.namelist() if name.startswith(f"{folder}/")]
            if not members:
                raise FileNotFoundError(f"{folder} is not in {wheel.name}")
            archive.extractall(unpacked, members)
        (unpacked / folder).replace(destination)  # whole or not at all
    return destination


def fetch_debian_package(package: str, destination: Path) -> Path:
    """`apt-get download` a Debian package and unpack it with `dpkg -x` (no root needed).

    A fresh machine may have empty package lists: then `apt-get update` runs once, first.
    """
    if destination.exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        download = ["apt-get", "download", "--quiet", package]
        if subprocess.run(download, cwd=scratch, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(download, cwd=scratch, check=True)
        (archive,) = Path(scratch).glob("*.deb")
        unpacked = Path(scratch) / "unpacked"
        subprocess.run(["dpkg", "-x", str(archive), str(unpacked)], check=True)
        unpacked.replace(destination)  # whole or not at all
    return destination


def pip_download(requirement: str, destination: Path, *options: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            *options,
            requirement,
            "--dest",
            str(destination),
        ],
        check=True,
    )


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: Path) -> None:
    """Build a dataset from files in manual_dir; TFDS writes to a temporary folder first."""
    if not is_prepared(builder):
        config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        builder.download_and_prepare(download_config=config)


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    return (Path(builder.data_dir) / "dataset_info.json").exists()


def require_prepared(builder: tfds.core.DatasetBuilder) -> None:
    if not is_prepared(builder):
        raise DataNotPreparedError(
            f"dataset '{builder.name}' is not prepared in {builder.data_dir}: run `make install`"
        )


def content_hash(builder: tfds.core.DatasetBuilder) -> str:
    """SHA-256 over the prepared records: what the model actually trained on."""
    digest = hashlib.sha256()
    for path in sorted(Path(builder.data_dir).glob("*.tfrecord*")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
