"""The grammar of ``bandwidth:`` (issue 16, docs/control.md "Bandwidth"): rates, schedule lines
and the weekly timetable they make.

Owns parsing a rate (``4MiB/s``, ``off``, ``unlimited``) and a schedule line
(``Mon-Fri 08:00-18:00 4MiB/s``) into values, with messages saying what is wrong and what is
expected, and which rate is in force at a local wall-clock time. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from florasync.errors import ConfigError

DAY_MINUTES = 24 * 60
WEEK_SECONDS = 7 * DAY_MINUTES * 60
HORIZON = timedelta(days=8)
"""How far ahead ``Timetable.next_change`` looks."""
MIN_BYTES_PER_SECOND = 1000
"""The smallest limit (1kB/s): below it one piece of a body would take seconds."""
EXAMPLE_LINE = "Mon-Fri 08:00-18:00 4MiB/s"

_RATE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]*)(?P<per>/[A-Za-z]*)?")
_TIMES = re.compile(r"(\d{1,2}):(\d\d)-(\d{1,2}):(\d\d)")
_RATE_HELP = "a rate like 4MiB/s, 500KiB/s, 1.5MB/s or 2000000 (bytes/s), or off, or unlimited"
_UNIT_HELP = "use B, KiB, MiB, GiB (1024) or kB, MB, GB (1000), optionally with /s"
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}  # 10M is 10MiB, as in rclone
_BINARY |= {f"{prefix}i": size for prefix, size in _BINARY.items() if prefix}
_WITH_B = {"": 1, "k": 1000, "m": 10**6, "g": 10**9, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}
_FAMILIES = (
    (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)),
    (("GB", 10**9), ("MB", 10**6), ("kB", 1000)),
)
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAYS = {name[:3]: n for n, name in enumerate(_DAY_NAMES)} | {
    name: n for n, name in enumerate(_DAY_NAMES)
}
_DAY_HELP = "use Mon, Tue, Wed, Thu, Fri, Sat, Sun (or full names)"
_RATE_WORDS = ("off", "unlimited")


@dataclass(frozen=True, slots=True)
class Rate:
    """A bandwidth limit. ``bytes_per_second`` None: unlimited; ``off``: paused (no uploads and
    no requests to FLORA; ``bytes_per_second`` is 0). ``text`` is as written; two rates of the
    same value are equal however they were written."""

    bytes_per_second: int | None
    off: bool = False
    text: str = field(default="", compare=False)

    def describe(self) -> str:
        """The rate normalised: ``off``, ``unlimited``, or the largest unit that shows it exactly
        with at most two decimals (``4MiB/s``, ``1.5MB/s``), else bytes (``1234567B/s``)."""
        if self.off:
            return "off"
        if self.bytes_per_second is None:
            return "unlimited"
        return _bytes_text(self.bytes_per_second) + "/s"


UNLIMITED = Rate(None, text="unlimited")
OFF = Rate(0, off=True, text="off")


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the schedule: on ``days`` (0 = Monday), from ``start_minute`` to
    ``end_minute`` after local midnight (an end at or before the start is on the next day),
    ``rate`` applies."""

    days: frozenset[int]
    start_minute: int
    end_minute: int
    rate: Rate
    text: str = field(default="", compare=False)

    @property
    def length_seconds(self) -> int:
        return ((self.end_minute - self.start_minute) % DAY_MINUTES or DAY_MINUTES) * 60

    def starts(self) -> list[int]:
        """The seconds of the week (0 = Monday 00:00) at which the line begins."""
        return [(day * DAY_MINUTES + self.start_minute) * 60 for day in sorted(self.days)]

    def covers(self, second_of_week: int) -> bool:
        length = self.length_seconds
        return any((second_of_week - start) % WEEK_SECONDS < length for start in self.starts())


