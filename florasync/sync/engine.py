"""One sync run assembled: journal and run lock, API client, upload target, transfer, pipeline.

Owns the order in which these are built and torn down, shared by ``run --scan`` and the daemon.
The API client is built only when the first job needs the network, so a no-op rescan never
imports requests.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from florasync import errors
from florasync.config.config import BandwidthConfig
from florasync.config.runtime import Runtime
from florasync.flora.secret import Secret
from florasync.flora.throttle import Throttle
from florasync.state.journal import opening
from florasync.state.runlock import RunLock
from florasync.sync import sweep
from florasync.sync.outcomes import Progress
from florasync.sync.pipeline import Pipeline
from florasync.sync.transfer import Transfer

if TYPE_CHECKING:
    from florasync.flora import api, upload
    from florasync.flora.download import Downloader
    from florasync.state.journal.fleet import Fleet
    from florasync.sync.adoption import Adopter


class Engine:
    """Everything a run needs, opened in order and closed in reverse.

    Raises on construction: ``ConfigError`` (no key), ``JournalError``, ``AlreadyRunningError``.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        retry_deferred: bool,
        progress: Progress | None = None,
        on_refused: Callable[[errors.CredentialsError], None] | None = None,
        client_hooks: Mapping[str, object] | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        """``throttle``: the bandwidth limit of every upload; by default one at the config's
        rate now (``bandwidth.limit``, or its schedule's line in force at start). ``off`` is a
        pause, which the daemon holds, so its throttle lets bytes go; the daemon changes
        ``engine.throttle``'s rate live."""
        self.rt = rt
        self.throttle = throttle if throttle is not None else _starting_throttle(rt.cfg.bandwidth)
        self._client_hooks = dict(client_hooks or {})
        self.stop: threading.Event = rt.stop
        rt.api_key()  # a missing key is a config error before anything else happens
        self.journal = opening.open_journal(rt.cfg, rt.env)
        self._lock: RunLock | None = None
        self.fleet: Fleet | None = None
        try:
            self._lock = self.journal.lock_run()
            opening.refuse_a_forgotten_journal(self.journal, rt.cfg)
            self.fleet = opening.join_fleet(self.journal, rt.cfg)  # a shared journal only
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            self.journal.close()
            raise
        self._closed = False
        self._client: api.FloraClient | None = None
        self._target: upload.UploadTarget | None = None
        self._downloader: Downloader | None = None
        self.pipeline = Pipeline(
            workspace_id=rt.cfg.workspace_id,
            journal=self.journal,
            transfer_factory=self._make_transfer,
            stop=self.stop,
            workers=rt.cfg.workers,
            settle_seconds=rt.cfg.settle_seconds,
            max_file_bytes=rt.cfg.max_file_bytes,
            retry_deferred=retry_deferred,
            on_refused=on_refused,
            progress=progress,
        )
        if self.fleet is not None:
            self._share_rate_limit(self.fleet)
            self.fleet.on_fatal = self.pipeline.stop_broken

    def sweep_all(self) -> None:
        """Scan every folder once, queueing what is not yet attached."""
        for folder in self.rt.cfg.folders:
            if self.pipeline.is_closing:
                return
            sweep.sweep_folder(folder, journal=self.journal, pipeline=self.pipeline, stop=self.stop)

    def close(self, grace_seconds: float = 10.0) -> None:
        """Idempotent: stop the pipeline, close connections, release the lock, close the journal."""
        if self._closed:
            return
        self._closed = True
        self.pipeline.close(grace_seconds)
        for closable in (self._client, self._target, self._downloader):
            if closable is not None:
                closable.close()
        if self.fleet is not None:
            self.journal.flush_all()  # the jobs' last writes (and claim releases) first
            self.fleet.leave()
        if self._lock is not None:
            self._lock.release()
        self.journal.close()

    def __enter__(self) -> Engine:
        self.pipeline.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def client(self) -> api.FloraClient:
        """The API client (built on first use, shared with the workers)."""
        self.pipeline.transfer()
        assert self._client is not None  # noqa: S101 -- built by _make_transfer
        return self._client

    def set_api_key(self, key: Secret) -> None:
        """Use a new key (SIGHUP after a rotation) from the next request on."""
        if self._client is not None:
            self._client.set_api_key(key)

    def _share_rate_limit(self, fleet: Fleet) -> None:
        """A fleet shares the API key, so a 429 seen by any host closes every host's gate."""
        gate = self.rt.gate
        gate.on_close = fleet.announce
        fleet.on_gate = functools.partial(gate.close_for, announce=False)

    def _make_transfer(self) -> Transfer:
        from florasync.flora import upload

        self._client = self.rt.client(**self._client_hooks)
        self._target = upload.UploadTarget(
            timeouts=self.rt.timeouts(),
            stop=self.stop,
            policy=self.rt.retry_policy(),
            gate=self.rt.gate,
            throttle=self.throttle,
        )
        return Transfer(
            workspace_id=self.rt.cfg.workspace_id,
            client=self._client,
            target=self._target,
            journal=self.journal,
            stop=self.stop,
            processing_timeout=self.rt.cfg.complete_timeout_seconds,
            on_bytes=self.pipeline.bytes_sent,
            adopter=self._adopter(self._client) if self.rt.cfg.adopt else None,
        )

    def _adopter(self, client: api.FloraClient) -> Adopter:
        """``adopt: true``: a new content is looked for in FLORA before it is uploaded."""
        from florasync.flora.download import Downloader
        from florasync.sync.adoption import Adopter

        self._downloader = Downloader(
            timeouts=self.rt.timeouts(),
            stop=self.stop,
            policy=self.rt.retry_policy(),
            gate=self.rt.gate,
        )
        return Adopter(
            client=client,
            downloader=self._downloader,
            journal=self.journal,
            workspace_id=self.rt.cfg.workspace_id,
            max_bytes=self.rt.cfg.adopt_max_bytes,
        )


def _starting_throttle(bandwidth: BandwidthConfig) -> Throttle:
    """A throttle at the rate the config puts in force now (``off`` holds nothing here)."""
    rate = bandwidth.rate_at(datetime.now().astimezone())
    return Throttle(None if rate.off else rate.bytes_per_second)
