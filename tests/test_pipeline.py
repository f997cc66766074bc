"""The pipeline on real files, a real journal and real threads, with a scripted fake transfer."""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from florasync import errors
from florasync.config.config import FolderConfig
from florasync.local import identity
from florasync.local.identity import FileStat
from florasync.state.journal.records import FileEntry
from florasync.state.journal.store import Journal
from florasync.sync.pipeline import MAX_DEFER_SECONDS, Pipeline
from florasync.sync.transfer import Job, Outcome, Result, Transfer
from tests.helpers import LONG_TIMEOUT, SHORT_TIMEOUT, wait_until, write_file

WORKSPACE = "ws_pipeline"
PROJECT = "prj_pipeline"
NEVER_SETTLES = 3600.0  # a file written by the test never settles on its own: only a hint does
SEEDS = range(12)
HASH_THREADS = 2  # Pipeline.start spawns two hashers

Script = Callable[[Job, int], Result]  # answers the n-th call (1-based) for one file


class FakeTransfer:
    """Stands in for ``transfer.Transfer``: records every job, answers as scripted by file name.

    Unscripted files are uploaded. While ``gate`` is clear every call waits for it (a slow
    upload), so a test can hold the only worker and fill the queues behind it.
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.scripts: dict[str, Script] = {}
        self.default: Script = uploaded
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._answers: list[tuple[str, str]] = []  # (path, outcome or exception name)

    def run(self, job: Job) -> Result:
        with self._lock:
            self._jobs.append(job)
            call = sum(1 for j in self._jobs if j.path == job.path)
        if not self.gate.wait(LONG_TIMEOUT):
            raise AssertionError("the test never opened the fake transfer's gate")
        script = self.scripts.get(Path(job.path).name, self.default)
        try:
            result = script(job, call)
        except BaseException as exc:
            self._answer(job.path, type(exc).__name__)
            raise
        self._answer(job.path, result.outcome)
        return result

    def _answer(self, path: str, what: str) -> None:
        with self._lock:
            self._answers.append((path, what))

    @property
    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs)

    def calls(self, path: Path | str | None = None) -> int:
        return sum(1 for job in self.jobs if path is None or job.path == str(path))

    def answered(self, what: str) -> Counter[str]:
        """How often each path got ``what`` (an outcome or an exception name)."""
        with self._lock:
            return Counter(path for path, answer in self._answers if answer == what)


def uploaded(job: Job, call: int) -> Result:
    return Result(Outcome.UPLOADED, f"ast_{job.digest[:12]}")


def vanished(job: Job, call: int) -> Result:
    return Result(Outcome.VANISHED)


def raising(exc: BaseException) -> Script:
    def script(job: Job, call: int) -> Result:
        raise exc

    return script


class Tally:
    """A ``Progress`` that counts what the pipeline reports (what the terminal line shows)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued = 0
        self._outcomes: Counter[str] = Counter()

    def queued(self, files: int, size_bytes: int) -> None:
        with self._lock:
            self._queued += files

    def finished(self, outcome: Outcome, size_bytes: int) -> None:
        with self._lock:
            self._outcomes[outcome] += 1

    def sent(self, size_bytes: int) -> None:
        pass

    @property
    def queued_files(self) -> int:
        with self._lock:
            return self._queued

    @property
    def outcomes(self) -> Counter[str]:
        with self._lock:
            return Counter(self._outcomes)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = 1000.0

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass
class Harness:
    pipeline: Pipeline
    fake: FakeTransfer
    tally: Tally
    folder: FolderConfig

    def offer(self, path: Path, *, closed: bool = False) -> bool:
        return self.pipeline.offer(str(path), self.folder, closed=closed)

    @property
    def counts(self) -> Counter[str]:
        return +self.pipeline.summary.counts  # without zero counts


