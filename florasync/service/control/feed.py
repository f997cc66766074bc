"""What the control page shows live (issue 16): uploads in flight, the last synced files, and
files and bytes per minute over the last hour.

Owns that in-memory record, fed by the pipeline (it is its ``JobObserver``: a job starts and ends
on one worker thread, and the bytes that thread sends are that job's) and a change counter the
event stream waits on. Nothing here survives a restart: the journal has the lasting facts.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from florasync.sync.outcomes import SYNCED
from florasync.sync.transfer import Job, Outcome, Result

RECENT_SYNCED = 100
MINUTES = 60


@dataclass
class _InFlight:
    path: str
    project_id: str
    size_bytes: int
    started_at: float
    sent_bytes: int = 0


class Feed:
    """Thread-safe; every change bumps ``version`` and wakes ``wait_change``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._running: dict[int, _InFlight] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_SYNCED)
        self._minutes: dict[int, list[int]] = {}  # minute -> [files, bytes]
        self.version = 0

    # -- the pipeline's JobObserver ------------------------------------------------------------

    def started(self, job: Job) -> None:
        entry = _InFlight(job.path, job.project_id, job.size_bytes, self._clock())
        with self._cond:
            self._running[threading.get_ident()] = entry
            self._bump()

    def sent(self, size_bytes: int) -> None:
        with self._cond:
            entry = self._running.get(threading.get_ident())
            if entry is not None:
                entry.sent_bytes = min(entry.size_bytes, entry.sent_bytes + size_bytes)
                self._bump()

    def ended(self, job: Job, result: Result | None) -> None:
        now = self._clock()
        with self._cond:
            self._running.pop(threading.get_ident(), None)
            if result is not None and result.outcome in SYNCED:
                self._synced(job, result, now)
            self._bump()

    def changed(self) -> None:
        """Something else the page shows changed (a pause, an event)."""
        with self._cond:
            self._bump()

    # -- reading ------------------------------------------------------------------------------

    def wait_change(self, seen: int, timeout: float) -> int:
        """The version once it differs from ``seen``, or after ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen, timeout)
            return self.version

    def transfers(self) -> list[dict[str, Any]]:
        with self._cond:
            running = sorted(self._running.values(), key=lambda e: e.started_at)
            return [
                {
                    "path": e.path,
                    "project_id": e.project_id,
                    "size_bytes": e.size_bytes,
                    "sent_bytes": e.sent_bytes,
                    "started_at": e.started_at,
                }
                for e in running
            ]

    def recent(self, limit: int) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._recent)[:limit]

    def throughput(self) -> list[dict[str, Any]]:
        """The last ``MINUTES`` minutes, oldest first: files synced and bytes uploaded."""
        this_minute = int(self._clock() // 60)
        with self._cond:
            counts = {m: list(c) for m, c in self._minutes.items()}
        return [
            {
                "at": minute * 60.0,
                "files": counts.get(minute, [0, 0])[0],
                "bytes": counts.get(minute, [0, 0])[1],
            }
            for minute in range(this_minute - MINUTES + 1, this_minute + 1)
        ]

    # -- helpers ------------------------------------------------------------------------------

    def _synced(self, job: Job, result: Result, now: float) -> None:
        uploaded = job.size_bytes if result.outcome == Outcome.UPLOADED else 0
        self._recent.appendleft(
            {
                "path": job.path,
                "project_id": job.project_id,
                "asset_id": result.asset_id,
                "outcome": str(result.outcome),
                "size_bytes": job.size_bytes,
                "at": now,
            }
        )
        minute = int(now // 60)
        counts = self._minutes.setdefault(minute, [0, 0])
        counts[0] += 1
        counts[1] += uploaded
        for old in [m for m in self._minutes if m <= minute - MINUTES]:
            del self._minutes[old]

    def _bump(self) -> None:
        self.version += 1
        self._cond.notify_all()
