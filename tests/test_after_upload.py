"""Tests of after_upload on real files: keep, delete and move act only on the uploaded bytes."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import blake3
import pytest

from florasync import errors
from florasync.config import config
from florasync.local import after_upload
from florasync.local.after_upload import Applied
from tests.helpers import write_file

MiB = 1 << 20
SECOND_FILESYSTEM = Path("/dev/shm")  # tmpfs here and in CI (this machine image); tmp_path is not


class Killed(BaseException):
    """Stands for SIGKILL in the middle of a copy: no except clause in florasync catches it."""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The watched folder."""
    path = tmp_path / "watched"
    path.mkdir()
    return path


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A directory on another filesystem than ``tmp_path``, so a move has to copy."""
    assert SECOND_FILESYSTEM.is_dir(), f"{SECOND_FILESYSTEM} is needed as a second filesystem"
    root = Path(tempfile.mkdtemp(prefix="florasync-test-", dir=SECOND_FILESYSTEM))
    try:
        assert root.stat().st_dev != tmp_path.stat().st_dev, (
            f"{SECOND_FILESYSTEM} is on the same filesystem as {tmp_path}: "
            "the cross-filesystem tests need a second one"
        )
        yield root
    finally:
        shutil.rmtree(root)


def settings(folder: Path, action: Literal["keep", "delete"] | Path) -> config.FolderConfig:
    """A folder with ``action``: "keep", "delete", or a Path to move to."""
    after = config.MoveTo(move=action) if isinstance(action, Path) else action
    return config.FolderConfig(path=folder, project_id="prj_test", after_upload=after)


def uploaded(path: Path, size: int = 1000, seed: int = 1) -> tuple[bytes, str]:
    """Write a file and return its bytes and the blake3 digest the pipeline uploaded it with."""
    data = write_file(path, size, seed=seed)
    return data, blake3.blake3(data).hexdigest()


def entries(directory: Path) -> list[str]:
    """Every name under ``directory``, hidden ones included, relative and sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_keep_does_nothing(folder):
    """keep leaves the file where it is and says nothing was done."""
    path = folder / "x.png"
    data, digest = uploaded(path)
    assert after_upload.apply(settings(folder, "keep"), str(path), digest) == Applied(None)
    assert path.read_bytes() == data


def test_delete_removes_the_synced_file(folder):
    """delete removes a file whose bytes are the ones uploaded."""
    path = folder / "x.png"
    _, digest = uploaded(path)
    assert after_upload.apply(settings(folder, "delete"), str(path), digest) == Applied("deleted")
    assert not path.exists()


def test_delete_of_a_vanished_file_says_already_gone(folder):
    """A file that is no longer there is reported as already gone, not as an error."""
    path = folder / "x.png"
    _, digest = uploaded(path)
    path.unlink()
    result = after_upload.apply(settings(folder, "delete"), str(path), digest)
    assert result == Applied("already gone")


def test_file_changed_after_upload_is_left_and_reported(folder):
    """A file whose bytes are no longer the uploaded ones is left alone and reported as changed."""
    path = folder / "x.png"
    _, digest = uploaded(path)
    data = write_file(path, 1000, seed=2)
    result = after_upload.apply(settings(folder, "delete"), str(path), digest)
    assert result == Applied(None, changed=True)
    assert path.read_bytes() == data


def test_write_after_the_hash_is_not_deleted(folder):
    """A write between the re-hash and the unlink keeps the file, with its new bytes."""
    path = folder / "x.png"
    data, digest = uploaded(path)

    def append() -> None:
        with path.open("ab") as f:
            f.write(b"more")

    result = after_upload.apply(settings(folder, "delete"), str(path), digest, _before_act=append)
    assert result == Applied(None, changed=True)
    assert path.read_bytes() == data + b"more"


def test_file_replaced_after_the_hash_is_not_deleted(folder):
    """Another file renamed over the path after the re-hash is not deleted in its place."""
    path = folder / "x.png"
    _, digest = uploaded(path)
    newer = folder / "x.png.tmp"
    data = write_file(newer, 1000, seed=2)
    result = after_upload.apply(
        settings(folder, "delete"), str(path), digest, _before_act=lambda: newer.replace(path)
    )
    assert result == Applied(None, changed=True)
    assert path.read_bytes() == data


