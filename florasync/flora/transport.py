"""The HTTP plumbing both FLORA clients share: how a request is sent, proxies, timeouts.

Owns ``Transport`` (requests' request and response objects over ``wire``'s keep-alive
adapter, the environment read once, no ~/.netrc, the rate gate checked as late as possible and
closed on a 429 before the connection is reused), which URLs may receive data, and the header
and exception texts every client needs. The API client (``api``) and the upload target
(``upload``) build on it; only ``flora/`` imports requests.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from florasync import __version__, errors
from florasync.flora import retrying, urls, wire

log = logging.getLogger(__name__)

USER_AGENT = f"florasync/{__version__}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait to connect, and for each read of a response."""

    connect: float = 10.0
    read: float = 60.0
    upload_read: float = 300.0


DEFAULT_TIMEOUTS = Timeouts()


class Transport:
    """How a client sends: a ``wire.KeepAliveAdapter`` driven with requests' own request and
    response objects, the rate gate checked at the last moment before a connection is taken,
    and a 429 closing it before that connection can carry another worker's request (§4).

    Requests are prepared here, not by a ``requests.Session``: the session's per-request
    merging of settings, cookies and hooks cost more CPU than the exchange itself (bench cpu),
    and none of it applies (no cookies, no redirects, auth in a header).
    """

    def __init__(self, retrier: retrying.Retrier) -> None:
        self._retrier = retrier
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._adapter = wire.KeepAliveAdapter(
            ca_bundle=bundle, before_send=retrier.wait_for_gate, on_answer=self._answered
        )
        self._proxies = Proxies()

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Any = None,
        timeout: tuple[float, float],
    ) -> requests.Response:
        """One exchange; ``body`` is bytes or a file-like object with ``len`` and ``read``.

        Raises:
            requests.RequestException: the request could not be sent or answered.
            errors.StoppedError: stop was set while waiting for the gate or mid-body.
        """
        request = requests.PreparedRequest()
        request.method = method
        request.url = url
        request.headers = CaseInsensitiveDict({"User-Agent": USER_AGENT, **headers})
        request.body = body
        if not log.isEnabledFor(logging.DEBUG):
            return self._adapter.send(request, timeout=timeout, proxies=self._proxies.for_url(url))
        started = time.monotonic()
        response = self._adapter.send(request, timeout=timeout, proxies=self._proxies.for_url(url))
        seconds = time.monotonic() - started
        log.debug("%s %s -> %d in %.1f ms", method, url, response.status_code, 1000 * seconds)
        return response

    def close(self) -> None:
        self._adapter.close()

    def _answered(self, status: int, headers: Mapping[str, str]) -> None:
        if status == 429:
            self._retrier.rate_limited(parse_retry_after(headers.get("Retry-After")))


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
