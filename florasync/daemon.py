"""The daemon (``florasync run``): watch every folder and keep it in sync until SIGTERM.

Owns the start-up order (arm the watches, queue the catch-up scan, then READY, so nothing created
in between is missed), the loop that turns watcher trouble into rescans (lost events, watch limit,
a dead observer, a folder that went away and came back), polling of folders that cannot be
watched, the periodic safety rescan, pick-up of files put back by ``florasync retry``, sd_notify,
and a clean stop on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from florasync import config, mounts, runtime, scanner, sweep
from florasync.config import FolderConfig
from florasync.engine import Engine
from florasync.errors import ExitCode, StoppedError
from florasync.rules import FolderRules
from florasync.systemd import Notifier
from florasync.transfer import Outcome
from florasync.watcher import Callbacks, Watcher, count_dirs, count_inotify_watches

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
RETRY_PICKUP_SECONDS = 2.0


def run_daemon(*, config_path: str | None, grace_seconds: float) -> ExitCode:
    """``florasync run``: exits 0 after a clean SIGTERM, 3 when FLORA refuses the key."""
    rt = runtime.load(config_path)
    config.check_folders(rt.cfg)  # a missing folder at start is a config error (exit 2)
    return Daemon(rt, grace_seconds=grace_seconds).run()


class Daemon:
    """One daemon process: an engine, a watcher, a sweeper thread and the main loop."""

    def __init__(
        self,
        rt: runtime.Runtime,
        *,
        grace_seconds: float = 10.0,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rt = rt
        self.grace_seconds = grace_seconds
        self.notifier = notifier or Notifier()
        self._clock = clock
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._sweeps: dict[int, str] = {}
        self._sweep_cond = threading.Condition()
        self._missing: set[int] = set()
        self._next_poll: dict[int, float] = {}
        self._next_rescan = 0.0
        self._next_retry_pickup = 0.0
        self._next_ping = 0.0

    def run(self) -> ExitCode:
        engine = Engine(self.rt, retry_deferred=True)
        self.engine = engine
        with engine:
            self.watcher = Watcher(self.rt.cfg.folders, self._callbacks(), stop=engine.stop)
            previous = self._install_signals()
            try:
                self._start()
                self._loop()
            finally:
                self._restore_signals(previous)
                self.notifier.stopping()
                self._shutdown()
        fatal = engine.pipeline.fatal
        if fatal is not None:
            log.error("%s", fatal)
            return fatal.exit_code
        return ExitCode.OK

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: stop taking work; requests in flight get the grace period."""
        self._stopping.set()
        self.engine.pipeline.begin_close()
        self._wake.set()
        with self._sweep_cond:
            self._sweep_cond.notify_all()

    def request_sweep(self, index: int, reason: str) -> None:
        """Rescan folder ``index`` soon (coalesced; safe from any thread)."""
        with self._sweep_cond:
            if index not in self._sweeps:
                self._sweeps[index] = reason
                self._sweep_cond.notify()

    # -- start and stop -----------------------------------------------------------------------

    def _start(self) -> None:
        polled = self._polled_folders()
        for index, problem in self.watcher.start(polled):  # watches armed before the scan
            self._note(index, "watch_failed", problem, level=logging.ERROR)
        self._check_watch_limit()
        for index in range(len(self.rt.cfg.folders)):
            self.request_sweep(index, "catch-up scan")
        self._sweeper = threading.Thread(target=self._sweep_loop, name="florasync-sweep")
        self._sweeper.daemon = True
        self._sweeper.start()
        now = self._clock()
        self._next_rescan = now + self.rt.cfg.rescan_interval_seconds
        self._next_poll = dict.fromkeys(polled, now + self.rt.cfg.poll_interval_seconds)
        self.notifier.ready(self._status_line())
        log.info("watching %d folder(s); catch-up scan queued", len(self.rt.cfg.folders))

    def _shutdown(self) -> None:
        self._stopping.set()
        self.engine.pipeline.begin_close()
        with self._sweep_cond:
            self._sweep_cond.notify_all()
        self.watcher.stop()
        if getattr(self, "_sweeper", None) is not None:
            self._sweeper.join()
        self.engine.close(self.grace_seconds)
        self.notifier.close()

    def _install_signals(self) -> dict[int, object]:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("%s received: stopping", signal.Signals(signum).name)
            self.request_stop()

        return {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signals(self, previous: dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    # -- the main loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set() and self.engine.pipeline.fatal is None:
            now = self._clock()
            healthy = self._check_health()
            self._check_folders()
            self._schedule_sweeps(now)
            if now >= self._next_retry_pickup:
                self._pick_up_retries()
                self._next_retry_pickup = now + RETRY_PICKUP_SECONDS
            self._notify(now, healthy)
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    def _check_health(self) -> bool:
        """Restart a dead observer (and rescan); report whether everything is alive."""
        if not self.watcher.is_healthy() and not self._stopping.is_set():
            self._note(
                None,
                "observer_restarted",
                "the file watcher stopped; restarted it and rescanning every folder",
                level=logging.ERROR,
            )
            self.watcher.restart()
            for index in range(len(self.rt.cfg.folders)):
                self.request_sweep(index, "watcher restarted")
        sweeper_alive = self._sweeper.is_alive()
        return self.watcher.is_healthy() and self.engine.pipeline.threads_alive() and sweeper_alive

    def _check_folders(self) -> None:
        """A folder that disappears (unmount, deletion) is reported, then picked up again."""
        for index, folder in enumerate(self.rt.cfg.folders):
            present = folder.path.is_dir()
            if not present and index not in self._missing:
                self._missing.add(index)
                self.watcher.unwatch(index)
                self._note(
                    index,
                    "folder_missing",
                    "folder disappeared; waiting for it to come back",
                    level=logging.ERROR,
                )
            elif present and index in self._missing:
                self._missing.discard(index)
                if (problem := self.watcher.rewatch(index)) is not None:
                    self._note(index, "watch_failed", problem, level=logging.ERROR)
                self._note(index, "folder_back", "folder is back; rescanning it")
                self.request_sweep(index, "folder came back")

    def _schedule_sweeps(self, now: float) -> None:
        for index, due in list(self._next_poll.items()):
            if now >= due and index not in self._missing:
                self.request_sweep(index, "poll")
                self._next_poll[index] = now + self.rt.cfg.poll_interval_seconds
        if now >= self._next_rescan:
            self._next_rescan = now + self.rt.cfg.rescan_interval_seconds
            for index in range(len(self.rt.cfg.folders)):
                self.request_sweep(index, "periodic safety rescan")

    def _pick_up_retries(self) -> None:
        for path in self.engine.journal.take_retry_requests():
            folder = self._folder_of(path)
            if folder is not None:
                self.engine.pipeline.offer(path, folder)

    def _notify(self, now: float, healthy: bool) -> None:
        self.notifier.status(self._status_line())
        interval = self.notifier.watchdog_interval
        if interval is not None and healthy and now >= self._next_ping:
            self.notifier.watchdog()  # only a loop that has just checked every thread pings
            self._next_ping = now + interval

    def _status_line(self) -> str:
        pipeline = self.engine.pipeline
        counts = pipeline.summary.counts
        synced = counts[Outcome.UPLOADED] + counts[Outcome.ATTACHED] + counts[Outcome.UNCHANGED]
        failed = counts[Outcome.FAILED] + counts[Outcome.DEFERRED]
        return (
            f"{len(self.rt.cfg.folders)} folder(s); queued {pipeline.outstanding}, "
            f"settling {pipeline.settling}, synced {synced}, failed {failed}"
        )

    # -- sweeps -------------------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            with self._sweep_cond:
                while not self._sweeps and not self._stopping.is_set():
                    self._sweep_cond.wait(TICK_SECONDS)
                if self._stopping.is_set():
                    return
                index, reason = next(iter(self._sweeps.items()))
                del self._sweeps[index]
            self._sweep(index, reason)

    def _sweep(self, index: int, reason: str) -> None:
        if index in self._missing:
            return
        folder = self.rt.cfg.folders[index]
        log.info("scanning %s (%s)", folder.path, reason)
        if reason not in ("poll", "catch-up scan", "periodic safety rescan"):
            self._note(index, "rescan", reason, level=logging.WARNING)
        try:
            found = sweep.sweep_folder(
                folder,
                journal=self.engine.journal,
                pipeline=self.engine.pipeline,
                stop=self.engine.stop,
            )
        except StoppedError:
            return
        log.info(
            "scanned %s: %d file(s), %d unchanged, %d queued",
            folder.path,
            found.files,
            found.unchanged,
            found.queued,
        )

    def _walk_new_dir(self, folder: FolderConfig, reldir: str) -> None:
        """A directory appeared: its files may predate its watch, so walk it at once."""
        rules = FolderRules(tuple(folder.include), tuple(folder.exclude))
        try:
            for cand in scanner.scan(
                folder.path, rules=rules, recursive=True, start=reldir, stop=self.engine.stop
            ):
                self.engine.pipeline.offer(str(cand.path), folder)
        except StoppedError:
            return

    # -- helpers ------------------------------------------------------------------------------

    def _callbacks(self) -> Callbacks:
        return Callbacks(
            offer=self._offer,
            walk=self._walk_new_dir,
            forget=self._forget,
            rescan=self.request_sweep,
        )

    def _forget(self, path: str) -> None:
        self.engine.journal.forget_files([path])

    def _offer(self, path: str, folder: FolderConfig, closed: bool) -> None:
        self.engine.pipeline.offer(path, folder, closed=closed)

    def _polled_folders(self) -> set[int]:
        polled = set()
        for index, folder in enumerate(self.rt.cfg.folders):
            network, fstype = mounts.needs_polling(folder.path)
            if folder.poll == "on" or (folder.poll == "auto" and network):
                polled.add(index)
                why = "poll: on" if folder.poll == "on" else f"network filesystem ({fstype})"
                log.info(
                    "polling %s every %g s (%s)",
                    folder.path,
                    self.rt.cfg.poll_interval_seconds,
                    why,
                )
        return polled

    def _check_watch_limit(self) -> None:
        """watchdog swallows the watch limit for subdirectories: count what inotify holds."""
        held = count_inotify_watches()
        if held is None:
            return
        needed = sum(
            count_dirs(str(f.path), f.recursive)
            for i, f in enumerate(self.rt.cfg.folders)
            if not self.watcher.is_polled(i)
        )
        if held < needed:
            for index, folder in enumerate(self.rt.cfg.folders):
                if not self.watcher.is_polled(index) and folder.recursive:
                    self.watcher.unwatch(index)
                    self._next_poll[index] = self._clock()
            self._note(
                None,
                "watch_limit",
                f"only {held} of {needed} directories could be watched: raise "
                "`sysctl fs.inotify.max_user_watches` (and in /etc/sysctl.d/); "
                "polling recursive folders meanwhile",
                level=logging.ERROR,
            )

    def _folder_of(self, path: str) -> FolderConfig | None:
        matches = [f for f in self.rt.cfg.folders if path.startswith(str(f.path) + "/")]
        return max(matches, key=lambda f: len(str(f.path)), default=None)

    def _note(
        self, index: int | None, kind: str, message: str, *, level: int = logging.INFO
    ) -> None:
        folder = None if index is None else str(self.rt.cfg.folders[index].path)
        log.log(level, "%s%s", f"{folder}: " if folder else "", message)
        self.engine.journal.note_event(folder, kind, message)
