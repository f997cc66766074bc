"""One file's way into FLORA: performs the lifecycle steps, journaling each before its request.

Owns the I/O side of the state machine: for a ``Job`` it drives the content's asset to ready
(reserve, push, complete, wait) and then its attachment to the job's project, mapping every API
answer through ``lifecycle``. Threads, queues and scheduling belong to ``pipeline``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import IO, TYPE_CHECKING

from florasync import errors
from florasync.flora.models import Asset, UploadInstructions
from florasync.local import admission
from florasync.local.identity import FileStat
from florasync.state import lifecycle
from florasync.state.journal.records import FileEntry
from florasync.state.journal.store import Journal
from florasync.state.lifecycle import AssetRecord, AssetState, LinkRecord, LinkState, Source, Step
from florasync.sync import adoption

if TYPE_CHECKING:
    from florasync.flora import api, upload
    from florasync.sync.adoption import Adopter

log = logging.getLogger(__name__)

MAX_STEPS = 60  # a job that needs more steps than this is looping on a misbehaving server
_REMOVED = "removed from its project in FLORA; `florasync retry PATH` attaches it again"


class Outcome(StrEnum):
    """How a job ended; values are what summaries and metrics print."""

    UPLOADED = "uploaded"  # new content: an asset was created and attached
    ATTACHED = "attached"  # known content: the existing asset was attached to this project
    UNCHANGED = "unchanged"  # already attached to this project
    FAILED = "failed"  # permanent; `florasync retry` puts it back
    DEFERRED = "deferred"  # transient trouble; tried again later
    CHANGED = "changed"  # the file changed under us; it must settle again
    VANISHED = "vanished"  # the file is gone
    SKIPPED = "skipped"  # not followed on purpose (a symlink leaving the folder)


@dataclass(frozen=True, slots=True)
class Job:
    """A settled, hashed file to bring into its project."""

    path: str
    folder: str
    project_id: str
    stat: FileStat
    digest: str
    file_name: str
    content_type: str

    @property
    def size_bytes(self) -> int:
        return self.stat.size


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    asset_id: str | None = None
    code: str | None = None
    message: str | None = None


class Transfer:
    """Performs jobs against one FLORA workspace; safe to share between worker threads.

    Raises from ``run``: ``errors.CredentialsError`` (401, or 403 on the workspace: fatal),
    ``errors.PaymentRequiredError`` (402: uploads must pause), ``errors.StoppedError``.
    """

    def __init__(
        self,
        *,
        workspace_id: str,
        client: api.FloraClient,
        target: upload.UploadTarget,
        journal: Journal,
        stop: threading.Event,
        processing_timeout: float = 120.0,
        clock: Callable[[], float] = time.time,
        on_bytes: Callable[[int], None] | None = None,
        adopter: Adopter | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        self._client = client
        self._target = target
        self._journal = journal
        self._stop = stop
        self._processing_timeout = processing_timeout
        self._clock = clock
        self._on_bytes = on_bytes
        self._adopter = adopter

    @property
    def client(self) -> api.FloraClient:
        """The API client the jobs use (``projects`` resolves names with it)."""
        return self._client

    def run(self, job: Job) -> Result:
        """Bring ``job`` to attached, or as far as possible; the journal holds where it stopped
        (committed by the time this returns or raises: results are recorded without waiting,
        one flush at the end covers them all)."""
        try:
            return self._run(job)
        finally:
            self._journal.flush()

    def _run(self, job: Job) -> Result:
        entry = FileEntry(job.path, job.folder, job.project_id, job.stat, job.digest)
        asset, link = self._journal.ensure(self._new_asset(job), self._new_link(job), entry)
        settled = self._settled(job, asset, link)
        if settled is not None:
            return settled
        fresh = asset.state != AssetState.READY
        try:
            asset = self._drive_asset(asset, job)
            if asset.state == AssetState.FAILED:
                return _failed(asset.error, asset.asset_id)
            link = self._drive_link(link, asset)
        except errors.FileChangedError:
            return Result(Outcome.CHANGED, asset.asset_id)
        except errors.LocalFileError as exc:
            if exc.code == "vanished":
                return Result(Outcome.VANISHED)
            raise
        if link.state == LinkState.FAILED:
            return _failed(link.error, asset.asset_id)
        return Result(Outcome.UPLOADED if fresh else Outcome.ATTACHED, asset.asset_id)

    def _settled(self, job: Job, asset: AssetRecord, link: LinkRecord) -> Result | None:
        """Nothing to send: attached, removed in FLORA (respected), or adopted."""
        if link.state in (LinkState.ATTACHED, LinkState.REMOVED):
            return _at_rest(link, asset.asset_id)
        if self._adopter is not None and asset.state == AssetState.NEW and not asset.reserve_key:
            return self._adopt(job, asset, link)
        return None

    def _adopt(self, job: Job, asset: AssetRecord, link: LinkRecord) -> Result | None:
        """``adopt: true``: the bytes may already be in FLORA (a lost journal, another tool):
        take that asset and its node instead of uploading (None: upload as new content)."""
        assert self._adopter is not None  # noqa: S101 -- the caller checked
        try:
            found = self._adopter.find(
                file_name=job.file_name,
                size_bytes=job.size_bytes,
                digest=job.digest,
                project_id=job.project_id,
            )
        except adoption.AmbiguousError as exc:
            failed = lifecycle.fail_link(link, exc.code, str(exc), self._clock())
            self._save_link(failed)
            return _failed(failed.error, None)
        if found is None:
            return None
        self._save(replace(asset, state=AssetState.READY, asset_id=found.asset_id))
        self._save_link(lifecycle.attach_found(link, found.node_id))
        return Result(Outcome.UNCHANGED, found.asset_id, "adopted", "already in FLORA: adopted")

    # -- the asset ----------------------------------------------------------------------------

    def _drive_asset(self, rec: AssetRecord, job: Job) -> AssetRecord:
        for _ in range(MAX_STEPS):
            self._check_stop()
            self._journal.check_claim(rec.workspace_id, rec.digest)  # fleet: still ours?
            step = lifecycle.next_asset_step(rec, self._clock())
            if step in (Step.DONE, Step.GIVE_UP):
                return rec
            rec = self._asset_step(step, rec, job)
        raise errors.ServerError(f"no progress after {MAX_STEPS} steps", code="no_progress")

    def _asset_step(self, step: Step, rec: AssetRecord, job: Job) -> AssetRecord:
        try:
            return self._perform(step, rec, job)
        except errors.TransientError as exc:
            self._journal.flush()  # the step may have recorded progress before it failed
            current = self._journal.asset(rec.workspace_id, rec.digest) or rec
            bounded = isinstance(exc, errors.MalformedResponseError)
            failure = lifecycle.transient_error(
                current, _code(exc), exc.message, self._clock(), bounded=bounded
            )
            self._journal.record(failure)
            if failure.state == AssetState.FAILED:
                return failure  # answered nonsense too often: the file fails, `retry` resumes
            raise
        except (errors.CredentialsError, errors.PaymentRequiredError):
            raise
        except errors.ForbiddenError as exc:
            raise _workspace_refused(exc, self.workspace_id) from None
        except errors.RejectedError as exc:
            return self._save(lifecycle.fail_asset(rec, _code(exc), exc.message, self._clock()))

    def _perform(self, step: Step, rec: AssetRecord, job: Job) -> AssetRecord:
        if step == Step.RESERVE:
            return self._reserve(rec)
        if step == Step.RENEW:
            return self._renew(rec)
        if step == Step.PUSH:
            return self._push(rec, job)
        if step == Step.COMPLETE:
            return self._complete(rec)
        return self._wait_ready(rec)

    def _reserve(self, rec: AssetRecord) -> AssetRecord:
        rec = lifecycle.begin_reserve(rec, self._clock())
        self._journal.begin(rec)  # the Idempotency-Key is on disk before the POST leaves
        assert rec.reserve_key is not None  # noqa: S101 -- begin_reserve always sets it
        try:
            asset = self._client.create_asset(
                self.workspace_id,
                file_name=rec.file_name,
                content_type=rec.content_type,
                idempotency_key=rec.reserve_key,
            )
        except errors.IdempotencyDuplicateError:
            return self._recover_reservation(rec)  # the first POST landed; its answer was lost
        except errors.IdempotencyConflictError as exc:
            return self._save(lifecycle.reservation_lost(rec, self._clock(), exc.message))
        if not self._journal.claim_asset_id(rec, asset.asset_id):
            return self._save(lifecycle.reservation_lost(rec, self._clock(), "asset id reused"))
        return self._save(self._apply(rec, asset, Source.RESERVE))

    def _recover_reservation(self, rec: AssetRecord) -> AssetRecord:
        """After 409 ``idempotency_duplicate``: find the asset the lost answer described (Q2).

        Our own reservation is among the unclaimed pending assets of that name (the 409 says it
        landed), so a single one is ours, unless another content of the same file name may
        have an unrecorded reservation too (files of one name in many folders whose answers
        were lost in one crash, issue 13): a pending asset cannot say whose bytes it awaits,
        so then, as with several candidates, reserve again and leave the orphan (CONTRACT §5).
        """
        since = (rec.reserved_at or 0.0) - 600.0  # generous for clock skew
        self._journal.flush()  # claims of other contents must be visible before we claim
        if (others := self._journal.reservations_in_doubt(rec)) > 0:
            reason = (
                f"a reservation was accepted but {others} other file(s) called "
                f"{rec.file_name!r} may hold one too; reserving again"
            )
            return self._save(lifecycle.reservation_lost(rec, self._clock(), reason))
        listed = self._client.list_assets(workspace_id=self.workspace_id, query=rec.file_name)
        candidates = [
            asset.asset_id
            for asset in listed
            if asset.name == rec.file_name
            and asset.status == "pending_upload"
            and (asset.created_at is None or asset.created_at >= since)
            and self._journal.claim_asset_id(rec, asset.asset_id)
        ]
        if len(candidates) == 1:
            log.info("recovered reservation %s for %s", candidates[0], rec.file_name)
            return self._save(lifecycle.adopt_reservation(rec, candidates[0]))
        if candidates:
            reason = (
                f"a reservation was accepted but {len(candidates)} pending assets are called "
                f"{rec.file_name!r}; reserving again"
            )
        else:
            reason = "a reservation was accepted but cannot be found; reserving again"
        return self._save(lifecycle.reservation_lost(rec, self._clock(), reason))

    def _renew(self, rec: AssetRecord) -> AssetRecord:
        asset_id = _asset_id(rec)
        try:
            asset = self._client.retry_asset(asset_id)
        except (errors.InvalidRequestError, errors.ConflictError):
            asset = self._client.get_asset(asset_id)  # act on the real state (Q5)
            if not asset.is_ready:
                reason = f"FLORA refused fresh upload instructions (asset {asset.status})"
                return self._save(lifecycle.reservation_lost(rec, self._clock(), reason))
        except errors.NotFoundError:
            return self._save(lifecycle.reservation_lost(rec, self._clock(), "asset not found"))
        return self._save(self._apply(rec, asset, Source.RENEW))

    def _push(self, rec: AssetRecord, job: Job) -> AssetRecord:
        instructions = rec.upload
        assert instructions is not None  # noqa: S101 -- next_asset_step only pushes with them
        # the open file must be the admitted one: a symlink or another file swapped in since
        # is refused before a byte is read (issue 11, "one way in")
        with admission.open_admitted(job.path, job.stat) as stream:
            # committed before the first byte leaves, with the asset id queued before it: a
            # kill -9 after the upload landed must not leave a reservation without its asset
            # (it would reserve and upload again). Not synced: if a power loss drops it, the
            # push is retried with the spent token, refused, renewed (§10.3)
            self._journal.record_committed(lifecycle.push_started(rec))
            pushed = self._send_bytes(rec, job, instructions, stream)
            if pushed is not None:
                return pushed
            if not admission.still_admitted(stream, job.stat):
                self._save(lifecycle.push_rejected(rec, self._clock()))  # never complete these
                raise errors.FileChangedError(job.path)
        # not journaled: UPLOADING (journaled before the push) already leads to COMPLETE
        return lifecycle.push_done(rec)

    def _send_bytes(
        self, rec: AssetRecord, job: Job, instructions: UploadInstructions, stream: IO[bytes]
    ) -> AssetRecord | None:
        """Push; None when the bytes went (or may have gone), else the record to go on with."""
        try:
            self._target.upload(
                instructions,
                stream,
                file_name=rec.file_name,
                content_type=rec.content_type,
                progress=self._on_bytes,
            )
        except errors.UploadRejectedError as exc:
            log.info("upload target refused %s (%s); asking for fresh instructions", job.path, exc)
            return self._save(lifecycle.push_rejected(rec, self._clock()))
        except errors.UploadUncertainError as exc:
            log.info("upload of %s uncertain (%s); complete will tell", job.path, exc)
        except errors.InsecureTransportError as exc:
            failed = lifecycle.fail_asset(rec, "insecure_upload_url", str(exc), self._clock())
            return self._save(failed)
        return None

    def _complete(self, rec: AssetRecord) -> AssetRecord:
        asset_id = _asset_id(rec)
        source = Source.COMPLETE
        try:
            asset = self._client.complete_asset(asset_id)
        except (errors.InvalidRequestError, errors.ConflictError):
            asset = self._client.get_asset(asset_id)  # act on the real state (Q5)
            source = Source.COMPLETE_REFUSED  # still pending: the bytes are not there (§7.2)
        except errors.NotFoundError:
            return self._save(lifecycle.reservation_lost(rec, self._clock(), "asset not found"))
        return self._save(self._apply(rec, asset, source))

    def _wait_ready(self, rec: AssetRecord) -> AssetRecord:
        interval = 0.25
        while True:
            self._journal.check_claim(rec.workspace_id, rec.digest)
            asset = self._client.get_asset(_asset_id(rec))
            rec = self._apply(rec, asset, Source.POLL)
            if rec.state != AssetState.PROCESSING:
                return self._save(rec)
            if self._clock() >= (rec.ready_deadline or 0.0):
                self._save(lifecycle.processing_timed_out(rec))  # the next try waits afresh
                message = (
                    f"asset {rec.asset_id} still processing after {self._processing_timeout:g}s"
                )
                raise errors.ServerError(message, code="processing_timeout")
            if self._stop.wait(interval):
                raise errors.StoppedError("stopped while waiting for FLORA to process an asset")
            interval = min(interval * 2, 5.0)

    # -- the attachment -----------------------------------------------------------------------

    def _drive_link(self, link: LinkRecord, asset: AssetRecord) -> LinkRecord:
        for _ in range(MAX_STEPS):
            self._check_stop()
            self._journal.check_claim(link.workspace_id, link.digest)
            step = lifecycle.next_link_step(link)
            if step in (Step.DONE, Step.GIVE_UP):
                return link
            try:
                if step == Step.VERIFY_ATTACH:
                    link = self._verify(link, asset)
                else:
                    link = self._attach(link, asset)
            except errors.TransientError as exc:
                self._journal.flush()
                current = self._journal.link(link.workspace_id, link.digest, link.project_id)
                failure = lifecycle.link_transient(
                    current or link,
                    _code(exc),
                    exc.message,
                    self._clock(),
                    bounded=isinstance(exc, errors.MalformedResponseError),
                )
                self._journal.record(failure)
                if failure.state == LinkState.FAILED:
                    return failure
                raise
            except (errors.CredentialsError, errors.PaymentRequiredError):
                raise
            except errors.RejectedError as exc:  # e.g. 400/409 listing nodes: this project only
                failed = lifecycle.fail_link(link, _code(exc), exc.message, self._clock())
                link = self._save_link(failed)
        raise errors.ServerError(f"no progress after {MAX_STEPS} steps", code="no_progress")

    def _attach(self, link: LinkRecord, asset: AssetRecord) -> LinkRecord:
        link = lifecycle.begin_attach(link)
        self._journal.begin(link)
        assert link.attach_key is not None  # noqa: S101 -- begin_attach always sets it
        try:
            answer = self._client.attach(
                link.project_id, _asset_id(asset), idempotency_key=link.attach_key
            )
        except (errors.CredentialsError, errors.PaymentRequiredError):
            raise
        except errors.IdempotencyDuplicateError:
            found = self._find_node(link, asset)
            if found:
                return self._save_link(lifecycle.attach_found(link, found))
            return self._save_link(lifecycle.attach_key_spent(link, self._clock()))
        except errors.RejectedError as exc:  # 403 forbidden project, 404, 400: this project only
            failed = lifecycle.fail_link(link, _code(exc), exc.message, self._clock())
            return self._save_link(failed)
        return self._save_link(lifecycle.attached(link, answer))

    def _verify(self, link: LinkRecord, asset: AssetRecord) -> LinkRecord:
        found = self._find_node(link, asset)
        if found:
            return self._save_link(lifecycle.attach_found(link, found))
        return self._save_link(lifecycle.attach_not_found(link))

    def _find_node(self, link: LinkRecord, asset: AssetRecord) -> str | None:
        try:
            nodes = self._client.list_nodes(link.project_id)
            return next((n.node_id for n in nodes if n.asset_id == asset.asset_id), None)
        except (errors.ForbiddenError, errors.NotFoundError):
            return None

    # -- helpers ------------------------------------------------------------------------------

    def _apply(self, rec: AssetRecord, asset: Asset, source: Source) -> AssetRecord:
        return lifecycle.apply_answer(
            rec, asset, self._clock(), source=source, processing_timeout=self._processing_timeout
        )

    def _save(self, rec: AssetRecord) -> AssetRecord:
        self._journal.record(rec)
        return rec

    def _save_link(self, link: LinkRecord) -> LinkRecord:
        self._journal.record(link)
        return link

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise errors.StoppedError("stopped")

    def _new_asset(self, job: Job) -> AssetRecord:
        return AssetRecord(
            workspace_id=self.workspace_id,
            digest=job.digest,
            size_bytes=job.size_bytes,
            file_name=job.file_name,
            content_type=job.content_type,
        )

    def _new_link(self, job: Job) -> LinkRecord:
        return LinkRecord(
            workspace_id=self.workspace_id, digest=job.digest, project_id=job.project_id
        )


def _at_rest(link: LinkRecord, asset_id: str | None) -> Result:
    """Nothing to do: attached, or removed in FLORA (deletions are respected, issue 15)."""
    if link.state == LinkState.REMOVED:
        return Result(Outcome.SKIPPED, asset_id, "removed_in_flora", _REMOVED)
    return Result(Outcome.UNCHANGED, asset_id)


def _asset_id(rec: AssetRecord) -> str:
    if rec.asset_id is None:
        raise errors.JournalError(
            f"journal row for {rec.digest[:12]} has no asset id in {rec.state}"
        )
    return rec.asset_id


def _code(exc: errors.ApiError) -> str:
    if exc.code:
        return exc.code
    return f"http_{exc.status}" if exc.status else type(exc).__name__


def _failed(failure: lifecycle.Failure | None, asset_id: str | None) -> Result:
    if failure is None:
        return Result(Outcome.FAILED, asset_id, "failed", "failed")
    return Result(Outcome.FAILED, asset_id, failure.code, failure.message)


def _workspace_refused(exc: errors.ForbiddenError, workspace_id: str) -> errors.CredentialsError:
    """403 on a workspace-level call: the key may not use this workspace (exit 3, PRODUCT.md)."""
    return errors.CredentialsError(
        f"FLORA refused workspace {workspace_id} for this key ({exc.message})",
        status=exc.status,
        code=exc.code,
        request_id=exc.request_id,
        method=exc.method,
        endpoint=exc.endpoint,
    )
