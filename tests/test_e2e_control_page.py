"""The control page (issue 16) in headless Chromium, against a real daemon and the sandbox.

Each test starts `florasync run` with ``control: {listen: 127.0.0.1:0}``, opens the page the
daemon names in ``control.json``, and checks what a user sees there against what FLORA (the
sandbox) saw. ``FLORASYNC_SCREENSHOT=docs/control-page.png`` makes the lively-page test also
save its screenshot there (the README's picture).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver

from florasync.sandbox.faults import MB

from .browser import ControlPage, chromium, require_chromium
from .daemonenv import Daemon, running
from .helpers import (
    LONG_TIMEOUT,
    SHORT_TIMEOUT,
    assert_exactly_once,
    free_port,
    sha256_of,
    wait_until,
    write_file,
)
from .syncenv import SyncEnv

SETTLE_SECONDS = 0.2
QUIET_SECONDS = 1.0  # how long a paused daemon is watched for requests it must not send
SMALL_LIMIT_BYTES = 100_000  # the sandbox refuses images larger than this, when asked to
SCREENSHOT_MIN_BYTES = 20_000
MARKUP_NAME = "<img src=x onerror=window.pwned=1>"
LIVELY_FOLDERS = ("moodboards", "campaigns", "renders")
LIVELY_SIZES = (48_000, 21_000, 95_000, 33_000, 62_000, 27_000, 80_000)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the module (each test opens its own daemon's origin)."""
    require_chromium()
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as browser:
        yield browser


@contextlib.contextmanager
def control_page(
    env: SyncEnv,
    tmp_path: Path,
    driver: webdriver.Chrome,
    *,
    listen: str = "127.0.0.1:0",
    name: str = "notify",
    **config: Any,
) -> Iterator[tuple[ControlPage, Daemon]]:
    """The daemon running with its control listener, and its page open and live."""
    env.write_config(control={"listen": listen}, settle_seconds=SETTLE_SECONDS, **config)
    try:
        with running(env, tmp_path, name) as daemon:
            url, token = control_endpoint(env.state_dir)
            yield ControlPage(driver, url, token).open(), daemon
    finally:
        driver.get("about:blank")  # after the daemon stopped: the page saw it go


def control_endpoint(state_dir: Path) -> tuple[str, str]:
    """The page's URL (control.json) and the token (control.token) the daemon wrote."""
    endpoint = state_dir / "control.json"
    wait_until(endpoint.exists, timeout=SHORT_TIMEOUT, message="control.json")
    url = str(json.loads(endpoint.read_text())["url"])
    return url, (state_dir / "control.token").read_text().strip()


def api_status(page: ControlPage) -> dict[str, Any]:
    answer = requests.get(page.url.rstrip("/") + "/api/v1/status", timeout=SHORT_TIMEOUT)
    assert answer.status_code == 200, answer.text
    status: dict[str, Any] = answer.json()
    return status


def ready_assets(env: SyncEnv) -> dict[str, str]:
    """sha256 -> asset id of every ready asset in the sandbox."""
    assets = env.sb.state(requests=False)["assets"]
    return {a["sha256"]: a["asset_id"] for a in assets if a["status"] == "ready"}


def shows_synced(page: ControlPage, *paths: Path) -> bool:
    return {str(p) for p in paths} <= page.row_paths("synced-row")


def assert_unchanged_for(seconds: float, read: Callable[[], Any], what: str) -> None:
    """``read()`` gives the same value for ``seconds`` (checked all along, failing at once)."""
    first = read()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert read() == first, f"{what} changed"
        time.sleep(0.05)  # the polling interval of an invariant, not a synchronisation


def save_screenshot(page: ControlPage, path: Path, *, full_page: bool = False) -> None:
    size = page.screenshot(path, full_page=full_page)
    assert size > SCREENSHOT_MIN_BYTES, f"{path} is only {size} bytes: a blank page?"


def test_synced_files_show_with_their_flora_asset_links(
    env: SyncEnv, tmp_path: Path, driver: webdriver.Chrome
) -> None:
    """Files synced by the daemon are listed with links to their own FLORA assets (a name
    written in HTML shown as text), and each folder shows its project, its watch and its
    count."""
    marked_up = f"{MARKUP_NAME}.png"
    files = {
        env.add(0, "moodboard-01.png"): env.projects[0],
        env.add(0, marked_up): env.projects[0],
        env.add(1, "shot-01.png"): env.projects[1],
    }
    with control_page(env, tmp_path, driver) as (page, _):
        wait_until(lambda: shows_synced(page, *files), message="three synced rows")
        rows = {row["path"]: row for row in page.rows("synced-row")}
        wait_until(
            lambda: {r["path"]: r["text"] for r in page.rows("folder-row")}.get(
                str(env.folders[0]), ""
            ).count("2 synced"),
            message="the first folder's count",
        )
        folders = {row["path"]: row["text"] for row in page.rows("folder-row")}
        injected = driver.execute_script(
            "return [document.querySelectorAll('main img').length, window.pwned === undefined]"
        )
        save_screenshot(page, tmp_path / "synced.png")
        assert page.errors() == []  # no exception, nothing the page's CSP refused
    assert marked_up in rows[str(env.folders[0] / marked_up)]["text"]
    assert injected == [0, True], "a file name became markup"
    assets = ready_assets(env)
    for path in files:
        assert rows[str(path)]["href"].rstrip("/").rsplit("/", 1)[-1] == assets[sha256_of(path)]
    for folder, project in zip(env.folders, env.projects, strict=True):
        assert project in folders[str(folder)]
        assert "armed" in folders[str(folder)]
    assert "1 synced" in folders[str(env.folders[1])]
    assert_exactly_once(env.sb.state(), files)


