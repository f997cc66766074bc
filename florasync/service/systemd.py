"""sd_notify over ``$NOTIFY_SOCKET``: readiness, status, watchdog pings, stopping, reloading.

Owns the notification protocol of sd_notify(3): one datagram of ``KEY=value`` lines to a unix
socket (abstract names start with ``@``). A few lines of stdlib; a no-op outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Talks to the service manager when ``$NOTIFY_SOCKET`` is set; otherwise does nothing."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # never block: a datagram socket blocks the sender once ~10 messages are unread
            # (net.unix.max_dgram_qlen); a slow reader must not freeze the main loop
            self._sock.setblocking(False)
        self.watchdog_interval = _watchdog_interval(env)
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: finishing requests in flight")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading configuration")

    def send(self, *lines: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except BlockingIOError:
            log.debug("sd_notify queue full; dropped %s", lines[0])
        except OSError as exc:  # the manager went away: nothing to tell
            log.debug("sd_notify failed: %s", exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` when the watchdog is meant for this process (as sd_watchdog)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000
