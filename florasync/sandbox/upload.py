"""The ImageKit-like upload target (CONTRACT §10.3): streamed multipart, signatures, one-use tokens.

Owns the signature scheme (hex HMAC-SHA1 of ``token + expire``), the checks of the signed form
fields with ImageKit's messages, the upload faults, and the file part written to disk as it
arrives and hashed on the fly, so a 1 GiB upload never sits in memory. Every request that
reaches the token check spends the token, even when it then fails (CONTRACT §10.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

import multipart

from florasync.sandbox.context import UPLOAD_PATH, Context
from florasync.sandbox.faults import UPLOAD_ROUTE, ScriptedFault
from florasync.sandbox.ratelimit import retry_after_seconds
from florasync.sandbox.receipt import Body, Receipt, Refused
from florasync.sandbox.replies import Drop, Outcome, Reply
from florasync.sandbox.store import Asset, UploadAttempt
from florasync.sandbox.traffic import Traffic
from florasync.sandbox.wire import IncompleteBody

log = logging.getLogger(__name__)

EXPIRE_MESSAGE = (
    "Your request contains invalid expire parameter. Expire parameter should be a Unix time "
    "in less than 1 hour into the future."
)
REUSED_MESSAGE = (
    "The token with value '{token}' has been used before. We suggest using V4 UUIDs, or "
    "another random string with enough entropy to avoid collisions."
)
READ_BYTES = 1 << 20
CUT_UNKNOWN_LENGTH_BYTES = 64 << 10
"""Where ``upload_cut_rate`` cuts a chunked body (no ``Content-Length`` to halve)."""
UPLOAD_IDENTITY = "upload-target"
"""Whose Retry-After windows upload requests are checked against (no API key reaches here)."""

FLORA_HEADERS = ("Authorization", "Idempotency-Key")


@dataclass(frozen=True, slots=True)
class UploadRequest:
    """The headers of an upload request that matter; ``flora_headers`` must stay empty."""

    content_type: str
    arrived: float
    flora_headers: tuple[str, ...] = ()
    idempotency_key: str | None = None
    connection: int | None = None


def sign(private_key: str, token: str, expire: int | str) -> str:
    """ImageKit's client-side upload signature (CONTRACT §10.1)."""
    message = f"{token}{expire}".encode()
    return hmac.new(private_key.encode(), message, hashlib.sha1).hexdigest()


