"""Walk a watched folder and yield the files to sync; a bad entry is reported, never raised.

Owns the directory walk: ``os.scandir`` with one ``lstat`` per wanted file, the directories it
never enters, symlinks (followed inside the folder, refused when they leave it, each directory
walked once) and what a vanished or unreadable entry means. Knows nothing of hashing, the
journal or the watcher; path decisions are ``rules.FolderRules``'s.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from florasync import errors
from florasync.local import identity, rules

log = logging.getLogger(__name__)


class Candidate(NamedTuple):
    """A wanted regular file: its absolute path, its path relative to the folder, its stat.

    ``abspath`` is the path as under the folder (symlinks not resolved), the string the walk
    already built: a rescan of unchanged files should not pay for 100k ``Path`` objects nobody
    reads. For a symlink inside the folder, ``stat`` is the target's.
    """

    abspath: str
    relpath: str
    stat: identity.FileStat


@dataclass(frozen=True, slots=True)
class ScanProblem:
    """Something the walk could not use, for the log and ``run --dry-run``.

    ``code`` is one of "unreadable_dir", "unreadable", "symlink_escape", "symlink_loop",
    "dir_loop" or "vanished" (the folder itself is missing).
    """

    path: str
    code: str
    message: str


def log_problem(problem: ScanProblem) -> None:
    """The default ``on_problem``: a warning in the log."""
    log.warning("skipped %s: %s (%s)", problem.path, problem.message, problem.code)


def scan(
    root: Path,
    *,
    rules: rules.FolderRules,
    recursive: bool = True,
    on_problem: Callable[[ScanProblem], None] = log_problem,
    stop: threading.Event | None = None,
    start: str = "",
) -> Iterator[Candidate]:
    """Yield every wanted regular file under ``root``, in no particular order.

    ``start`` (a relative path under ``root``) walks only that directory, with paths still
    relative to ``root``: for a directory that appeared while the folder was being watched.
    Entries that vanish during the walk, dangling symlinks, FIFOs, sockets and devices are
    skipped silently; unreadable directories, escaping symlinks and loops go to ``on_problem``.
    A directory reached through a symlink is walked after the real tree, and only when it was
    not walked already (then its files come under their real path).

    Raises:
        StoppedError: ``stop`` was set; checked between directories.
    """
    walker = _Walker(Path(root).absolute(), rules, recursive, on_problem)
    first = walker.first_dir(start)
    if first is not None:
        yield from walker.walk(first, stop)


def subdirectories(root: Path) -> list[str]:
    """The names of the directories directly in ``root`` (symlinks not followed), sorted; an
    unreadable root has none."""
    try:
        with os.scandir(root) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


@dataclass(frozen=True, slots=True)
class _Dir:
    path: str  # as under the folder
    relpath: str  # "" for the folder itself
    real: str  # resolved, for the escape and loop tests
    key: tuple[int, int] | None = None  # (dev, ino) of a directory reached through a symlink


class _Walker:
    """One walk: the directories still to visit and the (dev, ino) of those already seen."""

    def __init__(
        self,
        root: Path,
        folder_rules: rules.FolderRules,
        recursive: bool,
        on_problem: Callable[[ScanProblem], None],
    ) -> None:
        self.root = root
        self.root_real = os.path.realpath(root)
        self.rules = folder_rules
        self.recursive = recursive
        self.on_problem = on_problem
        self.visited: set[tuple[int, int]] = set()
        self.dirs: list[_Dir] = []  # real directories: all walked before any linked one
        self.linked: list[_Dir] = []  # reached through a symlink: walked unless already seen

    def first_dir(self, start: str) -> _Dir | None:
        """The directory the walk starts from, or None (reported) when it cannot be walked."""
        relpath = start.strip("/")
        if relpath and self._is_skipped_path(relpath):
            return None
        path = self.root / relpath
        real = os.path.realpath(path)
        first = _Dir(str(path), relpath, real)
        if rules.escapes(self.root_real, real):
            self._report(
                first.path, "symlink_escape", f"symlink leads outside the folder, to {real}"
            )
            return None
        try:
            st = path.stat()
        except OSError as exc:
            self._dir_error(first, exc, is_first=True)
            return None
        self.visited.add((st.st_dev, st.st_ino))
        return first

    def _is_skipped_path(self, relpath: str) -> bool:
        parts = relpath.split("/")
        return any(
            self.rules.is_ignored_dir(part) or self.rules.is_excluded_dir("/".join(parts[: i + 1]))
            for i, part in enumerate(parts)
        )

    def walk(self, first: _Dir, stop: threading.Event | None) -> Iterator[Candidate]:
        """Walk ``first`` and every directory found under it, real ones before linked ones."""
        self.dirs.append(first)
        while self.dirs or self.linked:
            if stop is not None and stop.is_set():
                raise errors.StoppedError(f"scan of {self.root} stopped")
            directory = self.dirs.pop() if self.dirs else self.linked.pop()
            if directory.key is not None:
                if directory.key in self.visited:
                    continue  # already walked under its real path or another link
                self.visited.add(directory.key)
            yield from self._walk_dir(directory, is_first=directory is first)

    def _walk_dir(self, directory: _Dir, *, is_first: bool) -> Iterator[Candidate]:
        try:
            with os.scandir(directory.path) as entries:
                for entry in entries:
                    candidate = self._entry(entry, directory)
                    if candidate is not None:
                        yield candidate
        except OSError as exc:
            self._dir_error(directory, exc, is_first=is_first)

    def _entry(self, entry: os.DirEntry[str], directory: _Dir) -> Candidate | None:
        """The candidate for one directory entry, or None; directories go on the stack."""
        name = entry.name
        relpath = f"{directory.relpath}/{name}" if directory.relpath else name
        try:
            if entry.is_dir(follow_symlinks=False):
                self._push_dir(entry, directory, relpath)
            elif entry.is_file(follow_symlinks=False):
                if self.rules.is_wanted_file(name, relpath):
                    return self._candidate(entry.path, relpath, entry.stat(follow_symlinks=False))
            elif entry.is_symlink():
                return self._follow(entry, directory, relpath)
        except FileNotFoundError:
            pass  # removed since the directory was listed: the watcher will say if it returns
        except OSError as exc:
            self._report(entry.path, "unreadable", f"cannot stat: {_os_text(exc)}")
        return None

    def _push_dir(self, entry: os.DirEntry[str], directory: _Dir, relpath: str) -> None:
        if not self.recursive or self._is_skipped_dir(entry.name, relpath):
            return
        st = entry.stat(follow_symlinks=False)
        key = (st.st_dev, st.st_ino)
        if key in self.visited:  # only a bind mount can show one directory twice
            self._report(entry.path, "dir_loop", "directory already walked (a bind mount?)")
            return
        self.visited.add(key)
        real = os.path.join(directory.real, entry.name)  # noqa: PTH118  str, not Path: hot loop
        self.dirs.append(_Dir(entry.path, relpath, real))

    def _is_skipped_dir(self, name: str, relpath: str) -> bool:
        return self.rules.is_ignored_dir(name) or self.rules.is_excluded_dir(relpath)

    def _follow(self, entry: os.DirEntry[str], directory: _Dir, relpath: str) -> Candidate | None:
        """A symlink: a candidate when it leads to a wanted file inside the folder."""
        wanted_file = self.rules.is_wanted_file(entry.name, relpath)
        if not wanted_file and (not self.recursive or self._is_skipped_dir(entry.name, relpath)):
            return None  # neither a file nor a directory we would take: skip the resolving
        try:
            target = os.path.realpath(entry.path, strict=True)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self._report(entry.path, "symlink_loop", _os_text(exc))
            return None
        if rules.escapes(self.root_real, target):
            self._report(
                entry.path, "symlink_escape", f"symlink leads outside the folder, to {target}"
            )
            return None
        st = Path(target).stat()
        if stat.S_ISDIR(st.st_mode) and self.recursive:
            self._push_linked_dir(entry, directory, relpath, target, st)
        elif stat.S_ISREG(st.st_mode) and wanted_file:
            return self._candidate(entry.path, relpath, st)
        return None

    def _push_linked_dir(
        self,
        entry: os.DirEntry[str],
        directory: _Dir,
        relpath: str,
        target: str,
        st: os.stat_result,
    ) -> None:
        if self._is_skipped_dir(entry.name, relpath):
            return
        if not rules.escapes(target, directory.real):  # the link's own directory or an ancestor
            self._report(entry.path, "symlink_loop", f"symlink to an enclosing directory, {target}")
            return
        self.linked.append(_Dir(entry.path, relpath, target, (st.st_dev, st.st_ino)))

    def _dir_error(self, directory: _Dir, exc: OSError, *, is_first: bool) -> None:
        if isinstance(exc, FileNotFoundError | NotADirectoryError) and not is_first:
            return  # removed or replaced while we walked its parent
        code = "vanished" if isinstance(exc, FileNotFoundError) else "unreadable_dir"
        self._report(directory.path, code, f"cannot read directory: {_os_text(exc)}")

    def _candidate(self, path: str, relpath: str, st: os.stat_result) -> Candidate | None:
        if not stat.S_ISREG(st.st_mode):
            return None  # replaced by something else since the directory was listed
        return Candidate(path, relpath, identity.FileStat.from_stat(st))

    def _report(self, path: str, code: str, message: str) -> None:
        self.on_problem(ScanProblem(path, code, message))


def _os_text(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
