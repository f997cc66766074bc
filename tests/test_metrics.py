"""The metrics endpoint: counters fed by the hooks, /metrics and /healthz over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from florasync import errors
from florasync.flora import api, retrying
from florasync.flora.secret import Secret
from florasync.sandbox import Sandbox
from florasync.service.metrics import KEY_REFUSED, HealthState, Metrics, MetricsServer, retry_reason
from florasync.sync.transfer import Outcome

from .helpers import SHORT_TIMEOUT

Labels = frozenset[tuple[str, str]]


def _samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return _samples(metrics.exposition().decode()).get((name, frozenset(labels.items())))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(wall_clock=lambda: 1_700_000_000.0)


@pytest.fixture
def health() -> HealthState:
    return HealthState(clock=lambda: 0.0)


@pytest.fixture
def server(metrics: Metrics, health: HealthState) -> Iterator[MetricsServer]:
    with MetricsServer(metrics, "127.0.0.1:0", health) as srv:
        yield srv


def _get(srv: MetricsServer, path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{srv.port}{path}", timeout=SHORT_TIMEOUT)


# -- the hooks ------------------------------------------------------------------------------


def test_outcomes_count_files_bytes_and_last_success(metrics: Metrics) -> None:
    """Each outcome counts a file; uploads add their size; a synced file stamps the time."""
    assert _value(metrics, "florasync_last_success_timestamp_seconds") == 0.0
    metrics.on_outcome("uploaded", 1000)
    metrics.on_outcome(Outcome.UPLOADED, 24)
    metrics.on_outcome("failed", 500)
    assert _value(metrics, "florasync_files_total", outcome="uploaded") == 2.0
    assert _value(metrics, "florasync_files_total", outcome="failed") == 1.0
    assert _value(metrics, "florasync_files_total", outcome="attached") == 0.0
    assert _value(metrics, "florasync_uploaded_bytes_total") == 1024.0
    assert _value(metrics, "florasync_last_success_timestamp_seconds") == 1_700_000_000.0


def test_failures_do_not_stamp_last_success(metrics: Metrics) -> None:
    """Failed, deferred and vanished files leave the last-success time alone."""
    for outcome in ("failed", "deferred", "vanished", "changed"):
        metrics.on_outcome(outcome, 10)
    assert _value(metrics, "florasync_last_success_timestamp_seconds") == 0.0
    metrics.on_outcome("unchanged", 10)
    assert _value(metrics, "florasync_last_success_timestamp_seconds") == 1_700_000_000.0


def test_progress_adapter_counts_outcomes_and_bytes_sent(metrics: Metrics) -> None:
    """As a pipeline Progress, finished counts outcomes and sent counts bytes on the wire."""
    metrics.queued(3, 300)
    metrics.finished(Outcome.ATTACHED, 100)
    metrics.sent(4096)
    metrics.sent(100)
    assert _value(metrics, "florasync_files_total", outcome="attached") == 1.0
    assert _value(metrics, "florasync_sent_bytes_total") == 4196.0


def test_response_hook_fills_the_histogram(metrics: Metrics) -> None:
    """Each response lands in the histogram under "METHOD route" and its status, or "none"."""
    metrics.on_response("POST", "/assets", 201, 0.004)
    metrics.on_response("POST", "/assets", 201, 2.0)
    metrics.on_response("GET", "/assets/{id}", None, 10.0)
    name = "florasync_request_seconds"
    assert _value(metrics, f"{name}_count", endpoint="POST /assets", status="201") == 2.0
    assert _value(metrics, f"{name}_sum", endpoint="POST /assets", status="201") == 2.004
    bucket = {"endpoint": "POST /assets", "status": "201"}
    assert _value(metrics, f"{name}_bucket", le="0.005", **bucket) == 1.0
    assert _value(metrics, f"{name}_bucket", le="60.0", **bucket) == 2.0
    assert _value(metrics, f"{name}_count", endpoint="GET /assets/{id}", status="none") == 1.0


def test_retry_hook_classifies_and_counts_rate_limit_waits(metrics: Metrics) -> None:
    """Retries count by reason; a 429 also counts a wait and its seconds."""
    metrics.on_retry(errors.RateLimitedError("slow down", status=429), 5.0)
    metrics.on_retry(errors.RateLimitedError("slow down", status=429), 2.5)
    metrics.on_retry(errors.ServerError("boom", status=503), 0.3)
    metrics.on_retry(errors.NetworkError("reset"), 0.1)
    assert _value(metrics, "florasync_retries_total", reason="rate_limited") == 2.0
    assert _value(metrics, "florasync_retries_total", reason="server_error") == 1.0
    assert _value(metrics, "florasync_retries_total", reason="network") == 1.0
    assert _value(metrics, "florasync_rate_limit_waits_total") == 2.0
    assert _value(metrics, "florasync_rate_limit_wait_seconds_total") == 7.5


def test_unknown_retry_errors_are_labelled_by_type() -> None:
    """An error outside the three known reasons is labelled with its type name."""
    assert retry_reason(errors.UploadUncertainError("lost")) == "UploadUncertainError"
    assert retry_reason(TimeoutError()) == "TimeoutError"


def test_queue_gauges_are_read_at_scrape_time(metrics: Metrics) -> None:
    """The queue and settling gauges show what their callables return when scraped."""
    depth = [0]
    metrics.track_queue(depth=lambda: depth[0], settling=lambda: 2)
    assert _value(metrics, "florasync_queue_depth") == 0.0
    depth[0] = 7
    assert _value(metrics, "florasync_queue_depth") == 7.0
    assert _value(metrics, "florasync_settling_files") == 2.0


def test_build_info_shows_the_version(metrics: Metrics) -> None:
    """The build info carries florasync's version."""
    from florasync import __version__

    infos = [
        s.labels
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name == "florasync_build_info"
    ]
    assert [i["version"] for i in infos] == [__version__]


