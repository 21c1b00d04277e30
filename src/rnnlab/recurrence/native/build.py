"""Compiling the native ops for this CPU: fastest flags first, every outcome remembered.

A library built with `-march=native` on one CPU may crash with an illegal instruction on
another (a cluster's shared home folder hands it to every node), so each build lives in a
folder named for the CPU it was built on, the sources, TensorFlow and the compiler; a
process only ever looks in the folder of the CPU it runs on.

Some flag sets fail on some CPUs (TensorFlow 2.21's Eigen does not compile under g++ 12
with AVX512-FP16 enabled), so the flags are tried in order, fastest first. A build that
fails with every set writes `failed.json` beside its full log, and later processes fall
back at once instead of compiling again; a new compiler, CPU, source file or TensorFlow is a
new folder and so a new attempt, and `rnnlab native --rebuild` forces one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rnnlab.locks import exclusive

SOURCE_DIRECTORY = Path(__file__).parent
# Every file the library is made from. The .cc files are compiled into the one library;
# all of them, the header too, enter the build folder's hash, so a change to any rebuilds.
SOURCES = tuple(SOURCE_DIRECTORY / name for name in ("checks.h", "fused_cells.cc", "scans.cc"))
LIBRARY_NAME = "recurrence_kernels.so"
DIRECTORY_VARIABLE = "RNNLAB_NATIVE_DIR"
INSTALL_COMPILER = "install a C++ compiler (Debian: apt-get install g++)"
# What x86-64-v3 requires (AVX2 and friends), as /proc/cpuinfo names the flags.
X86_64_V3_FLAGS = frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"})


@dataclass(frozen=True)
class Cpu:
    """The processor this process runs on, as the compiler's `-march=native` sees it."""

    machine: str  # x86_64, aarch64, ...
    model: str
    flags: frozenset[str]

    @property
    def slug(self) -> str:
        """A folder name: readable model, plus a hash of the flags (same model, other VM)."""
        model = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$", "", self.model.lower())
        words = re.sub(r"[^a-z0-9]+", "-", model).strip("-")[:40] or "unknown"
        digest = hashlib.sha256(" ".join(sorted(self.flags)).encode()).hexdigest()[:8]
        return f"{self.machine}-{words}-{digest}"


def this_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> Cpu:
    """Model and instruction-set flags from /proc/cpuinfo (x86 `flags`, Arm `Features`)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
            if not line.strip() and fields:  # the first processor is enough
                break
    model = fields.get("model name") or fields.get("cpu part") or platform.processor()
    flags = fields.get("flags") or fields.get("features") or ""
    return Cpu(platform.machine(), model or "unknown", frozenset(flags.split()))


@dataclass(frozen=True)
class Compiler:
    command: str
    version: str  # the first line of `--version`; empty when the compiler is missing

    @property
    def slug(self) -> str:
        number = re.search(r"\d+(\.\d+)+", self.version)
        name = Path(self.command).name
        return f"{name}{number.group(0) if number else ''}" if self.version else f"{name}-missing"


def this_compiler() -> Compiler:
    """$CXX, else g++: the compiler TensorFlow's headers are known to build with."""
    command = os.environ.get("CXX", "g++")
    try:
        result = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return Compiler(command, "")
    version = result.stdout.strip().splitlines()[0] if result.returncode == 0 else ""
    return Compiler(command, version)


def flag_sets(cpu: Cpu) -> list[tuple[str, ...]]:
    """Target flags to try, fastest first; the last is the compiler's portable default."""
    if cpu.machine in ("aarch64", "arm64"):
        return [("-mcpu=native",), ()]
    if cpu.machine not in ("x86_64", "amd64", "AMD64"):
        return [("-march=native",), ()]
    sets: list[tuple[str, ...]] = [("-march=native",)]
    if "avx512_fp16" in cpu.flags:  # TensorFlow 2.21's Eigen breaks on g++ 12 with it
        sets.append(("-march=native", "-mno-avx512fp16"))
    if cpu.flags >= X86_64_V3_FLAGS:
        sets.append(("-march=x86-64-v3",))
    sets.append(())
    return sets


def default_directory() -> Path:
    """Beside the source where it is writable (an editable install), else the user's cache."""
    if os.environ.get(DIRECTORY_VARIABLE):
        return Path(os.environ[DIRECTORY_VARIABLE])
    beside_source = SOURCE_DIRECTORY / "build"
    if os.access(beside_source if beside_source.exists() else SOURCE_DIRECTORY, os.W_OK):
        return beside_source
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rnnlab" / "native"


@dataclass(frozen=True)
class BuildResult:
    """Where the library is, or why there is none, and where the compiler's words are."""

    library: Path | None
    flags: tuple[str, ...] = ()
    reason: str = ""  # why there is no library
    fix: str = ""  # what the user can do about it
    log: Path | None = None


