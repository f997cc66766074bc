"""The one way in: whether a path is a regular file inside its folder that the rules admit.

Owns the decision every source of files goes through before a file is settled, read or
uploaded (the full scan, a watcher event, the walk of a new directory, a file put back by
``florasync retry``, the rescans of a reload), and the check after ``open`` that the bytes about
to be read belong to the file that was admitted (a symlink swapped in between is refused).
Symlinks are followed only while they stay inside the folder (PRODUCT.md, "Nothing leaks").
Pattern decisions are ``rules``'; this module does the ``lstat`` and ``realpath`` calls.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass, field
from typing import NamedTuple

from florasync import errors
from florasync.local import rules
from florasync.local.identity import FileStat
from florasync.local.placement import NO_PROJECT

# Refusals that are the folder's policy, not a fault: ``florasync retry`` never puts them back.
SYMLINK_ESCAPE = "symlink_escape"
SYMLINK_LOOP = "symlink_loop"
EXCLUDED = "excluded"
NOT_REGULAR = "not_regular"
POLICY_CODES = frozenset({SYMLINK_ESCAPE, SYMLINK_LOOP, EXCLUDED, NO_PROJECT})
_MAX_KNOWN_DIRS = 10_000  # directories remembered as inside the folder (then forgotten at once)


class Refusal(NamedTuple):
    """Why a path may not be synced; ``code`` is what ``status`` shows."""

    code: str
    message: str

    @property
    def is_policy(self) -> bool:
        return self.code in POLICY_CODES


@dataclass(frozen=True, slots=True)
class Gate:
    """The admission rules of one watched folder (``root`` is absolute, unresolved)."""

    root: str
    rules: rules.FolderRules
    recursive: bool = True
    _inside: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False, repr=False)

    def admit(self, path: str) -> FileStat | Refusal | None:
        """The stat of the file ``path`` names when it may be synced, a ``Refusal``, or None
        when nothing is there (any more). For a symlink inside the folder it is the target's.
        """
        relpath = self.relpath(path)
        if relpath is None:
            return Refusal(EXCLUDED, f"not inside the folder {self.root}")
        if not self.is_in_scope(relpath):
            return Refusal(EXCLUDED, "excluded by the folder's rules")
        try:
            return self._resolve(path)
        except OSError as exc:
            return _os_refusal(exc)

    def relpath(self, path: str) -> str | None:
        """``path`` relative to the root, or None when it is not a normalised path under it."""
        if not path.startswith(self.root + "/") or os.path.normpath(path) != path:
            return None
        return path[len(self.root) + 1 :]

    def is_in_scope(self, relpath: str) -> bool:
        """Depth (``recursive``), ignored and excluded directories, include/exclude globs."""
        head, _, _ = relpath.rpartition("/")
        if head and not self.recursive:
            return False
        parts = head.split("/") if head else []
        for i, part in enumerate(parts):
            if self.rules.is_ignored_dir(part) or self.rules.is_excluded_dir(
                "/".join(parts[: i + 1])
            ):
                return False
        return self.rules.is_wanted(relpath)

    def _resolve(self, path: str) -> FileStat | Refusal:
        """lstat; resolve where the file really is; refuse what lies outside or is not a file.

        Raises:
            OSError: from ``lstat``/``stat``/``realpath`` (the caller maps it).
        """
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(path, strict=True)
            if rules.escapes(os.path.realpath(self.root), real):
                return Refusal(SYMLINK_ESCAPE, f"symlink leads outside the folder, to {real}")
            st = os.stat(real)  # noqa: PTH116 -- str paths: this runs for every file offered
        else:  # a directory on the way may be a symlink: where does the file really live?
            outside = self._outside(os.path.dirname(path))  # noqa: PTH120
            if outside is not None:
                return Refusal(SYMLINK_ESCAPE, f"symlink leads outside the folder, to {outside}")
        if not stat.S_ISREG(st.st_mode):
            return Refusal(NOT_REGULAR, "not a regular file")
        return FileStat.from_stat(st)

    def _outside(self, directory: str) -> str | None:
        """Where ``directory`` really is when that is outside the folder, else None.

        A directory already found inside is known by its (device, inode): one ``stat`` instead
        of resolving every component again. A symlink swapped in on the way leads to another
        directory, so another inode, and is resolved afresh.
        """
        st = os.stat(directory)  # noqa: PTH116
        key = (st.st_dev, st.st_ino)
        if self._inside.get(directory) == key:
            return None
        real = os.path.realpath(directory, strict=True)
        if rules.escapes(os.path.realpath(self.root), real):
            return real
        if len(self._inside) >= _MAX_KNOWN_DIRS:
            self._inside.clear()
        self._inside[directory] = key
        return None


def open_admitted(path: str, admitted: FileStat) -> io.FileIO:
    """Open ``path`` for reading and prove it is the file that was admitted.

    The descriptor's (device, inode, size, mtime) must equal ``admitted``: a symlink swapped in
    after admission, a file renamed over it or a rewrite all fail here, before a byte is read.

    Raises:
        FileChangedError: the open file is not the admitted version.
        LocalFileError: vanished ("vanished"), unreadable ("unreadable"), not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise errors.LocalFileError(
            path, f"file vanished: {_os_text(exc)}", code="vanished"
        ) from None
    except OSError as exc:
        raise errors.LocalFileError(
            path, f"cannot open: {_os_text(exc)}", code="unreadable"
        ) from None
    try:
        _require_admitted(fd, path, admitted)
    except BaseException:
        os.close(fd)
        raise
    return io.FileIO(fd, "rb", closefd=True)


def _require_admitted(fd: int, path: str, admitted: FileStat) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise errors.LocalFileError(path, "not a regular file", code=NOT_REGULAR)
    now = FileStat.from_stat(st)
    if (now.dev, now.ino, now.size, now.mtime_ns) != admitted[:4]:
        raise errors.FileChangedError(path)


def still_admitted(f: io.FileIO, admitted: FileStat) -> bool:
    """Whether an open file still has the admitted (size, mtime): nobody wrote to it meanwhile."""
    now = FileStat.from_stat(os.fstat(f.fileno()))
    return (now.dev, now.ino, now.size, now.mtime_ns) == admitted[:4]


def _os_refusal(exc: OSError) -> Refusal | None:
    """What an OSError from lstat/realpath means: gone (None), a loop, or unreadable."""
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOTDIR:
        return None  # gone, or a directory on the way was replaced by a file
    if exc.errno == errno.ELOOP:
        return Refusal(SYMLINK_LOOP, _os_text(exc))
    return Refusal("unreadable", f"cannot stat: {_os_text(exc)}")


def _os_text(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
