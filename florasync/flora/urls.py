"""Which URLs florasync will send data to: https anywhere, plain http only to loopback.

Owns the transport rule of PRODUCT.md ("plain http:// is refused for any host but loopback"),
shared by config validation and the HTTP client. No network access, no imports of requests.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_problem(url: str) -> str | None:
    """Why florasync must not send to ``url``, or None when it may."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return f"not a valid URL: {url!r}"
    if parts.scheme not in ("https", "http"):
        return f"must be an https:// URL (got {url!r})"
    if not host:
        return f"has no host (got {url!r})"
    if parts.scheme == "http" and not is_loopback_host(host):
        return (
            f"plain http:// is refused for {host!r}: the API key and your files would cross "
            "the network unencrypted; use https:// (http is allowed only for loopback hosts)"
        )
    return None
