"""Runner writes that break a rule between the API's check and the write (a registry
deleted meanwhile, two PATCHes racing) answer 400 naming the field instead of a 500,
against runnerd's app in process (tests/api/conftest.py) on its real SQLite file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import aiohttp
from conftest import Api, Daemon


def no_tracebacks(daemon: Daemon) -> None:
    log = daemon.log_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


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
