"""The sandbox's upload target and asset lifecycle over real HTTP (CONTRACT §7.2, §8, §10.3)."""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from florasync.sandbox import Sandbox
from tests.helpers import SHORT_TIMEOUT, wait_until
from tests.test_sandbox import (
    TIMEOUT,
    call,
    complete,
    error_of,
    form_fields,
    reserve,
    upload,
    violations,
)

EXPIRE_MESSAGE = (
    "Your request contains invalid expire parameter. Expire parameter should be a Unix time "
    "in less than 1 hour into the future."
)
MIB = 1 << 20
psutil = importlib.import_module("psutil")  # ships no type information


def _used_message(token: str) -> str:
    return (
        f"The token with value '{token}' has been used before. We suggest using V4 UUIDs, or "
        "another random string with enough entropy to avoid collisions."
    )


def _token(asset: dict[str, Any]) -> str:
    return form_fields(asset["upload"])["token"]


def test_signed_upload_stores_the_exact_bytes(sandbox):
    """Reserve, upload, complete: the stored blob equals the bytes sent; the url serves them."""
    data = os.urandom(3 * MIB + 17)
    asset = reserve(sandbox, "hero shot.png")
    response = upload(asset, data, name="hero shot.png")
    assert response.status_code == 200
    stored = response.json()
    assert stored["size"] == len(data)
    assert stored["name"] == "hero_shot.png"
    assert stored["fileType"] == "image"
    assert {"fileId", "url", "filePath", "versionInfo"} <= set(stored)
    blob = sandbox.blob_path(asset["asset_id"])
    assert blob is not None
    assert blob.read_bytes() == data
    assert requests.get(asset["url"], timeout=TIMEOUT).status_code == 404  # not ready yet
    done = complete(sandbox, asset["asset_id"])
    assert done.status_code == 200
    assert done.json()["status"] == "ready"
    assert "upload" not in done.json()
    assert requests.get(done.json()["url"], timeout=TIMEOUT).content == data
    state_asset = sandbox.state()["assets"][0]
    assert state_asset["sha256"] == hashlib.sha256(data).hexdigest()
    assert state_asset["size_bytes"] == len(data)


@pytest.mark.parametrize(
    ("spelling", "keys"),
    [
        ("snake", {"url", "method", "content_type", "file_field", "form_fields"}),
        ("camel", {"url", "formFields", "fileField"}),
        (
            "both",
            {
                "url",
                "method",
                "content_type",
                "file_field",
                "form_fields",
                "formFields",
                "fileField",
                "contentType",
            },
        ),
    ],
)
def test_upload_object_spellings(sandbox, spelling, keys):
    """``upload_spelling`` gives the snake, camel (seed 004) or both shapes, and each works."""
    sandbox.faults.update(upload_spelling=spelling)
    asset = reserve(sandbox)
    assert set(asset["upload"]) == keys
    assert upload(asset, b"bytes").status_code == 200
    assert complete(sandbox, asset["asset_id"]).json()["status"] == "ready"


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("fileName", "other.png", 400),
        ("folder", "/elsewhere", 400),
        ("expire", "9999999999", 403),
        ("signature", "0" * 40, 403),
        ("publicKey", "public_other", 403),
        ("token", str(uuid.uuid4()), 403),
    ],
)
def test_tampered_form_fields_are_refused(sandbox, field, value, status):
    """Every issued form field must come back unchanged: signed ones 403, others 400."""
    asset = reserve(sandbox)
    fields = {**form_fields(asset["upload"]), field: value}
    response = upload(asset, b"bytes", fields=fields)
    assert response.status_code == status
    assert set(response.json()) == {"message", "help"}
    assert sandbox.blob_path(asset["asset_id"]) is None


@pytest.mark.parametrize("missing", ["fileName", "useUniqueFileName", "signature"])
def test_missing_form_fields_are_refused(sandbox, missing):
    """Leaving out an issued field is refused (400, or 403 for the signature)."""
    asset = reserve(sandbox)
    fields = {k: v for k, v in form_fields(asset["upload"]).items() if k != missing}
    response = upload(asset, b"bytes", fields=fields)
    assert response.status_code == (403 if missing == "signature" else 400)
    assert missing in response.json()["message"]


