"""The sandbox's fault injection: scripted and random faults, rate limits, violations, knobs."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from florasync.cli import build_parser
from florasync.commands.sandbox import faults_from_args
from florasync.sandbox import Faults
from florasync.sandbox.context import Context, Request
from florasync.sandbox.faults import API_ROUTES, MALFORMED_KINDS
from florasync.sandbox.idempotency import Idempotency
from florasync.sandbox.malformed import MAIN_FIELD
from florasync.sandbox.ratelimit import RateLimiter
from florasync.sandbox.replies import ApiFailure, Reply
from florasync.sandbox.store import Store
from florasync.sandbox.traffic import Traffic
from tests.helpers import SHORT_TIMEOUT, wait_until
from tests.test_sandbox import (
    TIMEOUT,
    call,
    complete,
    error_of,
    form_fields,
    ready_asset,
    requests_on,
    reserve,
    upload,
    violations,
)


def _reserve_body(sb) -> dict[str, Any]:
    return {"source": "signed-url", "workspace_id": sb.workspace_id, "file_name": "a.png"}


# -- scripted faults ------------------------------------------------------------------------


def test_fail_next_answers_the_status_times_then_recovers(sandbox):
    """fail_next(route, status, times) fails exactly that many requests on that route."""
    sandbox.faults.fail_next("POST /assets", status=503, times=2)
    statuses = [
        call(sandbox, "POST", "/assets", body=_reserve_body(sandbox)).status_code for _ in range(3)
    ]
    assert statuses == [503, 503, 201]
    assert call(sandbox, "GET", "/workspaces").status_code == 200
    assert [r["status"] for r in requests_on(sandbox, "POST /assets")] == [503, 503, 201]


def test_fail_next_star_matches_any_api_route_but_not_uploads(sandbox):
    """The route ``*`` fails the next API request, whatever it is, and never the upload target."""
    asset = reserve(sandbox)
    sandbox.faults.fail_next("*", status=500)
    assert upload(asset, b"bytes").status_code == 200
    failed = call(sandbox, "GET", "/workspaces")
    assert failed.status_code == 500
    assert error_of(failed) == {"code": "unknown_error", "message": "An unknown error occurred."}


def test_drop_before_closes_without_running_the_handler(sandbox):
    """drop="before": the client sees the connection close and nothing was created."""
    sandbox.faults.fail_next("POST /assets", drop="before")
    with pytest.raises(requests.ConnectionError):
        call(sandbox, "POST", "/assets", body=_reserve_body(sandbox))
    assert sandbox.state()["assets"] == []
    logged = requests_on(sandbox, "POST /assets")
    assert [(r["status"], r["dropped"]) for r in logged] == [(None, True)]


def test_drop_after_runs_the_handler_then_loses_the_answer(sandbox):
    """drop="after": the asset exists and the key is spent, but the client got no answer."""
    sandbox.faults.fail_next("POST /assets", drop="after")
    headers = {"Idempotency-Key": "k-lost"}
    with pytest.raises(requests.ConnectionError):
        call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    assert len(sandbox.state()["assets"]) == 1
    again = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    assert again.status_code == 409


def test_drop_after_on_complete_still_completes(sandbox):
    """A lost complete answer still moved the asset to ready (the client must GET to learn)."""
    asset = reserve(sandbox)
    upload(asset, b"bytes")
    sandbox.faults.fail_next("POST /assets/{id}/complete", drop="after")
    with pytest.raises(requests.ConnectionError):
        call(sandbox, "POST", f"/assets/{asset['asset_id']}/complete")
    assert call(sandbox, "GET", f"/assets/{asset['asset_id']}").json()["status"] == "ready"


# -- random faults --------------------------------------------------------------------------


def test_error_rate_answers_server_errors_before_the_handler(sandbox):
    """error_rate=1: every API request is a 500/502/503 and nothing happens."""
    sandbox.faults.update(error_rate=1.0)
    response = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox))
    assert response.status_code in (500, 502, 503)
    assert "code" in error_of(response)
    assert sandbox.state()["assets"] == []


def test_drop_rates(sandbox):
    """drop_before_rate drops with no effect; drop_after_rate drops after the effect."""
    sandbox.faults.update(drop_before_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        call(sandbox, "POST", "/assets", body=_reserve_body(sandbox))
    assert sandbox.state()["assets"] == []
    sandbox.faults.update(drop_before_rate=0.0, drop_after_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        call(sandbox, "POST", "/assets", body=_reserve_body(sandbox))
    assert len(sandbox.state()["assets"]) == 1


def test_latency_delays_every_request(sandbox):
    """latency_seconds is added to API requests."""
    sandbox.faults.update(latency_seconds=0.2)
    started = time.monotonic()
    assert call(sandbox, "GET", "/workspaces").status_code == 200
    assert time.monotonic() - started >= 0.2


# -- rate limits and the rate_window violation ---------------------------------------------


def test_token_bucket_answers_429_with_retry_after(sandbox):
    """With a budget of 2 the third quick request is 429 rate_limited with Retry-After seconds."""
    sandbox.faults.update(rate_limit_rps=0.1, rate_limit_burst=2)
    answers = [call(sandbox, "GET", "/workspaces") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert error_of(answers[2]) == {"code": "rate_limited", "message": "Rate limit exceeded."}
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 10


def test_429_without_retry_after_when_configured(sandbox):
    """retry_after_header=False omits Retry-After (to exercise the client's fallback)."""
    sandbox.faults.update(rate_limit_rps=0.1, rate_limit_burst=1, retry_after_header=False)
    call(sandbox, "GET", "/workspaces")
    limited = call(sandbox, "GET", "/workspaces")
    assert limited.status_code == 429
    assert "Retry-After" not in limited.headers


def test_request_inside_a_retry_after_window_is_a_violation(sandbox):
    """A request arriving after the grace but before Retry-After ends is a rate_window violation."""
    sandbox.faults.fail_next("GET /workspaces", status=429, retry_after=30)
    limited = call(sandbox, "GET", "/workspaces")
    assert limited.headers["Retry-After"] == "30"
    announced = requests_on(sandbox, "GET /workspaces")[0]["t"]
    wait_until(lambda: time.monotonic() > announced + 0.3, timeout=SHORT_TIMEOUT)
    assert violations(sandbox, "rate_window") == []
    call(sandbox, "GET", f"/projects/{sandbox.project_ids[0]}")
    found = violations(sandbox, "rate_window")
    assert len(found) == 1
    assert found[0]["seq"] == 2
    assert "GET /projects/{id}" in found[0]["detail"]


def test_no_window_without_retry_after(sandbox):
    """A 429 that announced no Retry-After opens no window."""
    sandbox.faults.update(rate_limit_rps=0.1, rate_limit_burst=1, retry_after_header=False)
    call(sandbox, "GET", "/workspaces")
    call(sandbox, "GET", "/workspaces")
    announced = requests_on(sandbox, "GET /workspaces")[1]["t"]
    sandbox.faults.update(rate_limit_rps=None)
    wait_until(lambda: time.monotonic() > announced + 0.3, timeout=SHORT_TIMEOUT)
    assert call(sandbox, "GET", "/workspaces").status_code == 200
    assert violations(sandbox, "rate_window") == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _arrive(traffic: Traffic, t: float, *, latency: float = 0.0, key: str = "sk") -> int:
    return traffic.begin(
        method="GET",
        route="GET /workspaces",
        path="/api/v1/workspaces",
        arrived=t,
        idempotency_key=None,
        authorization=True,
        identity=key,
        latency_seconds=latency,
    )


def test_rate_window_grace_and_end():
    """Grace is 0.1 s + 2 x latency after the 429; the window ends at Retry-After; per key."""
    clock = FakeClock()
    traffic = Traffic(clock=clock)
    traffic.announce_window("sk", 5)
    _arrive(traffic, 100.05)  # in flight when the 429 went out
    _arrive(traffic, 100.5, latency=0.5)  # inside 0.1 + 2 x 0.5
    _arrive(traffic, 100.5, key="other")  # another key's window is not ours
    _arrive(traffic, 105.01)  # after the window
    assert traffic.violations() == []
    seq = _arrive(traffic, 100.2)
    assert [(v["kind"], v["seq"]) for v in traffic.violations()] == [("rate_window", seq)]


def test_rate_limiter_refills_over_time():
    """The token bucket allows ``burst`` at once, then one per 1/rps seconds."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    assert [limiter.acquire("k", 2.0, 2) for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("k", 2.0, 2) == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("k", 2.0, 2) == 0.0
    assert limiter.acquire("other", 2.0, 2) == 0.0


# -- the Faults object ------------------------------------------------------------------------


def test_faults_update_validates_names_and_types():
    """update() refuses unknown names, wrong types and out-of-range values, changing nothing."""
    faults = Faults()
    with pytest.raises(ValueError, match="error_rat"):
        faults.update(error_rat=0.5)
    with pytest.raises(TypeError, match="revoked"):
        faults.update(revoked="yes")
    with pytest.raises(ValueError, match="error_rate"):
        faults.update(latency_seconds=1.0, error_rate=1.5)
    with pytest.raises(ValueError, match="upload_spelling"):
        faults.update(upload_spelling="kebab")
    with pytest.raises(ValueError, match="complete_without_bytes"):
        faults.update(complete_without_bytes="maybe")
    with pytest.raises(ValueError, match="malformed_rate"):
        faults.update(malformed_rate=2.0)
    with pytest.raises(TypeError, match="replay_errors"):
        faults.update(replay_errors=1)
    with pytest.raises(TypeError, match="forbid_project_create"):
        faults.update(forbid_project_create="yes")
    with pytest.raises(ValueError, match="create_project_delay_seconds"):
        faults.update(create_project_delay_seconds=-0.5)
    assert faults.latency_seconds == 0.0
    faults.update(error_rate=0.25, forbidden_projects=["prj_a"], rate_limit_rps=2)
    assert (faults.error_rate, faults.forbidden_projects, faults.rate_limit_rps) == (
        0.25,
        ["prj_a"],
        2.0,
    )


def test_faults_from_cli_style_options():
    """from_options() converts CLI strings and skips unset (None) options."""
    faults = Faults.from_options(
        {
            "error_rate": "0.3",
            "revoked": "true",
            "rate_limit_rps": "5",
            "rate_limit_burst": "3",
            "forbidden_projects": "prj_a, prj_b",
            "idempotency": "replay",
            "latency_seconds": None,
            "forbid_project_create": "yes",
            "create_project_delay_seconds": "0.5",
        }
    )
    assert faults.error_rate == 0.3
    assert faults.revoked is True
    assert (faults.rate_limit_rps, faults.rate_limit_burst) == (5.0, 3)
    assert faults.forbidden_projects == ["prj_a", "prj_b"]
    assert faults.idempotency_window() == 86400.0
    assert (faults.forbid_project_create, faults.create_project_delay_seconds) == (True, 0.5)
    with pytest.raises(ValueError, match="error_rate"):
        Faults.from_options({"error_rate": "lots"})
    with pytest.raises(ValueError, match="nonsense"):
        Faults.from_options({"nonsense": "1"})


def test_fail_next_validates_and_shows_in_to_dict():
    """fail_next() refuses unknown routes and mixed modes; pending entries show in to_dict()."""
    faults = Faults()
    with pytest.raises(ValueError, match="route"):
        faults.fail_next("GET /nowhere", status=500)
    with pytest.raises(ValueError, match="only one of"):
        faults.fail_next("POST /assets", status=500, drop="after")
    with pytest.raises(ValueError, match="only one of"):
        faults.fail_next("POST /assets", drop="after", malformed="array")
    with pytest.raises(ValueError, match="malformed must be one of"):
        faults.fail_next("POST /assets", malformed="garbage")
    with pytest.raises(ValueError, match="API routes"):
        faults.fail_next("POST /upload", malformed="not_json")
    faults.fail_next("POST /assets/{id}/retry", status=503, times=2)
    faults.fail_next("*", malformed="redirect")
    assert faults.to_dict()["fail_next"] == [
        {
            "route": "POST /assets/{id}/retry",
            "status": 503,
            "code": None,
            "retry_after": None,
            "drop": None,
            "malformed": None,
            "remaining": 2,
        },
        {
            "route": "*",
            "status": None,
            "code": None,
            "retry_after": None,
            "drop": None,
            "malformed": "redirect",
            "remaining": 1,
        },
    ]
    faults.update(read_only=True)
    faults.reset()
    assert faults.to_dict() == {**Faults().to_dict(), "fail_next": []}


def test_expire_uploads_issues_expired_reservations(sandbox):
    """expire_uploads: every reservation's expires_at is already past."""
    sandbox.faults.update(expire_uploads=True)
    for _ in range(2):
        asset = reserve(sandbox)
        expire = int(asset["upload"]["form_fields"]["expire"])
        assert expire < time.time()


def test_sandbox_cli_options_set_the_new_knobs():
    """The newer sandbox options (lifecycle, replay, malformed, project creation) reach Faults."""
    plain = faults_from_args(build_parser().parse_args(["sandbox"]))
    assert (plain.complete_without_bytes, plain.replay_errors, plain.malformed_rate) == (
        "repeat",
        False,
        0.0,
    )
    assert (plain.forbid_project_create, plain.create_project_delay_seconds) == (False, 0.0)
    argv = ["sandbox", "--strict-lifecycle", "--idempotency", "replay", "--replay-errors"]
    creation = ["--forbid-project-create", "--create-project-delay", "1.5"]
    args = build_parser().parse_args([*argv, "--malformed-rate", "0.25", *creation])
    chosen = faults_from_args(args)
    assert chosen.complete_without_bytes == "lifecycle_error"
    assert (chosen.idempotency, chosen.replay_errors) == ("replay", True)
    assert chosen.malformed_rate == 0.25
    assert (chosen.forbid_project_create, chosen.create_project_delay_seconds) == (True, 1.5)


# -- strict lifecycle on complete (CONTRACT §7.2, §14 Q16) ------------------------------------


def test_strict_lifecycle_refuses_complete_before_the_bytes(sandbox):
    """complete_without_bytes="lifecycle_error": 409 lifecycle_error, and nothing changes."""
    faults_url = f"{sandbox.origin}/_sandbox/faults"
    answer = requests.post(
        faults_url, json={"complete_without_bytes": "lifecycle_error"}, timeout=TIMEOUT
    )
    assert answer.json()["complete_without_bytes"] == "lifecycle_error"
    asset = reserve(sandbox)
    before = sandbox.state(requests=False)["assets"]
    refused = complete(sandbox, asset["asset_id"])
    assert refused.status_code == 409
    assert error_of(refused) == {
        "code": "lifecycle_error",
        "message": "Asset has no uploaded bytes yet.",
    }
    assert sandbox.state(requests=False)["assets"] == before
    shown = call(sandbox, "GET", f"/assets/{asset['asset_id']}").json()
    assert shown["status"] == "pending_upload"
    assert "upload" not in shown
    assert upload(asset, b"now").status_code == 200
    assert complete(sandbox, asset["asset_id"]).json()["status"] == "ready"


def test_complete_before_the_bytes_repeats_the_upload_unless_strict(sandbox):
    """The default "repeat" answers 200 pending_upload with the upload object (Q16)."""
    sandbox.faults.update(complete_without_bytes="lifecycle_error")
    asset = reserve(sandbox)
    assert complete(sandbox, asset["asset_id"]).status_code == 409
    sandbox.faults.update(complete_without_bytes="repeat")
    repeated = complete(sandbox, asset["asset_id"])
    assert repeated.status_code == 200
    assert repeated.json()["status"] == "pending_upload"
    assert repeated.json()["upload"] == asset["upload"]


def test_strict_lifecycle_still_fails_an_expired_reservation(sandbox):
    """Strict or not, complete on an expired reservation without bytes is 200 failed (§7.2)."""
    sandbox.faults.update(complete_without_bytes="lifecycle_error")
    sandbox.faults.expire_next_upload()
    asset = reserve(sandbox)
    done = complete(sandbox, asset["asset_id"])
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["failure_message"]) == ("failed", "Upload expired")


