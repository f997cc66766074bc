"""Retry policy: which failures are retried, how long to wait, and the gate every worker obeys.

Owns the classification of errors (CONTRACT.md §3.1, §4), exponential backoff with full jitter,
``Retry-After`` handling and ``RateGate``, the one deadline shared by the whole worker pool so no
request leaves inside a window the API announced. Knows nothing of HTTP libraries.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from florasync import errors

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard a single request is retried before its error goes up to the caller."""

    max_attempts: int = 10
    max_rate_limited_attempts: int = 30  # 429s cost nothing on the server: be patient
    max_malformed_attempts: int = 3  # a proxy answering nonsense rarely recovers in seconds
    max_total_seconds: float = 300.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0  # FLORA's guidance caps backoff at 30 s (CONTRACT §3.1)
    retry_after_cap_seconds: float = 60.0  # never trust a window longer than this (Q11)
    retry_after_default_seconds: float = 5.0  # FLORA's sample when Retry-After is absent (§4)

    def backoff_seconds(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff for the given (1-based) failed attempt."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)

    def rate_limit_seconds(self, retry_after: float | None) -> float:
        """How long the whole pool pauses after a 429."""
        seconds = self.retry_after_default_seconds if retry_after is None else retry_after
        return max(0.0, min(seconds, self.retry_after_cap_seconds))

    def attempt_limit(self, exc: BaseException | None) -> int:
        """Attempts allowed for a request whose last failure was ``exc``."""
        if isinstance(exc, errors.RateLimitedError):
            return self.max_rate_limited_attempts
        return self.max_attempts


def is_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """Whether ``exc`` is worth sending the same request again.

    A 429 means the request had no effect, so it is always safe to repeat. 5xx and network errors
    may have had an effect, so only idempotent requests (GETs, POSTs carrying an Idempotency-Key,
    complete/retry) are repeated. Every other error (4xx) is permanent for this request.
    """
    if isinstance(exc, errors.RateLimitedError):
        return True
    if isinstance(exc, errors.UploadUncertainError):
        return False  # upload tokens are single-use (CONTRACT §10.3): the pipeline decides
    return isinstance(exc, errors.TransientError) and idempotent


ANNOUNCE_SLACK_SECONDS = 0.5  # a window extended by less than this is not news to the fleet


class RateGate:
    """A monotonic deadline shared by all workers; no request is sent before it.

    A 429 moves the deadline forward (never back). Every request calls ``wait`` first.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0
        self.closures = 0  # how many times a 429 closed (or extended) the gate
        # told of every 429 seen here: a fleet shares the key, so it closes every host's gate
        self.on_close: Callable[[float], object] | None = None
        self._announced = 0.0  # the end of the last window told to ``on_close``

    def close_for(self, seconds: float, *, announce: bool = True) -> None:
        """Close the gate for ``seconds`` from now, unless it is already closed for longer;
        ``announce``: a 429 seen here (``on_close`` hears of it), not one heard of."""
        with self._lock:
            until = self._clock() + seconds
            if until > self._until:
                self._until = until
                self.closures += 1
            # one 429 reaches here twice (the transport, then the retrier): tell others once
            news = announce and until > self._announced + ANNOUNCE_SLACK_SECONDS
            if news:
                self._announced = until
        if news and self.on_close is not None:
            self.on_close(seconds)

    def remaining(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        with self._lock:
            return max(0.0, self._until - self._clock())

    def wait(self, sleep: Callable[[float], object]) -> None:
        """Block until the gate is open; ``sleep`` returning True means stop was requested.

        Raises:
            errors.StoppedError: the stop event was set while waiting.
        """
        while (left := self.remaining()) > 0:
            if sleep(left) is True:
                raise errors.StoppedError("stopped while waiting for the rate limit window")


class _Wait(tenacity.wait.wait_base):
    """Tenacity wait: backoff with full jitter; after a 429 the gate does the waiting."""

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, errors.RateLimitedError):
            return self._rng.uniform(0.0, 0.05)  # de-synchronise the pool once the gate opens
        return self._policy.backoff_seconds(retry_state.attempt_number, self._rng)


class _Stop(tenacity.stop.stop_base):
    """Tenacity stop: attempts (more for 429s), total time, or the process stop event."""

    def __init__(
        self, policy: RetryPolicy, stop: threading.Event, elapsed: Callable[[], float]
    ) -> None:
        self._policy = policy
        self._stop = stop
        self._elapsed = elapsed
        self._malformed = 0  # one _Stop per call: counts this request's malformed answers

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, errors.MalformedResponseError):
            # its own budget: earlier 5xx, drops or 429s of this request do not use it up
            self._malformed += 1
            if self._malformed >= self._policy.max_malformed_attempts:
                return True
        return (
            self._stop.is_set()
            or retry_state.attempt_number >= self._policy.attempt_limit(exc)
            or self._elapsed() >= self._policy.max_total_seconds
        )


class Retrier:
    """Runs a request under a ``RetryPolicy``, closing the shared ``RateGate`` on 429s."""

    def __init__(
        self,
        policy: RetryPolicy,
        gate: RateGate,
        stop: threading.Event,
        *,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> None:
        self.policy = policy
        self.gate = gate
        self.stop = stop
        self._sleep = sleep or stop.wait
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
        self._on_retry = on_retry

    def call(self, fn: Callable[[], T], *, idempotent: bool) -> T:
        """Call ``fn`` (one HTTP request) until it succeeds or its error is final.

        Raises:
            errors.ApiError: the last error when it is not retryable or attempts ran out.
            errors.StoppedError: the stop event was set.
        """
        started = self._clock()
        try:  # most requests succeed at once: no retry machinery is built for them
            return self._gated(fn)
        except errors.ApiError as exc:
            if not is_retryable(exc, idempotent=idempotent):
                raise
            first: list[BaseException] = [exc]
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: is_retryable(e, idempotent=idempotent)),
            wait=_Wait(self.policy, self._rng),
            stop=_Stop(self.policy, self.stop, lambda: self._clock() - started),
            sleep=self._tenacity_sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

        def attempt() -> T:
            if first:  # tenacity's attempt 1 is the one that just failed
                raise first.pop()
            return self._gated(fn)

        result: T = retrying(attempt)
        return result

    def wait_for_gate(self) -> None:
        """Block while a 429's window is open (raises StoppedError when stop is set)."""
        self.gate.wait(self._sleep)

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429 arrived: close the gate for the whole pool."""
        self.gate.close_for(self.policy.rate_limit_seconds(retry_after))

    def _gated(self, fn: Callable[[], T]) -> T:
        self.wait_for_gate()
        try:
            return fn()
        except errors.RateLimitedError as exc:
            self.rate_limited(exc.retry_after)
            raise

    def _tenacity_sleep(self, seconds: float) -> None:
        if self._sleep(seconds) is True:
            raise errors.StoppedError("stopped while backing off")

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if self._on_retry is not None and exc is not None:
            delay = retry_state.upcoming_sleep + self.gate.remaining()
            self._on_retry(exc, delay)
