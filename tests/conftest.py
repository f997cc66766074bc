"""Fixtures shared by every test: an isolated home, no leaked threads, a live sandbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from florasync.flora.secret import Secret
from florasync.sandbox import Sandbox
from florasync.state.journal.fleet import Fleet
from florasync.state.journal.postgres import PostgresBackend
from florasync.state.journal.store import Journal

from .pgcluster import PgCluster, create_database, drop_database, running_cluster
from .syncenv import SyncEnv

_ISOLATED_VARS = (
    "FLORASYNC_CONFIG",
    "FLORA_API_KEY",
    "FLORA_BASE_URL",
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
)


@pytest.fixture(autouse=True)
def _isolated_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Point HOME and the XDG dirs at a temporary directory, so no test touches the real ones."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    for name in _ISOLATED_VARS:
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running after its fixtures are torn down."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A FLORA sandbox on 127.0.0.1 with its default workspace and two projects."""
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path) -> SyncEnv:
    """Two folders mapped to the sandbox's two projects, with a config for the real CLI."""
    return SyncEnv(sandbox, tmp_path)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster on 127.0.0.1 for the whole session (started, then removed)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def any_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    """An empty journal in each backend: the SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        journal = Journal.open(tmp_path / "state")
        yield journal
        journal.close()
        return
    cluster: PgCluster = request.getfixturevalue("postgres")
    url = create_database(cluster)
    journal = Journal.open(tmp_path / "state", PostgresBackend(Secret(url)))
    try:
        yield journal
    finally:
        journal.close()
        drop_database(cluster, url)


@pytest.fixture
def run_journal(any_journal: Journal) -> Iterator[Journal]:
    """A journal as a run holds it, in each backend: the SQLite file, and a fresh PostgreSQL
    database joined as one host of a fleet (claims, fencing and the heartbeat on)."""
    if not any_journal.backend.shared:
        yield any_journal
        return
    fleet = Fleet(any_journal.backend, host_id="test-host", lease_seconds=30.0).join()
    any_journal.fleet = fleet
    try:
        yield any_journal
    finally:
        fleet.leave()
