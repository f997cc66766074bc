"""The journal's one writing thread, and what a backend must give it (a database, any kind).

Owns write batching (group commit), the SAVEPOINT around each write of a batch of several,
handing results and errors back to the thread that asked, and the ``Backend`` protocol: how to
connect, begin a batch (durably or not) and migrate. SQL of the queries is ``store``'s;
dialects are the backends'.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
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
    """One write for the writer thread; ``done`` is None when nobody waits for it."""

    __slots__ = ("done", "durable", "error", "fn", "result")

    def __init__(self, fn: Callable[[Conn], T], durable: bool, waited: bool) -> None:
        self.fn = fn
        self.durable = durable
        self.done = threading.Event() if waited else None
        self.result: T | None = None
        self.error: BaseException | None = None


class Writer:
    """The one thread that writes: what queued while it committed goes in the next transaction.

    Threads of one process would otherwise queue for the database's write lock one transaction
    each (measured on SQLite: the lock held 75 % of a burst). Batching also groups the syncs of
    durable writes into one (group commit). Each write runs in its own SAVEPOINT, so one failing
    write does not take its neighbours down.
    """

    MAX_BATCH = 512

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._queue: queue.SimpleQueue[Op[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def apply(self, fn: Callable[[Conn], T], *, durable: bool) -> T:
        op: Op[T] = Op(fn, durable, waited=True)
        self._start()
        self._queue.put(op)
        assert op.done is not None  # noqa: S101 -- a waited op has its event
        op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    def submit(self, fn: Callable[[Conn], object]) -> None:
        """Queue a write and go on: it commits with a later batch, in queue order."""
        self._start()
        self._queue.put(Op(fn, False, waited=False))

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="florasync-journal")
                self._thread.daemon = True
                self._thread.start()

    def _run(self) -> None:
        conn: Conn = None
        try:
            while (batch := self._next_batch()) is not None:
                conn = conn or self._connect(batch)
                if conn is not None and not self._commit(conn, batch):
                    _close_quietly(conn, self._backend.error)  # a new one for the next batch
                    conn = None
        finally:
            if conn is not None:
                _close_quietly(conn, self._backend.error)

    def _connect(self, batch: list[Op[Any]]) -> Conn:
        """The writer's connection, or None (the batch fails with the reason: the database
        may be back for the next one)."""
        try:
            return self._backend.connect()
        except (self._backend.error, errors.JournalError) as exc:
            self._fail(batch, exc)
            return None

    def _next_batch(self) -> list[Op[Any]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.MAX_BATCH:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(op)
        return batch

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
            if op.done is not None:
                op.done.set()
            elif isinstance(op.error, errors.LeaseLostError):  # the worker hears it next
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
