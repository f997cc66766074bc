"""``florasync status``: what the journal knows, per folder and project, and recent failures.

A folder whose projects come from names shows one row per project it feeds, with the name.
On a PostgreSQL journal it also shows the fleet (issue 14): each host, alive or not, with its
claims and counts, and the claims waiting for a takeover; read without joining the fleet.

Owns the human and JSON renderings. The JSON schema is stable (docs/status.md): keys are only
ever added. Reads the journal while a ``run`` is going (WAL readers do not block writers).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from florasync import errors
from florasync.config import config, runtime
from florasync.errors import ExitCode
from florasync.state import pause, runlock
from florasync.state.journal import opening, store

SCHEMA_VERSION = 1


def run_from_args(args: argparse.Namespace) -> ExitCode:
    if args.watch:
        return watch(config_path=args.config)
    return status(config_path=args.config, as_json=args.json, failures=args.failures)


def status(*, config_path: str | None, as_json: bool, failures: int = 20) -> ExitCode:
    """Print the report; a journal that cannot be read still gets what is known without it,
    then its error goes to ``cli`` (one line on stderr, exit 2) as before.

    Raises:
        errors.JournalError: the journal (its database) cannot be opened or read.
    """
    rt = runtime.load(config_path)
    report = collect(rt, failures)
    print(json.dumps(report, indent=2) if as_json else render(report))
    if report["journal_error"] is not None:
        raise errors.JournalError(report["journal_error"])
    return ExitCode.OK


def collect(rt: runtime.Runtime, failures: int) -> dict[str, Any]:
    """The status report as plain data (the ``--json`` schema); ``journal_error`` says why the
    journal's part is missing."""
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
        "fleet": None,
        "journal_error": None,
    }
    _control(report, rt)
    if not opening.journal_exists(cfg, rt.env):
        return report
    try:
        _read_journal(report, rt, failures)
    except errors.JournalError as exc:
        report["journal_error"] = str(exc)
    return report


def _control(report: dict[str, Any], rt: runtime.Runtime) -> None:
    """The pause, the limit in force and the control page (issue 16): from the daemon when
    it listens, else the pause on record."""
    from florasync.service.control import access
    from florasync.service.control.client import Client, ControlError

    cfg = rt.cfg
    record = pause.read(cfg.state_dir)
    if record is not None and not record.in_force(time.time()):
        record = None
    report["paused"] = {
        "paused": record is not None,
        "until": _iso(record.until) if record else None,
        "reason": record.reason if record else None,
        "by": record.by if record else None,
    }
    report["bandwidth"] = None
    report["control"] = None
    if cfg.control is None:
        return
    token_file = access.token_path(cfg.state_dir)
    report["control"] = {
        "url": None,
        "token": access.read_token(cfg.state_dir),
        "token_file": str(token_file),
    }
    client = Client.find(cfg.state_dir, cafile=cfg.control.tls.cert if cfg.control.tls else None)
    if client is None:
        return
    report["control"]["url"] = client.url + "/"
    try:
        live = client.get("status")
    except ControlError:
        return
    report["paused"], report["bandwidth"] = live["paused"], live["bandwidth"]


def watch(*, config_path: str | None, interval_seconds: float = 1.0) -> ExitCode:
    """``status --watch``: the running daemon's view, redrawn every second until Ctrl-C."""
    from florasync.service.control.client import Client, ControlError

    rt = runtime.load(config_path)
    cafile = rt.cfg.control.tls.cert if rt.cfg.control and rt.cfg.control.tls else None
    try:
        while True:
            client = Client.find(rt.cfg.state_dir, cafile=cafile)
            if client is None:
                text = render(collect(rt, 5)) + "\n(no daemon serves a control API: "
                text += "add control: {listen: 127.0.0.1:8385} to follow it live)"
            else:
                try:
                    text = render_live(client.get("status"), client.get("transfers"))
                except ControlError as exc:
                    text = str(exc)
            print("\033[H\033[2J" + text, flush=True)
            time.sleep(interval_seconds)
    except KeyboardInterrupt:
        return ExitCode.OK


def render_live(live: dict[str, Any], transfers: dict[str, Any]) -> str:
    """One screen of ``status --watch``."""
    paused = live["paused"]
    state = "syncing"
    if paused["paused"]:
        state = f"PAUSED ({paused['reason']}, by {paused['by']})"
    elif live["key"] == "refused":
        state = "waiting: FLORA refused the API key"
    elif live["journal"]["down"]:
        state = f"waiting for the journal: {live['journal']['down']}"
    queue = live["queue"]
    lines = [
        f"florasync {live['version']} on {live['host_id']}: {state}",
        f"queue:     {queue['outstanding']} outstanding, {queue['settling']} settling, "
        f"{queue['in_flight']} in flight",
        f"bandwidth: {_bandwidth_text(live['bandwidth'])}",
    ]
    for f in live["folders"]:
        lines.append(
            f"folder:    {f['path']} ({f['watch']}): {f['synced']} synced, {f['pending']} "
            f"pending, {f['failed']} failed"
        )
    for t in transfers["transfers"]:
        done = t["sent_bytes"] / t["size_bytes"] if t["size_bytes"] else 1.0
        lines.append(f"  {done:6.1%}  {t['path']} ({t['size_bytes']} bytes)")
    return "\n".join(lines)


