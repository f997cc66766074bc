"""The worker machinery: a hash stage and a pool of network workers behind bounded queues.

Owns threads, backpressure (a full queue blocks the producer instead of growing memory), the
one-worker-per-content lock, retries of deferred and changed files, shutdown, and the counts of
outcomes. What a job does is ``transfer``'s business; which files exist is the scanner's and the
watcher's.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar

from florasync import errors
from florasync.config.config import FolderConfig
from florasync.local import after_upload, identity
from florasync.local.identity import FileStat
from florasync.local.settle import Settler
from florasync.state.catalog import Catalog
from florasync.state.journal import FileEntry, Journal
from florasync.state.lifecycle import Failure
from florasync.sync.transfer import Job, Outcome, Result, Transfer

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_SYNCED = frozenset({Outcome.UPLOADED, Outcome.ATTACHED, Outcome.UNCHANGED})
_WAKE = object()  # put in a queue to wake its consumer

MAX_RESETTLES = 6  # a file that changes under us this often is reported, not chased forever
PAYMENT_PAUSE_SECONDS = 300.0
MAX_DEFER_SECONDS = 900.0
_POLL_SECONDS = 0.2
# An idle thread's safety-net wake-up: stopping wakes every thread at once (``_wake_all``), so
# this only bounds a missed wake-up; it keeps an idle daemon's CPU near zero (bench idle).
_IDLE_POLL_SECONDS = 5.0


class Progress(Protocol):
    """Where the pipeline reports progress (a terminal bar, metrics, or nothing)."""

    def queued(self, files: int, size_bytes: int) -> None: ...
    def finished(self, outcome: Outcome, size_bytes: int) -> None: ...
    def sent(self, size_bytes: int) -> None: ...


class NoProgress:
    def queued(self, files: int, size_bytes: int) -> None:
        pass

    def finished(self, outcome: Outcome, size_bytes: int) -> None:
        pass

    def sent(self, size_bytes: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Item:
    """A settled file in the pipeline: where it is, which folder maps it, what it looked like."""

    path: str
    folder: FolderConfig
    stat: FileStat
    digest: str | None = None  # known from the stat cache: no read needed
    classified: bool = False  # the stat cache was already consulted (a full scan does it)
    tries: int = 0


@dataclass(frozen=True, slots=True)
class _Offer:
    """What travels with a file while it settles."""

    folder: FolderConfig
    digest: str | None
    digest_stat: FileStat | None  # the stat the digest belongs to
    classified: bool
    tries: int = 0


@dataclass
class Summary:
    """Outcome counts and the failures of this pipeline's life, for ``run --scan``."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # path, code, message
    bytes_uploaded: int = 0

    def failed(self) -> int:
        return self.counts[Outcome.FAILED] + self.counts[Outcome.DEFERRED]


