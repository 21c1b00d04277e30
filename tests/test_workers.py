"""Workers on one machine: cores split, GPUs dealt round-robin (with a faked device list:
this machine has no GPU), and LSTM and GRU routed to cuDNN where a GPU is seen. Launchers:
both commands hand their workers to the launcher the table names."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import yaml
from keras import layers
from mlflow import MlflowClient

from rnnlab import cli
from rnnlab.config import PROJECT_ROOT, ConfigError
from rnnlab.experiments import launchers, paper, sweep, workers
from rnnlab.experiments.launchers import LocalLauncher, SlurmOptions, job_problem, launcher_for
from rnnlab.experiments.tuning import work_studies
from rnnlab.records import names
from rnnlab.records.tracking import recurrence_tags
from rnnlab.recurrence import layer as recurrence_layer
from rnnlab.recurrence.layer import ProbedRNN


def test_visible_gpus_come_from_cuda_visible_devices_else_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert workers.visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert workers.visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert workers.visible_gpus() == ["0", "1", "2"]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert workers.visible_gpus() == []


class FakeProcess:
    """Records what run_workers asks of a process instead of starting one."""

    started: list[tuple] = []

    def __init__(self, target, args, daemon) -> None:
        self.target, self.args, self.pid, self.exitcode = target, args, 1000, 0

    def start(self) -> None:
        FakeProcess.started.append(self.args)

    def join(self) -> None:
        pass


class FakeContext:
    Process = FakeProcess


def test_workers_get_the_gpus_round_robin_and_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(workers, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(workers, "available_cores", lambda: 8)
    monkeypatch.setattr(workers.multiprocessing, "get_context", lambda method: FakeContext)
    FakeProcess.started = []
    assert workers.run_workers(print, ("job",), 3) == []
    assert [(worker, threads, gpu) for _, _, worker, threads, gpu, _ in FakeProcess.started] == [
        (0, 2, "0"),
        (1, 2, "1"),
        (2, 2, "0"),
    ]
    monkeypatch.setattr(workers, "visible_gpus", lambda: [])
    FakeProcess.started = []
    workers.run_workers(print, ("job",), 2)
    assert [gpu for *_, gpu, _ in FakeProcess.started] == [None, None]
    assert {parent for *_, parent in FakeProcess.started} == {os.getpid()}


def test_a_worker_sees_only_its_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    seen = {}

    def target(job, worker, threads, label):
        seen.update(job=job, worker=worker, label=label, gpu=os.environ["CUDA_VISIBLE_DEVICES"])

    parents = []
    monkeypatch.setattr(workers, "stop_with_parent", parents.append)
    workers.enter_worker(target, ("job",), 1, 4, "1", 4321)
    assert parents == [4321]
    assert seen == {"job": "job", "worker": 1, "label": "[worker 1, GPU 1] ", "gpu": "1"}


def recorded_backend_call(calls: list, kind: str):
    """A stand-in for Keras's cuDNN call that records it and returns zeros of its shapes."""

    def fake(inputs, *states_and_mask, kernel, **options):
        calls.append((kind, kernel, options))
        batch, steps = inputs.shape[0], inputs.shape[1]
        units = kernel.shape[1] // (4 if kind == "lstm" else 3)
        zeros = np.zeros((batch, units), "float32")
        outputs = np.zeros((batch, steps if options["return_sequences"] else 1, units), "float32")
        return zeros, outputs, [zeros] * (2 if kind == "lstm" else 1)

    return fake


@pytest.fixture
def fake_gpu(monkeypatch):
    calls: list = []
    monkeypatch.setattr(recurrence_layer, "gpu_visible", lambda: True)
    monkeypatch.setattr(recurrence_layer.backend, "lstm", recorded_backend_call(calls, "lstm"))
    monkeypatch.setattr(recurrence_layer.backend, "gru", recorded_backend_call(calls, "gru"))
    return calls


@pytest.mark.parametrize(
    ("cell", "route"),
    [
        (layers.LSTMCell(3), "cudnn"),
        (layers.GRUCell(3), "cudnn"),
        # Neither cuDNN nor the fused recurrence has recurrent dropout: Keras's loop.
        (layers.LSTMCell(3, recurrent_dropout=0.1), "keras"),
        (layers.SimpleRNNCell(3), "native"),  # cuDNN has no plain RNN in Keras
    ],
)
def test_on_a_gpu_lstm_and_gru_take_cudnn(fake_gpu, native_ops, cell, route):
    layer = ProbedRNN(cell, return_sequences=True)
    layer(np.ones((2, 5, 4), "float32"), training=True)
    assert recurrence_tags([layer])[names.RECURRENCE] == route
    assert len(fake_gpu) == (route == "cudnn")
    if route == "cudnn":
        kind, kernel, options = fake_gpu[0]
        assert kernel is cell.kernel and options["return_sequences"] is True


