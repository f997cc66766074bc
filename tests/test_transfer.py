"""One file's lifecycle (transfer) against the sandbox over HTTP, with a real journal and files."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from florasync import errors
from florasync.flora import api, retrying, transport, upload
from florasync.flora.secret import Secret
from florasync.local.identity import FileStat, hash_file
from florasync.sandbox import Sandbox
from florasync.sandbox.faults import MALFORMED_KINDS
from florasync.state import lifecycle
from florasync.state.journal.store import Journal
from florasync.state.lifecycle import AssetRecord, AssetState, LinkRecord, LinkState
from florasync.sync.transfer import Job, Outcome, Result, Transfer

from .helpers import SHORT_TIMEOUT, assert_exactly_once, write_file

FAST = retrying.RetryPolicy(backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
TIMEOUTS = transport.Timeouts(connect=5.0, read=10.0, upload_read=10.0)
PROCESSING_TIMEOUT = 120.0  # long on purpose: a run that waits for it shows in the elapsed time

RESERVE = "POST /assets"
UPLOAD = "POST /upload"
COMPLETE = "POST /assets/{id}/complete"
RENEW = "POST /assets/{id}/retry"
ATTACH = "POST /projects/{id}/assets/{id}/attach"
NODES = "GET /projects/{id}/nodes"
ANSWER_ERRORS = ("not_json", "array", "missing_field", "redirect")
"""The malformed kinds the client sees as malformed; ``truncated`` is a dropped connection."""


@dataclass
class Rig:
    """A transfer wired to the sandbox, a journal in tmp_path and a folder of real files."""

    sb: Sandbox
    journal: Journal
    folder: Path
    client: api.FloraClient
    target: upload.UploadTarget
    stop: threading.Event

    def transfer(self, **options: Any) -> Transfer:
        options.setdefault("processing_timeout", PROCESSING_TIMEOUT)
        return _Claiming(
            workspace_id=self.sb.workspace_id,
            client=self.client,
            target=self.target,
            journal=self.journal,
            stop=self.stop,
            **options,
        )

    def new_job(self, name: str = "a.png", *, seed: int = 1) -> Job:
        """A fresh file in the folder of the sandbox's first project, and its job."""
        write_file(self.folder / name, 20_000, seed=seed)
        return self.job(self.folder / name)

    def job(self, path: Path) -> Job:
        """The job the pipeline builds for ``path`` once it has settled and been hashed."""
        content, _ = hash_file(path)
        return Job(
            path=str(path),
            folder=str(self.folder),
            project_id=self.sb.project_ids[0],
            stat=FileStat.from_stat(path.stat()),
            digest=content.digest,
            file_name=path.name,
            content_type="image/png",
        )

    def routes(self, route: str) -> list[dict[str, Any]]:
        """The request log of one route, oldest first."""
        return [r for r in self.sb.state()["requests"] if r["route"] == route]

    def asset(self, job: Job) -> AssetRecord:
        rec = self.journal.asset(self.sb.workspace_id, job.digest)
        assert rec is not None
        return rec

    def link(self, job: Job) -> LinkRecord:
        link = self.journal.link(self.sb.workspace_id, job.digest, job.project_id)
        assert link is not None
        return link


class _Claiming(Transfer):
    """A transfer run as the pipeline runs it: under the content's claim (a fleet's journal)."""

    def run(self, job: Job) -> Result:
        self._journal.claim(self.workspace_id, job.digest, job.project_id)
        try:
            return super().run(job)
        finally:
            self._journal.release(self.workspace_id, job.digest)


