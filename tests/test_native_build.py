"""Building the native ops: a rejected flag set falls back, outcomes are remembered per CPU.

These compile a tiny C++ file, not the ops, so each build takes a fraction of a second; the
real library's chain is tested in test_native.py.
"""

from __future__ import annotations

import ctypes
import subprocess
import threading
from pathlib import Path

import pytest

from rnnlab.recurrence.native import build
from rnnlab.recurrence.native.build import Compiler, Cpu, NativeBuild, first_error_line, this_cpu

REJECTED_FLAG = "-fno-such-option-rnnlab"  # every compiler refuses it at once

INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse sse2 avx avx2 bmi1 bmi2 f16c fma abm movbe avx512f avx512_fp16 amx_tile

processor\t: 1
model name\t: ignored: the first processor is enough
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes sha2 crc32 atomics sve
CPU part\t: 0xd40
"""


@pytest.fixture
def tiny_source(tmp_path) -> Path:
    source = tmp_path / "tiny_kernels.cc"
    source.write_text('extern "C" int rnnlab_tiny() { return 42; }\n')
    return source


@pytest.fixture
def compiler_calls(monkeypatch) -> list[list[str]]:
    """Every compile command run from here on (`--version` queries are not compiles)."""
    calls: list[list[str]] = []
    original = subprocess.run

    def counting_run(command, *args, **kwargs):
        if "--version" not in command:
            calls.append(command)
        return original(command, *args, **kwargs)

    monkeypatch.setattr(build.subprocess, "run", counting_run)
    return calls


def tiny_build(source: Path | tuple[Path, ...], directory: Path, cpu=None, compiler=None):
    sources = source if isinstance(source, tuple) else (source,)
    return NativeBuild(
        sources, cpu or this_cpu(), compiler or build.this_compiler(), "2.x", directory / "native"
    )


@pytest.fixture
def split_sources(tmp_path) -> tuple[Path, ...]:
    """A header and two .cc files that include it, as the real ops are split."""
    header = tmp_path / "answer.h"
    header.write_text("inline int Answer() { return 42; }\n")
    first, second = tmp_path / "first.cc", tmp_path / "second.cc"
    first.write_text('#include "answer.h"\nextern "C" int rnnlab_first() { return Answer(); }\n')
    second.write_text('#include "answer.h"\nextern "C" int rnnlab_second() { return -Answer(); }\n')
    return header, first, second


def test_every_source_file_is_compiled_into_the_one_library(split_sources, tmp_path):
    built = tiny_build(split_sources, tmp_path).build([], [])
    assert built.library is not None
    library = ctypes.CDLL(str(built.library))
    assert (library.rnnlab_first(), library.rnnlab_second()) == (42, -42)


def test_a_changed_header_is_a_new_build(split_sources, tmp_path, compiler_calls):
    """The header is never compiled on its own, but it enters the folder's hash: edit it,
    and the library is built again rather than an old one loaded."""
    header = split_sources[0]
    before = tiny_build(split_sources, tmp_path).build([], [])
    header.write_text("inline int Answer() { return 7; }\n")
    after = tiny_build(split_sources, tmp_path).build([], [])
    assert after.library.parent != before.library.parent
    assert len(compiler_calls) == 2
    assert all(str(header) not in command for command in compiler_calls)  # included, not built
    assert ctypes.CDLL(str(after.library)).rnnlab_first() == 7


def test_the_shipped_sources_are_all_in_the_hash():
    """Every file beside build.py that the library is made of is a source of the build."""
    shipped = {path.name for path in build.SOURCE_DIRECTORY.glob("*.[ch]*")}
    assert shipped == {source.name for source in build.SOURCES}


def test_a_rejected_first_flag_set_falls_back_to_the_next(
    tiny_source, tmp_path, monkeypatch, compiler_calls
):
    chain = build.flag_sets(this_cpu())
    monkeypatch.setattr(build, "flag_sets", lambda cpu: [(REJECTED_FLAG,), *chain])
    result = tiny_build(tiny_source, tmp_path).build([], [])
    assert result.library is not None and result.library.exists()
    assert result.flags == chain[0]  # the first set that works, not a later one
    assert len(compiler_calls) == 2
    log = result.log.read_text()
    assert REJECTED_FLAG in log and "exit 0" in log


def test_a_failure_is_remembered_until_forgotten(
    tiny_source, tmp_path, monkeypatch, compiler_calls
):
    monkeypatch.setattr(build, "flag_sets", lambda cpu: [(REJECTED_FLAG,)])
    native = tiny_build(tiny_source, tmp_path)
    failed = native.build([], [])
    assert failed.library is None
    assert "error:" in failed.reason and REJECTED_FLAG in failed.reason
    assert "apt-get install g++" in failed.fix
    assert REJECTED_FLAG in failed.log.read_text()  # the compiler's whole output is kept
    calls_after_first = len(compiler_calls)
    # A later process, the same machine: the remembered failure, at once.
    again = tiny_build(tiny_source, tmp_path).build([], [])
    assert again.reason == failed.reason and len(compiler_calls) == calls_after_first
    native.forget()  # what `rnnlab native --rebuild` does
    monkeypatch.setattr(build, "flag_sets", lambda cpu: [()])
    assert native.build([], []).library is not None


def test_without_a_compiler_the_fix_is_to_install_one(tiny_source, tmp_path):
    result = tiny_build(tiny_source, tmp_path, compiler=Compiler("no-such-c++", "")).build([], [])
    assert result.library is None
    assert result.reason == "no C++ compiler 'no-such-c++' found"
    assert "apt-get install g++" in result.fix
    # Installing a compiler is a new key, so a new attempt: nothing stale stands in its way.
    assert tiny_build(tiny_source, tmp_path).build([], []).library is not None


def test_a_library_is_only_found_by_the_cpu_it_was_built_for(tiny_source, tmp_path):
    here = this_cpu()
    built = tiny_build(tiny_source, tmp_path, cpu=here).build([], [])
    assert built.library is not None
    fewer_instructions = Cpu(here.machine, here.model, here.flags - {"avx2", "avx512f"})
    other = tiny_build(tiny_source, tmp_path, cpu=fewer_instructions)
    assert other.folder != built.library.parent
    assert other.remembered() is None
    assert here.slug.startswith(f"{here.machine}-")


def test_workers_that_start_together_compile_once(tiny_source, tmp_path, compiler_calls):
    results = []

    def build_it():
        results.append(tiny_build(tiny_source, tmp_path).build([], []))

    workers = [threading.Thread(target=build_it) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(compiler_calls) == 1
    assert len({result.library for result in results}) == 1


def test_cpu_model_and_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(INTEL_CPUINFO)
    monkeypatch.setattr(build.platform, "machine", lambda: "x86_64")
    intel = this_cpu(cpuinfo)
    assert intel.model == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert {"avx512_fp16", "amx_tile"} <= intel.flags
    assert intel.slug.startswith("x86_64-intel-xeon-platinum-8481c-")
    # Fastest first; the Eigen-safe set next; then portable ones.
    assert build.flag_sets(intel) == [
        ("-march=native",),
        ("-march=native", "-mno-avx512fp16"),
        ("-march=x86-64-v3",),
        (),
    ]
    cpuinfo.write_text(ARM_CPUINFO)
    monkeypatch.setattr(build.platform, "machine", lambda: "aarch64")
    arm = this_cpu(cpuinfo)
    assert "sve" in arm.flags and arm.model == "0xd40"
    assert build.flag_sets(arm) == [("-mcpu=native",), ()]


def test_the_warning_names_the_first_error_not_the_caret():
    output = (
        "In file included from /x/site-packages/tensorflow/include/Eigen/Core:123,\n"
        "/x/site-packages/tensorflow/include/Eigen/src/Core/arch/AVX512/PacketMathFP16.h:740:49:"
        " error: expected initializer before '<' token\n"
        "  740 | EIGEN_STRONG_INLINE Packet32h pset1<Packet32h>(const Eigen::half& from) {\n"
        "      |                                                 ^\n"
    )
    assert first_error_line(output) == (
        "tensorflow/include/Eigen/src/Core/arch/AVX512/PacketMathFP16.h:740:49:"
        " error: expected initializer before '<' token"
    )
