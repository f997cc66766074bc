"""The sandbox's API over real HTTP: auth, projects, assets, attach, pagination, idempotency.

Talks to the sandbox with plain ``requests`` (never florasync's client), as any FLORA client
would. The helpers at the top are shared with the other ``test_sandbox_*`` files.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import requests

from florasync.sandbox import Faults, Sandbox, describe, dispatch, faults
from tests.helpers import SHORT_TIMEOUT, wait_until

TIMEOUT = 10.0


# -- helpers shared by the sandbox tests ------------------------------------------------------


def call(
    sb: Sandbox,
    method: str,
    path: str,
    *,
    key: str | None = "default",
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    **params: Any,
) -> requests.Response:
    """One API request; ``key="default"`` sends the sandbox's key, None sends no header."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {sb.api_key if key == 'default' else key}"
    return requests.request(
        method, sb.base_url + path, json=body, params=params, headers=sent, timeout=TIMEOUT
    )


def reserve(
    sb: Sandbox, name: str = "render.png", content_type: str = "image/png"
) -> dict[str, Any]:
    """POST /assets for a signed upload; the 201 body."""
    body = {
        "source": "signed-url",
        "workspace_id": sb.workspace_id,
        "file_name": name,
        "content_type": content_type,
    }
    response = call(sb, "POST", "/assets", body=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def upload(
    instructions: Mapping[str, Any],
    data: bytes,
    *,
    fields: Mapping[str, str] | None = None,
    name: str = "render.png",
    content_type: str = "image/png",
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """The multipart POST to the upload target: every form field, then the file."""
    upload_obj = instructions["upload"]
    sent_fields = fields if fields is not None else form_fields(upload_obj)
    file_field = upload_obj.get("file_field") or upload_obj.get("fileField") or "file"
    return requests.post(
        upload_obj["url"],
        data=dict(sent_fields),
        files={file_field: (name, data, content_type)},
        headers=dict(headers or {}),
        timeout=TIMEOUT,
    )


def form_fields(upload_obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(upload_obj.get("form_fields") or upload_obj.get("formFields") or {})


def complete(sb: Sandbox, asset_id: str) -> requests.Response:
    return call(sb, "POST", f"/assets/{asset_id}/complete")


def ready_asset(sb: Sandbox, data: bytes = b"\x89PNG pixels", name: str = "render.png") -> str:
    """Reserve, upload and complete; the id of the now ready asset."""
    asset = reserve(sb, name)
    assert upload(asset, data, name=name).status_code == 200
    assert complete(sb, asset["asset_id"]).json()["status"] == "ready"
    return str(asset["asset_id"])


def error_of(response: requests.Response) -> dict[str, Any]:
    """The FLORA error object (CONTRACT §3) of a failed response."""
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


def field_of(response: requests.Response) -> str:
    return str(error_of(response)["fields"][0]["field"])


def all_pages(
    sb: Sandbox, path: str, items_key: str, limit: int, **params: Any
) -> list[dict[str, Any]]:
    """Follow ``meta.next_cursor`` to the end, asserting every page respects ``limit``."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        query = dict(params, limit=limit, **({"cursor": cursor} if cursor else {}))
        body = call(sb, "GET", path, **query).json()
        assert len(body[items_key]) <= limit
        items.extend(body[items_key])
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def project_body(sb: Sandbox, name: str) -> dict[str, Any]:
    return {"workspace_id": sb.workspace_id, "name": name}


def project_names(sb: Sandbox) -> list[str]:
    """The names GET /projects lists, most recently active first."""
    listed = call(sb, "GET", "/projects", workspace_id=sb.workspace_id)
    return [p["name"] for p in listed.json()["projects"]]


def requests_on(sb: Sandbox, route: str) -> list[dict[str, Any]]:
    return [r for r in sb.state()["requests"] if r["route"] == route]


def violations(sb: Sandbox, kind: str) -> list[dict[str, Any]]:
    return [v for v in sb.state()["violations"] if v["kind"] == kind]


# -- conventions, auth ----------------------------------------------------------------------


def test_every_answer_carries_a_request_id(sandbox):
    """Every response, success or error, has a ``request-id: req_…`` header (CONTRACT §1)."""
    answers = [
        call(sandbox, "GET", "/workspaces"),
        call(sandbox, "GET", "/workspaces", key=None),
        call(sandbox, "GET", "/nowhere"),
    ]
    assert all(a.headers["request-id"].startswith("req_") for a in answers)
    assert all(a.headers["Content-Type"] == "application/json" for a in answers)


def test_missing_or_malformed_authorization_is_unauthorized(sandbox):
    """No header, or not ``Bearer <token>``, gives 401 ``unauthorized``."""
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        response = call(sandbox, "GET", "/workspaces", key=None, headers=headers)
        assert response.status_code == 401
        assert error_of(response)["code"] == "unauthorized"


@pytest.mark.parametrize("token", ["sk_test_wrong", "Bearer {key}", " {key}"])
def test_a_wrong_key_is_invalid_api_key(sandbox, token):
    """Any other token, a doubled ``Bearer`` or stray whitespace, gives 401 invalid_api_key."""
    response = call(sandbox, "GET", "/workspaces", key=token.format(key=sandbox.api_key))
    assert response.status_code == 401
    assert error_of(response) == {"code": "invalid_api_key", "message": "Invalid API key."}


def test_a_revoked_key_is_invalid_api_key(sandbox):
    """With the ``revoked`` fault the right key gets 401 invalid_api_key everywhere."""
    sandbox.faults.update(revoked=True)
    response = call(sandbox, "GET", f"/projects/{sandbox.project_ids[0]}")
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_another_workspace_is_forbidden(sandbox):
    """A valid key naming a workspace other than its own gets 403 forbidden (CONTRACT §2)."""
    listing = call(sandbox, "GET", "/projects", workspace_id="ws_someoneelse")
    body = {"source": "signed-url", "workspace_id": "ws_someoneelse", "file_name": "a.png"}
    creating = call(sandbox, "POST", "/assets", body=body)
    for response in (listing, creating):
        assert response.status_code == 403
        assert error_of(response) == {"code": "forbidden", "message": "Forbidden."}


def test_unknown_ids_are_not_found(sandbox):
    """Unknown projects and assets give 404 not_found; a malformed id gives 400 naming it."""
    assert call(sandbox, "GET", "/projects/prj_nope").status_code == 404
    assert error_of(call(sandbox, "GET", "/assets/asset_nope"))["code"] == "not_found"
    malformed = call(sandbox, "GET", "/assets/nope")
    assert malformed.status_code == 400
    assert field_of(malformed) == "assetId"


def test_unknown_route_is_not_found(sandbox):
    """A path the API does not have gives 404 not_found."""
    for method, path in (("GET", "/nowhere"), ("DELETE", "/assets"), ("GET", "/assets/a/b/c")):
        response = call(sandbox, method, path)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"


def test_bad_json_is_invalid_json(sandbox):
    """A body that does not parse gives 400 invalid_json."""
    response = requests.post(
        sandbox.base_url + "/assets",
        data=b"{not json",
        headers={"Authorization": f"Bearer {sandbox.api_key}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_read_only_key_cannot_mutate(sandbox):
    """With ``read_only`` every POST is 403 forbidden while GETs still work."""
    sandbox.faults.update(read_only=True)
    assert call(sandbox, "GET", "/workspaces").status_code == 200
    body = {"workspace_id": sandbox.workspace_id, "name": "x"}
    assert call(sandbox, "POST", "/projects", body=body).status_code == 403


# -- workspaces and projects ----------------------------------------------------------------


def test_workspace_and_two_projects_exist_at_start(sandbox):
    """GET /workspaces lists the key's workspace; the two named projects are there."""
    workspaces = call(sandbox, "GET", "/workspaces").json()["workspaces"]
    assert [w["workspace_id"] for w in workspaces] == [sandbox.workspace_id]
    assert isinstance(workspaces[0]["created_at"], int)
    projects = call(sandbox, "GET", "/projects", workspace_id=sandbox.workspace_id).json()
    assert [p["name"] for p in projects["projects"]] == ["Spring Campaign", "Product Shots"]
    assert [p["project_id"] for p in projects["projects"]] == sandbox.project_ids
    assert projects["meta"]["next_cursor"] is None


def test_get_project_has_the_documented_shape(sandbox):
    """GET /projects/{id} answers the seed 001 fields, timestamps as integers."""
    pid = sandbox.project_ids[0]
    project = call(sandbox, "GET", f"/projects/{pid}").json()
    assert set(project) == {
        "project_id",
        "name",
        "workspace_id",
        "origin",
        "created_at",
        "last_modified",
    }
    assert project["project_id"] == pid
    assert project["workspace_id"] == sandbox.workspace_id
    assert isinstance(project["created_at"], int)


def test_list_projects_requires_workspace_id(sandbox):
    """GET /projects without workspace_id is 400 naming it; a bad prefix too (seed 000)."""
    cases: list[dict[str, Any]] = [{}, {"workspace_id": "team_1"}]
    for params in cases:
        response = call(sandbox, "GET", "/projects", **params)
        assert response.status_code == 400
        assert field_of(response) == "workspace_id"


def test_create_project_answers_201_and_rejects_unknown_fields(sandbox):
    """POST /projects creates (201); an undeclared field gives 400 naming it."""
    body = {"workspace_id": sandbox.workspace_id, "name": "Autumn"}
    created = call(sandbox, "POST", "/projects", body=body)
    assert created.status_code == 201
    assert created.json()["name"] == "Autumn"
    assert created.json()["project_id"] in sandbox.project_ids
    extra = call(sandbox, "POST", "/projects", body={**body, "description": "x"})
    assert extra.status_code == 400
    assert field_of(extra) == "description"


def test_forbid_project_create_refuses_only_creation(sandbox):
    """forbid_project_create: POST /projects is 403 saying why, creates nothing; the rest works."""
    sandbox.faults.update(forbid_project_create=True)
    before = project_names(sandbox)
    refused = call(sandbox, "POST", "/projects", body=project_body(sandbox, "Autumn"))
    assert refused.status_code == 403
    assert error_of(refused) == {
        "code": "forbidden",
        "message": "This API key may not create projects.",
    }
    assert project_names(sandbox) == before
    asset_id = ready_asset(sandbox)
    attach = f"/projects/{sandbox.project_ids[0]}/assets/{asset_id}/attach"
    assert call(sandbox, "POST", attach).status_code == 201


def test_projects_query_filters_by_name(sandbox):
    """``query`` is a case-insensitive substring match on the project name."""
    response = call(sandbox, "GET", "/projects", workspace_id=sandbox.workspace_id, query="SPRING")
    assert [p["name"] for p in response.json()["projects"]] == ["Spring Campaign"]


def test_projects_paginate_with_an_opaque_cursor(sandbox):
    """limit/cursor walk every project once; the last page has next_cursor null (§6)."""
    for n in range(5):
        sandbox.add_project(f"Extra {n}")
    found = all_pages(sandbox, "/projects", "projects", 2, workspace_id=sandbox.workspace_id)
    assert sorted(p["project_id"] for p in found) == sorted(sandbox.project_ids)
    assert len(found) == 7
    first = call(sandbox, "GET", "/projects", workspace_id=sandbox.workspace_id, limit=2).json()
    cursor = first["meta"]["next_cursor"]
    assert json.loads(base64.urlsafe_b64decode(cursor + "==")) == {"offset": 2}
    assert first["meta"]["total_estimate"] == 7


@pytest.mark.parametrize(("name", "value"), [("limit", 0), ("limit", 101), ("limit", "ten")])
def test_bad_limit_is_rejected(sandbox, name, value):
    """limit outside 1..100 or not an integer gives 400 naming ``limit`` (CONTRACT §6)."""
    response = call(sandbox, "GET", "/assets", **{name: value})
    assert response.status_code == 400
    assert field_of(response) == "limit"


def test_bad_cursor_is_rejected(sandbox):
    """An undecodable cursor gives 400 naming ``cursor``."""
    for cursor in ("!!!", base64.b64encode(b'{"page":1}').decode()):
        response = call(
            sandbox, "GET", "/projects", workspace_id=sandbox.workspace_id, cursor=cursor
        )
        assert response.status_code == 400
        assert field_of(response) == "cursor"


def test_forbidden_projects_answer_403(sandbox):
    """GET, nodes and attach on a project in ``forbidden_projects`` give 403 forbidden."""
    pid = sandbox.project_ids[1]
    sandbox.faults.update(forbidden_projects=[pid])
    asset_id = ready_asset(sandbox)
    for method, path in (
        ("GET", f"/projects/{pid}"),
        ("GET", f"/projects/{pid}/nodes"),
        ("POST", f"/projects/{pid}/assets/{asset_id}/attach"),
    ):
        assert call(sandbox, method, path).status_code == 403
    assert call(sandbox, "GET", f"/projects/{sandbox.project_ids[0]}").status_code == 200


# -- assets: reservation, listing -----------------------------------------------------------


def test_reservation_has_the_documented_shape(sandbox):
    """POST /assets answers 201 pending_upload with the snake_case upload object (§8, §9.7)."""
    asset = reserve(sandbox, "product shot.png")
    assert asset["asset_id"].startswith("asset_")
    assert asset["status"] == "pending_upload"
    assert asset["uploaded_via"] == "signed_url"
    assert asset["visibility"] == "workspace"
    assert asset["workspace_id"] == sandbox.workspace_id
    assert asset["url"].startswith(f"{sandbox.origin}/files/{asset['asset_id']}/")
    assert asset["expires_at"].endswith("Z")
    assert asset["upload_url"] == sandbox.upload_url == asset["upload"]["url"]
    assert asset["upload"]["method"] == "POST"
    assert asset["upload"]["content_type"] == "multipart/form-data"
    assert asset["upload"]["file_field"] == "file"
    assert set(asset["upload"]["form_fields"]) >= {"publicKey", "signature", "expire", "token"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"workspace_id": "ws_x"}, "source", "source: Required"),
        ({"source": {"url": "https://x"}}, "source", "source: must be a string"),
        ({"source": "https://example.com/a.png"}, "source", "source: host is not allowlisted"),
        ({"source": "upload"}, "source", None),
        ({"source": "signed-url"}, "workspace_id", "workspace_id: Required"),
        ({"source": "signed-url", "workspace_id": "w_1"}, "workspace_id", None),
        ({"project_id": "prj_1"}, "project_id", "project_id: unknown field"),
        ({"idempotency_key": "k"}, "idempotency_key", None),
        ({"file_name": 7}, "file_name", "file_name: must be a string"),
    ],
)
def test_create_asset_validation_names_the_field(sandbox, body, field, message):
    """Bad POST /assets bodies give 400 input_validation_error naming the field (§9.7)."""
    base = {"source": "signed-url", "workspace_id": sandbox.workspace_id}
    if "source" in body or "workspace_id" in body:
        base = {}
    response = call(sandbox, "POST", "/assets", body={**base, **body})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "input_validation_error"
    assert error["fields"][0]["field"] == field
    if message is not None:
        assert error["message"] == message
    assert sandbox.state()["assets"] == []