def test_a_failure_shows_its_reason_and_retry_syncs_it(
    env: SyncEnv, tmp_path: Path, driver: webdriver.Chrome
) -> None:
    """A file FLORA refuses is listed with its code and message; once the cause is gone, its
    Retry button (the token pasted when asked, asked again after a wrong one) syncs it."""
    env.sb.faults.update(max_image_bytes=SMALL_LIMIT_BYTES)
    with control_page(env, tmp_path, driver) as (page, _):
        poster = env.add(0, "poster-large.png", size=3 * SMALL_LIMIT_BYTES)
        wait_until(lambda: page.row_paths("failure-row") == {str(poster)}, message="the failure")
        [row] = page.rows("failure-row")
        [failure] = [f for f in env.status()["failures"] if f["path"] == str(poster)]
        assert "File too large" in row["text"]
        assert ready_assets(env) == {}, "the refused file became an asset"
        save_screenshot(page, tmp_path / "failure.png")

        env.sb.faults.update(max_image_bytes=50 * MB)
        page.button_in_row("failure-row", poster, "retry").click()
        assert "needs" in page.give_token("not-the-token")
        assert "refused" in page.give_token()  # asked again after the 401
        wait_until(lambda: shows_synced(page, poster), message="the retried file synced")
        wait_until(lambda: not page.rows("failure-row"), message="the failure gone")
        assert page.stored_token() == page.token
        assert driver.execute_script("return document.cookie") == ""
        assert page.token not in driver.current_url
    assert failure["code"] in row["text"]
    assert failure["message"] in row["text"]
    stored = env.sb.blob_path(ready_assets(env)[sha256_of(poster)])
    assert stored is not None
    assert stored.read_bytes() == poster.read_bytes()


def test_pause_stops_uploads_and_resume_drains_them(
    env: SyncEnv, tmp_path: Path, driver: webdriver.Chrome
) -> None:
    """After Pause (for 1 h) the banner says paused until when and by whom, new files cause no
    request at FLORA; Resume (no token asked again) syncs each of them once."""
    first = env.add(0, "before-pause.png")
    with control_page(env, tmp_path, driver) as (page, _):
        wait_until(lambda: shows_synced(page, first), message="the first file synced")
        page.pause_for("for 1 h")
        page.give_token()
        wait_until(lambda: page.banner()[0] == "paused", message="the paused banner")
        paused = api_status(page)["paused"]
        requests_before = len(env.sb.state()["requests"])
        later = [env.add(n % 2, f"while-paused-{n}.png") for n in range(3)]
        wait_until(lambda: "3 waiting" in page.text("queue"), message="the files queued")
        assert_unchanged_for(
            QUIET_SECONDS, lambda: len(env.sb.state()["requests"]), "FLORA's request log"
        )
        assert len(env.sb.state()["requests"]) == requests_before, "a request while paused"
        banner = page.banner()[1]
        assert not shows_synced(page, *later)

        page.click("resume")
        assert not page.token_asked()
        wait_until(lambda: shows_synced(page, *later), message="the queued files synced")
        wait_until(lambda: page.banner()[0] == "syncing", message="the banner back to syncing")
    assert paused["paused"] is True
    assert paused["by"] == "api"
    until = datetime.fromisoformat(paused["until"]).timestamp() - datetime.now(UTC).timestamp()
    assert 3500 < until <= 3600
    assert "Paused until" in banner
    assert "by api" in banner
    assert len(env.sb.state()["requests"]) > requests_before
    assert_exactly_once(env.sb.state(), env.expected())


def test_the_chart_draws_the_last_hour(
    env: SyncEnv, tmp_path: Path, driver: webdriver.Chrome
) -> None:
    """The throughput chart draws a bar for each of the last 60 minutes and its bars add up to
    the files synced and the bytes uploaded."""
    files = [env.add(n % 2, f"chart-{n}.png", size=10_000 + n) for n in range(5)]
    with control_page(env, tmp_path, driver) as (page, _):
        wait_until(lambda: page.chart()["files"] == len(files), message="the chart's files")
        chart = page.chart()
        save_screenshot(page, tmp_path / "chart.png")
        assert page.errors() == []
    assert chart["bars"] == 60
    assert chart["drawn_bars"] >= 1
    assert chart["bytes"] == sum(p.stat().st_size for p in files)
    assert chart["summary"].startswith("5 files")
    assert chart["width"] > 200
    assert chart["height"] > 100