# -- replay mode remembering 4xx answers ------------------------------------------------------


def _attach_with_key(sb, project_id: str, asset_id: str, key: str) -> requests.Response:
    path = f"/projects/{project_id}/assets/{asset_id}/attach"
    return call(sb, "POST", path, headers={"Idempotency-Key": key})


def test_replay_errors_replays_a_403_for_the_same_key(sandbox):
    """replay_errors: a 4xx is the key's answer; the same key replays it, a new key goes through."""
    pid = sandbox.project_ids[0]
    asset_id = ready_asset(sandbox)
    faults_url = f"{sandbox.origin}/_sandbox/faults"
    knobs = {"idempotency": "replay", "replay_errors": True, "forbidden_projects": [pid]}
    assert requests.post(faults_url, json=knobs, timeout=TIMEOUT).status_code == 200
    refused = _attach_with_key(sandbox, pid, asset_id, "k-attach")
    assert refused.status_code == 403
    sandbox.faults.update(forbidden_projects=[])
    again = _attach_with_key(sandbox, pid, asset_id, "k-attach")
    assert again.status_code == 403
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == refused.json()
    assert sandbox.state()["nodes"][pid] == []
    fresh = _attach_with_key(sandbox, pid, asset_id, "k-attach-2")
    assert fresh.status_code == 201
    logged = requests_on(sandbox, "POST /projects/{id}/assets/{id}/attach")
    assert [(r["status"], r["replayed"]) for r in logged] == [
        (403, False),
        (403, True),
        (201, False),
    ]


