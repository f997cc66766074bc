"""The workspace and project endpoints: projects, their canvas nodes, attach (CONTRACT §9.1-§9.6).

Owns project listing order ("recent activity"), the forbidden-project and forbidden-create
faults, and what attaching an asset twice does (``attach_mode``, CONTRACT §14 Q7).
"""

from __future__ import annotations

from florasync.sandbox import assets, params, shapes
from florasync.sandbox.context import Context, Request
from florasync.sandbox.replies import ApiFailure, Reply, invalid
from florasync.sandbox.store import Asset, Node, Project, new_id

CREATE_FIELDS = ("workspace_id", "name")
CREATE_FORBIDDEN = "This API key may not create projects."


def list_workspaces(ctx: Context, req: Request) -> Reply:
    """``GET /workspaces``: the key's one workspace (CONTRACT §9.1)."""
    return Reply(200, {"workspaces": [shapes.workspace_json(ctx.store.workspace)]})


def list_projects(ctx: Context, req: Request) -> Reply:
    """``GET /projects``: most recently active first, ``query`` matches names (CONTRACT §9.2)."""
    workspace_id = req.query.get("workspace_id")
    if workspace_id is None:
        raise invalid("workspace_id", "Required")  # seed 000: required when listing
    params.own_workspace(ctx, workspace_id)
    needle = (req.query.get("query") or "").lower()
    with ctx.store.lock:
        ordered = sorted(ctx.store.projects.values(), key=lambda p: (-p.last_modified, p.seq))
        matches = [p for p in ordered if needle in p.name.lower()]
        chunk, meta = params.page(matches, req)
        return Reply(200, {"projects": [shapes.project_json(p) for p in chunk], "meta": meta})


def create_project(ctx: Context, req: Request) -> Reply:
    """``POST /projects``: 201 with the new project (CONTRACT §9.3).

    Raises:
        ApiFailure: 403 ``forbid_project_create`` fault, 400 a bad body or name.
    """
    if ctx.faults.forbid_project_create:
        # a key with a read-only role may not create projects (CONTRACT §9.3, seed 000)
        raise ApiFailure(403, "forbidden", CREATE_FORBIDDEN)
    body = params.json_object(req)
    params.reject_unknown(body, CREATE_FIELDS)
    params.own_workspace(ctx, params.required_string(body, "workspace_id"))
    name = params.required_string(body, "name")
    if not name.strip():
        raise invalid("name", "must not be empty")
    with ctx.store.mutate():
        return Reply(201, shapes.project_json(ctx.store.add_project(name)))


def get_project(ctx: Context, req: Request, project_id: str) -> Reply:
    """``GET /projects/{id}``; 404 for unknown and inaccessible alike (seed 001)."""
    with ctx.store.lock:
        return Reply(200, shapes.project_json(_project(ctx, project_id)))


def list_nodes(ctx: Context, req: Request, project_id: str) -> Reply:
    """``GET /projects/{id}/nodes``: the canvas's media nodes in creation order (§9.5)."""
    with ctx.store.lock:
        project = _project(ctx, project_id)
        chunk, meta = params.page(ctx.store.nodes.get(project.project_id, []), req)
        return Reply(
            200,
            {
                "project_id": project.project_id,
                "canvas_url": ctx.canvas_url(project.project_id),
                "nodes": [shapes.node_json(ctx, n) for n in chunk],
                "meta": meta,
            },
        )


def attach_asset(ctx: Context, req: Request, project_id: str, asset_id: str) -> Reply:
    """``POST /projects/{pid}/assets/{aid}/attach``: 201 with the node (CONTRACT §9.6)."""
    with ctx.store.mutate():
        project = _project(ctx, project_id)
        asset = assets.find_asset(ctx, asset_id)
        if asset.status != "ready":
            raise invalid("assetId", "asset is not ready")  # CONTRACT §14 Q6
        node = _existing_node(ctx, project, asset.asset_id) or add_node(ctx, project, asset)
        project.last_modified = ctx.clock()
        body = {
            "project_id": project.project_id,
            "asset_id": asset.asset_id,
            "node_id": node.node_id,
            "canvas_url": ctx.canvas_url(project.project_id),
        }
        return Reply(201, body)


def add_node(ctx: Context, project: Project, asset: Asset) -> Node:
    """A new media node showing ``asset`` on ``project``'s canvas; call with the lock held."""
    node = Node(
        new_id("node_"), project.project_id, asset.asset_id, shapes.node_type(asset), asset.name
    )
    ctx.store.nodes.setdefault(project.project_id, []).append(node)
    return node


def _project(ctx: Context, project_id: str) -> Project:
    """The project; call with the store lock held.

    Raises:
        ApiFailure: 400 malformed id, 403 ``forbidden_projects`` fault, 404 unknown or foreign.
    """
    params.prefixed(project_id, "projectId", "prj_")
    if project_id in ctx.faults.forbidden_projects:
        raise ApiFailure(403)
    project = ctx.store.projects.get(project_id)
    if project is None or project.workspace_id != ctx.store.workspace.workspace_id:
        raise ApiFailure(404)
    return project


def _existing_node(ctx: Context, project: Project, asset_id: str) -> Node | None:
    if ctx.faults.attach_mode != "existing":
        return None  # duplicate_node: a second attach makes a second node, visibly
    nodes = ctx.store.nodes.get(project.project_id, [])
    return next((n for n in nodes if n.asset_id == asset_id), None)
