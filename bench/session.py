"""The sizes of a run and each benchmark's scratch space: a temp dir and child processes.

Owns cleanup: a ``Scope`` removes its directory and stops every process it started when the
benchmark ends, normally, by an exception or by Ctrl-C.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MIB = 1 << 20
GIB = 1 << 30
STOP_SECONDS = 30.0  # more than florasync's default grace (10 s)


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each benchmark is in one mode (quick, default, full)."""

    mode: str
    bulk_files: int
    naive_files: int
    rescan_files: tuple[int, ...]
    large_bytes: int
    hash_bytes: int
    latency_files: int
    burst_files: int
    fresh_backlog: int
    fresh_files: int
    cpu_files: int
    scale_files: int
    burst_wait_seconds: float
    idle_files: int
    idle_seconds: float
    memory_entries: tuple[int, ...]
    fleet_files: int
    repeats: int


QUICK = Sizes(
    mode="quick",
    bulk_files=50,
    naive_files=5,
    rescan_files=(2_000,),
    large_bytes=64 * MIB,
    hash_bytes=256 * MIB,
    latency_files=20,
    burst_files=2_000,
    fresh_backlog=2_000,
    fresh_files=10,
    cpu_files=1_000,
    scale_files=320,
    burst_wait_seconds=120.0,
    idle_files=5_000,
    idle_seconds=5.0,
    memory_entries=(10_000,),
    fleet_files=120,
    repeats=2,
)
DEFAULT = Sizes(
    mode="default",
    bulk_files=500,
    naive_files=20,
    rescan_files=(20_000,),
    large_bytes=GIB,
    hash_bytes=GIB,
    latency_files=200,
    burst_files=20_000,
    fresh_backlog=20_000,
    fresh_files=50,
    cpu_files=3_000,
    scale_files=1_280,
    burst_wait_seconds=420.0,
    idle_files=50_000,
    idle_seconds=60.0,
    memory_entries=(100_000, 1_000_000),
    fleet_files=1_000,
    repeats=3,
)
FULL = replace(DEFAULT, mode="full", rescan_files=(20_000, 100_000))


class Scope:
    """One benchmark's scratch directory and the processes it started."""

    def __init__(self, root: Path, name: str, sizes: Sizes) -> None:
        self.name = name
        self.sizes = sizes
        self.dir = root / name
        self.dir.mkdir()
        self._children: list[subprocess.Popen[Any]] = []

    def path(self, *parts: str) -> Path:
        """A path inside the scratch directory (parents created)."""
        path = self.dir.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def subdir(self, *parts: str) -> Path:
        """A directory inside the scratch directory (created)."""
        path = self.dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def spawn(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a child process that is stopped when the scope closes."""
        proc: subprocess.Popen[Any] = subprocess.Popen(argv, **kwargs)
        self._children.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self._children):
            stop_process(proc)
        self._children.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int | None:
    """Signal ``proc`` (if still running), wait for it, SIGKILL it if it takes too long."""
    if proc.returncode is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        return proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Session:
    """A temp root for the whole run; each benchmark gets a ``Scope`` inside it."""

    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.root = Path(tempfile.mkdtemp(prefix="florasync-bench-"))

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[Scope]:
        scope = Scope(self.root, name, self.sizes)
        try:
            yield scope
        finally:
            scope.close()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
