"""`rnnlab <command> [hydra overrides]`: the console entry point.

Config mistakes are caught here before TensorFlow is imported, and every error the user
can fix is reported as one line (`rnnlab: ...`) instead of a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from rnnlab.config import (
    CONF_DIR,
    ConfigError,
    check_first_point,
    check_overrides,
    compose_config,
    one_line,
    validate,
    with_experiment_task_overrides,
)
from rnnlab.experiments.launchers import LAUNCHERS, Launcher, SlurmOptions, launcher_for
from rnnlab.interrupts import interrupted, stop_on_signals
from rnnlab.records import names
from rnnlab.records.store_access import check_store

if TYPE_CHECKING:
    import optuna

    from rnnlab.experiments.sweep_file import Sweep

# TensorFlow's C++ start-up notes drown the progress bar; its warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per file

USAGE = """usage: rnnlab <command> [options] [--verbose]

--verbose shows the libraries' start-up notes (TensorFlow's, MLflow's), which are hidden.

commands:
  train [overrides]   train one run; `-m` sweeps comma lists (e.g. -m cell=lstm,gru)
  prepare [task ...]  fetch and build the embedded datasets (run by `make install`)
  sweep <file> [overrides] [--workers N] [--storage URL] [--launcher slurm]
                      an Optuna search (sweeps/<name>.yaml); the same command resumes it;
                      the winner: conf/experiment/<study>_best.yaml (--output DIR: DIR/)
  paper EXPERIMENT [overrides] [--workers N] [--storage URL] [--launcher slurm]
                      run every configuration of conf/experiment/EXPERIMENT (resumable;
                      workers here, on other machines or SLURM share it), then report
                      (--no-report: only run; --output DIR: where the report goes)
  report EXPERIMENT [--output DIR]
                      tables (Markdown, LaTeX) and figures in reports/EXPERIMENT/ of the
                      working directory, or in DIR
  reproduce RUN_ID    retrain a recorded run from its records and compare the metrics
  evaluate RUN_ID     rescore a run's stored model on its test split, beside the logged metrics
  predict RUN_ID INPUT...
                      the stored model's answers: texts (sentiment, translation), or the
                      latest values or a CSV file (forecasting)
  native [--rebuild]  whether rnnlab's native ops are on; --rebuild compiles them again
  info                versions, CPU, threads, native ops, data: paste it into a bug report

examples:
  rnnlab train cell=gru cell.units=32 trainer.epochs=3 seed=1
  rnnlab train -m cell=simple_rnn,lstm,gru
  rnnlab train --cfg job       # print the composed config and exit
  rnnlab sweep sweeps/sentiment_cells.yaml --workers 2
  rnnlab paper smoke --workers 2
  rnnlab reproduce 3f5e57a6525e4c2ab0b82028167a645b
  rnnlab predict 3f5e57a6525e4c2ab0b82028167a645b "A gripping, funny film."
"""


USAGE_SWEEP = "`rnnlab sweep`: an Optuna study whose trials are ordinary `run(cfg, trial)` calls."
USAGE_PAPER = (
    "Every configuration of an experiment's grid, resumably; workers on this machine, on "
    "others sharing --storage, or SLURM jobs (--launcher slurm) share the grid."
)


def train_job(cfg: DictConfig) -> float:
    """Hydra's task function: validate, then train (TensorFlow is imported only now)."""
    logging.getLogger("absl").setLevel(logging.WARNING)  # TFDS reports every file it opens
    given = list(HydraConfig.get().overrides.task)
    from rnnlab.tasks import check_data_file

    try:
        cfg = with_experiment_task_overrides(cfg, given)  # as `rnnlab paper` composes it
        validate(cfg)  # a later point of a multirun: check_train saw only the first
        check_store(cfg.tracking.uri)  # seconds, not minutes of MLflow's retries after TF
        check_data_file(cfg.task, cfg.data_dir)  # a user's file: read, checked and cached
    except ConfigError as error:
        discard_job_folder()
        sys.exit(f"rnnlab: {error}")

    from rnnlab.tasks.datasets import DataNotPreparedError
    from rnnlab.training.callbacks import NonFiniteLossError
    from rnnlab.training.run import run

    try:
        result = run(cfg)
    except (ConfigError, DataNotPreparedError, NonFiniteLossError, InstantiationException) as error:
        discard_job_folder()  # the MLflow run, if one began, keeps the config and the reason
        sys.exit(f"rnnlab: {one_line(error)}")  # a bad `_target_`: its root cause says why
    print(f"run {result.run_id}: `make ui` shows it")
    return result.metrics[f"test_{cfg.task.metric}"]


