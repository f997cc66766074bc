"""What the daemon is told to do besides syncing (issue 16): pause, resume, the bandwidth limit.

Owns the decision, once a second and at once on a request, of whether requests to FLORA are held
(a pause on record in the state dir, or an ``off`` in the bandwidth timetable) and which limit
the upload throttle has (the API's, the timetable's, or the config's). The pause is written to
the state dir before it is applied, so it survives a restart; the file is also read back every
tick, so ``florasync pause`` reaches a daemon that serves no control API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from florasync.flora.throttle import Throttle
from florasync.service.bandwidth import BandwidthPlan, Decision
from florasync.state import pause
from florasync.sync.pipeline import Pipeline

log = logging.getLogger(__name__)


class Steering:
    """Applies pauses and limits to one pipeline and its throttle; safe from any thread."""

    def __init__(
        self,
        state_dir: Path,
        pipeline: Pipeline,
        throttle: Throttle,
        plan: BandwidthPlan,
        *,
        cut_uploads: bool,
        changed: Callable[[], None] = lambda: None,
        note: Callable[[str, str], None] = lambda kind, message: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state_dir = state_dir
        self._pipeline = pipeline
        self._throttle = throttle
        self.plan = plan
        self.cut_uploads = cut_uploads
        self._changed = changed
        self._note = note
        self._clock = clock
        self._lock = threading.RLock()
        self._stamp: tuple[int, int] | bool | None = False  # False: never read
        self._pause: pause.Pause | None = None
        self._decision: Decision | None = None
        self._held: str | None = None

    # -- requests (the API, the CLI through the file) --------------------------------------------

    def pause(self, seconds: float | None, by: str) -> pause.Pause:
        """Pause now, until resumed or for ``seconds``; recorded before it is applied."""
        now = self._clock()
        until = None if seconds is None else now + seconds
        reason = "paused until resumed" if until is None else f"paused until {_iso(until)}"
        record = pause.Pause(since=now, until=until, by=by, reason=reason)
        with self._lock:
            pause.write(self._state_dir, record)
            self._stamp = pause.stamp(self._state_dir)
            self._pause = record
            self._apply()
        self._note("paused", f"{reason} (by {by})")
        return record

    def resume(self, by: str) -> None:
        with self._lock:
            pause.clear(self._state_dir)
            self._stamp = None
            was = self._pause
            self._pause = None
            self._apply()
        if was is not None:
            self._note("resumed", f"resumed (by {by})")

    def set_limit(self, rate: Any) -> Decision:
        """The API's limit (a timetable ``Rate``), or None: back to the config and timetable."""
        with self._lock:
            self.plan.set_override(rate)
            self._apply()
            assert self._decision is not None  # noqa: S101 -- _apply sets it
            return self._decision

    def reconfigure(self, bandwidth: Any, *, cut_uploads: bool) -> None:
        """SIGHUP: the new config's ``bandwidth`` and ``on_pause``."""
        with self._lock:
            self.plan.reconfigure(bandwidth)
            self.cut_uploads = cut_uploads
            self._apply()

    # -- the tick -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Read the pause file again if it changed, end a pause whose time is up, follow the
        timetable."""
        with self._lock:
            stamp = pause.stamp(self._state_dir)
            if stamp != self._stamp:
                self._stamp = stamp
                before = self._pause
                self._pause = pause.read(self._state_dir)
                if self._pause != before and self._pause is not None:
                    self._note("paused", f"{self._pause.reason} (by {self._pause.by})")
            if self._pause is not None and not self._pause.in_force(self._clock()):
                pause.clear(self._state_dir)
                self._stamp, self._pause = None, None
                self._note("resumed", "the pause is over")
            self._apply()

    # -- what is in force ---------------------------------------------------------------------

    @property
    def held(self) -> str | None:
        """Why requests are held now, or None."""
        return self._held

    def paused_view(self) -> dict[str, Any]:
        """The ``paused`` object of the status JSON."""
        with self._lock:
            record, decision = self._pause, self._decision
        if record is not None:
            until = None if record.until is None else _iso(record.until)
            return {"paused": True, "until": until, "reason": record.reason, "by": record.by}
        if decision is not None and decision.rate.off:
            change = decision.next_change
            until = change[0].astimezone(UTC).isoformat() if change else None
            return {
                "paused": True,
                "until": until,
                "reason": "bandwidth schedule: off",
                "by": "schedule",
            }
        return {"paused": False, "until": None, "reason": None, "by": None}

    def bandwidth_view(self) -> dict[str, Any]:
        from florasync.service import bandwidth

        with self._lock:
            decision = self._decision or self.plan.decide()
        return bandwidth.describe(decision)

    def _apply(self) -> None:
        decision = self.plan.decide()
        self._decision = decision
        self._throttle.set_rate(None if decision.rate.off else decision.rate.bytes_per_second)
        why = None
        if self._pause is not None:
            why = f"{self._pause.reason} (by {self._pause.by})"
        elif decision.rate.off:
            why = "paused by the bandwidth schedule"
        if why == self._held:
            return
        self._held = why
        if why is None:
            self._pipeline.release()
            log.info("requests to FLORA resume")
        else:
            self._pipeline.hold(why, cut_uploads=self.cut_uploads)
            log.info("requests to FLORA held: %s", why)
        self._changed()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
