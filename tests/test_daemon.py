"""The daemon embedded in a thread: a reload loses nothing, the main loop never blocks, a dead
pipeline thread fails health (issue 11, items 2, 5 and 6)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyObserver

from florasync.config import runtime
from florasync.errors import ExitCode
from florasync.local.watcher import ObserverFactory
from florasync.service.daemon import Daemon
from florasync.service.systemd import Notifier

from .helpers import (
    LONG_TIMEOUT,
    SHORT_TIMEOUT,
    assert_exactly_once,
    sha256_of,
    wait_until,
    write_file,
)
from .syncenv import SyncEnv

WATCHDOG_SECONDS = 4.0  # pings every 2 s; systemd would kill us after 4 s without one
WATCHDOG_USEC = int(WATCHDOG_SECONDS * 1_000_000)
FULL_QUEUES = 70  # with workers: 1 the queues hold 75 files: past this, an offer would block


class TimedNotify:
    """A NOTIFY_SOCKET whose reader thread stamps every line with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.02)
        self._lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="test-notify-reader")
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def lines(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self._lines)

    def count(self, line: str) -> int:
        return sum(1 for _, text in self.lines() if text == line)

    def statuses_since(self, since: float) -> list[str]:
        return [text for t, text in self.lines() if t >= since and text.startswith("STATUS=")]

    def largest_ping_gap(self, start: float, end: float) -> float:
        """The longest time in [start, end] without a WATCHDOG=1 (from the ping before start)."""
        pings = [t for t, text in self.lines() if text == "WATCHDOG=1" and t <= end]
        points = [max([t for t in pings if t <= start], default=start)]
        points += [t for t in pings if t > start] + [end]
        return max(b - a for a, b in itertools.pairwise(points))

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._sock.close()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            arrived = time.monotonic()
            with self._lock:
                self._lines.extend((arrived, line) for line in data.decode().splitlines())


@dataclasses.dataclass
class Embedded:
    """A Daemon running on a thread of the test process, and what it told systemd."""

    daemon: Daemon
    notify: TimedNotify
    thread: threading.Thread
    exit_codes: list[ExitCode]


@contextlib.contextmanager
def embedded(
    env: SyncEnv,
    tmp_path: Path,
    *,
    watchdog_usec: int | None = None,
    observer_factory: ObserverFactory | None = None,
) -> Iterator[Embedded]:
    """Run the daemon on a thread until READY=1; stop it (request_stop) at the end."""
    notify = TimedNotify(tmp_path / "notify.sock")
    notify_env = notify.env
    if watchdog_usec is not None:
        notify_env["WATCHDOG_USEC"] = str(watchdog_usec)
    rt = runtime.load(str(env.config), {"FLORA_API_KEY": env.sb.api_key})
    daemon = Daemon(rt, notifier=Notifier(notify_env), observer_factory=observer_factory)
    exit_codes: list[ExitCode] = []
    thread = threading.Thread(target=lambda: exit_codes.append(daemon.run()), name="test-daemon")
    thread.start()
    try:
        wait_until(lambda: notify.count("READY=1"), message="READY=1")
        yield Embedded(daemon, notify, thread, exit_codes)
    finally:
        if thread.is_alive():
            daemon.request_stop()
        thread.join(LONG_TIMEOUT)
        notify.close()
    assert not thread.is_alive(), "the daemon did not stop"


def landed(env: SyncEnv, files: Mapping[Path, str]) -> bool:
    """Each file's bytes are one ready asset, attached once to the file's project."""
    state = env.sb.state(requests=False)
    for path, project in files.items():
        digest = sha256_of(path)
        ready = [a for a in state["assets"] if a["sha256"] == digest and a["status"] == "ready"]
        if len(ready) != 1:
            return False
        nodes = [
            n for n in state["nodes"].get(project, []) if n["asset_id"] == ready[0]["asset_id"]
        ]
        if len(nodes) != 1:
            return False
    return True


def wait_landed(env: SyncEnv, files: Mapping[Path, str], what: str) -> None:
    """Wait until every file has landed, then compare the bytes FLORA stored with the disk's."""
    wait_until(lambda: landed(env, files), interval=0.05, message=what)
    by_digest = {a["sha256"]: a["asset_id"] for a in env.sb.state(requests=False)["assets"]}
    for path in files:
        blob = env.sb.blob_path(by_digest[sha256_of(path)])
        assert blob is not None
        assert blob.read_bytes() == path.read_bytes(), f"{path}: FLORA stored other bytes"


