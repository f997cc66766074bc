"""The asset and attachment lifecycle as a pure state machine: what next, what an answer means.

Owns the states, ``next_asset_step``/``next_link_step`` and every transition, as functions from a
frozen record (and an API answer) to a new record. No I/O and no clock: ``now`` (epoch seconds) is
an argument, so every path is unit-tested without a network. The pipeline performs the steps and
the journal stores the records. CONTRACT.md §7.2, §10.3 and §14 (Q2 to Q7, Q16) are the sources.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from florasync.flora.models import Asset, AssetStatus, Attachment, UploadInstructions
from florasync.local import identity

EXPIRY_MARGIN_SECONDS = 60.0  # renew instructions that expire this soon (CONTRACT §12.3)
MAX_RENEWALS = 8  # fresh instructions asked for one reservation before giving up
MAX_GENERATIONS = 4  # reservations abandoned (new idempotency key) before giving up
MAX_BAD_ANSWERS = 3  # malformed answers in a row (each after its own retries) before failing
BAD_RESPONSE = "bad_response"  # the code of a malformed answer (errors.MalformedResponseError)
_PERMANENT_HINTS = ("type", "size", "large", "corrupt", "unsupported", "megapixel")


class AssetState(StrEnum):
    """Where one content's asset stands. Values are what ``status --json`` prints."""

    NEW = "new"  # content known, nothing sent
    RESERVING = "reserving"  # Idempotency-Key journaled; POST /assets may be on its way
    RESERVED = "reserved"  # asset id known; instructions journaled unless spent
    UPLOADING = "uploading"  # bytes may be on their way; the single-use token may be spent
    UPLOADED = "uploaded"  # the target took the bytes, or may have: complete will tell
    PROCESSING = "processing"  # complete accepted; FLORA is still processing
    READY = "ready"  # usable; may be attached
    FAILED = "failed"  # permanent: FLORA refused this content; see the error


class LinkState(StrEnum):
    """Where one (content, project) attachment stands."""

    PENDING = "pending"
    ATTACHING = "attaching"  # Idempotency-Key journaled; attach may be on its way
    ATTACHED = "attached"
    FAILED = "failed"
    # a tombstone (issue 15): someone removed the node in FLORA after florasync attached it;
    # deletions are respected, so it is not attached again until ``florasync retry PATH``
    REMOVED = "removed_in_flora"


class Step(StrEnum):
    """The next request to make for a record."""

    RESERVE = "reserve"  # POST /assets
    RENEW = "renew"  # POST /assets/{id}/retry
    PUSH = "push"  # multipart POST to the upload target
    COMPLETE = "complete"  # POST /assets/{id}/complete
    WAIT_READY = "wait_ready"  # GET /assets/{id} until ready
    VERIFY_ATTACH = "verify_attach"  # GET /projects/{pid}/nodes: did an attach land?
    ATTACH = "attach"  # POST /projects/{pid}/assets/{id}/attach
    DONE = "done"
    GIVE_UP = "give_up"  # permanently failed: nothing to do until `florasync retry`


class Source(StrEnum):
    """Which call produced an asset answer (the same status means different things)."""

    RESERVE = "reserve"
    RENEW = "renew"
    COMPLETE = "complete"
    COMPLETE_REFUSED = "complete_refused"  # GET after complete answered 400/409 (Q5, §7.2)
    POLL = "poll"


@dataclass(frozen=True, slots=True)
class Failure:
    """The last error of a record: the API's code and message, or a local cause."""

    code: str
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """One content (blake3 digest) in one workspace, and its FLORA asset."""

    workspace_id: str
    digest: str
    size_bytes: int
    file_name: str
    content_type: str
    state: AssetState = AssetState.NEW
    asset_id: str | None = None
    generation: int = 0
    reserve_key: str | None = None
    reserved_at: float | None = None
    upload: UploadInstructions | None = None
    renewals: int = 0
    ready_deadline: float | None = None
    attempts: int = 0
    error: Failure | None = None


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """One content attached (or to be attached) to one project."""

    workspace_id: str
    digest: str
    project_id: str
    state: LinkState = LinkState.PENDING
    generation: int = 0
    attach_key: str | None = None
    node_id: str | None = None
    attempts: int = 0
    error: Failure | None = None


