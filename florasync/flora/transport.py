"""The HTTP plumbing both FLORA clients share: sessions, the gated adapter, proxies, timeouts.

Owns how a ``requests.Session`` is built (the environment read once, no ~/.netrc, the rate gate
checked as late as possible and closed on a 429 before the connection is reused), which URLs
may receive data, and the header and exception texts every client needs. The API client
(``api``) and the upload target (``upload``) build on it; only ``flora/`` imports requests.
"""

from __future__ import annotations

import email.utils
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from florasync import __version__, errors
from florasync.flora import retrying, urls
from florasync.flora.secret import Secret

USER_AGENT = f"florasync/{__version__}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait to connect, and for each read of a response."""

    connect: float = 10.0
    read: float = 60.0
    upload_read: float = 300.0


DEFAULT_TIMEOUTS = Timeouts()


class BearerAuth(requests.auth.AuthBase):
    """Sets the Authorization header at send time (and keeps ~/.netrc from replacing it)."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return request


class NoAuth(requests.auth.AuthBase):
    """Guarantees the upload target never receives an Authorization header (seed 004)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


def new_session(auth: requests.auth.AuthBase, retrier: retrying.Retrier) -> requests.Session:
    """A session that reads the environment once, not on every request, and obeys the gate.

    With ``trust_env`` requests re-reads every environment variable per request to find
    proxies (about 1 ms of CPU each, measured), and may take credentials from ~/.netrc.
    Proxies (``Proxies``) and the CA bundle are read from the environment here instead.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = GatedAdapter(retrier)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.auth = auth
    session.headers["User-Agent"] = USER_AGENT
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


class GatedAdapter(requests.adapters.HTTPAdapter):
    """Checks the rate gate at the last moment before a request takes a connection, and closes
    it on a 429 before that connection goes back to the pool: another worker's request, already
    prepared, must not leave on it inside the announced window (CONTRACT §4)."""

    def __init__(self, retrier: retrying.Retrier) -> None:
        super().__init__()
        self._retrier = retrier

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        self._retrier.wait_for_gate()
        response = super().send(request, *args, **kwargs)
        if response.status_code == 429:  # the body is read (and the connection freed) later
            self._retrier.rate_limited(parse_retry_after(response.headers.get("Retry-After")))
        return response


class Proxies:
    """The environment's proxy settings (HTTPS_PROXY, NO_PROXY...) per origin, read once."""

    def __init__(self) -> None:
        self._by_origin: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> dict[str, str]:
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        with self._lock:
            if key not in self._by_origin:
                self._by_origin[key] = dict(requests.utils.get_environ_proxies(url))
            return self._by_origin[key]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def exception_text(exc: BaseException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed or was dropped"
    return type(exc).__name__


def require_secure(url: str, key: str) -> None:
    problem = urls.transport_problem(url)
    if problem:
        raise errors.InsecureTransportError(key, problem)
