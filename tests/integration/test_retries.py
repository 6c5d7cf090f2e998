"""Retries with the real daemon and engine (issue #12): a runner whose command
fails gives linked attempts with growing gaps, the retry survives the daemon being
killed while it waits out its back-off, and each attempt's webhook says whether a
retry follows. Cancel semantics and the runs list: tests/api/test_retries.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, wait_until
from webhook_receiver import Receiver, receiver  # noqa: F401 (fixture)

pytestmark = pytest.mark.swarm  # these run on the swarm backend too

SECRET = "0123456789abcdef-secret"
WEBHOOKS = f'[webhooks]\nsecret = "{SECRET}"\n'


def api_for(http: aiohttp.ClientSession, daemon: Daemon) -> Api:
    return Api(http, daemon.url, daemon.key)


def ms(iso: str) -> int:
    """An API time (`2026-01-15T10:01:00.000+01:00`) → milliseconds since the epoch."""
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


def db_runs(daemon: Daemon, runner_id: str) -> list[dict[str, Any]]:
    """The runner's runs as the daemon last committed them, oldest first (read while
    no daemon runs)."""
    uri = f"file:{daemon.data_dir / 'runnerd.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM runs WHERE runner_id = ? ORDER BY seq", (runner_id,))
        return [dict(r) for r in rows]


async def test_a_failing_runner_gives_three_linked_attempts_across_a_restart(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    daemon = start_daemon(WEBHOOKS)
    api = api_for(http, daemon)
    runner = await api.create_runner(
        run_command="echo attempt; exit 3",
        webhook_url=receiver.url,
        retry_policy={"max_retries": 2, "backoff_seconds": 1},
    )
    assert runner["retry_policy"]["max_retries"] == 2
    first = await api.trigger(runner["id"])
    first = await api.wait_done(runner["id"], first["id"], timeout=60)
    assert (first["status"], first["exit_code"], first["attempt"]) == ("failed", 3, 1)

    # Killed while attempt 2 waits out its back-off (0.8-1 s): it was committed with
    # attempt 1's failure, so it is there, pending, when the daemon is down.
    daemon.kill()
    stored = db_runs(daemon, runner["id"])
    assert [(r["attempt"], r["status"], r["trigger"]) for r in stored] == [
        (1, "failed", "api"),
        (2, "pending", "retry"),
    ], stored
    assert stored[1]["retry_of"] == first["id"]
    assert stored[1]["started_at"] is None, "attempt 2 started before the kill: too slow a kill"

    daemon.start()
    api = api_for(http, daemon)

    async def three_ended() -> list[dict[str, Any]] | None:
        status, data = await api.get(f"/v1/runners/{runner['id']}/runs")
        assert status == 200, data
        runs = data["runs"]
        return runs if len(runs) == 3 and runs[0]["status"] == "failed" else None

    third, second, first = await wait_until(three_ended, timeout=60, what="attempt 3 to end")
    assert [r["attempt"] for r in (first, second, third)] == [1, 2, 3]
    assert [r["retry_of"] for r in (first, second, third)] == [None, first["id"], second["id"]]
    assert [(r["status"], r["exit_code"]) for r in (first, second, third)] == [("failed", 3)] * 3
    assert await api.logs(runner["id"], third["id"]) == b"attempt\n"

    # Each back-off: backoff_seconds doubled per attempt, 80-100 % of it (jitter); and
    # no attempt started before its not_before.
    gap2 = ms(second["not_before"]) - ms(first["completed_at"])
    gap3 = ms(third["not_before"]) - ms(second["completed_at"])
    assert 800 <= gap2 <= 1000 and 1600 <= gap3 <= 2000, (gap2, gap3)
    for attempt in (second, third):
        assert ms(attempt["started_at"]) >= ms(attempt["not_before"]), attempt
    assert f"retry attempt 3 as run {third['id']}" in daemon.log_text()

    # Each attempt's webhook (attempt 1's maybe sent again after the kill: by run id).
    async def three_delivered() -> dict[str, Any] | None:
        payloads = {p["run"]["id"]: p for p in map(json.loads, receiver.bodies)}
        return payloads if len(payloads) == 3 else None

    payloads = await wait_until(three_delivered, timeout=30, what="three webhooks")
    assert [payloads[r["id"]]["will_retry"] for r in (first, second, third)] == [
        True,
        True,
        False,
    ]
    assert [payloads[r["id"]]["run"]["attempt"] for r in (first, second, third)] == [1, 2, 3]
