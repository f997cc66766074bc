"""The sandbox's fault injection: scripted and random faults, rate limits, violations, knobs."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from florasync.sandbox import Faults
from florasync.sandbox.ratelimit import RateLimiter
from florasync.sandbox.traffic import Traffic
from tests.helpers import SHORT_TIMEOUT, wait_until
from tests.test_sandbox import call, error_of, requests_on, reserve, upload, violations


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
        }
    )
    assert faults.error_rate == 0.3
    assert faults.revoked is True
    assert (faults.rate_limit_rps, faults.rate_limit_burst) == (5.0, 3)
    assert faults.forbidden_projects == ["prj_a", "prj_b"]
    assert faults.idempotency_window() == 86400.0
    with pytest.raises(ValueError, match="error_rate"):
        Faults.from_options({"error_rate": "lots"})
    with pytest.raises(ValueError, match="nonsense"):
        Faults.from_options({"nonsense": "1"})


def test_fail_next_validates_and_shows_in_to_dict():
    """fail_next() refuses unknown routes and mixed modes; pending entries show in to_dict()."""
    faults = Faults()
    with pytest.raises(ValueError, match="route"):
        faults.fail_next("GET /nowhere", status=500)
    with pytest.raises(ValueError, match="not both"):
        faults.fail_next("POST /assets", status=500, drop="after")
    faults.fail_next("POST /assets/{id}/retry", status=503, times=2)
    assert faults.to_dict()["fail_next"] == [
        {
            "route": "POST /assets/{id}/retry",
            "status": 503,
            "code": None,
            "retry_after": None,
            "drop": None,
            "remaining": 2,
        }
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
