"""When upload-body bytes arrive: (monotonic time, upload seq, bytes) per piece read, for
measuring a client's bandwidth limit (issue 16).

Owns the record: off unless asked for (then each upload body is read in pieces of at most
``PIECE_BYTES``), kept in a bounded ring, its own lock. Knows nothing of HTTP or multipart.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from florasync.sandbox.receipt import Body

PIECE_BYTES = 64 << 10
"""The most read at once while recording, so times are those of pieces, not of 1 MiB reads."""
CAPACITY = 1 << 16
"""Pieces kept (the oldest go first): 4 GiB of uploads at full pieces."""


class Arrival(NamedTuple):
    """``n`` bytes of upload ``seq``'s body (its request-log seq) read at monotonic time ``t``."""

    t: float
    seq: int
    n: int


class Arrivals:
    """The record of upload-body arrivals; safe to use from every handler thread."""

    def __init__(
        self, capacity: int = CAPACITY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ring: deque[Arrival] = deque(maxlen=capacity)
        self.recording = False

    def record(self, on: bool = True) -> None:
        """Start (or stop) recording; starting clears what was recorded before."""
        with self._lock:
            if on and not self.recording:
                self._ring.clear()
            self.recording = on

    def watch(self, seq: int, body: Body) -> Body:
        """``body`` as the upload target reads it: itself when not recording (no cost), else
        a reader noting each piece as it arrives."""
        return _Recorded(body, seq, self) if self.recording else body

    def add(self, seq: int, n: int) -> None:
        with self._lock:
            self._ring.append(Arrival(self._clock(), seq, n))

    def snapshot(self) -> list[Arrival]:
        """Everything recorded, oldest first."""
        with self._lock:
            return list(self._ring)


class _Recorded:
    """An upload body read in pieces of at most PIECE_BYTES, each noted as it arrives."""

    def __init__(self, body: Body, seq: int, arrivals: Arrivals) -> None:
        self._body = body
        self._seq = seq
        self._arrivals = arrivals
        self.length = getattr(body, "length", None)  # what a cut upload halves

    def read(self, size: int) -> bytes:
        data = self._body.read(min(size, PIECE_BYTES))
        if data:
            self._arrivals.add(self._seq, len(data))
        return data

    def drain(self) -> None:
        while self.read(PIECE_BYTES):
            pass
