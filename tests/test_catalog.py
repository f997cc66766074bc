"""The stat cache on a real journal and real files: which candidates are read again, which are
known from one stat, and what a full scan forgets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from florasync.local.identity import FileStat, hash_file
from florasync.state.catalog import UNKNOWN, Catalog, Verdict
from florasync.state.journal.records import FileEntry
from florasync.state.journal.store import Journal
from florasync.state.lifecycle import AssetRecord, AssetState, Failure, LinkRecord, LinkState

WS = "ws_test"
BOTH_MODES = pytest.mark.parametrize("full_scan", [False, True], ids=["per-path", "full-scan"])


@pytest.fixture
def journal(any_journal: Journal) -> Journal:
    """An empty journal, in each backend (SQLite and PostgreSQL)."""
    return any_journal


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    root.mkdir()
    return root


def write(path: Path, data: bytes = b"png bytes") -> FileStat:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return FileStat.from_stat(path.stat())


def journal_file(
    journal: Journal,
    path: Path,
    project_id: str,
    *,
    digest: str | None = None,
    attached: bool = True,
) -> str:
    """Journal ``path`` as ``transfer`` does: ensure the rows with the file, then the results."""
    stat = FileStat.from_stat(path.stat())
    digest = digest or hash_file(path)[0].digest
    entry = FileEntry(str(path), str(path.parent), project_id, stat, digest)
    asset = AssetRecord(WS, digest, stat.size, path.name, "image/png")
    asset, link = journal.ensure(asset, LinkRecord(WS, digest, project_id), entry)
    journal.record(replace(asset, state=AssetState.READY, asset_id=f"asset_{digest[:8]}"))
    if attached:
        journal.record(replace(link, state=LinkState.ATTACHED, node_id=f"node_{digest[:8]}"))
    journal.flush()
    return digest


@BOTH_MODES
def test_unchanged_attached_file_needs_nothing(journal, folder, full_scan) -> None:
    """A file with the stat it was synced with, attached in its project, is unchanged."""
    path = folder / "a.png"
    stat = write(path)
    digest = journal_file(journal, path, "prj_a")
    verdict = Catalog(journal, WS, full_scan=full_scan).classify(str(path), stat, "prj_a")
    assert verdict == Verdict(digest, unchanged=True)


@BOTH_MODES
def test_content_attached_elsewhere_is_known_but_not_done(journal, folder, full_scan) -> None:
    """Unchanged bytes not yet attached in this project: the digest is known (no read), the
    attach is still to do, whether the path was synced to another project or its content is
    attached only through another folder."""
    remapped, pending = folder / "remapped.png", folder / "pending.png"
    stat = write(remapped, b"remapped")
    remapped_digest = journal_file(journal, remapped, "prj_b")
    pending_stat = write(pending, b"pending")
    pending_digest = journal_file(journal, pending, "prj_a", attached=False)
    elsewhere = folder.parent / "other" / "same.png"
    write(elsewhere, b"pending")
    journal_file(journal, elsewhere, "prj_b")
    catalog = Catalog(journal, WS, full_scan=full_scan)
    assert catalog.classify(str(remapped), stat, "prj_a") == Verdict(remapped_digest, False)
    assert catalog.classify(str(pending), pending_stat, "prj_a") == Verdict(pending_digest, False)


@BOTH_MODES
@pytest.mark.parametrize("field", ["size", "mtime_ns", "ctime_ns", "ino"])
def test_changed_stat_means_read_again(journal, folder, full_scan, field) -> None:
    """Any difference in size, mtime, ctime or inode makes the content unknown."""
    path = folder / "a.png"
    stat = write(path)
    journal_file(journal, path, "prj_a")
    changed = stat._replace(**{field: getattr(stat, field) + 1})
    assert (
        Catalog(journal, WS, full_scan=full_scan).classify(str(path), changed, "prj_a") == UNKNOWN
    )


@BOTH_MODES
def test_renamed_file_is_known_without_a_read(journal, folder, full_scan) -> None:
    """A renamed file (same device, inode, size and mtime) keeps its journaled digest."""
    old, new = folder / "old.png", folder / "day1" / "new.png"
    write(old)
    # not the bytes' hash: a read would give another digest than the journal's
    digest = journal_file(journal, old, "prj_a", digest="f" * 64)
    new.parent.mkdir()
    old.rename(new)
    stat = FileStat.from_stat(new.stat())
    catalog = Catalog(journal, WS, full_scan=full_scan)
    assert catalog.classify(str(new), stat, "prj_a") == Verdict(digest, unchanged=False)
    grown = stat._replace(size=stat.size + 1, mtime_ns=stat.mtime_ns + 1)
    assert catalog.classify(str(new), grown, "prj_a") == UNKNOWN  # renamed, then written


@BOTH_MODES
def test_file_with_a_problem_is_read_again(journal, folder, full_scan) -> None:
    """A file whose last try recorded a problem is looked at afresh, even with the same stat."""
    path = folder / "a.png"
    stat = write(path)
    digest = journal_file(journal, path, "prj_a")
    failure = Failure("unreadable", "Permission denied", 1.0)
    journal.record_file(FileEntry(str(path), str(folder), "prj_a", stat, digest, failure))
    assert Catalog(journal, WS, full_scan=full_scan).classify(str(path), stat, "prj_a") == UNKNOWN


def test_full_scan_forgets_unseen_files_and_keeps_scan_problems(journal, folder) -> None:
    """After a full scan, files of a scanned directory that were not seen are forgotten, each
    directory as soon as the scan moves on; scan problems stay for the sweep to handle."""
    day1, day2 = folder / "day1", folder / "day2"
    kept, gone = [day1 / "kept.png", day2 / "kept.png"], [day1 / "gone.png", day2 / "gone.png"]
    for path in kept + gone:
        write(path, str(path).encode())
        journal_file(journal, path, "prj_a")
    escape = FileEntry(str(day1 / "link.png"), str(folder), "prj_a", None, None)
    journal.record_file(replace(escape, problem=Failure("symlink_escape", "outside", 1.0)))
    for path in gone:
        path.unlink()
    catalog = Catalog(journal, WS, full_scan=True)
    for path in kept:  # what the scanner yields: one directory after the other
        catalog.classify(str(path), FileStat.from_stat(path.stat()), "prj_a")
        if path.parent == day2:
            assert journal.cached_file(WS, str(day1 / "gone.png")) is None  # day1 is done
            assert journal.cached_file(WS, str(day2 / "gone.png")) is not None  # day2 goes on
    catalog.finish()
    known = [p for p in [*kept, *gone, day1 / "link.png"] if journal.cached_file(WS, str(p))]
    assert known == [*kept, day1 / "link.png"]
    assert catalog.dirs_seen == {str(day1), str(day2)}


def test_single_lookups_forget_nothing(journal, folder) -> None:
    """The watcher's per-path catalog never forgets a file it was not asked about."""
    seen, other = folder / "seen.png", folder / "other.png"
    for path in (seen, other):
        write(path, path.name.encode())
        journal_file(journal, path, "prj_a")
    catalog = Catalog(journal, WS, full_scan=False)
    catalog.classify(str(seen), FileStat.from_stat(seen.stat()), "prj_a")
    catalog.finish()
    assert journal.cached_file(WS, str(other)) is not None


