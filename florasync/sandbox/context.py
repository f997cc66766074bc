"""What an endpoint receives: the parsed ``Request`` and the ``Context`` of sandbox parts.

Owns the public URLs the sandbox hands out (API base, upload target, asset files, canvases).
No I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from florasync.sandbox.faults import Faults
from florasync.sandbox.store import Asset, Store

API_PREFIX = "/api/v1"
UPLOAD_PATH = "/upload/api/v1/files/upload"
FILES_PREFIX = "/files/"
CONTROL_PREFIX = "/_sandbox/"


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request with its body read; ``arrived`` is monotonic seconds; ``connection``
    numbers the connection it came on (None: unknown)."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    authorization: str | None = None
    idempotency_key: str | None = None
    body: bytes = b""
    arrived: float = 0.0
    connection: int | None = None

    @property
    def bearer(self) -> str | None:
        """The token of ``Authorization: Bearer <token>``, or None when absent or malformed.

        Everything after the first space is the token, so a doubled ``Bearer`` or stray
        whitespace gives a wrong token, not a malformed header (CONTRACT §2).
        """
        if self.authorization is None:
            return None
        scheme, _, token = self.authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token


@dataclass(frozen=True, slots=True)
class Context:
    """The parts of the sandbox an endpoint may use, and the URLs it serves on."""

    store: Store
    faults: Faults
    origin: str
    clock: Callable[[], float] = time.time

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    @property
    def upload_url(self) -> str:
        return self.origin + UPLOAD_PATH

    def file_url(self, asset: Asset) -> str:
        """The asset's public URL (known before upload, served once ready)."""
        return f"{self.origin}{FILES_PREFIX}{asset.asset_id}/{quote(asset.file_name)}"

    def canvas_url(self, project_id: str) -> str:
        return f"{self.origin}/canvas/{project_id}"
