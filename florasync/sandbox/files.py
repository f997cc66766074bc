"""The file server behind ready assets' ``url``: what a CDN answers at ``/files/<id>/<name>``.

Owns which bytes a file URL serves (a ready asset's stored blob, else 404), the faults of its
route (``fail_next("GET /files", ...)``: an error status, a dropped connection, a body cut
halfway) and its entries in the request log, with a violation when a FLORA header reaches it:
the API key must never go to the CDN (CONTRACT §0). Writing the bytes is the handler's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from florasync.sandbox import assets, shapes
from florasync.sandbox.context import FILES_PREFIX, Context
from florasync.sandbox.faults import FILES_ROUTE, ScriptedFault
from florasync.sandbox.replies import ApiFailure, Drop, Outcome, error_reply
from florasync.sandbox.traffic import Traffic

FILES_IDENTITY = "file-server"
"""Whose Retry-After windows file requests are checked against (no API key reaches here)."""


@dataclass(frozen=True, slots=True)
class FileRequest:
    """A request for an asset's bytes; ``flora_headers`` must stay empty."""

    method: str
    path: str
    arrived: float
    flora_headers: tuple[str, ...] = ()
    connection: int | None = None


@dataclass(frozen=True, slots=True)
class Blob:
    """Stored bytes to send; ``cut_at``: send only that many, then close (a cut download)."""

    path: Path
    content_type: str
    size_bytes: int
    cut_at: int | None = None


class FileServer:
    """Answers ``GET``/``HEAD`` on asset URLs: a ``Blob`` to stream, or an error outcome."""

    def __init__(self, ctx: Context, traffic: Traffic) -> None:
        self._ctx = ctx
        self._traffic = traffic

    def handle(self, req: FileRequest) -> Blob | Outcome:
        """Log the request, apply the file route's faults, then find the asset's bytes."""
        seq = self._traffic.begin(
            method=req.method,
            route=FILES_ROUTE,
            path=req.path,
            arrived=req.arrived,
            idempotency_key=None,
            authorization="Authorization" in req.flora_headers,
            identity=FILES_IDENTITY,
            latency_seconds=self._ctx.faults.latency_seconds,
            connection=req.connection,
        )
        if req.flora_headers:
            detail = f"{', '.join(req.flora_headers)} sent to the file server of {req.path}"
            self._traffic.violation("flora_header_to_files", detail, seq)
        answer = self._answer(req.path)
        self._finish(seq, answer)
        return answer

    def _answer(self, path: str) -> Blob | Outcome:
        found = self._ready_blob(unquote(path[len(FILES_PREFIX) :].partition("/")[0]))
        scripted = self._ctx.faults.take_scripted(FILES_ROUTE)
        if scripted is not None:
            return _scripted(scripted, found)
        return found if found is not None else error_reply(404)

    def _ready_blob(self, asset_id: str) -> Blob | None:
        """The stored bytes of a ready asset, or None (unknown, not ready, or no bytes)."""
        store = self._ctx.store
        with store.lock:
            asset = store.assets.get(asset_id)
            if asset is None:
                return None
            assets.refresh(self._ctx, asset)
            path = store.blob_path(asset_id)
            if asset.status != "ready" or not asset.has_bytes or not path.exists():
                return None
            return Blob(path, shapes.content_type(asset), path.stat().st_size)

    def _finish(self, seq: int, answer: Blob | Outcome) -> None:
        if isinstance(answer, Blob):
            self._traffic.finish(seq, 200, dropped=answer.cut_at is not None, replayed=False)
            return
        if isinstance(answer, Drop):
            self._traffic.finish(seq, None, dropped=True, replayed=False)
            return
        retry_after = answer.headers.get("Retry-After")
        if answer.status == 429 and retry_after is not None:
            self._traffic.announce_window(FILES_IDENTITY, float(retry_after), seq)
        self._traffic.finish(seq, answer.status, replayed=False)


def _scripted(fault: ScriptedFault, found: Blob | None) -> Blob | Outcome:
    """A scripted fault on the file route: drop before, cut halfway (``after``), or a status."""
    if fault.drop == "before" or (fault.drop == "after" and found is None):
        return Drop()
    if fault.drop == "after" and found is not None:
        return dataclasses.replace(found, cut_at=found.size_bytes // 2)
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    return ApiFailure(fault.status or 500, fault.code, headers=headers).reply()
