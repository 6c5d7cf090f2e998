"""A run's `log_incomplete` (issue #14): false for a run whose log runnerd has no
doubt about, true once the store is told the stored log may miss output (as the
executor does when the engine's stream broke or its copy could not be checked),
and then shown wherever the run is: the API's run JSON, `runs show` and the end
of `logs` / `runs trigger --wait` in the CLI, and the webhook payload."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import pytest
from aiohttp import web
from conftest import Api

from runnerd.config import WebhooksConfig
from runnerd.models import Status
from runnerd.store.memory import MemoryStore
from runnerd.webhooks import Notifier
from tests.harness import wait_until

from .conftest import InProcessDaemon, cli

WARNING = "may be incomplete: see the notes runnerd wrote in the log"


async def two_ended_runs(daemon: InProcessDaemon, api: Api) -> tuple[str, str, str]:
    """(runner id, a plain run, a run marked log_incomplete), both succeeded."""
    runner = await api.create_runner(run_command="exit 0")
    plain = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    marked = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    await daemon.store.mark_log_incomplete(marked["id"])
    return runner["id"], plain["id"], marked["id"]


async def test_the_api_gives_log_incomplete_in_every_run_rendering(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner_id, plain, marked = await two_ended_runs(daemon, api)
    status, one = await api.get(f"/v1/runners/{runner_id}/runs/{marked}")
    assert status == 200 and one["run"]["log_incomplete"] is True
    assert one["run"]["status"] == "succeeded"  # the outcome stays what it was
    status, page = await api.get(f"/v1/runners/{runner_id}/runs")
    assert status == 200
    assert {r["id"]: r["log_incomplete"] for r in page["runs"]} == {plain: False, marked: True}


async def test_runs_show_prints_log_incomplete_and_warns_on_stderr_only_when_true(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner_id, plain, marked = await two_ended_runs(daemon, api)
    code, out, err = await cli(api, "runs", "show", runner_id, plain)
    assert code == 0, err
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}
    assert fields["log_incomplete"] == "false" and WARNING not in err

    code, out, err = await cli(api, "runs", "show", runner_id, marked)
    assert code == 0, err
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}
    assert fields["log_incomplete"].startswith("true (the stored log may miss output")
    assert f"runnerd: the log of run {marked} {WARNING}" in err

    code, out, err = await cli(api, "runs", "show", runner_id, marked, "--json")
    assert code == 0 and json.loads(out)["run"]["log_incomplete"] is True
    assert WARNING not in err  # --json is for scripts: the field says it


async def test_logs_warn_after_the_output_of_a_run_whose_log_may_be_incomplete(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner_id, plain, marked = await two_ended_runs(daemon, api)
    for args in (("logs", runner_id, marked), ("logs", runner_id, marked, "-f")):
        code, _, err = await cli(api, *args)
        assert code == 0 and f"runnerd: the log of run {marked} {WARNING}" in err, (args, err)
    code, _, err = await cli(api, "logs", runner_id, plain)
    assert code == 0 and WARNING not in err


# -- the webhook payload -------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on 127.0.0.1: its URL and the payloads it got."""
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", got
    finally:
        await runner.cleanup()


async def test_the_webhook_payload_carries_log_incomplete_recorded_with_the_finish(
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    url, got = receiver
    async with MemoryStore() as store:
        notifier = Notifier(store, WebhooksConfig(secret="s3cret"), UTC)
        store.on_run_completed.append(notifier.run_completed)
        notifier.start()
        try:
            runner = await store.create_runner(
                {
                    "name": "hooked",
                    "image_name": "busybox",
                    "image_tag": "latest",
                    "run_command": "echo hi",
                    "argv": None,
                    "entrypoint": None,
                    "timeout_seconds": 60,
                    "instance_type": "standard-s",
                    "webhook_url": url,
                },
                [],
            )
            runs = [(await store.create_run(runner, [], 1.0, 512, 100))[0] for _ in range(2)]
            for run, incomplete in zip(runs, (False, True), strict=True):
                await store.finish_run(
                    run.id,
                    Status.SUCCEEDED,
                    exit_code=0,
                    failure_reason=None,
                    error=None,
                    log_incomplete=incomplete,
                )

            async def both_delivered() -> bool:
                return len(got) == 2

            await wait_until(both_delivered, timeout=30, what="both webhooks")
        finally:
            await notifier.stop()
    assert {p["run"]["id"]: p["run"]["log_incomplete"] for p in got} == {
        runs[0].id: False,
        runs[1].id: True,
    }
