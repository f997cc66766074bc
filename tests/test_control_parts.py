"""The control surface's parts without a daemon (issue 16): durations, the pause record, the
token file, the Host/Origin/token rules, and the live feed the page reads."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from florasync.config.durations import parse_duration
from florasync.local.identity import FileStat
from florasync.service.control import access
from florasync.service.control.feed import Feed
from florasync.state import pause
from florasync.sync.transfer import Job, Outcome, Result


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), (" 2H ", 7200)],
)
def test_durations_people_write(text: str, seconds: float) -> None:
    """`pause --for` takes the usual shorthands."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-1h", "0s", "1h-", "400d", "2 hours"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    """Anything else is refused with the forms that work."""
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(text)


def test_the_pause_record_round_trips_owner_only(tmp_path: Path) -> None:
    """A pause written is read back the same, the file is private, resume removes it."""
    record = pause.Pause(since=100.0, until=200.0, by="cli", reason="paused until later")
    pause.write(tmp_path, record)
    assert pause.read(tmp_path) == record
    assert stat.S_IMODE((tmp_path / "pause.json").stat().st_mode) & 0o077 == 0
    assert record.in_force(150.0)
    assert not record.in_force(200.0)
    assert pause.clear(tmp_path)
    assert pause.read(tmp_path) is None
    assert not pause.clear(tmp_path)


def test_an_unreadable_pause_record_is_a_pause(tmp_path: Path) -> None:
    """A damaged file pauses (the user asked for a pause) and says how to lift it."""
    (tmp_path / "pause.json").write_text("{not json")
    record = pause.read(tmp_path)
    assert record is not None
    assert record.until is None
    assert "resume" in record.reason


def test_the_token_is_made_once_and_private(tmp_path: Path) -> None:
    """The token survives restarts, is long, and only its owner may read it."""
    first = access.load_or_make_token(tmp_path / "state")
    assert len(first) >= 40
    assert access.load_or_make_token(tmp_path / "state") == first
    mode = stat.S_IMODE(access.token_path(tmp_path / "state").stat().st_mode)
    assert mode == 0o600


GATE = access.Gatekeeper("sekrit", "127.0.0.1", 8385, tls=False)


@pytest.mark.parametrize(
    ("method", "headers", "refused"),
    [
        ("GET", {"Host": "127.0.0.1:8385"}, None),
        ("GET", {"Host": "localhost:8385"}, None),
        ("GET", {"Host": "[::1]:8385"}, None),
        ("GET", {"Host": "evil.example:8385"}, 403),
        ("GET", {"Host": "127.0.0.1:9999"}, 403),
        ("GET", {}, 403),
        ("GET", {"Host": "127.0.0.1:8385", "Origin": "http://127.0.0.1:8385"}, None),
        ("GET", {"Host": "127.0.0.1:8385", "Origin": "http://evil.example"}, 403),
        ("GET", {"Host": "127.0.0.1:8385", "Origin": "null"}, 403),
        ("POST", {"Host": "127.0.0.1:8385"}, 401),
        ("POST", {"Host": "127.0.0.1:8385", "X-Florasync-Token": "wrong"}, 401),
        ("POST", {"Host": "127.0.0.1:8385", "X-Florasync-Token": "sekrit"}, None),
        ("POST", {"Host": "evil.example", "X-Florasync-Token": "sekrit"}, 403),
        ("DELETE", {"Host": "127.0.0.1:8385"}, 401),
    ],
)
def test_the_gatekeeper(method: str, headers: dict[str, str], refused: int | None) -> None:
    """Host names the listener, Origin is its own, changes carry the token."""
    refusal = GATE.check(method, headers)
    assert (refusal.status if refusal else None) == refused


def test_https_origins_only_with_tls() -> None:
    """With TLS the page's origin is https://; http:// from the same host is foreign."""
    gate = access.Gatekeeper("t", "studio.lan", 8385, tls=True)
    ok = {"Host": "studio.lan:8385", "Origin": "https://studio.lan:8385"}
    assert gate.check("GET", ok) is None
    assert gate.check("GET", ok | {"Origin": "http://studio.lan:8385"}) is not None


def _job(path: str, size: int) -> Job:
    return Job(
        path=path,
        folder="/f",
        project_id="prj_1",
        stat=FileStat(1, 1, size, 0, 0),
        digest="d" * 64,
        file_name=Path(path).name,
        content_type="image/png",
    )


def test_the_feed_follows_jobs_per_worker_thread() -> None:
    """Bytes sent by a thread count for its job; a synced job goes to recent and the minute."""
    now = [6000.0]
    feed = Feed(clock=lambda: now[0])
    a, b = _job("/f/a.png", 1000), _job("/f/b.png", 500)
    feed.started(a)

    def other_worker() -> None:
        feed.started(b)
        feed.sent(400)

    other = threading.Thread(target=other_worker)
    other.start()
    other.join()
    feed.sent(250)
    sent = {t["path"]: t["sent_bytes"] for t in feed.transfers()}
    assert sent == {"/f/a.png": 250, "/f/b.png": 400}
    version = feed.version
    feed.ended(a, Result(Outcome.UPLOADED, "ast_1"))
    assert feed.version > version
    assert [r["asset_id"] for r in feed.recent(5)] == ["ast_1"]
    minutes = feed.throughput()
    assert len(minutes) == 60
    assert minutes[-1]["files"] == 1
    assert minutes[-1]["bytes"] == 1000
    now[0] += 3600
    assert sum(m["files"] for m in feed.throughput()) == 0


def test_a_failed_or_parked_job_is_not_listed_as_synced() -> None:
    """Only synced outcomes reach the recent list."""
    feed = Feed()
    job = _job("/f/x.png", 10)
    feed.started(job)
    feed.ended(job, None)
    feed.started(job)
    feed.ended(job, Result(Outcome.FAILED, None, "bad", "no"))
    assert feed.recent(5) == []
    assert feed.transfers() == []
