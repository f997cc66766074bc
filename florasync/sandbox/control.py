"""The control surface for tests and users: ``POST /_sandbox/faults``, ``GET /_sandbox/state``.

Owns the shape of ``state()`` (docs/design.md) and how a JSON document changes the faults:
``{"reset": true}`` first, then ``{"fail_next": {...} or [...]}``, then any fault fields.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from florasync.sandbox import assets, shapes
from florasync.sandbox.context import Context
from florasync.sandbox.faults import Faults
from florasync.sandbox.replies import Reply, error_reply
from florasync.sandbox.store import Asset, Node
from florasync.sandbox.traffic import Traffic

FAULTS_PATH = "/_sandbox/faults"
STATE_PATH = "/_sandbox/state"


def handle(
    ctx: Context,
    traffic: Traffic,
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    body: bytes,
) -> Reply:
    """Answer a control request (the caller has checked it comes from loopback)."""
    if path == STATE_PATH and method == "GET":
        return Reply(200, state(ctx, traffic, requests=query.get("requests") != "0"))
    if path == FAULTS_PATH and method == "POST":
        try:
            apply_faults(ctx.faults, json.loads(body or b"{}"))
        except (ValueError, TypeError) as exc:
            return error_reply(400, "input_validation_error", str(exc))
        return Reply(200, ctx.faults.to_dict())
    return error_reply(404)


def apply_faults(faults: Faults, doc: Any) -> None:
    """Apply a control document to ``faults``.

    Raises:
        ValueError, TypeError: the document, a scripted fault or a field is invalid (fault
            fields are validated before anything changes).
    """
    if not isinstance(doc, dict):
        raise TypeError("expected a JSON object")
    fields = dict(doc)
    reset = fields.pop("reset", False)
    scripted = fields.pop("fail_next", [])
    Faults().update(**fields)  # validate the fields on a scratch copy before changing anything
    if reset is True:
        faults.reset()
    for item in scripted if isinstance(scripted, list) else [scripted]:
        if not isinstance(item, dict) or not isinstance(item.get("route"), str):
            raise TypeError("fail_next: expected an object with a route")
        options = dict(item)
        faults.fail_next(options.pop("route"), **options)
    if fields:
        faults.update(**fields)


def state(ctx: Context, traffic: Traffic, *, requests: bool = True) -> dict[str, Any]:
    """Everything the sandbox knows, as plain JSON values (docs/design.md, "state()")."""
    store = ctx.store
    with store.lock:
        ordered = sorted(store.assets.values(), key=lambda a: a.seq)
        for asset in ordered:
            assets.refresh(ctx, asset)
        doc: dict[str, Any] = {
            "workspace": shapes.workspace_json(store.workspace),
            "projects": [
                shapes.project_json(p) for p in sorted(store.projects.values(), key=lambda p: p.seq)
            ],
            "assets": [_asset_state(a) for a in ordered],
            "nodes": {
                pid: [_node_state(ctx, n) for n in nodes] for pid, nodes in store.nodes.items()
            },
        }
    if requests:
        doc["requests"] = traffic.requests()
    doc["violations"] = traffic.violations()
    doc["faults"] = ctx.faults.to_dict()
    return doc


def _asset_state(asset: Asset) -> dict[str, Any]:
    return {
        "asset_id": asset.asset_id,
        "name": asset.name,
        "status": asset.status,
        "content_type": shapes.content_type(asset),
        "size_bytes": asset.size_bytes,
        "sha256": asset.sha256,
        "created_at": shapes.ms(asset.created_at),
        "failure_message": asset.failure_message,
        "reservations": [
            {"token": r.token, "expire": r.expire, "state": r.state} for r in asset.reservations
        ],
        "uploads": [dataclasses.asdict(u) for u in asset.uploads],
    }


def _node_state(ctx: Context, node: Node) -> dict[str, Any]:
    full = shapes.node_json(ctx, node)
    return {k: full[k] for k in ("node_id", "asset_id", "type", "label", "url")}
