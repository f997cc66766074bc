"""A stand-in for systemd's notification socket: collects what the daemon sends over sd_notify."""

from __future__ import annotations

import socket
from pathlib import Path

from .helpers import LONG_TIMEOUT, wait_until


class NotifySocket:
    """A unix datagram socket that records every sd_notify message, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def drain(self) -> list[str]:
        """Everything received so far (one entry per line of each datagram)."""
        while self.sock.fileno() >= 0:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            self.messages.extend(data.decode().splitlines())
        return self.messages

    def wait_for(self, line: str, timeout: float = LONG_TIMEOUT) -> None:
        """Wait until a message line starting with ``line`` arrives."""
        wait_until(
            lambda: any(m.startswith(line) for m in self.drain()),
            timeout=timeout,
            message=f"sd_notify {line!r}",
        )

    def close(self) -> None:
        """Keep what was received, then close the socket."""
        self.drain()
        self.sock.close()
