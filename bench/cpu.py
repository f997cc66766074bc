"""cpu: CPU per synced file of the florasync process alone, in ``run --scan`` and in the daemon.

The kernel's count (user + sys) for florasync only: ``os.wait4`` of the ``run --scan`` child,
``/proc/PID/stat`` of the daemon around a burst; the sandbox runs in its own process and its CPU
is printed apart. Tiny files and no injected latency, so what is measured is florasync's own
cost per file. Floor: a plain client with the same libraries doing the same four requests per
file with a journal (``bench/plainclient.py``), on the same kind of files in the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench import corpus, measure, syncproc
from bench.report import Floor, Result, Target
from bench.sandbox import API_KEY_ENV, SandboxProcess
from bench.session import Scope

NAME = "cpu"
SCAN_TARGET_MS = 2.0
DAEMON_TARGET_MS = 2.5
WORKERS = 4
PLAIN = Path(__file__).with_name("plainclient.py")
WRITER = """
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
os.makedirs(root)
for n in range(count):
    with open(os.path.join(root, f"c{n:06d}.png"), "wb") as f:
        f.write(os.urandom(256))
"""


def run(scope: Scope) -> Result:
    files = scope.sizes.cpu_files
    sandbox = SandboxProcess(scope)
    scan_ms, scan_sandbox_ms = _scan(scope, sandbox, files)
    daemon_ms, daemon_sandbox_ms = _daemon(scope, sandbox, files)
    plain_ms = _plain(scope, sandbox, files)
    return Result(
        NAME,
        scan_ms,
        "ms/file (run --scan)",
        Floor("plain client", plain_ms, "ms/file"),
        targets=[
            Target(f"run --scan <= {SCAN_TARGET_MS:g} ms/file", scan_ms <= SCAN_TARGET_MS),
            Target(
                f"daemon burst <= {DAEMON_TARGET_MS:g} ms/file ({daemon_ms:.2f})",
                daemon_ms <= DAEMON_TARGET_MS,
            ),
        ],
        details=[
            f"{files} files of 256 B, workers {WORKERS}, no injected latency; CPU of florasync "
            f"only (user + sys); start-up included in run --scan",
            f"run --scan: florasync {scan_ms:.2f} ms/file, the sandbox {scan_sandbox_ms:.2f}",
            f"daemon burst: florasync {daemon_ms:.2f} ms/file, the sandbox {daemon_sandbox_ms:.2f}",
            f"plain client (4 requests/file, requests.Session, sqlite3 WAL, {WORKERS} threads, no "
            f"retries, stat cache, settle or symlink checks): {plain_ms:.2f} ms/file",
        ],
    )


def _scan(scope: Scope, sandbox: SandboxProcess, files: int) -> tuple[float, float]:
    folder = scope.subdir("scan")
    corpus.write_small_files(folder, files)
    config = syncproc.write_config(
        scope.path("scan.yaml"), sandbox, [folder], state_dir=scope.path("scan-state"),
        workers=WORKERS,
    )  # fmt: skip
    before = sandbox.cpu_seconds()
    scan = syncproc.run_scan(scope, sandbox, config)
    return 1000 * scan.cpu_seconds / files, 1000 * (sandbox.cpu_seconds() - before) / files


def _daemon(scope: Scope, sandbox: SandboxProcess, files: int) -> tuple[float, float]:
    folder = scope.subdir("watched")
    config = syncproc.write_config(
        scope.path("daemon.yaml"), sandbox, [folder], state_dir=scope.path("daemon-state"),
        workers=WORKERS,
    )  # fmt: skip
    daemon = syncproc.Daemon(scope, sandbox, config)
    daemon.wait_ready()
    start = sandbox.node_count()
    cpu = daemon.cpu_seconds(), sandbox.cpu_seconds()
    subprocess.run([sys.executable, "-c", WRITER, str(folder / "burst"), str(files)], check=True)
    measure.wait_until(
        lambda: sandbox.node_count() - start >= files, timeout=600, interval=0.2,
        what=f"{files} attached",
    )  # fmt: skip
    used = daemon.cpu_seconds() - cpu[0], sandbox.cpu_seconds() - cpu[1]
    daemon.stop()
    return 1000 * used[0] / files, 1000 * used[1] / files


def _plain(scope: Scope, sandbox: SandboxProcess, files: int) -> float:
    paths = corpus.write_small_files(scope.subdir("plain"), files)
    listing = scope.path("plain.list")
    listing.write_text("\n".join(map(str, paths)))
    ep = sandbox.endpoints
    env = {
        **os.environ,
        API_KEY_ENV: sandbox.api_key,
        "PLAIN_BASE_URL": ep.base_url,
        "PLAIN_WORKSPACE": ep.workspace_id,
        "PLAIN_PROJECT": sandbox.project,
        "PLAIN_DB": str(scope.path("plain.sqlite3")),
    }
    started = time.monotonic()
    proc = scope.spawn([sys.executable, str(PLAIN), str(listing)], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the plain client failed after {time.monotonic() - started:.1f} s")
    return 1000 * (usage.ru_utime + usage.ru_stime) / files
