"""A private PostgreSQL cluster for the tests: initdb in a temp dir, one loopback port, torn down.

The image's PostgreSQL binaries (``pg_config --bindir``) run as the ``postgres`` user when the
tests run as root (initdb refuses root). Password auth (scram) over 127.0.0.1 only; the socket
lives in the cluster's own directory. No mocks: the journal's PostgreSQL tests (issue 14) talk
to this server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .helpers import free_port

START_TIMEOUT = 60.0


class PgCluster:
    """One throwaway cluster under ``base``; ``url`` reaches its ``postgres`` database."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.socket_dir = base / "run"
        self.password = secrets.token_hex(16)
        self.port = free_port()
        self._bindir = Path(_pg_config("--bindir"))
        self._user = _runner()

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def init(self) -> PgCluster:
        """initdb with a random superuser password (only the test process knows it)."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if self._user is not None:
            for path in (self.base.parent, self.base, self.socket_dir, pwfile):
                shutil.chown(path, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        return self

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir}"
            " -c fsync=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.base / "log"),
            "-w", "-t", str(int(START_TIMEOUT)), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def log(self) -> str:
        path = self.base / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        argv = [str(self._bindir / tool), *args]
        if self._user is not None:
            argv = ["runuser", "-u", self._user.pw_name, "--", *argv]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=START_TIMEOUT, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{self.log()}"
            )


@contextlib.contextmanager
def running_cluster() -> Iterator[PgCluster]:
    """A started cluster in a new directory, stopped and removed on exit. Outside pytest's
    temp tree, whose 0700 parents the server's user could not enter."""
    base = Path(tempfile.mkdtemp(prefix="florasync-pg-"))
    cluster = PgCluster(base / "cluster").init()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _pg_config(option: str) -> str:
    try:
        return subprocess.run(
            ["pg_config", option], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(
            "PostgreSQL's server binaries are needed for these tests (pg_config not found: "
            f"{exc}); install PostgreSQL 15 (Debian: postgresql-15)"
        ) from None


def _runner() -> pwd.struct_passwd | None:
    """The user the server runs as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("postgres")


def create_database(cluster: PgCluster) -> str:
    """A new empty database in ``cluster``; its URL (drop it with ``drop_database``)."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.url.rsplit("/", 1)[0] + "/" + name


def drop_database(cluster: PgCluster, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
