"""The CLI's side of the control API (issue 16): ``pause``, ``resume``, ``status --watch``.

Owns the requests the CLI sends to a running daemon (stdlib urllib: a handful of loopback
calls), with the token from the state dir in its header; the daemon's answers come back as data
or as a ``ControlError`` saying what went wrong.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from florasync import errors
from florasync.service.control import access, endpoint

TIMEOUT_SECONDS = 10.0


class ControlError(errors.FlorasyncError):
    """The daemon's control API could not be reached or refused the request."""


class Client:
    def __init__(self, url: str, token: str | None, *, cafile: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._context = ssl.create_default_context(cafile=str(cafile)) if cafile else None

    @classmethod
    def find(cls, state_dir: Path, *, cafile: Path | None = None) -> Client | None:
        """A client of the daemon listening for this state dir, or None when none is."""
        found = endpoint.read(state_dir)
        if found is None:
            return None
        return cls(found["url"], access.read_token(state_dir), cafile=cafile)

    def get(self, name: str) -> Any:
        return self._call("GET", name, None)

    def post(self, name: str, body: dict[str, Any]) -> Any:
        return self._call("POST", name, body)

    def _call(self, method: str, name: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 -- the URL is the daemon's own listener
            f"{self.url}/api/v1/{name}", data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        if self._token:
            request.add_header(access.TOKEN_HEADER, self._token)
        try:
            with urllib.request.urlopen(  # noqa: S310 -- see above
                request, timeout=TIMEOUT_SECONDS, context=self._context
            ) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ControlError(f"the daemon refused {method} {name}: {_message(exc)}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ControlError(f"cannot reach the daemon at {self.url}: {exc}") from None


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("message") or exc.reason)
    except (ValueError, AttributeError, OSError):
        return f"HTTP {exc.code}"
