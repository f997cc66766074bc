"""The journal in PostgreSQL, end to end through the CLI (issue 14, its first step)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from florasync.flora.secret import Secret
from florasync.state.journal.postgres import PostgresBackend
from florasync.state.journal.store import Journal

from .helpers import (
    LONG_TIMEOUT,
    assert_exactly_once,
    free_port,
    healthz,
    mutating_requests,
    run_cli,
    wait_until,
)
from .pgcluster import PgCluster, create_database, drop_database, running_cluster
from .syncenv import SyncEnv

URL_ENV = "FLORASYNC_DATABASE_URL"


@pytest.fixture
def database(postgres: PgCluster) -> Iterator[str]:
    """A fresh, empty database in the session's cluster; its URL."""
    url = create_database(postgres)
    yield url
    drop_database(postgres, url)


def _use_postgres(env: SyncEnv, url: str) -> dict[str, str]:
    env.write_config(journal={"url_env": URL_ENV})
    return {URL_ENV: url}


def test_a_scan_with_the_journal_in_postgresql(env: SyncEnv, database: str) -> None:
    """``journal: {url_env}``: files sync exactly once, a rescan sends nothing mutating,
    ``status`` reads the counts from PostgreSQL, no SQLite file is made, and the URL's
    password is in no output."""
    extra = _use_postgres(env, database)
    for n in range(6):
        env.add(n % 2, f"p{n}.png")
    result = env.cli("run", "--scan", env=extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(env.sb.state(), env.expected())
    before = len(mutating_requests(env.sb.state()))
    again = env.cli("run", "--scan", env=extra)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "6 unchanged" in again.stdout
    assert len(mutating_requests(env.sb.state())) == before
    status = env.cli("status", env=extra)
    assert status.returncode == 0, status.stderr
    assert "3 synced" in status.stdout
    assert not list(env.state_dir.glob("journal.sqlite3*"))
    password = psycopg.conninfo.conninfo_to_dict(database)["password"]
    assert isinstance(password, str)
    for output in (result, again, status):
        assert password not in output.stdout + output.stderr


def test_a_second_process_on_the_same_journal_database_is_refused(
    env: SyncEnv, database: str, tmp_path: Path
) -> None:
    """While one florasync holds the journal database, another (even with another state dir)
    exits 2 naming the database; after kill -9 of the first, a new one starts at once."""
    extra = _use_postgres(env, database)
    daemon = env.popen("run", extra_env=extra)
    try:
        wait_until(lambda: _holds_run_lock(database), timeout=LONG_TIMEOUT, message="the lock")
        other = env.root / "other.yaml"
        other.write_text(
            env.config.read_text().replace(str(env.state_dir), str(tmp_path / "other-state"))
        )
        refused = run_cli("run", "-c", str(other), "--scan", api_key=env.sb.api_key, env=extra)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "already running" in refused.stderr
        assert "127.0.0.1" in refused.stderr
    finally:
        env.kill(daemon)
    result = env.cli("run", "--scan", env=extra)  # the lock died with the killed connection
    assert result.returncode == 0, result.stdout + result.stderr


def _holds_run_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        ).fetchone()
    return row is not None and row[0] > 0


def test_check_reaches_the_journal_database_and_changes_nothing(
    env: SyncEnv, database: str
) -> None:
    """``check`` says the journal database answers (an empty one: "created at the first run")
    and creates no table in it."""
    result = env.cli("check", env=_use_postgres(env, database))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "journal: postgresql://127.0.0.1:" in result.stdout
    assert "empty: created at the first run" in result.stdout
    with psycopg.connect(database) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)


def test_an_unreachable_database_is_a_clear_error(env: SyncEnv, postgres: PgCluster) -> None:
    """A journal database nobody answers for: exit 2 naming host, port and database, never the
    password, no traceback."""
    url = postgres.url.rsplit("/", 1)[0].replace(str(postgres.port), "1") + "/nowhere"
    result = env.cli("run", "--scan", env=_use_postgres(env, url))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot reach the journal database postgresql://127.0.0.1:1/nowhere" in result.stderr
    assert postgres.password not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("journal", "extra", "key"),
    [
        ({"url_env": URL_ENV, "url_file": "/x"}, {}, "journal"),
        ({}, {}, "journal"),
        ({"url_env": "postgresql://u:p@h/d"}, {}, "journal.url_env"),
        ({"url_env": URL_ENV}, {}, "journal.url_env"),
        ({"url_env": URL_ENV}, {URL_ENV: "mysql://u:p@h/d"}, "journal.url_env"),
    ],
    ids=["both", "neither", "a-url-not-a-name", "unset", "not-postgresql"],
)
def test_a_wrong_journal_setting_names_the_key(
    env: SyncEnv, journal: dict[str, str], extra: dict[str, str], key: str
) -> None:
    """A wrong ``journal`` mapping exits 2 naming the key, and shows no URL it was given."""
    env.write_config(journal=journal)
    result = env.cli("run", "--scan", env=extra)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"florasync: {key}:") or f" {key}:" in result.stderr
    assert "u:p@" not in result.stderr
    assert "Traceback" not in result.stderr


