"""Where a running daemon's control listener is (issue 16), for the CLI to find it.

Owns ``control.json`` in the state dir: the listener's URL and the daemon's pid, written when it
starts listening and removed when it stops; a file whose pid is gone is stale and ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE_NAME = "control.json"


def write(state_dir: Path, url: str) -> None:
    file = state_dir / FILE_NAME
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}), encoding="utf-8")
    tmp.replace(file)


def remove(state_dir: Path) -> None:
    (state_dir / FILE_NAME).unlink(missing_ok=True)


def read(state_dir: Path) -> dict[str, Any] | None:
    """``{"url", "pid"}`` of a listening daemon, or None (none, stale, unreadable)."""
    try:
        data = json.loads((state_dir / FILE_NAME).read_text(encoding="utf-8"))
        pid, url = int(data["pid"]), str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's process (a system service): alive
    return {"url": url, "pid": pid}
