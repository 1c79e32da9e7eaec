"""Headless Chromium driven by Selenium, for the tests that open what a user opens: the report and the MLflow UI.

Uses Debian's chromium and chromium-driver (``bash scripts/bootstrap.sh --test`` installs both), never a
browser download. Console messages are read through ChromeDriver's ``goog:loggingPrefs``; screenshots
go to ``SWEEPER_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the repository root) and stay there
after the run.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("SWEEPER_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
# Flags for a closed network and a root user: no sandbox, no background calls to Google's hosts.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WINDOW = (1400, 1000)


@dataclass(frozen=True)
class ConsoleMessage:
    level: str  # SEVERE (console.error, failed resource, uncaught exception), WARNING, INFO
    source: str  # console-api, network, javascript, ...
    text: str


class Browser:
    """One headless Chromium session; ``open`` returns the console messages the page logged."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
        if missing:
            raise RuntimeError(
                f"{', '.join(missing)} missing: run `bash scripts/bootstrap.sh --test` "
                "(installs Debian's chromium and chromium-driver)"
            )
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        self.profile = tempfile.mkdtemp(prefix="sweeper-chromium-")
        for flag in (*FLAGS, f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)

    def open(
        self, url: str, *, until_text: str | re.Pattern | None = None, timeout_s: float = 60.0
    ) -> list[ConsoleMessage]:
        """Loads ``url``, waits for ``until_text`` (a string or a regex) in the page body (for single-page
        apps, which render after the load event), returns the console messages."""
        self.driver.get(url)
        if until_text is not None:
            self.wait_for_text(until_text, timeout_s)
        return self.console()

    def wait_for_text(self, text: str | re.Pattern, timeout_s: float = 60.0) -> str:
        """Polls the page's visible text until it holds ``text``; returns that text."""
        pattern = text if isinstance(text, re.Pattern) else re.compile(re.escape(text))

        def holding() -> str | None:
            shown = self.text()
            return shown if pattern.search(shown) else None

        return self.wait_until(holding, repr(pattern.pattern), timeout_s)

    def wait_until(self, condition, what: str, timeout_s: float = 60.0):
        """Polls ``condition()`` until it returns something truthy, and returns that; fails naming ``what`` and
        the page's text after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not (result := condition()):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} did not appear on {self.driver.current_url} within {timeout_s} s; the page shows:\n"
                    f"{self.text()[-1500:]}"
                )
            time.sleep(0.25)
        return result

    def links(self) -> list[str]:
        """The targets of the links the page shows (rendered, not hidden)."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('a[href]')].filter(a => a.getClientRects().length).map(a => a.href)"
        )

    def text(self) -> str:
        """The page's visible text."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text

    def console(self) -> list[ConsoleMessage]:
        """Console messages since the last call (ChromeDriver hands each out once)."""
        return [ConsoleMessage(m["level"], m.get("source", ""), m["message"]) for m in self.driver.get_log("browser")]

    def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        """Saves a PNG under ARTIFACTS; ``full_page`` first grows the window to the page's height."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        if full_page:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(WINDOW[0], min(int(height) + 100, 16000))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(*WINDOW)
        return path

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    @staticmethod
    def errors(messages: list[ConsoleMessage], *, allowed: tuple[str, ...] = ()) -> list[ConsoleMessage]:
        """The SEVERE messages (console errors, failed loads, uncaught exceptions) not matched by ``allowed``."""
        return [m for m in messages if m.level == "SEVERE" and not any(a in m.text for a in allowed)]
