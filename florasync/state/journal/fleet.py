"""This host's place in a fleet of hosts sharing one PostgreSQL journal (issue 14).

Owns the fleet tables' SQL (``hosts``, ``claims``, ``gates``: PostgreSQL only, one host on
SQLite needs none of them) and what they mean:

- a host is alive while its heartbeat (``hosts.heartbeat_at``, the database server's clock, so
  hosts' clocks may disagree) is younger than its lease;
- before the first request for a content, a host claims it in one statement; the claim holds
  while its host is alive, and another host takes it over once it is not (kill -9, power loss,
  a network split, SIGSTOP), bumping the claim's generation;
- every journal write of a claimed content checks that generation in its own transaction
  (``fence``, holding the claim row FOR SHARE so a takeover waits for the commit), and a worker
  checks its claim before each request (``check``): free while the last heartbeat is younger
  than the lease, a round trip to the database otherwise;
- a 429 seen by one host closes every host's rate gate: a shared deadline (``gates``) announced
  with NOTIFY, and read again with each heartbeat (a host that starts inside the window).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from florasync import __version__, errors
from florasync.state.journal.writer import Conn

log = logging.getLogger(__name__)

NOW = "extract(epoch from clock_timestamp())"  # the server's clock: one clock for the fleet
CHANNEL = "florasync_gate"
SAFETY = 0.8  # a claim is trusted locally for this share of the lease after a heartbeat
_RECONNECT_SECONDS = 1.0
PEERS_SECONDS = 1.0  # how often the hosts alive are counted (``prefers``, ``peers``)
_COUNTED = ("uploaded", "attached", "failed")  # outcomes counted per host (in this order)

_ALIVE = (  # the host of claim c is alive (its heartbeat within its lease, not stopped)
    "EXISTS (SELECT 1 FROM hosts h WHERE h.host_id = c.host_id AND h.stopped_at IS NULL"
    f" AND h.heartbeat_at > {NOW} - h.lease_seconds)"
)
_CLAIM = (
    "INSERT INTO claims AS c (workspace_id, digest, host_id, generation, held, claimed_at)"
    f" VALUES (?, ?, ?, 1, true, {NOW}) ON CONFLICT (workspace_id, digest) DO UPDATE SET"
    " host_id = excluded.host_id, generation = c.generation + 1, held = true,"
    " claimed_at = excluded.claimed_at"
    f" WHERE NOT c.held OR c.host_id = excluded.host_id OR NOT {_ALIVE}"
    " RETURNING generation"
)
_HEARTBEAT = (
    "INSERT INTO hosts AS h (host_id, pid, hostname, version, lease_seconds, started_at,"
    f" heartbeat_at) VALUES (?, ?, ?, ?, ?, {NOW}, {NOW}) ON CONFLICT (host_id) DO UPDATE SET"
    " pid = excluded.pid, hostname = excluded.hostname, version = excluded.version,"
    " lease_seconds = excluded.lease_seconds, heartbeat_at = excluded.heartbeat_at,"
    " stopped_at = NULL"
)


@dataclass(slots=True)
class _Held:
    generation: int
    lost: str | None = None  # why the claim is gone (a takeover seen by a write or a check)


class Fleet:
    """This host (``host_id``) in the fleet of ``backend``'s database; ``join`` before use.

    ``on_gate(seconds)`` closes this host's rate gate when another host saw a 429.
    """

    def __init__(
        self,
        backend: Any,
        *,
        host_id: str,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self.host_id = host_id
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._held: dict[tuple[str, str], _Held] = {}
        self._lock = threading.Lock()
        self._beat_lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[Any] = []
        self._deadline = 0.0  # monotonic: until then our claims are ours without asking
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.on_gate: Callable[[float], None] | None = None
        self.on_fatal: Callable[[str], None] | None = None
        self.trouble: str | None = None  # why the last heartbeat failed (health, status)
        self.peers = 0  # other hosts alive at the last heartbeat (0: this host works alone)
        self._rank = (0, 1)  # this host's place among the hosts alive, and their number
        self._counts: dict[str, int] = {}  # outcomes not yet added to this host's row

    # -- membership ---------------------------------------------------------------------------

    def join(self) -> Fleet:
        """Say this host is alive and drop the claims a previous process of this host left
        (the run lock proves that process is gone); start the heartbeat and the listener."""
        self._beat()
        self._count_peers()
        released = self._conn().execute(
            "UPDATE claims SET held = false WHERE host_id = ? AND held", (self.host_id,)
        )
        if released.rowcount:
            log.info("released %d claim(s) left by an earlier run of this host", released.rowcount)
        self._spawn("florasync-heartbeat", self._heartbeat_loop)
        self._spawn("florasync-fleet-gate", self._listen_loop)
        return self

    def leave(self) -> None:
        """Stop the threads, release every claim, and say this host stopped (best effort: a
        database that is gone forgets us by the lease)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        with contextlib.suppress(errors.JournalError, self._backend.error):
            self._write_counts()
            conn = self._conn()
            conn.execute(
                "UPDATE claims SET held = false WHERE host_id = ? AND held", (self.host_id,)
            )
            conn.execute(f"UPDATE hosts SET stopped_at = {NOW} WHERE host_id = ?", (self.host_id,))
        with self._lock:
            self._held.clear()
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()

    # -- claims -------------------------------------------------------------------------------

    def claim(self, workspace_id: str, digest: str) -> int:
        """Claim the content for this host; its generation.

        Raises:
            errors.ClaimedElsewhereError: a live host holds it.
            errors.JournalError: the database cannot be reached.
        """
        self._fresh()  # a claim by a host the others think dead would be worthless
        conn = self._conn()
        row = conn.execute(_CLAIM, (workspace_id, digest, self.host_id)).fetchone()
        if row is None:
            holder = conn.execute(
                "SELECT host_id FROM claims WHERE workspace_id = ? AND digest = ?",
                (workspace_id, digest),
            ).fetchone()
            raise errors.ClaimedElsewhereError(digest, holder[0] if holder else "?")
        generation = int(row[0])
        with self._lock:
            self._held[(workspace_id, digest)] = _Held(generation)
        if generation > 1:
            log.debug("claimed %s (generation %d)", digest[:12], generation)
        return generation

    def generation(self, workspace_id: str, digest: str) -> int:
        """The generation of this host's claim (raises LeaseLostError when it holds none)."""
        with self._lock:
            held = self._held.get((workspace_id, digest))
        if held is None:
            raise errors.LeaseLostError(digest, "this host does not hold it")
        if held.lost is not None:
            raise errors.LeaseLostError(digest, held.lost)
        return held.generation

    def check(self, workspace_id: str, digest: str) -> None:
        """Before a request: the claim is still this host's (no I/O while the heartbeat is
        fresh). Raises LeaseLostError, or JournalError when the database cannot tell."""
        self.generation(workspace_id, digest)
        if self._clock() < self._deadline:
            return
        self._revalidate()
        self.generation(workspace_id, digest)

    def fence(self, conn: Conn, workspace_id: str, digest: str, generation: int) -> None:
        """Inside a write transaction: the claim is still ours at ``generation``; the row is
        held FOR SHARE until the commit, so a takeover waits for this write. Checked once per
        transaction and claim: the row stays locked until the commit."""
        checked: set[tuple[str, int]] | None = getattr(conn, "fenced", None)
        if checked is not None and (digest, generation) in checked:
            return
        row = conn.execute(
            "SELECT 1 FROM claims WHERE workspace_id = ? AND digest = ? AND host_id = ?"
            " AND generation = ? AND held FOR SHARE",
            (workspace_id, digest, self.host_id, generation),
        ).fetchone()
        if row is None:
            self._lose(workspace_id, digest, generation, "another host took it over")
            raise errors.LeaseLostError(digest, "another host took it over")
        if checked is not None:
            checked.add((digest, generation))

    def release(self, workspace_id: str, digest: str) -> Callable[[Conn], None] | None:
        """Forget the claim here; the write that releases it in the database (queued after the
        job's own writes), or None when there is nothing of ours to release."""
        with self._lock:
            held = self._held.pop((workspace_id, digest), None)
        if held is None or held.lost is not None:
            return None
        params = (workspace_id, digest, self.host_id, held.generation)

        def release(conn: Conn) -> None:
            conn.execute(
                "UPDATE claims SET held = false WHERE workspace_id = ? AND digest = ?"
                " AND host_id = ? AND generation = ?",
                params,
            )

        return release

    def _lose(self, workspace_id: str, digest: str, generation: int, why: str) -> None:
        with self._lock:
            held = self._held.get((workspace_id, digest))
            if held is not None and held.generation == generation and held.lost is None:
                held.lost = why
                log.warning("lost the claim on content %s: %s", digest[:12], why)

    # -- heartbeat ----------------------------------------------------------------------------

    def _fresh(self) -> None:
        if self._clock() >= self._deadline:
            self._revalidate()

    def _revalidate(self, *, beat: bool = False) -> None:
        """Heartbeat, then see which of our claims are still ours: a claim taken while our
        heartbeat was stale is lost; the rest are safe for 0.8 lease from the heartbeat.
        ``beat``: the heartbeat thread's turn; otherwise a worker whose trust ran out, which
        returns at once when another thread renewed it meanwhile."""
        with self._beat_lock:
            sent = self._clock()
            if not beat and sent < self._deadline:
                return  # another thread just did it
            self._beat()
            rows = self._conn().execute(
                "SELECT workspace_id, digest, generation FROM claims WHERE host_id = ? AND held",
                (self.host_id,),
            )
            ours = {(r[0], r[1]): int(r[2]) for r in rows}
            with self._lock:
                for key, held in self._held.items():
                    if held.lost is None and ours.get(key) != held.generation:
                        held.lost = "another host took it over while this host was not heard"
                        log.warning("lost the claim on content %s: %s", key[1][:12], held.lost)
                self._deadline = sent + self.lease_seconds * SAFETY

    def _beat(self) -> None:
        self._conn().execute(
            _HEARTBEAT,
            (self.host_id, os.getpid(), socket.gethostname(), __version__, self.lease_seconds),
        )

    def _count_peers(self) -> None:
        rows = self._conn().execute(
            "SELECT host_id FROM hosts WHERE host_id != ? AND stopped_at IS NULL"
            f" AND heartbeat_at > {NOW} - lease_seconds",
            (self.host_id,),
        )
        alive = sorted([self.host_id, *(r[0] for r in rows)])
        self._rank = alive.index(self.host_id), len(alive)
        self.peers = len(alive) - 1

    def prefers(self, digest: str) -> bool:
        """Whether this host is the one of the hosts alive that should go first for this
        content (a content's digest picks one): the others look at it a little later, when it
        is usually done, instead of all reaching for it at once. A preference, not an
        assignment: whoever claims first does the work."""
        rank, hosts = self._rank
        return hosts <= 1 or int(digest[:8], 16) % hosts == rank

    def note(self, outcome: str) -> None:
        """Count a file's outcome for this host's row (``status`` shows how work was spread);
        written with the next heartbeat."""
        if outcome in _COUNTED:
            with self._lock:
                self._counts[outcome] = self._counts.get(outcome, 0) + 1

    def _write_counts(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return
        try:
            self._conn().execute(
                "UPDATE hosts SET uploaded = uploaded + ?, attached = attached + ?,"
                " failed = failed + ? WHERE host_id = ?",
                (*(counts.get(name, 0) for name in _COUNTED), self.host_id),
            )
        except BaseException:
            with self._lock:  # counted again with the next heartbeat
                for name, n in counts.items():
                    self._counts[name] = self._counts.get(name, 0) + n
            raise

    def _heartbeat_loop(self) -> None:
        """Every lease/4 a heartbeat (and counters, the 429 window, the run lock); every
        second who else is alive, so a host that just joined is seen at once."""
        interval = max(0.5, self.lease_seconds / 4)
        next_beat = self._clock() + interval
        while not self._stop.wait(min(PEERS_SECONDS, interval)):
            try:
                self._count_peers()
                if self._clock() < next_beat:
                    continue
                next_beat = self._clock() + interval
                self._revalidate(beat=True)
                self._write_counts()
                self._read_gate()
                self._backend.keep_run_lock()
            except errors.HostIdInUseError as exc:
                log.critical("%s", exc)
                if self.on_fatal is not None:
                    self.on_fatal(str(exc))
                return
            except (errors.JournalError, self._backend.error) as exc:
                if self.trouble is None:
                    log.error(  # noqa: TRY400 -- the message says it all; no traceback
                        "fleet heartbeat failed: %s; claims wait for the database", exc
                    )
                self.trouble = str(exc)
                continue
            if self.trouble is not None:
                log.info("fleet heartbeat is back")
                self.trouble = None

    # -- the shared rate-limit window ---------------------------------------------------------

    def announce(self, seconds: float) -> None:
        """This host saw a 429: close every host's gate for ``seconds`` (best effort)."""
        try:
            conn = self._conn()
            conn.execute(
                f"INSERT INTO gates AS g (name, until_at, host_id) VALUES ('rate_limit', {NOW} + ?,"
                " ?) ON CONFLICT (name) DO UPDATE SET until_at = greatest(g.until_at,"
                " excluded.until_at), host_id = excluded.host_id",
                (seconds, self.host_id),
            )
            conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"{self.host_id} {seconds:.3f}"))
        except (errors.JournalError, self._backend.error) as exc:
            log.warning("could not tell the fleet about a 429: %s", exc)

    def _read_gate(self) -> None:
        row = (
            self._conn()
            .execute(f"SELECT until_at - {NOW} FROM gates WHERE name = 'rate_limit'")
            .fetchone()
        )
        if row is not None and row[0] is not None and row[0] > 0 and self.on_gate is not None:
            self.on_gate(float(row[0]))

    def _listen_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._backend.connect_raw()
            except errors.JournalError:
                self._stop.wait(_RECONNECT_SECONDS)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                self._read_gate()  # what was announced while we were not listening
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.5):
                        self._heard(note.payload)
            except (errors.JournalError, self._backend.error):  # the database went away
                self._stop.wait(_RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()

    def _heard(self, payload: str) -> None:
        host, _, seconds = payload.rpartition(" ")
        try:
            remaining = float(seconds)
        except ValueError:
            return
        if host != self.host_id and remaining > 0 and self.on_gate is not None:
            log.info("host %r saw a 429: no request for %.1f s", host, remaining)
            self.on_gate(remaining)

    # -- what status shows --------------------------------------------------------------------

    # -- connections and threads --------------------------------------------------------------

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._backend.connect()
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)


