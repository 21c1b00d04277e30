"""A `_target_` (a cell's, the optimizer's) checked before TensorFlow loads, without importing it.

Hydra imports a target when it instantiates it, after TensorFlow's start-up: a mistyped
`optimizer._target_=keras.optimizers.Nope` cost five seconds and ended in a line about
Hydra's `_locate`. Importing `keras.optimizers` to look would load TensorFlow, so the module
is found on disk (through its top package's location, which importlib finds without running
it) and its source read: a name it neither defines nor imports is one line, with the names it
does have that come close. A module whose names cannot be read from its source (compiled, a
module `__getattr__`, a `*` import) is left to Hydra.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import re
from pathlib import Path

from rnnlab.config.errors import ConfigError

DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
# What in a module's source says it makes names at import time that the source does not
# spell (TensorFlow's lazily loaded `tensorflow.keras`): such a module is left to Hydra.
DYNAMIC = ("__getattr__", "setattr(", "globals()", "sys.modules", "LazyLoader", "lazy_load")


def check_target(key: str, target: object) -> None:
    """Raise ConfigError unless `target` could name a class or function Hydra can import."""
    if not isinstance(target, str) or not DOTTED.fullmatch(target):
        raise ConfigError(
            f"{key} must be a dotted import path such as keras.optimizers.Adam, got {target!r}"
        )
    problem = target_problem(target)
    if problem:
        raise ConfigError(f"{key}={target}: {problem}")


@functools.lru_cache(maxsize=256)
def target_problem(target: str) -> str | None:
    """Why `target` cannot be imported, as far as the source on disk tells; None if it can or
    the source cannot say. Cached: a grid validates the same few targets for every point."""
    parts = target.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is run
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"no module named '{parts[0]}' is installed"
    source = Path(spec.origin) if spec.origin else None
    folders = list(spec.submodule_search_locations or [])
    depth = 1
    # The longest prefix that is a module on disk, as Hydra's _locate imports it.
    while depth < len(parts) and folders:
        found = submodule(folders, parts[depth])
        if found is None:
            break
        source, folders = found
        depth += 1
    if depth == len(parts):
        return "names a module, not a class or function in it"
    if source is None or source.suffix != ".py" or not source.is_file():
        return None  # a compiled or namespace module: only importing it tells
    name = parts[depth]
    names = module_names(source)
    if names is None or name in names:
        return None
    module = ".".join(parts[:depth])
    close = difflib.get_close_matches(name, sorted(names), n=3)
    hint = f"; did you mean {', '.join(f'{module}.{c}' for c in close)}?" if close else ""
    return f"{module} has no '{name}'{hint}"


def submodule(folders: list[str], name: str) -> tuple[Path, list[str]] | None:
    """The source of submodule `name` in a package's folders, and its own folders."""
    for folder in folders:
        package = Path(folder, name, "__init__.py")
        if package.is_file():
            return package, [str(package.parent)]
        module = Path(folder, f"{name}.py")
        if module.is_file():
            return module, []
        if Path(folder, name).is_dir():  # a namespace package
            return Path(folder, name), [str(Path(folder, name))]
    return None


@functools.lru_cache(maxsize=64)
def module_names(source: Path) -> frozenset[str] | None:
    """Every name the module's source binds anywhere (defines, imports, assigns): generous,
    so that a name it has is never refused. None where names may come from elsewhere."""
    try:
        text = source.read_text(encoding="utf-8")
        tree = ast.parse(text)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    if any(sign in text for sign in DYNAMIC):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom | ast.Import):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return frozenset(names)
