"""The keep-alive transport under requests, over real sockets: reuse, framing, failures, TLS."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import http.server
import json
import os
import pickle
import random
import resource
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from florasync import errors
from florasync.flora import api, retrying, transport, upload, wire
from florasync.flora.secret import Secret
from florasync.sandbox import Sandbox

from .helpers import SHORT_TIMEOUT, SleepingClock, sha256_of, wait_until, write_file

TIMEOUT = (SHORT_TIMEOUT, SHORT_TIMEOUT)
LARGE_BYTES = 20 << 20
CHUNKED_PIECES = (b'{"pieces": ', b'["one", ', b'"two", "three", "four", "five", "six"', b"]}")
PIECE_PAUSE_SECONDS = 0.05  # the server's pacing between chunks, so they arrive apart
TYPED_BODY = '{"name": "café"}'.encode()
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "text/html; charset=UTF-8",
    'text/plain; charset="koi8-r"',
    "application/octet-stream",
    None,
)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


# -- requests and answers ---------------------------------------------------------------------


def _prepared(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None
) -> requests.PreparedRequest:
    """A request built as Transport builds it: no Content-Length, the adapter writes it."""
    request = requests.PreparedRequest()
    request.method = method
    request.url = url
    request.headers = CaseInsensitiveDict(headers or {})
    request.body = body
    return request


def _auth(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.api_key}"}


def _workspaces(sb: Sandbox) -> requests.PreparedRequest:
    return _prepared("GET", sb.base_url + "/workspaces", headers=_auth(sb))


def _new_project(sb: Sandbox, name: str) -> requests.PreparedRequest:
    body = json.dumps({"workspace_id": sb.workspace_id, "name": name}).encode()
    headers = {**_auth(sb), "Content-Type": "application/json"}
    return _prepared("POST", sb.base_url + "/projects", headers=headers, body=body)


def _assert_workspaces(sb: Sandbox, response: requests.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.reason == "OK"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["Request-Id"].startswith("req_")
    assert response.json()["workspaces"][0]["workspace_id"] == sb.workspace_id


def _connections(sb: Sandbox) -> list[int]:
    """The sandbox's connection number of every API request, in arrival order."""
    return [r["connection"] for r in sorted(sb.state()["requests"], key=lambda r: r["t"])]


def _idle_connections(t: transport.Transport) -> int:
    """Sockets in the transport's pool, free for the next request (the pool has no public count)."""
    return sum(len(socks) for socks in t._adapter._idle.values())


@pytest.fixture
def adapter() -> Iterator[wire.KeepAliveAdapter]:
    a = wire.KeepAliveAdapter()
    yield a
    a.close()


# -- small purpose-built servers --------------------------------------------------------------


