"""Fleet mode under faults (issue 14): daemons SIGKILLed and restarted at random moments, and the
journal's PostgreSQL restarted and stopped under running daemons; each content still lands once,
attached once per project."""

from __future__ import annotations

import functools
import itertools
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from .fleetenv import Host, claims_held, configure, database_now, host_counts, make_fleet
from .helpers import LONG_TIMEOUT, assert_exactly_once, free_port, healthz, sha256_of, wait_until
from .pgcluster import PgCluster, create_database, drop_database, running_cluster
from .syncenv import SyncEnv

KILL_PACE_SECONDS = (1.0, 3.0)
BUSY_TIMEOUT = 30.0  # how long a kill waits for its victim to hold a claim (work in flight)
OUTAGE_SECONDS = 20.0
IN_FLIGHT_SECONDS = 1.0  # a POST whose intent was committed just before the shutdown may land


@pytest.fixture
def database(postgres: PgCluster) -> Iterator[str]:
    """A fresh, empty database in the session's cluster; its URL."""
    url = create_database(postgres)
    yield url
    drop_database(postgres, url)


@dataclass
class Daemons:
    """One ``run`` daemon per host; a host's process is replaced when it is killed."""

    hosts: list[Host]
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)  # database clock at each (re)start

    def start(self) -> Daemons:
        for host in self.hosts:
            self.since[host.host_id] = database_now(host.url)
            self.procs[host.host_id] = host.popen("run")
        return self

    def at_work(self, host: Host) -> int:
        """Claims the host's current process made and holds (its predecessor's do not count)."""
        return claims_held(host.url, host.host_id, self.since[host.host_id])

    def kill_and_restart(self, host: Host) -> None:
        """SIGKILL the host's daemon (it must still be running) and start it again at once."""
        proc = self.procs[host.host_id]
        assert proc.poll() is None, f"{host.host_id} exited by itself:\n{_tail(host)}"
        proc.kill()
        proc.wait(timeout=LONG_TIMEOUT)
        self.since[host.host_id] = database_now(host.url)
        self.procs[host.host_id] = host.popen("run")

    def stop(self) -> dict[str, int]:
        """SIGTERM every daemon and wait for each; the exit codes (a hung one is killed)."""
        for proc in self.procs.values():
            proc.terminate()
        codes = {}
        for host_id, proc in self.procs.items():
            try:
                codes[host_id] = proc.wait(timeout=LONG_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[host_id] = proc.wait()
        return codes


def _tail(host: Host) -> str:
    return host.log.read_text(errors="replace")[-4000:]


def _fill(env: SyncEnv, count: int, copies: int, seed: str) -> None:
    """``count`` files of distinct bytes over both folders and several subdirectories, and
    ``copies`` files of the first folder copied into the second (one content, two projects)."""
    rng = random.Random(seed)
    for n in range(count):
        env.add(n % 2, f"d{n % 5}/s{n % 3}/f{n:04d}.png", size=rng.randrange(1_000, 40_000))
    (env.folders[1] / "copies").mkdir(parents=True, exist_ok=True)
    for n in range(copies):
        name = f"d{2 * n % 5}/s{2 * n % 3}/f{2 * n:04d}.png"
        shutil.copy(env.folders[0] / name, env.folders[1] / f"copies/c{n:02d}.png")


def _wanted(env: SyncEnv) -> int:
    """(content, project) pairs on disk: the attachments FLORA should end with."""
    return len({(sha256_of(path), project) for path, project in env.expected().items()})


def _attached(env: SyncEnv) -> int:
    state = env.sb.state(requests=False)
    return sum(len(nodes) for nodes in state["nodes"].values())


def _kill_when_busy(daemons: Daemons, victim: Host, due: float, n: int) -> int:
    """Wait until ``due`` and until ``victim``'s process holds a claim, then kill -9 and
    restart it; the claims it held just before."""
    held: int = wait_until(
        lambda: time.monotonic() >= due and daemons.at_work(victim),
        timeout=BUSY_TIMEOUT,
        interval=0.05,
        message=f"kill {n}: {victim.host_id} holding a claim (work in flight)",
    )
    daemons.kill_and_restart(victim)
    return held


def _run_with_kills(
    env: SyncEnv,
    url: str,
    *,
    hosts: int,
    files: int,
    copies: int,
    kills: int,
    idempotency: str,
    pace: tuple[float, float] = KILL_PACE_SECONDS,
    latency_seconds: float = 0.02,
    workers: int = 4,
) -> None:
    """The kill -9 scenario: daemons on a filled folder pair, ``kills`` random kills with
    restarts, then every file must land exactly once and every daemon stop cleanly (exit 0, no
    traceback in its log)."""
    env.sb.faults.update(idempotency=idempotency, latency_seconds=latency_seconds)
    _fill(env, files, copies, seed=f"fleet-kills-{idempotency}")
    total = _wanted(env)
    rng = random.Random(f"fleet-kills-{idempotency}-{hosts}")
    daemons = Daemons(make_fleet(env, url, hosts, lease_seconds=3.0, workers=workers)).start()
    held: list[int] = []
    started = time.monotonic()
    try:
        for n in range(1, kills + 1):
            due = time.monotonic() + rng.uniform(*pace)
            held.append(_kill_when_busy(daemons, rng.choice(daemons.hosts), due, n))
        left = total - _attached(env)
        wait_until(
            lambda: _attached(env) >= total,
            timeout=LONG_TIMEOUT * 2,
            interval=0.25,
            message=f"{total} attachments",
        )
    finally:
        codes = daemons.stop()
    for host in daemons.hosts:
        assert codes[host.host_id] == 0, _tail(host)
        assert "Traceback" not in host.log.read_text(errors="replace"), _tail(host)
    assert_exactly_once(env.sb.state(), env.expected())
    split = {h: c["uploaded"] for h, c in sorted(host_counts(url).items())}
    print(
        f"{idempotency}: {len(held)} kills in {time.monotonic() - started:.1f} s, claims held "
        f"at each: {held}; {left} of {total} attachments still to do after the last kill; "
        f"uploads per host (counts a kill lost are missing): {split}"
    )
    assert len(held) == kills
    assert left > 0, "the sync finished before the last kill"


@pytest.mark.slow
@pytest.mark.parametrize("idempotency", ["duplicate", "replay"])
def test_daemons_killed_at_random_moments_sync_each_file_once(
    env: SyncEnv, database: str, idempotency: str
) -> None:
    """Three daemons on 600 files (10 of them also in the other project), one of them SIGKILLed
    while it holds a claim and restarted every 1-3 s, 22 times: one asset per content, attached
    once per project, and every daemon exits 0 on SIGTERM with no traceback logged."""
    _run_with_kills(
        env,
        database,
        hosts=3,
        files=600,
        copies=10,
        kills=22,
        idempotency=idempotency,
        latency_seconds=0.15,  # work in flight for longer than the 22 kills take
        workers=2,
    )


def test_two_daemons_killed_four_times_sync_each_file_once(env: SyncEnv, database: str) -> None:
    """Two daemons on 150 files, SIGKILLed at work and restarted four times: one asset per
    content, attached once per project, and both exit 0 on SIGTERM."""
    _run_with_kills(
        env, database, hosts=2, files=150, copies=4, kills=4, idempotency="replay", pace=(0.5, 1.5)
    )


# -- the database restarted, then stopped, under running daemons ------------------------------


def _with_health(hosts: list[Host]) -> dict[str, int]:
    """Give each host a metrics listener of its own; their ports."""
    ports = {}
    for host in hosts:
        ports[host.host_id] = free_port()
        configure(host, metrics={"listen": f"127.0.0.1:{ports[host.host_id]}"})
    return ports


def _wait_health(ports: dict[str, int], status: int) -> dict[str, str]:
    """Wait until every host's /healthz answers ``status``; what each said."""
    said = {}
    for host_id, port in ports.items():
        wait_until(
            functools.partial(_answers, port, status),
            timeout=LONG_TIMEOUT,
            interval=0.2,
            message=f"{host_id}: /healthz {status}",
        )
        said[host_id] = healthz(port)[1]
    return said


def _answers(port: int, status: int) -> bool:
    return healthz(port)[0] == status


def _posts_accepted(env: SyncEnv, route: str, start: float, end: float) -> int:
    return sum(
        1
        for r in env.sb.state()["requests"]
        if r["route"] == route and start < r["t"] < end and 200 <= (r["status"] or 0) < 300
    )


@pytest.mark.slow
def test_daemons_ride_out_a_database_restart_and_a_20_s_stop(env: SyncEnv) -> None:
    """Two daemons at work while their PostgreSQL restarts (fast), then stops for 20 s: every
    file still lands exactly once; while it is down /healthz says 503 naming the journal,
    ``status`` says so in a line without a traceback, and FLORA accepts no POST /assets; /healthz
    is 200 again after, and both daemons exit 0 on SIGTERM."""
    env.sb.faults.update(latency_seconds=0.1)
    _fill(env, 300, copies=6, seed="fleet-outage")
    total = _wanted(env)
    with running_cluster() as cluster:  # its own: stopping it disturbs no other test
        url = create_database(cluster)
        hosts = make_fleet(env, url, 2, lease_seconds=3.0)
        ports = _with_health(hosts)
        daemons = Daemons(hosts).start()
        try:
            wait_until(lambda: _attached(env) >= total // 5, message="a fifth attached")
            cluster.restart("fast")
            resumed = _attached(env) + 20
            wait_until(lambda: _attached(env) >= resumed, message="work going on after restart")
            cluster.stop("fast")
            down = time.monotonic()
            unhealthy = _wait_health(ports, 503)
            status = hosts[0].cli("status")
            wait_until(
                lambda: time.monotonic() >= down + OUTAGE_SECONDS,
                timeout=OUTAGE_SECONDS * 2,
                interval=0.5,
                message="the end of the outage",
            )
            waiting = total - _attached(env)
            up = time.monotonic()
            cluster.start()
            wait_until(lambda: _attached(env) >= total, timeout=LONG_TIMEOUT * 2, interval=0.25)
            _wait_health(ports, 200)
        finally:
            codes = daemons.stop()
        for host in hosts:
            assert codes[host.host_id] == 0, _tail(host)
        password = cluster.password
    assert_exactly_once(env.sb.state(), env.expected())
    for host_id, said in unhealthy.items():
        assert "journal" in said, f"{host_id}: {said}"
        assert password not in said
    output = status.stdout + status.stderr
    print(f"status while the database was down (exit {status.returncode}):\n{output}")
    assert "cannot reach the journal database postgresql://127.0.0.1:" in output
    assert "Traceback" not in output
    assert password not in output
    assert waiting > 0, "everything was attached before the database stopped"
    assert _posts_accepted(env, "POST /assets", down + IN_FLIGHT_SECONDS, up) == 0
    print(
        f"{waiting} of {total} attachments waited out the outage; /healthz said {unhealthy}; "
        f"POST /assets accepted in its first {IN_FLIGHT_SECONDS} s: "
        f"{_posts_accepted(env, 'POST /assets', down, down + IN_FLIGHT_SECONDS)}"
    )


# -- the fleet's 429 listener across a database restart ---------------------------------------


def _heard(hosts: list[Host]) -> int:
    """Times a host logged hearing another host's 429 (its NOTIFY listener)."""
    return sum(h.log.read_text(errors="replace").count("saw a 429") for h in hosts)


def _a_429_is_heard(env: SyncEnv, hosts: list[Host], label: str) -> None:
    """429s on POST /assets, one at a time and each for a new file, until one host hears of
    another's (a 429 that comes while a listener reconnects is read with the gates row)."""
    before = _heard(hosts)
    files = itertools.count()

    def heard() -> bool:
        if _heard(hosts) > before:
            return True
        if not env.sb.faults.to_dict()["fail_next"]:  # the last 429 was sent: one more
            env.sb.faults.fail_next("POST /assets", status=429, retry_after=1)
            env.add(0, f"{label}{next(files)}.png")
        return False

    wait_until(heard, timeout=12.0, interval=0.5, message=f"a 429 heard across the fleet ({label})")


@pytest.mark.slow
def test_a_429_is_still_heard_across_the_fleet_after_a_database_restart(env: SyncEnv) -> None:
    """After the journal's PostgreSQL restarts under two daemons, a 429 seen by one host is still
    heard by the other (NOTIFY), as before the restart, and no daemon logs a traceback."""
    with running_cluster() as cluster:
        url = create_database(cluster)
        hosts = make_fleet(env, url, 2, lease_seconds=30.0)  # heartbeats 7.5 s apart: NOTIFY only
        daemons = Daemons(hosts).start()
        try:
            _a_429_is_heard(env, hosts, "before")
            cluster.restart("fast")
            _a_429_is_heard(env, hosts, "after")
        finally:
            codes = daemons.stop()
    assert codes == {"host0": 0, "host1": 0}
    for host in hosts:
        assert "Traceback" not in host.log.read_text(errors="replace"), _tail(host)
