"""Tests of content identity on real files: the streaming hash, stat fingerprints, keys, types."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from pathlib import Path

import blake3
import pytest

from florasync import errors
from florasync.local import identity
from florasync.local.identity import FileStat, hash_file, same_content_version
from tests.helpers import SHORT_TIMEOUT, write_file

MiB = 1 << 20


class TamperingEvent(threading.Event):
    """A stop event that is never set but runs ``action`` the first time the hasher checks it.

    ``hash_file`` checks ``stop`` after every chunk, so the file is changed deterministically
    after the first chunk was read and before the second.
    """

    def __init__(self, action) -> None:
        super().__init__()
        self.action = action
        self.checks = 0

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks == 1:
            self.action()
        return False


@pytest.mark.parametrize(
    "size", [0, 1, 1000, MiB - 1, MiB, MiB + 1, 3 * MiB + 17, 8 * MiB, 50_000_000]
)
def test_hash_is_blake3_of_the_bytes(tmp_path, size):
    """The digest is blake3 of the file's bytes and the size is the byte count, at any size."""
    path = tmp_path / "f.bin"
    data = write_file(path, size, seed=size)
    content, stat = hash_file(path)
    assert content == identity.ContentId(blake3.blake3(data).hexdigest(), size)
    assert len(content.digest) == 64
    assert stat == FileStat.from_stat(path.stat())


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_hash_does_not_depend_on_chunk_size(tmp_path, chunk_size):
    """Any chunk size gives the same digest."""
    path = tmp_path / "f.bin"
    data = write_file(path, 10_000, seed=3)
    content, _ = hash_file(path, chunk_size=chunk_size)
    assert content.digest == blake3.blake3(data).hexdigest()


def test_chunk_size_must_be_positive(tmp_path):
    """A zero chunk size is a programming error, refused before the file is opened."""
    with pytest.raises(ValueError, match="chunk_size"):
        hash_file(tmp_path / "missing", chunk_size=0)


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (proc(5))
    except OSError:
        return False
    return True


def _proc_status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def test_hashing_300mb_does_not_hold_the_file_in_memory(tmp_path):
    """Hashing a 300 MB file raises the peak RSS by less than 16 MB: the bytes stream."""
    size = 300 * MiB
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        f.truncate(size)  # sparse: reads as zeros, costs no disk
    if not _peak_rss_reset():
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs)")
    rss_before = _proc_status_bytes("VmRSS")
    content, _ = hash_file(path)
    growth = _proc_status_bytes("VmHWM") - rss_before
    assert growth < 16 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"
    expected = blake3.blake3()
    zeros = bytes(MiB)
    for _ in range(300):
        expected.update(zeros)
    assert content == identity.ContentId(expected.hexdigest(), size)


def test_append_during_hashing_is_refused(tmp_path):
    """A file that grows while it is hashed raises FileChangedError, not a wrong digest."""
    path = tmp_path / "render.mov"
    write_file(path, 3 * MiB)

    def append() -> None:
        with path.open("ab") as f:
            f.write(b"more")

    with pytest.raises(errors.FileChangedError) as caught:
        hash_file(path, stop=TamperingEvent(append))
    assert caught.value.code == "file_changed"
    assert caught.value.path == str(path)


def test_same_size_rewrite_during_hashing_is_refused(tmp_path):
    """Bytes overwritten in place while hashing (same size) are caught by the new mtime."""
    path = tmp_path / "render.png"
    write_file(path, 3 * MiB)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # an old mtime any write will move

    def overwrite() -> None:
        with path.open("r+b") as f:
            f.write(b"X" * 100)

    with pytest.raises(errors.FileChangedError):
        hash_file(path, stop=TamperingEvent(overwrite))


def test_truncate_during_hashing_is_refused(tmp_path):
    """A file truncated while it is hashed raises FileChangedError."""
    path = tmp_path / "render.png"
    write_file(path, 3 * MiB)
    with pytest.raises(errors.FileChangedError):
        hash_file(path, stop=TamperingEvent(lambda: os.truncate(path, 10)))


