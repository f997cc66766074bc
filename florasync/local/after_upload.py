"""What happens to a file once it is safely in FLORA: ``after_upload: keep | delete | {move: DIR}``.

Owns the post-upload actions of a folder and the care they take. An action runs only on the
regular file the caller uploaded: its bytes are hashed again through an fd opened here (a
symlink is not followed), and right before the unlink or link the fd and the path must still be
the same untouched inode; anything else is left alone and reported as changed. A moved file
keeps its path relative to the folder under DIR and never replaces a file there: a new name is
made with link(2) (or a no-replace rename), which fails on an existing name, and "name (1).ext"
is tried next. Across filesystems the bytes go to a hidden partial file first, made durable
before it gets its visible name, so a kill at any moment leaves the source, a complete copy, or
both; never a truncated visible file. Knows nothing of the journal or HTTP.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3

from florasync import errors
from florasync.config.config import FolderConfig, MoveTo
from florasync.local import identity

log = logging.getLogger(__name__)

_CHUNK_BYTES = identity.DEFAULT_CHUNK_SIZE
_MAX_SUFFIX = 10_000  # "name (n).ext" names tried before the move fails
_PARTIAL_SUFFIX = ".florasync-partial"
_NAME_MAX_BYTES = 255
# link(2) errors that mean "copy instead": another filesystem, none or too many hard links here
# (vfat, exfat, some FUSE and network mounts), or fs.protected_hardlinks refusing a foreign file
_CANNOT_LINK = frozenset(
    {errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
)
_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})
_AT_FDCWD = -100  # <fcntl.h>
_RENAME_NOREPLACE = 1  # <linux/fs.h>


@dataclass(frozen=True, slots=True)
class Applied:
    """What after_upload did to one file."""

    action: str | None  # "deleted", "moved to /x/y.png", "already gone"; None when nothing was done
    changed: bool = False  # the bytes on disk are no longer what was uploaded: left alone


class _Changed(Exception):
    """The path no longer holds the regular file whose bytes were uploaded."""


class _Gone(Exception):
    """Nothing is at the path any more."""


class _Symlink(Exception):
    """The path is a symlink (inside the folder, or it would not have been synced): its target
    is not ours to delete or move, and the link itself is not what was uploaded."""


def wants_action(folder: FolderConfig) -> bool:
    return folder.after_upload != "keep"


def apply(
    folder: FolderConfig,
    path: str,
    digest: str,
    *,
    _before_act: Callable[[], None] | None = None,
    _after_chunk: Callable[[int], None] | None = None,
) -> Applied:
    """Run ``folder``'s action on ``path``, uploaded with blake3 hex ``digest``; say what was done.

    ``Applied(None, changed=True)`` when ``path`` is not, right before the unlink or link, the
    regular file (same inode, size, mtime and ctime) whose bytes were just hashed to ``digest``.
    Test seams: ``_before_act`` runs between that hash and the checks, ``_after_chunk`` after
    each chunk of a copy to another filesystem, with the bytes copied so far.

    Raises:
        errors.LocalFileError: code "after_upload_failed": the file could not be read, deleted
            or moved. The source is never lost and no file in DIR is replaced.
    """
    action = folder.after_upload
    if action == "keep":
        return Applied(None)
    try:
        return _act(folder, path, digest, _before_act, _after_chunk)
    except _Changed as exc:
        log.debug("after_upload left %s alone: %s", path, exc)
        return Applied(None, changed=True)
    except _Gone:
        return Applied(None if isinstance(action, MoveTo) else "already gone")
    except _Symlink:
        log.info("after_upload acts on regular files only: the symlink %s stays", path)
        return Applied(None)
    except OSError as exc:
        what = f"move to {action.move}" if isinstance(action, MoveTo) else "delete"
        raise errors.LocalFileError(
            path, f"cannot {what} after upload: {exc}", code="after_upload_failed"
        ) from None


def _act(
    folder: FolderConfig,
    path: str,
    digest: str,
    before_act: Callable[[], None] | None,
    after_chunk: Callable[[int], None] | None,
) -> Applied:
    """Hash the file through an fd of our own, then act while that fd shows it untouched."""
    action = folder.after_upload
    with _open_source(path) as fd:
        seen = _verify(fd, digest)
        if before_act is not None:
            before_act()
        if isinstance(action, MoveTo):
            return _move(fd, path, seen, _target(folder, path, action.move), after_chunk)
        return _delete(fd, path, seen)


@contextlib.contextmanager
def _open_source(path: str) -> Iterator[int]:
    """An fd on the regular file at ``path`` itself: a symlink there is not followed."""
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not block us until a writer comes
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        raise _Gone from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Symlink from None
        if exc.errno == errno.ENXIO:  # a socket
            raise _Changed("not a regular file") from None
        raise
    try:
        _require_regular(fd)
        yield fd
    finally:
        os.close(fd)


def _require_regular(fd: int) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise _Changed("not a regular file")


def _verify(fd: int, digest: str) -> os.stat_result:
    """The fstat the bytes were hashed under; raises _Changed unless they hash to ``digest``."""
    before = os.fstat(fd)
    actual = _hash_fd(fd, before.st_size)
    after = os.fstat(fd)
    if _fingerprint(after) != _fingerprint(before):
        raise _Changed("written to while it was hashed")
    if actual != digest:
        raise _Changed("its bytes are not the uploaded ones")
    return after


def _hash_fd(fd: int, size: int) -> str:
    """blake3 of the bytes behind ``fd``, the digest ``identity.hash_file`` gives."""
    threads = blake3.blake3.AUTO if size >= identity.PARALLEL_HASH_BYTES else 1
    hasher = blake3.blake3(max_threads=threads)
    for chunk in _chunks(fd):
        hasher.update(chunk)
    return hasher.hexdigest()


def _chunks(fd: int) -> Iterator[bytes]:
    """The bytes behind ``fd`` from offset 0 (pread: the fd's own offset is not used)."""
    offset = 0
    while chunk := os.pread(fd, _CHUNK_BYTES, offset):
        yield chunk
        offset += len(chunk)


def _fingerprint(st: os.stat_result) -> identity.FileStat:
    return identity.FileStat.from_stat(st)


def _check(fd: int, path: str, seen: os.stat_result, *, linked: bool = False) -> None:
    """Raise _Changed unless ``path`` still names ``fd``'s inode, untouched since ``seen``.

    ``linked``: we gave the inode another name since, which moved its ctime; compare size and
    mtime only (``identity.same_content_version``).
    """
    now, then = _fingerprint(os.fstat(fd)), _fingerprint(seen)
    if not (identity.same_content_version(now, then) if linked else now == then):
        raise _Changed("written to after it was hashed")
    try:
        there = Path(path).lstat()
    except (FileNotFoundError, NotADirectoryError):
        raise _Gone from None
    if (there.st_dev, there.st_ino) != (now.dev, now.ino):
        raise _Changed("another file was put in its place")


def _delete(fd: int, path: str, seen: os.stat_result) -> Applied:
    _check(fd, path, seen)
    try:
        Path(path).unlink()
    except FileNotFoundError:
        raise _Gone from None
    return Applied("deleted")


def _target(folder: FolderConfig, path: str, move_dir: Path) -> Path:
    """Where ``path`` goes: its path relative to the folder, under ``move_dir``."""
    relpath = Path(os.path.relpath(path, folder.path))
    if relpath.parts[:1] in ((), ("..",)):
        raise errors.LocalFileError(
            path, f"not a file under the folder {folder.path}", code="after_upload_failed"
        )
    return move_dir / relpath


def _move(
    fd: int,
    path: str,
    seen: os.stat_result,
    target: Path,
    after_chunk: Callable[[int], None] | None,
) -> Applied:
    target.parent.mkdir(parents=True, exist_ok=True)
    final = _move_by_link(fd, path, seen, target)
    if final is None:
        final = _move_by_copy(fd, path, seen, target, after_chunk)
    return Applied(f"moved to {final}")


def _move_by_link(fd: int, path: str, seen: os.stat_result, target: Path) -> Path | None:
    """A second name for the inode at a free name, then the source unlinked; None: cannot link."""
    _check(fd, path, seen)
    try:
        final = _link_free(
            lambda name: os.link(path, name, follow_symlinks=False),
            target,
            inode=(seen.st_dev, seen.st_ino),
        )
    except OSError as exc:
        if exc.errno in _CANNOT_LINK:
            return None
        raise
    _unlink_source(fd, path, seen, final, linked=True)
    return final


def _move_by_copy(
    fd: int,
    path: str,
    seen: os.stat_result,
    target: Path,
    after_chunk: Callable[[int], None] | None,
) -> Path:
    """A durable copy in a hidden partial file, given a free name, then the source unlinked."""
    partial = target.with_name(_partial_name(target.name))
    _write_copy(fd, seen, partial, after_chunk)
    try:
        _fsync_dir(partial.parent)
        _check(fd, path, seen)
        final = _link_free(lambda name: _publish(partial, name), target)
    finally:
        _discard(partial)
    _unlink_source(fd, path, seen, final, linked=False)
    return final


def _link_free(
    link: Callable[[Path], None], target: Path, *, inode: tuple[int, int] | None = None
) -> Path:
    """``link`` a new name at ``target``, or at the first free "name (n).ext"; replace nothing.

    A name that already is ``inode`` is taken as it is: a move killed after its link.
    """
    for candidate in _candidates(target):
        try:
            link(candidate)
        except FileExistsError:
            if inode is not None and _inode(candidate) == inode:
                return candidate
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, f"no free name like {target.name}", str(target.parent))


