"""The daemon as a service: sd_notify, SIGHUP reload, a refused key, retry, a dead watcher."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import yaml
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from florasync.config import runtime
from florasync.service.daemon import Daemon
from florasync.service.systemd import Notifier

from .daemonenv import Daemon as DaemonProcess
from .daemonenv import running, synced
from .helpers import LONG_TIMEOUT, free_port, wait_until, write_file
from .notify import NotifySocket
from .syncenv import SyncEnv


def test_notify_ready_status_watchdog_stopping(env: SyncEnv, tmp_path: Path) -> None:
    """READY after the catch-up scan is queued, STATUS updates, WATCHDOG at half the interval."""
    env.add(0, "a.png")
    notify = NotifySocket(tmp_path / "n.sock")
    extra = notify.env | {"WATCHDOG_USEC": "2000000"}  # 2 s: pings every second
    proc = env.popen("run", extra_env=extra)
    try:
        notify.wait_for("READY=1")
        wait_until(lambda: any("synced 1" in m for m in notify.drain()), message="a STATUS update")
        started = time.monotonic()
        pings_before = notify.drain().count("WATCHDOG=1")
        wait_until(
            lambda: notify.drain().count("WATCHDOG=1") >= pings_before + 3,
            message="three more pings",
        )
        elapsed = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=LONG_TIMEOUT)
        notify.close()
    assert proc.returncode == 0, err
    assert 1.5 <= elapsed <= 6.0, f"3 pings took {elapsed:.1f} s (expected ~3 s)"
    messages = notify.messages
    assert messages.index("READY=1") < messages.index("STOPPING=1")
    assert any(m.startswith("STATUS=") for m in messages[messages.index("READY=1") :])


def test_sighup_adds_a_folder_and_rejects_a_bad_config(env: SyncEnv, tmp_path: Path) -> None:
    """SIGHUP re-reads the config: a new folder is watched; a bad config keeps the old one."""
    one = [{"path": str(env.folders[0]), "project_id": env.projects[0]}]
    env.write_config(folders=one)
    with running(env, tmp_path) as daemon:
        env.write_config()  # both folders now
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.notify.wait_for("RELOADING=1")
        wait_until(lambda: daemon.notify.drain().count("READY=1") >= 2, message="READY again")
        added = env.add(1, "added.png")
        wait_until(lambda: synced(env, added, env.projects[1]), message="the added folder")
        raw = yaml.safe_load(env.config.read_text())
        raw["workers"] = 0
        env.config.write_text(yaml.safe_dump(raw))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: daemon.notify.drain().count("READY=1") >= 3, message="READY after")
        still = env.add(0, "still.png")
        wait_until(lambda: synced(env, still), message="the old config still running")
    env.write_config()
    kinds = [e["kind"] for e in env.status()["events"]]
    assert "reload_rejected" in kinds
    assert "reloaded" in kinds


def test_key_refused_at_start_exits_3(env: SyncEnv, tmp_path: Path) -> None:
    """A key FLORA refuses at start: exit 3 (systemd will not restart it), no traceback."""
    env.sb.faults.update(revoked=True)
    result = env.cli("run", timeout=LONG_TIMEOUT)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert env.sb.api_key not in result.stderr


def test_key_revoked_while_running_pauses_then_resumes(env: SyncEnv, tmp_path: Path) -> None:
    """A 401 while running parks work (no retry storm); after reload with a good key it resumes."""
    with running(env, tmp_path) as daemon:
        env.sb.faults.update(revoked=True)
        files = [env.add(0, f"k{n}.png") for n in range(5)]
        wait_until(
            lambda: any(m.startswith("STATUS=paused") for m in daemon.notify.drain()),
            message="paused status",
        )
        refused = [r for r in env.sb.state()["requests"] if r["status"] == 401]
        assert len(refused) <= 4, "at most the request each worker had in flight (workers: 4)"
        env.sb.faults.update(revoked=False)
        daemon.proc.send_signal(signal.SIGHUP)  # "fix the key, then reload"
        wait_until(lambda: all(synced(env, f) for f in files), message="resumed uploads")
    kinds = [e["kind"] for e in env.status()["events"]]
    assert "key_refused" in kinds
    assert "key_accepted" in kinds


def test_retry_is_picked_up_by_a_running_daemon(env: SyncEnv, tmp_path: Path) -> None:
    """`florasync retry` while the daemon runs: the failed file is synced within seconds."""
    env.sb.faults.update(forbidden_projects=[env.projects[1]])
    with running(env, tmp_path):
        f = env.add(1, "later.png")
        wait_until(lambda: env.status()["folders"][1]["failed"] == 1, message="the failure")
        env.sb.faults.update(forbidden_projects=[])
        result = env.cli("retry")
        assert "a running daemon picks them up" in result.stdout
        wait_until(lambda: synced(env, f, env.projects[1]), message="the retried file")


def test_retry_after_a_refused_project_create_creates_it(env: SyncEnv, tmp_path: Path) -> None:
    """A subfolder's project refused (403: the key may not create projects), the role granted,
    `florasync retry` while the daemon runs: the project is created once and the file lands."""
    env.sb.faults.update(forbid_project_create=True)
    root = tmp_path / "campaigns"
    root.mkdir()
    env.write_config(folders=[{"path": str(root), "projects_from_subfolders": True}])
    with running(env, tmp_path):
        f = root / "Gala" / "poster.png"
        write_file(f, 3000, seed=41)
        wait_until(
            lambda: any(x["code"] == "project_forbidden" for x in env.status()["failures"]),
            message="the refusal in status",
        )
        env.sb.faults.update(forbid_project_create=False)
        assert "a running daemon picks them up" in env.cli("retry").stdout

        def landed() -> bool:
            ids = [p["project_id"] for p in env.sb.state()["projects"] if p["name"] == "Gala"]
            return len(ids) == 1 and synced(env, f, ids[0])

        wait_until(landed, message="the project created and the file attached")
    creates = [r for r in env.sb.state()["requests"] if r["route"] == "POST /projects"]
    assert [r["status"] for r in creates] == [403, 201]
    assert creates[0]["idempotency_key"] != creates[1]["idempotency_key"]


def _dying_observer() -> BaseObserver:
    """A real observer whose threads all stop shortly after starting."""
    observer = Observer()
    real_start = observer.start

    def start() -> None:
        real_start()
        threading.Timer(0.2, observer.stop).start()

    observer.start = start  # type: ignore[method-assign]
    return observer


def test_dead_watcher_is_restarted_then_stops_the_watchdog(env: SyncEnv, tmp_path: Path) -> None:
    """A watcher that keeps dying is restarted (with a rescan) 3 times, then pings stop."""
    notify = NotifySocket(tmp_path / "n.sock")
    rt = runtime.load(str(env.config), {"FLORA_API_KEY": env.sb.api_key})
    notifier = Notifier({**notify.env, "WATCHDOG_USEC": "1000000"})
    daemon = Daemon(rt, notifier=notifier, observer_factory=_dying_observer)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        notify.wait_for("READY=1")
        wait_until(lambda: len(daemon._restarts) == 3, message="three restarts")
        pings = notify.drain().count("WATCHDOG=1")
        wait_until(lambda: not daemon.is_healthy(), message="the watcher dead for good")
        time.sleep(2.5)  # not synchronisation: pings would arrive every 0.5 s if sent
        assert notify.drain().count("WATCHDOG=1") <= pings + 1
    finally:
        daemon.request_stop()
        thread.join(LONG_TIMEOUT)
        notify.close()
    kinds = [e["kind"] for e in env.status()["events"]]
    assert kinds.count("observer_restarted") == 3


def test_daemon_process_helper_reads_output(env: SyncEnv, tmp_path: Path) -> None:
    """The daemon's output lands in files the tests can read after it stops."""
    notify = NotifySocket(tmp_path / "x.sock")
    daemon = DaemonProcess(env, notify)
    notify.wait_for("READY=1")
    assert daemon.stop() == 0
    notify.close()
    assert "watching 2 folder(s)" in daemon.output[1]


