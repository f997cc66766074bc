"""The worker machinery: a hash stage and a pool of network workers behind bounded queues.

Owns threads, backpressure (a full queue blocks the producer instead of growing memory), the
one-worker-per-content lock, retries of deferred and changed files, shutdown, and the promise
that every file handed over gets exactly one outcome whatever is raised (issue 11). Every file
enters through ``offer`` and is admitted by its folder's ``Gate`` each time it is looked at.
A file offered with a close-after-write (a user's save) takes the fast lanes of both queues and
a hash thread of its own, so it never waits behind a backlog (``lanes``, issue 12). A file's
project comes from ``placement``; a project mapped by name is resolved by a network worker
(``projects``), never by the scan or the watcher (issue 13).
What a job does is ``transfer``'s business; which files exist is the scanner's and the watcher's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from florasync import errors
from florasync.config.config import FolderConfig
from florasync.local import after_upload, identity
from florasync.local.admission import Gate, Refusal
from florasync.local.identity import FileStat
from florasync.local.placement import NO_PROJECT, Target, Unplaced, target_for
from florasync.local.rules import FolderRules
from florasync.local.settle import Settler
from florasync.state.catalog import Catalog
from florasync.state.journal.records import FileEntry
from florasync.state.journal.store import Journal
from florasync.state.lifecycle import Failure
from florasync.sync.lanes import Lanes
from florasync.sync.outcomes import (
    SYNCED,
    JobObserver,
    NoObserver,
    NoProgress,
    Progress,
    Summary,
    log_outcome,
)
from florasync.sync.projects import ProjectNames
from florasync.sync.timers import IDLE_POLL_SECONDS, Timers
from florasync.sync.transfer import Job, Outcome, Result, Transfer

log = logging.getLogger(__name__)

_T = TypeVar("_T")

MAX_RESETTLES = 6  # a file that changes under us this often is reported, not chased forever
PAYMENT_PAUSE_SECONDS = 300.0
MAX_DEFER_SECONDS = 900.0
FAST_LANE = 2  # files a user just saved, per stage; a burst of saves queues in the watcher
MAX_SIBLING_RETRIES = 2  # one-shot run: tries of a deferred file behind same-content siblings
JOURNAL_RETRY_SECONDS = 5.0  # daemon: the journal is tried again after this, then less often
JOURNAL_RETRY_MAX_SECONDS = 60.0
AFTER_PEER_SECONDS = 0.5  # fleet: a content another host goes first for is looked at later
CLAIM_RETRY_SECONDS = 0.25  # fleet: first look again at a content another host holds...
CLAIM_RETRY_MAX_SECONDS = 2.0  # ...then less often, up to this
_POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Item:
    """A settled file in the pipeline: where it is, which folder maps it, what it looked like.

    ``stat`` is what admission saw; every later read proves it still holds (``hash_file``'s
    ``expect``, ``admission.open_admitted``).
    """

    path: str
    folder: FolderConfig
    stat: FileStat
    digest: str | None = None  # known from the stat cache: no read needed
    classified: bool = False  # the stat cache was already consulted (a full scan does it)
    resettles: int = 0  # times it changed under us (MAX_RESETTLES)
    deferrals: int = 0  # times FLORA's transient trouble postponed it (the backoff exponent)
    waits: int = 0  # times another host of the fleet held its content (issue 14)
    fresh: bool = False  # a user just saved it (a close event): the fast lanes


@dataclass(frozen=True, slots=True)
class _Offer:
    """What travels with a file while it settles."""

    folder: FolderConfig
    digest: str | None
    digest_stat: FileStat | None  # the stat the digest belongs to
    classified: bool
    resettles: int = 0
    fresh: bool = False


class Pipeline:
    """Hash stage → bounded job queue → ``workers`` network threads.

    ``offer`` blocks while the queues are full. ``wait_idle`` returns when everything offered
    has an outcome, or a thread died (``broken``). ``close`` stops taking work, lets jobs in
    progress finish within a grace period, then sets ``stop`` (which aborts uploads and retry
    waits) and joins every thread.
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
        projects: ProjectNames | None = None,
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
        self.observer: JobObserver = NoObserver()
        self._held: str | None = None  # why requests to FLORA are held (a pause), if they are
        self._cut_uploads = threading.Event()  # a pause with on_pause: stop cuts uploads off
        self._clock = clock
        # shallow fast lanes: a fresh file waits behind at most FAST_LANE others in each stage
        self._hash_q: Lanes[Item] = Lanes(max(64, workers * 16), FAST_LANE)
        self._job_q: Lanes[tuple[Item, Job]] = Lanes(max(8, workers * 2), FAST_LANE)
        self._timers = Timers(clock, stop)
        self._gates: dict[str, tuple[FolderConfig, Gate]] = {}
        self._settler: Settler[_Offer] = Settler(
            settle_seconds,
            ready=self._settled,
            gone=self._settle_gone,
            refused=self._settle_refused,
            probe=self._admit,
        )
        self._catalog = Catalog(journal, workspace_id, full_scan=False)
        self.projects = projects or ProjectNames(
            journal, workspace_id, lambda: self._transfer_for().client
        )
        self._mutex = threading.Condition()
        self._outstanding = 0
        self._busy = 0
        self._closing = threading.Event()
        self._content_locks: dict[str, _SharedLock] = {}
        self._paused_until = 0.0
        self._threads: list[threading.Thread] = []
        self.summary = Summary()
        self.fatal: errors.FlorasyncError | None = None
        self.broken: str | None = None  # set when a thread died: the run cannot finish
        self.journal_down: str | None = None  # why the journal cannot be used now (health)
        self._journal_waiting: list[Item] = []  # files that met it; offered again once it is back
        self._journal_probe = False  # a file is due to try the journal again
        self._journal_delay = JOURNAL_RETRY_SECONDS

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> Pipeline:
        self._spawn("florasync-hash", self._hash_loop, 2)
        # its own thread for the fast lane: the others may wait on the full normal job lane
        self._spawn("florasync-hash-fresh", functools.partial(self._hash_loop, fast_only=True), 1)
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

        The one way in for every source (scan, watcher, new directory, retry pick-up): the
        folder's ``Gate`` admits the path before it settles and each time it is looked at
        again. A full scan passes what the stat cache said (``classified``, ``digest`` for
        ``stat``); the watcher passes only the path and whether a close-after-write was seen.
        A file offered again while it settles merges into the same outcome.
        """
        if self._closing.is_set():
            return False
        size = stat.size if stat else 0
        with self._mutex:
            self._outstanding += 1
        self.progress.queued(1, size)
        offered = _Offer(folder, digest, stat, classified, fresh=closed)
        if not self._settler.observe(path, offered, closed=closed):
            self.progress.queued(-1, -size)  # merged into the entry already settling
            self._finish_quietly()
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
        self.progress.queued(1, size_bytes)  # it was never offered: count it in, then out
        self.progress.finished(outcome, size_bytes)
        # most notes are of unchanged files (a rescan): no Result to build for them
        result = None if outcome is Outcome.UNCHANGED else Result(outcome, None, code, message)
        self.summary.count(outcome, path, result, size_bytes)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every offered file has an outcome (or closing, a dead thread, timeout)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._mutex:
            while self._outstanding > 0 and not self._closing.is_set() and self.broken is None:
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
        self._hash_q.wake(len(self._threads))
        self._job_q.wake(len(self._threads))

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

    # -- admission and settle -----------------------------------------------------------------

    def _admit(self, path: str, offer: _Offer) -> FileStat | Refusal | None:
        return self._gate(offer.folder).admit(path)

    def _gate(self, folder: FolderConfig) -> Gate:
        """The folder's admission rules (rebuilt when a reload changed the folder)."""
        root = str(folder.path)
        with self._mutex:
            known = self._gates.get(root)
            if known is None or known[0] != folder:
                rules = FolderRules(tuple(folder.include), tuple(folder.exclude))
                known = (folder, Gate(root, rules, folder.recursive))
                self._gates[root] = known
            return known[1]

    def target(self, folder: FolderConfig, path: str) -> Target | Unplaced:
        """The project ``path`` belongs to (``placement``; a name may still need resolving)."""
        if folder.projects_from_subfolders is None and folder.project_id is not None:
            return Target(project_id=folder.project_id)  # the common case, once per file
        return target_for(folder, self._gate(folder).rules, path)

    def known_project(self, folder: FolderConfig, path: str) -> str:
        """The project id of ``path`` when known without asking FLORA, else ""."""
        if folder.projects_from_subfolders is None and folder.project_id is not None:
            return folder.project_id  # asked once per file of a rescan: no objects built
        target = self.target(folder, path)
        return "" if isinstance(target, Unplaced) else self.projects.known(target) or ""

    def _settled(self, path: str, offer: _Offer, stat: FileStat) -> None:
        digest = offer.digest if offer.digest_stat == stat else None  # stale if it changed since
        classified = offer.classified and digest is not None
        item = Item(
            path, offer.folder, stat, digest, classified, offer.resettles, fresh=offer.fresh
        )
        if not self._put(self._hash_q, item, fast=item.fresh):
            self._finish_quietly()  # closing: left for the next start

    def _settle_gone(self, path: str, offer: _Offer) -> None:
        self._forget_path(path)
        # gone before it had an outcome: take back its count, as a merged offer does
        self.progress.queued(-1, -offer.digest_stat.size if offer.digest_stat else 0)
        self._finish_quietly()

    def _settle_refused(self, path: str, offer: _Offer, refusal: Refusal) -> None:
        """The gate refused the path: a policy refusal is skipped, anything else fails it."""
        if refusal.code == "not_regular":
            self._settle_gone(path, offer)  # a FIFO or a directory in a file's place: not ours
            return
        item = Item(path, offer.folder, FileStat(0, 0, 0, 0, 0), resettles=offer.resettles)
        if refusal.code == "excluded":
            log.debug("%s: %s", path, refusal.message)
            self._forget_path(path)
            self._finish(item, Outcome.SKIPPED, Result(Outcome.SKIPPED, None, refusal.code))
            return
        outcome = Outcome.SKIPPED if refusal.is_policy else Outcome.FAILED
        self._problem(item, refusal.code, refusal.message, outcome=outcome, keep_stat=False)

    # -- hash stage ---------------------------------------------------------------------------

    def _hash_loop(self, *, fast_only: bool = False) -> None:
        while (item := self._take(self._hash_q, fast_only=fast_only)) is not None:
            self._guard(item, self._examine)

    def _examine(self, item: Item) -> None:
        target = self.target(item.folder, item.path)
        if isinstance(target, Unplaced):
            outcome = Outcome.SKIPPED if target.code == NO_PROJECT else Outcome.FAILED
            self._problem(item, target.code, target.message, outcome=outcome)
            return
        project_id = self.projects.known(target) or ""  # "": a worker resolves the name
        digest = item.digest
        if not item.classified:
            verdict = self._catalog.classify(item.path, item.stat, project_id)
            self.journal_back()  # it answered (files that waited for it go on)
            if verdict.unchanged and not after_upload.wants_action(item.folder):
                self._finish(item, Outcome.UNCHANGED, None)
                return
            digest = verdict.digest
        content_type = identity.content_type_for(item.path)
        if content_type is None:
            self._problem(item, "unsupported_type", "FLORA does not accept this file type")
            return
        if self._max_file_bytes is not None and item.stat.size > self._max_file_bytes:
            self._problem(item, "too_large", f"larger than max_file_bytes ({self._max_file_bytes})")
            return
        stat = item.stat
        if digest is None:
            try:  # ``expect``: the opened file must be the admitted one (no swapped-in link)
                content, stat = identity.hash_file(
                    Path(item.path), expect=item.stat, stop=self.stop
                )
            except errors.FileChangedError:
                self._resettle(item)
                return
            digest = content.digest
        if self._left_to_peers(item, project_id, stat, digest):
            return
        job = Job(
            item.path,
            str(item.folder.path),
            project_id,
            stat,
            digest,
            item.path.rpartition("/")[2],
            content_type,
        )
        # one copy per file, the stat and digest now known (replace() is costly per file)
        entry = (replace(item, stat=stat, digest=digest, classified=True), job)
        if not self._put(self._job_q, entry, fast=item.fresh):
            self._finish_quietly()

    def _rehash(self, item: Item) -> None:
        """Back to the hash stage (the digest known: no read) from the timer thread."""
        if not self._put(self._hash_q, item):
            self._finish_quietly()

    def _left_to_peers(self, item: Item, project_id: str, stat: FileStat, digest: str) -> bool:
        """A fleet: another host already brought this content into the project (note the file
        here, this host's stat cache, and count it unchanged, without a worker), or another
        host goes first for it (look again in a moment, when it is usually done)."""
        if after_upload.wants_action(item.folder):
            return False
        if self._journal.done_by_another_host(self.workspace_id, digest, project_id):
            self.journal_back()
            log.debug("unchanged %s (another host brought it in)", item.path)
            folder = str(item.folder.path)
            self._journal.note_file(FileEntry(item.path, folder, project_id, stat, digest))
            self._finish(item, Outcome.UNCHANGED, None)
            return True
        if item.waits or self._journal.goes_first(digest):
            return False
        later = replace(item, stat=stat, digest=digest, classified=True, waits=1)
        self._timers.after(AFTER_PEER_SECONDS, lambda: self._rehash(later))
        return True

    # -- network workers ----------------------------------------------------------------------

    def _work_loop(self) -> None:
        while (entry := self._take_job()) is not None:
            item, job = entry
            with self._mutex:
                self._busy += 1
            try:
                self._guard(item, functools.partial(self._run_job, job=job))
            finally:
                with self._mutex:
                    self._busy -= 1
                    self._mutex.notify_all()

    def _take_job(self) -> tuple[Item, Job] | None:
        """The next job: parked ones first once the key works again, then the queue. While
        requests are held (a pause) none: the queues fill and the hash stage waits on them."""
        while not self.stop.is_set() and not self._closing.is_set():
            with self._mutex:
                if self._held is not None:
                    self._mutex.wait(_POLL_SECONDS)
                    continue
                if self._parked and self.refused is None:
                    return self._parked.pop()
            entry = self._take(self._job_q, poll=True)
            if entry is not None:
                return entry
        return None

    def resume(self) -> int:
        """The key works again: workers take the jobs a 401 parked (never blocks the caller)."""
        with self._mutex:
            self.refused = None
            count = len(self._parked)
        self._job_q.wake(self._workers)
        return count

    def hold(self, why: str, *, cut_uploads: bool = False) -> None:
        """A pause: no new request goes to FLORA until ``release``. Jobs in flight finish, or
        with ``cut_uploads`` an upload stops before its next piece (the journal's intent takes
        it on after the release: the same path as a restart after kill -9)."""
        with self._mutex:
            self._held = why
            if cut_uploads:
                self._cut_uploads.set()
            self._mutex.notify_all()

    def release(self) -> None:
        """The pause is over: workers take parked and queued jobs again."""
        with self._mutex:
            self._held = None
            self._cut_uploads.clear()
            self._mutex.notify_all()
        self._job_q.wake(self._workers)

    @property
    def held(self) -> str | None:
        """Why requests to FLORA are held now (a pause), or None."""
        return self._held

    @property
    def in_flight(self) -> int:
        """Jobs a worker is running now (a pause lets them finish)."""
        return self._busy

    def bytes_sent(self, size_bytes: int) -> None:
        """Bytes of the running job's upload left for the target (called on its worker thread).

        Raises:
            errors.PausedError: a pause with ``cut_uploads`` began: the piece is not sent.
        """
        if self._cut_uploads.is_set():
            raise errors.PausedError("upload stopped by a pause; it goes on after the resume")
        self.progress.sent(size_bytes)
        self.observer.sent(size_bytes)

    def _park(self, item: Item, job: Job, exc: errors.CredentialsError | None = None) -> None:
        """Daemon mode: a refused key (``exc``) or a pause parks the job until ``resume`` or
        ``release`` (no retry storm, no request)."""
        with self._mutex:
            first = exc is not None and self.refused is None
            if exc is not None:
                self.refused = exc
            self._parked.append((item, job))
        if first and exc is not None and self._on_refused is not None:
            self._on_refused(exc)

    def _run_job(self, item: Item, job: Job) -> None:
        if self.refused is not None or self._held is not None:
            self._park(item, job, self.refused)  # a pause: taken just before it began
            return
        if self._clock() < self._paused_until:
            message = "uploads paused: FLORA answered 402"
            self._defer(item, job, Result(Outcome.DEFERRED, None, "insufficient_credits", message))
            return
        started = self._clock()
        siblings = False
        try:
            if not job.project_id:  # mapped by name: found (or created) here, once per name
                job = replace(job, project_id=self._resolve(item))
            with self._content_lock(job.digest) as shared:
                try:
                    # a fleet: one host a content at a time (free on SQLite)
                    self._journal.claim(self.workspace_id, job.digest, job.project_id)
                    try:
                        result = self._observed_run(job)
                    finally:
                        self._journal.release(self.workspace_id, job.digest)
                finally:
                    with self._mutex:
                        siblings = shared.users > 1  # files with the same bytes wait for it
            self.journal_back()
        except (errors.ClaimedElsewhereError, errors.LeaseLostError) as exc:
            self.journal_back()  # the database answered
            self._elsewhere(item, job, exc)
            return
        except errors.CredentialsError as exc:
            if self._on_refused is None:
                raise  # one-shot: fatal for the whole process (exit 3)
            self._park(item, job, exc)
            return
        except errors.PausedError:
            self.journal_back()
            self._park(item, job)  # cut off by a pause: goes on after the release
            return
        except errors.ProjectUnavailableError as exc:
            self._problem(item, exc.code, exc.message)
            return
        except errors.PaymentRequiredError as exc:
            self._pause(exc)
            code = exc.code or "insufficient_credits"
            result = Result(Outcome.DEFERRED, None, code, str(exc))
        except errors.TransientError as exc:
            result = Result(Outcome.DEFERRED, None, exc.code or type(exc).__name__, str(exc))
        self._conclude(item, job, result, self._clock() - started, siblings=siblings)

    def _observed_run(self, job: Job) -> Result:
        self.observer.started(job)
        result: Result | None = None
        try:
            result = self._transfer_for().run(job)
            return result
        finally:
            self.observer.ended(job, result)

    def _elsewhere(self, item: Item, job: Job, exc: errors.FlorasyncError) -> None:
        """Another host of the fleet has the content (or took it over from us): look again
        later; by then it is attached (nothing to send) or its host is gone (take it over)."""
        if self._closing.is_set():
            self._finish(
                item, Outcome.DEFERRED, Result(Outcome.DEFERRED, None, "claimed", str(exc))
            )
            return
        if isinstance(exc, errors.LeaseLostError):
            log.warning("%s: %s; another host goes on with it", job.path, exc)
        else:
            log.debug("%s: %s; looking again later", job.path, exc)
        delay = min(CLAIM_RETRY_MAX_SECONDS, CLAIM_RETRY_SECONDS * 2 ** min(item.waits, 5))
        later = replace(item, waits=item.waits + 1)
        jitter = random.uniform(0.8, 1.2)  # noqa: S311 -- spreading hosts apart, not a secret
        self._timers.after(delay * jitter, lambda: self._requeue(later, job))

    def _resolve(self, item: Item) -> str:
        """The project id of ``item``, asking FLORA for a name (raises what ``resolve`` does)."""
        target = self.target(item.folder, item.path)
        if isinstance(target, Unplaced):  # the folder changed by a reload since it was hashed
            raise errors.ProjectUnavailableError("", target.message, code=target.code)
        return self.projects.resolve(target)

    def _conclude(
        self, item: Item, job: Job, result: Result, seconds: float, *, siblings: bool = False
    ) -> None:
        if result.outcome == Outcome.CHANGED:
            self._resettle(item)
        elif result.outcome == Outcome.DEFERRED and siblings and not self._retry_deferred:
            self._after_siblings(item, job, result)
        elif result.outcome == Outcome.DEFERRED:
            self._defer(item, job, result)
        elif result.outcome == Outcome.VANISHED:
            self._forget_path(item.path)
            self._finish(item, Outcome.VANISHED, result)
        else:
            log_outcome(job, result, seconds)
            self._journal.note_outcome(result.outcome)
            if result.outcome in SYNCED and after_upload.wants_action(item.folder):
                self._after_upload(item, job)
            self._finish(item, result.outcome, result)

    def _after_upload(self, item: Item, job: Job) -> None:
        """The folder's keep/delete/move, now that the attach is confirmed."""
        folder = str(item.folder.path)
        try:
            applied = after_upload.apply(item.folder, job.path, job.digest)
        except errors.LocalFileError as exc:
            log.warning("%s", exc)
            self._journal.note_event(folder, exc.code, str(exc))
            return
        if applied.changed:
            message = f"{job.path}: changed after its upload; after_upload left it alone"
            log.warning("%s", message)
            self._journal.note_event(folder, "changed_after_upload", message)
        elif applied.action is not None:
            log.info("%s: %s (after_upload)", job.path, applied.action)
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
            self._finish(item, Outcome.DEFERRED, result)
            return
        delay = min(MAX_DEFER_SECONDS, 15.0 * 2**item.deferrals)
        later = replace(item, deferrals=item.deferrals + 1)
        self._timers.after(delay, lambda: self._requeue(later, job))

    def _after_siblings(self, item: Item, job: Job, result: Result) -> None:
        """One-shot run: a file with the same bytes is next in line for the content and may
        bring it through; try this one once more after it rather than give it up now."""
        if item.deferrals >= MAX_SIBLING_RETRIES:
            self._defer(item, job, result)
            return
        log.info(
            "%s: %s (%s); trying again after a file with the same bytes",
            job.path,
            result.message,
            result.code,
        )
        later = replace(item, deferrals=item.deferrals + 1)
        # through the timer thread: a worker must never wait on its own full queue
        self._timers.after(0.0, lambda: self._requeue(later, job))

    def _requeue(self, item: Item, job: Job) -> None:
        if not self._put(self._job_q, (item, job)):  # a retry: no longer fresh, the normal lane
            self._finish_quietly()

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
    def _content_lock(self, digest: str) -> Iterator[_SharedLock]:
        """One worker per content: the second file with the same bytes waits, then reuses."""
        with self._mutex:
            shared = self._content_locks.setdefault(digest, _SharedLock())
            shared.users += 1
        try:
            while not shared.lock.acquire(timeout=_POLL_SECONDS):
                if self.stop.is_set():
                    raise errors.StoppedError("stopped while waiting for another worker")
            try:
                yield shared
            finally:
                shared.lock.release()
        finally:
            with self._mutex:
                shared.users -= 1
                if shared.users == 0:
                    del self._content_locks[digest]

    # -- every item gets an outcome -----------------------------------------------------------

    def _guard(self, item: Item, action: Callable[[Item], None]) -> None:
        """Run one stage for one item: whatever it raises, the item gets an outcome.

        A refused key is fatal for a one-shot run; a local problem fails this file; anything
        else (a malformed answer that outlived its retries, a journal write error, a bug) fails
        this file with the error's text and the thread goes on (issue 11: a run always ends).
        """
        try:
            action(item)
        except errors.StoppedError:
            self._finish(item, None, None)
        except errors.CredentialsError as exc:
            self._fatal(item, exc)
        except errors.LocalFileError as exc:
            if exc.code == "vanished":
                self._forget_path(item.path)
                self._finish(item, Outcome.VANISHED, None)
            else:
                self._problem(item, exc.code, exc.message)
        except errors.JournalError as exc:
            self._journal_unavailable(item, exc)
        except Exception as exc:  # the one place an unknown error becomes a file's outcome
            log.error(  # noqa: TRY400 -- a traceback only with --debug
                "%s: %s", item.path, _error_text(exc), exc_info=log.isEnabledFor(logging.DEBUG)
            )
            self._problem(item, _error_code(exc), _error_text(exc))

    def stop_broken(self, why: str) -> None:
        """This process must not go on (another process took its host_id): a one-shot run
        ends, the daemon's health fails and it exits."""
        self.broken = why
        with self._mutex:
            self._mutex.notify_all()

    def journal_trouble(self, exc: errors.JournalError) -> None:
        """The journal cannot be used now (its database went away): say so once."""
        if self.journal_down is None:
            log.error("%s; files wait until the journal is back", exc)
        self.journal_down = str(exc)

    def journal_back(self) -> None:
        """The journal answered again: the files that waited for it go on now."""
        if self.journal_down is None:
            return
        self.journal_down = None
        with self._mutex:
            waiting, self._journal_waiting = self._journal_waiting, []
            self._journal_delay = JOURNAL_RETRY_SECONDS
        log.info("the journal is back; %d file(s) that waited go on", len(waiting))
        for item in waiting:
            self._offer_again(item)

    def _journal_unavailable(self, item: Item, exc: errors.JournalError) -> None:
        """No request may leave without its intent in the journal, so the file waits: in the
        daemon one waiting file tries again after 5 s, then 10, 20... up to 60 s, and all go
        on once the journal answers; a one-shot run counts it deferred (exit 1)."""
        self.journal_trouble(exc)
        if not self._retry_deferred or self._closing.is_set():
            result = Result(Outcome.DEFERRED, None, "journal_unavailable", str(exc))
            self._finish(item, Outcome.DEFERRED, result)
            return
        self.progress.queued(-1, -item.stat.size)  # offered again: counted in again then
        self._finish_quietly()
        with self._mutex:
            self._journal_waiting.append(item)
            probe, self._journal_probe = not self._journal_probe, True
            delay = self._journal_delay
        if probe:  # one file tries again, with backoff; the rest follow when it gets through
            self._timers.after(delay, self._probe_journal)

    def _probe_journal(self) -> None:
        with self._mutex:
            self._journal_probe = False
            if not self._journal_waiting:
                return
            if self.journal_down is None:  # back meanwhile: everything goes
                waiting, self._journal_waiting = self._journal_waiting, []
            else:
                waiting = [self._journal_waiting.pop(0)]
                self._journal_delay = min(JOURNAL_RETRY_MAX_SECONDS, self._journal_delay * 2)
        for item in waiting:
            self._offer_again(item)

    def _offer_again(self, item: Item) -> None:
        self.offer(item.path, item.folder, closed=item.fresh)

    def _fatal(self, item: Item, exc: errors.CredentialsError) -> None:
        self.fatal = exc
        self._finish(item, None, None)
        self._closing.set()
        self.stop.set()
        self._wake_all()

    def _problem(
        self,
        item: Item,
        code: str,
        message: str,
        *,
        outcome: Outcome = Outcome.FAILED,
        keep_stat: bool = True,
    ) -> None:
        """Record a per-file problem (``status`` shows it) and count the outcome.

        Without ``keep_stat`` it is recorded like a scan problem, which the next full scan of
        the folder clears (and finds again if it still holds).
        """
        failure = Failure(code, message, time.time())
        recorded = item.stat if keep_stat else None
        project_id = self.known_project(item.folder, item.path)
        entry = FileEntry(item.path, str(item.folder.path), project_id, recorded, None, failure)
        self._journal_safely(lambda: self._journal.record_file(entry))
        if outcome == Outcome.SKIPPED:
            log.warning("%s: %s (%s); not followed", item.path, message, code)
        else:
            log.warning("%s: %s (%s)", item.path, message, code)
        self._finish(item, outcome, Result(outcome, None, code, message))

    def _resettle(self, item: Item) -> None:
        """The file changed under us: it must settle again before it is read."""
        if item.resettles >= MAX_RESETTLES:
            self._problem(item, "file_changing", "the file kept changing while being synced")
            return
        log.info("%s changed while being synced; waiting for it to settle", item.path)
        offer = _Offer(item.folder, None, None, False, item.resettles + 1)
        # never on sight: a hash thread handing it on at once could wait on its own full queue
        if not self._settler.observe(item.path, offer, on_sight=False):
            # merged into a newer offer of the same path, which carries the file's count now
            self.progress.queued(-1, 0)  # the bytes it was queued with are not known here
            self._finish_quietly()

    def _forget_path(self, path: str) -> None:
        self._journal_safely(lambda: self._journal.forget_files([path]))

    def _journal_safely(self, write: Callable[[], object]) -> None:
        """A journal write whose failure must not cost the file its outcome."""
        try:
            write()
        except errors.JournalError as exc:
            log.error("%s", exc)  # noqa: TRY400 -- the message says it all; no traceback

    def _finish_quietly(self) -> None:
        with self._mutex:
            self._outstanding -= 1
            self._mutex.notify_all()

    def _finish(self, item: Item, outcome: Outcome | None, result: Result | None) -> None:
        if outcome is not None:
            self.progress.finished(outcome, item.stat.size)
            self.summary.count(outcome, item.path, result, item.stat.size)
        self._finish_quietly()

    # -- queues and threads -------------------------------------------------------------------

    def _put(self, q: Lanes[_T], value: _T, *, fast: bool = False) -> bool:
        """Put, waiting while the lane is full; give up once closing (the consumers are gone:
        waiting would deadlock the producer, e.g. a scan, and with it the shutdown)."""
        while not self.stop.is_set() and not self._closing.is_set() and self.broken is None:
            if q.put(value, fast=fast, timeout=_POLL_SECONDS):
                return True
        return False

    def _take(self, q: Lanes[_T], *, poll: bool = False, fast_only: bool = False) -> _T | None:
        """The next item, or None once stopping; ``poll``: also None after an idle wait or a
        wake-up (the caller has something else to look at first)."""
        while not self.stop.is_set():
            if self._closing.is_set():
                return None  # closing: work not yet started is left for the next start
            item = q.get(timeout=IDLE_POLL_SECONDS, fast_only=fast_only)
            if item is not None or poll:
                return item
        return None

    def _spawn(self, name: str, target: Callable[[], None], count: int) -> None:
        for n in range(count):
            body = functools.partial(self._run_thread, target)
            thread = threading.Thread(target=body, name=f"{name}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run_thread(self, target: Callable[[], None]) -> None:
        """A thread's body; if it dies anyway, say so: a one-shot run ends, health fails."""
        try:
            target()
        except BaseException as exc:  # reported: a one-shot run ends instead of hanging
            name = threading.current_thread().name
            self.broken = f"thread {name} died: {_error_text(exc)}"
            log.critical("%s", self.broken, exc_info=log.isEnabledFor(logging.DEBUG))
            with self._mutex:
                self._mutex.notify_all()


def _error_code(exc: Exception) -> str:
    if isinstance(exc, errors.ApiError):
        if exc.code:
            return exc.code
        return f"http_{exc.status}" if exc.status else "api_error"
    if isinstance(exc, errors.JournalError):
        return "journal_error"
    return "internal_error"


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, errors.FlorasyncError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass
class _SharedLock:
    """A lock and the number of workers holding or waiting for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