def _candidates(target: Path) -> Iterator[Path]:
    yield target
    for n in range(1, _MAX_SUFFIX + 1):
        yield target.with_name(f"{target.stem} ({n}){target.suffix}")


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _unlink_source(fd: int, path: str, seen: os.stat_result, final: Path, *, linked: bool) -> None:
    """Unlink ``path`` now that ``final`` holds its bytes; take ``final`` back when we may not.

    A source that vanished meanwhile is not an error: its bytes are at ``final``.
    """
    try:
        _check(fd, path, seen, linked=linked)
    except _Changed:
        _discard(final)
        raise
    except _Gone:
        return
    try:
        _fsync_dir(final.parent)  # the new name is on disk before the old one goes
        Path(path).unlink()
    except FileNotFoundError:
        return
    except OSError:
        _discard(final)
        raise


def _partial_name(name: str) -> str:
    """The hidden name a copy of ``name`` is written under: one per name, reused by a retry."""
    hidden = f".{name}{_PARTIAL_SUFFIX}"
    if len(os.fsencode(hidden)) <= _NAME_MAX_BYTES:
        return hidden
    return f".{blake3.blake3(os.fsencode(name)).hexdigest()[:32]}{_PARTIAL_SUFFIX}"


def _write_copy(
    fd: int, seen: os.stat_result, partial: Path, after_chunk: Callable[[int], None] | None
) -> None:
    """Copy the bytes behind ``fd`` to ``partial``, with the source's mode and times, to disk.

    A stale partial left by a killed try is removed first; O_EXCL then keeps two tries from
    ever writing into one file. A failed copy removes its partial.
    """
    _discard(partial)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(partial, flags, 0o600)
    try:
        _copy(fd, out, after_chunk)
        with contextlib.suppress(OSError):  # kept where the filesystem can (vfat refuses modes)
            os.fchmod(out, stat.S_IMODE(seen.st_mode))
            os.utime(out, ns=(seen.st_atime_ns, seen.st_mtime_ns))
        os.fsync(out)
    except OSError:
        _discard(partial)
        raise
    finally:
        os.close(out)


def _copy(src: int, dst: int, after_chunk: Callable[[int], None] | None) -> None:
    copied = 0
    for chunk in _chunks(src):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        copied += len(chunk)
        if after_chunk is not None:
            after_chunk(copied)


def _publish(partial: Path, name: Path) -> None:
    """Give the complete copy the visible ``name``; FileExistsError when ``name`` is taken."""
    try:
        os.link(partial, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _CANNOT_LINK:
            raise
        _rename_noreplace(partial, name)


def _rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) that fails with EEXIST instead of replacing ``dst`` (Linux renameat2)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        raise OSError(errno.ENOTSUP, "no hard links, no renameat2: cannot move safely", str(dst))
    if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(dst))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2 (glibc 2.28+), or None where there is none."""
    function: Callable[..., int] | None = getattr(
        ctypes.CDLL(None, use_errno=True), "renameat2", None
    )
    return function


def _fsync_dir(directory: Path) -> None:
    """Make the names in ``directory`` durable, where the filesystem can sync a directory."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    """Unlink a name this module made, if it is still there."""
    with contextlib.suppress(OSError):
        path.unlink()
