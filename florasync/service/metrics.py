"""The opt-in metrics endpoint: Prometheus counters fed by florasync's hooks, and /healthz.

Owns every Prometheus metric (in a registry of its own, never the global one), the small HTTP
server that exposes them with the health answer, and ``HealthState``, the daemon's judgement of
"healthy". The rest of florasync reaches it only through plain callables (``FloraClient``'s
``on_response`` / ``on_retry``, the pipeline's ``Progress``), so nothing else imports prometheus.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from florasync import __version__, errors
from florasync.flora import urls
from florasync.service.serving import TrackingServer
from florasync.sync.transfer import Outcome

log = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, str]]
"""Returns (healthy, reason); the reason is what /healthz shows."""

KEY_REFUSED = "API key refused"
# text format 0.0.4: what generate_latest() writes for our (legacy-valid) names, and what every
# Prometheus version parses; prometheus_client >= 0.22 names this CONTENT_TYPE_PLAIN_0_0_4
CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_BUCKETS_SECONDS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
_SYNCED = frozenset({Outcome.UPLOADED, Outcome.ATTACHED, Outcome.UNCHANGED})
_RETRY_REASONS = ("rate_limited", "server_error", "network")
_HANDLER_TIMEOUT_SECONDS = 5.0  # a scraper that stalls mid-request cannot hold a thread longer
_POLL_SECONDS = 0.1


class Metrics:
    """florasync's Prometheus metrics, and the hooks that feed them.

    ``on_response`` and ``on_retry`` plug into ``api.FloraClient``; ``queued`` / ``finished`` /
    ``sent`` make an instance a pipeline ``Progress``; ``track_queue`` gives the gauges read at
    scrape time. ``wall_clock`` stamps the last successful sync.
    """

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._wall_clock = wall_clock
        self._queue_depth: Callable[[], float] = lambda: 0.0
        self._settling: Callable[[], float] = lambda: 0.0
        reg = self.registry
        self.files = Counter(
            "florasync_files", "Files that reached an outcome", ["outcome"], registry=reg
        )
        self.uploaded_bytes = Counter(
            "florasync_uploaded_bytes", "Size of the files uploaded as new assets", registry=reg
        )
        self.sent_bytes = Counter(
            "florasync_sent_bytes",
            "Bytes sent to the upload target, multipart framing and repeated uploads included",
            registry=reg,
        )
        self.request_seconds = Histogram(
            "florasync_request_seconds",
            "FLORA API requests by endpoint and status ('none' when no answer arrived)",
            ["endpoint", "status"],
            buckets=REQUEST_BUCKETS_SECONDS,
            registry=reg,
        )
        self.retries = Counter(
            "florasync_retries", "API requests sent again, by reason", ["reason"], registry=reg
        )
        self.rate_limit_waits = Counter(
            "florasync_rate_limit_waits", "Waits caused by a 429 answer", registry=reg
        )
        self.rate_limit_wait_seconds = Counter(
            "florasync_rate_limit_wait_seconds",
            "Seconds of waiting announced after 429 answers",
            registry=reg,
        )
        self._define_gauges(reg)
        for outcome in Outcome:
            self.files.labels(outcome=outcome.value)
        for reason in _RETRY_REASONS:
            self.retries.labels(reason=reason)

    def _define_gauges(self, reg: CollectorRegistry) -> None:
        queue_depth = Gauge(
            "florasync_queue_depth", "Files handed over and not yet decided", registry=reg
        )
        queue_depth.set_function(self._read_queue_depth)
        settling = Gauge("florasync_settling_files", "Files waiting to stop changing", registry=reg)
        settling.set_function(self._read_settling)
        self.last_success = Gauge(
            "florasync_last_success_timestamp_seconds",
            "Unix time a file was last synced (uploaded, attached or found unchanged); 0: never",
            registry=reg,
        )
        build = Info("florasync_build", "The running florasync", registry=reg)
        build.info({"version": __version__, "python": platform.python_version()})
        ProcessCollector(registry=reg)  # CPU, memory, open files, start time (Linux /proc)

    def track_queue(
        self, *, depth: Callable[[], float], settling: Callable[[], float] | None = None
    ) -> None:
        """Read the queue gauges from these callables at every scrape."""
        self._queue_depth = depth
        if settling is not None:
            self._settling = settling

    def _read_queue_depth(self) -> float:
        return self._queue_depth()  # the callable track_queue set last, read at scrape time

    def _read_settling(self) -> float:
        return self._settling()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE_METRICS``)."""
        return generate_latest(self.registry)

    # -- hooks ----------------------------------------------------------------------------

    def on_response(self, method: str, route: str, status: int | None, seconds: float) -> None:
        """``FloraClient`` ``on_response``: one observation per request sent."""
        label = "none" if status is None else str(status)
        self.request_seconds.labels(endpoint=f"{method} {route}", status=label).observe(seconds)

    def on_retry(self, exc: BaseException, delay_seconds: float) -> None:
        """``FloraClient`` ``on_retry``: a request is about to be sent again after a wait."""
        reason = retry_reason(exc)
        self.retries.labels(reason=reason).inc()
        if reason == "rate_limited":
            self.rate_limit_waits.inc()
            self.rate_limit_wait_seconds.inc(max(0.0, delay_seconds))

    def on_outcome(self, outcome: str, size_bytes: int) -> None:
        """A file reached ``outcome`` (an ``Outcome`` value)."""
        self.files.labels(outcome=str(outcome)).inc()
        if outcome == Outcome.UPLOADED:
            self.uploaded_bytes.inc(max(0, size_bytes))
        if outcome in _SYNCED:
            self.last_success.set(self._wall_clock())

    # -- pipeline.Progress ----------------------------------------------------------------

    def queued(self, files: int, size_bytes: int) -> None:
        """Nothing to count: the queue depth is read from ``track_queue``'s callable."""

    def finished(self, outcome: Outcome, size_bytes: int) -> None:
        self.on_outcome(outcome, size_bytes)

    def sent(self, size_bytes: int) -> None:
        self.sent_bytes.inc(max(0, size_bytes))