def uploaded(env: SyncEnv, path: Path) -> bool:
    """Whether any asset in the sandbox holds ``path``'s bytes."""
    digest = sha256_of(path)
    return any(a["sha256"] == digest for a in env.sb.state(requests=False)["assets"])


# -- item 5: a reload loses nothing ------------------------------------------------------------


class _GatedObserver(InotifyObserver):
    """A real inotify observer whose ``schedule()`` waits until the test releases it."""

    def __init__(self, arming: threading.Event, release: threading.Event) -> None:
        super().__init__()
        self._arming = arming
        self._release = release

    def schedule(
        self,
        event_handler: FileSystemEventHandler,
        path: str | Path,
        *,
        recursive: bool = False,
        event_filter: list[type[FileSystemEvent]] | None = None,
        follow_symlink: bool = False,
    ) -> ObservedWatch:
        self._arming.set()
        assert self._release.wait(LONG_TIMEOUT), "the test never released the re-arm"
        return super().schedule(
            event_handler,
            path,
            recursive=recursive,
            event_filter=event_filter,
            follow_symlink=follow_symlink,
        )


class SlowRearm:
    """An observer factory whose second observer (the one a reload builds) arms slowly: the
    window between the reload starting and the new watches existing is as wide as the test
    wants (``arming`` is set when it opens; ``release`` closes it)."""

    def __init__(self) -> None:
        self.built = 0
        self.arming = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> BaseObserver:
        self.built += 1
        if self.built == 2:
            return _GatedObserver(self.arming, self.release)
        return InotifyObserver()


def test_reload_loses_no_file_written_while_the_watches_are_rearmed(
    env: SyncEnv, tmp_path: Path
) -> None:
    """Files (and a new directory) written while a reload re-arms the watches, and right after
    it, are all synced at once, not at the next hourly safety rescan."""
    env.write_config(rescan_interval_seconds=3600)
    rearm = SlowRearm()
    with embedded(env, tmp_path, observer_factory=rearm) as run:
        before = env.add(0, "before.png")
        wait_landed(env, {before: env.projects[0]}, "the daemon syncing")
        wait_until(lambda: not run.daemon.sweeper.pending(), message="the catch-up scans done")
        run.daemon.request_reload()
        assert rearm.arming.wait(SHORT_TIMEOUT), "the reload never built its watcher"
        window = {
            env.add(0, "during.png"): env.projects[0],
            env.add(1, "during-too.png"): env.projects[1],
            env.add(0, "new-dir/inside.png"): env.projects[0],
        }
        rearm.release.set()
        wait_until(lambda: run.notify.count("READY=1") == 2, message="READY after the reload")
        wait_landed(env, window, "the files written during the reload")
        after = env.add(1, "after.png")
        wait_landed(env, {after: env.projects[1]}, "a file written right after it")
    assert_exactly_once(env.sb.state(), env.expected())


