"""`rnnlab evaluate RUN_ID` and `rnnlab predict RUN_ID INPUT...`: use a run's stored model.

Evaluate rescores the stored model on the run's own test split (the data and vocabulary
are checked to be the run's) and prints the logged and recomputed metrics side by side:
a number in a table can be re-checked without retraining. Predict answers new input with
it, for the tasks whose inputs a person can type.
"""

from __future__ import annotations

import keras
from mlflow import MlflowClient

from rnnlab.config import ConfigError
from rnnlab.records import names
from rnnlab.records.stored_model import StoredModel, load_stored_model
from rnnlab.training.reproduce import original_config


class RunDataChangedError(ConfigError):
    """The data or vocabulary the run saw is not what loads today: the scores would differ."""


def evaluate(run_id: str, tracking_uri: str) -> list[tuple[str, float | None, float]]:
    """(metric, logged value or None, recomputed value) for every test metric."""
    from rnnlab.tasks import load_task
    from rnnlab.tasks.data_files import is_file_source
    from rnnlab.threads import configure_threads

    configure_threads()
    client = MlflowClient(tracking_uri)
    cfg = original_config(client, run_id, tracking_uri)
    stored = load_stored_model(client, run_id)
    keras.mixed_precision.set_global_policy(cfg.trainer.precision)
    task, data = load_task(cfg.task, cfg.data_dir, cfg.trainer.batch_size, cfg.seed)
    run = client.get_run(run_id)
    if data.data_hash != run.data.tags.get(names.DATA_HASH):
        source = str(cfg.task.get("source", ""))
        fix = (
            f"{source.removeprefix('file:')} is not the file it was (its content changed)"
            if is_file_source(source)
            else "prepare the run's data"
        )
        raise RunDataChangedError(
            f"the {cfg.task.name} data loads with hash {data.data_hash}, but run {run_id} "
            f"trained on {run.data.tags.get(names.DATA_HASH)}: {fix}"
        )
    if task.input_state() != stored.input_state:
        raise RunDataChangedError(
            f"the {cfg.task.name} vocabulary built today differs from run {run_id}'s"
        )
    model = stored.keras_model
    model.compile(loss=task.loss, metrics=list(task.metrics))
    scores = model.evaluate(data.test, return_dict=True, verbose=0)
    scores |= task.evaluate_extra(model, data)[0]
    logged = run.data.metrics
    return [
        (f"test_{name}", logged.get(f"test_{name}"), float(value))
        for name, value in sorted(scores.items())
    ]


def evaluation_table(rows: list[tuple[str, float | None, float]]) -> str:
    lines = [f"{'metric':<24} {'logged':>12} {'recomputed':>12} {'difference':>12}"]
    for name, logged, recomputed in rows:
        if logged is None:
            lines.append(f"{name:<24} {'-':>12} {recomputed:>12.6g} {'-':>12}")
        else:
            difference = recomputed - logged
            lines.append(f"{name:<24} {logged:>12.6g} {recomputed:>12.6g} {difference:>12.3g}")
    return "\n".join(lines)


def predict(run_id: str, tracking_uri: str, inputs: list[str]) -> list[str]:
    """The stored model's answers to `inputs`, one line each, as the task words them."""
    if not inputs:
        raise ConfigError("usage: rnnlab predict RUN_ID INPUT... (texts, numbers or a CSV file)")
    client = MlflowClient(tracking_uri)
    original_config(client, run_id, tracking_uri)  # a one-line error for an unknown run
    stored: StoredModel = load_stored_model(client, run_id)
    answers = stored.task.predict(stored.keras_model, inputs)
    return stored.task.prediction_lines(inputs, answers)
