"""The tests' private PostgreSQL cluster (for issue 14's journal): real, loopback, private."""

from __future__ import annotations

import psycopg
import pytest

from .pgcluster import PgCluster


def test_the_cluster_answers_on_loopback_with_its_password(postgres: PgCluster) -> None:
    """The session's cluster is a real PostgreSQL 15+ on 127.0.0.1 that checks the password."""
    with psycopg.connect(postgres.url, connect_timeout=10) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        address = conn.execute("SELECT inet_server_addr()::text").fetchone()
    assert version is not None
    assert int(version[0]) >= 150000
    assert address is not None
    assert address[0].startswith("127.0.0.1")
    wrong = postgres.url.replace(postgres.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=10).close()


def test_a_restart_keeps_what_was_committed(postgres: PgCluster) -> None:
    """``restart`` (pg_ctl -m fast) brings the same cluster back with its data."""
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    postgres.restart()
    with psycopg.connect(postgres.url) as conn:
        row = conn.execute("SELECT count(*) FROM kept WHERE n = 42").fetchone()
    assert row == (1,)
