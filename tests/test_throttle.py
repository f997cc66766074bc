"""The shared token bucket (issue 16), on a fake clock, and the upload target paced by it over
real HTTP to the sandbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from florasync import errors
from florasync.flora import api, upload
from florasync.flora.secret import Secret
from florasync.flora.throttle import MAX_PIECE_BYTES, Throttle, piece_bytes
from florasync.sandbox import Sandbox

from .helpers import SHORT_TIMEOUT, sha256_of, wait_until, write_file

MIB = 1 << 20


class Clock:
    """A monotonic clock moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def greedy_senders(throttle: Throttle, clock: Clock, seconds: float) -> list[tuple[float, int]]:
    """Take pieces as fast as the bucket allows for ``seconds`` of fake time: (time, bytes)."""
    sent: list[tuple[float, int]] = []
    end = clock.now + seconds
    while clock.now < end:
        wait = throttle.try_take(throttle.piece_bytes)
        if wait:
            clock.now += wait
        else:
            sent.append((clock.now, throttle.piece_bytes))
    return sent


def busiest_second(sent: list[tuple[float, int]]) -> int:
    return max(sum(n for t, n in sent if start <= t < start + 1.0) for start, _ in sent)


def test_unlimited_lets_everything_go() -> None:
    """By default nothing waits, whatever the size."""
    throttle = Throttle()
    assert throttle.rate is None
    assert throttle.try_take(1 << 30) == 0.0
    throttle.take(1 << 30, threading.Event())
    assert throttle.piece_bytes == MAX_PIECE_BYTES


@pytest.mark.parametrize("rate", [2 * MIB, MIB, 100_000, 1000])
def test_a_limit_holds_within_every_second(rate: int) -> None:
    """Senders taking as fast as they may get the rate on average, and no second carries
    more than the rate plus the small burst (a tenth of a second, at least one piece)."""
    clock = Clock()
    throttle = Throttle(rate, clock=clock)
    burst = max(rate // 10, piece_bytes(rate))
    sent = greedy_senders(throttle, clock, 20.0)
    total = sum(n for _, n in sent)
    assert 20 * rate - piece_bytes(rate) <= total <= 20 * rate + burst + piece_bytes(rate)
    assert busiest_second(sent) <= rate + burst + piece_bytes(rate)


def test_pieces_are_about_a_twentieth_of_a_second() -> None:
    """64 KiB at most, 512 bytes at least, else 1/20 s of the rate."""
    assert piece_bytes(2 * MIB) == MAX_PIECE_BYTES
    assert piece_bytes(MIB) == MIB // 20
    assert piece_bytes(1000) == 512


def test_waits_are_the_time_the_bucket_needs() -> None:
    """After the burst, a piece waits exactly until enough has trickled in."""
    clock = Clock()
    throttle = Throttle(10_000, clock=clock)  # holds 1000 bytes
    assert throttle.try_take(1000) == 0.0
    assert throttle.try_take(500) == pytest.approx(0.05)
    clock.now += 0.05
    assert throttle.try_take(500) == 0.0


def test_a_lower_rate_applies_at_once() -> None:
    """Lowering the rate shrinks what may burst to the new rate's tenth of a second."""
    clock = Clock()
    throttle = Throttle(MIB, clock=clock)
    throttle.set_rate(10_000)
    assert throttle.rate == 10_000
    assert throttle.try_take(1000) == 0.0
    assert throttle.try_take(1000) == pytest.approx(0.1)


def test_unlimited_and_back() -> None:
    """None lifts the limit at once; a limit set again starts with a full (small) bucket."""
    clock = Clock()
    throttle = Throttle(10_000, clock=clock)
    throttle.try_take(1000)
    throttle.set_rate(None)
    assert throttle.try_take(10 * MIB) == 0.0
    throttle.set_rate(10_000)
    assert throttle.try_take(1000) == 0.0
    assert throttle.try_take(1000) > 0


def test_a_negative_rate_is_refused() -> None:
    """A rate below zero is a bug of the caller."""
    with pytest.raises(ValueError, match="negative"):
        Throttle(-1)
    with pytest.raises(ValueError, match="negative"):
        Throttle().set_rate(-5)


def _take_in_thread(
    throttle: Throttle, stop: threading.Event
) -> tuple[threading.Thread, list[BaseException | None]]:
    """A thread taking 1000 bytes; its outcome: None (taken) or the StoppedError."""
    outcome: list[BaseException | None] = []

    def take() -> None:
        try:
            throttle.take(1000, stop)
            outcome.append(None)
        except errors.StoppedError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=take, name="taker")
    thread.start()
    return thread, outcome