def test_replay_mode_forgets_a_4xx_without_replay_errors(sandbox):
    """Replay mode alone remembers only 2xx: after a 403 the same key may succeed."""
    pid = sandbox.project_ids[0]
    asset_id = ready_asset(sandbox)
    sandbox.faults.update(idempotency="replay", forbidden_projects=[pid])
    assert _attach_with_key(sandbox, pid, asset_id, "k-attach").status_code == 403
    sandbox.faults.update(forbidden_projects=[])
    again = _attach_with_key(sandbox, pid, asset_id, "k-attach")
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers


def test_replay_errors_keeps_the_first_answer_over_a_later_conflict(sandbox):
    """The layer's own 422 is never stored: the key still replays its first answer afterwards."""
    sandbox.faults.update(idempotency="replay", replay_errors=True)
    headers = {"Idempotency-Key": "k-first"}
    body = _reserve_body(sandbox)
    first = call(sandbox, "POST", "/assets", body=body, headers=headers)
    other = call(sandbox, "POST", "/assets", body={**body, "file_name": "b.png"}, headers=headers)
    again = call(sandbox, "POST", "/assets", body=body, headers=headers)
    assert (first.status_code, other.status_code, again.status_code) == (201, 422, 201)
    assert again.json() == first.json()
    assert len(sandbox.state()["assets"]) == 1


