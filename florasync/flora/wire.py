"""The bytes on the wire: a requests transport adapter for HTTP/1.1 with keep-alive connections.

Owns the exchange under ``requests`` for FLORA's API and upload target: a pool of idle
connections per origin, each request written with one ``sendall`` (a streamed body in the
caller's chunks), each answer parsed by ``httptools`` (the llhttp parser), TLS with the same CA
bundle requests would use. It answers with an ordinary ``requests.Response``, so everything
above it is plain requests; errors are requests' exceptions. It does what urllib3 does for
this client at a fraction of the CPU (bench cpu). Requests it is not made for (a proxy, a client
certificate, a method other than GET and POST) go to requests' own ``HTTPAdapter``.
"""

from __future__ import annotations

import datetime
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools
import requests
from requests.structures import CaseInsensitiveDict

MAX_IDLE_PER_ORIGIN = 64  # at least the workers; more connections than this are closed
_RECV_BYTES = 65536
_SEND_BYTES = 4 << 20
_METHODS = frozenset({"GET", "POST"})


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal (RFC 3986 §3.2.2)
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class _Answer:
    """What the parser saw of one response."""

    status: int = 0
    reason: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    complete: bool = False
    keep_alive: bool = False
    parser: Any = None  # the parser answers about keep-alive only inside on_message_complete

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200 and self.status != 101:
            # an interim answer (100 Continue): the final one follows (RFC 9110 §15.2)
            self.status, self.reason, self.headers, self.body = 0, b"", [], []
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()

    def ended(self) -> bool:
        """The whole answer has arrived (the parser's callbacks set it while it reads)."""
        return self.complete

    def ends_at_close(self) -> bool:
        """The headers came without a length or chunked framing, so the body is everything up
        to the close (RFC 9112 §6.3 item 8); httptools has no call to tell llhttp of the end."""
        if not self.status:
            return False  # the headers are not complete
        names = {name.lower(): value.lower() for name, value in self.headers}
        return b"content-length" not in names and b"chunked" not in names.get(
            b"transfer-encoding", b""
        )


