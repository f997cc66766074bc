"""The config keys of issue 16 (``bandwidth``, ``on_pause``, ``control``): read, checked with a
message naming the key, and which of them a SIGHUP applies."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from florasync.config import config
from florasync.config.timetable import OFF, UNLIMITED, parse_rate
from florasync.errors import ConfigError
from florasync.service import reload

from .helpers import run_cli
from .test_config import KEY, doc, write

MINIMAL = "workspace_id: ws_1\nfolders: [{path: art, project_id: prj_1}]\n"
RATE = "must be a rate like 4MiB/s, off or unlimited"
NOT_LOOPBACK = (
    "is not a loopback address; the control API pauses, retries and changes limits, so it "
    "listens on 127.0.0.1, ::1 or localhost unless control.tls names a certificate and key for "
    "HTTPS (docs/control.md, Security)"
)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A directory holding the folder ``art`` the minimal config maps, and a PEM pair."""
    (tmp_path / "art").mkdir()
    (tmp_path / "control.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "control.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    return tmp_path


def load(base: Path, content: str | dict[str, Any]) -> config.Config:
    return config.load(write(base / "florasync.yaml", content))


TLS = {"cert": "control.crt", "key": "control.key"}
BAD = {
    "limit in bits": (doc(bandwidth={"limit": "100Mbit/s"}), "bandwidth.limit", "bits"),
    "limit of no unit": (
        doc(bandwidth={"limit": "4XB/s"}),
        "bandwidth.limit",
        'unknown unit "XB" in "4XB/s"',
    ),
    "limit a list": (doc(bandwidth={"limit": [4]}), "bandwidth.limit", f"{RATE} (got [4])"),
    "limit bare on": (
        f"{MINIMAL}bandwidth: {{limit: on}}\n",
        "bandwidth.limit",
        f"{RATE} (got true: YAML reads a bare on or yes as true)",
    ),
    "bad schedule line": (
        doc(bandwidth={"schedule": ["Sat-Sun off", "Mon-Fri 8-18 4MiB/s"]}),
        "bandwidth.schedule[1]",
        '"Mon-Fri 8-18 4MiB/s": a time range must be HH:MM-HH:MM (got "8-18")',
    ),
    "schedule line a number": (
        doc(bandwidth={"schedule": [1320]}),
        "bandwidth.schedule[0]",
        'must be text like "Mon-Fri 08:00-18:00 4MiB/s" (got 1320)',
    ),
    "schedule not a list": (
        doc(bandwidth={"schedule": "Sat-Sun off"}),
        "bandwidth.schedule",
        "must be a list of lines like",
    ),
    "bandwidth misspelt key": (
        doc(bandwidth={"limt": "4MiB/s"}),
        "bandwidth.limt",
        "unknown key 'limt'; did you mean 'limit'?",
    ),
    "on_pause unknown": (doc(on_pause="pause"), "on_pause", "must be finish or stop"),
    "control without listen": (doc(control={}), "control.listen", "is missing"),
    "control listen without host": (doc(control={"listen": "8385"}), "control.listen", "HOST:PORT"),
    "control port too high": (
        doc(control={"listen": "127.0.0.1:70000"}),
        "control.listen",
        "between 0 (any free port) and 65535",
    ),
    "control on every address": (
        doc(control={"listen": "0.0.0.0:8385"}),
        "control.listen",
        f"0.0.0.0 {NOT_LOOPBACK}",
    ),
    "control on a LAN address": (
        doc(control={"listen": "192.168.1.5:8385"}),
        "control.listen",
        f"192.168.1.5 {NOT_LOOPBACK}",
    ),
    "control tls cert missing": (
        doc(control={"listen": "0.0.0.0:8385", "tls": {**TLS, "cert": "nope.crt"}}),
        "control.tls.cert",
        "nope.crt does not exist or is not a file; it must be a PEM file",
    ),
    "control tls key missing": (
        doc(control={"listen": "127.0.0.1:8385", "tls": {"cert": "control.crt"}}),
        "control.tls.key",
        "is missing",
    ),
}


@pytest.mark.parametrize(("content", "key", "fragment"), BAD.values(), ids=BAD.keys())
def test_bad_settings_are_refused_naming_the_key(
    base: Path, content: str | dict[str, Any], key: str, fragment: str
) -> None:
    """Each bad value is a ConfigError (exit 2) whose key names it and whose message says why."""
    with pytest.raises(ConfigError) as info:
        load(base, content)
    assert info.value.key == key
    assert fragment in info.value.message


def test_defaults(base: Path) -> None:
    """No limit, no schedule, uploads finish when a pause begins, no control listener."""
    cfg = load(base, doc())
    assert cfg.bandwidth.default_rate() == UNLIMITED
    assert cfg.bandwidth.timetable().lines == ()
    assert cfg.bandwidth.rate_at(datetime.now().astimezone()) == UNLIMITED
    assert (cfg.on_pause, cfg.control) == ("finish", None)


def test_bandwidth_is_parsed_at_load(base: Path) -> None:
    """The limit and the schedule come out of the config as a rate and a timetable."""
    cfg = load(
        base,
        doc(
            bandwidth={
                "limit": "20MiB/s",
                "schedule": ["Mon-Fri 08:00-18:00 4MiB/s", "Sat-Sun off"],
            },
            on_pause="stop",
        ),
    )
    assert cfg.bandwidth.default_rate() == parse_rate("20MiB/s")
    table = cfg.bandwidth.timetable()
    assert [line.text for line in table.lines] == ["Mon-Fri 08:00-18:00 4MiB/s", "Sat-Sun off"]
    assert cfg.bandwidth.rate_at(datetime(2026, 12, 1, 12, 0)) == parse_rate("4MiB/s")
    assert cfg.bandwidth.rate_at(datetime(2026, 12, 5, 12, 0)) == OFF
    assert cfg.on_pause == "stop"


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("off", OFF),
        ("2000000", parse_rate("2MB/s")),
        ("null", UNLIMITED),
        ("'4 MiB/s'", parse_rate("4MiB/s")),
    ],
)
def test_limits_as_yaml_writes_them(base: Path, text: str, rate: object) -> None:
    """A bare off (a YAML boolean), a number of bytes, null, a quoted rate."""
    content = f"{MINIMAL}bandwidth:\n  limit: {text}\n"
    assert load(base, content).bandwidth.limit == rate


