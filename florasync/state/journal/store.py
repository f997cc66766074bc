"""The journal: assets, attachments and the stat cache, each step written before it is taken.

Owns every query (written once, in SQL both backends speak: ``?`` placeholders, ``ON CONFLICT``
upserts) and what a write waits for. Where the rows live is the backend's business
(``sqlite.SqliteBackend``, the embedded default; ``postgres.PostgresBackend``); the interface
speaks in ``lifecycle`` records and ``records``' plain types, never in a driver's types.
Knows nothing of HTTP or watchdog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from florasync import errors
from florasync.flora.models import UploadInstructions
from florasync.local import admission
from florasync.local.identity import FileStat
from florasync.state import lifecycle
from florasync.state.journal import sqlite
from florasync.state.journal.records import CachedFile, FileEntry, KnownFile, ProjectName
from florasync.state.journal.writer import Backend, Conn, Writer
from florasync.state.lifecycle import AssetRecord, AssetState, Failure, LinkRecord, LinkState
from florasync.state.runlock import RunLock

if TYPE_CHECKING:
    from florasync.state.journal.fleet import Fleet

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_EVENTS = 500
MIGRATED = "journal_migrated"  # the event ``journal migrate`` leaves in the target


class Journal:
    """The journal of one ``state_dir`` in ``backend``; one reading connection per thread.

    Intents (``begin``) commit durably so the idempotency key is on disk before the request
    leaves; results (``record``) and the stat cache commit without waiting for the disk: a power
    loss may drop a result, and the deterministic keys recover it (CONTRACT.md §5).
    """

    def __init__(
        self,
        state_dir: Path,
        backend: Backend,
        *,
        host_id: str = "",
        folder_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.backend = backend
        # the stat cache, problems and retry requests are this host's (NFS dev/ino differ per
        # host); assets, links and projects are the workspace's, shared by a fleet (issue 14)
        self.host_id = host_id
        self._folder_ids = dict(folder_ids or {})  # a folder's root path -> its id
        self.fleet: Fleet | None = None  # a run on a shared journal (``opening.join_fleet``)
        self._local = threading.local()
        self._all: list[Conn] = []
        self._lock = threading.Lock()
        self._writer = Writer(backend)
        backend.migrate(lambda fn: self._apply(fn, durable=True), self._conn())

    @property
    def path(self) -> str:
        """Where the journal is, as messages show it (a file, or a database without password)."""
        return self.backend.where

    @classmethod
    def open(
        cls,
        state_dir: Path,
        backend: Backend | None = None,
        *,
        host_id: str = "",
        folder_ids: Mapping[str, str] | None = None,
    ) -> Journal:
        """Open (creating if needed) the journal of ``state_dir``: by default the SQLite file
        there (mode 0600). ``host_id`` keys this host's stat cache (a shared database);
        ``folder_ids`` maps each folder's root path to its id (a file's identity across hosts).

        Raises:
            errors.JournalError: it cannot be created, opened or migrated.
        """
        try:
            backend = backend or sqlite.SqliteBackend(state_dir)
            return cls(state_dir, backend, host_id=host_id, folder_ids=folder_ids)
        except sqlite.SqliteBackend.error as exc:
            where = backend.where if backend else state_dir / sqlite.DB_NAME
            raise errors.JournalError(f"cannot open the journal {where}: {exc}") from None

    def lock_run(self) -> RunLock:
        """Hold the journal for one ``run`` (raises AlreadyRunningError naming the pid)."""
        return self.backend.lock_run(self.state_dir)

    def close(self) -> None:
        """Finish pending writes, stop the writer, close every connection."""
        self._writer.close()
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
        self.backend.close()

    # -- stat cache ---------------------------------------------------------------------------

    def dir_entries(
        self, workspace_id: str, directory: str, project_id: str
    ) -> dict[str, KnownFile]:
        """Every known file of one directory, by name, as a full scan for ``project_id`` reads
        it (one query)."""
        rows = self._conn().execute(
            _KNOWN_FILES + "f.dir = ?",
            (project_id, workspace_id, project_id, self.host_id, directory),
        )
        return {row[0]: row for row in rows}

    def known_file(self, workspace_id: str, path: str, project_id: str) -> KnownFile | None:
        """What the stat cache reads of one path (the watcher's single-file lookup)."""
        row: KnownFile | None = (
            self._conn()
            .execute(
                _KNOWN_FILES + "f.path = ?",
                (project_id, workspace_id, project_id, self.host_id, path),
            )
            .fetchone()
        )
        return row

    def cached_file(self, workspace_id: str, path: str) -> CachedFile | None:
        """What is known of one path, with its own project's attachment state."""
        row = (
            self._conn()
            .execute(_CACHED_FILES + "f.path = ?", (workspace_id, self.host_id, path))
            .fetchone()
        )
        return _cached(row) if row else None

    def by_inode(self, workspace_id: str, stat: FileStat) -> CachedFile | None:
        """A known path with the same (dev, ino): how a rename is recognised without a read."""
        row = (
            self._conn()
            .execute(
                _CACHED_FILES + "f.dev = ? AND f.ino = ? AND f.digest IS NOT NULL LIMIT 1",
                (workspace_id, self.host_id, stat.dev, stat.ino),
            )
            .fetchone()
        )
        return _cached(row) if row else None

    def record_file(self, entry: FileEntry) -> None:
        """Store (or replace) what is known of one path."""
        self._apply(lambda c: c.execute(_UPSERT_FILE, self._file_row(entry, time.time())))

    def forget_files(self, paths: Iterable[str]) -> int:
        """Drop paths that no longer exist (or no longer match the rules)."""
        rows = [(self.host_id, p) for p in paths]

        def forget(conn: Conn) -> int:
            sql = "DELETE FROM files WHERE host_id = ? AND path = ?"
            return int(conn.executemany(sql, rows).rowcount)

        return self._apply(forget)

    def forget_tree(self, path: str) -> int:
        """Drop ``path`` and, when it was a directory, every file under it (the watcher saw it
        go): ``status`` stops counting what is no longer there at once, not at the next scan."""
        below = (path + "/", path + "0")  # "0" sorts right after "/": a range, no LIKE escaping

        def forget(conn: Conn) -> int:
            cursor = conn.execute(
                "DELETE FROM files WHERE host_id = ? AND (path = ? OR (path >= ? AND path < ?))",
                (self.host_id, path, *below),
            )
            return int(cursor.rowcount)

        return self._apply(forget)

    def forget_dirs_except(self, folder: str, directories: set[str]) -> int:
        """After a full scan of ``folder``: drop files of directories that were not seen."""
        rows = self._conn().execute(
            "SELECT DISTINCT dir FROM files WHERE host_id = ? AND folder = ?",
            (self.host_id, folder),
        )
        gone = [(self.host_id, d) for d in {r[0] for r in rows} - directories]
        self._apply(
            lambda c: c.executemany(
                "DELETE FROM files WHERE host_id = ? AND dir = ?"
                " AND NOT (dev IS NULL AND problem_code IS NOT NULL)",
                gone,
            )
        )
        return len(gone)

    def clear_scan_problems(self, folder: str) -> None:
        """Before a full scan of ``folder``: drop its scan problems (found again if still there)."""
        self._apply(
            lambda c: c.execute(
                "DELETE FROM files WHERE host_id = ? AND folder = ? AND dev IS NULL"
                " AND problem_code IS NOT NULL",
                (self.host_id, folder),
            )
        )

    def paths_with_digest(self, digest: str) -> list[str]:
        rows = self._conn().execute(
            "SELECT path FROM files WHERE host_id = ? AND digest = ?", (self.host_id, digest)
        )
        return [r[0] for r in rows]

    # -- assets and links ---------------------------------------------------------------------

    def asset(self, workspace_id: str, digest: str) -> AssetRecord | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_ASSET_COLS} FROM assets WHERE workspace_id = ? AND digest = ?",
                (workspace_id, digest),
            )
            .fetchone()
        )
        return _asset_from_row(row) if row else None

    def _asset_and_link(self, link: LinkRecord) -> tuple[AssetRecord | None, LinkRecord | None]:
        """A content's asset row and its link row in one project, in one query."""
        row = (
            self._conn()
            .execute(
                f"SELECT {_ASSET_COLS_A}, {_LINK_COLS_L} FROM assets a LEFT JOIN links l"
                " ON l.workspace_id = a.workspace_id AND l.digest = a.digest AND l.project_id = ?"
                " WHERE a.workspace_id = ? AND a.digest = ?",
                (link.project_id, link.workspace_id, link.digest),
            )
            .fetchone()
        )
        if row is None:  # no asset row: no link row either (they are inserted together)
            return None, self.link(link.workspace_id, link.digest, link.project_id)
        asset = _asset_from_row(row[:_ASSET_WIDTH])
        stored = row[_ASSET_WIDTH:]
        return asset, _link_from_row(stored) if stored[0] is not None else None

    def link(self, workspace_id: str, digest: str, project_id: str) -> LinkRecord | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_LINK_COLS} FROM links WHERE workspace_id = ? AND digest = ?"
                " AND project_id = ?",
                (workspace_id, digest, project_id),
            )
            .fetchone()
        )
        return _link_from_row(row) if row else None

    def ensure(
        self, asset: AssetRecord, link: LinkRecord, file: FileEntry | None = None
    ) -> tuple[AssetRecord, LinkRecord]:
        """The stored asset and link rows, or ``asset`` and ``link`` as they will be stored.

        What is missing is inserted (and ``file``, the path the content was found at, stored)
        without waiting: one process owns the journal and one worker a content at a time, so
        nobody else writes these rows meanwhile; ON CONFLICT DO NOTHING keeps a row that exists.
        """
        self.flush()  # this thread's earlier writes must be visible to the reads
        stored_asset, stored_link = self._asset_and_link(link)
        now = time.time()

        def insert(conn: Conn) -> None:
            if stored_asset is None:
                conn.execute(_INSERT_ASSET, (*_asset_row(asset), now))
            if stored_link is None:
                conn.execute(_INSERT_LINK, (*_link_row(link), now))
            if file is not None:
                conn.execute(_UPSERT_FILE, self._file_row(file, now))

        fresh = stored_asset is None or stored_link is None
        self._submit(self._fenced(asset.workspace_id, asset.digest, insert) if fresh else insert)
        return stored_asset or asset, stored_link or link

    def begin(self, rec: AssetRecord | LinkRecord) -> None:
        """Store a record whose next request depends on it (an idempotency key): durably,
        before this returns (and with it every write queued before it)."""
        self._save(rec, durable=True)

    def record(self, rec: AssetRecord | LinkRecord) -> None:
        """Store the outcome of a request without waiting: it commits with the writer's next
        batch, after everything queued before it. A crash may lose it like a power loss may
        lose any result (docs/design.md): the deterministic keys and the lookups recover it.
        Read the journal after ``flush`` to see it."""
        sql, row = _save_statement(rec)
        self._submit(
            self._fenced(
                rec.workspace_id, rec.digest, lambda c: c.execute(sql, (*row, time.time()))
            )
        )

    def record_committed(self, rec: AssetRecord | LinkRecord) -> None:
        """Store ``rec`` and wait for its commit, not for the disk: it survives the process
        being killed (not a power loss), and so does everything queued before it."""
        self._save(rec, durable=False)

    def flush(self) -> None:
        """Wait until every write this thread queued is committed (read-your-writes); free
        when there is none."""
        if getattr(self._local, "pending", 0):
            self._apply(lambda _conn: None)

    def flush_all(self) -> None:
        """Wait until every write queued so far, by any thread, is committed (or failed)."""
        try:
            self._apply(lambda _conn: None)
        except errors.JournalError as exc:
            log.warning("%s", exc)

    def _submit(self, fn: Callable[[Conn], object]) -> None:
        self._local.pending = getattr(self._local, "pending", 0) + 1
        self._writer.submit(fn)

    def reservations_in_doubt(self, rec: AssetRecord) -> int:
        """Other contents of the same file name whose reservation may have landed unrecorded
        (an Idempotency-Key journaled, no asset id): a pending asset of that name may be theirs."""
        row = (
            self._conn()
            .execute(
                "SELECT count(*) FROM assets WHERE workspace_id = ? AND file_name = ?"
                " AND digest != ? AND asset_id IS NULL AND reserve_key IS NOT NULL",
                (rec.workspace_id, rec.file_name, rec.digest),
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def asset_id_free(self, asset_id: str) -> bool:
        """Whether no content of the journal holds ``asset_id`` (an adoption candidate)."""
        row = self._conn().execute("SELECT 1 FROM assets WHERE asset_id = ?", (asset_id,))
        return row.fetchone() is None

    def claim_asset_id(self, rec: AssetRecord, asset_id: str) -> bool:
        """Whether ``asset_id`` is not already held by another content (lookup after a 409)."""
        row = (
            self._conn()
            .execute("SELECT digest FROM assets WHERE asset_id = ?", (asset_id,))
            .fetchone()
        )
        return row is None or row[0] == rec.digest

    def _save(self, rec: AssetRecord | LinkRecord, *, durable: bool, fenced: bool = True) -> None:
        sql, row = _save_statement(rec)

        def write(conn: Conn) -> None:
            conn.execute(sql, (*row, time.time()))

        self._apply(
            self._fenced(rec.workspace_id, rec.digest, write) if fenced else write, durable=durable
        )

    # -- claims (a fleet: issue 14; free without one) ------------------------------------------

    def done_by_another_host(self, workspace_id: str, digest: str, project_id: str) -> bool:
        """Whether, with other hosts at work, the content is already attached to ``project_id``
        (one of them brought it in): this host only notes the file. False without a fleet."""
        if self.fleet is None or not self.fleet.peers or not project_id:
            return False
        link = self.link(workspace_id, digest, project_id)
        return link is not None and link.state == LinkState.ATTACHED

    def goes_first(self, digest: str) -> bool:
        """Whether this host should go for the content now (always, alone or on SQLite), or
        let the host the content prefers go first (``Fleet.prefers``)."""
        return self.fleet is None or not self.fleet.peers or self.fleet.prefers(digest)

    def note_file(self, entry: FileEntry) -> None:
        """Store what is known of one path without waiting (it commits with the next batch)."""
        self._submit(lambda c: c.execute(_UPSERT_FILE, self._file_row(entry, time.time())))

    def claim(self, workspace_id: str, digest: str, project_id: str) -> None:
        """Claim the content for this host before its first request (ClaimedElsewhereError:
        a live host holds it). Every write of its rows checks the claim until ``release``.
        Nothing is claimed when another host already brought it into ``project_id`` (the
        attachment is never undone): the job finds it attached and sends nothing."""
        if self.fleet is not None and not self.done_by_another_host(
            workspace_id, digest, project_id
        ):
            self.fleet.claim(workspace_id, digest)

    def check_claim(self, workspace_id: str, digest: str) -> None:
        """Before a request: the claim is still this host's (LeaseLostError if not)."""
        if self.fleet is not None:
            self.fleet.check(workspace_id, digest)

    def release(self, workspace_id: str, digest: str) -> None:
        """The job is over: release the claim after the job's writes (in queue order)."""
        if self.fleet is not None and (write := self.fleet.release(workspace_id, digest)):
            self._submit(write)

    def note_outcome(self, outcome: str) -> None:
        """A file's outcome, counted for this host in a fleet (``status`` shows the split)."""
        if self.fleet is not None:
            self.fleet.note(outcome)

    def _fenced(
        self, workspace_id: str, digest: str, fn: Callable[[Conn], T]
    ) -> Callable[[Conn], T]:
        """``fn``, checking in its transaction that this host still holds the content's claim
        at the generation it has now (raises LeaseLostError here when it holds none)."""
        fleet = self.fleet
        if fleet is None:
            return fn
        generation = fleet.generation(workspace_id, digest)

        def fenced(conn: Conn) -> T:
            fleet.fence(conn, workspace_id, digest, generation)
            return fn(conn)

        return fenced

    def mark_removed(self, link: LinkRecord, reason: str) -> None:
        """A tombstone: this attachment was removed in FLORA (``verify`` saw it, ``reason``
        says how); it is not attached again until ``retry PATH``."""
        tombstone = lifecycle.removed_in_flora(link, reason, time.time())
        self._save(tombstone, durable=True, fenced=False)

    # -- what verify compares with FLORA (issue 15) -------------------------------------------

    def all_links(
        self, workspace_id: str
    ) -> list[tuple[str, str, str, str | None, str | None, str | None, float | None]]:
        """Every (content, project) the journal knows, with its asset:
        ``(digest, project_id, link state, asset_id, node_id, asset state, reserved_at)``."""
        rows = self._conn().execute(
            "SELECT l.digest, l.project_id, l.state, a.asset_id, l.node_id, a.state,"
            " a.reserved_at FROM links l LEFT JOIN assets a ON a.workspace_id = l.workspace_id"
            " AND a.digest = l.digest WHERE l.workspace_id = ? ORDER BY l.digest, l.project_id",
            (workspace_id,),
        )
        return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def host_files(self) -> list[tuple[str, str, str, str | None]]:
        """This host's stat cache: ``(folder, path, project_id, digest)`` of every file."""
        rows = self._conn().execute(
            "SELECT folder, path, project_id, digest FROM files WHERE host_id = ?"
            " AND dev IS NOT NULL ORDER BY path",
            (self.host_id,),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def adopt(self, asset: AssetRecord, link: LinkRecord, file: FileEntry) -> None:
        """Record a file as synced by an asset already in FLORA (``verify --adopt``): the
        content's asset (unless the journal has one), the attachment, and the file; durably."""
        now = time.time()

        def write(conn: Conn) -> None:
            conn.execute(_INSERT_ASSET, (*_asset_row(asset), now))
            conn.execute(_UPSERT_LINK, (*_link_row(link), now))
            conn.execute(_UPSERT_FILE, self._file_row(file, now))

        self._apply(write, durable=True)

    # -- projects by name ---------------------------------------------------------------------

    def project_names(self, workspace_id: str) -> dict[str, ProjectName]:
        """Every project name the journal knows in ``workspace_id``, by name."""
        rows = self._conn().execute(
            "SELECT name, project_id, create_key, generation FROM projects WHERE workspace_id = ?",
            (workspace_id,),
        )
        return {r[0]: ProjectName(r[0], r[1], r[2], r[3]) for r in rows}

    def project_name(self, workspace_id: str, name: str) -> ProjectName | None:
        """What the journal knows of one project name."""
        row = (
            self._conn()
            .execute(
                "SELECT name, project_id, create_key, generation FROM projects"
                " WHERE workspace_id = ? AND name = ?",
                (workspace_id, name),
            )
            .fetchone()
        )
        return ProjectName(row[0], row[1], row[2], row[3]) if row else None

    def begin_project_create(
        self, workspace_id: str, name: str, create_key: str, generation: int = 0
    ) -> None:
        """Note durably, before the request leaves, that ``POST /projects`` for ``name`` is
        sent with ``create_key``: after a crash the name is looked up before it is created."""
        now = time.time()
        self._apply(
            lambda c: c.execute(
                "INSERT INTO projects (workspace_id, name, create_key, create_at, generation,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workspace_id, name) DO UPDATE"
                " SET create_key = excluded.create_key, create_at = excluded.create_at,"
                " generation = excluded.generation, updated_at = excluded.updated_at",
                (workspace_id, name, create_key, now, generation, now),
            ),
            durable=True,
        )

    def refuse_project_create(self, workspace_id: str, name: str, next_generation: int) -> None:
        """FLORA refused the create for good (403, 400): its key is spent; the next try of
        ``name`` (after a ``retry``, a reload, or a minute) uses ``next_generation``."""
        self._apply(
            lambda c: c.execute(
                "UPDATE projects SET create_key = NULL, generation = ?, updated_at = ?"
                " WHERE workspace_id = ? AND name = ?",
                (next_generation, time.time(), workspace_id, name),
            )
        )

    def record_project(self, workspace_id: str, name: str, project_id: str) -> None:
        """``name`` is the project ``project_id`` (found by name, or created)."""
        self._apply(
            lambda c: c.execute(
                "INSERT INTO projects (workspace_id, name, project_id, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (workspace_id, name) DO UPDATE SET"
                " project_id = excluded.project_id, updated_at = excluded.updated_at",
                (workspace_id, name, project_id, time.time()),
            )
        )

    # -- status and retry ---------------------------------------------------------------------

    def file_counts(self, workspace_id: str) -> list[tuple[str, str, str, int]]:
        """(folder, project_id, state, count) with state one of synced, pending, failed,
        skipped (refused by the folder's policy: a symlink leading outside, a loop) and removed
        (its node was removed in FLORA: a tombstone, issue 15)."""
        policy = sorted(admission.POLICY_CODES)
        rows = self._conn().execute(
            f"SELECT f.folder, f.project_id, {_file_state(len(policy))} AS st, count(*)"
            f" FROM files f {_STATE_JOIN} WHERE f.host_id = ? GROUP BY 1, 2, 3 ORDER BY 1, 3",
            (*policy, workspace_id, workspace_id, self.host_id),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def files_in_state(
        self, workspace_id: str, state: str, limit: int, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """This host's files in one of ``file_counts``' states, by path, with the reason a
        skipped one was refused; and how many there are in all."""
        policy = sorted(admission.POLICY_CODES)
        inner = (
            f"SELECT f.path, f.project_id, f.problem_code AS code, f.problem_message AS message,"
            f" f.updated_at AS at, {_file_state(len(policy))} AS st"
            f" FROM files f {_STATE_JOIN} WHERE f.host_id = ?"
        )
        params = (*policy, workspace_id, workspace_id, self.host_id, state)
        conn = self._conn()
        rows = conn.execute(
            f"SELECT path, project_id, code, message, at FROM ({inner}) AS t WHERE st = ?"
            " ORDER BY path LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        keys = ("path", "project_id", "code", "message", "at")
        found = [dict(zip(keys, r, strict=True)) for r in rows]
        total = conn.execute(f"SELECT count(*) FROM ({inner}) AS t WHERE st = ?", params)
        return found, int(total.fetchone()[0])

    def step_counts(self, workspace_id: str) -> dict[str, dict[str, int]]:
        """How many assets and links are in each lifecycle state."""
        conn = self._conn()
        assets = conn.execute(
            "SELECT state, count(*) FROM assets WHERE workspace_id = ? GROUP BY state",
            (workspace_id,),
        )
        links = conn.execute(
            "SELECT state, count(*) FROM links WHERE workspace_id = ? GROUP BY state",
            (workspace_id,),
        )
        return {"assets": dict(assets.fetchall()), "links": dict(links.fetchall())}

    def failures(self, workspace_id: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """The most recent failures (permanent, and transient ones still being retried)."""
        rows = self._conn().execute(
            f"SELECT path, project_id, code, message, at, permanent FROM ({_FAILURES})"
            " AS failures ORDER BY at DESC, path LIMIT ? OFFSET ?",
            (self.host_id, workspace_id, self.host_id, workspace_id, self.host_id, limit, offset),
        )
        keys = ("path", "project_id", "code", "message", "at", "permanent")
        return [dict(zip(keys, r, strict=True)) | {"permanent": bool(r[5])} for r in rows]

    def failure_count(self, workspace_id: str) -> int:
        """How many rows ``failures`` has in all (the control API pages through them)."""
        row = self._conn().execute(
            f"SELECT count(*) FROM ({_FAILURES}) AS failures",
            (self.host_id, workspace_id, self.host_id, workspace_id, self.host_id),
        )
        return int(row.fetchone()[0])

    def synced_files(self, workspace_id: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """This host's files attached in FLORA, the most recently attached first."""
        rows = self._conn().execute(
            "SELECT f.path, f.project_id, a.asset_id, l.updated_at, f.size_bytes FROM files f"
            f" {_SYNCED_JOIN} WHERE f.host_id = ? AND f.problem_code IS NULL"
            " AND l.state = 'attached' ORDER BY l.updated_at DESC, f.path LIMIT ? OFFSET ?",
            (workspace_id, workspace_id, self.host_id, limit, offset),
        )
        keys = ("path", "project_id", "asset_id", "at", "size_bytes")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def synced_count(self, workspace_id: str) -> int:
        row = self._conn().execute(
            f"SELECT count(*) FROM files f {_SYNCED_JOIN} WHERE f.host_id = ?"
            " AND f.problem_code IS NULL AND l.state = 'attached'",
            (workspace_id, workspace_id, self.host_id),
        )
        return int(row.fetchone()[0])

    def reset_failed(self, workspace_id: str, paths: list[str] | None) -> list[str]:
        """Put failed files (all, or the given paths) back in the queue; return their paths."""
        chosen = self._failed_paths(workspace_id, paths)
        for path, digest, project_id in chosen:
            self._reset_one(workspace_id, path, digest, project_id)
        now = time.time()
        requests = [(self.host_id, p, now) for p, _, _ in chosen]
        self._apply(
            lambda c: c.executemany(
                "INSERT INTO retry_requests (host_id, path, requested_at) VALUES (?, ?, ?)"
                " ON CONFLICT (host_id, path)"
                " DO UPDATE SET requested_at = excluded.requested_at",
                requests,
            )
        )
        return [p for p, _, _ in chosen]

    def note_event(self, folder: str | None, kind: str, message: str) -> None:
        """Something ``status`` should show (lost events, a folder gone, a watch limit...)."""
        row = (time.time(), folder, kind, message, self.host_id)

        def note(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO events (at, folder, kind, message, host_id) VALUES (?, ?, ?, ?, ?)",
                row,
            )
            conn.execute(
                "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", (MAX_EVENTS,)
            )

        self._apply(note)

    def recent_events(self, limit: int) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT at, folder, kind, message, host_id FROM events ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        keys = ("at", "folder", "kind", "message", "host")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def import_synced(self, entries: Iterable[tuple[FileEntry, AssetRecord, LinkRecord]]) -> int:
        """Record already-synced files in bulk, one transaction per 10,000 (seeding a journal
        from another store, or for benchmarks); returns how many were written."""
        total = 0
        batch: list[tuple[FileEntry, AssetRecord, LinkRecord]] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) == 10_000:
                total += self._import_batch(batch)
                batch = []
        return total + (self._import_batch(batch) if batch else 0)

    def _import_batch(self, batch: list[tuple[FileEntry, AssetRecord, LinkRecord]]) -> int:
        now = time.time()

        def insert(conn: Conn) -> None:
            conn.executemany(_UPSERT_FILE, (self._file_row(f, now) for f, _, _ in batch))
            conn.executemany(_UPSERT_ASSET, ((*_asset_row(a), now) for _, a, _ in batch))
            conn.executemany(_UPSERT_LINK, ((*_link_row(lk), now) for _, _, lk in batch))

        self._apply(insert)
        return len(batch)

    # -- moving a journal ---------------------------------------------------------------------

    def knows_host(self) -> bool:
        """Whether this journal holds anything of this host: a file it saw, or a migration of
        its former journal into this one (``journal migrate`` notes one)."""
        conn = self._conn()
        host = (self.host_id,)
        seen = conn.execute("SELECT 1 FROM files WHERE host_id = ? LIMIT 1", host).fetchone()
        moved = conn.execute(
            "SELECT 1 FROM events WHERE kind = ? AND host_id = ? LIMIT 1", (MIGRATED, *host)
        ).fetchone()
        return seen is not None or moved is not None

    def has_assets(self) -> bool:
        """Whether any content was ever recorded (an empty journal has none)."""
        return self._conn().execute("SELECT 1 FROM assets LIMIT 1").fetchone() is not None

    def row_counts(self) -> dict[str, int]:
        """How many rows each table holds (``journal migrate`` reports and checks them)."""
        conn = self._conn()
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in _TABLES}

    def copy_into(self, target: Journal) -> dict[str, int]:
        """Copy every row into ``target`` (another backend), each table in batches; the
        counts copied. Events get new ids in the target, in the same order."""
        self.flush()
        copied = {}
        for table, columns in _TABLES.items():
            rows = self._conn().execute(f"SELECT {columns} FROM {table}")
            copied[table] = 0
            while batch := rows.fetchmany(5000):
                if table in _HOST_TABLES:  # this host's rows become the target's host's
                    batch = [target._rehosted(table, row) for row in batch]
                target._insert_rows(_insert_missing(table, columns), batch)
                copied[table] += len(batch)
        return copied

    def _rehosted(self, table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A row of another journal's host as this journal's host's (``copy_into``)."""
        if table == "files":  # its folder's id as this journal's config names it
            return self._file_ids(row[1], row[4]) + tuple(row[4:])
        return (self.host_id, *row[1:])

    def _insert_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._apply(lambda c: c.executemany(sql, rows), durable=True)

    def take_retry_requests(self) -> list[str]:
        """Paths put back by ``florasync retry`` since the last call (the daemon polls this).

        Looks before it writes: an idle daemon polling every few seconds must not write.
        """
        host = (self.host_id,)
        sql = "SELECT path FROM retry_requests WHERE host_id = ?"
        if self._conn().execute(sql + " LIMIT 1", host).fetchone() is None:
            return []

        def take(conn: Conn) -> list[str]:
            rows = conn.execute(sql, host).fetchall()
            conn.execute("DELETE FROM retry_requests WHERE host_id = ?", host)
            return [r[0] for r in rows]

        return self._apply(take)

    def _failed_paths(
        self, workspace_id: str, paths: list[str] | None
    ) -> list[tuple[str, str | None, str]]:
        """Failed files; a refusal that is the folder's policy (an escaping symlink) is not a
        failure to retry: putting it back would only ask to upload what must not leave. A
        tombstone (removed in FLORA) is put back only when its path is named: a deletion is
        respected unless the user asks for that file."""
        rows = (
            self._conn()
            .execute(
                "SELECT f.path, f.digest, f.project_id, f.problem_code, l.state FROM files f"
                " LEFT JOIN assets a ON a.workspace_id = ? AND a.digest = f.digest"
                " LEFT JOIN links l ON l.workspace_id = ? AND l.digest = f.digest"
                " AND l.project_id = f.project_id WHERE f.host_id = ? AND"
                " (f.problem_code IS NOT NULL OR a.state = 'failed'"
                " OR l.state IN ('failed', 'removed_in_flora'))",
                (workspace_id, workspace_id, self.host_id),
            )
            .fetchall()
        )
        wanted = None if paths is None else set(paths)
        return [
            (r[0], r[1], r[2])
            for r in rows
            if (wanted is None or r[0] in wanted)
            and r[3] not in admission.POLICY_CODES
            and (wanted is not None or r[4] != LinkState.REMOVED)
        ]

    def _reset_one(self, workspace_id: str, path: str, digest: str | None, project_id: str) -> None:
        self._apply(
            lambda c: c.execute(
                "UPDATE files SET problem_code = NULL, problem_message = NULL, problem_at = NULL,"
                " dev = NULL, ino = NULL WHERE host_id = ? AND path = ?",
                (self.host_id, path),
            ),
            durable=True,
        )
        if digest is None:
            return
        # not fenced: a failed content is nobody's work until it is put back (here)
        asset = self.asset(workspace_id, digest)
        link = self.link(workspace_id, digest, project_id)
        if asset is not None and asset.state == AssetState.FAILED:
            self._save(lifecycle.reset_asset(asset), durable=True, fenced=False)
        elif asset is not None and _asset_unusable(link):  # a tombstone of a gone asset
            self._save(lifecycle.upload_again(asset), durable=True, fenced=False)
        if link is not None and link.state in (LinkState.FAILED, LinkState.REMOVED):
            self._save(lifecycle.reset_link(link), durable=True, fenced=False)

    # -- a file's identity --------------------------------------------------------------------

    def set_folder_ids(self, folder_ids: Mapping[str, str]) -> None:
        """The folders' ids after a reload (new folders' files carry theirs from now on)."""
        self._folder_ids = dict(folder_ids)

    def _file_row(self, entry: FileEntry, now: float) -> tuple[Any, ...]:
        return _file_row(self._file_ids(entry.path, entry.folder), entry, now)

    def _file_ids(self, path: str, folder: str) -> tuple[str, str, str, str]:
        """(host_id, path, folder_id, relpath): the stat cache's key on this host, and the
        file's identity across hosts (its folder's id and its path inside the folder)."""
        relpath = path[len(folder) :].lstrip("/") if path.startswith(folder) else path
        return self.host_id, path, self._folder_ids.get(folder, ""), relpath

    # -- connections and schema ---------------------------------------------------------------

    def drop_reader(self) -> None:
        """Close this thread's reading connection (a short-lived thread, such as a control API
        request's, must not leave one behind per request)."""
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            self._all = [c for c in self._all if c is not conn]
        conn.close()

    def _conn(self) -> Conn:
        """This thread's reading connection (readers never wait for the writer)."""
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.backend.connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _apply(self, fn: Callable[[Conn], T], *, durable: bool = False) -> T:
        """Run ``fn`` in a write transaction on the writer thread; return what it returns.

        ``durable``: the commit is on disk before this returns. The writes
        this thread queued before are committed with it (the writer keeps queue order).
        """
        result = self._writer.apply(fn, durable=durable)
        self._local.pending = 0
        return result


# -- rows <-> records --------------------------------------------------------------------------

_ASSET_COLS = (
    "workspace_id, digest, size_bytes, file_name, content_type, state, asset_id, generation,"
    " reserve_key, reserved_at, upload_json, upload_expires_at, renewals, ready_deadline,"
    " attempts, error_code, error_message, error_at"
)
_LINK_COLS = (
    "workspace_id, digest, project_id, state, generation, attach_key, node_id, attempts,"
    " error_code, error_message, error_at"
)
_ASSET_WIDTH = len(_ASSET_COLS.split(","))
_ASSET_COLS_A = ", ".join(f"a.{c.strip()}" for c in _ASSET_COLS.split(","))
_LINK_COLS_L = ", ".join(f"l.{c.strip()}" for c in _LINK_COLS.split(","))
# the project filter is in the join condition: the probe of links is for the scanned project only,
# and a file mapped to another project is never attached here (whatever its own link says)
_KNOWN_FILES = (
    "SELECT f.name, f.digest, f.problem_code IS NOT NULL, l.state IS NOT NULL, f.dev, f.ino,"
    " f.size_bytes, f.mtime_ns, f.ctime_ns FROM files f LEFT JOIN links l"
    " ON f.project_id = ? AND l.workspace_id = ? AND l.digest = f.digest"
    " AND l.project_id = ? AND l.state IN ('attached', 'removed_in_flora')"
    " WHERE f.host_id = ? AND "
)
_FILE_COLS = (
    "host_id, path, folder_id, relpath, folder, project_id, dir, name, dev, ino, size_bytes,"
    " mtime_ns, ctime_ns, digest, problem_code, problem_message, problem_at, updated_at"
)


# every failure of this host: a file refused or failed locally, its asset or its link failed
# (permanent) or erring and retried; parameters: host, workspace, host, workspace, host
_FAILURES = (
    " SELECT f.path, f.project_id, f.problem_code AS code, f.problem_message AS message,"
    "  f.problem_at AS at, 1 AS permanent FROM files f WHERE f.host_id = ?"
    "  AND f.problem_code IS NOT NULL"
    " UNION ALL"
    " SELECT f.path, f.project_id, a.error_code, a.error_message, a.error_at,"
    "  CASE WHEN a.state = 'failed' THEN 1 ELSE 0 END FROM files f JOIN assets a"
    "  ON a.workspace_id = ? AND a.digest = f.digest"
    "  WHERE f.host_id = ? AND a.error_code IS NOT NULL AND a.state != 'ready'"
    " UNION ALL"
    " SELECT f.path, f.project_id, l.error_code, l.error_message, l.error_at,"
    "  CASE WHEN l.state = 'failed' THEN 1 ELSE 0 END FROM files f JOIN links l"
    "  ON l.workspace_id = ? AND l.digest = f.digest AND l.project_id = f.project_id"
    "  WHERE f.host_id = ? AND l.error_code IS NOT NULL"
    "  AND l.state NOT IN ('attached', 'removed_in_flora')"
)
_STATE_JOIN = (
    "LEFT JOIN assets a ON a.workspace_id = ? AND a.digest = f.digest"
    " LEFT JOIN links l ON l.workspace_id = ? AND l.digest = f.digest"
    " AND l.project_id = f.project_id"
)


def _file_state(policy_codes: int) -> str:
    """A file's state for ``status``: its first parameters are the policy refusal codes."""
    return (
        f"CASE WHEN f.problem_code IN ({', '.join('?' * policy_codes)}) THEN 'skipped'"
        " WHEN f.problem_code IS NOT NULL THEN 'failed'"
        " WHEN l.state = 'attached' THEN 'synced'"
        " WHEN l.state = 'removed_in_flora' THEN 'removed'"
        " WHEN l.state = 'failed' OR a.state = 'failed' THEN 'failed'"
        " ELSE 'pending' END"
    )


_SYNCED_JOIN = (
    "JOIN assets a ON a.workspace_id = ? AND a.digest = f.digest"
    " JOIN links l ON l.workspace_id = ? AND l.digest = f.digest AND l.project_id = f.project_id"
)


def _upsert(table: str, columns: str, key: str) -> str:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` of every other column (SQLite and PostgreSQL
    both speak it; SQLite's ``INSERT OR REPLACE`` is its own dialect)."""
    names = [c.strip() for c in columns.split(",")]
    keys = {k.strip() for k in key.split(",")}
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c not in keys)
    marks = ", ".join("?" * len(names))
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({marks})"
        f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


def _insert_missing(table: str, columns: str) -> str:
    marks = ", ".join("?" * len(columns.split(",")))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"


_CACHED_FILES = (  # a path's stat cache entry and its own project's link state
    "SELECT f.path, f.project_id, f.dev, f.ino, f.size_bytes, f.mtime_ns, f.ctime_ns,"
    " f.digest, f.problem_code, l.state FROM files f LEFT JOIN links l"
    " ON l.workspace_id = ? AND l.digest = f.digest AND l.project_id = f.project_id"
    " WHERE f.host_id = ? AND "
)
_UPSERT_FILE = _upsert("files", _FILE_COLS, "host_id, path")
_TABLES = {  # every table and the columns a copy carries (an event's id is the target's)
    "assets": f"{_ASSET_COLS}, updated_at",
    "links": f"{_LINK_COLS}, updated_at",
    "files": _FILE_COLS,
    "projects": "workspace_id, name, project_id, create_key, create_at, generation, updated_at",
    "retry_requests": "host_id, path, requested_at",
    "events": "at, folder, kind, message, host_id",
}
_HOST_TABLES = ("files", "retry_requests")  # keyed by host: a copy takes the target's host
_UPSERT_ASSET = _upsert("assets", f"{_ASSET_COLS}, updated_at", "workspace_id, digest")
_INSERT_ASSET = _insert_missing("assets", f"{_ASSET_COLS}, updated_at")
_UPSERT_LINK = _upsert("links", f"{_LINK_COLS}, updated_at", "workspace_id, digest, project_id")
_INSERT_LINK = _insert_missing("links", f"{_LINK_COLS}, updated_at")


def _asset_unusable(link: LinkRecord | None) -> bool:
    """A tombstone whose asset is gone or unusable in FLORA: a retry uploads it again."""
    return (
        link is not None
        and link.state == LinkState.REMOVED
        and link.error is not None
        and link.error.code in lifecycle.ASSET_UNUSABLE
    )


def _save_statement(rec: AssetRecord | LinkRecord) -> tuple[str, tuple[Any, ...]]:
    if isinstance(rec, AssetRecord):
        return _UPSERT_ASSET, _asset_row(rec)
    return _UPSERT_LINK, _link_row(rec)


def _file_row(ids: tuple[str, str, str, str], entry: FileEntry, now: float) -> tuple[Any, ...]:
    st, problem = entry.stat, entry.problem
    stat_cols = (st.dev, st.ino, st.size, st.mtime_ns, st.ctime_ns) if st else (None,) * 5
    problem_cols = (problem.code, problem.message, problem.at) if problem else (None,) * 3
    return (
        *ids,
        entry.folder,
        entry.project_id,
        entry.directory,
        entry.name,
        *stat_cols,
        entry.digest,
        *problem_cols,
        now,
    )


def _asset_row(r: AssetRecord) -> tuple[Any, ...]:
    upload = r.upload.to_json() if r.upload else None
    expires = r.upload.expires_at if r.upload else None
    return (
        r.workspace_id,
        r.digest,
        r.size_bytes,
        r.file_name,
        r.content_type,
        str(r.state),
        r.asset_id,
        r.generation,
        r.reserve_key,
        r.reserved_at,
        upload,
        expires,
        r.renewals,
        r.ready_deadline,
        r.attempts,
        *_failure_cols(r.error),
    )


def _asset_from_row(row: tuple[Any, ...]) -> AssetRecord:
    upload = UploadInstructions.from_json(row[10]) if row[10] else None
    return AssetRecord(
        workspace_id=row[0],
        digest=row[1],
        size_bytes=row[2],
        file_name=row[3],
        content_type=row[4],
        state=AssetState(row[5]),
        asset_id=row[6],
        generation=row[7],
        reserve_key=row[8],
        reserved_at=row[9],
        upload=upload,
        renewals=row[12],
        ready_deadline=row[13],
        attempts=row[14],
        error=_failure(row[15:18]),
    )


def _link_row(r: LinkRecord) -> tuple[Any, ...]:
    return (
        r.workspace_id,
        r.digest,
        r.project_id,
        str(r.state),
        r.generation,
        r.attach_key,
        r.node_id,
        r.attempts,
        *_failure_cols(r.error),
    )


def _link_from_row(row: tuple[Any, ...]) -> LinkRecord:
    return LinkRecord(
        workspace_id=row[0],
        digest=row[1],
        project_id=row[2],
        state=LinkState(row[3]),
        generation=row[4],
        attach_key=row[5],
        node_id=row[6],
        attempts=row[7],
        error=_failure(row[8:11]),
    )


def _failure_cols(f: Failure | None) -> tuple[Any, Any, Any]:
    return (f.code, f.message, f.at) if f else (None, None, None)


def _failure(cols: tuple[Any, ...]) -> Failure | None:
    return Failure(cols[0], cols[1] or "", cols[2] or 0.0) if cols[0] else None


def _cached(row: tuple[Any, ...]) -> CachedFile:
    stat = FileStat(*row[2:7]) if row[2] is not None else None
    return CachedFile(
        path=row[0],
        project_id=row[1],
        stat=stat,
        digest=row[7],
        has_problem=row[8] is not None,
        link_state=row[9],
    )
