"""The HTTP request handler: one keep-alive connection, each request routed to its part.

Owns the wire side of every request: parsing the URL and headers into a ``Request``, the
latency fault and the stop-aware wait the API's delays use, routing (API, upload target, asset
files, control), writing JSON answers with ``Content-Length`` and a ``request-id`` (CONTRACT
§1), writing malformed answers as they are, and closing the connection for drops and truncated
answers.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from florasync import __version__
from florasync.sandbox import assets, control, shapes
from florasync.sandbox.context import (
    API_PREFIX,
    CONTROL_PREFIX,
    FILES_PREFIX,
    UPLOAD_PATH,
    Context,
    Request,
)
from florasync.sandbox.dispatch import Dispatcher
from florasync.sandbox.replies import Drop, Garbled, Outcome, Reply, error_reply, invalid
from florasync.sandbox.traffic import Traffic
from florasync.sandbox.upload import FLORA_HEADERS, UploadRequest, UploadTarget
from florasync.sandbox.wire import BodyReader, BodyTooLarge

log = logging.getLogger(__name__)

MAX_JSON_BODY = 1 << 20
FILE_CHUNK = 1 << 20
_CONNECTIONS = itertools.count(1)
"""Numbers every connection, so the request log can tell a keep-alive reuse (Traffic)."""


@dataclass(frozen=True, slots=True)
class App:
    """Everything a handler thread needs, shared by all of them."""

    ctx: Context
    traffic: Traffic
    dispatcher: Dispatcher
    upload: UploadTarget
    stop: threading.Event


class _AppServer(Protocol):
    app: App


class Handler(BaseHTTPRequestHandler):
    """Serves one connection (HTTP/1.1 keep-alive) until the client or ``stop()`` closes it."""

    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold every response back by ~40 ms on loopback
    disable_nagle_algorithm = True
    server_version = f"florasync-sandbox/{__version__}"
    connection_number = 0

    def setup(self) -> None:
        super().setup()
        self.connection_number = next(_CONNECTIONS)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.client_address[0], format % args)

    @property
    def _app(self) -> App:
        return cast(_AppServer, self.server).app

    def _serve(self) -> None:
        arrived = time.monotonic()
        try:
            outcome = self._route(urlsplit(self.path), arrived)
            if outcome is not None:
                self._write(outcome)
        except OSError:  # the client went away (or stop() shut the socket): nothing to answer
            log.debug("connection lost during %s %s", self.command, self.path, exc_info=True)
            self.close_connection = True
        except Exception:
            log.exception("sandbox bug while serving %s %s", self.command, self.path)
            self._write(error_reply(500))
            self.close_connection = True

    def _route(self, url: SplitResult, arrived: float) -> Outcome | None:
        body = BodyReader(self.rfile, self.headers)
        if url.path.startswith(CONTROL_PREFIX):
            return self._control(url, body)
        self._pause()
        if url.path == UPLOAD_PATH and self.command == "POST":
            return self._app.upload.handle(self._upload_request(arrived), body)
        if url.path.startswith(FILES_PREFIX) and self.command in ("GET", "HEAD"):
            body.drain()
            return self._send_file(url.path)
        if url.path == API_PREFIX or url.path.startswith(API_PREFIX + "/"):
            return self._api(url, arrived, body)
        body.drain()
        return error_reply(404)

    def _pause(self) -> None:
        """The latency fault: every request but control waits, unless the sandbox stops."""
        latency = self._app.ctx.faults.latency_seconds
        if latency > 0:
            self._app.stop.wait(latency)

    def _api(self, url: SplitResult, arrived: float, body: BodyReader) -> Outcome:
        try:
            data = body.read_all(MAX_JSON_BODY)
        except BodyTooLarge:
            self.close_connection = True  # the rest of the body is still on the wire
            return invalid("body", f"must not exceed {MAX_JSON_BODY} bytes").reply()
        req = Request(
            method=self.command,
            path=url.path,
            query=_query(url),
            authorization=self.headers.get("Authorization"),
            idempotency_key=self.headers.get("Idempotency-Key"),
            body=data,
            arrived=arrived,
            connection=self.connection_number,
        )
        return self._app.dispatcher.handle(req, wait=self._app.stop.wait)

    def _upload_request(self, arrived: float) -> UploadRequest:
        return UploadRequest(
            content_type=self.headers.get("Content-Type", ""),
            arrived=arrived,
            flora_headers=tuple(h for h in FLORA_HEADERS if h in self.headers),
            idempotency_key=self.headers.get("Idempotency-Key"),
            connection=self.connection_number,
        )

    def _control(self, url: SplitResult, body: BodyReader) -> Outcome:
        data = body.read_all(MAX_JSON_BODY)
        if not ipaddress.ip_address(self.client_address[0]).is_loopback:
            return error_reply(403, message="The control endpoints answer loopback clients only.")
        app = self._app
        return control.handle(
            app.ctx, app.traffic, method=self.command, path=url.path, query=_query(url), body=data
        )

    def _send_file(self, path: str) -> Outcome | None:
        """Stream a ready asset's bytes from disk (the asset ``url``), or answer 404."""
        asset_id = unquote(path[len(FILES_PREFIX) :].partition("/")[0])
        found = self._ready_blob(asset_id)
        if found is None:
            return error_reply(404)
        blob, kind = found
        with blob.open("rb") as stream:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(blob.stat().st_size))
            self.send_header("request-id", _request_id())
            self.end_headers()
            if self.command == "GET":
                shutil.copyfileobj(stream, self.wfile, FILE_CHUNK)
        return None

    def _ready_blob(self, asset_id: str) -> tuple[Path, str] | None:
        store = self._app.ctx.store
        with store.lock:
            asset = store.assets.get(asset_id)
            if asset is None:
                return None
            assets.refresh(self._app.ctx, asset)
            if asset.status != "ready" or not asset.has_bytes:
                return None
            return store.blob_path(asset_id), shapes.content_type(asset)

    def _write(self, outcome: Outcome) -> None:
        if isinstance(outcome, Drop):
            self.close_connection = True  # no answer: the client sees the connection close
            return
        if isinstance(outcome, Garbled):
            self._write_garbled(outcome)
            return
        self._write_reply(outcome)

    def _write_reply(self, reply: Reply) -> None:
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", _request_id())
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _write_garbled(self, garbled: Garbled) -> None:
        """The malformed answer's bytes; a truncated one closes the connection after them."""
        self.send_response(garbled.status)
        for name, value in garbled.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(garbled.content_length))
        self.send_header("request-id", _request_id())
        self.end_headers()
        self.wfile.write(garbled.body)
        if garbled.is_truncated:
            self.close_connection = True  # the client waits for bytes that never come: EOF


def _query(url: SplitResult) -> dict[str, str]:
    """Query parameters, the last value winning when one is repeated."""
    return {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}


def _request_id() -> str:
    return "req_" + secrets.token_hex(12)
