"""Tests of config discovery, validation, path expansion and API-key loading, on real files."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from florasync.config import config, credentials
from florasync.errors import ConfigError, ExitCode, InsecureTransportError
from florasync.flora.secret import Secret

KEY = "sk_test_Zq9-not-for-any-message"
EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"


def folder(path: str = "art", project_id: str | None = "prj_one", **extra: Any) -> dict[str, Any]:
    """A folder mapping; ``project_id=None`` leaves the id out (for ``project`` by name)."""
    return {"path": path, **({"project_id": project_id} if project_id else {}), **extra}


def named(name: str, path: str = "art", **extra: Any) -> dict[str, Any]:
    """A folder mapped to its project by name."""
    return folder(path, None, project={"name": name}, **extra)


def doc(*, drop: tuple[str, ...] = (), **top: Any) -> dict[str, Any]:
    """A minimal valid config document, changed by ``top`` and without the ``drop`` keys."""
    d: dict[str, Any] = {"workspace_id": "ws_test", "folders": [folder()], **top}
    for key in drop:
        del d[key]
    return d


def write(path: Path, content: str | Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else yaml.safe_dump(dict(content), sort_keys=False)
    path.write_text(text)
    return path


def key_file(tmp: Path, content: str = KEY, mode: int = 0o600, name: str = "key.txt") -> None:
    path = tmp / name
    path.write_text(content)
    path.chmod(mode)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A directory holding the folder ``art`` that the minimal config maps."""
    (tmp_path / "art").mkdir()
    return tmp_path


@pytest.fixture
def env() -> dict[str, str]:
    """The isolated environment (see conftest) plus a key in FLORA_API_KEY."""
    return {**os.environ, "FLORA_API_KEY": KEY}


# --- bad configs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A config that must be refused with ``key`` and a message containing ``fragment``."""

    content: str | Mapping[str, Any] | None  # None: no file at all
    key: str
    fragment: str
    action: str = "load"  # load | folders | api_key | discover
    setup: Callable[[Path], object] | None = None
    env: Mapping[str, str | None] = field(default_factory=dict)
    error: type[ConfigError] = ConfigError
    cli: str | None = None


def _symlink(tmp: Path) -> None:
    (tmp / "link").symlink_to(tmp / "art")


def _unreadable(tmp: Path) -> None:
    (tmp / "art").chmod(0o000)


