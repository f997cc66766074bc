"""The secrets: the FLORA API key and the journal's database URL, from systemd's credentials, a
file, or the environment.

Owns where each may come from and how it must be stored (a file readable by its owner only),
and turns every problem into a ``ConfigError`` that names the config key, never the secret
itself. The configuration around them is config.py's.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from florasync.config.config import Config, may_exist
from florasync.errors import ConfigError
from florasync.flora.secret import Secret

CREDENTIAL_NAME = "flora_api_key"  # systemd LoadCredential=flora_api_key:...
DATABASE_CREDENTIAL = "database_url"  # systemd LoadCredential=database_url:...
_DATABASE_SCHEMES = ("postgresql://", "postgres://")
_MAX_KEY_FILE_BYTES = 64 * 1024


def load_api_key(cfg: Config, env: Mapping[str, str] = os.environ) -> Secret:
    """The API key: ``$CREDENTIALS_DIRECTORY/flora_api_key``, else ``api.api_key_file``, else
    the environment variable named by ``api.api_key_env``. The key is in no message.

    Raises:
        ConfigError: the key is missing or empty, or its file is readable by others.
    """
    credential = _credential_path(env)
    if credential is not None:
        return _key_from_file(credential, "CREDENTIALS_DIRECTORY", owner_only=False)
    if cfg.api.api_key_file is not None:
        return _key_from_file(cfg.api.api_key_file, "api.api_key_file", owner_only=True)
    return _key_from_env(cfg.api.api_key_env, env)


def load_database_url(cfg: Config, env: Mapping[str, str] = os.environ) -> Secret | None:
    """The journal's ``postgresql://`` URL when ``journal`` is configured (else None, SQLite):
    ``$CREDENTIALS_DIRECTORY/database_url``, else ``journal.url_file``, else the environment
    variable named by ``journal.url_env``. The URL is in no message.

    Raises:
        ConfigError: the URL is missing, empty, not a PostgreSQL URL, or its file is readable
            by others.
    """
    journal = cfg.journal
    if journal is None:
        return None
    credential = _credential_path(env, DATABASE_CREDENTIAL)
    what = "the database URL"
    if credential is not None:
        url = _key_from_file(credential, "CREDENTIALS_DIRECTORY", owner_only=False, what=what)
        key = "CREDENTIALS_DIRECTORY"
    elif journal.url_file is not None:
        url = _key_from_file(journal.url_file, "journal.url_file", owner_only=True, what=what)
        key = "journal.url_file"
    else:
        name = journal.url_env or ""
        url = _key_from_env(name, env, key="journal.url_env", what=what, other="journal.url_file")
        key = "journal.url_env"
    if not url.reveal().startswith(_DATABASE_SCHEMES):
        raise ConfigError(key, "the database URL must start with postgresql://")
    return url


def _credential_path(env: Mapping[str, str], name: str = CREDENTIAL_NAME) -> Path | None:
    """The systemd credential (``LoadCredential=NAME:...``), when there is one."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / name
    return path if may_exist(path) else None


def _key_from_file(path: Path, key: str, *, owner_only: bool, what: str = "the API key") -> Secret:
    try:
        with path.open("rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            content = f.read(_MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        raise ConfigError(key, f"{path} does not exist; it must hold {what}") from None
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    if owner_only and mode & 0o077:
        raise ConfigError(
            key,
            f"{path} has mode {mode:04o}; it must be readable by its owner only (chmod 600 {path})",
        )
    return _secret(content, str(path), key, what)


def _key_from_env(
    name: str,
    env: Mapping[str, str],
    *,
    key: str = "api.api_key_env",
    what: str = "the API key",
    other: str = "api.api_key_file",
) -> Secret:
    value = env.get(name)
    if value is None:
        raise ConfigError(key, f"environment variable {name} is not set; export it or set {other}")
    data = value.encode("utf-8", "surrogateescape")  # os.environ keeps undecodable bytes so
    return _secret(data, f"environment variable {name}", key, what)


def _secret(data: bytes, where: str, key: str, what: str = "the API key") -> Secret:
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(key, f"{where} is not text; it must hold {what} alone") from None
    if not value:
        raise ConfigError(key, f"{where} is empty; it must hold {what}")
    if any(c.isspace() for c in value):
        raise ConfigError(
            key,
            f"{where} holds more than one word (a 'Bearer ' prefix?); it must hold only {what}",
        )
    return Secret(value)
