"""memory: the daemon's RSS growth per file its journal tracks.

Each size N is a daemon started on a journal of N synced files, RSS read after READY and its
catch-up scan, minus the RSS of a daemon whose journal holds only a 20-file folder. Up to
``MAX_REAL_FILES`` the files are real, in the watched folder: the daemon walks them, compares
each with the journal and watches their directories. Beyond that the rest are journal rows for
files under a folder no config maps (a million real files would take this machine longer to
create than the whole benchmark run): they measure what the journal's size costs on its own.
The floor is rclone's published figure (about 0.5 to 1 KB per object), not measured.
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
BASELINE_FILES = 20
MAX_REAL_FILES = 100_000
SETTLE_AFTER_CATCH_UP_SECONDS = 2.0
CATCH_UP_SECONDS = 600.0
UNMAPPED_FOLDER = "/srv/unmapped-renders"


def run(scope: Scope) -> Result:
    sandbox = SandboxProcess(scope)
    folders = _Folders(scope)
    baseline = _daemon_rss(scope, sandbox, folders, BASELINE_FILES, 0)
    growth: dict[int, float] = {}
    for n in scope.sizes.memory_entries:
        real = min(n, MAX_REAL_FILES)
        growth[n] = (_daemon_rss(scope, sandbox, folders, real, n - real) - baseline) / n
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
            f"baseline RSS (a folder of {BASELINE_FILES} files) {measure.mib(baseline):.1f} MiB",
            *(_detail(n, g) for n, g in growth.items()),
            f"RSS = VmRSS {SETTLE_AFTER_CATCH_UP_SECONDS:g} s after READY and the catch-up scan",
        ],
    )


def _detail(entries: int, per_file: float) -> str:
    real = min(entries, MAX_REAL_FILES)
    rows = f" + {entries - real:,} journal rows outside it" if entries > real else ""
    return (
        f"{entries:,} entries ({real:,} files in the watched folder{rows}): "
        f"+{measure.mib(per_file * entries):.1f} MiB, {per_file:.0f} B/file"
    )


class _Folders:
    """Folders of small files by size, each written once and shared by the runs that need it."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._made: dict[int, tuple[Path, list[Path]]] = {}

    def get(self, files: int) -> tuple[Path, list[Path]]:
        if files not in self._made:
            folder = self._scope.subdir(f"folder{files}")
            self._made[files] = folder, corpus.write_small_files(folder, files)
        return self._made[files]


def _daemon_rss(
    scope: Scope, sandbox: SandboxProcess, folders: _Folders, real: int, unmapped: int
) -> int:
    """RSS of a daemon watching ``real`` synced files, its journal holding ``unmapped`` more."""
    name = f"{real}+{unmapped}"
    folder, paths = folders.get(real)
    state = scope.path(f"state{name}")
    ids = {"workspace": sandbox.endpoints.workspace_id, "project": sandbox.project}
    corpus.seed_synced(state, folder, paths, **ids)
    if unmapped:
        corpus.seed_unconfigured(state, UNMAPPED_FOLDER, unmapped, **ids)
    config = syncproc.write_config(
        scope.path(f"florasync{name}.yaml"), sandbox, [folder], state_dir=state
    )
    daemon = syncproc.Daemon(scope, sandbox, config)
    daemon.wait_ready()
    daemon.wait_synced(real, CATCH_UP_SECONDS)
    time.sleep(SETTLE_AFTER_CATCH_UP_SECONDS)
    rss = daemon.rss_bytes()
    daemon.stop()
    return rss