@dataclass(frozen=True, slots=True)
class Timetable:
    """The schedule's lines in the order given: where lines overlap, the later one wins.

    Times are wall-clock times: ``rate_at`` reads the fields of the datetime it is given, so
    pass the local time (``datetime.now().astimezone()``).
    """

    lines: tuple[Line, ...] = ()

    @classmethod
    def parse(cls, texts: Sequence[object], key: str = "bandwidth.schedule") -> Timetable:
        """The timetable of ``texts``.

        Raises:
            ConfigError: keyed ``{key}[i]``, for the first line that is wrong.
        """
        return cls(tuple(parse_line(text, f"{key}[{i}]") for i, text in enumerate(texts)))

    def line_at(self, now: datetime) -> Line | None:
        """The line in force at ``now`` (the last one covering it), or None."""
        second = _second_of_week(now)
        return next((line for line in reversed(self.lines) if line.covers(second)), None)

    def rate_at(self, now: datetime, default: Rate) -> Rate:
        """The rate in force at ``now``: its line's, else ``default``."""
        line = self.line_at(now)
        return default if line is None else line.rate

    def next_change(self, now: datetime, default: Rate) -> tuple[datetime, Rate] | None:
        """The next instant within ``HORIZON`` at which the rate in force changes, and the rate
        from then on; None when it stays as it is.

        Works on wall-clock times: a change whose time is skipped by a DST switch happens at the
        switch. Give an aware ``now`` with a real zone (``zoneinfo``) for DST to be known; a
        naive ``now`` gives a naive answer.
        """
        wall = now.replace(tzinfo=None)
        current = self.rate_at(wall, default)
        monday = (wall - timedelta(days=wall.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        boundaries = self._boundaries()
        for week in range(3):
            for offset in boundaries:
                at = monday + timedelta(weeks=week, seconds=offset)
                if at <= wall:
                    continue
                if at > wall + HORIZON:
                    return None
                rate = self.rate_at(at, default)
                if rate != current:
                    return _instant(at, now.tzinfo), rate
        return None

    def _boundaries(self) -> list[int]:
        """Every second of the week at which a line begins or ends, in order."""
        edges = set()
        for line in self.lines:
            for start in line.starts():
                edges.add(start % WEEK_SECONDS)
                edges.add((start + line.length_seconds) % WEEK_SECONDS)
        return sorted(edges)


def parse_rate(value: str | int, key: str = "bandwidth.limit") -> Rate:
    """A rate as written: ``4MiB/s``, ``4 MiB/s``, ``500KiB/s``, ``1.5MB/s``, ``10M`` (10MiB/s),
    a bare number of bytes per second, ``off`` or ``unlimited`` (case-insensitive).

    Raises:
        ConfigError: keyed ``key``, saying what is wrong and what a rate looks like.
    """
    try:
        return _rate(value)
    except _Problem as problem:
        raise ConfigError(key, str(problem)) from None


def parse_line(text: object, key: str) -> Line:
    """One schedule line: ``[DAYS] [HH:MM-HH:MM] RATE``.

    Raises:
        ConfigError: keyed ``key``; the message quotes the line and says what is wrong.
    """
    if not isinstance(text, str):
        raise ConfigError(key, f'must be text like "{EXAMPLE_LINE}" (got {text!r})')
    words = text.split()
    if not words:
        raise ConfigError(
            key, f'is empty; a line is [DAYS] [HH:MM-HH:MM] RATE, e.g. "{EXAMPLE_LINE}"'
        )
    try:
        return _line(words, text)
    except _Problem as problem:
        raise ConfigError(key, f'"{text}": {problem}') from None


class _Problem(ValueError):
    """What is wrong with a rate or a line (the caller adds the key and the line)."""


def _rate(value: str | int) -> Rate:
    if isinstance(value, int) and not isinstance(value, bool):
        return _checked(float(value), str(value))
    if not isinstance(value, str):
        raise _Problem(f"must be {_RATE_HELP} (got {value!r})")
    text = value.strip()
    if text.lower() == "off":
        return Rate(0, off=True, text=text)
    if text.lower() == "unlimited":
        return Rate(None, text=text)
    match = _RATE.fullmatch(text)
    if match is None:
        raise _Problem(f'must be {_RATE_HELP} (got "{text}")')
    factor = _unit_factor(match["unit"], match["per"], text)
    return _checked(float(match["number"]) * factor, text)


def _unit_factor(unit: str, per: str | None, text: str) -> int:
    if per is not None and per.lower() != "/s":
        raise _Problem(f'rates are per second: write /s or nothing (got "{text}")')
    lower = unit.lower()
    if "bit" in lower or unit.endswith(("b", "bps")):
        raise _Problem(
            f'"{text}": a lower-case b means bits; write bytes with a capital B, e.g. 4MiB/s '
            "(8 bits = 1 byte: 100Mbit/s = 12.5MB/s)"
        )
    factor = _WITH_B.get(lower[:-1]) if unit.endswith("B") else _BINARY.get(lower)
    if factor is None:
        raise _Problem(f'unknown unit "{unit}" in "{text}"; {_UNIT_HELP}')
    return factor


def _checked(bytes_per_second: float, text: str) -> Rate:
    if bytes_per_second <= 0:
        raise _Problem(f'a limit of "{text}" would send nothing; write off to pause uploads')
    if bytes_per_second < MIN_BYTES_PER_SECOND:
        raise _Problem(f'"{text}" is below the smallest limit, 1kB/s (1000 bytes per second)')
    return Rate(round(bytes_per_second), text=text)


def _line(words: list[str], text: str) -> Line:
    """``words`` of a line: optional days, optional time range, then the rate."""
    days, start, end = frozenset(range(7)), 0, DAY_MINUTES
    rest = words
    if len(rest) > 1 and _is_days(rest[0]):
        days, rest = _days(rest[0]), rest[1:]
        if len(rest) > 1 and _is_days(rest[0]):
            _days(rest[0])  # an unknown day is the better message
            raise _Problem(
                f'list days with commas and no spaces, e.g. Mon,Wed,Fri (got "{words[0]} '
                f'{rest[0]}")'
            )
    if rest and _is_times(rest[0]):
        start, end = _times(rest[0])
        rest = rest[1:]
        if rest and _is_times(rest[0]):
            raise _Problem("one time range per line; write a line for each range")
        if len(rest) > 1 and _is_days(rest[0]):
            raise _Problem(f'the days come first, then the time range, e.g. "{EXAMPLE_LINE}"')
    if not rest or (len(words) == 1 and _is_days(words[0]) and _days(words[0])):
        raise _Problem(f"the rate is missing at the end: {_RATE_HELP}")
    return Line(days, start, end, _line_rate(rest), text)


def _line_rate(words: list[str]) -> Rate:
    """The rate at the end of a line (``4MiB/s`` or ``4 MiB/s``); nothing may follow it."""
    used = 2 if len(words) > 1 and _is_number(words[0]) else 1
    if len(words) > used:
        raise _Problem(f'unexpected "{" ".join(words[used:])}" after the rate')
    return _rate(" ".join(words))


def _is_number(word: str) -> bool:
    return word.replace(".", "", 1).isdigit()


def _is_days(word: str) -> bool:
    return word[0].isalpha() and word.lower() not in _RATE_WORDS and "/" not in word


def _days(word: str) -> frozenset[int]:
    """``Mon``, ``Mon-Fri``, ``Fri-Mon`` (wrapping), ``Mon,Wed,Fri``, ``Mon-Wed,Sat``."""
    days: set[int] = set()
    for part in word.split(","):
        if not part:
            raise _Problem(f'an empty day in "{word}"; list days as Mon,Wed,Fri')
        first, dash, last = part.partition("-")
        if dash and (not first or not last or "-" in last):
            raise _Problem(f'a day range must be DAY-DAY, e.g. Mon-Fri (got "{part}")')
        a = _day(first)
        b = _day(last) if dash else a
        days.update((a + n) % 7 for n in range((b - a) % 7 + 1))
    return frozenset(days)


def _day(name: str) -> int:
    day = _DAYS.get(name.lower())
    if day is None:
        raise _Problem(f'unknown day "{name}"; {_DAY_HELP}')
    return day


def _is_times(word: str) -> bool:
    return word[0].isdigit() and ("-" in word or ":" in word)


def _times(word: str) -> tuple[int, int]:
    """``HH:MM-HH:MM`` as minutes after midnight; 24:00 may end a range."""
    match = _TIMES.fullmatch(word)
    if match is None:
        raise _Problem(f'a time range must be HH:MM-HH:MM (got "{word}")')
    start_text, end_text = word.split("-")
    start = _minute(int(match[1]), int(match[2]), start_text)
    end = _minute(int(match[3]), int(match[4]), end_text)
    if start == DAY_MINUTES:
        raise _Problem(f'a range cannot start at 24:00; write 00:00 (got "{word}")')
    if start == end % DAY_MINUTES and end != DAY_MINUTES:
        raise _Problem(
            f'the range "{word}" starts and ends at the same time; for the whole day write '
            "00:00-24:00 or leave the times out"
        )
    return start, end


def _minute(hour: int, minute: int, text: str) -> int:
    if minute > 59:
        raise _Problem(f'"{text}" is not a time of day (minutes go from 00 to 59)')
    if hour > 24 or (hour == 24 and minute):
        raise _Problem(
            f'"{text}" is not a time of day (hours go from 00 to 23; 24:00 ends the day)'
        )
    return hour * 60 + minute


def _second_of_week(moment: datetime) -> int:
    return ((moment.weekday() * 24 + moment.hour) * 60 + moment.minute) * 60 + moment.second


def _bytes_text(count: int) -> str:
    """``count`` bytes in the largest unit of each family (1024s, 1000s) that shows it exactly
    with at most two decimals; the one with fewer decimals (1024s on a tie), else bytes."""
    shown = [text for family in _FAMILIES if (text := _in_family(count, family))]
    return min(shown, key=lambda text: len(text.partition(".")[2])) if shown else f"{count}B"


def _in_family(count: int, family: tuple[tuple[str, int], ...]) -> str | None:
    name, size = next(((n, s) for n, s in family if count >= s), ("", 0))
    if not size or count * 100 % size:
        return None
    whole, hundredths = divmod(count * 100 // size, 100)
    decimals = f".{hundredths:02d}".rstrip("0") if hundredths else ""
    return f"{whole}{decimals}{name}"


def _instant(wall: datetime, zone: tzinfo | None) -> datetime:
    """The first instant at which the clock of ``zone`` reads ``wall`` or later: ``wall`` itself
    (its first occurrence when a DST switch repeats it), or the switch when it skips ``wall``."""
    if zone is None:
        return wall
    first = wall.replace(tzinfo=zone)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # skipped: fold=1 reads the wall time with the offset after the switch, which is earlier
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(first.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, zone)