def test_instances_do_not_share_counters() -> None:
    """Two Metrics instances have separate registries and separate counts."""
    first, second = Metrics(), Metrics()
    first.on_outcome("uploaded", 10)
    assert _value(first, "florasync_files_total", outcome="uploaded") == 1.0
    assert _value(second, "florasync_files_total", outcome="uploaded") == 0.0


# -- the health judgement ---------------------------------------------------------------------


def test_health_starts_healthy_and_refusal_is_immediate() -> None:
    """Healthy before any traffic; a refused key is unhealthy at once, until the API answers."""
    health = HealthState()
    assert health.check(0.0) == (True, "ok")
    health.api_failed(1.0, KEY_REFUSED, refused=True)
    assert health.check(1.0) == (False, KEY_REFUSED)
    health.api_ok(2.0)
    assert health.check(2.0) == (True, "ok")


def test_health_tolerates_failures_for_the_window() -> None:
    """Failures turn unhealthy only after a whole window without one success."""
    health = HealthState(api_window_seconds=600.0)
    health.api_failed(100.0, "GET /workspaces: HTTP 503")
    health.api_failed(500.0, "GET /workspaces: no answer")
    assert health.check(699.0)[0] is True
    healthy, reason = health.check(700.0)
    assert not healthy
    assert "no successful API answer for 600 s" in reason
    assert "no answer" in reason
    health.api_ok(701.0)
    assert health.check(5000.0) == (True, "ok")


def test_health_fails_when_threads_are_dead() -> None:
    """A dead thread makes the daemon unhealthy whatever the API says."""
    alive = [True]
    health = HealthState(lambda: alive[0])
    assert health.check(0.0)[0] is True
    alive[0] = False
    assert health.check(0.0) == (False, "a florasync thread has stopped")


def test_health_response_hook_reads_statuses() -> None:
    """As a response hook: 401 is a refusal, 5xx and no answer are failures, the rest success."""
    now = [0.0]
    health = HealthState(api_window_seconds=10.0, clock=lambda: now[0])
    health.on_response("GET", "/workspaces", 503, 0.1)
    now[0] = 10.0
    assert health()[0] is False
    health.on_response("GET", "/assets/{id}", 404, 0.1)
    assert health() == (True, "ok")
    health.on_response("GET", "/workspaces", 401, 0.1)
    assert health() == (False, KEY_REFUSED)


# -- the HTTP server -------------------------------------------------------------------------


