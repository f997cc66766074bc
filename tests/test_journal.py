"""The journal on a real SQLite file: privacy, locking, migrations, round trips, status queries."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from florasync import errors
from florasync.flora.models import UploadInstructions
from florasync.local.identity import FileStat
from florasync.state import lifecycle, runlock
from florasync.state.journal import sqlite
from florasync.state.journal.records import FileEntry, ProjectName
from florasync.state.journal.store import Journal
from florasync.state.lifecycle import AssetRecord, AssetState, Failure, LinkRecord, LinkState

from .helpers import SHORT_TIMEOUT, wait_until

WS = "ws_test"


def _asset(digest: str = "d" * 64, **kw: object) -> AssetRecord:
    rec = AssetRecord(WS, digest, 10, "a.png", "image/png")
    return replace(rec, **kw)  # type: ignore[arg-type]


@pytest.fixture
def j(any_journal: Journal) -> Journal:
    """An empty journal, in each backend (SQLite and PostgreSQL)."""
    return any_journal


def test_files_are_private(tmp_path: Path) -> None:
    """The state dir is 0700 and the database and its WAL files are 0600."""
    jr = Journal.open(tmp_path / "state")
    jr.record(_asset())
    try:
        assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
        for path in (tmp_path / "state").glob("journal.sqlite3*"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        wal_mode = sqlite3.connect(jr.path).execute("PRAGMA journal_mode").fetchone()[0]
        assert wal_mode == "wal"
    finally:
        jr.close()


def test_records_round_trip(j: Journal) -> None:
    """An asset record with instructions and an error comes back exactly as stored."""
    upload = UploadInstructions(
        "http://127.0.0.1/u", {"token": "t", "expire": "1"}, "file", "POST", 123.5
    )
    rec = AssetRecord(
        WS,
        "a" * 64,
        42,
        "x.png",
        "image/png",
        AssetState.RESERVED,
        "asset_1",
        2,
        "key",
        1.5,
        upload,
        3,
        9.0,
        4,
        Failure("c", "m", 7.0),
    )
    j.begin(rec)
    assert j.asset(WS, "a" * 64) == rec
    link = LinkRecord(WS, "a" * 64, "prj_1", LinkState.ATTACHED, 1, "k2", "node_1", 0, None)
    j.record(link)  # does not wait: readers see it once flushed (what Transfer.run does)
    j.flush()
    assert j.link(WS, "a" * 64, "prj_1") == link


def test_a_result_recorded_without_waiting_is_committed_in_order(tmp_path: Path) -> None:
    """record() returns before its commit, but a later flush, begin or close commits it, in
    the order the records were given (the last one wins), and it survives a reopen."""
    j = Journal.open(tmp_path / "state")
    for n in range(200):
        j.record(_asset(state=AssetState.RESERVED, asset_id="asset_1", attempts=n))
    j.begin(LinkRecord(WS, "d" * 64, "prj_1", LinkState.ATTACHING, 0, "k", None, 0, None))
    stored = j.asset(WS, "d" * 64)
    assert stored is not None
    assert stored.attempts == 199
    j.record(_asset(state=AssetState.READY, asset_id="asset_1"))
    j.close()
    again = Journal.open(tmp_path / "state")
    try:
        assert again.asset(WS, "d" * 64) == _asset(state=AssetState.READY, asset_id="asset_1")
    finally:
        again.close()


def test_ensure_keeps_existing_rows(j: Journal) -> None:
    """ensure inserts missing rows but never overwrites progress already journaled."""
    j.record(_asset(state=AssetState.READY, asset_id="asset_1"))
    stored, link = j.ensure(_asset(), LinkRecord(WS, "d" * 64, "prj_1"))
    assert stored.state == AssetState.READY
    assert link.state == LinkState.PENDING


def test_asset_id_claims_are_exclusive(j: Journal) -> None:
    """An asset id already held by another content cannot be adopted (lookup after a 409)."""
    j.record(_asset("a" * 64, asset_id="asset_1"))
    j.flush()  # record does not wait: reads see it once flushed
    assert j.claim_asset_id(_asset("a" * 64), "asset_1")
    assert not j.claim_asset_id(_asset("b" * 64), "asset_1")
    assert j.claim_asset_id(_asset("b" * 64), "asset_2")


def test_stat_cache_queries(j: Journal, tmp_path: Path) -> None:
    """Files are found per directory and by inode (a rename costs a stat, not a read)."""
    st = FileStat(1, 99, 10, 5, 6)
    j.record_file(FileEntry("/w/a/x.png", "/w", "prj_1", st, "d" * 64))
    j.record_file(FileEntry("/w/a/y.png", "/w", "prj_1", FileStat(1, 100, 1, 1, 1), None))
    j.record(LinkRecord(WS, "d" * 64, "prj_1", LinkState.ATTACHED))
    j.flush()
    entries = j.dir_entries(WS, "/w/a", "prj_1")
    assert entries == {
        "x.png": ("x.png", "d" * 64, 0, 1, *st),
        "y.png": ("y.png", None, 0, 0, 1, 100, 1, 1, 1),
    }
    assert j.known_file(WS, "/w/a/x.png", "prj_1") == entries["x.png"]
    assert j.known_file(WS, "/w/a/z.png", "prj_1") is None
    assert j.by_inode(WS, FileStat(1, 99, 10, 5, 77)) is not None
    assert j.by_inode(WS, FileStat(2, 99, 10, 5, 6)) is None
    assert j.forget_files(["/w/a/y.png"]) == 1
    assert set(j.dir_entries(WS, "/w/a", "prj_1")) == {"x.png"}


@pytest.mark.parametrize(
    ("file_project", "attached_in", "scanned_for", "is_attached"),
    [
        ("prj_1", "prj_1", "prj_1", 1),
        ("prj_1", "prj_2", "prj_1", 0),  # the content is attached, but in another project
        ("prj_2", "prj_2", "prj_1", 0),  # the path was synced to the project it had before
        ("prj_2", "prj_1", "prj_1", 0),  # attached here through another path, not this one
    ],
)
def test_stat_cache_reads_attachment_for_the_scanned_project(
    j: Journal, file_project, attached_in, scanned_for, is_attached
) -> None:
    """A known file counts as attached only when it is mapped to the scanned project and its
    content's link in that project is attached, in a directory scan and a single lookup."""
    j.record_file(FileEntry("/w/a/x.png", "/w", file_project, FileStat(1, 9, 1, 1, 1), "d" * 64))
    for project in ("prj_1", "prj_2"):
        state = LinkState.ATTACHED if project == attached_in else LinkState.PENDING
        j.record(LinkRecord(WS, "d" * 64, project, state))
    j.flush()
    assert j.dir_entries(WS, "/w/a", scanned_for)["x.png"][3] == is_attached
    known = j.known_file(WS, "/w/a/x.png", scanned_for)
    assert known is not None
    assert known[3] == is_attached


