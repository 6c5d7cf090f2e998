"""A follower of a run's log, in process over real sockets: it ends when the run is
recorded completed, not at its next periodic recheck of the run's status."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from runnerd import api
from runnerd.auth import hash_secret, new_secret
from runnerd.config import Config
from runnerd.logs import LogStore
from runnerd.models import Scope, Status, now_ms
from runnerd.store import Store


class NoScheduler:
    def wake(self) -> None:
        pass


async def test_a_follow_ends_when_the_run_is_recorded_completed_not_on_a_timer(
        tmp_path: Path, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "FOLLOW_RECHECK_SECONDS", 3600.0)  # only a wake-up can end it
    async with Store(tmp_path / "runnerd.db") as store:
        logs = LogStore(tmp_path / "logs")
        logs.prepare()
        secret = new_secret()
        await store.create_api_key("test", Scope.FULL, hash_secret(secret))
        runner = await store.create_runner(
            {"name": "r", "image_name": "busybox", "image_tag": "latest",
             "run_command": "true", "timeout_seconds": 60, "instance_type": "standard-s"}, [])
        run, _ = await store.create_run(runner, [], 1.0, 64, 64)
        await store.mark_running(run.id, "c0ffee", now_ms())
        writer = logs.writer(run.id)
        writer.append([(1, time.time_ns(), b"hello\n")])

        client = await aiohttp_client(api.make_app(Config(), store, None, logs,  # type: ignore[arg-type]
                                                   NoScheduler()))
        response = await client.get(
            f"/v1/runners/{runner.id}/runs/{run.id}/logs", params={"follow": "true"},
            headers={"Authorization": f"Bearer {secret}"})
        assert response.status == 200
        assert await asyncio.wait_for(response.content.readline(), 30) == b"hello\n"

        writer.close()  # the executor's order: the log's last write, then the record
        await asyncio.sleep(0.05)  # the follower has looked and found the run running
        await store.finish_run(run.id, Status.SUCCEEDED, exit_code=0, failure_reason=None,
                               error=None)
        rest = await asyncio.wait_for(response.read(), 30)  # 3600 s without the wake-up
        assert rest == b""
