"""The control surface for tests and users: faults, state, and drift made as FLORA's UI would.

Owns the shape of ``state()`` (docs/design.md), how a JSON document changes the faults
(``POST /_sandbox/faults``: ``{"reset": true}`` first, then ``{"fail_next": {...} or [...]}``,
then any fault fields), the record of upload-body arrivals (``/_sandbox/arrivals``: POST
``{"record": true|false}``, GET the pieces), and the drift endpoints (``CONTROLS``): remove a
node or an asset, fail an asset, add an asset made elsewhere, each answering 404 for an unknown
id.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from florasync.sandbox import assets, drift, shapes
from florasync.sandbox.context import Context
from florasync.sandbox.faults import Faults
from florasync.sandbox.replies import Reply, error_reply
from florasync.sandbox.store import Asset, Node
from florasync.sandbox.traffic import Traffic

FAULTS_PATH = "/_sandbox/faults"
STATE_PATH = "/_sandbox/state"
ARRIVALS_PATH = "/_sandbox/arrivals"
MAX_BODY_BYTES = 64 << 20
"""The largest control body (``add_asset`` carries the asset's bytes)."""

CONTROLS: dict[str, str] = {
    "remove_node": 'POST /_sandbox/remove_node {"project_id", "node_id"}: a node deleted',
    "remove_asset": 'POST /_sandbox/remove_asset {"asset_id"}: an asset and its nodes deleted',
    "fail_asset": 'POST /_sandbox/fail_asset {"asset_id", "message"?}: processing failed',
    "add_asset": "POST /_sandbox/add_asset?name=N[&project_id=P][&content_type=T], body = bytes",
}
"""The drift controls (what FLORA's UI and other tools do), as ``describe()`` lists them."""


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
    if path == ARRIVALS_PATH:
        return _arrivals(traffic, method, body)
    name = path.removeprefix("/_sandbox/")
    if method == "POST" and name in _DRIFT:
        return _drift(_DRIFT[name], ctx, query, body)
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


def _arrivals(traffic: Traffic, method: str, body: bytes) -> Reply:
    """GET: ``{"recording", "arrivals": [[t, seq, n], ...]}``; POST ``{"record": bool}``."""
    arrivals = traffic.arrivals
    if method == "POST":
        doc = json.loads(body or b"{}")
        if not isinstance(doc, dict) or not isinstance(doc.get("record"), bool):
            return error_reply(400, "input_validation_error", 'expected {"record": true|false}')
        arrivals.record(doc["record"])
    elif method != "GET":
        return error_reply(404)
    pieces = [list(a) for a in arrivals.snapshot()] if method == "GET" else []
    return Reply(200, {"recording": arrivals.recording, "arrivals": pieces})


def _drift(
    endpoint: Callable[[Context, Mapping[str, str], bytes], Reply],
    ctx: Context,
    query: Mapping[str, str],
    body: bytes,
) -> Reply:
    """Run a drift control; an unknown id answers 404, a bad document 400."""
    try:
        return endpoint(ctx, query, body)
    except LookupError as exc:
        return error_reply(404, message=str(exc.args[0]) if exc.args else None)
    except (ValueError, TypeError) as exc:
        return error_reply(400, "input_validation_error", str(exc))


def _remove_node(ctx: Context, query: Mapping[str, str], body: bytes) -> Reply:
    doc = _strings(body, "project_id", "node_id")
    drift.remove_node(ctx, doc["project_id"], doc["node_id"])
    return Reply(200, {"removed": doc["node_id"]})


def _remove_asset(ctx: Context, query: Mapping[str, str], body: bytes) -> Reply:
    asset_id = _strings(body, "asset_id")["asset_id"]
    drift.remove_asset(ctx, asset_id)
    return Reply(200, {"removed": asset_id})


def _fail_asset(ctx: Context, query: Mapping[str, str], body: bytes) -> Reply:
    doc = _strings(body, "asset_id", optional=("message",))
    drift.fail_asset(ctx, doc["asset_id"], doc.get("message") or drift.FAILED_MESSAGE)
    with ctx.store.lock:
        return Reply(200, _asset_state(ctx.store.assets[doc["asset_id"]]))


def _add_asset(ctx: Context, query: Mapping[str, str], body: bytes) -> Reply:
    name = query.get("name")
    if not name:
        raise ValueError("name: the query parameter is required")
    asset, node = drift.add_asset(
        ctx,
        name,
        body,
        project_id=query.get("project_id"),
        content_type=query.get("content_type"),
    )
    with ctx.store.lock:
        doc = _asset_state(asset)
    node_id = node.node_id if node is not None else None
    return Reply(201, {**doc, "url": ctx.file_url(asset), "node_id": node_id})


_DRIFT: dict[str, Callable[[Context, Mapping[str, str], bytes], Reply]] = {
    "remove_node": _remove_node,
    "remove_asset": _remove_asset,
    "fail_asset": _fail_asset,
    "add_asset": _add_asset,
}


def _strings(body: bytes, *required: str, optional: tuple[str, ...] = ()) -> dict[str, str]:
    """The string fields of a JSON control document.

    Raises:
        ValueError: it is not JSON, or a field is unknown.
        TypeError: it is not an object, or a required field is missing or not a string.
    """
    doc = json.loads(body or b"{}")
    if not isinstance(doc, dict):
        raise TypeError("expected a JSON object")
    unknown = sorted(set(doc) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    for name in required:
        if not isinstance(doc.get(name), str):
            raise TypeError(f"{name}: required, a string")
    for name in optional:
        if name in doc and not isinstance(doc[name], str):
            raise TypeError(f"{name}: must be a string")
    return doc


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
