"""The browser tier: the dashboard in real headless Chromium, against a real
`runnerd serve` process on the real Docker engine (tests/conftest.py's `daemon`).

Debian's chromium and chromedriver only, and nothing fetched: Selenium Manager is
kept offline (SE_OFFLINE) and the binaries are named, so a run never downloads a
browser. Missing binaries are a failure, never a skip: tests/run.sh installs them.

Every test that uses `browser` leaves a screenshot in its tmp_path (pass or fail),
and fails when the page logged a JS error or a Content-Security-Policy violation:
the CSP forbids inline script and style, and only a real browser enforces it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Daemon

from .chrome import Browser, SyncApi, chrome


@pytest.fixture
def browser(tmp_path: Path, daemon: Daemon) -> Iterator[Browser]:
    """A fresh Chromium (its own profile in tmp_path) pointed at the `daemon`."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    try:
        driver = chrome(profile)
    except AssertionError as e:
        pytest.fail(str(e))
    b = Browser(driver, daemon.url)
    try:
        yield b
    finally:
        try:
            driver.save_screenshot(str(tmp_path / "screenshot.png"))
            errors = b.errors()
        finally:
            driver.quit()
    if errors:
        pytest.fail("the browser's console has errors:\n" + "\n".join(errors))


@pytest.fixture
def api(daemon: Daemon) -> SyncApi:
    return SyncApi(daemon.url, daemon.key)