def test_get_asset_has_the_documented_shape(sandbox):
    """GET /assets/{id} has §9.9's keys, created_at as an ISO string, url once ready."""
    asset = reserve(sandbox)
    pending = call(sandbox, "GET", f"/assets/{asset['asset_id']}").json()
    assert set(pending) == {
        "asset_id",
        "name",
        "description",
        "workspace_id",
        "url",
        "content_type",
        "upload_content_type",
        "size_bytes",
        "width",
        "height",
        "uploaded_via",
        "created_at",
        "status",
        "failure_message",
    }
    assert pending["url"] is None
    assert pending["created_at"].endswith("Z")
    upload(asset, b"abc")
    complete(sandbox, asset["asset_id"])
    ready = call(sandbox, "GET", f"/assets/{asset['asset_id']}").json()
    assert ready["status"] == "ready"
    assert ready["size_bytes"] == 3
    assert ready["url"] == asset["url"]


def test_list_assets_newest_first_with_filters(sandbox):
    """GET /assets: newest first, ms timestamps, filtered by ``query`` and ``project_id``."""
    first = ready_asset(sandbox, name="sunrise.png")
    second = reserve(sandbox, "Sunset.png")["asset_id"]
    third = reserve(sandbox, "logo.png")["asset_id"]
    listing = call(sandbox, "GET", "/assets", workspace_id=sandbox.workspace_id).json()
    assert [a["asset_id"] for a in listing["assets"]] == [third, second, first]
    assert all(isinstance(a["created_at"], int) for a in listing["assets"])
    assert "failure_message" not in listing["assets"][0]
    found = call(sandbox, "GET", "/assets", query="SUN").json()["assets"]
    assert [a["asset_id"] for a in found] == [second, first]
    pid = sandbox.project_ids[0]
    node_id = call(sandbox, "POST", f"/projects/{pid}/assets/{first}/attach").json()["node_id"]
    in_project = call(sandbox, "GET", "/assets", project_id=pid).json()["assets"]
    assert [(a["asset_id"], a["node_id"], a["project_id"]) for a in in_project] == [
        (first, node_id, pid)
    ]


