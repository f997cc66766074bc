"""The journal's writes, and what a backend must give it (a database, any kind).

Owns write batching (group commit on one connection, led by a waiting thread), the SAVEPOINT
around each write of a batch of several, handing results and errors back to the thread that
asked, and the ``Backend`` protocol: how to
connect, begin a batch (durably or not) and migrate. SQL of the queries is ``store``'s;
dialects are the backends'.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from florasync import errors

if TYPE_CHECKING:
    from pathlib import Path

    from florasync.state.runlock import RunLock

log = logging.getLogger(__name__)

T = TypeVar("T")

Conn = Any
"""A DB-API-like connection: ``execute(sql, params)`` → a cursor (iterable, ``fetchone``,
``fetchall``, ``rowcount``), ``executemany(sql, rows)``, ``close()``; ``?`` placeholders."""


class Backend(Protocol):
    """A database the journal can live in (``sqlite.SqliteBackend``, ``postgres``' one)."""

    @property
    def where(self) -> str:
        """Shown in messages: a file path, or host:port/database (never a password)."""

    @property
    def error(self) -> type[Exception]:
        """The driver's base error."""

    @property
    def shared(self) -> bool:
        """Whether several hosts may share it (a fleet: claims and heartbeats, issue 14)."""

    def connect(self) -> Conn:
        """A new connection (one per reading thread, one for the writer)."""

    def begin(self, conn: Conn, *, durable: bool) -> None:
        """Open the batch's transaction; ``durable``: its commit is on disk when it returns."""

    def migrate(self, run: Callable[[Callable[[Conn], None]], None], read: Conn) -> None:
        """Bring the schema up to date; ``run(fn)`` applies ``fn`` in a durable transaction."""

    def lock_run(self, state_dir: Path) -> RunLock:
        """Hold the journal for one ``run`` (raises AlreadyRunningError)."""

    def close(self) -> None:
        """Release what the backend holds beyond its connections."""


class Op(Generic[T]):
    """One write; ``waited`` when a thread waits for its result."""

    __slots__ = ("durable", "error", "finished", "fn", "result", "waited")

    def __init__(self, fn: Callable[[Conn], T], durable: bool, waited: bool) -> None:
        self.fn = fn
        self.durable = durable
        self.waited = waited
        self.finished = False
        self.result: T | None = None
        self.error: BaseException | None = None


class Writer:
    """Group commit on one connection: what queued while one batch committed goes in the next.

    Threads of one process would otherwise queue for the database's write lock one transaction
    each (measured on SQLite: the lock held 75 % of a burst). Batching also groups the syncs of
    durable writes into one. Each write runs in its own SAVEPOINT, so one failing write does not
    take its neighbours down.

    The thread that waits for a write commits the batch itself (the leader): no hand-off to
    another thread and back, which cost two thread switches per write (a fifth of a burst's
    CPU). Threads that queue while a leader commits wait for the commit lock; when they get it
    their write is usually done already. Writes nobody waits for (``submit``) ride with the next
    leader's batch, or the flusher thread commits them after ``LINGER_SECONDS``.
    """

    MAX_BATCH = 512
    LINGER_SECONDS = 0.005

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._pending: collections.deque[Op[Any]] = collections.deque()
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()  # held by the leader for its batch
        self._conn: Conn = None
        self._queued = threading.Event()  # submitted writes wait for the flusher
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def apply(self, fn: Callable[[Conn], T], *, durable: bool) -> T:
        op: Op[T] = Op(fn, durable, waited=True)
        with self._pending_lock:
            self._pending.append(op)
        while not op.finished:
            with self._commit_lock:
                if not op.finished:
                    self._commit_pending()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    def submit(self, fn: Callable[[Conn], object]) -> None:
        """Queue a write and go on: it commits with a later batch, in queue order."""
        with self._pending_lock:
            self._pending.append(Op(fn, False, waited=False))
        if not self._queued.is_set():
            self._start()
            self._queued.set()

    def close(self) -> None:
        """Commit what is queued, stop the flusher, close the connection."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queued.set()
            thread.join()
        with self._commit_lock:
            while self._pending:
                self._commit_pending()
            if self._conn is not None:
                _close_quietly(self._conn, self._backend.error)
                self._conn = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._flush_loop, name="florasync-journal")
                self._thread.daemon = True
                self._thread.start()

    def _flush_loop(self) -> None:
        """Commit submitted writes no leader took: after a short linger, so that a leader
        that comes soon takes them without waking this thread again."""
        while True:
            self._queued.wait()
            if not self._closed:
                time.sleep(self.LINGER_SECONDS)
            self._queued.clear()
            with self._commit_lock:
                while self._pending:
                    self._commit_pending()
            if self._closed:
                return

    def _commit_pending(self) -> None:
        """Commit the oldest queued writes as one batch (the caller holds the commit lock)."""
        with self._pending_lock:
            count = min(len(self._pending), self.MAX_BATCH)
            batch = [self._pending.popleft() for _ in range(count)]
        if not batch:
            return
        try:
            if self._conn is None:
                self._conn = self._connect(batch)
                if self._conn is None:
                    return
            if not self._commit(self._conn, batch):
                _close_quietly(self._conn, self._backend.error)  # a new one for the next batch
                self._conn = None
        except BaseException as exc:  # a bug, or Ctrl-C in the leader: the others must not wait
            self._fail([op for op in batch if not op.finished], exc)
            if self._conn is not None:  # maybe inside a transaction: the next batch starts anew
                _close_quietly(self._conn, self._backend.error)
                self._conn = None
            raise

    def _connect(self, batch: list[Op[Any]]) -> Conn:
        """The writer's connection, or None (the batch fails with the reason: the database
        may be back for the next one)."""
        try:
            return self._backend.connect()
        except (self._backend.error, errors.JournalError) as exc:
            self._fail(batch, exc)
            return None

    def _commit(self, conn: Conn, batch: list[Op[Any]]) -> bool:
        """Commit ``batch``; False when the transaction failed (nothing of it is stored)."""
        try:
            self._backend.begin(conn, durable=any(op.durable for op in batch))
            if len(batch) == 1:  # no neighbour to protect: no SAVEPOINT (two round trips)
                conn.execute("COMMIT" if _run_alone(conn, batch[0]) else "ROLLBACK")
            else:
                for op in batch:
                    _run_op(conn, op)
                conn.execute("COMMIT")
        except (self._backend.error, errors.JournalError) as exc:  # the database went away
            _rollback(conn, self._backend.error)
            self._fail(batch, exc)
            return False
        self._done(batch)
        return True

    def _fail(self, batch: list[Op[Any]], exc: BaseException) -> None:
        for op in batch:
            op.error = op.error or errors.JournalError(f"journal write failed: {exc}")
        self._done(batch)

    @staticmethod
    def _done(batch: list[Op[Any]]) -> None:
        for op in batch:
            op.finished = True
            if op.waited:
                continue
            if isinstance(op.error, errors.LeaseLostError):  # the worker hears it next
                log.info("journal write dropped: %s", op.error)
            elif op.error is not None:  # nobody waits to hear it: say it here
                log.error("journal write failed: %s", op.error)


def _run_alone(conn: Conn, op: Op[Any]) -> bool:
    """Run the batch's only write; False when it raised (its error is handed back)."""
    try:
        op.result = op.fn(conn)
    except BaseException as exc:  # noqa: BLE001 -- handed back to the thread that asked
        op.error = exc
        return False
    return True


def _run_op(conn: Conn, op: Op[Any]) -> None:
    conn.execute("SAVEPOINT op")
    try:
        op.result = op.fn(conn)
    except BaseException as exc:  # noqa: BLE001 -- handed back to the thread that asked
        conn.execute("ROLLBACK TO op")
        op.error = exc
    conn.execute("RELEASE op")


def _rollback(conn: Conn, error: type[Exception]) -> None:
    # no transaction was open (BEGIN failed), or the connection is gone
    with contextlib.suppress(error, errors.JournalError):
        conn.execute("ROLLBACK")


def _close_quietly(conn: Conn, error: type[Exception]) -> None:
    with contextlib.suppress(error, errors.JournalError):  # already broken
        conn.close()
