"""How files end: the outcome counts of a run, the failures it lists, one log line per file.

Owns ``Summary`` (what ``run --scan`` prints and its exit code reads), the ``Progress`` protocol
the pipeline reports to (a terminal line, metrics, or nothing), the ``JobObserver`` that sees
each job (the control page), and the per-file log line whose ``fields`` carry the same facts to
JSON logs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from florasync.sync.transfer import Job, Outcome, Result

log = logging.getLogger(__name__)

SYNCED = frozenset({Outcome.UPLOADED, Outcome.ATTACHED, Outcome.UNCHANGED})
MAX_LISTED_FAILURES = 1000


class Progress(Protocol):
    """Where the pipeline reports progress (a terminal bar, metrics, or nothing).

    ``queued`` may be called with negative numbers: a hint that merged into a file already
    counted takes its count back.
    """

    def queued(self, files: int, size_bytes: int) -> None: ...
    def finished(self, outcome: Outcome, size_bytes: int) -> None: ...
    def sent(self, size_bytes: int) -> None: ...


class NoProgress:
    def queued(self, files: int, size_bytes: int) -> None:
        pass

    def finished(self, outcome: Outcome, size_bytes: int) -> None:
        pass

    def sent(self, size_bytes: int) -> None:
        pass


class JobObserver(Protocol):
    """Who watches jobs one by one (the control page): a job starts on a worker thread, the
    bytes that thread sends are that job's, and it ends with a result (None: it was parked or
    stopped, to go on later)."""

    def started(self, job: Job) -> None: ...
    def sent(self, size_bytes: int) -> None: ...
    def ended(self, job: Job, result: Result | None) -> None: ...


class NoObserver:
    def started(self, job: Job) -> None:
        pass

    def sent(self, size_bytes: int) -> None:
        pass

    def ended(self, job: Job, result: Result | None) -> None:
        pass


@dataclass
class Summary:
    """Outcome counts and the failures of this pipeline's life, for ``run --scan``."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # path, code, message
    bytes_uploaded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def failed(self) -> int:
        return self.counts[Outcome.FAILED] + self.counts[Outcome.DEFERRED]

    def synced(self) -> int:
        return sum(self.counts[o] for o in SYNCED)

    def count(self, outcome: Outcome, path: str, result: Result | None, size: int) -> None:
        with self._lock:
            self.counts[outcome] += 1
            if outcome == Outcome.UPLOADED:
                self.bytes_uploaded += size
            failed = outcome in (Outcome.FAILED, Outcome.DEFERRED)
            if failed and result is not None and len(self.failures) < MAX_LISTED_FAILURES:
                self.failures.append((path, result.code or "", result.message or ""))


def log_outcome(job: Job, result: Result, seconds: float) -> None:
    """One line per file; ``fields`` carries the same facts for JSON logs."""
    fields: dict[str, object] = {
        "outcome": str(result.outcome),
        "path": job.path,
        "project_id": job.project_id,
        "asset_id": result.asset_id,
        "bytes": job.size_bytes,
        "duration_s": round(seconds, 3),
    }
    if result.outcome == Outcome.FAILED:
        fields["code"] = result.code
        log.warning(
            "failed %s -> %s: %s (%s)",
            job.path,
            job.project_id,
            result.message,
            result.code,
            extra={"fields": fields},
        )
        return
    # an unchanged file is no news (a rescan re-offers thousands): debug only
    level = logging.DEBUG if result.outcome == Outcome.UNCHANGED else logging.INFO
    log.log(
        level,
        "%s %s -> %s asset=%s bytes=%d in %.2fs",
        result.outcome,
        job.path,
        job.project_id,
        result.asset_id,
        job.size_bytes,
        seconds,
        extra={"fields": fields},
    )
