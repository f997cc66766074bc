"""fleet: the bulk workload through one host on SQLite, one on PostgreSQL, and three hosts
sharing one PostgreSQL database (issue 14): 64 KiB files, 50 ms added to every request, 8
workers per host, ``run --scan`` processes started at once, timed until the last one exits.

Floor: one host on PostgreSQL in the same run, so ``ratio`` is the 3-host throughput over the
1-host one. Each run's latency bound (files x 4 requests x 50 ms / (hosts x workers)) and the CPU
the machine had (florasync, the sandbox and PostgreSQL over the cores) are details: three hosts,
the sandbox and the database on 2 cores run out of CPU before they reach the latency bound.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests import pgcluster
from tests.pgcluster import PgCluster

from bench import bulk, corpus, measure, syncproc
from bench.report import Floor, Result, Target
from bench.sandbox import SandboxProcess
from bench.session import Scope

NAME = "fleet"
HOSTS = 3
FOLDER_ID = "bench-shared"  # one explicit id: every host's files are the same files
SPEEDUP_TARGET = 2.5
POSTGRES_FACTOR = 1.15
CORES = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Variant:
    """One way the workload was synced, and what it took."""

    label: str
    hosts: int
    files: int
    seconds: float
    florasync_cpu: float
    sandbox_cpu: float
    postgres_cpu: float
    machine_busy: float
    requests_from: float
    requests_until: float
    ready_assets: int
    attachments: int
    uploads: dict[str, int]

    @property
    def bound(self) -> float:
        """The latency bound: no client beats it without skipping a request."""
        per_file = bulk.REQUESTS_PER_FILE * bulk.LATENCY_SECONDS
        return self.files * per_file / (self.hosts * bulk.WORKERS)

    @property
    def cpu(self) -> float:
        return self.florasync_cpu + self.sandbox_cpu + self.postgres_cpu

    @property
    def machine_floor(self) -> float:
        """The shortest run this machine allowed: the latency bound, or all the CPU the run
        used spread perfectly over the cores, whichever is longer."""
        return max(self.bound, self.cpu / CORES)

    @property
    def is_exactly_once(self) -> bool:
        return self.ready_assets == self.attachments == self.files


def run(scope: Scope) -> Result:
    files = scope.sizes.fleet_files
    with pgcluster.running_cluster() as cluster:
        sqlite = _variant(scope, "sqlite", files, 1, None)
        one = _variant(scope, "postgres-1", files, 1, cluster)
        three = _variant(scope, f"postgres-{HOSTS}", files, HOSTS, cluster)
    return _result(files, sqlite, one, three)


def _result(files: int, sqlite: Variant, one: Variant, three: Variant) -> Result:
    speedup = one.seconds / three.seconds
    slowdown = one.seconds / sqlite.seconds
    variants = (sqlite, one, three)
    return Result(
        NAME,
        files / three.seconds,
        f"files/s ({HOSTS} hosts)",
        Floor("1 host on PostgreSQL", files / one.seconds, "files/s"),
        targets=[
            Target(f">= {SPEEDUP_TARGET} x 1 host ({speedup:.2f}x)", speedup >= SPEEDUP_TARGET),
            Target(
                f"1 host on PostgreSQL <= {POSTGRES_FACTOR} x SQLite ({slowdown:.2f}x)",
                slowdown <= POSTGRES_FACTOR,
            ),
            Target(
                "each file uploaded and attached once in every run",
                all(v.is_exactly_once for v in variants),
            ),
        ],
        details=[
            f"{HOSTS} hosts {three.seconds:.1f} s vs 1 host {one.seconds:.1f} s on PostgreSQL, "
            f"1 host {sqlite.seconds:.1f} s on SQLite; {files} x 64 KiB files, sandbox latency "
            f"{bulk.LATENCY_SECONDS * 1000:.0f} ms per request, {bulk.WORKERS} workers per host",
            *(_describe(v) for v in variants),
            f"the most {HOSTS} hosts could reach on this machine: {one.seconds:.1f} s / "
            f"{three.machine_floor:.1f} s = {one.seconds / three.machine_floor:.2f}x",
            "uploads per host: "
            + ", ".join(f"{host} {n}" for host, n in sorted(three.uploads.items())),
        ],
    )


def _describe(v: Variant) -> str:
    return (
        f"{v.label}: {v.seconds:.1f} s (requests from {v.requests_from:.1f} to "
        f"{v.requests_until:.1f} s), latency bound {v.bound:.1f} s ({v.bound / v.seconds:.2f} "
        f"of it); CPU florasync {v.florasync_cpu:.1f} s + sandbox {v.sandbox_cpu:.1f} s + "
        f"PostgreSQL {v.postgres_cpu:.1f} s = {v.cpu / (v.seconds * CORES):.0%} of {CORES} cores "
        f"(the machine was {v.machine_busy:.0%} busy); "
        f"{v.ready_assets} ready assets, {v.attachments} attachments"
    )


def _variant(
    scope: Scope, label: str, files: int, hosts: int, cluster: PgCluster | None
) -> Variant:
    """Sync ``files`` new files with ``hosts`` processes on a fresh sandbox and database."""
    with contextlib.closing(Scope(scope.dir, label, scope.sizes)) as here:
        sandbox = SandboxProcess(here, latency_seconds=bulk.LATENCY_SECONDS)
        folder = here.subdir("folder")
        corpus.write_small_files(folder, files, bulk.FILE_BYTES)
        url = None if cluster is None else pgcluster.create_database(cluster)
        configs = [_config(here, sandbox, folder, f"host{n}", url) for n in range(hosts)]
        before = _Counters.read(sandbox, cluster)
        started, seconds, scans = _run_at_once(here, sandbox, configs)
        used = _Counters.read(sandbox, cluster) - before
        state = sandbox.state(requests=True)
        arrived = [float(r["t"]) - started for r in state["requests"]]
        return Variant(
            label=label,
            hosts=hosts,
            files=files,
            seconds=seconds,
            florasync_cpu=sum(s.cpu_seconds for s in scans),
            sandbox_cpu=used.sandbox_cpu,
            postgres_cpu=used.postgres_cpu,
            machine_busy=used.busy_ticks / used.total_ticks,
            requests_from=min(arrived),
            requests_until=max(arrived),
            ready_assets=sum(1 for a in state["assets"] if a["status"] == "ready"),
            attachments=sum(len(nodes) for nodes in state["nodes"].values()),
            uploads=_uploads(url),
        )


def _config(
    scope: Scope, sandbox: SandboxProcess, folder: Path, host_id: str, url: str | None
) -> Path:
    """One host's config: its own host_id and state dir, the shared folder id, and the
    database's URL in a file (``run_scan`` passes no ``FLORASYNC_`` variable through)."""
    settings: dict[str, Any] = {"workers": bulk.WORKERS, "host_id": host_id}
    if url is not None:
        url_file = scope.path(f"{host_id}.database_url")
        url_file.touch(mode=0o600)
        url_file.write_text(url)
        settings["journal"] = {"url_file": str(url_file)}
    path = syncproc.write_config(
        scope.path(f"{host_id}.yaml"),
        sandbox,
        [folder],
        state_dir=scope.path(f"state-{host_id}"),
        **settings,
    )
    doc = yaml.safe_load(path.read_text())
    doc["folders"][0]["id"] = FOLDER_ID
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run_at_once(
    scope: Scope, sandbox: SandboxProcess, configs: list[Path]
) -> tuple[float, float, list[syncproc.ScanRun]]:
    """One ``run --scan`` per config, all started together: when they started (monotonic, the
    sandbox's request log's clock), the seconds from the first start to the last exit, and
    each run.

    Raises:
        RuntimeError: a run exited non-zero (the others are stopped).
    """
    with contextlib.ExitStack() as stack:
        own = [Scope(scope.dir, config.stem, scope.sizes) for config in configs]
        for sub in own:  # each run's output files, and its process stopped on the way out
            stack.callback(sub.close)
        pool = ThreadPoolExecutor(len(configs), thread_name_prefix=NAME)
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        started = time.monotonic()
        runs = [
            pool.submit(syncproc.run_scan, sub, sandbox, config)
            for sub, config in zip(own, configs, strict=True)
        ]
        scans = [future.result() for future in runs]
        return started, time.monotonic() - started, scans


