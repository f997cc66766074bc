"""The lifecycle state machine, driven through every state and answer without a network."""

from __future__ import annotations

from dataclasses import replace

import pytest

from florasync.flora.models import Asset, Attachment, UploadInstructions
from florasync.state import lifecycle
from florasync.state.lifecycle import AssetRecord, AssetState, LinkRecord, LinkState, Source, Step

NOW = 1_800_000_000.0
DIGEST = "ab" * 32
TIMEOUT = 120.0


def _rec(**kw: object) -> AssetRecord:
    base = AssetRecord(
        workspace_id="ws_1",
        digest=DIGEST,
        size_bytes=10,
        file_name="a.png",
        content_type="image/png",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _upload(expires_in: float | None = 3600.0) -> UploadInstructions:
    expires = None if expires_in is None else NOW + expires_in
    return UploadInstructions(url="http://127.0.0.1/u", fields={"token": "t"}, expires_at=expires)


def _asset(
    status: str, *, upload: UploadInstructions | None = None, msg: str | None = None
) -> Asset:
    return Asset(asset_id="asset_1", status=status, upload=upload, failure_message=msg)


@pytest.mark.parametrize(
    ("record", "step"),
    [
        (_rec(), Step.RESERVE),
        (_rec(state=AssetState.RESERVING, reserve_key="k"), Step.RESERVE),
        (_rec(state=AssetState.RESERVED, asset_id="asset_1", upload=_upload()), Step.PUSH),
        (_rec(state=AssetState.RESERVED, asset_id="asset_1", upload=None), Step.RENEW),
        (_rec(state=AssetState.RESERVED, asset_id="asset_1", upload=_upload(30)), Step.RENEW),
        (_rec(state=AssetState.RESERVED, asset_id="asset_1", upload=_upload(-5)), Step.RENEW),
        (_rec(state=AssetState.RESERVED, asset_id="asset_1", upload=_upload(None)), Step.PUSH),
        (_rec(state=AssetState.UPLOADING, asset_id="asset_1"), Step.COMPLETE),
        (_rec(state=AssetState.UPLOADED, asset_id="asset_1"), Step.COMPLETE),
        (_rec(state=AssetState.PROCESSING, asset_id="asset_1"), Step.WAIT_READY),
        (_rec(state=AssetState.READY, asset_id="asset_1"), Step.DONE),
        (_rec(state=AssetState.FAILED), Step.GIVE_UP),
    ],
)
def test_next_asset_step(record: AssetRecord, step: Step) -> None:
    """Each journaled asset state leads to exactly one next request (or none)."""
    assert lifecycle.next_asset_step(record, NOW) == step


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (LinkState.PENDING, Step.ATTACH),
        (LinkState.ATTACHING, Step.VERIFY_ATTACH),
        (LinkState.ATTACHED, Step.DONE),
        (LinkState.FAILED, Step.GIVE_UP),
    ],
)
def test_next_link_step(state: LinkState, step: Step) -> None:
    """An attach interrupted by a crash is verified against the project's nodes first."""
    link = LinkRecord(workspace_id="ws_1", digest=DIGEST, project_id="prj_1", state=state)
    assert lifecycle.next_link_step(link) == step


def test_reserve_key_is_journaled_and_kept_on_resume() -> None:
    """begin_reserve sets a deterministic key; resuming a reservation reuses the same key."""
    first = lifecycle.begin_reserve(_rec(), NOW)
    assert first.state == AssetState.RESERVING
    assert first.reserve_key is not None
    assert first.reserve_key.startswith("fs1-reserve-")
    again = lifecycle.begin_reserve(first, NOW + 100)
    assert again.reserve_key == first.reserve_key
    assert again.reserved_at == NOW
    assert lifecycle.begin_reserve(_rec(), NOW).reserve_key == first.reserve_key


def test_new_generation_gets_a_new_key() -> None:
    """Abandoning a reservation bumps the generation, so the next POST uses a new key."""
    first = lifecycle.begin_reserve(_rec(), NOW)
    lost = lifecycle.reservation_lost(first, NOW, "gone")
    assert lost.state == AssetState.NEW
    assert lost.generation == 1
    assert lifecycle.begin_reserve(lost, NOW).reserve_key != first.reserve_key


def test_generations_are_bounded() -> None:
    """A content whose reservations keep getting lost ends failed, not in an endless loop."""
    rec = _rec(generation=lifecycle.MAX_GENERATIONS - 1)
    assert lifecycle.reservation_lost(rec, NOW, "gone").state == AssetState.FAILED


