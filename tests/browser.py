"""Headless Chromium for the control page's tests: the system's browser and driver, started
offline, and a `ControlPage` that reads the page as plain data and acts on it as a user would.

Owns how a browser is started (never Selenium Manager, which would download one) and how the
page's stable hooks (ids and ``data-testid``) are read; the scenarios live in the test modules.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from .helpers import SHORT_TIMEOUT, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root here; Chromium refuses its sandbox as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    # no name is resolved (Chromium still looks up Google's hosts for sign-in and the like):
    # the page is on 127.0.0.1, and nothing else may be reached
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1280,1000",
)


def require_chromium() -> None:
    """Skip without the system's Chromium and driver; in CI (which installs them) fail."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if not missing:
        return
    why = f"missing {', '.join(missing)}: apt-get install chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium through /usr/bin/chromedriver, with a fresh profile in ``profile``.

    Selenium Manager (which downloads a driver and a browser) is made to fail if anything
    reaches it: the driver's path is given, so nothing should.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SeleniumManager, "binary_paths", _no_selenium_manager)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _no_selenium_manager(*_args: Any) -> dict[str, str]:
    raise AssertionError("Selenium Manager was asked for a driver: it would download one")


class ControlPage:
    """The control page open in ``driver``: what a user sees, as plain values, and actions."""

    def __init__(self, driver: webdriver.Chrome, url: str, token: str) -> None:
        self.driver = driver
        self.url = url
        self.token = token

    def open(self) -> ControlPage:
        self.errors()  # what an earlier page logged is not this one's
        self.driver.get(self.url)
        self.wait_connection("live")
        return self

    def connection(self) -> str:
        return str(self.driver.find_element(By.ID, "connection").text)

    def wait_connection(self, text: str) -> None:
        wait_until(lambda: self.connection() == text, message=f"the page to say {text!r}")

    def banner(self) -> tuple[str, str]:
        """(data-state, the text shown) of the state banner."""
        banner = self.driver.find_element(By.ID, "banner")
        return str(banner.get_attribute("data-state")), str(banner.text)

    def text(self, element_id: str) -> str:
        return str(self.driver.find_element(By.ID, element_id).text)

    def rows(self, testid: str) -> list[dict[str, Any]]:
        """Each ``[data-testid=testid]`` row: its path, shown text, link and buttons."""
        rows: list[dict[str, Any]] = self.driver.execute_script(_ROWS_SCRIPT, testid)
        return rows

    def row_paths(self, testid: str) -> set[str]:
        return {row["path"] for row in self.rows(testid)}

    def button_in_row(self, testid: str, path: Path, button: str) -> WebElement:
        element: WebElement | None = self.driver.execute_script(
            _BUTTON_SCRIPT, testid, str(path), button
        )
        assert element is not None, f"no {button} button on the {testid} of {path}"
        return element

    def pause_for(self, choice: str) -> None:
        Select(self.driver.find_element(By.ID, "pause-for")).select_by_visible_text(choice)
        self.driver.find_element(By.ID, "pause").click()

    def click(self, element_id: str) -> None:
        self.driver.find_element(By.ID, element_id).click()

    def token_asked(self) -> bool:
        dialog = self.driver.find_element(By.ID, "token-dialog")
        return dialog.get_attribute("open") is not None

    def give_token(self, token: str | None = None) -> str:
        """Wait for the token dialog, paste ``token`` (the daemon's by default) and save; return
        why the page said it asked."""
        wait_until(self.token_asked, timeout=SHORT_TIMEOUT, message="the token dialog")
        why = self.text("token-why")
        field = self.driver.find_element(By.ID, "token-input")
        field.clear()
        field.send_keys(token or self.token)
        self.click("token-save")
        return why

    def stored_token(self) -> str | None:
        token: str | None = self.driver.execute_script(
            "return localStorage.getItem('florasync.control-token')"
        )
        return token

    def horizontal_overflow(self) -> dict[str, Any]:
        """The page's scroll width against its viewport, and elements reaching past it."""
        found: dict[str, Any] = self.driver.execute_script(_OVERFLOW_SCRIPT)
        return found

    def chart(self) -> dict[str, Any]:
        """The throughput chart: its drawn shapes and the files and bytes its bars carry."""
        chart: dict[str, Any] = self.driver.execute_script(_CHART_SCRIPT)
        return chart

    def errors(self) -> list[str]:
        """The console's errors since the last call: exceptions, CSP refusals, failed loads
        (a 401 asked for on purpose, or a stream cut by a stopped daemon, shows as one too)."""
        # selenium leaves get_log unannotated
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return [str(e["message"]) for e in entries if e["level"] == "SEVERE"]

    def screenshot(self, path: Path, *, full_page: bool = False) -> int:
        """Save a PNG of the page as the browser shows it (``full_page``: all of it, not only
        what the window shows); return its size in bytes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not full_page:
            assert self.driver.save_screenshot(str(path)), f"no screenshot written to {path}"
            return path.stat().st_size
        width, height = self.driver.execute_script(
            "return [window.innerWidth, document.documentElement.scrollHeight]"
        )
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        try:
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path.stat().st_size


_ROWS_SCRIPT = """
return Array.from(document.querySelectorAll(`[data-testid="${arguments[0]}"]`)).map((row) => {
  const link = row.querySelector("a[data-testid=asset-link]");
  const bar = row.querySelector("progress");
  return {
    path: row.dataset.path,
    text: row.innerText,
    href: link && !link.hidden ? link.href : null,
    progress: bar ? [bar.value, bar.max] : null,
    buttons: Array.from(row.querySelectorAll("button")).map((b) => [b.textContent, b.disabled]),
  };
});
"""

_BUTTON_SCRIPT = """
const [testid, path, button] = arguments;
const row = Array.from(document.querySelectorAll(`[data-testid="${testid}"]`))
  .find((r) => r.dataset.path === path);
return row ? row.querySelector(`[data-testid="${button}"]`) : null;
"""

_OVERFLOW_SCRIPT = """
const width = document.documentElement.clientWidth;
const past = Array.from(document.querySelectorAll("body *"))
  .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > width + 0.5)
  .map((e) => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className);
return {
  viewport: width,
  scroll_width: document.documentElement.scrollWidth,
  body_scroll_width: document.body.scrollWidth,
  past: past,
};
"""

_CHART_SCRIPT = """
const svg = document.getElementById("chart");
const bars = Array.from(svg.querySelectorAll("[data-testid=chart-bar]"));
const box = svg.getBoundingClientRect();
return {
  shapes: svg.childElementCount,
  width: box.width,
  height: box.height,
  bars: bars.length,
  drawn_bars: bars.filter((b) => b.getBoundingClientRect().height > 0).length,
  files: bars.reduce((sum, b) => sum + Number(b.dataset.files), 0),
  bytes: bars.reduce((sum, b) => sum + Number(b.dataset.bytes), 0),
  summary: document.getElementById("chart-summary").textContent,
};
"""