def test_without_a_gpu_nothing_asks_for_cudnn(monkeypatch, native_ops):
    monkeypatch.setattr(recurrence_layer, "gpu_visible", lambda: False)
    called = []
    monkeypatch.setattr(recurrence_layer.backend, "lstm", lambda *a, **k: called.append(1))
    layer = ProbedRNN(layers.LSTMCell(3))
    layer(np.ones((2, 5, 4), "float32"))
    assert not called and recurrence_tags([layer])[names.RECURRENCE] == "native"
    assert keras.backend.backend() == "tensorflow"


def test_bad_slurm_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown slurm option.*partitoin"):
        SlurmOptions.from_mapping({"partitoin": "gpu"}, "sweeps/x.yaml")
    with pytest.raises(ConfigError, match="time_minutes must be a positive integer"):
        SlurmOptions.from_mapping({"time_minutes": 0}, "command line")


class Paths:
    def __init__(self, folder) -> None:
        self.result_pickle = folder / "result.pkl"
        self.stderr = folder / "log.err"


class EndedJob:
    job_id = "17"

    def __init__(self, folder, error: Exception | None = None) -> None:
        self.paths, self.error = Paths(folder), error

    def result(self):
        if self.error:
            raise self.error
        return None


def test_a_job_without_a_result_was_cancelled_preempted_or_out_of_time(tmp_path):
    assert "job 17 ended without a result (cancelled" in job_problem(EndedJob(tmp_path))
    (tmp_path / "result.pkl").write_bytes(b"")
    assert job_problem(EndedJob(tmp_path)) is None
    failed = EndedJob(tmp_path, RuntimeError("Traceback\n...\nValueError: bad"))
    assert job_problem(failed) == "SLURM job 17 failed: ValueError: bad"


def test_the_local_launcher_runs_one_worker_in_this_process():
    seen = []
    assert LocalLauncher({}, "x").run(lambda job: seen.append((job, os.getpid())), ("j",), 1) == []
    assert seen == [("j", os.getpid())]


def test_slurm_options_are_checked_by_the_slurm_launcher_only():
    """A local run ignores the SLURM flags, as it did before launchers had a table."""
    assert isinstance(launcher_for("local", {"jobs": 0}, "x"), LocalLauncher)
    with pytest.raises(ConfigError, match="jobs must be a positive integer, got 0"):
        launcher_for("slurm", {"jobs": 0}, "x")


class RecordingLauncher:
    """A launcher that records what a command hands it and starts no worker."""

    calls: list[tuple] = []

    def __init__(self, settings: dict, name: str) -> None:
        self.settings, self.name = settings, name

    def run(self, target, args, workers: int) -> list[str]:
        RecordingLauncher.calls.append((self.name, self.settings, target, args, workers))
        return []


@pytest.fixture
def recording_launcher(monkeypatch):
    """A new launcher is one class and one entry in the table: both commands then take it."""
    monkeypatch.setitem(launchers.LAUNCHERS, "recording", RecordingLauncher)
    RecordingLauncher.calls = []
    return RecordingLauncher.calls


@pytest.mark.parametrize("tuned", [False, True])
def test_rnnlab_paper_hands_its_workers_to_the_launcher_named(tmp_path, recording_launcher, tuned):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = [f"tracking.uri={uri}", *([] if tuned else ["tune=null"])]
    arguments = ["smoke", *overrides, "--launcher", "recording", "--workers", "3"]
    with pytest.raises(SystemExit) as exited:
        cli.main(["paper", *arguments, "--jobs", "5", "--storage", f"sqlite:///{tmp_path}/c.db"])
    assert str(exited.value) == "rnnlab: 8 point(s) left untrained: rerun the same command"
    [(name, settings, target, args, count)] = recording_launcher
    if tuned:  # the entries' studies come first; none ran here, so no grid point is trained
        assert (name, settings, target, count) == ("paper-smoke", {"jobs": 5}, work_studies, 3)
        assert len(args[0]) == 4 and all(spec.n_trials == 2 for spec in args[0])
    else:
        assert (name, settings, target, count) == ("paper-smoke", {"jobs": 5}, paper.work, 3)
        assert (args[0].name, args[0].overrides) == ("smoke", overrides)


def test_rnnlab_sweep_takes_the_launcher_its_file_names(tmp_path, recording_launcher):
    content = yaml.safe_load((PROJECT_ROOT / "sweeps" / "smoke.yaml").read_text())
    content |= {
        "study": "launched",
        "storage": f"sqlite:///{tmp_path}/optuna.db",
        "launcher": "recording",
        "slurm": {"time_minutes": 5},
    }
    path = tmp_path / "launched.yaml"
    path.write_text(yaml.safe_dump(content))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(SystemExit) as exited:
        cli.main(["sweep", str(path), f"tracking.uri={uri}", "--workers", "2", "--jobs", "4"])
    assert str(exited.value) == "rnnlab: no trial completed; see the failures above"
    [(name, settings, target, args, count)] = recording_launcher
    assert (name, settings, target, count) == (
        "sweep-launched",
        {"time_minutes": 5, "jobs": 4},  # the file's section, the flags over it
        sweep.work,
        2,
    )
    # The CLI's report ran before the parent run ended: no trial, so only the counts.
    [parent] = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("sentiment").experiment_id],
        f"tags.`{names.SWEEP}` = 'launched'",
    )
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] == 0