@pytest.fixture
def journal(run_journal: Journal) -> Journal:
    """Each backend: SQLite, and PostgreSQL as one host of a fleet."""
    return run_journal


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The watched folder."""
    path = tmp_path / "watched"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the watched folder, not inside it."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture
def make(journal: Journal, root: Path) -> Iterator[Callable[..., Harness]]:
    """Start pipelines over ``root`` with a fake transfer; every one is closed afterwards."""
    made: list[Harness] = []

    def start(*, folder: FolderConfig | None = None, **options: object) -> Harness:
        fake, tally = FakeTransfer(), Tally()
        options.setdefault("settle_seconds", 0)
        pipeline = Pipeline(
            workspace_id=WORKSPACE,
            journal=journal,
            transfer_factory=lambda: cast(Transfer, fake),  # the pipeline calls run() only
            stop=threading.Event(),
            progress=tally,
            **options,  # type: ignore[arg-type]
        )
        harness = Harness(
            pipeline.start(), fake, tally, folder or FolderConfig(path=root, project_id=PROJECT)
        )
        made.append(harness)
        return harness

    yield start
    for harness in made:
        harness.fake.gate.set()
        harness.pipeline.close(grace_seconds=SHORT_TIMEOUT)


def digest_of(path: Path) -> str:
    return identity.hash_file(path)[0].digest


def assert_idle(h: Harness, timeout: float = LONG_TIMEOUT) -> None:
    """Everything offered has an outcome, and nothing is counted as queued any more."""
    assert h.pipeline.wait_idle(timeout=timeout), (
        f"still {h.pipeline.outstanding} queued after {timeout:.0f}s "
        f"(outcomes so far: {dict(h.counts)})"
    )
    assert h.pipeline.outstanding == 0
    assert h.tally.queued_files == sum(h.tally.outcomes.values()), (
        "the progress line's queued count differs from the outcomes it was told"
    )


class Writer:
    """Rewrites files, one writer at a time, each time with a new size."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions: Counter[Path] = Counter()

    def rewrite(self, path: Path, seed: int) -> None:
        with self.lock:
            self.versions[path] += 1
            # a new size every time: the change shows in the stat even within one mtime tick
            write_file(path, 200 + self.versions[path], seed=seed)


