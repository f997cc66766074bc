"""Unit tests of the retry policy and the shared rate gate, on an injected clock (no sleeping)."""

from __future__ import annotations

import random
import threading

import pytest

from florasync import errors
from florasync.flora import retrying
from florasync.flora.transport import parse_retry_after

from .helpers import SleepingClock


def _err(cls: type[errors.ApiError], **kw: object) -> errors.ApiError:
    return cls("boom", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "idempotent", "expected"),
    [
        (_err(errors.InvalidRequestError, status=400), True, False),
        (_err(errors.CredentialsError, status=401), True, False),
        (_err(errors.PaymentRequiredError, status=402), True, False),
        (_err(errors.ForbiddenError, status=403), True, False),
        (_err(errors.NotFoundError, status=404), True, False),
        (_err(errors.IdempotencyDuplicateError, status=409), True, False),
        (_err(errors.ConflictError, status=409), True, False),
        (_err(errors.IdempotencyConflictError, status=422), True, False),
        (_err(errors.RateLimitedError, status=429), True, True),
        (_err(errors.RateLimitedError, status=429), False, True),
        (_err(errors.ServerError, status=503), True, True),
        (_err(errors.ServerError, status=500), False, False),
        (_err(errors.NetworkError), True, True),
        (_err(errors.NetworkError), False, False),
        (_err(errors.UploadUncertainError, status=502), True, False),
        (_err(errors.UploadRejectedError, status=400), True, False),
    ],
)
def test_classification(exc: errors.ApiError, idempotent: bool, expected: bool) -> None:
    """4xx are final, 429 always waits, 5xx/network retry only requests that are safe to repeat."""
    assert retrying.is_retryable(exc, idempotent=idempotent) is expected


def test_backoff_is_full_jitter_and_capped() -> None:
    """Backoff grows exponentially, never exceeds the cap, and is spread over [0, ceiling]."""
    policy = retrying.RetryPolicy(backoff_base_seconds=0.5, backoff_cap_seconds=30)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (4, 4.0), (7, 30.0), (20, 30.0)]:
        samples = [policy.backoff_seconds(attempt, rng) for _ in range(200)]
        assert max(samples) <= ceiling
        assert min(samples) >= 0.0
        assert max(samples) > ceiling * 0.8, "jitter should cover the whole range"


def test_retry_after_is_capped_and_defaulted() -> None:
    """A huge Retry-After is capped; a missing one falls back to FLORA's 5 s."""
    policy = retrying.RetryPolicy(retry_after_cap_seconds=60, retry_after_default_seconds=5)
    assert policy.rate_limit_seconds(3) == 3
    assert policy.rate_limit_seconds(3600) == 60
    assert policy.rate_limit_seconds(None) == 5


def test_retry_after_header_forms() -> None:
    """Retry-After is read as delta-seconds or as an HTTP-date."""
    assert parse_retry_after("7") == 7
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(when, now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after(when, now=1445412490.0) == 0.0


def test_gate_blocks_every_worker_until_the_window_ends() -> None:
    """After a 429 no request of the pool may start before the announced window has passed."""
    clock = SleepingClock()
    gate = retrying.RateGate(clock=clock)
    gate.close_for(4.0)
    gate.close_for(1.0)  # a shorter window never shortens the gate
    assert gate.remaining() == 4.0
    gate.wait(clock.sleep)
    assert clock.now == pytest.approx(1004.0)
    assert gate.remaining() == 0.0
    gate.wait(clock.sleep)  # an open gate does not wait
    assert clock.sleeps == [4.0]


def test_gate_wait_raises_when_stopped() -> None:
    """A stop request during a rate-limit wait ends the wait at once."""
    gate = retrying.RateGate(clock=SleepingClock())
    gate.close_for(30)
    with pytest.raises(errors.StoppedError):
        gate.wait(lambda _s: True)


def _retrier(clock: SleepingClock, **policy: float) -> retrying.Retrier:
    return retrying.Retrier(
        retrying.RetryPolicy(**policy),  # type: ignore[arg-type]
        retrying.RateGate(clock=clock),
        threading.Event(),
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(1),
    )


def test_retrier_honours_retry_after_through_the_gate() -> None:
    """A 429 with Retry-After 3 delays the next attempt by at least 3 s, then it succeeds."""
    clock = SleepingClock()
    calls: list[float] = []

    def request() -> str:
        calls.append(clock.now)
        if len(calls) == 1:
            raise errors.RateLimitedError("slow down", status=429, retry_after=3)
        return "ok"

    assert _retrier(clock).call(request, idempotent=False) == "ok"
    assert calls[1] - calls[0] >= 3.0


def test_retrier_gives_up_after_max_attempts() -> None:
    """Persistent 5xx on an idempotent request stops after the attempt budget, last error raised."""
    clock = SleepingClock()
    calls = 0

    def request() -> str:
        nonlocal calls
        calls += 1
        raise errors.ServerError("down", status=503)

    with pytest.raises(errors.ServerError):
        _retrier(clock, max_attempts=4).call(request, idempotent=True)
    assert calls == 4


def test_retrier_respects_total_time_budget() -> None:
    """Retrying stops once the total time budget is spent, whatever the attempt count."""
    clock = SleepingClock()
    calls = 0

    def request() -> str:
        nonlocal calls
        calls += 1
        clock.now += 50  # each attempt takes 50 s (a slow timeout)
        raise errors.NetworkError("timed out")

    with pytest.raises(errors.NetworkError):
        _retrier(clock, max_attempts=100, max_total_seconds=120).call(request, idempotent=True)
    assert calls <= 3


def test_retrier_does_not_repeat_unsafe_posts() -> None:
    """A 5xx on a POST without an idempotency key is not sent twice."""
    clock = SleepingClock()
    calls = 0

    def request() -> str:
        nonlocal calls
        calls += 1
        raise errors.ServerError("down", status=500)

    with pytest.raises(errors.ServerError):
        _retrier(clock).call(request, idempotent=False)
    assert calls == 1
    assert clock.sleeps == []


def test_retrier_stops_when_the_stop_event_is_set() -> None:
    """Setting the stop event ends retrying without waiting out the backoff."""
    stop = threading.Event()
    stop.set()
    retrier = retrying.Retrier(retrying.RetryPolicy(), retrying.RateGate(), stop)
    calls = 0

    def request() -> str:
        nonlocal calls
        calls += 1
        raise errors.ServerError("down", status=503)

    with pytest.raises((errors.ServerError, errors.StoppedError)):
        retrier.call(request, idempotent=True)
    assert calls == 1
