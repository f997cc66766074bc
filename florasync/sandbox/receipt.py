"""One upload body being received: text fields in memory, the file part streamed to disk.

Owns the streaming parse with ``multipart.PushMultipartParser`` and the temporary file, hashed
with sha256 as it is written. The signed fields are checked once, as soon as the file part
starts when they came first (as every ImageKit client sends them), else at the end; after a
refusal the rest of the body is read and thrown away, so the client still gets the answer.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import multipart

from florasync.sandbox.replies import Reply

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 << 10
SIGNED_FIELDS = ("publicKey", "signature", "expire", "token")
HELP = "For support kindly contact us at support@imagekit.io ."


class Body(Protocol):
    def read(self, size: int) -> bytes: ...

    def drain(self) -> None: ...


class Refused(Exception):
    """An ImageKit-style refusal: ``{"message", "help"}`` with its status (CONTRACT §10.2)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reply = Reply(status, {"message": message, "help": HELP}, headers or {})


class Receipt:
    """The parts of one multipart upload; ``check(fields)`` returns the asset id or refuses."""

    def __init__(self, temp_dir: Path, check: Callable[[dict[str, str]], str]) -> None:
        self.fields: dict[str, str] = {}
        self.asset_id: str | None = None
        self.token = ""
        self.file_type: str | None = None
        self.sink: _Sink | None = None
        self._temp_dir = temp_dir
        self._check = check
        self._checked = False
        self._refusal: Refused | None = None
        self._part: str | None = None
        self._text = bytearray()

    def parse(self, content_type: str, body: Body, read_bytes: int) -> None:
        """Read the whole body.

        Raises:
            Refused: the first refusal (bad form, signature, token, fields, no file).
            multipart.MultipartError: the body is not valid multipart/form-data.
        """
        boundary = _boundary(content_type)
        if boundary is None:
            body.drain()
            raise Refused(400, "The request must be multipart/form-data with a boundary.")
        parser = multipart.PushMultipartParser(boundary)
        try:
            while chunk := body.read(read_bytes):
                for event in parser.parse(chunk):
                    self._on_event(event)
            parser.close()
        except multipart.MultipartError:
            body.drain()
            raise
        if not self._checked:
            self._run_check()
        if self._refusal is not None:
            raise self._refusal
        if self.sink is None:
            raise Refused(400, "Missing file parameter for upload")

    def keep(self, path: Path) -> tuple[int, str]:
        """Move the received file to ``path``; its size and sha256."""
        if self.sink is None:
            raise ValueError("no file part was received")
        size, digest = self.sink.finish()
        self.sink.path.replace(path)
        self.sink = None
        return size, digest

    def discard(self) -> None:
        """Remove the temporary file, if it is still there."""
        if self.sink is not None:
            self.sink.abort()
            self.sink = None

    def _on_event(self, event: Any) -> None:
        if event is None:
            self._end_part()
        elif isinstance(event, bytes | bytearray | memoryview):
            self._on_data(event)
        else:
            self._start_part(event)

    def _start_part(self, segment: Any) -> None:
        self._part = segment.name
        self._text.clear()
        if self._part != FILE_FIELD:
            return
        if self.file_type is not None or self.sink is not None:
            self._refuse(Refused(400, "Only one file can be uploaded per request."))
        self.file_type = segment.content_type or "application/octet-stream"
        if not self._checked and all(name in self.fields for name in SIGNED_FIELDS):
            self._run_check()
        if self._refusal is None:
            self.sink = _Sink(self._temp_dir)

    def _on_data(self, data: bytes | bytearray | memoryview) -> None:
        if self._part == FILE_FIELD:
            if self.sink is not None and self._refusal is None:
                self.sink.write(data)
        elif len(self._text) + len(data) <= MAX_FIELD_BYTES:
            self._text += data
        else:
            self._refuse(Refused(400, f"The {self._part} parameter is too long."))

    def _end_part(self) -> None:
        if self._part is not None and self._part != FILE_FIELD:
            try:
                self.fields[self._part] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                self._refuse(Refused(400, f"The {self._part} parameter is not valid UTF-8."))
        self._part = None

    def _run_check(self) -> None:
        self._checked = True
        if self._refusal is not None:
            return
        try:
            self.asset_id = self._check(dict(self.fields))
            self.token = self.fields["token"]
        except Refused as refused:
            self._refuse(refused)

    def _refuse(self, refused: Refused) -> None:
        if self._refusal is None:
            self._refusal = refused
        self.discard()


class _Sink:
    """A temporary file in the blob directory, hashed as it is written."""

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=".part")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._file.write(data)
        self._hash.update(data)
        self._size += len(data)

    def finish(self) -> tuple[int, str]:
        self._file.close()
        return self._size, self._hash.hexdigest()

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _boundary(content_type: str) -> str | None:
    kind, options = multipart.parse_options_header(content_type)
    boundary = options.get("boundary")
    return boundary if kind == "multipart/form-data" and boundary else None