def test_stat_cache_reads_problems_and_missing_stats(j: Journal) -> None:
    """A file's problem and a stat reset by ``retry`` (dev and ino NULL) reach the stat cache."""
    failure = Failure("unreadable", "Permission denied", 1.0)
    j.record_file(FileEntry("/w/p.png", "/w", "prj_1", FileStat(1, 2, 3, 4, 5), "e" * 64, failure))
    j.record_file(FileEntry("/w/s.png", "/w", "prj_1", None, None, failure))
    entries = j.dir_entries(WS, "/w", "prj_1")
    assert entries["p.png"] == ("p.png", "e" * 64, 1, 0, 1, 2, 3, 4, 5)
    assert entries["s.png"] == ("s.png", None, 1, 0, None, None, None, None, None)


def test_forget_tree_drops_a_directory_and_all_under_it(j: Journal) -> None:
    """forget_tree drops a path and everything below it, never a sibling sharing its prefix."""
    below = ["/w/a/b/x.png", "/w/a/b/deep/y.png"]
    siblings = ["/w/a/b2/z.png", "/w/a/b.png", "/w/a/b-c/q.png", "/w/a/c.png", "/w/a/bb"]
    for n, path in enumerate(below + siblings):
        j.record_file(FileEntry(path, "/w", "prj_1", FileStat(1, n, 1, 1, 1), f"{n:064d}"))
    assert j.forget_tree("/w/a/b") == 2
    assert j.forget_tree("/w/a/c.png") == 1  # a file: only itself
    remaining = [p for p in below + siblings if j.cached_file(WS, p)]
    assert remaining == ["/w/a/b2/z.png", "/w/a/b.png", "/w/a/b-c/q.png", "/w/a/bb"]


