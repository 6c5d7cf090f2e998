"""A follower of a run's log, in process over real sockets: it ends when the run is
recorded completed, not at its next periodic recheck of the run's status."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runnerd import api, daemon
from runnerd import logs as logs_module
from runnerd.auth import hash_secret, new_secret
from runnerd.config import Config
from runnerd.logs import LogStore
from runnerd.models import Scope, Status, now_ms
from runnerd.store import Store


class NoScheduler:
    def wake(self) -> None:
        pass


async def test_a_follow_ends_when_the_run_is_recorded_completed_not_on_a_timer(
    tmp_path: Path, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "FOLLOW_RECHECK_SECONDS", 3600.0)  # only a wake-up can end it
    async with Store(tmp_path / "runnerd.db") as store:
        logs = LogStore(tmp_path / "logs")
        logs.prepare()
        secret = new_secret()
        await store.create_api_key("test", Scope.FULL, hash_secret(secret))
        runner = await store.create_runner(
            {
                "name": "r",
                "image_name": "busybox",
                "image_tag": "latest",
                "run_command": "true",
                "timeout_seconds": 60,
                "instance_type": "standard-s",
            },
            [],
        )
        run, _ = await store.create_run(runner, [], 1.0, 64, 64)
        await store.mark_running(run.id, "c0ffee", now_ms())
        writer = logs.writer(run.id)
        writer.append([(1, time.time_ns(), b"hello\n")])

        daemon.wake_log_followers(store, logs)  # what the daemon wires; make_app does not
        client = await aiohttp_client(
            api.make_app(
                Config(),
                store,
                logs,
                NoScheduler(),  # type: ignore[arg-type]  # the logs' routes only wake it
                None,  # type: ignore[arg-type]  # no executor: no run starts here
                None,  # type: ignore[arg-type]  # no schedules fire here
            )
        )
        response = await client.get(
            f"/v1/runners/{runner.id}/runs/{run.id}/logs",
            params={"follow": "true"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert response.status == 200
        assert await asyncio.wait_for(response.content.readline(), 30) == b"hello\n"

        writer.close()  # the executor's order: the log's last write, then the record
        await asyncio.sleep(0.05)  # the follower has looked and found the run running
        await store.finish_run(
            run.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None
        )
        rest = await asyncio.wait_for(response.read(), 30)  # 3600 s without the wake-up
        assert rest == b""


async def test_every_api_read_of_a_log_runs_in_the_log_read_pool(
    tmp_path: Path, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text, tail, follow, JSON pages and cursors, SSE: each file the API opens is
    opened in a thread of the log read pool, never on the loop or the default executor."""
    async with Store(tmp_path / "runnerd.db") as store:
        logs = LogStore(tmp_path / "logs", read_threads=2)
        logs.prepare()
        secret = new_secret()
        await store.create_api_key("test", Scope.FULL, hash_secret(secret))
        runner = await store.create_runner(
            {
                "name": "r",
                "image_name": "busybox",
                "image_tag": "latest",
                "run_command": "true",
                "timeout_seconds": 60,
                "instance_type": "standard-s",
            },
            [],
        )
        run, _ = await store.create_run(runner, [], 1.0, 64, 64)
        await store.mark_running(run.id, "c0ffee", now_ms())
        writer = logs.writer(run.id)
        writer.append([(1 + i % 2, time.time_ns(), b"line %d\n" % i) for i in range(50)])
        writer.close()
        await store.finish_run(
            run.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None
        )
        opened: list[str] = []
        real_open = logs_module._open

        def recording_open(path: Path, mode: str = "rb", buffering: int = -1) -> Any:
            opened.append(threading.current_thread().name)
            return real_open(path, mode, buffering)

        monkeypatch.setattr(logs_module, "_open", recording_open)

        client = await aiohttp_client(
            api.make_app(
                Config(),
                store,
                logs,
                NoScheduler(),  # type: ignore[arg-type]  # the logs' routes only wake it
                None,  # type: ignore[arg-type]  # no executor: no run starts here
                None,  # type: ignore[arg-type]  # no schedules fire here
            )
        )
        url = f"/v1/runners/{runner.id}/runs/{run.id}/logs"
        auth = {"Authorization": f"Bearer {secret}"}
        json_h = {**auth, "Accept": "application/json"}
        sse_h = {**auth, "Accept": "text/event-stream"}
        entries = await (await client.get(url, headers=json_h)).json()
        cursor = entries["logs"][10]["id"]
        for params, headers in [
            ({}, auth),
            ({"tail": "3"}, auth),
            ({"follow": "1"}, auth),
            ({"follow": "1", "tail": "2"}, auth),
            ({}, json_h),
            ({"after": cursor, "stream": "stderr"}, json_h),
            ({"before": cursor, "limit": "3"}, json_h),
            ({}, sse_h),
            ({}, {**sse_h, "Last-Event-ID": cursor}),
        ]:
            opened.clear()
            response = await client.get(url, params=params, headers=headers)
            assert response.status == 200, (params, await response.text())
            assert await asyncio.wait_for(response.read(), 30)
            assert opened, params
            assert all(name.startswith("runnerd-log-read") for name in opened), (params, opened)
        logs.close()