def test_a_new_rate_wakes_a_waiting_sender() -> None:
    """A sender held by a rate of 0 goes as soon as the rate is lifted."""
    throttle = Throttle(0)
    thread, outcome = _take_in_thread(throttle, threading.Event())
    throttle.set_rate(None)
    thread.join(SHORT_TIMEOUT)
    assert outcome == [None]


def test_stop_ends_a_wait() -> None:
    """A sender waiting for bytes that never come raises StoppedError once stop is set."""
    stop = threading.Event()
    thread, outcome = _take_in_thread(Throttle(0), stop)
    stop.set()
    thread.join(SHORT_TIMEOUT)
    assert len(outcome) == 1
    assert isinstance(outcome[0], errors.StoppedError)


# --- the upload target, paced ---------------------------------------------------------------


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[api.FloraClient]:
    with api.FloraClient(sandbox.base_url, Secret(sandbox.api_key)) as c:
        yield c


def _push(
    client: api.FloraClient,
    sb: Sandbox,
    path: Path,
    throttle: Throttle,
    *,
    stop: threading.Event | None = None,
    progress: list[int] | None = None,
) -> str:
    """Reserve ``path`` and push its bytes through a target with ``throttle``; its asset id."""
    asset = client.create_asset(
        sb.workspace_id, file_name=path.name, content_type="image/png", idempotency_key=path.name
    )
    assert asset.upload is not None
    target = upload.UploadTarget(throttle=throttle, stop=stop)
    try:
        with path.open("rb") as stream:
            target.upload(
                asset.upload,
                stream,
                file_name=path.name,
                content_type="image/png",
                progress=None if progress is None else progress.append,
            )
    finally:
        target.close()
    return asset.asset_id


def _stored(sb: Sandbox, asset_id: str) -> str:
    blob = sb.blob_path(asset_id)
    assert blob is not None
    return sha256_of(blob)


@pytest.mark.parametrize(
    ("size", "rate"),
    [(300_000, MIB), (upload.CHUNK_BYTES + MIB // 2, 4 * MIB)],
    ids=["in memory", "streamed"],
)
def test_a_limited_body_goes_in_pieces(
    sandbox: Sandbox, client: api.FloraClient, tmp_path: Path, size: int, rate: int
) -> None:
    """Under a limit a body (small or streamed) goes in pieces of at most 1/20 s of the rate,
    the progress hears of each, the bytes stored are the file's, and it took its time."""
    path = tmp_path / "paced.png"
    write_file(path, size, seed=3)
    sandbox.record_arrivals()
    progress: list[int] = []
    asset_id = _push(client, sandbox, path, Throttle(rate), progress=progress)
    assert _stored(sandbox, asset_id) == sha256_of(path)
    assert max(progress) <= piece_bytes(rate)
    assert sum(progress) > size
    arrivals = sandbox.arrivals()
    assert sum(a.n for a in arrivals) == sum(progress)
    spread = arrivals[-1].t - arrivals[0].t
    assert spread >= 0.8 * (sum(progress) - rate / 10) / rate


def test_an_unlimited_body_goes_as_before(
    sandbox: Sandbox, client: api.FloraClient, tmp_path: Path
) -> None:
    """With no limit in force a small body is one piece, as without a throttle."""
    path = tmp_path / "whole.png"
    write_file(path, 300_000, seed=4)
    progress: list[int] = []
    asset_id = _push(client, sandbox, path, Throttle(), progress=progress)
    assert _stored(sandbox, asset_id) == sha256_of(path)
    assert len(progress) == 1
    assert progress[0] > 300_000


def test_stop_ends_a_paced_upload(
    sandbox: Sandbox, client: api.FloraClient, tmp_path: Path
) -> None:
    """A slow upload waiting on the limit stops when asked, and nothing is stored."""
    path = tmp_path / "slow.png"
    write_file(path, 200_000, seed=5)
    stop = threading.Event()
    outcome: list[BaseException] = []
    progress: list[int] = []

    def push() -> None:
        try:
            _push(client, sandbox, path, Throttle(1000), stop=stop, progress=progress)
        except errors.StoppedError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=push, name="slow-upload")
    thread.start()
    wait_until(lambda: progress, timeout=SHORT_TIMEOUT, message="the first piece")
    stop.set()
    thread.join(SHORT_TIMEOUT)
    assert not thread.is_alive()
    assert len(outcome) == 1
    (asset,) = sandbox.state()["assets"]
    assert sandbox.blob_path(asset["asset_id"]) is None