def test_assets_paginate(sandbox):
    """GET /assets pages with limit and cursor, every asset exactly once."""
    ids = [reserve(sandbox, f"f{n}.png")["asset_id"] for n in range(5)]
    found = all_pages(sandbox, "/assets", "assets", 2)
    assert [a["asset_id"] for a in found] == list(reversed(ids))


# -- attach and nodes -------------------------------------------------------------------------


def test_attach_answers_201_with_a_node(sandbox):
    """Attaching a ready asset answers 201 {project_id, asset_id, node_id, canvas_url} (§9.6)."""
    asset_id = ready_asset(sandbox)
    pid = sandbox.project_ids[0]
    response = call(sandbox, "POST", f"/projects/{pid}/assets/{asset_id}/attach")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"project_id", "asset_id", "node_id", "canvas_url"}
    assert (body["project_id"], body["asset_id"]) == (pid, asset_id)
    nodes = call(sandbox, "GET", f"/projects/{pid}/nodes").json()
    assert nodes["project_id"] == pid
    assert nodes["canvas_url"] == body["canvas_url"]
    assert [(n["node_id"], n["asset_id"], n["type"]) for n in nodes["nodes"]] == [
        (body["node_id"], asset_id, "image")
    ]
    assert sandbox.state()["nodes"][pid][0]["node_id"] == body["node_id"]


