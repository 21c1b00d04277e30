"""Models stored with their runs: evaluate, predict, and what else an MLflow run records."""

from __future__ import annotations

import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from rnnlab import cli
from rnnlab.config import ConfigError, compose_config
from rnnlab.records import names
from rnnlab.records.stored_model import (
    NoStoredModelError,
    StoredModel,
    array_example,
    data_folder,
    load_stored_model,
    stored_model_id,
)
from rnnlab.tasks import TASK_MODULES, get_task, load_task
from rnnlab.tasks.base import NoPredictError, Task
from rnnlab.tasks.seq2seq.decoding import decode
from rnnlab.training.evaluate import evaluate, predict
from rnnlab.training.run import run

SMALL = ["cell.units=8", "trainer.epochs=1"]


def trained_run(compose, *overrides: str) -> str:
    return run(compose(*SMALL, "tracking.log_model=true", *overrides)).run_id


@pytest.fixture(scope="module")
def task_run(tracking_uri):
    """task_run(task): the id of a small run of the task, trained once for the module."""
    runs: dict[str, str] = {}

    def trained(task: str) -> str:
        if task not in runs:
            runs[task] = run(compose_config(small_config(tracking_uri, task))).run_id
        return runs[task]

    return trained


def small_config(tracking_uri: str, task: str) -> list[str]:
    size = ["task.max_examples=256", "trainer.batch_size=32", "trainer.verbose=0", *SMALL]
    return [*size, f"task={task}", f"tracking.uri={tracking_uri}"]


def same_data_task(tracking_uri: str, task: str):
    """The task as its run loaded it: vocabulary and series, independently of the store."""
    cfg = compose_config(small_config(tracking_uri, task))
    return load_task(cfg.task, cfg.data_dir, cfg.trainer.batch_size, cfg.seed)[0]


@pytest.mark.parametrize("name", sorted(TASK_MODULES))
def test_every_task_implements_the_task_interface(name):
    cfg = compose_config([f"task={name}"])
    assert isinstance(get_task(cfg.task, cfg.data_dir), Task)


@pytest.mark.slow
@pytest.mark.parametrize(
    "task", ["sentiment", "forecasting", "translation", "adding"], ids=lambda task: task
)
def test_evaluate_rescores_the_stored_model_to_the_logged_test_metrics(
    task_run, tracking_uri, task
):
    run_id = task_run(task)
    rows = evaluate(run_id, tracking_uri)

    logged = {
        name: value
        for name, value in MlflowClient(tracking_uri).get_run(run_id).data.metrics.items()
        if name.startswith("test_")
    }
    assert {name for name, _, _ in rows} == set(logged)
    for name, before, after in rows:
        assert after == pytest.approx(before, rel=1e-5, abs=1e-6), name


@pytest.mark.slow
def test_sentiment_predicts_from_raw_text_as_the_trained_vocabulary_reads_it(
    task_run, tracking_uri
):
    run_id = task_run("sentiment")
    texts = ["A gripping, funny and moving film.", "Dull, and far too long.", "unseenword"]
    lines = predict(run_id, tracking_uri, texts)

    stored = load_stored_model(MlflowClient(tracking_uri), run_id)
    tokens = same_data_task(tracking_uri, "sentiment").vectorizer(texts)
    expected = stored.keras_model.predict(tokens, verbose=0)[:, 0]
    assert lines == [f"{p:.3f} positive  {text}" for p, text in zip(expected, texts, strict=True)]
    # MLflow's own loader gives the same answers from the same raw text.
    model_id = MlflowClient(tracking_uri).get_run(run_id).outputs.model_outputs[0].model_id
    mlflow.set_tracking_uri(tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model_id}")
    assert np.allclose(pyfunc.predict(texts), expected, atol=1e-6)


