"""The asset endpoints and the asset lifecycle (CONTRACT §7.2, §9.7-§9.11, §11).

Owns reservation, complete and retry as a state machine over store records, the allowed
content types and size limits, and the lazy end of "processing" (``complete_pending_seconds``
is evaluated when the asset is next read, never by a timer).
"""

from __future__ import annotations

import uuid
from typing import Any

from florasync.sandbox import params, shapes, upload
from florasync.sandbox.context import Context, Request
from florasync.sandbox.replies import ApiFailure, Reply, invalid
from florasync.sandbox.store import Asset, Node, Reservation, new_id

ALLOWED_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/avif",
        "image/heic",
        "image/heif",
        "video/mp4",
        "video/webm",
        "video/quicktime",
        "audio/mpeg",
        "audio/wav",
        "audio/ogg",
        "application/pdf",
    }
)
"""CONTRACT §11 (from the SDK's create description)."""

CREATE_FIELDS = ("source", "workspace_id", "file_name", "content_type", "folder")
SIGNED_URL = "signed-url"
EXPIRED_MESSAGE = "Upload expired"
NO_BYTES_MESSAGE = "Asset has no uploaded bytes yet."


def create_asset(ctx: Context, req: Request) -> Reply:
    """``POST /assets``: reserve a signed upload (CONTRACT §9.7); 201 with the instructions."""
    body = params.json_object(req)
    params.reject_unknown(body, CREATE_FIELDS)  # additionalProperties: false (CONTRACT §14 Q14)
    _require_signed_url(body)
    params.own_workspace(ctx, params.required_string(body, "workspace_id"))
    name = params.optional_string(body, "file_name")
    declared = params.optional_string(body, "content_type")
    folder = params.optional_string(body, "folder")
    if ctx.faults.reject_at_reservation and declared not in ALLOWED_TYPES:
        raise invalid("content_type", "is not an allowed content type")
    with ctx.store.mutate():
        asset_id = new_id("asset_")
        asset = Asset(
            asset_id=asset_id,
            workspace_id=ctx.store.workspace.workspace_id,
            name=name,
            file_name=upload.safe_file_name(name or asset_id),
            declared_type=declared,
            folder=folder,
            created_at=ctx.clock(),
            seq=ctx.store.next_seq(),
        )
        ctx.store.add_asset(asset)
        _issue_reservation(ctx, asset)
        return Reply(201, shapes.asset_action(ctx, asset, with_upload=True, url_always=True))


def list_assets(ctx: Context, req: Request) -> Reply:
    """``GET /assets``: newest first, filtered by workspace, project and name (CONTRACT §9.8)."""
    workspace_id = params.optional_query_id(req, "workspace_id", "ws_")
    if workspace_id is not None:
        params.own_workspace(ctx, workspace_id)
    project_id = params.optional_query_id(req, "project_id", "prj_")
    needle = (req.query.get("query") or "").lower()
    with ctx.store.lock:
        nodes = _nodes_by_asset(ctx, project_id)
        matches = [
            a
            for a in sorted(ctx.store.assets.values(), key=lambda a: a.seq, reverse=True)
            if (project_id is None or a.asset_id in nodes) and needle in (a.name or "").lower()
        ]
        chunk, meta = params.page(matches, req)
        items = []
        for asset in chunk:
            refresh(ctx, asset)
            attached = nodes.get(asset.asset_id)
            items.append(shapes.asset_list_item(ctx, asset, attached[0] if attached else None))
    return Reply(200, {"assets": items, "meta": meta})


def get_asset(ctx: Context, req: Request, asset_id: str) -> Reply:
    """``GET /assets/{id}`` (CONTRACT §9.9); 404 for unknown and inaccessible alike."""
    with ctx.store.lock:
        asset = find_asset(ctx, asset_id)
        return Reply(200, shapes.asset_detail(ctx, asset))


def complete_asset(ctx: Context, req: Request, asset_id: str) -> Reply:
    """``POST /assets/{id}/complete``, following the state machine of CONTRACT §7.2."""
    with ctx.store.mutate():
        asset = find_asset(ctx, asset_id)
        if asset.status == "ready" and ctx.faults.lifecycle_conflict:
            raise ApiFailure(409, "conflict", "asset is already complete")
        with_upload = asset.status == "pending_upload" and _complete_pending(ctx, asset)
        return Reply(200, shapes.asset_action(ctx, asset, with_upload=with_upload))