def test_missing_file_is_refused(sandbox):
    """A multipart body without the ``file`` part gets 400 and stores nothing."""
    asset = reserve(sandbox)
    response = requests.post(
        asset["upload"]["url"],
        files={k: (None, v) for k, v in form_fields(asset["upload"]).items()},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400
    assert response.json()["message"] == "Missing file parameter for upload"


def test_expired_reservation_is_refused_then_fails_at_complete(sandbox):
    """An expired upload gets ImageKit's expire message; complete then says "Upload expired"."""
    sandbox.faults.expire_next_upload()
    asset = reserve(sandbox)
    response = upload(asset, b"late bytes")
    assert response.status_code == 400
    assert response.json()["message"] == EXPIRE_MESSAGE
    done = complete(sandbox, asset["asset_id"])
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["failure_message"]) == ("failed", "Upload expired")
    fresh = call(sandbox, "POST", f"/assets/{asset['asset_id']}/retry").json()
    assert fresh["status"] == "pending_upload"
    assert upload(fresh, b"on time").status_code == 200
    assert complete(sandbox, asset["asset_id"]).json()["status"] == "ready"


def test_tokens_are_single_use(sandbox):
    """Sending the same form fields twice: the second gets the used-token message (§10.1)."""
    asset = reserve(sandbox)
    assert upload(asset, b"first").status_code == 200
    again = upload(asset, b"second")
    assert again.status_code == 400
    assert again.json()["message"] == _used_message(_token(asset))
    assert sandbox.blob_path(asset["asset_id"]).read_bytes() == b"first"
    assert len(violations(sandbox, "upload_token_reused")) == 1


def test_a_failed_attempt_spends_the_token(sandbox):
    """A token is spent at its first use even when that attempt is refused (CONTRACT §10.1)."""
    asset = reserve(sandbox)
    tampered = {**form_fields(asset["upload"]), "fileName": "x.png"}
    assert upload(asset, b"bytes", fields=tampered).status_code == 400
    again = upload(asset, b"bytes")
    assert again.json()["message"] == _used_message(_token(asset))


def test_retry_gives_a_fresh_reservation_and_kills_the_old_token(sandbox):
    """retry keeps the asset_id, issues new fields and expires_at; old fields are dead."""
    asset = reserve(sandbox)
    fresh = call(sandbox, "POST", f"/assets/{asset['asset_id']}/retry")
    assert fresh.status_code == 200
    body = fresh.json()
    assert body["asset_id"] == asset["asset_id"]
    assert body["status"] == "pending_upload"
    assert _token(body) != _token(asset)
    assert "expires_at" in body
    old = upload(asset, b"old fields")
    assert old.status_code == 400
    assert old.json()["message"] == _used_message(_token(asset))
    assert upload(body, b"new fields").status_code == 200
    assert complete(sandbox, asset["asset_id"]).json()["status"] == "ready"
    states = [r["state"] for r in sandbox.state()["assets"][0]["reservations"]]
    assert states == ["dead", "used"]


def test_retry_discards_stored_bytes(sandbox):
    """Bytes uploaded for a superseded reservation are thrown away by retry."""
    asset = reserve(sandbox)
    upload(asset, b"abandoned")
    fresh = call(sandbox, "POST", f"/assets/{asset['asset_id']}/retry").json()
    assert sandbox.blob_path(asset["asset_id"]) is None
    done = complete(sandbox, asset["asset_id"]).json()
    assert done["status"] == "pending_upload"
    assert done["upload"] == fresh["upload"]


def test_complete_before_bytes_repeats_the_upload_object(sandbox):
    """complete with no bytes and a valid reservation: 200 pending_upload + same upload (Q16)."""
    asset = reserve(sandbox)
    done = complete(sandbox, asset["asset_id"])
    assert done.status_code == 200
    assert done.json()["status"] == "pending_upload"
    assert done.json()["upload"] == asset["upload"]
    assert done.json()["url"] is None
    assert upload(asset, b"now").status_code == 200
    assert complete(sandbox, asset["asset_id"]).json()["status"] == "ready"


