"""``florasync journal migrate``: copy the SQLite journal into a PostgreSQL one (issue 14).

Owns the move of a single host's journal into a database (so it can grow into a fleet without
uploading anything again): the checks before (a journal to copy, no run writing it, an empty
target), the copy, and the counts after, which must match. The SQLite file stays as it was.
The target's URL comes from the config's ``journal:`` (or ``--to``, without a password: libpq
reads it from ``PGPASSWORD`` or ``~/.pgpass``), never from a password on the command line.
"""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from florasync.config import runtime
from florasync.errors import ConfigError, ExitCode
from florasync.flora.secret import Secret
from florasync.state.journal import opening, sqlite, store


def run_from_args(args: argparse.Namespace) -> ExitCode:
    return migrate(config_path=args.config, to=args.to)


def migrate(*, config_path: str | None, to: str | None) -> ExitCode:
    """Copy the journal of ``state_dir`` into the configured (or ``to``) PostgreSQL database.

    Raises:
        ConfigError: nothing to copy, no target named, a password in ``to``, a target that is
            not empty.
        AlreadyRunningError: a run holds the SQLite journal or the database.
        JournalError: either journal cannot be opened.
    """
    rt = runtime.load(config_path)
    if not sqlite.exists(rt.cfg.state_dir):
        raise ConfigError("state_dir", f"no SQLite journal in {rt.cfg.state_dir} to migrate")
    from florasync.state.journal import postgres  # psycopg only for this command

    backend = postgres.PostgresBackend(_target(rt, to), rt.cfg.host_id)
    source = store.Journal.open(rt.cfg.state_dir)
    try:
        with source.lock_run():  # no run writes the SQLite journal while it is copied
            # the stat cache becomes this host's in the fleet (host_id), with folder ids
            target = opening.open_for(rt.cfg, backend)
            try:
                backend.lock_database()
                _require_empty(target)
                copied = source.copy_into(target)
                _require_equal(copied, target.row_counts())
                target.note_event(None, store.MIGRATED, f"copied from {source.path}")
            finally:
                target.close()
    finally:
        source.close()
    listed = ", ".join(f"{n} {table}" for table, n in copied.items())
    print(f"copied {listed} into {backend.where}; {source.path} is left as it was")
    if rt.cfg.journal is None:
        print("now set journal: {url_env: ...} (or url_file) in the config to use it")
    return ExitCode.OK


def _target(rt: runtime.Runtime, to: str | None) -> Secret:
    if to is None:
        url = opening.database_url(rt.cfg, rt.env)
        if url is None:
            raise ConfigError(
                "journal", "name the database: journal: {url_env: ...} in the config, or --to URL"
            )
        return url
    if not to.startswith(("postgresql://", "postgres://")):
        raise ConfigError("--to", "must be a postgresql:// URL")
    if urlsplit(to).password:
        raise ConfigError(
            "--to",
            "holds a password; give it in PGPASSWORD or ~/.pgpass (libpq reads them) or use "
            "journal: {url_env: ...}, never on the command line",
        )
    return Secret(to)


def _require_empty(target: store.Journal) -> None:
    held = {table: n for table, n in target.row_counts().items() if n}
    if held:
        listed = ", ".join(f"{n} {table}" for table, n in held.items())
        raise ConfigError(
            "journal",
            f"the journal database {target.path} is not empty ({listed}); migrate into an "
            "empty database only, two journals must not mix",
        )


def _require_equal(copied: dict[str, int], stored: dict[str, int]) -> None:
    if copied != stored:
        raise ConfigError("journal", f"the copy is incomplete: copied {copied}, found {stored}")
