"""``bandwidth: {limit}`` end to end: the real CLI uploads to the sandbox, which records when each
piece of every upload body arrives; the rate it saw is measured (issue 16)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from florasync.sandbox.arrivals import Arrival

from .helpers import assert_exactly_once
from .syncenv import SyncEnv

MIB = 1 << 20
KIB = 1 << 10


@dataclass(frozen=True)
class Measured:
    """What the sandbox saw of the upload bodies."""

    total_bytes: int
    seconds: float  # first piece to last
    average: float  # bytes per second between them
    peak: int  # the most bytes that arrived within any one second

    def show(self, limit: int) -> str:
        return (
            f"{self.total_bytes / MIB:.1f} MiB in {self.seconds:.2f} s: average "
            f"{self.average / MIB:.3f} MiB/s ({100 * (self.average / limit - 1):+.1f} % of the "
            f"limit), busiest 1 s window {self.peak / MIB:.3f} MiB ({self.peak / limit:.2f}x)"
        )


def measure(arrivals: Sequence[Arrival], window: float = 1.0) -> Measured:
    """The average rate from the first piece to the last (the first piece's bytes were sent
    before it arrived, so they are left out) and the busiest sliding window."""
    assert len(arrivals) > 1, "the sandbox recorded no upload body"
    ordered = sorted(arrivals)
    total = sum(a.n for a in ordered)
    seconds = ordered[-1].t - ordered[0].t
    peak, in_window, end = 0, 0, 0
    for start in ordered:  # each window starts at a piece's arrival
        while end < len(ordered) and ordered[end].t < start.t + window:
            in_window += ordered[end].n
            end += 1
        peak = max(peak, in_window)
        in_window -= start.n
    return Measured(total, seconds, (total - ordered[0].n) / seconds, peak)


def _sync_at(env: SyncEnv, limit: str) -> Measured:
    env.write_config(bandwidth={"limit": limit})
    env.sb.record_arrivals()
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(env.sb.state(), env.expected())
    return measure(env.sb.arrivals())


def test_measure_finds_the_busiest_second() -> None:
    """The measure counts every piece in the busiest window, and the average between ends."""
    pieces = [Arrival(t, 1, 100) for t in (0.0, 0.5, 0.9, 1.0, 3.0)]
    measured = measure(pieces)
    assert measured.peak == 300
    assert measured.total_bytes == 500
    assert measured.average == pytest.approx(400 / 3.0)


def test_a_short_limited_scan_keeps_to_the_limit(env: SyncEnv) -> None:
    """About 2 MiB at 1MiB/s: every file synced once, and the sandbox saw about 1 MiB/s."""
    env.add(0, "big.png", 1200 * KIB)
    for n in range(4):
        env.add(n % 2, f"small-{n}.png", 200 * KIB)
    measured = _sync_at(env, "1MiB/s")
    print(f"\n1MiB/s, short: {measured.show(MIB)}")
    assert measured.seconds > 1.5
    assert measured.average == pytest.approx(MIB, rel=0.2)
    assert measured.peak <= 2 * MIB


@pytest.mark.slow
def test_a_limit_holds_within_ten_percent_over_thirty_seconds(env: SyncEnv) -> None:
    """65 MiB (8 MiB and 200 KiB files) at 2MiB/s: the average is within 10 % of the limit, no
    second carries more than twice it, and every file is synced once with its bytes."""
    for n in range(7):
        env.add(n % 2, f"render-{n}.png", 8 * MIB)
    for n in range(48):
        env.add(n % 2, f"still-{n:02d}.png", 200 * KIB)
    measured = _sync_at(env, "2MiB/s")
    print(f"\n2MiB/s, 65 MiB: {measured.show(2 * MIB)}")
    assert measured.seconds >= 30
    assert measured.average == pytest.approx(2 * MIB, rel=0.1)
    assert measured.peak <= 2 * 2 * MIB