def retry_reason(exc: BaseException) -> str:
    """The ``reason`` label of a retry: rate_limited, server_error, network, else the type."""
    if isinstance(exc, errors.RateLimitedError):
        return "rate_limited"
    if isinstance(exc, errors.ServerError):
        return "server_error"
    if isinstance(exc, errors.NetworkError):
        return "network"
    return type(exc).__name__


class HealthState:
    """Whether the daemon is healthy, from its threads and the API's recent answers.

    Unhealthy when ``threads_ok()`` is false, when ``trouble()`` names a reason (the journal
    cannot be reached), when the last API answer refused the key, or when API requests have
    failed for ``api_window_seconds`` without one success. Paused (issue 16) is healthy, and
    the reason says so. Healthy at start,
    before any API traffic. Times are on ``clock`` (monotonic); ``check`` takes one explicitly.
    """

    def __init__(
        self,
        threads_ok: Callable[[], bool] = lambda: True,
        *,
        trouble: Callable[[], str | None] = lambda: None,
        paused: Callable[[], str | None] = lambda: None,
        api_window_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threads_ok = threads_ok
        self.trouble = trouble
        self.paused = paused
        self.api_window_seconds = api_window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._refused = False
        self._reason = ""

    def api_ok(self, now: float) -> None:
        """The API answered usefully (any answer that is not a 5xx or a key refusal)."""
        with self._lock:
            self._failing_since = None
            self._refused = False

    def api_failed(self, now: float, reason: str, *, refused: bool = False) -> None:
        """An API request failed; ``refused`` (with ``KEY_REFUSED``) for a 401: fatal at once."""
        with self._lock:
            if self._failing_since is None:
                self._failing_since = now
            self._refused = refused
            self._reason = reason

    def on_response(self, method: str, route: str, status: int | None, seconds: float) -> None:
        """``FloraClient`` ``on_response`` hook: records the answer at ``clock()``."""
        now = self._clock()
        if status == 401:
            self.api_failed(now, KEY_REFUSED, refused=True)
        elif status is None or status >= 500:
            answer = "no answer" if status is None else f"HTTP {status}"
            self.api_failed(now, f"{method} {route}: {answer}")
        else:
            self.api_ok(now)

    def check(self, now: float) -> tuple[bool, str]:
        """(healthy, reason) at ``now``; the reason is "ok" when healthy."""
        if not self.threads_ok():
            return False, "a florasync thread has stopped"
        if (trouble := self.trouble()) is not None:
            return False, trouble
        if (paused := self.paused()) is not None:
            return True, f"paused: {paused}"  # healthy: it does what it was told
        with self._lock:
            if self._refused:
                return False, self._reason
            failing = None if self._failing_since is None else now - self._failing_since
            if failing is not None and failing >= self.api_window_seconds:
                return False, f"no successful API answer for {failing:.0f} s ({self._reason})"
        return True, "ok"

    def __call__(self) -> tuple[bool, str]:
        """``check`` at ``clock()``: a ``HealthCheck`` for ``MetricsServer``."""
        return self.check(self._clock())


class MetricsServer:
    """Serves GET/HEAD /metrics and /healthz on ``listen`` ("HOST:PORT", port 0: any free one).

    There is no authentication: it listens where the user says, with a warning when that is not
    a loopback address. ``start`` binds and serves in a thread; ``stop`` closes the socket and
    joins every thread it started.
    """

    def __init__(self, metrics: Metrics, listen: str, health: HealthCheck) -> None:
        self.metrics = metrics
        self.listen = listen
        self.health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port bound by ``start`` (the real one when ``listen`` asked for port 0)."""
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Bind and serve in a background thread; returns self.

        Raises:
            errors.ConfigError: ``metrics.listen`` cannot be bound (address in use, no such host).
        """
        host, port = _split_listen(self.listen)
        try:
            self._server = _Server((host, port), self.respond)
        except OSError as exc:
            raise errors.ConfigError(
                "metrics.listen", f"cannot listen on {self.listen}: {exc}"
            ) from exc
        if not urls.is_loopback_host(host):
            log.warning("metrics endpoint on %s is reachable from other machines", self.listen)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_SECONDS},
            name="florasync-metrics",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics on http://%s/metrics", _join_listen(host, self.port))
        return self

    def stop(self) -> None:
        """Stop serving, close the socket, join the server thread and every request thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        if thread is not None:
            server.shutdown()
            thread.join()
        server.server_close()
        server.join_handlers(_HANDLER_TIMEOUT_SECONDS * 2)

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        route = path.split("?", 1)[0]
        if route == "/metrics":
            return 200, CONTENT_TYPE_METRICS, self.metrics.exposition()
        if route == "/healthz":
            healthy, reason = self.health()
            body = f"{reason}\n"  # "ok", "paused: ...", or what is wrong
            return (200 if healthy else 503), "text/plain; charset=utf-8", body.encode()
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Server(TrackingServer):
    """Keeps its request threads, so ``stop`` can join them."""

    thread_name = "florasync-metrics-request"

    def __init__(
        self, address: tuple[str, int], respond: Callable[[str], tuple[int, str, bytes]]
    ) -> None:
        self.respond = respond
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this from inside its except block, so exc_info is the error
        log.warning("metrics request from %s failed", client_address, exc_info=True)  # noqa: LOG014


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _HANDLER_TIMEOUT_SECONDS
    disable_nagle_algorithm = True
    server_version = "florasync"
    sys_version = ""

    def do_GET(self) -> None:
        self._reply(with_body=True)

    def do_HEAD(self) -> None:
        self._reply(with_body=False)

    def _reply(self, *, with_body: bool) -> None:
        status, content_type, body = self.server.respond(self.path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics request from %s: %s", self.address_string(), format % args)


def _split_listen(listen: str) -> tuple[str, int]:
    """("HOST", PORT) from "HOST:PORT" or "[V6]:PORT"."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise errors.ConfigError("metrics.listen", f"must be HOST:PORT (got {listen!r})")
    return host.strip("[]"), int(port)


def _join_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
