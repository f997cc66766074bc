"""What changes FLORA behind the client's back: the UI and other tools, which the API cannot do.

Owns the four drift operations (issue 15) over store records: a node deleted from a canvas, an
asset removed with its nodes, an asset whose processing failed later, and a ready asset made by
someone else (another tool, a colleague, an earlier install), optionally on a project's canvas.
Unknown ids raise ``LookupError``, bad values ``ValueError``. Knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from florasync.sandbox import projects, upload
from florasync.sandbox.context import Context
from florasync.sandbox.store import Asset, Node, Project, new_id

FAILED_MESSAGE = "Processing failed"


def remove_node(ctx: Context, project_id: str, node_id: str) -> None:
    """A user deleted ``node_id`` from ``project_id``'s canvas; the asset stays.

    Raises:
        LookupError: no such project, or no such node in it.
    """
    with ctx.store.mutate():
        project = _project(ctx, project_id)
        nodes = ctx.store.nodes.get(project_id, [])
        kept = [n for n in nodes if n.node_id != node_id]
        if len(kept) == len(nodes):
            raise LookupError(f"no node {node_id!r} in project {project_id!r}")
        ctx.store.nodes[project_id] = kept
        project.last_modified = ctx.clock()


def remove_asset(ctx: Context, asset_id: str) -> None:
    """The asset is deleted in FLORA: its record, its upload tokens, its bytes, and every node
    showing it on any canvas.

    Raises:
        LookupError: no such asset.
    """
    store = ctx.store
    with store.mutate():
        asset = _asset(ctx, asset_id)
        del store.assets[asset_id]
        for reservation in asset.reservations:
            store.tokens.pop(reservation.token, None)
        for project_id, nodes in store.nodes.items():
            kept = [n for n in nodes if n.asset_id != asset_id]
            if len(kept) != len(nodes):
                store.nodes[project_id] = kept
                store.projects[project_id].last_modified = ctx.clock()
        store.blob_path(asset_id).unlink(missing_ok=True)


def fail_asset(ctx: Context, asset_id: str, message: str = FAILED_MESSAGE) -> None:
    """The asset's processing failed after the fact: status ``failed`` with ``message``; its
    url is no longer served and ``POST /assets/{id}/retry`` works on it as on any failed asset.

    Raises:
        LookupError: no such asset.
    """
    with ctx.store.mutate():
        asset = _asset(ctx, asset_id)
        asset.status = "failed"
        asset.failure_message = message
        asset.processing_until = None


def add_asset(
    ctx: Context,
    name: str,
    data: bytes,
    *,
    project_id: str | None = None,
    content_type: str | None = None,
) -> tuple[Asset, Node | None]:
    """A ready asset holding ``data``, made without this client: no reservation, no upload
    attempts, no Idempotency-Key; with ``project_id``, a node shows it on that canvas.

    Raises:
        ValueError: ``name`` is empty.
        LookupError: no such project.
    """
    if not name:
        raise ValueError("name: must not be empty")
    store = ctx.store
    with store.mutate():
        project = _project(ctx, project_id) if project_id is not None else None
        asset = Asset(
            asset_id=new_id("asset_"),
            workspace_id=store.workspace.workspace_id,
            name=name,
            file_name=upload.safe_file_name(name),
            declared_type=content_type,
            folder=None,
            created_at=ctx.clock(),
            seq=store.next_seq(),
            status="ready",
            has_bytes=True,
            part_type=content_type,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        _write_blob(store.blob_path(asset.asset_id), data)
        store.add_asset(asset)
        if project is None:
            return asset, None
        project.last_modified = ctx.clock()
        return asset, projects.add_node(ctx, project, asset)


def _project(ctx: Context, project_id: str) -> Project:
    project = ctx.store.projects.get(project_id)
    if project is None:
        raise LookupError(f"no project {project_id!r}")
    return project


def _asset(ctx: Context, asset_id: str) -> Asset:
    asset = ctx.store.assets.get(asset_id)
    if asset is None:
        raise LookupError(f"no asset {asset_id!r}")
    return asset


def _write_blob(path: Path, data: bytes) -> None:
    """Write the bytes beside their final place, then rename: the file server never reads half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