def test_expect_matching_stat_is_accepted(tmp_path):
    """``expect`` taken from an earlier stat of the same, untouched file lets the hash through."""
    path = tmp_path / "a.png"
    data = write_file(path, 5000)
    content, stat = hash_file(path, expect=FileStat.from_stat(path.stat()))
    assert content.digest == blake3.blake3(data).hexdigest()
    assert stat == FileStat.from_stat(path.stat())


def test_expect_stale_after_append_is_refused(tmp_path):
    """A file appended to after ``expect`` was taken raises FileChangedError before reading."""
    path = tmp_path / "a.png"
    write_file(path, 5000)
    expect = FileStat.from_stat(path.stat())
    with path.open("ab") as f:
        f.write(b"x")
    with pytest.raises(errors.FileChangedError):
        hash_file(path, expect=expect)


def test_expect_stale_after_replacement_is_refused(tmp_path):
    """A file replaced by another inode of the same size and mtime is not the expected version."""
    path = tmp_path / "a.png"
    write_file(path, 5000, seed=1)
    expect = FileStat.from_stat(path.stat())
    other = tmp_path / "other.png"
    write_file(other, 5000, seed=2)
    os.utime(other, ns=(expect.mtime_ns, expect.mtime_ns))
    other.replace(path)
    with pytest.raises(errors.FileChangedError):
        hash_file(path, expect=expect)


def test_vanished_file(tmp_path):
    """A missing file raises LocalFileError with code "vanished" and the OS error text."""
    path = tmp_path / "gone.png"
    with pytest.raises(errors.LocalFileError) as caught:
        hash_file(path)
    assert caught.value.code == "vanished"
    assert "[Errno 2] No such file or directory" in caught.value.message
    assert str(caught.value).startswith(str(path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    """A file without read permission raises LocalFileError with code "unreadable"."""
    path = tmp_path / "locked.png"
    write_file(path, 10)
    path.chmod(0)
    with pytest.raises(errors.LocalFileError) as caught:
        hash_file(path)
    assert caught.value.code == "unreadable"
    assert caught.value.message == "cannot read: [Errno 13] Permission denied"


def test_directory_is_not_regular(tmp_path):
    """A directory in the file's place raises LocalFileError with code "not_regular"."""
    with pytest.raises(errors.LocalFileError) as caught:
        hash_file(tmp_path)
    assert caught.value.code == "not_regular"


def test_fifo_is_refused_without_blocking(tmp_path):
    """A FIFO in the file's place is refused at once instead of waiting for a writer."""
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    with pytest.raises(errors.LocalFileError) as caught:
        hash_file(path)
    assert caught.value.code == "not_regular"


@pytest.mark.parametrize("size", [3 * MiB, 20 * MiB])  # an ordinary buffer, a huge-page one
def test_stop_interrupts_hashing(tmp_path, size):
    """A set stop event ends the hash between chunks with StoppedError."""
    path = tmp_path / "big.mov"
    write_file(path, size)
    stop = threading.Event()
    stop.set()
    with pytest.raises(errors.StoppedError):
        hash_file(path, stop=stop)


def test_idempotency_key_format():
    """Keys are fs1-<step>-<first 32 hex of the digest>-<scope>-g<generation>."""
    digest = "0123456789abcdef" * 4
    key = identity.idempotency_key("reserve", digest, "ws_abc", 2)
    assert key == "fs1-reserve-0123456789abcdef0123456789abcdef-ws_abc-g2"
    assert identity.idempotency_key("attach", digest, "prj_1").endswith("-prj_1-g0")


def test_idempotency_key_is_deterministic():
    """The same inputs give the same key; another generation gives another key."""
    digest = "f" * 64
    first = identity.idempotency_key("reserve", digest, "ws_1", 0)
    assert first == identity.idempotency_key("reserve", digest, "ws_1", 0)
    assert first != identity.idempotency_key("reserve", digest, "ws_1", 1)


def test_idempotency_key_length_limit():
    """A key of 255 characters is allowed; one character more is a ValueError."""
    base = len(identity.idempotency_key("r", "a" * 64, ""))
    assert len(identity.idempotency_key("r", "a" * 64, "s" * (255 - base))) == 255
    with pytest.raises(ValueError, match="longer than 255"):
        identity.idempotency_key("r", "a" * 64, "s" * (256 - base))


@pytest.mark.parametrize("scope", ["prj_é", "ws 1", "ws\n1"])
def test_idempotency_key_must_be_printable_ascii(scope):
    """A key that would not be a clean ASCII header value is a ValueError."""
    with pytest.raises(ValueError, match="ASCII"):
        identity.idempotency_key("reserve", "a" * 64, scope)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", "image/png"),
        ("A.PNG", "image/png"),
        ("a.jpg", "image/jpeg"),
        ("a.JPEG", "image/jpeg"),
        ("a.webp", "image/webp"),
        ("a.gif", "image/gif"),
        ("a.avif", "image/avif"),
        ("a.heic", "image/heic"),
        ("a.heif", "image/heif"),
        ("a.mp4", "video/mp4"),
        ("a.mov", "video/quicktime"),
        ("a.MOV", "video/quicktime"),
        ("a.webm", "video/webm"),
        ("a.mp3", "audio/mpeg"),
        ("a.wav", "audio/wav"),
        ("a.ogg", "audio/ogg"),
        ("a.pdf", "application/pdf"),
        ("renders/v2/shot.tar.png", "image/png"),
        ("a.txt", None),
        ("a.lnk", None),
        ("png", None),
        ("a.png.part", None),
        ("a.", None),
    ],
)
def test_content_type_for(name, expected):
    """Extensions map to FLORA's MIME types, ignoring case; anything else gives None."""
    assert identity.content_type_for(name) == expected
    assert identity.content_type_for(Path(name)) == expected


