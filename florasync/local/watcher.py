"""The file watcher: one watchdog observer for every folder, whose events are only hints.

Owns the watchdog side of the daemon. The event handler records the path (and whether a
close-after-write was seen) in a bounded de-duplicating pending set and never raises; a drain
thread turns pending paths into actions using ``stat`` (a directory at a time in turn, newest
first: a user's save goes before a burst's backlog): settle a file, have a new directory walked,
forget a deleted file. What inotify cannot promise is reported as a need to rescan: a queue
overflow (watchdog only logs it), a full pending set, a watch limit reached, a dead observer.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat as stat_mode
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntFlag
from pathlib import Path

from watchdog import events
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from florasync.config.config import FolderConfig
from florasync.local.rules import FolderRules

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 10.0
MAX_PENDING = 100_000  # beyond this, events are dropped and the folder is rescanned instead
_IDLE_DRAIN_SECONDS = 5.0  # new events and stopping notify the drain thread; this is a safety net
DRAIN_BATCH = 4  # paths taken per turn: a save made now is acted on after at most these
_OVERFLOW_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")

WANTED_EVENTS = (  # what ``_hints`` reads; watchdog asks inotify for nothing else (issue 12)
    events.FileCreatedEvent,
    events.DirCreatedEvent,
    events.FileModifiedEvent,
    events.FileClosedEvent,
    events.FileDeletedEvent,
    events.DirDeletedEvent,
    events.FileMovedEvent,
    events.DirMovedEvent,
)
"""Opens and closes without writing are left out: each file florasync reads (the hash, the
upload) would otherwise add four events, and a burst's events would overflow inotify's queue
(16,384 by default) sooner: a burst file costs 3 events instead of 8."""
ObserverFactory = Callable[[], BaseObserver]  # tests swap in an observer that dies


class Hint(IntFlag):
    """What an event suggested about a path; the drain thread decides with ``stat``."""

    CHANGED = 0
    CLOSED = 1  # closed after writing: the settle fast path
    DIR = 2  # a directory appeared: walk it at once
    GONE = 4  # deleted or moved away


@dataclass
class _Watched:
    """A folder as the watcher sees it."""

    index: int
    folder: FolderConfig
    rules: FolderRules
    root: str
    watch: ObservedWatch | None = None
    polled: bool = False


@dataclass
class Callbacks:
    """What the watcher asks of the daemon."""

    offer: Callable[[str, FolderConfig, bool], None]  # (path, folder, closed)
    walk: Callable[[FolderConfig, str], None]  # (folder, directory relative to it)
    forget: Callable[[str], None]  # a file or a directory (and all under it) is gone
    rescan: Callable[[str, str], None]  # (folder root, reason)


class _PendingSet:
    """Paths waiting for the drain thread, merged per path, bounded, grouped by directory.

    ``take`` serves the directories in turn, one path each, newest first within a directory:
    a directory where nothing was pending (a user saving into it) is served next however many
    paths a burst queued elsewhere, and within a directory the latest save goes before the
    backlog. Order only: every path is taken once (issue 12, "fresh files first").
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cond = threading.Condition()
        self._dirs: OrderedDict[str, dict[str, tuple[int, Hint]]] = OrderedDict()
        self._count = 0

    def add(self, path: str, index: int, hint: Hint, *, bounded: bool = True) -> bool:
        """Record ``path`` (merged with what is pending for it); False when full."""
        directory = path.rpartition("/")[0]
        with self.cond:
            paths = self._dirs.get(directory, {})  # a listed directory is never empty
            known = paths.get(path)
            if known is None:
                if bounded and self._count >= self.limit:
                    return False
                if not paths:
                    self._dirs[directory] = paths
                    self._dirs.move_to_end(directory, last=False)  # its first path: next turn
                self._count += 1
            paths[path] = (index, hint | known[1] if known else hint)
            self.cond.notify()
            return True

    def take(self, timeout: float, limit: int) -> list[tuple[str, tuple[int, Hint]]]:
        """Up to ``limit`` paths, directories in turn (waits up to ``timeout`` for one)."""
        with self.cond:
            if not self._count:
                self.cond.wait(timeout)
            batch: list[tuple[str, tuple[int, Hint]]] = []
            while self._dirs and len(batch) < limit:
                directory, paths = next(iter(self._dirs.items()))
                batch.append(paths.popitem())  # the newest of that directory
                if paths:
                    self._dirs.move_to_end(directory)  # the next directory's turn
                else:
                    del self._dirs[directory]
            self._count -= len(batch)
            return batch

    def take_all(self) -> list[tuple[str, tuple[int, Hint]]]:
        with self.cond:
            batch = [item for paths in self._dirs.values() for item in paths.items()]
            self._dirs.clear()
            self._count = 0
            return batch

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