def test_metrics_endpoint_serves_the_registry(server: MetricsServer, metrics: Metrics) -> None:
    """GET /metrics answers the Prometheus text format with the hooks' values."""
    metrics.on_outcome("uploaded", 2048)
    metrics.on_response("POST", "/assets", 201, 0.02)
    response = _get(server, "/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = _samples(response.text)
    assert samples[("florasync_files_total", frozenset({("outcome", "uploaded")}))] == 1.0
    assert samples[("florasync_uploaded_bytes_total", frozenset())] == 2048.0
    labels = frozenset({("endpoint", "POST /assets"), ("status", "201")})
    assert samples[("florasync_request_seconds_count", labels)] == 1.0


def test_healthz_follows_the_health_state(server: MetricsServer, health: HealthState) -> None:
    """/healthz is 200 "ok", 503 with the reason once the key is refused, 200 again after."""
    first = _get(server, "/healthz")
    assert (first.status_code, first.text) == (200, "ok\n")
    health.api_failed(0.0, KEY_REFUSED, refused=True)
    refused = _get(server, "/healthz")
    assert (refused.status_code, refused.text) == (503, f"{KEY_REFUSED}\n")
    health.api_ok(0.0)
    assert _get(server, "/healthz").status_code == 200


def test_other_paths_are_404_and_head_has_no_body(server: MetricsServer) -> None:
    """Unknown paths get 404; HEAD answers like GET without a body."""
    assert _get(server, "/").status_code == 404
    assert _get(server, "/metrics/extra").status_code == 404
    head = requests.head(f"http://127.0.0.1:{server.port}/healthz", timeout=SHORT_TIMEOUT)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["Content-Length"] == "3"


def test_stop_joins_every_thread_and_frees_the_port(metrics: Metrics) -> None:
    """After stop(), no server or request thread is alive and the port can be bound again."""
    before = set(threading.enumerate())
    srv = MetricsServer(metrics, "127.0.0.1:0", lambda: (True, "ok")).start()
    port = srv.port
    for _ in range(3):
        assert _get(srv, "/metrics").status_code == 200
    srv.stop()
    srv.stop()  # a second stop is harmless
    assert [t.name for t in threading.enumerate() if t not in before] == []
    with MetricsServer(metrics, f"127.0.0.1:{port}", lambda: (True, "ok")) as again:
        assert again.port == port


def test_a_port_in_use_is_a_config_error(server: MetricsServer, metrics: Metrics) -> None:
    """Binding a port that is taken raises ConfigError naming metrics.listen."""
    other = MetricsServer(metrics, f"127.0.0.1:{server.port}", lambda: (True, "ok"))
    with pytest.raises(errors.ConfigError, match="cannot listen") as info:
        other.start()
    assert info.value.key == "metrics.listen"


def test_non_loopback_listen_logs_a_warning(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """Listening on all interfaces warns that the endpoint is reachable from other machines."""
    with MetricsServer(metrics, "0.0.0.0:0", lambda: (True, "ok")):
        pass
    assert "reachable from other machines" in caplog.text


# -- wired into the real client ---------------------------------------------------------------


def test_client_hooks_feed_the_metrics(sandbox: Sandbox, metrics: Metrics) -> None:
    """A real FloraClient's 503, 429 and retries show up in the histogram and retry counters."""
    sandbox.faults.update(retry_after_header=False)
    sandbox.faults.fail_next("GET /workspaces", status=503)
    sandbox.faults.fail_next("GET /workspaces", status=429)
    policy = retrying.RetryPolicy(backoff_base_seconds=0.01, retry_after_default_seconds=0.2)
    client = api.FloraClient(
        sandbox.base_url,
        Secret(sandbox.api_key),
        policy=policy,
        on_response=metrics.on_response,
        on_retry=metrics.on_retry,
    )
    with client:
        assert client.list_workspaces()
    name = "florasync_request_seconds_count"
    for status in ("503", "429", "200"):
        assert _value(metrics, name, endpoint="GET /workspaces", status=status) == 1.0
    assert _value(metrics, "florasync_retries_total", reason="server_error") == 1.0
    assert _value(metrics, "florasync_retries_total", reason="rate_limited") == 1.0
    assert _value(metrics, "florasync_rate_limit_waits_total") == 1.0
    waited = _value(metrics, "florasync_rate_limit_wait_seconds_total")
    assert waited is not None
    assert 0.1 < waited < 1.0
