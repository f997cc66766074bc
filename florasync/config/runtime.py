"""What a command needs from its config: the loaded config, the key, and a ready API client.

Owns the wiring between ``config`` and ``api`` (timeouts, the shared rate gate, the stop event),
so every command builds its client the same way. Imports ``api`` and ``retrying`` lazily:
commands that never touch the network (``status``, a no-op rescan) do not pay for importing
requests or tenacity.
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
from florasync.flora.secret import Secret

if TYPE_CHECKING:
    from florasync.flora import api, retrying, transport


@dataclass
class Runtime:
    """A loaded config plus the process-wide objects shared by all workers."""

    cfg: config.Config
    path: Path
    env: Mapping[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    _gate: retrying.RateGate | None = field(default=None, init=False, repr=False)
    _gate_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def gate(self) -> retrying.RateGate:
        """The one rate gate of every client of this runtime, built on first use.

        Lazy because ``retrying`` imports tenacity (~7-10 ms of a no-op rescan's start-up).
        """
        with self._gate_lock:
            if self._gate is None:
                from florasync.flora import retrying

                self._gate = retrying.RateGate()
            return self._gate

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
        from florasync.flora import retrying

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
