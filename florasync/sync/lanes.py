"""A bounded queue with two lanes: files a user just saved go before a backlog, which still moves.

Owns the order in which the pipeline's stages take work (issue 12, "fresh files first"). The
fast lane holds files whose close-after-write the watcher saw; the normal lane holds everything
else (scans, retries, deferrals). A consumer takes from the fast lane first, but after
``fair_every`` fast items in a row while normal work waits, one normal item goes next: a steady
stream of saves never starves a catch-up scan. Each lane has its own bound, so a full backlog
never stops a fresh file from being queued. ``wake`` makes waiting consumers return (they
check their stop flags); nothing here knows about files.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Lanes(Generic[T]):
    """Two bounded FIFO lanes behind one lock; ``get`` prefers the fast one, fairly."""

    def __init__(self, normal_size: int, fast_size: int, *, fair_every: int = 4) -> None:
        if normal_size < 1 or fast_size < 1 or fair_every < 1:
            raise ValueError("lane sizes and fair_every must be at least 1")
        self._sizes = {False: normal_size, True: fast_size}
        self._lanes: dict[bool, collections.deque[T]] = {
            False: collections.deque(),
            True: collections.deque(),
        }
        self._fair_every = fair_every
        self._fast_run = 0  # fast items taken in a row while normal work waited
        self._wakes = 0  # wake-ups not yet consumed: a consumer about to wait returns at once
        self._lock = threading.Lock()
        # consumers of any lane, and consumers of the fast lane only: a normal item must wake
        # one that can take it (a fast-only consumer woken for it would sleep again, and the
        # item wait for a poll timeout: seconds)
        self._not_empty = threading.Condition(self._lock)
        self._fast_not_empty = threading.Condition(self._lock)
        # one per lane: a slot freed in one lane wakes a producer of that lane, not every one
        self._not_full = {lane: threading.Condition(self._lock) for lane in (False, True)}

    def capacity(self, *, fast: bool = False) -> int:
        return self._sizes[fast]

    def is_full(self, *, fast: bool = False) -> bool:
        with self._lock:
            return len(self._lanes[fast]) >= self._sizes[fast]

    def __len__(self) -> int:
        with self._lock:
            return len(self._lanes[False]) + len(self._lanes[True])

    def put(self, value: T, *, fast: bool = False, timeout: float | None = None) -> bool:
        """Append to a lane, waiting while it is full; False when ``timeout`` passed first."""
        lane, size, not_full = self._lanes[fast], self._sizes[fast], self._not_full[fast]
        deadline = None if timeout is None else time.monotonic() + timeout
        with not_full:
            while len(lane) >= size:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                not_full.wait(left)
            lane.append(value)
            self._not_empty.notify()
            if fast:
                self._fast_not_empty.notify()
            return True

    def get(self, timeout: float | None = None, *, fast_only: bool = False) -> T | None:
        """The next item; None after ``timeout`` or a ``wake``. ``fast_only``: the fast lane."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting = self._fast_not_empty if fast_only else self._not_empty
        with waiting:
            while True:
                taken = self._pop(fast_only)
                if taken is not None:
                    self._not_full[taken[0]].notify()
                    return taken[1]
                if self._wakes > 0:
                    self._wakes -= 1
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                waiting.wait(left)

    def wake(self, count: int) -> None:
        """Make up to ``count`` consumers return None now (or at their next ``get``)."""
        with self._lock:
            self._wakes = min(self._wakes + count, count)
            self._not_empty.notify_all()
            self._fast_not_empty.notify_all()

    def _pop(self, fast_only: bool) -> tuple[bool, T] | None:
        """The lane taken from and the item to hand out (None may be a value), under the lock."""
        fast, normal = self._lanes[True], self._lanes[False]
        if fast_only:
            return (True, fast.popleft()) if fast else None
        if fast and not (normal and self._fast_run >= self._fair_every):
            self._fast_run = self._fast_run + 1 if normal else 0
            return True, fast.popleft()
        if normal:
            self._fast_run = 0
            return False, normal.popleft()
        return None
