"""`florasync run --scan` end to end: the real CLI in a subprocess, the sandbox over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from .helpers import (
    LONG_TIMEOUT,
    assert_exactly_once,
    mutating_requests,
    sha256_of,
    wait_until,
)
from .syncenv import SyncEnv


def _fill(env: SyncEnv, per_folder: int, size: int = 4096) -> None:
    for n in range(per_folder):
        env.add(0, f"spring-{n:03d}.png" if n % 3 else f"sub/deep/spring-{n:03d}.png", size)
        env.add(1, f"shot-{n:03d}.png", size)


def test_forty_files_two_projects(env: SyncEnv) -> None:
    """40 files in 2 folders: every byte stored, one asset per content, each in its project."""
    _fill(env, 20)
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "40 uploaded" in result.stdout
    state = env.sb.state()
    assert_exactly_once(state, env.expected())
    for asset in state["assets"][:5]:
        stored = env.sb.blob_path(asset["asset_id"])
        assert stored is not None
        assert sha256_of(stored) == asset["sha256"]
    assert state["violations"] == []


def test_rescan_sends_nothing(env: SyncEnv) -> None:
    """A second scan of an unchanged tree sends no request at all and says so."""
    _fill(env, 10)
    assert env.scan().returncode == 0
    before = len(env.sb.state()["requests"])
    result = env.scan()
    assert result.returncode == 0
    assert "20 unchanged" in result.stdout
    assert len(env.sb.state()["requests"]) == before


def test_rename_and_copy_are_not_new_assets(env: SyncEnv) -> None:
    """Renamed, moved and copied files in the same project cause no upload and no attach."""
    a, b = env.add(0, "a.png"), env.add(0, "b.png")
    assert env.scan().returncode == 0
    before = len(mutating_requests(env.sb.state()))
    a.rename(env.folders[0] / "renamed.png")
    (env.folders[0] / "moved").mkdir()
    b.rename(env.folders[0] / "moved" / "b.png")
    shutil.copy(env.folders[0] / "renamed.png", env.folders[0] / "copy.png")
    result = env.scan()
    assert result.returncode == 0, result.stdout
    state = env.sb.state()
    assert len(mutating_requests(state)) == before
    assert_exactly_once(state, env.expected())
    assert env.status()["folders"][0]["synced"] == 3


def test_copy_into_other_project_attaches_only(env: SyncEnv) -> None:
    """The same bytes in the other project's folder reuse the asset: attached, not uploaded."""
    a = env.add(0, "hero.png", 50_000)
    assert env.scan().returncode == 0
    shutil.copy(a, env.folders[1] / "hero-copy.png")
    result = env.scan()
    assert result.returncode == 0
    assert "1 attached only" in result.stdout
    state = env.sb.state()
    assert len(state["assets"]) == 1
    uploads = [r for r in state["requests"] if r["route"] == "POST /upload"]
    assert len(uploads) == 1
    assert_exactly_once(state, env.expected())


def test_modified_file_is_a_new_asset(env: SyncEnv) -> None:
    """Changed bytes become a new asset attached to the project; the old one stays."""
    a = env.add(0, "render.png", seed=1)
    assert env.scan().returncode == 0
    a.write_bytes(b"new render " * 500)
    result = env.scan()
    assert result.returncode == 0
    assert "1 uploaded" in result.stdout
    state = env.sb.state()
    assert len(state["assets"]) == 2
    new = next(x for x in state["assets"] if x["sha256"] == sha256_of(a))
    assert [n["asset_id"] for n in state["nodes"][env.projects[0]]].count(new["asset_id"]) == 1


def test_expired_instructions_are_renewed_not_duplicated(env: SyncEnv) -> None:
    """Expired upload instructions are renewed with /retry: same asset id, no new asset."""
    env.sb.faults.update(expire_next_uploads=3)
    for n in range(5):
        env.add(0, f"e{n}.png")
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    assert len(state["assets"]) == 5
    retries = [r for r in state["requests"] if r["route"] == "POST /assets/{id}/retry"]
    assert len(retries) >= 3
    assert_exactly_once(state, env.expected())


def test_server_errors_and_dropped_connections(env: SyncEnv) -> None:
    """30 % 5xx and 10 % dropped connections: everything still lands exactly once."""
    env.sb.faults.update(
        error_rate=0.3,
        drop_before_rate=0.05,
        drop_after_rate=0.05,
        upload_error_rate=0.1,
        upload_lose_response_rate=0.05,
    )
    _fill(env, 10)
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(env.sb.state(), env.expected())