@dataclass(frozen=True)
class NativeBuild:
    """One library: what it was built from and for, and where its records go."""

    sources: tuple[Path, ...]  # the .cc files are compiled; headers only enter the hash
    cpu: Cpu
    compiler: Compiler
    tensorflow_version: str
    directory: Path

    @property
    def folder(self) -> Path:
        digest = hashlib.sha256()
        for source in sorted(self.sources):  # a renamed file is a new build too
            content = source.read_bytes()
            digest.update(f"{source.name}\n{len(content)}\n".encode() + content)
        stem = Path(LIBRARY_NAME).stem
        key = f"{stem}-{digest.hexdigest()[:12]}-tf{self.tensorflow_version}-{self.compiler.slug}"
        return self.directory / self.cpu.slug / key

    @property
    def library(self) -> Path:
        return self.folder / LIBRARY_NAME

    @property
    def log(self) -> Path:
        return self.folder / "build.log"

    @property
    def failure_record(self) -> Path:
        return self.folder / "failed.json"

    def remembered(self) -> BuildResult | None:
        """The outcome of an earlier build in this folder, if any."""
        if self.library.exists():
            manifest = json.loads((self.folder / "build.json").read_text())
            return BuildResult(self.library, tuple(manifest["flags"]), log=self.log)
        if self.failure_record.exists():
            failure = json.loads(self.failure_record.read_text())
            return BuildResult(None, reason=failure["reason"], fix=failure["fix"], log=self.log)
        return None

    def forget(self) -> None:
        for path in (self.library, self.failure_record, self.folder / "build.json"):
            path.unlink(missing_ok=True)

    def build(self, compile_flags: list[str], link_flags: list[str]) -> BuildResult:
        """The remembered outcome, else a new build through `flag_sets` (one process at once)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with exclusive(self.folder / ".lock"):  # other workers wait, then read the outcome
            return self.remembered() or self._compile(compile_flags, link_flags)

    def _compile(self, compile_flags: list[str], link_flags: list[str]) -> BuildResult:
        if not self.compiler.version:
            return self._fail(f"no C++ compiler '{self.compiler.command}' found", INSTALL_COMPILER)
        print(
            f"compiling rnnlab's native ops for this CPU ({self.cpu.model}), once: about a minute",
            file=sys.stderr,
        )
        partial = self.library.with_name(f"{LIBRARY_NAME}.{os.getpid()}.partial")
        first_error = ""
        with self.log.open("w") as log:
            for flags in flag_sets(self.cpu):
                command = [
                    self.compiler.command,
                    *("-std=c++17", "-shared", "-fPIC", "-O3", *flags),
                    "-Wno-deprecated-declarations",
                    *compile_flags,
                    *(str(source) for source in self.sources if source.suffix == ".cc"),
                    *("-o", str(partial)),
                    *link_flags,
                ]
                started = time.monotonic()
                result = subprocess.run(command, capture_output=True, text=True)
                log.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}")
                log.write(f"exit {result.returncode} after {time.monotonic() - started:.0f} s\n\n")
                log.flush()
                if result.returncode == 0:
                    self._write_manifest(flags)  # first: a library is never without it
                    os.replace(partial, self.library)
                    return BuildResult(self.library, flags, log=self.log)
                partial.unlink(missing_ok=True)
                first_error = first_error or first_error_line(result.stderr)
        fix = f"{INSTALL_COMPILER} or another (CXX=clang++), then `rnnlab native --rebuild`"
        return self._fail(first_error or "the compiler failed with every flag set", fix)

    def _write_manifest(self, flags: tuple[str, ...]) -> None:
        manifest = {
            "flags": list(flags),
            "cpu": {"machine": self.cpu.machine, "model": self.cpu.model},
            "cpu_flags": sorted(self.cpu.flags),
            "compiler": self.compiler.version,
            "tensorflow": self.tensorflow_version,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (self.folder / "build.json").write_text(json.dumps(manifest, indent=1) + "\n")

    def _fail(self, reason: str, fix: str) -> BuildResult:
        record = {"reason": reason, "fix": fix, "compiler": self.compiler.version}
        self.failure_record.write_text(json.dumps(record, indent=1) + "\n")
        return BuildResult(None, reason=reason, fix=fix, log=self.log)


def first_error_line(compiler_output: str) -> str:
    """The compiler's first `error:` line, its path cut to the part after site-packages."""
    for line in compiler_output.splitlines():
        if "error:" in line:
            return re.sub(r"^\S*site-packages/", "", line.strip())
    lines = compiler_output.strip().splitlines()
    return lines[0].strip() if lines else ""
