"""One ``florasync run`` per state dir: an exclusive lock holding the runner's pid.

Owns the lock file beside the journal. A second run gets "already running (pid N)" instead of
sharing (and corrupting the expectations of) the first one's journal; ``status`` and ``retry``
read the pid without taking the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from florasync import errors

LOCK_NAME = "run.lock"


class RunLock:
    """An exclusive lock on the state dir held for the life of a ``run``.

    Raises:
        errors.AlreadyRunningError: another process holds it (its pid is in the message).
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(self._fd)
            os.close(self._fd)
            raise errors.AlreadyRunningError(pid, str(self.path)) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def running_pid(state_dir: Path) -> int | None:
    """The pid of the ``run`` holding ``state_dir``'s lock, or None when nothing runs."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    finally:
        os.close(fd)  # also drops our shared lock, if we got it
    return None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
