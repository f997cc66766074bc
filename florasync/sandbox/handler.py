"""The HTTP request handler: one keep-alive connection, each request routed to its part.

Owns the wire side of every request: parsing the URL and headers into a ``Request``, the
latency fault and the stop-aware wait the API's delays use, routing (API, upload target, asset
files, control), writing JSON answers with ``Content-Length`` and a ``request-id`` (CONTRACT
§1), writing malformed answers as they are, and closing the connection for drops and truncated
answers.
"""

from __future__ import annotations

import io
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
from typing import Any, BinaryIO, Protocol, cast
from urllib.parse import SplitResult, parse_qs, urlsplit

from florasync import __version__
from florasync.sandbox import control, files
from florasync.sandbox.context import (
    API_PREFIX,
    CONTROL_PREFIX,
    FILES_PREFIX,
    UPLOAD_PATH,
    Context,
    Request,
)
from florasync.sandbox.dispatch import Dispatcher
from florasync.sandbox.head import Fields, HeadError, read_fields
from florasync.sandbox.replies import Drop, Garbled, Outcome, Reply, error_reply, invalid
from florasync.sandbox.traffic import Traffic
from florasync.sandbox.upload import FLORA_HEADERS, UploadRequest, UploadTarget
from florasync.sandbox.wire import BodyReader, BodyTooLarge

log = logging.getLogger(__name__)

MAX_JSON_BODY = 1 << 20
FILE_CHUNK = 1 << 20
_CONNECTIONS = itertools.count(1)
"""Numbers every connection, so the request log can tell a keep-alive reuse (Traffic)."""
_date: tuple[int, str] = (0, "")
"""The last second's ``Date`` header (``Handler.date_time_string``)."""


@dataclass(frozen=True, slots=True)
class App:
    """Everything a handler thread needs, shared by all of them."""

    ctx: Context
    traffic: Traffic
    dispatcher: Dispatcher
    upload: UploadTarget
    stop: threading.Event
    file_server: files.FileServer


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

    fields = Fields()
    raw_requestline: bytes  # set by BaseHTTPRequestHandler.handle_one_request

    def setup(self) -> None:
        super().setup()
        self.connection_number = next(_CONNECTIONS)

    def parse_request(self) -> bool:
        """The request line and header fields; an ordinary HTTP/1.x line takes the lean path
        (``head.read_fields``), anything else ``http.server``'s own, with its error answers."""
        words = str(self.raw_requestline, "iso-8859-1").split()
        if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
            if not super().parse_request():
                return False
            self.fields = Fields(self.headers.items())
            return True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.command, path, self.request_version = words
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        self.close_connection = True
        try:
            self.fields = read_fields(self.rfile)
        except HeadError as err:
            self.send_error(err.status, str(err))
            return False
        connection = self.fields.text("Connection").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        if self.request_version == "HTTP/1.1" and self.fields.text("Expect").lower() == (
            "100-continue"
        ):
            return self.handle_expect_100()
        return True

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, formatted once a second rather than once an answer."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        global _date  # noqa: PLW0603 - one formatted second shared by every handler thread
        second = int(time.time())
        if _date[0] != second:
            _date = (second, super().date_time_string(second))
        return _date[1]

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
        body = BodyReader(self.rfile, self.fields)
        if url.path.startswith(CONTROL_PREFIX):
            return self._control(url, body)
        self._pause()
        if url.path == UPLOAD_PATH and self.command == "POST":
            return self._app.upload.handle(self._upload_request(arrived), body)
        if url.path.startswith(FILES_PREFIX) and self.command in ("GET", "HEAD"):
            body.drain()
            return self._send_file(self._app.file_server.handle(self._file_request(url, arrived)))
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
            authorization=self.fields.get("Authorization"),
            idempotency_key=self.fields.get("Idempotency-Key"),
            body=data,
            arrived=arrived,
            connection=self.connection_number,
        )
        return self._app.dispatcher.handle(req, wait=self._app.stop.wait)

    def _upload_request(self, arrived: float) -> UploadRequest:
        return UploadRequest(
            content_type=self.fields.text("Content-Type"),
            arrived=arrived,
            flora_headers=tuple(h for h in FLORA_HEADERS if h in self.fields),
            idempotency_key=self.fields.get("Idempotency-Key"),
            connection=self.connection_number,
        )

    def _file_request(self, url: SplitResult, arrived: float) -> files.FileRequest:
        return files.FileRequest(
            method=self.command,
            path=url.path,
            arrived=arrived,
            flora_headers=tuple(h for h in FLORA_HEADERS if h in self.fields),
            connection=self.connection_number,
        )

    def _control(self, url: SplitResult, body: BodyReader) -> Outcome:
        try:
            data = body.read_all(control.MAX_BODY_BYTES)
        except BodyTooLarge:
            self.close_connection = True  # the rest of the body is still on the wire
            return invalid("body", f"must not exceed {control.MAX_BODY_BYTES} bytes").reply()
        if not ipaddress.ip_address(self.client_address[0]).is_loopback:
            return error_reply(403, message="The control endpoints answer loopback clients only.")
        app = self._app
        return control.handle(
            app.ctx, app.traffic, method=self.command, path=url.path, query=_query(url), body=data
        )

    def _send_file(self, answer: files.Blob | Outcome) -> Outcome | None:
        """Stream an asset's bytes from disk (the asset ``url``), or hand back the outcome;
        a cut answer sends its first ``cut_at`` bytes and closes the connection."""
        if not isinstance(answer, files.Blob):
            return answer
        try:
            stream = answer.path.open("rb")
        except FileNotFoundError:  # removed since it was found (drift.remove_asset)
            return error_reply(404)
        with stream:
            self.send_response(200)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(answer.size_bytes))
            self.send_header("request-id", _request_id())
            self.end_headers()
            if self.command == "GET":
                _copy(stream, self.wfile, answer.cut_at)
        if answer.cut_at is not None:
            self.close_connection = True  # the client waits for bytes that never come: EOF
        return None

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


def _copy(stream: BinaryIO, out: io.BufferedIOBase, limit: int | None) -> None:
    """Copy ``stream`` to ``out`` in FILE_CHUNK pieces, only its first ``limit`` bytes if set."""
    if limit is None:
        shutil.copyfileobj(stream, out, FILE_CHUNK)
        return
    while limit > 0 and (chunk := stream.read(min(FILE_CHUNK, limit))):
        out.write(chunk)
        limit -= len(chunk)


def _query(url: SplitResult) -> dict[str, str]:
    """Query parameters, the last value winning when one is repeated."""
    return {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}


def _request_id() -> str:
    return "req_" + secrets.token_hex(12)