class Pipeline:
    """Hash stage → bounded job queue → ``workers`` network threads.

    ``submit`` blocks while the queues are full. ``wait_idle`` returns when everything submitted
    has an outcome. ``close`` stops taking work, lets jobs in progress finish within a grace
    period, then sets ``stop`` (which aborts uploads and retry waits) and joins every thread.
    """

    def __init__(
        self,
        *,
        workspace_id: str,
        journal: Journal,
        transfer_factory: Callable[[], Transfer],
        stop: threading.Event,
        workers: int = 4,
        settle_seconds: float = 2.0,
        max_file_bytes: int | None = None,
        retry_deferred: bool = False,
        on_refused: Callable[[errors.CredentialsError], None] | None = None,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workspace_id = workspace_id
        self._journal = journal
        self._transfer_factory = transfer_factory
        self._transfer: Transfer | None = None
        self.stop = stop
        self._workers = workers
        self._max_file_bytes = max_file_bytes
        self._retry_deferred = retry_deferred
        self._on_refused = on_refused
        self.refused: errors.CredentialsError | None = None
        self._parked: list[tuple[Item, Job]] = []
        self.progress: Progress = progress or NoProgress()
        self._clock = clock
        self._hash_q: queue.Queue[Item] = queue.Queue(maxsize=max(64, workers * 16))
        self._job_q: queue.Queue[tuple[Item, Job]] = queue.Queue(maxsize=max(8, workers * 2))
        self._timers = _Timers(clock, stop)
        self._settler: Settler[_Offer] = Settler(
            settle_seconds, ready=self._settled, gone=self._settle_gone
        )
        self._catalog = Catalog(journal, workspace_id, full_scan=False)
        self._mutex = threading.Condition()
        self._outstanding = 0
        self._busy = 0
        self._closing = threading.Event()
        self._content_locks: dict[str, _SharedLock] = {}
        self._paused_until = 0.0
        self._threads: list[threading.Thread] = []
        self.summary = Summary()
        self.fatal: errors.FlorasyncError | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> Pipeline:
        self._spawn("florasync-hash", self._hash_loop, 2)
        self._spawn("florasync-worker", self._work_loop, self._workers)
        self._spawn("florasync-timers", self._timers.run, 1)
        self._spawn("florasync-settle", lambda: self._settler.run(self.stop), 1)
        return self

    def offer(
        self,
        path: str,
        folder: FolderConfig,
        *,
        stat: FileStat | None = None,
        digest: str | None = None,
        classified: bool = False,
        closed: bool = False,
    ) -> bool:
        """Hand a file over: it is synced once it has settled. False when closing.

        A full scan passes what the stat cache said (``classified``, ``digest`` for ``stat``);
        the watcher passes only the path and whether a close-after-write was seen.
        """
        if self._closing.is_set():
            return False
        with self._mutex:
            self._outstanding += 1
        self.progress.queued(1, stat.size if stat else 0)
        self._settler.observe(path, _Offer(folder, digest, stat, classified), closed=closed)
        return True

    @property
    def settling(self) -> int:
        """Files waiting to stop changing."""
        return len(self._settler)

    def note(
        self,
        outcome: Outcome,
        size_bytes: int = 0,
        *,
        path: str = "",
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Count a file decided without entering the pipeline (unchanged, a scan problem)."""
        self.progress.finished(outcome, size_bytes)
        self._count(outcome, path, Result(outcome, None, code, message), size_bytes)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted file has an outcome (or closing / timeout)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._mutex:
            while self._outstanding > 0 and not self._closing.is_set():
                left = None if deadline is None else deadline - self._clock()
                if left is not None and left <= 0:
                    return False
                self._mutex.wait(_POLL_SECONDS if left is None else min(left, _POLL_SECONDS))
            return self._outstanding == 0

    def begin_close(self) -> None:
        """Stop taking work now (a signal handler may call this); ``close`` finishes the job."""
        self._closing.set()
        with self._mutex:
            self._mutex.notify_all()

    def close(self, grace_seconds: float = 10.0) -> None:
        """Stop taking work, let jobs in progress finish for ``grace_seconds``, then stop."""
        self._closing.set()
        deadline = self._clock() + grace_seconds
        with self._mutex:
            while self._busy > 0 and self._clock() < deadline:
                self._mutex.wait(_POLL_SECONDS)
        self.stop.set()
        self._wake_all()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _wake_all(self) -> None:
        """Wake every thread now instead of at its next poll (a no-op rescan exits at once)."""
        self._settler.wake()
        self._timers.wake()
        for q in (self._hash_q, self._job_q):
            for _ in range(len(self._threads)):
                try:
                    q.put_nowait(_WAKE)  # type: ignore[arg-type]
                except queue.Full:
                    break  # a full queue's consumers are not waiting

    @property
    def outstanding(self) -> int:
        with self._mutex:
            return self._outstanding

    @property
    def is_closing(self) -> bool:
        return self._closing.is_set()

    def threads_alive(self) -> bool:
        """Whether every pipeline thread is still running (for the systemd watchdog)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    # -- settle -------------------------------------------------------------------------------

    def _settled(self, path: str, offer: _Offer, stat: FileStat) -> None:
        digest = offer.digest if offer.digest_stat == stat else None  # stale if it changed since
        classified = offer.classified and digest is not None
        item = Item(path, offer.folder, stat, digest, classified, offer.tries)
        self._put(self._hash_q, item)

    def _settle_gone(self, path: str, offer: _Offer) -> None:
        self._journal.forget_files([path])
        self._finish_quietly()

    # -- hash stage ---------------------------------------------------------------------------

    def _hash_loop(self) -> None:
        while (item := self._take(self._hash_q)) is not None:
            self._guard(item, self._examine)

    def _examine(self, item: Item) -> None:
        if not item.classified:
            verdict = self._catalog.classify(item.path, item.stat, item.folder.project_id)
            if verdict.unchanged and not after_upload.wants_action(item.folder):
                self._finish(item, Outcome.UNCHANGED, item.path, None)
                return
            item = replace(item, digest=verdict.digest, classified=True)
        content_type = identity.content_type_for(item.path)
        if content_type is None:
            self._problem(item, "unsupported_type", "FLORA does not accept this file type")
            return
        if self._max_file_bytes is not None and item.stat.size > self._max_file_bytes:
            self._problem(item, "too_large", f"larger than max_file_bytes ({self._max_file_bytes})")
            return
        digest, stat = item.digest, item.stat
        if digest is None:
            try:
                content, stat = identity.hash_file(
                    Path(item.path), expect=item.stat, stop=self.stop
                )
            except errors.FileChangedError:
                self._resettle(item)
                return
            digest = content.digest
        job = Job(
            item.path,
            str(item.folder.path),
            item.folder.project_id,
            stat,
            digest,
            Path(item.path).name,
            content_type,
        )
        self._put(self._job_q, (replace(item, stat=stat, digest=digest), job))

    # -- network workers ----------------------------------------------------------------------

    def _work_loop(self) -> None:
        while (entry := self._take(self._job_q)) is not None:
            item, job = entry
            with self._mutex:
                self._busy += 1
            try:
                self._guard(item, functools.partial(self._run_job, job=job))
            finally:
                with self._mutex:
                    self._busy -= 1
                    self._mutex.notify_all()

    def resume(self) -> int:
        """The key works again: put the jobs parked by a 401 back in the queue."""
        with self._mutex:
            self.refused = None
            parked, self._parked = self._parked, []
        for entry in parked:
            self._put(self._job_q, entry)
        return len(parked)

    def _park(self, item: Item, job: Job, exc: errors.CredentialsError) -> None:
        """Daemon mode: a refused key parks the job (no retry storm) until ``resume``."""
        with self._mutex:
            first = self.refused is None
            self.refused = exc
            self._parked.append((item, job))
        if first and self._on_refused is not None:
            self._on_refused(exc)

    def _run_job(self, item: Item, job: Job) -> None:
        if self.refused is not None:
            self._park(item, job, self.refused)
            return
        if self._clock() < self._paused_until:
            self._defer(
                item,
                job,
                Result(
                    Outcome.DEFERRED,
                    None,
                    "insufficient_credits",
                    "uploads paused: FLORA answered 402",
                ),
            )
            return
        started = self._clock()
        with self._content_lock(job.digest):
            try:
                result = self._transfer_for().run(job)
            except errors.CredentialsError as exc:
                if self._on_refused is None:
                    raise  # one-shot: fatal for the whole process (exit 3)
                self._park(item, job, exc)
                return
            except errors.PaymentRequiredError as exc:
                self._pause(exc)
                result = Result(
                    Outcome.DEFERRED, None, exc.code or "insufficient_credits", str(exc)
                )
            except errors.TransientError as exc:
                result = Result(Outcome.DEFERRED, None, exc.code or type(exc).__name__, str(exc))
        self._conclude(item, job, result, self._clock() - started)

    def _conclude(self, item: Item, job: Job, result: Result, seconds: float) -> None:
        if result.outcome == Outcome.CHANGED:
            self._resettle(item)
        elif result.outcome == Outcome.DEFERRED:
            self._defer(item, job, result)
        else:
            self._log_outcome(job, result, seconds)
            if result.outcome in _SYNCED and after_upload.wants_action(item.folder):
                self._after_upload(item, job)
            self._finish(item, result.outcome, job.path, result)

    def _after_upload(self, item: Item, job: Job) -> None:
        """The folder's keep/delete/move, now that the attach is confirmed."""
        try:
            done = after_upload.apply(item.folder, job.path, job.digest)
        except errors.LocalFileError as exc:
            log.warning("%s", exc)
            self._journal.note_event(str(item.folder.path), exc.code, str(exc))
            return
        if done is not None:
            log.info("%s: %s (after_upload)", job.path, done)
            self._journal.forget_files([job.path])

    def _defer(self, item: Item, job: Job, result: Result) -> None:
        log.warning(
            "%s: %s (%s); %s",
            job.path,
            result.message,
            result.code,
            "will retry" if self._retry_deferred else "left for the next run",
        )
        if not self._retry_deferred or self._closing.is_set():
            self._finish(item, Outcome.DEFERRED, job.path, result)
            return
        delay = min(MAX_DEFER_SECONDS, 15.0 * 2**item.tries)
        later = replace(item, tries=item.tries + 1)
        self._timers.after(delay, lambda: self._put(self._job_q, (later, job)))

    def _pause(self, exc: errors.PaymentRequiredError) -> None:
        with self._mutex:
            first = self._clock() >= self._paused_until
            self._paused_until = self._clock() + PAYMENT_PAUSE_SECONDS
        if first:
            log.error(
                "FLORA answered 402 (%s): uploads paused for %d s",
                exc.message,
                PAYMENT_PAUSE_SECONDS,
            )

    def transfer(self) -> Transfer:
        """The transfer (and with it the API client), built on first use."""
        return self._transfer_for()

    def _transfer_for(self) -> Transfer:
        with self._mutex:
            if self._transfer is None:
                self._transfer = self._transfer_factory()  # imports requests only when needed
            return self._transfer

    @contextlib.contextmanager
    def _content_lock(self, digest: str) -> Iterator[None]:
        """One worker per content: the second file with the same bytes waits, then reuses."""
        with self._mutex:
            shared = self._content_locks.setdefault(digest, _SharedLock())
            shared.users += 1
        try:
            while not shared.lock.acquire(timeout=_POLL_SECONDS):
                if self.stop.is_set():
                    raise errors.StoppedError("stopped while waiting for another worker")
            try:
                yield
            finally:
                shared.lock.release()
        finally:
            with self._mutex:
                shared.users -= 1
                if shared.users == 0:
                    del self._content_locks[digest]

    # -- shared plumbing ----------------------------------------------------------------------

    def _guard(self, item: Item, action: Callable[[Item], None]) -> None:
        """Run one stage for one item; a fatal error stops the pipeline, a local one fails it."""
        try:
            action(item)
        except errors.StoppedError:
            self._finish(item, None, item.path, None)
        except errors.CredentialsError as exc:
            self.fatal = exc
            self._finish(item, None, item.path, None)
            self._closing.set()
            self.stop.set()
            self._wake_all()
        except errors.LocalFileError as exc:
            if exc.code == "vanished":
                self._journal.forget_files([item.path])
                self._finish(item, Outcome.VANISHED, item.path, None)
            else:
                self._problem(item, exc.code, exc.message)

    def _problem(self, item: Item, code: str, message: str) -> None:
        failure = Failure(code, message, time.time())
        entry = FileEntry(
            item.path, str(item.folder.path), item.folder.project_id, item.stat, None, failure
        )
        self._journal.record_file(entry)
        log.warning("%s: %s (%s)", item.path, message, code)
        self._finish(item, Outcome.FAILED, item.path, Result(Outcome.FAILED, None, code, message))

    def _resettle(self, item: Item) -> None:
        """The file changed under us: it must settle again before it is read."""
        if item.tries >= MAX_RESETTLES:
            self._problem(item, "file_changing", "the file kept changing while being synced")
            return
        log.info("%s changed while being synced; waiting for it to settle", item.path)
        offer = _Offer(item.folder, None, None, False, item.tries + 1)
        self._settler.observe(item.path, offer)

    def _finish_quietly(self) -> None:
        with self._mutex:
            self._outstanding -= 1
            self._mutex.notify_all()

    def _finish(
        self, item: Item, outcome: Outcome | None, path: str, result: Result | None
    ) -> None:
        if outcome is not None:
            self.progress.finished(outcome, item.stat.size)
            self._count(outcome, path, result, item.stat.size)
        with self._mutex:
            self._outstanding -= 1
            self._mutex.notify_all()

    def _count(self, outcome: Outcome, path: str, result: Result | None, size: int) -> None:
        with self._mutex:
            self.summary.counts[outcome] += 1
            if outcome == Outcome.UPLOADED:
                self.summary.bytes_uploaded += size
            failed = outcome in (Outcome.FAILED, Outcome.DEFERRED)
            if failed and result is not None and len(self.summary.failures) < 1000:
                self.summary.failures.append((path, result.code or "", result.message or ""))

    def _log_outcome(self, job: Job, result: Result, seconds: float) -> None:
        """One line per file; ``fields`` carries the same facts for JSON logs."""
        fields: dict[str, object] = {
            "outcome": str(result.outcome),
            "path": job.path,
            "project_id": job.project_id,
            "asset_id": result.asset_id,
            "bytes": job.size_bytes,
            "duration_s": round(seconds, 3),
        }
        if result.outcome == Outcome.FAILED:
            fields["code"] = result.code
            log.warning(
                "failed %s -> %s: %s (%s)",
                job.path,
                job.project_id,
                result.message,
                result.code,
                extra={"fields": fields},
            )
            return
        # an unchanged file is no news (a rescan re-offers thousands): debug only
        level = logging.DEBUG if result.outcome == Outcome.UNCHANGED else logging.INFO
        log.log(
            level,
            "%s %s -> %s asset=%s bytes=%d in %.2fs",
            result.outcome,
            job.path,
            job.project_id,
            result.asset_id,
            job.size_bytes,
            seconds,
            extra={"fields": fields},
        )

    def _put(self, q: queue.Queue[_T], value: _T) -> bool:
        """Put, waiting while the queue is full; give up once closing (the consumers are gone:
        waiting would deadlock the producer, e.g. a scan, and with it the shutdown)."""
        while not self.stop.is_set() and not self._closing.is_set():
            try:
                q.put(value, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False

    def _take(self, q: queue.Queue[_T]) -> _T | None:
        while not self.stop.is_set():
            if self._closing.is_set():
                return None  # closing: work not yet started is left for the next start
            try:
                item = q.get(timeout=_IDLE_POLL_SECONDS)
            except queue.Empty:
                continue
            if item is not _WAKE:
                return item
        return None

    def _spawn(self, name: str, target: Callable[[], None], count: int) -> None:
        for n in range(count):
            thread = threading.Thread(target=target, name=f"{name}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)


@dataclass
class _SharedLock:
    """A lock and the number of workers holding or waiting for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class _Timers:
    """Delayed actions on one thread (re-settle, deferred retries): no thread per file."""

    def __init__(self, clock: Callable[[], float], stop: threading.Event) -> None:
        self._clock = clock
        self._stop = stop
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def after(self, seconds: float, action: Callable[[], object]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (self._clock() + seconds, next(self._seq), action))
            self._cond.notify()

    def run(self) -> None:
        while not self._stop.is_set():
            action = self._next_due()
            if action is not None:
                action()

    def _next_due(self) -> Callable[[], object] | None:
        with self._cond:
            if not self._heap:
                self._cond.wait(_IDLE_POLL_SECONDS)  # ``after`` and ``wake`` notify
                return None
            due, _, action = self._heap[0]
            wait = due - self._clock()
            if wait > 0:
                self._cond.wait(min(wait, _IDLE_POLL_SECONDS))
                return None
            heapq.heappop(self._heap)
            return action
