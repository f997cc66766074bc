"""The package's folders are its layers: a lower one never imports a higher one (STYLE.md)."""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "florasync"

# Bottom up. A module may import its own layer and any layer below it, never one above.
_BASE = ("errors", "logs", "__init__")  # the error tree, log formats, __version__
LAYERS: dict[str, int] = {
    **dict.fromkeys(_BASE, 0),
    "flora": 1,  # talking to FLORA
    "config": 2,  # what the user said
    "local": 3,  # the filesystem
    "state": 4,  # what is known, and what comes next
    "sync": 5,  # moving files through the steps
    "service": 6,  # the long-running process
    "progress": 6,  # the terminal line: reads sync's outcomes
    "sandbox": 6,  # stands beside the client: only commands start it
    "commands": 7,  # one module per command
    "cli": 8,
    "__main__": 8,
}

# Third-party packages that only one place may import: the library's reach stays in one room.
OWNERS: dict[str, tuple[str, ...]] = {
    "requests": ("flora/",),
    "requests_toolbelt": ("flora/",),
    "urllib3": ("flora/",),
    "httptools": ("flora/wire.py",),
    "sqlite3": ("state/",),
    "psycopg": ("state/",),
    "watchdog": ("local/watcher.py",),
}

# SQL statements in string literals: only the journal speaks SQL.
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
    r"|CREATE\s+(TABLE|INDEX|UNIQUE\s+INDEX)|PRAGMA\s+\w+)\b",
    re.DOTALL,
)
SQL_HOME = "state/"

# The sandbox is a separate program for users and tests: it never imports client code.
SANDBOX_MAY_IMPORT = ("sandbox", "__init__")  # its own modules and __version__

# __init__.py files stay empty, so importing a package never loads requests or watchdog; the
# root holds __version__, the sandbox's is its public facade (Sandbox, Faults, describe).
NON_EMPTY_INITS = ("__init__.py", "sandbox/__init__.py")


def layer_of(relpath: str) -> str:
    """The layer a file under florasync/ belongs to: its folder, or its name at the top."""
    head = relpath.split("/", 1)[0]
    return head.removesuffix(".py")


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every module an AST imports, lazy and TYPE_CHECKING imports included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "florasync":
                for alias in node.names:
                    yield node.lineno, f"florasync.{alias.name}"
            else:
                yield node.lineno, node.module


def target_layer(module: str) -> str | None:
    """The florasync layer a dotted module name points into, or None for other packages."""
    parts = module.split(".")
    if parts[0] != "florasync":
        return None
    if len(parts) == 1 or parts[1] == "__version__":
        return "__init__"
    return parts[1]


def violations(package: Path) -> list[str]:
    """Every broken layering rule in a florasync source tree, as 'file:line: why'."""
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        relpath = path.relative_to(package).as_posix()
        source = path.read_text()
        tree = ast.parse(source, filename=relpath)
        found += _import_violations(relpath, tree)
        found += _sql_violations(relpath, tree)
        if path.name == "__init__.py" and relpath not in NON_EMPTY_INITS and source.strip():
            found.append(f"{relpath}:1: __init__.py is not empty")
    return found


def _import_violations(relpath: str, tree: ast.AST) -> list[str]:
    layer = layer_of(relpath)
    found = []
    for lineno, module in imported_modules(tree):
        where = f"{relpath}:{lineno}"
        target = target_layer(module)
        top = module.split(".")[0]
        if target is None:
            owners = OWNERS.get(top)
            if owners and not relpath.startswith(owners):
                found.append(f"{where}: imports {top}, which only {', '.join(owners)} may")
        elif layer == "sandbox" and target not in SANDBOX_MAY_IMPORT:
            found.append(f"{where}: the sandbox imports client code ({module})")
        elif target not in LAYERS:
            found.append(f"{where}: {module} is in no known layer")
        elif LAYERS[target] > LAYERS[layer] and target != layer:
            found.append(f"{where}: {layer} (layer {LAYERS[layer]}) imports {module} (higher)")
    return found


def _sql_violations(relpath: str, tree: ast.AST) -> list[str]:
    if relpath.startswith(SQL_HOME):
        return []
    return [
        f"{relpath}:{node.lineno}: SQL outside {SQL_HOME}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
    ]


def test_every_module_is_in_a_layer():
    """Each top-level module and folder of the package has a place in the layer order."""
    names = {layer_of(p.relative_to(PACKAGE).as_posix()) for p in PACKAGE.rglob("*.py")}
    assert names <= set(LAYERS), sorted(names - set(LAYERS))


def test_the_package_keeps_its_layers():
    """No upward import, one owner per infrastructure library, SQL only in state/."""
    assert violations(PACKAGE) == []


BREAKS = {
    "flora imports the service": ("flora/api.py", "from florasync.service import daemon"),
    "state imports sync, lazily": (
        "state/journal/sqlite.py",
        "def _late():\n    from florasync.sync import pipeline\n",
    ),
    "local imports commands": ("local/rules.py", "from florasync import commands"),
    "requests outside flora": ("sync/transfer.py", "import requests"),
    "watchdog outside the watcher": ("service/daemon.py", "from watchdog import events"),
    "sqlite3 outside state": ("sync/pipeline.py", "import sqlite3"),
    "SQL outside state": ("sync/sweep.py", "_Q = 'DELETE FROM files WHERE path = ?'"),
    "sandbox imports the client": ("sandbox/store.py", "from florasync.flora import api"),
    "a package that re-exports": ("state/__init__.py", "from florasync.state.journal import *"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_broken_rule_is_caught(name, tmp_path):
    """The checker reports each kind of break when one line of a copy of the tree commits it."""
    relpath, line = BREAKS[name]
    copy = tmp_path / "florasync"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / relpath).open("a") as f:
        f.write(f"\n{line}\n")
    found = violations(copy)
    assert len(found) == 1, found
    assert found[0].startswith(f"{relpath}:"), found
