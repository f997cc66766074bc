"""What happens to a file once it is safely in FLORA: ``after_upload: keep | delete | {move: DIR}``.

Owns the post-upload actions of a folder. An action runs only for a file whose attachment is
confirmed and whose bytes on disk still hash to what was uploaded; a failed file is never touched.
A moved file keeps its path relative to the folder, under DIR, without overwriting anything.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from florasync import errors
from florasync.config.config import FolderConfig, MoveTo
from florasync.local import identity

log = logging.getLogger(__name__)


def wants_action(folder: FolderConfig) -> bool:
    return folder.after_upload != "keep"


def apply(folder: FolderConfig, path: str, digest: str) -> str | None:
    """Run ``folder``'s action on ``path`` (synced with content ``digest``); say what was done.

    Returns None when nothing was done (keep, or the file changed or vanished since).

    Raises:
        errors.LocalFileError: the file could not be deleted or moved.
    """
    action = folder.after_upload
    if action == "keep":
        return None
    try:
        content, _ = identity.hash_file(Path(path))
    except errors.LocalFileError as exc:
        log.info("after_upload skipped for %s: %s", path, exc.message)
        return None
    if content.digest != digest:
        log.info("after_upload skipped for %s: it changed after the upload", path)
        return None
    if action == "delete":
        return _delete(path)
    assert isinstance(action, MoveTo)  # noqa: S101 -- the config allows keep, delete or move
    return _move(path, folder, action.move)


def _delete(path: str) -> str:
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return "already gone"
    except OSError as exc:
        raise errors.LocalFileError(
            path, f"cannot delete after upload: {exc}", code="after_upload_failed"
        ) from None
    return "deleted"


def _move(path: str, folder: FolderConfig, target_dir: Path) -> str:
    relpath = os.path.relpath(path, folder.path)
    target = _free_name(target_dir / relpath)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)  # rename, or copy + delete across filesystems
    except OSError as exc:
        raise errors.LocalFileError(
            path, f"cannot move to {target_dir}: {exc}", code="after_upload_failed"
        ) from None
    return f"moved to {target}"


def _free_name(target: Path) -> Path:
    """``target``, or ``name (1).ext``, ``name (2).ext``... when it exists: never overwrite."""
    candidate, n = target, 0
    while candidate.exists():
        n += 1
        candidate = target.with_name(f"{target.stem} ({n}){target.suffix}")
    return candidate
