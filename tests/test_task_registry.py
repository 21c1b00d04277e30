"""The checker's table of tasks (`REGISTERED`) names what `get_task` builds, no more, no less.

`REGISTERED` exists only under TYPE_CHECKING, so it is read here from the source: a task
added to TASK_MODULES but not to it would escape the checker's hold to the Task protocol.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import rnnlab.tasks
from rnnlab.tasks import TASK_MODULES


def checker_only_table() -> tuple[dict[str, str], dict[str, str]]:
    """(REGISTERED as task name -> class name, each imported class -> its module), from
    the registry's source."""
    tree = ast.parse(Path(rnnlab.tasks.__file__).read_text())
    registered: dict[str, str] = {}
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.update({alias.asname or alias.name: node.module for alias in node.names})
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "REGISTERED"
        ):
            if not isinstance(node.value, ast.Dict):
                raise AssertionError("REGISTERED must stay a dict literal for this test to read")
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if not (isinstance(key, ast.Constant) and isinstance(value, ast.Name)):
                    raise AssertionError(
                        f"REGISTERED entry at line {value.lineno} is not 'name': Class"
                    )
                registered[key.value] = value.id
    return registered, imported


def test_registered_names_every_task_module_and_only_those():
    registered, _ = checker_only_table()
    assert sorted(registered) == sorted(TASK_MODULES)


def test_registered_holds_the_class_get_task_builds():
    registered, imported = checker_only_table()
    held = {name: (imported.get(class_name), class_name) for name, class_name in registered.items()}
    assert held == TASK_MODULES


def test_the_table_loads_no_task_at_run_time():
    # The CLI imports the registry before TensorFlow: the table's imports must not run.
    probe = (
        "import sys, rnnlab.tasks\n"
        "print(hasattr(rnnlab.tasks, 'REGISTERED'),"
        " sorted(m for m in sys.modules if m.startswith(('tensorflow', 'rnnlab.tasks.'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False []"
