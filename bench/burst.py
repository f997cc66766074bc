"""burst: many files created by another process while the daemon watches.

No floor: the target is to drain within 60 s of the writer finishing, every file synced once.
The writer is a separate Python process; "drained" is the arrival of the last attach request
in the sandbox's request log. inotify overflow is read from ``florasync status --json`` events.
The CPU that florasync and the sandbox spend per file shows which of them the drain waits on.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import measure, syncproc
from bench.report import Floor, Result, Target
from bench.sandbox import SandboxProcess, attach_times
from bench.session import Scope

NAME = "burst"
WORKERS = 8
TARGET_SECONDS = 60.0
WRITER = """
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
os.makedirs(root)
for n in range(count):
    with open(os.path.join(root, f"b{n:06d}.png"), "wb") as f:
        f.write(os.urandom(256))
"""


@dataclass(frozen=True, slots=True)
class Drain:
    """What happened between the writer's start and the last attach (or giving up)."""

    began: float
    wrote: float
    last_attach: float
    drained: bool
    attached: int
    florasync_cpu: float
    sandbox_cpu: float

    @property
    def seconds(self) -> float:
        """From the writer finishing to the last attach (or to giving up)."""
        return self.last_attach - self.wrote


def run(scope: Scope) -> Result:
    files = scope.sizes.burst_files
    sandbox = SandboxProcess(scope)
    folder, config, daemon = syncproc.watch_new_folder(scope, sandbox, workers=WORKERS)
    drain = _burst(sandbox, daemon, folder / "burst", files, scope.sizes.burst_wait_seconds)
    events = syncproc.status_json(sandbox, config).get("events", [])
    code = daemon.stop()
    once, counts = _synced_once(sandbox, folder / "burst", files)
    return Result(
        NAME,
        drain.seconds,
        "s" if drain.drained else f"s (not drained: {drain.attached} of {files} attached)",
        Floor("none, ratio to target", TARGET_SECONDS, "s"),
        targets=[
            Target(
                f"drained <= {TARGET_SECONDS:g} s",
                drain.drained and drain.seconds <= TARGET_SECONDS,
            ),
            Target(f"100 % synced once ({counts})", once),
        ],
        details=[*_details(drain, files), _events_detail(events, code)],
    )


def _burst(
    sandbox: SandboxProcess, daemon: syncproc.Daemon, root: Path, files: int, wait: float
) -> Drain:
    cpu = daemon.cpu_seconds(), sandbox.cpu_seconds()
    began = time.monotonic()
    subprocess.run([sys.executable, "-c", WRITER, str(root), str(files)], check=True)
    wrote = time.monotonic()
    try:
        measure.wait_until(
            lambda: sandbox.node_count() >= files,
            timeout=wait,
            interval=0.5,
            what=f"{files} attached",
        )
        drained = True
    except measure.Timeout:
        drained = False
    florasync_cpu, sandbox_cpu = daemon.cpu_seconds() - cpu[0], sandbox.cpu_seconds() - cpu[1]
    given_up = time.monotonic()
    attached = attach_times(sandbox.requests())
    last = max(attached, default=wrote) if drained else given_up
    return Drain(began, wrote, last, drained, len(attached), florasync_cpu, sandbox_cpu)


def _details(d: Drain, files: int) -> list[str]:
    span = d.last_attach - d.began
    per_file = max(d.attached, 1)
    return [
        f"{files} files of 256 B written by another process in {d.wrote - d.began:.1f} s; "
        f"{d.attached} attached, {d.attached / span:.0f} files/s from the first write to the "
        f"{'last attach' if d.drained else 'end of the wait'}",
        f"CPU per attached file: florasync {1000 * d.florasync_cpu / per_file:.1f} ms "
        f"({100 * d.florasync_cpu / span:.0f} % of a core), sandbox "
        f"{1000 * d.sandbox_cpu / per_file:.1f} ms ({100 * d.sandbox_cpu / span:.0f} % of a core)",
    ]


def _events_detail(events: list[dict[str, Any]], code: int) -> str:
    rescans = [e["message"] for e in events if e["kind"] == "rescan"]
    overflowed = any("overflow" in m for m in rescans)
    return (
        f"inotify overflow: {'yes' if overflowed else 'no'}; rescan events: "
        f"{rescans or 'none'}; daemon exit {code}"
    )


def _synced_once(sandbox: SandboxProcess, folder: Path, files: int) -> tuple[bool, str]:
    """Every file is one ready asset attached once to the project, and nothing else is."""
    state = sandbox.state()
    ready = {a["asset_id"]: a["name"] for a in state["assets"] if a["status"] == "ready"}
    nodes = [n["asset_id"] for n in state["nodes"].get(sandbox.project, [])]
    names = sorted(ready.values())
    expected = sorted(p.name for p in folder.iterdir())
    once = len(nodes) == len(set(nodes)) == files and set(nodes) == set(ready)
    once = once and names == expected and len(expected) == files
    return once, f"{len(ready)} ready assets, {len(nodes)} nodes, {len(set(names))} names"