# -- what to do next ------------------------------------------------------------------------


def next_asset_step(rec: AssetRecord, now: float) -> Step:
    """The next step for an asset record at epoch ``now``."""
    if rec.state in (AssetState.NEW, AssetState.RESERVING):
        return Step.RESERVE
    if rec.state == AssetState.RESERVED:
        spent = rec.upload is None or rec.upload.expires_within(EXPIRY_MARGIN_SECONDS, now)
        return Step.RENEW if spent else Step.PUSH
    if rec.state in (AssetState.UPLOADING, AssetState.UPLOADED):
        return Step.COMPLETE  # after an uncertain or interrupted push, complete tells (§10.3)
    if rec.state == AssetState.PROCESSING:
        return Step.WAIT_READY
    if rec.state == AssetState.READY:
        return Step.DONE
    return Step.GIVE_UP


def next_link_step(link: LinkRecord) -> Step:
    """The next step for an attachment whose asset is ready."""
    if link.state == LinkState.PENDING:
        return Step.ATTACH
    if link.state == LinkState.ATTACHING:
        return Step.VERIFY_ATTACH  # a crash may have hidden a landed attach (Q7)
    if link.state in (LinkState.ATTACHED, LinkState.REMOVED):
        return Step.DONE
    return Step.GIVE_UP


# -- asset transitions ----------------------------------------------------------------------


def begin_reserve(rec: AssetRecord, now: float) -> AssetRecord:
    """Journal the Idempotency-Key before POST /assets; a resumed reservation keeps its key."""
    if rec.state == AssetState.RESERVING and rec.reserve_key:
        return rec
    key = identity.idempotency_key("reserve", rec.digest, rec.workspace_id, rec.generation)
    return replace(rec, state=AssetState.RESERVING, reserve_key=key, reserved_at=now)


def apply_answer(
    rec: AssetRecord, asset: Asset, now: float, *, source: Source, processing_timeout: float
) -> AssetRecord:
    """The record after any asset-shaped answer (create, retry, complete, get)."""
    rec = replace(rec, asset_id=asset.asset_id, error=None, attempts=0)
    if asset.status == AssetStatus.READY:
        return replace(rec, state=AssetState.READY, upload=None, ready_deadline=None)
    if asset.status == AssetStatus.FAILED:
        return _asset_failed(rec, asset.failure_message or "asset failed", now)
    if source == Source.COMPLETE_REFUSED:
        # complete was refused and the asset still waits for bytes: they never arrived, so
        # waiting for processing would only time out; renew and push again (§7.2)
        return needs_renewal(rec, now)
    fresh = source in (Source.RESERVE, Source.RENEW)
    # renewed instructions that are expiring already are a failed renewal: counted, so a FLORA
    # that only hands out expired URLs ends the file instead of looping on /retry
    stale = source == Source.RENEW and _expiring(asset.upload, now)
    if asset.upload is not None and fresh and not stale:
        return replace(rec, state=AssetState.RESERVED, upload=asset.upload)
    if asset.upload is not None or fresh:
        # complete answering pending_upload *with* instructions: the bytes never arrived and the
        # repeated fields are spent; ask for fresh ones (Q16). A reservation without any
        # instructions is unusable too (§8 "treat as an error (call retry)").
        return needs_renewal(rec, now)
    deadline = rec.ready_deadline or now + processing_timeout
    return replace(rec, state=AssetState.PROCESSING, ready_deadline=deadline, upload=None)


def _expiring(upload: UploadInstructions | None, now: float) -> bool:
    return upload is not None and upload.expires_within(EXPIRY_MARGIN_SECONDS, now)


