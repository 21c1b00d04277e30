"""Property-based tests of what a user types: every `rnnlab train` command line and every
sweep file either runs or fails in one line, and a failure leaves nothing behind (#44).

Most examples go through the checks the commands run before TensorFlow loads
(`check_train`, `check_sweep`), in this process: a composition costs about 70 ms there, so
Hypothesis can try a few hundred inputs in seconds. A handful go through the real command
in a fresh process, for what only a process shows: its exit code, a stderr of one line, no
traceback, no run left RUNNING and no file left in its working directory.

Hypothesis keeps no example database (`database=None`): nothing is written into the tree.
The in-process tests draw new inputs on every run; the command runs are derandomized, so
their cost is the same in every CI run.
"""

from __future__ import annotations

import os
import sqlite3
import string
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from command_checks import TINY_ADDING
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from rnnlab.cli import check_sweep, check_train
from rnnlab.config import ConfigError, compose_config, group_choices

# Every test here runs in a folder of its own: what a check leaves behind would show there.
IN_PROCESS = settings(
    database=None,
    deadline=None,
    max_examples=80,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# No shrinking: each step would start a process, and a derandomized failure is shown as is.
COMMANDS = settings(
    database=None,
    deadline=None,
    derandomize=True,
    max_examples=3,  # each a process; the in-process checks above try the hundreds
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

GROUPS = ("cell", "task", "model", "optimizer", "trainer", "probe", "tracking", "experiment")


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    found: dict[str, Any] = {}
    for key, value in node.items():
        found.update(leaves(value, f"{prefix}{key}."))
    return found


# Every key of every task's composed config, with its default: what the overrides mutate.
KEYS = sorted(
    {
        key.rstrip("."): value
        for task in group_choices("task")
        for key, value in leaves(
            OmegaConf.to_container(compose_config([f"task={task}"]), resolve=False)
        ).items()
        if not key.startswith("per_task")
    }.items()
)

# Stores whose check answers at once: no name to look up, nothing listening on port 9.
STORES = [
    "sqlite:///store/mlflow.db",
    "sqlite://",
    "sqlite:///",
    "http://127.0.0.1:9",
    "https://127.0.0.1:9/",
    "postgresql://user:secret@127.0.0.1:9/db",
    "ftp://x",
    "file:///proc/no/such/folder",
    "",
    "   ",
    "a:b",
    "folder/inside",
]

# Values a user might type, and values nobody would.
NUMBERS = st.one_of(
    st.integers(-3, 3),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e-3", "1.0e-3", "0x10", "1_000", "-0.0", "2**32"]),
)
# Mostly what a keyboard types, the grammar's symbols among it; now and then beyond ASCII.
SYMBOLS = string.ascii_letters + string.digits + "._-/:=,'\"${}[]()~+ \\"
TEXT = st.text(alphabet=st.sampled_from(SYMBOLS * 4 + "éß€🙂\t\n\x00"), max_size=12)


def render(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)


VALUES = st.one_of(
    NUMBERS.map(render),
    st.booleans().map(render),
    st.just("null"),
    st.just(""),
    TEXT,
    st.lists(NUMBERS.map(render), max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
)


@st.composite
def key_value(draw) -> str:
    key, default = draw(st.sampled_from(KEYS))
    if key == "tracking.uri":
        value = draw(st.sampled_from(STORES))
    else:
        value = draw(st.one_of(st.just(render(default)), VALUES))
    prefix = draw(st.sampled_from(["", "", "", "+", "++", "~"]))
    return f"{prefix}{key}={value}"


@st.composite
def group_choice(draw) -> str:
    group = draw(st.sampled_from(GROUPS))
    choices = group_choices(group)
    value = draw(st.one_of(st.sampled_from(choices), TEXT, st.just(",".join(choices[:2]))))
    prefix = draw(st.sampled_from(["", "", "", "+", "~"]))
    return f"{prefix}{group}" if prefix == "~" and value == choices[0] else f"{group}={value}"


# Known keys most often: a value that parses reaches the schemas, the deepest checks.
OVERRIDES = st.one_of(
    key_value(),
    key_value(),
    key_value(),
    group_choice(),
    group_choice(),
    st.builds(lambda key, value: f"{key}={value}", TEXT, VALUES),  # an unknown key
    TEXT,  # anything at all
)
FLAGS = st.sampled_from(["-m", "--multirun", "--cfg", "job", "--resolve", "--bogus", "-c", "-p"])


def assert_one_line(error: ConfigError) -> None:
    message = str(error)
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)


def listing(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture
def in_empty_folder(tmp_path, monkeypatch) -> Path:
    """A working directory of this test's own: relative stores and outputs land in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@IN_PROCESS
@given(arguments=st.lists(st.one_of(OVERRIDES, OVERRIDES, FLAGS), max_size=4))
def test_train_arguments_are_accepted_or_one_line_and_leave_nothing(in_empty_folder, arguments):
    before = listing(in_empty_folder)
    try:
        check_train(arguments)
    except ConfigError as error:
        assert_one_line(error)
    assert listing(in_empty_folder) == before


# A sweep file small enough to run, from which the fuzz departs one or two mistakes at a time.
SWEEP = {
    "overrides": ["task=adding", "task.max_examples=64", "trainer.epochs=1"],
    "space": {"cell": ["simple_rnn", "gru"], "cell.units": {"low": 2, "high": 6}},
    "metric": "loss",
    "direction": "minimize",
    "n_trials": 1,
    "sampler": "random",
    "sampler_options": {},
    "pruner": "median",
    "pruner_options": {"n_startup_trials": 1},
    "storage": "sqlite:///studies/optuna.db",
    "seed": 0,
}
SWEEP_VALUES = {
    "storage": st.sampled_from([*STORES, "nonsense", "oracle://x", "mysql://127.0.0.1:9/x"]),
    "sampler": st.sampled_from(["tpe", "random", "grid", "cmaes", "nsga2", "bayes", ""]),
    "pruner": st.sampled_from(["median", "none", "hyperband", "successive_halving", "x"]),
    "metric": st.one_of(
        st.sampled_from(["loss", "mae", "accuracy", ["loss", "n_params"], ["loss", "loss"]]),
        TEXT,
    ),
    "launcher": st.sampled_from(["local", "slurm", "k8s"]),
}
YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS.filter(lambda v: not isinstance(v, str)), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)


@st.composite
def sweep_file(draw) -> str:
    """A YAML text: the small sweep with a few keys changed, dropped or added, or junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=60))
    data = dict(SWEEP)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*SWEEP, "launcher", "retries", "timeout", "slurm", "x"]))
        action = draw(st.sampled_from(["set", "set", "drop", "space", "options"]))
        if action == "drop":
            data.pop(key, None)
        elif action == "space":
            space = dict(data.get("space") or {})
            path = draw(st.one_of(st.sampled_from([k for k, _ in KEYS]), TEXT))
            space[path] = draw(
                st.one_of(
                    st.lists(YAML_VALUES, max_size=3),
                    st.fixed_dictionaries(
                        {"low": NUMBERS, "high": NUMBERS},
                        optional={"log": st.booleans(), "step": NUMBERS},
                    ),
                    YAML_VALUES,
                )
            )
            data["space"] = space
        elif action == "options":
            which = draw(st.sampled_from(["sampler_options", "pruner_options"]))
            data[which] = draw(st.dictionaries(TEXT, YAML_VALUES, max_size=2))
        else:
            data[key] = draw(SWEEP_VALUES.get(key, YAML_VALUES))
    return yaml.safe_dump(data, allow_unicode=True)