def test_processes_migrating_a_new_database_at_once_migrate_it_once(
    database: str, tmp_path: Path
) -> None:
    """Four journals opened on one empty database at the same moment: the schema is created
    once (the advisory lock), and every one of them works."""
    barrier = threading.Barrier(4)
    opened: list[Journal] = []
    failures: list[BaseException] = []

    def open_one(n: int) -> None:
        barrier.wait()
        try:
            opened.append(Journal.open(tmp_path / f"s{n}", PostgresBackend(Secret(database))))
        except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert failures == []
        with psycopg.connect(database) as conn:
            versions = conn.execute("SELECT version FROM florasync_schema").fetchall()
        assert versions == [(1,), (2,)]
        assert all(j.take_retry_requests() == [] for j in opened)
    finally:
        for j in opened:
            j.close()


def test_sigterm_of_a_daemon_on_postgresql_is_clean(env: SyncEnv, database: str) -> None:
    """The daemon on a PostgreSQL journal syncs a new file and exits 0 on SIGTERM."""
    extra = _use_postgres(env, database)
    proc = env.popen("run", extra_env=extra)
    try:
        f = env.add(0, "live.png")
        wait_until(
            lambda: any(n for n in env.sb.state(requests=False)["nodes"].get(env.projects[0], [])),
            timeout=LONG_TIMEOUT,
            message=f"{f.name} attached",
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=LONG_TIMEOUT)
    except subprocess.TimeoutExpired:
        env.kill(proc)
        raise
    assert proc.returncode == 0, out + err
    assert_exactly_once(env.sb.state(), env.expected())


def test_journal_migrate_moves_a_host_without_uploading_again(env: SyncEnv, database: str) -> None:
    """A host's SQLite journal copied into PostgreSQL (``journal migrate``): the run on the
    database afterwards finds everything unchanged and sends no mutating request; ``status``
    counts the same; the SQLite file is left as it was. Before the migration, a run on the
    empty database is refused (it would upload everything again)."""
    for n in range(8):
        env.add(n % 2, f"m{n}.png")
    assert env.scan().returncode == 0
    before = env.status()
    sqlite_file = env.state_dir / "journal.sqlite3"
    size = sqlite_file.stat().st_size
    extra = _use_postgres(env, database)
    forgotten = env.cli("run", "--scan", env=extra)  # would upload all 8 again
    assert forgotten.returncode == 2, forgotten.stdout + forgotten.stderr
    assert "journal: " in forgotten.stderr
    assert "florasync journal migrate" in forgotten.stderr
    result = env.cli("journal", "migrate", env=extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 files" in result.stdout
    assert sqlite_file.stat().st_size == size
    requests = len(mutating_requests(env.sb.state()))
    again = env.cli("run", "--scan", env=extra)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "8 unchanged" in again.stdout
    assert len(mutating_requests(env.sb.state())) == requests
    after = json.loads(env.cli("status", "--json", env=extra).stdout)
    assert [(f["path"], f["synced"]) for f in after["folders"]] == [
        (f["path"], f["synced"]) for f in before["folders"]
    ]
    refused = env.cli("journal", "migrate", env=extra)  # the database is not empty now
    assert refused.returncode == 2
    assert "not empty" in refused.stderr


def test_journal_migrate_refuses_a_password_on_the_command_line(env: SyncEnv) -> None:
    """``--to`` with a password in the URL exits 2 without echoing it (argv is public)."""
    env.add(0, "a.png")
    assert env.scan().returncode == 0
    result = env.cli("journal", "migrate", "--to", "postgresql://u:s3cret@127.0.0.1:1/x")
    assert result.returncode == 2
    assert "--to" in result.stderr
    assert "PGPASSWORD" in result.stderr
    assert "s3cret" not in result.stderr


@pytest.fixture
def own_postgres() -> Iterator[PgCluster]:
    """A cluster of this test's own, to stop and start without disturbing the others."""
    with running_cluster() as cluster:
        yield cluster


def test_the_daemon_waits_out_a_stopped_database(env: SyncEnv, own_postgres: PgCluster) -> None:
    """PostgreSQL stopped under a running daemon: /healthz says 503 naming the journal, files
    saved meanwhile wait (nothing is sent without its intent journaled); started again,
    everything lands exactly once and /healthz is 200."""
    url = create_database(own_postgres)
    port = free_port()
    env.write_config(journal={"url_env": URL_ENV}, metrics={"listen": f"127.0.0.1:{port}"})
    for n in range(4):
        env.add(0, f"before{n}.png")
    proc = env.popen("run", extra_env={URL_ENV: url})
    try:
        wait_until(lambda: _synced_count(env) == 4, timeout=LONG_TIMEOUT, message="catch-up")
        own_postgres.stop("fast")
        for n in range(4):
            env.add(1, f"during{n}.png")
        wait_until(lambda: healthz(port)[0] == 503, timeout=LONG_TIMEOUT, message="healthz 503")
        assert "journal" in healthz(port)[1]
        while_down = env.sb.state()["requests"]
        own_postgres.start()
        wait_until(lambda: _synced_count(env) == 8, timeout=LONG_TIMEOUT, message="after")
        wait_until(lambda: healthz(port)[0] == 200, timeout=LONG_TIMEOUT, message="healthz 200")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=LONG_TIMEOUT)
    finally:
        if proc.poll() is None:
            env.kill(proc)
    assert proc.returncode == 0, out + err
    assert own_postgres.password not in out + err
    assert [r["route"] for r in while_down].count("POST /assets") == 4, "sent while down"
    assert_exactly_once(env.sb.state(), env.expected())


