"""Which journal a configuration names: the SQLite file in ``state_dir``, or PostgreSQL.

Owns the choice (``journal:`` absent: SQLite; ``journal: {url_env | url_file}``: the
PostgreSQL database of that URL) and keeps the URL, a secret, out of every log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from florasync import errors, logs
from florasync.config import credentials
from florasync.config.config import Config
from florasync.flora.secret import Secret
from florasync.state.journal import sqlite
from florasync.state.journal.store import Journal

if TYPE_CHECKING:
    from florasync.state.journal.fleet import Fleet
    from florasync.state.journal.writer import Backend


def open_journal(cfg: Config, env: Mapping[str, str] = os.environ) -> Journal:
    """The configured journal, opened (created and migrated if needed).

    Raises:
        errors.ConfigError: ``journal`` is configured but its URL is missing or wrong.
        errors.JournalError: the journal cannot be opened, reached or migrated.
    """
    url = database_url(cfg, env)
    if url is None:
        return open_for(cfg, None)
    from florasync.state.journal import postgres  # psycopg only when PostgreSQL is configured

    return open_for(cfg, postgres.PostgresBackend(url, cfg.host_id))


def open_for(cfg: Config, backend: Backend | None) -> Journal:
    """The journal in ``backend`` (None: the SQLite file) for this config's host and folders.

    On SQLite the stat cache's host is "" (one host by construction: a renamed laptop keeps
    its cache); on a shared database it is ``host_id``.
    """
    host_id = "" if backend is None else cfg.host_id
    return Journal.open(cfg.state_dir, backend, host_id=host_id, folder_ids=folder_ids(cfg))


def folder_ids(cfg: Config) -> dict[str, str]:
    """Each folder's root path and its id (a file's identity across hosts)."""
    return {str(folder.path): folder.folder_id for folder in cfg.folders}


def refuse_a_forgotten_journal(journal: Journal, cfg: Config) -> None:
    """A run on a shared database that knows nothing of this host while ``state_dir`` still
    holds this host's SQLite journal would upload everything again: that journal must be
    migrated first (``journal migrate``), or moved away to start afresh.

    Raises:
        errors.ConfigError: naming ``journal`` and both places.
    """
    if not journal.backend.shared or not sqlite.exists(cfg.state_dir) or journal.knows_host():
        return
    local = Journal.open(cfg.state_dir)
    try:
        synced_before = local.has_assets()
    finally:
        local.close()
    if synced_before:
        raise errors.ConfigError(
            "journal",
            f"{journal.path} knows nothing of host {cfg.host_id!r}, but {local.path} holds "
            "what this host synced before: run `florasync journal migrate` first (nothing is "
            "uploaded again), or move that file away to start afresh",
        )


def join_fleet(journal: Journal, cfg: Config) -> Fleet | None:
    """Join the fleet of a shared journal (a run holds its lock); None on SQLite."""
    if not journal.backend.shared:
        return None
    from florasync.state.journal.fleet import Fleet

    lease = cfg.journal.lease_seconds if cfg.journal is not None else 30.0
    fleet = Fleet(journal.backend, host_id=cfg.host_id, lease_seconds=lease).join()
    journal.fleet = fleet
    return fleet


def journal_exists(cfg: Config, env: Mapping[str, str] = os.environ) -> bool:
    """Whether there may be a journal to read (``status`` and ``retry`` create none): the
    SQLite file exists, or a database is configured."""
    return cfg.journal is not None or sqlite.exists(cfg.state_dir)


def database_url(cfg: Config, env: Mapping[str, str] = os.environ) -> Secret | None:
    """The configured database URL (registered as a secret: no log line shows it), or None."""
    url = credentials.load_database_url(cfg, env)
    if url is not None:
        logs.register_secret(url.reveal())
        password = urlsplit(url.reveal()).password
        if password:
            logs.register_secret(password)
    return url
