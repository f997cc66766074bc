"""``florasync pause [--for DURATION]`` and ``florasync resume`` (issue 16).

Owns the two commands: through the running daemon's control API when it serves one (the change
is at once and the answer says what is in force), else by writing the pause record in the state
dir, which a running daemon reads within a second and a stopped one at its next start. Either
way the pause is durable until its end.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from florasync import errors
from florasync.config import durations, runtime
from florasync.errors import ExitCode
from florasync.state import pause as pause_record
from florasync.state import runlock


def run_from_args(args: argparse.Namespace) -> ExitCode:
    seconds = None
    if args.duration is not None:
        try:
            seconds = durations.parse_duration(args.duration)
        except ValueError as exc:
            raise errors.ConfigError("--for", str(exc)) from None
    return pause(config_path=args.config, seconds=seconds)


def pause(*, config_path: str | None, seconds: float | None) -> ExitCode:
    rt = runtime.load(config_path)
    client = _client(rt)
    if client is not None:
        shown = client.post("pause", {} if seconds is None else {"for_seconds": seconds})
        print(f"paused {describe_until(shown.get('until'))} (the daemon at {client.url})")
        return ExitCode.OK
    now = time.time()
    until = None if seconds is None else now + seconds
    iso = None if until is None else datetime.fromtimestamp(until, UTC).isoformat()
    reason = "paused until resumed" if iso is None else f"paused until {iso}"
    pause_record.write(rt.cfg.state_dir, pause_record.Pause(now, until, "cli", reason))
    print(f"paused {describe_until(iso)}{_where(rt)}")
    return ExitCode.OK


def resume(*, config_path: str | None) -> ExitCode:
    rt = runtime.load(config_path)
    client = _client(rt)
    if client is not None:
        shown = client.post("resume", {})
        if shown.get("paused"):  # the timetable's "off" is not lifted by resume
            until = describe_until(shown.get("until"))
            print(f"resumed, but still paused: {shown.get('reason')} {until}")
        else:
            print(f"resumed (the daemon at {client.url})")
        return ExitCode.OK
    had = pause_record.clear(rt.cfg.state_dir)
    print(("resumed" if had else "was not paused") + _where(rt))
    return ExitCode.OK


def describe_until(until: Any) -> str:
    return "until resumed" if not until else f"until {until}"


def _client(rt: runtime.Runtime) -> Any:
    from florasync.service.control.client import Client

    cafile = rt.cfg.control.tls.cert if rt.cfg.control and rt.cfg.control.tls else None
    return Client.find(rt.cfg.state_dir, cafile=cafile)


def _where(rt: runtime.Runtime) -> str:
    if runlock.running_pid(rt.cfg.state_dir):
        return " (the running daemon follows within a second)"
    return " (recorded in the state dir: the daemon follows it when it starts)"
