"""Run a command, write its peak RSS (KiB) and wall seconds to a file: ``peak_rss.py OUT CMD...``.

``wait4``'s ``ru_maxrss`` for a child started by a large process is wrong: Python starts
children with vfork (or fork) and exec, and Linux carries the parent's RSS high-water mark into
the child's ``maxrss`` at exec. This small interpreter starts the command itself, so the figure
is the command's own (or this launcher's few MiB, whichever is larger); the seconds run from
fork to reap, without this launcher's own start-up. The exit code is the
command's; a command killed by a signal exits 128 + the signal number, as in a shell. Used by
the benchmarks and the 1 GiB test.
"""

from __future__ import annotations

import os
import sys
import time


def main(argv: list[str]) -> int:
    out, command = argv[0], argv[1:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)  # noqa: S606 -- argv as given, no shell
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    with open(out, "w", encoding="ascii") as f:  # noqa: PTH123 -- no pathlib import at start-up
        f.write(f"{usage.ru_maxrss} {seconds:.6f}\n")
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
