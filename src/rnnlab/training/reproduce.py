"""`rnnlab reproduce RUN_ID`: retrain a recorded run from its own records and compare.

The original run's `config.yaml` artifact is the whole recipe. The new run is tagged with the
original's id; the original and reproduced metrics are printed side by side, with a warning
for every difference in data, code or packages that could explain a mismatch.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import DictConfig

from rnnlab.config import ConfigError, validate
from rnnlab.records import names
from rnnlab.records.runs import (
    MissingRecordError,
    RunNotFoundError,
    stored_config,
    stored_packages,
)


class ReproduceError(LookupError):
    """The run or its records cannot be found; the message says where it looked."""


def original_config(client: MlflowClient, run_id: str, tracking_uri: str) -> DictConfig:
    """The run's stored config, set to train into `tracking_uri` as a run of its own, and
    checked against today's config rules."""
    try:
        cfg = stored_config(client, run_id)
    except RunNotFoundError:
        raise ReproduceError(
            f"no run {run_id} in {tracking_uri}: if it was recorded elsewhere, "
            "pass tracking.uri=<that store>"
        ) from None
    except MissingRecordError as error:
        raise ReproduceError(str(error)) from None
    cfg.tracking.uri = tracking_uri
    cfg.tracking.parent_run_id = None  # a rerun of a sweep trial is a run of its own
    try:
        validate(cfg)
    except ConfigError as error:
        raise ReproduceError(f"run {run_id}'s config no longer validates: {error}") from None
    return cfg


def differences(client: MlflowClient, original: Run, reproduced: Run) -> list[str]:
    """What differs between the two runs' data, code and packages, one line each."""
    warnings = []
    for tag, what in (
        (names.DATA_HASH, "the data"),
        (names.GIT_COMMIT, "the git commit"),
        (names.GIT_DIRTY, "uncommitted changes"),
        (names.RECURRENCE, "the recurrence routes (native ops, graph or Keras loop)"),
        (names.CPU, "the CPUs"),
    ):
        before, after = original.data.tags.get(tag), reproduced.data.tags.get(tag)
        if before != after:
            warnings.append(f"{what} differ: {before} then, {after} now")
    then, now = (stored_packages(client, run.info.run_id) for run in (original, reproduced))
    if then is None:
        warnings.append("the original run recorded no package versions")
    elif then != now:
        changed = sorted(then ^ (now or set()))
        warnings.append(f"package versions differ: {', '.join(changed[:8])}")
    if original.data.params.get("reproducible") != "True":
        warnings.append("the original did not ask for reproducible=true: expect small differences")
    return warnings


def reproduce(run_id: str, tracking_uri: str) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Retrain run_id into a new run; returns {metric: (original, reproduced)} and warnings."""

    from rnnlab.training.run import run

    client = MlflowClient(tracking_uri)
    cfg = original_config(client, run_id, tracking_uri)
    result = run(cfg, tags={names.REPRODUCES: run_id})
    original = client.get_run(run_id)
    reproduced = client.get_run(result.run_id)
    compared = {
        name: (value, reproduced.data.metrics.get(name, float("nan")))
        for name, value in sorted(original.data.metrics.items())
        if name.startswith("test_")
    }
    return compared, differences(client, original, reproduced)


def comparison_table(compared: dict[str, tuple[float, float]]) -> str:
    lines = [f"{'metric':<24} {'original':>12} {'reproduced':>12}  same"]
    for name, (before, after) in compared.items():
        lines.append(
            f"{name:<24} {before:>12.6f} {after:>12.6f}  {'yes' if before == after else 'NO'}"
        )
    return "\n".join(lines)