def test_metrics_match_a_real_sync_and_healthz_follows_the_key(
    env: SyncEnv, tmp_path: Path
) -> None:
    """/metrics counts the files of a real sync; /healthz is 503 while the key is refused."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    env.write_config(metrics={"listen": f"127.0.0.1:{port}"})
    files = [env.add(0, f"m{n}.png") for n in range(3)]
    base = f"http://127.0.0.1:{port}"
    with running(env, tmp_path) as daemon:
        wait_until(lambda: all(synced(env, f) for f in files), message="three uploads")
        uploaded = ("florasync_files_total", (("outcome", "uploaded"),))

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            text = requests.get(f"{base}/metrics", timeout=5).text
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }

        # a worker counts a file once its attach answer is journaled, just after the sandbox
        # has the attachment: wait for the count, then every other figure must agree with it
        samples = wait_until(
            lambda: (m := scrape()).get(uploaded) == 3 and m, message="3 uploads counted"
        )
        assert samples[("florasync_uploaded_bytes_total", ())] == sum(
            f.stat().st_size for f in files
        )
        count = (
            "florasync_request_seconds_count",
            (("endpoint", "POST /assets"), ("status", "201")),
        )
        assert samples[count] == 3
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        env.sb.faults.update(revoked=True)
        env.add(0, "after-revoke.png")
        wait_until(
            lambda: requests.get(f"{base}/healthz", timeout=5).status_code == 503,
            message="healthz 503",
        )
        assert "API key refused" in requests.get(f"{base}/healthz", timeout=5).text
        env.sb.faults.update(revoked=False)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: requests.get(f"{base}/healthz", timeout=5).status_code == 200,
            message="healthz back to 200",
        )