@pytest.fixture
def replay_layer() -> Iterator[Idempotency]:
    """The idempotency layer alone, in replay mode with replay_errors, over a fresh store."""
    store = Store()
    faults = Faults(idempotency="replay", replay_errors=True)
    yield Idempotency(Context(store, faults, "http://127.0.0.1:1"))
    store.close()


@pytest.mark.parametrize(
    ("status", "kept"),
    [(400, True), (404, True), (409, True), (422, True), (429, False), (500, False), (503, False)],
)
def test_replay_errors_keeps_4xx_but_never_429_or_5xx(replay_layer, status, kept):
    """Which endpoint errors replay_errors remembers: every 4xx but 429; never a 5xx."""
    req = Request("POST", "/api/v1/assets", authorization="Bearer k", idempotency_key="k-err")

    def failing(_req: Request) -> Reply:
        raise ApiFailure(status, "some_code")

    try:
        first = replay_layer.run(req, failing)
    except ApiFailure as failure:
        first = failure.reply()
    second = replay_layer.run(req, lambda _req: Reply(201, {"asset_id": "asset_x"}))
    assert first.status == status
    assert first.is_replay is False
    if kept:
        assert (second.status, second.body, second.is_replay) == (status, first.body, True)
    else:
        assert (second.status, second.is_replay) == (201, False)


