"""Which FLORA project a file of a watched folder belongs to: a pure rule over config and path.

Owns the three mappings a folder may give (issue 13): a ``project_id``, a project found (or
made) by ``project: {name}``, and ``projects_from_subfolders``, where the first directory of a
file's path below the folder root names its project. No I/O: turning a name into a project id
is ``sync.projects``' job.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from florasync.config.config import FolderConfig
from florasync.local.rules import FolderRules

NO_PROJECT = "no_project"  # a policy refusal: status counts the file as skipped


@dataclass(frozen=True, slots=True)
class Target:
    """Where a file goes: a known ``project_id``, or the project called ``name``."""

    project_id: str | None = None
    name: str | None = None
    create: bool = False  # a project of that name may be created when none exists

    def __str__(self) -> str:
        return self.project_id or f"project {self.name!r}"


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A file no project is mapped for: reported and skipped, never guessed."""

    code: str
    message: str


def target_for(folder: FolderConfig, rules: FolderRules, path: str) -> Target | Unplaced:
    """The project of ``path`` (absolute, below ``folder.path``)."""
    subfolders = folder.projects_from_subfolders
    if subfolders is not None:
        root = str(folder.path)
        relpath = path[len(root) + (not root.endswith("/")) :]  # the root may be "/" itself
        top, slash, _ = relpath.partition("/")
        if slash:
            return subfolder_target(top, rules, create=subfolders.create)
    return own_target(folder) or Unplaced(
        NO_PROJECT,
        "a file at the top of a projects_from_subfolders folder, which has no project of its "
        "own; move it into a subfolder or give the folder project_id or project",
    )


def own_target(folder: FolderConfig) -> Target | None:
    """The folder's own project (``project_id`` or ``project``), if it gives one."""
    if folder.project_id is not None:
        return Target(project_id=folder.project_id)
    if folder.project is not None:
        return Target(name=folder.project.name, create=folder.project.create)
    return None


def subfolder_target(dirname: str, rules: FolderRules, *, create: bool) -> Target | Unplaced:
    """The project an immediate subdirectory called ``dirname`` stands for."""
    if rules.is_ignored_dir(dirname):
        return Unplaced(NO_PROJECT, f"the directory {dirname!r} is ignored; it is no project")
    if not dirname.strip():
        return Unplaced(
            "bad_project_name", f"the directory name {dirname!r} is blank; a project needs a name"
        )
    try:
        dirname.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name (os.fsdecode's surrogates)
        return Unplaced(
            "bad_project_name",
            f"the directory name {dirname!r} is not valid UTF-8; a project cannot be named so",
        )
    # macOS stores names decomposed (NFD); FLORA and people type them composed
    return Target(name=unicodedata.normalize("NFC", dirname), create=create)


def subfolder_targets(
    folder: FolderConfig, rules: FolderRules, dirnames: Iterable[str]
) -> list[tuple[str, Target | Unplaced]]:
    """The project each of ``dirnames`` (the folder's immediate subdirectories) stands for;
    directories the folder's rules exclude are left out."""
    subfolders = folder.projects_from_subfolders
    if subfolders is None:
        return []
    return [
        (name, subfolder_target(name, rules, create=subfolders.create))
        for name in dirnames
        if not rules.is_excluded_dir(name)
    ]


def mapped_targets(
    folder: FolderConfig, rules: FolderRules, dirnames: Iterable[str]
) -> list[Target]:
    """Every project the folder maps now: its own, and one per (usable) subfolder."""
    own = own_target(folder)
    subs = [t for _, t in subfolder_targets(folder, rules, dirnames) if isinstance(t, Target)]
    return ([own] if own else []) + subs