def test_attach_before_ready_is_rejected(sandbox):
    """Attaching a pending asset is 400 input_validation_error "asset is not ready" (Q6)."""
    asset = reserve(sandbox)
    response = call(
        sandbox, "POST", f"/projects/{sandbox.project_ids[0]}/assets/{asset['asset_id']}/attach"
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "input_validation_error"
    assert error["fields"] == [{"field": "assetId", "message": "asset is not ready"}]


def test_attach_twice_makes_a_second_node_by_default(sandbox):
    """attach_mode duplicate_node: a second attach creates a second, visible node (Q7)."""
    asset_id = ready_asset(sandbox)
    path = f"/projects/{sandbox.project_ids[0]}/assets/{asset_id}/attach"
    first, second = call(sandbox, "POST", path).json(), call(sandbox, "POST", path).json()
    assert first["node_id"] != second["node_id"]
    assert len(sandbox.state()["nodes"][sandbox.project_ids[0]]) == 2


def test_attach_twice_returns_the_existing_node_when_configured(sandbox):
    """attach_mode existing: a second attach answers the first node again."""
    sandbox.faults.update(attach_mode="existing")
    asset_id = ready_asset(sandbox)
    path = f"/projects/{sandbox.project_ids[0]}/assets/{asset_id}/attach"
    first, second = call(sandbox, "POST", path), call(sandbox, "POST", path)
    assert second.status_code == 201
    assert first.json()["node_id"] == second.json()["node_id"]
    assert len(sandbox.state()["nodes"][sandbox.project_ids[0]]) == 1


def test_nodes_paginate(sandbox):
    """GET /projects/{id}/nodes pages with limit and cursor (CONTRACT §9.5)."""
    asset_id = ready_asset(sandbox)
    pid = sandbox.project_ids[1]
    made = [
        call(sandbox, "POST", f"/projects/{pid}/assets/{asset_id}/attach").json()["node_id"]
        for _ in range(3)
    ]
    found = all_pages(sandbox, f"/projects/{pid}/nodes", "nodes", 2)
    assert [n["node_id"] for n in found] == made
    bad = call(sandbox, "GET", f"/projects/{pid}/nodes", limit=500)
    assert field_of(bad) == "limit"


# -- idempotency -----------------------------------------------------------------------------


def _reserve_body(sb: Sandbox, name: str = "a.png") -> dict[str, Any]:
    return {"source": "signed-url", "workspace_id": sb.workspace_id, "file_name": name}


def test_duplicate_idempotency_key_is_409(sandbox):
    """Default mode: the same Idempotency-Key again gives 409 idempotency_duplicate (§5)."""
    headers = {"Idempotency-Key": "fs1-reserve-abc"}
    first = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    again = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox, "b.png"), headers=headers)
    assert first.status_code == 201
    assert again.status_code == 409
    assert error_of(again) == {
        "code": "idempotency_duplicate",
        "message": "Duplicate idempotency key.",
    }
    assert len(sandbox.state()["assets"]) == 1
    assert [r["idempotency_key"] for r in requests_on(sandbox, "POST /assets")] == [
        "fs1-reserve-abc"
    ] * 2


