"""The control listener (issue 16): the page, the API and its event stream over HTTP(S).

Owns the socket, the request threads (joined on ``stop``), the checks every request passes
first (``access.Gatekeeper``), the static files of the page, the Server-Sent Events stream and
the response headers that keep a browser from framing the page or loading anything from
elsewhere. Routing lives in ``api``, shapes in ``report``.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from importlib import resources
from pathlib import Path
from typing import Any

from florasync import errors
from florasync.service.control.access import Gatekeeper
from florasync.service.control.api import MAX_BODY_BYTES, PREFIX, Api
from florasync.service.control.feed import Feed
from florasync.service.serving import TrackingServer

log = logging.getLogger(__name__)

STREAM_MIN_SECONDS = 0.5  # a busy daemon sends at most two snapshots a second
STREAM_MAX_SECONDS = 5.0  # and an idle one at least one every five (the page sees it is alive)
_HANDLER_TIMEOUT_SECONDS = 10.0
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def static_files() -> dict[str, Path]:
    """The page's files shipped in the package, by name."""
    root = resources.files("florasync.service.control") / "static"
    return {
        entry.name: Path(str(entry))
        for entry in root.iterdir()
        if entry.is_file() and entry.name.rsplit(".", 1)[-1] in {"html", "js", "css", "svg", "png"}
    }


class ControlServer:
    """Serves ``/`` (the page), ``/static/*``, ``/api/v1/*`` and ``/api/v1/stream``."""

    def __init__(
        self,
        api: Api,
        feed: Feed,
        gatekeeper_for: Any,
        host: str,
        port: int,
        *,
        tls: tuple[Path, Path] | None = None,
        request_done: Callable[[], None] = lambda: None,
    ) -> None:
        self.api = api
        self.request_done = request_done  # on the request's thread, once it is answered
        self.feed = feed
        self._gatekeeper_for = gatekeeper_for  # port -> Gatekeeper (the port is known on bind)
        self.gatekeeper: Gatekeeper | None = None
        self._host, self._port, self._tls = host, port, tls
        self.stopping = threading.Event()
        self.static = static_files()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the control server is not started")
        port = int(self._server.server_address[1])
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls else 'http'}://{host}:{port}/"

    def start(self) -> ControlServer:
        """Bind and serve in a thread.

        Raises:
            errors.ConfigError: ``control.listen`` cannot be bound, or the TLS files not used.
        """
        try:
            self._server = _Server((self._host, self._port), self)
            if self._tls is not None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
                self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            if self._server is not None:
                self._server.server_close()
            raise errors.ConfigError(
                "control.listen", f"cannot listen on {self._host}:{self._port}: {exc}"
            ) from exc
        self.gatekeeper = self._gatekeeper_for(int(self._server.server_address[1]))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="florasync-control",
            daemon=True,
        )
        self._thread.start()
        log.debug("control listener on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving (event streams end within a moment), join every thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.stopping.set()
        self.feed.changed()  # wakes every stream, which then sees ``stopping``
        if server is None:
            return
        if thread is not None:
            server.shutdown()
            thread.join()
        server.server_close()
        server.close_connections()
        server.join_handlers(_HANDLER_TIMEOUT_SECONDS)


class _Server(TrackingServer):
    thread_name = "florasync-control-request"

    def __init__(self, address: tuple[str, int], control: ControlServer) -> None:
        self.control = control
        super().__init__(address, _Handler)

    def request_done(self) -> None:
        self.control.request_done()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("control request from %s failed", client_address, exc_info=True)  # noqa: LOG014


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _HANDLER_TIMEOUT_SECONDS
    protocol_version = "HTTP/1.1"
    server_version = "florasync"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        control = self.server.control
        gatekeeper = control.gatekeeper
        assert gatekeeper is not None  # noqa: S101 -- set before serving starts
        refusal = gatekeeper.check(method, self.headers)
        if refusal is not None:
            self._drain_body()
            self._json(refusal.status, {"error": refusal.code, "message": refusal.message})
            return
        route, _, query = self.path.partition("?")
        if route == PREFIX + "stream" and method == "GET":
            self._stream()
        elif route.startswith(PREFIX):
            body = self._body()
            if body is None:
                self._json(413, {"error": "too_large", "message": "the body is too large"})
                return
            status, answer = control.api.handle(method, route, query, body)
            self._json(status, answer, with_body=method != "HEAD")
        elif method in ("GET", "HEAD"):
            self._static(route, with_body=method == "GET")
        else:
            self._json(405, {"error": "method_not_allowed", "message": f"{method} {route}"})

    def _static(self, route: str, *, with_body: bool) -> None:
        name = "index.html" if route in ("/", "/index.html") else route.removeprefix("/static/")
        files = self.server.control.static
        if route not in ("/", "/index.html") and not route.startswith("/static/"):
            name = ""
        if name not in files:
            self._json(404, {"error": "not_found", "message": f"no such page: {route}"})
            return
        data = files[name].read_bytes()
        content_type = _STATIC_TYPES.get(Path(name).suffix, "application/octet-stream")
        self._send(200, content_type, data, with_body=with_body)

    def _stream(self) -> None:
        """Server-Sent Events: a snapshot at once, then on change (throttled) or a heartbeat."""
        control = self.server.control
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        seen = -1
        try:
            while not control.stopping.is_set():
                seen = control.feed.version
                data = json.dumps(control.api.report.snapshot(), separators=(",", ":"))
                self.wfile.write(f"event: snapshot\ndata: {data}\n\n".encode())
                self.wfile.flush()
                if control.stopping.wait(STREAM_MIN_SECONDS):
                    break
                control.feed.wait_change(seen, STREAM_MAX_SECONDS - STREAM_MIN_SECONDS)
        except (OSError, ValueError):
            return  # the page went away

    def _body(self) -> bytes | None:
        length = _length(self.headers.get("Content-Length"))
        if length < 0 or length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _drain_body(self) -> None:
        length = _length(self.headers.get("Content-Length"))
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _json(self, status: int, answer: Any, *, with_body: bool = True) -> None:
        data = json.dumps(answer).encode()
        self._send(status, "application/json", data, with_body=with_body)

    def _send(self, status: int, content_type: str, data: bytes, *, with_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control request from %s: %s", self.address_string(), format % args)


def _length(header: str | None) -> int:
    """The body's length; -1 when the header is not a number (the body is then refused)."""
    text = (header or "0").strip()
    return int(text) if text.isdigit() else -1
