"""Fleet mode end to end (issue 14): several hosts, one PostgreSQL journal, each content
uploaded once and attached once per project, whoever sees it first and whoever dies."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import psycopg
import pytest
import yaml

from .fleetenv import Host, host_counts, make_fleet, stop
from .helpers import LONG_TIMEOUT, assert_exactly_once, mutating_requests, wait_until
from .pgcluster import PgCluster, create_database, drop_database
from .syncenv import SyncEnv


@pytest.fixture
def database(postgres: PgCluster) -> Iterator[str]:
    url = create_database(postgres)
    yield url
    drop_database(postgres, url)


def _fill(env: SyncEnv, count: int, size: int = 512) -> None:
    for n in range(count):
        env.add(n % 2, f"d{n % 7}/f{n:05d}.png", size=size)


def _attached(env: SyncEnv) -> int:
    state = env.sb.state(requests=False)
    return sum(len(nodes) for nodes in state["nodes"].values())


def test_three_one_shot_runs_at_once_upload_each_content_once(env: SyncEnv, database: str) -> None:
    """Three hosts (one folder id, two of them through mount paths of their own) scan the
    same 300 files at the same moment: one asset and one attachment per content, every run
    exits 0, and the uploads are spread over the hosts."""
    _fill(env, 300)
    hosts = make_fleet(env, database, 3, mounts=True)
    procs = [h.popen("run", "--scan") for h in hosts]
    for host, proc in zip(hosts, procs, strict=True):
        assert proc.wait(timeout=LONG_TIMEOUT * 3) == 0, host.log.read_text()[-4000:]
    assert_exactly_once(env.sb.state(), env.expected())
    split = {h: c["uploaded"] for h, c in host_counts(database).items()}
    print(f"uploads per host: {split}")
    assert sum(split.values()) == 300
    assert sum(1 for n in split.values() if n > 0) >= 2, split
    before = len(mutating_requests(env.sb.state()))
    for host in hosts:  # every host's own stat cache now knows every file
        again = host.cli("run", "--scan")
        assert again.returncode == 0, again.stderr
        assert "300 unchanged" in again.stdout, again.stdout
    assert len(mutating_requests(env.sb.state())) == before


def test_three_daemons_share_a_folder_of_2000_files(env: SyncEnv, database: str) -> None:
    """Three daemons on one shared folder pair of 2,000 files: each synced exactly once, and
    the work spread over the hosts (the split is printed)."""
    _fill(env, 2000, size=256)
    hosts = make_fleet(env, database, 3)
    procs = [h.popen("run") for h in hosts]
    try:
        wait_until(
            lambda: _attached(env) >= 2000,
            timeout=LONG_TIMEOUT * 4,
            interval=0.5,
            message="2,000 attachments",
        )
    finally:
        logs = [stop(h, p) for h, p in zip(hosts, procs, strict=True)]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log
    assert_exactly_once(env.sb.state(), env.expected())
    split = {h: c["uploaded"] for h, c in host_counts(database).items()}
    print(f"uploads per host: {split}")
    assert sum(split.values()) == 2000
    assert all(n > 0 for n in split.values()), split


def test_the_same_host_id_twice_is_refused(env: SyncEnv, database: str) -> None:
    """Two processes with one host_id on one journal: the second exits 2 naming host_id;
    another host_id starts beside it."""
    hosts = make_fleet(env, database, 2)
    env.add(0, "a.png")
    daemon = hosts[0].popen("run")
    try:
        wait_until(lambda: host_counts(database), message="the first host's heartbeat")
        twin = Host("host0", hosts[0].config.with_name("twin.yaml"), env, database)
        twin.config.write_text(hosts[0].config.read_text().replace("state-host0", "state-twin"))
        refused = twin.cli("run", "--scan")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "host_id" in refused.stderr
        assert "'host0'" in refused.stderr
        other = hosts[1].cli("run", "--scan")
        assert other.returncode == 0, other.stderr
    finally:
        stop(hosts[0], daemon)


def _held_by(url: str, host_id: str) -> int:
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute(
                "SELECT count(*) FROM claims WHERE host_id = %s AND held", (host_id,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0  # not migrated yet
    return int(row[0]) if row else 0


def test_a_host_paused_past_its_lease_does_not_redo_what_the_other_host_did(
    env: SyncEnv, database: str
) -> None:
    """A daemon SIGSTOPped while it holds a content, past its lease: the other host takes the
    content over and brings it in; after SIGCONT the paused host notices (its claim is lost, or
    the content is found attached) and neither uploads nor attaches it again (one asset, one
    attachment, the same keys)."""
    env.sb.faults.latency_seconds = 0.6  # every request slow: the claim is held for seconds
    env.add(0, "paused.png", size=2048)
    hosts = make_fleet(env, database, 2, lease_seconds=3.0)
    paused = hosts[0].popen("run", "--log-level", "debug")
    other = None
    try:
        wait_until(lambda: _held_by(database, "host0"), message="host0 holding the content")
        paused.send_signal(signal.SIGSTOP)
        other = hosts[1].popen("run")
        wait_until(lambda: _attached(env) == 1, timeout=LONG_TIMEOUT, message="the takeover")
        assert "host1" in _claim_holders(database)
        paused.send_signal(signal.SIGCONT)
        # it notices one way or another: a write or a check refused ("lost the claim"), or its
        # transaction ended by the server and, offered again, the content found attached
        wait_until(
            lambda: _noticed(hosts[0].log.read_text()),
            timeout=LONG_TIMEOUT,
            message="the paused host noticing",
        )
        env.sb.faults.latency_seconds = 0.0
        wait_until(lambda: _held_by(database, "host0") == 0, message="host0 letting go")
    finally:
        if paused.poll() is None:
            paused.send_signal(signal.SIGCONT)
        logs = [stop(hosts[0], paused)] + ([stop(hosts[1], other)] if other else [])
    assert paused.returncode == 0, logs[0]
    state = env.sb.state()
    assert_exactly_once(state, env.expected())
    reserve_keys = {r["idempotency_key"] for r in state["requests"] if r["route"] == "POST /assets"}
    assert len(reserve_keys) == 1, reserve_keys  # the takeover reused host0's journaled key


def _noticed(log: str) -> bool:
    return "lost the claim" in log or any(
        "unchanged" in line and "paused.png" in line for line in log.splitlines()
    )


def _claim_holders(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT host_id FROM claims").fetchall()}


def test_a_429_seen_by_one_host_holds_every_host(env: SyncEnv, database: str) -> None:
    """Three daemons at work; FLORA answers one request 429 with Retry-After: 3: no host sends
    an API or upload request inside that window (beyond requests already on the wire when it
    closed), and every file still arrives exactly once."""
    env.sb.faults.latency_seconds = 0.01
    _fill(env, 240, size=256)
    hosts = make_fleet(env, database, 3)
    procs = [h.popen("run") for h in hosts]
    try:
        wait_until(lambda: _attached(env) >= 30, timeout=LONG_TIMEOUT, message="work under way")
        env.sb.faults.fail_next("*", status=429, retry_after=3)
        wait_until(lambda: _attached(env) >= 240, timeout=LONG_TIMEOUT * 2, message="all files")
    finally:
        logs = [stop(h, p) for h, p in zip(hosts, procs, strict=True)]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log
    state = env.sb.state()
    assert_exactly_once(state, env.expected())
    limited = [r for r in state["requests"] if r["status"] == 429]
    assert len(limited) == 1, limited
    opened_at = limited[0]["t"]
    inside = [
        r for r in state["requests"] if opened_at + IN_FLIGHT_SECONDS < r["t"] < opened_at + 2.9
    ]
    assert inside == [], f"{len(inside)} requests inside the window, first: {inside[:3]}"
    heard = sum("saw a 429" in h.log.read_text() for h in hosts)
    assert heard == 2, "the two other hosts were told"


IN_FLIGHT_SECONDS = 0.3  # requests sent before the NOTIFY reached their host may still arrive


def test_a_migrated_journal_grows_into_a_fleet_without_uploading_again(
    env: SyncEnv, database: str
) -> None:
    """A host's SQLite journal moved into PostgreSQL (``journal migrate``) and a second host
    added: both scan the same folders and send no mutating request; the migrated stat cache is
    the first host's, each file under its folder's id."""
    for n in range(10):
        env.add(n % 2, f"m{n}.png")
    hosts = make_fleet(env, database, 2)
    solo = Host("host0", env.root / "solo.yaml", env, database)
    doc = yaml.safe_load(hosts[0].config.read_text())
    del doc["journal"]
    solo.config.write_text(yaml.safe_dump(doc))
    assert solo.cli("run", "--scan").returncode == 0  # the SQLite journal of host0's state dir
    migrated = hosts[0].cli("journal", "migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT host_id, folder_id, count(*) FROM files GROUP BY 1, 2")
        assert sorted(rows.fetchall()) == [("host0", "shared-0", 5), ("host0", "shared-1", 5)]
    before = len(mutating_requests(env.sb.state()))
    for host in hosts:
        again = host.cli("run", "--scan")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "10 unchanged" in again.stdout, again.stdout
    assert len(mutating_requests(env.sb.state())) == before