def test_idempotency_keys_are_per_path(sandbox):
    """The same key on another path is a different request (keyed by method and path)."""
    asset_id = ready_asset(sandbox)
    headers = {"Idempotency-Key": "same"}
    for pid in sandbox.project_ids:
        path = f"/projects/{pid}/assets/{asset_id}/attach"
        assert call(sandbox, "POST", path, headers=headers).status_code == 201


def test_key_is_not_stored_after_a_validation_error(sandbox):
    """A request refused with 400 may be sent again with the same key and succeed (Q2)."""
    headers = {"Idempotency-Key": "k-400"}
    bad = call(sandbox, "POST", "/assets", body={"source": "signed-url"}, headers=headers)
    good = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    assert (bad.status_code, good.status_code) == (400, 201)


def test_key_is_not_stored_after_an_injected_server_error(sandbox):
    """A 5xx injected before the handler leaves the key unused."""
    sandbox.faults.fail_next("POST /assets", status=503)
    headers = {"Idempotency-Key": "k-503"}
    failed = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    retried = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    assert (failed.status_code, retried.status_code) == (503, 201)
    assert error_of(failed)["code"] == "service_unavailable"


def test_replay_mode_replays_the_first_answer(sandbox):
    """Replay mode: same key and body answer the stored response with idempotent-replayed."""
    sandbox.faults.update(idempotency="replay")
    headers = {"Idempotency-Key": "k-replay"}
    first = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    reordered = dict(reversed(list(_reserve_body(sandbox).items())))
    second = call(sandbox, "POST", "/assets", body=reordered, headers=headers)
    assert second.status_code == first.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(sandbox.state()["assets"]) == 1
    assert [r["replayed"] for r in requests_on(sandbox, "POST /assets")] == [False, True]


