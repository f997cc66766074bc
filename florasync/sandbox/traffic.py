"""What clients did: the request log, the violations, and the Retry-After windows behind them.

Owns ``state()["requests"]`` and ``state()["violations"]`` (docs/design.md): every request with
its route, status and headers of interest, and each thing a well-behaved client never does;
holds the upload bodies' ``Arrivals`` when asked to record them. Its own lock; not persisted.
Knows nothing of HTTP beyond the fields it records.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from florasync.sandbox.arrivals import Arrivals

GRACE_SECONDS = 0.1
"""Requests already in flight when a 429 was sent may still arrive this long after it; never
the refused request itself sent again (see ``Ask.again``)."""


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
    connection: int | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    """What a request asked for, to recognise it when it is sent again.

    ``exclusive``: a well-behaved client never has two of these in flight at once (a POST
    about one asset, or carrying one Idempotency-Key), so the same one again was sent after
    the first was answered. Otherwise only the same connection proves that (HTTP/1.1), and
    not for a GET: two workers of one pool may read the same path at the same time.
    """

    method: str
    path: str
    idempotency_key: str | None
    connection: int | None
    exclusive: bool

    def again(self, later: Ask) -> bool:
        """Whether ``later`` is this request sent again after its answer was read."""
        same = (self.method, self.path, self.idempotency_key) == (
            later.method,
            later.path,
            later.idempotency_key,
        )
        on_its_connection = self.connection is not None and self.connection == later.connection
        # a GET proves nothing by its connection: a pooled client's other worker may have read
        # the same path, prepared before the 429 was read, on the connection it freed
        resent = on_its_connection and self.method != "GET"
        return same and (self.exclusive or resent)


@dataclass(frozen=True, slots=True)
class Window:
    """A Retry-After window announced to an identity by the 429 answering ``asked``."""

    start: float
    end: float
    asked: Ask | None


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
        self._asks: list[Ask] = []
        self._violations: list[Violation] = []
        self._windows: dict[str, list[Window]] = {}
        self.arrivals = Arrivals(clock=clock)

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
        connection: int | None = None,
        exclusive: bool = False,
    ) -> int:
        """Log an arriving request and check it against the Retry-After windows; its seq.

        ``connection`` numbers the connection it came on; ``exclusive`` as in ``Ask``.
        """
        ask = Ask(method, path, idempotency_key, connection, exclusive)
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
                connection,
            )
            self._entries.append(entry)
            self._asks.append(ask)
        if identity is not None:
            self._check_window(identity, entry, ask, GRACE_SECONDS + 2 * latency_seconds)
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

    def announce_window(self, identity: str, seconds: float, seq: int | None = None) -> None:
        """A 429 (the answer to request ``seq``) told ``identity`` to wait ``seconds`` from now."""
        now = self._clock()
        with self._lock:
            asked = self._asks[seq - 1] if seq is not None else None
            windows = [w for w in self._windows.get(identity, []) if w.end > now]
            windows.append(Window(now, now + seconds, asked))
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

    def _check_window(self, identity: str, entry: Entry, ask: Ask, grace: float) -> None:
        """Flag ``entry`` if it arrived inside a window announced to ``identity`` (rate_window):
        after the grace, or at once if it is the refused request sent again."""
        with self._lock:
            windows = list(self._windows.get(identity, []))
        for window in windows:
            again = window.asked is not None and window.asked.again(ask)
            if window.start + (0.0 if again else grace) < entry.t < window.end:
                where = entry.route or f"{entry.method} {entry.path}"
                detail = (
                    f"{where} arrived {entry.t - window.start:.3f}s after a 429 "
                    f"that asked to wait {window.end - window.start:.0f}s"
                    f"{' (sent again after the 429 was read)' if again else ''}"
                )
                self.violation("rate_window", detail, entry.seq)
                return
