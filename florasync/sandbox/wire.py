"""Reading HTTP/1.1 request bodies as a stream: ``Content-Length`` or chunked (RFC 9112 §6-§7).

Owns the framing, so the upload target can read a 1 GiB body in bounded pieces and the API can
read a small one whole. Raises ``IncompleteBody`` when the client goes away mid-body.
"""

from __future__ import annotations

from typing import Protocol

from florasync.sandbox.head import Fields

MAX_LINE = 8192


class Stream(Protocol):
    """The buffered reading side of a connection (``BaseHTTPRequestHandler.rfile``)."""

    def read(self, size: int = ..., /) -> bytes: ...

    def readline(self, size: int = ..., /) -> bytes: ...


class IncompleteBody(ConnectionError):
    """The connection ended (or the framing broke) before the whole body arrived."""


class BodyTooLarge(ValueError):
    """The body is longer than the caller is willing to hold in memory."""


class BodyReader:
    """The body of one request, read from the connection in pieces of at most ``size`` bytes."""

    def __init__(self, rfile: Stream, headers: Fields) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in headers.text("Transfer-Encoding").lower()
        self.length = None if self._chunked else _content_length(headers)
        self._remaining = self.length or 0
        self._chunk_left = 0
        self._done = False

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of body; ``b""`` once it is all read.

        Raises:
            IncompleteBody: the client closed the connection early or broke the framing.
        """
        if self._chunked:
            return self._read_chunked(size)
        if self._remaining <= 0:
            return b""
        data = self._rfile.read(min(size, self._remaining))
        if not data:
            raise IncompleteBody("connection closed before the end of the body")
        self._remaining -= len(data)
        return data

    def read_all(self, limit: int) -> bytes:
        """The whole body (small ones only).

        Raises:
            BodyTooLarge: it is longer than ``limit`` bytes (the rest is left unread).
            IncompleteBody: as ``read``.
        """
        if self.length is not None and self.length > limit:
            raise BodyTooLarge(f"body of {self.length} bytes exceeds {limit}")
        parts: list[bytes] = []
        total = 0
        while chunk := self.read(1 << 16):
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"body exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def drain(self) -> None:
        """Read and discard the rest, so the connection can carry the answer and stay open."""
        while self.read(1 << 20):
            pass

    def _read_chunked(self, size: int) -> bytes:
        if self._done:
            return b""
        if self._chunk_left == 0:
            self._chunk_left = self._next_chunk_size()
            if self._chunk_left == 0:
                self._skip_trailers()
                self._done = True
                return b""
        data = self._rfile.read(min(size, self._chunk_left))
        if not data:
            raise IncompleteBody("connection closed inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and self._rfile.read(2) != b"\r\n":
            raise IncompleteBody("chunk not followed by CRLF")
        return data

    def _next_chunk_size(self) -> int:
        line = self._rfile.readline(MAX_LINE)
        try:
            return int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise IncompleteBody(f"bad chunk size line {line[:40]!r}") from None

    def _skip_trailers(self) -> None:
        while True:
            line = self._rfile.readline(MAX_LINE)
            if not line:
                raise IncompleteBody("connection closed in the chunked trailer")
            if line in (b"\r\n", b"\n"):
                return


def _content_length(headers: Fields) -> int:
    text = headers.get("Content-Length")
    try:
        return max(0, int(text)) if text else 0
    except ValueError:
        return 0
