"""The ``bandwidth:`` grammar: rates, schedule lines, and which rate is in force when (issue 16)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from florasync.config.timetable import OFF, UNLIMITED, Rate, Timetable, parse_line, parse_rate
from florasync.errors import ConfigError, ExitCode

BERLIN = ZoneInfo("Europe/Berlin")
MIB = 1 << 20
RATE_HELP = "a rate like 4MiB/s, 500KiB/s, 1.5MB/s or 2000000 (bytes/s), or off, or unlimited"
BITS = (
    "a lower-case b means bits; write bytes with a capital B, e.g. 4MiB/s (8 bits = 1 byte: "
    "100Mbit/s = 12.5MB/s)"
)
UNITS = "use B, KiB, MiB, GiB (1024) or kB, MB, GB (1000), optionally with /s"
DAYS = "use Mon, Tue, Wed, Thu, Fri, Sat, Sun (or full names)"
NOT_A_TIME = "is not a time of day (hours go from 00 to 23; 24:00 ends the day)"


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A Berlin wall-clock time in the week of Monday 2026-03-23 (day 0) to Sunday 2026-03-29
    (day 6, the day clocks go forward); day 7 is the next Monday."""
    return datetime(2026, 3, 23, hour, minute, second, tzinfo=BERLIN) + timedelta(days=day)


# --- rates ------------------------------------------------------------------------------------

GOOD_RATES = [
    ("20MiB/s", 20 * MIB, "20MiB/s"),
    ("4MiB/s", 4 * MIB, "4MiB/s"),
    ("4 MiB/s", 4 * MIB, "4MiB/s"),
    ("500KiB/s", 500 * 1024, "500KiB/s"),
    ("1.5MB/s", 1_500_000, "1.5MB/s"),
    ("800kB/s", 800_000, "800kB/s"),
    ("800KB", 800_000, "800kB/s"),
    ("10M", 10 * MIB, "10MiB/s"),
    ("1.25Mi", 1_310_720, "1.25MiB/s"),
    ("1G/s", 1 << 30, "1GiB/s"),
    ("2GB/s", 2 * 10**9, "2GB/s"),
    ("2000000", 2_000_000, "2MB/s"),
    (2_000_000, 2_000_000, "2MB/s"),
    ("1234567B/s", 1_234_567, "1234567B/s"),
    ("1000", 1000, "1kB/s"),
    ("unlimited", None, "unlimited"),
    ("Unlimited", None, "unlimited"),
    ("off", 0, "off"),
    ("OFF", 0, "off"),
]


@pytest.mark.parametrize(("text", "bytes_per_second", "shown"), GOOD_RATES)
def test_good_rates(text: str | int, bytes_per_second: int | None, shown: str) -> None:
    """Binary and decimal units, with or without /s, bare bytes, off and unlimited."""
    rate = parse_rate(text)
    assert rate.bytes_per_second == bytes_per_second
    assert rate.off == (shown == "off")
    assert rate.text == str(text)
    assert rate.describe() == shown
    assert parse_rate(shown) == rate  # what describe prints reads back the same


def test_rates_are_equal_however_written() -> None:
    """4MiB/s, 4 MiB/s, 4M and 4194304 are one rate; off and unlimited are the constants."""
    assert parse_rate("4MiB/s") == parse_rate("4 MiB/s") == parse_rate("4M") == Rate(4 * MIB)
    assert parse_rate("off") == OFF
    assert parse_rate("unlimited") == UNLIMITED


BAD_RATES = [
    ("four", f'must be {RATE_HELP} (got "four")'),
    ("", f'must be {RATE_HELP} (got "")'),
    ("1,5MB/s", f'must be {RATE_HELP} (got "1,5MB/s")'),
    ("-1MiB/s", f'must be {RATE_HELP} (got "-1MiB/s")'),
    ("4MiB/s/s", f'must be {RATE_HELP} (got "4MiB/s/s")'),
    ("MBps", f'must be {RATE_HELP} (got "MBps")'),
    ("20Mbit/s", f'"20Mbit/s": {BITS}'),
    ("20Mb/s", f'"20Mb/s": {BITS}'),
    ("100mbps", f'"100mbps": {BITS}'),
    ("4mib/s", f'"4mib/s": {BITS}'),
    ("4XB/s", f'unknown unit "XB" in "4XB/s"; {UNITS}'),
    ("1TiB/s", f'unknown unit "TiB" in "1TiB/s"; {UNITS}'),
    ("4MiB/min", 'rates are per second: write /s or nothing (got "4MiB/min")'),
    ("0", 'a limit of "0" would send nothing; write off to pause uploads'),
    ("0MiB/s", 'a limit of "0MiB/s" would send nothing; write off to pause uploads'),
    ("500B/s", '"500B/s" is below the smallest limit, 1kB/s (1000 bytes per second)'),
    (999, '"999" is below the smallest limit, 1kB/s (1000 bytes per second)'),
]


