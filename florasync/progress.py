"""Progress for people at a terminal: one self-rewriting status line on stderr.

Owns the rendering of files done / queued and bytes sent, throttled to a few updates a second.
Used only when stderr is a TTY; otherwise the pipeline's log lines tell the story.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from florasync.sync.transfer import Outcome

_MIN_INTERVAL = 0.2


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class TerminalProgress:
    """``[files done/queued] bytes sent, rate`` rewritten in place."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._queued = 0
        self._done = 0
        self._failed = 0
        self._sent = 0
        self._started = time.monotonic()
        self._last = 0.0

    def queued(self, files: int, size_bytes: int) -> None:
        with self._lock:
            self._queued += files
        self._draw()

    def finished(self, outcome: Outcome, size_bytes: int) -> None:
        with self._lock:
            self._done += 1
            self._failed += outcome in (Outcome.FAILED, Outcome.DEFERRED)
        self._draw()

    def sent(self, size_bytes: int) -> None:
        with self._lock:
            self._sent += size_bytes
        self._draw()

    def close(self) -> None:
        self._draw(force=True)
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < _MIN_INTERVAL:
                return
            self._last = now
            rate = self._sent / max(now - self._started, 1e-6)
            failed = f", {self._failed} failed" if self._failed else ""
            line = (
                f"  {self._done}/{self._queued} files{failed}, "
                f"{human_bytes(self._sent)} sent ({human_bytes(rate)}/s)"
            )
        self._stream.write("\r" + line.ljust(60))
        self._stream.flush()