@pytest.fixture
def rig(sandbox: Sandbox, tmp_path: Path, run_journal: Journal) -> Iterator[Rig]:
    """The client built as ``config.runtime`` builds it, with a fast retry policy, on each
    journal backend."""
    stop = threading.Event()
    folder = tmp_path / "photos"
    folder.mkdir()
    journal = run_journal
    key = Secret(sandbox.api_key)
    gate = retrying.RateGate()
    client = api.FloraClient(
        sandbox.base_url, key, timeouts=TIMEOUTS, policy=FAST, gate=gate, stop=stop
    )
    target = upload.UploadTarget(timeouts=TIMEOUTS, stop=stop)
    yield Rig(sandbox, journal, folder, client, target, stop)
    target.close()
    client.close()


def _assert_stored(rig: Rig, job: Job, result: Result) -> None:
    """The bytes on disk are one ready asset, attached once to the job's project."""
    assert result.outcome in (Outcome.UPLOADED, Outcome.ATTACHED), result
    assert_exactly_once(rig.sb.state(), {Path(job.path): job.project_id})
    assert result.asset_id is not None
    blob = rig.sb.blob_path(result.asset_id)
    assert blob is not None
    assert blob.read_bytes() == Path(job.path).read_bytes()


def _assert_synced(rig: Rig, job: Job, result: Result) -> None:
    """As ``_assert_stored``, and no other asset was created on the way."""
    _assert_stored(rig, job, result)
    assert [a["asset_id"] for a in rig.sb.state()["assets"]] == [result.asset_id]


def _run_until_result(
    transfer: Transfer, job: Job, *, tries: int, expected: type[errors.ApiError]
) -> tuple[Result, int]:
    """``transfer.run`` repeated as the pipeline repeats it after ``expected``: (result, raises)."""
    for raised in range(tries):
        try:
            return transfer.run(job), raised
        except expected:
            continue
    raise AssertionError(f"transfer.run raised {expected.__name__} {tries} times in a row")


def _attach_in_doubt(rig: Rig, transfer: Transfer, job: Job) -> None:
    """Leave ``job``'s attach journaled as ATTACHING after it landed (every answer lost)."""
    rig.sb.faults.fail_next(ATTACH, drop="after", times=FAST.max_attempts)
    with pytest.raises(errors.NetworkError):
        transfer.run(job)
    assert rig.link(job).state == LinkState.ATTACHING
    assert len(rig.sb.state()["nodes"][job.project_id]) == 1


# -- bytes that never arrived (issue 11, item 3) ------------------------------------------------


@pytest.mark.parametrize("strictness", ["lifecycle_error", "repeat"])
@pytest.mark.parametrize("upload_fault", [{"status": 503}, {"drop": "before"}])
def test_bytes_that_never_arrived_are_pushed_again_at_once(
    rig: Rig, strictness: str, upload_fault: dict[str, Any]
) -> None:
    """An upload lost to a 5xx or a drop is renewed and pushed again at once, not waited for."""
    rig.sb.faults.update(complete_without_bytes=strictness)
    rig.sb.faults.fail_next(UPLOAD, **upload_fault)
    job = rig.new_job()
    started = time.monotonic()
    result = rig.transfer().run(job)
    assert time.monotonic() - started < 10.0, "waited for processing instead of pushing again"
    assert result.outcome == Outcome.UPLOADED
    _assert_synced(rig, job, result)
    assert len(rig.routes(RENEW)) == 1
    assert len(rig.routes(UPLOAD)) == 2
    assert len(rig.routes("GET /assets/{id}")) <= 1  # at most the look after a refusal


# -- retry sends a new request after a final refusal (issue 11, item 4) -------------------------


def test_forbidden_then_fixed_then_retry_attaches_once(rig: Rig) -> None:
    """Forbidden, fixed, `retry`: the attach goes out under a new key and lands exactly once."""
    job = rig.new_job()
    rig.sb.faults.update(
        idempotency="replay", replay_errors=True, forbidden_projects=[job.project_id]
    )
    transfer = rig.transfer()
    refused = transfer.run(job)
    assert (refused.outcome, refused.code) == (Outcome.FAILED, "forbidden")

    rig.sb.faults.update(forbidden_projects=[])
    assert rig.journal.reset_failed(rig.sb.workspace_id, None) == [job.path]  # `florasync retry`
    result = transfer.run(job)

    assert result.outcome == Outcome.ATTACHED  # the asset was already ready: attached only
    _assert_synced(rig, job, result)
    first, second = rig.routes(ATTACH)
    assert (first["status"], second["status"]) == (403, 201)
    assert first["idempotency_key"] != second["idempotency_key"]
    assert not second["replayed"]


