"""Rescans on request: one folder at a time on one thread, requests for the same folder merged.

Owns the daemon's queue of rescans (the catch-up scan, lost events, polling, the periodic safety
rescan, a folder that came back or was added by a reload), the pick-up of files put back by
``florasync retry``, and the walk of a directory that appeared while watching. Requests name a
folder by its path, so a reload that changes the folder list keeps them. Whatever may block on
the pipeline's full queues runs here: the main loop stays free to check health and ping the
watchdog (issue 11), and the watcher's drain thread stays free to hand on a file a user just
saved while a directory of thousands moved in (issue 12).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence

from florasync import errors
from florasync.config.config import FolderConfig
from florasync.errors import StoppedError
from florasync.local import scanner
from florasync.local.rules import FolderRules
from florasync.sync import sweep
from florasync.sync.engine import Engine

log = logging.getLogger(__name__)

ROUTINE = frozenset({"poll", "catch-up scan", "periodic safety rescan"})
JOURNAL_RETRY_SECONDS = 5.0  # a sweep that met an unreachable journal waits this long


def folder_of(path: str, folders: Sequence[FolderConfig]) -> FolderConfig | None:
    """The folder whose tree holds ``path`` (the deepest, when folders nest)."""
    matches = [f for f in folders if path.startswith(str(f.path) + "/")]
    return max(matches, key=lambda f: len(str(f.path)), default=None)


class Sweeper:
    """A thread that sweeps the folders it is asked to, in request order."""

    def __init__(
        self,
        engine: Engine,
        folders: Callable[[], Sequence[FolderConfig]],
        *,
        skip: Callable[[str], bool],
        note: Callable[[str, str, str], None],
    ) -> None:
        self._engine = engine
        self._folders = folders
        self._skip = skip
        self._note = note
        self._requests: dict[str, str] = {}
        self._walks: dict[tuple[str, str], None] = {}  # (folder root, directory): in order
        self._retries_wanted = False
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="florasync-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def request(self, root: str, reason: str) -> None:
        """Sweep the folder at ``root`` soon (merged with a pending request; any thread)."""
        with self._cond:
            if root not in self._requests:
                self._requests[root] = reason
                self._cond.notify()

    def pending(self) -> list[str]:
        """The folders waiting for a sweep, in order."""
        with self._cond:
            return list(self._requests)

    def pending_reasons(self) -> dict[str, str]:
        """The folders waiting for a sweep, with why (``ROUTINE`` ones, or lost events...)."""
        with self._cond:
            return dict(self._requests)

    def pick_up_retries(self) -> None:
        """Offer the files ``florasync retry`` put back, on this thread (it may block)."""
        with self._cond:
            self._retries_wanted = True
            self._cond.notify()

    def walk_new_dir(self, folder: FolderConfig, reldir: str) -> None:
        """A directory appeared: its files may predate its watch, so walk it soon, on this
        thread (any thread may ask; the walk may block on the pipeline's full queues)."""
        with self._cond:
            self._walks[(str(folder.path), reldir)] = None
            self._cond.notify()

    def _run(self) -> None:
        while (task := self._next()) is not None:
            try:
                task()
            except errors.JournalError as exc:  # its database went away: try again later
                self._engine.pipeline.journal_trouble(exc)
                self._requeue(task)
                with self._cond:
                    self._cond.wait(JOURNAL_RETRY_SECONDS)  # stop() wakes it
            else:
                self._engine.pipeline.journal_back()

    def _requeue(self, task: Callable[[], None]) -> None:
        """Put back what met an unreachable journal, to be done once it is back."""
        if isinstance(task, functools.partial) and task.func == self._sweep:
            self.request(*task.args)
        elif isinstance(task, functools.partial) and task.func == self._walk:
            with self._cond:
                self._walks[task.args] = None
        else:
            self.pick_up_retries()

    def _next(self) -> Callable[[], None] | None:
        """What to do next: retries (a user asked), new directories, then rescans in order."""
        with self._cond:
            while not (self._requests or self._walks or self._retries_wanted or self._closed):
                self._cond.wait()
            if self._closed:
                return None
            if self._retries_wanted:  # cheap, and what a user just asked for: first
                self._retries_wanted = False
                return self._offer_retries
            if self._walks:
                walk = next(iter(self._walks))
                del self._walks[walk]
                return functools.partial(self._walk, *walk)
            root = next(iter(self._requests))
            return functools.partial(self._sweep, root, self._requests.pop(root))

    def _walk(self, root: str, reldir: str) -> None:
        folder = next((f for f in self._folders() if str(f.path) == root), None)
        if folder is None or self._skip(root):
            return  # removed by a reload, or gone (its rescan on return covers the directory)
        rules = FolderRules(tuple(folder.include), tuple(folder.exclude))
        try:
            for cand in scanner.scan(
                folder.path, rules=rules, recursive=True, start=reldir, stop=self._engine.stop
            ):
                if not self._engine.pipeline.offer(cand.abspath, folder):
                    return  # closing
        except StoppedError:
            return

    def _offer_retries(self) -> None:
        pipeline = self._engine.pipeline
        paths = self._engine.journal.take_retry_requests()
        if paths:
            pipeline.projects.forget_failures()  # `florasync retry`: ask FLORA about names again
        for path in paths:
            folder = folder_of(path, self._folders())
            if folder is not None and not pipeline.offer(path, folder):
                return  # closing

    def _sweep(self, root: str, reason: str) -> None:
        folder = next((f for f in self._folders() if str(f.path) == root), None)
        if folder is None or self._skip(root):
            return  # removed by a reload, or gone for now (it is rescanned when it returns)
        log.info("scanning %s (%s)", folder.path, reason)
        if reason not in ROUTINE:
            self._note(root, "rescan", reason)
        engine = self._engine
        found = sweep.sweep_folder(
            folder, journal=engine.journal, pipeline=engine.pipeline, stop=engine.stop
        )
        log.info(
            "scanned %s: %d file(s), %d unchanged, %d queued",
            folder.path,
            found.files,
            found.unchanged,
            found.queued,
        )
