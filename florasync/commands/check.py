"""``florasync check``: validate config, key, workspace, every mapped project and folder.

Owns the check list and its one-line-per-check report. Changes nothing anywhere: no journal
is created, no mutating request is sent. A project mapped by name (and each subfolder of a
``projects_from_subfolders`` folder) is looked up: found, ambiguous, or would be created.
On a PostgreSQL journal: this host's ``host_id``, the hosts alive in its fleet (read without
joining it), and each folder's id (issue 14).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from florasync import errors
from florasync.config import config, runtime
from florasync.errors import ExitCode
from florasync.flora import api
from florasync.local import scanner
from florasync.local.placement import NO_PROJECT, Target, Unplaced, own_target, subfolder_targets
from florasync.local.rules import FolderRules
from florasync.state.journal import opening
from florasync.sync import projects

if TYPE_CHECKING:
    from florasync.state.journal.postgres import PostgresBackend


def _marks() -> tuple[str, str]:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ("ok  ", "FAIL")
    return ("✓", "✗")


@dataclass
class Report:
    """The lines printed so far and the worst exit code seen."""

    code: ExitCode = ExitCode.OK
    marks: tuple[str, str] = field(default_factory=_marks)

    def ok(self, what: str, detail: str) -> None:
        print(f"{self.marks[0]} {what}: {detail}")

    def fail(self, what: str, detail: str, code: ExitCode) -> None:
        print(f"{self.marks[1]} {what}: {detail}")
        self.code = max(self.code, code)


def run_from_args(args: argparse.Namespace) -> ExitCode:
    return check(config_path=args.config)


def check(*, config_path: str | None) -> ExitCode:
    """Run every check, print one line each, and return the most severe exit code."""
    report = Report()
    try:
        rt = runtime.load(config_path)
    except errors.ConfigError as exc:
        report.fail("config", str(exc), exc.exit_code)
        return report.code
    report.ok("config", f"{rt.path} ({len(rt.cfg.folders)} folder(s))")
    _check_folders(rt.cfg, report)
    _check_state_dir(rt.cfg.state_dir, report)
    _check_journal(rt, report)
    try:
        client = rt.client()
    except errors.ConfigError as exc:
        report.fail("api key", str(exc), exc.exit_code)
        return report.code
    with client:
        if _check_workspace(client, rt.cfg, report):
            _check_projects(client, rt.cfg, report)
    return report.code


def _check_folders(cfg: config.Config, report: Report) -> None:
    for index, folder in enumerate(cfg.folders):
        try:
            config.check_folder(cfg, index)
        except errors.ConfigError as exc:
            report.fail("folder", str(exc), exc.exit_code)
        else:
            report.ok("folder", f"folders[{index}] {folder.path} is readable")


def _check_state_dir(state_dir: Path, report: Report) -> None:
    existing = next((p for p in (state_dir, *state_dir.parents) if p.exists()), None)
    if existing is not None and os.access(existing, os.W_OK | os.X_OK):
        created = "" if existing == state_dir else " (will be created)"
        report.ok("state dir", f"{state_dir}{created}")
    else:
        report.fail("state dir", f"state_dir: {state_dir} is not writable", ExitCode.USAGE)


def _check_journal(rt: runtime.Runtime, report: Report) -> None:
    """A PostgreSQL journal is reachable (nothing is created: the first run migrates it)."""
    if rt.cfg.journal is None:
        return
    try:
        url = opening.database_url(rt.cfg, rt.env)
        assert url is not None  # noqa: S101 -- journal is configured
        from florasync.state.journal import postgres  # psycopg only when it is configured

        backend = postgres.PostgresBackend(url)
        report.ok("journal", f"{backend.where}: {backend.probe()}")
    except errors.FlorasyncError as exc:
        report.fail("journal", str(exc), exc.exit_code)
        return
    _check_fleet(rt.cfg, backend, report)


def _check_fleet(cfg: config.Config, backend: PostgresBackend, report: Report) -> None:
    """This host's id and the hosts alive in the fleet (read-only), then each folder's id:
    a folder shared by several hosts needs one id on all of them."""
    from florasync.state.journal import fleet

    try:
        hosts = fleet.read_overview(backend)["hosts"]
    except (errors.JournalError, backend.error) as exc:
        report.fail("fleet", f"cannot read the fleet in {backend.where}: {exc}", ExitCode.USAGE)
        return
    alive = sum(1 for h in hosts if h["alive"])
    report.ok("host", f"this host is {cfg.host_id}; {alive} of {len(hosts)} known host(s) alive")
    for index, folder in enumerate(cfg.folders):
        derived = f" (from its path: hosts mounting it elsewhere need folders[{index}].id)"
        report.ok("folder id", f"{folder.folder_id} <- {folder.path}{'' if folder.id else derived}")


def _check_workspace(client: api.FloraClient, cfg: config.Config, report: Report) -> bool:
    try:
        workspaces = client.list_workspaces()
    except errors.CredentialsError as exc:
        key_source = cfg.api.api_key_file or f"${cfg.api.api_key_env}"
        report.fail(
            "api key",
            f"refused by {client.base_url} ({exc}); check {key_source}",
            ExitCode.CREDENTIALS,
        )
        return False
    except errors.ApiError as exc:
        report.fail("api", f"cannot use {client.base_url}: {exc}", ExitCode.FAILED)
        return False
    report.ok("api key", f"accepted by {client.base_url}")
    match = [w for w in workspaces if w.workspace_id == cfg.workspace_id]
    if not match:
        known = ", ".join(w.workspace_id for w in workspaces) or "none"
        report.fail(
            "workspace",
            f"workspace_id: {cfg.workspace_id} is not accessible with this "
            f"key (accessible: {known})",
            ExitCode.CREDENTIALS,
        )
        return False
    report.ok("workspace", f"{cfg.workspace_id} {match[0].name!r}")
    return True


def _check_projects(client: api.FloraClient, cfg: config.Config, report: Report) -> None:
    for index, folder in enumerate(cfg.folders):
        try:
            if folder.project_id is not None:
                _check_project_id(client, cfg, index, report)
            elif folder.project is not None:
                key = f"folders[{index}].project.name"
                _check_name(
                    client, cfg, report, key=key, target=own_target(folder), path=folder.path
                )
            if folder.projects_from_subfolders is not None:
                _check_subfolders(client, cfg, index, report)
        except errors.CredentialsError as exc:
            report.fail("project", f"folders[{index}]: key refused ({exc})", ExitCode.CREDENTIALS)
            return


def _check_project_id(
    client: api.FloraClient, cfg: config.Config, index: int, report: Report
) -> None:
    folder, key = cfg.folders[index], f"folders[{index}].project_id"
    try:
        project = client.get_project(folder.project_id or "")
    except (errors.NotFoundError, errors.ForbiddenError) as exc:
        why = "not found" if isinstance(exc, errors.NotFoundError) else "forbidden"
        report.fail(
            "project",
            f"{key}: {folder.project_id} is {why} for this key ({exc.code})",
            ExitCode.USAGE,
        )
        return
    if project.workspace_id not in (None, cfg.workspace_id):
        other = project.workspace_id
        report.fail(
            "project",
            f"{key}: {folder.project_id} belongs to workspace {other}, not {cfg.workspace_id}",
            ExitCode.USAGE,
        )
        return
    report.ok("project", f"{folder.project_id} {project.name!r} <- {folder.path}")


def _check_subfolders(
    client: api.FloraClient, cfg: config.Config, index: int, report: Report
) -> None:
    """One line per subfolder: the project it is, or that it would be created (never made)."""
    folder = cfg.folders[index]
    assert folder.projects_from_subfolders is not None  # noqa: S101 -- checked by the caller
    rules = FolderRules(tuple(folder.include), tuple(folder.exclude))
    dirnames = scanner.subdirectories(folder.path)
    key = f"folders[{index}].projects_from_subfolders"
    seen = 0
    for dirname, target in subfolder_targets(folder, rules, dirnames):
        if isinstance(target, Unplaced):
            if target.code != NO_PROJECT:  # hidden and ignored directories are no projects
                where = folder.path / dirname
                report.fail("project", f"{key}: {where}: {target.message}", ExitCode.USAGE)
            continue
        seen += 1
        _check_name(client, cfg, report, key=key, target=target, path=folder.path / dirname)
    if not seen:
        report.ok("projects", f"{folder.path} has no subfolders yet; each one will be a project")


def _check_name(
    client: api.FloraClient,
    cfg: config.Config,
    report: Report,
    *,
    key: str,
    target: Target | None,
    path: Path,
) -> None:
    """Whether the project of ``target``'s name exists, is ambiguous, or would be created."""
    if target is None or target.name is None:
        return
    name = target.name
    try:
        found = projects.find_by_name(client, cfg.workspace_id, name)
    except errors.CredentialsError:
        raise
    except errors.ApiError as exc:
        report.fail("project", f"{key}: cannot look up {name!r}: {exc}", ExitCode.FAILED)
        return
    if len(found) > 1:
        problem = projects.ambiguous(name, (p.project_id for p in found))
        report.fail("project", f"{key}: {problem}", ExitCode.USAGE)
    elif found:
        report.ok("project", f"{name!r} is {found[0].project_id} <- {path}")
    elif target.create:
        report.ok("project", f"{name!r} would be created when its first file arrives <- {path}")
    else:
        report.fail("project", f"{key}: {projects.missing(name)}", ExitCode.USAGE)
