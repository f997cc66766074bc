"""rescan: ``run --scan`` over already-synced small files, whole process including start-up.

Floor: ``find DIR -type f -printf '%s %T@\\n'``, the least a scan can do (one stat per file).
The journal is seeded with every file's real stat and blake3 digest (what a first run records;
uploading 20,000 files first would take minutes), and one untimed ``run --scan`` confirms that
florasync takes every file as unchanged. Each command is timed several times; the minimum counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import corpus, measure, syncproc
from bench.report import Floor, Result, Target, number
from bench.sandbox import SandboxProcess, posts_after
from bench.session import Scope

NAME = "rescan"
FIND_FACTOR = {20_000: 8.0, 100_000: 5.0}  # issue 12: start-up weighs less in a larger tree


@dataclass(frozen=True, slots=True)
class Rescan:
    """The measurements of one tree size."""

    files: int
    best: syncproc.ScanRun
    times: list[float]
    warm_seconds: float
    find_seconds: float
    posts: int
    all_unchanged: bool

    @property
    def ratio(self) -> float:
        return self.best.seconds / self.find_seconds


def run(scope: Scope) -> Result:
    sandbox = SandboxProcess(scope)
    sizes = [_rescan(scope, sandbox, files) for files in scope.sizes.rescan_files]
    head = sizes[-1]  # the largest tree is the headline
    targets = []
    for r in sizes:
        at = f" at {r.files:,}" if len(sizes) > 1 else ""
        targets += [
            Target(f"<= {_factor(r.files):g} x find{at}", r.ratio <= _factor(r.files)),
            Target(f"0 mutating requests{at} ({r.posts} POST)", r.posts == 0),
            Target(f"all {r.files:,} unchanged", r.all_unchanged),
        ]
    return Result(
        NAME,
        head.best.seconds,
        "s",
        Floor("find", head.find_seconds, "s"),
        targets=targets,
        details=[_detail(r, scope.sizes.repeats) for r in sizes]
        + [f"last line: {head.best.summary}"],
    )


def _rescan(scope: Scope, sandbox: SandboxProcess, files: int) -> Rescan:
    folder = scope.subdir(f"folder{files}")
    paths = corpus.write_small_files(folder, files)
    state = scope.path(f"state{files}")
    corpus.seed_synced(
        state, folder, paths, workspace=sandbox.endpoints.workspace_id, project=sandbox.project
    )
    config = syncproc.write_config(
        scope.path(f"florasync{files}.yaml"), sandbox, [folder], state_dir=state
    )
    first_seq = len(sandbox.requests())
    warm = syncproc.run_scan(scope, sandbox, config)
    runs = [syncproc.run_scan(scope, sandbox, config) for _ in range(scope.sizes.repeats)]
    find = ["find", str(folder), "-type", "f", "-printf", "%s %T@\n"]
    find_best, _ = measure.best_of(scope.sizes.repeats + 2, lambda: measure.time_command(find))
    return Rescan(
        files=files,
        best=min(runs, key=lambda r: r.seconds),
        times=[r.seconds for r in runs],
        warm_seconds=warm.seconds,
        find_seconds=find_best,
        posts=len(posts_after(sandbox.requests(), first_seq)),
        all_unchanged=all(f"{files} unchanged" in r.summary for r in [warm, *runs]),
    )


def _detail(r: Rescan, repeats: int) -> str:
    return (
        f"{r.files:,} files of 256 B in {-(-r.files // corpus.FILES_PER_DIR)} directories: "
        f"florasync best of {repeats} {number(r.best.seconds)} s "
        f"({', '.join(f'{t:.2f}' for t in r.times)}; untimed first rescan "
        f"{r.warm_seconds:.2f} s; CPU {r.best.cpu_seconds:.2f} s, peak RSS "
        f"{r.best.max_rss_bytes >> 20} MiB), find best of {repeats + 2} "
        f"{number(r.find_seconds)} s, ratio {r.ratio:.1f}"
    )


def _factor(files: int) -> float:
    """The target for a tree of ``files``: that of the nearest size at or above it."""
    sizes = sorted(FIND_FACTOR)
    return FIND_FACTOR[next((n for n in sizes if n >= files), sizes[-1])]