def test_rate_limit_bursts_keep_out_of_the_window(env: SyncEnv) -> None:
    """Under 429 bursts every file lands and no request is sent inside a Retry-After window."""
    env.sb.faults.update(rate_limit_rps=15, rate_limit_burst=5)
    _fill(env, 10)
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    assert any(r["status"] == 429 for r in state["requests"])
    assert [v for v in state["violations"] if v["kind"] == "rate_window"] == []
    assert_exactly_once(state, env.expected())


def test_slow_processing_is_waited_for(env: SyncEnv) -> None:
    """An asset that stays processing after complete is polled until ready, then attached."""
    env.sb.faults.update(complete_pending_seconds=1.5)
    env.add(0, "slow.png")
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(env.sb.state(), env.expected())


def test_revoked_key_stops_fast_with_exit_3(env: SyncEnv) -> None:
    """A revoked key: exit 3 within seconds, a message about the key, the key never printed."""
    _fill(env, 10)
    env.sb.faults.update(revoked=True)
    started = time.monotonic()
    result = env.scan()
    assert result.returncode == 3, result.stdout + result.stderr
    assert time.monotonic() - started < 20
    assert "API key" in result.stderr
    assert env.sb.api_key not in result.stdout + result.stderr
    requests = env.sb.state()["requests"]
    assert len(requests) < 10, "no retry storm after a 401"


def test_forbidden_project_fails_its_files_only(env: SyncEnv) -> None:
    """403 on one project: its files fail with the reason, the other project syncs, exit 1."""
    env.sb.faults.update(forbidden_projects=[env.projects[1]])
    _fill(env, 3)
    result = env.scan()
    assert result.returncode == 1, result.stdout
    assert "forbidden" in result.stdout
    status = env.status()
    assert status["folders"][0]["synced"] == 3
    assert status["folders"][1]["failed"] == 3
    assert {f["code"] for f in status["failures"]} == {"forbidden"}
    env.sb.faults.update(forbidden_projects=[])
    retried = env.cli("retry")
    assert retried.returncode == 0
    assert "3 file(s) put back" in retried.stdout
    assert env.scan().returncode == 0
    assert_exactly_once(env.sb.state(), env.expected())


def test_unreadable_files_and_dirs_are_reported(env: SyncEnv) -> None:
    """Unreadable files and directories are reported with the OS error; the rest syncs."""
    good = env.add(0, "good.png")
    secret = env.add(0, "secret.png")
    locked = env.folders[0] / "locked"
    locked.mkdir()
    env.add(0, "locked/inside.png")
    secret.chmod(0)
    locked.chmod(0)
    try:
        result = env.scan(without_privileges=True)
        status = env.status()
    finally:
        locked.chmod(0o755)
        secret.chmod(0o644)
    assert result.returncode == 1, result.stdout + result.stderr
    codes = {Path(f["path"]).name: (f["code"], f["message"]) for f in status["failures"]}
    assert codes["secret.png"][0] == "unreadable"
    assert "Permission denied" in codes["secret.png"][1]
    assert codes["locked"][0] == "unreadable_dir"
    assert_exactly_once(env.sb.state(), {good: env.projects[0]})