def test_complete_pending_seconds_emulates_processing(sandbox):
    """After complete the asset stays pending_upload without upload object, then turns ready."""
    sandbox.faults.update(complete_pending_seconds=0.3)
    asset = reserve(sandbox)
    upload(asset, b"slow to process")
    done = complete(sandbox, asset["asset_id"]).json()
    assert done["status"] == "pending_upload"
    assert "upload" not in done
    assert complete(sandbox, asset["asset_id"]).json()["status"] in ("pending_upload", "ready")
    path = f"/assets/{asset['asset_id']}"
    wait_until(
        lambda: call(sandbox, "GET", path).json()["status"] == "ready",
        timeout=SHORT_TIMEOUT,
        message="processing to end",
    )


def test_complete_and_retry_on_a_ready_asset(sandbox):
    """complete on ready is a 200 no-op; retry on ready is 400 (Q5)."""
    asset = reserve(sandbox)
    upload(asset, b"done")
    complete(sandbox, asset["asset_id"])
    again = complete(sandbox, asset["asset_id"])
    assert (again.status_code, again.json()["status"]) == (200, "ready")
    retried = call(sandbox, "POST", f"/assets/{asset['asset_id']}/retry")
    assert retried.status_code == 400
    assert error_of(retried)["code"] == "input_validation_error"


def test_lifecycle_conflict_switch_answers_409(sandbox):
    """With ``lifecycle_conflict`` complete and retry on a ready asset give 409 conflict."""
    sandbox.faults.update(lifecycle_conflict=True)
    asset = reserve(sandbox)
    upload(asset, b"done")
    complete(sandbox, asset["asset_id"])
    for action in ("complete", "retry"):
        response = call(sandbox, "POST", f"/assets/{asset['asset_id']}/{action}")
        assert response.status_code == 409
        assert error_of(response)["code"] == "conflict"


def test_disallowed_type_and_oversize_fail_at_complete(sandbox):
    """A type outside §11 or a file over the limit fails at complete with a failure_message."""
    sandbox.faults.update(max_image_bytes=10)
    text = reserve(sandbox, "notes.txt", "text/plain")
    big = reserve(sandbox, "big.png")
    upload(text, b"hello", content_type="text/plain")
    upload(big, b"x" * 11)
    text_done = complete(sandbox, text["asset_id"]).json()
    big_done = complete(sandbox, big["asset_id"]).json()
    assert (text_done["status"], text_done["failure_message"]) == (
        "failed",
        "Unsupported content type: text/plain",
    )
    assert big_done["status"] == "failed"
    assert "too large" in big_done["failure_message"]
    detail = call(sandbox, "GET", f"/assets/{big['asset_id']}").json()
    assert detail["failure_message"] == big_done["failure_message"]


def test_reject_at_reservation_switch(sandbox):
    """With ``reject_at_reservation`` a disallowed type is refused by POST /assets."""
    sandbox.faults.update(reject_at_reservation=True)
    body = {"source": "signed-url", "workspace_id": sandbox.workspace_id, "content_type": "x/y"}
    response = call(sandbox, "POST", "/assets", body=body)
    assert response.status_code == 400
    assert error_of(response)["fields"][0]["field"] == "content_type"


def test_flora_headers_at_the_upload_target_are_violations(sandbox):
    """An Authorization or Idempotency-Key header at the upload target is recorded."""
    clean = reserve(sandbox)
    upload(clean, b"clean")
    assert violations(sandbox, "flora_header_to_upload") == []
    leaky = reserve(sandbox)
    headers = {"Authorization": f"Bearer {sandbox.api_key}", "Idempotency-Key": "k"}
    assert upload(leaky, b"leaky", headers=headers).status_code == 200
    found = violations(sandbox, "flora_header_to_upload")
    assert len(found) == 1
    assert "Authorization" in found[0]["detail"]
    logged = [r for r in sandbox.state()["requests"] if r["route"] == "POST /upload"]
    assert [r["authorization"] for r in logged] == [False, True]


def test_upload_error_rate_answers_5xx_and_stores_nothing(sandbox):
    """upload_error_rate: a 5xx in ImageKit's shape, no bytes stored."""
    sandbox.faults.update(upload_error_rate=1.0)
    asset = reserve(sandbox)
    response = upload(asset, b"bytes")
    assert response.status_code in (500, 502, 503)
    assert set(response.json()) == {"message", "help"}
    assert sandbox.blob_path(asset["asset_id"]) is None


