"""The FLORA API key: from systemd's credentials, a key file, or the environment.

Owns where the key may come from and how it must be stored (a key file readable by its owner
only), and turns every problem into a ``ConfigError`` that names the config key, never the API
key itself. The configuration around it is config.py's.
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


def _credential_path(env: Mapping[str, str]) -> Path | None:
    """The systemd credential (``LoadCredential=flora_api_key:...``), when there is one."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / CREDENTIAL_NAME
    return path if may_exist(path) else None


def _key_from_file(path: Path, key: str, *, owner_only: bool) -> Secret:
    try:
        with path.open("rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            content = f.read(_MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        raise ConfigError(key, f"{path} does not exist; it must hold the API key") from None
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    if owner_only and mode & 0o077:
        raise ConfigError(
            key,
            f"{path} has mode {mode:04o}; it must be readable by its owner only (chmod 600 {path})",
        )
    return _secret(content, str(path), key)


def _key_from_env(name: str, env: Mapping[str, str]) -> Secret:
    value = env.get(name)
    if value is None:
        raise ConfigError(
            "api.api_key_env",
            f"environment variable {name} is not set; export it or set api.api_key_file",
        )
    data = value.encode("utf-8", "surrogateescape")  # os.environ keeps undecodable bytes so
    return _secret(data, f"environment variable {name}", "api.api_key_env")


def _secret(data: bytes, where: str, key: str) -> Secret:
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(key, f"{where} is not text; it must hold the API key alone") from None
    if not value:
        raise ConfigError(key, f"{where} is empty; it must hold the API key")
    if any(c.isspace() for c in value):
        raise ConfigError(
            key,
            f"{where} holds more than one word (a 'Bearer ' prefix?); it must hold only the key",
        )
    return Secret(value)