def test_replay_mode_conflicts_on_another_body(sandbox):
    """Replay mode: the same key with a different body gives 422 idempotency_conflict."""
    sandbox.faults.update(idempotency="replay")
    headers = {"Idempotency-Key": "k-conflict"}
    call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    other = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox, "b.png"), headers=headers)
    assert other.status_code == 422
    assert error_of(other)["code"] == "idempotency_conflict"


def test_replay_mode_accepts_a_body_key(sandbox):
    """Replay mode also reads ``idempotency_key`` from the body (platform page, §5)."""
    sandbox.faults.update(idempotency="replay")
    body = {**_reserve_body(sandbox), "idempotency_key": "k-body"}
    first, second = (call(sandbox, "POST", "/assets", body=body) for _ in range(2))
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["asset_id"] == second.json()["asset_id"]


def test_idempotency_window_is_configurable(sandbox):
    """Outside ``idempotency_window_seconds`` the key is forgotten."""
    sandbox.faults.update(idempotency_window_seconds=0.0)
    headers = {"Idempotency-Key": "k-window"}
    statuses = [
        call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers).status_code
        for _ in range(2)
    ]
    assert statuses == [201, 201]


# -- a slow project creation (issue 13: kill -9 between creation and the journal write) -------

CREATE_DELAY = 0.5


class Answered:
    """A request sent from its own thread: its response (or error) and when it came back."""

    def __init__(self, send: Callable[[], requests.Response]) -> None:
        self.sent_at = time.monotonic()
        self.response: requests.Response | None = None
        self.error: requests.RequestException | None = None
        self.at = 0.0
        self._send = send
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.response = self._send()
        except requests.RequestException as exc:
            self.error = exc
        self.at = time.monotonic()

    def end(self) -> None:
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the request is still waiting"

    def join(self) -> requests.Response:
        self.end()
        assert self.response is not None, f"no answer: {self.error}"
        return self.response


def _create_in_background(sb: Sandbox, name: str, key: str | None = None) -> Answered:
    """POST /projects for ``name`` in a thread, once the project is listed (the answer waits)."""
    headers = {"Idempotency-Key": key} if key else None
    body = project_body(sb, name)
    pending = Answered(lambda: call(sb, "POST", "/projects", body=body, headers=headers))
    wait_until(lambda: name in project_names(sb), timeout=SHORT_TIMEOUT, message=f"{name} listed")
    return pending


