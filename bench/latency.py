"""latency: in the daemon, from a file's close to its attachment, one file at a time.

Settle is 2 s, so a daemon that waited it out would show ~2 s; the close-after-write event is
what lets it go sooner. Each file is written and closed, then the benchmark waits until the
project holds one more node before writing the next. "Attached" is when the attach request
reached the sandbox (its request log's monotonic arrival time, the clock this process reads).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench import measure, syncproc
from bench.report import Floor, Result, Target
from bench.sandbox import SandboxProcess, attach_times
from bench.session import Scope

NAME = "latency"
SETTLE_SECONDS = 2.0
TARGET_P95_SECONDS = 0.05
FILE_BYTES = 64 << 10
ATTACH_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.02  # paces the next file only; the times come from the request log


def run(scope: Scope) -> Result:
    files = scope.sizes.latency_files
    sandbox = SandboxProcess(scope)
    folder, _, daemon = syncproc.watch_new_folder(scope, sandbox, settle_seconds=SETTLE_SECONDS)
    closed = [_write_and_wait(sandbox, folder, n) for n in range(files)]
    attached = attach_times(sandbox.requests())
    code = daemon.stop()
    if len(attached) != files or code != 0:
        raise RuntimeError(f"{len(attached)} attach requests for {files} files; exit {code}")
    waits = [a - c for a, c in zip(attached, closed, strict=True)]
    p50, p95 = measure.percentile(waits, 50), measure.percentile(waits, 95)
    return Result(
        NAME,
        p95 * 1000,
        "ms (p95)",
        Floor("settle_seconds", SETTLE_SECONDS * 1000, "ms"),
        targets=[Target(f"p95 <= {TARGET_P95_SECONDS} s", p95 <= TARGET_P95_SECONDS)],
        details=[
            f"{files} files of 64 KiB written one at a time: close -> attached "
            f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms",
        ],
    )


def _write_and_wait(sandbox: SandboxProcess, folder: Path, n: int) -> float:
    """Write file ``n``, then wait for its node; the monotonic time of its close."""
    with (folder / f"shot{n:04d}.png").open("wb") as f:
        f.write(os.urandom(FILE_BYTES))
    closed = time.monotonic()
    measure.wait_until(
        lambda: sandbox.node_count() > n,
        timeout=ATTACH_TIMEOUT_SECONDS,
        interval=POLL_SECONDS,
        what=f"file {n} attached",
    )
    return closed
