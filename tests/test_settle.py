"""The settle rule on real files and a fake clock: closed → at once; otherwise still for N s."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from florasync.local.identity import FileStat
from florasync.local.settle import Settler

SETTLE = 3600.0  # long, so files written by the test never look old by the real clock


class Clock:
    """A monotonic clock that moves only when told to; the wall clock is real plus an offset."""

    def __init__(self) -> None:
        self.mono_offset = 0.0
        self.wall_offset = 0.0

    def mono(self) -> float:
        return 1000.0 + self.mono_offset

    def wall(self) -> float:
        return time.time() + self.wall_offset

    def advance(self, seconds: float) -> None:
        self.mono_offset += seconds


@pytest.fixture
def harness() -> tuple[Settler[str], Clock, list[str], list[str]]:
    clock = Clock()
    ready: list[str] = []
    gone: list[str] = []

    def on_ready(path: str, tag: str, stat: FileStat) -> None:
        assert stat.size == Path(path).stat().st_size
        ready.append(f"{tag}:{Path(path).name}")

    settler: Settler[str] = Settler(
        SETTLE,
        ready=on_ready,
        gone=lambda path, tag: gone.append(Path(path).name),
        clock=clock.mono,
        wall_clock=clock.wall,
    )
    return settler, clock, ready, gone


def test_fresh_file_waits_for_settle_seconds(harness, tmp_path: Path) -> None:
    """A just-written file is handed on only after it stayed unchanged for settle_seconds."""
    settler, clock, ready, _ = harness
    f = tmp_path / "a.png"
    f.write_bytes(b"x" * 10)
    settler.observe(str(f), "t")
    assert ready == []
    clock.advance(SETTLE - 0.1)
    settler.tick()
    assert ready == []
    clock.advance(0.2)
    settler.tick()
    assert ready == ["t:a.png"]
    assert len(settler) == 0


def test_close_after_write_is_the_fast_path(harness, tmp_path: Path) -> None:
    """A close-after-write event hands the file on without waiting."""
    settler, _, ready, _ = harness
    f = tmp_path / "b.png"
    f.write_bytes(b"y")
    settler.observe(str(f), "t", closed=True)
    assert ready == ["t:b.png"]


def test_old_file_is_settled_on_sight(harness, tmp_path: Path) -> None:
    """A file unchanged for longer than settle_seconds (found by a scan) needs no wait."""
    settler, clock, ready, _ = harness
    f = tmp_path / "old.png"
    f.write_bytes(b"z")
    clock.wall_offset = SETTLE + 1
    settler.observe(str(f), "t")
    assert ready == ["t:old.png"]


def test_growing_file_is_not_handed_on_until_it_stops(harness, tmp_path: Path) -> None:
    """Each change restarts the wait; the file is handed on once, after the last change."""
    settler, clock, ready, _ = harness
    f = tmp_path / "grow.mp4"
    f.write_bytes(b"1")
    settler.observe(str(f), "t")
    for n in range(5):
        clock.advance(SETTLE - 0.5)
        with f.open("ab") as out:
            out.write(b"more" * (n + 1))
        settler.observe(str(f), "t")  # the watcher's modified event
        settler.tick()
        assert ready == []
    clock.advance(SETTLE + 0.1)
    settler.tick()
    assert ready == ["t:grow.mp4"]


def test_change_without_event_is_caught_at_recheck(harness, tmp_path: Path) -> None:
    """Close events are not guaranteed: a change seen only at the re-check restarts the wait."""
    settler, clock, ready, _ = harness
    f = tmp_path / "quiet.png"
    f.write_bytes(b"1")
    settler.observe(str(f), "t")
    f.write_bytes(b"12")  # no observe(): the event was lost
    clock.advance(SETTLE + 0.1)
    settler.tick()
    assert ready == []
    clock.advance(SETTLE + 0.1)
    settler.tick()
    assert ready == ["t:quiet.png"]


def test_vanished_file_is_reported_gone(harness, tmp_path: Path) -> None:
    """A file deleted while settling is reported gone, never handed on."""
    settler, clock, ready, gone = harness
    f = tmp_path / "tmp.png"
    f.write_bytes(b"1")
    settler.observe(str(f), "t")
    f.unlink()
    clock.advance(SETTLE + 0.1)
    settler.tick()
    assert (ready, gone) == ([], ["tmp.png"])
    settler.observe(str(tmp_path / "never.png"), "t")
    assert gone == ["tmp.png", "never.png"]


def test_directories_are_not_files(harness, tmp_path: Path) -> None:
    """A directory path is dropped (the watcher walks directories separately)."""
    settler, _, ready, gone = harness
    settler.observe(str(tmp_path), "t", closed=True)
    assert (ready, gone) == ([], [tmp_path.name])


def test_many_files_share_one_timer(harness, tmp_path: Path) -> None:
    """Thousands of settling files cost no thread each: one tick hands them all on."""
    settler, clock, ready, _ = harness
    threads_before = threading.active_count()
    for n in range(2000):
        f = tmp_path / f"{n}.png"
        f.write_bytes(b"x")
        settler.observe(str(f), "t")
    assert threading.active_count() == threads_before
    assert len(settler) == 2000
    clock.advance(SETTLE + 0.1)
    settler.tick()
    assert len(ready) == 2000


def test_run_thread_hands_files_on_and_stops(tmp_path: Path) -> None:
    """The timer thread hands a file on by itself and exits at once when stopped and woken."""
    ready = threading.Event()
    settler: Settler[str] = Settler(0.05, ready=lambda *a: ready.set(), gone=lambda *a: None)
    stop = threading.Event()
    thread = threading.Thread(target=settler.run, args=(stop,))
    thread.start()
    try:
        f = tmp_path / "a.png"
        f.write_bytes(b"1")
        settler.observe(str(f), "t")
        assert ready.wait(5.0)
    finally:
        stop.set()
        settler.wake()  # the contract of run(): an idle timer thread sleeps until woken
        thread.join(1.0)  # well under its idle sleep: only the wake-up can end it this soon
    assert not thread.is_alive()
