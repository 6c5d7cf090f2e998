"""The README's dashboard screenshots, from a real daemon with a little world in it.

    python -m tests.browser.screenshots OUTDIR

starts `runnerd serve` (tests/harness.py's Daemon, on the Docker engine and the test
image, as the test suite does), makes four runners with schedules and a handful of
runs (succeeded, failed, one still running and logging on stdout and stderr), logs
in with headless Chromium at 1280×900 and saves, each page whole, OUTDIR/dashboard-overview.png and
OUTDIR/dashboard-run.png (the running run's page). Then it stops the daemon and
removes its containers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from selenium.webdriver.remote.webdriver import WebDriver

from tests.harness import Daemon, write_config

from .chrome import WINDOW, Browser, SyncApi, chrome, wait_for

# name, command, schedule (cron or None), how many runs to make and wait for
WORLD: list[tuple[str, str, str | None, int]] = [
    (
        "nightly-backup",
        'echo "dumping database app_prod"; echo "wrote 1.2 GB to /backups"',
        "0 2 * * *",
        3,
    ),
    (
        "report-mailer",
        'echo "rendering weekly report"; echo "smtp: connection timed out" >&2; exit 1',
        "0 8 * * MON",
        2,
    ),
    ("cache-warmer", 'echo "warmed 412 keys"', "@every 15m", 2),
]
# The engine's log hands over a burst's stderr lines before its stdout ones (the
# API shows them so too): a pause between lines keeps the log in the order written.
LOG_SHIPPER = (
    "log-shipper",
    "for line in 'shipping /var/log/app/*.log' 'batch 1: 2048 lines sent' "
    "'!access.log.3 rotated while reading, skipped' 'batch 2: 1911 lines sent' "
    "'!batch 3: HTTP 503, retrying in 2 s' 'batch 3: 2203 lines sent'; do "
    'case "$line" in !*) echo "warning: ${line#!}" >&2 ;; *) echo "$line" ;; esac; '
    "sleep 0.3; done; sleep 600",
)


def build_world(api: SyncApi) -> tuple[dict[str, Any], dict[str, Any]]:
    """The runners and their runs; returns (log-shipper runner, its running run)."""
    runs: list[tuple[str, str]] = []
    for name, command, cron, count in WORLD:
        runner = api.create_runner(name, run_command=command)
        if cron is not None:
            api.ok("POST", f"/v1/runners/{runner['id']}/schedules", {"cron": cron})
        for _ in range(count):
            runs.append((runner["id"], api.trigger(runner["id"])["id"]))
    for runner_id, run_id in runs:
        wait_for(
            lambda: api.run(runner_id, run_id)["status"] in ("succeeded", "failed"),
            timeout=60,
            what=f"run {run_id} to complete",
        )
    name, command = LOG_SHIPPER
    shipper = api.create_runner(name, run_command=command)
    api.ok("POST", f"/v1/runners/{shipper['id']}/schedules", {"cron": "*/30 * * * *"})
    running = api.trigger(shipper["id"])
    wait_for(
        lambda: (
            api.run(shipper["id"], running["id"])["status"] == "running"
            and "batch 3" in api.logs(shipper["id"], running["id"])
        ),
        timeout=60,
        what="the log-shipper run to be running with its log",
    )
    return shipper, running


def save_whole_page(driver: WebDriver, path: Path) -> None:
    """The page from top to bottom, laid out at the window's width: the viewport is
    stretched to the page's height for the shot (a run page's log is below the fold
    of a 900 px window), then set back."""
    height = max(WINDOW[1], int(driver.execute_script("return document.body.scrollHeight")))
    metrics = {"width": WINDOW[0], "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {**metrics, "height": WINDOW[1]}
        )


def take(outdir: Path, work: Path) -> None:
    d = work / "daemon"
    d.mkdir()
    config_path = d / "config.toml"
    write_config(config_path, d / "data", top_level='timezone = "UTC"')
    daemon = Daemon(dir=d, config_path=config_path)
    daemon.key = daemon.create_key("admin")
    daemon.start()
    try:
        api = SyncApi(daemon.url, daemon.key)
        shipper, running = build_world(api)
        profile = work / "chromium-profile"
        profile.mkdir()
        driver = chrome(profile)
        try:
            b = Browser(driver, daemon.url)
            b.login(daemon.key)
            b.get("/ui/")
            b.find("table#active-runs tr.run")
            b.find("table#failures")
            save_whole_page(driver, outdir / "dashboard-overview.png")
            b.get(f"/ui/runners/{shipper['id']}/runs/{running['id']}")
            b.wait().until(lambda _: "batch 3" in b.find("pre#log").text, "the run's log")
            b.find("pre#log span.line.stderr")
            save_whole_page(driver, outdir / "dashboard-run.png")
            if errors := b.errors():
                raise SystemExit("the browser's console has errors:\n" + "\n".join(errors))
        finally:
            driver.quit()
    finally:
        daemon.stop()
        daemon.remove_containers()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.browser.screenshots")
    parser.add_argument("outdir", type=Path, help="where the two PNGs go")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="runnerd-screenshots-") as work:
        take(args.outdir, Path(work))
    for name in ("dashboard-overview.png", "dashboard-run.png"):
        print(args.outdir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
