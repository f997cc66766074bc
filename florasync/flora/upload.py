"""The upload target client: the signed multipart POST of a file's bytes (CONTRACT §8, §10).

Owns streaming an open file as multipart in 4 MiB reads (never the whole file in memory),
or under a bandwidth limit in small pieces each taken from the shared ``Throttle`` first,
waiting out 429s with the same signed fields, and what the target's answers mean: any other
4xx spends the fields, a 5xx or a dropped connection leaves it unknown. It has its own session
and never sees the API key.
"""

from __future__ import annotations

import io
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import IO, Any, Protocol

import requests
from requests_toolbelt import MultipartEncoder

from florasync import errors
from florasync.flora import models, retrying, transport
from florasync.flora.throttle import Throttle

CHUNK_BYTES = 4 << 20  # the receiver keeps up with curl at 4 MiB writes, not at 1 MiB


class UploadTarget:
    """Pushes a file to signed upload instructions; has its own session and never sees the key."""

    def __init__(
        self,
        *,
        timeouts: transport.Timeouts = transport.DEFAULT_TIMEOUTS,
        stop: threading.Event | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        policy: retrying.RetryPolicy | None = None,
        gate: retrying.RateGate | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        """``throttle``: the bandwidth limit every upload of the process shares (None: none)."""
        self._throttle = throttle
        self._timeout = (timeouts.connect, timeouts.upload_read)
        self._stop = stop or threading.Event()
        self._chunk_bytes = max(chunk_bytes, CHUNK_BYTES)
        # only 429s are repeated here (they stored nothing, the fields stay valid); the gate is
        # the API client's, so a rate-limited host pauses the whole pool for its Retry-After
        self._retrier = retrying.Retrier(
            policy or retrying.RetryPolicy(), gate or retrying.RateGate(), self._stop
        )
        self._transport = transport.Transport(self._retrier)  # its own: never the API key

    def close(self) -> None:
        self._transport.close()

    def upload(
        self,
        instructions: models.UploadInstructions,
        stream: IO[bytes],
        *,
        file_name: str,
        content_type: str,
        progress: Callable[[int], None] | None = None,
    ) -> Mapping[str, Any]:
        """Send every signed field unchanged, then ``stream`` (an open file), in 4 MiB reads.

        The caller opens the file, so it can prove the bytes are those of the file it admitted.

        Raises:
            errors.InsecureTransportError: the URL is plain http to a non-loopback host.
            errors.UploadRejectedError: any 4xx — the instructions are spent; ask for fresh ones.
            errors.UploadUncertainError: 5xx or a dropped connection; the bytes may have landed.
            errors.RateLimitedError: 429 after the policy's patience; the fields are still valid.
            errors.StoppedError: the stop event was set mid-upload.
        """
        transport.require_secure(instructions.url, "upload.url")
        start = stream.tell()

        def post() -> Mapping[str, Any]:
            stream.seek(start)  # a 429 read nothing into the target: send it all again
            return self._post(instructions, stream, file_name, content_type, progress)

        return self._retrier.call(post, idempotent=False)  # 429: always safe (nothing stored)

    def _post(
        self,
        instructions: models.UploadInstructions,
        stream: IO[bytes],
        file_name: str,
        content_type: str,
        progress: Callable[[int], None] | None,
    ) -> Mapping[str, Any]:
        body, form = self._body(instructions, stream, file_name, content_type, progress)
        try:
            response = self._transport.send(
                instructions.method,
                instructions.url,
                headers={"Content-Type": form},
                body=body,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            if self._stop.is_set():
                raise errors.StoppedError("stopped during an upload") from None
            raise errors.UploadUncertainError(
                f"upload interrupted: {transport.exception_text(exc)}",
                method="POST",
                endpoint="upload",
            ) from None
        return _upload_result(response)

    def _body(
        self,
        instructions: models.UploadInstructions,
        stream: IO[bytes],
        file_name: str,
        content_type: str,
        progress: Callable[[int], None] | None,
    ) -> tuple[Any, str]:
        """The multipart body and its content type: every signed field unchanged, the file
        last; in memory up to one chunk, else streamed from the file in chunk-sized reads.
        Under a limit, the in-memory body too goes in pieces taken from the throttle."""
        size = os.fstat(stream.fileno()).st_size - stream.tell()
        if size <= self._chunk_bytes:
            file = (file_name, stream.read(), content_type)
            return self._in_memory(instructions, file, progress)
        parts: list[tuple[str, Any]] = list(instructions.fields.items())
        parts.append((instructions.file_field, (file_name, stream, content_type)))
        encoder = MultipartEncoder(fields=parts, boundary=uuid.uuid4().hex)
        reader = _ChunkedReader(
            encoder,
            encoder.len,
            self._chunk_bytes,
            self._stop,
            progress=progress,
            throttle=self._throttle,
        )
        return reader, encoder.content_type

    def _in_memory(
        self,
        instructions: models.UploadInstructions,
        file: tuple[str, bytes, str],
        progress: Callable[[int], None] | None,
    ) -> tuple[Any, str]:
        """A small body, built in memory: one piece when unlimited (as ever), else paced."""
        body, form = _encode_in_memory(dict(instructions.fields), {instructions.file_field: file})
        throttle = self._throttle
        if throttle is None or throttle.rate is None:
            if progress is not None:
                progress(len(body))
            return body, form
        reader = _ChunkedReader(
            io.BytesIO(body),
            len(body),
            self._chunk_bytes,
            self._stop,
            progress=progress,
            throttle=throttle,
        )
        return reader, form


class _Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _ChunkedReader:
    """File-like view of the multipart body: reads ≥ 4 MiB at a time, stops when asked.

    With a throttle that has a rate, each read is one piece, taken from the bucket before it
    is handed out; a rate set to None mid-body goes back to whole chunks, and back again.
    """

    def __init__(
        self,
        source: _Source,
        length: int,
        chunk_bytes: int,
        stop: threading.Event,
        *,
        progress: Callable[[int], None] | None,
        throttle: Throttle | None,
    ) -> None:
        self._source = source
        self._chunk_bytes = chunk_bytes
        self._stop = stop
        self._progress = progress
        self._throttle = throttle
        self.len = length  # requests reads the body length from here (Content-Length)

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise errors.StoppedError("stopped during an upload")
        throttle = self._throttle
        if throttle is None or throttle.rate is None:
            chunk: bytes = self._source.read(max(size, self._chunk_bytes))
        else:
            chunk = self._source.read(throttle.piece_bytes)
            if chunk:
                throttle.take(len(chunk), self._stop)
        if self._progress is not None and chunk:
            self._progress(len(chunk))
        return chunk


def _encode_in_memory(fields: dict[str, str], files: dict[str, Any]) -> tuple[bytes, str]:
    """multipart/form-data (RFC 7578) of a body that fits in memory: the signed fields in
    their order, then the file. Field names and values are the API's (ASCII); the file name
    is escaped as browsers and urllib3 do, so the target reads the name it would from them."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    ((field, (file_name, data, content_type)),) = files.items()
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(field)}"; '
        f'filename="{_quoted(file_name)}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
    )
    parts.append(data)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


_HTML5_ESCAPES = str.maketrans({'"': "%22", "\r": "%0D", "\n": "%0A"})


def _quoted(text: str) -> str:
    """A name inside a quoted header parameter, escaped as HTML5 forms (and urllib3) do."""
    return text.translate(_HTML5_ESCAPES)


def _upload_result(response: requests.Response) -> Mapping[str, Any]:
    status = response.status_code
    if 200 <= status < 300:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, Mapping) else {}
    try:
        message = str(response.json().get("message") or response.reason)
    except (ValueError, AttributeError):
        message = response.reason or f"HTTP {status}"
    if status == 429:  # refused before anything was stored: wait it out, same fields (§4)
        raise errors.RateLimitedError(
            message,
            status=status,
            retry_after=transport.parse_retry_after(response.headers.get("Retry-After")),
            method="POST",
            endpoint="upload",
        )
    # any other 4xx means the signed fields are spent (CONTRACT §10.3); a 5xx leaves it unknown
    cls = errors.UploadRejectedError if 400 <= status < 500 else errors.UploadUncertainError
    raise cls(message, status=status, method="POST", endpoint="upload")