def test_status_counts_and_failures(j: Journal) -> None:
    """Per-folder counts and the failure list reflect files, assets and links."""
    for n, state in enumerate([LinkState.ATTACHED, LinkState.PENDING, LinkState.FAILED]):
        digest = str(n) * 64
        j.record_file(FileEntry(f"/w/{n}.png", "/w", "prj_1", FileStat(1, n, 1, 1, 1), digest))
        j.record(_asset(digest, state=AssetState.READY, asset_id=f"asset_{n}"))
        err = Failure("forbidden", "Forbidden.", 5.0) if state == LinkState.FAILED else None
        j.record(LinkRecord(WS, digest, "prj_1", state, error=err))
    j.record_file(FileEntry("/w/bad", "/w", "prj_1", None, None, Failure("unreadable", "no", 6.0)))
    counts = {state: n for _, _, state, n in j.file_counts(WS)}
    assert counts == {"synced": 1, "pending": 1, "failed": 2}
    codes = [(f["path"], f["code"], f["permanent"]) for f in j.failures(WS, 10)]
    assert codes == [("/w/bad", "unreadable", True), ("/w/2.png", "forbidden", True)]


def test_reset_failed_requeues(j: Journal) -> None:
    """retry resets failed assets and links and leaves a request for a running daemon."""
    digest = "f" * 64
    j.record_file(FileEntry("/w/f.png", "/w", "prj_1", FileStat(1, 1, 1, 1, 1), digest))
    j.record(lifecycle.fail_asset(_asset(digest), "asset_failed", "bad", 1.0))
    j.record(LinkRecord(WS, digest, "prj_1", LinkState.FAILED, error=Failure("x", "y", 1.0)))
    j.flush()
    assert j.reset_failed(WS, None) == ["/w/f.png"]
    rec = j.asset(WS, digest)
    assert rec is not None
    assert rec.state == AssetState.NEW
    link = j.link(WS, digest, "prj_1")
    assert link is not None
    assert link.state == LinkState.PENDING
    assert j.take_retry_requests() == ["/w/f.png"]
    assert j.take_retry_requests() == []


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A journal written by a newer florasync is refused with a clear error, not corrupted."""
    Journal.open(tmp_path / "s").close()
    conn = sqlite3.connect(tmp_path / "s" / sqlite.DB_NAME)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(errors.JournalError, match="newer florasync"):
        Journal.open(tmp_path / "s")


def test_corrupt_journal_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not SQLite gives a JournalError naming it."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / sqlite.DB_NAME).write_bytes(b"not a database" * 100)
    with pytest.raises(errors.JournalError, match="cannot open the journal"):
        Journal.open(tmp_path / "s")


def test_second_run_is_refused_with_pid(tmp_path: Path) -> None:
    """A second run on the same state dir gets 'already running (pid N)'."""
    state = tmp_path / "s"
    Journal.open(state).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from florasync.state.runlock import RunLock
            lock = RunLock(Path({str(state)!r}))
            print("locked", flush=True)
            sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        assert runlock.running_pid(state) == holder.pid
        with pytest.raises(errors.AlreadyRunningError, match=f"pid {holder.pid}"):
            runlock.RunLock(state)
    finally:
        holder.communicate("", timeout=SHORT_TIMEOUT)
    wait_until(lambda: runlock.running_pid(state) is None, timeout=SHORT_TIMEOUT)
    runlock.RunLock(state).release()


def test_readers_do_not_block_a_writer(tmp_path: Path) -> None:
    """status reads while a run holds an open write transaction elsewhere."""
    writer = Journal.open(tmp_path / "s")
    reader = Journal.open(tmp_path / "s")
    try:
        conn = writer._conn()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO retry_requests (path, requested_at) VALUES ('x', 1)")
        assert reader.file_counts(WS) == []  # does not wait for the writer
        conn.execute("COMMIT")
    finally:
        writer.close()
        reader.close()


def test_import_synced_in_bulk(j: Journal) -> None:
    """Bulk-imported synced files count as synced and are found by the stat cache."""
    entries = (
        (
            FileEntry(f"/w/d{n % 10}/{n}.png", "/w", "prj_1", FileStat(1, n, 5, 5, 5), f"{n:064d}"),
            AssetRecord(WS, f"{n:064d}", 5, f"{n}.png", "image/png", AssetState.READY, f"a_{n}"),
            LinkRecord(WS, f"{n:064d}", "prj_1", LinkState.ATTACHED, node_id=f"node_{n}"),
        )
        for n in range(25_000)
    )
    assert j.import_synced(entries) == 25_000
    assert j.file_counts(WS) == [("/w", "prj_1", "synced", 25_000)]
    assert j.dir_entries(WS, "/w/d3", "prj_1")["13.png"][3] == 1  # attached


def test_polling_an_empty_retry_queue_writes_nothing(tmp_path: Path) -> None:
    """The daemon polls for retry requests every few seconds: with none, the database is untouched.

    ``data_version`` (seen from another connection) changes whenever the SQLite journal commits.
    """
    j = Journal.open(tmp_path / "state")
    j.take_retry_requests()  # the journal's own first transactions are done
    other = sqlite3.connect(j.path)
    try:
        before = other.execute("PRAGMA data_version").fetchone()[0]
        for _ in range(5):
            assert j.take_retry_requests() == []
        assert other.execute("PRAGMA data_version").fetchone()[0] == before
        j.record_file(FileEntry("/w/g.png", "/w", "prj_1", FileStat(1, 2, 1, 1, 1), "e" * 64))
        assert other.execute("PRAGMA data_version").fetchone()[0] != before  # it does notice
    finally:
        other.close()
        j.close()


def test_reservations_in_doubt_are_other_contents_of_the_name_without_an_asset_id(
    j: Journal,
) -> None:
    """A pending asset called a.png may be another content's when that content journaled a
    reservation key but no asset id; contents with an id, other names and our own row do not
    count."""
    ours = _asset("1" * 64, state=AssetState.RESERVING, reserve_key="k1")
    j.begin(ours)
    assert j.reservations_in_doubt(ours) == 0
    j.begin(_asset("2" * 64, state=AssetState.RESERVING, reserve_key="k2"))  # in doubt
    j.begin(_asset("3" * 64, state=AssetState.RESERVED, reserve_key="k3", asset_id="asset_3"))
    j.begin(_asset("4" * 64, file_name="b.png", state=AssetState.RESERVING, reserve_key="k4"))
    j.begin(_asset("5" * 64))  # never reserved
    assert j.reservations_in_doubt(ours) == 1


def test_one_project_name_is_read_by_its_key(j: Journal) -> None:
    """``project_name`` gives the row ``project_names`` lists for that name, and None for an
    unknown name or another workspace."""
    j.begin_project_create(WS, "Spring", "key-1", 2)
    j.record_project(WS, "Spring", "prj_spring")
    assert j.project_name(WS, "Spring") == j.project_names(WS)["Spring"]
    assert j.project_name(WS, "Spring") == ProjectName("Spring", "prj_spring", "key-1", 2)
    assert j.project_name(WS, "spring") is None
    assert j.project_name("ws_other", "Spring") is None


def test_a_schema_3_journal_keeps_its_stat_cache_and_retry_requests(tmp_path: Path) -> None:
    """A journal written before fleet mode (schema 3) opens as schema 4 with every file of its
    stat cache and every retry request kept, now this host's (host_id "")."""
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / sqlite.DB_NAME)
    for script in sqlite._MIGRATIONS[:3]:
        conn.executescript(script)
    conn.execute(
        "INSERT INTO files VALUES ('/w/a.png', '/w', 'prj_1', '/w', 'a.png', 1, 2, 3, 4, 5,"
        " 'd1', NULL, NULL, NULL, 1.0)"
    )
    conn.execute("INSERT INTO retry_requests VALUES ('/w/b.png', 2.0)")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    journal = Journal.open(state)
    try:
        cached = journal.cached_file("ws_1", "/w/a.png")
        assert cached is not None
        assert cached.stat == FileStat(1, 2, 3, 4, 5)
        assert cached.digest == "d1"
        assert journal.take_retry_requests() == ["/w/b.png"]
        version = journal._conn().execute("PRAGMA user_version").fetchone()[0]
        assert version == len(sqlite._MIGRATIONS)
    finally:
        journal.close()


