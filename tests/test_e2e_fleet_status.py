"""What ``status`` and ``check`` tell an operator about a fleet (issue 14): the hosts, alive or
not, what each did, and the claims of dead hosts waiting for a takeover."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from .fleetenv import Host, claims_held, make_fleet, stop
from .helpers import LONG_TIMEOUT, SHORT_TIMEOUT, assert_exactly_once, wait_until
from .pgcluster import PgCluster, create_database, drop_database
from .syncenv import SyncEnv

LEASE_SECONDS = 3.0


@pytest.fixture
def database(postgres: PgCluster) -> Iterator[str]:
    url = create_database(postgres)
    yield url
    drop_database(postgres, url)


def _fleet(host: Host) -> dict[str, Any]:
    result = host.cli("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    fleet: dict[str, Any] = json.loads(result.stdout)["fleet"]
    return fleet


def _host(fleet: dict[str, Any], host_id: str) -> dict[str, Any]:
    return next((h for h in fleet["hosts"] if h["host_id"] == host_id), {})


def _line(text: str, host_id: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"  {host_id} "))


def test_status_and_check_show_every_host_of_the_fleet(env: SyncEnv, database: str) -> None:
    """``status`` lists each host (this host marked, alive or stopped, what it did) while
    another host's daemon runs and after its SIGTERM; ``check`` names this host and the hosts
    alive, and each folder's id."""
    for n in range(4):
        env.add(n % 2, f"s{n}.png")
    host0, host1 = make_fleet(env, database, 2, lease_seconds=LEASE_SECONDS)
    assert host0.cli("run", "--scan").returncode == 0
    daemon = host1.popen("run")
    try:
        wait_until(lambda: _host(_fleet(host0), "host1").get("alive"), message="host1 alive")
        fleet = _fleet(host0)
        text = host0.cli("status").stdout
        checked = host0.cli("check")
    finally:
        log = stop(host1, daemon)
    assert daemon.returncode == 0, log
    assert fleet["host_id"] == "host0"
    first, second = _host(fleet, "host0"), _host(fleet, "host1")
    assert (first["stopped"], first["this_host"], first["uploaded"], first["attached"]) == (
        True,
        True,
        4,
        0,  # attached only: content another file brought already
    )
    assert (second["alive"], second["this_host"], second["failed"]) == (True, False, 0)
    assert fleet["stale_claims"] == 0
    assert "fleet:     this host is host0; 2 host(s), 1 alive; no stale claims" in text
    assert "(this host)" in _line(text, "host0")
    assert "4 uploaded, 0 attached only, 0 failed" in _line(text, "host0")
    assert "  alive, last heartbeat " in _line(text, "host1")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "host: this host is host0; 1 of 2 known host(s) alive" in checked.stdout
    assert f"folder id: shared-1 <- {env.folders[1]}\n" in checked.stdout
    after = _fleet(host0)
    assert (_host(after, "host1")["stopped"], _host(after, "host1")["alive"]) == (True, False)
    assert "  stopped, last heartbeat " in _line(host0.cli("status").stdout, "host1")


def test_a_host_killed_holding_a_claim_shows_a_stale_claim(env: SyncEnv, database: str) -> None:
    """A host killed with kill -9 while it holds a claim: after its lease ``status`` shows it
    not heard from and the stale claim with its age; once another host took the work over,
    no stale claim is left and every file is synced once."""
    for n in range(2):
        env.add(n, f"k{n}.png")
    host0, host1 = make_fleet(env, database, 2, lease_seconds=LEASE_SECONDS)
    env.sb.faults.update(latency_seconds=2.0)  # the claim is held while its request is slow
    daemon = host1.popen("run")
    try:
        wait_until(lambda: claims_held(database, "host1") > 0, message="a claim held by host1")
    finally:
        daemon.kill()
        daemon.wait(timeout=SHORT_TIMEOUT)
    env.sb.faults.update(latency_seconds=0.0)
    wait_until(
        lambda: _fleet(host0)["stale_claims"] >= 1, timeout=LONG_TIMEOUT, message="stale claim"
    )
    fleet = _fleet(host0)
    dead = _host(fleet, "host1")
    assert (dead["alive"], dead["stopped"]) == (False, False)
    assert dead["heartbeat_age_seconds"] >= LEASE_SECONDS
    assert dead["claims"] >= 1
    assert fleet["oldest_stale_claim_age_seconds"] > 0
    text = host0.cli("status").stdout
    assert re.search(r"stale claim\(s\) held by hosts not alive, the oldest \d+\.\d s old", text)
    assert "(waiting for a takeover)" in text
    assert " not heard for " in _line(text, "host1")
    assert host0.cli("run", "--scan").returncode == 0
    assert _fleet(host0)["stale_claims"] == 0
    assert_exactly_once(env.sb.state(), env.expected())


def test_status_on_sqlite_has_no_fleet(env: SyncEnv) -> None:
    """On the SQLite journal ``status --json`` has ``fleet: null`` and the text no fleet line."""
    env.add(0, "a.png")
    assert env.scan().returncode == 0
    report = env.status()
    assert "fleet" in report
    assert (report["fleet"], report["journal_error"]) == (None, None)
    assert "fleet:" not in env.cli("status").stdout


def test_status_with_an_unreachable_database_says_so(env: SyncEnv, postgres: PgCluster) -> None:
    """A journal database nobody answers for: ``status`` still prints the config and folders
    with a line naming the database, exits 2 as before, with no traceback and no password."""
    url = postgres.url.rsplit("/", 1)[0].replace(str(postgres.port), "1") + "/nowhere"
    (host,) = make_fleet(env, url, 1)
    result = host.cli("status")
    assert result.returncode == 2, result.stdout + result.stderr
    expected = "cannot reach the journal database postgresql://127.0.0.1:1/nowhere"
    assert f"journal:   cannot be read: {expected}" in result.stdout
    assert f"folder:    {env.folders[0]} -> " in result.stdout
    assert expected in result.stderr
    as_json = host.cli("status", "--json")
    assert as_json.returncode == 2
    report = json.loads(as_json.stdout)
    assert expected in report["journal_error"]
    assert report["fleet"] is None
    for output in (result, as_json):
        assert "Traceback" not in output.stderr
        assert postgres.password not in output.stdout + output.stderr
