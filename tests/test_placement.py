"""Unit tests of placement: which project a file of a watched folder goes to, without I/O."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from florasync.config.config import FolderConfig, ProjectByName, SubfolderProjects
from florasync.local import placement
from florasync.local.placement import Target, Unplaced
from florasync.local.rules import FolderRules

ROOT = "/data/campaigns"
PROJECT_ID = "prj_own"
RULES = FolderRules(include=("*",))


def _by_id() -> FolderConfig:
    return FolderConfig(path=Path(ROOT), project_id=PROJECT_ID)


def _by_name(name: str = "Spring Campaign", *, create: bool = False) -> FolderConfig:
    return FolderConfig(path=Path(ROOT), project=ProjectByName(name=name, create=create))


def _subfolders(
    *, create: bool = True, project_id: str | None = None, project: ProjectByName | None = None
) -> FolderConfig:
    return FolderConfig(
        path=Path(ROOT),
        project_id=project_id,
        project=project,
        projects_from_subfolders=SubfolderProjects(create=create),
    )


def _at(relpath: str) -> str:
    return f"{ROOT}/{relpath}"


PLACED = [
    pytest.param(_by_id(), "a.png", Target(project_id=PROJECT_ID), id="id-root"),
    pytest.param(_by_id(), "x/y/z/a.png", Target(project_id=PROJECT_ID), id="id-deep"),
    pytest.param(_by_name(), "a.png", Target(name="Spring Campaign"), id="name-root"),
    pytest.param(_by_name(), "x/y/a.png", Target(name="Spring Campaign"), id="name-deep"),
    pytest.param(_subfolders(), "Summer/a.png", Target(name="Summer", create=True), id="sub"),
    pytest.param(
        _subfolders(), "Summer/v2/final/a.png", Target(name="Summer", create=True), id="sub-deep"
    ),
    pytest.param(
        _subfolders(), "Été 2027/a.png", Target(name="Été 2027", create=True), id="sub-non-ascii"
    ),
    pytest.param(
        _subfolders(project_id=PROJECT_ID),
        "a.png",
        Target(project_id=PROJECT_ID),
        id="sub-root-file-own-id",
    ),
    pytest.param(
        _subfolders(project=ProjectByName(name="Loose", create=True)),
        "a.png",
        Target(name="Loose", create=True),
        id="sub-root-file-own-name",
    ),
    pytest.param(
        _subfolders(project_id=PROJECT_ID),
        "Summer/a.png",
        Target(name="Summer", create=True),
        id="sub-file-ignores-own-project",
    ),
]


@pytest.mark.parametrize(("folder", "relpath", "expected"), PLACED)
def test_target_for_each_mapping(folder, relpath, expected):
    """A file goes to the folder's own project, or to its first directory's name per subfolder."""
    assert placement.target_for(folder, RULES, _at(relpath)) == expected


def test_a_root_file_of_a_subfolders_folder_without_own_project_is_unplaced():
    """A file at the top of a subfolders folder with no project of its own is no_project."""
    result = placement.target_for(_subfolders(), RULES, _at("loose.png"))
    assert isinstance(result, Unplaced)
    assert result.code == "no_project"
    assert "subfolder" in result.message
    assert "project_id" in result.message


@pytest.mark.parametrize(
    "dirname",
    [".git", ".Trash-1000", "@eaDir", "$RECYCLE.BIN", "#recycle", "lost+found", "__MACOSX"],
)
@pytest.mark.parametrize("relpath", ["{}/a.png", "{}/deeper/a.png"], ids=["file", "deep-file"])
def test_hidden_and_ignored_directories_are_no_project(dirname, relpath):
    """A hidden or built-in ignored directory name never becomes a project: no_project, named."""
    result = placement.target_for(_subfolders(), RULES, _at(relpath.format(dirname)))
    assert isinstance(result, Unplaced)
    assert result.code == "no_project"
    assert repr(dirname) in result.message


def test_a_decomposed_name_becomes_the_composed_project_name():
    """An NFD directory name (as macOS stores it) names the project in NFC, as people type it."""
    composed = "Été 2027 — Lookbook"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    result = placement.target_for(_subfolders(), RULES, _at(f"{decomposed}/a.png"))
    assert result == Target(name=composed, create=True)


def test_an_undecodable_directory_name_is_a_bad_project_name():
    """A directory name of invalid UTF-8 (surrogate escapes) is unplaced with bad_project_name."""
    dirname = os.fsdecode(b"bad\xff")
    result = placement.target_for(_subfolders(), RULES, _at(f"{dirname}/a.png"))
    assert isinstance(result, Unplaced)
    assert result.code == "bad_project_name"
    assert "not valid UTF-8" in result.message
    assert repr(dirname) in result.message


@pytest.mark.parametrize(
    ("folder", "create"),
    [
        pytest.param(_subfolders(), True, id="subfolders-default"),
        pytest.param(_subfolders(create=False), False, id="subfolders-create-false"),
        pytest.param(_by_name(), False, id="name-default"),
        pytest.param(_by_name(create=True), True, id="name-create-true"),
    ],
)
def test_create_is_carried_from_the_config(folder, create):
    """``create`` of the Target is the one the folder's config gave for that mapping."""
    result = placement.target_for(folder, RULES, _at("Summer/a.png"))
    assert isinstance(result, Target)
    assert result.create is create


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        pytest.param(_by_id(), Target(project_id=PROJECT_ID), id="id"),
        pytest.param(_by_name(create=True), Target(name="Spring Campaign", create=True), id="name"),
        pytest.param(_subfolders(), None, id="subfolders-only"),
        pytest.param(_subfolders(project_id=PROJECT_ID), Target(project_id=PROJECT_ID), id="both"),
    ],
)
def test_own_target(folder, expected):
    """The folder's own project is its project_id or project by name, else None."""
    assert placement.own_target(folder) == expected


