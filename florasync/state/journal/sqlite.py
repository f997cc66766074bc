"""The SQLite backend of the journal: one file in the state dir, the embedded default.

Owns the SQLite file (created 0600 inside a 0700 state dir), connections (WAL, busy timeout),
``synchronous`` per batch (FULL for intents, NORMAL for results), the forward migrations and
the run lock (a flock in the state dir). The queries are ``store``'s.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from florasync import errors
from florasync.state.journal.writer import Conn
from florasync.state.runlock import RunLock

log = logging.getLogger(__name__)

DB_NAME = "journal.sqlite3"

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE assets (
        workspace_id TEXT NOT NULL, digest TEXT NOT NULL, size_bytes INTEGER NOT NULL,
        file_name TEXT NOT NULL, content_type TEXT NOT NULL, state TEXT NOT NULL,
        asset_id TEXT UNIQUE, generation INTEGER NOT NULL, reserve_key TEXT,
        reserved_at REAL, upload_json TEXT, upload_expires_at REAL, renewals INTEGER NOT NULL,
        ready_deadline REAL, attempts INTEGER NOT NULL, error_code TEXT, error_message TEXT,
        error_at REAL, updated_at REAL NOT NULL,
        PRIMARY KEY (workspace_id, digest));
    CREATE TABLE links (
        workspace_id TEXT NOT NULL, digest TEXT NOT NULL, project_id TEXT NOT NULL,
        state TEXT NOT NULL, generation INTEGER NOT NULL, attach_key TEXT, node_id TEXT,
        attempts INTEGER NOT NULL, error_code TEXT, error_message TEXT, error_at REAL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (workspace_id, digest, project_id));
    CREATE TABLE files (
        path TEXT PRIMARY KEY, folder TEXT NOT NULL, project_id TEXT NOT NULL,
        dir TEXT NOT NULL, name TEXT NOT NULL, dev INTEGER, ino INTEGER, size_bytes INTEGER,
        mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT, problem_code TEXT,
        problem_message TEXT, problem_at REAL, updated_at REAL NOT NULL);
    CREATE INDEX files_by_dir ON files (dir);
    CREATE INDEX files_by_inode ON files (dev, ino);
    CREATE INDEX files_by_digest ON files (digest);
    CREATE TABLE retry_requests (path TEXT PRIMARY KEY, requested_at REAL NOT NULL);
    """,
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, folder TEXT,
        kind TEXT NOT NULL, message TEXT NOT NULL);
    """,
    # issue 13: projects found or created by name; create_key is journaled before the POST
    """
    CREATE TABLE projects (
        workspace_id TEXT NOT NULL, name TEXT NOT NULL, project_id TEXT,
        create_key TEXT, create_at REAL, generation INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        PRIMARY KEY (workspace_id, name));
    """,
    # issue 14: the stat cache is keyed by host (a fleet's hosts see one share at different
    # dev/ino), and a file's identity across hosts is (folder_id, relpath); SQLite has one host
    """
    CREATE TABLE files_v4 (
        host_id TEXT NOT NULL DEFAULT '', path TEXT NOT NULL,
        folder_id TEXT NOT NULL DEFAULT '', relpath TEXT NOT NULL DEFAULT '',
        folder TEXT NOT NULL, project_id TEXT NOT NULL,
        dir TEXT NOT NULL, name TEXT NOT NULL, dev INTEGER, ino INTEGER, size_bytes INTEGER,
        mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT, problem_code TEXT,
        problem_message TEXT, problem_at REAL, updated_at REAL NOT NULL,
        PRIMARY KEY (host_id, path));
    INSERT INTO files_v4 SELECT '', path, '', '', folder, project_id, dir, name, dev, ino,
        size_bytes, mtime_ns, ctime_ns, digest, problem_code, problem_message, problem_at,
        updated_at FROM files;
    DROP TABLE files;
    ALTER TABLE files_v4 RENAME TO files;
    CREATE INDEX files_by_dir ON files (host_id, dir);
    CREATE INDEX files_by_inode ON files (host_id, dev, ino);
    CREATE INDEX files_by_digest ON files (digest);
    CREATE TABLE retry_requests_v4 (
        host_id TEXT NOT NULL DEFAULT '', path TEXT NOT NULL, requested_at REAL NOT NULL,
        PRIMARY KEY (host_id, path));
    INSERT INTO retry_requests_v4 SELECT '', path, requested_at FROM retry_requests;
    DROP TABLE retry_requests;
    ALTER TABLE retry_requests_v4 RENAME TO retry_requests;
    ALTER TABLE events ADD COLUMN host_id TEXT NOT NULL DEFAULT '';
    """,
)


class SqliteBackend:
    """The journal in ``state_dir/journal.sqlite3``."""

    error = sqlite3.Error
    shared = False

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DB_NAME
        self.where = str(self.path)
        self._synced: dict[int, bool] = {}  # the writer's connection: synchronous=FULL?
        try:
            _create_private(state_dir, self.path)
        except OSError as exc:
            raise errors.JournalError(f"cannot create the state dir {state_dir}: {exc}") from None

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 60000")
        return conn

    def begin(self, conn: Conn, *, durable: bool) -> None:
        if self._synced.get(id(conn)) is not durable:
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._synced[id(conn)] = durable
        conn.execute("BEGIN IMMEDIATE")

    def migrate(self, run: Callable[[Callable[[Conn], None]], None], read: Conn) -> None:
        read.execute("PRAGMA journal_mode = WAL")
        version = read.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            raise errors.JournalError(
                f"the journal {self.path} was written by a newer florasync (schema {version}); "
                "upgrade florasync or point state_dir elsewhere"
            )
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            statements = [stmt for stmt in script.split(";") if stmt.strip()]

            def migrate(conn: Conn, steps: list[str] = statements, to: int = number) -> None:
                for statement in steps:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {to}")  # in the same transaction

            run(migrate)
            log.debug("journal migrated to schema %d", number)

    def lock_run(self, state_dir: Path) -> RunLock:
        return RunLock(state_dir)

    def close(self) -> None:
        self._synced.clear()


def _create_private(state_dir: Path, db_path: Path) -> None:
    """State dir 0700 and database 0600 from the first byte (WAL/SHM inherit the db's mode)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db_path}{suffix}")
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


def exists(state_dir: Path) -> bool:
    """Whether a journal was ever created in ``state_dir``."""
    return (state_dir / DB_NAME).exists()