# -- malformed answers (issue 11, item 2) -------------------------------------------------------


@pytest.mark.parametrize("idempotency", ["duplicate", "replay"])
@pytest.mark.parametrize("route", [RESERVE, COMPLETE, ATTACH])
@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_one_malformed_answer_is_survived(
    rig: Rig, kind: str, route: str, idempotency: str
) -> None:
    """A malformed 2xx (the request was handled) still ends in one synced asset and one node."""
    rig.sb.faults.update(idempotency=idempotency)
    rig.sb.faults.fail_next(route, malformed=kind)
    job = rig.new_job()
    started = time.monotonic()
    result = rig.transfer().run(job)
    assert time.monotonic() - started < SHORT_TIMEOUT
    assert result.outcome == Outcome.UPLOADED
    _assert_synced(rig, job, result)
    assert rig.routes(route)[0]["malformed"] == kind
    assert len(rig.sb.state()["requests"]) <= 12


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_listing_after_a_lost_attach_is_not_an_empty_project(rig: Rig, kind: str) -> None:
    """A garbled listing while looking for a lost attach is asked again, never taken as empty."""
    rig.sb.faults.fail_next(ATTACH, drop="after")  # attached, answer lost: 409 on the retry
    rig.sb.faults.fail_next(NODES, malformed=kind)
    job = rig.new_job()
    started = time.monotonic()
    result = rig.transfer().run(job)
    assert time.monotonic() - started < SHORT_TIMEOUT
    assert result.outcome == Outcome.UPLOADED
    _assert_synced(rig, job, result)  # one node: no second attach under a new key
    assert rig.routes(NODES)[0]["malformed"] == kind
    assert len(rig.routes(ATTACH)) == 2


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_listing_while_verifying_a_journaled_attach(rig: Rig, kind: str) -> None:
    """Verifying an attach left in doubt survives a garbled listing: attached once."""
    job = rig.new_job()
    transfer = rig.transfer()
    _attach_in_doubt(rig, transfer, job)
    rig.sb.faults.fail_next(NODES, malformed=kind)
    result = transfer.run(job)
    assert result.outcome == Outcome.ATTACHED  # the asset was ready before: attached only
    _assert_synced(rig, job, result)
    assert rig.routes(NODES)[0]["malformed"] == kind


PERSISTENT = {"every answer": ("*",), "complete": (COMPLETE,), "attach": (ATTACH, NODES)}


@pytest.mark.parametrize("scope", PERSISTENT)
@pytest.mark.parametrize("kind", ANSWER_ERRORS)
def test_persistently_malformed_answers_fail_the_file_and_retry_syncs_once(
    rig: Rig, kind: str, scope: str
) -> None:
    """Answers always garbled: bad_response after a few tries; fixed + `retry`: synced once."""
    for route in PERSISTENT[scope]:
        rig.sb.faults.fail_next(route, malformed=kind, times=1000)
    job = rig.new_job()
    transfer = rig.transfer()
    result, raised = _run_until_result(
        transfer, job, tries=lifecycle.MAX_BAD_ANSWERS, expected=errors.MalformedResponseError
    )
    assert (result.outcome, result.code) == (Outcome.FAILED, "bad_response")
    assert raised == lifecycle.MAX_BAD_ANSWERS - 1
    requests = len(rig.sb.state()["requests"])
    assert requests <= 3 + lifecycle.MAX_BAD_ANSWERS * (FAST.max_malformed_attempts + 2)

    rig.sb.faults.reset()  # the proxy is fixed; the user runs `florasync retry`
    assert rig.journal.reset_failed(rig.sb.workspace_id, None) == [job.path]
    _assert_stored(rig, job, transfer.run(job))