def discard_job_folder() -> None:
    """Remove the folder hydra.main made for this job (outputs/<day>/<time>/: the composed
    config and an empty log), and the folders above it that it leaves empty: a command that
    fails in one line leaves nothing behind."""
    folder = Path(HydraConfig.get().runtime.output_dir)
    shutil.rmtree(folder, ignore_errors=True)
    stop = Path.cwd()
    for parent in folder.parents:
        if parent == stop or stop not in parent.parents:
            break
        try:
            parent.rmdir()  # only while empty: other jobs' folders stay
        except OSError:
            break


# Hydra's flags that print something and exit instead of training: their config is composed
# (an unknown key is still one line) but not validated, and no store is asked.
SHOW_FLAGS = ("help", "hydra_help", "cfg", "info", "shell_completion")
# Hydra's flags that would compose another config than conf/config.yaml, which every check
# here reads, or load a pickled one (--experimental-rerun): rnnlab train refuses them.
OTHER_CONFIG_FLAGS = ("config_path", "config_name", "config_dir", "experimental_rerun")


def hydra_arguments(arguments: list[str]) -> argparse.Namespace:
    """`rnnlab train`'s arguments parsed by hydra.main's own parser, its errors one line."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def fail(message: str) -> NoReturn:
        raise ConfigError(f"train: {message} (rnnlab train --help lists the flags)")

    parser.error = fail  # type: ignore[method-assign]
    parsed = parser.parse_args(arguments)
    for name in OTHER_CONFIG_FLAGS:
        if getattr(parsed, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"rnnlab train composes {CONF_DIR}; {flag} is not supported")
    return parsed


def check_train(arguments: list[str]) -> DictConfig:
    """Everything `rnnlab train` checks before hydra.main makes its output folder and before
    TensorFlow loads: the flags, the overrides, the first configuration's values and its
    tracking store. Raises ConfigError (one line); creates nothing. The config it returns is
    the first run's (validated unless a flag only shows it)."""
    parsed = hydra_arguments(arguments)
    shows_only = any(getattr(parsed, name) for name in SHOW_FLAGS)
    check_overrides(parsed.overrides)
    cfg = check_first_point(parsed.overrides, multirun=parsed.multirun, validated=not shows_only)
    if not shows_only:
        check_store(cfg.tracking.uri)
    return cfg


def train(arguments: list[str]) -> None:
    check_train(arguments)
    sys.argv = ["rnnlab train", *arguments]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(train_job)()


def prepare(task_names: list[str]) -> None:
    from rnnlab.config import group_choices
    from rnnlab.tasks import TASK_MODULES, get_task

    for name in task_names or [n for n in group_choices("task") if n in TASK_MODULES]:
        cfg = compose_config([f"task={name}"])
        print(f"preparing {name} in {cfg.data_dir}/ ...", flush=True)
        get_task(cfg.task, cfg.data_dir).prepare()


