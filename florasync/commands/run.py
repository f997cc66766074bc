"""``florasync run``: the daemon, or with ``--scan`` a one-shot sync that waits until done.

Owns the command's flow, its signal handling (first SIGINT/SIGTERM: stop taking work and let
in-flight requests finish within a grace period; second: stop now), the end-of-run summary and
the exit code (PRODUCT.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType

from florasync import errors
from florasync.config import config, runtime
from florasync.errors import ExitCode
from florasync.progress import TerminalProgress, human_bytes
from florasync.sync.engine import Engine
from florasync.sync.outcomes import Summary
from florasync.sync.transfer import Outcome

log = logging.getLogger(__name__)

GRACE_SECONDS = 10.0
MAX_LISTED_FAILURES = 20


def run_from_args(args: argparse.Namespace) -> ExitCode:
    if args.dry_run:
        from florasync.commands import dryrun

        return dryrun.dry_run(config_path=args.config)
    if not args.scan:
        from florasync.service import daemon

        return daemon.run_daemon(config_path=args.config, grace_seconds=args.grace)
    return scan(config_path=args.config, grace_seconds=args.grace)


def scan(*, config_path: str | None, grace_seconds: float = GRACE_SECONDS) -> ExitCode:
    """Sync every folder once and wait until everything has an outcome."""
    rt = runtime.load(config_path)
    config.check_folders(rt.cfg)
    if (why := _paused(rt)) is not None:
        print(f"florasync: {why}: nothing sent; `florasync resume` lifts it", file=sys.stderr)
        return ExitCode.OK
    progress = TerminalProgress() if sys.stderr.isatty() else None
    started = time.monotonic()
    engine = Engine(rt, retry_deferred=False, progress=progress)
    interrupted: list[int] = []
    unscanned: errors.JournalError | None = None
    with engine, _signals(engine, interrupted):
        try:
            engine.sweep_all()
        except errors.JournalError as exc:  # its database went away: finish what was offered
            unscanned = exc
        engine.pipeline.wait_idle()
        engine.close(grace_seconds)
    if progress is not None:
        progress.close()
    code = _conclude(engine, interrupted, time.monotonic() - started)
    if unscanned is not None:
        print(f"florasync: the scan stopped: {unscanned}; the rest is left for the next run",
              file=sys.stderr)  # fmt: skip
        return max(code, ExitCode.FAILED)
    return code


def _paused(rt: runtime.Runtime) -> str | None:
    """Why a one-shot run must send nothing now (issue 16): a pause on record (the timer's
    scan honours what the user told the daemon), or ``off`` in the bandwidth timetable."""
    from florasync.service.bandwidth import BandwidthPlan
    from florasync.state import pause

    record = pause.read(rt.cfg.state_dir)
    if record is not None and record.in_force(time.time()):
        return record.reason
    decision = BandwidthPlan(rt.cfg.bandwidth).decide()
    if decision.rate.off:
        change = decision.next_change
        return "paused by the bandwidth schedule" + (f" until {change[0]}" if change else "")
    return None


@contextlib.contextmanager
def _signals(engine: Engine, interrupted: list[int]) -> Iterator[None]:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if interrupted:
            engine.stop.set()  # a second signal: stop now
            return
        interrupted.append(signum)
        log.warning("%s: finishing requests in flight, then stopping", signal.Signals(signum).name)
        engine.pipeline.begin_close()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _conclude(engine: Engine, interrupted: list[int], seconds: float) -> ExitCode:
    summary = engine.pipeline.summary
    fatal = engine.pipeline.fatal
    _print_summary(summary, seconds)
    if fatal is not None:
        print(f"florasync: error: {fatal}", file=sys.stderr)
        if isinstance(fatal, errors.CredentialsError):
            print(_key_advice(engine), file=sys.stderr)
        return fatal.exit_code
    if interrupted:
        left = engine.pipeline.outstanding
        name = signal.Signals(interrupted[0]).name
        print(
            f"florasync: interrupted by {name}; {left} file(s) left for the next run",
            file=sys.stderr,
        )
        return ExitCode.FAILED
    return ExitCode.FAILED if summary.failed() else ExitCode.OK


def _print_summary(summary: Summary, seconds: float) -> None:
    c = summary.counts
    total = sum(c.values())
    parts = [
        f"{c[Outcome.UPLOADED]} uploaded",
        f"{c[Outcome.ATTACHED]} attached only (content already in FLORA)",
        f"{c[Outcome.UNCHANGED]} unchanged",
        f"{summary.failed()} failed",
    ]
    if c[Outcome.SKIPPED]:
        parts.append(f"{c[Outcome.SKIPPED]} skipped")
    print(
        f"florasync: {total} file(s): {', '.join(parts)}; "
        f"{human_bytes(summary.bytes_uploaded)} uploaded in {seconds:.1f} s"
    )
    for path, code, message in summary.failures[:MAX_LISTED_FAILURES]:
        print(f"  failed: {path}: {message} ({code})")
    if len(summary.failures) > MAX_LISTED_FAILURES:
        print(f"  ... and {len(summary.failures) - MAX_LISTED_FAILURES} more: florasync status")


def _key_advice(engine: Engine) -> str:
    api_cfg = engine.rt.cfg.api
    source = str(api_cfg.api_key_file) if api_cfg.api_key_file else f"${api_cfg.api_key_env}"
    return f"florasync: check the API key in {source} (it was refused by {api_cfg.base_url})"
