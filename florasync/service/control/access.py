"""Who may use the control API (issue 16): the token, and the Host and Origin checks.

Owns ``control.token`` in the state dir (made once, owner-only, kept across restarts) and the
rules every request passes before it is routed: ``Host`` must name the listener (so a page on a
rebound DNS name cannot reach it), an ``Origin``, when sent, must be the listener's own (no
cross-site request), and every change needs the token in ``X-Florasync-Token`` (never a cookie
or a URL parameter, which a browser or a log would keep).
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

TOKEN_FILE = "control.token"  # noqa: S105 -- a file name, not a secret
TOKEN_HEADER = "X-Florasync-Token"  # noqa: S105 -- a header name
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE


def read_token(state_dir: Path) -> str | None:
    """The token, or None when no daemon has made one yet (or it cannot be read)."""
    try:
        return token_path(state_dir).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def load_or_make_token(state_dir: Path) -> str:
    """The token in the state dir, made (mode 0600) when there is none."""
    if (token := read_token(state_dir)) is not None:
        token_path(state_dir).chmod(0o600)  # an older or hand-made file: owner only
        return token
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    fd = os.open(token_path(state_dir), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token + "\n")
    return token


class _Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    code: str
    message: str


class Gatekeeper:
    """Decides whether a request may be routed; knows the listener's own names."""

    def __init__(self, token: str, host: str, port: int, *, tls: bool) -> None:
        self._token = token.encode()
        names = {host.strip("[]").lower(), "127.0.0.1", "localhost", "::1"}
        self.hosts = frozenset(
            f"[{name}]:{port}" if ":" in name else f"{name}:{port}" for name in names
        )
        scheme = "https" if tls else "http"
        self.origins = frozenset(f"{scheme}://{h}" for h in self.hosts)

    def check(self, method: str, headers: _Headers) -> Refusal | None:
        """None when the request may go on, else why not (403: not ours; 401: no token)."""
        host = (headers.get("Host") or "").strip().lower()
        if host not in self.hosts:
            return Refusal(403, "bad_host", "the Host header does not name this listener")
        origin = headers.get("Origin")
        if origin is not None and origin.strip().lower() not in self.origins:
            return Refusal(403, "bad_origin", "requests from other sites are refused")
        if method in _MUTATING and not self._token_ok(headers.get(TOKEN_HEADER)):
            return Refusal(
                401, "token_required", f"send the token `florasync status` shows in {TOKEN_HEADER}"
            )
        return None

    def _token_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.strip().encode(), self._token)
