"""Which bandwidth limit is in force (issue 16): the API's, the timetable's, or the config's.

Owns the decision (``BandwidthPlan.decide``), the API's override, a SIGHUP's new ``bandwidth``,
and the ``bandwidth`` object of the control API's status (docs/control.md). Pure apart from the
clock: the daemon applies the decision to the throttle and an ``off`` to its pause.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from florasync.config.config import BandwidthConfig
from florasync.config.timetable import Rate

Source = Literal["config", "schedule", "api"]
LOCALTIME = Path("/etc/localtime")


@dataclass(frozen=True, slots=True)
class Decision:
    """The rate in force, where it comes from, and the timetable's next change (None: none
    within 8 days, or the API's limit holds until it is cleared)."""

    rate: Rate
    source: Source
    next_change: tuple[datetime, Rate] | None


def local_now() -> datetime:
    """Now on this machine's clock, in its time zone with its DST rules when they can be read
    (``$TZ`` or /etc/localtime), so a next change across a DST switch is at the right instant."""
    zone = _local_zone()
    return datetime.now(zone) if zone is not None else datetime.now().astimezone()


class BandwidthPlan:
    """Decides the limit from the config's ``bandwidth`` and the API's override; thread-safe."""

    def __init__(self, bandwidth: BandwidthConfig, now: Callable[[], datetime] = local_now) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._bandwidth = bandwidth
        self._override: Rate | None = None

    @property
    def override(self) -> Rate | None:
        return self._override

    def decide(self) -> Decision:
        """What is in force now: the API's limit, else the schedule's line, else ``limit``."""
        with self._lock:
            bandwidth, override = self._bandwidth, self._override
        if override is not None:
            return Decision(override, "api", None)
        now = self._now()
        timetable = bandwidth.timetable()
        line = timetable.line_at(now)
        next_change = timetable.next_change(now, bandwidth.limit)
        if line is None:
            return Decision(bandwidth.limit, "config", next_change)
        return Decision(line.rate, "schedule", next_change)

    def set_override(self, rate: Rate | None) -> None:
        """The API sets a limit until it is cleared (None: back to the config and timetable)."""
        with self._lock:
            self._override = rate

    def reconfigure(self, bandwidth: BandwidthConfig) -> None:
        """A SIGHUP's new ``bandwidth``; the API's override stays."""
        with self._lock:
            self._bandwidth = bandwidth


def describe(decision: Decision) -> dict[str, Any]:
    """The ``bandwidth`` object of the status JSON (docs/control.md): ``limit_bytes_per_second``
    null when unlimited (0 when off), ``limit`` as text, ``source``, ``next_change``."""
    change = decision.next_change
    return {
        "limit_bytes_per_second": decision.rate.bytes_per_second,
        "limit": decision.rate.describe(),
        "source": decision.source,
        "next_change": None
        if change is None
        else {"at": _utc(change[0]), "limit": change[1].describe()},
    }


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.cache
def _local_zone() -> tzinfo | None:
    """The local zone with its rules, or None (then the current offset is all that is known).
    A zone that disagrees with the C library's idea of local time now is not used."""
    name = os.environ.get("TZ", "").removeprefix(":")
    try:
        if name:
            zone = ZoneInfo(name)
        else:
            with LOCALTIME.open("rb") as data:
                zone = ZoneInfo.from_file(data)
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return None
    now = datetime.now().astimezone()
    return zone if now.utcoffset() == now.astimezone(zone).utcoffset() else None
