"""``florasync status``: what the journal knows, per folder and project, and recent failures.

Owns the human and JSON renderings. The JSON schema is stable (docs/status.md): keys are only
ever added. Reads the journal while a ``run`` is going (WAL readers do not block writers).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from florasync.config import runtime
from florasync.errors import ExitCode
from florasync.state import journal, runlock

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
        "workspace_id": cfg.workspace_id,
        "running": {"pid": pid} if pid else None,
        "folders": [_folder_row(str(f.path), f.project_id) for f in cfg.folders],
        "assets": {},
        "links": {},
        "failures": [],
        "events": [],
    }
    if not journal.exists(cfg.state_dir):
        return report
    j = journal.Journal.open(cfg.state_dir)
    try:
        _fill(report, j, cfg.workspace_id, failures)
    finally:
        j.close()
    return report


def _fill(report: dict[str, Any], j: journal.Journal, workspace_id: str, limit: int) -> None:
    rows = {(f["path"], f["project_id"]): f for f in report["folders"]}
    for folder, project_id, state, count in j.file_counts(workspace_id):
        row = rows.get((folder, project_id))
        if row is None:  # a folder no longer in the config
            row = rows[(folder, project_id)] = _folder_row(folder, project_id, configured=False)
            report["folders"].append(row)
        row[state] += count
    steps = j.step_counts(workspace_id)
    report["assets"], report["links"] = steps["assets"], steps["links"]
    report["failures"] = [
        failure | {"at": _iso(failure["at"])} for failure in j.failures(workspace_id, limit)
    ]
    report["events"] = [event | {"at": _iso(event["at"])} for event in j.recent_events(limit)]


def _folder_row(path: str, project_id: str, *, configured: bool = True) -> dict[str, Any]:
    return {
        "path": path,
        "project_id": project_id,
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
        f"journal:   {report['state_dir']}",
        f"running:   {'pid ' + str(running['pid']) if running else 'no'}",
    ]
    for f in report["folders"]:
        gone = "" if f["configured"] else "  (no longer configured)"
        lines.append(
            f"folder:    {f['path']} -> {f['project_id']}: {f['synced']} synced, "
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