def test_a_directory_of_thousands_is_classified_like_single_paths(journal, folder) -> None:
    """In a directory of thousands of known files, a full scan gives every file the verdict a
    single lookup gives: attached ones unchanged, the rest known but to do or unknown."""
    paths = [folder / "big" / f"{n:05d}.png" for n in range(3_000)]
    stats = [write(path, f"{n}".encode()) for n, path in enumerate(paths)]
    digests = [f"{n:064x}" for n in range(len(paths))]
    journal.import_synced(
        (
            FileEntry(str(path), str(folder), "prj_a", stat, digest),
            AssetRecord(
                WS, digest, stat.size, path.name, "image/png", AssetState.READY, f"asset_{n}"
            ),
            LinkRecord(WS, digest, "prj_a", LinkState.ATTACHED if n % 3 else LinkState.PENDING),
        )
        for n, (path, stat, digest) in enumerate(zip(paths, stats, digests, strict=True))
    )
    failure = Failure("unreadable", "Permission denied", 1.0)
    journal.record_file(
        FileEntry(str(paths[1]), str(folder), "prj_a", stats[1], digests[1], failure)
    )
    expected = [
        UNKNOWN if n == 1 else Verdict(digest, unchanged=n % 3 != 0)
        for n, digest in enumerate(digests)
    ]
    full, single = Catalog(journal, WS, full_scan=True), Catalog(journal, WS, full_scan=False)
    by_scan = [full.classify(str(p), s, "prj_a") for p, s in zip(paths, stats, strict=True)]
    by_path = [single.classify(str(p), s, "prj_a") for p, s in zip(paths, stats, strict=True)]
    assert by_scan == expected
    assert by_path == expected


def test_full_scan_reads_attachment_for_each_project_asked(journal, folder) -> None:
    """A full scan asked about one directory for two projects answers each project's own
    attachment, and still forgets that directory's unseen files once it moves on."""
    path, gone, later = folder / "a.png", folder / "gone.png", folder / "sub" / "b.png"
    stat = write(path)
    digest = journal_file(journal, path, "prj_a")
    write(gone, b"gone")
    journal_file(journal, gone, "prj_a")
    gone.unlink()
    catalog = Catalog(journal, WS, full_scan=True)
    assert catalog.classify(str(path), stat, "prj_a") == Verdict(digest, unchanged=True)
    assert catalog.classify(str(path), stat, "prj_b") == Verdict(digest, unchanged=False)
    assert journal.cached_file(WS, str(gone)) is not None
    catalog.classify(str(later), write(later), "prj_b")
    assert journal.cached_file(WS, str(gone)) is None
    assert journal.cached_file(WS, str(path)) is not None