def test_queued_rescans_survive_a_reload(
    env: SyncEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rescans queued behind a slow one are still done after a reload that adds a folder; a
    queued rescan of a folder the reload removed is dropped without error."""
    big, waiting, dropped, added = (tmp_path / n for n in ("big", "waiting", "dropped", "added"))
    project = env.projects[0]
    for n in range(100):  # more than the queues hold: the first sweep blocks on the pipeline
        write_file(big / f"b{n:03d}.png", 1024, seed=n)
    late, gone, fresh = (folder / "x.png" for folder in (waiting, dropped, added))
    for n, path in enumerate((late, gone, fresh)):
        write_file(path, 2048, seed=1000 + n)
    mapping = [{"path": str(p), "project_id": project} for p in (big, waiting, dropped)]
    env.write_config(folders=mapping, workers=1, rescan_interval_seconds=3600)
    env.sb.faults.update(latency_seconds=0.5)  # about 2 s a file: the sweep of big blocks
    caplog.set_level(logging.WARNING)
    with embedded(env, tmp_path) as run:
        sweeper = run.daemon.sweeper
        roots = [str(waiting), str(dropped)]
        wait_until(lambda: sweeper.pending() == roots, message="catch-ups queued behind big")
        sweeper.request(str(big), "inotify queue overflow")  # big is being swept: queued again
        roots.append(str(big))
        mapping[2] = {"path": str(added), "project_id": project}
        env.write_config(folders=mapping, workers=1, rescan_interval_seconds=3600)
        run.daemon.request_reload()
        wait_until(lambda: run.notify.count("READY=1") == 2, message="READY after the reload")
        assert sweeper.pending() == [*roots, str(added)]
        env.sb.faults.update(latency_seconds=0)
        expected = dict.fromkeys([*big.iterdir(), late, fresh], project)
        wait_landed(env, expected, "big, the queued catch-up and the added folder")
        pipeline = run.daemon.engine.pipeline
        wait_until(lambda: not sweeper.pending() and pipeline.outstanding == 0, message="idle")
        assert run.daemon.is_healthy()
    assert not uploaded(env, gone), "a folder removed by the reload was still scanned"
    events = [(e["folder"], e["kind"], e["message"]) for e in env.status()["events"]]
    assert (str(big), "rescan", "inotify queue overflow") in events
    assert (str(added), "rescan", "folder added by reload") in events
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert problems == [], [r.getMessage() for r in problems]


# -- item 6: the main loop never blocks --------------------------------------------------------


@pytest.mark.slow  # a measuring span of seconds, then 200 uploads
def test_watchdog_pings_go_on_while_a_large_retry_is_picked_up(
    env: SyncEnv, tmp_path: Path
) -> None:
    """200 files put back by `florasync retry` into a full, slow pipeline: WATCHDOG=1 keeps
    arriving at its interval while they are handed over, and every one is synced."""
    files = [env.add(0, f"r{n:03d}.png", size=1024) for n in range(200)]
    env.write_config(workers=1, rescan_interval_seconds=3600)
    env.sb.faults.fail_next("POST /assets", status=400, times=len(files))
    with embedded(env, tmp_path, watchdog_usec=WATCHDOG_USEC) as run:
        pipeline = run.daemon.engine.pipeline
        wait_until(lambda: pipeline.summary.failed() == len(files), message="200 failures")
        env.sb.faults.update(latency_seconds=2.0)  # about 8 s a file: the queues stay full
        retried = env.cli("retry")
        assert f"{len(files)} file(s) put back in the queue" in retried.stdout
        start = time.monotonic()
        wait_until(lambda: pipeline.outstanding >= FULL_QUEUES, message="the queues full")
        time.sleep(1.5 * WATCHDOG_SECONDS)  # not synchronisation: the span the pings must cover
        end = time.monotonic()
        assert pipeline.outstanding > FULL_QUEUES, "the pick-up was over before the span ended"
        gap = run.notify.largest_ping_gap(start, end)
        env.sb.faults.update(latency_seconds=0)
        wait_landed(env, dict.fromkeys(files, env.projects[0]), "the 200 files")
    assert gap < WATCHDOG_SECONDS, f"no WATCHDOG=1 for {gap:.1f} s during the retry pick-up"
    assert_exactly_once(env.sb.state(), env.expected())


@pytest.mark.slow  # a measuring span of seconds, then 200 uploads
def test_watchdog_pings_go_on_while_parked_files_resume(env: SyncEnv, tmp_path: Path) -> None:
    """A key refused then fixed (reload), with FLORA slow to answer and 200 files parked:
    WATCHDOG=1 keeps arriving while the key is asked about and the files resume."""
    env.write_config(workers=1, rescan_interval_seconds=3600)
    with embedded(env, tmp_path, watchdog_usec=WATCHDOG_USEC) as run:
        pipeline = run.daemon.engine.pipeline
        env.sb.faults.update(revoked=True)
        files = [env.add(0, f"k{n:03d}.png", size=1024) for n in range(200)]
        wait_until(lambda: pipeline.refused is not None, message="the key refused")
        wait_until(
            lambda: pipeline.outstanding >= len(files) and not pipeline.settling,
            message="every file offered (and parked)",
        )
        env.sb.faults.update(revoked=False, latency_seconds=5.0)  # slower than the watchdog
        start = time.monotonic()
        run.daemon.request_reload()  # "fix the key, then reload"
        wait_until(
            lambda: any("folder(s); queued" in s for s in run.notify.statuses_since(start)),
            timeout=LONG_TIMEOUT,
            message="the files resumed",
        )
        time.sleep(WATCHDOG_SECONDS)  # not synchronisation: the span the pings must cover
        end = time.monotonic()
        assert pipeline.outstanding > FULL_QUEUES, "the resume was over before the span ended"
        gap = run.notify.largest_ping_gap(start, end)
        env.sb.faults.update(latency_seconds=0)
        wait_landed(env, dict.fromkeys(files, env.projects[0]), "the 200 files")
    assert gap < WATCHDOG_SECONDS, f"no WATCHDOG=1 for {gap:.1f} s while resuming"
    assert_exactly_once(env.sb.state(), env.expected())


# -- a pipeline thread that dies ---------------------------------------------------------------


class _ThreadKiller(BaseException):
    """What no ``except Exception`` catches: the pipeline thread that meets it dies."""


class _DeadlyPath(str):
    """A real path that cannot become a plain ``str`` on a hash thread (pathlib calls str())."""

    def __str__(self) -> str:
        if threading.current_thread().name.startswith("florasync-hash"):
            raise _ThreadKiller("the hash thread dies here")
        return str.__str__(self)


class _Poisoning(FileSystemEventHandler):
    """Passes real events on, with ``poison.png``'s path swapped for a ``_DeadlyPath``."""

    def __init__(self, handler: FileSystemEventHandler) -> None:
        self._handler = handler

    def dispatch(self, event: FileSystemEvent) -> None:
        if str(event.src_path).endswith("/poison.png"):
            event = dataclasses.replace(event, src_path=_DeadlyPath(str(event.src_path)))
        self._handler.dispatch(event)


class PoisoningObserver(InotifyObserver):
    """A real inotify observer; its events about ``poison.png`` kill the hash thread that takes
    the file. The daemon builds its own pipeline, so this is the way in without patching it."""

    def schedule(
        self,
        event_handler: FileSystemEventHandler,
        path: str | Path,
        *,
        recursive: bool = False,
        event_filter: list[type[FileSystemEvent]] | None = None,
        follow_symlink: bool = False,
    ) -> ObservedWatch:
        return super().schedule(
            _Poisoning(event_handler),
            path,
            recursive=recursive,
            event_filter=event_filter,
            follow_symlink=follow_symlink,
        )


def test_a_dead_pipeline_thread_stops_the_watchdog_pings(env: SyncEnv, tmp_path: Path) -> None:
    """A pipeline thread that dies makes the daemon unhealthy: no WATCHDOG=1 any more, so
    systemd restarts it."""
    with embedded(
        env, tmp_path, watchdog_usec=1_000_000, observer_factory=PoisoningObserver
    ) as run:
        wait_until(lambda: run.notify.count("WATCHDOG=1") >= 2, message="pings while healthy")
        env.add(0, "poison.png")
        pipeline = run.daemon.engine.pipeline
        wait_until(lambda: pipeline.broken is not None, message="the hash thread dead")
        assert not run.daemon.is_healthy()
        died = time.monotonic()
        time.sleep(2.0)  # not synchronisation: two turns of the main loop, each would ping
        late = [t for t, text in run.notify.lines() if text == "WATCHDOG=1" and t > died + 0.1]
        assert late == [], "WATCHDOG=1 sent by a daemon whose pipeline is broken"
        assert run.thread.is_alive(), "under a watchdog, systemd does the restart"
    assert "florasync-hash" in (pipeline.broken or "")


def test_a_dead_pipeline_thread_without_a_watchdog_exits_1(
    env: SyncEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a systemd watchdog, a daemon whose pipeline thread died stops on its own, exit 1."""
    with embedded(env, tmp_path, observer_factory=PoisoningObserver) as run:
        env.add(0, "poison.png")
        wait_until(lambda: not run.thread.is_alive(), message="the daemon stopping by itself")
    assert run.exit_codes == [ExitCode.FAILED]
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("died: _ThreadKiller: the hash thread dies here" in m for m in messages), messages
    assert any("nothing would restart us" in m for m in messages), messages
