"""The sandbox server: ``Sandbox``, its threads and sockets, and the text printed at start.

Owns the lifecycle (bind on construction, ``start()`` in a background thread or
``serve_forever()`` in the caller's, ``stop()`` closing every keep-alive connection and joining
every thread) and the public Python interface of docs/design.md, "The sandbox".
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from florasync.sandbox import control, drift
from florasync.sandbox.arrivals import Arrival
from florasync.sandbox.context import Context
from florasync.sandbox.dispatch import Dispatcher
from florasync.sandbox.faults import Faults
from florasync.sandbox.files import FileServer
from florasync.sandbox.handler import App, Handler
from florasync.sandbox.store import Store
from florasync.sandbox.traffic import Traffic
from florasync.sandbox.upload import UploadTarget

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05


class SandboxServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its open connections, so stop can close them."""

    daemon_threads = True
    block_on_close = True  # server_close() joins every handler thread
    request_queue_size = 128  # a burst of parallel workers must not meet a full accept backlog
    app: App  # set by Sandbox right after binding, before serving

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open connection, waking handlers blocked on a keep-alive read."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this from inside its except block, so exc_info is the error
        log.debug("connection from %s ended with an error", client_address, exc_info=True)  # noqa: LOG014


class Sandbox:
    """A FLORA-compatible API, ImageKit-like upload target and file server, on loopback.

    Binds at construction (port 0 = any free port). Use as a context manager, or call
    ``start()`` (returns at once) or ``serve_forever()`` (blocks until stopped), then ``stop()``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.faults = faults if faults is not None else Faults()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self._store = Store(self.data_dir, api_key)
        try:
            self._server = SandboxServer((host, port))
        except OSError:
            self._store.close()
            raise
        self._stop = threading.Event()
        self._traffic = Traffic()
        self._ctx = Context(self._store, self.faults, _origin(host, self._server.server_port))
        dispatcher = Dispatcher(self._ctx, self._traffic)
        upload = UploadTarget(self._ctx, self._traffic)
        files = FileServer(self._ctx, self._traffic)
        self._server.app = App(self._ctx, self._traffic, dispatcher, upload, self._stop, files)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self._ctx.origin

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """The API base, ``http://127.0.0.1:PORT/api/v1`` (what ``FLORA_BASE_URL`` takes)."""
        return self._ctx.base_url

    @property
    def upload_url(self) -> str:
        return self._ctx.upload_url

    @property
    def api_key(self) -> str:
        return self._store.api_key

    @property
    def workspace_id(self) -> str:
        return self._store.workspace.workspace_id

    @property
    def project_ids(self) -> list[str]:
        """Every project id in creation order (two exist at start)."""
        with self._store.lock:
            return [
                p.project_id for p in sorted(self._store.projects.values(), key=lambda p: p.seq)
            ]

    def project_names(self) -> dict[str, str]:
        with self._store.lock:
            return {p.project_id: p.name for p in self._store.projects.values()}

    def add_project(self, name: str) -> str:
        """Create a project in the workspace; its id."""
        with self._store.mutate():
            return self._store.add_project(name).project_id

    def remove_node(self, project_id: str, node_id: str) -> None:
        """A user deleted the node from the project's canvas (FLORA's UI; the API cannot).

        Raises:
            LookupError: no such project, or no such node in it.
        """
        drift.remove_node(self._ctx, project_id, node_id)

    def remove_asset(self, asset_id: str) -> None:
        """The asset is deleted in FLORA: ``GET /assets/{id}`` answers 404, listings leave it
        out, its nodes and bytes are gone.

        Raises:
            LookupError: no such asset.
        """
        drift.remove_asset(self._ctx, asset_id)

    def fail_asset(self, asset_id: str, message: str = drift.FAILED_MESSAGE) -> None:
        """The asset's processing failed later: status ``failed``, ``failure_message`` set.

        Raises:
            LookupError: no such asset.
        """
        drift.fail_asset(self._ctx, asset_id, message)

    def add_asset(
        self,
        name: str,
        data: bytes,
        *,
        project_id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A ready asset holding ``data`` made by someone else, on ``project_id``'s canvas when
        given; its id. Its ``url`` serves the bytes; ``size_bytes`` is set.

        Raises:
            ValueError: ``name`` is empty.
            LookupError: no such project.
        """
        asset, _ = drift.add_asset(
            self._ctx, name, data, project_id=project_id, content_type=content_type
        )
        return asset.asset_id

    def state(self, *, requests: bool = True) -> dict[str, Any]:
        """The same document as ``GET /_sandbox/state`` (``requests=False`` leaves the log out)."""
        return control.state(self._ctx, self._traffic, requests=requests)

    def record_arrivals(self, on: bool = True) -> None:
        """Record when upload-body bytes arrive (``arrivals``), from now on; starting clears the
        record. Off by default: then bodies are read as ever."""
        self._traffic.arrivals.record(on)

    def arrivals(self) -> list[Arrival]:
        """The pieces of upload bodies recorded: (monotonic time, upload seq, bytes), oldest
        first; ``time.monotonic`` of this process, so a test may compare its own times."""
        return self._traffic.arrivals.snapshot()

    def blob_path(self, asset_id: str) -> Path | None:
        """Where the stored bytes of ``asset_id`` are, or None when none are stored."""
        with self._store.lock:
            asset = self._store.assets.get(asset_id)
            if asset is None or not asset.has_bytes:
                return None
            return self._store.blob_path(asset_id)

    def start(self) -> Sandbox:
        """Serve in a background thread; returns self.

        Raises:
            RuntimeError: it was started (or stopped) before.
        """
        if self._thread is not None or self._closed:
            raise RuntimeError("this sandbox was already started")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_SECONDS},
            name=f"florasync-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until ``stop()`` (from any thread or a signal handler) or Ctrl-C, then clean up.

        The server loop runs in the background thread; this one only waits, so ``stop()`` may
        be called from a signal handler here without deadlocking.
        """
        self.start()
        try:
            while not self._stop.wait(POLL_SECONDS * 4):
                pass
        except KeyboardInterrupt:
            log.info("sandbox interrupted; stopping")
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, close every connection, join every thread, remove temporary files."""
        self._stop.set()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.close_connections()
        self._server.server_close()  # joins the handler threads (block_on_close)
        self._store.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def describe(sb: Sandbox) -> str:
    """What ``florasync sandbox`` prints at start: URLs, ids, the key and a config to copy."""
    names = sb.project_names()
    projects = "\n".join(f"    {pid}  {names[pid]}" for pid in sb.project_ids)
    first = sb.project_ids[0]
    drift_controls = "\n".join(f"    {line}" for line in control.CONTROLS.values())
    return f"""FLORA sandbox listening on {sb.origin}
  API base URL:  {sb.base_url}
  upload URL:    {sb.upload_url}
  workspace:     {sb.workspace_id}
  API key:       {sb.api_key}
  projects:
{projects}
  control:       POST {sb.origin}/_sandbox/faults, GET {sb.origin}/_sandbox/state
{drift_controls}
  data:          {sb.data_dir or "in memory (gone when stopped)"}

Try florasync against it:

  export FLORA_API_KEY={sb.api_key}

  # florasync.yaml
  api:
    base_url: {sb.base_url}
  workspace_id: {sb.workspace_id}
  folders:
    - path: ~/FLORA/sandbox
      project_id: {first}
"""


def _origin(host: str, port: int) -> str:
    """The URL origin clients should use; a wildcard bind is reached through loopback."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104 -- comparing, not binding
    return f"http://{shown}:{port}"
