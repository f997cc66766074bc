"""The files the benchmarks sync, and journals seeded as if a first run had synced them.

Owns the on-disk layouts (small files spread over directories, one large file) and the seeding
through ``Journal.import_synced``: for real files, each row holds the file's real stat and
blake3 digest, exactly what a first ``run --scan`` records; for the memory benchmark, made-up
rows under a folder that is not configured.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from florasync.local import identity
from florasync.local.identity import FileStat
from florasync.state.journal.records import FileEntry
from florasync.state.journal.store import Journal
from florasync.state.lifecycle import AssetRecord, AssetState, LinkRecord, LinkState

FILES_PER_DIR = 500
WRITE_CHUNK_BYTES = 8 << 20
SyncedRow = tuple[FileEntry, AssetRecord, LinkRecord]


def write_small_files(root: Path, count: int, size_bytes: int = 256) -> list[Path]:
    """``count`` files of distinct random bytes, ``FILES_PER_DIR`` to a directory."""
    paths = []
    for n in range(count):
        directory = root / f"d{n // FILES_PER_DIR:04d}"
        if n % FILES_PER_DIR == 0:
            directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"f{n:07d}.png"
        path.write_bytes(os.urandom(size_bytes))
        paths.append(path)
    return paths


def write_large_file(path: Path, size_bytes: int) -> Path:
    """One file of ``size_bytes`` random bytes, written in 8 MiB chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        left = size_bytes
        while left > 0:
            chunk = os.urandom(min(left, WRITE_CHUNK_BYTES))
            f.write(chunk)
            left -= len(chunk)
    return path


def seed_synced(
    state_dir: Path, folder: Path, paths: Iterable[Path], *, workspace: str, project: str
) -> int:
    """Record real files as uploaded and attached, with their real stat and digest."""
    ids = {"workspace": workspace, "project": project}

    def rows() -> Iterator[SyncedRow]:
        for path in paths:
            content, stat = identity.hash_file(path)
            yield synced_row(str(path), str(folder), stat, content.digest, **ids)

    return _import(state_dir, rows())


def seed_unconfigured(
    state_dir: Path, folder: str, count: int, *, workspace: str, project: str
) -> int:
    """``count`` synced rows for made-up files under ``folder``, a path no config maps.

    The digests ascend (a counter, then hash bytes), so every index grows at its end and a
    million rows are written in about a minute instead of several.
    """
    ids = {"workspace": workspace, "project": project}

    def rows() -> Iterator[SyncedRow]:
        for n in range(count):
            digest = f"{n:016x}" + hashlib.blake2b(n.to_bytes(8, "big"), digest_size=24).hexdigest()
            path = f"{folder}/d{n // FILES_PER_DIR:05d}/render_{n:07d}.png"
            yield synced_row(path, folder, _made_up_stat(n), digest, **ids)

    return _import(state_dir, rows())


def _made_up_stat(n: int) -> FileStat:
    when_ns = 1_700_000_000_000_000_000 + n * 1000
    return FileStat(
        dev=64768, ino=1_000_000 + n, size=1_500_000 + n % 997, mtime_ns=when_ns, ctime_ns=when_ns
    )


def synced_row(
    path: str, folder: str, stat: FileStat, digest: str, *, workspace: str, project: str
) -> SyncedRow:
    """The three journal rows of a file that is uploaded, ready and attached."""
    name = path.rpartition("/")[2]
    entry = FileEntry(path, folder, project, stat, digest)
    asset = AssetRecord(
        workspace_id=workspace,
        digest=digest,
        size_bytes=stat.size,
        file_name=name,
        content_type=identity.content_type_for(name) or "application/octet-stream",
        state=AssetState.READY,
        asset_id=f"asset_{digest[:24]}",
        reserve_key=identity.idempotency_key("reserve", digest, workspace),
    )
    link = LinkRecord(
        workspace_id=workspace,
        digest=digest,
        project_id=project,
        state=LinkState.ATTACHED,
        attach_key=identity.idempotency_key("attach", digest, project),
        node_id=f"node_{digest[24:48]}",
    )
    return entry, asset, link


def _import(state_dir: Path, rows: Iterable[SyncedRow]) -> int:
    journal = Journal.open(state_dir)
    try:
        return journal.import_synced(rows)
    finally:
        journal.close()