# -- a refused node listing (issue 11, item 2) --------------------------------------------------

REFUSALS = {400: "input_validation_error", 409: "conflict"}


@pytest.mark.parametrize("status", REFUSALS)
def test_refused_listing_after_a_lost_attach_fails_the_link(rig: Rig, status: int) -> None:
    """A 400/409 listing nodes after a lost attach answer fails this link; nothing escapes."""
    rig.sb.faults.fail_next(ATTACH, drop="after")
    rig.sb.faults.fail_next(NODES, status=status, code=REFUSALS[status])
    job = rig.new_job()
    result = rig.transfer().run(job)
    assert (result.outcome, result.code) == (Outcome.FAILED, REFUSALS[status])
    assert rig.link(job).state == LinkState.FAILED


@pytest.mark.parametrize("status", REFUSALS)
def test_refused_listing_while_verifying_fails_the_link(rig: Rig, status: int) -> None:
    """A 400/409 listing nodes to verify a journaled attach fails this link; nothing escapes."""
    job = rig.new_job()
    transfer = rig.transfer()
    _attach_in_doubt(rig, transfer, job)
    rig.sb.faults.fail_next(NODES, status=status, code=REFUSALS[status])
    result = transfer.run(job)
    assert (result.outcome, result.code) == (Outcome.FAILED, REFUSALS[status])
    assert rig.link(job).state == LinkState.FAILED


# -- processing timeouts (issue 11, item 7) -----------------------------------------------------


def test_processing_timeout_gives_the_next_try_a_fresh_window(rig: Rig) -> None:
    """After a processing timeout the next run waits a whole window again, then syncs."""
    # the first run polls at 0, 0.25 and 0.75 s and times out at that last poll; the second
    # starts later than that, so its fresh window outlasts processing (1.5 s from complete)
    rig.sb.faults.update(complete_pending_seconds=1.5)
    transfer = rig.transfer(processing_timeout=0.75)
    job = rig.new_job()
    with pytest.raises(errors.ServerError) as timed_out:
        transfer.run(job)
    assert timed_out.value.code == "processing_timeout"
    record = rig.asset(job)
    assert (record.state, record.ready_deadline) == (AssetState.PROCESSING, None)

    result = transfer.run(job)
    assert result.outcome == Outcome.UPLOADED
    _assert_synced(rig, job, result)


# -- one way in, at the read (issue 11, item 1) -------------------------------------------------