def _bandwidth_text(bandwidth: dict[str, Any] | None) -> str:
    if bandwidth is None:
        return "unknown"
    text = f"{bandwidth['limit'] or 'no limit'} ({bandwidth['source']})"
    change = bandwidth.get("next_change")
    if change:
        text += f"; {change['limit']} from {change['at']}"
    return text


def _read_journal(report: dict[str, Any], rt: runtime.Runtime, failures: int) -> None:
    j = opening.open_journal(rt.cfg, rt.env)
    report["journal"] = j.path
    try:
        _fill(report, j, rt.cfg.workspace_id, failures)
        if j.backend.shared:
            report["fleet"] = _fleet(j.backend, rt.cfg.host_id)
    finally:
        j.close()


def _fleet(backend: Any, host_id: str) -> dict[str, Any]:
    """The fleet sharing the journal database, as ``--json`` shows it (ages in seconds)."""
    from florasync.state.journal import fleet  # psycopg only when PostgreSQL is configured

    overview = fleet.read_overview(backend)
    hosts = []
    for host in overview["hosts"]:
        age = host.pop("heartbeat_age")
        hosts.append(
            host | {"heartbeat_age_seconds": _seconds(age), "this_host": host["host_id"] == host_id}
        )
    return {
        "host_id": host_id,
        "hosts": hosts,
        "stale_claims": overview["stale_claims"],
        "oldest_stale_claim_age_seconds": _seconds(overview["oldest_stale_claim_age"]),
    }


def _seconds(age: float | None) -> float | None:
    return None if age is None else round(max(age, 0.0), 1)


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
        "removed": 0,
    }


def render(report: dict[str, Any]) -> str:
    """The human rendering of ``collect``'s report."""
    running = report["running"]
    lines = [
        f"config:    {report['config']}",
        f"journal:   {report['journal'] or report['state_dir']}",
        f"running:   {'pid ' + str(running['pid']) if running else 'no'}",
    ]
    lines.extend(_control_lines(report))
    if report["journal_error"] is not None:
        lines[1] = f"journal:   cannot be read: {report['journal_error']}"
    for f in report["folders"]:
        lines.append(f"folder:    {f['path']} -> {_project_shown(f)}: {_folder_counts(f, report)}")
    if report["fleet"] is not None:
        lines.extend(_fleet_lines(report["fleet"]))
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


def _control_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    paused = report.get("paused") or {}
    if paused.get("paused"):
        until = f"until {paused['until']}" if paused["until"] else "until resumed"
        lines.append(f"paused:    {until} ({paused['reason']}; by {paused['by']})")
    if report.get("bandwidth") is not None:
        lines.append(f"bandwidth: {_bandwidth_text(report['bandwidth'])}")
    control = report.get("control")
    if control is not None:
        lines.append(f"control:   {control['url'] or 'not listening (the daemon is not running)'}")
        token = control["token"] or "(not made yet: the daemon makes it when it starts)"
        lines.append(f"token:     {token}  (header X-Florasync-Token; {control['token_file']})")
    return lines


def _folder_counts(f: dict[str, Any], report: dict[str, Any]) -> str:
    if report["journal_error"] is not None:
        return "counts unknown (the journal cannot be read)"
    gone = "" if f["configured"] else "  (no longer configured)"
    return f"{f['synced']} synced, {f['pending']} pending, {f['failed']} failed{_skipped(f)}{gone}"


def _fleet_lines(fleet: dict[str, Any]) -> list[str]:
    """The fleet's summary line, then one line per host."""
    hosts = fleet["hosts"]
    alive = sum(1 for h in hosts if h["alive"])
    summary = f"this host is {fleet['host_id']}; {len(hosts)} host(s), {alive} alive"
    stale = fleet["stale_claims"]
    if stale:
        oldest = _age(fleet["oldest_stale_claim_age_seconds"])
        summary += (
            f"; {stale} stale claim(s) held by hosts not alive, the oldest {oldest} old "
            "(waiting for a takeover)"
        )
    else:
        summary += "; no stale claims"
    width = max((len(h["host_id"]) for h in hosts), default=0)
    return [f"fleet:     {summary}", *(_host_line(h, width) for h in hosts)]


def _host_line(host: dict[str, Any], width: int) -> str:
    age = _age(host["heartbeat_age_seconds"])
    if host["alive"] or host["stopped"]:
        state = f"{'alive' if host['alive'] else 'stopped'}, last heartbeat {age} ago"
    else:
        state = f"not heard for {age} (its lease ran out)"
    this = "  (this host)" if host["this_host"] else ""
    return (
        f"  {host['host_id']:<{width}}  {state}: {host['claims']} claim(s), "
        f"{host['uploaded']} uploaded, {host['attached']} attached only, {host['failed']} failed;"
        f" pid {host['pid']} on {host['hostname']}{this}"
    )


def _age(seconds: float | None) -> str:
    """``4.2 s``, ``17 min``, ``3.5 h``: a heartbeat's or a claim's age."""
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _skipped(folder: dict[str, Any]) -> str:
    skipped = f", {folder['skipped']} skipped" if folder["skipped"] else ""
    removed = f", {folder['removed']} removed in FLORA" if folder["removed"] else ""
    return skipped + removed


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
