"""The durable pause (issue 16): whether requests to FLORA are paused, since when, until when.

Owns ``pause.json`` in the state dir: written atomically and readable by its owner only, so a
pause survives a restart until its end, and ``florasync pause`` works on a daemon that serves no
control API (the daemon looks at the file every second) as well as on one that is stopped.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "pause.json"


@dataclass(frozen=True, slots=True)
class Pause:
    """A pause asked for by someone (``by``: api, cli, page); ``until`` None: until resumed."""

    since: float  # epoch seconds
    until: float | None
    by: str
    reason: str

    def in_force(self, now: float) -> bool:
        return self.until is None or now < self.until


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def stamp(state_dir: Path) -> tuple[int, int] | None:
    """What changes when the file does (mtime, size), or None when there is none."""
    try:
        st = path_in(state_dir).stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def read(state_dir: Path) -> Pause | None:
    """The pause on record, or None. A file that cannot be read is a pause until resumed: the
    user asked for one, and sending while unsure would not be what they asked."""
    file = path_in(state_dir)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        until = data["until"]
        return Pause(
            since=float(data["since"]),
            until=None if until is None else float(until),
            by=str(data["by"]),
            reason=str(data["reason"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s cannot be read (%s): paused until `florasync resume`", file, exc)
        return Pause(time.time(), None, "unknown", f"{FILE_NAME} unreadable; resume clears it")


def write(state_dir: Path, pause: Pause) -> None:
    """Record ``pause`` (atomically: a crash leaves the old file or the new one)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".pause-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(pause), out)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(path_in(state_dir))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clear(state_dir: Path) -> bool:
    """Resume: remove the record; False when there was none."""
    try:
        path_in(state_dir).unlink()
    except FileNotFoundError:
        return False
    return True
