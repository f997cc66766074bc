"""The shipped systemd units: they verify cleanly, keep their promises, and stay hardened."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS_DIR = Path(__file__).resolve().parent.parent / "systemd"
MAX_EXPOSURE = 2.0
ANALYZE_TIMEOUT = 60

SYSTEM_SERVICES = ("florasync.service", "florasync@.service", "florasync-scan.service")
HARDENING = {
    ("NoNewPrivileges", "yes"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("SystemCallFilter", "@system-service"),
    ("UMask", "0077"),
}
SYSTEM_HARDENING = HARDENING | {
    ("ProtectSystem", "strict"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("CapabilityBoundingSet", ""),
}
DAEMON = {
    ("Type", "notify"),
    ("Restart", "on-failure"),
    ("RestartPreventExitStatus", "2 3"),
    ("ExecReload", "/bin/kill -HUP $MAINPID"),
}
REQUIRED = {
    "florasync.service": DAEMON | SYSTEM_HARDENING,
    "florasync@.service": DAEMON | SYSTEM_HARDENING,
    "florasync-scan.service": {("Type", "oneshot")} | SYSTEM_HARDENING,
    "user/florasync.service": DAEMON | HARDENING,
}


def test_daemon_units_keep_the_promised_directives() -> None:
    """Every unit carries the readiness, restart and sandbox settings the issue requires."""
    for name, required in REQUIRED.items():
        settings = _settings(UNITS_DIR / name)
        assert required <= set(settings), (name, required - set(settings))
        if ("Type", "notify") in settings:
            assert any(key == "WatchdogSec" for key, _ in settings), name


def test_system_units_take_the_key_as_a_credential_only() -> None:
    """System units load the key with LoadCredential= and never put it in their environment."""
    for name in SYSTEM_SERVICES:
        settings = _settings(UNITS_DIR / name)
        credentials = [value for key, value in settings if key == "LoadCredential"]
        assert len(credentials) == 1, name
        assert credentials[0].startswith("flora_api_key:/etc/florasync/"), name
        assert not any(key.startswith("Environment") for key, _ in settings), name


def test_every_directive_is_explained_by_a_comment() -> None:
    """Each setting sits in a block that starts with a comment saying why it is there."""
    for path in sorted(UNITS_DIR.rglob("*")):
        if not path.is_file():
            continue
        block_commented = False
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip() or line.startswith("["):
                block_commented = False
            elif line.startswith("#"):
                block_commented = True
            else:
                assert block_commented, f"{path.name}:{number} has no comment: {line}"


def test_timer_runs_the_scan_unit_and_catches_up_after_downtime() -> None:
    """The timer starts florasync-scan.service on a calendar and runs missed slots at boot."""
    settings = set(_settings(UNITS_DIR / "florasync-scan.timer"))
    assert {("Unit", "florasync-scan.service"), ("Persistent", "true")} <= settings
    assert any(key == "OnCalendar" for key, _ in settings)


@pytest.mark.parametrize(
    "names",
    [
        ("florasync.service",),
        ("florasync-scan.service", "florasync-scan.timer"),
    ],
)
def test_system_units_verify_cleanly(names: tuple[str, ...], tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the system units without a single warning."""
    staged = [_stage(name, tmp_path) for name in names]
    _assert_clean(_analyze("verify", *map(str, staged)), tmp_path)


def test_template_instance_verifies_cleanly(tmp_path: Path) -> None:
    """An instance of the template (florasync@demo.service) verifies without warnings."""
    staged = _stage("florasync@.service", tmp_path)
    _assert_clean(_analyze("verify", str(staged.with_name("florasync@demo.service"))), tmp_path)


def test_user_unit_verifies_in_a_user_manager(tmp_path: Path) -> None:
    """The user unit verifies under `--user`, with %h/.local/bin/florasync resolved."""
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "florasync").symlink_to(_florasync_executable())
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / "units" / "florasync.service"
    unit.parent.mkdir()
    shutil.copyfile(UNITS_DIR / "user" / "florasync.service", unit)
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    _assert_clean(_analyze("--user", "verify", str(unit), env=env), tmp_path)


@pytest.mark.parametrize("name", SYSTEM_SERVICES)
def test_system_units_are_exposed_at_most_2_0(name: str, tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates every system unit 2.0 or better."""
    staged = _stage(name, tmp_path)
    if "@" in name:
        staged = staged.with_name("florasync@demo.service")
    result = _analyze("security", "--offline=true", str(staged))
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert found is not None, result.stdout
    assert float(found[1]) <= MAX_EXPOSURE, result.stdout


def test_sysusers_entry_creates_the_service_user(tmp_path: Path) -> None:
    """systemd-sysusers accepts the entry and would create the florasync user and group."""
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed")
    config = UNITS_DIR / "sysusers.d" / "florasync.conf"
    result = subprocess.run(
        [sysusers, "--dry-run", f"--root={tmp_path}", str(config)],
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Creating user 'florasync'" in result.stdout + result.stderr


def _settings(path: Path) -> list[tuple[str, str]]:
    """(key, value) of every setting line, comments and section headers left out."""
    pairs = []
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


def _stage(name: str, tmp_path: Path) -> Path:
    """Copy a unit into tmp_path; a service's ExecStart then runs this test run's florasync."""
    text = (UNITS_DIR / name).read_text()
    staged = tmp_path / name
    if not name.endswith(".service"):
        staged.write_text(text)
        return staged
    exe = _florasync_executable()
    staged_text, count = re.subn(
        r"^ExecStart=\S*/florasync ", f"ExecStart={exe} ", text, flags=re.MULTILINE
    )
    assert count == 1, f"{name} should have exactly one florasync ExecStart"
    staged.write_text(staged_text)
    return staged


def _florasync_executable() -> Path:
    sibling = Path(sys.executable).parent / "florasync"
    found = sibling if sibling.is_file() else Path(shutil.which("florasync") or sibling)
    if not found.is_file():
        pytest.skip("the florasync console script is not installed in this environment")
    return found


def _analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run(
        [analyze, *args],
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT,
        env={**os.environ, "SYSTEMD_COLORS": "0", **(env or {})},
        check=False,
    )


def _assert_clean(result: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    """Exit 0, and no line about our files (unknown keys are only warnings, exit 0)."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    ours = [line for line in output.splitlines() if str(tmp_path) in line or "florasync" in line]
    assert not ours, output
    assert "Unknown" not in output, output
