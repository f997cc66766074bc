"""What a SIGHUP reload changes: the new configuration read and checked, split into what a
running daemon applies at once and what waits for a restart.

Owns the reading side of a reload (config, folders, key) and the diff of two configurations;
the daemon owns re-arming the watches. No threads, no watchdog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from florasync import logs
from florasync.config import config, credentials
from florasync.config.config import FolderConfig
from florasync.flora.secret import Secret

LIVE_KEYS = ("folders", "poll_interval_seconds", "rescan_interval_seconds", "bandwidth", "on_pause")
"""Applied by a running daemon at once; every other changed key (``control`` among them) waits
for a restart."""


@dataclass(frozen=True, slots=True)
class Reload:
    """A checked new configuration, applied onto the running one."""

    cfg: config.Config  # the running config with the live keys of the new one
    key: Secret
    added: list[FolderConfig]
    removed: list[FolderConfig]
    restart_only: list[str]  # changed keys that take effect after a restart


def read(path: Path, env: Mapping[str, str], running: config.Config) -> Reload:
    """Read and check the config file again.

    Raises:
        errors.FlorasyncError: the new configuration (or its key) is rejected; nothing changed.
    """
    new = config.load(path, env)
    config.check_folders(new)
    key = credentials.load_api_key(new, env)
    logs.register_secret(key.reveal())
    return Reload(
        cfg=running.model_copy(update=live_settings(new)),
        key=key,
        added=[f for f in new.folders if f not in running.folders],
        removed=[f for f in running.folders if f not in new.folders],
        restart_only=restart_only_changes(running, new),
    )


def live_settings(new: config.Config) -> dict[str, object]:
    """What a reload applies at once: the folder list, the scan intervals, the bandwidth limit
    and its timetable, and ``on_pause``."""
    return {key: getattr(new, key) for key in LIVE_KEYS}


def restart_only_changes(old: config.Config, new: config.Config) -> list[str]:
    """Changed keys that a running daemon cannot apply (the key itself is applied)."""
    skip = {*LIVE_KEYS}
    old_api = old.api.model_dump(exclude={"api_key_env", "api_key_file"})
    new_api = new.api.model_dump(exclude={"api_key_env", "api_key_file"})
    changed = [
        k
        for k in type(new).model_fields
        if k not in skip | {"api"} and getattr(old, k) != getattr(new, k)
    ]
    return changed + (["api"] if old_api != new_api else [])
