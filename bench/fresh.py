"""fresh: a file a user saves while a large backlog drains is attached first.

Two backlogs, each with its own daemon and folder: a burst (another process writes the files
while the daemon watches) and a catch-up scan (the files are in the folder when the daemon
starts). During each, this process saves files one every 0.5 s (new bytes each, 64 KiB) and
notes the monotonic time of each close; "attached" is the arrival of that file's attach request
in the sandbox's request log. Floor: close -> attached in the first daemon before its backlog,
one file at a time (what a save costs when nothing else is queued). The backlog must still be
draining when the last saved file is attached (or the run measured nothing), and it must keep
moving meanwhile: its files/s during the saves is printed.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import corpus, measure, syncproc
from bench.burst import WRITER
from bench.report import Floor, Result, Target
from bench.sandbox import ATTACH_ROUTE, SandboxProcess
from bench.session import Scope

NAME = "fresh"
SETTLE_SECONDS = 2.0
TARGET_P95_SECONDS = 0.25
FILE_BYTES = 64 << 10
SAVE_EVERY_SECONDS = 0.5
FLOOR_FILES = 10
SAVE_PREFIX = "save-"  # in every saved file's name, in no backlog file's
IDLE_ATTACH_SECONDS = 30.0  # one file with nothing queued


@dataclass(frozen=True, slots=True)
class Backlog:
    """How a phase's backlog files are named (``bench.burst``'s writer, ``bench.corpus``)."""

    prefix: str
    files: int


@dataclass(frozen=True, slots=True)
class Saves:
    """The files saved during one backlog, and what the backlog did meanwhile."""

    backlog: str
    waits: list[float]  # close -> attached, per saved file
    backlog_during: int  # backlog files attached between the first save and the last attach
    backlog_left: int  # backlog files not yet attached when the last save was: still draining
    seconds: float  # from the first save to the last saved file's attach
    rescans: list[str] = field(default_factory=list)  # why the daemon rescanned meanwhile

    @property
    def p95(self) -> float:
        return measure.percentile(self.waits, 95)

    def detail(self) -> str:
        rate = self.backlog_during / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.backlog}: {len(self.waits)} saves, close -> attached "
            f"p50 {1000 * measure.percentile(self.waits, 50):.0f} ms, "
            f"p95 {1000 * self.p95:.0f} ms, max {1000 * max(self.waits):.0f} ms; the backlog "
            f"moved meanwhile ({self.backlog_during} files, {rate:.0f}/s) and "
            f"{self.backlog_left} were still to come when the last save was attached"
            + (f"; rescans: {', '.join(sorted(set(self.rescans)))}" if self.rescans else "")
        )


def run(scope: Scope) -> Result:
    sizes = scope.sizes
    sandbox = SandboxProcess(scope)
    floor, burst = _floor_then_burst(scope, sandbox, sizes.fresh_backlog, sizes.fresh_files)
    scan = _during_catch_up(scope, sandbox, sizes.fresh_backlog, sizes.fresh_files)
    worst = max((burst, scan), key=lambda s: s.p95)
    floor_p95 = measure.percentile(floor, 95)
    return Result(
        NAME,
        worst.p95 * 1000,
        f"ms (p95, during the {worst.backlog})",
        Floor("nothing queued, p95", floor_p95 * 1000, "ms"),
        targets=[
            Target(
                f"p95 <= {TARGET_P95_SECONDS} s during both backlogs",
                max(burst.p95, scan.p95) <= TARGET_P95_SECONDS,
            ),
            Target(
                "the backlogs still draining at the last save",
                burst.backlog_left > 0 and scan.backlog_left > 0,
            ),
        ],
        details=[
            f"backlog {sizes.fresh_backlog:,} files of 256 B; a save of {FILE_BYTES >> 10} KiB "
            f"every {SAVE_EVERY_SECONDS} s; settle_seconds {SETTLE_SECONDS:g}; nothing queued: "
            f"p50 {1000 * measure.percentile(floor, 50):.0f} ms over {len(floor)} files",
            burst.detail(),
            scan.detail(),
        ],
    )


def _floor_then_burst(
    scope: Scope, sandbox: SandboxProcess, backlog: int, saves: int
) -> tuple[list[float], Saves]:
    """One daemon: saves with nothing queued, then saves while a burst is written."""
    folder, config, daemon = syncproc.watch_new_folder(
        scope, sandbox, settle_seconds=SETTLE_SECONDS
    )
    idle = _save_one_at_a_time(sandbox, folder, "idle", FLOOR_FILES)
    floor = _measure(sandbox, "nothing queued", idle, IDLE_ATTACH_SECONDS, Backlog("-", 0)).waits
    writer = scope.spawn([sys.executable, "-c", WRITER, str(folder / "burst"), str(backlog)])
    measure.wait_until((folder / "burst").is_dir, timeout=30, interval=0.01, what="the writer")
    closed = _save_on_schedule(folder, "burst", saves)
    result = _measure(
        sandbox, "burst", closed, scope.sizes.burst_wait_seconds, Backlog("b0", backlog)
    )
    writer.wait()
    rescans = [
        e["message"]
        for e in syncproc.status_json(sandbox, config).get("events", [])
        if e["kind"] == "rescan"
    ]
    _stop(daemon)
    return floor, replace(result, rescans=rescans)


def _during_catch_up(scope: Scope, sandbox: SandboxProcess, backlog: int, saves: int) -> Saves:
    """Another daemon, started on a folder that already holds the backlog."""
    folder = scope.subdir("catch-up")
    corpus.write_small_files(folder / "backlog", backlog)
    config = syncproc.write_config(
        scope.path("catch-up.yaml"),
        sandbox,
        [folder],
        state_dir=scope.path("catch-up-state"),
        settle_seconds=SETTLE_SECONDS,
    )
    daemon = syncproc.Daemon(scope, sandbox, config)
    daemon.wait_ready()
    closed = _save_on_schedule(folder, "scan", saves)
    result = _measure(
        sandbox, "catch-up scan", closed, scope.sizes.burst_wait_seconds, Backlog("f0", backlog)
    )
    _stop(daemon)
    return result


def _save(folder: Path, name: str) -> float:
    """Write and close one new file; the monotonic time of its close."""
    with (folder / name).open("wb") as f:
        f.write(os.urandom(FILE_BYTES))
    return time.monotonic()


def _save_one_at_a_time(
    sandbox: SandboxProcess, folder: Path, prefix: str, count: int
) -> dict[str, float]:
    closed = {}
    for n in range(count):
        name = f"{SAVE_PREFIX}{prefix}{n:04d}.png"
        closed[name] = _save(folder, name)
        measure.wait_until(
            functools.partial(_all_attached, sandbox, [name]),
            timeout=IDLE_ATTACH_SECONDS,
            interval=0.01,
            what=f"{name} attached",
        )
    return closed


def _save_on_schedule(folder: Path, prefix: str, count: int) -> dict[str, float]:
    """One save every SAVE_EVERY_SECONDS, on a fixed schedule (not paced by the daemon)."""
    closed = {}
    start = time.monotonic()
    for n in range(count):
        due = start + n * SAVE_EVERY_SECONDS
        time.sleep(max(0.0, due - time.monotonic()))  # the schedule itself, not a wait on florasync
        name = f"{SAVE_PREFIX}{prefix}{n:04d}.png"
        closed[name] = _save(folder, name)
    return closed


def _measure(
    sandbox: SandboxProcess,
    label: str,
    closed: dict[str, float],
    wait: float,
    backlog: Backlog,
) -> Saves:
    """Wait until every saved file is attached (a client that serves the backlog first
    takes as long as the backlog); read the times from the request log."""
    measure.wait_until(  # a cheap look: the state document would hold the sandbox up
        functools.partial(_all_attached, sandbox, list(closed)),
        timeout=wait,
        interval=0.5,
        what=f"the files saved during the {label} attached",
    )
    times = _attach_times_by_name(sandbox.state(requests=True))
    attached = {name: min(times[name]) for name in closed}
    first_save, last = min(closed.values()), max(attached.values())
    others = [min(ts) for name, ts in times.items() if name.startswith(backlog.prefix)]
    return Saves(
        backlog=label,
        waits=[attached[name] - closed[name] for name in closed],
        backlog_during=sum(first_save <= t <= last for t in others),
        backlog_left=backlog.files - sum(t <= last for t in others),
        seconds=last - first_save,
    )


def _all_attached(sandbox: SandboxProcess, names: Collection[str]) -> bool:
    """Whether every one of ``names`` (saved files of one phase, ``save-PHASE0000.png``) is
    attached: the API's name search for their common part (a phase saves at most 100)."""
    return set(names) <= sandbox.attached_names(min(names)[: -len("0000.png")])


def _attach_times_by_name(state: dict[str, Any]) -> dict[str, list[float]]:
    """File name -> arrival times of its successful attach requests."""
    names = {a["asset_id"]: a["name"] for a in state["assets"]}
    times: dict[str, list[float]] = {}
    for r in state["requests"]:
        if r["route"] == ATTACH_ROUTE and r["status"] == 201:
            asset_id = r["path"].rstrip("/").split("/")[-2]
            times.setdefault(names.get(asset_id, asset_id), []).append(float(r["t"]))
    return times


def _stop(daemon: syncproc.Daemon) -> None:
    code = daemon.stop()
    if code != 0:
        raise RuntimeError(f"the daemon exited {code} when stopped mid-backlog")