# -- malformed answers --------------------------------------------------------------------------


def _logged(sb, route: str) -> list[tuple[int | None, str | None]]:
    return [(r["status"], r["malformed"]) for r in requests_on(sb, route)]


def test_malformed_not_json_is_an_html_page_after_the_side_effect(sandbox):
    """malformed="not_json": 200 text/html "proxy error"; the asset was reserved all the same."""
    sandbox.faults.fail_next("POST /assets", malformed="not_json")
    answer = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox))
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "proxy error" in answer.text
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.text)
    assert len(sandbox.state()["assets"]) == 1
    assert _logged(sandbox, "POST /assets") == [(200, "not_json")]
    assert call(sandbox, "POST", "/assets", body=_reserve_body(sandbox)).status_code == 201


def test_malformed_array_answers_an_empty_list_after_the_side_effect(sandbox):
    """malformed="array": 200 JSON [] for a complete that did move the asset to ready."""
    asset = reserve(sandbox)
    upload(asset, b"bytes")
    sandbox.faults.fail_next("POST /assets/{id}/complete", malformed="array")
    answer = complete(sandbox, asset["asset_id"])
    assert (answer.status_code, answer.json()) == (200, [])
    assert answer.headers["Content-Type"] == "application/json"
    assert sandbox.state()["assets"][0]["status"] == "ready"
    assert _logged(sandbox, "POST /assets/{id}/complete") == [(200, "array")]


