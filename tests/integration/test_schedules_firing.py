"""Schedules firing in a real runnerd process on the real engine: an `@every` schedule
fires each slot on time, once; kill -9 around fire moments never fires a slot twice
nor drops one inside the deadline (every slot is a run or counted missed); `forbid`
and `replace` under a long-running job.

Each test makes its schedule through the running daemon's API, as a user would, and
reads what it fired there too (`GET …/runs`, `GET …/schedules/{id}`); the daemon's log
and `/metrics` tell the skipped fires.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from conftest import NO_ENGINE, Api, Daemon, wait_until

SEED = int(os.environ.get("RUNNERD_TEST_SEED", "20261202"))
ON_TIME_MS = 1000  # runnerd.firing's own bound: a fire later than this is late


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms(iso: str) -> int:
    """An API time (milliseconds, with an offset) → milliseconds since the epoch."""
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


async def create_schedule(api: Api, runner_id: str, **body: Any) -> dict[str, Any]:
    status, data = await api.post(f"/v1/runners/{runner_id}/schedules", body)
    assert status == 200, data
    schedule: dict[str, Any] = data["schedule"]
    assert schedule["enabled"] and schedule["next_run_at"] is not None, schedule
    return schedule


async def show_schedule(api: Api, runner_id: str, schedule_id: str) -> dict[str, Any]:
    status, data = await api.get(f"/v1/runners/{runner_id}/schedules/{schedule_id}")
    assert status == 200, data
    schedule: dict[str, Any] = data["schedule"]
    return schedule


async def fired(api: Api, runner_id: str, schedule_id: str) -> list[dict[str, Any]]:
    """The schedule's runs (not their retries), oldest slot first, from `GET …/runs`."""
    status, data = await api.get(f"/v1/runners/{runner_id}/runs?limit=1000")
    assert status == 200, data
    runs = [
        r for r in data["runs"] if r["schedule_id"] == schedule_id and r["trigger"] == "schedule"
    ]
    return sorted(runs, key=lambda r: ms(r["scheduled_for"]))


@pytest.mark.swarm  # on the swarm backend too
async def test_an_every_2s_schedule_fires_each_slot_on_time_once(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon()
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command='test "$FROM_SCHEDULE" = yes')
    schedule = await create_schedule(
        api,
        runner["id"],
        cron="@every 2s",
        timezone="UTC",
        env_variables=[{"env_key": "FROM_SCHEDULE", "env_val": "yes"}],
    )
    sid, first = schedule["id"], ms(schedule["next_run_at"])

    async def four() -> list[dict[str, Any]] | None:
        runs = await fired(api, runner["id"], sid)
        return runs if len(runs) >= 4 else None

    runs = await wait_until(four, timeout=30, what="four fires")
    slots = [ms(r["scheduled_for"]) for r in runs]
    assert slots[:4] == [first, first + 2000, first + 4000, first + 6000]
    assert all(r["trigger"] == "schedule" and r["schedule_id"] == sid for r in runs)
    # Made at their slot, not before, and on time (the bound the loop holds itself to).
    lateness = [ms(r["created_at"]) - ms(r["scheduled_for"]) for r in runs]
    assert all(0 <= late < ON_TIME_MS for late in lateness), lateness
    shown = await show_schedule(api, runner["id"], sid)
    assert shown["missed_count"] == 0
    assert ms(shown["next_run_at"]) > slots[-1]
    # Its last fire is one of these (or one made since the list was read).
    assert shown["last_run_id"] in {r["id"] for r in await fired(api, runner["id"], sid)}
    # They run: the scheduler was woken, and the schedule's env reached the container.
    done = await api.wait_done(runner["id"], runs[0]["id"])
    assert done["status"] == "succeeded", done
    assert "none was inside" not in daemon.log_text()