@settings(IN_PROCESS, max_examples=30)  # a file that passes composes a dozen configurations
@given(text=sweep_file(), extra=st.lists(OVERRIDES, max_size=1))
def test_sweep_files_are_accepted_or_one_line_and_leave_nothing(in_empty_folder, text, extra):
    path = in_empty_folder / "sweep.yaml"
    path.write_text(text)
    before = listing(in_empty_folder)
    try:
        check_sweep([str(path), "tracking.uri=sqlite:///store/mlflow.db", *extra])
    except ConfigError as error:
        assert_one_line(error)
    assert listing(in_empty_folder) == before


# The real command: a tiny adding run, so that an input that is fine trains in seconds.
TINY = [*TINY_ADDING, "tracking.uri=sqlite:///store/mlflow.db"]


def rnnlab(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", *arguments],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def running_runs(database: Path) -> list[str]:
    if not database.exists():
        return []
    with closing(sqlite3.connect(database)) as db:
        return [row[0] for row in db.execute("SELECT run_uuid FROM runs WHERE status='RUNNING'")]


def assert_ran_or_failed_in_one_line(result: subprocess.CompletedProcess, folder: Path, before):
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert running_runs(folder / "store" / "mlflow.db") == []
    if result.returncode == 0:
        return
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode in (1, 2), result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("rnnlab: "), lines
    assert listing(folder) == before, "a failed command left files behind"


@pytest.mark.slow
@COMMANDS
@given(override=st.one_of(key_value(), group_choice()))
def test_rnnlab_train_runs_or_fails_in_one_line(tmp_path_factory, override):
    folder = tmp_path_factory.mktemp("train")
    result = rnnlab(["train", *TINY, override], folder)
    assert_ran_or_failed_in_one_line(result, folder, set())


@pytest.mark.slow
@settings(COMMANDS, max_examples=2)  # a sweep that runs costs TensorFlow's start-up and more
@given(text=sweep_file())
def test_rnnlab_sweep_runs_or_fails_in_one_line(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "sweep.yaml").write_text(text)
    result = rnnlab(["sweep", "sweep.yaml", "tracking.uri=sqlite:///store/mlflow.db"], folder)
    assert_ran_or_failed_in_one_line(result, folder, {"sweep.yaml"})