def test_create_project_delay_answers_after_the_project_is_listed(sandbox):
    """The project is listed before its delayed answer; other requests meanwhile are not held."""
    sandbox.faults.update(create_project_delay_seconds=CREATE_DELAY)
    pending = _create_in_background(sandbox, "Late")
    listed_at = time.monotonic()
    other = reserve(sandbox)
    other_at = time.monotonic()
    created = pending.join()
    assert created.status_code == 201
    assert created.json()["name"] == "Late"
    assert listed_at < other_at < pending.at
    assert pending.at - pending.sent_at >= CREATE_DELAY
    assert other["status"] == "pending_upload"
    assert other_at - listed_at < CREATE_DELAY
    assert project_names(sandbox).count("Late") == 1


def test_create_project_delay_duplicate_key_meanwhile_is_409(sandbox):
    """Duplicate mode: the key sent again while the creation waits is 409; one project stays."""
    sandbox.faults.update(create_project_delay_seconds=CREATE_DELAY)
    pending = _create_in_background(sandbox, "Late", key="fs-create-late")
    headers = {"Idempotency-Key": "fs-create-late"}
    again = call(sandbox, "POST", "/projects", body=project_body(sandbox, "Late"), headers=headers)
    assert again.status_code == 409
    assert error_of(again)["code"] == "idempotency_duplicate"
    assert pending.response is None
    assert pending.join().status_code == 201
    assert project_names(sandbox).count("Late") == 1


def test_create_project_delay_replays_the_key_meanwhile_and_after(sandbox):
    """Replay mode: the key sent again during or after the wait replays the created project."""
    sandbox.faults.update(idempotency="replay", create_project_delay_seconds=CREATE_DELAY)
    pending = _create_in_background(sandbox, "Late", key="fs-create-late")
    body, headers = project_body(sandbox, "Late"), {"Idempotency-Key": "fs-create-late"}

    def replayed() -> requests.Response | None:
        answer = call(sandbox, "POST", "/projects", body=body, headers=headers)
        return None if answer.status_code == 409 else answer  # 409 until the key is kept

    meanwhile = wait_until(replayed, timeout=SHORT_TIMEOUT, message="the key replayed")
    assert pending.response is None
    first = pending.join()
    after = call(sandbox, "POST", "/projects", body=body, headers=headers)
    for answer in (meanwhile, after):
        assert answer.status_code == 201
        assert answer.headers["idempotent-replayed"] == "true"
        assert answer.json()["project_id"] == first.json()["project_id"]
    assert project_names(sandbox).count("Late") == 1


def test_stop_ends_a_create_project_delay_at_once():
    """stop() cuts create_project_delay_seconds short: the waiting handler thread ends at once."""
    before = set(threading.enumerate())
    sb = Sandbox(faults=Faults(create_project_delay_seconds=60.0)).start()
    try:
        pending = _create_in_background(sb, "Late")
    finally:
        sb.stop()
    pending.end()
    wait_until(
        lambda: set(threading.enumerate()) <= before,
        timeout=SHORT_TIMEOUT,
        message="the sandbox's threads to end, long before the 60 s delay",
    )


# -- control, persistence, lifecycle of the server ------------------------------------------


