"""Downloading a ready asset's bytes to learn what they are: its ``url``, streamed and capped.

Owns fetching an asset's file URL (ImageKit's CDN, or the sandbox's file server): the
transport rule (https, plain http only to loopback), a byte cap checked against
``Content-Length`` and again while reading, the content digest florasync identifies files by
(blake3, as ``local/identity.py`` computes it, so the two compare), and what the file server's
answers mean. It has its own connections and never sends the API key (CONTRACT §0).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import blake3
import requests

from florasync import errors
from florasync.flora import retrying, transport

CHUNK_BYTES = 1 << 20
ENDPOINT = "asset url"  # how errors name what was fetched: the URL may carry a signature


@dataclass(frozen=True, slots=True)
class Download:
    """What a downloaded asset's bytes are: the blake3 hex digest (``ContentId.digest``) and
    the byte count."""

    digest: str
    size_bytes: int


class Downloader:
    """Hashes ready assets' bytes from their ``url``; its own connections, never the API key.

    Each download waits for the shared ``RateGate`` and is retried per ``RetryPolicy`` on 5xx,
    429 and dropped or cut connections (a GET changes nothing). It uses requests' own adapter,
    not ``transport.Transport``: that one reads whole answers, and a cap must stop reading.
    """

    def __init__(
        self,
        *,
        timeouts: transport.Timeouts = transport.DEFAULT_TIMEOUTS,
        stop: threading.Event | None = None,
        policy: retrying.RetryPolicy | None = None,
        gate: retrying.RateGate | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._timeout = (timeouts.connect, timeouts.read)
        self._stop = stop or threading.Event()
        self._chunk_bytes = chunk_bytes
        self._retrier = retrying.Retrier(
            policy or retrying.RetryPolicy(), gate or retrying.RateGate(), self._stop
        )
        self._adapter = requests.adapters.HTTPAdapter()  # no Session: no ~/.netrc, no cookies
        self._proxies = transport.Proxies()
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._verify: str | bool = bundle or True

    def close(self) -> None:
        self._adapter.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str, *, max_bytes: int) -> Download | None:
        """The digest and size of the bytes at ``url``, or None when there are more than
        ``max_bytes`` (known from ``Content-Length``, or met while reading: never read past it).

        Raises:
            ValueError: ``max_bytes`` is negative.
            errors.InsecureTransportError: plain http to a non-loopback host.
            errors.NotFoundError: 404 or 410: nothing there (the asset is gone or not ready).
            errors.RejectedError: another 4xx, or a redirect.
            errors.TransientError: 5xx, 429 or a dropped connection, after the policy's patience.
            errors.StoppedError: the stop event was set.
        """
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, not {max_bytes}")
        transport.require_secure(url, "asset.url")
        return self._retrier.call(lambda: self._get(url, max_bytes), idempotent=True)

    def _get(self, url: str, max_bytes: int) -> Download | None:
        request = requests.Request("GET", url, headers=_HEADERS).prepare()
        try:
            response = self._adapter.send(
                request,
                stream=True,
                timeout=self._timeout,
                verify=self._verify,
                proxies=self._proxies.for_url(url),
            )
        except requests.RequestException as exc:
            raise _network_error(exc) from None
        with response:
            _check_status(response)
            return self._digest(response, max_bytes)

    def _digest(self, response: requests.Response, max_bytes: int) -> Download | None:
        declared = _content_length(response)
        if declared is not None and declared > max_bytes:
            return None
        hasher = blake3.blake3()
        total = 0
        try:
            for chunk in response.iter_content(self._chunk_bytes):
                if self._stop.is_set():
                    raise errors.StoppedError("stopped during a download")
                total += len(chunk)
                if total > max_bytes:
                    return None
                hasher.update(chunk)
        except requests.RequestException as exc:
            raise _network_error(exc) from None
        if declared is not None and total != declared:  # never a digest of part of the file
            raise errors.NetworkError(
                f"the answer ended after {total} of {declared} bytes",
                method="GET",
                endpoint=ENDPOINT,
            )
        return Download(hasher.hexdigest(), total)


_HEADERS = {"User-Agent": transport.USER_AGENT, "Accept-Encoding": "identity"}
"""Everything a download sends: no Authorization, and the bytes as stored (not compressed)."""


def _content_length(response: requests.Response) -> int | None:
    """The declared length of the bytes as stored, or None (unknown, or content-encoded)."""
    text = response.headers.get("Content-Length")
    if not text or not text.isdigit() or response.headers.get("Content-Encoding"):
        return None
    return int(text)


def _check_status(response: requests.Response) -> None:
    """Raise the error an answer other than 2xx means (see ``Downloader.fetch``)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    cls, message = _refusal(response)
    raise cls(
        message,
        status=status,
        retry_after=transport.parse_retry_after(response.headers.get("Retry-After")),
        method="GET",
        endpoint=ENDPOINT,
    )


def _refusal(response: requests.Response) -> tuple[type[errors.ApiError], str]:
    status = response.status_code
    if 300 <= status < 400:
        return errors.RejectedError, f"unexpected redirect to {response.headers.get('Location')}"
    if status == 429:
        return errors.RateLimitedError, "rate limited"
    if status in (404, 410):
        return errors.NotFoundError, "nothing at the asset's url"
    if status >= 500:
        return errors.ServerError, response.reason or "server error"
    return errors.RejectedError, response.reason or "refused"


def _network_error(exc: requests.RequestException) -> errors.NetworkError:
    return errors.NetworkError(transport.exception_text(exc), method="GET", endpoint=ENDPOINT)