def run_threads(bodies: list[Callable[[], None]], pipeline: Pipeline) -> None:
    """Run ``bodies`` at once and join them (closing the pipeline first if one is stuck)."""
    threads = [
        threading.Thread(target=body, name=f"test-offer-{i}") for i, body in enumerate(bodies)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + LONG_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        pipeline.begin_close()  # an offer blocked on a full queue gives up once closing
        for thread in threads:
            thread.join()
        raise AssertionError("offers were still blocked after the deadline")


# -- 1. every offer is counted once ----------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_repeat_offers_while_settling_end_in_one_outcome_per_file(seed, make, root):
    """N offers of M files from several threads while they settle end in exactly M outcomes."""
    rng = random.Random(seed)
    h = make(settle_seconds=NEVER_SETTLES, workers=2)
    files = [root / f"f{i}.png" for i in range(rng.randint(3, 8))]
    writer = Writer()
    for i, path in enumerate(files):
        writer.rewrite(path, seed=i)

    def settling_offers(rng: random.Random) -> Callable[[], None]:
        def body() -> None:
            for _ in range(rng.randint(5, 15)):
                path = rng.choice(files)
                if rng.random() < 0.4:
                    writer.rewrite(path, seed=rng.randrange(1 << 30))
                assert h.offer(path, closed=False)

        return body

    run_threads([settling_offers(random.Random(rng.random())) for _ in range(4)], h.pipeline)
    assert h.fake.calls() == 0, "a file was handed on before it settled"
    assert h.pipeline.settling == len(files)

    # the close-after-write hints: each file's last offer hands it on, repeats before it merge
    shuffled = rng.sample(files, len(files))
    parts = [shuffled[i::3] for i in range(3)]

    def closing_offers(mine: list[Path], rng: random.Random) -> Callable[[], None]:
        def body() -> None:
            for path in mine:
                for _ in range(rng.randint(0, 3)):
                    assert h.offer(path, closed=False)
                assert h.offer(path, closed=True)

        return body

    run_threads([closing_offers(p, random.Random(rng.random())) for p in parts], h.pipeline)
    assert_idle(h)
    assert h.counts == {Outcome.UPLOADED: len(files)}
    assert h.tally.outcomes == {Outcome.UPLOADED: len(files)}
    assert sorted(job.path for job in h.fake.jobs) == sorted(map(str, files))
    for job in h.fake.jobs:
        assert job.digest == digest_of(Path(job.path)), "the upload is not the file's last bytes"


@pytest.mark.parametrize("seed", SEEDS)
def test_offers_in_any_interleaving_leave_nothing_queued(seed, make, root):
    """Offers, hints and rewrites in any order: queued returns to 0 and the last bytes are sent."""
    rng = random.Random(seed)
    h = make(settle_seconds=rng.choice([0.0, 0.01, 0.05]), workers=rng.randint(1, 3))
    files = [root / f"g{i}.png" for i in range(rng.randint(2, 6))]
    writer = Writer()
    for i, path in enumerate(files):
        writer.rewrite(path, seed=i)
    offers = Counter[str]()
    offers_lock = threading.Lock()

    def body_for(rng: random.Random) -> Callable[[], None]:
        def body() -> None:
            for _ in range(rng.randint(4, 12)):
                path = rng.choice(files)
                if rng.random() < 0.3:
                    writer.rewrite(path, seed=rng.randrange(1 << 30))
                assert h.offer(path, closed=rng.random() < 0.5)
                with offers_lock:
                    offers[str(path)] += 1

        return body

    run_threads([body_for(random.Random(rng.random())) for _ in range(4)], h.pipeline)
    for path in files:  # what a watcher does after the last write: one more hint
        assert h.offer(path, closed=rng.random() < 0.5)
        offers[str(path)] += 1
    assert_idle(h)
    outcomes = sum(h.counts.values())
    assert len(files) <= outcomes <= offers.total()
    assert set(h.counts) == {Outcome.UPLOADED}
    for path in files:
        sent = {job.digest for job in h.fake.jobs if job.path == str(path)}
        assert digest_of(path) in sent, f"{path.name}: its last bytes were never sent"


# -- 2. every item gets an outcome, whatever is raised -----------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        pytest.param(
            errors.ApiError("the response is not a JSON object", method="POST", endpoint="/assets"),
            "api_error",
            "POST /assets: the response is not a JSON object",
            id="bare-api-error",
        ),
        pytest.param(
            errors.ConflictError("listing is locked", status=409, code="lifecycle_error"),
            "lifecycle_error",
            "HTTP 409 lifecycle_error: listing is locked",
            id="conflict-from-list-nodes",
        ),
        pytest.param(RuntimeError("a bug"), "internal_error", "RuntimeError: a bug", id="bug"),
        pytest.param(
            KeyError("asset_id"), "internal_error", "KeyError: 'asset_id'", id="key-error"
        ),
    ],
)
def test_an_unexpected_error_fails_the_file_and_the_worker_lives_on(make, root, exc, code, text):
    """Whatever the transfer raises, the file fails with the error's text and the run goes on."""
    h = make(workers=1)
    bad, good = root / "bad.png", root / "good.png"
    write_file(bad, 100, seed=1)
    write_file(good, 100, seed=2)
    h.fake.scripts["bad.png"] = raising(exc)

    assert h.offer(bad, closed=True)
    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.FAILED: 1}
    assert h.pipeline.summary.failures == [(str(bad), code, text)]
    assert h.pipeline.threads_alive()

    assert h.offer(good, closed=True)  # the only worker is still there to take it
    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.FAILED: 1, Outcome.UPLOADED: 1}
    assert h.fake.answered(Outcome.UPLOADED) == {str(good): 1}
    assert h.pipeline.threads_alive()


