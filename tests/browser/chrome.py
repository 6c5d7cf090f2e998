"""The browser tier's tools: a headless Chromium on Debian's binaries (`chrome`), a
`Browser` around its WebDriver (console kept, waits, login through the form) and a
blocking API client (`SyncApi`) for a test's setup. Shared by conftest.py's fixtures
and screenshots.py; nothing here needs pytest."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.harness import TEST_IMAGE_NAME, TEST_IMAGE_TAG

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)
WAIT = 20.0  # seconds: the longest any page or live part may take in a test
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
)


def chrome(user_data_dir: Path, window: tuple[int, int] = WINDOW) -> WebDriver:
    """A headless Chromium on Debian's binaries, its console kept for the test to read.
    Shared with tests/browser/screenshots.py."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        raise AssertionError(
            f"{' and '.join(missing)} missing: the browser tier needs Debian's chromium "
            "and chromium-driver (tests/run.sh installs them: apt-get install chromium "
            "chromium-driver)"
        )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    # --window-size counts the window's own bars: the page itself gets exactly this.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False},
    )
    return driver


class Browser:
    """The WebDriver and what the console said so far (get_log drains it, so every
    read is kept here for the end-of-test check)."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.url = url
        self.console: list[dict[str, Any]] = []

    def read_console(self) -> list[dict[str, Any]]:
        try:
            self.console.extend(self.driver.get_log("browser"))
        except WebDriverException:
            pass  # the browser is gone: what it said before is kept
        return self.console

    def errors(self) -> list[str]:
        """JS errors and CSP violations: SEVERE entries, and anything naming the
        Content Security Policy whatever its level. A 404 favicon is no error of ours."""
        found = []
        for entry in self.read_console():
            message = str(entry.get("message", ""))
            if "favicon.ico" in message:
                continue
            if entry.get("level") == "SEVERE" or "Content Security Policy" in message:
                found.append(f"{entry.get('level')} {entry.get('source', '')}: {message}")
        return found

    # -- conveniences -------------------------------------------------------------

    def get(self, path: str) -> None:
        self.driver.get(self.url + path)

    def wait(self, timeout: float = WAIT) -> WebDriverWait[WebDriver]:
        return WebDriverWait(self.driver, timeout)

    def find(self, css: str) -> Any:
        """The element once it is there (waits up to WAIT)."""
        return self.wait().until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))

    def all(self, css: str) -> list[Any]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def path(self) -> str:
        current: str = self.driver.current_url
        return current.removeprefix(self.url).split("?")[0]

    def login(self, key: str) -> None:
        """Through the login form, as a person does; lands on the overview."""
        self.get("/ui/login")
        field = self.find("input#api_key")
        field.clear()
        field.send_keys(key)
        self.find("button#login").click()
        self.wait().until(lambda d: self.path() == "/ui/", "the overview after logging in")
        self.find("button#logout")


# -- the API, synchronously (Selenium is blocking; the setup needs no event loop) --


class SyncApi:
    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.request(method, path, body)
        assert status == 200, f"{method} {path}: {status} {data!r}"
        return data

    def create_runner(self, name: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "image_name": TEST_IMAGE_NAME, "image_tag": TEST_IMAGE_TAG}
        runner: dict[str, Any] = self.ok("POST", "/v1/runners", {**body, **fields})["runner"]
        return runner

    def trigger(self, runner_id: str, body: Any = None) -> dict[str, Any]:
        run: dict[str, Any] = self.ok("POST", f"/v1/runners/{runner_id}/runs", body or {})["run"]
        return run

    def run(self, runner_id: str, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.ok("GET", f"/v1/runners/{runner_id}/runs/{run_id}")["run"]
        return run

    def logs(self, runner_id: str, run_id: str) -> str:
        status, body = self.request("GET", f"/v1/runners/{runner_id}/runs/{run_id}/logs")
        assert status == 200, body
        return body.decode() if isinstance(body, bytes) else json.dumps(body)


def wait_for(predicate: Callable[[], Any], *, timeout: float = WAIT, what: str) -> Any:
    """Poll a blocking predicate until it is truthy (WebDriverWait's loop, no driver)."""
    return WebDriverWait(None, timeout, poll_frequency=0.1).until(
        lambda _: predicate(), f"timed out after {timeout} s waiting for {what}"
    )