def test_malformed_missing_field_drops_the_main_id(sandbox):
    """malformed="missing_field": the real answer without its id (or a list without its items)."""
    asset_id = ready_asset(sandbox)
    pid = sandbox.project_ids[0]
    sandbox.faults.fail_next("POST /assets", malformed="missing_field")
    sandbox.faults.fail_next("POST /projects/{id}/assets/{id}/attach", malformed="missing_field")
    sandbox.faults.fail_next("GET /projects", malformed="missing_field")
    reserved = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox))
    attached = call(sandbox, "POST", f"/projects/{pid}/assets/{asset_id}/attach")
    listed = call(sandbox, "GET", "/projects", workspace_id=sandbox.workspace_id)
    assert reserved.status_code == 201
    assert "asset_id" not in reserved.json()
    assert "upload" in reserved.json()
    assert len(sandbox.state()["assets"]) == 2
    assert attached.status_code == 201
    assert set(attached.json()) == {"project_id", "asset_id", "canvas_url"}
    assert len(sandbox.state()["nodes"][pid]) == 1
    assert (listed.status_code, set(listed.json())) == (200, {"meta"})
    assert _logged(sandbox, "POST /assets")[-1] == (201, "missing_field")


def test_missing_field_names_a_field_for_every_api_route():
    """Every API route has the field that missing_field removes from its answer."""
    assert set(MAIN_FIELD) == set(API_ROUTES)