def test_a_journal_that_cannot_be_written_defers_the_file_and_says_so(make, root):
    """A JournalError (the journal's database went away) is no failure of the file: a one-shot
    run counts it deferred, health names the journal, and the next file that gets through
    clears it; the worker lives on."""
    h = make(workers=1)
    bad, good = root / "bad.png", root / "good.png"
    write_file(bad, 100, seed=1)
    write_file(good, 100, seed=2)
    h.fake.scripts["bad.png"] = raising(errors.JournalError("journal write failed: disk I/O error"))

    assert h.offer(bad, closed=True)
    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.DEFERRED: 1}
    assert h.pipeline.journal_down == "journal write failed: disk I/O error"

    assert h.offer(good, closed=True)
    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.DEFERRED: 1, Outcome.UPLOADED: 1}
    assert h.pipeline.journal_down is None
    assert h.pipeline.threads_alive()


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(
            errors.MalformedResponseError("the response is not JSON", status=200), id="malformed"
        ),
        pytest.param(errors.ServerError("upstream down", status=503), id="server-error"),
    ],
)
def test_a_transient_error_defers_the_file_and_the_run_ends(make, root, exc):
    """A transient error leaves the file for the next run (deferred, with its text) and ends."""
    h = make(workers=1, retry_deferred=False)
    path = root / "later.png"
    write_file(path, 100)
    h.fake.scripts["later.png"] = raising(exc)

    assert h.offer(path, closed=True)
    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.DEFERRED: 1}
    [(failed_path, _, message)] = h.pipeline.summary.failures
    assert (failed_path, message) == (str(path), str(exc))
    assert h.pipeline.threads_alive()


# -- 3. a thread that dies anyway -------------------------------------------------------------


class Escaped(BaseException):
    """Not an ``Exception``: no except clause of the pipeline's guard catches it."""


def test_a_dead_worker_ends_the_wait_instead_of_hanging(make, root):
    """A worker killed by a BaseException marks the pipeline broken and wait_idle returns."""
    h = make(workers=1)
    path = root / "doomed.png"
    write_file(path, 100)
    h.fake.scripts["doomed.png"] = raising(Escaped("out of the blue"))

    assert h.offer(path, closed=True)
    started = time.monotonic()
    assert h.pipeline.wait_idle(timeout=LONG_TIMEOUT) is False
    assert time.monotonic() - started < SHORT_TIMEOUT, "wait_idle waited for a dead thread"
    assert h.pipeline.broken is not None
    assert "florasync-worker-0" in h.pipeline.broken
    assert "Escaped: out of the blue" in h.pipeline.broken
    wait_until(
        lambda: not h.pipeline.threads_alive(), timeout=SHORT_TIMEOUT, message="the dead worker"
    )


# -- 4. deferrals and re-settles are counted apart ----------------------------------------------


def test_a_file_deferred_six_times_that_changes_once_is_still_synced(make, root):
    """Six deferrals and then one change: the file settles again and is synced, not failed."""
    clock = FakeClock()
    h = make(workers=1, retry_deferred=True, clock=clock)
    path = root / "flaky.png"
    write_file(path, 100)
    deferrals = 6

    def script(job: Job, call: int) -> Result:
        if call <= deferrals:
            raise errors.ServerError("try later", status=503)
        if call == deferrals + 1:
            return Result(Outcome.CHANGED)
        return uploaded(job, call)

    h.fake.scripts["flaky.png"] = script
    assert h.offer(path, closed=True)

    def deferred(times: int) -> bool:
        return h.fake.calls(path) == times and len(h.pipeline._timers) == 1

    for n in range(1, deferrals + 1):
        wait_until(functools.partial(deferred, n), timeout=SHORT_TIMEOUT, message=f"deferral {n}")
        clock.advance(MAX_DEFER_SECONDS)  # past the backoff, however long it has grown
        h.pipeline._timers.wake()
    # wait_idle's own deadline runs on the pipeline's (frozen) clock: poll on the real one
    wait_until(lambda: h.pipeline.outstanding == 0, timeout=SHORT_TIMEOUT, message="the outcome")
    assert h.counts == {Outcome.UPLOADED: 1}
    assert h.pipeline.summary.failures == []
    assert h.fake.calls(path) == deferrals + 2


# -- 5. a re-settle never waits on its own full queue -------------------------------------------


