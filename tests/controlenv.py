"""The control API of a running daemon, for end-to-end tests: where it listens, its token, and
raw HTTP requests whose headers (Host, Origin, the token) the test chooses."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .helpers import wait_until


@dataclass
class Control:
    port: int
    token: str

    @classmethod
    def of(cls, state_dir: Path) -> Control:
        """The control listener of the daemon running on ``state_dir`` (waits for it)."""
        found = wait_until(lambda: _read(state_dir / "control.json"), message="control.json")
        token = (state_dir / "control.token").read_text().strip()
        port = urlsplit(found["url"]).port
        assert port is not None
        return cls(port, token)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: bool = True,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, http.client.HTTPMessage]:
        """(status, JSON answer or text, response headers) of one request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = {"Host": self.host}
        if token and method == "POST":
            sent["X-Florasync-Token"] = self.token
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = "application/json"
            sent["Content-Length"] = str(len(data))
        sent.update(headers or {})
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            conn.endheaders(data)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        kind = response.headers.get("Content-Type", "")
        answer = json.loads(raw) if kind.startswith("application/json") else raw.decode()
        return response.status, answer, response.headers

    def get(self, name: str) -> Any:
        status, answer, _ = self.call("GET", f"/api/v1/{name}")
        assert status == 200, answer
        return answer

    def post(self, name: str, body: Any = None) -> Any:
        status, answer, _ = self.call("POST", f"/api/v1/{name}", body if body is not None else {})
        assert status == 200, answer
        return answer


def _read(file: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(file.read_text()))
    except (OSError, ValueError):
        return None