@pytest.mark.parametrize(("text", "message"), BAD_RATES)
def test_bad_rates_say_what_is_wrong(text: str | int, message: str) -> None:
    """Each bad rate is a ConfigError naming the key, with the message it must give."""
    with pytest.raises(ConfigError) as info:
        parse_rate(text, "bandwidth.limit")
    assert info.value.key == "bandwidth.limit"
    assert info.value.message == message
    assert str(info.value) == f"bandwidth.limit: {message}"
    assert info.value.exit_code == ExitCode.USAGE


# --- schedule lines ---------------------------------------------------------------------------

WEEKDAYS = frozenset(range(5))
EVERY_DAY = frozenset(range(7))
GOOD_LINES = [
    ("Mon-Fri 08:00-18:00 4MiB/s", WEEKDAYS, 480, 1080, Rate(4 * MIB)),
    ("Sat-Sun off", frozenset({5, 6}), 0, 1440, OFF),
    ("Mon,Wed,Fri 09:00-17:00 1MiB/s", frozenset({0, 2, 4}), 540, 1020, Rate(MIB)),
    ("22:00-06:00 10MiB/s", EVERY_DAY, 1320, 360, Rate(10 * MIB)),
    ("Sun 00:00-24:00 off", frozenset({6}), 0, 1440, OFF),
    ("Fri-Mon 8:00-9:30 unlimited", frozenset({4, 5, 6, 0}), 480, 570, UNLIMITED),
    ("monday-WEDNESDAY,sat 500KiB/s", frozenset({0, 1, 2, 5}), 0, 1440, Rate(512_000)),
    ("Mon-Mon 1MiB/s", frozenset({0}), 0, 1440, Rate(MIB)),
    ("2MiB/s", EVERY_DAY, 0, 1440, Rate(2 * MIB)),
    ("  Tue   12:00-13:00   4 MiB/s ", frozenset({1}), 720, 780, Rate(4 * MIB)),
]


@pytest.mark.parametrize(("text", "days", "start", "end", "rate"), GOOD_LINES)
def test_good_lines(text: str, days: frozenset[int], start: int, end: int, rate: Rate) -> None:
    """Days (ranges wrap, lists, full names, any case), times (across midnight), any rate."""
    line = parse_line(text, "bandwidth.schedule[0]")
    assert (line.days, line.start_minute, line.end_minute, line.rate) == (days, start, end, rate)
    assert line.text == text


BAD_LINES = [
    ("Mon-Fri 8-18 4MiB/s", 'a time range must be HH:MM-HH:MM (got "8-18")'),
    ("Mon-Fri 08:00-18:00:00 4MiB/s", 'a time range must be HH:MM-HH:MM (got "08:00-18:00:00")'),
    ("12:00am-1:00pm 1MiB/s", 'a time range must be HH:MM-HH:MM (got "12:00am-1:00pm")'),
    ("Mon 08:00 4MiB/s", 'a time range must be HH:MM-HH:MM (got "08:00")'),
    ("Mon-Fir 08:00-18:00 4MiB/s", f'unknown day "Fir"; {DAYS}'),
    ("Weekdays 08:00-18:00 4MiB/s", f'unknown day "Weekdays"; {DAYS}'),
    ("Tues 4MiB/s", f'unknown day "Tues"; {DAYS}'),
    ("Mon- 1MiB/s", 'a day range must be DAY-DAY, e.g. Mon-Fri (got "Mon-")'),
    ("Mon-Wed-Fri 1MiB/s", 'a day range must be DAY-DAY, e.g. Mon-Fri (got "Mon-Wed-Fri")'),
    ("Mon,,Wed 1MiB/s", 'an empty day in "Mon,,Wed"; list days as Mon,Wed,Fri'),
    ("Mon, Wed 1MiB/s", 'an empty day in "Mon,"; list days as Mon,Wed,Fri'),
    (
        "Mon Tue 09:00-17:00 1MiB/s",
        'list days with commas and no spaces, e.g. Mon,Wed,Fri (got "Mon Tue")',
    ),
    ("Mon Fir 09:00-17:00 1MiB/s", f'unknown day "Fir"; {DAYS}'),
    (
        "08:00-18:00 Mon-Fri 4MiB/s",
        'the days come first, then the time range, e.g. "Mon-Fri 08:00-18:00 4MiB/s"',
    ),
    ("Mon 08:00-12:00 13:00-18:00 1MiB/s", "one time range per line; write a line for each range"),
    ("24:00-06:00 1MiB/s", 'a range cannot start at 24:00; write 00:00 (got "24:00-06:00")'),
    ("22:00-24:30 1MiB/s", f'"24:30" {NOT_A_TIME}'),
    ("25:00-26:00 1MiB/s", f'"25:00" {NOT_A_TIME}'),
    ("08:60-09:00 1MiB/s", '"08:60" is not a time of day (minutes go from 00 to 59)'),
    (
        "08:00-08:00 1MiB/s",
        'the range "08:00-08:00" starts and ends at the same time; for the whole day write '
        "00:00-24:00 or leave the times out",
    ),
    (
        "00:00-00:00 off",
        'the range "00:00-00:00" starts and ends at the same time; for the whole day write '
        "00:00-24:00 or leave the times out",
    ),
    ("Mon-Fri 08:00-18:00", f"the rate is missing at the end: {RATE_HELP}"),
    ("Sat-Sun", f"the rate is missing at the end: {RATE_HELP}"),
    ("Sat-Sun of", f'must be {RATE_HELP} (got "of")'),
    ("Sat-Sun unlimted", f'must be {RATE_HELP} (got "unlimted")'),
    ("Sat-Sun off now", 'unexpected "now" after the rate'),
    ("Mon 08:00-18:00 4 MiB/s 1MiB/s", 'unexpected "1MiB/s" after the rate'),
    ("Mon 08:00-18:00 20Mbit/s", f'"20Mbit/s": {BITS}'),
    ("Mon 08:00-18:00 0", 'a limit of "0" would send nothing; write off to pause uploads'),
    ("Mon 08:00-18:00 4XB/s", f'unknown unit "XB" in "4XB/s"; {UNITS}'),
]