def _until_ctime_moves(path: Path, before: FileStat, change) -> tuple[Path, FileStat]:
    """Apply ``change`` until ctime moves (coarse clocks may need more than one tick)."""
    deadline = time.monotonic() + SHORT_TIMEOUT
    for i in itertools.count():
        path = change(path, i)
        after = FileStat.from_stat(path.stat())
        assert same_content_version(before, after)
        if after.ctime_ns != before.ctime_ns or time.monotonic() > deadline:
            return path, after
    raise AssertionError("unreachable")


def test_rename_keeps_the_content_version(tmp_path):
    """A rename keeps (dev, ino, size, mtime_ns); on Linux it moves ctime, so the stats differ."""
    path = tmp_path / "a.png"
    write_file(path, 100)
    before = FileStat.from_stat(path.stat())

    def rename(p: Path, i: int) -> Path:
        return p.rename(tmp_path / f"renamed-{i}.png")

    _, after = _until_ctime_moves(path, before, rename)
    assert (after.dev, after.ino, after.size, after.mtime_ns) == (
        before.dev,
        before.ino,
        before.size,
        before.mtime_ns,
    )
    if sys.platform == "linux":
        assert after.ctime_ns > before.ctime_ns
        assert after != before


def test_hard_link_keeps_the_content_version(tmp_path):
    """A new hard link keeps the content version; on Linux it moves ctime (the link count)."""
    path = tmp_path / "a.png"
    write_file(path, 100)
    before = FileStat.from_stat(path.stat())

    def link(p: Path, i: int) -> Path:
        (tmp_path / f"link-{i}.png").hardlink_to(p)
        return p

    _, after = _until_ctime_moves(path, before, link)
    if sys.platform == "linux":
        assert after.ctime_ns > before.ctime_ns


def test_content_change_is_a_new_version(tmp_path):
    """Appending changes size and mtime: neither comparison calls it the same version."""
    path = tmp_path / "a.png"
    write_file(path, 100)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = FileStat.from_stat(path.stat())
    with path.open("ab") as f:
        f.write(b"x")
    after = FileStat.from_stat(path.stat())
    assert not same_content_version(before, after)
    assert before != after
