"""florasync as a user runs it: the real CLI in a child process, configured by a YAML file.

Owns the config the benchmarks write, the environment (the API key only there, never on argv),
one-shot ``run --scan`` measured with ``os.wait4`` (wall time and CPU of the whole process,
start-up included) and ``peak_rss.py`` (its peak RSS), and the daemon: started with a
``NOTIFY_SOCKET`` so READY=1 and its STATUS lines tell when it is up and when its catch-up scan
has drained.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import measure
from bench.sandbox import API_KEY_ENV, SandboxProcess
from bench.session import Scope, stop_process

READY_SECONDS = 120.0
PEAK_RSS = Path(__file__).with_name("peak_rss.py")
_STATUS = re.compile(r"queued (\d+), settling (\d+), synced (\d+), failed (\d+)")
_ISOLATED = ("FLORA", "FLORASYNC_", "NOTIFY_SOCKET", "WATCHDOG_", "CREDENTIALS_DIRECTORY")


def florasync_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "florasync", *args]


def cli_env(sandbox: SandboxProcess, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without florasync's variables, plus the sandbox's key.

    Without PYTHONDONTWRITEBYTECODE too: an installed florasync runs from compiled bytecode
    (pip compiles it at install), and a shell that forbids writing it would have every start
    compile ~50 modules from source (~65 ms of a rescan on this VM), which no user pays.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ISOLATED)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, API_KEY_ENV: sandbox.api_key, **(extra or {})}


def write_config(
    path: Path,
    sandbox: SandboxProcess,
    folders: list[Path],
    *,
    state_dir: Path,
    settle_seconds: float = 0,
    **settings: Any,
) -> Path:
    """A config mapping every folder to the sandbox's first project."""
    doc = {
        "api": {"base_url": sandbox.endpoints.base_url},
        "workspace_id": sandbox.endpoints.workspace_id,
        "state_dir": str(state_dir),
        "settle_seconds": settle_seconds,
        **settings,
        "folders": [{"path": str(f), "project_id": sandbox.project} for f in folders],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass(frozen=True, slots=True)
class ScanRun:
    """One finished ``florasync run --scan``."""

    seconds: float
    exit_code: int
    max_rss_bytes: int
    cpu_seconds: float
    summary: str


def run_scan(scope: Scope, sandbox: SandboxProcess, config: Path) -> ScanRun:
    """Run ``florasync run --scan`` to completion; wall time from fork to reap of florasync.

    Raises:
        RuntimeError: it exited non-zero (some file failed, or worse).
    """
    out, err, rss = scope.path("scan.out"), scope.path("scan.err"), scope.path("scan.rss")
    argv = [
        sys.executable,
        str(PEAK_RSS),
        str(rss),
        *florasync_argv("run", "--scan", "-c", str(config)),
    ]
    with out.open("ab") as stdout, err.open("ab") as stderr:
        proc = scope.spawn(argv, env=cli_env(sandbox), stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)  # CPU: the launcher's and florasync's
    proc.returncode = os.waitstatus_to_exitcode(status)
    max_rss_kib, seconds = rss.read_text().split()
    lines = out.read_text().splitlines()
    summary = lines[-1] if lines else ""
    if proc.returncode != 0:
        tail = err.read_text()[-2000:]
        raise RuntimeError(f"florasync run --scan exited {proc.returncode}: {summary}\n{tail}")
    return ScanRun(
        seconds=float(seconds),
        exit_code=proc.returncode,
        max_rss_bytes=int(max_rss_kib) * 1024,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        summary=summary,
    )


def status_json(sandbox: SandboxProcess, config: Path) -> dict[str, Any]:
    """``florasync status --json`` (reads the journal; does not disturb a running daemon)."""
    result = subprocess.run(
        florasync_argv("status", "--json", "-c", str(config)),
        env=cli_env(sandbox),
        capture_output=True,
        check=True,
        timeout=120,
    )
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """The counts of the daemon's latest sd_notify STATUS line."""

    queued: int
    settling: int
    synced: int
    failed: int


class NotifySocket:
    """Receives sd_notify datagrams on a thread, as systemd would.

    Read continuously: the daemon's ``sendto`` blocks once ``net.unix.max_dgram_qlen`` (10 by
    default) datagrams are waiting, and a daemon blocked there cannot even handle SIGTERM.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify", daemon=True)
        self._thread.start()

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._sock.close()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self._lines.extend(data.decode().splitlines())


class Daemon:
    """A running ``florasync run`` (the daemon), and what it sent over sd_notify."""

    def __init__(self, scope: Scope, sandbox: SandboxProcess, config: Path) -> None:
        self.notify = NotifySocket(config.with_suffix(".sock"))  # one daemon per config
        env = cli_env(sandbox, {"NOTIFY_SOCKET": str(self.notify.path)})
        argv = florasync_argv("run", "-c", str(config))
        self.err_path = config.with_suffix(".err")
        with config.with_suffix(".out").open("ab") as out, self.err_path.open("ab") as err:
            self.proc = scope.spawn(argv, env=env, stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        """Wait for READY=1.

        Raises:
            RuntimeError: the daemon exited first.
            measure.Timeout: it did not come up in time.
        """

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"florasync run exited {self.proc.returncode}: {self._tail()}")
            return "READY=1" in self.notify.lines()

        measure.wait_until(ready, timeout=timeout, interval=0.01, what="READY=1")

    def status(self) -> DaemonStatus | None:
        """The counts of the latest STATUS line (sent once a second), if any arrived."""
        for line in reversed(self.notify.lines()):
            if line.startswith("STATUS=") and (m := _STATUS.search(line)):
                return DaemonStatus(*(int(g) for g in m.groups()))
        return None

    def wait_synced(self, files: int, timeout: float) -> DaemonStatus:
        """Wait until STATUS says ``files`` are synced and nothing is queued or settling."""

        def done() -> DaemonStatus | None:
            s = self.status()
            idle = s is not None and s.synced >= files and s.queued == 0 and s.settling == 0
            return s if idle else None

        return measure.wait_until(done, timeout=timeout, interval=0.2, what=f"{files} synced")

    def rss_bytes(self) -> int:
        return measure.proc_rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        return measure.proc_cpu_seconds(self.pid)

    def stop(self) -> int:
        """SIGTERM and wait; the exit code (0 after a clean stop)."""
        code = stop_process(self.proc, signal.SIGTERM)
        self.notify.close()
        return -1 if code is None else code

    def _tail(self) -> str:
        return self.err_path.read_text()[-2000:]


def watch_new_folder(
    scope: Scope, sandbox: SandboxProcess, **settings: Any
) -> tuple[Path, Path, Daemon]:
    """An empty folder mapped to the sandbox, and a daemon watching it (READY=1 received).

    Returns the folder, the config and the daemon.
    """
    folder = scope.subdir("folder")
    config = write_config(
        scope.path("florasync.yaml"), sandbox, [folder], state_dir=scope.path("state"), **settings
    )
    daemon = Daemon(scope, sandbox, config)
    daemon.wait_ready()
    return folder, config, daemon
