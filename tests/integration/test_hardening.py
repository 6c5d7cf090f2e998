"""Smaller defects, each against a real `runnerd serve`: the CLI clearing a runner's
limit, times in the host's zone with its DST rules, and runner writes that break a
rule between the API's check and the write (a registry deleted meanwhile, two
PATCHes racing) answering 400 naming the field instead of a 500."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any
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


# -- runner writes that break a rule after the API's check --------------------------------


async def test_runner_write_whose_registry_is_deleted_after_the_api_check_is_400_naming_container_registry_id(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    api = Api(http, daemon.url, daemon.key)

    async def registry(name: str) -> str:
        status, data = await api.post(
            "/v1/container_registries",
            {"name": name, "host": "registry.example.com", "username": "u", "password": "p"},
        )
        assert status == 200, data
        return str(data["container_registry"]["id"])

    first, second = await registry("deleted-on-create"), await registry("deleted-on-update")
    runner = await api.create_runner(run_command="true")
    # The fault: the registry row goes inside the daemon's own write, after the API
    # found it and just before the runner row that refers to it is written.
    with sqlite3.connect(daemon.data_dir / "runnerd.db") as db:
        for event in ("INSERT", "UPDATE OF container_registry_id"):
            db.execute(
                f"CREATE TRIGGER delete_registry_first_{event.split()[0].lower()}"
                f" BEFORE {event} ON runners WHEN NEW.container_registry_id IS NOT NULL"
                " BEGIN DELETE FROM container_registries WHERE id = NEW.container_registry_id;"
                " END"
            )
    db.close()

    status, data = await api.post(
        "/v1/runners",
        {
            "name": "uses-a-deleted-registry",
            "image_name": "team/job",
            "container_registry_id": first,
        },
    )
    assert status == 400, data
    [error] = data["errors"]
    assert error.startswith("container_registry_id:") and first in error, error

    status, data = await api.patch(f"/v1/runners/{runner['id']}", {"container_registry_id": second})
    assert status == 400, data
    assert data["errors"][0].startswith("container_registry_id:") and second in data["errors"][0], (
        data
    )
    status, data = await api.get(f"/v1/runners/{runner['id']}")
    assert data["runner"]["container_registry_id"] is None, data
    no_tracebacks(daemon)


async def send_patch(
    url: str, key: str, path: str, body: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Write a whole PATCH request to the daemon; the answer is read later."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    raw = json.dumps(body).encode()
    writer.write(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + raw
    )
    await writer.drain()
    return reader, writer


async def answer(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> tuple[int, Any]:
    reader, writer = conn
    try:
        response = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_two_racing_patches_setting_run_command_and_argv_never_leave_both_set(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner()  # neither: the image's own CMD
    path = f"/v1/runners/{runner['id']}"
    # The fault: both PATCHes are checked against the runner as it is now, because
    # the test holds SQLite's write lock, so neither write can land before the
    # other's check; then they are written one after the other.
    db = sqlite3.connect(daemon.data_dir / "runnerd.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        set_command = await send_patch(daemon.url, daemon.key, path, {"run_command": "echo a"})
        set_argv = await send_patch(daemon.url, daemon.key, path, {"argv": ["echo", "b"]})
        status, _ = await api.get(path)  # answered after both were read
        assert status == 200
    finally:
        db.execute("ROLLBACK")
        db.close()
    answers = [await answer(set_command), await answer(set_argv)]

    assert sorted(status for status, _ in answers) == [200, 400], answers
    [(_, refused)] = [body for body in answers if body[0] == 400]
    error = " ".join(refused["errors"])
    assert "run_command" in error and "argv" in error, error
    status, body = await api.get(path)
    after = body["runner"]
    assert (after["run_command"] is None) != (after["argv"] is None), after
    no_tracebacks(daemon)
