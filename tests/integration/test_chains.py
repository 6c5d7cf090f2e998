"""Chains on a real runnerd process and the real engine: A → B on success and
A → C on failure (only the right one runs, and its container sees the parent in
RUNNERD_PARENT_RUN_ID / RUNNERD_PARENT_STATUS), a failure chained once after
its last attempt only, and each chained run made exactly once across kill -9
and restarts; a change that would make a cycle refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, wait_until
from helpers_engine import engine_api

pytestmark = pytest.mark.swarm  # these run on the swarm backend too

# A chained runner's command: what it was told about its parent.
SAYS_PARENT = 'echo "parent=$RUNNERD_PARENT_RUN_ID status=$RUNNERD_PARENT_STATUS"'


def api_for(http: aiohttp.ClientSession, daemon: Daemon) -> Api:
    """A client for the daemon's current process (the port changes on restart)."""
    return Api(http, daemon.url, daemon.key)


def ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


async def runs_of(api: Api, runner_id: str) -> list[dict[str, Any]]:
    status, body = await api.get(f"/v1/runners/{runner_id}/runs?limit=100")
    assert status == 200, body
    runs: list[dict[str, Any]] = body["runs"]
    return runs


async def chained_run(api: Api, runner_id: str, parent_id: str) -> dict[str, Any]:
    """The one run of `runner_id` chained from `parent_id`, once it has completed."""

    async def done() -> dict[str, Any] | None:
        runs = [r for r in await runs_of(api, runner_id) if r["parent_run_id"] == parent_id]
        assert len(runs) <= 1, runs
        if runs and runs[0]["status"] in ("succeeded", "failed"):
            return runs[0]
        return None

    return await wait_until(
        done, timeout=60, what=f"the run of {runner_id} chained from {parent_id}"
    )


def chained_rows(daemon: Daemon) -> list[tuple[str, str]]:
    """(parent_run_id, runner_id) of every chained run, read from the database."""
    uri = f"file:{daemon.db_path}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute(
            "SELECT parent_run_id, runner_id FROM runs WHERE trigger = 'chain' ORDER BY seq"
        ).fetchall()
    return [(p, r) for p, r in rows]


def container_state(run_id: str) -> str | None:
    return engine_api.state(f"runnerd-{run_id}")


def assert_no_tracebacks(daemon: Daemon) -> None:
    text = daemon.log_text()
    assert "Traceback" not in text, text[-6000:]


async def test_a_success_chains_on_success_and_a_failure_on_failure_each_with_the_parent(
    api: Api, daemon: Daemon
) -> None:
    b = await api.create_runner(name="on-success", run_command=SAYS_PARENT)
    c = await api.create_runner(name="on-failure", run_command=SAYS_PARENT)
    a = await api.create_runner(
        name="parent", run_command="exit 0", on_success=[b["id"]], on_failure=[c["id"]]
    )

    ok = await api.trigger(a["id"])
    assert (await api.wait_done(a["id"], ok["id"]))["status"] == "succeeded"
    run_b = await chained_run(api, b["id"], ok["id"])
    assert (run_b["status"], run_b["trigger"]) == ("succeeded", "chain"), run_b
    assert await api.logs(b["id"], run_b["id"]) == f"parent={ok['id']} status=succeeded\n".encode()

    status, _ = await api.patch(f"/v1/runners/{a['id']}", {"run_command": "exit 1"})
    assert status == 200
    bad = await api.trigger(a["id"])
    assert (await api.wait_done(a["id"], bad["id"]))["status"] == "failed"
    run_c = await chained_run(api, c["id"], bad["id"])
    assert await api.logs(c["id"], run_c["id"]) == f"parent={bad['id']} status=failed\n".encode()

    # Each outcome chained its own runner only: both of a parent's chained runs are
    # made in one commit, so by now any other would be there too.
    assert [r["id"] for r in await runs_of(api, b["id"])] == [run_b["id"]]
    assert [r["id"] for r in await runs_of(api, c["id"])] == [run_c["id"]]
    assert f"run {ok['id']} of parent succeeded: chained run {run_b['id']} of on-success" in (
        daemon.log_text()
    )
    # And the chains cannot loop: C → A would close A → C.
    status, body = await api.patch(f"/v1/runners/{c['id']}", {"on_success": [a["id"]]})
    assert (status, body) == (
        400,
        {"errors": ["on_success: would make a cycle: on-failure → parent → on-failure"]},
    )
    assert_no_tracebacks(daemon)