def test_a_scan_whose_database_stops_ends_and_the_next_run_finishes(
    env: SyncEnv, own_postgres: PgCluster
) -> None:
    """PostgreSQL stopped in the middle of ``run --scan``: the run ends (exit 1, the journal
    named in its message); after a restart of the database a new run completes, exactly once."""
    url = create_database(own_postgres)
    extra = _use_postgres(env, url)
    env.sb.faults.update(latency_seconds=0.05)
    for n in range(40):
        env.add(n % 2, f"s{n:02d}.png")
    proc = env.popen("run", "--scan", extra_env=extra)
    try:
        wait_until(lambda: _synced_count(env) >= 4, timeout=LONG_TIMEOUT, message="some synced")
        own_postgres.stop("immediate")
        out, err = proc.communicate(timeout=LONG_TIMEOUT)
    finally:
        if proc.poll() is None:
            env.kill(proc)
    assert proc.returncode == 1, out + err
    assert "journal" in out + err
    assert "Traceback" not in err
    own_postgres.start()
    env.sb.faults.update(latency_seconds=0.0)
    result = env.cli("run", "--scan", env=extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(env.sb.state(), env.expected())


def _synced_count(env: SyncEnv) -> int:
    return sum(len(nodes) for nodes in env.sb.state(requests=False)["nodes"].values())


def test_a_daemon_started_while_the_database_is_down_waits_for_it(
    env: SyncEnv, own_postgres: PgCluster
) -> None:
    """The daemon starts while PostgreSQL is down (a host booting before its database): it
    says it waits (no exit, no traceback), and syncs once the database is up; a wrong database
    name is still a configuration error (exit 2), and SIGTERM while waiting exits 0."""
    url = create_database(own_postgres)
    extra = _use_postgres(env, url)
    env.add(0, "early.png")
    own_postgres.stop("fast")
    log = env.root / "daemon.log"
    with log.open("w") as sink:
        proc = env.popen("run", extra_env=extra, stdout=sink, stderr=sink)
    try:
        wait_until(lambda: "trying again" in log.read_text(), message="the daemon waiting")
        assert proc.poll() is None
        own_postgres.start()
        wait_until(lambda: _synced_count(env) == 1, timeout=LONG_TIMEOUT, message="the sync")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=LONG_TIMEOUT)
    finally:
        if proc.poll() is None:
            env.kill(proc)
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    assert own_postgres.password not in log.read_text()
    assert_exactly_once(env.sb.state(), env.expected())
    wrong = env.cli("run", "--scan", env={URL_ENV: url.rsplit("/", 1)[0] + "/nowhere"})
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert "does not exist" in wrong.stderr
    own_postgres.stop("fast")
    with log.open("w") as sink:
        waiting = env.popen("run", extra_env=extra, stdout=sink, stderr=sink)
    try:
        wait_until(lambda: "trying again" in log.read_text(), message="waiting again")
        waiting.send_signal(signal.SIGTERM)
        waiting.wait(timeout=LONG_TIMEOUT)
    finally:
        if waiting.poll() is None:
            env.kill(waiting)
    assert waiting.returncode == 0, log.read_text()
