"""memory: the daemon's RSS growth per file its journal tracks.

The journal is seeded (``Journal.import_synced``) with synced files under a folder no config
maps, so the daemon keeps them, while it watches a small configured folder whose files are
seeded as synced too (every daemon's catch-up then has the same nothing to do). RSS is read
after READY and the catch-up scan, and compared with a daemon whose journal holds only that
folder. The floor is rclone's published figure (about 0.5 to 1 KB per object), not measured.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench import corpus, measure, syncproc
from bench.report import Floor, Result, Target
from bench.sandbox import SandboxProcess
from bench.session import Scope

NAME = "memory"
TARGET_BYTES_PER_FILE = 1024
RCLONE_BYTES_PER_OBJECT = 1024
CONFIGURED_FILES = 20
SETTLE_AFTER_CATCH_UP_SECONDS = 2.0
CATCH_UP_SECONDS = 300.0
UNMAPPED_FOLDER = "/srv/unmapped-renders"


def run(scope: Scope) -> Result:
    sandbox = SandboxProcess(scope)
    folder = scope.subdir("configured")
    paths = corpus.write_small_files(folder, CONFIGURED_FILES, 4096)
    baseline = _daemon_rss(scope, sandbox, folder, paths, 0)
    growth = {
        n: (_daemon_rss(scope, sandbox, folder, paths, n) - baseline) / n
        for n in scope.sizes.memory_entries
    }
    largest = max(growth)
    return Result(
        NAME,
        growth[largest],
        "B/file",
        Floor("rclone, published", RCLONE_BYTES_PER_OBJECT, "B/object"),
        targets=[
            Target(f"<= 1 KB/file at {n:,} entries ({g:.0f} B)", g <= TARGET_BYTES_PER_FILE)
            for n, g in growth.items()
        ],
        details=[
            f"baseline RSS (journal of the {CONFIGURED_FILES} configured files only) "
            f"{measure.mib(baseline):.1f} MiB; "
            + "; ".join(f"{n:,} entries: +{measure.mib(g * n):.1f} MiB" for n, g in growth.items()),
            f"RSS = VmRSS {SETTLE_AFTER_CATCH_UP_SECONDS:g} s after READY and the catch-up scan",
        ],
    )


def _daemon_rss(
    scope: Scope, sandbox: SandboxProcess, folder: Path, paths: list[Path], entries: int
) -> int:
    """RSS of a daemon whose journal also tracks ``entries`` files outside its folder."""
    state = scope.path(f"state{entries}")
    ids = {"workspace": sandbox.endpoints.workspace_id, "project": sandbox.project}
    corpus.seed_synced(state, folder, paths, **ids)
    if entries:
        corpus.seed_unconfigured(state, UNMAPPED_FOLDER, entries, **ids)
    config = scope.path(f"florasync{entries}.yaml")
    syncproc.write_config(config, sandbox, [folder], state_dir=state)
    daemon = syncproc.Daemon(scope, sandbox, config)
    daemon.wait_ready()
    daemon.wait_synced(CONFIGURED_FILES, CATCH_UP_SECONDS)
    time.sleep(SETTLE_AFTER_CATCH_UP_SECONDS)
    rss = daemon.rss_bytes()
    daemon.stop()
    return rss