def safe_file_name(name: str) -> str:
    """ImageKit's rule: characters other than letters, digits, ``.`` and ``-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9.\-]", "_", name)


class UploadTarget:
    """Receives multipart uploads at ``/upload/api/v1/files/upload``."""

    def __init__(self, ctx: Context, traffic: Traffic) -> None:
        self._ctx = ctx
        self._traffic = traffic

    def handle(self, req: UploadRequest, body: Body) -> Outcome:
        """Log the request, apply the upload faults, then receive and store the file."""
        seq = self._traffic.begin(
            method="POST",
            route=UPLOAD_ROUTE,
            path=UPLOAD_PATH,
            arrived=req.arrived,
            idempotency_key=req.idempotency_key,
            authorization="Authorization" in req.flora_headers,
            identity=UPLOAD_IDENTITY,
            latency_seconds=self._ctx.faults.latency_seconds,
            connection=req.connection,
        )
        if req.flora_headers:
            detail = f"{', '.join(req.flora_headers)} sent to the upload target (seed 004)"
            self._traffic.violation("flora_header_to_upload", detail, seq)
        body = self._traffic.arrivals.watch(seq, body)
        try:
            outcome = self._outcome(req, body)
        except ConnectionError:  # the client went away mid-body (IncompleteBody) or reset
            outcome = Drop()
        self._finish(seq, outcome)
        return outcome

    def _outcome(self, req: UploadRequest, body: Body) -> Outcome:
        plan = self._fault_plan()
        if isinstance(plan, _Cut):
            return self._cut(req, body)
        if isinstance(plan, Drop):
            return plan
        if isinstance(plan, Refused):
            body.drain()  # refused before reading: consume the body so the client gets the answer
            return plan.reply
        reply = self._receive(req, body)
        return Drop(stored=True) if plan and reply.status == 200 else reply

    def _fault_plan(self) -> _Cut | Drop | Refused | bool:
        """What the faults do to this upload: cut or drop it, refuse it, or (True) lose the
        answer."""
        faults = self._ctx.faults
        scripted = faults.take_scripted(UPLOAD_ROUTE)
        if scripted is not None:
            return _scripted_plan(scripted)
        if faults.roll(faults.upload_error_rate):
            return Refused(faults.pick_server_error(), "Internal server error")
        if faults.roll(faults.upload_drop_rate):
            return Drop()
        if faults.roll(faults.upload_cut_rate):
            return _Cut()
        limited = self._rate_limited()
        if limited is not None:
            return limited
        return faults.roll(faults.upload_lose_response_rate)

    def _rate_limited(self) -> Refused | None:
        faults = self._ctx.faults
        if not faults.rate_limit_uploads:
            return None
        wait = faults.rate_limit_wait(self._ctx.store.api_key)  # the key's bucket (design.md)
        if wait <= 0:
            return None
        seconds = retry_after_seconds(wait) if faults.retry_after_header else None
        return Refused(429, _status_message(429), _retry_after(seconds))

    def _cut(self, req: UploadRequest, body: Body) -> Drop:
        """Read about half the body as usual (the token is spent once the file part starts),
        then close the connection: the client loses it mid-body and nothing is stored."""
        length = getattr(body, "length", None)
        limit = length // 2 if length else CUT_UNKNOWN_LENGTH_BYTES
        with contextlib.suppress(ConnectionError):
            self._receive(req, _CutBody(body, limit))
        return Drop()

    def _receive(self, req: UploadRequest, body: Body) -> Reply:
        receipt = Receipt(self._ctx.store.blob_dir, self._check)
        try:
            receipt.parse(req.content_type, body, READ_BYTES)
            return self._commit(receipt)
        except Refused as refused:
            self._note_attempt(receipt, refused.reply.status)
            return refused.reply
        except multipart.MultipartError as exc:
            body.drain()
            return Refused(400, f"Invalid multipart/form-data body: {exc}").reply
        finally:
            receipt.discard()

    def _check(self, fields: dict[str, str]) -> str:
        """Verify the signed fields and spend the token; the asset id they were issued for.

        Raises:
            Refused: 403 when the request cannot be authenticated, 400 for an expired or used
                token or a changed or missing field (CONTRACT §10.3).
        """
        store = self._ctx.store
        if fields.get("publicKey") != store.public_key:
            raise Refused(403, "Your account cannot be authenticated.")
        token, expire, signature = (fields.get(n, "") for n in ("token", "expire", "signature"))
        if not (token and expire and signature):
            raise Refused(403, "Missing signature, expire or token parameter for upload.")
        if not hmac.compare_digest(sign(store.private_key, token, expire), signature):
            raise Refused(403, "Your request contains an invalid signature.")
        asset, was_active = self._spend(token)
        if not expire.isdigit() or int(expire) < self._ctx.clock():
            raise Refused(400, EXPIRE_MESSAGE)
        if not was_active:
            self._traffic.violation("upload_token_reused", f"token {token} of {asset.asset_id}")
            raise Refused(400, REUSED_MESSAGE.format(token=token))
        _require_issued_fields(asset, token, fields)
        return asset.asset_id

    def _spend(self, token: str) -> tuple[Asset, bool]:
        """Mark ``token`` used; its asset and whether it was still usable."""
        with self._ctx.store.mutate():
            owner = self._ctx.store.owner_of(token)
            if owner is None:
                raise Refused(400, REUSED_MESSAGE.format(token=token))
            asset, reservation = owner
            was_active = reservation.state == "active"
            if was_active:
                reservation.state = "used"
            return asset, was_active

    def _commit(self, receipt: Receipt) -> Reply:
        """Make the file the asset's bytes, unless a retry superseded the token meanwhile."""
        store = self._ctx.store
        with store.mutate():
            asset = store.assets.get(receipt.asset_id or "")  # None: removed meanwhile (drift)
            if asset is None or not _awaits_bytes(asset, receipt.token):
                raise Refused(400, REUSED_MESSAGE.format(token=receipt.token))
            size, digest = receipt.keep(store.blob_path(asset.asset_id))
            asset.has_bytes = True
            asset.size_bytes, asset.sha256, asset.part_type = size, digest, receipt.file_type
            asset.uploads.append(UploadAttempt(receipt.token, 200, size, digest, self._ctx.clock()))
            log.debug("stored %d bytes for %s", size, asset.asset_id)
            return Reply(200, self._stored_json(asset, receipt))

    def _note_attempt(self, receipt: Receipt, status: int) -> None:
        if receipt.asset_id is None:
            return
        with self._ctx.store.mutate():
            asset = self._ctx.store.assets.get(receipt.asset_id)
            if asset is None:  # removed meanwhile (drift.remove_asset)
                return
            asset.uploads.append(
                UploadAttempt(receipt.token, status, None, None, self._ctx.clock())
            )

    def _stored_json(self, asset: Asset, receipt: Receipt) -> dict[str, Any]:
        """ImageKit's success answer (CONTRACT §10.2)."""
        file_id = secrets.token_hex(12)
        folder = receipt.fields.get("folder", "/").strip("/")
        return {
            "fileId": file_id,
            "name": asset.file_name,
            "url": self._ctx.file_url(asset),
            "thumbnailUrl": self._ctx.file_url(asset),
            "filePath": f"/{folder}/{asset.file_name}" if folder else f"/{asset.file_name}",
            "size": asset.size_bytes,
            "fileType": "image" if (receipt.file_type or "").startswith("image/") else "non-image",
            "height": None,
            "width": None,
            "tags": None,
            "AITags": None,
            "isPrivateFile": False,
            "customCoordinates": None,
            "versionInfo": {"id": file_id, "name": "Version 1"},
        }

    def _finish(self, seq: int, outcome: Outcome) -> None:
        if isinstance(outcome, Drop):
            self._traffic.finish(seq, None, dropped=True, replayed=False)
            return
        retry_after = outcome.headers.get("Retry-After")
        if outcome.status == 429 and retry_after is not None:
            self._traffic.announce_window(UPLOAD_IDENTITY, float(retry_after), seq)
        self._traffic.finish(seq, outcome.status, dropped=False, replayed=False)


