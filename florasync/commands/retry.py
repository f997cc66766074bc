"""``florasync retry``: put permanently failed files back in the queue.

Owns the choice of files (all failed ones, or the paths given). A running daemon picks them up
from the journal within seconds; otherwise the next ``run`` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from florasync.config import runtime
from florasync.errors import ExitCode
from florasync.state import runlock
from florasync.state.journal import opening


def run_from_args(args: argparse.Namespace) -> ExitCode:
    return retry(config_path=args.config, paths=args.paths)


def retry(*, config_path: str | None, paths: list[str]) -> ExitCode:
    rt = runtime.load(config_path)
    if not opening.journal_exists(rt.cfg, rt.env):
        print("nothing to retry: no journal yet")
        return ExitCode.OK
    wanted = [str(Path(p).expanduser().absolute()) for p in paths] or None
    j = opening.open_journal(rt.cfg, rt.env)
    try:
        reset = j.reset_failed(rt.cfg.workspace_id, wanted)
    finally:
        j.close()
    for path in reset:
        print(f"queued again: {path}")
    missing = sorted(set(wanted or []) - set(reset))
    for path in missing:
        print(f"not failed (nothing to retry): {path}")
    where = (
        "a running daemon picks them up"
        if runlock.running_pid(rt.cfg.state_dir)
        else ("run `florasync run --scan` (or start the daemon) to sync them")
    )
    print(f"{len(reset)} file(s) put back in the queue; {where}")
    return ExitCode.OK
