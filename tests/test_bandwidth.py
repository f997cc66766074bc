"""Which bandwidth limit is in force: the API's, the timetable's or the config's (issue 16)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from florasync.config.config import BandwidthConfig
from florasync.config.timetable import OFF, parse_rate
from florasync.service import bandwidth
from florasync.service.bandwidth import BandwidthPlan, Decision

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE: dict[str, object] = {
    "limit": "20MiB/s",
    "schedule": ["Mon-Fri 08:00-18:00 4MiB/s", "Sat-Sun off"],
}


class Now:
    """A wall clock moved by the test: Tuesday 2026-12-01 12:00 in Berlin to start with."""

    def __init__(self) -> None:
        self.at = datetime(2026, 12, 1, 12, 0, tzinfo=BERLIN)

    def __call__(self) -> datetime:
        return self.at


def plan(settings: Mapping[str, object], now: Now) -> BandwidthPlan:
    return BandwidthPlan(BandwidthConfig.model_validate(settings), now=now)


def test_the_schedule_decides_while_a_line_applies() -> None:
    """At noon on a weekday the office line is in force, until 18:00 (then the limit)."""
    decision = plan(OFFICE, Now()).decide()
    assert decision == Decision(
        parse_rate("4MiB/s"),
        "schedule",
        (datetime(2026, 12, 1, 18, 0, tzinfo=BERLIN), parse_rate("20MiB/s")),
    )


def test_the_config_decides_outside_the_schedule() -> None:
    """In the evening no line applies: the limit, until the next morning's line."""
    now = Now()
    now.at += timedelta(hours=8)
    decision = plan(OFFICE, now).decide()
    assert (decision.rate, decision.source) == (parse_rate("20MiB/s"), "config")
    assert decision.next_change == (
        datetime(2026, 12, 2, 8, 0, tzinfo=BERLIN),
        parse_rate("4MiB/s"),
    )


def test_no_bandwidth_config_means_unlimited_for_ever() -> None:
    """Without ``bandwidth`` nothing is limited and nothing will change."""
    decision = plan({}, Now()).decide()
    assert (decision.rate.bytes_per_second, decision.source, decision.next_change) == (
        None,
        "config",
        None,
    )


def test_the_api_overrides_until_cleared() -> None:
    """An API limit wins over the schedule and has no next change; cleared, the schedule is
    back."""
    office = plan(OFFICE, Now())
    office.set_override(parse_rate("1MiB/s"))
    assert office.decide() == Decision(parse_rate("1MiB/s"), "api", None)
    assert office.override == parse_rate("1MiB/s")
    office.set_override(None)
    assert office.decide().source == "schedule"


def test_the_clock_moves_the_decision() -> None:
    """The weekend's ``off`` comes into force on Saturday."""
    now = Now()
    office = plan(OFFICE, now)
    now.at = datetime(2026, 12, 5, 10, 0, tzinfo=BERLIN)
    decision = office.decide()
    assert (decision.rate, decision.source) == (OFF, "schedule")
    assert decision.next_change == (
        datetime(2026, 12, 7, 0, 0, tzinfo=BERLIN),
        parse_rate("20MiB/s"),
    )


def test_a_reload_changes_the_plan_but_not_the_override() -> None:
    """SIGHUP's new bandwidth applies at once; a limit set through the API stays."""
    office = plan(OFFICE, Now())
    office.reconfigure(BandwidthConfig.model_validate({"limit": "8MiB/s"}))
    assert (office.decide().rate, office.decide().source) == (parse_rate("8MiB/s"), "config")
    office.set_override(parse_rate("1MiB/s"))
    office.reconfigure(BandwidthConfig.model_validate(OFFICE))
    assert office.decide().source == "api"


def test_the_status_object() -> None:
    """``describe`` is the status JSON's ``bandwidth`` object of docs/control.md."""
    assert bandwidth.describe(plan(OFFICE, Now()).decide()) == {
        "limit_bytes_per_second": 4 * 1024 * 1024,
        "limit": "4MiB/s",
        "source": "schedule",
        "next_change": {"at": "2026-12-01T17:00:00Z", "limit": "20MiB/s"},
    }
    assert bandwidth.describe(plan({}, Now()).decide()) == {
        "limit_bytes_per_second": None,
        "limit": "unlimited",
        "source": "config",
        "next_change": None,
    }


def test_local_now_is_an_aware_time_of_this_machine() -> None:
    """The default clock gives the local time with its zone."""
    now = bandwidth.local_now()
    assert now.tzinfo is not None
    assert abs(now - datetime.now().astimezone()) < timedelta(seconds=5)
