"""The bench command line: choose the mode and the benchmarks, run each in its own scope.

Owns the order of the benchmarks, the machine header, and the exit code: 0 whatever the numbers
say, 1 when a benchmark crashed, 130 on Ctrl-C (children stopped and temp dirs removed first).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from types import FrameType

from bench import (
    bulk,
    burst,
    cpu,
    fleet,
    fresh,
    hashing,
    idle,
    large,
    latency,
    memory,
    report,
    rescan,
    scale,
)
from bench.report import Result
from bench.session import DEFAULT, FULL, QUICK, Scope, Session

BENCHMARKS: dict[str, Callable[[Scope], Result]] = {
    "cpu": cpu.run,
    "bulk": bulk.run,
    "fleet": fleet.run,
    "scale": scale.run,
    "rescan": rescan.run,
    "large": large.run,
    "hash": hashing.run,
    "latency": latency.run,
    "burst": burst.run,
    "fresh": fresh.run,
    "idle": idle.run,
    "memory": memory.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL if args.full else DEFAULT
    names = args.only or list(BENCHMARKS)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)  # also when started with SIGINT ignored (nohup, &)
    session = Session(sizes)
    try:
        return _run_all(session, names)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        session.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, seconds each (CI)")
    mode.add_argument("--full", action="store_true", help="also rescan 100,000 files")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)})",
    )
    return parser


def _run_all(session: Session, names: list[str]) -> int:
    print(report.machine_header())
    print(f"# mode: {session.sizes.mode}; scratch: {session.root}", flush=True)
    started = time.monotonic()
    crashed = [name for name in names if not _run_one(session, name)]
    print(f"# {len(names)} benchmark(s) in {time.monotonic() - started:.0f} s", flush=True)
    return 1 if crashed else 0


def _run_one(session: Session, name: str) -> bool:
    """Run one benchmark and print its lines; False when it crashed."""
    started = time.monotonic()
    try:
        with session.scope(name) as scope:
            result = BENCHMARKS[name](scope)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 -- one crashed benchmark must not hide the others
        traceback.print_exc()
        print(f"BENCH {name}: CRASHED {type(exc).__name__}: {exc}", flush=True)
        return False
    for line in result.lines():
        print(line)
    print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    return True


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
