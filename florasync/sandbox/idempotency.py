"""Idempotency-Key semantics: 409 on a reused key, or the first answer replayed (CONTRACT §5).

Owns both modes of ``Faults.idempotency``. "duplicate" (reference pages and spec): a key seen
within the window gives 409 ``idempotency_duplicate`` whatever the body. "replay" (platform
page): same key and body replays the stored answer with ``idempotent-replayed: true``, another
body gives 422 ``idempotency_conflict``; a body ``idempotency_key`` counts as the key. A key is
remembered only after its request passed validation and succeeded (CONTRACT §14 Q2), so a
request that was refused or failed may be sent again with the same key; with ``replay_errors``
replay mode also remembers the endpoint's 4xx answers (not 429), as a platform that caches the
first answer whatever it was would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable

from florasync.sandbox.context import Context, Request
from florasync.sandbox.replies import ApiFailure, Reply
from florasync.sandbox.store import IdempotencyRecord

REPLAYED_HEADER = "idempotent-replayed"
BODY_KEY = "idempotency_key"


class Idempotency:
    """Runs mutating endpoints under the configured Idempotency-Key semantics."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()

    def run(self, req: Request, endpoint: Callable[[Request], Reply]) -> Reply:
        """Answer ``req`` through ``endpoint``, or with a 409/422/replay for a known key.

        Raises:
            ApiFailure: 409 ``idempotency_duplicate``, 422 ``idempotency_conflict``, or what
                ``endpoint`` raised when it is not kept as the key's answer (the key stays
                unused).
        """
        faults = self._ctx.faults
        replay = faults.idempotency == "replay"
        req, key = _with_body_key(req) if replay else (req, req.idempotency_key)
        if not key:
            return endpoint(req)
        keep_errors = replay and faults.replay_errors
        record_key = json.dumps([req.bearer, req.method, req.path, key])
        digest = _body_digest(req.body)
        earlier = self._claim(record_key, digest, replay=replay)
        if earlier is not None:
            return earlier
        try:
            reply = endpoint(req)
        except ApiFailure as failure:
            if not (keep_errors and _is_kept_error(failure.status)):
                raise
            reply = failure.reply()
        finally:
            with self._lock:
                self._in_flight.discard(record_key)
        if 200 <= reply.status < 300 or (keep_errors and _is_kept_error(reply.status)):
            self._remember(record_key, digest, reply)
        return reply

    def _claim(self, record_key: str, digest: str, *, replay: bool) -> Reply | None:
        """Mark the key in flight, or return/raise what a second use of it gets."""
        store = self._ctx.store
        with store.lock, self._lock:
            record = store.idempotency.get(record_key)
            if record is not None and self._expired(record):
                record = None
            if record is None and record_key not in self._in_flight:
                self._in_flight.add(record_key)
                return None
        if record is None or not replay:
            raise ApiFailure(409, "idempotency_duplicate")  # also while the first is in flight
        if record.body_digest != digest:
            raise ApiFailure(422, "idempotency_conflict")
        return Reply(record.status, record.body, {**record.headers, REPLAYED_HEADER: "true"})

    def _remember(self, record_key: str, digest: str, reply: Reply) -> None:
        store = self._ctx.store
        with store.mutate():
            self._forget_expired(store.idempotency)
            store.idempotency.pop(record_key, None)  # re-inserted at the end: order = age
            store.idempotency[record_key] = IdempotencyRecord(
                self._ctx.clock(), digest, reply.status, reply.body, dict(reply.headers)
            )

    def _forget_expired(self, records: dict[str, IdempotencyRecord]) -> None:
        """Drop expired keys, oldest first: the dict is in insertion (= age) order, so this
        stops at the first live one instead of scanning every key on every request."""
        while records:
            oldest = next(iter(records))
            if not self._expired(records[oldest]):
                return
            del records[oldest]

    def _expired(self, record: IdempotencyRecord) -> bool:
        return self._ctx.clock() - record.at > self._ctx.faults.idempotency_window()


def _is_kept_error(status: int) -> bool:
    """A client error ``replay_errors`` remembers: any 4xx but 429, which asks to come back."""
    return 400 <= status < 500 and status != 429


def _with_body_key(req: Request) -> tuple[Request, str | None]:
    """Replay mode also takes ``idempotency_key`` from a JSON body, removing it (CONTRACT §5)."""
    try:
        body = json.loads(req.body) if req.body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return req, req.idempotency_key
    if not isinstance(body, dict) or BODY_KEY not in body:
        return req, req.idempotency_key
    body_key = body.pop(BODY_KEY)
    stripped = dataclasses.replace(req, body=json.dumps(body).encode())
    key = req.idempotency_key or (body_key if isinstance(body_key, str) else None)
    return stripped, key


def _body_digest(body: bytes) -> str:
    """A digest of the body as normalized JSON (key order and spacing ignored), else raw."""
    try:
        normalized = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (UnicodeDecodeError, json.JSONDecodeError):
        normalized = body
    return hashlib.sha256(normalized).hexdigest()
