"""``florasync resume``: lift a pause (issue 16); ``commands.pause`` holds the logic of both."""

from __future__ import annotations

import argparse

from florasync.commands import pause
from florasync.errors import ExitCode


def run_from_args(args: argparse.Namespace) -> ExitCode:
    return pause.resume(config_path=args.config)