def test_files_changing_while_the_queues_are_full_do_not_deadlock(make, root):
    """Files that change while both queues are full settle again and all finish once released."""
    h = make(workers=1, settle_seconds=0)
    hash_q, job_q = h.pipeline._hash_q, h.pipeline._job_q
    count = (
        hash_q.capacity() + job_q.capacity() + 1 + HASH_THREADS + 60
    )  # more than fits: offers wait
    files = [root / f"q{i:03}.png" for i in range(count)]
    for i, path in enumerate(files):
        write_file(path, 64, seed=i)
    h.fake.gate.clear()  # the only worker holds the first job

    def offers(mine: list[Path]) -> Callable[[], None]:
        def body() -> None:
            for path in mine:
                h.offer(path)  # settle 0 and no close event: a scan's work, the normal lanes

        return body

    threads = [
        threading.Thread(target=offers(files[i::3]), name=f"test-offer-{i}") for i in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: hash_q.is_full() and job_q.is_full(),
            timeout=SHORT_TIMEOUT,
            message="full queues",
        )
        for i, path in enumerate(files):  # the hash stage will find every waiting file changed
            write_file(path, 80, seed=10_000 + i)
        h.fake.gate.set()
        assert_idle(h)
    finally:
        h.fake.gate.set()
        if any(t.is_alive() for t in threads):
            h.pipeline.begin_close()
        for thread in threads:
            thread.join()
    assert h.counts == {Outcome.UPLOADED: count}
    assert h.fake.answered(Outcome.UPLOADED) == Counter(map(str, files))


# -- 6. resume never blocks the caller ----------------------------------------------------------


def test_resume_hands_parked_jobs_to_the_workers_without_blocking(make, root):
    """After a refused key, resume() returns at once and every parked file is synced once."""
    refusals: list[errors.CredentialsError] = []
    h = make(workers=1, on_refused=refusals.append)
    count = h.pipeline._job_q.capacity() * 3  # more than the job queue holds
    files = [root / f"p{i:02}.png" for i in range(count)]
    for i, path in enumerate(files):
        write_file(path, 64, seed=i)
    refused = threading.Event()
    refused.set()
    revoked = errors.CredentialsError("the API key was revoked", status=401, code="unauthorized")

    def script(job: Job, call: int) -> Result:
        if refused.is_set():
            raise revoked
        return uploaded(job, call)

    h.fake.default = script
    for path in files:
        assert h.offer(path, closed=True)
    wait_until(lambda: len(h.pipeline._parked) == count, timeout=SHORT_TIMEOUT, message="parked")
    assert refusals == [revoked]
    assert h.fake.calls() == 1, "a refused key was tried again before resume"

    refused.clear()  # the key works again
    h.fake.gate.clear()  # and every upload is slow
    resumed: list[int] = []
    caller = threading.Thread(target=lambda: resumed.append(h.pipeline.resume()))
    caller.start()
    try:
        caller.join(0.5)
        assert not caller.is_alive(), "resume() blocked its caller (the daemon's main loop)"
        assert resumed == [count]
    finally:
        h.fake.gate.set()
        caller.join()
    assert_idle(h)
    assert h.counts == {Outcome.UPLOADED: count}
    assert h.fake.answered(Outcome.UPLOADED) == Counter(map(str, files))


# -- 7. the admission gate is the one way in ---------------------------------------------------


def test_a_symlink_leading_outside_the_folder_is_skipped_and_never_sent(
    make, root, outside, journal
):
    """A link to a file outside the folder is skipped with a symlink_escape problem, not read."""
    h = make()
    secret = outside / "secret.png"
    write_file(secret, 100, seed=7)
    link = root / "link.png"
    link.symlink_to(secret)

    assert h.offer(link, closed=True)
    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.SKIPPED: 1}
    assert h.fake.jobs == []
    [problem] = journal.failures(WORKSPACE, 10)
    assert (problem["path"], problem["code"]) == (str(link), "symlink_escape")
    cached = journal.cached_file(WORKSPACE, str(link))
    assert cached is not None
    assert cached.has_problem


def test_a_symlink_inside_the_folder_is_synced(make, root):
    """A link to another file inside the folder is followed: the target's bytes are sent."""
    h = make()
    target = root / "real.png"
    write_file(target, 100, seed=8)
    alias = root / "alias.png"
    alias.symlink_to(target)

    assert h.offer(alias, closed=True)
    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.UPLOADED: 1}
    [job] = h.fake.jobs
    assert (job.path, job.digest) == (str(alias), digest_of(target))


