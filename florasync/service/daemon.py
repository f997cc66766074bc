"""The daemon (``florasync run``): watch every folder and keep it in sync until SIGTERM.

Owns the start-up order (check the key, arm the watches, queue the catch-up scan, then READY, so
nothing created in between is missed), the main loop (watcher health, folders that go away and
come back, polling, the periodic safety rescan, files put back by ``florasync retry``, a refused
key), SIGHUP reload (the new watches armed before the old ones stop, so nothing written meanwhile is
missed), sd_notify, the control page and its pause and limits (issue 16: ``steering``
decides, ``control.hosting`` serves), and a clean stop on SIGTERM/SIGINT. Folders are named by
their path, so a reload that reorders them keeps what was queued for each. The main loop never
blocks on the pipeline: what may wait on a full queue runs on the sweeper's thread; nor on
FLORA: the probe of a refused key runs on a thread of its own.
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from florasync import errors
from florasync.config import config, runtime
from florasync.config.config import FolderConfig
from florasync.errors import ExitCode
from florasync.local import mounts
from florasync.local.watcher import Callbacks, ObserverFactory, Watcher
from florasync.service import reload
from florasync.service.bandwidth import BandwidthPlan
from florasync.service.control.api import Actions
from florasync.service.control.feed import Feed
from florasync.service.control.hosting import Hosting
from florasync.service.monitoring import Monitoring
from florasync.service.steering import Steering
from florasync.service.sweeper import ROUTINE, Sweeper
from florasync.service.systemd import Notifier
from florasync.state.journal import opening
from florasync.state.journal.store import Journal
from florasync.sync.engine import Engine
from florasync.sync.pipeline import Pipeline

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
        self._missing: set[str] = set()  # roots of folders that are gone for now
        self._next_poll: dict[str, float] = {}
        self._next_rescan = 0.0
        self._next_retry_pickup = 0.0
        self._next_ping = 0.0
        self._next_key_probe = 0.0
        self._key_probe: threading.Thread | None = None
        self._reloads = 0  # a key probe started before a reload asked with the old key
        self.feed = Feed()
        self._control: Hosting | None = None

    def run(self) -> ExitCode:
        self._observability = Monitoring.build(
            self.rt.cfg, self.is_healthy, self._trouble, paused=self._held
        )
        engine = self._engine_once_the_journal_answers()
        if engine is None:
            return self._exit_code  # stopped while waiting
        self.engine = engine
        with self.engine:
            self.engine.pipeline.observer = self.feed
            self.steering = Steering(
                self.rt.cfg.state_dir,
                self.engine.pipeline,
                self.engine.throttle,
                BandwidthPlan(self.rt.cfg.bandwidth),
                cut_uploads=self.rt.cfg.on_pause == "stop",
                changed=self._changed,
                note=self._note_event,
            )
            self.sweeper = Sweeper(
                self.engine,
                lambda: self.rt.cfg.folders,
                skip=self._missing.__contains__,
                note=functools.partial(self._note, level=logging.WARNING),
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

    def _engine_once_the_journal_answers(self) -> Engine | None:
        """The engine; while its journal database is away (down, restarting: not a wrong URL
        or password), wait for it with backoff instead of exiting (None: stopped meanwhile)."""
        delay = 1.0
        while True:
            try:
                return Engine(
                    self.rt,
                    retry_deferred=True,
                    on_refused=self._refused,
                    progress=self._observability.progress,
                    client_hooks=self._observability.client_hooks,
                )
            except errors.JournalError as exc:
                if not exc.retryable:
                    raise
                log.error("%s; trying again in %.0f s", exc, delay)  # noqa: TRY400 -- no traceback
                self.notifier.status(f"waiting for the journal: {exc}")
            previous = self._install_signals()
            try:
                if self._stopping.wait(delay):
                    return None
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)  # type: ignore[arg-type]
            delay = min(delay * 2, 30.0)

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
        if hasattr(self, "engine"):  # not while waiting for the journal at start
            self.engine.pipeline.begin_close()
        self._wake.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config and the key at the next tick."""
        self._reload_requested.set()
        self._wake.set()

    # -- start and stop -----------------------------------------------------------------------

    def _start(self) -> None:
        self.steering.tick()  # a pause on record holds requests before the first one
        if self.steering.held is None:
            self._check_key_at_start()
        else:
            log.warning("%s: nothing is sent to FLORA until it ends", self.steering.held)
        self._observability.start(self.engine.pipeline)
        if self.rt.cfg.control is not None:
            self._control = Hosting(self.rt.cfg, self, self._actions())
            log.info("control page: %s", self._control.start())
        self._arm(self.watcher)
        for root in self._roots():
            self.sweeper.request(root, "catch-up scan")
        self.sweeper.start()
        self._next_rescan = self._clock() + self.rt.cfg.rescan_interval_seconds
        self.notifier.ready(self._status_line())
        log.info("watching %d folder(s); catch-up scan queued", len(self.rt.cfg.folders))

    def _arm(self, watcher: Watcher) -> None:
        """Arm the watches (before any scan, so nothing created meanwhile is missed)."""
        roots = self._roots()
        for index, problem in watcher.start(self._polled_folders()):
            self._note(roots[index], "watch_failed", problem, level=logging.ERROR)
        if (limit := watcher.check_watch_limit()) is not None:
            self._note(None, "watch_limit", limit, level=logging.ERROR)
        polled = [root for i, root in enumerate(roots) if watcher.is_polled(i)]
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
        if self._control is not None:
            self._control.stop()
        self.engine.pipeline.begin_close()
        self.watcher.stop()
        self.sweeper.stop()
        if self._key_probe is not None:  # one request, bounded by the API timeouts
            self._key_probe.join(self.grace_seconds)
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
        """Checks and hand-offs only: nothing here may wait on the pipeline's queues."""
        while not self._stopping.is_set():
            now = self._clock()
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self._reload()
            self.steering.tick()
            healthy = self._check_health()
            self._check_folders()
            self._schedule_sweeps(now)
            if now >= self._next_retry_pickup:
                self.sweeper.pick_up_retries()  # the sweeper's thread offers them
                self._next_retry_pickup = now + RETRY_PICKUP_SECONDS
            refused = self.engine.pipeline.refused is not None
            if refused and now >= self._next_key_probe and self.steering.held is None:
                self._start_key_probe(now)
            self._notify(now, healthy)
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    def _trouble(self) -> str | None:
        """Why the daemon cannot do its work though every thread runs (for /healthz)."""
        engine = getattr(self, "engine", None)
        return engine.pipeline.journal_down if engine is not None else None

    def is_healthy(self) -> bool:
        """The watcher, the sweeper and every pipeline thread are alive."""
        pipeline = self.engine.pipeline
        threads = pipeline.threads_alive() and pipeline.broken is None
        return threads and self.sweeper.is_alive() and self.watcher.is_healthy()

    def _check_health(self) -> bool:
        """Restart a dead observer and rescan, within a budget; report whether all is alive.

        Past the budget the watcher stays dead and no watchdog ping is sent, so systemd restarts
        the whole process: a process that cannot watch must not look healthy. A pipeline thread
        that died cannot be replaced: the same, at once.
        """
        if self.engine.pipeline.broken is not None:
            self._give_up(self.engine.pipeline.broken)
            return False
        if self.watcher.is_healthy() or self._stopping.is_set():
            return self.is_healthy()
        now = self._clock()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_SECONDS]
        if len(self._restarts) >= OBSERVER_RESTARTS:
            self._give_up("the file watcher keeps dying")
            return False
        self._restarts.append(now)
        self._note(
            None,
            "observer_restarted",
            "the file watcher stopped; restarted it and rescanning every folder",
            level=logging.ERROR,
        )
        self.watcher.restart()
        for root in self._roots():
            self.sweeper.request(root, "watcher restarted")
        return self.is_healthy()

    def _give_up(self, why: str) -> None:
        """Without a systemd watchdog nothing would restart us: stop, exit 1."""
        if self.notifier.watchdog_interval is None and self._exit_code == ExitCode.OK:
            log.error("%s; stopping (nothing would restart us)", why)
            self._exit_code = ExitCode.FAILED
            self.request_stop()

    def _check_folders(self) -> None:
        """A folder that disappears (unmount, deletion) is reported, then picked up again."""
        for index, folder in enumerate(self.rt.cfg.folders):
            root = str(folder.path)
            present = folder.path.is_dir()
            if not present and root not in self._missing:
                self._missing.add(root)
                self.watcher.unwatch(index)
                message = "folder disappeared; waiting for it to come back"
                self._note(root, "folder_missing", message, level=logging.ERROR)
            elif present and root in self._missing:
                self._missing.discard(root)
                if (problem := self.watcher.rewatch(index)) is not None:
                    self._note(root, "watch_failed", problem, level=logging.ERROR)
                self._note(root, "folder_back", "folder is back; rescanning it")
                self.sweeper.request(root, "folder came back")

    def _schedule_sweeps(self, now: float) -> None:
        for root, due in list(self._next_poll.items()):
            if now >= due and root not in self._missing:
                self.sweeper.request(root, "poll")
                self._next_poll[root] = now + self.rt.cfg.poll_interval_seconds
        if now >= self._next_rescan:
            self._next_rescan = now + self.rt.cfg.rescan_interval_seconds
            for root in self._roots():
                self.sweeper.request(root, "periodic safety rescan")

    def _notify(self, now: float, healthy: bool) -> None:
        self.notifier.status(self._status_line())
        interval = self.notifier.watchdog_interval
        if interval is not None and healthy and now >= self._next_ping:
            self.notifier.watchdog()  # only a loop that has just checked every thread pings
            self._next_ping = now + interval

    def _status_line(self) -> str:
        pipeline = self.engine.pipeline
        if self.steering.held is not None:
            return f"paused: {self.steering.held}; queued {pipeline.outstanding}"
        if pipeline.refused is not None:
            return f"paused: FLORA refused the API key ({pipeline.refused.code}); fix it, reload"
        if pipeline.journal_down is not None:
            return f"waiting for the journal: {pipeline.journal_down}"
        summary = pipeline.summary
        return (
            f"{len(self.rt.cfg.folders)} folder(s); queued {pipeline.outstanding}, "
            f"settling {pipeline.settling}, synced {summary.synced()}, failed {summary.failed()}"
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

    def _start_key_probe(self, now: float) -> None:
        """Ask FLORA about the key on a thread of its own: one request may last its read timeout,
        longer than systemd's watchdog waits for the main loop (issue 11)."""
        if self._key_probe is not None and self._key_probe.is_alive():
            return
        self._next_key_probe = now + KEY_PROBE_SECONDS
        self._key_probe = threading.Thread(
            target=self._probe_key, args=(self._reloads,), name="florasync-key-probe", daemon=True
        )
        self._key_probe.start()

    def _probe_key(self, reloads: int) -> None:
        try:
            self.engine.client().probe_workspaces()
        except errors.CredentialsError:
            self._probe_again(reloads, KEY_PROBE_SECONDS)
            return
        except errors.ApiError:
            self._probe_again(reloads, 60.0)
            return
        resumed = self.engine.pipeline.resume()  # the workers take the parked jobs
        self._note(None, "key_accepted", f"the API key is accepted again; {resumed} file(s) resume")

    def _probe_again(self, reloads: int, seconds: float) -> None:
        if reloads == self._reloads:  # else a reload brought a key: the loop asks again at once
            self._next_key_probe = self._clock() + seconds

    # -- reload -------------------------------------------------------------------------------

    def _reload(self) -> None:
        """Re-read config and key; a bad config is rejected and the running one kept."""
        self.notifier.reloading()
        try:
            new = reload.read(self.rt.path, self.rt.env, self.rt.cfg)
        except errors.FlorasyncError as exc:
            self._note(
                None,
                "reload_rejected",
                f"new configuration rejected, the running one stays: {exc}",
                level=logging.ERROR,
            )
            self.notifier.ready(self._status_line())
            return
        if new.restart_only:
            changed = ", ".join(new.restart_only)
            log.warning("changed settings that take effect after a restart: %s", changed)
        self.rt.cfg = new.cfg
        self.steering.reconfigure(new.cfg.bandwidth, cut_uploads=new.cfg.on_pause == "stop")
        self.engine.journal.set_folder_ids(opening.folder_ids(new.cfg))
        self.engine.set_api_key(new.key)
        self.engine.pipeline.projects.forget_failures()  # a new key or role may create them now
        self._reloads += 1
        self._rearm(new.added)
        message = (
            f"configuration reloaded: {len(new.added)} folder(s) added, {len(new.removed)} removed"
        )
        self._note(None, "reloaded", message)
        self._next_key_probe = 0.0
        self.notifier.ready(self._status_line())

    def _rearm(self, added: list[FolderConfig]) -> None:
        """Watch the new folder list; lose nothing that happened meanwhile (issue 11).

        The new watches are armed while the old ones still run, so every event lands in one
        or the other; the old watcher's unhandled events move over; queued rescans stay.
        """
        old, self.watcher = self.watcher, self._new_watcher()
        self._arm(self.watcher)
        old.stop()
        self.watcher.adopt(old.take_pending())
        for folder in added:
            self.sweeper.request(str(folder.path), "folder added by reload")

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

    def _roots(self) -> list[str]:
        return [str(f.path) for f in self.rt.cfg.folders]

    def _offer(self, path: str, folder: FolderConfig, closed: bool) -> None:
        self.engine.pipeline.offer(path, folder, closed=closed)

    def _forget(self, path: str) -> None:
        """A file, or a directory and everything under it, is gone: ``status`` follows."""
        self.engine.journal.forget_tree(path)

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

    def _note(
        self, folder: str | None, kind: str, message: str, *, level: int = logging.INFO
    ) -> None:
        log.log(level, "%s%s", f"{folder}: " if folder else "", message)
        self.engine.journal.note_event(folder, kind, message)
        self.feed.changed()

    # -- what the control page reads and asks (control.report.Source, control.api.Actions) ----

    @property
    def journal(self) -> Journal:
        return self.engine.journal

    @property
    def pipeline(self) -> Pipeline:
        return self.engine.pipeline

    def health(self) -> tuple[bool, str | None]:
        return self.is_healthy(), self._trouble()

    def watch_states(self) -> dict[str, str]:
        """Each folder's watch: armed, polling, overflow-rescan (a rescan for lost events, a
        watcher restart...: not a routine one), degraded or missing."""
        rescanning = {
            root for root, why in self.sweeper.pending_reasons().items() if why not in ROUTINE
        }
        healthy = self.watcher.is_healthy()
        states = {}
        for index, root in enumerate(self._roots()):
            if root in self._missing:
                states[root] = "missing"
            elif not healthy:
                states[root] = "degraded"
            elif root in rescanning:
                states[root] = "overflow-rescan"
            else:
                states[root] = "polling" if self.watcher.is_polled(index) else "armed"
        return states

    def _actions(self) -> Actions:
        return Actions(retry=self._retry, rescan=self._rescan)

    def _retry(self, paths: list[str] | None) -> list[str]:
        """Put failed files back (all, or these); the sweeper offers them at once."""
        retried = self.engine.journal.reset_failed(self.rt.cfg.workspace_id, paths)
        if retried:
            self.sweeper.pick_up_retries()
            self._note(None, "retry", f"{len(retried)} failed file(s) put back in the queue")
        return retried

    def _rescan(self, root: str) -> bool:
        if root not in self._roots():
            return False
        self.sweeper.request(root, "asked for on the control page")
        return True

    def _note_event(self, kind: str, message: str) -> None:
        """A pause or a resume for ``status``: it has happened even when the journal cannot
        record it now (the database away), so that is only logged."""
        try:
            self._note(None, kind, message)
        except errors.JournalError as exc:
            log.warning("%s (not recorded in the journal: %s)", message, exc)

    def _held(self) -> str | None:
        steering = getattr(self, "steering", None)
        return steering.held if steering is not None else None

    def _changed(self) -> None:
        self.feed.changed()
        self._wake.set()  # STATUS= says paused at once
