"""What ``pip install .`` ships: every package of the source tree, or an import breaks for users."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_directory_is_listed_in_pyproject() -> None:
    """A folder with an __init__.py under florasync/ is in [tool.setuptools] packages (a
    non-editable install copies only those: a missing one fails at import, for users only)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "florasync").rglob("__init__.py")
    }
    assert found == listed