ANSWERS = [
    # (source, answer, expected state, instructions kept)
    (Source.RESERVE, _asset("pending_upload", upload=_upload()), AssetState.RESERVED, True),
    (Source.RESERVE, _asset("pending_upload"), AssetState.RESERVED, False),
    (Source.RENEW, _asset("pending_upload", upload=_upload()), AssetState.RESERVED, True),
    (Source.COMPLETE, _asset("ready"), AssetState.READY, False),
    (Source.COMPLETE, _asset("pending_upload"), AssetState.PROCESSING, False),
    # complete repeating the (spent) instructions: the bytes never arrived (Q16)
    (Source.COMPLETE, _asset("pending_upload", upload=_upload()), AssetState.RESERVED, False),
    (Source.COMPLETE, _asset("failed", msg="Upload expired"), AssetState.RESERVED, False),
    (Source.COMPLETE, _asset("failed", msg="unsupported content type"), AssetState.FAILED, False),
    (Source.COMPLETE, _asset("failed", msg="file too large"), AssetState.FAILED, False),
    (Source.POLL, _asset("ready"), AssetState.READY, False),
    (Source.POLL, _asset("pending_upload"), AssetState.PROCESSING, False),
    (Source.POLL, _asset("something_new"), AssetState.PROCESSING, False),
]


@pytest.mark.parametrize(("source", "answer", "state", "kept"), ANSWERS)
def test_apply_answer(source: Source, answer: Asset, state: AssetState, kept: bool) -> None:
    """Every asset answer maps to the state FLORA's documentation (and CONTRACT §14) implies."""
    rec = _rec(state=AssetState.UPLOADED, asset_id="asset_1")
    out = lifecycle.apply_answer(rec, answer, NOW, source=source, processing_timeout=TIMEOUT)
    assert out.state == state
    assert out.asset_id == "asset_1"
    assert (out.upload is not None) is kept
    if state == AssetState.FAILED:
        assert out.error is not None
        assert out.error.message == answer.failure_message


def test_processing_deadline_is_set_once() -> None:
    """Polling keeps the first deadline, so a slow asset times out instead of waiting forever."""
    rec = _rec(state=AssetState.UPLOADED, asset_id="asset_1")
    first = lifecycle.apply_answer(
        rec, _asset("pending_upload"), NOW, source=Source.COMPLETE, processing_timeout=TIMEOUT
    )
    later = lifecycle.apply_answer(
        first, _asset("pending_upload"), NOW + 50, source=Source.POLL, processing_timeout=TIMEOUT
    )
    assert first.ready_deadline == later.ready_deadline == NOW + TIMEOUT


def test_renewals_are_bounded() -> None:
    """Instructions that keep failing end in a permanent failure with a reason."""
    rec = _rec(state=AssetState.RESERVED, asset_id="asset_1", renewals=lifecycle.MAX_RENEWALS)
    out = lifecycle.needs_renewal(rec, NOW)
    assert out.state == AssetState.FAILED
    assert out.error is not None
    assert out.error.code == "renewals_exhausted"


def test_push_transitions() -> None:
    """Push journals UPLOADING first; a rejected push asks for fresh instructions."""
    rec = _rec(state=AssetState.RESERVED, asset_id="asset_1", upload=_upload())
    assert lifecycle.push_started(rec).state == AssetState.UPLOADING
    done = lifecycle.push_done(lifecycle.push_started(rec))
    assert done.state == AssetState.UPLOADED
    assert done.upload is None
    rejected = lifecycle.push_rejected(rec, NOW)
    assert (rejected.state, rejected.upload, rejected.renewals) == (AssetState.RESERVED, None, 1)


def test_adopting_a_recovered_reservation_renews_it() -> None:
    """An asset found after a lost answer has unknown instructions: RENEW comes next."""
    rec = lifecycle.begin_reserve(_rec(), NOW)
    adopted = lifecycle.adopt_reservation(rec, "asset_9")
    assert adopted.asset_id == "asset_9"
    assert lifecycle.next_asset_step(adopted, NOW) == Step.RENEW


def test_transient_error_keeps_state() -> None:
    """A retryable error is recorded without moving the record."""
    rec = _rec(state=AssetState.UPLOADED, asset_id="asset_1")
    out = lifecycle.transient_error(rec, "unknown_error", "boom", NOW)
    assert out.state == AssetState.UPLOADED
    assert out.attempts == 1
    assert out.error == lifecycle.Failure("unknown_error", "boom", NOW)


def test_reset_starts_failed_assets_over() -> None:
    """`florasync retry` sends a failed asset back to NEW with a fresh key; others are untouched."""
    failed = lifecycle.fail_asset(_rec(asset_id="asset_1"), "asset_failed", "bad", NOW)
    reset = lifecycle.reset_asset(failed)
    assert (reset.state, reset.asset_id, reset.error, reset.generation) == (
        AssetState.NEW,
        None,
        None,
        1,
    )
    ready = _rec(state=AssetState.READY, asset_id="asset_1")
    assert lifecycle.reset_asset(ready) is ready


