"""When a file is done being written: closed after writing, or unchanged for ``settle_seconds``.

Owns the settle rule of PRODUCT.md ("never a half-written file"). A close-after-write event hands
the file on at once (the fast path); otherwise its (size, mtime_ns, ctime_ns) must stay the same
for ``settle_seconds``, checked by one timer thread for all files (never a thread per file). A
file whose last change is already older than ``settle_seconds`` is settled on sight. Every look
at a file goes through the injected ``probe`` (the pipeline passes the folder's admission
``Gate``, so a path that turned into a symlink leading outside is refused, not read); clocks are
injected so tests run on a fake clock.
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

from florasync.local.admission import Refusal
from florasync.local.identity import FileStat

log = logging.getLogger(__name__)

Tag = TypeVar("Tag")
_IDLE_WAIT = 5.0  # nothing settling: sleep until ``observe`` or ``wake`` notifies


@dataclass(slots=True)
class _Entry(Generic[Tag]):
    tag: Tag
    key: tuple[int, int, int]
    due: float


Probe = Callable[[str, Tag], "FileStat | Refusal | None"]
"""Looks at ``path``: its stat, a ``Refusal`` (it may not be synced) or None (nothing there)."""


def regular_file(path: str, _tag: object) -> FileStat | Refusal | None:
    """The default probe: a regular file itself, never through a symlink."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return FileStat.from_stat(st) if stat_mode.S_ISREG(st.st_mode) else None


class Settler(Generic[Tag]):
    """Calls ``ready(path, tag, stat)`` once ``path`` settled, ``gone(path, tag)`` if it vanished,
    ``refused(path, tag, refusal)`` if the probe refused it.

    ``tag`` is whatever the caller needs back (the pipeline passes the folder and a retry count).
    """

    def __init__(
        self,
        settle_seconds: float,
        *,
        ready: Callable[[str, Tag, FileStat], None],
        gone: Callable[[str, Tag], None],
        refused: Callable[[str, Tag, Refusal], None] | None = None,
        probe: Probe[Tag] = regular_file,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settle_seconds = settle_seconds
        self._ready = ready
        self._gone = gone
        self._refused = refused
        self._probe = probe
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: dict[str, _Entry[Tag]] = {}
        self._heap: list[tuple[float, str]] = []
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    def observe(self, path: str, tag: Tag, *, closed: bool = False, on_sight: bool = True) -> bool:
        """A hint that ``path`` was written: hand it on when it has settled.

        Returns False when ``path`` was already settling: the hint merged into that entry, which
        ends in one callback for both. ``on_sight=False`` never calls back from this thread (a
        pipeline thread re-offering a file must not wait on its own queue): the timer thread
        hands it on instead, at the earliest after ``settle_seconds``.
        """
        # whether it merged is decided under the lock that changes the entry: two threads
        # offering the same path at once must not both count as the first (issue 11, queued)
        st = self._probe(path, tag)
        if not isinstance(st, FileStat):
            merged = self._forget(path)
            self._reject(path, tag, st)
            return not merged
        if on_sight and (closed or self._old_enough(st)):
            merged = self._forget(path)
            self._ready(path, tag, st)
            return not merged
        key = (st.size, st.mtime_ns, st.ctime_ns)
        with self._cond:
            entry = self._entries.get(path)
            if entry is not None and entry.key == key:
                entry.tag = tag
                return False  # unchanged since last seen: the running timer stands
            due = self._clock() + self.settle_seconds
            self._entries[path] = _Entry(tag, key, due)
            heapq.heappush(self._heap, (due, path))
            self._cond.notify()
            return entry is None

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
        """Hand ``entry`` on, or wait another period; it stays listed until decided, so an
        offer meanwhile merges into it (or replaces it, and then answers for it)."""
        st = self._probe(path, entry.tag)
        with self._cond:
            if self._entries.get(path) is not entry:
                return  # an offer took it over while it was probed: one callback, theirs
            if isinstance(st, FileStat):
                key = (st.size, st.mtime_ns, st.ctime_ns)
                if key != entry.key:  # still changing (a growing file): another settle period
                    entry.key, entry.due = key, self._clock() + self.settle_seconds
                    heapq.heappush(self._heap, (entry.due, path))
                    return
            del self._entries[path]
        if isinstance(st, FileStat):
            self._ready(path, entry.tag, st)
        else:
            self._reject(path, entry.tag, st)

    def _pop_due(self) -> tuple[str, _Entry[Tag]] | None:
        with self._cond:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                due, path = heapq.heappop(self._heap)
                entry = self._entries.get(path)
                if entry is not None and entry.due == due:
                    return path, entry
            return None

    def _old_enough(self, st: FileStat) -> bool:
        """Unchanged for settle_seconds already (ctime moves on every write, rename and chmod)."""
        last_change = max(st.mtime_ns, st.ctime_ns) / 1e9
        return self._wall_clock() - last_change >= self.settle_seconds

    def _reject(self, path: str, tag: Tag, refusal: Refusal | None) -> None:
        if refusal is None or self._refused is None:
            self._gone(path, tag)
        else:
            self._refused(path, tag, refusal)

    def _forget(self, path: str) -> bool:
        """Drop ``path``'s entry (its heap slot is skipped when it comes up); was there one?"""
        with self._cond:
            return self._entries.pop(path, None) is not None
