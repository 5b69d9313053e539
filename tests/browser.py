"""A real headless Chromium for the dashboard and report tests (Debian's chromium + chromium-driver).

Locally the tests skip when the browser is not installed; under ``CI=true`` a missing browser is a
failure, never a skip. ``.ci/run`` installs both packages.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1400,1000",
)


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.path.isfile(name) else None)
        if found:
            return found
    return None


def require_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; skip locally or fail under CI when either is missing."""
    chromium = _find("chromium", "/usr/bin/chromium", "chromium-browser")
    driver = _find("chromedriver", "/usr/bin/chromedriver")
    if chromium is None or driver is None:
        message = "headless Chromium tests need the Debian packages chromium and chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(f"required under CI: {message}")
        pytest.skip(message)
    return chromium, driver


@contextmanager
def open_browser() -> Iterator[Any]:
    """A Selenium Chrome WebDriver on the system Chromium (no download of any driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


def wait_for(condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def broken_images(browser: Any) -> list[str]:
    """The ``src`` of every <img> on the page that did not load (complete with no pixels)."""
    result: list[str] = browser.execute_script(
        "return Array.from(document.images).filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src);"
    )
    return result


def screenshot(browser: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    return path
