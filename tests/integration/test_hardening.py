"""Smaller defects, each against a real `runnerd serve`: the CLI clearing a runner's
limit and times in the host's zone with its DST rules. Runner writes that break a
rule between the API's check and the write (a registry deleted meanwhile, two
PATCHes racing) are tests/api/test_hardening.py's."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from conftest import TEST_IMAGE_NAME, TEST_IMAGE_TAG, Api, Daemon, wait_until
from webhook_receiver import Receiver, receiver  # noqa: F401 (fixture)

SECRET = "0123456789abcdef-secret"


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNERD_")}
    env.update(RUNNERD_URL=daemon.url, RUNNERD_TOKEN=daemon.key)
    result = subprocess.run(
        [sys.executable, "-m", "runnerd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def no_tracebacks(daemon: Daemon) -> None:
    log = daemon.log_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


# -- the CLI clears a runner's limit -------------------------------------------------------


async def test_cli_update_max_concurrent_runs_none_sends_null_and_clears_the_limit(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    created = cli(
        daemon,
        "runners",
        "create",
        "--name",
        "limited",
        "--image",
        f"{TEST_IMAGE_NAME}:{TEST_IMAGE_TAG}",
        "--command",
        "true",
        "--max-concurrent-runs",
        "2",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["runner"]["max_concurrent_runs"] == 2

    updated = cli(daemon, "runners", "update", "limited", "--max-concurrent-runs", "none", "--json")

    assert updated.returncode == 0, (updated.stdout, updated.stderr)
    assert json.loads(updated.stdout)["runner"]["max_concurrent_runs"] is None
    api = Api(http, daemon.url, daemon.key)
    status, body = await api.get(f"/v1/runners/{json.loads(created.stdout)['runner']['id']}")
    assert status == 200 and body["runner"]["max_concurrent_runs"] is None, body
    # Nothing given is still a usage error, not an empty PATCH.
    nothing = cli(daemon, "runners", "update", "limited")
    assert nothing.returncode == 2 and "nothing to update" in nothing.stderr, nothing


# -- times in the host's zone, DST-correct -------------------------------------------------


BERLIN = ZoneInfo("Europe/Berlin")
JULY = int(datetime(2026, 7, 15, 14, 0, tzinfo=BERLIN).timestamp() * 1000)  # CEST
JANUARY = int(datetime(2026, 1, 15, 10, 1, tzinfo=BERLIN).timestamp() * 1000)  # CET


async def test_unset_timezone_on_a_tz_europe_berlin_host_renders_july_plus_2_and_january_plus_1_webhooks_too(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")  # the daemon's host zone; no `timezone` key
    daemon = start_daemon(f'[webhooks]\nsecret = "{SECRET}"\n')
    assert not re.search(r"^timezone\s*=", daemon.config_path.read_text(), re.M)
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="true", webhook_url=receiver.url)
    run = await api.trigger(runner["id"])
    await api.wait_done(runner["id"], run["id"])

    async def delivered(n: int) -> bool:
        return len(receiver.bodies) >= n

    await wait_until(lambda: delivered(1), timeout=30, what="the first delivery")

    # Move the stored times to July and January, and queue the delivery again.
    daemon.stop()
    with sqlite3.connect(daemon.data_dir / "runnerd.db") as db:
        db.execute(
            "UPDATE runners SET created_at = ?, updated_at = ? WHERE id = ?",
            (JULY, JANUARY, runner["id"]),
        )
        db.execute(
            "UPDATE runs SET created_at = ?, started_at = ?, completed_at = ?,"
            " updated_at = ?, webhook_status = 'pending' WHERE id = ?",
            (JULY, JULY, JANUARY, JANUARY, run["id"]),
        )
    db.close()
    daemon.start()
    api = Api(http, daemon.url, daemon.key)
    await wait_until(lambda: delivered(2), timeout=30, what="the delivery after the restart")

    july, january = "2026-07-15T14:00:00.000+02:00", "2026-01-15T10:01:00.000+01:00"
    sent = json.loads(receiver.bodies[1])["run"]
    assert (sent["created_at"], sent["started_at"], sent["completed_at"]) == (
        july,
        july,
        january,
    ), sent
    shown = await api.run(runner["id"], run["id"])
    assert (shown["created_at"], shown["completed_at"]) == (july, january), shown
    status, body = await api.get(f"/v1/runners/{runner['id']}")
    assert (body["runner"]["created_at"], body["runner"]["updated_at"]) == (july, january)
