"""The daemon's opt-in monitoring: ``/metrics`` and ``/healthz`` when ``metrics:`` is configured.

Owns the wiring of ``metrics.Metrics``, ``metrics.HealthState`` and ``metrics.MetricsServer`` into
the client hooks and the pipeline. Imports prometheus-client only when monitoring is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from florasync.config import config

if TYPE_CHECKING:
    from florasync.service import metrics
    from florasync.sync.outcomes import Progress
    from florasync.sync.pipeline import Pipeline

log = logging.getLogger(__name__)


class Monitoring:
    """The opt-in /metrics and /healthz endpoint; imports prometheus only when configured."""

    def __init__(
        self,
        listen: str | None,
        threads_ok: Callable[[], bool],
        trouble: Callable[[], str | None] = lambda: None,
        paused: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._listen = listen
        self._server: metrics.MetricsServer | None = None
        self.progress: Progress | None = None
        self.client_hooks: dict[str, object] = {}
        if listen is None:
            return
        from florasync.service import metrics

        self._metrics = metrics.Metrics()
        self._health = metrics.HealthState(threads_ok, trouble=trouble, paused=paused)
        self.progress = self._metrics
        self.client_hooks = {"on_response": self._on_response, "on_retry": self._metrics.on_retry}

    @classmethod
    def build(
        cls,
        cfg: config.Config,
        threads_ok: Callable[[], bool],
        trouble: Callable[[], str | None] = lambda: None,
        paused: Callable[[], str | None] = lambda: None,
    ) -> Monitoring:
        return cls(cfg.metrics.listen if cfg.metrics else None, threads_ok, trouble, paused)

    def start(self, pipeline: Pipeline) -> None:
        if self._listen is None:
            return
        from florasync.service import metrics

        self._metrics.track_queue(
            depth=lambda: pipeline.outstanding - pipeline.settling,
            settling=lambda: pipeline.settling,
        )
        server = metrics.MetricsServer(self._metrics, self._listen, self._health)
        self._server = server.start()
        log.info("metrics on http://%s/metrics and /healthz", self._listen)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def _on_response(self, method: str, route: str, status: int | None, seconds: float) -> None:
        self._metrics.on_response(method, route, status, seconds)
        self._health.on_response(method, route, status, seconds)
