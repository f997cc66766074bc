"""The pipeline's two-lane queue: fresh saves go first, the backlog still moves, each lane is
bounded on its own, and consumers can be woken (issue 12, "fresh files first")."""

from __future__ import annotations

import threading
import time

import pytest

from florasync.sync.lanes import Lanes

from .helpers import SHORT_TIMEOUT, wait_until


def drain(lanes: Lanes[str]) -> list[str]:
    taken = []
    while (value := lanes.get(timeout=0)) is not None:
        taken.append(value)
    return taken


def test_fresh_items_are_taken_before_the_backlog():
    """A save queued after a backlog is taken first; each lane keeps its own order."""
    lanes: Lanes[str] = Lanes(100, 2)
    for n in range(5):
        lanes.put(f"scan{n}")
    lanes.put("save0", fast=True)
    assert drain(lanes) == ["save0", "scan0", "scan1", "scan2", "scan3", "scan4"]


def test_a_stream_of_saves_never_starves_the_backlog():
    """After fair_every fast items in a row while the backlog waits, one backlog item goes."""
    lanes: Lanes[str] = Lanes(100, 100, fair_every=3)
    for n in range(3):
        lanes.put(f"scan{n}")
    for n in range(7):
        lanes.put(f"save{n}", fast=True)
    assert drain(lanes) == [
        *("save0", "save1", "save2", "scan0"),
        *("save3", "save4", "save5", "scan1"),
        *("save6", "scan2"),
    ]


def test_a_full_backlog_lane_does_not_block_a_save():
    """With the normal lane full, a fresh item is still accepted at once (its own bound)."""
    lanes: Lanes[str] = Lanes(2, 1)
    assert lanes.put("scan0")
    assert lanes.put("scan1")
    assert lanes.is_full()
    assert not lanes.put("scan2", timeout=0.01)  # bounded: the producer would wait
    assert lanes.put("save0", fast=True, timeout=0)
    assert not lanes.put("save1", fast=True, timeout=0.01)  # the fast lane is bounded too
    assert len(lanes) == 3


def test_a_producer_waiting_on_a_full_lane_goes_on_once_an_item_is_taken():
    """put waits while its lane is full and returns True when a consumer frees a slot."""
    lanes: Lanes[str] = Lanes(1, 1)
    lanes.put("scan0")
    done: list[bool] = []
    producer = threading.Thread(target=lambda: done.append(lanes.put("scan1", timeout=30)))
    producer.start()
    try:
        assert lanes.get(timeout=0) == "scan0"
        wait_until(lambda: done == [True], timeout=SHORT_TIMEOUT, message="the waiting put")
    finally:
        lanes.get(timeout=0)
        producer.join()
    assert done == [True]


def test_fast_only_consumers_never_take_backlog_work():
    """A fast-only consumer (the fresh hash thread) leaves the normal lane alone."""
    lanes: Lanes[str] = Lanes(10, 10)
    lanes.put("scan0")
    assert lanes.get(timeout=0, fast_only=True) is None
    lanes.put("save0", fast=True)
    assert lanes.get(timeout=0, fast_only=True) == "save0"
    assert lanes.get(timeout=0) == "scan0"


def test_wake_returns_waiting_consumers_and_is_not_lost_before_they_wait():
    """wake makes a waiting get return None, and one not yet waiting returns at its next get."""
    lanes: Lanes[str] = Lanes(10, 10)
    results: list[str | None] = []
    consumer = threading.Thread(target=lambda: results.append(lanes.get(timeout=30)))
    consumer.start()
    lanes.wake(1)
    consumer.join(SHORT_TIMEOUT)
    assert not consumer.is_alive()
    assert results == [None]
    lanes.wake(1)  # nobody waits: kept for the next get (a consumer between checks and wait)
    assert lanes.get(timeout=30) is None
    lanes.put("scan0")
    assert lanes.get(timeout=0) == "scan0"  # wake-ups do not pile up beyond the count asked


@pytest.mark.parametrize("sizes", [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_sizes_below_one_are_refused(sizes):
    """A lane that could hold nothing would deadlock its producer: refused at construction."""
    with pytest.raises(ValueError, match="at least 1"):
        Lanes(sizes[0], sizes[1], fair_every=sizes[2])


def test_a_backlog_item_wakes_a_consumer_that_can_take_it():
    """A consumer of the fast lane only is waiting (first) beside a consumer of both: an item
    put in the normal lane is taken at once by the second, not after its poll timeout."""
    lanes: Lanes[str] = Lanes(10, 2)
    fast_waiting = threading.Event()
    taken: list[float] = []

    def fast_only() -> None:
        fast_waiting.set()
        lanes.get(timeout=3.0, fast_only=True)

    def any_lane() -> None:
        started = time.monotonic()
        if lanes.get(timeout=3.0) is not None:
            taken.append(time.monotonic() - started)

    threads = [threading.Thread(target=fast_only), threading.Thread(target=any_lane)]
    threads[0].start()
    fast_waiting.wait(SHORT_TIMEOUT)
    threads[1].start()
    wait_until(lambda: _waiters(lanes) == 2, timeout=SHORT_TIMEOUT, message="both waiting")
    lanes.put("scan0")
    threads[1].join(SHORT_TIMEOUT)
    lanes.wake(1)
    threads[0].join(SHORT_TIMEOUT)
    assert taken, "the backlog item was never taken"
    assert taken[0] < 1.0, f"taken after {taken[0]:.1f} s"


def _waiters(lanes: Lanes[str]) -> int:
    """Threads waiting in ``get`` (both conditions share the lock)."""
    conditions = [c for c in vars(lanes).values() if isinstance(c, threading.Condition)]
    waiting: list[int] = [len(c._waiters) for c in conditions]  # type: ignore[attr-defined]
    return sum(waiting)