def test_a_tombstone_is_respected_until_its_path_is_retried(j: Journal) -> None:
    """A link whose node was removed in FLORA (issue 15) counts as removed, reads as unchanged
    to a rescan, is left alone by a plain ``retry``, and ``retry PATH`` puts it back under a new
    attach key."""
    digest = "e" * 64
    stat = FileStat(1, 2, 3, 4, 5)
    j.record_file(FileEntry("/w/t.png", "/w", "prj_1", stat, digest))
    j.record(replace(_asset(digest), state=AssetState.READY, asset_id="asset_t"))
    attached = LinkRecord(
        WS, digest, "prj_1", LinkState.ATTACHED, attach_key="k0", node_id="node_1"
    )
    j.record(attached)
    j.flush()
    j.mark_removed(attached, "node_removed")
    counts = {state: n for _, _, state, n in j.file_counts(WS)}
    assert counts == {"removed": 1}
    known = j.known_file(WS, "/w/t.png", "prj_1")
    assert known is not None
    assert known[3] == 1  # a rescan does not offer it again
    assert j.reset_failed(WS, None) == []
    assert j.reset_failed(WS, ["/w/t.png"]) == ["/w/t.png"]
    link = j.link(WS, digest, "prj_1")
    assert link is not None
    assert (link.state, link.generation, link.attach_key, link.node_id) == (
        LinkState.PENDING,
        1,
        None,
        None,
    )