def retry_asset(ctx: Context, req: Request, asset_id: str) -> Reply:
    """``POST /assets/{id}/retry``: a fresh reservation; old tokens and stored bytes are dropped."""
    with ctx.store.mutate():
        asset = find_asset(ctx, asset_id)
        if asset.status == "ready":
            if ctx.faults.lifecycle_conflict:
                raise ApiFailure(409, "conflict", "asset is not retryable")
            raise invalid("assetId", "asset is not retryable")  # CONTRACT §14 Q5
        ctx.store.discard_bytes(asset)
        asset.status = "pending_upload"
        asset.failure_message = None
        _issue_reservation(ctx, asset)
        return Reply(200, shapes.asset_action(ctx, asset, with_upload=True))


def find_asset(ctx: Context, asset_id: str) -> Asset:
    """The asset, brought up to date; call with the store lock held.

    Raises:
        ApiFailure: 400 for a malformed id, 404 for an unknown or foreign asset.
    """
    params.prefixed(asset_id, "assetId", "asset_")
    asset = ctx.store.assets.get(asset_id)
    if asset is None or asset.workspace_id != ctx.store.workspace.workspace_id:
        raise ApiFailure(404)
    refresh(ctx, asset)
    return asset


def refresh(ctx: Context, asset: Asset) -> None:
    """End "processing" once ``processing_until`` has passed (CONTRACT §14 Q3)."""
    if asset.processing_until is not None and ctx.clock() >= asset.processing_until:
        asset.processing_until = None
        asset.status = "ready"


def _complete_pending(ctx: Context, asset: Asset) -> bool:
    """Apply complete to a pending asset; whether the answer repeats the upload object.

    Raises:
        ApiFailure: 409 ``lifecycle_error`` for no bytes under ``complete_without_bytes``.
    """
    if asset.processing_until is not None:
        return False
    if asset.has_bytes:
        _accept_bytes(ctx, asset)
        return False
    reservation = asset.reservation
    if reservation is not None and reservation.expire > ctx.clock():
        if ctx.faults.complete_without_bytes == "lifecycle_error":  # the other reading of §7.2
            raise ApiFailure(409, "lifecycle_error", NO_BYTES_MESSAGE)
        return True  # bytes not received yet, reservation valid: repeat it (CONTRACT §14 Q16)
    asset.status = "failed"
    asset.failure_message = EXPIRED_MESSAGE
    return False


def _accept_bytes(ctx: Context, asset: Asset) -> None:
    problem = _content_problem(ctx, asset)
    if problem is not None:
        asset.status = "failed"  # rejected at complete, not at the target (CONTRACT §11)
        asset.failure_message = problem
    elif ctx.faults.complete_pending_seconds > 0:
        asset.processing_until = ctx.clock() + ctx.faults.complete_pending_seconds
    else:
        asset.status = "ready"


def _content_problem(ctx: Context, asset: Asset) -> str | None:
    kind = shapes.content_type(asset)
    if kind not in ALLOWED_TYPES:
        return f"Unsupported content type: {kind}"
    limit = ctx.faults.max_video_bytes if kind.startswith("video/") else ctx.faults.max_image_bytes
    size = asset.size_bytes or 0
    if size > limit:
        return f"File too large: {size} bytes (limit {limit} bytes)"
    return None


def _issue_reservation(ctx: Context, asset: Asset) -> None:
    """New signed fields with ImageKit's names (CONTRACT §10.3); earlier tokens die."""
    now = ctx.clock()
    born_expired = ctx.faults.take_expired_issue()
    expire = int(now) - 1 if born_expired else int(now + ctx.faults.upload_ttl_seconds)
    token = str(uuid.uuid4())
    fields = {
        "publicKey": ctx.store.public_key,
        "signature": upload.sign(ctx.store.private_key, token, expire),
        "expire": str(expire),
        "token": token,
        "fileName": asset.file_name,
        "folder": asset.folder or "/",
        "useUniqueFileName": "false",
    }
    ctx.store.add_reservation(asset, Reservation(token, expire, fields))


def _require_signed_url(body: dict[str, Any]) -> None:
    """This sandbox only reserves signed uploads; URL fetch has no allowlisted host (seed 004)."""
    source = params.required_string(body, "source")
    if source == SIGNED_URL:
        return
    if source.startswith("https://"):
        raise invalid("source", "host is not allowlisted")
    raise invalid("source", 'must be "signed-url" or an allowlisted HTTPS URL')


def _nodes_by_asset(ctx: Context, project_id: str | None) -> dict[str, list[Node]]:
    """Nodes of each asset, in creation order (only ``project_id``'s when given)."""
    by_asset: dict[str, list[Node]] = {}
    for pid, nodes in ctx.store.nodes.items():
        if project_id is not None and pid != project_id:
            continue
        for node in nodes:
            by_asset.setdefault(node.asset_id, []).append(node)
    return by_asset
