"""The trained model stored with its run, and loaded again by `rnnlab evaluate` and `predict`.

Each run logs an MLflow 3 logged model (the run's "model" in the UI) holding the Keras 3
file of the tested weights and the task's input state (vocabularies). It is a pyfunc model
of rnnlab's own rather than MLflow's Keras flavour: that flavour (MLflow 3.17) fails as soon
as it is given an input example, writing the example before it creates the model's folder.

A store holds data, never code that loading runs: stores are shared, and whoever can write
to one could otherwise run anything on the machine of whoever loads from it. So the model
is logged through pyfunc's `loader_module` route, not as a `PythonModel` (which MLflow
pickles, and unpickles on load): its MLmodel names this module, which MLflow imports from
the environment (no `code_paths`), and `_load_pyfunc` reads the Keras file in safe mode and
the inputs' JSON. Models stored before this also hold `python_model.pkl`: rnnlab never
reads it, but MLflow's own loader would.

Where the task has a predict (sentiment, translation, forecasting) the stored model takes
what a person gives: raw text, or the series' latest values. Elsewhere it takes the Keras
model's own arrays. Loading needs only `import rnnlab`, which registers its layers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.models import Model, infer_signature
from mlflow.pyfunc import PythonModel, PythonModelContext
from omegaconf import DictConfig, OmegaConf

from rnnlab.config import ConfigError, cell_name
from rnnlab.records import names
from rnnlab.tasks.base import Task, TaskData, first_examples


class NoStoredModelError(ConfigError):
    """The run stored no model: made with tracking.log_model=false, or before models were."""


# Where a model stored before the loader-module route keeps its two files, in its folder.
# (Its `python_model.pkl` is never read: see the module's docstring.)
PICKLED_MODEL_DATA = "artifacts"


class StoredModel(PythonModel):
    """The Keras model and, rebuilt from its config and input state, the task around it.

    Still a `PythonModel` only so that models stored before, whose pickle names this
    class, keep loading through MLflow's own loader; new models are never pickled.
    """

    # Its input differs by task (texts, numbers, arrays): the signature says which, not
    # type hints, so MLflow's type-hint wrapping of `predict` is off.
    _skip_type_hint_validation = True

    def load_context(self, context: PythonModelContext) -> None:
        self.load_files(context.artifacts["keras_model"], context.artifacts["inputs"])

    def load_files(self, keras_file: str, inputs_file: str) -> StoredModel:
        """The model from its two data files: nothing in them is code that runs on load."""
        import rnnlab.recurrence.stack  # noqa: F401 (registers ProbedRNN, the cells, ShortConv)
        from rnnlab.tasks import get_task

        record = json.loads(Path(inputs_file).read_text())
        # The task first: its module registers the layers its models hold (the decoder's
        # steps, tied embeddings, the lexicon bias), which Keras must know to load them.
        self.task = get_task(OmegaConf.create(record["task"]), record["data_dir"])
        self.keras_model = keras.saving.load_model(keras_file, compile=False, safe_mode=True)
        self.input_state = record["inputs"]
        self.raw_input = record["raw_input"]
        self.task.restore_inputs(self.input_state)
        return self

    # No type hints: MLflow would infer a signature from them and warn that `Any` is not a
    # list; the signature is given explicitly where the model is logged.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if not self.raw_input:
            return self.keras_model.predict(model_input, verbose=0)
        if hasattr(model_input, "iloc"):  # MLflow hands a column of values as a DataFrame
            model_input = model_input.iloc[:, 0].tolist()
        return self.task.predict(self.keras_model, list(model_input))


class LoadedModel:
    """What `mlflow.pyfunc.load_model` wraps for a model logged through this module."""

    def __init__(self, stored: StoredModel) -> None:
        self.stored = stored

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        return self.stored.predict(None, model_input, params)


def _load_pyfunc(data_path: str) -> LoadedModel:
    """MLflow's entry point for the loader-module route: the model from its data folder."""
    folder = Path(data_path)
    stored = StoredModel().load_files(
        str(folder / names.KERAS_FILE), str(folder / names.INPUTS_FILE)
    )
    return LoadedModel(stored)


