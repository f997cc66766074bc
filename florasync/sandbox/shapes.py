"""The JSON shapes of workspaces, projects, nodes and assets (CONTRACT §8, §9).

Owns how a record looks on the wire: integer epoch-millisecond timestamps where the spec has
numbers, ISO-8601 where it has date-times (§14 Q9), and the three spellings of the ``upload``
object (§8, §14 Q1). Pure functions over store records.
"""

from __future__ import annotations

import mimetypes
from datetime import UTC, datetime
from typing import Any

from florasync.sandbox.context import Context
from florasync.sandbox.store import Asset, Node, Project, Reservation, Workspace

FILE_FIELD = "file"
MULTIPART = "multipart/form-data"
OCTET_STREAM = "application/octet-stream"


def ms(seconds: float) -> int:
    """Epoch milliseconds, the unit the sandbox uses for numeric timestamps (CONTRACT §14 Q9)."""
    return int(seconds * 1000)


def iso(seconds: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as JavaScript's ``toISOString`` writes it."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def workspace_json(ws: Workspace) -> dict[str, Any]:
    return {
        "workspace_id": ws.workspace_id,
        "name": ws.name,
        "created_at": ms(ws.created_at),
        "role": "admin",  # CONTRACT §14 Q15
    }


def project_json(project: Project) -> dict[str, Any]:
    return {
        "project_id": project.project_id,
        "name": project.name,
        "workspace_id": project.workspace_id,
        "origin": project.origin,
        "created_at": ms(project.created_at),
        "last_modified": ms(project.last_modified),
    }


def node_json(ctx: Context, node: Node) -> dict[str, Any]:
    asset = ctx.store.assets.get(node.asset_id)
    return {
        "node_id": node.node_id,
        "type": node.type,
        "asset_id": node.asset_id,
        "label": node.label,
        "url": ctx.file_url(asset) if asset is not None else None,
        "width": None,
        "height": None,
    }


def asset_list_item(ctx: Context, asset: Asset, node: Node | None) -> dict[str, Any]:
    """An item of ``GET /assets`` (CONTRACT §9.8): ``created_at`` in epoch ms."""
    return {
        **_asset_common(ctx, asset),
        "created_at": ms(asset.created_at),
        "node_id": node.node_id if node else None,
        "project_id": node.project_id if node else None,
    }


def asset_detail(ctx: Context, asset: Asset) -> dict[str, Any]:
    """``GET /assets/{id}`` (CONTRACT §9.9): ``created_at`` as ISO-8601, ``failure_message``."""
    return {
        **_asset_common(ctx, asset),
        "created_at": iso(asset.created_at),
        "failure_message": asset.failure_message,
    }


def asset_action(
    ctx: Context, asset: Asset, *, with_upload: bool, url_always: bool = False
) -> dict[str, Any]:
    """The answer of create, complete and retry (CONTRACT §9.7, §9.10, §9.11)."""
    ready = asset.status == "ready"
    body: dict[str, Any] = {
        "asset_id": asset.asset_id,
        "status": asset.status,
        "uploaded_via": "signed_url",
        "url": ctx.file_url(asset) if ready or url_always else None,
        "visibility": "workspace",
        "workspace_id": asset.workspace_id,
        "failure_message": asset.failure_message,
    }
    reservation = asset.reservation
    if with_upload and reservation is not None:
        body["expires_at"] = iso(reservation.expire)
        body["upload"] = upload_object(ctx, reservation)
        body["upload_url"] = ctx.upload_url
    return body


def upload_object(ctx: Context, reservation: Reservation) -> dict[str, Any]:
    """The signed-upload instructions in the configured spelling (CONTRACT §8)."""
    fields = dict(reservation.fields)
    snake = {
        "url": ctx.upload_url,
        "method": "POST",
        "content_type": MULTIPART,
        "file_field": FILE_FIELD,
        "form_fields": fields,
    }
    camel = {"url": ctx.upload_url, "formFields": fields, "fileField": FILE_FIELD}  # seed 004
    spelling = ctx.faults.upload_spelling
    if spelling == "camel":
        return camel
    if spelling == "both":
        return {**snake, **camel, "contentType": MULTIPART}
    return snake


def content_type(asset: Asset) -> str:
    """The asset's type: as declared, else as uploaded, else guessed from its name."""
    if asset.declared_type:
        return asset.declared_type
    if asset.part_type and asset.part_type != OCTET_STREAM:
        return asset.part_type
    guessed, _ = mimetypes.guess_type(asset.file_name)
    return guessed or OCTET_STREAM


def node_type(asset: Asset) -> str:
    """The canvas node type for an asset (CONTRACT §9.5: image, video, audio or text)."""
    major = content_type(asset).partition("/")[0]
    return major if major in ("video", "audio") else "image"


def _asset_common(ctx: Context, asset: Asset) -> dict[str, Any]:
    return {
        "asset_id": asset.asset_id,
        "name": asset.name,
        "description": None,
        "workspace_id": asset.workspace_id,
        "url": ctx.file_url(asset) if asset.status == "ready" else None,
        "content_type": content_type(asset),
        "upload_content_type": asset.part_type or asset.declared_type,
        "uploaded_via": "signed_url",
        "status": asset.status,
        "width": None,
        "height": None,
        "size_bytes": asset.size_bytes if asset.has_bytes else None,
    }
