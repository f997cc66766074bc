"""Rescans on request: one folder at a time on one thread, requests for the same folder merged.

Owns the daemon's queue of rescans (the catch-up scan, lost events, polling, the periodic safety
rescan, a folder that came back or was added by a reload) and the walk of a directory that
appeared while watching. The main loop stays free to check health and ping the watchdog while a
long scan runs here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from florasync.config.config import FolderConfig
from florasync.errors import StoppedError
from florasync.local import scanner
from florasync.local.rules import FolderRules
from florasync.sync import sweep
from florasync.sync.engine import Engine

log = logging.getLogger(__name__)

ROUTINE = frozenset({"poll", "catch-up scan", "periodic safety rescan"})


class Sweeper:
    """A thread that sweeps the folders it is asked to, in request order."""

    def __init__(
        self,
        engine: Engine,
        folders: Callable[[], Sequence[FolderConfig]],
        *,
        skip: Callable[[int], bool],
        note: Callable[[int, str, str], None],
    ) -> None:
        self._engine = engine
        self._folders = folders
        self._skip = skip
        self._note = note
        self._requests: dict[int, str] = {}
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

    def request(self, index: int, reason: str) -> None:
        """Sweep folder ``index`` soon (merged with a pending request; safe from any thread)."""
        with self._cond:
            if index not in self._requests:
                self._requests[index] = reason
                self._cond.notify()

    def clear(self) -> None:
        """Forget pending requests (the folder list changed)."""
        with self._cond:
            self._requests.clear()

    def walk_new_dir(self, folder: FolderConfig, reldir: str) -> None:
        """A directory appeared: its files may predate its watch, so walk it at once."""
        rules = FolderRules(tuple(folder.include), tuple(folder.exclude))
        try:
            for cand in scanner.scan(
                folder.path, rules=rules, recursive=True, start=reldir, stop=self._engine.stop
            ):
                self._engine.pipeline.offer(cand.abspath, folder)
        except StoppedError:
            return

    def _run(self) -> None:
        while (request := self._next()) is not None:
            self._sweep(*request)

    def _next(self) -> tuple[int, str] | None:
        with self._cond:
            while not self._requests and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            index = next(iter(self._requests))
            return index, self._requests.pop(index)

    def _sweep(self, index: int, reason: str) -> None:
        folders = self._folders()
        if index >= len(folders) or self._skip(index):
            return
        folder = folders[index]
        log.info("scanning %s (%s)", folder.path, reason)
        if reason not in ROUTINE:
            self._note(index, "rescan", reason)
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