async def test_kill_9_around_fire_moments_never_fires_a_slot_twice_nor_drops_one(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    # No engine: the runs stay pending, which firing does not depend on (and fires
    # keep coming while the engine is down, as they must).
    daemon = start_daemon(f'[docker]\nurl = "{NO_ENGINE}"\nnetwork = "none"\n')
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="true")
    schedule = await create_schedule(api, runner["id"], cron="@every 1s", timezone="UTC")
    sid, first = schedule["id"], ms(schedule["next_run_at"])
    rng = random.Random(SEED)
    kills = 6
    for round_no in range(kills):
        # Kill at a varied offset from a slot: just before, at, just after it.
        offset = rng.choice([-30, -5, 0, 3, 10, 60, 250, 500, 900])
        slot = first + ((now_ms() - first) // 1000 + 2) * 1000
        time.sleep(max(0.0, (slot + offset - now_ms()) / 1000))
        daemon.kill()
        time.sleep(rng.uniform(0.0, 2.5))  # down over 0 to a few slots
        daemon.start()
        print(f"round {round_no}: killed {offset:+d} ms from slot {slot}")
    last_start = now_ms()
    api = Api(http, daemon.url, daemon.key)  # a restarted daemon listens on a new port

    async def fired_since_the_last_start() -> bool:
        runs = await fired(api, runner["id"], sid)
        return any(ms(r["created_at"]) >= last_start for r in runs)

    await wait_until(fired_since_the_last_start, timeout=10, what="a fire by the last process")
    # Pause it, so the runs and the counts read next are of one moment: a fire racing
    # the pause finds the schedule disabled and writes nothing.
    status, data = await api.patch(
        f"/v1/runners/{runner['id']}/schedules/{sid}", {"enabled": False}
    )
    assert status == 200, data
    assert data["schedule"]["next_run_at"] is None

    runs = await fired(api, runner["id"], sid)
    slots = [ms(r["scheduled_for"]) for r in runs]
    assert len(slots) == len(set(slots)), f"a slot fired twice (seed {SEED}): {slots}"
    assert all((s - first) % 1000 == 0 for s in slots)
    shown = await show_schedule(api, runner["id"], sid)
    assert shown["missed_count"] == data["schedule"]["missed_count"]
    assert shown["last_run_id"] == runs[-1]["id"]  # the latest slot is its last fire
    # Every slot from the first to its last fire is a run or missed (a fire moves it
    # to the slot after its own, so none is left between).
    span = (slots[-1] - first) // 1000 + 1
    assert len(slots) + shown["missed_count"] == span, (
        f"seed {SEED}: {span} slots, {len(slots)} runs, {shown['missed_count']} missed: {slots}"
    )
    assert daemon.stop(signal.SIGTERM) == 0
    # Down for seconds, well inside the deadline (300 s): after each restart the
    # latest slot fired, never none.
    log = daemon.log_text()
    assert "none was inside" not in log
    assert log.count("slots missed") + log.count("slot missed") <= kills
    assert len(slots) > kills  # each process fired


@pytest.mark.swarm  # on the swarm backend too
async def test_forbid_skips_fires_while_its_long_run_is_running(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon()
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="sleep 30")
    schedule = await create_schedule(
        api, runner["id"], cron="@every 2s", timezone="UTC", concurrency_policy="forbid"
    )
    sid, first = schedule["id"], ms(schedule["next_run_at"])

    async def running() -> dict[str, Any] | None:
        runs = await fired(api, runner["id"], sid)
        return runs[0] if runs and runs[0]["status"] == "running" else None

    only = await wait_until(running, timeout=30, what="the first fire's run to run")

    async def two_skipped() -> bool:
        return daemon.log_text().count("(concurrency_policy forbid)") >= 2

    await wait_until(two_skipped, timeout=15, what="two skipped fires")
    assert [r["id"] for r in await fired(api, runner["id"], sid)] == [only["id"]]

    async def moved_past_the_skips() -> dict[str, Any] | None:  # logged before it is stored
        shown = await show_schedule(api, runner["id"], sid)
        return shown if ms(shown["next_run_at"]) >= first + 3 * 2000 else None

    shown = await wait_until(moved_past_the_skips, timeout=10, what="next_run_at past the skips")
    assert shown["missed_count"] == 0
    assert shown["last_run_id"] == only["id"]  # a skipped fire is no run
    status, text = await api.get("/metrics")
    assert status == 200
    assert b'runnerd_schedule_skipped_fires_total{reason="forbid"} 2.0' in text


@pytest.mark.swarm  # on the swarm backend too
async def test_replace_cancels_its_long_run_then_fires(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon()
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="sleep 30")  # the test config's stop grace: 1 s
    schedule = await create_schedule(
        api, runner["id"], cron="@every 4s", timezone="UTC", concurrency_policy="replace"
    )
    sid = schedule["id"]

    async def second_running() -> list[dict[str, Any]] | None:
        runs = await fired(api, runner["id"], sid)
        return runs if len(runs) >= 2 and runs[1]["status"] == "running" else None

    runs = await wait_until(second_running, timeout=40, what="the second fire's run to run")
    old, new = runs[0], runs[1]
    assert (old["status"], old["failure_reason"]) == ("failed", "canceled")
    assert old["error"] == "Replaced by the schedule's next fire."
    assert ms(new["scheduled_for"]) == ms(old["scheduled_for"]) + 4000
    assert "(concurrency_policy replace)" in daemon.log_text()
