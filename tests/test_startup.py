"""What a start-up costs: a rescan of an unchanged tree loads none of the network libraries."""

from __future__ import annotations

import subprocess
import sys

from .helpers import CLI_TIMEOUT, cli_env
from .syncenv import SyncEnv

# each is only needed once a file must go over the network (issue 12, rescan start-up)
NETWORK_ONLY = ("requests", "urllib3", "httptools", "tenacity", "watchdog")

_AUDIT = """
import sys
from florasync.cli import main
code = main(sys.argv[1:])
print("loaded:", ",".join(m for m in {modules!r} if m in sys.modules))
raise SystemExit(code)
"""


def test_rescan_of_unchanged_files_imports_no_network_library(env: SyncEnv) -> None:
    """A second ``run --scan`` with nothing new exits 0 without importing requests or tenacity."""
    for n in range(3):
        env.add(0, f"spring-{n}.png")
    first = env.scan()
    assert first.returncode == 0, first.stdout + first.stderr
    argv = ["run", "--scan", "-c", str(env.config)]
    rescan = subprocess.run(
        [sys.executable, "-c", _AUDIT.format(modules=NETWORK_ONLY), *argv],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=cli_env(env.sb.api_key),
        check=False,
    )
    assert rescan.returncode == 0, rescan.stdout + rescan.stderr
    assert "3 unchanged" in rescan.stdout
    assert "loaded: \n" in rescan.stdout, rescan.stdout
