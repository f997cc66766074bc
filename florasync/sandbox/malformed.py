"""Malformed answers: what a handled 2xx API answer becomes when the malformed fault fires.

Owns the five kinds of ``faults.MALFORMED_KINDS`` (docs/design.md, "Malformed answers") and
the field each route's answer loses for ``missing_field``. The dispatcher applies them after
the endpoint ran and after the idempotency store remembered the real answer, so a replay gets
the real one. No I/O.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from florasync.sandbox.replies import Garbled, Reply

MAIN_FIELD: dict[str, str] = {
    "GET /workspaces": "workspaces",
    "GET /projects": "projects",
    "POST /projects": "project_id",
    "GET /projects/{id}": "project_id",
    "GET /projects/{id}/nodes": "nodes",
    "POST /projects/{id}/assets/{id}/attach": "node_id",
    "POST /assets": "asset_id",
    "GET /assets": "assets",
    "GET /assets/{id}": "asset_id",
    "POST /assets/{id}/complete": "asset_id",
    "POST /assets/{id}/retry": "asset_id",
}
"""What ``missing_field`` removes from each route's answer: its id, or a list's items key."""

PROXY_PAGE = b"<html><body>proxy error</body></html>"
REDIRECT_PATH = "/sso/login"
"""Where ``redirect`` points: the sandbox's own origin, outside the API (answers 404)."""

JSON_TYPE = "application/json"


def garble(kind: str, route: str, path: str, real: Reply, origin: str) -> Garbled:
    """The ``kind`` of malformed answer sent instead of ``real``, the answer to ``path``.

    ``not_json``, ``array`` and ``redirect`` are what a proxy in front of the API might send;
    ``missing_field`` and ``truncated`` keep the real status and headers.

    Raises:
        ValueError: ``kind`` is not one of ``faults.MALFORMED_KINDS``.
    """
    if kind == "not_json":
        return _raw(kind, 200, {"Content-Type": "text/html; charset=utf-8"}, PROXY_PAGE, real)
    if kind == "array":
        return _raw(kind, 200, {"Content-Type": JSON_TYPE}, b"[]", real)
    if kind == "redirect":
        location = f"{origin}{REDIRECT_PATH}?return_to={quote(path, safe='')}"
        return _raw(kind, 302, {"Content-Type": "text/html", "Location": location}, b"", real)
    headers = {**real.headers, "Content-Type": JSON_TYPE}
    if kind == "missing_field":
        body = json.dumps(_without(real.body, MAIN_FIELD[route])).encode()
        return _raw(kind, real.status, headers, body, real)
    if kind != "truncated":
        raise ValueError(f"unknown malformed kind {kind!r}")
    whole = json.dumps(real.body).encode()  # announce it all, send the first half
    return Garbled(kind, real.status, headers, whole[: len(whole) // 2], len(whole), real)


def _raw(kind: str, status: int, headers: dict[str, str], body: bytes, real: Reply) -> Garbled:
    return Garbled(kind, status, headers, body, len(body), real)


def _without(body: Any, name: str) -> Any:
    if not isinstance(body, dict):
        return body
    return {k: v for k, v in body.items() if k != name}