class OneLineParser(argparse.ArgumentParser):
    """argparse, its mistakes one line (`rnnlab: sweep: ...`) rather than the usage and the
    error on two."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("rnnlab ")
        raise ConfigError(f"{command}: {message} ({self.prog} --help lists the arguments)")


def add_worker_arguments(parser: argparse.ArgumentParser, storage_help: str) -> None:
    """The flags `rnnlab sweep` and `rnnlab paper` share: how many workers, the database
    they meet in, and where they run (a launcher, with the SLURM jobs' options)."""
    parser.add_argument("--workers", type=int, default=1, help="worker processes (or jobs)")
    parser.add_argument("--storage", help=storage_help)
    parser.add_argument(
        "--launcher",
        choices=tuple(LAUNCHERS),
        default=None,
        help="local: processes on this machine (default); slurm: one SLURM job per worker",
    )
    for field in dataclasses.fields(SlurmOptions):
        flag = "--" + field.name.replace("_", "-")
        kind = str if field.name in ("partition", "logs") else int
        parser.add_argument(flag, type=kind, default=None, help=f"slurm: {field.name}")


# What a command writes goes under the working directory (or --output), never into rnnlab's
# own folders, which an installed package's user need not own. Run from the project's
# root, these are the folders they always were.
REPORTS = Path("reports")  # reports/<experiment>/
BEST_EXPERIMENTS = Path("conf") / "experiment"  # <study>_best.yaml


def sweep_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rnnlab sweep", description=USAGE_SWEEP)
    parser.add_argument("file", help="sweeps/<name>.yaml, or just <name>")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every trial")
    add_worker_arguments(parser, "Optuna storage URL; replaces the sweep file's")
    parser.add_argument(
        "--output",
        type=Path,
        default=BEST_EXPERIMENTS,
        help=f"folder of <study>_best.yaml (default: {BEST_EXPERIMENTS}/ here)",
    )
    return parser


def add_report_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        type=Path,
        help=f"the report's folder (default: {REPORTS}/EXPERIMENT/ here)",
    )


def paper_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rnnlab paper", description=USAGE_PAPER)
    parser.add_argument("experiment", help="a name in conf/experiment/")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every point")
    add_worker_arguments(parser, "database the workers share the grid through")
    parser.add_argument("--no-report", action="store_true", help="only run the grid")
    add_report_output(parser)
    return parser


def report_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rnnlab report", description="An experiment's tables and figures.")
    parser.add_argument("experiment", help="a name in conf/experiment/")
    parser.add_argument("overrides", nargs="*", help="tracking.uri=... to read another store")
    add_report_output(parser)
    return parser