@pytest.mark.slow
def test_translation_predicts_english_as_greedy_decoding_of_the_trained_model(
    task_run, tracking_uri
):
    run_id = task_run("translation")
    german = ["Ich habe keine Zeit.", "Das ist gut."]
    lines = predict(run_id, tracking_uri, german)

    task = same_data_task(tracking_uri, "translation")
    stored = load_stored_model(MlflowClient(tracking_uri), run_id)
    english = decode(
        stored.keras_model,
        task.source_vectorizer(german).numpy(),
        task.target_vectorizer.get_vocabulary(),
        task.cfg.target_length,
        decode_unknown=True,  # the dictionary then translates what it can of each [UNK]
    )
    for line, g, e in zip(lines, german, english, strict=True):
        assert line.startswith(f"{g}  ->  ") and "[UNK]" not in line
        if "[UNK]" not in e:
            assert line == f"{g}  ->  {e}"

    # A new process, as a user's `rnnlab predict`, has imported no task module before the
    # model loads: the layers the task's models hold must still be found.
    fresh = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnlab.cli",
            "predict",
            run_id,
            *german,
            f"tracking.uri={tracking_uri}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert fresh.stdout.strip().splitlines()[-2:] == lines


@pytest.mark.slow
def test_a_subword_translation_is_rescored_and_predicts_words_from_its_stored_pieces(
    compose, tracking_uri
):
    subwords = [
        "task.tokens=subwords",
        "task.vocabulary_size=300",
        "task.source_vocabulary_size=null",
        "task.target_length=12",
        "task.translate_unknown=false",
        "task.lexicon_bias=0",
    ]
    run_id = trained_run(compose, "task=translation", "task.samples=3", *subwords)
    for name, before, after in evaluate(run_id, tracking_uri):
        assert after == pytest.approx(before, rel=1e-5, abs=1e-6), name

    german = ["Ich habe keine Zeit.", "Das ist gut."]
    lines = predict(run_id, tracking_uri, german)
    cfg = compose("task=translation", *subwords)
    task = load_task(cfg.task, cfg.data_dir, cfg.trainer.batch_size, cfg.seed)[0]
    stored = load_stored_model(MlflowClient(tracking_uri), run_id)
    pieces = decode(
        stored.keras_model,
        task.source_ids(german),
        task.target_vectorizer.get_vocabulary(),
        task.cfg.target_length,
        decode_unknown=False,
    )
    english = [task.target_codec.join(decoded) for decoded in pieces]
    assert lines == [f"{g}  ->  {e}" for g, e in zip(german, english, strict=True)]
    assert not any("▁" in line for line in lines)


@pytest.mark.slow
def test_forecasting_predicts_the_next_value_from_a_csv_file(task_run, tracking_uri, tmp_path):
    run_id = task_run("forecasting")
    task = same_data_task(tracking_uri, "forecasting")
    latest = task.values[-30:]
    csv = tmp_path / "latest.csv"
    csv.write_text("time,value\n" + "".join(f"{i},{v}\n" for i, v in enumerate(latest)))

    [line] = predict(run_id, tracking_uri, [str(csv)])
    stored = load_stored_model(MlflowClient(tracking_uri), run_id)
    window = latest[-task.cfg.window :].astype(np.float32)[np.newaxis, :, np.newaxis]
    expected = float(stored.keras_model.predict(window, verbose=0)[0])
    assert line.startswith(f"{expected:.4f}  (1 step after")
    # The same values typed on the command line give the same forecast.
    assert predict(run_id, tracking_uri, [str(v) for v in latest]) == [line]
    with pytest.raises(Exception, match="needs the last 24 values"):
        predict(run_id, tracking_uri, ["1.0", "2.0"])


