"""What clients did: the request log, the violations, and the Retry-After windows behind them.

Owns ``state()["requests"]`` and ``state()["violations"]`` (docs/design.md): every request with
its route, status and headers of interest, and each thing a well-behaved client never does.
Its own lock; not persisted. Knows nothing of HTTP beyond the fields it records.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GRACE_SECONDS = 0.1
"""Requests already in flight when a 429 was sent may still arrive this long after it."""


@dataclass(slots=True)
class Entry:
    """One request as the request log shows it; ``t`` is its monotonic arrival time."""

    seq: int
    t: float
    method: str
    route: str | None
    path: str
    status: int | None
    dropped: bool
    idempotency_key: str | None
    authorization: bool
    replayed: bool
    malformed: str | None


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    detail: str
    seq: int | None


class Traffic:
    """The request log and the violations; safe to use from every handler thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._violations: list[Violation] = []
        self._windows: dict[str, list[tuple[float, float]]] = {}

    def begin(
        self,
        *,
        method: str,
        route: str | None,
        path: str,
        arrived: float,
        idempotency_key: str | None,
        authorization: bool,
        identity: str | None,
        latency_seconds: float,
    ) -> int:
        """Log an arriving request and check it against the Retry-After windows; its seq."""
        with self._lock:
            seq = len(self._entries) + 1
            entry = Entry(
                seq,
                arrived,
                method,
                route,
                path,
                None,
                False,
                idempotency_key,
                authorization,
                False,
                None,
            )
            self._entries.append(entry)
        if identity is not None:
            self._check_window(identity, entry, GRACE_SECONDS + 2 * latency_seconds)
        return seq

    def finish(
        self,
        seq: int,
        status: int | None,
        *,
        dropped: bool = False,
        replayed: bool,
        malformed: str | None = None,
    ) -> None:
        """Record how a request ended: the status sent (of the ``malformed`` answer, if one
        replaced the real one), or ``dropped`` with no answer."""
        with self._lock:
            entry = self._entries[seq - 1]
            entry.status = None if dropped else status
            entry.dropped = dropped
            entry.replayed = replayed
            entry.malformed = malformed

    def announce_window(self, identity: str, seconds: float) -> None:
        """A 429 told ``identity`` to wait ``seconds`` from now (remember when that ends)."""
        now = self._clock()
        with self._lock:
            windows = [w for w in self._windows.get(identity, []) if w[1] > now]
            windows.append((now, now + seconds))
            self._windows[identity] = windows

    def violation(self, kind: str, detail: str, seq: int | None = None) -> None:
        with self._lock:
            self._violations.append(Violation(kind, detail, seq))

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dataclasses.asdict(e) for e in self._entries]

    def violations(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dataclasses.asdict(v) for v in self._violations]

    def _check_window(self, identity: str, entry: Entry, grace: float) -> None:
        """Flag ``entry`` if it arrived inside a window announced to ``identity`` (rate_window)."""
        with self._lock:
            windows = list(self._windows.get(identity, []))
        for start, end in windows:
            if start + grace < entry.t < end:
                where = entry.route or f"{entry.method} {entry.path}"
                detail = (
                    f"{where} arrived {entry.t - start:.3f}s after a 429 "
                    f"that asked to wait {end - start:.0f}s"
                )
                self.violation("rate_window", detail, entry.seq)
                return
