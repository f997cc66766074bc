"""sd_notify: the protocol lines, abstract sockets, the watchdog interval, and never blocking."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from florasync.service.systemd import Notifier

from .notify import NotifySocket


def test_messages_reach_the_socket(tmp_path: Path) -> None:
    """READY, STATUS (only when it changes), WATCHDOG, STOPPING and RELOADING arrive as sent."""
    sock = NotifySocket(tmp_path / "n.sock")
    notifier = Notifier(sock.env)
    notifier.ready("starting")
    notifier.status("1 synced")
    notifier.status("1 synced")
    notifier.watchdog()
    notifier.reloading()
    notifier.stopping()
    notifier.close()
    messages = sock.drain()
    sock.close()
    assert messages[:3] == ["READY=1", "STATUS=starting", "STATUS=1 synced"]
    assert messages.count("STATUS=1 synced") == 1
    assert "WATCHDOG=1" in messages
    assert "RELOADING=1" in messages
    assert any(m.startswith("MONOTONIC_USEC=") for m in messages)
    assert "STOPPING=1" in messages


def test_abstract_socket_names(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET starting with @ is an abstract socket name."""
    name = f"florasync-test-{os.getpid()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("ok")
        notifier.close()
        assert receiver.recv(1024).decode().splitlines()[0] == "READY=1"
    finally:
        receiver.close()


def test_watchdog_interval_is_half_and_for_this_process() -> None:
    """Pings come at half of WATCHDOG_USEC, and only when WATCHDOG_PID is this process."""
    assert Notifier({"WATCHDOG_USEC": "60000000"}).watchdog_interval == 30.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == 1.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    assert Notifier(other).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None
    assert not Notifier({}).enabled


def test_a_reader_that_never_reads_does_not_block(tmp_path: Path) -> None:
    """A full notification queue drops messages instead of freezing the daemon's main loop."""
    sock = NotifySocket(tmp_path / "n.sock")  # never drained
    notifier = Notifier(sock.env)

    def flood() -> None:
        for n in range(200):
            notifier.status(f"{n}")

    thread = threading.Thread(target=flood)
    thread.start()
    thread.join(timeout=5.0)
    blocked = thread.is_alive()
    if blocked:
        sock.drain()  # unblock it so the test does not leak a thread
        thread.join(5.0)
    notifier.close()
    sock.close()
    assert not blocked, "sd_notify blocked on a full socket"
