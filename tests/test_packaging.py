"""What ``pip install .`` ships: every package of the source tree, or an import breaks for users."""

from __future__ import annotations

import fnmatch
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


def test_the_control_page_files_are_package_data() -> None:
    """Every file of the control page (florasync/service/control/static/) matches a
    package-data glob of its package: a non-editable install ships them, or `GET /` is a 404."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["florasync.service.control"]
    package = ROOT / "florasync" / "service" / "control"
    files = [p.relative_to(package) for p in (package / "static").iterdir() if p.is_file()]
    assert {"index.html", "app.js", "style.css"} <= {f.name for f in files}
    for file in files:
        assert any(fnmatch.fnmatch(str(file), pattern) for pattern in globs), file
