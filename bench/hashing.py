"""hash: florasync's content hash (``identity.hash_file``) of one large file, page cache warm.

Floors: ``sha256sum`` and ``b2sum`` of the same file, timed as whole commands. florasync's
hash runs in this process (it is a library call, with no start-up to pay); each is timed
several times and the best counts.
"""

from __future__ import annotations

import time
from pathlib import Path

from florasync.local import identity

from bench import corpus, measure
from bench.report import Floor, Result, Target, number
from bench.session import Scope

NAME = "hash"
TARGET_GBPS = 1.0


def run(scope: Scope) -> Result:
    size = scope.sizes.hash_bytes
    path = corpus.write_large_file(scope.path("big.bin"), size)
    repeats = scope.sizes.repeats
    measure.time_command(["cat", str(path)])  # warm the page cache for everyone
    florasync, fs_times = measure.best_of(repeats, lambda: _hash_file(path))
    sha, _ = measure.best_of(repeats, lambda: measure.time_command(["sha256sum", str(path)]))
    b2, _ = measure.best_of(repeats, lambda: measure.time_command(["b2sum", str(path)]))
    gbps = size / 1e9 / florasync
    sha_gbps, b2_gbps = size / 1e9 / sha, size / 1e9 / b2
    return Result(
        NAME,
        gbps,
        "GB/s",
        Floor("sha256sum", sha_gbps, "GB/s"),
        targets=[Target(f">= {TARGET_GBPS:g} GB/s", gbps >= TARGET_GBPS)],
        details=[
            f"{measure.mib(size):.0f} MiB, best of {repeats} "
            f"({', '.join(f'{t:.2f}' for t in fs_times)} s); GB = 10^9 bytes",
            f"b2sum {number(b2_gbps)} GB/s (florasync {gbps / b2_gbps:.2f}x of it)",
        ],
    )


def _hash_file(path: Path) -> float:
    started = time.perf_counter()
    identity.hash_file(path)
    return time.perf_counter() - started
