"""The command line: argparse, dispatch, and the one place that turns errors into messages.

Owns the ``florasync`` command tree and its exit codes (PRODUCT.md). Each command lives in
``florasync.commands.<name>`` and returns an ``ExitCode``; a ``FlorasyncError`` becomes one line on
stderr, and a Python traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from florasync import __version__, logs
from florasync.errors import ExitCode, FlorasyncError

log = logging.getLogger("florasync")

_GRACE_SECONDS = 10.0
_EPILOG = "Exit codes: 0 ok, 1 some files failed, 2 bad usage or config, 3 credentials refused."


def main(argv: Sequence[str] | None = None) -> int:
    """Run florasync with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return int(_dispatch(args))
    except FlorasyncError as exc:
        return _report(exc, args.debug, int(exc.exit_code))
    except KeyboardInterrupt:
        print("florasync: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- the one catch-all: no traceback without --debug
        message = f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)"
        return _report(exc, args.debug, int(ExitCode.FAILED), message)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to generate --help)."""
    parser = argparse.ArgumentParser(
        prog="florasync",
        description="Sync folders of media files into FLORA projects, exactly once.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"florasync {__version__}")
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, helptext, add_args in _COMMANDS:
        cmd = sub.add_parser(name, help=helptext, description=helptext, epilog=_EPILOG)
        _add_common(cmd, suppress=True)
        add_args(cmd)
    return parser


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before or after the command name."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show debug logs and Python tracebacks",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=default,
        help="log verbosity (default: info)",
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "human", "json"],
        default=default,
        help="log line format (default auto: human on a terminal, journald-friendly under systemd)",
    )


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="config file (default: $FLORASYNC_CONFIG, ./florasync.yaml, "
        "~/.config/florasync/config.yaml, /etc/florasync/config.yaml)",
    )


def _args_check(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)


def _args_projects(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _args_run(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument(
        "--scan", action="store_true", help="one-shot: scan, sync everything pending, then exit"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="with --scan: print what would be uploaded, reused, attached or skipped; "
        "send no mutating request",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=_GRACE_SECONDS,
        metavar="SECONDS",
        help=f"on SIGTERM/SIGINT, time given to requests in flight (default {_GRACE_SECONDS:g})",
    )


def _args_status(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("--json", action="store_true", help="print the stable JSON schema")
    parser.add_argument(
        "--failures", type=int, default=20, metavar="N", help="recent failures to list (20)"
    )
    parser.add_argument(
        "--watch", action="store_true", help="follow the running daemon live (Ctrl-C to stop)"
    )


def _args_pause(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="pause for this long (90s, 15m, 2h, 1h30m, 1d); default: until resumed",
    )


def _args_retry(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("paths", nargs="*", metavar="PATH", help="failed files to retry")
    parser.add_argument("--all", action="store_true", help="retry every failed file (default)")


def _args_verify(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("--folder", metavar="PATH", help="check only this configured folder")
    parser.add_argument("--json", action="store_true", help="print the stable JSON schema")
    parser.add_argument(
        "--adopt", action="store_true", help="record matching assets already in FLORA as synced"
    )
    parser.add_argument(
        "--repair", action="store_true", help="do what remote_deletions asks; resume orphans"
    )


def _args_sandbox(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any)")
    parser.add_argument(
        "--api-key",
        help="the key the sandbox accepts (default: $FLORA_API_KEY, else a generated one)",
    )
    parser.add_argument("--data", type=Path, help="keep state in DIR across restarts")
    faults = parser.add_argument_group("fault injection (also settable at POST /_sandbox/faults)")
    faults.add_argument("--latency", type=float, default=0.0, metavar="S", help="added per request")
    faults.add_argument("--error-rate", type=float, default=0.0, metavar="F",
                        help="fraction of API requests answered 5xx")  # fmt: skip
    faults.add_argument("--drop-rate", type=float, default=0.0, metavar="F",
                        help="fraction of API connections dropped before handling")  # fmt: skip
    faults.add_argument("--drop-after-rate", type=float, default=0.0, metavar="F",
                        help="fraction handled, then dropped without an answer")  # fmt: skip
    faults.add_argument("--malformed-rate", type=float, default=0.0, metavar="F",
                        help="fraction of 2xx answers replaced by a malformed one "
                             "(HTML, [], a missing id, truncated, a redirect)")  # fmt: skip
    faults.add_argument("--rate-limit", type=float, metavar="RPS",
                        help="token bucket per key; beyond it 429 rate_limited")  # fmt: skip
    faults.add_argument("--burst", type=int, default=10, help="token bucket size (default 10)")
    faults.add_argument("--no-retry-after", action="store_true", help="429s without Retry-After")
    faults.add_argument("--expire-uploads", action="store_true",
                        help="issue upload instructions that are already expired")  # fmt: skip
    faults.add_argument("--complete-delay", type=float, default=0.0, metavar="S",
                        help="assets stay processing this long after complete")  # fmt: skip
    faults.add_argument("--strict-lifecycle", action="store_true",
                        help="complete before the bytes arrived: 409 lifecycle_error "
                             "(default: 200 with the upload repeated)")  # fmt: skip
    faults.add_argument("--idempotency", choices=["duplicate", "replay"], default="duplicate",
                        help="repeated Idempotency-Key: 409 duplicate, or replay")  # fmt: skip
    faults.add_argument("--replay-errors", action="store_true",
                        help="with --idempotency replay, 4xx answers are replayed too")  # fmt: skip
    faults.add_argument("--upload-spelling", choices=["snake", "camel", "both"], default="snake",
                        help="spelling of the upload object")  # fmt: skip
    faults.add_argument("--forbid-project", action="append", default=[], metavar="PRJ",
                        help="answer 403 for this project (repeatable)")  # fmt: skip
    faults.add_argument("--forbid-project-create", action="store_true",
                        help="POST /projects answers 403 forbidden")  # fmt: skip
    faults.add_argument("--create-project-delay", type=float, default=0.0, metavar="S",
                        help="POST /projects answers S seconds late")  # fmt: skip


def _args_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--files", type=int, default=12, metavar="N", help="sample files to create (default 12)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the daemon and its control page up for a look (Ctrl-C), and the demo directory",
    )


def _args_journal(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument(
        "action", choices=["migrate"], help="migrate: copy the SQLite journal into PostgreSQL"
    )
    parser.add_argument(
        "--to",
        metavar="URL",
        help="the target postgresql:// URL without a password (PGPASSWORD or ~/.pgpass hold "
        "it; default: the config's journal:)",
    )


_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
    ("run", "the daemon: catch-up scan, then watch until SIGTERM (--scan: one-shot)", _args_run),
    ("status", "what the journal knows: counts per folder and state, recent failures",
     _args_status),
    ("retry", "put permanently failed files back in the queue", _args_retry),
    ("pause", "stop requests to FLORA (durable; --for a while, or until resume)", _args_pause),
    ("resume", "lift a pause: requests to FLORA go on", _add_config),
    ("verify", "compare the journal and the folders with FLORA (exit 1: differences)",
     _args_verify),
    ("check", "validate config, API key, workspace, projects and folders; change nothing",
     _args_check),
    ("projects", "list the workspace's projects (to write folder mappings)", _args_projects),
    ("sandbox", "run a local FLORA-compatible API and upload target", _args_sandbox),
    ("demo", "try florasync end to end against a built-in sandbox (no account needed)",
     _args_demo),
    ("journal", "journal migrate: copy the SQLite journal into a PostgreSQL one",
     _args_journal),
]  # fmt: skip


def _dispatch(args: argparse.Namespace) -> ExitCode:
    module = importlib.import_module(f"florasync.commands.{args.command}")
    command: Callable[[argparse.Namespace], ExitCode] = module.run_from_args
    return command(args)


def _configure_logging(args: argparse.Namespace) -> None:
    logs.configure(level=args.log_level or "info", fmt=args.log_format or "auto", debug=args.debug)


def _report(exc: BaseException, debug: bool, code: int, message: str | None = None) -> int:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"florasync: error: {message or exc}", file=sys.stderr)
    return code
