"""The daemon (``florasync run``): watch every folder and keep it in sync until SIGTERM.

Owns the start-up order (check the key, arm the watches, queue the catch-up scan, then READY, so
nothing created in between is missed), the main loop (watcher health, folders that go away and
come back, polling, the periodic safety rescan, files put back by ``florasync retry``, a refused
key), SIGHUP reload, sd_notify, and a clean stop on SIGTERM/SIGINT.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from florasync import errors, logs
from florasync.config import config, credentials, runtime
from florasync.config.config import FolderConfig
from florasync.errors import ExitCode
from florasync.local import mounts
from florasync.local.watcher import Callbacks, ObserverFactory, Watcher
from florasync.service.monitoring import Monitoring
from florasync.service.sweeper import Sweeper
from florasync.service.systemd import Notifier
from florasync.sync.engine import Engine
from florasync.sync.transfer import Outcome

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
RETRY_PICKUP_SECONDS = 2.0
KEY_PROBE_SECONDS = 300.0  # a refused key is asked about again this often (no retry storm)
OBSERVER_RESTARTS = 3  # a watcher that dies more often than this in RESTART_WINDOW_SECONDS:
RESTART_WINDOW_SECONDS = 600.0  # stop pinging the watchdog and let systemd restart the process
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_daemon(*, config_path: str | None, grace_seconds: float) -> ExitCode:
    """``florasync run``: exits 0 after a clean SIGTERM, 3 when FLORA refuses the key at start."""
    rt = runtime.load(config_path)
    config.check_folders(rt.cfg)  # a missing folder at start is a config error (exit 2)
    return Daemon(rt, grace_seconds=grace_seconds).run()


class Daemon:
    """One daemon process: an engine, a watcher, a sweeper and the main loop."""

    def __init__(
        self,
        rt: runtime.Runtime,
        *,
        grace_seconds: float = 10.0,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer_factory: ObserverFactory | None = None,
    ) -> None:
        self.rt = rt
        self._observer_factory = observer_factory
        self._restarts: list[float] = []
        self._exit_code = ExitCode.OK
        self.grace_seconds = grace_seconds
        self.notifier = notifier or Notifier()
        self._clock = clock
        self._stopping = threading.Event()
        self._reload_requested = threading.Event()
        self._wake = threading.Event()
        self._missing: set[int] = set()
        self._next_poll: dict[int, float] = {}
        self._next_rescan = 0.0
        self._next_retry_pickup = 0.0
        self._next_ping = 0.0
        self._next_key_probe = 0.0

    def run(self) -> ExitCode:
        self._observability = Monitoring.build(self.rt.cfg, self.is_healthy)
        self.engine = Engine(
            self.rt,
            retry_deferred=True,
            on_refused=self._refused,
            progress=self._observability.progress,
            client_hooks=self._observability.client_hooks,
        )
        with self.engine:
            self.sweeper = Sweeper(
                self.engine,
                lambda: self.rt.cfg.folders,
                skip=self._missing.__contains__,
                note=self._note_folder,
            )
            self.watcher = self._new_watcher()
            previous = self._install_signals()
            try:
                self._start()
                self._loop()
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)  # type: ignore[arg-type]
                self.notifier.stopping()
                self._shutdown()
                faulthandler.cancel_dump_traceback_later()
        return self._exit_code

    def _install_signals(self) -> dict[int, object]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # embedded (tests): the caller stops us with request_stop()
        return {s: signal.signal(s, self._on_signal) for s in _SIGNALS}

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: stop taking work; requests in flight get the grace period."""
        if not self._stopping.is_set():
            # if stopping overruns the grace period, say where every thread is (stderr)
            faulthandler.dump_traceback_later(self.grace_seconds + 20, exit=False)
        self._stopping.set()
        self.engine.pipeline.begin_close()
        self._wake.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config and the key at the next tick."""
        self._reload_requested.set()
        self._wake.set()

    # -- start and stop -----------------------------------------------------------------------

    def _start(self) -> None:
        self._check_key_at_start()
        self._observability.start(self.engine.pipeline)
        self._arm()
        for index in range(len(self.rt.cfg.folders)):
            self.sweeper.request(index, "catch-up scan")
        self.sweeper.start()
        self._next_rescan = self._clock() + self.rt.cfg.rescan_interval_seconds
        self.notifier.ready(self._status_line())
        log.info("watching %d folder(s); catch-up scan queued", len(self.rt.cfg.folders))

    def _arm(self) -> None:
        """Arm the watches (before any scan, so nothing created meanwhile is missed)."""
        for index, problem in self.watcher.start(self._polled_folders()):
            self._note(index, "watch_failed", problem, level=logging.ERROR)
        if (limit := self.watcher.check_watch_limit()) is not None:
            self._note(None, "watch_limit", limit, level=logging.ERROR)
        count = len(self.rt.cfg.folders)
        polled = [i for i in range(count) if self.watcher.is_polled(i)]
        self._next_poll = dict.fromkeys(polled, self._clock() + self.rt.cfg.poll_interval_seconds)
        self._missing.clear()

    def _check_key_at_start(self) -> None:
        """A key refused at start is exit 3 (systemd does not restart); FLORA unreachable is not.

        Raises:
            errors.CredentialsError: FLORA refused the key or the workspace.
        """
        try:
            workspaces = self.engine.client().probe_workspaces()
        except errors.CredentialsError:
            raise
        except errors.ApiError as exc:
            log.warning("FLORA is not reachable (%s); files wait until it is", exc)
            return
        if self.rt.cfg.workspace_id not in {w.workspace_id for w in workspaces}:
            raise errors.CredentialsError(
                f"workspace {self.rt.cfg.workspace_id} is not accessible with this API key",
                status=403,
                code="forbidden",
            )

    def _shutdown(self) -> None:
        self._stopping.set()
        self.engine.pipeline.begin_close()
        self.watcher.stop()
        self.sweeper.stop()
        self.engine.close(self.grace_seconds)
        self._observability.stop()
        self.notifier.close()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.request_reload()
            return
        log.info("%s received: stopping", signal.Signals(signum).name)
        self.request_stop()

    # -- the main loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            now = self._clock()
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self._reload()
            healthy = self._check_health()
            self._check_folders()
            self._schedule_sweeps(now)
            if now >= self._next_retry_pickup:
                self._pick_up_retries()
                self._next_retry_pickup = now + RETRY_PICKUP_SECONDS
            if self.engine.pipeline.refused is not None and now >= self._next_key_probe:
                self._probe_key()
            self._notify(now, healthy)
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    def is_healthy(self) -> bool:
        """The watcher, the sweeper and every pipeline thread are alive."""
        threads = self.engine.pipeline.threads_alive() and self.sweeper.is_alive()
        return threads and self.watcher.is_healthy()

    def _check_health(self) -> bool:
        """Restart a dead observer and rescan, within a budget; report whether all is alive.

        Past the budget the watcher stays dead and no watchdog ping is sent, so systemd restarts
        the whole process: a process that cannot watch must not look healthy.
        """
        if self.watcher.is_healthy() or self._stopping.is_set():
            return self.is_healthy()
        now = self._clock()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_SECONDS]
        if len(self._restarts) >= OBSERVER_RESTARTS:
            if self.notifier.watchdog_interval is None and self._exit_code == ExitCode.OK:
                log.error("the file watcher keeps dying; stopping (nothing would restart us)")
                self._exit_code = ExitCode.FAILED
                self.request_stop()
            return False
        self._restarts.append(now)
        self._note(
            None,
            "observer_restarted",
            "the file watcher stopped; restarted it and rescanning every folder",
            level=logging.ERROR,
        )
        self.watcher.restart()
        for index in range(len(self.rt.cfg.folders)):
            self.sweeper.request(index, "watcher restarted")
        return self.is_healthy()

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
                self.sweeper.request(index, "folder came back")

    def _schedule_sweeps(self, now: float) -> None:
        for index, due in list(self._next_poll.items()):
            if now >= due and index not in self._missing:
                self.sweeper.request(index, "poll")
                self._next_poll[index] = now + self.rt.cfg.poll_interval_seconds
        if now >= self._next_rescan:
            self._next_rescan = now + self.rt.cfg.rescan_interval_seconds
            for index in range(len(self.rt.cfg.folders)):
                self.sweeper.request(index, "periodic safety rescan")

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
        if pipeline.refused is not None:
            return f"paused: FLORA refused the API key ({pipeline.refused.code}); fix it, reload"
        counts = pipeline.summary.counts
        synced = counts[Outcome.UPLOADED] + counts[Outcome.ATTACHED] + counts[Outcome.UNCHANGED]
        failed = counts[Outcome.FAILED] + counts[Outcome.DEFERRED]
        return (
            f"{len(self.rt.cfg.folders)} folder(s); queued {pipeline.outstanding}, "
            f"settling {pipeline.settling}, synced {synced}, failed {failed}"
        )

    # -- a refused key ------------------------------------------------------------------------

    def _refused(self, exc: errors.CredentialsError) -> None:
        """A worker got 401: everything is parked; the loop asks again every few minutes."""
        self._note(
            None,
            "key_refused",
            f"FLORA refused the API key ({exc.code}): uploads paused; fix the key, then "
            "reload (systemctl reload florasync, or SIGHUP)",
            level=logging.ERROR,
        )
        self._next_key_probe = self._clock() + KEY_PROBE_SECONDS
        self._wake.set()

    def _probe_key(self) -> None:
        try:
            self.engine.client().probe_workspaces()
        except errors.CredentialsError:
            self._next_key_probe = self._clock() + KEY_PROBE_SECONDS
            return
        except errors.ApiError:
            self._next_key_probe = self._clock() + 60.0
            return
        resumed = self.engine.pipeline.resume()
        self._note(None, "key_accepted", f"the API key is accepted again; {resumed} file(s) resume")

    # -- reload -------------------------------------------------------------------------------

    def _reload(self) -> None:
        """Re-read config and key; a bad config is rejected and the running one kept."""
        self.notifier.reloading()
        try:
            new = config.load(self.rt.path, self.rt.env)
            config.check_folders(new)
            key = credentials.load_api_key(new, self.rt.env)
            logs.register_secret(key.reveal())
        except errors.FlorasyncError as exc:
            self._note(
                None,
                "reload_rejected",
                f"new configuration rejected, the running one stays: {exc}",
                level=logging.ERROR,
            )
            self.notifier.ready(self._status_line())
            return
        old = self.rt.cfg
        if later := _restart_only_changes(old, new):
            log.warning("changed settings that take effect after a restart: %s", ", ".join(later))
        self.rt.cfg = old.model_copy(update=_live_settings(new))
        self.engine.set_api_key(key)
        self._rearm([f for f in new.folders if f not in old.folders])
        removed = [f for f in old.folders if f not in new.folders]
        added = len(new.folders) - len(old.folders) + len(removed)
        self._note(
            None,
            "reloaded",
            f"configuration reloaded: {added} folder(s) added, {len(removed)} removed",
        )
        self._next_key_probe = 0.0
        self.notifier.ready(self._status_line())

    def _rearm(self, added: list[FolderConfig]) -> None:
        self.watcher.stop()
        self.sweeper.clear()
        self.watcher = self._new_watcher()
        self._arm()
        for index, folder in enumerate(self.rt.cfg.folders):
            if folder in added:
                self.sweeper.request(index, "folder added by reload")

    # -- helpers ------------------------------------------------------------------------------

    def _new_watcher(self) -> Watcher:
        callbacks = Callbacks(
            offer=self._offer,
            walk=self.sweeper.walk_new_dir,
            forget=self._forget,
            rescan=self.sweeper.request,
        )
        if self._observer_factory is None:
            return Watcher(self.rt.cfg.folders, callbacks, stop=self.engine.stop)
        return Watcher(
            self.rt.cfg.folders,
            callbacks,
            stop=self.engine.stop,
            observer_factory=self._observer_factory,
        )

    def _offer(self, path: str, folder: FolderConfig, closed: bool) -> None:
        self.engine.pipeline.offer(path, folder, closed=closed)

    def _forget(self, path: str) -> None:
        self.engine.journal.forget_files([path])

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

    def _folder_of(self, path: str) -> FolderConfig | None:
        matches = [f for f in self.rt.cfg.folders if path.startswith(str(f.path) + "/")]
        return max(matches, key=lambda f: len(str(f.path)), default=None)

    def _note_folder(self, index: int, kind: str, message: str) -> None:
        self._note(index, kind, message, level=logging.WARNING)

    def _note(
        self, index: int | None, kind: str, message: str, *, level: int = logging.INFO
    ) -> None:
        folder = None if index is None else str(self.rt.cfg.folders[index].path)
        log.log(level, "%s%s", f"{folder}: " if folder else "", message)
        self.engine.journal.note_event(folder, kind, message)


_LIVE_KEYS = ("folders", "poll_interval_seconds", "rescan_interval_seconds")


def _live_settings(new: config.Config) -> dict[str, object]:
    """What a reload applies at once: the folder list and the scan intervals."""
    return {key: getattr(new, key) for key in _LIVE_KEYS}


def _restart_only_changes(old: config.Config, new: config.Config) -> list[str]:
    """Changed keys that a running daemon cannot apply (the key itself is applied)."""
    skip = {*_LIVE_KEYS}
    old_api = old.api.model_dump(exclude={"api_key_env", "api_key_file"})
    new_api = new.api.model_dump(exclude={"api_key_env", "api_key_file"})
    changed = [
        k
        for k in type(new).model_fields
        if k not in skip | {"api"} and getattr(old, k) != getattr(new, k)
    ]
    return changed + (["api"] if old_api != new_api else [])
