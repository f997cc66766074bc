"""The command line in a subprocess: help, version, check/projects exit codes, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from florasync.sandbox import Sandbox

from .helpers import run_cli, write_config

COMMANDS = [
    *("run", "check", "status", "retry", "projects", "sandbox", "demo", "journal"),
    *("pause", "resume", "verify"),
]


def _config(tmp_path: Path, sb: Sandbox, **extra: Any) -> Path:
    folders = []
    for n, project in enumerate(sb.project_ids):
        folder = tmp_path / f"folder{n}"
        folder.mkdir(exist_ok=True)
        folders.append({"path": str(folder), "project_id": project})
    workspace_id = str(extra.pop("workspace_id", sb.workspace_id))
    return write_config(
        tmp_path / "florasync.yaml",
        base_url=sb.base_url,
        workspace_id=workspace_id,
        folders=folders,
        **extra,
    )


def test_version_and_help() -> None:
    """--version prints the version; --help works for the program and every command."""
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("florasync ")
    for command in [[], *([c] for c in COMMANDS)]:
        result = run_cli(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: florasync" in result.stdout


def test_unknown_command_is_usage_error() -> None:
    """A typo in the command exits 2 with argparse's usage message."""
    result = run_cli("chek")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_check_ok(sandbox: Sandbox, tmp_path: Path) -> None:
    """A valid config against the sandbox: every line ✓, exit 0, nothing created."""
    cfg = _config(tmp_path, sandbox)
    result = run_cli("check", "-c", str(cfg), api_key=sandbox.api_key)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines
    assert all(line.startswith("✓") for line in lines), result.stdout
    assert "Spring Campaign" in result.stdout
    assert not (tmp_path / "state").exists()
    mutating = [r for r in sandbox.state()["requests"] if r["method"] == "POST"]
    assert mutating == []


def test_check_revoked_key_exits_3(sandbox: Sandbox, tmp_path: Path) -> None:
    """A revoked key: exit 3, a message about the key, and the key itself never printed."""
    cfg = _config(tmp_path, sandbox)
    sandbox.faults.update(revoked=True)
    result = run_cli("check", "-c", str(cfg), api_key=sandbox.api_key)
    assert result.returncode == 3
    assert "✗ api key" in result.stdout
    assert "$FLORA_API_KEY" in result.stdout
    assert sandbox.api_key not in result.stdout + result.stderr


def test_check_forbidden_project_exits_2(sandbox: Sandbox, tmp_path: Path) -> None:
    """A project the key may not use is named by its config key; the other checks still run."""
    cfg = _config(tmp_path, sandbox)
    sandbox.faults.update(forbidden_projects=[sandbox.project_ids[1]])
    result = run_cli("check", "-c", str(cfg), api_key=sandbox.api_key)
    assert result.returncode == 2
    assert (
        f"✗ project: folders[1].project_id: {sandbox.project_ids[1]} is forbidden" in result.stdout
    )
    assert f"✓ project: {sandbox.project_ids[0]}" in result.stdout


def test_check_unknown_project_and_wrong_workspace(sandbox: Sandbox, tmp_path: Path) -> None:
    """An unknown project id exits 2; a workspace the key cannot see exits 3."""
    folder = tmp_path / "f"
    folder.mkdir()
    cfg = write_config(
        tmp_path / "a.yaml",
        base_url=sandbox.base_url,
        workspace_id=sandbox.workspace_id,
        folders=[{"path": str(folder), "project_id": "prj_nope"}],
    )
    result = run_cli("check", "-c", str(cfg), api_key=sandbox.api_key)
    assert result.returncode == 2
    assert "folders[0].project_id: prj_nope is not found" in result.stdout
    cfg = write_config(
        tmp_path / "b.yaml",
        base_url=sandbox.base_url,
        workspace_id="ws_other",
        folders=[{"path": str(folder), "project_id": sandbox.project_ids[0]}],
    )
    result = run_cli("check", "-c", str(cfg), api_key=sandbox.api_key)
    assert result.returncode == 3
    assert "workspace_id: ws_other is not accessible" in result.stdout


def test_check_missing_key_exits_2(sandbox: Sandbox, tmp_path: Path) -> None:
    """No key in the environment: exit 2 naming api.api_key_env."""
    cfg = _config(tmp_path, sandbox)
    result = run_cli("check", "-c", str(cfg))
    assert result.returncode == 2
    assert "api.api_key_env" in result.stdout


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"workers": 0}, "workers"),
        ({"wokers": 3}, "wokers"),
        ({"workspace_id": "proj_1"}, "workspace_id"),
        ({"settle_seconds": -1}, "settle_seconds"),
        ({"api": {"base_url": "http://flora.example/api/v1"}}, "api.base_url"),
    ],
)
@pytest.mark.parametrize("command", ["check", "run", "status", "projects"])
def test_bad_config_exits_2_without_traceback(
    sandbox: Sandbox, tmp_path: Path, patch: dict[str, object], key: str, command: str
) -> None:
    """Every command refuses a bad config with exit 2, a message naming the key, no traceback."""
    cfg = _config(tmp_path, sandbox, **patch)
    args = [command, "-c", str(cfg)] + (["--scan"] if command == "run" else [])
    result = run_cli(*args, api_key=sandbox.api_key)
    assert result.returncode == 2, result.stdout + result.stderr
    assert key in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """--debug is the only way to see a traceback."""
    result = run_cli("--debug", "status", "-c", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    plain = run_cli("status", "-c", str(tmp_path / "missing.yaml"))
    assert "Traceback" not in plain.stderr
    assert "missing.yaml" in plain.stderr


def test_projects_json(sandbox: Sandbox, tmp_path: Path) -> None:
    """`projects --json` lists every project with whether a folder maps it."""
    cfg = _config(tmp_path, sandbox)
    extra = sandbox.add_project("Unmapped")
    result = run_cli("projects", "-c", str(cfg), "--json", api_key=sandbox.api_key)
    assert result.returncode == 0, result.stderr
    rows = {p["project_id"]: p for p in json.loads(result.stdout)["projects"]}
    assert rows[extra]["mapped"] is False
    assert rows[sandbox.project_ids[0]]["mapped"] is True
    table = run_cli("projects", "-c", str(cfg), api_key=sandbox.api_key)
    assert "Unmapped" in table.stdout


def test_config_discovery_from_env(sandbox: Sandbox, tmp_path: Path) -> None:
    """Without -c, $FLORASYNC_CONFIG names the config."""
    cfg = _config(tmp_path, sandbox)
    result = run_cli("check", api_key=sandbox.api_key, env={"FLORASYNC_CONFIG": str(cfg)})
    assert result.returncode == 0, result.stdout
