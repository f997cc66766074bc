"""What a command needs from its config: the loaded config, the key, and a ready API client.

Owns the wiring between ``config`` and ``api`` (timeouts, the shared rate gate, the stop event),
so every command builds its client the same way. Imports ``api`` lazily: commands that never
touch the network (``status``, a no-op rescan) do not pay for importing requests.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from florasync import logs
from florasync.config import config, credentials
from florasync.flora import retrying
from florasync.flora.secret import Secret

if TYPE_CHECKING:
    from florasync.flora import api, transport


@dataclass
class Runtime:
    """A loaded config plus the process-wide objects shared by all workers."""

    cfg: config.Config
    path: Path
    env: Mapping[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    gate: retrying.RateGate = field(default_factory=retrying.RateGate)

    def api_key(self) -> Secret:
        """The API key (raises ConfigError naming where it was expected).

        The key is registered with the log filter, so no log line can carry it.
        """
        key = credentials.load_api_key(self.cfg, self.env)
        logs.register_secret(key.reveal())
        return key

    def timeouts(self) -> transport.Timeouts:
        from florasync.flora import transport

        a = self.cfg.api
        return transport.Timeouts(
            connect=a.connect_timeout_seconds,
            read=a.read_timeout_seconds,
            upload_read=a.upload_timeout_seconds,
        )

    def client(self, **kwargs: object) -> api.FloraClient:
        """A FLORA client sharing this runtime's gate and stop event."""
        from florasync.flora import api

        return api.FloraClient(
            self.cfg.api.base_url,
            self.api_key(),
            timeouts=self.timeouts(),
            policy=self.retry_policy(),
            gate=self.gate,
            stop=self.stop,
            **kwargs,  # type: ignore[arg-type]
        )

    def retry_policy(self) -> retrying.RetryPolicy:
        r = self.cfg.retry
        return retrying.RetryPolicy(
            max_attempts=r.max_attempts,
            backoff_base_seconds=r.backoff_base_seconds,
            backoff_cap_seconds=r.backoff_cap_seconds,
            max_total_seconds=r.max_total_seconds,
        )


def load(cli_path: str | None, env: Mapping[str, str] | None = None) -> Runtime:
    """Discover and load the config named on the command line (or by the discovery order)."""
    env = os.environ if env is None else env
    path = config.discover(cli_path, env)
    return Runtime(cfg=config.load(path, env), path=path, env=env)