def test_upload_drop_rate_closes_before_storing(sandbox):
    """upload_drop_rate: the connection closes unanswered and nothing is stored."""
    sandbox.faults.update(upload_drop_rate=1.0)
    asset = reserve(sandbox)
    with pytest.raises(requests.ConnectionError):
        upload(asset, os.urandom(MIB))
    assert sandbox.blob_path(asset["asset_id"]) is None
    assert complete(sandbox, asset["asset_id"]).json()["status"] == "pending_upload"


def test_lost_upload_response_still_stores_the_bytes(sandbox):
    """upload_lose_response_rate: bytes land, the answer is lost; complete finds them."""
    sandbox.faults.update(upload_lose_response_rate=1.0)
    asset = reserve(sandbox)
    data = os.urandom(MIB)
    with pytest.raises(requests.ConnectionError):
        upload(asset, data)
    assert sandbox.blob_path(asset["asset_id"]).read_bytes() == data
    assert complete(sandbox, asset["asset_id"]).json()["status"] == "ready"
    logged = [r for r in sandbox.state()["requests"] if r["route"] == "POST /upload"]
    assert [(r["status"], r["dropped"]) for r in logged] == [(None, True)]


def test_fail_next_on_the_upload_target(sandbox):
    """fail_next("POST /upload", status=429, retry_after=2) answers 429 with Retry-After."""
    sandbox.faults.fail_next("POST /upload", status=429, retry_after=2)
    asset = reserve(sandbox)
    limited = upload(asset, b"bytes")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert upload(asset, b"bytes").status_code == 200


def test_concurrent_uploads_are_each_stored(sandbox):
    """Eight clients uploading at once each get their own bytes stored and a ready asset."""
    payloads = [os.urandom(256 * 1024 + n) for n in range(8)]

    def one(data: bytes) -> str:
        asset = reserve(sandbox, f"f{len(data)}.png")
        assert upload(asset, data).status_code == 200
        assert complete(sandbox, asset["asset_id"]).json()["status"] == "ready"
        return str(asset["asset_id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(one, payloads))
    assert len(set(ids)) == 8
    for asset_id, data in zip(ids, payloads, strict=True):
        assert sandbox.blob_path(asset_id).read_bytes() == data


def test_stop_ends_an_upload_cut_off_mid_body():
    """stop() returns while a client is stuck halfway through sending an upload body."""
    sb = Sandbox().start()
    asset = reserve(sb)
    head = (
        f"POST /upload/api/v1/files/upload HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {10 * MIB}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sb.port), timeout=TIMEOUT) as raw:
        raw.sendall(head.encode() + b"--b\r\n")
        wait_until(lambda: len(sb.state()["requests"]) == 2, timeout=SHORT_TIMEOUT)
        sb.stop()
    assert sb.blob_path(asset["asset_id"]) is None


def _multipart_stream(
    fields: dict[str, str], boundary: str, chunks: Iterator[bytes]
) -> Iterator[bytes]:
    """A multipart body produced piece by piece, so the test never holds the file."""
    for name, value in fields.items():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    yield from chunks
    yield f"\r\n--{boundary}--\r\n".encode()


def test_large_upload_streams_without_growing_memory(sandbox):
    """A 200 MiB chunked upload grows this process's RSS (sandbox included) by < 64 MB."""
    process = psutil.Process()
    upload(reserve(sandbox), b"warm-up")  # first-use allocations are not the upload's
    asset = reserve(sandbox, "big.mp4", "video/mp4")
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    peak = baseline = process.memory_info().rss

    def chunks() -> Iterator[bytes]:
        nonlocal peak
        for n in range(200):
            chunk = n.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            yield chunk
            peak = max(peak, process.memory_info().rss)

    boundary = uuid.uuid4().hex
    response = requests.post(
        asset["upload"]["url"],
        data=_multipart_stream(form_fields(asset["upload"]), boundary, chunks()),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.json()["size"] == 200 * MIB
    assert sandbox.state()["assets"][1]["sha256"] == digest.hexdigest()
    assert peak - baseline < 64 * 1_000_000
    assert complete(sandbox, asset["asset_id"]).json()["status"] == "ready"