def test_symlink_leaving_the_folder_is_not_followed(env: SyncEnv, tmp_path: Path) -> None:
    """A symlink to a file outside the folder is skipped and reported; inside links are fine."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.png").write_bytes(b"not for FLORA" * 100)
    (env.folders[0] / "escape.png").symlink_to(outside / "private.png")
    env.add(0, "real.png")
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    state = env.sb.state()
    assert len(state["assets"]) == 1
    status = env.status()
    assert any(f["code"] == "symlink_escape" for f in status["failures"])
    assert (status["folders"][0]["skipped"], status["folders"][0]["failed"]) == (1, 0)


def test_vanishing_files_are_tolerated(env: SyncEnv) -> None:
    """Files deleted while a scan is working are dropped quietly; the rest lands, exit 0."""
    env.sb.faults.update(latency_seconds=0.05)
    env.write_config(workers=1)
    paths = [env.add(0, f"v{n:02d}.png") for n in range(12)]
    proc = env.popen("run", "--scan")
    try:
        wait_until(
            lambda: any(a["status"] == "ready" for a in env.sb.state()["assets"]),
            message="the first upload",
        )
        for path in paths[6:]:
            path.unlink()
        out, err = proc.communicate(timeout=LONG_TIMEOUT)
    finally:
        if proc.returncode is None:
            env.kill(proc)
    assert proc.returncode == 0, out + err
    state = env.sb.state()
    expected = {p: env.projects[0] for p in paths if p.exists()}
    synced = {a["sha256"] for a in state["assets"] if a["status"] == "ready"}
    assert {sha256_of(p) for p in expected} <= synced


def test_dry_run_changes_nothing(env: SyncEnv) -> None:
    """--dry-run says what would happen and why, and sends no request."""
    env.add(0, "new.png")
    env.add(0, "notes.tmp")
    env.add(0, ".hidden.png")
    result = env.cli("run", "--scan", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "upload" in result.stdout
    assert "new.png" in result.stdout
    assert "notes.tmp" in result.stdout
    assert "nothing was sent" in result.stdout
    assert env.sb.state()["requests"] == []


def test_second_run_is_refused_and_status_works_meanwhile(env: SyncEnv) -> None:
    """While a run holds the journal, another run exits 2 naming its pid; status still answers."""
    env.sb.faults.update(latency_seconds=0.2)
    env.write_config(workers=1)
    for n in range(10):
        env.add(0, f"x{n}.png")
    proc = env.popen("run", "--scan")
    try:
        wait_until(lambda: env.sb.state()["requests"], message="the first request")
        second = env.scan()
        assert second.returncode == 2
        assert f"already running (pid {proc.pid})" in second.stderr
        status = env.status()
        assert status["running"] == {"pid": proc.pid}
    finally:
        env.kill(proc)


def test_sigint_during_scan_stops_cleanly_and_resumes(env: SyncEnv) -> None:
    """SIGINT mid-scan: requests in flight finish, exit 1 with a message; a rerun completes once."""
    env.sb.faults.update(latency_seconds=0.1)
    env.write_config(workers=2)
    for n in range(20):
        env.add(0, f"s{n:02d}.png")
    proc = env.popen("run", "--scan")
    wait_until(
        lambda: len([a for a in env.sb.state()["assets"] if a["status"] == "ready"]) >= 2,
        message="two uploads",
    )
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=LONG_TIMEOUT)
    assert proc.returncode == 1, out + err
    assert "interrupted by SIGINT" in err
    assert "Traceback" not in err
    env.sb.faults.update(latency_seconds=0)
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(env.sb.state(), env.expected())


@pytest.mark.parametrize("idempotency", ["duplicate", "replay"])
@pytest.mark.parametrize(
    "route",
    [
        "POST /assets",
        "POST /upload",
        "POST /assets/{id}/complete",
        "POST /projects/{id}/assets/{id}/attach",
    ],
)
def test_lost_answers_are_recovered(env: SyncEnv, route: str, idempotency: str) -> None:
    """A request that took effect but whose answer was lost is recovered, never duplicated."""
    env.sb.faults.update(idempotency=idempotency)
    env.sb.faults.fail_next(route, drop="after", times=2)
    a, b = env.add(0, "lost-a.png"), env.add(1, "lost-b.png")
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    assert_exactly_once(state, {a: env.projects[0], b: env.projects[1]})
    assert [x for x in state["assets"] if x["status"] != "ready"] == [], "no orphan asset"


def _scan_on_a_terminal(env: SyncEnv) -> str:
    """Run ``run --scan`` with stderr on a pseudo-terminal; what it drew there."""
    import pty

    main, sub = pty.openpty()
    try:
        proc = env.popen("run", "--scan", stderr=sub)
        os.close(sub)
        out, _ = proc.communicate(timeout=LONG_TIMEOUT)
        chunks = []
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(main)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, out + screen
    return screen


def test_progress_line_on_a_terminal(env: SyncEnv) -> None:
    """On a terminal, run --scan draws a self-rewriting progress line with files and bytes;
    files re-read and found unchanged are counted once (5/5, not 5/10)."""
    paths = [env.add(0, f"p{n}.png", 20_000) for n in range(5)]
    screen = _scan_on_a_terminal(env)
    assert "\r" in screen
    assert "5/5 files" in screen
    assert "sent" in screen
    for path in paths:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    screen = _scan_on_a_terminal(env)  # a new mtime: read again, same bytes, already attached
    last = [line for line in screen.replace("\n", "\r").split("\r") if line.strip()][-1]
    assert "5/5 files" in last, screen
