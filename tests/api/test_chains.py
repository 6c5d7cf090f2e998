"""Chains through the API, in process (tests/api/conftest.py: the real app, store,
scheduler and chains loop, a fake executor): what a client sees of on_success and
on_failure, the 400s, and the chained run a parent's end makes. The env a chained
container sees, restarts and retries on a real engine are
tests/integration/test_chains.py's."""

from __future__ import annotations

from typing import Any

from conftest import Api, Daemon
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import wait_until

GHOST = "00000000-0000-4000-8000-000000000000"


async def chained_runs(api: Api, runner_id: str, parent_id: str) -> list[dict[str, Any]]:
    status, body = await api.get(f"/v1/runners/{runner_id}/runs")
    assert status == 200, body
    return [r for r in body["runs"] if r["parent_run_id"] == parent_id]


async def chained_count(api: Api, parent_status: str) -> float:
    async with api.session.get(api.url + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        if family.name == "runnerd_chained_runs":
            for sample in family.samples:
                if (
                    sample.name == "runnerd_chained_runs_total"
                    and sample.labels["parent_status"] == parent_status
                ):
                    return sample.value
    return 0.0


async def test_chains_are_in_the_runner_json_as_set(api: Api) -> None:
    b = await api.create_runner(name="bbb")
    c = await api.create_runner(name="ccc")
    a = await api.create_runner(name="aaa", on_success=[b["id"]], on_failure=[c["id"], b["id"]])
    assert (a["on_success"], a["on_failure"]) == ([b["id"]], [c["id"], b["id"]])
    status, body = await api.get(f"/v1/runners/{a['id']}")
    assert status == 200 and body["runner"]["on_failure"] == [c["id"], b["id"]]
    status, body = await api.patch(f"/v1/runners/{a['id']}", {"on_failure": []})
    assert status == 200 and body["runner"]["on_failure"] == [], body
    assert body["runner"]["on_success"] == [b["id"]]  # not given: left as it was


async def test_a_change_that_would_make_a_cycle_is_400_naming_the_runners(api: Api) -> None:
    a = await api.create_runner(name="extract")
    b = await api.create_runner(name="load", on_success=[a["id"]])
    status, body = await api.patch(f"/v1/runners/{a['id']}", {"on_failure": [b["id"]]})
    assert (status, body) == (
        400,
        {"errors": ["on_failure: would make a cycle: extract → load → extract"]},
    )
    status, body = await api.patch(f"/v1/runners/{a['id']}", {"on_success": [a["id"]]})
    assert (status, body) == (
        400,
        {"errors": ["on_success: would make a cycle: extract → extract"]},
    )
    status, body = await api.get(f"/v1/runners/{a['id']}")
    assert (body["runner"]["on_success"], body["runner"]["on_failure"]) == ([], [])


async def test_an_unknown_runner_id_in_a_chain_is_400_naming_the_field(api: Api) -> None:
    status, body = await api.post(
        "/v1/runners",
        {"name": "aaa", "image_name": "busybox", "image_tag": "1", "on_success": [GHOST]},
    )
    assert (status, body) == (400, {"errors": [f"on_success: no runner {GHOST}"]})
    status, body = await api.get("/v1/runners")
    assert body["runners"] == []


async def test_deleting_a_chained_runner_takes_it_out_of_the_chains_and_logs_it(
    api: Api, daemon: Daemon
) -> None:
    b = await api.create_runner(name="bbb")
    a = await api.create_runner(name="aaa", on_success=[b["id"]])
    status, body = await api.delete(f"/v1/runners/{b['id']}")
    assert (status, body) == (200, {"deleted": True})
    status, body = await api.get(f"/v1/runners/{a['id']}")
    assert body["runner"]["on_success"] == []
    assert f"runner {b['id']}: no longer chained from aaa" in daemon.log_text()


async def test_a_run_that_succeeds_triggers_its_on_success_runner_once(api: Api) -> None:
    b = await api.create_runner(name="bbb", run_command="true")
    f = await api.create_runner(name="fff", run_command="true")
    a = await api.create_runner(
        name="aaa", run_command="exit 0", on_success=[b["id"]], on_failure=[f["id"]]
    )
    before = await chained_count(api, "succeeded")
    parent = await api.trigger(a["id"])
    await api.wait_status(a["id"], parent["id"], "succeeded")

    async def chained() -> list[dict[str, Any]]:
        return await chained_runs(api, b["id"], parent["id"])

    runs = await wait_until(chained, timeout=10, what="the chained run of b")
    assert len(runs) == 1
    assert (runs[0]["trigger"], runs[0]["parent_run_id"]) == ("chain", parent["id"])
    await api.wait_status(b["id"], runs[0]["id"], "succeeded")
    assert await chained_runs(api, f["id"], parent["id"]) == []
    assert await chained_count(api, "succeeded") == before + 1
