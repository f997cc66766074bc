"""The sandbox's drift controls, seen through FLORA's public API: nodes and assets removed,
assets failed or made elsewhere (issue 15), and long listings paged through 429 windows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from florasync import errors
from florasync.flora import api, retrying
from florasync.flora.secret import Secret
from florasync.sandbox import Sandbox

from .flora_steps import upload_ready
from .helpers import assert_exactly_once, write_file

TIMEOUT = 10.0
PNG = "image/png"


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[api.FloraClient]:
    with api.FloraClient(sandbox.base_url, Secret(sandbox.api_key)) as c:
        yield c


@pytest.fixture(params=["python", "http"])
def via(request: pytest.FixtureRequest) -> str:
    """Each control is used once as a ``Sandbox`` method and once as its HTTP endpoint."""
    return str(request.param)


def _control(sb: Sandbox, via: str, name: str, **doc: str) -> None:
    """Call a drift control (remove_node, remove_asset, fail_asset) the ``via`` way."""
    if via == "python":
        getattr(sb, name)(**doc)
        return
    answer = requests.post(f"{sb.origin}/_sandbox/{name}", json=doc, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text


def _add_asset(sb: Sandbox, via: str, name: str, data: bytes, **query: str) -> str:
    """``add_asset`` the ``via`` way; the new asset's id."""
    if via == "python":
        return sb.add_asset(name, data, **query)
    answer = requests.post(
        f"{sb.origin}/_sandbox/add_asset",
        params={"name": name, **query},
        data=data,
        timeout=TIMEOUT,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["asset_id"])


def _uploaded(client: api.FloraClient, sb: Sandbox, path: Path, project_id: str) -> str:
    """Reserve, upload, complete and attach ``path`` as florasync would; the asset id."""
    asset = upload_ready(client, sb, path)
    client.attach(project_id, asset.asset_id, idempotency_key=f"a-{path.name}-{project_id}")
    return asset.asset_id


def _node_assets(client: api.FloraClient, project_id: str) -> list[str | None]:
    return [n.asset_id for n in client.list_nodes(project_id)]


def _listed(client: api.FloraClient, sb: Sandbox) -> dict[str, Any]:
    return {a.asset_id: a for a in client.list_assets(workspace_id=sb.workspace_id)}


def test_remove_node_takes_it_off_the_canvas(sandbox, client, via, tmp_path):
    """remove_node: the node leaves the project's listing; the asset stays ready elsewhere."""
    first, second = sandbox.project_ids
    path = tmp_path / "a.png"
    write_file(path, 2000, seed=1)
    asset_id = _uploaded(client, sandbox, path, first)
    client.attach(second, asset_id, idempotency_key="a-second")
    (node,) = client.list_nodes(first)
    _control(sandbox, via, "remove_node", project_id=first, node_id=node.node_id)
    assert _node_assets(client, first) == []
    assert _node_assets(client, second) == [asset_id]
    assert client.get_asset(asset_id).is_ready
    assert _listed(client, sandbox)[asset_id].is_ready


def test_remove_asset_removes_it_and_its_nodes(sandbox, client, via, tmp_path):
    """remove_asset: GET answers 404, listings leave it out, its nodes and url are gone."""
    first, second = sandbox.project_ids
    gone, kept = tmp_path / "gone.png", tmp_path / "kept.png"
    write_file(gone, 3000, seed=2)
    write_file(kept, 3000, seed=3)
    gone_id = _uploaded(client, sandbox, gone, first)
    client.attach(second, gone_id, idempotency_key="a-gone-second")
    kept_id = _uploaded(client, sandbox, kept, first)
    url = client.get_asset(gone_id).url
    _control(sandbox, via, "remove_asset", asset_id=gone_id)
    with pytest.raises(errors.NotFoundError):
        client.get_asset(gone_id)
    assert list(_listed(client, sandbox)) == [kept_id]
    assert _node_assets(client, first) == [kept_id]
    assert _node_assets(client, second) == []
    assert url is not None
    assert requests.get(url, timeout=TIMEOUT).status_code == 404
    assert sandbox.blob_path(gone_id) is None
    assert_exactly_once(sandbox.state(), {kept: first})


def test_fail_asset_marks_it_failed(sandbox, client, via, tmp_path):
    """fail_asset: the asset reads ``failed`` with a message, lists as failed, url not served."""
    path = tmp_path / "a.png"
    write_file(path, 2000, seed=4)
    asset_id = _uploaded(client, sandbox, path, sandbox.project_ids[0])
    url = client.get_asset(asset_id).url
    _control(sandbox, via, "fail_asset", asset_id=asset_id)
    got = client.get_asset(asset_id)
    assert (got.status, got.failure_message, got.url) == ("failed", "Processing failed", None)
    assert _listed(client, sandbox)[asset_id].is_failed
    assert url is not None
    assert requests.get(url, timeout=TIMEOUT).status_code == 404
    assert client.retry_asset(asset_id).upload is not None  # failed is retryable (§7.2)


