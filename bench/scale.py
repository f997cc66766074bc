"""scale: does ``workers`` buy what it promises? run --scan with 200 ms added to every request.

Floor: the latency bound (files x 4 requests x 200 ms / workers): with that much latency a
client's CPU and shape are all that can keep it from the bound. Measured at 32 and 64 workers.
"""

from __future__ import annotations

from bench import corpus, syncproc
from bench.report import Floor, Result, Target
from bench.sandbox import SandboxProcess
from bench.session import Scope

NAME = "scale"
LATENCY_SECONDS = 0.2
REQUESTS_PER_FILE = 4
WORKER_COUNTS = (32, 64)
TARGET_FRACTION = 0.9


def run(scope: Scope) -> Result:
    files = scope.sizes.scale_files
    sandbox = SandboxProcess(scope, latency_seconds=LATENCY_SECONDS)
    reached: dict[int, float] = {}
    details = []
    for workers in WORKER_COUNTS:
        folder = scope.subdir(f"w{workers}")
        corpus.write_small_files(folder, files)
        config = syncproc.write_config(
            scope.path(f"w{workers}.yaml"),
            sandbox,
            [folder],
            state_dir=scope.path(f"w{workers}-state"),
            workers=workers,
        )
        scan = syncproc.run_scan(scope, sandbox, config)
        bound = files * REQUESTS_PER_FILE * LATENCY_SECONDS / workers
        reached[workers] = bound / scan.seconds
        details.append(
            f"workers {workers}: {files} files in {scan.seconds:.1f} s, latency bound "
            f"{bound:.1f} s, {reached[workers]:.2f} of the bound; CPU {scan.cpu_seconds:.1f} s"
        )
    worst = min(reached.values())
    return Result(
        NAME,
        worst,
        "x of the bound (worst)",
        Floor("latency bound", 1.0, "x"),
        targets=[
            Target(f"workers {w} >= {TARGET_FRACTION} x bound ({f:.2f})", f >= TARGET_FRACTION)
            for w, f in reached.items()
        ],
        details=details,
    )