class _Handler(events.FileSystemEventHandler):
    """Runs on watchdog's observer thread: records the path, never raises."""

    def __init__(self, watcher: Watcher, watched: _Watched) -> None:
        self._watcher = watcher
        self._watched = watched

    def dispatch(self, event: events.FileSystemEvent) -> None:
        try:
            self._watcher.record(self._watched, event)
        except Exception as exc:  # an exception here would kill the observer thread
            log.error(  # noqa: TRY400 -- a traceback only with --debug
                "watch event handling failed (%s); rescanning %s",
                exc,
                self._watched.root,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            self._watcher.callbacks.rescan(self._watched.root, "event handler error")


class Watcher:
    """Watches the folders it is given; ``start`` arms every watch before returning."""

    def __init__(
        self,
        folders: Sequence[FolderConfig],
        callbacks: Callbacks,
        *,
        stop: threading.Event,
        max_pending: int = MAX_PENDING,
        observer_factory: ObserverFactory = Observer,
    ) -> None:
        self.callbacks = callbacks
        self._stop = stop
        self._pending = _PendingSet(max_pending)
        self._observer_factory = observer_factory
        self._observer: BaseObserver | None = None
        self._watched = [
            _Watched(i, f, FolderRules(tuple(f.include), tuple(f.exclude)), str(f.path))
            for i, f in enumerate(folders)
        ]
        self._drain_thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._overflow = _OverflowHook(self)
        self._overflow_told = False
        self.restarts = 0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, polled: set[int]) -> list[tuple[int, str]]:
        """Arm watches (except for ``polled`` folders); return folders that fell back to polling."""
        self._overflow.install()
        self._observer = self._observer_factory()
        # start first: a running observer starts each emitter inside schedule(), so a folder's
        # inotify error (ENOSPC...) surfaces there, per folder, instead of in start() for all
        self._observer.start()
        fallbacks = []
        for w in self._watched:
            w.polled = w.index in polled
            if not w.polled and (problem := self._schedule(w)) is not None:
                w.polled = True
                fallbacks.append((w.index, problem))
        self._start_drain()
        return fallbacks

    def stop(self) -> None:
        self._closed.set()
        self._overflow.remove()
        if self._observer is not None:
            self._observer.stop()
            if self._observer.is_alive():
                # bounded: a stop must not hang on watchdog internals (its threads are daemons)
                self._observer.join(timeout=STOP_TIMEOUT_SECONDS)
                if self._observer.is_alive():
                    log.warning("the watchdog observer did not stop in time; leaving it")
        self._pending.wake()
        if self._drain_thread is not None:
            self._drain_thread.join(timeout=STOP_TIMEOUT_SECONDS)

    def is_healthy(self) -> bool:
        """The observer, its emitters and the drain thread are alive."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        if self._drain_thread is None or not self._drain_thread.is_alive():
            return False
        return all(emitter.is_alive() for emitter in observer.emitters)

    def restart(self) -> None:
        """Replace a dead observer (the folders are then rescanned by the caller)."""
        old = self._observer
        if old is not None:
            old.stop()
            if old.is_alive():
                old.join(timeout=5.0)
        self._observer = self._observer_factory()
        self._observer.start()
        for w in self._watched:
            w.watch = None
            if not w.polled and self._schedule(w) is not None:
                w.polled = True
        if self._drain_thread is None or not self._drain_thread.is_alive():
            self._start_drain()
        self.restarts += 1

    def _start_drain(self) -> None:
        self._drain_thread = threading.Thread(target=self._drain, name="florasync-watch")
        self._drain_thread.daemon = True
        self._drain_thread.start()

    def unwatch(self, index: int) -> None:
        """Drop the watch of a folder that disappeared."""
        w = self._watched[index]
        if w.watch is not None and self._observer is not None:
            with contextlib.suppress(KeyError):  # watchdog dropped it when the directory went
                self._observer.unschedule(w.watch)
        w.watch = None

    def rewatch(self, index: int) -> str | None:
        """Watch a folder again (it came back); a problem string when it must be polled."""
        w = self._watched[index]
        if w.polled or w.watch is not None:
            return None
        problem = self._schedule(w)
        if problem is not None:
            w.polled = True
        return problem

    def is_polled(self, index: int) -> bool:
        return self._watched[index].polled

    def check_watch_limit(self) -> str | None:
        """watchdog swallows the watch limit for subdirectories: count what inotify holds.

        When some directories could not be watched, every recursive watched folder falls back
        to polling; returns the message to report (naming the sysctl), else None.
        """
        held = count_inotify_watches()
        watched = [w for w in self._watched if not w.polled]
        needed = sum(count_dirs(w.root, w.folder.recursive) for w in watched)
        if held is None or held >= needed:
            return None
        for w in watched:
            if w.folder.recursive:
                self.unwatch(w.index)
                w.polled = True
        return (
            f"only {held} of {needed} directories could be watched: raise "
            "`sysctl fs.inotify.max_user_watches` (and in /etc/sysctl.d/); "
            "polling recursive folders meanwhile"
        )

    def watched_roots(self) -> list[str]:
        return [w.root for w in self._watched if w.watch is not None]

    # -- events -------------------------------------------------------------------------------

    def record(self, watched: _Watched, event: events.FileSystemEvent) -> None:
        """Map one watchdog event onto the pending set (observer thread; must be cheap)."""
        for path, hint in _hints(event):
            if not self._is_relevant(watched, path, hint):
                continue
            if not self._pending.add(path, watched.index, hint):
                self.callbacks.rescan(watched.root, "too many pending events")

    def overflowed(self) -> None:
        """The kernel dropped events (one inotify instance serves every folder): rescan all."""
        if not self._overflow_told:
            self._overflow_told = True  # once per watcher: a long burst may overflow often
            log.warning(
                "the kernel dropped file events (inotify queue overflow; "
                "fs.inotify.max_queued_events is %s): rescanning every watched folder, and a "
                "file whose close was lost waits settle_seconds; raise it with `sysctl "
                "fs.inotify.max_queued_events=131072` (and in /etc/sysctl.d/) if bursts are usual",
                _max_queued_events(),
            )
        for w in self._watched:
            if not w.polled:
                self.callbacks.rescan(w.root, "inotify queue overflow")

    def take_pending(self) -> list[tuple[str, Hint]]:
        """The events not yet acted on (a stopped watcher hands them to its successor)."""
        return [(path, hint) for path, (_, hint) in self._pending.take_all()]

    def adopt(self, pending: list[tuple[str, Hint]]) -> None:
        """Take over a predecessor's pending events, for the folders this watcher watches."""
        for path, hint in pending:
            watched = self._watched_for(path)
            if watched is None or not self._is_relevant(watched, path, hint):
                continue
            if not self._pending.add(path, watched.index, hint):
                self.callbacks.rescan(watched.root, "too many pending events")

    def _watched_for(self, path: str) -> _Watched | None:
        inside = [w for w in self._watched if path.startswith(w.root + "/")]
        return max(inside, key=lambda w: len(w.root), default=None)

    def _is_relevant(self, watched: _Watched, path: str, hint: Hint) -> bool:
        root = watched.root
        if not path.startswith(root + "/"):
            return False
        relpath = path[len(root) + 1 :]
        parts = relpath.split("/")
        if not watched.folder.recursive and len(parts) > 1:
            return False
        if any(watched.rules.is_ignored_dir(p) for p in parts[:-1]):
            return False
        if hint & Hint.DIR:
            return watched.folder.recursive and not watched.rules.is_ignored_dir(parts[-1])
        return bool(hint & Hint.GONE) or watched.rules.is_wanted(relpath)

    def _drain(self) -> None:
        while not (self._stop.is_set() or self._closed.is_set()):
            batch = self._pending.take(_IDLE_DRAIN_SECONDS, DRAIN_BATCH)
            for done, (path, (index, hint)) in enumerate(batch):
                if self._stop.is_set() or self._closed.is_set():
                    self._put_back(batch[done:])  # a successor adopts them (reload)
                    return
                self._act_safely(path, self._watched[index], hint)

    def _put_back(self, items: list[tuple[str, tuple[int, Hint]]]) -> None:
        for path, (index, hint) in items:
            self._pending.add(path, index, hint, bounded=False)  # they were counted in before

    def _act_safely(self, path: str, watched: _Watched, hint: Hint) -> None:
        try:
            self._act(path, watched, hint)
        except Exception as exc:  # the drain thread must live: the folder's rescan catches up
            log.error(  # noqa: TRY400 -- a traceback only with --debug
                "acting on an event for %s failed (%s); rescanning %s",
                path,
                exc,
                watched.root,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            self.callbacks.rescan(watched.root, "event handling error")

    def _act(self, path: str, watched: _Watched, hint: Hint) -> None:
        """Decide with ``lstat``: walk a new directory, offer a file, forget what is gone.

        A symlink is offered like a file: the pipeline's admission follows it only inside the
        folder. ``_drain`` runs this for every pending path, so it never raises.
        """
        try:
            st = os.lstat(path)
        except OSError:
            if hint & Hint.GONE:
                self.callbacks.forget(path)
            return
        relpath = path[len(watched.root) + 1 :]
        if stat_mode.S_ISDIR(st.st_mode):
            if hint & Hint.DIR:
                self.callbacks.walk(watched.folder, relpath)
            return
        is_file = stat_mode.S_ISREG(st.st_mode) or stat_mode.S_ISLNK(st.st_mode)
        if is_file and watched.rules.is_wanted(relpath):
            self.callbacks.offer(path, watched.folder, bool(hint & Hint.CLOSED))

    def _schedule(self, w: _Watched) -> str | None:
        """Watch one folder; a problem string when it cannot be watched and must be polled."""
        assert self._observer is not None  # noqa: S101 -- start() and restart() create it first
        handler = _Handler(self, w)
        try:
            w.watch = self._observer.schedule(
                handler, w.root, recursive=w.folder.recursive, event_filter=list(WANTED_EVENTS)
            )
        except OSError as exc:
            w.watch = None
            return _watch_problem(exc)
        return None


class _OverflowHook(logging.Handler):
    """watchdog reports an inotify queue overflow only as a log warning: listen for it."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__(level=logging.WARNING)
        self._watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._watcher.overflowed()

    def install(self) -> None:
        for name in _OVERFLOW_LOGGERS:
            logging.getLogger(name).addHandler(self)

    def remove(self) -> None:
        for name in _OVERFLOW_LOGGERS:
            logging.getLogger(name).removeHandler(self)


def _not_a_stop_race(record: logging.LogRecord) -> bool:
    """watchdog logs an ERROR when an emitter's last read returns while it is being stopped
    (a reload, a restart, the end): nothing is lost then, so it must not reach a user's log."""
    return "called when the thread is inactive" not in record.getMessage()


for _name in _OVERFLOW_LOGGERS:
    logging.getLogger(_name).addFilter(_not_a_stop_race)


_FILE_HINTS = {
    events.EVENT_TYPE_CREATED: Hint.CHANGED,
    events.EVENT_TYPE_MODIFIED: Hint.CHANGED,
    events.EVENT_TYPE_CLOSED: Hint.CLOSED,
    events.EVENT_TYPE_DELETED: Hint.GONE,
}  # opened, closed without writing and the rest say nothing about content


def _hints(event: events.FileSystemEvent) -> list[tuple[str, Hint]]:
    src = os.fsdecode(event.src_path)
    kind = event.event_type
    if kind == events.EVENT_TYPE_MOVED:
        dest = os.fsdecode(event.dest_path)
        if event.is_directory:  # what was under the old name is gone from the journal too
            return [(src, Hint.GONE | Hint.DIR), (dest, Hint.DIR)]
        return [(src, Hint.GONE), (dest, Hint.CHANGED)]
    if event.is_directory:
        if kind == events.EVENT_TYPE_CREATED:
            return [(src, Hint.DIR)]
        return [(src, Hint.GONE | Hint.DIR)] if kind == events.EVENT_TYPE_DELETED else []
    hint = _FILE_HINTS.get(kind)
    return [] if hint is None else [(src, hint)]


def _watch_problem(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return (
            "the inotify watch limit is reached; raise it with "
            "`sysctl fs.inotify.max_user_watches=524288` (and in /etc/sysctl.d/); "
            "polling this folder meanwhile"
        )
    if exc.errno == errno.EMFILE:
        return (
            "the inotify instance limit is reached; raise `sysctl "
            "fs.inotify.max_user_instances`; polling this folder meanwhile"
        )
    return f"cannot watch ({exc.strerror or exc}); polling this folder meanwhile"


def _max_queued_events(proc_sys: Path = Path("/proc/sys/fs/inotify")) -> str:
    """The kernel's inotify queue length per instance, as text ("unknown" off Linux)."""
    try:
        return (proc_sys / "max_queued_events").read_text().strip()
    except OSError:
        return "unknown"


def count_inotify_watches(proc_self: Path = Path("/proc/self")) -> int | None:
    """Inotify watches this process holds (from fdinfo), or None when unknown (not Linux)."""
    total = 0
    try:
        fds = list((proc_self / "fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            if str(fd.readlink()) != "anon_inode:inotify":
                continue
            info = (proc_self / "fdinfo" / fd.name).read_text()
        except OSError:
            continue
        total += sum(1 for line in info.splitlines() if line.startswith("inotify wd:"))
    return total


def count_dirs(root: str, recursive: bool) -> int:
    """Directories under ``root`` (itself included) that a recursive inotify watch covers."""
    if not recursive:
        return 1
    count = 0
    stack = [root]
    while stack:
        count += 1
        try:
            with os.scandir(stack.pop()) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return count
