"""The journal's group commit (state/journal/writer.py) on a real SQLite file.

Each test reads what was stored through a second connection, as another process would.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from florasync import errors
from florasync.state.journal.sqlite import SqliteBackend
from florasync.state.journal.writer import Conn, Writer

DEADLINE = 10.0


@pytest.fixture
def backend(tmp_path: Path) -> SqliteBackend:
    backend = SqliteBackend(tmp_path)
    conn = backend.connect()
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, tag TEXT NOT NULL)")
    conn.close()
    return backend


@pytest.fixture
def writer(backend: SqliteBackend) -> Iterator[Writer]:
    writer = Writer(backend)
    yield writer
    writer.close()


def stored(backend: SqliteBackend) -> list[tuple[int, str]]:
    conn = sqlite3.connect(backend.path)
    try:
        return conn.execute("SELECT n, tag FROM t ORDER BY n").fetchall()
    finally:
        conn.close()


def insert(n: int, tag: str = "x") -> Callable[[Conn], int]:
    def fn(conn: Conn) -> int:
        return int(conn.execute("INSERT INTO t VALUES (?, ?) RETURNING n", (n, tag)).fetchone()[0])

    return fn


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


def test_every_waiting_thread_gets_its_own_result(writer: Writer, backend: SqliteBackend) -> None:
    threads, per_thread = 16, 40
    results: dict[int, list[int]] = {}

    def work(k: int) -> None:
        results[k] = [
            writer.apply(insert(k * 1000 + i), durable=i % 3 == 0) for i in range(per_thread)
        ]

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(DEADLINE)
    assert all(not t.is_alive() for t in pool)
    for k in range(threads):
        assert results[k] == [k * 1000 + i for i in range(per_thread)]
    assert len(stored(backend)) == threads * per_thread


def test_a_submitted_write_commits_with_nobody_waiting(
    writer: Writer, backend: SqliteBackend
) -> None:
    writer.submit(insert(1, "alone"))
    wait_for(lambda: stored(backend) == [(1, "alone")])


def test_a_failing_write_does_not_take_its_batch_down(
    writer: Writer, backend: SqliteBackend
) -> None:
    """Writes queued while a leader commits go into one batch; the one that fails (a
    duplicate key) gets its error, its neighbours their results."""
    writer.apply(insert(7, "first"), durable=False)
    inside, release = threading.Event(), threading.Event()

    def slow(conn: Conn) -> int:
        inside.set()
        release.wait(DEADLINE)
        return insert(100)(conn)

    outcomes: dict[str, object] = {}

    def ask(name: str, fn: Callable[[Conn], int]) -> None:
        try:
            outcomes[name] = writer.apply(fn, durable=True)
        except errors.JournalError as exc:
            outcomes[name] = exc
        except sqlite3.Error as exc:
            outcomes[name] = exc

    leader = threading.Thread(target=ask, args=("slow", slow))
    leader.start()
    assert inside.wait(DEADLINE)
    queued = [
        threading.Thread(target=ask, args=(name, fn))
        for name, fn in (("a", insert(8)), ("dup", insert(7, "again")), ("b", insert(9)))
    ]
    for t in queued:
        t.start()
    wait_for(lambda: len(writer._pending) == 3)  # all three queued behind it
    release.set()
    for t in [leader, *queued]:
        t.join(DEADLINE)
    assert outcomes["slow"] == 100
    assert outcomes["a"] == 8
    assert outcomes["b"] == 9
    assert isinstance(outcomes["dup"], sqlite3.IntegrityError)
    assert stored(backend) == [(7, "first"), (8, "x"), (9, "x"), (100, "x")]


def test_close_commits_what_was_submitted(backend: SqliteBackend) -> None:
    writer = Writer(backend)
    for n in range(50):
        writer.submit(insert(n))
    writer.close()
    assert [n for n, _ in stored(backend)] == list(range(50))


def test_a_write_after_the_database_failed_gets_a_new_connection(
    writer: Writer, backend: SqliteBackend
) -> None:
    """A batch whose transaction fails is reported to its writers; the next one commits."""

    def break_transaction(conn: Conn) -> int:
        conn.execute("ROLLBACK")  # the COMMIT that follows fails: no transaction is open
        return 0

    with pytest.raises(errors.JournalError, match="journal write failed"):
        writer.apply(break_transaction, durable=False)
    assert writer.apply(insert(3), durable=True) == 3
    assert stored(backend) == [(3, "x")]