def array_example(
    model: keras.Model, data: TaskData, count: int = 2
) -> np.ndarray | dict[str, np.ndarray]:
    """The first test examples, as the Keras model takes them (by input name if several)."""
    inputs = first_examples(data.test, count)[0]
    if isinstance(inputs, tuple | list):
        return {layer.name: np.asarray(x) for layer, x in zip(model.inputs, inputs, strict=True)}
    return np.asarray(inputs)


def requirements() -> list[str]:
    """What loading needs from PyPI; rnnlab itself comes from this project's checkout."""
    import tensorflow as tf

    return [f"{module.__name__}=={module.__version__}" for module in (tf, keras, mlflow)]


def log_stored_model(model: keras.Model, task: Task, cfg: DictConfig, data: TaskData) -> str:
    """Log the model with its signature and input example to the active run; its model id."""
    raw_example = task.predict_example()
    raw_input = raw_example is not None
    example: list | np.ndarray | dict[str, np.ndarray]
    if raw_example is not None:
        example, answers = raw_example, task.predict(model, raw_example)
    else:
        example = array_example(model, data)
        answers = model.predict(example, verbose=0)
    record = {
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "data_dir": str(cfg.data_dir),
        "inputs": task.input_state(),
        "raw_input": raw_input,
    }
    with tempfile.TemporaryDirectory() as folder, quiet_mlflow():
        # MLflow copies this folder to `data/model/` and names that path in the MLmodel.
        files = Path(folder, "model")
        files.mkdir()
        model.save(files / names.KERAS_FILE)
        (files / names.INPUTS_FILE).write_text(json.dumps(record))
        info = mlflow.pyfunc.log_model(
            name=f"{cell_name(cfg.cell)}-{cfg.task.name}",  # what the UI's Models list shows
            # Data and the name of an installed module: no pickle, and no code_paths, so
            # loading imports rnnlab's loader from the environment, never from the store.
            loader_module=__name__,
            data_path=str(files),
            signature=infer_signature(example, answers),
            input_example=example,
            pip_requirements=requirements(),
        )
    return info.model_id


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's notes on models and type hints: they are not the user's."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set(False)  # a bar per file copied into the store
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.unset()


def stored_model_id(client: MlflowClient, run_id: str) -> str:
    """The id of the model the run logged; a one-line error if it logged none."""
    outputs = client.get_run(run_id).outputs
    model_ids = [output.model_id for output in (outputs.model_outputs if outputs else [])]
    if not model_ids:
        raise NoStoredModelError(
            f"run {run_id} stored no model (tracking.log_model was false, or it predates "
            "stored models): `rnnlab reproduce` retrains it"
        )
    return model_ids[-1]


def load_stored_model(client: MlflowClient, run_id: str) -> StoredModel:
    """The run's model, read from the Keras file and the inputs' JSON in its store.

    Never through MLflow's loader: for a model stored before the loader-module route, that
    would unpickle `python_model.pkl`, running whatever the pickle holds. The MLmodel file
    (YAML, read as data) says where the two files are.
    """
    location = client.get_logged_model(stored_model_id(client, run_id)).artifact_location
    with tempfile.TemporaryDirectory() as folder, quiet_mlflow():
        mlmodel = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location}/MLmodel", dst_path=folder
        )
        data = data_folder(Model.load(mlmodel), run_id)
        files = [
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location}/{data}/{name}", dst_path=folder
            )
            for name in (names.KERAS_FILE, names.INPUTS_FILE)
        ]
        return StoredModel().load_files(*files)


def data_folder(mlmodel: Model, run_id: str) -> str:
    """Where in the model's folder its two data files are, as its MLmodel says."""
    flavor = mlmodel.flavors.get("python_function", {})
    if flavor.get("loader_module") != __name__:
        return PICKLED_MODEL_DATA  # logged as a pickled StoredModel, before this route
    data = flavor.get("data")
    parts = PurePosixPath(data).parts if isinstance(data, str) else ()
    # A store's files name none outside the model's folder: nothing else there is read.
    if not parts or parts[0] == "/" or ".." in parts:
        raise ConfigError(f"run {run_id}'s stored model names no data folder of its own: {data!r}")
    return str(data)
