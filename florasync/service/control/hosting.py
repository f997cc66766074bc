"""The control listener's life in the daemon (issue 16): built from ``control:``, started after
the engine, its URL published in the state dir, stopped before the engine closes.

Owns the wiring of ``access``, ``report``, ``api`` and ``server``; the daemon hands it what the
report reads (``report.Source``) and what requests may do (``api.Actions``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from florasync.config.config import Config
from florasync.service.control import access, endpoint
from florasync.service.control.api import Actions, Api
from florasync.service.control.report import Report, Source
from florasync.service.control.server import ControlServer

log = logging.getLogger(__name__)


class Hosting:
    def __init__(self, cfg: Config, source: Source, actions: Actions) -> None:
        assert cfg.control is not None  # noqa: S101 -- only built when configured
        self._state_dir: Path = cfg.state_dir
        host, _, port = cfg.control.listen.rpartition(":")
        host = host.strip("[]")
        token = access.load_or_make_token(cfg.state_dir)
        tls = cfg.control.tls
        tls_files = (tls.cert, tls.key) if tls is not None else None
        self.report = Report(source)
        self.server = ControlServer(
            Api(self.report, source.steering, actions),
            source.feed,
            lambda bound: access.Gatekeeper(token, host, bound, tls=tls is not None),
            host,
            int(port),
            tls=tls_files,
            request_done=source.journal.drop_reader,
        )

    def start(self) -> str:
        """Listen; returns the page's URL."""
        self.server.start()
        endpoint.write(self._state_dir, self.server.url)
        return self.server.url

    def stop(self) -> None:
        endpoint.remove(self._state_dir)
        self.server.stop()
