"""The stat cache in front of hashing: one stat and the journal decide whether a file is read.

Owns the rule of issue #4: a file whose (device, inode, size, mtime_ns, ctime_ns) matches what the
journal recorded is not read again, and a renamed file (same device and inode, size and mtime) is
recognised without a read. In a full scan it asks the journal once per directory and forgets the
files that disappeared; the watcher asks per path.
"""

from __future__ import annotations

from typing import NamedTuple

from florasync.local.identity import FileStat
from florasync.state.journal.records import KnownFile
from florasync.state.journal.store import Journal


class Verdict(NamedTuple):
    """What the stat cache knows of a candidate file."""

    digest: str | None  # the content, when the stat proves it has not changed
    unchanged: bool  # already attached to its project: nothing at all to do


UNKNOWN = Verdict(digest=None, unchanged=False)


class Catalog:
    """Classifies candidates of one scan (``full_scan=True``) or single watcher events."""

    def __init__(self, journal: Journal, workspace_id: str, *, full_scan: bool) -> None:
        self._journal = journal
        self._workspace_id = workspace_id
        self._full_scan = full_scan
        self._dir: str | None = None
        self._project: str | None = None
        self._entries: dict[str, KnownFile] = {}
        self._seen: set[str] = set()
        self.dirs_seen: set[str] = set()

    def classify(self, path: str, stat: FileStat, project_id: str) -> Verdict:
        """The verdict for ``path`` with ``stat``, mapped to ``project_id``."""
        known = self._lookup(path, project_id)
        if known is None:
            return self._renamed(stat)
        # unpacked, not a named tuple per row: asked per file of a rescan (issue 12)
        _, digest, has_problem, is_attached, dev, ino, size, mtime_ns, ctime_ns = known
        if digest and not has_problem and (dev, ino, size, mtime_ns, ctime_ns) == stat:
            return Verdict(digest, is_attached == 1)
        if dev is None or ino != stat.ino:
            return self._renamed(stat)
        return UNKNOWN

    def finish(self) -> None:
        """End of a full scan's directory run: forget files of the last directory not seen."""
        self._forget_unseen()
        self._dir = None

    def _renamed(self, stat: FileStat) -> Verdict:
        """The digest of a file moved here from elsewhere (same inode, same data version)."""
        renamed = self._journal.by_inode(self._workspace_id, stat)
        if renamed is not None and renamed.digest and _same_version(renamed.stat, stat):
            return Verdict(renamed.digest, unchanged=False)
        return UNKNOWN

    def _lookup(self, path: str, project_id: str) -> KnownFile | None:
        if not self._full_scan:
            return self._journal.known_file(self._workspace_id, path, project_id)
        directory, _, name = path.rpartition("/")
        if directory != self._dir or project_id != self._project:
            self._enter(directory, project_id)
        self._seen.add(name)
        return self._entries.get(name)

    def _enter(self, directory: str, project_id: str) -> None:
        """Read ``directory``'s entries (once per directory and project: per directory in a
        sweep, whose folder has one project); forget the unseen files of the one left."""
        if directory != self._dir:
            self._forget_unseen()
            self._seen = set()
            self.dirs_seen.add(directory or "/")
        self._dir, self._project = directory, project_id
        self._entries = self._journal.dir_entries(self._workspace_id, directory or "/", project_id)

    def _forget_unseen(self) -> None:
        if self._dir is None:
            return
        # the path is the directory and the name (the journal stores dir and name of the path)
        gone = [
            f"{self._dir}/{name}"
            for name, known in self._entries.items()
            if name not in self._seen and known[4] is not None  # scan problems (no stat) stay
        ]
        if gone:
            self._journal.forget_files(gone)


def _same_version(a: FileStat | None, b: FileStat) -> bool:
    """Same inode and same data version: a rename changes ctime but never mtime or size."""
    return a is not None and (a.dev, a.ino, a.size, a.mtime_ns) == (
        b.dev,
        b.ino,
        b.size,
        b.mtime_ns,
    )
