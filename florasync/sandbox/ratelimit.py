"""Token buckets per API key and the ``Retry-After`` value they announce (CONTRACT §4, §14 Q11).

Owns the arithmetic of the rate limit; ``Faults`` holds one limiter and its settings.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets per key (CONTRACT §14 Q11): ``burst`` tokens, refilled at ``rps``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str, rps: float, burst: int) -> float:
        """Take a token for ``key`` and return 0.0, or return the seconds until one is free."""
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - updated) * rps)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return math.inf if rps <= 0 else (1.0 - tokens) / rps

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


def retry_after_seconds(wait: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, at least 1 (CONTRACT §4)."""
    if math.isinf(wait):
        return 3600
    return max(1, math.ceil(wait))