def _assert_no_bytes_of(sb: Sandbox, data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    for asset in sb.state()["assets"]:
        assert asset["sha256"] != digest
        assert all(u["sha256"] != digest for u in asset["uploads"])
        blob = sb.blob_path(asset["asset_id"])
        assert blob is None or blob.read_bytes() != data


@pytest.mark.parametrize("swap", ["symlink", "rename"])
def test_file_swapped_after_admission_is_not_read(rig: Rig, tmp_path: Path, swap: str) -> None:
    """A symlink (or another file) put in the admitted file's place: CHANGED, nothing leaves."""
    job = rig.new_job()
    outside = tmp_path / "secret" / "id_rsa.png"
    secret = write_file(outside, 20_000, seed=99)
    if swap == "symlink":
        Path(job.path).unlink()
        Path(job.path).symlink_to(outside)
    else:
        outside.replace(job.path)
    result = rig.transfer().run(job)
    assert result.outcome == Outcome.CHANGED
    _assert_no_bytes_of(rig.sb, secret)
    assert rig.routes(UPLOAD) == []
    assert rig.routes(COMPLETE) == []
    assert rig.asset(job).state == AssetState.RESERVED  # never pushed, never completed


def test_file_rewritten_before_the_push_is_changed(rig: Rig) -> None:
    """A file rewritten after it was hashed is reserved but never pushed: CHANGED."""
    job = rig.new_job()
    write_file(Path(job.path), 30_000, seed=2)
    result = rig.transfer().run(job)
    assert result.outcome == Outcome.CHANGED
    assert len(rig.routes(RESERVE)) == 1
    assert rig.routes(UPLOAD) == []
    assert rig.routes(COMPLETE) == []


def test_file_rewritten_during_the_push_is_never_completed(rig: Rig) -> None:
    """A rewrite while the bytes go out: CHANGED, never completed; the new version syncs."""
    job = rig.new_job()

    def rewrite(_sent: int) -> None:
        if Path(job.path).stat().st_size == job.size_bytes:
            write_file(Path(job.path), 30_000, seed=3)

    result = rig.transfer(on_bytes=rewrite).run(job)
    assert result.outcome == Outcome.CHANGED
    assert len(rig.routes(UPLOAD)) == 1
    assert rig.routes(COMPLETE) == []
    assert all(a["status"] != "ready" for a in rig.sb.state()["assets"])
    record = rig.asset(job)
    assert (record.state, record.upload) == (AssetState.RESERVED, None)  # never completed

    again = rig.job(Path(job.path))  # the pipeline settles and hashes it again
    result = rig.transfer().run(again)
    assert result.outcome == Outcome.UPLOADED
    _assert_stored(rig, again, result)


# -- expired or refused upload instructions ----------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404])
def test_upload_target_refusal_renews_the_instructions(rig: Rig, status: int) -> None:
    """A 4xx from the upload target spends the instructions: renewed, pushed, one asset."""
    rig.sb.faults.fail_next(UPLOAD, status=status)
    job = rig.new_job()
    result = rig.transfer().run(job)
    assert result.outcome == Outcome.UPLOADED
    _assert_synced(rig, job, result)
    assert len(rig.routes(RENEW)) == 1
    assert [r["status"] for r in rig.routes(UPLOAD)] == [status, 200]


def test_instructions_that_are_always_expired_fail_bounded(rig: Rig) -> None:
    """Instructions issued expired every time: renewals_exhausted after MAX_RENEWALS, no upload."""
    rig.sb.faults.update(expire_uploads=True)
    job = rig.new_job()
    result = rig.transfer().run(job)
    assert (result.outcome, result.code) == (Outcome.FAILED, "renewals_exhausted")
    assert len(rig.routes(RENEW)) <= lifecycle.MAX_RENEWALS + 1
    assert rig.routes(UPLOAD) == []
    assert len(rig.sb.state()["assets"]) == 1


# -- a lost reservation answer among files of the same name (issue 13) ----------------------------


def test_a_lost_reservation_is_not_confused_with_another_file_of_the_same_name(rig: Rig) -> None:
    """The answer to ``POST /assets`` is lost, and meanwhile another content's reservation of
    the same file name is pending, unclaimed (subfolders full of ``render0.png``, a crash): the
    recovery cannot tell them apart, so it reserves again; the other is never written into."""
    job = rig.new_job("render0.png", seed=7)
    transfer = rig.transfer()
    rig.sb.faults.fail_next(RESERVE, drop="after", times=FAST.max_attempts)
    with pytest.raises(errors.NetworkError):
        transfer.run(job)  # the reservation landed; every answer about it was lost
    other = rig.client.create_asset(
        rig.sb.workspace_id,
        file_name="render0.png",
        content_type="image/png",
        idempotency_key="another-content-whose-answer-was-lost",
    ).asset_id
    result = transfer.run(job)
    _assert_stored(rig, job, result)
    foreign = next(a for a in rig.sb.state()["assets"] if a["asset_id"] == other)
    assert foreign["status"] == "pending_upload"
    assert not foreign["uploads"]
