"""Which journal a configuration names: the SQLite file in ``state_dir``, or PostgreSQL.

Owns the choice (``journal:`` absent: SQLite; ``journal: {url_env | url_file}``: the
PostgreSQL database of that URL) and keeps the URL, a secret, out of every log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from florasync import logs
from florasync.config import credentials
from florasync.config.config import Config
from florasync.flora.secret import Secret
from florasync.state.journal import sqlite
from florasync.state.journal.store import Journal


def open_journal(cfg: Config, env: Mapping[str, str] = os.environ) -> Journal:
    """The configured journal, opened (created and migrated if needed).

    Raises:
        errors.ConfigError: ``journal`` is configured but its URL is missing or wrong.
        errors.JournalError: the journal cannot be opened, reached or migrated.
    """
    url = database_url(cfg, env)
    if url is None:
        return Journal.open(cfg.state_dir)
    from florasync.state.journal import postgres  # psycopg only when PostgreSQL is configured

    return Journal.open(cfg.state_dir, postgres.PostgresBackend(url))


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