def needs_renewal(rec: AssetRecord, now: float) -> AssetRecord:
    """The instructions are spent or expired: RENEW next, unless that keeps happening."""
    if rec.renewals >= MAX_RENEWALS:
        return fail_asset(
            rec, "renewals_exhausted", f"upload instructions failed {rec.renewals} times", now
        )
    return replace(rec, state=AssetState.RESERVED, upload=None, renewals=rec.renewals + 1)


def push_started(rec: AssetRecord) -> AssetRecord:
    """Journaled before the first byte leaves: after a crash, complete tells what landed."""
    return replace(rec, state=AssetState.UPLOADING)


def push_done(rec: AssetRecord) -> AssetRecord:
    """The upload target answered 2xx, or may have stored the bytes (uncertain)."""
    return replace(rec, state=AssetState.UPLOADED, upload=None)


def push_rejected(rec: AssetRecord, now: float) -> AssetRecord:
    """The target refused the fields (4xx), or what it got cannot be trusted: renew."""
    return needs_renewal(rec, now)


def reservation_lost(rec: AssetRecord, now: float, reason: str) -> AssetRecord:
    """Abandon this reservation and reserve again with a new key (next generation)."""
    if rec.generation + 1 >= MAX_GENERATIONS:
        return fail_asset(rec, "reservation_lost", reason, now)
    return replace(_next_generation(rec), error=Failure("reservation_lost", reason, now))


def _next_generation(rec: AssetRecord) -> AssetRecord:
    """A new reservation under a new key; its renewal and attempt budgets start afresh."""
    return replace(
        rec,
        state=AssetState.NEW,
        generation=rec.generation + 1,
        asset_id=None,
        reserve_key=None,
        reserved_at=None,
        upload=None,
        renewals=0,
        ready_deadline=None,
        attempts=0,
        error=None,
    )


def adopt_reservation(rec: AssetRecord, asset_id: str) -> AssetRecord:
    """A lost POST /assets answer was found by lookup (409 duplicate): its instructions are not
    known, so ask for fresh ones (GET never returns them)."""
    return replace(rec, asset_id=asset_id, state=AssetState.RESERVED, upload=None, error=None)


def fail_asset(rec: AssetRecord, code: str, message: str, now: float) -> AssetRecord:
    """Permanent failure: stays failed until ``florasync retry``."""
    return replace(rec, state=AssetState.FAILED, upload=None, error=Failure(code, message, now))


def transient_error(
    rec: AssetRecord, code: str, message: str, now: float, *, bounded: bool = False
) -> AssetRecord:
    """A retryable problem: the state stays, the attempt and its cause are recorded.

    ``bounded`` (a malformed answer): after ``MAX_BAD_ANSWERS`` of them in a row the asset fails,
    so a server or proxy that keeps answering nonsense ends in an outcome, not a loop.
    """
    if bounded and rec.attempts + 1 >= MAX_BAD_ANSWERS:
        return fail_asset(rec, code, message, now)
    return replace(rec, attempts=rec.attempts + 1, error=Failure(code, message, now))


def processing_timed_out(rec: AssetRecord) -> AssetRecord:
    """Processing outlasted its window: the next attempt polls with a fresh one."""
    return replace(rec, ready_deadline=None)


def reset_asset(rec: AssetRecord) -> AssetRecord:
    """``florasync retry``: a failed asset starts over with a new reservation.

    Unless it failed on unreadable answers: the step behind them (a complete, say) may have
    landed, so the known asset is asked for fresh instructions first, and a ready one is kept.
    """
    if rec.state != AssetState.FAILED:
        return rec
    if rec.asset_id is not None and rec.error is not None and rec.error.code == BAD_RESPONSE:
        return replace(
            rec, state=AssetState.RESERVED, renewals=0, ready_deadline=None, attempts=0, error=None
        )
    return _next_generation(rec)


