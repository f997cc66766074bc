"""``florasync status``: what the journal knows, per folder and project, and recent failures.

A folder whose projects come from names shows one row per project it feeds, with the name.

Owns the human and JSON renderings. The JSON schema is stable (docs/status.md): keys are only
ever added. Reads the journal while a ``run`` is going (WAL readers do not block writers).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from florasync.config import config, runtime
from florasync.errors import ExitCode
from florasync.state import runlock
from florasync.state.journal import opening, store

SCHEMA_VERSION = 1


def run_from_args(args: argparse.Namespace) -> ExitCode:
    return status(config_path=args.config, as_json=args.json, failures=args.failures)


def status(*, config_path: str | None, as_json: bool, failures: int = 20) -> ExitCode:
    rt = runtime.load(config_path)
    report = collect(rt, failures)
    print(json.dumps(report, indent=2) if as_json else render(report))
    return ExitCode.OK


def collect(rt: runtime.Runtime, failures: int) -> dict[str, Any]:
    """The status report as plain data (the ``--json`` schema)."""
    cfg = rt.cfg
    pid = runlock.running_pid(cfg.state_dir)
    report: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "config": str(rt.path),
        "state_dir": str(cfg.state_dir),
        "journal": None,
        "workspace_id": cfg.workspace_id,
        "running": {"pid": pid} if pid else None,
        "folders": [_configured_row(f) for f in cfg.folders],
        "assets": {},
        "links": {},
        "failures": [],
        "events": [],
    }
    if not opening.journal_exists(cfg, rt.env):
        return report
    j = opening.open_journal(cfg, rt.env)
    report["journal"] = j.path
    try:
        _fill(report, j, cfg.workspace_id, failures)
    finally:
        j.close()
    return report


def _fill(report: dict[str, Any], j: store.Journal, workspace_id: str, limit: int) -> None:
    by_name = j.project_names(workspace_id)  # read once for every row
    names = {row.project_id: name for name, row in by_name.items()}
    configured = {f["path"] for f in report["folders"]}
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    for f in report["folders"]:
        known = by_name.get(f["project"]) if f.get("project") else None
        f["project_id"] = f["project_id"] or (known.project_id if known else None)
        rows[(f["path"], f["project_id"])] = f
    for folder, project_id, state, count in j.file_counts(workspace_id):
        row = rows.get((folder, project_id or None))
        if row is None:  # a project by subfolder, or a folder no longer in the config
            row = _folder_row(folder, project_id or None, configured=folder in configured)
            rows[(folder, project_id or None)] = row
            report["folders"].append(row)
        row["project"] = row.get("project") or names.get(project_id)
        row[state] += count
    report["folders"] = [f for f in report["folders"] if not _is_empty_placeholder(f, rows)]
    steps = j.step_counts(workspace_id)
    report["assets"], report["links"] = steps["assets"], steps["links"]
    report["failures"] = [
        failure | {"at": _iso(failure["at"])} for failure in j.failures(workspace_id, limit)
    ]
    report["events"] = [event | {"at": _iso(event["at"])} for event in j.recent_events(limit)]


def _is_empty_placeholder(row: dict[str, Any], rows: dict[Any, dict[str, Any]]) -> bool:
    """A subfolders folder's own row, once rows per project of it exist."""
    if not row.get("projects_from_subfolders") or row["project_id"] or row.get("project"):
        return False
    return any(r is not row and r["path"] == row["path"] for r in rows.values())


def _configured_row(folder: config.FolderConfig) -> dict[str, Any]:
    row = _folder_row(str(folder.path), folder.project_id)
    row["project"] = folder.project.name if folder.project else None
    row["projects_from_subfolders"] = folder.projects_from_subfolders is not None
    return row


def _folder_row(path: str, project_id: str | None, *, configured: bool = True) -> dict[str, Any]:
    return {
        "path": path,
        "project_id": project_id,
        "project": None,
        "configured": configured,
        "synced": 0,
        "pending": 0,
        "failed": 0,
        "skipped": 0,
    }


def render(report: dict[str, Any]) -> str:
    """The human rendering of ``collect``'s report."""
    running = report["running"]
    lines = [
        f"config:    {report['config']}",
        f"journal:   {report['journal'] or report['state_dir']}",
        f"running:   {'pid ' + str(running['pid']) if running else 'no'}",
    ]
    for f in report["folders"]:
        gone = "" if f["configured"] else "  (no longer configured)"
        lines.append(
            f"folder:    {f['path']} -> {_project_shown(f)}: {f['synced']} synced, "
            f"{f['pending']} pending, {f['failed']} failed{_skipped(f)}{gone}"
        )
    if report["assets"]:
        lines.append("assets:    " + _counts(report["assets"]))
        lines.append("attached:  " + _counts(report["links"]))
    if report["events"]:
        lines.append("watcher events (newest first):")
        for e in report["events"]:
            where = f"{e['folder']}: " if e["folder"] else ""
            lines.append(f"  {e['at']}  {where}{e['message']} ({e['kind']})")
    if report["failures"]:
        lines.append("recent failures (newest first):")
        for f in report["failures"]:
            kind = "" if f["permanent"] else " [retrying]"
            lines.append(f"  {f['at']}  {f['path']}: {f['message']} ({f['code']}){kind}")
    return "\n".join(lines)


def _skipped(folder: dict[str, Any]) -> str:
    return f", {folder['skipped']} skipped" if folder["skipped"] else ""


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "none"


def _iso(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _project_shown(row: dict[str, Any]) -> str:
    """``prj_X``, ``prj_X 'Name'``, ``'Name' (not created yet)`` or the subfolder rule."""
    pid, name = row["project_id"], row.get("project")
    if pid and name:
        return f"{pid} {name!r}"
    if name:
        return f"{name!r} (not found or created yet)"
    if pid:
        return str(pid)
    if row.get("projects_from_subfolders"):
        return "a project per subfolder"
    return "(no project)"
