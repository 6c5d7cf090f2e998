"""Schedules firing in a real runnerd process on the real engine: an `@every` schedule
fires each slot on time, once; kill -9 around fire moments never fires a slot twice
nor drops one inside the deadline (every slot is a run or counted missed); `forbid`
and `replace` under a long-running job.

The schedules are written into the database while the daemon is stopped (the loop
loads them when it starts), so these tests need only the firing side; the schedules
API (`POST …/schedules`) has its own tests.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from conftest import NO_ENGINE, Api, Daemon, wait_until

from runnerd.crypto import SecretBox, load_key

SEED = int(os.environ.get("RUNNERD_TEST_SEED", "20261202"))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def add_schedule(
    daemon: Daemon,
    runner_id: str,
    *,
    every_ms: int,
    first_at: int,
    concurrency_policy: str = "allow",
    starting_deadline_seconds: int = 300,
) -> str:
    """An enabled `@every` schedule of the runner whose first slot is `first_at`,
    written as the API's create leaves it (the daemon must be stopped)."""
    assert not daemon.alive()
    box = SecretBox(load_key(daemon.data_dir / "secret.key", create=False))
    schedule_id = str(uuid.uuid4())
    with sqlite3.connect(daemon.db_path) as db:
        db.execute(
            "INSERT INTO schedules (id, runner_id, cron, timezone, enabled, env,"
            " concurrency_policy, starting_deadline_seconds, anchor_at, next_run_at,"
            " created_at, updated_at) VALUES (?, ?, ?, 'UTC', 1, ?, ?, ?, ?, ?, ?, ?)",
            (
                schedule_id,
                runner_id,
                f"@every {every_ms // 1000}s",
                box.encrypt(json.dumps([["FROM_SCHEDULE", "yes"]])),
                concurrency_policy,
                starting_deadline_seconds,
                first_at - every_ms,
                first_at,
                now_ms(),
                now_ms(),
            ),
        )
    return schedule_id


def fired(daemon: Daemon, schedule_id: str) -> list[sqlite3.Row]:
    """The schedule's runs (not their retries), oldest slot first, from the database."""
    with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return db.execute(
            "SELECT id, status, trigger, scheduled_for, created_at, failure_reason, error"
            " FROM runs WHERE schedule_id = ? AND trigger = 'schedule' ORDER BY scheduled_for",
            (schedule_id,),
        ).fetchall()


def schedule_row(daemon: Daemon, schedule_id: str) -> sqlite3.Row:
    with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        row: sqlite3.Row = db.execute(
            "SELECT * FROM schedules WHERE id = ?", (schedule_id,)
        ).fetchone()
        return row


async def runner_then_stop(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, extra: str = "", **fields: Any
) -> tuple[Daemon, str]:
    daemon = start_daemon(extra)
    runner = await Api(http, daemon.url, daemon.key).create_runner(**fields)
    assert daemon.stop() == 0
    return daemon, runner["id"]


