"""Fleet mode end to end (issue 14): several hosts, one PostgreSQL journal, each content
uploaded once and attached once per project, whoever sees it first and whoever dies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
