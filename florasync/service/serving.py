"""The HTTP server under florasync's own listeners (``/metrics`` and the control page).

Owns a threading server that keeps track of its request threads and open connections, so
``stop`` can end idle keep-alive connections (a browser keeps several) and join every thread
instead of leaving them to the process's exit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TrackingServer(ThreadingHTTPServer):
    """A threading HTTP server whose request threads and connections can be ended and joined."""

    daemon_threads = True  # a stuck client never keeps the process from exiting
    block_on_close = False
    thread_name = "florasync-request"

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._handlers: set[threading.Thread] = set()
        self._open: set[socket.socket] = set()  # connections being served, idle keep-alive too
        self._handlers_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_then_forget,
            args=(request, client_address),
            name=self.thread_name,
            daemon=self.daemon_threads,
        )
        with self._handlers_lock:
            self._handlers = {t for t in self._handlers if t.is_alive()}
            self._handlers.add(thread)
            self._open.add(request)
        thread.start()

    def request_done(self) -> None:
        """Called on a request thread once its connection is done (subclasses clean up)."""

    def close_connections(self) -> None:
        """End every connection now: idle ones would hold ``join_handlers`` for their timeout."""
        with self._handlers_lock:
            connections = list(self._open)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the other side
                conn.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        with self._handlers_lock:
            threads, self._handlers = self._handlers, set()
        for thread in threads:
            thread.join(timeout)

    def _serve_then_forget(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._handlers_lock:
                self._open.discard(request)
            self.request_done()