BAD = {
    "missing file": Bad(None, "", "cannot read config file"),
    "yaml syntax": Bad(
        "workspace_id: ws_1\nfolders:\n  - path: art\n   project_id: prj_1\n",
        "",
        "line 4, column 4",
    ),
    "empty file": Bad("", "", "is empty"),
    "only comments": Bad("# nothing yet\n", "", "is empty"),
    "top level a list": Bad("- workspace_id: ws_1\n", "", "top level must be a mapping"),
    "duplicate key": Bad(
        "workspace_id: ws_1\nfolders: []\nfolders: []\n", "", "duplicate key 'folders'"
    ),
    "unknown top key": Bad(
        doc(wokers=3), "wokers", "unknown key 'wokers'; did you mean 'workers'?"
    ),
    "unknown folder key": Bad(
        doc(folders=[{"path": "art", "projet_id": "prj_1"}]),
        "folders[0].projet_id",
        "unknown key 'projet_id'; did you mean 'project_id'?",
    ),
    "source is not a key": Bad(doc(source="x.yaml"), "source", "unknown key 'source'"),
    "workers not a number": Bad(
        doc(workers="four"), "workers", "must be an integer between 1 and 64 (got 'four')"
    ),
    "settle not a number": Bad(doc(settle_seconds="soon"), "settle_seconds", "(got 'soon')"),
    "recursive not a bool": Bad(
        doc(folders=[folder(recursive="maybe")]), "folders[0].recursive", "true or false"
    ),
    "project id prefix": Bad(
        doc(folders=[folder(project_id="proj_123")]),
        "folders[0].project_id",
        "starting with prj_ (e.g. prj_XXXX) (got 'proj_123')",
    ),
    "workspace id prefix": Bad(doc(workspace_id="123"), "workspace_id", "starting with ws_"),
    "missing workspace": Bad(doc(drop=("workspace_id",)), "workspace_id", "is missing"),
    "missing folders": Bad(doc(drop=("folders",)), "folders", "is missing"),
    "empty folders": Bad(
        doc(folders=[]),
        "folders",
        "must be a list of at least one folder mapping (path, project_id or project) (got [])",
    ),
    "folder not a mapping": Bad(doc(folders=["art"]), "folders[0]", "must be a mapping"),
    "workers 0": Bad(doc(workers=0), "workers", "between 1 and 64 (got 0)"),
    "workers 65": Bad(doc(workers=65), "workers", "between 1 and 64 (got 65)"),
    "workers a bool": Bad(doc(workers=True), "workers", "(got true)"),
    "negative settle": Bad(doc(settle_seconds=-1), "settle_seconds", ">= 0 (got -1)"),
    "poll interval 0": Bad(doc(poll_interval_seconds=0), "poll_interval_seconds", ">= 1"),
    "empty include": Bad(doc(folders=[folder(include=[])]), "folders[0].include", "non-empty"),
    "bad poll": Bad(doc(folders=[folder(poll="often")]), "folders[0].poll", "auto, on, off"),
    "bad after_upload": Bad(
        doc(folders=[folder(after_upload="trash")]),
        "folders[0].after_upload",
        "keep, delete or a mapping {move: DIR} (got 'trash')",
    ),
    "after_upload typo": Bad(
        doc(folders=[folder(after_upload={"mvoe": "done"})]),
        "folders[0].after_upload",
        "did you mean 'move'?",
    ),
    "unset variable": Bad(
        doc(folders=[folder(path="$NO_SUCH_DIR/art")]),
        "folders[0].path",
        "environment variable NO_SUCH_DIR is not set",
    ),
    "http to a remote host": Bad(
        doc(api={"base_url": "http://flora.example.com/api/v1"}),
        "api.base_url",
        "use https://",
        error=InsecureTransportError,
    ),
    "http from FLORA_BASE_URL": Bad(
        doc(),
        "api.base_url",
        "(from $FLORA_BASE_URL)",
        env={"FLORA_BASE_URL": "http://10.0.0.5/api/v1"},
        error=InsecureTransportError,
    ),
    "https without host": Bad(doc(api={"base_url": "https:///api/v1"}), "api.base_url", "no host"),
    "not a URL scheme": Bad(doc(api={"base_url": "ftp://x.org"}), "api.base_url", "https://"),
    "api_key_env holds the key": Bad(
        doc(api={"api_key_env": KEY}), "api.api_key_env", "looks like an API key"
    ),
    "bad metrics listen": Bad(doc(metrics={"listen": "9100"}), "metrics.listen", "HOST:PORT"),
    "metrics port 0": Bad(doc(metrics={"listen": "127.0.0.1:0"}), "metrics.listen", "1 and 65535"),
    "same folder twice": Bad(
        doc(folders=[folder(), folder(project_id="prj_two")]),
        "folders[1].path",
        "same folder as folders[0]",
    ),
    "same folder, trailing slash": Bad(
        doc(folders=[folder(), folder(path="art/")]), "folders[1].path", "same folder as folders[0]"
    ),
    "same folder via a symlink": Bad(
        doc(folders=[folder(), folder(path="link", project_id="prj_two")]),
        "folders[1].path",
        "same folder as folders[0]",
        setup=_symlink,
    ),
    "nested, other project": Bad(
        doc(folders=[folder(), folder(path="art/sub", project_id="prj_two")]),
        "folders[1].path",
        "different projects",
    ),
    "nested in a recursive folder": Bad(
        doc(folders=[folder(), folder(path="art/sub")]),
        "folders[1].path",
        "already covered by folders[0]",
    ),
    "project_id and project both": Bad(
        doc(folders=[folder(project={"name": "Spring Campaign"})]),
        "folders[0].project",
        "give either project_id or project (by name), not both",
    ),
    "no project at all": Bad(
        doc(folders=[{"path": "art"}]),
        "folders[0].project_id",
        "is missing; it must be a FLORA project id starting with prj_ (e.g. prj_XXXX), "
        "or give project: {name: ...} or projects_from_subfolders: true",
    ),
    "subfolder projects, not recursive": Bad(
        doc(folders=[folder(project_id=None, projects_from_subfolders=True, recursive=False)]),
        "folders[0].projects_from_subfolders",
        "needs recursive: true (the subfolders hold the projects' files)",
    ),
    "empty project name": Bad(
        doc(folders=[named("")]), "folders[0].project.name", "must not be empty"
    ),
    "blank project name": Bad(
        doc(folders=[named(" \t ")]), "folders[0].project.name", "must not be empty"
    ),
    "project name a number": Bad(
        doc(folders=[folder(project_id=None, project={"name": 2024})]),
        "folders[0].project.name",
        "(quote a number: '2024') (got 2024)",
    ),
    "project without a name": Bad(
        doc(folders=[folder(project_id=None, project={"create": True})]),
        "folders[0].project.name",
        "is missing",
    ),
    "unknown key in project": Bad(
        doc(folders=[folder(project_id=None, project={"name": "A", "craete": True})]),
        "folders[0].project.craete",
        "unknown key 'craete'; did you mean 'create'?",
    ),
    "project not a mapping": Bad(
        doc(folders=[folder(project_id=None, project="Spring Campaign")]),
        "folders[0].project",
        "must be a mapping of keys (got 'Spring Campaign')",
    ),
    "bad projects_from_subfolders": Bad(
        doc(folders=[folder(projects_from_subfolders="yes please")]),
        "folders[0].projects_from_subfolders",
        "must be true, false or a mapping {create: true|false} (got 'yes please')",
    ),
    "projects_from_subfolders typo": Bad(
        doc(folders=[folder(projects_from_subfolders={"creat": False})]),
        "folders[0].projects_from_subfolders.creat",
        "did you mean 'create'?",
    ),
    "nested, other project name": Bad(
        doc(folders=[named("Spring"), named("spring", path="art/sub")]),
        "folders[1].path",
        "different projects (project 'Spring', project 'spring'); un-nest them",
    ),
    "nested, id and name": Bad(
        doc(folders=[folder(recursive=False), named("One", path="art/sub")]),
        "folders[1].path",
        "different projects (prj_one, project 'One')",
    ),
    "nested in a subfolder-projects root": Bad(
        doc(folders=[folder(projects_from_subfolders=True), folder(path="art/sub")]),
        "folders[1].path",
        "art maps a project per subfolder (root files: prj_one); nested folders must map one "
        "and the same project",
    ),
    "subfolder-projects root nested inside": Bad(
        doc(
            folders=[folder(recursive=False), folder(path="art/sub", projects_from_subfolders=True)]
        ),
        "folders[1].path",
        "sub maps a project per subfolder (root files: prj_one)",
    ),
    "folder missing": Bad(
        doc(folders=[folder(path="gone")]), "folders[0].path", "does not exist", "folders"
    ),
    "folder is a file": Bad(
        doc(folders=[folder(path="file.png")]),
        "folders[0].path",
        "is not a directory",
        "folders",
        setup=lambda tmp: (tmp / "file.png").write_bytes(b"x"),
    ),
    "folder unreadable": Bad(doc(), "folders[0].path", "not readable", "folders", _unreadable),
    "key env var unset": Bad(
        doc(),
        "api.api_key_env",
        "environment variable FLORA_API_KEY is not set; export it or set api.api_key_file",
        "api_key",
        env={"FLORA_API_KEY": None},
    ),
    "key env var blank": Bad(
        doc(), "api.api_key_env", "is empty", "api_key", env={"FLORA_API_KEY": "  \n"}
    ),
    "key with Bearer prefix": Bad(
        doc(),
        "api.api_key_env",
        "'Bearer ' prefix",
        "api_key",
        env={"FLORA_API_KEY": f"Bearer {KEY}"},
    ),
    "key file 0644": Bad(
        doc(api={"api_key_file": "key.txt"}),
        "api.api_key_file",
        "has mode 0644; it must be readable by its owner only (chmod 600 ",
        "api_key",
        setup=lambda tmp: key_file(tmp, mode=0o644),
    ),
    "key file missing": Bad(
        doc(api={"api_key_file": "key.txt"}), "api.api_key_file", "does not exist", "api_key"
    ),
    "key file empty": Bad(
        doc(api={"api_key_file": "key.txt"}),
        "api.api_key_file",
        "is empty",
        "api_key",
        setup=lambda tmp: key_file(tmp, content="\n"),
    ),
    "-c names a missing file": Bad(
        None, "-c", "nope.yaml does not exist", "discover", cli="nope.yaml"
    ),
    "FLORASYNC_CONFIG names a missing file": Bad(
        None,
        "FLORASYNC_CONFIG",
        "does not exist",
        "discover",
        env={"FLORASYNC_CONFIG": "/nowhere/florasync.yaml"},
    ),
    "no config anywhere": Bad(None, "", "/etc/florasync/config.yaml", "discover"),
}