class KeepAliveAdapter(requests.adapters.BaseAdapter):
    """HTTP/1.1 over pooled sockets; ``requests.adapters.HTTPAdapter`` for everything else."""

    def __init__(
        self,
        *,
        ca_bundle: str | None = None,
        before_send: Callable[[], None] | None = None,
        on_answer: Callable[[int, Mapping[str, str]], None] | None = None,
    ) -> None:
        """``before_send`` runs right before a connection is taken (the rate gate waits there),
        ``on_answer`` with each status and headers before the connection is free again."""
        super().__init__()
        self._before_send = before_send
        self._on_answer = on_answer
        self._fallback = requests.adapters.HTTPAdapter()
        self._idle: dict[_Origin, list[socket.socket]] = {}
        self._origins: dict[str, _Origin] = {}
        self._lock = threading.Lock()
        self._ca_bundle = ca_bundle
        self._tls: ssl.SSLContext | None = None

    def send(  # noqa: PLR0917 -- requests' BaseAdapter.send signature
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        if proxies or cert or verify is not True or request.method not in _METHODS:
            return self._send_elsewhere(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
            )
        connect, read = _timeouts(timeout)
        origin, target = self._origin(request.url or "")
        head = self._head(request, origin, target)
        if self._before_send is not None:
            self._before_send()
        sock = self._connection(origin, connect)
        try:
            answer, keep = _exchange(sock, head, request.body, read)
            response = _response(request, answer)
            if self._on_answer is not None:
                self._on_answer(response.status_code, response.headers)
        except BaseException:
            sock.close()
            raise
        if keep:
            self._release(origin, sock)
        else:
            sock.close()
        return response

    def _send_elsewhere(
        self,
        request: requests.PreparedRequest,
        *,
        stream: bool,
        timeout: Any,
        verify: bool | str,
        cert: Any,
        proxies: Mapping[str, str] | None,
    ) -> requests.Response:
        """requests' own adapter (through a proxy, say), with the same hooks around it."""
        if request.body is not None and "Content-Length" not in request.headers:
            # without it urllib3 sends the body chunked, which proxies and upload targets refuse
            request = request.copy()
            request.headers["Content-Length"] = str(_length(request.body))
        if self._before_send is not None:
            self._before_send()
        response = self._fallback.send(request, stream, timeout, verify, cert, proxies)
        if self._on_answer is not None:  # the body is read (and the connection freed) later
            self._on_answer(response.status_code, response.headers)
        return response

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for socks in idle.values():
            for sock in socks:
                sock.close()
        self._fallback.close()

    # -- connections --------------------------------------------------------------------------

    def _origin(self, url: str) -> tuple[_Origin, str]:
        """The origin and request-target of ``url`` (the origin parsed once per origin)."""
        scheme, _, rest = url.partition("://")
        authority, _, path = rest.partition("/")
        key = f"{scheme}://{authority}"
        origin = self._origins.get(key)
        if origin is None:
            parts = urlsplit(key)
            default = 443 if parts.scheme == "https" else 80
            origin = _Origin(parts.scheme, parts.hostname or "", parts.port or default)
            self._origins[key] = origin
        return origin, "/" + path

    def _connection(self, origin: _Origin, connect_timeout: float | None) -> socket.socket:
        """An idle connection to ``origin`` the server has not closed, or a new one."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                sock = idle.pop() if idle else None
            if sock is None:
                return self._connect(origin, connect_timeout)
            if _is_usable(sock):
                return sock
            sock.close()

    def _connect(self, origin: _Origin, timeout: float | None) -> socket.socket:
        try:
            sock = socket.create_connection((origin.host, origin.port), timeout=timeout)
        except TimeoutError as exc:
            raise requests.exceptions.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise requests.exceptions.ConnectionError(str(exc)) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if origin.scheme == "https":
            try:
                sock = self._tls_context().wrap_socket(sock, server_hostname=origin.host)
            except ssl.SSLError as exc:
                sock.close()
                raise requests.exceptions.SSLError(str(exc)) from exc
            except OSError as exc:
                sock.close()
                raise requests.exceptions.ConnectionError(str(exc)) from exc
        return sock

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                bundle = self._ca_bundle or requests.utils.DEFAULT_CA_BUNDLE_PATH
                self._tls = ssl.create_default_context(cafile=bundle)
            return self._tls

    def _release(self, origin: _Origin, sock: socket.socket) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append(sock)
                return
        sock.close()

    @staticmethod
    def _head(request: requests.PreparedRequest, origin: _Origin, target: str) -> bytes:
        lines = [f"{request.method} {target} HTTP/1.1", f"Host: {origin.host_header}"]
        lines += [f"{name}: {value}" for name, value in request.headers.items()]
        if request.body is not None and "Content-Length" not in request.headers:
            lines.append(f"Content-Length: {_length(request.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _timeouts(timeout: Any) -> tuple[float | None, float | None]:
    if isinstance(timeout, tuple):
        return timeout[0], timeout[1]
    return timeout, timeout


def _length(body: Any) -> int:
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, str):
        return len(body.encode())
    return int(body.len)


def _is_usable(sock: socket.socket) -> bool:
    """An idle keep-alive connection is readable only when the server closed it (or broke it).
    ``poll``, not ``select``: a daemon may hold file descriptors above 1024."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    try:
        return not poller.poll(0)
    except OSError:
        return False


def _send(sock: socket.socket, head: bytes, body: Any, timeout: float | None) -> None:
    sock.settimeout(timeout)
    try:
        if body is None:
            sock.sendall(head)
        elif isinstance(body, bytes | bytearray | str):
            sock.sendall(head + (body.encode() if isinstance(body, str) else body))
        else:
            sock.sendall(head)
            for chunk in _chunks(body):
                sock.sendall(chunk)
    except TimeoutError as exc:
        raise requests.exceptions.ConnectionError(f"timed out sending: {exc}") from exc
    except OSError as exc:
        raise requests.exceptions.ConnectionError(str(exc)) from exc


def _exchange(
    sock: socket.socket, head: bytes, body: Any, timeout: float | None
) -> tuple[_Answer, bool]:
    """Send, then read the answer. A server may answer early and close while the body is
    still going out (a refused upload): its answer is read rather than the send's error."""
    try:
        _send(sock, head, body, timeout)
    except requests.exceptions.ConnectionError as exc:
        try:
            answer, _ = _receive(sock, timeout)
        except requests.RequestException:
            raise exc from None
        return answer, False
    return _receive(sock, timeout)


def _chunks(body: Any) -> Iterator[bytes]:
    read = getattr(body, "read", None)
    if read is None:
        yield from body
        return
    while chunk := read(_SEND_BYTES):
        yield chunk


def _receive(sock: socket.socket, timeout: float | None) -> tuple[_Answer, bool]:
    """Read one response; whether the connection may be used again.

    Raises:
        requests.exceptions.ReadTimeout: no byte for ``timeout`` seconds.
        requests.exceptions.ConnectionError: the connection ended before the response did.
        requests.exceptions.ChunkedEncodingError: the response is not valid HTTP/1.1.
    """
    answer = _Answer()
    parser = answer.parser = httptools.HttpResponseParser(answer)
    sock.settimeout(timeout)
    while not answer.ended():
        try:
            data = sock.recv(_RECV_BYTES)
        except TimeoutError as exc:
            raise requests.exceptions.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise requests.exceptions.ConnectionError(str(exc)) from exc
        if not data:
            if answer.ended() or answer.ends_at_close():
                return answer, False
            raise requests.exceptions.ConnectionError("connection closed before the answer ended")
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            raise requests.exceptions.ChunkedEncodingError("unexpected upgrade") from exc
        except httptools.HttpParserError as exc:
            raise requests.exceptions.ChunkedEncodingError(f"malformed answer: {exc}") from exc
    return answer, answer.keep_alive


def _response(request: requests.PreparedRequest, answer: _Answer) -> requests.Response:
    """A ``requests.Response`` with the whole body, built without ``Response.__init__``: that
    makes a cookie jar (a lock and a policy) per answer, a fifth of this adapter's CPU, and
    FLORA sets no cookies. Every attribute ``__init__`` sets is set here."""
    response: requests.Response = requests.Response.__new__(requests.Response)
    response._content = b"".join(answer.body)  # the body is read already
    vars(response).update(_content_consumed=True, _next=None)  # untyped in the stubs
    response.status_code = answer.status
    response.headers = _headers(answer.headers)
    response.raw = None
    response.url = request.url or ""
    response.encoding = _encoding(response.headers.get("Content-Type"))
    response.history = []
    response.reason = answer.reason.decode("latin-1")
    response.cookies = _NO_COOKIES
    response.elapsed = _NO_TIME
    response.request = request
    return response


def _headers(raw: list[tuple[bytes, bytes]]) -> CaseInsensitiveDict[str]:
    """requests' header mapping, filled in one step (its per-item ``__setitem__`` is slow);
    a repeated header is joined with ", " as requests does."""
    store: dict[str, tuple[str, str]] = {}
    for name, value in raw:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        lower = key.lower()
        if lower in store:
            text = f"{store[lower][1]}, {text}"
        store[lower] = (key, text)
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    vars(headers)["_store"].update(store)  # its layout: lower-case key -> (key, value)
    return headers


def _encoding(content_type: str | None) -> str | None:
    """What ``requests.utils.get_encoding_from_headers`` says, for the common answers cheaply."""
    if not content_type:
        return None
    if "charset=" not in content_type:
        if content_type.startswith("application/json"):
            return "utf-8"
        return "ISO-8859-1" if content_type.startswith("text/") else None
    return requests.utils.get_encoding_from_headers({"content-type": content_type})


_NO_COOKIES = requests.cookies.RequestsCookieJar()  # shared and never written: no cookies here
_NO_TIME = datetime.timedelta(0)