def test_attach_transitions() -> None:
    """Attach journals its key; 409 for an invisible attach moves to a new key, bounded."""
    link = LinkRecord(workspace_id="ws_1", digest=DIGEST, project_id="prj_1")
    attaching = lifecycle.begin_attach(link)
    assert attaching.state == LinkState.ATTACHING
    assert attaching.attach_key is not None
    answer = Attachment(project_id="prj_1", asset_id="asset_1", node_id="node_1")
    assert lifecycle.attached(attaching, answer).node_id == "node_1"
    assert lifecycle.attach_found(attaching, "node_2").state == LinkState.ATTACHED
    retry = lifecycle.attach_not_found(attaching)
    assert lifecycle.begin_attach(retry).attach_key == attaching.attach_key
    spent = lifecycle.attach_key_spent(attaching, NOW)
    assert lifecycle.begin_attach(spent).attach_key != attaching.attach_key
    last = replace(attaching, generation=lifecycle.MAX_GENERATIONS - 1)
    assert lifecycle.attach_key_spent(last, NOW).state == LinkState.FAILED


def test_reset_link() -> None:
    """`florasync retry` makes a failed attachment pending again."""
    link = LinkRecord(workspace_id="ws_1", digest=DIGEST, project_id="prj_1")
    failed = lifecycle.fail_link(link, "forbidden", "Forbidden.", NOW)
    assert lifecycle.reset_link(failed).state == LinkState.PENDING
    assert lifecycle.reset_link(link) is link


# -- issue 11 -------------------------------------------------------------------------------


def test_lost_reservation_starts_with_a_fresh_renewal_budget() -> None:
    """A new reservation is not failed on its first expired URL for its predecessor's renewals."""
    rec = _rec(
        state=AssetState.RESERVED,
        asset_id="asset_1",
        renewals=lifecycle.MAX_RENEWALS - 1,
        attempts=2,
    )
    lost = lifecycle.reservation_lost(rec, NOW, "asset not found")
    assert (lost.state, lost.renewals, lost.attempts) == (AssetState.NEW, 0, 0)
    reserved = lifecycle.apply_answer(
        lifecycle.begin_reserve(lost, NOW),
        _asset("pending_upload", upload=_upload()),
        NOW,
        source=Source.RESERVE,
        processing_timeout=TIMEOUT,
    )
    expired = lifecycle.push_rejected(reserved, NOW)
    expired = lifecycle.push_rejected(expired, NOW)
    assert (expired.state, expired.renewals) == (AssetState.RESERVED, 2)


def test_processing_timeout_gives_the_next_attempt_a_fresh_window() -> None:
    """After a processing timeout the deadline is cleared, and the next poll sets a new one."""
    rec = _rec(state=AssetState.PROCESSING, asset_id="asset_1", ready_deadline=NOW + TIMEOUT)
    timed_out = lifecycle.processing_timed_out(rec)
    assert (timed_out.state, timed_out.ready_deadline) == (AssetState.PROCESSING, None)
    later = NOW + 3 * TIMEOUT
    polled = lifecycle.apply_answer(
        timed_out, _asset("pending_upload"), later, source=Source.POLL, processing_timeout=TIMEOUT
    )
    assert polled.ready_deadline == later + TIMEOUT


@pytest.mark.parametrize(
    ("answer", "state", "step"),
    [
        (_asset("pending_upload"), AssetState.RESERVED, Step.RENEW),
        (_asset("pending_upload", upload=_upload()), AssetState.RESERVED, Step.RENEW),
        (_asset("ready"), AssetState.READY, Step.DONE),
        (_asset("failed", msg="unsupported content type"), AssetState.FAILED, Step.GIVE_UP),
    ],
)
def test_refused_complete_of_a_pending_asset_renews_at_once(
    answer: Asset, state: AssetState, step: Step
) -> None:
    """complete refused (400/409) and GET says pending_upload: the bytes are missing, renew now."""
    rec = _rec(state=AssetState.UPLOADED, asset_id="asset_1")
    out = lifecycle.apply_answer(
        rec, answer, NOW, source=Source.COMPLETE_REFUSED, processing_timeout=TIMEOUT
    )
    assert (out.state, out.upload, out.ready_deadline) == (state, None, None)
    assert lifecycle.next_asset_step(out, NOW) == step


