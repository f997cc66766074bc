"""A running daemon for end-to-end tests: `florasync run` in a subprocess, READY=1 awaited,
SIGTERM at the end (exit 0, no traceback asserted), and whether a file reached FLORA."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from .helpers import LONG_TIMEOUT, sha256_of
from .notify import NotifySocket
from .syncenv import SyncEnv


class Daemon:
    """A running `florasync run` and the notifications it sent.

    Its output goes to files, not pipes: a daemon logging thousands of lines would block on a
    pipe nobody reads until the end.
    """

    def __init__(self, env: SyncEnv, notify: NotifySocket) -> None:
        self.env = env
        self.notify = notify
        self._out = (notify.path.with_suffix(".out"), notify.path.with_suffix(".err"))
        with self._out[0].open("w") as out, self._out[1].open("w") as err:
            self.proc = env.popen("run", extra_env=notify.env, stdout=out, stderr=err)
        self.output = ("", "")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon and wait for it; return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=LONG_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # never leave a daemon behind a failed test
            self.proc.wait()
        self.output = (self._out[0].read_text(), self._out[1].read_text())
        return self.proc.returncode


@contextlib.contextmanager
def running(env: SyncEnv, tmp_path: Path, name: str = "notify") -> Iterator[Daemon]:
    """Start the daemon, wait for READY=1, and SIGTERM it at the end (asserting exit 0)."""
    notify = NotifySocket(tmp_path / f"{name}.sock")
    daemon = Daemon(env, notify)
    try:
        notify.wait_for("READY=1")
        yield daemon
    finally:
        code = daemon.stop()
        notify.close()
    assert code == 0, daemon.output
    assert "Traceback" not in daemon.output[1]


def synced(env: SyncEnv, path: Path, project: str | None = None) -> bool:
    """Whether ``path``'s current bytes are a ready asset attached to its project."""
    project = project or env.projects[0]
    try:
        digest = sha256_of(path)
    except FileNotFoundError:
        return False
    state = env.sb.state(requests=False)
    ids = {
        a["asset_id"] for a in state["assets"] if a["sha256"] == digest and a["status"] == "ready"
    }
    return any(n["asset_id"] in ids for n in state["nodes"].get(project, []))
