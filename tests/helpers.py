"""Test helpers: waiting on conditions with a deadline, running the real CLI, writing configs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

SHORT_TIMEOUT = 5.0
LONG_TIMEOUT = 60.0
CLI_TIMEOUT = 180.0


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float = LONG_TIMEOUT,
    interval: float = 0.01,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


def cli_env(api_key: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a CLI subprocess: the test's isolated home, the key when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLORA", "PYTEST_"))}
    if api_key is not None:
        env["FLORA_API_KEY"] = api_key
    env.update(extra or {})
    return env


def cli_command(*args: str, without_privileges: bool = False) -> list[str]:
    """argv for ``python -m florasync ARGS``; optionally with file permissions enforced.

    Tests run as root here; ``setpriv`` drops the capabilities that let root read anything, so
    an unreadable file is unreadable to florasync too.
    """
    prefix: list[str] = []
    if without_privileges and os.geteuid() == 0:
        prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    return [*prefix, sys.executable, "-m", "florasync", *args]


def run_cli(
    *args: str,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
    cwd: Path | None = None,
    without_privileges: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m florasync ARGS`` to completion and return its result (text mode)."""
    return subprocess.run(
        cli_command(*args, without_privileges=without_privileges),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(api_key, env),
        cwd=cwd,
        check=False,
    )


def write_config(
    path: Path,
    *,
    base_url: str,
    workspace_id: str,
    folders: Sequence[Mapping[str, Any]],
    state_dir: Path | None = None,
    **extra: Any,
) -> Path:
    """Write a florasync YAML config and return its path."""
    doc: dict[str, Any] = {
        "api": {"base_url": base_url},
        "workspace_id": workspace_id,
        "state_dir": str(state_dir or path.parent / "state"),
        "folders": [dict(f) for f in folders],
    }
    doc.update(extra)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_file(path: Path, size: int, *, seed: int = 0) -> bytes:
    """Write ``size`` pseudo-random bytes fixed by ``seed`` (distinct seeds, distinct content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _pseudo_random(size, seed)
    path.write_bytes(data)
    return data


def _pseudo_random(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def sha256_of(path: Path) -> str:
    """sha256 of a file (the sandbox records the sha256 of what it stored)."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mutating_requests(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Requests that could change something in FLORA (every POST, upload included)."""
    return [r for r in state["requests"] if r["method"] == "POST"]


def assert_exactly_once(state: Mapping[str, Any], expected: Mapping[Path, str]) -> None:
    """Each file's bytes are one ready asset, attached once to its project, and nothing extra.

    ``expected`` maps files on disk to the project they belong to.
    """
    ready: dict[str, Mapping[str, Any]] = {}
    for asset in state["assets"]:
        if asset["status"] == "ready":
            assert asset["sha256"] not in ready, f"two ready assets with the same bytes: {asset}"
            ready[asset["sha256"]] = asset
    wanted = {(sha256_of(path), project) for path, project in expected.items()}
    assert set(ready) == {sha for sha, _ in wanted}, "ready assets differ from the files on disk"
    for sha, project in wanted:
        asset_id = ready[sha]["asset_id"]
        nodes = [n for n in state["nodes"].get(project, []) if n["asset_id"] == asset_id]
        assert len(nodes) == 1, f"{asset_id} attached {len(nodes)} times to {project}"
    attached = sum(len(nodes) for nodes in state["nodes"].values())
    assert attached == len(wanted), f"{attached} attachments for {len(wanted)} (content, project)"


class SleepingClock:
    """A monotonic clock that moves only when something sleeps on it (a retry's backoff, the
    rate gate's window), so waiting seconds costs none; ``sleeps`` says how long each was."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return False


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a listener a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def healthz(port: int) -> tuple[int, str]:
    """A daemon's ``/healthz`` answer on 127.0.0.1:``port``: (status, body); (0, why) when
    nothing answers."""
    import requests

    try:
        answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except requests.RequestException as exc:
        return 0, str(exc)
    return answer.status_code, answer.text
