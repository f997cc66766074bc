"""idle: the daemon watching many already-synced files, once its catch-up scan is done.

No floor: the targets are absolute, at most 0.1 % of one core (utime + stime of the whole
process over the window, from /proc/PID/stat) and at most 100 MiB RSS. The journal is seeded
with every file's real stat and digest, so the catch-up scan finds them all unchanged.
"""

from __future__ import annotations

import time

from bench import corpus, measure, syncproc
from bench.report import Floor, Result, Target
from bench.sandbox import SandboxProcess
from bench.session import Scope

NAME = "idle"
TARGET_CPU_PERCENT = 0.1
MAX_RSS_BYTES = 100 << 20
CATCH_UP_SECONDS = 300.0
SAMPLE_SECONDS = 1.0


def run(scope: Scope) -> Result:
    files, window = scope.sizes.idle_files, scope.sizes.idle_seconds
    sandbox = SandboxProcess(scope)
    folder = scope.subdir("folder")
    paths = corpus.write_small_files(folder, files)
    state = scope.path("state")
    corpus.seed_synced(
        state, folder, paths, workspace=sandbox.endpoints.workspace_id, project=sandbox.project
    )
    config = syncproc.write_config(scope.path("florasync.yaml"), sandbox, [folder], state_dir=state)
    daemon = syncproc.Daemon(scope, sandbox, config)
    started = time.monotonic()
    daemon.wait_ready()
    daemon.wait_synced(files, CATCH_UP_SECONDS)
    caught_up = time.monotonic() - started
    cpu_before, t_before = daemon.cpu_seconds(), time.monotonic()
    rss = _max_rss_while_sleeping(daemon, window)
    cpu = daemon.cpu_seconds() - cpu_before
    elapsed = time.monotonic() - t_before
    code = daemon.stop()
    percent = 100 * cpu / elapsed
    resolution = 100 / measure.CLOCK_TICKS / elapsed
    return Result(
        NAME,
        percent,
        "% of a core",
        Floor("none, ratio to target", TARGET_CPU_PERCENT, "%"),
        targets=[
            Target(f"CPU <= {TARGET_CPU_PERCENT} % of a core", percent <= TARGET_CPU_PERCENT),
            Target(f"RSS <= 100 MiB ({measure.mib(rss):.0f} MiB)", rss <= MAX_RSS_BYTES),
        ],
        details=[
            f"{files} synced files watched for {elapsed:.0f} s after READY + catch-up "
            f"({caught_up:.1f} s): {cpu:.2f} s of CPU (resolution {resolution:.3f} %); "
            f"daemon exit {code}",
        ],
    )


def _max_rss_while_sleeping(daemon: syncproc.Daemon, seconds: float) -> int:
    """Sleep ``seconds``, sampling RSS once a second; the largest sample."""
    deadline = time.monotonic() + seconds
    largest = daemon.rss_bytes()
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(SAMPLE_SECONDS, left))
        largest = max(largest, daemon.rss_bytes())
    return largest