async def test_an_every_2s_schedule_fires_each_slot_on_time_once(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon, runner_id = await runner_then_stop(
        start_daemon, http, run_command='test "$FROM_SCHEDULE" = yes'
    )
    first = now_ms() + 5000  # after the daemon is up: each slot is met on time
    sid = add_schedule(daemon, runner_id, every_ms=2000, first_at=first)
    daemon.start()
    api = Api(http, daemon.url, daemon.key)

    async def four() -> list[sqlite3.Row] | None:
        runs = fired(daemon, sid)
        return runs if len(runs) >= 4 else None

    runs = await wait_until(four, timeout=30, what="four fires")
    slots = [r["scheduled_for"] for r in runs]
    assert slots[:4] == [first, first + 2000, first + 4000, first + 6000]
    assert all(r["trigger"] == "schedule" for r in runs)
    # Made at their slot, not before; each within the on-time bound (else missed).
    assert all(r["created_at"] >= r["scheduled_for"] for r in runs)
    row = schedule_row(daemon, sid)
    assert row["missed_count"] == 0
    assert row["next_run_at"] > slots[-1]
    # They run: the scheduler was woken, and the schedule's env reached the container.
    done = await api.wait_done(runner_id, runs[0]["id"])
    assert done["status"] == "succeeded", done
    assert "none was inside" not in daemon.log_text()


async def test_kill_9_around_fire_moments_never_fires_a_slot_twice_nor_drops_one(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    # No engine: the runs stay pending, which firing does not depend on (and fires
    # keep coming while the engine is down, as they must).
    daemon, runner_id = await runner_then_stop(
        start_daemon, http, f'[docker]\nurl = "{NO_ENGINE}"\nnetwork = "none"\n', run_command="true"
    )
    first = now_ms() + 3000
    sid = add_schedule(daemon, runner_id, every_ms=1000, first_at=first)
    rng = random.Random(SEED)
    daemon.start()
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
    time.sleep(1.5)  # at least one fire by the last process
    assert daemon.stop(signal.SIGTERM) == 0

    runs = fired(daemon, sid)
    slots = [r["scheduled_for"] for r in runs]
    assert len(slots) == len(set(slots)), f"a slot fired twice (seed {SEED}): {slots}"
    assert all((s - first) % 1000 == 0 for s in slots)
    row = schedule_row(daemon, sid)
    # Every slot from the first to the one the schedule waits for is a run or missed.
    span = (row["next_run_at"] - first) // 1000
    assert len(slots) + row["missed_count"] == span, (
        f"seed {SEED}: {span} slots, {len(slots)} runs, {row['missed_count']} missed: {slots}"
    )
    # Down for seconds, well inside the deadline (300 s): after each restart the
    # latest slot fired, never none.
    log = daemon.log_text()
    assert "none was inside" not in log
    assert log.count("slots missed") + log.count("slot missed") <= kills
    assert len(slots) > kills  # each process fired


async def test_forbid_skips_fires_while_its_long_run_is_running(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon, runner_id = await runner_then_stop(start_daemon, http, run_command="sleep 30")
    first = now_ms() + 3000
    sid = add_schedule(
        daemon, runner_id, every_ms=2000, first_at=first, concurrency_policy="forbid"
    )
    daemon.start()
    api = Api(http, daemon.url, daemon.key)

    async def running() -> sqlite3.Row | None:
        runs = fired(daemon, sid)
        return runs[0] if runs and runs[0]["status"] == "running" else None

    only = await wait_until(running, timeout=30, what="the first fire's run to run")

    async def two_skipped() -> bool:
        return daemon.log_text().count("(concurrency_policy forbid)") >= 2

    await wait_until(two_skipped, timeout=15, what="two skipped fires")
    assert [r["id"] for r in fired(daemon, sid)] == [only["id"]]
    row = schedule_row(daemon, sid)
    assert row["missed_count"] == 0 and row["next_run_at"] >= first + 3 * 2000
    status, text = await api.get("/metrics")
    assert status == 200
    assert b'runnerd_schedule_skipped_fires_total{reason="forbid"} 2.0' in text


async def test_replace_cancels_its_long_run_then_fires(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon, runner_id = await runner_then_stop(
        start_daemon,
        http,
        run_command="sleep 30",  # the test config's stop grace: 1 s
    )
    first = now_ms() + 3000
    sid = add_schedule(
        daemon, runner_id, every_ms=4000, first_at=first, concurrency_policy="replace"
    )
    daemon.start()

    async def second_running() -> list[sqlite3.Row] | None:
        runs = fired(daemon, sid)
        return runs if len(runs) >= 2 and runs[1]["status"] == "running" else None

    runs = await wait_until(second_running, timeout=40, what="the second fire's run to run")
    old, new = runs[0], runs[1]
    assert (old["status"], old["failure_reason"]) == ("failed", "canceled")
    assert old["error"] == "Replaced by the schedule's next fire."
    assert new["scheduled_for"] == old["scheduled_for"] + 4000
    assert "(concurrency_policy replace)" in daemon.log_text()
