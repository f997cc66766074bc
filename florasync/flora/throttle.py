"""The upload bandwidth limit (issue 16): one token bucket shared by every upload of the process.

Owns how many body bytes may go now and how long a sender waits for its next piece, and the
size of those pieces. The rate changes live (timetable, SIGHUP, the control API). Knows nothing
of HTTP: the upload target takes each piece of a body from here before it writes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from florasync import errors

MAX_PIECE_BYTES = 64 << 10
MIN_PIECE_BYTES = 512
PIECES_PER_SECOND = 20  # small pieces, so the limit holds within a second
BURST_SECONDS = 0.1  # the bucket holds this much of the rate (at least one piece)
POLL_SECONDS = 0.25  # a waiter looks at its stop event at least this often


def piece_bytes(bytes_per_second: int) -> int:
    """How much of a body goes per ``take`` at this rate: about 1/20 s of it, 512 B to 64 KiB."""
    return max(MIN_PIECE_BYTES, min(MAX_PIECE_BYTES, bytes_per_second // PIECES_PER_SECOND))


class Throttle:
    """A thread-safe token bucket; ``rate`` None lets every byte go at once (the default).

    The bucket holds a tenth of a second of the rate (at least one piece), so no window of one
    second carries more than about 1.1 times the limit. A rate of 0 lets nothing go.
    """

    def __init__(
        self,
        rate_bytes_per_second: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check(rate_bytes_per_second)
        self._clock = clock
        self._changed = threading.Condition(threading.Lock())
        self._rate = rate_bytes_per_second
        self._tokens = float(self._capacity())
        self._stamp = clock()

    @property
    def rate(self) -> int | None:
        """Bytes per second; None: unlimited."""
        return self._rate

    @property
    def piece_bytes(self) -> int:
        """The size of a piece of a body at the current rate (MAX_PIECE_BYTES when unlimited)."""
        rate = self._rate
        return MAX_PIECE_BYTES if rate is None else piece_bytes(rate)

    def set_rate(self, bytes_per_second: int | None) -> None:
        """Change the rate now; waiting senders look again at once.

        Raises:
            ValueError: a negative rate.
        """
        _check(bytes_per_second)
        with self._changed:
            if bytes_per_second == self._rate:
                return
            self._refill()
            was_unlimited = self._rate is None
            self._rate = bytes_per_second
            capacity = self._capacity()
            self._tokens = capacity if was_unlimited else min(self._tokens, capacity)
            self._changed.notify_all()

    def take(self, n: int, stop: threading.Event) -> None:
        """Wait until ``n`` bytes may go, and count them as gone.

        Raises:
            errors.StoppedError: ``stop`` was set while waiting.
        """
        with self._changed:
            while True:
                if stop.is_set():
                    raise errors.StoppedError("stopped while waiting for the bandwidth limit")
                wait = self._try_take(n)
                if not wait:
                    return
                self._changed.wait(min(wait, POLL_SECONDS))

    def try_take(self, n: int) -> float:
        """Take ``n`` bytes if they may go now (0.0), else the seconds until they may; never
        waits. More than the bucket holds goes once it is full, and the next senders wait."""
        with self._changed:
            return self._try_take(n)

    def _try_take(self, n: int) -> float:
        rate = self._rate
        if rate is None:
            return 0.0
        self._refill()
        if rate == 0:
            return POLL_SECONDS
        need = min(n, self._capacity())
        if self._tokens > need - 1:  # a float's rounding must not leave a wait of no time
            self._tokens -= n
            return 0.0
        return (need - self._tokens) / rate

    def _refill(self) -> None:
        now = self._clock()
        elapsed, self._stamp = max(0.0, now - self._stamp), now
        if self._rate:
            self._tokens = min(float(self._capacity()), self._tokens + elapsed * self._rate)

    def _capacity(self) -> int:
        rate = self._rate
        if not rate:
            return 0
        return max(round(rate * BURST_SECONDS), piece_bytes(rate))


def _check(bytes_per_second: int | None) -> None:
    if bytes_per_second is not None and bytes_per_second < 0:
        raise ValueError(f"a rate cannot be negative (got {bytes_per_second})")