_ROOT = os.geteuid() == 0


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=name,
            marks=[pytest.mark.skipif(_ROOT, reason="root can read anything")]
            if case.setup is _unreadable
            else [],
        )
        for name, case in BAD.items()
    ],
)
def test_bad_config_is_refused_naming_the_key(
    case: Bad, base: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bad config raises a ConfigError naming the key and the problem, never the API key."""
    monkeypatch.chdir(base)
    if case.setup is not None:
        case.setup(base)
    env = _with(env, case.env)
    path = base / "florasync.yaml" if case.action != "discover" else base / "elsewhere.yaml"
    if case.content is not None:
        write(path, case.content)
    with pytest.raises(ConfigError) as info:
        _act(case, path, env)
    exc = info.value
    assert isinstance(exc, case.error)
    assert exc.key == case.key
    assert case.fragment in str(exc)
    assert KEY not in str(exc)
    assert KEY not in exc.key
    assert "pydantic" not in str(exc)
    assert "Input should be" not in str(exc)
    assert exc.exit_code == ExitCode.USAGE


def _with(env: dict[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    merged = {**env, **{k: v for k, v in changes.items() if v is not None}}
    return {k: v for k, v in merged.items() if changes.get(k, "") is not None}


def _act(case: Bad, path: Path, env: Mapping[str, str]) -> object:
    if case.action == "discover":
        return config.discover(case.cli, env)
    cfg = config.load(path, env)
    if case.action == "folders":
        config.check_folders(cfg)
    if case.action == "api_key":
        return credentials.load_api_key(cfg, env)
    return cfg


def test_all_problems_are_listed_and_the_key_names_the_first(base: Path) -> None:
    """Several mistakes give one message with a line each; ``key`` is the first one."""
    path = write(base / "c.yaml", doc(workers="four", settle_seconds="soon"))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "workers"
    assert str(info.value).splitlines() == [
        "workers: must be an integer between 1 and 64 (got 'four')",
        "settle_seconds: must be a number of seconds >= 0 (got 'soon')",
    ]


def test_typo_is_reported_before_the_missing_key_it_causes(base: Path) -> None:
    """A misspelt required key leads with "did you mean", not with "is missing"."""
    path = write(base / "c.yaml", doc(drop=("workspace_id",), workspace_idd="ws_1"))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "workspace_idd"
    assert "did you mean 'workspace_id'?" in info.value.message
    assert "workspace_id: is missing" in info.value.message


def test_values_that_look_like_keys_are_never_echoed(base: Path) -> None:
    """A key pasted into the wrong field is not repeated in the error."""
    path = write(base / "c.yaml", doc(workspace_id=KEY))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "workspace_id"
    assert KEY not in str(info.value)
    assert "(got 'sk_test_***')" in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"folders": {"path": "art", "token": KEY}},
        {KEY: 1},
        {"api": {"base_url": f"ftp://flora.example/?key={KEY}"}},
        {"state_dir": f"$NOT_SET/{KEY}"},
    ],
    ids=["inside a value", "as a key", "inside the URL", "inside a path"],
)
def test_keys_pasted_anywhere_are_masked(base: Path, changes: dict[str, Any]) -> None:
    """Wherever a key-shaped value appears in the file, the error masks it."""
    path = write(base / "c.yaml", doc(**changes))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert KEY not in str(info.value)
    assert KEY not in info.value.key
    assert "sk_test_***" in str(info.value)


# --- good configs -----------------------------------------------------------------------------


def test_minimal_config_gets_documented_defaults(base: Path, env: dict[str, str]) -> None:
    """Only workspace_id and one folder are needed; everything else has its documented default."""
    path = write(base / "florasync.yaml", doc())
    cfg = config.load(path, env)
    assert cfg.source == path
    assert cfg.api == config.ApiConfig()
    assert cfg.api.base_url == "https://app.flora.ai/api/v1"
    assert cfg.api.api_key_env == "FLORA_API_KEY"
    assert cfg.api.api_key_file is None
    assert (cfg.api.connect_timeout_seconds, cfg.api.read_timeout_seconds) == (10, 60)
    assert cfg.api.upload_timeout_seconds == 300
    assert cfg.workspace_id == "ws_test"
    assert cfg.state_dir == Path(env["XDG_STATE_HOME"]) / "florasync"
    assert (cfg.workers, cfg.settle_seconds, cfg.poll_interval_seconds) == (4, 2, 60)
    assert (cfg.rescan_interval_seconds, cfg.complete_timeout_seconds) == (3600, 120)
    assert cfg.max_file_bytes is None
    assert cfg.metrics is None
    (f,) = cfg.folders
    assert f.path == base / "art"
    assert (f.project_id, f.recursive, f.include, f.exclude) == (
        "prj_one",
        True,
        config.DEFAULT_INCLUDE,
        (),
    )
    assert (f.poll, f.after_upload) == ("auto", "keep")


def test_state_dir_defaults_to_local_state_without_xdg(base: Path, env: dict[str, str]) -> None:
    """Without $XDG_STATE_HOME the journal goes to ~/.local/state/florasync."""
    del env["XDG_STATE_HOME"]
    cfg = config.load(write(base / "c.yaml", doc()), env)
    assert cfg.state_dir == Path(env["HOME"]) / ".local" / "state" / "florasync"


def test_config_is_frozen(base: Path) -> None:
    """A loaded config cannot be changed by accident."""
    cfg = config.load(write(base / "c.yaml", doc()))
    with pytest.raises(ValidationError):
        cfg.workers = 8


def test_every_key_is_read(base: Path, env: dict[str, str]) -> None:
    """Each key given in the file reaches the model."""
    mapped = folder(
        recursive=False,
        include=["*.png"],
        exclude=["*_draft.*"],
        poll="off",
        after_upload={"move": "done"},
    )
    path = write(
        base / "c.yaml",
        doc(
            api={"connect_timeout_seconds": 1.5, "read_timeout_seconds": 2, "api_key_env": "K"},
            workers=64,
            settle_seconds=0,
            poll_interval_seconds=30,
            rescan_interval_seconds=600,
            complete_timeout_seconds=5,
            max_file_bytes=1024,
            metrics={"listen": "127.0.0.1:9464"},
            folders=[mapped, folder(path="other", after_upload="delete")],
        ),
    )
    cfg = config.load(path, env)
    assert (cfg.api.connect_timeout_seconds, cfg.api.read_timeout_seconds) == (1.5, 2)
    assert (cfg.workers, cfg.settle_seconds, cfg.poll_interval_seconds) == (64, 0, 30)
    assert (cfg.rescan_interval_seconds, cfg.complete_timeout_seconds) == (600, 5)
    assert cfg.max_file_bytes == 1024
    assert cfg.metrics == config.MetricsConfig(listen="127.0.0.1:9464")
    first, second = cfg.folders
    assert (first.recursive, first.include, first.exclude, first.poll) == (
        False,
        ("*.png",),
        ("*_draft.*",),
        "off",
    )
    assert first.after_upload == config.MoveTo(move=base / "done")
    assert second.after_upload == "delete"


def test_bare_on_off_mean_poll_on_off(base: Path) -> None:
    """YAML reads a bare ``poll: on`` as a boolean; it still means "on"."""
    text = "workspace_id: ws_1\nfolders:\n  - {path: a, project_id: prj_1, poll: on}\n"
    text += "  - {path: b, project_id: prj_1, poll: off}\n"
    cfg = config.load(write(base / "c.yaml", text))
    assert [f.poll for f in cfg.folders] == ["on", "off"]


def test_flora_base_url_overrides_the_file(base: Path, env: dict[str, str]) -> None:
    """$FLORA_BASE_URL replaces api.base_url."""
    path = write(base / "c.yaml", doc(api={"base_url": "https://a.example/api/v1"}))
    env["FLORA_BASE_URL"] = "https://b.example/api/v1"
    assert config.load(path, env).api.base_url == "https://b.example/api/v1"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/api/v1",
        "http://127.3.4.5/api",
        "http://localhost:9/api",
        "http://[::1]:80/",
    ],
)
def test_plain_http_to_loopback_is_allowed(base: Path, url: str) -> None:
    """http:// is fine for the local sandbox (loopback hosts only)."""
    cfg = config.load(write(base / "c.yaml", doc(api={"base_url": url})))
    assert cfg.api.base_url == url


def test_home_and_variables_are_expanded_in_every_path(base: Path, env: dict[str, str]) -> None:
    """``~`` and ``$VARS`` work in state_dir, folder paths, the key file and the move target."""
    env["DATA"] = str(base / "data")
    home = Path(env["HOME"])
    path = write(
        base / "c.yaml",
        doc(
            state_dir="$DATA/state",
            api={"api_key_file": "${DATA}/key"},
            folders=[folder(path="~/FLORA/spring-campaign", after_upload={"move": "~/done"})],
        ),
    )
    cfg = config.load(path, env)
    assert cfg.state_dir == base / "data" / "state"
    assert cfg.api.api_key_file == base / "data" / "key"
    assert cfg.folders[0].path == home / "FLORA" / "spring-campaign"
    assert cfg.folders[0].after_upload == config.MoveTo(move=home / "done")


def test_relative_paths_are_relative_to_the_config_file(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path means the same thing whatever directory florasync was started in."""
    monkeypatch.chdir(base / "art")
    path = write(base / "etc" / "c.yaml", doc(state_dir="state", folders=[folder(path="../art")]))
    cfg = config.load(Path("../etc/c.yaml"))
    assert cfg.folders[0].path == base / "art"
    assert cfg.state_dir == path.parent / "state"


def test_folder_symlinks_are_kept_as_written(base: Path) -> None:
    """A folder reached through a symlink keeps the path the user wrote."""
    _symlink(base)
    cfg = config.load(write(base / "c.yaml", doc(folders=[folder(path="link")])))
    assert cfg.folders[0].path == base / "link"
    config.check_folders(cfg)


def test_nested_folder_under_a_non_recursive_one_of_the_same_project(base: Path) -> None:
    """A sub-folder may be mapped on its own when the outer folder is not recursive."""
    folders = [folder(recursive=False), folder(path="art/sub")]
    cfg = config.load(write(base / "c.yaml", doc(folders=folders)))
    assert len(cfg.folders) == 2


def test_sibling_folders_with_a_common_prefix_do_not_overlap(base: Path) -> None:
    """``art`` and ``art-2`` are two folders, not nested ones."""
    folders = [folder(), folder(path="art-2", project_id="prj_two")]
    cfg = config.load(write(base / "c.yaml", doc(folders=folders)))
    assert [f.path.name for f in cfg.folders] == ["art", "art-2"]


def test_project_by_name_is_kept_exactly_as_written(base: Path) -> None:
    """A project name keeps its case, spaces and accents; ``create`` defaults to false."""
    folders = [named("  Été Campaign "), folder("b", None, project={"name": "b", "create": True})]
    cfg = config.load(write(base / "c.yaml", doc(folders=folders)))
    first, second = cfg.folders
    assert first.project == config.ProjectByName(name="  Été Campaign ", create=False)
    assert second.project == config.ProjectByName(name="b", create=True)
    assert (first.project_id, second.project_id) == (None, None)
    assert (first.projects_from_subfolders, second.projects_from_subfolders) == (None, None)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("true", config.SubfolderProjects(create=True)),
        ("{create: false}", config.SubfolderProjects(create=False)),
        ("{}", config.SubfolderProjects(create=True)),
        ("false", None),
        ("null", None),
    ],
)
def test_projects_from_subfolders_spellings(
    base: Path, given: str, expected: config.SubfolderProjects | None
) -> None:
    """true means create missing projects, a mapping says so itself, false or null means off."""
    text = "workspace_id: ws_1\nfolders:\n  - path: art\n    project_id: prj_1\n"
    text += f"    projects_from_subfolders: {given}\n"
    cfg = config.load(write(base / "c.yaml", text))
    assert cfg.folders[0].projects_from_subfolders == expected


def test_subfolder_projects_need_no_project_of_their_own(base: Path) -> None:
    """A folder with projects_from_subfolders may leave out project_id and project."""
    cfg = config.load(
        write(
            base / "c.yaml", doc(folders=[folder(project_id=None, projects_from_subfolders=True)])
        )
    )
    (f,) = cfg.folders
    assert (f.project_id, f.project, f.recursive) == (None, None, True)
    assert f.projects_from_subfolders == config.SubfolderProjects(create=True)


def test_nested_folders_of_the_same_project_name(base: Path) -> None:
    """Nested folders may map one project by name, whatever each says about creating it."""
    outer = named("Spring Campaign", recursive=False)
    inner = folder("art/sub", None, project={"name": "Spring Campaign", "create": True})
    cfg = config.load(write(base / "c.yaml", doc(folders=[outer, inner])))
    assert [f.project_label for f in cfg.folders] == ["project 'Spring Campaign'"] * 2


@pytest.mark.parametrize(
    ("mapping", "label"),
    [
        ({"project_id": "prj_x"}, "prj_x"),
        ({"project": {"name": "Spring Campaign"}}, "project 'Spring Campaign'"),
        ({"projects_from_subfolders": True}, "a project per subfolder"),
        (
            {"projects_from_subfolders": True, "project_id": "prj_x"},
            "a project per subfolder (root files: prj_x)",
        ),
        (
            {"projects_from_subfolders": {"create": False}, "project": {"name": "Inbox"}},
            "a project per subfolder (root files: project 'Inbox')",
        ),
    ],
    ids=["id", "name", "subfolders", "subfolders and id", "subfolders and name"],
)
def test_project_label_names_the_mapping(base: Path, mapping: dict[str, Any], label: str) -> None:
    """Messages name a folder's projects as prj_x, project 'Name' or a project per subfolder."""
    cfg = config.load(write(base / "c.yaml", doc(folders=[{"path": "art", **mapping}])))
    assert cfg.folders[0].project_label == label


def test_check_folders_accepts_readable_directories(base: Path) -> None:
    """An existing, readable folder passes the folder check."""
    config.check_folders(config.load(write(base / "c.yaml", doc())))


def test_example_config_loads() -> None:
    """config.example.yaml at the repository root is a valid config."""
    cfg = config.load(EXAMPLE)
    assert cfg.workspace_id == "ws_XXXX"
    assert cfg.folders[0].project_id == "prj_XXXX"
    assert cfg.folders[0].path == Path.home() / "FLORA" / "spring-campaign"
    assert isinstance(cfg.folders[1].after_upload, config.MoveTo)
    assert cfg.folders[2].projects_from_subfolders == config.SubfolderProjects(create=True)
    assert cfg.folders[2].project == config.ProjectByName(name="Campaign inbox", create=True)


def test_example_config_shows_the_defaults() -> None:
    """Apart from the ids and folders, the example's values are the defaults."""
    cfg = config.load(EXAMPLE)
    minimal = config.Config(workspace_id="ws_XXXX", folders=cfg.folders, state_dir=cfg.state_dir)
    assert cfg.model_dump() == minimal.model_dump()
    assert cfg.folders[0] == config.FolderConfig(path=cfg.folders[0].path, project_id="prj_XXXX")


# --- discovery --------------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """One config file in each place discovery looks, and the current directory set."""
    cwd = tmp_path / "cwd"
    found = {
        "cli": write(tmp_path / "cli.yaml", "x"),
        "env": write(tmp_path / "env.yaml", "x"),
        "cwd": write(cwd / "florasync.yaml", "x"),
        "xdg": write(Path(os.environ["XDG_CONFIG_HOME"]) / "florasync" / "config.yaml", "x"),
    }
    monkeypatch.chdir(cwd)
    return found


def test_discovery_prefers_the_command_line(places: dict[str, Path]) -> None:
    """``-c`` wins over everything else."""
    env = {**os.environ, "FLORASYNC_CONFIG": str(places["env"])}
    assert config.discover(str(places["cli"]), env) == places["cli"]


def test_discovery_then_uses_florasync_config(places: dict[str, Path]) -> None:
    """Without ``-c``, $FLORASYNC_CONFIG wins over the files found on disk."""
    env = {**os.environ, "FLORASYNC_CONFIG": str(places["env"])}
    assert config.discover(None, env) == places["env"]


def test_discovery_then_uses_the_current_directory(places: dict[str, Path]) -> None:
    """Then ./florasync.yaml."""
    assert config.discover(None, os.environ) == places["cwd"]


def test_discovery_then_uses_the_user_config_dir(places: dict[str, Path]) -> None:
    """Then $XDG_CONFIG_HOME/florasync/config.yaml."""
    places["cwd"].unlink()
    assert config.discover(None, os.environ) == places["xdg"]


def test_discovery_defaults_to_dot_config(places: dict[str, Path]) -> None:
    """Without $XDG_CONFIG_HOME the user's config dir is ~/.config."""
    places["cwd"].unlink()
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    default = write(Path(env["HOME"]) / ".config" / "florasync" / "config.yaml", "x")
    assert config.discover(None, env) == default


def test_discovery_lists_every_place_it_looked(places: dict[str, Path]) -> None:
    """When nothing is found the message names every place, /etc included."""
    places["cwd"].unlink()
    places["xdg"].unlink()
    if config.SYSTEM_CONFIG.exists():
        pytest.skip("this machine has a system-wide florasync config")
    with pytest.raises(ConfigError) as info:
        config.discover(None, os.environ)
    message = str(info.value)
    assert "-c" in message
    assert "$FLORASYNC_CONFIG" in message
    assert str(places["cwd"]) in message
    assert str(places["xdg"]) in message
    assert "/etc/florasync/config.yaml" in message


def test_discovery_expands_home_in_the_named_file(places: dict[str, Path]) -> None:
    """``--config=~/x.yaml`` (not expanded by the shell) still finds the file."""
    target = write(Path(os.environ["HOME"]) / "x.yaml", "x")
    assert config.discover("~/x.yaml", os.environ) == target


# --- the API key ------------------------------------------------------------------------------


def test_key_from_the_environment(base: Path, env: dict[str, str]) -> None:
    """By default the key is read from $FLORA_API_KEY, surrounding whitespace stripped."""
    env["FLORA_API_KEY"] = f"  {KEY}\n"
    cfg = config.load(write(base / "c.yaml", doc()), env)
    assert credentials.load_api_key(cfg, env).reveal() == KEY


def test_key_from_the_variable_named_by_api_key_env(base: Path, env: dict[str, str]) -> None:
    """api.api_key_env names another variable."""
    env["MY_FLORA_KEY"] = KEY
    del env["FLORA_API_KEY"]
    cfg = config.load(write(base / "c.yaml", doc(api={"api_key_env": "MY_FLORA_KEY"})), env)
    assert credentials.load_api_key(cfg, env).reveal() == KEY


def test_key_file_0600_wins_over_the_environment(base: Path, env: dict[str, str]) -> None:
    """A private key file is used before the environment variable."""
    key_file(base, content=f"{KEY}\n")
    env["FLORA_API_KEY"] = "sk_test_other"
    cfg = config.load(write(base / "c.yaml", doc(api={"api_key_file": "key.txt"})), env)
    assert credentials.load_api_key(cfg, env).reveal() == KEY


def test_credentials_directory_wins_over_file_and_environment(
    base: Path, env: dict[str, str]
) -> None:
    """systemd's $CREDENTIALS_DIRECTORY/flora_api_key comes first."""
    key_file(base, content="sk_test_from_file")
    (base / "creds").mkdir()
    key_file(base / "creds", content=KEY, mode=0o440, name="flora_api_key")
    env["CREDENTIALS_DIRECTORY"] = str(base / "creds")
    cfg = config.load(write(base / "c.yaml", doc(api={"api_key_file": "key.txt"})), env)
    assert credentials.load_api_key(cfg, env).reveal() == KEY


def test_empty_credentials_directory_falls_back(base: Path, env: dict[str, str]) -> None:
    """A credentials directory without flora_api_key is skipped."""
    (base / "creds").mkdir()
    env["CREDENTIALS_DIRECTORY"] = str(base / "creds")
    cfg = config.load(write(base / "c.yaml", doc()), env)
    assert credentials.load_api_key(cfg, env).reveal() == KEY


def test_key_is_masked_in_repr_and_str(base: Path, env: dict[str, str]) -> None:
    """The loaded key prints as Secret('***'), in a config dump too."""
    cfg = config.load(write(base / "c.yaml", doc()), env)
    key = credentials.load_api_key(cfg, env)
    assert isinstance(key, Secret)
    assert repr(key) == str(key) == "Secret('***')"
    assert KEY not in f"{key} {key!r} {[key]} {cfg!r}"