def _asset_failed(rec: AssetRecord, message: str, now: float) -> AssetRecord:
    lowered = message.lower()
    if any(hint in lowered for hint in _PERMANENT_HINTS):
        return fail_asset(rec, "asset_failed", message, now)  # FLORA refused the bytes (Q8)
    return needs_renewal(rec, now)  # e.g. "Upload expired": fresh instructions fix it (Q16)


# -- attachment transitions -----------------------------------------------------------------


def begin_attach(link: LinkRecord) -> LinkRecord:
    """Journal the attach Idempotency-Key before the request leaves."""
    key = identity.idempotency_key("attach", link.digest, link.project_id, link.generation)
    return replace(link, state=LinkState.ATTACHING, attach_key=key)


def attached(link: LinkRecord, answer: Attachment) -> LinkRecord:
    return replace(link, state=LinkState.ATTACHED, node_id=answer.node_id, error=None, attempts=0)


def attach_found(link: LinkRecord, node_id: str) -> LinkRecord:
    """The project's nodes show the asset: an earlier attach landed."""
    return replace(link, state=LinkState.ATTACHED, node_id=node_id, error=None, attempts=0)


def attach_not_found(link: LinkRecord) -> LinkRecord:
    """The nodes do not show the asset: attach (again) with the same key."""
    return replace(link, state=LinkState.PENDING)


def attach_key_spent(link: LinkRecord, now: float) -> LinkRecord:
    """409 for a key whose attach is not visible: attach with a new key."""
    if link.generation + 1 >= MAX_GENERATIONS:
        return fail_link(link, "attach_lost", "attach kept being refused as a duplicate", now)
    return replace(link, state=LinkState.PENDING, generation=link.generation + 1, attach_key=None)


def fail_link(link: LinkRecord, code: str, message: str, now: float) -> LinkRecord:
    return replace(link, state=LinkState.FAILED, error=Failure(code, message, now))


def link_transient(
    link: LinkRecord, code: str, message: str, now: float, *, bounded: bool = False
) -> LinkRecord:
    """As ``transient_error``, for an attachment."""
    if bounded and link.attempts + 1 >= MAX_BAD_ANSWERS:
        return fail_link(link, code, message, now)
    return replace(link, attempts=link.attempts + 1, error=Failure(code, message, now))


ASSET_UNUSABLE = frozenset({"asset_gone", "asset_failed", "asset_not_ready"})


def removed_in_flora(link: LinkRecord, reason: str, now: float) -> LinkRecord:
    """The content florasync attached is gone from the project (``verify`` saw it; ``reason``:
    node_removed, or one of ``ASSET_UNUSABLE``): a tombstone, so the attachment is not made
    again unless the user asks (``retry PATH``)."""
    if link.state != LinkState.ATTACHED:
        return link
    return replace(link, state=LinkState.REMOVED, error=Failure(reason, "removed in FLORA", now))


def attach_again(link: LinkRecord) -> LinkRecord:
    """``remote_deletions: restore``: attach once more, under a new key (the old one would
    have a replaying FLORA answer with the node that was removed)."""
    return replace(
        link,
        state=LinkState.PENDING,
        generation=link.generation + 1,
        attach_key=None,
        node_id=None,
        attempts=0,
        error=None,
    )


def upload_again(rec: AssetRecord) -> AssetRecord:
    """The asset is gone or unusable in FLORA: a new asset for the content, under a new key."""
    return _next_generation(rec)


def reset_link(link: LinkRecord) -> LinkRecord:
    """``florasync retry``: a failed attachment is attempted again, under a new key.

    The old key was answered with a final refusal, and a FLORA that replays stored answers
    would give that refusal again forever (CONTRACT §5): a new generation is a new request.
    """
    if link.state == LinkState.REMOVED:  # a deletion in FLORA the user wants undone
        return attach_again(link)
    if link.state != LinkState.FAILED:
        return link
    # an attach that went out may have landed behind an unreadable answer: look first (Q7)
    return replace(
        link,
        state=LinkState.ATTACHING if link.attach_key else LinkState.PENDING,
        generation=link.generation + 1,
        attach_key=None,
        attempts=0,
        error=None,
    )
