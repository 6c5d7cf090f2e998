"""A run's `node`: the Swarm node its container ran on, null on the docker backend
(the fake executor's case: it records no node) and until the store is told one (as
the executor does once a swarm task has started), and then shown wherever the run
is: the API's run JSON, `runs show` in the CLI (no line while null), and the Run
page (its row hidden while null)."""

from __future__ import annotations

import json
from typing import Any

from conftest import Api

from .conftest import InProcessDaemon, cli
from .test_ui_run import element, logged_in, open_events, page_url


async def placed_run(
    daemon: InProcessDaemon, api: Api, node: str = "worker-2"
) -> tuple[str, dict[str, Any]]:
    """(runner id, a run running on `node`): 60 s, it ends when canceled."""
    runner = await api.create_runner(run_command="sleep 60")
    run = await api.trigger(runner["id"])
    await api.wait_status(runner["id"], run["id"], "running")
    await daemon.store.set_node(run["id"], node)  # as the executor does on the swarm
    return runner["id"], run


def shown_fields(out: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}


async def test_the_api_gives_node_null_by_default_and_the_node_once_set(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 0")
    plain = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    assert plain["node"] is None  # no swarm: no node, ever

    runner_id, run = await placed_run(daemon, api)
    assert run["node"] is None  # the trigger's answer: pending, not placed yet
    status, one = await api.get(f"/v1/runners/{runner_id}/runs/{run['id']}")
    assert status == 200 and one["run"]["node"] == "worker-2"
    status, page = await api.get(f"/v1/runners/{runner_id}/runs")
    assert status == 200 and [r["node"] for r in page["runs"]] == ["worker-2"]

    status, _ = await api.post(f"/v1/runners/{runner_id}/runs/{run['id']}/cancel")
    assert status == 200
    ended = await api.wait_done(runner_id, run["id"])
    assert (ended["status"], ended["node"]) == ("failed", "worker-2")  # where it ran


async def test_runs_show_prints_node_only_when_the_run_has_one(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 0")
    plain = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    code, out, err = await cli(api, "runs", "show", runner["id"], plain["id"])
    assert code == 0, err
    fields = shown_fields(out)
    assert "node" not in fields and fields["log_incomplete"] == "false"
    code, out, err = await cli(api, "runs", "show", runner["id"], plain["id"], "--json")
    assert code == 0 and json.loads(out)["run"]["node"] is None  # --json: every field

    runner_id, run = await placed_run(daemon, api)
    code, out, err = await cli(api, "runs", "show", runner_id, run["id"])
    assert code == 0, err
    assert shown_fields(out)["node"] == "worker-2"


async def test_the_run_page_shows_the_node_escaped_and_hides_its_row_without_one(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 0")
    plain = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    runner_id, run = await placed_run(daemon, api, node="<b>worker&2</b>")
    async with await logged_in(daemon) as ui:
        _, plain_page = await ui.get(page_url(plain, runner["id"]))
        status, page = await ui.get(page_url(run, runner_id))
    assert status == 200
    assert '<tr id="node-row" hidden><th scope="row">Node</th>' in plain_page  # app.js reveals it
    assert element(plain_page, r'id="node"><code>([^<]*)<') == ""
    row = element(page, r'(<tr id="node-row"[^>]*>)')
    assert "hidden" not in row
    assert element(page, r'id="node"><code>([^<]*)<') == "&lt;b&gt;worker&amp;2&lt;/b&gt;"


async def test_the_live_log_s_final_run_carries_the_node(daemon: InProcessDaemon, api: Api) -> None:
    runner = await api.create_runner(run_command="sleep 60")
    run = await api.trigger(runner["id"])
    await api.wait_status(runner["id"], run["id"], "running")
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(page_url(run, runner["id"]))
        assert '<tr id="node-row" hidden>' in page  # not placed when the page was made
        async with open_events(ui, page_url(run, runner["id"]) + "/events") as events:
            await daemon.store.set_node(run["id"], "worker-3")
            status, _ = await api.post(f"/v1/runners/{runner['id']}/runs/{run['id']}/cancel")
            assert status == 200
            end = await events.next(timeout=30)
    assert end["event"] == "end"
    assert (end["data"]["status"], end["data"]["node"]) == ("failed", "worker-3")
