"""large: ``run --scan`` of one large file, against curl pushing the same bytes to the same target.

Floors: ``curl -F`` of every signed form field and the file (a reservation is made first, not
timed), and a two-pass client (``sha256sum`` then the same curl). florasync's time is the whole
process: start-up, hashing, reserve, upload, complete and attach. Peak RSS is florasync's
own (``peak_rss.py``). Each repetition changes the first bytes of the file (a new content, so a new
upload) and alternates which client goes first; the page cache stays warm for both, and
dirty pages are flushed before each timed upload. One untimed upload comes first: the sandbox
writes its first 1 GiB blob in half the time of every later one (the kernel's write path on
this VM), which would otherwise favour whichever client goes first.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench import corpus, measure, syncproc
from bench.report import Floor, Result, Target, number
from bench.sandbox import SandboxProcess
from bench.session import Scope

NAME = "large"
CONTENT_TYPE = "video/mp4"  # images are capped at 50 MB by FLORA; videos at 2 GiB
CURL_FACTOR = 0.9
MAX_RSS_BYTES = 100 << 20
REPEATS = 2
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Round:
    """One repetition: seconds of each client, florasync's peak RSS and CPU, the sandbox's CPU."""

    florasync: float
    curl: float
    sha256sum: float
    max_rss_bytes: int
    florasync_cpu: float
    sandbox_cpu_florasync: float
    sandbox_cpu_curl: float
    summary: str


def run(scope: Scope) -> Result:
    size = scope.sizes.large_bytes
    sandbox = SandboxProcess(scope)
    folder = scope.subdir("folder")
    path = corpus.write_large_file(folder / "large.mp4", size)
    _curl_upload(sandbox, path)  # untimed: the sandbox's first blob write is unlike the rest
    rounds = [_round(scope, sandbox, path, n) for n in range(REPEATS)]
    fs = min(r.florasync for r in rounds)
    curl = min(r.curl for r in rounds)
    two_pass = min(r.curl + r.sha256sum for r in rounds)
    rss = max(r.max_rss_bytes for r in rounds)
    mbps = size / 1e6 / fs
    curl_mbps = size / 1e6 / curl
    two_mbps = size / 1e6 / two_pass
    return Result(
        NAME,
        mbps,
        "MB/s",
        Floor("curl", curl_mbps, "MB/s"),
        targets=[
            Target(f">= {CURL_FACTOR} x curl", mbps >= CURL_FACTOR * curl_mbps),
            Target(f"peak RSS <= 100 MiB ({measure.mib(rss):.0f} MiB)", rss <= MAX_RSS_BYTES),
        ],
        details=[
            f"one {measure.mib(size):.0f} MiB file; best of {REPEATS}: florasync "
            f"{', '.join(f'{r.florasync:.2f}' for r in rounds)} s, curl "
            f"{', '.join(f'{r.curl:.2f}' for r in rounds)} s, sha256sum "
            f"{', '.join(f'{r.sha256sum:.2f}' for r in rounds)} s",
            f"two-pass floor (sha256sum + curl): {number(two_mbps)} MB/s; florasync is "
            f"{mbps / two_mbps:.2f}x of it",
            "CPU seconds per upload: florasync "
            f"{', '.join(f'{r.florasync_cpu:.2f}' for r in rounds)}; the sandbox receiving "
            f"florasync's {', '.join(f'{r.sandbox_cpu_florasync:.2f}' for r in rounds)}, "
            f"curl's {', '.join(f'{r.sandbox_cpu_curl:.2f}' for r in rounds)}",
            f"last line: {rounds[-1].summary}",
        ],
    )


def _round(scope: Scope, sandbox: SandboxProcess, path: Path, n: int) -> Round:
    _new_version(path, n)
    digest, sha_seconds = _sha256sum(path)
    if n % 2 == 0:
        curl, curl_cpu = _on_sandbox(sandbox, lambda: _curl_upload(sandbox, path))
        scan, scan_cpu = _on_sandbox(sandbox, lambda: _florasync(scope, sandbox, path, n))
    else:
        scan, scan_cpu = _on_sandbox(sandbox, lambda: _florasync(scope, sandbox, path, n))
        curl, curl_cpu = _on_sandbox(sandbox, lambda: _curl_upload(sandbox, path))
    _check_stored(sandbox, digest, path.stat().st_size)
    return Round(
        florasync=scan.seconds,
        curl=curl,
        sha256sum=sha_seconds,
        max_rss_bytes=scan.max_rss_bytes,
        florasync_cpu=scan.cpu_seconds,
        sandbox_cpu_florasync=scan_cpu,
        sandbox_cpu_curl=curl_cpu,
        summary=scan.summary,
    )


def _on_sandbox(sandbox: SandboxProcess, client: Callable[[], T]) -> tuple[T, float]:
    """What ``client`` returns, and the CPU seconds the sandbox spent meanwhile.

    Dirty pages are flushed first: the sandbox writes every upload to disk, and a client must
    not pay for the writeback of the one before it.
    """
    os.sync()
    before = sandbox.cpu_seconds()
    value = client()
    return value, sandbox.cpu_seconds() - before


def _new_version(path: Path, n: int) -> None:
    """Change the first bytes: another content (a fresh upload), same size, still cached."""
    with path.open("r+b") as f:
        f.write(f"round {n} {time.time_ns()}".encode().ljust(64))


def _sha256sum(path: Path) -> tuple[str, float]:
    started = time.perf_counter()
    out = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
    return out.stdout.split()[0], time.perf_counter() - started


def _curl_upload(sandbox: SandboxProcess, path: Path) -> float:
    """Seconds of one curl upload of ``path`` with fresh signed fields."""
    upload = sandbox.reserve(path.name, CONTENT_TYPE)["upload"]
    argv = ["curl", "-fsS", "-o", os.devnull]
    for key, value in upload["form_fields"].items():
        argv += ["--form-string", f"{key}={value}"]  # -F without @file / <file interpretation
    argv += ["-F", f"{upload['file_field']}=@{path};type={CONTENT_TYPE}", upload["url"]]
    return measure.time_command(argv)


def _florasync(scope: Scope, sandbox: SandboxProcess, path: Path, n: int) -> syncproc.ScanRun:
    config = syncproc.write_config(
        scope.path(f"florasync{n}.yaml"), sandbox, [path.parent], state_dir=scope.path(f"state{n}")
    )
    return syncproc.run_scan(scope, sandbox, config)


def _check_stored(sandbox: SandboxProcess, sha256: str, size: int) -> None:
    """florasync's upload is one ready asset holding exactly these bytes."""
    ready = [
        a
        for a in sandbox.state()["assets"]
        if a["status"] == "ready" and a["sha256"] == sha256 and a["size_bytes"] == size
    ]
    if len(ready) != 1:
        raise RuntimeError(f"expected one ready asset with sha256 {sha256}, found {len(ready)}")