@pytest.mark.parametrize(("text", "problem"), BAD_LINES)
def test_bad_lines_say_what_is_wrong(text: str, problem: str) -> None:
    """Each bad line is a ConfigError naming the key, quoting the line, saying what is wrong."""
    with pytest.raises(ConfigError) as info:
        parse_line(text, "bandwidth.schedule[3]")
    assert info.value.key == "bandwidth.schedule[3]"
    assert str(info.value) == f'bandwidth.schedule[3]: "{text}": {problem}'


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("", 'is empty; a line is [DAYS] [HH:MM-HH:MM] RATE, e.g. "Mon-Fri 08:00-18:00 4MiB/s"'),
        ("   ", 'is empty; a line is [DAYS] [HH:MM-HH:MM] RATE, e.g. "Mon-Fri 08:00-18:00 4MiB/s"'),
        (1320, 'must be text like "Mon-Fri 08:00-18:00 4MiB/s" (got 1320)'),
        (None, 'must be text like "Mon-Fri 08:00-18:00 4MiB/s" (got None)'),
    ],
)
def test_items_that_are_not_lines(item: object, message: str) -> None:
    """An empty item, or one YAML read as a number (22:00 unquoted is 1320), is refused."""
    with pytest.raises(ConfigError) as info:
        parse_line(item, "bandwidth.schedule[0]")
    assert str(info.value) == f"bandwidth.schedule[0]: {message}"


def test_the_first_bad_line_of_a_schedule_is_named_by_its_index() -> None:
    """Timetable.parse names the line at fault as ``bandwidth.schedule[i]`` (from 0)."""
    with pytest.raises(ConfigError) as info:
        Timetable.parse(["Sat-Sun off", "Mon-Fri 8-18 4MiB/s", "nonsense"])
    assert str(info.value) == (
        'bandwidth.schedule[1]: "Mon-Fri 8-18 4MiB/s": a time range must be HH:MM-HH:MM '
        '(got "8-18")'
    )


# --- the rate in force ------------------------------------------------------------------------

OFFICE = Timetable.parse(["Mon-Fri 08:00-18:00 4MiB/s", "Sat-Sun off", "22:00-06:00 10MiB/s"])
DEFAULT = parse_rate("20MiB/s")

