"""Cancel in every state, idempotent triggers and per-runner `max_concurrent_runs`
(issue 3), against a real runnerd process on the real Docker engine.

What runnerd says is checked against what the engine itself reports (containers
by their `io.runnerd.*` labels, over the engine's own socket), never only
against runnerd's own answers.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, wait_until
from helpers_engine import LABEL_RUN, LABEL_RUNNER, EngineProbe, engine_api, engine_probe

pytestmark = pytest.mark.swarm  # every test here runs on the swarm backend too

CONFLICT = {"status": 409, "error": "Conflict"}
NOT_FOUND = {"status": 404, "error": "Not Found"}
FORBIDDEN = {"status": 403, "error": "Forbidden"}
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def engine() -> AsyncIterator[EngineProbe]:
    session, probe = await engine_probe()
    async with session:
        yield probe


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def cancel_path(runner_id: str, run_id: str) -> str:
    return f"/v1/runners/{runner_id}/runs/{run_id}/cancel"


async def cancel(api: Api, runner_id: str, run_id: str, **kw: Any) -> tuple[int, Any]:
    return await api.post(cancel_path(runner_id, run_id), **kw)


def assert_canceled(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == {"run"}, body
    run = body["run"]
    assert run["status"] == "failed", run
    assert run["failure_reason"] == "canceled", run
    assert isinstance(run["error"], str) and run["error"].strip(), run
    assert run["completed_at"] is not None, run
    return run


def containers_of_run(run_id: str) -> list[str]:
    """Every container (any state) labelled with the run id, as the engine lists them."""
    return engine_api.container_ids({LABEL_RUN: run_id})


async def run_ids(api: Api, runner_id: str) -> list[str]:
    status, body = await api.get(f"/v1/runners/{runner_id}/runs?limit=1000")
    assert status == 200, body
    return [r["id"] for r in body["runs"]]


# -- cancel ------------------------------------------------------------------------------


async def test_cancel_pending_run_fails_it_as_canceled_at_once_and_it_never_starts(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, engine: EngineProbe
) -> None:
    d = start_daemon(max_concurrent_runs=1)
    api = Api(http, d.url, d.key)
    blocker_runner = await api.create_runner(run_command="sleep 30")
    blocker = await api.trigger(blocker_runner["id"])
    await engine.running_container_of(blocker["id"])  # holds the daemon's only slot

    runner = await api.create_runner(run_command="echo ran")
    queued = await api.trigger(runner["id"])
    assert queued["status"] == "pending", queued

    status, body = await cancel(api, runner["id"], queued["id"])
    assert status == 200, body
    canceled = assert_canceled(body)
    assert canceled["id"] == queued["id"]
    assert canceled["started_at"] is None, canceled
    assert canceled["exit_code"] is None, canceled
    assert await api.run(runner["id"], queued["id"]) == canceled

    # Free the slot (the blocker is canceled while running), then queue another run
    # of the same runner: once it has run, the scheduler has been past the canceled one.
    status, body = await cancel(api, blocker_runner["id"], blocker["id"])
    assert status == 200, body
    assert_canceled(body)
    later = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], later["id"])
    assert done["status"] == "succeeded", done
    await engine.wait_gone(blocker["id"])

    assert containers_of_run(queued["id"]) == [], "a canceled pending run got a container"
    assert await engine.for_run(queued["id"]) == []
    after = await api.run(runner["id"], queued["id"])
    assert after == canceled, "the canceled run changed after the queue moved on"
    assert await api.logs(runner["id"], queued["id"]) == b""
    assert f"run {queued['id']} started" not in d.log_text()


async def test_cancel_running_container_ignoring_sigterm_is_killed_after_grace_137(
    api: Api, engine: EngineProbe
) -> None:
    runner = await api.create_runner(argv=["sleep", "60"])  # PID 1: SIGTERM is ignored
    run = await api.trigger(runner["id"])
    container = await engine.running_container_of(run["id"])

    status, body = await cancel(api, runner["id"], run["id"])
    assert status == 200, body
    canceled = assert_canceled(body)
    assert canceled["exit_code"] == 137, canceled  # SIGKILL after the 1 s grace
    assert canceled["started_at"] is not None
    assert ts(canceled["started_at"]) <= ts(canceled["completed_at"])

    await engine.wait_gone(run["id"])
    assert containers_of_run(run["id"]) == []
    status, _ = await engine._get(f"/containers/{container['Id']}/json")
    assert status == 404, "the canceled run's container was not removed"
    assert await api.run(runner["id"], run["id"]) == canceled


async def test_cancel_running_container_handling_sigterm_records_its_exit_0_and_output(
    api: Api, engine: EngineProbe
) -> None:
    runner = await api.create_runner(
        run_command="trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    )
    run = await api.trigger(runner["id"])

    async def ready() -> bool:
        return b"ready\n" in await api.logs(runner["id"], run["id"])

    await wait_until(ready, timeout=30, what="the trap to be installed")

    status, body = await cancel(api, runner["id"], run["id"])
    assert status == 200, body
    canceled = assert_canceled(body)
    assert canceled["exit_code"] == 0, canceled  # canceled, even though it exited 0
    assert await api.logs(runner["id"], run["id"]) == b"ready\nbye\n"
    await engine.wait_gone(run["id"])


async def test_cancel_completed_run_is_409_and_leaves_it_succeeded(api: Api) -> None:
    runner = await api.create_runner(argv=["true"])
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"])
    assert done["status"] == "succeeded", done

    status, body = await cancel(api, runner["id"], run["id"])
    assert (status, body) == (409, CONFLICT)
    assert await api.run(runner["id"], run["id"]) == done


async def test_cancel_failed_run_is_409_and_leaves_its_failure(api: Api) -> None:
    runner = await api.create_runner(run_command="exit 3")
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"])
    assert (done["status"], done["failure_reason"]) == ("failed", "nonzero_exit"), done

    status, body = await cancel(api, runner["id"], run["id"])
    assert (status, body) == (409, CONFLICT)
    assert await api.run(runner["id"], run["id"]) == done


async def test_cancel_twice_answers_the_same_canceled_run_and_changes_nothing(
    api: Api, engine: EngineProbe
) -> None:
    runner = await api.create_runner(argv=["sleep", "60"])
    run = await api.trigger(runner["id"])
    await engine.running_container_of(run["id"])

    status, body = await cancel(api, runner["id"], run["id"])
    assert status == 200, body
    first = assert_canceled(body)
    status, body = await cancel(api, runner["id"], run["id"])
    assert status == 200, body
    assert body == {"run": first}, "a second cancel changed the canceled run"
    assert await api.run(runner["id"], run["id"]) == first


async def test_two_concurrent_cancels_of_a_running_run_both_answer_it_canceled(
    api: Api, engine: EngineProbe
) -> None:
    runner = await api.create_runner(argv=["sleep", "60"])
    run = await api.trigger(runner["id"])
    await engine.running_container_of(run["id"])

    answers = await asyncio.gather(
        cancel(api, runner["id"], run["id"]), cancel(api, runner["id"], run["id"])
    )
    runs = []
    for status, body in answers:
        assert status == 200, body
        runs.append(assert_canceled(body))
    assert runs[0] == runs[1], runs
    assert runs[0]["exit_code"] == 137, runs[0]
    await engine.wait_gone(run["id"])


async def test_cancel_twice_of_a_pending_run_is_harmless(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, engine: EngineProbe
) -> None:
    d = start_daemon(max_concurrent_runs=1)
    api = Api(http, d.url, d.key)
    blocker_runner = await api.create_runner(argv=["sleep", "60"])
    blocker = await api.trigger(blocker_runner["id"])
    await engine.running_container_of(blocker["id"])
    runner = await api.create_runner(argv=["true"])
    queued = await api.trigger(runner["id"])

    first = await cancel(api, runner["id"], queued["id"])
    second = await cancel(api, runner["id"], queued["id"])
    assert first[0] == 200 and second[0] == 200, (first, second)
    assert assert_canceled(first[1]) == assert_canceled(second[1])
    assert first[1]["run"]["started_at"] is None


async def test_cancel_unknown_run_or_runner_or_run_of_another_runner_is_404(api: Api) -> None:
    runner = await api.create_runner(argv=["true"])
    other = await api.create_runner(argv=["true"])
    run = await api.trigger(runner["id"])
    for path in (
        cancel_path(runner["id"], UNKNOWN_ID),
        cancel_path(UNKNOWN_ID, run["id"]),
        cancel_path(other["id"], run["id"]),
        cancel_path(runner["id"], "not-a-uuid"),
    ):
        status, body = await api.post(path)
        assert (status, body) == (404, NOT_FOUND), path
    done = await api.wait_done(runner["id"], run["id"])
    assert done["status"] == "succeeded", "a 404 cancel touched the run"


async def test_cancel_with_read_scope_key_is_403_and_the_run_keeps_running(
    api: Api, daemon: Daemon, engine: EngineProbe
) -> None:
    reader = daemon.create_key("reader", scope="read")
    runner = await api.create_runner(argv=["sleep", "60"])
    run = await api.trigger(runner["id"])
    await engine.running_container_of(run["id"])

    status, body = await cancel(api, runner["id"], run["id"], key=reader)
    assert (status, body) == (403, FORBIDDEN)
    assert (await api.run(runner["id"], run["id"]))["status"] == "running"
    assert len(await engine.containers({LABEL_RUN: run["id"]}, all=False)) == 1
    status, body = await cancel(api, runner["id"], run["id"])  # a full key may
    assert status == 200, body
    assert_canceled(body)


# -- idempotent trigger ------------------------------------------------------------------


def idem(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_same_idempotency_key_twice_returns_the_first_run_and_queues_one(api: Api) -> None:
    runner = await api.create_runner(argv=["true"])
    status, first = await api.post(f"/v1/runners/{runner['id']}/runs", headers=idem("retry-1"))
    assert status == 200, first
    status, second = await api.post(f"/v1/runners/{runner['id']}/runs", headers=idem("retry-1"))
    assert status == 200, second
    assert second["run"]["id"] == first["run"]["id"]
    assert second["run"]["created_at"] == first["run"]["created_at"]
    assert await run_ids(api, runner["id"]) == [first["run"]["id"]]
    done = await api.wait_done(runner["id"], first["run"]["id"])
    assert done["status"] == "succeeded", done
    # Retried after it ran: still that run, still one run.
    status, third = await api.post(f"/v1/runners/{runner['id']}/runs", headers=idem("retry-1"))
    assert status == 200, third
    assert third["run"] == done
    assert await run_ids(api, runner["id"]) == [first["run"]["id"]]


async def test_twenty_concurrent_triggers_with_one_idempotency_key_make_exactly_one_run(
    api: Api,
) -> None:
    runner = await api.create_runner(argv=["true"])
    path = f"/v1/runners/{runner['id']}/runs"
    answers = await asyncio.gather(*(api.post(path, headers=idem("burst-key")) for _ in range(20)))
    statuses = [status for status, _ in answers]
    assert statuses == [200] * 20, answers
    ids = {body["run"]["id"] for _, body in answers}
    assert len(ids) == 1, ids
    assert await run_ids(api, runner["id"]) == list(ids)
    done = await api.wait_done(runner["id"], ids.pop())
    assert done["status"] == "succeeded", done


async def test_different_idempotency_key_makes_a_new_run(api: Api) -> None:
    runner = await api.create_runner(argv=["true"])
    path = f"/v1/runners/{runner['id']}/runs"
    _, a = await api.post(path, headers=idem("key-a"))
    _, b = await api.post(path, headers=idem("key-b"))
    _, none = await api.post(path)  # no key: always a new run
    ids = [a["run"]["id"], b["run"]["id"], none["run"]["id"]]
    assert len(set(ids)) == 3, ids
    assert sorted(await run_ids(api, runner["id"])) == sorted(ids)


async def test_same_idempotency_key_on_another_runner_makes_its_own_run(api: Api) -> None:
    one = await api.create_runner(argv=["true"])
    two = await api.create_runner(argv=["true"])
    status, a = await api.post(f"/v1/runners/{one['id']}/runs", headers=idem("shared"))
    assert status == 200, a
    status, b = await api.post(f"/v1/runners/{two['id']}/runs", headers=idem("shared"))
    assert status == 200, b
    assert a["run"]["id"] != b["run"]["id"]
    assert await run_ids(api, one["id"]) == [a["run"]["id"]]
    assert await run_ids(api, two["id"]) == [b["run"]["id"]]


async def test_bad_idempotency_key_is_400_and_queues_nothing(api: Api) -> None:
    runner = await api.create_runner(argv=["true"])
    for bad_key in ("k" * 256, "k" * 5000, "has space", "tab\tinside", ""):
        status, body = await api.post(f"/v1/runners/{runner['id']}/runs", headers=idem(bad_key))
        assert status == 400, (bad_key[:20], body)
        assert any("Idempotency-Key" in e for e in body["errors"]), body
    assert await run_ids(api, runner["id"]) == []


async def test_idempotency_key_of_a_refused_trigger_stays_free(api: Api) -> None:
    runner = await api.create_runner(argv=["true"])
    path = f"/v1/runners/{runner['id']}/runs"
    status, body = await api.post(path, {"env_variables": "nope"}, headers=idem("first-try"))
    assert status == 400, body
    assert await run_ids(api, runner["id"]) == []
    status, body = await api.post(path, {}, headers=idem("first-try"))
    assert status == 200, body
    assert await run_ids(api, runner["id"]) == [body["run"]["id"]]


async def test_idempotency_key_of_255_visible_characters_is_accepted(api: Api) -> None:
    runner = await api.create_runner(argv=["true"])
    key = "".join(chr(33 + i % 94) for i in range(255))
    path = f"/v1/runners/{runner['id']}/runs"
    status, a = await api.post(path, headers=idem(key))
    assert status == 200, a
    status, b = await api.post(path, headers=idem(key))
    assert status == 200, b
    assert a["run"]["id"] == b["run"]["id"]


# -- per-runner max_concurrent_runs --------------------------------------------------------


class RunningWatcher:
    """Polls the engine for running containers of a runner, keeping the most seen at once."""

    def __init__(self, engine: EngineProbe, runner_id: str) -> None:
        self.engine = engine
        self.runner_id = runner_id
        self.max_running = 0
        self.polls = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            running = await self.engine.containers({LABEL_RUNNER: self.runner_id}, all=False)
            self.max_running = max(self.max_running, len(running))
            self.polls += 1
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def intervals(runs: list[dict[str, Any]]) -> list[tuple[datetime, datetime]]:
    return sorted((ts(r["started_at"]), ts(r["completed_at"])) for r in runs)


def overlaps(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


async def test_runner_limited_to_one_never_overlaps_under_a_burst_while_another_runs_beside(
    api: Api, engine: EngineProbe
) -> None:
    limited = await api.create_runner(run_command="sleep 0.5", max_concurrent_runs=1)
    assert limited["max_concurrent_runs"] == 1
    free = await api.create_runner(run_command="sleep 3")
    assert free["max_concurrent_runs"] is None

    watcher = RunningWatcher(engine, limited["id"])
    api_max_running = 0

    async def api_poll() -> None:
        nonlocal api_max_running
        while True:
            status, body = await api.get(f"/v1/runners/{limited['id']}/runs?status=running")
            assert status == 200, body
            api_max_running = max(api_max_running, len(body["runs"]))
            await asyncio.sleep(0.02)

    watcher.start()
    poller = asyncio.create_task(api_poll())
    try:
        burst = await asyncio.gather(*(api.trigger(limited["id"]) for _ in range(8)))
        beside = await asyncio.gather(*(api.trigger(free["id"]) for _ in range(3)))
        done_limited = [await api.wait_done(limited["id"], r["id"], timeout=90) for r in burst]
        done_free = [await api.wait_done(free["id"], r["id"], timeout=60) for r in beside]
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await watcher.stop()

    for run in done_limited + done_free:
        assert run["status"] == "succeeded", run
    assert watcher.polls > 10, "the engine was hardly polled"
    assert watcher.max_running <= 1, (
        f"the engine ran {watcher.max_running} containers of the limited runner at once"
    )
    assert api_max_running <= 1, f"the API listed {api_max_running} running runs at once"
    spans = intervals(done_limited)
    for (_, prev_end), (start, _) in itertools.pairwise(spans):
        assert start >= prev_end, f"runs of the limited runner overlapped: {spans}"
    # The unlimited runner ran beside it: its runs overlap each other and the burst.
    free_spans = intervals(done_free)
    assert max(s for s, _ in free_spans) < min(e for _, e in free_spans), (
        f"the unlimited runner's runs did not run in parallel: {free_spans}"
    )
    assert any(overlaps(f, s) for f in free_spans for s in spans), (
        "the unlimited runner waited for the limited one"
    )


async def test_runner_limit_null_lets_its_runs_overlap_again(api: Api, engine: EngineProbe) -> None:
    runner = await api.create_runner(run_command="sleep 2", max_concurrent_runs=1)
    status, body = await api.patch(f"/v1/runners/{runner['id']}", {"max_concurrent_runs": None})
    assert status == 200, body
    assert body["runner"]["max_concurrent_runs"] is None
    status, body = await api.get(f"/v1/runners/{runner['id']}")
    assert body["runner"]["max_concurrent_runs"] is None

    runs = [await api.trigger(runner["id"]) for _ in range(2)]

    async def both_running() -> bool:
        return len(await engine.containers({LABEL_RUNNER: runner["id"]}, all=False)) == 2

    await wait_until(both_running, timeout=30, what="both runs to run at once")
    for r in runs:
        done = await api.wait_done(runner["id"], r["id"])
        assert done["status"] == "succeeded", done


async def test_invalid_max_concurrent_runs_is_400_naming_it_and_changes_nothing(api: Api) -> None:
    runner = await api.create_runner(argv=["true"], max_concurrent_runs=1)
    for bad in (0, -1, "1", "", 1.5, 1.0, True, 1001, 10**30, [1], {"n": 1}):
        status, body = await api.patch(f"/v1/runners/{runner['id']}", {"max_concurrent_runs": bad})
        assert status == 400, (bad, body)
        assert any("max_concurrent_runs" in e for e in body["errors"]), body
        status, body = await api.post(
            "/v1/runners",
            {
                "name": f"bad-limit-{time.monotonic_ns()}",
                "image_name": runner["image_name"],
                "max_concurrent_runs": bad,
            },
        )
        assert status == 400, (bad, body)
        assert any("max_concurrent_runs" in e for e in body["errors"]), body
    status, body = await api.get(f"/v1/runners/{runner['id']}")
    assert body["runner"]["max_concurrent_runs"] == 1
    status, body = await api.get("/v1/runners")
    assert [r["id"] for r in body["runners"]] == [runner["id"]], "an invalid create made a runner"
