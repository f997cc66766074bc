"""Delayed actions on one thread: re-offers and deferred retries, never a thread per file.

Owns a heap of (due, action) pairs under one condition, woken by ``after`` and ``wake``. The
clock and the stop event are injected, so the pipeline's tests can run it on a fake clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# An idle thread's safety-net wake-up: ``after`` and ``wake`` notify, so this only bounds a
# missed wake-up; it keeps an idle daemon's CPU near zero (bench idle).
IDLE_POLL_SECONDS = 5.0


class Timers:
    """Runs each action once its delay has passed, on the thread that calls ``run``."""

    def __init__(self, clock: Callable[[], float], stop: threading.Event) -> None:
        self._clock = clock
        self._stop = stop
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def after(self, seconds: float, action: Callable[[], object]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (self._clock() + seconds, next(self._seq), action))
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def run(self) -> None:
        """Until ``stop``: run what is due. Callers' actions handle their own errors."""
        while not self._stop.is_set():
            action = self._next_due()
            if action is not None:
                action()

    def _next_due(self) -> Callable[[], object] | None:
        with self._cond:
            if not self._heap:
                self._cond.wait(IDLE_POLL_SECONDS)  # ``after`` and ``wake`` notify
                return None
            due, _, action = self._heap[0]
            wait = due - self._clock()
            if wait > 0:
                self._cond.wait(min(wait, IDLE_POLL_SECONDS))
                return None
            heapq.heappop(self._heap)
            return action