def test_an_excluded_file_is_skipped_without_a_problem(make, root, journal):
    """A path the folder's rules exclude is skipped quietly: no transfer, no problem in status."""
    folder = FolderConfig(path=root, project_id=PROJECT, exclude=("draft*",))
    h = make(folder=folder)
    draft = root / "draft.png"
    write_file(draft, 100)

    assert h.offer(draft, closed=True)
    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.SKIPPED: 1}
    assert h.fake.jobs == []
    assert journal.failures(WORKSPACE, 10) == []
    assert journal.cached_file(WORKSPACE, str(draft)) is None


def test_a_file_swapped_for_an_outside_symlink_while_settling_is_never_sent(
    make, root, outside, journal
):
    """A file replaced by a link leading outside before it settled is skipped, never read."""
    h = make(settle_seconds=0.3)
    secret = outside / "secret.png"
    write_file(secret, 100, seed=9)
    path = root / "swap.png"
    write_file(path, 100, seed=10)

    assert h.offer(path)  # fresh: it waits settle_seconds
    assert h.pipeline.settling == 1
    staged = root / ".swap.tmp"
    staged.symlink_to(secret)
    staged.replace(path)  # atomically, as an attacker would

    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.SKIPPED: 1}
    assert h.fake.jobs == []
    assert [p["code"] for p in journal.failures(WORKSPACE, 10)] == ["symlink_escape"]


# -- 8. vanished files are forgotten -----------------------------------------------------------


def remember(journal: Journal, root: Path, path: Path) -> None:
    """A journal row for ``path``, as a previous run left it."""
    stat = FileStat.from_stat(path.stat())
    journal.record_file(FileEntry(str(path), str(root), PROJECT, stat, None))
    assert journal.cached_file(WORKSPACE, str(path)) is not None


def test_a_file_that_vanishes_while_it_settles_is_forgotten(make, root, journal):
    """A file deleted before it settled leaves status, the queue and the progress count."""
    h = make(settle_seconds=0.2)
    path = root / "scratch.png"
    write_file(path, 64)
    remember(journal, root, path)

    assert h.offer(path)  # fresh: it waits settle_seconds
    assert h.pipeline.settling == 1
    path.unlink()
    assert_idle(h, SHORT_TIMEOUT)
    assert h.fake.jobs == []
    assert journal.cached_file(WORKSPACE, str(path)) is None


def test_a_file_that_vanishes_before_it_is_hashed_is_forgotten(make, root, journal):
    """A file deleted after it settled but before it was read ends vanished and leaves status."""
    h = make(workers=1, settle_seconds=0)  # no close events: the normal lanes
    # more than the worker, its job queue and the hash threads hold: the rest waits to be hashed
    fillers = [root / f"fill{i:02}.png" for i in range(h.pipeline._job_q.capacity() + 1 + 8)]
    for i, path in enumerate(fillers):
        write_file(path, 64, seed=i)
    gone = root / "gone.png"
    write_file(gone, 64, seed=99)
    remember(journal, root, gone)
    h.fake.gate.clear()

    for path in fillers:
        assert h.offer(path)
    assert h.offer(gone)  # settled: behind the fillers in the hash queue
    gone.unlink()
    h.fake.gate.set()

    assert_idle(h)
    assert h.counts == {Outcome.UPLOADED: len(fillers), Outcome.VANISHED: 1}
    assert h.fake.calls(gone) == 0
    assert journal.cached_file(WORKSPACE, str(gone)) is None


def test_a_file_that_vanishes_during_its_transfer_is_forgotten(make, root, journal):
    """A file the transfer found gone ends vanished and its journal row is dropped."""
    h = make()
    path = root / "fleeting.png"
    write_file(path, 64)
    remember(journal, root, path)
    h.fake.scripts["fleeting.png"] = vanished

    assert h.offer(path, closed=True)
    assert_idle(h, SHORT_TIMEOUT)
    assert h.counts == {Outcome.VANISHED: 1}
    assert journal.cached_file(WORKSPACE, str(path)) is None