def test_a_phone_wide_window_does_not_scroll_sideways(
    env: SyncEnv, tmp_path: Path, driver: webdriver.Chrome
) -> None:
    """At 375 px wide, long paths, a failure and every section fit: no horizontal scroll."""
    env.sb.faults.update(max_image_bytes=SMALL_LIMIT_BYTES)
    deep = env.folders[0] / ("a-long-directory-name-with-no-space-" * 3) / "renders"
    long_name = deep.relative_to(env.folders[0]) / ("final_" * 30 + ".png")
    synced = env.add(0, str(long_name))
    refused = env.add(1, "x" * 150 + ".png", size=2 * SMALL_LIMIT_BYTES)
    with control_page(env, tmp_path, driver) as (page, _):
        wait_until(lambda: shows_synced(page, synced), message="the long path synced")
        wait_until(lambda: page.row_paths("failure-row") == {str(refused)}, message="failure")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True},
        )
        try:
            overflow = page.horizontal_overflow()
            save_screenshot(page, tmp_path / "phone.png")
        finally:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert overflow["viewport"] == 375
    assert overflow["scroll_width"] <= 375, overflow
    assert overflow["past"] == [], overflow


def test_the_page_says_disconnected_and_reconnects_by_itself(
    env: SyncEnv, tmp_path: Path, driver: webdriver.Chrome
) -> None:
    """When the daemon stops the page says disconnected; when it is back on the same address the
    page is live again without a reload."""
    listen = f"127.0.0.1:{free_port()}"
    with control_page(env, tmp_path, driver, listen=listen) as (page, daemon):
        driver.execute_script("window.notReloaded = true")
        assert daemon.stop() == 0
        page.wait_connection("disconnected")
        with running(env, tmp_path, "notify-again"):
            wait_until(lambda: page.connection() == "live", timeout=LONG_TIMEOUT, message="live")
            assert driver.execute_script("return window.notReloaded") is True
            after = env.add(0, "after-restart.png")
            wait_until(lambda: shows_synced(page, after), message="a file synced after it")


def test_a_lively_page_shows_an_upload_in_flight_and_the_limit(
    env: SyncEnv, tmp_path: Path, driver: webdriver.Chrome
) -> None:
    """With three folders, synced files, a failure and a large file under a bandwidth limit,
    the upload's progress bar grows and the limit in force is shown."""
    moodboards, campaigns, renders = (tmp_path / "FLORA" / n for n in LIVELY_FOLDERS)
    folders = [
        {"path": str(moodboards), "project_id": env.projects[0]},
        {"path": str(campaigns), "project_id": env.projects[1]},
        {"path": str(renders), "project": {"name": "Renders", "create": True}},
    ]
    env.sb.faults.update(max_image_bytes=SMALL_LIMIT_BYTES)
    small = [(moodboards, campaigns)[n % 2] / f"look-{n:02d}.png" for n in range(len(LIVELY_SIZES))]
    for seed, (path, size) in enumerate(zip(small, LIVELY_SIZES, strict=True)):
        write_file(path, size, seed=seed)
    renders.mkdir()
    limited = {"limit": "256KiB/s"}
    with control_page(env, tmp_path, driver, folders=folders, bandwidth=limited) as (page, _):
        wait_until(lambda: shows_synced(page, *small), message="the small files synced")
        refused = campaigns / "wall-scan-600dpi.png"
        write_file(refused, 2 * SMALL_LIMIT_BYTES, seed=100)
        wait_until(lambda: page.row_paths("failure-row") == {str(refused)}, message="failure")
        turntable = renders / "turntable.mp4"
        write_file(turntable, 3 * 512 * 1024, seed=101)  # 6 s at the limit
        wait_until(lambda: _progress(page, turntable) > 0.05, message="the upload under way")
        first = _progress(page, turntable)
        wait_until(lambda: _progress(page, turntable) > first, message="the progress bar grows")
        bandwidth = page.text("bandwidth")
        save_screenshot(page, tmp_path / "lively.png")
        target = os.environ.get("FLORASYNC_SCREENSHOT")
        if target:
            save_screenshot(page, Path(target), full_page=True)
        wait_until(lambda: shows_synced(page, turntable), message="the large file synced")
    assert "256" in bandwidth
    assert "KiB/s" in bandwidth
    assert sha256_of(turntable) in ready_assets(env)


def _progress(page: ControlPage, path: Path) -> float:
    """The fraction the progress bar of ``path``'s upload shows (0 when none is shown)."""
    for row in page.rows("transfer-row"):
        if row["path"] == str(path) and row["progress"]:
            value, top = row["progress"]
            return float(value) / float(top)
    return 0.0
