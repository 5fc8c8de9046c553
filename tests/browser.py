"""Selenium helpers: Debian's headless Chromium driven by its own chromedriver.

Nothing is ever downloaded: the driver is ``/usr/bin/chromedriver`` (Debian's
``chromium-driver``) given to selenium's ``Service``, so selenium-manager is
never asked to fetch one. Each browser gets a fresh ``--user-data-dir``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "chrome",
    "missing_browser",
    "require_browser",
    "wait_until",
]

CHROMIUM = Path(os.environ.get("ATOMICPLUG_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("ATOMICPLUG_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--password-store=basic",
    "--lang=en-US",
)

T = TypeVar("T")


def missing_browser() -> str | None:
    """Why a browser test cannot run here (None when chromium, chromedriver and selenium are present)."""
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not (CHROMEDRIVER.is_file() and os.access(CHROMEDRIVER, os.X_OK)):
        missing.append(f"{CHROMEDRIVER} (apt-get install chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    return ", ".join(missing) or None


def require_browser() -> None:
    """Skip when the browser is missing, except in CI (``CI=true``), where that is a failure."""
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests need: {reason}")
    pytest.skip(f"browser tests need: {reason}")


@contextmanager
def chrome(profile_dir: Path, width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile in ``profile_dir``; quits on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile_dir.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    log_path = profile_dir.parent / f"{profile_dir.name}-chromedriver.log"
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_path))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


def wait_until(driver: Any, condition: Callable[[Any], T], timeout: float = 20.0, message: str = "") -> T:
    """``WebDriverWait(driver, timeout).until(condition)``, with the page's state in the failure."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page re-renders its cards: an element found a moment ago may be replaced before it is asked.
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)).until(
            condition
        )
    except TimeoutException:
        text = driver.find_element("tag name", "body").text
        raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}; page text:\n{text}") from None
