"""The control API's answers (issue 16): status, files by state, events, the live snapshot.

Owns the JSON shapes of docs/control.md (keys are only ever added) and the reads behind them:
the running daemon's own state through ``Source``, the journal's counts (read at most every
``COUNTS_SECONDS``, so a page that follows the stream costs the journal little).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from florasync import __version__, errors
from florasync.config.runtime import Runtime
from florasync.service.control.feed import Feed
from florasync.service.steering import Steering
from florasync.state.journal.store import Journal
from florasync.sync.pipeline import Pipeline

API_VERSION = 1
COUNTS_SECONDS = 2.0
STATES = ("synced", "pending", "failed", "skipped", "removed")
SNAPSHOT_FILES = 20
SNAPSHOT_FAILURES = 50


class Source(Protocol):
    """What the report reads from the running daemon."""

    rt: Runtime
    feed: Feed
    steering: Steering

    @property
    def journal(self) -> Journal: ...
    @property
    def pipeline(self) -> Pipeline: ...
    def watch_states(self) -> dict[str, str]: ...
    def health(self) -> tuple[bool, str | None]: ...


@dataclass
class _Counts:
    read_at: float
    rows: list[tuple[str, str, str, int]]


class Report:
    """Builds every answer; safe from any thread."""

    def __init__(self, source: Source, clock: Callable[[], float] = time.monotonic) -> None:
        self._src = source
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: _Counts | None = None

    def status(self) -> dict[str, Any]:
        src = self._src
        cfg, pipeline = src.rt.cfg, src.pipeline
        healthy, trouble = src.health()
        folders, totals = self._folders()
        until = src.rt.gate.remaining()
        return {
            "api": API_VERSION,
            "version": __version__,
            "host_id": cfg.host_id,
            "workspace_id": cfg.workspace_id,
            "healthy": healthy,
            "trouble": trouble,
            "paused": src.steering.paused_view(),
            "bandwidth": src.steering.bandwidth_view(),
            "queue": {
                "outstanding": pipeline.outstanding,
                "settling": pipeline.settling,
                "in_flight": pipeline.in_flight,
            },
            "rate_limited_until": iso(time.time() + until) if until > 0 else None,
            "key": "refused" if pipeline.refused is not None else "ok",
            "journal": {
                "backend": "postgresql" if src.journal.backend.shared else "sqlite",
                "down": pipeline.journal_down,
            },
            "folders": folders,
            "totals": totals,
        }

    def failures(self, offset: int, limit: int) -> dict[str, Any]:
        journal, ws = self._src.journal, self._src.rt.cfg.workspace_id
        rows = [r | {"at": iso(r["at"])} for r in journal.failures(ws, limit, offset)]
        total = journal.failure_count(ws)
        return {"files": rows, "offset": offset, "limit": limit, "total": total}

    def synced(self, offset: int, limit: int) -> dict[str, Any]:
        journal, ws = self._src.journal, self._src.rt.cfg.workspace_id
        rows = [
            r | {"at": iso(r["at"]), "asset_url": self.asset_url(r["asset_id"])}
            for r in journal.synced_files(ws, limit, offset)
        ]
        total = journal.synced_count(ws)
        return {"files": rows, "offset": offset, "limit": limit, "total": total}

    def in_state(self, state: str, offset: int, limit: int) -> dict[str, Any]:
        """Pending, skipped (the folder's policy refused them) or removed in FLORA."""
        journal, ws = self._src.journal, self._src.rt.cfg.workspace_id
        rows, total = journal.files_in_state(ws, state, limit, offset)
        files = [r | {"at": iso(r["at"])} for r in rows]
        return {"files": files, "offset": offset, "limit": limit, "total": total}

    def events(self, limit: int) -> list[dict[str, Any]]:
        return [e | {"at": iso(e["at"])} for e in self._src.journal.recent_events(limit)]

    def transfers(self) -> list[dict[str, Any]]:
        return [t | {"started_at": iso(t["started_at"])} for t in self._src.feed.transfers()]

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return [
            r | {"at": iso(r["at"]), "asset_url": self.asset_url(r["asset_id"])}
            for r in self._src.feed.recent(limit)
        ]

    def throughput(self) -> list[dict[str, Any]]:
        return [m | {"at": iso(m["at"])} for m in self._src.feed.throughput()]

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, in one event of the stream."""
        snap: dict[str, Any] = {
            "status": self.status(),
            "transfers": self.transfers(),
            "recent": self.recent(SNAPSHOT_FILES),
            "throughput": self.throughput(),
            "failures": [],
            "events": [],
        }
        try:
            snap["failures"] = self.failures(0, SNAPSHOT_FAILURES)["files"]
            snap["events"] = self.events(SNAPSHOT_FILES)
            if not snap["recent"]:  # just started: what the journal remembers
                snap["recent"] = self.synced(0, SNAPSHOT_FILES)["files"]
        except errors.JournalError:
            pass  # status says the journal is down
        return snap

    def asset_url(self, asset_id: str | None) -> str | None:
        if not asset_id:
            return None
        return f"{self._src.rt.cfg.api.base_url.rstrip('/')}/assets/{asset_id}"

    def _folders(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        src = self._src
        watch = src.watch_states()
        by_folder: dict[tuple[str, str], dict[str, Any]] = {}
        for folder in src.rt.cfg.folders:
            key = (str(folder.path), folder.project_id or "")
            by_folder[key] = _folder_row(str(folder.path), folder.project_id, watch)
            if folder.project is not None:
                by_folder[key]["project"] = folder.project.name
        totals = dict.fromkeys(STATES, 0)
        for folder_path, project_id, state, count in self._count_rows():
            row = by_folder.get((folder_path, project_id))
            if row is None:
                row = by_folder.get((folder_path, ""))
                if row is None or row["project_id"] or any(row[s] for s in STATES):
                    row = _folder_row(folder_path, project_id or None, watch)
                    by_folder[(folder_path, project_id)] = row
                else:
                    row["project_id"] = project_id or None
            row[state] += count
            totals[state] += count
        return list(by_folder.values()), totals

    def _count_rows(self) -> list[tuple[str, str, str, int]]:
        with self._lock:
            now = self._clock()
            if self._counts is None or now - self._counts.read_at >= COUNTS_SECONDS:
                try:
                    rows = self._src.journal.file_counts(self._src.rt.cfg.workspace_id)
                except errors.JournalError:
                    rows = self._counts.rows if self._counts else []
                self._counts = _Counts(now, rows)
            return self._counts.rows


def _folder_row(path: str, project_id: str | None, watch: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {"path": path, "project_id": project_id, "project": None}
    row["watch"] = watch.get(path, "missing")
    return row | dict.fromkeys(STATES, 0)


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()