def test_an_empty_bandwidth_key_is_the_default(base: Path) -> None:
    """``bandwidth:`` with nothing under it is no limit, not an error."""
    content = f"{MINIMAL}bandwidth:\n"
    assert load(base, content).bandwidth == config.BandwidthConfig()


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:8385", "127.0.0.1", 8385),
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("[::1]:8385", "::1", 8385),
        ("localhost:9", "localhost", 9),
    ],
)
def test_loopback_listeners(base: Path, listen: str, host: str, port: int) -> None:
    """Loopback addresses, and port 0 for any free port."""
    control = load(base, doc(control={"listen": listen})).control
    assert control is not None
    assert (control.host, control.port, control.tls) == (host, port, None)


def test_any_address_with_tls(base: Path) -> None:
    """With a certificate and key the listener may be off-host; relative paths are the config
    file's."""
    control = load(base, doc(control={"listen": "0.0.0.0:8385", "tls": TLS})).control
    assert control is not None
    assert control.tls == config.TlsConfig(cert=base / "control.crt", key=base / "control.key")


def test_check_exits_2_naming_the_schedule_line(base: Path) -> None:
    """``florasync check`` on a bad schedule line exits 2 with the key and the problem."""
    path = write(
        base / "c.yaml", doc(bandwidth={"schedule": ["Sat-Sun off", "Mon-Fri 8-18 4MiB/s"]})
    )
    result = run_cli("check", "-c", str(path), api_key=KEY)
    assert result.returncode == 2
    assert (
        'bandwidth.schedule[1]: "Mon-Fri 8-18 4MiB/s": a time range must be HH:MM-HH:MM '
        '(got "8-18")'
    ) in result.stdout + result.stderr


def test_a_reload_applies_bandwidth_and_on_pause_and_defers_control(base: Path) -> None:
    """SIGHUP: the new bandwidth and on_pause are applied at once; control waits for a restart."""
    running = load(base, doc())
    path = write(
        base / "florasync.yaml",
        doc(bandwidth={"limit": "4MiB/s"}, on_pause="stop", control={"listen": "127.0.0.1:0"}),
    )
    new = reload.read(path, {"FLORA_API_KEY": KEY}, running)
    assert new.cfg.bandwidth.limit == parse_rate("4MiB/s")
    assert new.cfg.on_pause == "stop"
    assert new.cfg.control is None
    assert new.restart_only == ["control"]