def test_control_endpoints_change_faults_and_show_state(sandbox):
    """POST /_sandbox/faults sets fields, scripts fail_next and resets; GET state shows it."""
    faults_url = f"{sandbox.origin}/_sandbox/faults"
    answer = requests.post(faults_url, json={"error_rate": 1.0}, timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.json()["error_rate"] == 1.0
    assert call(sandbox, "GET", "/workspaces").status_code in (500, 502, 503)
    requests.post(faults_url, json={"reset": True}, timeout=TIMEOUT)
    script = {"fail_next": {"route": "GET /workspaces", "status": 418, "code": "teapot"}}
    requests.post(faults_url, json=script, timeout=TIMEOUT)
    assert error_of(call(sandbox, "GET", "/workspaces"))["code"] == "teapot"
    assert call(sandbox, "GET", "/workspaces").status_code == 200
    bad = requests.post(faults_url, json={"error_rat": 1}, timeout=TIMEOUT)
    assert bad.status_code == 400
    assert "error_rat" in error_of(bad)["message"]
    state = requests.get(f"{sandbox.origin}/_sandbox/state", timeout=TIMEOUT).json()
    assert set(state) == {
        "workspace",
        "projects",
        "assets",
        "nodes",
        "requests",
        "violations",
        "faults",
    }
    brief = requests.get(f"{sandbox.origin}/_sandbox/state?requests=0", timeout=TIMEOUT).json()
    assert "requests" not in brief
    assert sandbox.state(requests=False) == brief


def test_request_log_records_each_request(sandbox):
    """The request log has route template, path, status, key, auth flag and arrival time."""
    call(sandbox, "GET", f"/projects/{sandbox.project_ids[0]}")
    call(sandbox, "GET", "/workspaces", key=None, headers={"Idempotency-Key": "k"})
    first, second = sandbox.state()["requests"]
    assert first["route"] == "GET /projects/{id}"
    assert first["path"] == f"/api/v1/projects/{sandbox.project_ids[0]}"
    assert (first["status"], first["authorization"], first["dropped"]) == (200, True, False)
    assert (second["status"], second["authorization"]) == (401, False)
    assert second["idempotency_key"] == "k"
    assert second["seq"] == first["seq"] + 1
    assert second["t"] >= first["t"]


def test_state_persists_across_a_restart(tmp_path):
    """With a data_dir, ids, key, assets, bytes and idempotency keys survive a restart."""
    data = b"persisted bytes"
    with Sandbox(data_dir=tmp_path) as sb:
        asset = reserve(sb)
        upload(asset, data)
        complete(sb, asset["asset_id"])
        body = _reserve_body(sb)
        call(sb, "POST", "/assets", body=body, headers={"Idempotency-Key": "k-persist"})
        before = (sb.api_key, sb.workspace_id, sb.project_ids)
    assert (tmp_path / "state.json").is_file()
    with Sandbox(data_dir=tmp_path) as sb:
        assert (sb.api_key, sb.workspace_id, sb.project_ids) == before
        got = call(sb, "GET", f"/assets/{asset['asset_id']}").json()
        assert got["status"] == "ready"
        assert requests.get(got["url"], timeout=TIMEOUT).content == data
        again = call(sb, "POST", "/assets", body=body, headers={"Idempotency-Key": "k-persist"})
        assert again.status_code == 409


def test_stop_closes_keep_alive_connections():
    """stop() returns with an idle keep-alive connection open and leaves no thread behind."""
    sb = Sandbox().start()
    with requests.Session() as session:
        headers = {"Authorization": f"Bearer {sb.api_key}"}
        assert session.get(sb.base_url + "/workspaces", headers=headers).status_code == 200
        sb.stop()
    sb.stop()  # a second stop is harmless


def test_describe_names_everything_a_user_needs(sandbox):
    """The start-up text has the URLs, workspace, projects, key and a config to copy."""
    text = describe(sandbox)
    for needle in (
        sandbox.base_url,
        sandbox.upload_url,
        sandbox.workspace_id,
        *sandbox.project_ids,
        "Spring Campaign",
        f"export FLORA_API_KEY={sandbox.api_key}",
        f"base_url: {sandbox.base_url}",
    ):
        assert needle in text


def test_route_names_match_the_fault_routes():
    """Every API route has the name ``fail_next`` and the request log use (design.md)."""
    assert tuple(r.name for r in dispatch.ROUTES) == faults.API_ROUTES


def test_faults_can_be_given_at_construction():
    """``Sandbox(faults=Faults(...))`` serves with those faults from the first request."""
    with Sandbox(faults=Faults(revoked=True), api_key="sk_test_fixed") as sb:
        assert sb.api_key == "sk_test_fixed"
        assert error_of(call(sb, "GET", "/workspaces"))["code"] == "invalid_api_key"


@pytest.mark.parametrize("how", ["stop", "interrupt"])
def test_serve_forever_ends_on_stop_or_ctrl_c_from_a_signal_handler(how):
    """serve_forever() returns cleanly when a signal handler calls stop() or raises Ctrl-C."""
    sb = Sandbox()
    url = sb.base_url + "/workspaces"

    def on_alarm(signum: int, frame: object) -> None:
        assert requests.get(url, timeout=TIMEOUT).status_code == 401  # it was serving
        if how == "stop":
            sb.stop()
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        sb.serve_forever()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=TIMEOUT)
