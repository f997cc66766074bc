"""Clocks and counters: timing commands, waiting with a deadline, CPU and RSS from /proc."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Timeout(RuntimeError):
    """A condition the benchmark needs did not come true in time (a crash, not a slow run)."""


def wait_until(
    predicate: Callable[[], T | None], *, timeout: float, interval: float, what: str
) -> T:
    """Poll ``predicate`` until it returns something truthy.

    Raises:
        Timeout: it did not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def time_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> float:
    """Wall seconds of one run of ``argv`` (output discarded).

    Raises:
        subprocess.CalledProcessError: it failed.
    """
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def best_of(repeats: int, run: Callable[[], float]) -> tuple[float, list[float]]:
    """The minimum of ``repeats`` timings (the least disturbed one), and all of them."""
    times = [run() for _ in range(repeats)]
    return min(times), times


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile, interpolated between the closest ranks."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(pct) - 1]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14, 15 of stat(5)


def proc_rss_bytes(pid: int) -> int:
    """Resident set size now (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def mib(size_bytes: float) -> float:
    return size_bytes / (1 << 20)