def _raw_post(sb, path: str, body: dict[str, Any]) -> bytes:
    """One POST on a raw socket, reading until the server closes the connection."""
    data = json.dumps(body).encode()
    head = (
        f"POST /api/v1{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {sb.api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sb.port), timeout=SHORT_TIMEOUT) as conn:
        conn.sendall(head.encode() + data)
        received = b""
        while chunk := conn.recv(65536):  # a socket timeout here: the server kept it open
            received += chunk
    return received


def test_malformed_truncated_announces_more_than_it_sends_then_closes(sandbox):
    """malformed="truncated": the body is cut short of Content-Length and the connection closed."""
    sandbox.faults.fail_next("POST /assets", malformed="truncated", times=2)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        call(sandbox, "POST", "/assets", body=_reserve_body(sandbox))
    head, _, body = _raw_post(sandbox, "/assets", _reserve_body(sandbox)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 ")
    announced = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    assert 0 < len(body) < announced
    assert len(sandbox.state()["assets"]) == 2
    assert _logged(sandbox, "POST /assets") == [(201, "truncated")] * 2
    assert call(sandbox, "GET", "/workspaces").status_code == 200


def test_malformed_redirect_points_elsewhere_on_loopback(sandbox):
    """malformed="redirect": 302 to another loopback URL outside the API, empty body."""
    asset_id = ready_asset(sandbox)
    sandbox.faults.fail_next("GET /assets/{id}", malformed="redirect")
    answer = requests.get(
        f"{sandbox.base_url}/assets/{asset_id}",
        headers={"Authorization": f"Bearer {sandbox.api_key}"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(sandbox.origin + "/")
    assert not location.startswith(sandbox.base_url)
    assert answer.content == b""
    assert _logged(sandbox, "GET /assets/{id}") == [(302, "redirect")]


def test_malformed_leaves_error_answers_alone(sandbox):
    """A scripted malformed fault garbles only a 2xx: an error answer goes out as it is."""
    sandbox.faults.fail_next("GET /assets/{id}", malformed="array")
    missing = call(sandbox, "GET", "/assets/asset_000000000000000000000000")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    assert _logged(sandbox, "GET /assets/{id}") == [(404, None)]


def test_malformed_rate_garbles_only_2xx_answers(sandbox):
    """malformed_rate=1: every 2xx is replaced by one of the kinds, errors pass unchanged."""
    requests.post(
        f"{sandbox.origin}/_sandbox/faults", json={"malformed_rate": 1.0}, timeout=TIMEOUT
    )
    for _ in range(12):
        with contextlib.suppress(requests.exceptions.ChunkedEncodingError):  # truncated
            call(sandbox, "GET", "/workspaces")
    assert call(sandbox, "GET", "/workspaces", key=None).status_code == 401
    logged = _logged(sandbox, "GET /workspaces")
    assert all(kind in MALFORMED_KINDS for _, kind in logged[:12])
    assert all(status == (302 if kind == "redirect" else 200) for status, kind in logged[:12])
    assert logged[12] == (401, None)


def test_replay_keeps_the_real_answer_behind_a_malformed_one(sandbox):
    """Replay mode stores the real answer, so a retry with the key gets it despite the garbling."""
    sandbox.faults.update(idempotency="replay")
    sandbox.faults.fail_next("POST /assets", malformed="missing_field")
    headers = {"Idempotency-Key": "k-garbled"}
    garbled = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    retried = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    assert "asset_id" not in garbled.json()
    assert retried.status_code == 201
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json()["asset_id"] == sandbox.state()["assets"][0]["asset_id"]
    assert len(sandbox.state()["assets"]) == 1
    logged = requests_on(sandbox, "POST /assets")
    assert [(r["malformed"], r["replayed"]) for r in logged] == [
        ("missing_field", False),
        (None, True),
    ]


def test_duplicate_mode_spends_the_key_behind_a_malformed_answer(sandbox):
    """Duplicate mode: the garbled request used the key, so a retry with it is 409 duplicate."""
    sandbox.faults.fail_next("POST /assets", malformed="not_json")
    headers = {"Idempotency-Key": "k-garbled"}
    call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    retried = call(sandbox, "POST", "/assets", body=_reserve_body(sandbox), headers=headers)
    assert retried.status_code == 409
    assert error_of(retried)["code"] == "idempotency_duplicate"
    assert len(sandbox.state()["assets"]) == 1


# -- the seed of the fault dice and the mid-body cut (the fault matrix, issue 11) -------------


def _rolls(faults: Faults, count: int = 64) -> list[bool]:
    return [faults.roll(0.5) for _ in range(count)]


def test_seed_makes_the_fault_dice_repeat():
    """Faults(seed=n) rolls the same sequence every time; update(seed=n) starts it over."""
    first = _rolls(Faults(seed=7))
    assert _rolls(Faults(seed=7)) == first
    assert _rolls(Faults(seed=8)) != first
    faults = Faults(seed=7)
    _rolls(faults)
    faults.update(seed=7)
    assert _rolls(faults) == first
    assert _rolls(Faults.from_options({"seed": "7"})) == first
    assert Faults(seed=7).to_dict()["seed"] == 7


def test_seed_is_validated():
    """A seed must be a non-negative integer (or unset)."""
    cases: list[tuple[Any, type[Exception]]] = [
        (-1, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        ("7", TypeError),
    ]
    for bad, error in cases:
        with pytest.raises(error, match="seed"):
            Faults(seed=bad)
    with pytest.raises(ValueError, match="seed"):
        Faults.from_options({"seed": "many"})
    faults = Faults(seed=3)
    faults.update(seed=None)
    assert faults.seed is None


def test_upload_cut_rate_drops_mid_body_after_spending_the_token(sandbox):
    """upload_cut_rate: the connection closes mid-body, nothing is stored, the token is spent."""
    sandbox.faults.update(upload_cut_rate=1.0)
    asset = reserve(sandbox)
    data = os.urandom(4 << 20)
    with pytest.raises(requests.ConnectionError):
        upload(asset, data)
    assert sandbox.blob_path(asset["asset_id"]) is None
    logged = requests_on(sandbox, "POST /upload")
    assert [(r["status"], r["dropped"]) for r in logged] == [(None, True)]
    sandbox.faults.reset()
    again = upload(asset, data)
    assert again.status_code == 400
    assert "has been used before" in again.json()["message"]
    assert complete(sandbox, asset["asset_id"]).json()["status"] == "pending_upload"


def test_upload_cut_rate_keeps_serving_the_next_upload(sandbox):
    """After a cut, a fresh reservation's upload on a new connection is stored whole."""
    sandbox.faults.update(upload_cut_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        upload(reserve(sandbox), b"\x89PNG short body")
    sandbox.faults.update(upload_cut_rate=0.0)
    asset = reserve(sandbox)
    assert upload(asset, b"\x89PNG whole").status_code == 200
    assert sandbox.blob_path(asset["asset_id"]).read_bytes() == b"\x89PNG whole"


def _ask(
    traffic: Traffic,
    t: float,
    *,
    connection: int | None,
    path: str = "/upload/api/v1/files/upload",
    exclusive: bool = False,
) -> int:
    return traffic.begin(
        method="POST",
        route=None,
        path=path,
        arrived=t,
        idempotency_key=None,
        authorization=False,
        identity="sk",
        latency_seconds=0.0,
        connection=connection,
        exclusive=exclusive,
    )


def test_the_refused_request_again_on_its_connection_is_flagged_within_the_grace():
    """The request a 429 answered, sent again on its connection, is a rate_window violation
    even within the grace; on another connection it may have been in flight."""
    traffic = Traffic(clock=FakeClock())
    traffic.announce_window("sk", 5, _ask(traffic, 99.99, connection=1))
    _ask(traffic, 100.01, connection=2)
    _ask(traffic, 100.01, connection=None)
    _ask(traffic, 100.01, connection=1, path="/elsewhere")
    assert traffic.violations() == []
    seq = _ask(traffic, 100.02, connection=1)
    _ask(traffic, 105.01, connection=1)  # after the window
    found = traffic.violations()
    assert [(v["kind"], v["seq"]) for v in found] == [("rate_window", seq)]
    assert "sent again after the 429 was read" in found[0]["detail"]


def test_an_exclusive_request_again_is_flagged_on_any_connection():
    """A POST about one asset (or under one key) cannot be in flight twice: sent again within
    the grace on any connection, it is a rate_window violation."""
    traffic = Traffic(clock=FakeClock())
    path = "/api/v1/assets/asset_1/complete"
    traffic.announce_window("sk", 5, _ask(traffic, 99.99, connection=1, path=path, exclusive=True))
    _ask(traffic, 100.01, connection=2, path="/api/v1/assets/asset_2/complete", exclusive=True)
    assert traffic.violations() == []
    seq = _ask(traffic, 100.01, connection=2, path=path, exclusive=True)
    assert [v["seq"] for v in traffic.violations()] == [seq]


def test_asking_again_at_once_on_the_429_connection_is_caught_over_http(sandbox):
    """Sending the refused upload again at once on its keep-alive connection is a rate_window
    violation; a GET there is not (a pool's other worker may read the same path)."""
    sandbox.faults.fail_next("POST /upload", status=429, retry_after=30)
    sandbox.faults.fail_next("GET /workspaces", status=429, retry_after=30)
    asset = reserve(sandbox)
    fields = form_fields(asset["upload"])
    auth = {"Authorization": f"Bearer {sandbox.api_key}"}
    with requests.Session() as session:
        for _ in range(2):
            session.post(
                asset["upload"]["url"],
                data=fields,
                files={"file": ("a.png", b"\x89PNG", "image/png")},
                timeout=TIMEOUT,
            )
            session.get(sandbox.base_url + "/workspaces", headers=auth, timeout=TIMEOUT)
    found = violations(sandbox, "rate_window")
    assert [v["detail"].split(" arrived")[0] for v in found] == ["POST /upload"]
    assert "sent again after the 429 was read" in found[0]["detail"]


def test_complete_again_at_once_on_a_new_connection_is_caught_over_http(sandbox):
    """complete refused with 429 and sent again at once, even on a fresh connection, is a
    rate_window violation (one asset's complete is never in flight twice)."""
    asset_id = reserve(sandbox)["asset_id"]
    sandbox.faults.fail_next("POST /assets/{id}/complete", status=429, retry_after=30)
    assert complete(sandbox, asset_id).status_code == 429
    complete(sandbox, asset_id)
    found = violations(sandbox, "rate_window")
    assert [v["detail"].split(" arrived")[0] for v in found] == ["POST /assets/{id}/complete"]