async def test_a_failure_with_a_retry_chains_on_failure_once_after_the_last_attempt(
    api: Api, daemon: Daemon
) -> None:
    c = await api.create_runner(name="on-failure", run_command=SAYS_PARENT)
    a = await api.create_runner(
        name="flaky",
        run_command="exit 3",
        retry_policy={"max_retries": 1, "backoff_seconds": 1},
        on_failure=[c["id"]],
    )
    first = await api.trigger(a["id"])
    assert (await api.wait_done(a["id"], first["id"]))["status"] == "failed"

    async def second_attempt() -> dict[str, Any] | None:
        retries = [r for r in await runs_of(api, a["id"]) if r["retry_of"] == first["id"]]
        return retries[0] if retries else None

    retry = await wait_until(second_attempt, timeout=10, what="the retry of the first attempt")
    last = await api.wait_done(a["id"], retry["id"], timeout=30)
    assert (last["status"], last["attempt"]) == ("failed", 2), last

    run_c = await chained_run(api, c["id"], last["id"])
    assert ms(run_c["created_at"]) >= ms(last["completed_at"])
    assert await api.logs(c["id"], run_c["id"]) == f"parent={last['id']} status=failed\n".encode()
    assert [r["id"] for r in await runs_of(api, c["id"])] == [run_c["id"]]  # not for attempt 1


async def test_chained_runs_are_made_exactly_once_across_kill_9_and_restarts(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon()
    api = api_for(http, daemon)
    b = await api.create_runner(name="next", run_command=SAYS_PARENT)
    a = await api.create_runner(name="first", run_command="sleep 1; exit 0", on_success=[b["id"]])
    parents = []

    # 1. The parent's container ends while the daemon is down: its end is recorded
    # (and its chain marked) after the restart, and the chained run made then.
    run = await api.trigger(a["id"])
    parents.append(run["id"])
    await api.wait_status(a["id"], run["id"], "running")

    async def started() -> bool:  # "running" is recorded just before the start
        return container_state(run["id"]) in ("running", "exited")

    await wait_until(started, timeout=30, interval=0.05, what="the parent's container to run")
    daemon.kill()

    async def exited() -> bool:
        return container_state(run["id"]) == "exited"

    await wait_until(exited, timeout=20, interval=0.1, what="the parent's container to exit")
    assert chained_rows(daemon) == []
    daemon.start()
    api = api_for(http, daemon)
    await chained_run(api, b["id"], run["id"])

    # 2. kill -9 at the moment a parent is seen to complete: its chained run is made
    # before the kill or after the restart, once either way.
    for _ in range(3):
        run = await api.trigger(a["id"])
        parents.append(run["id"])
        await api.wait_done(a["id"], run["id"], timeout=30)
        daemon.kill()
        daemon.start()
        api = api_for(http, daemon)
        await chained_run(api, b["id"], run["id"])

    # 3. A restart with nothing left to chain makes nothing more. The loop's first
    # turn after the start takes every marked parent, oldest first: once a new
    # parent's chained run is there, so would any that was left.
    daemon.stop()
    daemon.start()
    api = api_for(http, daemon)
    run = await api.trigger(a["id"])
    parents.append(run["id"])
    await api.wait_done(a["id"], run["id"], timeout=30)
    await chained_run(api, b["id"], run["id"])
    daemon.stop()
    assert sorted(chained_rows(daemon)) == sorted((p, b["id"]) for p in parents)
    assert_no_tracebacks(daemon)
