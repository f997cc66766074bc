"""bulk: ``run --scan`` of many 64 KiB files with 50 ms added to every request, 8 workers.

Floors: the latency bound (files x 4 requests x 50 ms / workers: no client can beat it without
skipping a request) and a naive serial bash + curl script making the same four calls per file.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench import corpus, measure, syncproc
from bench.report import Floor, Result, Target, number
from bench.sandbox import SandboxProcess
from bench.session import Scope

NAME = "bulk"
LATENCY_SECONDS = 0.05
WORKERS = 8
FILE_BYTES = 64 << 10
REQUESTS_PER_FILE = 4
BOUND_FACTOR = 1.05
NAIVE_FACTOR = 10.0
NAIVE_SCRIPT = Path(__file__).with_name("naive_upload.sh")


def run(scope: Scope) -> Result:
    files = scope.sizes.bulk_files
    sandbox = SandboxProcess(scope, latency_seconds=LATENCY_SECONDS)
    folder = scope.subdir("folder")
    paths = corpus.write_small_files(folder, files, FILE_BYTES)
    config = syncproc.write_config(
        scope.path("florasync.yaml"),
        sandbox,
        [folder],
        state_dir=scope.path("state"),
        workers=WORKERS,
    )
    sandbox_cpu = sandbox.cpu_seconds()
    scan = syncproc.run_scan(scope, sandbox, config)
    sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu
    attached = sandbox.node_count()
    naive_each = _naive_seconds_per_file(sandbox, paths[: scope.sizes.naive_files])
    bound = files * REQUESTS_PER_FILE * LATENCY_SECONDS / WORKERS
    naive_total = naive_each * files
    speedup = naive_total / scan.seconds
    return Result(
        NAME,
        scan.seconds,
        "s",
        Floor("latency bound", bound, "s"),
        targets=[
            Target(f"<= {BOUND_FACTOR} x bound", scan.seconds <= BOUND_FACTOR * bound),
            Target(
                f">= {NAIVE_FACTOR:g} x faster than naive curl ({speedup:.1f}x)",
                speedup >= NAIVE_FACTOR,
            ),
            Target(f"all {files} attached ({attached})", attached == files),
        ],
        details=[
            f"{files} x 64 KiB files, sandbox latency {LATENCY_SECONDS * 1000:.0f} ms per request, "
            f"workers {WORKERS}; {scan.summary}",
            f"naive serial bash+curl script: {naive_each:.3f} s/file over "
            f"{scope.sizes.naive_files} files, extrapolated linearly to {files} = "
            f"{number(naive_total)} s; florasync is {speedup:.1f}x faster",
            f"CPU: florasync {scan.cpu_seconds:.1f} s, the sandbox {sandbox_cpu:.1f} s; florasync "
            f"peak RSS {measure.mib(scan.max_rss_bytes):.0f} MiB",
        ],
    )


def _naive_seconds_per_file(sandbox: SandboxProcess, paths: list[Path]) -> float:
    """Seconds per file of the naive script (its uploads land in the same sandbox)."""
    before = sandbox.node_count()
    ep = sandbox.endpoints
    argv = [str(NAIVE_SCRIPT), ep.base_url, ep.workspace_id, sandbox.project, *map(str, paths)]
    env = {**os.environ, "FLORA_API_KEY": sandbox.api_key}
    seconds = measure.time_command(argv, env=env)
    if sandbox.node_count() - before != len(paths):
        raise RuntimeError("the naive script did not attach every file")
    return seconds / len(paths)
