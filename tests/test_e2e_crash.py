"""kill -9 at random moments, then restart: no file lost, no duplicate asset or attachment."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import (
    LONG_TIMEOUT,
    assert_exactly_once,
    cli_command,
    cli_env,
    sha256_of,
    wait_until,
)
from .syncenv import SyncEnv

PEAK_RSS = Path(__file__).resolve().parent.parent / "bench" / "peak_rss.py"

KILLS = 22


def _kill_after_requests(env: SyncEnv, extra_requests: int) -> bool:
    """Start a scan, SIGKILL it once the sandbox saw ``extra_requests`` more; False if it ended."""
    start = len(env.sb.state()["requests"])
    proc = env.popen("run", "--scan")
    try:
        wait_until(
            lambda: (
                proc.poll() is not None or len(env.sb.state()["requests"]) >= start + extra_requests
            ),
            timeout=LONG_TIMEOUT,
            interval=0.002,
            message=f"{extra_requests} requests",
        )
    finally:
        finished = proc.poll() is not None
        env.kill(proc)
    return not finished


@pytest.mark.slow
@pytest.mark.parametrize("idempotency", ["duplicate", "replay"])
def test_kill_9_at_random_moments(env: SyncEnv, idempotency: str) -> None:
    """22 SIGKILLs during a 120-file sync, restarting each time: everything lands exactly once."""
    env.sb.faults.update(idempotency=idempotency, latency_seconds=0.01)
    env.write_config(workers=4)
    rng = random.Random(f"crash-{idempotency}")
    for n in range(110):
        env.add(n % 2, f"c{n:03d}.png", size=rng.randrange(2_000, 200_000))
    for n in range(10):  # the same bytes in the other project: reuse under crashes too
        shutil.copy(env.folders[0] / f"c{2 * n:03d}.png", env.folders[1] / f"copy{n}.png")
    kills = 0
    for _ in range(KILLS * 3):
        if kills >= KILLS:
            break
        kills += _kill_after_requests(env, rng.randrange(0, 40))
    assert kills >= 20, "the sync finished before enough kills landed"
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    assert_exactly_once(state, env.expected())
    orphans = [a for a in state["assets"] if a["status"] != "ready"]
    print(f"{kills} kills; {len(state['assets'])} assets, {len(orphans)} unfinished orphans")


@pytest.mark.slow
def test_one_gib_file_streams_in_bounded_memory(env: SyncEnv) -> None:
    """A 1 GiB video is hashed and uploaded with the process RSS below 150 MiB."""
    big = env.folders[0] / "master.mp4"
    block = os.urandom(1 << 20)
    with big.open("wb") as sink:
        for n in range(1024):
            sink.write(block[n:] + block[:n])
    env.write_config(
        folders=[{"path": str(env.folders[0]), "project_id": env.projects[0], "include": ["*.mp4"]}]
    )
    # wait4 on our own child would report pytest's RSS: Linux carries the parent's high-water
    # mark into a vfork'd child's maxrss at exec. bench/peak_rss.py measures florasync alone.
    rss_file = env.root / "peak-rss-kib"
    result = subprocess.run(
        [
            sys.executable,
            str(PEAK_RSS),
            str(rss_file),
            *cli_command("run", "-c", str(env.config), "--scan"),
        ],
        env=cli_env(env.sb.api_key),
        capture_output=True,
        text=True,
        timeout=LONG_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    peak_mib = int(rss_file.read_text().split()[0]) / 1024
    print(f"peak RSS of run --scan for 1 GiB: {peak_mib:.1f} MiB")
    assert peak_mib < 150
    state = env.sb.state()
    assert len(state["assets"]) == 1
    assert state["assets"][0]["sha256"] == sha256_of(big)
    stored = env.sb.blob_path(state["assets"][0]["asset_id"])
    assert isinstance(stored, Path)
    assert stored.stat().st_size == 1 << 30


def test_popen_helper_closes_pipes(env: SyncEnv) -> None:
    """The kill helper leaves no pipe open (filterwarnings=error would catch a ResourceWarning)."""
    proc = env.popen("status")
    proc.wait(timeout=LONG_TIMEOUT)
    out, _ = env.kill(proc)
    assert "journal" in out
    assert proc.returncode == 0
    assert isinstance(proc, subprocess.Popen)
