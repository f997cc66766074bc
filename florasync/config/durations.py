"""Durations as people write them (``90s``, ``15m``, ``2h``, ``1h30m``, ``1d``): ``pause --for``.

Owns the grammar and its error message; pure.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
MAX_SECONDS = 366 * 86400


def parse_duration(text: str) -> float:
    """Seconds in ``text``.

    Raises:
        ValueError: not a duration; the message says what is expected.
    """
    spec = text.strip().lower().replace(" ", "")
    parts = _PART.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise ValueError(f"{text!r} is not a duration: write e.g. 90s, 15m, 2h, 1h30m or 1d")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"{text!r}: a duration must be more than 0 and at most 366 days")
    return seconds