@pytest.mark.slow
def test_a_run_records_its_model_datasets_and_system_metrics(compose, tracking_uri):
    run_id = trained_run(
        compose, "tracking.system_metrics_seconds=0.2", "task=adding", "task.length=20"
    )
    client = MlflowClient(tracking_uri)
    recorded = client.get_run(run_id)

    [model_output] = recorded.outputs.model_outputs
    model = client.get_logged_model(model_output.model_id)
    assert model.source_run_id == run_id
    inputs = {d.dataset.name: d for d in recorded.inputs.dataset_inputs}
    assert len(inputs) == 3  # train, validation, test
    for dataset_input in inputs.values():
        assert dataset_input.dataset.digest == recorded.data.tags[names.DATA_HASH]
    contexts = {tag.value for d in inputs.values() for tag in d.tags}
    assert {"training", "validation", "testing"} <= contexts
    assert "system/cpu_utilization_percentage" in recorded.data.metrics
    assert "system/system_memory_usage_megabytes" in recorded.data.metrics
    # The UI files the experiment's runs as training, not as GenAI evaluation runs.
    experiment = client.get_experiment(recorded.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_a_prepared_tfds_set_is_recorded_by_name_and_version(task_run, tracking_uri):
    run_id = task_run("forecasting")
    names = {
        d.dataset.name for d in MlflowClient(tracking_uri).get_run(run_id).inputs.dataset_inputs
    }
    assert names == {f"statsmodels_series/sunspots/1.0.0 [{split}]" for split in
                     ("train", "validation", "test")}  # fmt: skip


@pytest.mark.slow
def test_predict_and_evaluate_fail_in_one_line(compose, tracking_uri, capsys):
    adding = trained_run(compose, "task=adding", "task.length=20")
    unstored = trained_run(compose, "task=adding", "task.length=20", "tracking.log_model=false")

    with pytest.raises(NoPredictError, match="task 'adding' has no predict"):
        predict(adding, tracking_uri, ["1"])
    with pytest.raises(NoStoredModelError, match=f"run {unstored} stored no model"):
        evaluate(unstored, tracking_uri)
    for arguments, message in (
        (["predict", adding, "1"], "has no predict"),
        (["evaluate", unstored], "stored no model"),
        (["evaluate", "0" * 32], "no run 00000000"),
        (["predict", adding], "usage: rnnlab predict RUN_ID INPUT"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*arguments, f"tracking.uri={tracking_uri}"])
        [line] = str(exit_.value.code).splitlines()
        assert line.startswith("rnnlab: ") and message in line, line


def model_folder(tracking_uri: str, run_id: str) -> Path:
    """The run's stored model's folder on disk (the test stores keep artifacts locally)."""
    client = MlflowClient(tracking_uri)
    location = client.get_logged_model(stored_model_id(client, run_id)).artifact_location
    return Path(location.removeprefix("file://"))


class Planted:
    """A pickle whose loading runs a command: what a writer to a shared store could plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def plant_pickle(folder: Path, marker: Path) -> None:
    (folder / "python_model.pkl").write_bytes(pickle.dumps(Planted(marker)))
    # The planted pickle is live: whoever unpickles it runs the command.
    pickle.loads((folder / "python_model.pkl").read_bytes())
    assert marker.exists()
    marker.unlink()


def store_as_before(tracking_uri: str, run_id: str, scratch: Path) -> None:
    """Rewrite the run's stored model as rnnlab stored it before its loader module: a
    pickled `StoredModel` whose MLmodel names MLflow's loader, its files under `artifacts/`."""
    folder = model_folder(tracking_uri, run_id)
    data = folder / "data" / "model"
    mlflow.pyfunc.save_model(
        path=scratch / "before",
        python_model=StoredModel(),
        artifacts={
            "keras_model": str(data / names.KERAS_FILE),
            "inputs": str(data / names.INPUTS_FILE),
        },
    )
    shutil.rmtree(folder)
    shutil.copytree(scratch / "before", folder)
    assert (folder / "artifacts" / names.KERAS_FILE).exists()


def test_a_stored_model_is_read_only_from_inside_its_own_folder():
    loader = {"loader_module": "rnnlab.records.stored_model"}

    def folder(**flavor: object) -> str:
        return data_folder(mlflow.models.Model(flavors={"python_function": flavor}), "r1")

    assert folder(**loader, data="data/model") == "data/model"
    assert folder(loader_module="mlflow.pyfunc.model", python_model="python_model.pkl") == (
        "artifacts"  # stored before: its two files, never its pickle
    )
    for data in ("../../other_model/data", "/etc", "", None):
        with pytest.raises(ConfigError, match="r1's stored model names no data folder"):
            folder(**loader, data=data)


@pytest.mark.slow
def test_a_stored_model_holds_data_only_and_names_rnnlabs_loader(task_run, tracking_uri):
    folder = model_folder(tracking_uri, task_run("sentiment"))

    assert not list(folder.rglob("*.pkl"))
    flavor = mlflow.models.Model.load(folder / "MLmodel").flavors["python_function"]
    assert flavor["loader_module"] == "rnnlab.records.stored_model"
    assert "python_model" not in flavor and not flavor.get("code")
    assert {path.name for path in (folder / flavor["data"]).iterdir()} == {
        names.KERAS_FILE,
        names.INPUTS_FILE,
    }


@pytest.mark.slow
def test_mlflows_loader_predicts_arrays_as_rnnlabs_loader_does(task_run, tracking_uri):
    run_id = task_run("adding")
    stored = load_stored_model(MlflowClient(tracking_uri), run_id)
    cfg = compose_config(small_config(tracking_uri, "adding"))
    data = load_task(cfg.task, cfg.data_dir, cfg.trainer.batch_size, cfg.seed)[1]
    inputs = array_example(stored.keras_model, data)

    mlflow.set_tracking_uri(tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{stored_model_id(MlflowClient(), run_id)}")
    expected = stored.keras_model.predict(inputs, verbose=0)
    assert np.allclose(pyfunc.predict(inputs), expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("stored", ["today", "before"])
def test_a_pickle_planted_in_a_store_never_runs(tracking_uri, tmp_path, stored):
    run_id = run(compose_config(small_config(tracking_uri, "sentiment"))).run_id
    if stored == "before":
        store_as_before(tracking_uri, run_id, tmp_path)
    marker = tmp_path / "the-pickle-ran"
    plant_pickle(model_folder(tracking_uri, run_id), marker)

    texts = ["A gripping, funny and moving film.", "Dull, and far too long."]
    fresh = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", "predict", run_id, *texts,
         f"tracking.uri={tracking_uri}"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert not marker.exists()
    keras_model = load_stored_model(MlflowClient(tracking_uri), run_id).keras_model
    tokens = same_data_task(tracking_uri, "sentiment").vectorizer(texts)
    expected = keras_model.predict(tokens, verbose=0)[:, 0]
    assert fresh.stdout.strip().splitlines()[-2:] == [
        f"{p:.3f} positive  {text}" for p, text in zip(expected, texts, strict=True)
    ]
    for name, logged, recomputed in evaluate(run_id, tracking_uri):
        assert recomputed == pytest.approx(logged, rel=1e-5, abs=1e-6), name
    assert not marker.exists()

    # MLflow's own loader: a model stored today names no pickle, so it runs none; one
    # stored before names its pickle, so MLflow runs whatever it holds (rnnlab never does).
    mlflow.set_tracking_uri(tracking_uri)
    model_uri = f"models:/{stored_model_id(MlflowClient(), run_id)}"
    if stored == "today":
        assert np.allclose(mlflow.pyfunc.load_model(model_uri).predict(texts), expected)
        assert not marker.exists()
    else:
        with pytest.raises(Exception):  # noqa: B017 (the planted object is no model)
            mlflow.pyfunc.load_model(model_uri)
        assert marker.exists()


def test_a_sqlite_store_keeps_its_artifacts_beside_its_database(tmp_path, monkeypatch):
    """MLflow's default artifact root is ./mlruns of the working directory: a store
    elsewhere filed its runs' files in whatever project the command ran from."""
    from rnnlab.records.tracking import use_store

    working = tmp_path / "project"
    working.mkdir()
    monkeypatch.chdir(working)
    database = tmp_path / "store" / "runs.db"
    use_store(f"sqlite:///{database}", "a/b experiment")
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    stored = Path(MlflowClient().get_run(run.info.run_id).info.artifact_uri.removeprefix("file://"))
    assert stored.is_relative_to(database.parent) and (stored / "note.txt").read_text() == "hello"
    assert not (working / "mlruns").exists()
    use_store(f"sqlite:///{database}", "a/b experiment")  # found again, not created twice
    assert len(MlflowClient().search_experiments()) == 2  # with MLflow's Default