@dataclass(frozen=True, slots=True)
class _Counters:
    """CPU counters read before and after a run: the sandbox's, the server's, the machine's."""

    sandbox_cpu: float
    postgres_cpu: float
    busy_ticks: int
    total_ticks: int

    @classmethod
    def read(cls, sandbox: SandboxProcess, cluster: PgCluster | None) -> _Counters:
        return cls(sandbox.cpu_seconds(), _postgres_cpu(cluster), *_machine_ticks())

    def __sub__(self, before: _Counters) -> _Counters:
        return _Counters(
            self.sandbox_cpu - before.sandbox_cpu,
            self.postgres_cpu - before.postgres_cpu,
            self.busy_ticks - before.busy_ticks,
            self.total_ticks - before.total_ticks,
        )


def _postgres_cpu(cluster: PgCluster | None) -> float:
    """CPU seconds of the server so far: the postmaster, the backends it has reaped, and its
    children still running (0 without a cluster)."""
    if cluster is None:
        return 0.0
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = sum(int(f) for f in fields[11:15]) / measure.CLOCK_TICKS  # utime..cstime, stat(5)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(_cpu_or_zero(int(child)) for child in children)


def _cpu_or_zero(pid: int) -> float:
    try:
        return measure.proc_cpu_seconds(pid)
    except FileNotFoundError:  # a backend that ended meanwhile: counted in cutime next time
        return 0.0


def _machine_ticks() -> tuple[int, int]:
    """All cores' busy and total ticks since boot (/proc/stat's ``cpu`` line, proc(5)): whether
    the processes of the other people on this machine took cores from the run."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    ticks = [int(t) for t in line.split()[1:9]]  # user .. steal (guest is inside user)
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def _uploads(url: str | None) -> dict[str, int]:
    """What each host's row says it uploaded ({} on SQLite)."""
    if url is None:
        return {}
    from tests.fleetenv import host_counts  # psycopg: an extra only this benchmark needs

    return {host: counts["uploaded"] for host, counts in host_counts(url).items()}
