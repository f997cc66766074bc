"""Claims, leases and fencing on a real PostgreSQL (issue 14), host by host in one process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from florasync import errors
from florasync.flora.secret import Secret
from florasync.state.journal.fleet import Fleet
from florasync.state.journal.postgres import PostgresBackend
from florasync.state.journal.store import Journal
from florasync.state.lifecycle import AssetRecord

from .pgcluster import PgCluster, create_database, drop_database

WS = "ws_fleet"
DIGEST = "c" * 64
LEASE = 3.0


@pytest.fixture
def url(postgres: PgCluster) -> Iterator[str]:
    database = create_database(postgres)
    yield database
    drop_database(postgres, database)


class _Host:
    """One host: its journal on the shared database, joined to the fleet."""

    def __init__(self, url: str, host_id: str, state_dir: Path) -> None:
        backend = PostgresBackend(Secret(url), host_id)
        self.journal = Journal.open(state_dir, backend, host_id=host_id)
        self.fleet = Fleet(backend, host_id=host_id, lease_seconds=LEASE).join()
        self.journal.fleet = self.fleet

    def close(self) -> None:
        self.fleet.leave()
        self.journal.close()


@pytest.fixture
def hosts(url: str, tmp_path: Path) -> Iterator[tuple[_Host, _Host]]:
    a = _Host(url, "a", tmp_path / "a")
    b = _Host(url, "b", tmp_path / "b")
    yield a, b
    b.close()
    a.close()


def test_a_live_hosts_claim_is_refused_and_a_released_one_taken(
    hosts: tuple[_Host, _Host],
) -> None:
    """While host a holds a content, host b's claim is refused naming a; once a releases it,
    b claims it at the next generation."""
    a, b = hosts
    a.journal.claim(WS, DIGEST, "")
    with pytest.raises(errors.ClaimedElsewhereError, match="'a'"):
        b.journal.claim(WS, DIGEST, "")
    a.journal.release(WS, DIGEST)
    a.journal.flush_all()
    b.journal.claim(WS, DIGEST, "")
    assert b.fleet.generation(WS, DIGEST) == 2


def test_a_write_after_a_takeover_is_refused(hosts: tuple[_Host, _Host], url: str) -> None:
    """Host a stops beating (as if paused) past its lease; b takes the content over; a's next
    write of the content's rows is refused (fencing) and a's check before a request fails."""
    a, b = hosts
    a.journal.claim(WS, DIGEST, "")
    _silence(a, url)
    b.journal.claim(WS, DIGEST, "")  # a is not alive: taken over
    with pytest.raises(errors.LeaseLostError):
        a.journal.begin(AssetRecord(WS, DIGEST, 1, "x.png", "image/png"))
    with pytest.raises(errors.LeaseLostError):
        a.journal.check_claim(WS, DIGEST)
    b.journal.begin(AssetRecord(WS, DIGEST, 1, "x.png", "image/png"))  # the owner writes


def test_a_host_paused_inside_a_write_does_not_block_a_takeover_for_long(
    hosts: tuple[_Host, _Host], url: str
) -> None:
    """Host a is paused in the middle of a write transaction that holds its claim row (FOR
    SHARE, as every fenced write does): the server ends that idle transaction, so b's takeover
    waits seconds, not for as long as a stays paused."""
    a, b = hosts
    a.journal.claim(WS, DIGEST, "")
    _silence(a, url)
    backend = a.journal.backend
    assert isinstance(backend, PostgresBackend)
    paused = backend.connect_raw()  # the writer's session, as a paused host leaves it
    paused.execute("BEGIN")
    paused.execute(
        "SELECT 1 FROM claims WHERE workspace_id = %s AND digest = %s FOR SHARE", (WS, DIGEST)
    )
    started = time.monotonic()
    try:
        b.journal.claim(WS, DIGEST, "")
        waited = time.monotonic() - started
    finally:
        paused.close()
    assert waited < 20.0, f"the takeover waited {waited:.1f} s"
    assert b.fleet.generation(WS, DIGEST) == 2


def _silence(host: _Host, url: str) -> None:
    """Stop ``host``'s heartbeat and age it past its lease (what SIGSTOP does to a host)."""
    host.fleet._stop.set()
    for thread in host.fleet._threads:
        thread.join()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE hosts SET heartbeat_at = heartbeat_at - %s WHERE host_id = %s",
            (LEASE * 2, host.fleet.host_id),
        )
    host.fleet._deadline = 0.0  # its own trust ran out too
