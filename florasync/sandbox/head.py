"""A request's header fields, read from the connection without the ``email`` package.

Owns reading the field lines that follow the request line (RFC 9112 §5) into ``Fields``, a
case-insensitive view that keeps every value. ``http.server`` hands them to ``email``'s
feed parser, which parses them as a whole MIME message (and compiles a regex for each new
multipart boundary): a third of the sandbox's CPU per request. The same limits apply as in
``http.client``: a line of at most 64 KiB, at most 100 fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

MAX_LINE = 65536
MAX_FIELDS = 100


class Readline(Protocol):
    def readline(self, size: int = ..., /) -> bytes: ...


class HeadError(ValueError):
    """The head cannot be read: ``status`` is the answer to give (400 or 431)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Fields:
    """Header fields by name, case-insensitive; a repeated field keeps every value."""

    __slots__ = ("_values",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, else ``default``."""
        values = self._values.get(name.lower())
        return values[0] if values else default

    def text(self, name: str) -> str:
        """The first value of ``name``, ``""`` when it is absent."""
        values = self._values.get(name.lower())
        return values[0] if values else ""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)


def read_fields(rfile: Readline) -> Fields:
    """The fields up to and including the empty line that ends the head.

    Raises:
        HeadError: a line is too long (431), there are too many fields (431), a line is not a
            field (400), or the connection ended inside the head (400).
    """
    pairs: list[tuple[str, str]] = []
    while True:
        raw = rfile.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            raise HeadError(431, "Line too long")
        if raw in (b"\r\n", b"\n"):
            return Fields(pairs)
        if not raw:
            raise HeadError(400, "Connection closed inside the request head")
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line[0] in " \t":  # an obsolete continuation line: part of the field before it
            if not pairs:
                raise HeadError(400, "Continuation line before any field")
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HeadError(400, f"Bad header line {line[:40]!r}")
        if len(pairs) >= MAX_FIELDS:
            raise HeadError(431, "Too many headers")
        pairs.append((name, value.strip(" \t")))
