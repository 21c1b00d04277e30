"""Every name rnnlab writes into an MLflow store: tags, artifact paths, the stored model's files.

They are a contract with every store already written (a report, a resume, `reproduce` and
`evaluate` read them back, possibly years later), so each is spelled once, here. Changing a
value orphans the runs stored with the old one.
"""

from __future__ import annotations

# What a run computed and where it belongs.
EXPERIMENT = "rnnlab.experiment"  # the paper experiment a grid point belongs to
CONFIG_HASH = "rnnlab.config_hash"  # identity of what the run computes (config.config_hash)
SEED = "rnnlab.seed"
TASK = "rnnlab.task"
CELL = "rnnlab.cell"
DATA_HASH = "rnnlab.data_hash"
REPRODUCES = "rnnlab.reproduces"  # the run id a `rnnlab reproduce` run reruns

# How it was computed: numbers from two machines can differ for these reasons.
VERSION = "rnnlab.version"
GIT_COMMIT = "rnnlab.git_commit"
GIT_DIRTY = "rnnlab.git_dirty"
CPU = "rnnlab.cpu"
DEVICE = "rnnlab.device"
NATIVE = "rnnlab.native"  # the native ops: on with their flags, or off and why
RECURRENCE = "rnnlab.recurrence"  # the routes taken, joined by "+"
RECURRENCE_PREFIX = "rnnlab.recurrence."  # + a cell class: that class's route
RECURRENCE_SHARDS = "rnnlab.recurrence_shards"
TENSORFLOW_VERSION = "tensorflow.version"
KERAS_VERSION = "keras.version"

# How it ended.
FAILURE = "rnnlab.failure"  # the one-line reason a run FAILED
PRUNED = "rnnlab.pruned"  # a sweep pruned it (the run is KILLED)
GRADIENTS_EXPLODED = "rnnlab.gradients_exploded"

# Liveness: who owns a RUNNING run, so a dead one can be failed by the next command.
HOST = "rnnlab.host"
PID = "rnnlab.pid"
PROCESS_STARTED = "rnnlab.process_started"
HEARTBEAT = "rnnlab.heartbeat"

# A sweep's trials and its parent run.
OPTUNA_STUDY = "optuna.study"  # a trial's run: its study's name
OPTUNA_TRIAL = "optuna.trial"  # a trial's run: its trial number
# Not an MLflow name: the Optuna user attribute through which a trial names its run, so a
# sweep can fail a killed trial's run and a sweep report read the best trial's test score.
TRIAL_RUN_ID = "mlflow_run_id"
SWEEP = "rnnlab.sweep"  # a sweep's parent run: the sweep's name
OPTUNA_STORAGE = "optuna.storage"  # and where its study is (without a password)
BEST_TRIAL = "best_trial"  # the parent run: the best trial's number
BEST_PARAM_PREFIX = "best."  # + a config path: the best trial's value for it
SWEEP_PLOTS_FOLDER = "plots"  # the parent run: Optuna's plots (sweep.html), importances
PARETO_FOLDER = "pareto"  # a multi-objective parent run: the Pareto front

# Runs that are not trainings.
REPORT = "rnnlab.report"  # an experiment's report run: the experiment's name
SEED_GROUP = "rnnlab.seed_group"  # a grid entry's group run (reports/seed_groups.py): experiment
GROUP_KEY = "rnnlab.group_key"  # which entry: `experiment | row | cell`
SEED_RUNS = "rnnlab.seed_runs"  # the group's seed runs, comma-separated (they are its children)
REPORT_FOLDER = "report"  # the report run: the report's Markdown, LaTeX and figures

# Artifacts of a run.
CONFIG_FILE = "config.yaml"  # the resolved config: the whole recipe for `reproduce`
ENVIRONMENT_FILE = "environment.txt"  # `name==version` of every installed package
DECAY_FOLDER = "gradient_decay"  # epoch_NNN.json (and .png) of the gradient probe: records/decay.py

# The stored model's files, under its logged model's `artifacts/`.
KERAS_FILE = "model.keras"
INPUTS_FILE = "inputs.json"  # the task's config and input state (vocabularies)