def test_add_asset_is_ready_with_its_bytes(sandbox, client, via):
    """add_asset: a ready asset with size_bytes whose url serves the bytes, on the canvas asked."""
    project = sandbox.project_ids[1]
    data = b"\x89PNG made elsewhere" * 500
    on_canvas = _add_asset(sandbox, via, "shot 1.png", data, project_id=project)
    loose = _add_asset(sandbox, via, "loose.pdf", b"%PDF-1.7", content_type="application/pdf")
    asset = client.get_asset(on_canvas)
    assert (asset.status, asset.name, asset.size_bytes) == ("ready", "shot 1.png", len(data))
    assert asset.content_type == PNG
    assert asset.url is not None
    served = requests.get(asset.url, timeout=TIMEOUT)
    assert (served.status_code, served.content) == (200, data)
    assert _node_assets(client, project) == [on_canvas]
    assert _node_assets(client, sandbox.project_ids[0]) == []
    listed = _listed(client, sandbox)
    assert listed[loose].content_type == "application/pdf"
    assert listed[on_canvas].size_bytes == len(data)
    stored = {a["asset_id"]: a for a in sandbox.state()["assets"]}
    assert stored[on_canvas]["sha256"] == hashlib.sha256(data).hexdigest()


def test_unknown_ids_are_refused(sandbox):
    """Each control refuses an unknown id: LookupError in Python, 404 over HTTP."""
    with pytest.raises(LookupError, match="asset_nope"):
        sandbox.remove_asset("asset_nope")
    with pytest.raises(LookupError, match="node_nope"):
        sandbox.remove_node(sandbox.project_ids[0], "node_nope")
    with pytest.raises(LookupError, match="prj_nope"):
        sandbox.add_asset("a.png", b"x", project_id="prj_nope")
    for name, doc in (
        ("remove_node", {"project_id": sandbox.project_ids[0], "node_id": "node_nope"}),
        ("remove_asset", {"asset_id": "asset_nope"}),
        ("fail_asset", {"asset_id": "asset_nope"}),
    ):
        answer = requests.post(f"{sandbox.origin}/_sandbox/{name}", json=doc, timeout=TIMEOUT)
        assert answer.status_code == 404, name
        assert "nope" in answer.json()["error"]["message"]
    bad = requests.post(f"{sandbox.origin}/_sandbox/remove_asset", json={}, timeout=TIMEOUT)
    assert bad.status_code == 400
    assert "asset_id" in bad.json()["error"]["message"]
    nameless = requests.post(f"{sandbox.origin}/_sandbox/add_asset", data=b"x", timeout=TIMEOUT)
    assert nameless.status_code == 400


def test_drift_is_kept_across_a_restart(tmp_path):
    """With a data dir, added, failed and removed assets are as they were after a restart."""
    data_dir = tmp_path / "sandbox"
    with Sandbox(data_dir=data_dir) as sb:
        project = sb.project_ids[0]
        added = sb.add_asset("kept.png", b"kept bytes", project_id=project)
        failed = sb.add_asset("failed.png", b"failed bytes")
        removed = sb.add_asset("removed.png", b"removed bytes", project_id=project)
        sb.fail_asset(failed)
        sb.remove_asset(removed)
    with Sandbox(data_dir=data_dir) as sb:
        state = sb.state(requests=False)
        assert {a["asset_id"]: a["status"] for a in state["assets"]} == {
            added: "ready",
            failed: "failed",
        }
        assert [n["asset_id"] for n in state["nodes"][project]] == [added]
        served = requests.get(state["nodes"][project][0]["url"], timeout=TIMEOUT)
        assert served.content == b"kept bytes"


def test_the_file_route_takes_scripted_faults_by_name_only(sandbox):
    """fail_next("GET /files") fails an asset's url; "*" (API routes) does not reach it."""
    url = f"{sandbox.origin}/files/{sandbox.add_asset('a.png', b'abc')}/a.png"
    sandbox.faults.fail_next("*", status=500)
    assert requests.get(url, timeout=TIMEOUT).status_code == 200
    sandbox.faults.reset()
    sandbox.faults.fail_next("GET /files", status=503)
    assert requests.get(url, timeout=TIMEOUT).status_code == 503
    assert requests.get(url, timeout=TIMEOUT).status_code == 200
    with pytest.raises(ValueError, match="API routes"):
        sandbox.faults.fail_next("GET /files", malformed="not_json")
    logged = [r for r in sandbox.state()["requests"] if r["route"] == "GET /files"]
    assert [r["status"] for r in logged] == [200, 503, 200]


def test_listing_over_250_assets_through_429_windows_yields_each_once(sandbox):
    """Paging 260 assets with a 429 (Retry-After 1) before pages 2 and 3 yields each exactly
    once, and no request arrives inside a window."""
    added = {sandbox.add_asset(f"a{n}.png", b"%d" % n) for n in range(260)}
    policy = retrying.RetryPolicy(backoff_base_seconds=0.01)
    seen: list[str] = []
    with api.FloraClient(sandbox.base_url, Secret(sandbox.api_key), policy=policy) as c:
        for asset in c.list_assets(workspace_id=sandbox.workspace_id):
            if len(seen) in (0, api.PAGE_SIZE):  # a page just arrived: the next one meets a 429
                sandbox.faults.fail_next("*", status=429, retry_after=1)
            seen.append(asset.asset_id)
    assert len(seen) == len(set(seen)) == 260
    assert set(seen) == added
    state = sandbox.state()
    pages = [r["status"] for r in state["requests"] if r["route"] == "GET /assets"]
    assert pages == [200, 429, 200, 429, 200]
    assert state["violations"] == []
