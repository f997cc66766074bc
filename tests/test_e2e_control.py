"""The control API of the running daemon (issue 16), over real HTTP: what it shows, who may
change anything, pause and resume (durable, honest), retry and rescan, the event stream."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .controlenv import Control
from .daemonenv import running, synced
from .helpers import (
    assert_exactly_once,
    cli_command,
    cli_env,
    free_port,
    healthz,
    sha256_of,
    wait_until,
)
from .syncenv import SyncEnv

CONTROL = {"listen": "127.0.0.1:0"}


def _requests(env: SyncEnv) -> int:
    return len(env.sb.state()["requests"])


def test_status_and_files_show_what_was_synced(env: SyncEnv, tmp_path: Path) -> None:
    """The status counts every synced file per folder; the synced list names their assets."""
    env.write_config(control=CONTROL)
    paths = [env.add(0, f"a{i}.png") for i in range(3)] + [env.add(1, "b.png")]
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        wait_until(lambda: all(synced(env, p, pr) for p, pr in env.expected().items()))
        status = wait_until(
            lambda: (s := control.get("status"))["totals"]["synced"] == 4 and s,
            message="4 synced in the status",
        )
        files = control.get("files?state=synced&limit=2")
        rest = control.get("files?state=synced&offset=2&limit=50")
    assert status["api"] == 1
    assert status["healthy"]
    assert status["key"] == "ok"
    assert status["paused"]["paused"] is False
    assert status["journal"]["backend"] == "sqlite"
    by_path = {f["path"]: f for f in status["folders"]}
    assert by_path[str(env.folders[0])]["synced"] == 3
    assert by_path[str(env.folders[0])]["watch"] == "armed"
    assert by_path[str(env.folders[1])]["project_id"] == env.projects[1]
    assert files["total"] == 4
    assert len(files["files"]) == 2
    assert len(rest["files"]) == 2
    assets = {a["asset_id"]: a["sha256"] for a in env.sb.state()["assets"]}
    listed = files["files"] + rest["files"]
    assert sorted(f["path"] for f in listed) == sorted(str(p) for p in paths)
    for f in listed:
        assert assets[f["asset_id"]] == sha256_of(Path(f["path"]))
        assert f["asset_url"].endswith(f"/assets/{f['asset_id']}")


def test_changes_need_the_token_and_the_listeners_own_host_and_origin(
    env: SyncEnv, tmp_path: Path
) -> None:
    """No token, a wrong one, one in the URL, a foreign Host or Origin: refused, nothing done."""
    env.write_config(control=CONTROL)
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        mode = stat.S_IMODE((env.state_dir / "control.token").stat().st_mode)
        no_token = control.call("POST", "/api/v1/pause", {}, token=False)
        wrong = control.call("POST", "/api/v1/pause", {}, headers={"X-Florasync-Token": "x"})
        in_url = control.call("POST", f"/api/v1/pause?token={control.token}", {}, token=False)
        cookie = control.call(
            "POST", "/api/v1/pause", {}, token=False, headers={"Cookie": f"t={control.token}"}
        )
        rebound = control.call("GET", "/api/v1/status", headers={"Host": "evil.example:80"})
        rebound_page = control.call("GET", "/", headers={"Host": f"evil.example:{control.port}"})
        cross = control.call("POST", "/api/v1/pause", {}, headers={"Origin": "http://evil.example"})
        status = control.get("status")
        same_origin = control.call(
            "POST", "/api/v1/resume", {}, headers={"Origin": f"http://{control.host}"}
        )
    assert mode == 0o600
    for refused in (no_token, wrong, in_url, cookie):
        assert refused[0] == 401
        assert refused[1]["error"] == "token_required"
    assert rebound[0] == 403
    assert rebound_page[0] == 403
    assert cross[0] == 403
    assert cross[1]["error"] == "bad_origin"
    assert status["paused"]["paused"] is False, "a refused request must change nothing"
    assert not (env.state_dir / "pause.json").exists()
    assert same_origin[0] == 200


def test_no_api_key_and_no_file_content_in_any_answer(env: SyncEnv, tmp_path: Path) -> None:
    """Every answer, the page and the stream are free of the API key and of file bytes."""
    env.write_config(control=CONTROL)
    marker = b"FILECONTENT-" + os.urandom(8).hex().encode()
    path = env.folders[0] / "secret.png"
    path.write_bytes(marker * 100)
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        wait_until(lambda: synced(env, path))
        answers = [
            control.call("GET", route)[1]
            for route in (
                "/",
                "/api/v1/status",
                "/api/v1/files?state=synced",
                "/api/v1/files?state=failed",
                "/api/v1/transfers",
                "/api/v1/events",
                "/api/v1/throughput",
            )
        ]
        answers.append(_first_snapshot(control))
    text = json.dumps(answers)
    assert env.sb.api_key not in text
    assert marker.decode() not in text


def test_pause_holds_every_request_and_resume_drains_once(env: SyncEnv, tmp_path: Path) -> None:
    """Paused: new files are seen and queued, no request reaches FLORA, /healthz says paused
    with 200; resumed: every file lands exactly once."""
    port = free_port()
    env.write_config(control=CONTROL, metrics={"listen": f"127.0.0.1:{port}"})
    first = env.add(0, "first.png")
    with running(env, tmp_path) as daemon:
        control = Control.of(env.state_dir)
        wait_until(lambda: synced(env, first))
        paused = control.post("pause", {"for": "2h"})
        assert paused["paused"]
        assert paused["by"] == "api"
        assert paused["until"]
        wait_until(lambda: control.get("status")["queue"]["in_flight"] == 0)
        before = _requests(env)
        later = [env.add(i % 2, f"later{i}.png", size=70_000) for i in range(6)]
        wait_until(
            lambda: control.get("status")["queue"]["outstanding"] >= 6,
            message="the new files queued while paused",
        )
        health = healthz(port)
        notified = daemon.notify.drain()
        assert _requests(env) == before, "a request reached FLORA while paused"
        assert not any(synced(env, p, pr) for p, pr in env.expected().items() if p in later)
        assert control.post("resume")["paused"] is False
        wait_until(lambda: all(synced(env, p, pr) for p, pr in env.expected().items()))
        events = control.get("events")["events"]
    assert health[0] == 200
    assert health[1].startswith("paused:")
    assert any(n.startswith("STATUS=paused: paused until") for n in notified)
    assert {"paused", "resumed"} <= {e["kind"] for e in events}
    assert_exactly_once(env.sb.state(), env.expected())


def test_a_pause_survives_a_restart_until_resumed(env: SyncEnv, tmp_path: Path) -> None:
    """`florasync pause --for` on a stopped daemon holds it after its start; `resume` (through
    the API) lifts it and the files go."""
    env.write_config(control=CONTROL)
    result = env.cli("pause", "--for", "1h")
    assert result.returncode == 0, result.stderr
    assert "paused until" in result.stdout
    waiting = [env.add(0, f"w{i}.png") for i in range(3)]
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        status = wait_until(
            lambda: (s := control.get("status"))["queue"]["outstanding"] >= 3 and s,
            message="the files queued",
        )
        assert status["paused"]["paused"]
        assert status["paused"]["by"] == "cli"
        assert _requests(env) == 0, "not even the key check may go out while paused"
        shown = env.cli("status")
        assert "paused:" in shown.stdout
        assert control.token in shown.stdout
        resumed = env.cli("resume")
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed (the daemon at" in resumed.stdout
        wait_until(lambda: all(synced(env, p) for p in waiting))
    assert_exactly_once(env.sb.state(), env.expected())


def test_pause_reaches_a_daemon_without_a_control_api(env: SyncEnv, tmp_path: Path) -> None:
    """Without `control:`, `florasync pause` writes the record and the daemon follows it."""
    with running(env, tmp_path) as daemon:
        assert env.cli("pause").returncode == 0
        wait_until(
            lambda: any(n.startswith("STATUS=paused:") for n in daemon.notify.drain()),
            message="STATUS= says paused",
        )
        before = _requests(env)
        held = env.add(0, "held.png")
        status = env.cli("status", "--json")
        assert json.loads(status.stdout)["paused"]["paused"] is True
        assert _requests(env) == before
        assert env.cli("resume").returncode == 0
        wait_until(lambda: synced(env, held))


def test_retry_from_the_api_syncs_a_failed_file_once_the_fault_is_gone(
    env: SyncEnv, tmp_path: Path
) -> None:
    """A file FLORA refused is listed with its reason; POST retry brings it through."""
    env.write_config(control=CONTROL)
    env.sb.faults.fail_next("POST /assets", status=400, code="invalid_file")
    bad = env.add(0, "bad.png")
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        failed = wait_until(
            lambda: control.get("files?state=failed")["files"], message="the failure listed"
        )
        assert failed[0]["path"] == str(bad)
        assert failed[0]["code"]
        assert failed[0]["message"]
        env.sb.faults.reset()
        assert control.post("retry", {"path": str(bad)})["retried"] == [str(bad)]
        wait_until(lambda: synced(env, bad), message="the retried file")
        wait_until(lambda: control.get("files?state=failed")["total"] == 0)
    assert_exactly_once(env.sb.state(), env.expected())


def test_bad_requests_get_a_clear_answer(env: SyncEnv, tmp_path: Path) -> None:
    """Unknown routes, bad bodies and bad durations: 4xx with a message, the daemon goes on."""
    env.write_config(control=CONTROL)
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        answers = {
            "unknown": control.call("GET", "/api/v1/nothing"),
            "method": control.call("POST", "/api/v1/status", {}),
            "json": control.call("POST", "/api/v1/pause", raw=b"{no"),
            "list": control.call("POST", "/api/v1/pause", ["2h"]),
            "duration": control.call("POST", "/api/v1/pause", {"for": "soon"}),
            "folder": control.call("POST", "/api/v1/rescan", {"folder": "/etc"}),
            "state": control.call("GET", "/api/v1/files?state=odd"),
            "page": control.call("GET", "/api/v1/files?limit=0"),
        }
        rescan = control.post("rescan", {"folder": str(env.folders[0])})
        assert control.get("status")["healthy"]
    assert answers["unknown"][0] == 404
    assert answers["method"][0] == 405
    assert answers["duration"][0] == 400
    assert "not a duration" in answers["duration"][1]["message"]
    assert answers["folder"][0] == 400
    assert answers["state"][0] == 400
    assert answers["page"][0] == 400
    assert answers["json"][0] == 400
    assert answers["list"][0] == 400
    assert rescan == {"rescan": str(env.folders[0])}


def test_the_stream_sends_a_snapshot_then_changes(env: SyncEnv, tmp_path: Path) -> None:
    """/api/v1/stream: a snapshot at once; a file synced later shows up in a later one."""
    env.write_config(control=CONTROL)
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        conn = http.client.HTTPConnection("127.0.0.1", control.port, timeout=20)
        conn.request("GET", "/api/v1/stream", headers={"Host": control.host})
        response = conn.getresponse()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        first = _next_snapshot(response)
        path = env.add(0, "streamed.png")
        seen = None
        for _ in range(40):
            snap = _next_snapshot(response)
            if any(r["path"] == str(path) for r in snap["recent"]):
                seen = snap
                break
        conn.close()
    assert first["status"]["api"] == 1
    assert len(first["throughput"]) == 60
    assert seen is not None, "the synced file never appeared in the stream"
    assert seen["throughput"][-1]["files"] + seen["throughput"][-2]["files"] >= 1


def test_the_page_is_served_with_headers_that_keep_it_local(env: SyncEnv, tmp_path: Path) -> None:
    """`/` is the page; it may not be framed or load anything from elsewhere."""
    env.write_config(control=CONTROL)
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        status, page, headers = control.call("GET", "/")
        missing = control.call("GET", "/static/../../etc/passwd")
    assert status == 200
    assert "<html" in page.lower()
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert missing[0] == 404


@pytest.mark.parametrize("listen", ["0.0.0.0:8385", "192.0.2.1:8385"])
def test_a_listener_off_loopback_without_tls_is_a_config_error(env: SyncEnv, listen: str) -> None:
    """control.listen on a public address without tls: exit 2 naming the key."""
    env.write_config(control={"listen": listen})
    result = env.cli("run", "--scan")
    assert result.returncode == 2
    assert "control.listen" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_while_paused_exits_cleanly_and_stays_paused(env: SyncEnv, tmp_path: Path) -> None:
    """A paused daemon stops on SIGTERM (exit 0) and the pause is still on record."""
    env.write_config(control=CONTROL)
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        control.post("pause")
    assert not (env.state_dir / "control.json").exists()
    assert json.loads((env.state_dir / "pause.json").read_text())["until"] is None


def _plain_get(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/api/v1/status")
        return conn.getresponse().read()
    finally:
        conn.close()


def _first_snapshot(control: Control) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", control.port, timeout=20)
    conn.request("GET", "/api/v1/stream", headers={"Host": control.host})
    try:
        return _next_snapshot(conn.getresponse())
    finally:
        conn.close()


def _next_snapshot(response: http.client.HTTPResponse) -> dict[str, Any]:
    event, data = None, ""
    while True:
        line = response.readline().decode()
        if not line:
            raise AssertionError("the stream ended")
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data += line.split(":", 1)[1].strip()
        elif line == "\n" and event == "snapshot":
            return dict(json.loads(data))


def _uploading(control: Control, path: Path) -> bool:
    return any(
        t["path"] == str(path) and t["sent_bytes"] > 0
        for t in control.get("transfers")["transfers"]
    )


def test_on_pause_stop_cuts_an_upload_off_and_it_lands_once_after_resume(
    env: SyncEnv, tmp_path: Path
) -> None:
    """`on_pause: stop`: a slow upload in flight stops within a moment of the pause; after
    the resume it lands once, with every byte."""
    env.write_config(control=CONTROL, on_pause="stop", bandwidth={"limit": "512KiB/s"})
    big = env.add(0, "big.png", size=6 << 20)
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        wait_until(lambda: _uploading(control, big), message="the upload under way")
        control.post("pause")
        wait_until(
            lambda: control.get("status")["queue"]["in_flight"] == 0,
            timeout=5,
            message="the upload cut off by the pause",
        )
        assert not synced(env, big)
        before = _requests(env)
        assert control.get("transfers")["transfers"] == []
        limit = control.post("bandwidth", {"limit": "unlimited"})
        assert limit["limit_bytes_per_second"] is None
        assert limit["source"] == "api"
        back = control.post("bandwidth", {"limit": None})
        assert back["limit_bytes_per_second"] == 512 << 10
        control.post("bandwidth", {"limit": "8MiB/s"})
        assert _requests(env) == before
        control.post("resume")
        wait_until(lambda: synced(env, big), message="the file after the resume")
    assert_exactly_once(env.sb.state(), env.expected())


def test_on_pause_finish_lets_the_upload_in_flight_end(env: SyncEnv, tmp_path: Path) -> None:
    """`on_pause: finish` (the default): the upload under way when the pause begins completes
    and is attached; nothing else goes out."""
    env.write_config(control=CONTROL, bandwidth={"limit": "1MiB/s"})
    big = env.add(0, "big.png", size=3 << 20)
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        wait_until(lambda: _uploading(control, big), message="the upload under way")
        control.post("pause")
        wait_until(lambda: synced(env, big), message="the upload in flight finished")
        wait_until(lambda: control.get("status")["queue"]["in_flight"] == 0)
        before = _requests(env)
        held = env.add(1, "held.png")
        wait_until(lambda: control.get("status")["queue"]["outstanding"] >= 1)
        assert _requests(env) == before
        assert not synced(env, held, env.projects[1])
        control.post("resume")
        wait_until(lambda: synced(env, held, env.projects[1]))
    assert_exactly_once(env.sb.state(), env.expected())


def test_an_off_window_of_the_timetable_pauses_until_the_api_lifts_it(
    env: SyncEnv, tmp_path: Path
) -> None:
    """A schedule that is `off` now: paused by the schedule, nothing sent; a limit set through
    the API overrides it and the files go."""
    env.write_config(control=CONTROL, bandwidth={"schedule": ["Mon-Sun 00:00-24:00 off"]})
    waiting = env.add(0, "waiting.png")
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        status = wait_until(lambda: (s := control.get("status"))["queue"]["outstanding"] >= 1 and s)
        assert status["paused"]["by"] == "schedule"
        assert status["bandwidth"]["source"] == "schedule"
        assert _requests(env) == 0
        scan = env.cli("run", "--scan")
        assert scan.returncode == 0
        assert "paused by the bandwidth schedule" in scan.stderr
        assert _requests(env) == 0
        control.post("bandwidth", {"limit": "50MiB/s"})
        wait_until(lambda: synced(env, waiting), message="the file once the API lifted it")
    assert_exactly_once(env.sb.state(), env.expected())


def test_sighup_changes_the_limit_live(env: SyncEnv, tmp_path: Path) -> None:
    """A new `bandwidth.limit` in the config takes effect on SIGHUP, without a restart."""
    env.write_config(control=CONTROL, bandwidth={"limit": "4MiB/s"})
    with running(env, tmp_path) as daemon:
        control = Control.of(env.state_dir)
        assert control.get("status")["bandwidth"]["limit_bytes_per_second"] == 4 << 20
        env.write_config(control=CONTROL, bandwidth={"limit": "300KiB/s"})
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: control.get("status")["bandwidth"]["limit_bytes_per_second"] == 300 << 10,
            message="the new limit",
        )


def test_status_watch_follows_the_daemon_until_ctrl_c(env: SyncEnv, tmp_path: Path) -> None:
    """`status --watch` redraws the daemon's state; Ctrl-C ends it with exit 0."""
    env.write_config(control=CONTROL)
    env.add(0, "seen.png")
    with running(env, tmp_path):
        Control.of(env.state_dir)
        watcher = env.popen("status", "--watch")
        out = watcher.stdout
        assert out is not None
        lines: list[str] = []

        def screen_shows_the_file() -> bool:
            lines.append(out.readline())
            return "1 synced" in "".join(lines)

        wait_until(screen_shows_the_file, message="the watch screen")
        watcher.send_signal(signal.SIGINT)
        rest, errors = watcher.communicate(timeout=10)
    screen = "".join(lines) + rest
    assert "Traceback" not in errors
    assert watcher.returncode == 0
    assert "syncing" in screen
    assert f"folder:    {env.folders[0]} (armed): 1 synced" in screen


