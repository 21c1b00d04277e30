"""The folder tree is the architecture: each package imports only from the floors below it.

The floors, top to bottom, are the README's Layout section. An import up a floor (a record
reaching into training, a task into records) would make the arrows of that diagram false;
this test reads every module's imports, including those inside functions, and names each
import that points up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rnnlab

PACKAGE = Path(rnnlab.__file__).parent
FLOORS = [  # top first
    {"cli", "info", "chatter"},
    {"reports"},
    {"experiments"},
    {"training"},
    {"records"},
    {"tasks"},
    {"recurrence"},
    {"config", "threads", "locks", "interrupts", ""},  # "" is the package itself (`import rnnlab`)
]


def floor_of(part: str) -> int:
    for number, parts in enumerate(FLOORS):
        if part in parts:
            return number
    raise AssertionError(f"rnnlab.{part} is on no floor: add it to FLOORS and the README")


def top_part(module: str) -> str:
    """`rnnlab.records.names` -> `records`; `rnnlab` -> ``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name.split(".")[0] == "rnnlab"]


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def upward_imports(path: Path, module: str) -> list[str]:
    """`file:line imports name` for each import of `module` (at `path`) from a higher floor."""
    here = floor_of(top_part(module))
    return [
        f"{path.name}:{line} imports {name}"
        for line, name in imported_modules(path, module)
        if floor_of(top_part(name)) < here
    ]


def test_every_import_points_down_or_stays_on_its_floor():
    modules = sorted(PACKAGE.rglob("*.py"))
    upward = [found for path in modules for found in upward_imports(path, module_name(path))]
    assert len(modules) > 60  # the whole package was read
    assert not upward


def test_an_upward_import_is_found_even_inside_a_function(tmp_path):
    source = tmp_path / "fake.py"
    source.write_text(
        "from rnnlab.records import names\n"  # its own floor
        "from rnnlab.tasks import get_task\n"  # a floor below
        "from . import tracking\n"  # relative, its own floor
        "def late():\n"
        "    from rnnlab.training.run import run\n"  # up: training is above records
        "    import rnnlab.experiments.paper\n"  # up again
    )
    assert upward_imports(source, "rnnlab.records.fake") == [
        "fake.py:5 imports rnnlab.training.run",
        "fake.py:6 imports rnnlab.experiments.paper",
    ]