class _LocalServer(http.server.ThreadingHTTPServer):
    """An http.server on loopback that counts its connections and closes them all at exit."""

    daemon_threads = False  # tracked, so server_close() joins every handler thread

    def __init__(
        self,
        handler: type[http.server.BaseHTTPRequestHandler],
        *,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.connections = 0
        self.closed = 0
        self.log: list[tuple[str, ...]] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__((host, 0), handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})

    def url(self, path: str = "/", *, scheme: str = "http") -> str:
        shown = "[::1]" if self.address_family == socket.AF_INET6 else "127.0.0.1"
        return f"{scheme}://{shown}:{self.server_address[1]}{path}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self.connections += 1
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self._lock:
            self._open.discard(request)
            self.closed += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-answer is what several tests do on purpose

    def __enter__(self) -> _LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self._thread.join()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers a GET by its path: JSON by default, else what a particular server would send."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    max_answers = 0  # close the connection, silently, after this many answers (0: never)
    answered = 0

    def do_GET(self) -> None:
        name = urlsplit(self.path).path.strip("/").replace("-", "_") or "json"
        getattr(self, f"_answer_{name}")()
        self.answered += 1
        if self.answered == self.max_answers:
            self.close_connection = True

    def do_POST(self) -> None:
        if self.path == "/refuse-early":  # answers before reading the body, then hangs up
            self._raw(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\nrefused", close=True)
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path == "/continue":  # unasked for (no Expect header), as some servers do
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(PIECE_PAUSE_SECONDS)  # pacing: the final answer comes in a later segment
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._json({"path": self.path, "sha256": hashlib.sha256(body).hexdigest()})

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, doc: dict[str, Any], *, close: bool = False) -> None:
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _raw(self, data: bytes, *, close: bool) -> None:
        self.wfile.write(data)
        self.close_connection = close

    def _answer_json(self) -> None:
        self._json({"path": self.path, "answer": self.answered + 1})

    def _answer_close(self) -> None:
        self._json({"path": self.path}, close=True)

    def _answer_typed(self) -> None:
        kind = dict(parse_qsl(urlsplit(self.path).query)).get("type")
        self.send_response(200)
        if kind is not None:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(TYPED_BODY)))
        self.end_headers()
        self.wfile.write(TYPED_BODY)

    def _answer_host(self) -> None:
        self._json({"host": self.headers["Host"]})

    def _answer_http10(self) -> None:
        data = json.dumps({"path": self.path}).encode()
        head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        self._raw(head + data, close=True)

    def _answer_http10_eof(self) -> None:
        data = json.dumps({"path": self.path}).encode()
        self._raw(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + data, close=True)

    def _answer_chunked(self) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in CHUNKED_PIECES:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(PIECE_PAUSE_SECONDS)  # pacing the server's writes, not synchronising
        self.wfile.write(b"0\r\n\r\n")

    def _answer_split(self) -> None:
        data = b'{"split": true}'
        answer = (
            b"HTTP/1.1 201 Created Over Many Segments\r\nContent-Type: application/json\r\n"
            b"X-A-Rather-Long-Header-Name: a rather long value\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
        )
        for i in range(len(answer)):
            self.wfile.write(answer[i : i + 1])  # one byte per segment (TCP_NODELAY)

    def _answer_empty(self) -> None:
        self.send_response(204)
        self.end_headers()

    def _answer_large(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(LARGE_BYTES))
        self.end_headers()
        self.wfile.write(_large_body())

    def _answer_short(self) -> None:
        self._raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, close=True)

    def _answer_repeated(self) -> None:
        self._raw(
            b"HTTP/1.1 200 OK\r\nX-Seen: a\r\nx-seen: b\r\nContent-Length: 2\r\n\r\n{}",
            close=False,
        )

    def _answer_garbage(self) -> None:
        self._raw(b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n", close=True)


class _LimitedHandler(_Handler):
    """Closes each connection after three answers without announcing it (keepalive_requests)."""

    max_answers = 3


class _IdleTimeoutHandler(_Handler):
    """Closes a connection that stayed idle for 0.2 s (a server's keep-alive timeout)."""

    timeout = 0.2


@functools.cache
def _large_body() -> bytes:
    return random.Random(20).randbytes(LARGE_BYTES)


@pytest.fixture
def server() -> Iterator[_LocalServer]:
    with _LocalServer(_Handler) as s:
        yield s


# -- 1. keep-alive ----------------------------------------------------------------------------


def test_sequential_requests_share_one_connection(
    sandbox: Sandbox, adapter: wire.KeepAliveAdapter
) -> None:
    """200 requests in a row through one adapter travel on one connection, each answered right."""
    for _ in range(200):
        _assert_workspaces(sandbox, adapter.send(_workspaces(sandbox), timeout=TIMEOUT))
    connections = _connections(sandbox)
    assert len(connections) == 200
    assert len(set(connections)) == 1


def test_threads_use_at_most_one_connection_each(
    sandbox: Sandbox, adapter: wire.KeepAliveAdapter
) -> None:
    """8 threads x 50 requests through one adapter open at most 8 connections, all answers right."""
    failures: list[BaseException] = []
    done: list[int] = []

    def worker(index: int) -> None:
        try:
            for _ in range(50):
                _assert_workspaces(sandbox, adapter.send(_workspaces(sandbox), timeout=TIMEOUT))
                done.append(1)
        except BaseException as exc:  # noqa: BLE001 -- reported by the test thread below
            failures.append(exc)

    _run_threads(worker, 8)
    assert failures == []
    assert len(done) == 400
    assert len(_connections(sandbox)) == 400
    assert len(set(_connections(sandbox))) <= 8


def _run_threads(target: Callable[[int], None], count: int) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"


# -- 2. connections the server ends ------------------------------------------------------------


def _get_json(a: wire.KeepAliveAdapter, url: str) -> Any:
    response = a.send(_prepared("GET", url), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def test_connection_closed_after_some_answers_is_replaced(adapter: wire.KeepAliveAdapter) -> None:
    """A server that closes after three answers: the fourth request opens a fresh connection."""
    with _LocalServer(_LimitedHandler) as srv:
        for n in range(3):
            assert _get_json(adapter, srv.url(f"/json?n={n}"))["path"] == f"/json?n={n}"
        wait_until(lambda: srv.closed == 1, timeout=SHORT_TIMEOUT, message="the server's close")
        assert _get_json(adapter, srv.url("/json?n=3")) == {"path": "/json?n=3", "answer": 1}
        assert srv.connections == 2


def test_idle_connection_closed_by_server_is_replaced(adapter: wire.KeepAliveAdapter) -> None:
    """A connection the server closed while idle is not used: the next request goes out fresh."""
    with _LocalServer(_IdleTimeoutHandler) as srv:
        assert _get_json(adapter, srv.url("/json?n=1"))["answer"] == 1
        wait_until(lambda: srv.closed == 1, timeout=SHORT_TIMEOUT, message="the idle timeout")
        assert _get_json(adapter, srv.url("/json?n=2")) == {"path": "/json?n=2", "answer": 1}
        assert srv.connections == 2


def test_connection_close_and_http10_answers_are_not_reused(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """Answers with Connection: close or from HTTP/1.0 are read whole; each request reconnects."""
    for n in range(2):
        for path in (f"/close?n={n}", f"/http10?n={n}"):
            assert _get_json(adapter, server.url(path)) == {"path": path}
    assert server.connections == 4


def test_answer_delimited_by_close_is_read_whole(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """An HTTP/1.0 answer without Content-Length ends where the server closes (RFC 9112 §6.3)."""
    for n in range(2):
        response = adapter.send(_prepared("GET", server.url(f"/http10-eof?n={n}")), timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.json() == {"path": f"/http10-eof?n={n}"}
    assert server.connections == 2


# -- 3. bodies ----------------------------------------------------------------------------------


def test_chunked_answer_in_delayed_pieces(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """A chunked answer sent in paced pieces arrives whole, and its connection is kept."""
    for _ in range(2):
        response = adapter.send(_prepared("GET", server.url("/chunked")), timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.content == b"".join(CHUNKED_PIECES)
        assert response.json()["pieces"][-1] == "six"
    assert server.connections == 1


def test_answer_split_into_one_byte_segments(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """An answer written one byte at a time gives the same status, reason, headers and body."""
    response = adapter.send(_prepared("GET", server.url("/split")), timeout=TIMEOUT)
    assert response.status_code == 201
    assert response.reason == "Created Over Many Segments"
    assert response.headers["x-a-rather-long-header-name"] == "a rather long value"
    assert response.json() == {"split": True}
    assert _get_json(adapter, server.url("/json"))["answer"] == 2  # same connection, next answer


def test_empty_204_answer_keeps_the_connection(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """A 204 has no body: it returns at once and the next answer comes on the same connection."""
    response = adapter.send(_prepared("GET", server.url("/empty")), timeout=TIMEOUT)
    assert response.status_code == 204
    assert response.content == b""
    assert _get_json(adapter, server.url("/json")) == {"path": "/json", "answer": 2}
    assert server.connections == 1


def test_large_answer_body(server: _LocalServer, adapter: wire.KeepAliveAdapter) -> None:
    """A 20 MiB answer arrives byte for byte, and its connection carries the next request."""
    response = adapter.send(_prepared("GET", server.url("/large")), timeout=TIMEOUT)
    assert response.status_code == 200
    assert len(response.content) == LARGE_BYTES
    assert response.content == _large_body()
    assert _get_json(adapter, server.url("/json"))["answer"] == 2


def test_bytes_and_str_request_bodies(server: _LocalServer, adapter: wire.KeepAliveAdapter) -> None:
    """A bytes body and a str body go out whole, with the Content-Length the adapter wrote."""
    data = "é" * 1000 + "end"
    for body in (data.encode(), data):
        response = adapter.send(_prepared("POST", server.url("/post"), body=body), timeout=TIMEOUT)
        assert response.json() == {
            "path": "/post",
            "sha256": hashlib.sha256(data.encode()).hexdigest(),
        }
    assert server.connections == 1


def test_interim_100_continue_is_skipped(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """An unasked-for 100 Continue is not the answer: the final 200 and its body are."""
    response = adapter.send(
        _prepared("POST", server.url("/continue"), body=b"abc"), timeout=TIMEOUT
    )
    assert response.status_code == 200
    assert response.json() == {"path": "/continue", "sha256": hashlib.sha256(b"abc").hexdigest()}
    assert _get_json(adapter, server.url("/json"))["path"] == "/json"
    assert server.connections == 1


def test_answers_are_ordinary_responses(sandbox: Sandbox) -> None:
    """Mounted on a requests.Session, the adapter's answers behave as requests' own do."""
    with requests.Session() as session:
        session.trust_env = False
        session.mount("http://", wire.KeepAliveAdapter())
        response = session.get(
            sandbox.base_url + "/workspaces", headers=_auth(sandbox), timeout=TIMEOUT
        )
        _assert_workspaces(sandbox, response)
        response.raise_for_status()
        assert b"".join(response.iter_content(7)) == response.content
        assert response.text == response.content.decode()
        assert response.history == []
        assert response.request.url == sandbox.base_url + "/workspaces"
        copy = pickle.loads(pickle.dumps(response))  # noqa: S301 -- our own bytes
        assert (copy.status_code, copy.content) == (response.status_code, response.content)
        with response:
            pass
        created = session.post(
            sandbox.base_url + "/projects",
            json={"workspace_id": sandbox.workspace_id, "name": "Via session"},
            headers=_auth(sandbox),
            timeout=TIMEOUT,
        )
        assert created.status_code == 201
    assert sandbox.project_names()[created.json()["project_id"]] == "Via session"
    assert len(set(_connections(sandbox))) == 1


def test_encoding_and_text_are_what_requests_would_give(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """For each Content-Type (or none), encoding and text equal those HTTPAdapter would give."""
    for kind in CONTENT_TYPES:
        query = "" if kind is None else "?" + urlencode({"type": kind})
        response = adapter.send(_prepared("GET", server.url("/typed" + query)), timeout=TIMEOUT)
        reference = requests.Response()
        reference.headers = CaseInsensitiveDict({} if kind is None else {"Content-Type": kind})
        reference._content = TYPED_BODY
        reference.encoding = requests.utils.get_encoding_from_headers(reference.headers)
        assert (response.encoding, response.text) == (reference.encoding, reference.text), kind
        assert response.headers.get("content-type") == kind


def test_bytes_body_creates_a_project(sandbox: Sandbox, adapter: wire.KeepAliveAdapter) -> None:
    """A JSON bytes body reaches the sandbox: the project it names exists, answered with 201."""
    response = adapter.send(_new_project(sandbox, "Wire bytes"), timeout=TIMEOUT)
    assert response.status_code == 201
    project_id = response.json()["project_id"]
    assert sandbox.project_names()[project_id] == "Wire bytes"


def test_streamed_upload_stores_the_bytes_on_disk(sandbox: Sandbox, tmp_path: Path) -> None:
    """A 30 MiB file streamed through the upload target is stored byte for byte."""
    path = tmp_path / "clip.mp4"
    write_file(path, 30 << 20, seed=30)
    with api.FloraClient(sandbox.base_url, Secret(sandbox.api_key)) as client:
        asset = client.create_asset(
            sandbox.workspace_id,
            file_name=path.name,
            content_type="video/mp4",
            idempotency_key="w1",
        )
        assert asset.upload is not None
        target = upload.UploadTarget()
        try:
            with path.open("rb") as stream:
                target.upload(asset.upload, stream, file_name=path.name, content_type="video/mp4")
        finally:
            target.close()
        assert client.complete_asset(asset.asset_id).is_ready
    stored = sandbox.blob_path(asset.asset_id)
    assert stored is not None
    assert stored.stat().st_size == path.stat().st_size
    assert sha256_of(stored) == sha256_of(path)


# -- 4. failures are requests' exceptions -------------------------------------------------------


def test_refused_connection_is_a_connection_error(adapter: wire.KeepAliveAdapter) -> None:
    """A port nobody listens on gives requests' ConnectionError, not a timeout."""
    with socket.socket() as bound:  # bound, never listening: the port is ours and refuses
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/"
        with pytest.raises(requests.exceptions.ConnectionError) as caught:
            adapter.send(_prepared("GET", url), timeout=TIMEOUT)
    assert not isinstance(caught.value, requests.exceptions.Timeout)


def test_no_answer_is_a_read_timeout(adapter: wire.KeepAliveAdapter) -> None:
    """A server that accepts and never answers gives ReadTimeout after the read timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts, nobody answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            adapter.send(_prepared("GET", url), timeout=(SHORT_TIMEOUT, 0.2))
    assert time.monotonic() - started < SHORT_TIMEOUT


def test_full_backlog_is_a_connect_timeout(adapter: wire.KeepAliveAdapter) -> None:
    """A listener whose accept queue is full drops the handshake: ConnectTimeout."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as full:
        address = full.getsockname()
        fillers = [_connect_without_waiting(address) for _ in range(4)]
        try:
            with pytest.raises(requests.exceptions.ConnectTimeout):
                adapter.send(
                    _prepared("GET", f"http://127.0.0.1:{address[1]}/"), timeout=(0.2, 1.0)
                )
        finally:
            for filler in fillers:
                filler.close()


def _connect_without_waiting(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):  # the kernel completes or drops the handshake
        sock.connect(address)
    return sock


def test_truncated_answer_is_an_error_and_its_connection_is_dropped(
    sandbox: Sandbox, adapter: wire.KeepAliveAdapter
) -> None:
    """A truncated body raises (no partial answer); the next request works on a new connection."""
    sandbox.faults.fail_next("GET /workspaces", malformed="truncated")
    with pytest.raises(
        (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)
    ):
        adapter.send(_workspaces(sandbox), timeout=TIMEOUT)
    _assert_workspaces(sandbox, adapter.send(_workspaces(sandbox), timeout=TIMEOUT))
    first, second = _connections(sandbox)
    assert first != second


def test_short_body_then_close_is_a_connection_error(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """A server that sends 10 of 100 announced bytes and closes gives ConnectionError, no hang."""
    with pytest.raises(requests.exceptions.ConnectionError):
        adapter.send(_prepared("GET", server.url("/short")), timeout=TIMEOUT)
    assert _get_json(adapter, server.url("/json"))["answer"] == 1


def test_garbage_instead_of_http_is_an_error(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """Bytes that are not HTTP give ChunkedEncodingError or ConnectionError, then a new start."""
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        adapter.send(_prepared("GET", server.url("/garbage")), timeout=TIMEOUT)
    assert _get_json(adapter, server.url("/json"))["answer"] == 1
    assert server.connections == 2


def test_timed_out_connection_never_carries_the_next_request(
    sandbox: Sandbox, adapter: wire.KeepAliveAdapter
) -> None:
    """After a read timeout, the late answer is never read as the answer to the next request."""
    _assert_workspaces(sandbox, adapter.send(_workspaces(sandbox), timeout=TIMEOUT))
    sandbox.faults.update(latency_seconds=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        adapter.send(_workspaces(sandbox), timeout=(SHORT_TIMEOUT, 0.1))
    sandbox.faults.update(latency_seconds=0)
    project_id = sandbox.project_ids[0]
    url = f"{sandbox.base_url}/projects/{project_id}"
    response = adapter.send(_prepared("GET", url, headers=_auth(sandbox)), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json()["project_id"] == project_id
    wait_until(lambda: len(_connections(sandbox)) == 3, timeout=SHORT_TIMEOUT, message="3 logged")
    kept, timed_out, after = _connections(sandbox)
    assert kept == timed_out != after


class _StoppingBody:
    """A streamed body (``len`` and ``read``) whose reader is stopped after its first chunk."""

    def __init__(self, size: int) -> None:
        self.len = size
        self._reads = 0

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads > 1:
            raise errors.StoppedError("stopped during an upload")
        return b'{"workspace_id": '


def test_body_stopped_midway_drops_its_connection(
    sandbox: Sandbox, adapter: wire.KeepAliveAdapter
) -> None:
    """A body whose reader stops raises StoppedError; nothing is created, the next request works."""
    _assert_workspaces(sandbox, adapter.send(_workspaces(sandbox), timeout=TIMEOUT))
    projects = dict(sandbox.project_names())
    headers = {**_auth(sandbox), "Content-Type": "application/json"}
    request = _prepared(
        "POST", sandbox.base_url + "/projects", headers=headers, body=_StoppingBody(1000)
    )
    with pytest.raises(errors.StoppedError):
        adapter.send(request, timeout=TIMEOUT)
    _assert_workspaces(sandbox, adapter.send(_workspaces(sandbox), timeout=TIMEOUT))
    assert sandbox.project_names() == projects
    first, second = _connections(sandbox)
    assert first != second


# -- 5. TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Self-signed certificates: "loopback" for 127.0.0.1 and localhost, "other" for a name."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("certs")
    sans = {"loopback": "IP:127.0.0.1,DNS:localhost", "other": "DNS:flora.example"}
    made = {}
    for name, san in sans.items():
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        subprocess.run(
            [
                *(openssl, "req", "-x509", "-nodes", "-days", "2", "-subj", f"/CN={name}"),
                *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
                *("-keyout", str(key), "-out", str(cert)),
                *("-addext", f"subjectAltName={san}"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        made[name] = (cert, key)
    return made


def _tls_server(cert: tuple[Path, Path]) -> _LocalServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return _LocalServer(_Handler, tls=context)


def test_tls_with_ca_bundle_succeeds_and_reuses(certs: dict[str, tuple[Path, Path]]) -> None:
    """HTTPS to a server whose certificate is in the CA bundle works, on one kept connection."""
    a = wire.KeepAliveAdapter(ca_bundle=str(certs["loopback"][0]))
    try:
        with _tls_server(certs["loopback"]) as srv:
            for n in range(3):
                path = f"/json?n={n}"
                assert _get_json(a, srv.url(path, scheme="https")) == {
                    "path": path,
                    "answer": n + 1,
                }
            assert srv.connections == 1
    finally:
        a.close()


def test_tls_untrusted_certificate_is_an_ssl_error(
    certs: dict[str, tuple[Path, Path]], adapter: wire.KeepAliveAdapter
) -> None:
    """Without the bundle, a self-signed certificate fails verification: requests' SSLError."""
    with _tls_server(certs["loopback"]) as srv, pytest.raises(requests.exceptions.SSLError):
        adapter.send(_prepared("GET", srv.url("/json", scheme="https")), timeout=TIMEOUT)


def test_tls_hostname_mismatch_is_an_ssl_error(certs: dict[str, tuple[Path, Path]]) -> None:
    """A trusted certificate for another name is refused: requests' SSLError."""
    a = wire.KeepAliveAdapter(ca_bundle=str(certs["other"][0]))
    try:
        with _tls_server(certs["other"]) as srv, pytest.raises(requests.exceptions.SSLError):
            a.send(_prepared("GET", srv.url("/json", scheme="https")), timeout=TIMEOUT)
    finally:
        a.close()


def test_transport_trusts_requests_ca_bundle(
    certs: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transport hands REQUESTS_CA_BUNDLE to the adapter, so a private CA is honoured."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs["loopback"][0]))
    t = transport.Transport(_retrier(retrying.RateGate()))
    try:
        with _tls_server(certs["loopback"]) as srv:
            response = t.send("GET", srv.url("/json", scheme="https"), headers={}, timeout=TIMEOUT)
            assert response.json() == {"path": "/json", "answer": 1}
    finally:
        t.close()


def test_ipv6_literal_gets_a_bracketed_host_header(adapter: wire.KeepAliveAdapter) -> None:
    """A request to http://[::1]:PORT says Host: [::1]:PORT (RFC 9110 §7.2), as requests would."""
    try:
        srv = _LocalServer(_Handler, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with srv:
        port = srv.server_address[1]
        assert _get_json(adapter, srv.url("/host")) == {"host": f"[::1]:{port}"}


# -- 6. requests' own adapter for the rest -------------------------------------------------------


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy for absolute-URI requests; like many, it wants a Content-Length (411)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.log.append(  # type: ignore[attr-defined]
            (self.command, self.path, self.headers.get("Content-Length", ""))
        )
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(411)  # closes: the chunked body is never read
            return
        length = int(self.headers.get("Content-Length") or 0)
        status, headers, data = _forward(
            self.command, self.path, self.headers, self.rfile.read(length)
        )
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


def _forward(method: str, url: str, headers: Any, body: bytes) -> tuple[int, Any, bytes]:
    parts = urlsplit(url)
    sent = {
        k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP | {"proxy-authorization"}
    }
    upstream = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=SHORT_TIMEOUT)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        upstream.request(method, target, body=body or None, headers=sent)
        answer = upstream.getresponse()
        return answer.status, answer.getheaders(), answer.read()
    finally:
        upstream.close()


def test_proxy_and_head_go_through_requests_adapter_with_hooks(sandbox: Sandbox) -> None:
    """Proxied requests and HEAD use requests' adapter; both hooks run on both paths."""
    sent: list[str] = []
    answers: list[int] = []
    a = wire.KeepAliveAdapter(
        before_send=lambda: sent.append("send"), on_answer=lambda s, h: answers.append(s)
    )
    try:
        with _LocalServer(_ForwardProxy) as proxy:
            proxies = {"http": proxy.url()}
            _assert_workspaces(sandbox, a.send(_workspaces(sandbox), timeout=TIMEOUT))
            _assert_workspaces(
                sandbox, a.send(_workspaces(sandbox), timeout=TIMEOUT, proxies=proxies)
            )
            created = a.send(_new_project(sandbox, "Via proxy"), timeout=TIMEOUT, proxies=proxies)
            assert created.status_code == 201, created.text
            head = _prepared("HEAD", sandbox.base_url + "/workspaces", headers=_auth(sandbox))
            assert a.send(head, timeout=TIMEOUT).content == b""
            assert [(m, u) for m, u, _ in proxy.log] == [
                ("GET", sandbox.base_url + "/workspaces"),
                ("POST", sandbox.base_url + "/projects"),
            ]
            assert proxy.log[1][2] == str(len(_new_project(sandbox, "Via proxy").body or b""))
    finally:
        a.close()
    assert sandbox.project_names()[created.json()["project_id"]] == "Via proxy"
    assert sent == ["send"] * 4
    assert answers == [200, 200, 201, 404]  # the sandbox has no HEAD route: 404, no body


def test_transport_follows_the_environment_proxy(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set, Transport's requests (a POST with a body too) go through the proxy."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with _LocalServer(_ForwardProxy) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        t = transport.Transport(_retrier(retrying.RateGate()))
        try:
            request = _new_project(sandbox, "Env proxy")
            response = t.send(
                "POST",
                request.url or "",
                headers=dict(request.headers),
                body=request.body,
                timeout=TIMEOUT,
            )
        finally:
            t.close()
        assert response.status_code == 201, response.text
        assert [(m, u) for m, u, _ in proxy.log] == [("POST", sandbox.base_url + "/projects")]
    assert sandbox.project_names()[response.json()["project_id"]] == "Env proxy"


# -- 7. the rate gate -------------------------------------------------------------------------


class _WatchedGate(retrying.RateGate):
    """A RateGate noting how many pooled connections were free at the moment it closed."""

    def __init__(self, clock: Callable[[], float], free: Callable[[], int]) -> None:
        super().__init__(clock)
        self._free = free
        self.free_at_close: list[int] = []

    def close_for(self, seconds: float, *, announce: bool = True) -> None:
        self.free_at_close.append(self._free())
        super().close_for(seconds, announce=announce)


def _retrier(
    gate: retrying.RateGate, sleep: Callable[[float], object] | None = None
) -> retrying.Retrier:
    return retrying.Retrier(retrying.RetryPolicy(), gate, threading.Event(), sleep=sleep)


def test_429_closes_the_gate_before_its_connection_is_free(sandbox: Sandbox) -> None:
    """A 429's Retry-After closes the gate before its connection is pooled; the next send waits."""
    sandbox.faults.fail_next("GET /workspaces", status=429, retry_after=2)
    clock = SleepingClock()
    holder: list[transport.Transport] = []
    gate = _WatchedGate(clock, lambda: _idle_connections(holder[0]))
    arrived_before_wait: list[int] = []

    def sleep(seconds: float) -> bool:
        arrived_before_wait.append(len(_connections(sandbox)))
        return clock.sleep(seconds)

    t = transport.Transport(_retrier(gate, sleep))
    holder.append(t)
    url = sandbox.base_url + "/workspaces"
    try:
        limited = t.send("GET", url, headers=_auth(sandbox), timeout=TIMEOUT)
        assert limited.status_code == 429
        assert gate.free_at_close == [0]  # closed while the connection was still held
        assert gate.remaining() > 1
        assert _idle_connections(t) == 1
        _assert_workspaces(sandbox, t.send("GET", url, headers=_auth(sandbox), timeout=TIMEOUT))
    finally:
        t.close()
    assert clock.sleeps == [2.0]
    assert arrived_before_wait == [1]  # the wait came before the second request left
    first, second = _connections(sandbox)
    assert first == second  # the 429's connection, reused only after the window


# -- 8. threads ---------------------------------------------------------------------------------


def test_sixteen_threads_mixing_gets_and_posts(sandbox: Sandbox) -> None:
    """16 threads on one Transport for 2 s: every GET and POST answered right, ≤ 16 connections."""
    t = transport.Transport(_retrier(retrying.RateGate()))
    project_id = sandbox.project_ids[0]
    deadline = time.monotonic() + 2.0
    failures: list[BaseException] = []
    created: dict[str, str] = {}

    def worker(index: int) -> None:
        n = 0
        try:
            while time.monotonic() < deadline:
                n += 1
                _exchange(t, sandbox, project_id, f"t{index}-{n}", created)
        except BaseException as exc:  # noqa: BLE001 -- reported by the test thread below
            failures.append(exc)

    try:
        _run_threads(worker, 16)
    finally:
        t.close()
    assert failures == []
    names = sandbox.project_names()
    assert {names[pid] for pid in created} == set(created.values())
    assert len(created) >= 16
    assert len(set(_connections(sandbox))) <= 16


def _exchange(
    t: transport.Transport, sb: Sandbox, project_id: str, name: str, created: dict[str, str]
) -> None:
    """One GET and one POST, each answer checked against its own request."""
    got = t.send("GET", f"{sb.base_url}/projects/{project_id}", headers=_auth(sb), timeout=TIMEOUT)
    assert got.status_code == 200
    assert got.json()["project_id"] == project_id
    request = _new_project(sb, name)
    made = t.send(
        "POST", request.url or "", headers=dict(request.headers), body=request.body, timeout=TIMEOUT
    )
    assert made.status_code == 201
    assert made.json()["name"] == name
    created[made.json()["project_id"]] = name


def test_repeated_headers_are_joined_as_requests_joins_them(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """A header sent twice reads as both values joined by ", " (requests' own rule)."""
    response = adapter.send(_prepared("GET", server.url("/repeated")), timeout=TIMEOUT)
    assert response.headers["X-Seen"] == "a, b"


def test_an_answer_before_the_whole_body_is_read_not_a_send_error(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """A server that refuses an upload before reading its body and hangs up: the client gets
    the server's answer (403), not a broken pipe, and the next request gets a new connection."""
    body = b"x" * (32 << 20)  # far more than the socket buffers hold
    response = adapter.send(
        _prepared("POST", server.url("/refuse-early"), body=body), timeout=TIMEOUT
    )
    assert (response.status_code, response.content) == (403, b"refused")
    assert _get_json(adapter, server.url("/json"))["path"] == "/json"


def test_idle_connections_are_checked_above_descriptor_1024(
    server: _LocalServer, adapter: wire.KeepAliveAdapter
) -> None:
    """With more than 1024 descriptors open (select() would fail there), an idle connection is
    still checked and reused."""

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert _get_json(adapter, server.url("/json"))["answer"] == 1
        assert _get_json(adapter, server.url("/json"))["answer"] == 2
        assert server.connections == 1
    finally:
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