def test_symlink_at_the_path_is_not_followed(folder):
    """A symlink at the path is left alone (not reported as changed), and so is its target."""
    real = folder / "real.png"
    data, digest = uploaded(real)
    link = folder / "x.png"
    link.symlink_to(real.name)
    result = after_upload.apply(settings(folder, "delete"), str(link), digest)
    assert result == Applied(None, changed=False)
    assert link.is_symlink()
    assert real.read_bytes() == data


def test_move_keeps_the_path_relative_to_the_folder(folder, tmp_path):
    """move puts the file under DIR at its path relative to the folder, mode and mtime kept."""
    archive = tmp_path / "archive"
    path = folder / "shoot" / "day 1" / "x.png"
    data, digest = uploaded(path)
    before = path.stat()
    result = after_upload.apply(settings(folder, archive), str(path), digest)
    moved = archive / "shoot" / "day 1" / "x.png"
    assert result == Applied(f"moved to {moved}")
    assert moved.read_bytes() == data
    assert (moved.stat().st_mode, moved.stat().st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert not path.exists()


def test_move_never_replaces_a_file_in_dir(folder, tmp_path):
    """A file already at the target name stays; the moved one becomes "x (1).png"."""
    archive = tmp_path / "archive"
    path = folder / "x.png"
    data, digest = uploaded(path)
    older = write_file(archive / "x.png", 500, seed=9)
    result = after_upload.apply(settings(folder, archive), str(path), digest)
    assert result == Applied(f"moved to {archive / 'x (1).png'}")
    assert (archive / "x.png").read_bytes() == older
    assert (archive / "x (1).png").read_bytes() == data


def test_file_appearing_at_the_target_after_the_hash_is_not_replaced(folder, tmp_path):
    """A file put at the target name between the name check and the move is not overwritten."""
    archive = tmp_path / "archive"
    path = folder / "x.png"
    data, digest = uploaded(path)
    theirs: list[bytes] = []

    def drop() -> None:
        theirs.append(write_file(archive / "x.png", 500, seed=9))

    result = after_upload.apply(settings(folder, archive), str(path), digest, _before_act=drop)
    assert result == Applied(f"moved to {archive / 'x (1).png'}")
    assert (archive / "x.png").read_bytes() == theirs[0]
    assert (archive / "x (1).png").read_bytes() == data
    assert not path.exists()


def test_write_after_the_hash_is_not_moved(folder, tmp_path):
    """A write between the re-hash and the move keeps the file in place, nothing archived."""
    archive = tmp_path / "archive"
    path = folder / "x.png"
    data, digest = uploaded(path)

    def append() -> None:
        with path.open("ab") as f:
            f.write(b"more")

    result = after_upload.apply(settings(folder, archive), str(path), digest, _before_act=append)
    assert result == Applied(None, changed=True)
    assert path.read_bytes() == data + b"more"
    assert entries(archive) == []


def test_move_of_a_vanished_file_does_nothing(folder, tmp_path):
    """A file gone before its move is not an error and nothing appears in DIR."""
    archive = tmp_path / "archive"
    path = folder / "x.png"
    _, digest = uploaded(path)
    path.unlink()
    assert after_upload.apply(settings(folder, archive), str(path), digest) == Applied(None)
    assert not archive.exists()


def test_move_killed_after_its_link_finishes_without_a_duplicate(folder, tmp_path):
    """A move killed between the link into DIR and the unlink is finished by the next try."""
    archive = tmp_path / "archive"
    path = folder / "x.png"
    data, digest = uploaded(path)
    archive.mkdir()
    (archive / "x.png").hardlink_to(path)
    result = after_upload.apply(settings(folder, archive), str(path), digest)
    assert result == Applied(f"moved to {archive / 'x.png'}")
    assert entries(archive) == ["x.png"]
    assert (archive / "x.png").read_bytes() == data
    assert not path.exists()


def test_move_to_another_filesystem_lands_complete(folder, other_fs):
    """Across filesystems the file arrives whole, mode and mtime kept, no partial, source gone."""
    path = folder / "sub" / "x.png"
    data, digest = uploaded(path, 9 * MiB + 7)
    path.chmod(0o640)
    before = path.stat()
    result = after_upload.apply(settings(folder, other_fs), str(path), digest)
    moved = other_fs / "sub" / "x.png"
    assert result == Applied(f"moved to {moved}")
    assert moved.read_bytes() == data
    assert (moved.stat().st_mode, moved.stat().st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert entries(other_fs) == ["sub", "sub/x.png"]
    assert not path.exists()


def test_stale_partial_from_a_killed_move_is_replaced(folder, other_fs):
    """A truncated partial left by a killed copy is rewritten, not kept and not duplicated."""
    path = folder / "x.png"
    data, digest = uploaded(path, 3 * MiB)
    (other_fs / ".x.png.florasync-partial").write_bytes(data[:MiB])
    result = after_upload.apply(settings(folder, other_fs), str(path), digest)
    assert result == Applied(f"moved to {other_fs / 'x.png'}")
    assert entries(other_fs) == ["x.png"]
    assert (other_fs / "x.png").read_bytes() == data


def test_kill_mid_copy_leaves_nothing_visible_and_the_retry_completes(folder, other_fs):
    """A copy killed half way leaves the source and no visible file; the next try lands once."""
    path = folder / "x.png"
    data, digest = uploaded(path, 9 * MiB)

    def kill(copied: int) -> None:
        raise Killed(copied)

    with pytest.raises(Killed):
        after_upload.apply(settings(folder, other_fs), str(path), digest, _after_chunk=kill)
    assert path.read_bytes() == data
    assert [name for name in entries(other_fs) if not name.startswith(".")] == []
    result = after_upload.apply(settings(folder, other_fs), str(path), digest)
    assert result == Applied(f"moved to {other_fs / 'x.png'}")
    assert entries(other_fs) == ["x.png"]
    assert (other_fs / "x.png").read_bytes() == data


def test_failure_mid_copy_keeps_the_source_and_leaves_nothing(folder, other_fs):
    """A copy that fails half way (disk full) is an error; the source stays, DIR stays empty."""
    path = folder / "x.png"
    data, digest = uploaded(path, 9 * MiB)

    def disk_full(copied: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(errors.LocalFileError) as caught:
        after_upload.apply(settings(folder, other_fs), str(path), digest, _after_chunk=disk_full)
    assert caught.value.code == "after_upload_failed"
    assert path.read_bytes() == data
    assert entries(other_fs) == []


def test_write_after_the_hash_is_not_copied_away(folder, other_fs):
    """Across filesystems too, a write after the re-hash keeps the file and archives nothing."""
    path = folder / "x.png"
    data, digest = uploaded(path)

    def append() -> None:
        with path.open("ab") as f:
            f.write(b"more")

    result = after_upload.apply(settings(folder, other_fs), str(path), digest, _before_act=append)
    assert result == Applied(None, changed=True)
    assert path.read_bytes() == data + b"more"
    assert entries(other_fs) == []


def test_file_appearing_at_the_target_during_a_copy_is_not_replaced(folder, other_fs):
    """Across filesystems, a file put at the target name during the copy is not overwritten."""
    path = folder / "x.png"
    data, digest = uploaded(path)
    theirs: list[bytes] = []

    def drop(copied: int) -> None:
        theirs.append(write_file(other_fs / "x.png", 500, seed=9))

    result = after_upload.apply(settings(folder, other_fs), str(path), digest, _after_chunk=drop)
    assert result == Applied(f"moved to {other_fs / 'x (1).png'}")
    assert (other_fs / "x.png").read_bytes() == theirs[0]
    assert (other_fs / "x (1).png").read_bytes() == data
    assert entries(other_fs) == ["x (1).png", "x.png"]


def test_without_hard_links_the_move_still_never_replaces(folder, tmp_path, monkeypatch):
    """Where link(2) is refused (vfat, exfat), the copy is renamed in without replacing a file."""
    archive = tmp_path / "archive"
    path = folder / "x.png"
    data, digest = uploaded(path)
    older = write_file(archive / "x.png", 500, seed=9)

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    # no filesystem without hard links can be mounted here; link(2) is made to refuse as vfat does
    monkeypatch.setattr(os, "link", no_links)
    result = after_upload.apply(settings(folder, archive), str(path), digest)
    assert result == Applied(f"moved to {archive / 'x (1).png'}")
    assert (archive / "x.png").read_bytes() == older
    assert (archive / "x (1).png").read_bytes() == data
    assert entries(archive) == ["x (1).png", "x.png"]
    assert not path.exists()


def test_fifo_at_the_path_is_left_alone(folder):
    """Something that is not a regular file at the path is not touched, and nothing blocks."""
    path = folder / "x.png"
    _, digest = uploaded(folder / "other.png")
    os.mkfifo(path)
    result = after_upload.apply(settings(folder, "delete"), str(path), digest)
    assert result == Applied(None, changed=True)
    assert stat.S_ISFIFO(path.lstat().st_mode)
