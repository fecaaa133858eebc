"""Real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) through Selenium.

Installed by ``make browser-deps`` (which ``make test`` runs). No browser is downloaded: Selenium
is pointed at the system chromedriver, so its driver manager never runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
SCREENSHOTS = Path("runs/screenshots")


def chromium_driver(width: int = 1280, height: int = 2400):
    """A headless Chromium WebDriver that records the browser console; skip if none installed."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: make install")
    if not CHROMIUM or not Path(CHROMEDRIVER).exists():
        pytest.skip("Debian chromium/chromium-driver not installed: run `make browser-deps`")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--disable-extensions",
                "--no-first-run", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))


def console_errors(driver) -> list[dict]:
    """Browser console entries at level SEVERE (errors, CSP violations, failed loads)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