def check_output(folder: Path) -> None:
    """`--output` (or its default) can be made and written, checked before any work: a
    report after an hour's grid should not fail on a folder the user cannot write."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {folder}/: {existing} is not a folder this user can write")


def check_workers(options: argparse.Namespace) -> None:
    if options.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {options.workers}")


def chosen_launcher(
    options: argparse.Namespace, default: str, file_settings: dict, name: str
) -> Launcher:
    """The launcher the flags name, else `default` (a sweep file's); its settings are the
    file's `slurm:` section with the flags over it. Checked by the launcher that uses them."""
    settings = dict(file_settings)
    for field in dataclasses.fields(SlurmOptions):
        given = getattr(options, field.name, None)
        if given is not None:
            settings[field.name] = given
    return launcher_for(options.launcher or default, settings, name)


def sweep_and_report(
    spec: Sweep,
    workers: int = 1,
    launcher: Launcher | None = None,
    best_folder: Path | None = None,
) -> optuna.Study:
    """Run (or resume) the sweep, then write its report to its parent run before that ends.

    The best trial becomes `<best_folder>/<study>_best.yaml`, by default in conf/experiment/
    of the working directory. The report is called from here, not from experiments/:
    reports read experiments.
    """
    from rnnlab.experiments.sweep import sweep as run_sweep
    from rnnlab.reports.sweep_report import report

    folder = best_folder or BEST_EXPERIMENTS
    return run_sweep(
        spec,
        workers,
        launcher,
        report=lambda study, client, run_id: report(study, spec, client, run_id, folder),
    )


def check_sweep(arguments: list[str]) -> tuple[argparse.Namespace, Sweep, Launcher]:
    """Everything `rnnlab sweep` checks before a study or an MLflow run exists and before
    TensorFlow loads: the flags, the sweep file, the study's storage and the tracking store.
    Raises ConfigError (one line); creates nothing."""
    # The file is checked before MLflow and TensorFlow load: a mistake costs no start-up.
    from rnnlab.experiments.study_storage import check_study_storage
    from rnnlab.experiments.sweep_file import load_sweep

    options = sweep_parser().parse_intermixed_args(arguments)
    check_workers(options)
    check_output(options.output)
    spec = load_sweep(options.file, options.overrides)
    if options.storage:
        spec = dataclasses.replace(spec, storage=options.storage)
    tracking_uri = compose_config(list(spec.overrides)).tracking.uri
    check_study_storage(spec.storage, tracking_uri)
    check_store(tracking_uri)
    launcher = chosen_launcher(options, spec.launcher, spec.slurm, f"sweep-{spec.name}")
    return options, spec, launcher


def sweep(arguments: list[str]) -> None:
    """`rnnlab sweep <file> [overrides] [--workers N] [--storage URL] [--launcher slurm]`."""
    logging.getLogger("absl").setLevel(logging.WARNING)
    options, spec, launcher = check_sweep(arguments)
    study = sweep_and_report(spec, options.workers, launcher, options.output)

    from optuna.trial import TrialState

    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        sys.exit("rnnlab: no trial completed; see the failures above")


def name_and_overrides(arguments: list[str], usage: str) -> tuple[str, list[str]]:
    """`NAME key=value ...` -> (NAME, overrides); anything else is a usage error."""
    if not arguments or "=" in arguments[0] or arguments[0].startswith("-"):
        raise ConfigError(f"usage: rnnlab {usage}")
    check_overrides(arguments[1:])
    return arguments[0], arguments[1:]


def paper(arguments: list[str]) -> None:
    options = paper_parser().parse_intermixed_args(arguments)
    name, overrides = name_and_overrides(
        [options.experiment, *options.overrides], "paper EXPERIMENT [overrides] [--workers N]"
    )
    check_workers(options)
    if not options.no_report:
        check_output(options.output or REPORTS / name)
    launcher = chosen_launcher(options, "local", {}, f"paper-{name}")
    from rnnlab.experiments.paper import GridJob, run_experiment

    check_store(GridJob(name, overrides).tracking_uri())
    counts = run_experiment(name, overrides, options.workers, options.storage, launcher)
    print(
        f"{counts['ran']} runs trained, {counts['skipped']} finished before and skipped, "
        f"{counts['failed']} failed (see their {names.FAILURE} tag)"
    )
    if counts["left"]:
        sys.exit(f"rnnlab: {counts['left']} point(s) left untrained: rerun the same command")
    if not options.no_report:
        write_report(name, overrides, options.output)


def report(arguments: list[str]) -> None:
    options = report_parser().parse_intermixed_args(arguments)
    name, overrides = name_and_overrides(
        [options.experiment, *options.overrides], "report EXPERIMENT [tracking.uri=...]"
    )
    write_report(name, overrides, options.output)


def write_report(name: str, overrides: list[str], output: Path | None) -> None:
    """`rnnlab report`'s work, also the end of `rnnlab paper`."""
    uri = compose_config(overrides).tracking.uri
    check_store(uri, existing=True)  # read for its runs; the report is logged there too
    out = output or REPORTS / name
    check_output(out)
    from rnnlab.reports.report import write_report as write

    out = write(name, uri, out)
    print(f"report written to {out}/ (table.md, table.tex, figures) and logged to MLflow")


def reproduce(arguments: list[str]) -> None:
    run_id, overrides = name_and_overrides(arguments, "reproduce RUN_ID [tracking.uri=...]")
    uri = compose_config(overrides).tracking.uri
    check_store(uri, existing=True)  # the run is read there and the rerun recorded
    from rnnlab.training.reproduce import ReproduceError, comparison_table
    from rnnlab.training.reproduce import reproduce as reproduce_run

    try:
        compared, warnings = reproduce_run(run_id, uri)
    except ReproduceError as error:
        sys.exit(f"rnnlab: {error}")
    for warning in warnings:
        print(f"warning: {warning}")
    print(comparison_table(compared))


def stored_model_command(action, check_rest):
    """Run `action(run_id, tracking_uri, rest)` with its errors as one line each, once
    `check_rest(rest)` has checked the other arguments: the cheapest checks come first."""

    def command(arguments: list[str]) -> None:
        overrides = [argument for argument in arguments[1:] if argument.startswith("tracking.")]
        rest = [argument for argument in arguments[1:] if argument not in overrides]
        run_id, _ = name_and_overrides(arguments[:1] + overrides, f"{action.__name__} RUN_ID")
        check_rest(rest)
        uri = compose_config(overrides).tracking.uri
        check_store(uri, write=False, existing=True)  # only read
        # Imported when the command runs, not when the table of commands is built: they
        # load MLflow and TFDS, seconds that every other command would pay for nothing.
        from rnnlab.tasks.datasets import DataNotPreparedError
        from rnnlab.training.reproduce import ReproduceError

        try:
            action(run_id, uri, rest)
        except (ReproduceError, DataNotPreparedError) as error:
            sys.exit(f"rnnlab: {str(error).splitlines()[0]}")

    return command


def check_evaluate_arguments(rest: list[str]) -> None:
    if rest:
        raise ConfigError("usage: rnnlab evaluate RUN_ID [tracking.uri=...]")


def evaluate(run_id: str, tracking_uri: str, rest: list[str]) -> None:
    from rnnlab.training.evaluate import evaluate as evaluate_run
    from rnnlab.training.evaluate import evaluation_table

    print(evaluation_table(evaluate_run(run_id, tracking_uri)))


def check_predict_inputs(inputs: list[str]) -> None:
    """Every input is non-empty text, checked before TensorFlow loads: the model would
    answer an empty string or undecodable bytes with a probability of nothing."""
    if not inputs:
        raise ConfigError("usage: rnnlab predict RUN_ID INPUT... (texts, numbers or a CSV file)")
    for number, text in enumerate(inputs, start=1):
        try:
            text.encode("utf-8")  # bytes that are not UTF-8 arrive as lone surrogates
        except UnicodeEncodeError:
            raise ConfigError(f"predict needs UTF-8 text; input {number} is not") from None
        if not text.strip():
            raise ConfigError(f"predict needs non-empty text; input {number} is empty")
        if any(unicodedata.category(char) == "Cc" and char not in "\t\n\r" for char in text):
            raise ConfigError(
                f"predict needs text; input {number} has control characters (binary data?)"
            )


def predict(run_id: str, tracking_uri: str, rest: list[str]) -> None:
    from rnnlab.training.evaluate import predict as predict_inputs

    print("\n".join(predict_inputs(run_id, tracking_uri, rest)))


def native(arguments: list[str]) -> None:
    if set(arguments) - {"--rebuild"}:
        raise ConfigError("usage: rnnlab native [--rebuild]")
    from rnnlab.recurrence.native import describe, native_status

    status = native_status(rebuild=bool(arguments))
    print(describe(status))
    if status.library is None:
        sys.exit(1)


def info(arguments: list[str]) -> None:
    if arguments:
        raise ConfigError("usage: rnnlab info")
    from rnnlab.info import main as info_main

    info_main()


COMMANDS = {
    "train": train,
    "prepare": prepare,
    "sweep": sweep,
    "paper": paper,
    "report": report,
    "reproduce": reproduce,
    "evaluate": stored_model_command(evaluate, check_evaluate_arguments),
    "predict": stored_model_command(predict, check_predict_inputs),
    "native": native,
    "info": info,
}


def main(argv: list[str] | None = None) -> None:
    """The console command; `argv` given (a test, a library) runs it without the stderr
    filter, which would take over the calling process's fd 2."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if "--verbose" in arguments:
        arguments = [argument for argument in arguments if argument != "--verbose"]
        os.environ["RNNLAB_VERBOSE"] = "1"  # for the workers this command starts, too
    if os.environ.get("RNNLAB_VERBOSE") != "1":
        # Before MLflow loads: its INFO lines (`Creating initial MLflow database tables`)
        # are notes on its own work. A user's own setting wins.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        if argv is None:
            from rnnlab.chatter import quiet_stderr

            quiet_stderr()
    if not arguments or arguments[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    command, rest = arguments[0], arguments[1:]
    if command not in COMMANDS:
        sys.exit(f"rnnlab: unknown command '{command}'; choose one of: {', '.join(COMMANDS)}")
    # A kill (or a scheduler's SIGTERM) stops a command as Ctrl-C does: its runs end KILLED
    # and its workers are stopped with it (experiments/workers.py), not left as orphans.
    stop_on_signals()
    try:
        COMMANDS[command](rest)
    except ConfigError as error:
        sys.exit(f"rnnlab: {error}")
    except (Exception, KeyboardInterrupt) as error:
        if not interrupted(error):
            raise
        print(f"rnnlab: {command} stopped; rerun the same command to go on", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
