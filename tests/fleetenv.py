"""A fleet for end-to-end tests: several florasync hosts (own host_id, own state dir, own
config) on one shared folder pair and one PostgreSQL journal (issue 14)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

from .helpers import cli_command, cli_env, run_cli
from .syncenv import SyncEnv

URL_ENV = "FLORASYNC_DATABASE_URL"


@dataclass
class Host:
    """One host of the fleet: its config names its own host_id and state dir."""

    host_id: str
    config: Path
    env: SyncEnv
    url: str

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        extra = {URL_ENV: self.url, **kw.pop("env", {})}
        return run_cli(
            args[0], "-c", str(self.config), *args[1:], api_key=self.env.sb.api_key, env=extra, **kw
        )

    @property
    def log(self) -> Path:
        """Where the host's stderr goes (a file: a pipe nobody reads would fill and block it)."""
        return self.config.with_suffix(".log")

    def popen(self, *args: str) -> subprocess.Popen[str]:
        argv = cli_command(args[0], "-c", str(self.config), *args[1:])
        env = cli_env(self.env.sb.api_key, {URL_ENV: self.url})
        with self.log.open("a") as log:
            return subprocess.Popen(argv, env=env, text=True, stdout=log, stderr=log)


def make_fleet(
    env: SyncEnv,
    url: str,
    count: int,
    *,
    lease_seconds: float = 3.0,
    mounts: bool = False,
    **settings: Any,
) -> list[Host]:
    """``count`` hosts sharing ``env``'s folders (each with an explicit folder id) and the
    database at ``url``. ``mounts``: every host but the first sees the folders through a path
    of its own (a symlinked mount point), as NFS clients mounting one share at different paths
    do."""
    hosts = []
    for n in range(count):
        host_id = f"host{n}"
        folders = []
        for index, (folder, project) in enumerate(zip(env.folders, env.projects, strict=True)):
            path = folder
            if mounts and n > 0:
                mount = env.root / f"mnt-{host_id}"
                mount.mkdir(exist_ok=True)
                path = mount / folder.name
                if not path.exists():
                    path.symlink_to(folder, target_is_directory=True)
            folders.append({"path": str(path), "id": f"shared-{index}", "project_id": project})
        config = env.root / f"{host_id}.yaml"
        env.write_config(
            folders=folders,
            host_id=host_id,
            journal={"url_env": URL_ENV, "lease_seconds": lease_seconds},
            **settings,
        )
        doc = yaml.safe_load(env.config.read_text())
        doc["state_dir"] = str(env.root / f"state-{host_id}")
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        hosts.append(Host(host_id, config, env, url))
    return hosts


def host_counts(url: str) -> dict[str, dict[str, int]]:
    """What each host's row says it did (written with its heartbeats and when it stops)."""
    with psycopg.connect(url) as conn:
        try:
            rows = conn.execute("SELECT host_id, uploaded, attached, failed FROM hosts").fetchall()
        except psycopg.errors.UndefinedTable:
            return {}  # nobody migrated the database yet
    return {r[0]: {"uploaded": r[1], "attached": r[2], "failed": r[3]} for r in rows}


def stop(host: Host, proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """SIGTERM a host's process and wait for it; the end of its log."""
    proc.terminate()
    proc.wait(timeout=timeout)
    return host.log.read_text()[-4000:]


def configure(host: Host, **settings: Any) -> None:
    """Set top-level settings in one host's config only (e.g. its own metrics port)."""
    doc = yaml.safe_load(host.config.read_text())
    doc.update(settings)
    host.config.write_text(yaml.safe_dump(doc, sort_keys=False))


def database_now(url: str) -> float:
    """The database server's clock (epoch seconds), the clock of ``claims.claimed_at``."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT extract(epoch from clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


def claims_held(url: str, host_id: str, since: float = 0.0) -> int:
    """How many contents ``host_id`` holds a claim on now, claimed after ``since`` (the
    database's clock: a process started then holds only claims it made itself)."""
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute(
                "SELECT count(*) FROM claims WHERE host_id = %s AND held AND claimed_at > %s",
                (host_id, since),
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0
