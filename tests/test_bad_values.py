"""Every bad value fails in one line (`rnnlab: ...`) before TensorFlow loads (issue #44).

The values the issue found accepted silently or reported by a traceback after TensorFlow's
start-up, through the real CLI where a subprocess is cheap (about a second each, since
nothing heavy loads) and through compose_config for the rest.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from rnnlab.cli import check_predict_inputs
from rnnlab.config import ConfigError, compose_config, one_line

# Run in a fresh interpreter: the CLI's exit line, then whether TensorFlow was imported.
CLI_PROBE = """
import sys
from rnnlab.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    print(exit.code, file=sys.stderr)
print('tensorflow' in sys.modules)
"""


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI_PROBE, *arguments], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["optimizer.learning_rate=-1.0"], "optimizer.learning_rate must be a positive number"),
        (["cell.dropout=2"], r"cell.dropout must be in [0, 1), got 2"),
        (["task.max_examples=-1"], "task.max_examples must be null or at least 1, got -1"),
        (["task.max_examples=0"], "task.max_examples must be null or at least 1, got 0"),
        (["task=adding", "task.length=0"], "task.length must be at least 1, got 0"),
        (["task=adding", "task.train_examples=0"], "task.train_examples must be at least 1"),
        (["seed=-1"], "seed must be in [0, 4294967295], got -1"),
        (["task.vocabulary_size=0"], "task.vocabulary_size must be at least 1, got 0"),
        (["task.sequence_length=0"], "task.sequence_length must be at least 1, got 0"),
        (["tracking.experiment="], "tracking.experiment must name an MLflow experiment"),
        (["task.lenght=5"], "Could not override 'task.lenght'. Key 'lenght' is not in struct"),
        (["-m", "seed=0,1", "task.lenght=5"], "Could not override 'task.lenght'."),
        (["seed=0,1"], "'seed=0,1' lists several values: add -m to sweep them"),
    ],
)
def test_train_rejects_a_bad_value_in_one_line_before_tensorflow(arguments, message):
    result = run_cli("train", *arguments)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rnnlab: {message}"), lines
    assert result.stdout.splitlines() == ["False"], "TensorFlow was imported"


def test_hydras_flag_values_are_no_overrides():
    """`rnnlab train --cfg job`: `job` is the flag's value, not a key to check."""
    result = run_cli("train", "--cfg", "job", "seed=3")
    assert "seed: 3" in result.stdout.splitlines(), result.stderr
    assert result.stdout.splitlines()[-1] == "False", "TensorFlow was imported"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "predict needs non-empty text; input 1 is empty"),
        ("\udcff\udcfe", "predict needs UTF-8 text; input 1 is not"),
    ],
)
def test_predict_rejects_empty_or_binary_input_before_tensorflow(text, message):
    # Non-UTF-8 bytes on a command line reach Python as lone surrogates (\udcff for 0xff):
    # passed as bytes, so the child decodes them as it would from a shell.
    argument = text.encode("utf-8", "surrogateescape")
    result = subprocess.run(
        [sys.executable, "-c", CLI_PROBE, b"predict", b"0123abc", argument],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rnnlab: {message}")
    assert result.stdout.splitlines() == ["False"], "TensorFlow was imported"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "usage: rnnlab predict RUN_ID INPUT"),
        (["a fine film", "   "], "predict needs non-empty text; input 2 is empty"),
        (["\x01\x02binary"], "predict needs text; input 1 has control characters"),
        (["caf\udce9"], "predict needs UTF-8 text; input 1 is not"),
    ],
)
def test_predict_inputs_are_checked_one_by_one(inputs, message):
    with pytest.raises(ConfigError, match=message):
        check_predict_inputs(inputs)
    check_predict_inputs(["café, tab\there", "3.5"])  # text, accents and numbers pass


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cell.recurrent_dropout=1"], r"cell.recurrent_dropout must be in \[0, 1\), got 1"),
        (["cell=indrnn", "cell.dropout=-0.1"], r"cell.dropout must be in \[0, 1\)"),
        (["cell.dropout=true"], r"cell.dropout must be in \[0, 1\), got True"),
        (["seed=4294967296"], r"seed must be in \[0, 4294967295\], got 4294967296"),
        (["task=adding", "task.validation_examples=0"], "task.validation_examples must be at"),
        (["task=adding", "task.test_examples=0"], "task.test_examples must be at least 1"),
        (["task=copy_memory", "task.delay=0"], "task.delay must be at least 1, got 0"),
        (["task=copy_memory", "task.train_examples=-3"], "task.train_examples must be at"),
        (["task=forecasting", "task.window=0"], "task.window must be at least 1"),
        (["task=forecasting", "task.horizon=0"], "task.horizon must be at least 1"),
        (["task.embedding_dim=0"], "task.embedding_dim must be at least 1"),
        (["task=captioning", "task.target_length=0"], "task.target_length must be at least 1"),
        (["task=captioning", "task.context_dim=0"], "task.context_dim must be at least 1"),
        (["task=captioning", "task.samples=-1"], "task.samples must be at least 0"),
        (["task=translation", "task.source_length=0"], "task.source_length must be at least"),
        (["task=translation", "task.beam_size=0"], "task.beam_size must be at least 1"),
        (["task=translation", "task.source_vocabulary_size=0"], "must be null or at least 1"),
        (["task=translation", "task.label_smoothing=1"], r"task.label_smoothing must be in"),
        (["task=translation", "task.word_dropout=-0.5"], r"task.word_dropout must be in"),
        (["tracking.experiment=' '"], "tracking.experiment must name an MLflow experiment"),
        (["optimizer.learning_rate=0"], "optimizer.learning_rate must be a positive number"),
        (["optimizer.learning_rate=true"], "optimizer.learning_rate must be a positive number"),
        (["trainer.epochz=3"], "Could not override 'trainer.epochz'. Key 'epochz' is not in"),
        # Found by tests/test_fuzz_inputs.py: each trained first, or was a traceback.
        (["~cell"], "cell is missing; a run needs one"),
        (["~trainer"], "trainer is missing; a run needs one"),
        (["task.metric=f1"], "task.metric: task sentiment logs no test_f1; choose one of: loss"),
        (["task=translation", "task.validation_metric=bleu"], "task.validation_metric: task"),
        (["task=adding", "task.metric=accuracy"], "task adding logs no test_accuracy"),
        (["cell._target_=0"], "cell._target_ must be a dotted import path such as"),
        (
            ["optimizer._target_=keras.optimizers.Nope"],
            "optimizer._target_=keras.optimizers.Nope: keras.optimizers has no 'Nope'",
        ),
        (["cell._target_=keras.layers.GRUcell"], "did you mean keras.layers.GRUCell"),
        (["cell._target_=keras.layers"], "names a module, not a class or function in it"),
        (["optimizer._target_=torchh.optim.Adam"], "no module named 'torchh' is installed"),
    ],
)
def test_compose_config_rejects_a_bad_value_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        compose_config(overrides)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=0"],
        ["seed=4294967295"],
        ["task.max_examples=null"],
        ["task.max_examples=1"],
        ["cell.dropout=0.5"],
        ["task=translation", "task.samples=0", "task.dictionary_phrases=0"],
        ["task=translation", "task.metric=token_accuracy"],
        ["task.metric=loss"],
        # A module that makes names at import time (TensorFlow's lazy `keras`) is not judged
        # by its source: Hydra imports it after TensorFlow loads.
        ["optimizer._target_=tensorflow.keras.optimizers.Adam"],
        ["optimizer._target_=keras.src.optimizers.sgd.SGD"],
    ],
)
def test_the_edges_of_each_range_are_accepted(overrides):
    compose_config(overrides)