def read_overview(backend: Any) -> dict[str, Any]:
    """The hosts (alive or not, last heartbeat, claims held, what each did) and the claims held
    by hosts that are not alive (work waiting for a takeover), read without joining the fleet:
    one connection of its own, no write, no thread (``status``, ``check``). A database no run
    has migrated yet has no fleet: no hosts.

    Raises:
        errors.JournalError: the database cannot be reached.
    """
    conn = backend.connect()
    try:
        table = conn.execute("SELECT to_regclass('hosts')").fetchone()
        if table is None or table[0] is None:
            return {"hosts": [], "stale_claims": 0, "oldest_stale_claim_age": None}
        return _overview(conn)
    finally:
        conn.close()


_HOST_KEYS = ("host_id", "hostname", "pid", "version", "heartbeat_age", "alive", "stopped")


def _overview(conn: Conn) -> dict[str, Any]:
    hosts = conn.execute(
        f"SELECT h.host_id, h.hostname, h.pid, h.version, {NOW} - h.heartbeat_at,"
        f" h.stopped_at IS NULL AND h.heartbeat_at > {NOW} - h.lease_seconds,"
        " h.stopped_at IS NOT NULL, h.uploaded, h.attached, h.failed, (SELECT count(*)"
        " FROM claims c WHERE c.host_id = h.host_id AND c.held) FROM hosts h"
        " ORDER BY h.host_id"
    ).fetchall()
    keys = (*_HOST_KEYS, *_COUNTED)
    stale = conn.execute(
        f"SELECT count(*), max({NOW} - c.claimed_at) FROM claims c WHERE c.held AND NOT {_ALIVE}"
    ).fetchone()
    return {
        "hosts": [
            dict(zip(keys, row[:10], strict=True)) | {"claims": int(row[10])} for row in hosts
        ],
        "stale_claims": int(stale[0]) if stale else 0,
        "oldest_stale_claim_age": float(stale[1]) if stale and stale[1] is not None else None,
    }