def test_pause_for_a_bad_duration_is_a_usage_error(env: SyncEnv) -> None:
    """`pause --for soon`: exit 2 naming --for, nothing recorded."""
    result = env.cli("pause", "--for", "soon")
    assert result.returncode == 2
    assert "--for" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (env.state_dir / "pause.json").exists()


def test_tls_listener_serves_https_only(env: SyncEnv, tmp_path: Path) -> None:
    """With control.tls the listener speaks HTTPS (the CLI trusts the configured certificate);
    plain HTTP gets nothing."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    env.write_config(control={"listen": "127.0.0.1:0", "tls": {"cert": str(cert), "key": str(key)}})
    with running(env, tmp_path):
        found = wait_until((env.state_dir / "control.json").exists)
        assert found
        url = json.loads((env.state_dir / "control.json").read_text())["url"]
        assert url.startswith("https://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        conn.request("GET", "/api/v1/status")
        answer = conn.getresponse()
        assert answer.status == 200
        assert json.loads(answer.read())["api"] == 1
        conn.close()
        with pytest.raises((http.client.HTTPException, OSError)):
            _plain_get(port)
        paused = env.cli("pause", "--for", "1m")
        assert paused.returncode == 0, paused.stderr
        assert "the daemon at https://" in paused.stdout


def test_many_requests_leave_no_descriptor_behind(env: SyncEnv, tmp_path: Path) -> None:
    """Each request runs on a thread of its own: none may leave a journal connection open
    (`status --watch` asks twice a second for hours)."""
    env.write_config(control=CONTROL)
    with running(env, tmp_path) as daemon:
        control = Control.of(env.state_dir)
        fds = Path(f"/proc/{daemon.proc.pid}/fd")
        for _ in range(20):
            control.get("files?state=failed")
        before = len(list(fds.iterdir()))
        for _ in range(200):
            control.get("status")
            control.get("files?state=synced")
        after = len(list(fds.iterdir()))
    assert after - before < 10, f"{after - before} descriptors more after 400 requests"


def test_files_by_state_lists_skipped_ones_with_their_reason(env: SyncEnv, tmp_path: Path) -> None:
    """A symlink that leads out of the folder is skipped, listed with the policy's reason, and
    its target never reaches FLORA."""
    env.write_config(control=CONTROL)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not for FLORA" * 100)
    (env.folders[0] / "escape.png").symlink_to(outside)
    kept = env.add(0, "kept.png")
    with running(env, tmp_path):
        control = Control.of(env.state_dir)
        wait_until(lambda: synced(env, kept))
        skipped = wait_until(
            lambda: control.get("files?state=skipped")["files"], message="the skipped file"
        )
        pending = control.get("files?state=pending")
    assert [f["path"] for f in skipped] == [str(env.folders[0] / "escape.png")]
    assert skipped[0]["code"]
    assert skipped[0]["message"]
    assert pending["total"] == 0
    assert all(a["name"] != "outside.png" for a in env.sb.state()["assets"])
    assert len(env.sb.state()["assets"]) == 1


def test_demo_keep_serves_the_page_until_ctrl_c(tmp_path: Path) -> None:
    """`florasync demo --keep`: the page answers while it runs; Ctrl-C stops it with exit 0."""
    proc = subprocess.Popen(
        cli_command("demo", "--files", "4", "--keep"),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        out = proc.stdout

        def up() -> bool:
            lines.append(out.readline())
            return "Ctrl-C stops it" in lines[-1]

        wait_until(up, message="the demo's daemon up")
        url = next(line for line in lines if line.startswith("control page: ")).split()[2]
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        page = Control(port, "").call("GET", "/")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert page[0] == 200
    assert proc.returncode == 0
    assert "demo files kept in" in rest