RATE_AT = [
    (OFFICE, at(0, 12), "4MiB/s"),
    (OFFICE, at(0, 7, 59, 59), "20MiB/s"),  # between the night and the office
    (OFFICE, at(0, 8), "4MiB/s"),  # a range includes its start
    (OFFICE, at(4, 17, 59, 59), "4MiB/s"),
    (OFFICE, at(4, 18), "20MiB/s"),  # and excludes its end
    (OFFICE, at(2, 23), "10MiB/s"),  # across midnight
    (OFFICE, at(3, 5, 59), "10MiB/s"),
    (OFFICE, at(5, 12), "off"),
    (OFFICE, at(5, 23), "10MiB/s"),  # the later line wins over "Sat-Sun off"
    (OFFICE, at(7, 0, 30), "10MiB/s"),  # Sunday 22:00 to Monday 06:00: the week wraps
    (OFFICE, at(7, 7), "20MiB/s"),
    (Timetable.parse(["22:00-06:00 10MiB/s", "Sat-Sun off"]), at(5, 23), "off"),  # order
    (Timetable.parse(["Fri-Mon 09:00-17:00 1MiB/s"]), at(6, 12), "1MiB/s"),  # days wrap
    (Timetable.parse(["Fri-Mon 09:00-17:00 1MiB/s"]), at(1, 12), "20MiB/s"),
    (Timetable.parse(["Sun 22:00-02:00 1MiB/s"]), at(7, 1), "1MiB/s"),  # Sunday into Monday
    (Timetable.parse(["Sun 02:30-04:00 1MiB/s"]), at(6, 3, 30), "1MiB/s"),  # the DST day
    (Timetable(), at(3, 12), "20MiB/s"),
]


@pytest.mark.parametrize(("timetable", "now", "rate"), RATE_AT)
def test_rate_at(timetable: Timetable, now: datetime, rate: str) -> None:
    """The last line covering the wall-clock time decides; else the default."""
    assert timetable.rate_at(now, DEFAULT).describe() == rate


NEXT_CHANGE = [
    (OFFICE, at(0, 12), at(0, 18), "20MiB/s"),
    (OFFICE, at(4, 20), at(4, 22), "10MiB/s"),
    (OFFICE, at(4, 23), at(5, 6), "off"),  # midnight is no change: the night line goes on
    (OFFICE, at(5, 12), at(5, 22), "10MiB/s"),
    (OFFICE, at(6, 23), at(7, 6), "20MiB/s"),  # across the end of the week (and the DST day)
    (OFFICE, at(0, 6), at(0, 8), "4MiB/s"),  # at a boundary: the next one
    (Timetable.parse(["Wed 12:00-13:00 1MiB/s"]), at(2, 14), at(9, 12), "1MiB/s"),  # a week on
]


@pytest.mark.parametrize(("timetable", "now", "when", "rate"), NEXT_CHANGE)
def test_next_change(timetable: Timetable, now: datetime, when: datetime, rate: str) -> None:
    """The next instant at which the rate in force differs, and the rate from then on."""
    change = timetable.next_change(now, DEFAULT)
    assert change is not None
    assert change[0] == when
    assert change[1].describe() == rate


@pytest.mark.parametrize(
    "timetable",
    [Timetable(), Timetable.parse(["20MiB/s"]), Timetable.parse(["Mon 10MiB/s", "20MiB/s"])],
    ids=["empty", "always the default", "a line hidden by a later one"],
)
def test_no_next_change_when_the_rate_never_changes(timetable: Timetable) -> None:
    """A timetable under which the rate stays the same has no next change."""
    assert timetable.next_change(at(1, 12), DEFAULT) is None


def test_a_change_at_a_skipped_time_happens_at_the_switch() -> None:
    """Clocks go from 02:00 to 03:00 on 2026-03-29 in Berlin: a line from 02:30 starts at the
    switch (01:00 UTC), when the clock first reads 02:30 or later."""
    change = Timetable.parse(["Sun 02:30-04:00 1MiB/s"]).next_change(at(6, 1), DEFAULT)
    assert change is not None
    assert change[0] == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert change[0].astimezone(BERLIN).hour == 3


def test_a_night_shortened_by_dst_ends_at_its_wall_clock_time() -> None:
    """22:00-06:00 over the switch ends at 06:00 summer time: 6 real hours after 23:00."""
    now = at(5, 23)
    change = OFFICE.next_change(now, DEFAULT)
    assert change is not None
    assert change[0].astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 3, 29, 6, 0)
    assert change[0].astimezone(UTC) - now.astimezone(UTC) == timedelta(hours=6)


def test_a_repeated_hour_changes_at_its_first_occurrence() -> None:
    """Clocks go from 03:00 back to 02:00 on 2026-10-25: 02:30 is first reached at 00:30 UTC."""
    now = datetime(2026, 10, 25, 1, 0, tzinfo=BERLIN)
    change = Timetable.parse(["Sun 02:30-05:00 1MiB/s"]).next_change(now, DEFAULT)
    assert change is not None
    # (compared in UTC: Python never finds a time of a repeated hour equal to another zone's)
    assert change[0].astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_a_naive_time_is_read_as_wall_clock() -> None:
    """Without a zone the answer is a naive wall-clock time."""
    change = OFFICE.next_change(datetime(2026, 3, 23, 12, 0), DEFAULT)
    assert change == (datetime(2026, 3, 23, 18, 0), DEFAULT)