@pytest.mark.parametrize(
    ("dirname", "create", "expected"),
    [
        pytest.param("Summer", False, Target(name="Summer"), id="plain"),
        pytest.param("Summer", True, Target(name="Summer", create=True), id="create"),
        pytest.param("moodboards", True, Target(name="moodboards", create=True), id="case-kept"),
        pytest.param(".sync", True, Unplaced, id="hidden"),
        pytest.param("System Volume Information", True, Unplaced, id="system"),
    ],
)
def test_subfolder_target(dirname, create, expected):
    """An immediate subdirectory stands for the project of its exact name, unless ignored."""
    result = placement.subfolder_target(dirname, RULES, create=create)
    if expected is Unplaced:
        assert isinstance(result, Unplaced)
        assert result.code == "no_project"
    else:
        assert result == expected


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        pytest.param(Target(project_id="prj_abc"), "prj_abc", id="id"),
        pytest.param(Target(name="Spring Campaign"), "project 'Spring Campaign'", id="name"),
        pytest.param(Target(name="it's", create=True), 'project "it\'s"', id="quote"),
    ],
)
def test_str_of_a_target(target, shown):
    """A Target shows as its project id, or as ``project 'Name'`` when only the name is known."""
    assert str(target) == shown


def test_a_folder_at_the_filesystem_root_names_whole_subfolders():
    """A subfolders folder at "/" maps "/Summer/a.png" to the project "Summer"."""
    folder = FolderConfig(path=Path("/"), projects_from_subfolders=SubfolderProjects())
    assert placement.target_for(folder, RULES, "/Summer/a.png") == Target(
        name="Summer", create=True
    )


def test_a_blank_directory_name_is_a_bad_project_name():
    """A subfolder named only with spaces never becomes a project (FLORA needs a name)."""
    unplaced = placement.subfolder_target("   ", RULES, create=True)
    assert isinstance(unplaced, Unplaced)
    assert unplaced.code == "bad_project_name"
