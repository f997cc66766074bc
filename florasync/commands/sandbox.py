"""``florasync sandbox``: a local FLORA-compatible API and upload target, for trying florasync.

Owns the command-line face of ``florasync.sandbox``: flags for the address, key, persistence and
fault knobs; prints how to point florasync at it; serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import threading
from types import FrameType

from florasync.errors import ExitCode
from florasync.flora import urls
from florasync.sandbox import Faults, Sandbox
from florasync.sandbox.server import describe

log = logging.getLogger(__name__)


def run_from_args(args: argparse.Namespace) -> ExitCode:
    faults = faults_from_args(args)
    key = args.api_key or os.environ.get("FLORA_API_KEY") or f"sk_test_{secrets.token_hex(16)}"
    if not urls.is_loopback_host(args.host):
        log.warning("binding to %s: the sandbox is reachable from the network", args.host)
    return serve(Sandbox(host=args.host, port=args.port, api_key=key, data_dir=args.data,
                         faults=faults))  # fmt: skip


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The fault knobs the ``florasync sandbox`` options ask for.

    Raises:
        ValueError: a value out of range (e.g. a rate above 1).
    """
    return Faults(
        latency_seconds=args.latency,
        error_rate=args.error_rate,
        drop_before_rate=args.drop_rate,
        drop_after_rate=args.drop_after_rate,
        malformed_rate=args.malformed_rate,
        rate_limit_rps=args.rate_limit,
        rate_limit_burst=args.burst,
        retry_after_header=not args.no_retry_after,
        expire_uploads=args.expire_uploads,
        complete_pending_seconds=args.complete_delay,
        complete_without_bytes="lifecycle_error" if args.strict_lifecycle else "repeat",
        idempotency=args.idempotency,
        replay_errors=args.replay_errors,
        upload_spelling=args.upload_spelling,
        forbidden_projects=list(args.forbid_project),
        forbid_project_create=args.forbid_project_create,
        create_project_delay_seconds=args.create_project_delay,
    )


def serve(sb: Sandbox) -> ExitCode:
    """Serve until SIGINT or SIGTERM."""
    done = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with sb:
            print(describe(sb), flush=True)
            while not done.wait(1.0):
                pass
            print("sandbox: stopping", flush=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return ExitCode.OK