class _Cut:
    """The ``upload_cut_rate`` plan: read part of the body, then drop the connection."""


class _CutBody:
    """The first ``limit`` bytes of a body; then (or at its end, whichever comes first) the
    connection is gone, so a cut upload can never complete."""

    def __init__(self, body: Body, limit: int) -> None:
        self._body = body
        self._left = limit

    def read(self, size: int) -> bytes:
        data = self._body.read(min(size, self._left)) if self._left > 0 else b""
        if not data:
            raise IncompleteBody("the sandbox cut the upload mid-body (upload_cut_rate)")
        self._left -= len(data)
        return data

    def drain(self) -> None:
        raise IncompleteBody("the sandbox cut the upload mid-body (upload_cut_rate)")


def _awaits_bytes(asset: Asset, token: str) -> bool:
    """Whether ``token`` is still the asset's current reservation and no bytes are stored."""
    current = asset.reservation
    return current is not None and current.token == token and not asset.has_bytes


def _require_issued_fields(asset: Asset, token: str, fields: dict[str, str]) -> None:
    """Every issued form field must come back unchanged (CONTRACT §8: "send verbatim")."""
    issued = next(r.fields for r in asset.reservations if r.token == token)
    for name, value in issued.items():
        if name not in fields:
            raise Refused(400, f"Missing {name} parameter for upload")
        if fields[name] != value:
            raise Refused(400, f"The {name} parameter does not match the signed upload fields.")


def _scripted_plan(fault: ScriptedFault) -> Drop | Refused | bool:
    if fault.drop == "before":
        return Drop()
    if fault.status is None:
        return True  # drop="after": store, then lose the answer
    return Refused(fault.status, _status_message(fault.status), _retry_after(fault.retry_after))


def _retry_after(seconds: int | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": str(seconds)}


def _status_message(status: int) -> str:
    if status == 429:
        return "Too many requests"
    return "Internal server error" if status >= 500 else "Your request could not be processed."