def test_renewed_instructions_that_expire_at_once_are_bounded() -> None:
    """Fresh instructions that are already expiring count as a renewal: the loop ends failed."""
    rec = _rec(state=AssetState.RESERVED, asset_id="asset_1")
    expired = _asset("pending_upload", upload=_upload(-5))
    for n in range(1, lifecycle.MAX_RENEWALS + 1):
        rec = lifecycle.apply_answer(
            rec, expired, NOW, source=Source.RENEW, processing_timeout=TIMEOUT
        )
        assert (rec.state, rec.renewals, rec.upload) == (AssetState.RESERVED, n, None)
        assert lifecycle.next_asset_step(rec, NOW) == Step.RENEW
    rec = lifecycle.apply_answer(rec, expired, NOW, source=Source.RENEW, processing_timeout=TIMEOUT)
    assert rec.state == AssetState.FAILED
    assert rec.error is not None
    assert rec.error.code == "renewals_exhausted"
    fresh = _asset("pending_upload", upload=_upload())
    usable = lifecycle.apply_answer(
        _rec(state=AssetState.RESERVED, asset_id="asset_1"),
        fresh,
        NOW,
        source=Source.RENEW,
        processing_timeout=TIMEOUT,
    )
    assert (usable.renewals, usable.upload) == (0, fresh.upload)


def test_malformed_answers_in_a_row_fail_the_record() -> None:
    """MAX_BAD_ANSWERS malformed answers in a row fail a record; a good answer in between resets."""
    rec = _rec(state=AssetState.UPLOADED, asset_id="asset_1")
    for n in range(1, lifecycle.MAX_BAD_ANSWERS):
        rec = lifecycle.transient_error(rec, "bad_response", "not JSON", NOW, bounded=True)
        assert (rec.state, rec.attempts) == (AssetState.UPLOADED, n)
    assert lifecycle.transient_error(rec, "unknown_error", "5xx", NOW).state == AssetState.UPLOADED
    failed = lifecycle.transient_error(rec, "bad_response", "not JSON", NOW, bounded=True)
    assert failed.state == AssetState.FAILED
    assert failed.error == lifecycle.Failure("bad_response", "not JSON", NOW)
    answered = lifecycle.apply_answer(
        rec, _asset("pending_upload"), NOW, source=Source.COMPLETE, processing_timeout=TIMEOUT
    )
    assert answered.attempts == 0


def test_malformed_attach_answers_in_a_row_fail_the_link() -> None:
    """The same bound holds for an attachment; a landed attach resets the count."""
    link = lifecycle.begin_attach(LinkRecord(workspace_id="ws_1", digest=DIGEST, project_id="p"))
    for n in range(1, lifecycle.MAX_BAD_ANSWERS):
        link = lifecycle.link_transient(link, "bad_response", "not JSON", NOW, bounded=True)
        assert (link.state, link.attempts) == (LinkState.ATTACHING, n)
    failed = lifecycle.link_transient(link, "bad_response", "not JSON", NOW, bounded=True)
    assert failed.state == LinkState.FAILED
    assert lifecycle.attach_found(link, "node_1").attempts == 0


def test_retry_of_a_refused_attach_verifies_then_uses_a_new_key() -> None:
    """`retry` after a final refusal looks for a landed attach, then attaches under a new key."""
    attaching = lifecycle.begin_attach(
        LinkRecord(workspace_id="ws_1", digest=DIGEST, project_id="p")
    )
    failed = lifecycle.fail_link(attaching, "forbidden", "Forbidden.", NOW)
    reset = lifecycle.reset_link(failed)
    assert lifecycle.next_link_step(reset) == Step.VERIFY_ATTACH
    again = lifecycle.begin_attach(lifecycle.attach_not_found(reset))
    assert again.attach_key is not None
    assert again.attach_key != attaching.attach_key
    assert (again.generation, again.error, again.attempts) == (1, None, 0)


def test_retry_after_malformed_answers_keeps_the_known_asset() -> None:
    """`retry` of an asset failed on unreadable answers asks about that asset, not a new one."""
    rec = _rec(state=AssetState.UPLOADED, asset_id="asset_1", attempts=lifecycle.MAX_BAD_ANSWERS)
    failed = lifecycle.transient_error(rec, "bad_response", "not JSON", NOW, bounded=True)
    reset = lifecycle.reset_asset(failed)
    assert (reset.state, reset.asset_id, reset.generation) == (AssetState.RESERVED, "asset_1", 0)
    assert (reset.error, reset.attempts, reset.renewals) == (None, 0, 0)
    assert lifecycle.next_asset_step(reset, NOW) == Step.RENEW
    answered = lifecycle.apply_answer(
        reset, _asset("ready"), NOW, source=Source.RENEW, processing_timeout=TIMEOUT
    )
    assert answered.state == AssetState.READY
