"""Reading request parameters: JSON bodies, ids, ``limit`` and ``cursor`` (CONTRACT §3, §6).

Owns the validation rules and their messages (``"<field>: <problem>"``) and the opaque
offset cursor. Raises ``ApiFailure``; no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from florasync.sandbox.context import Context, Request
from florasync.sandbox.replies import ApiFailure, invalid

T = TypeVar("T")

DEFAULT_LIMIT = 20  # inferred from the docs' example cursor {"offset":20} (CONTRACT §14 Q10)
MAX_LIMIT = 100


def json_object(req: Request) -> dict[str, Any]:
    """The body as a JSON object.

    Raises:
        ApiFailure: 400 invalid_json when it does not parse, 400 input_validation_error when
            it is not an object.
    """
    try:
        body = json.loads(req.body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiFailure(400, "invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: Collection[str]) -> None:
    """400 naming the first field the schema does not declare (``additionalProperties: false``)."""
    for name in body:
        if name not in allowed:
            raise invalid(name, "unknown field")


def required_string(body: Mapping[str, Any], name: str) -> str:
    if name not in body or body[name] is None:
        raise invalid(name, "Required")
    value = body[name]
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    return value


def optional_string(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(name, "must be a string")
    return value


def prefixed(value: str, name: str, prefix: str) -> str:
    """``value`` if it carries the id prefix (CONTRACT §1), else 400 naming ``name``."""
    if not value.startswith(prefix) or len(value) == len(prefix) or any(c.isspace() for c in value):
        raise invalid(name, f"must start with {prefix}")
    return value


def own_workspace(ctx: Context, workspace_id: str) -> str:
    """The key's own workspace id; 400 when malformed, 403 for any other (CONTRACT §2)."""
    prefixed(workspace_id, "workspace_id", "ws_")
    if workspace_id != ctx.store.workspace.workspace_id:
        raise ApiFailure(403)
    return workspace_id


def optional_query_id(req: Request, name: str, prefix: str) -> str | None:
    value = req.query.get(name)
    return None if value is None else prefixed(value, name, prefix)


def page(items: Sequence[T], req: Request) -> tuple[list[T], dict[str, Any]]:
    """One page of ``items`` for the request's ``limit``/``cursor``, and its ``meta``."""
    limit = _limit(req.query.get("limit"))
    offset = _offset(req.query.get("cursor"))
    chunk = list(items[offset : offset + limit])
    following = offset + limit
    next_cursor = encode_cursor(following) if following < len(items) else None
    return chunk, {"next_cursor": next_cursor, "total_estimate": len(items)}


def encode_cursor(offset: int) -> str:
    """The docs' cursor format: unpadded base64 of ``{"offset":n}`` (seeds 002, 003)."""
    raw = json.dumps({"offset": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise invalid("limit", "must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        text = cursor.replace("+", "-").replace("/", "_")
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("cursor", "is not a valid cursor") from None
    offset = doc.get("offset") if isinstance(doc, dict) else None
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise invalid("cursor", "is not a valid cursor")
    return offset
