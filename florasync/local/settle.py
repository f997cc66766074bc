"""When a file is done being written: closed after writing, or unchanged for ``settle_seconds``.

Owns the settle rule of PRODUCT.md ("never a half-written file"). A close-after-write event hands
the file on at once (the fast path); otherwise its (size, mtime_ns, ctime_ns) must stay the same
for ``settle_seconds``, checked by one timer thread for all files (never a thread per file). A
file whose last change is already older than ``settle_seconds`` is settled on sight. Clocks and
``stat`` are injected so tests run on a fake clock.
"""

from __future__ import annotations

import heapq
import logging
import os
import stat as stat_mode
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from florasync.local.identity import FileStat

log = logging.getLogger(__name__)

Tag = TypeVar("Tag")
_IDLE_WAIT = 5.0  # nothing settling: sleep until ``observe`` or ``wake`` notifies


@dataclass(slots=True)
class _Entry(Generic[Tag]):
    tag: Tag
    key: tuple[int, int, int]
    due: float


class Settler(Generic[Tag]):
    """Calls ``ready(path, tag, stat)`` once ``path`` settled, ``gone(path, tag)`` if it vanished.

    ``tag`` is whatever the caller needs back (the pipeline passes the folder and a retry count).
    """

    def __init__(
        self,
        settle_seconds: float,
        *,
        ready: Callable[[str, Tag, FileStat], None],
        gone: Callable[[str, Tag], None],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        stat: Callable[[str], os.stat_result] = os.stat,
    ) -> None:
        self.settle_seconds = settle_seconds
        self._ready = ready
        self._gone = gone
        self._clock = clock
        self._wall_clock = wall_clock
        self._stat = stat
        self._entries: dict[str, _Entry[Tag]] = {}
        self._heap: list[tuple[float, str]] = []
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    def observe(self, path: str, tag: Tag, *, closed: bool = False) -> None:
        """A hint that ``path`` was written: hand it on when it has settled."""
        st = self._lstat(path)
        if st is None:
            self._drop(path, tag)
            return
        if closed or self._old_enough(st):
            self._forget(path)
            self._ready(path, tag, FileStat.from_stat(st))
            return
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._cond:
            entry = self._entries.get(path)
            if entry is not None and entry.key == key:
                entry.tag = tag
                return  # unchanged since last seen: the running timer stands
            due = self._clock() + self.settle_seconds
            self._entries[path] = _Entry(tag, key, due)
            heapq.heappush(self._heap, (due, path))
            self._cond.notify()

    def tick(self) -> float:
        """Re-check every file that is due; return the seconds until the next one is."""
        while (due := self._pop_due()) is not None:
            path, entry = due
            self._recheck(path, entry)
        with self._cond:
            return self._heap[0][0] - self._clock() if self._heap else _IDLE_WAIT

    def run(self, stop: threading.Event) -> None:
        """The timer thread: tick until ``stop`` (call ``wake`` after setting it)."""
        while not stop.is_set():
            wait = self.tick()
            with self._cond:
                if not stop.is_set():
                    self._cond.wait(min(max(wait, 0.005), _IDLE_WAIT))

    def wake(self) -> None:
        """Wake the timer thread (to notice a stop request at once)."""
        with self._cond:
            self._cond.notify_all()

    def _recheck(self, path: str, entry: _Entry[Tag]) -> None:
        st = self._lstat(path)
        if st is None:
            self._gone(path, entry.tag)
            return
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key == entry.key:
            self._ready(path, entry.tag, FileStat.from_stat(st))
            return
        with self._cond:  # still changing (a growing file): wait another settle period
            if path not in self._entries:
                due = self._clock() + self.settle_seconds
                self._entries[path] = _Entry(entry.tag, key, due)
                heapq.heappush(self._heap, (due, path))

    def _pop_due(self) -> tuple[str, _Entry[Tag]] | None:
        with self._cond:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                due, path = heapq.heappop(self._heap)
                entry = self._entries.get(path)
                if entry is not None and entry.due == due:
                    del self._entries[path]
                    return path, entry
            return None

    def _old_enough(self, st: os.stat_result) -> bool:
        """Unchanged for settle_seconds already (ctime moves on every write, rename and chmod)."""
        last_change = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
        return self._wall_clock() - last_change >= self.settle_seconds

    def _lstat(self, path: str) -> os.stat_result | None:
        try:
            st = self._stat(path)
        except OSError:
            return None
        return st if stat_mode.S_ISREG(st.st_mode) else None

    def _drop(self, path: str, tag: Tag) -> None:
        self._forget(path)
        self._gone(path, tag)

    def _forget(self, path: str) -> None:
        with self._cond:
            self._entries.pop(path, None)  # its heap slot is skipped when it comes up