def test_an_integer_learning_rate_is_a_float_for_keras():
    cfg = compose_config(["optimizer.learning_rate=1"])
    assert cfg.optimizer.learning_rate == 1.0
    assert isinstance(cfg.optimizer.learning_rate, float)
    assert OmegaConf.to_yaml(cfg.optimizer).splitlines()[1] == "learning_rate: 1.0"


def test_a_failed_instantiation_keeps_its_root_cause_in_the_line():
    """Hydra's InstantiationException says which target failed; its cause says why."""
    from hydra.utils import instantiate

    with pytest.raises(Exception) as error:
        instantiate({"_target_": "collections.OrderedDict", "bogus": 1, "other": 2}, 3)
    line = one_line(error.value)
    assert line.startswith("Error in call to target 'collections.OrderedDict': TypeError: ")
    assert "\n" not in line and len(line) > len("Error in call to target 'x': TypeError: ")


def test_what_the_user_typed_is_quoted_on_one_line():
    """An error quoting a newline the user typed (an override, a sweep file's key) escapes it."""
    from rnnlab.config import check_overrides

    with pytest.raises(ConfigError) as error:
        check_overrides(["cell='ls\ntm'"])
    assert str(error.value).startswith("unknown cell 'ls\\ntm'; choose one of:")
    with pytest.raises(ConfigError) as error:
        check_overrides(["seed=\x00"])
    assert str(error.value).startswith("cannot parse the override 'seed=\\x00': quote a value")


def test_no_target_is_imported_to_check_it():
    """The targets are read from their modules' source: TensorFlow stays unloaded."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from rnnlab.config import compose_config\n"
            "for cell in ('lstm', 'indrnn', 'lru'):\n"
            "    compose_config([f'cell={cell}'])\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["False", "False"], result.stderr
