"""The dashboard's store queries (runnerd/store/dashboard.py) on a real SQLite store:
the 24 h totals and their boundary, the exact median, active runs, the latest
failures, the next fires and each runner's record of its last 50 runs."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runnerd.models import Runner, Status
from runnerd.store import Store
from runnerd.store.dashboard import DAY_MS

NOW = 1_800_000_000_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "runnerd.db") as s:
        yield s


async def make_runner(store: Store, name: str = "r") -> Runner:
    return await store.create_runner(
        {
            "name": name,
            "image_name": "alpine",
            "image_tag": "3",
            "run_command": "true",
            "timeout_seconds": 60,
            "instance_type": "small",
        },
        [],
    )


async def add_run(
    store: Store,
    runner: Runner,
    status: str,
    *,
    completed_at: int | None = None,
    duration_ms: int | None = 100,
    started: bool = True,
    reason: str | None = None,
) -> str:
    """A run of `runner` in `status`; a completed one ended at `completed_at` after
    running `duration_ms` (or never started: canceled while pending)."""
    run, _ = await store.create_run(runner, [], 1.0, 1024, 512)
    if status == "failed" and reason is None:
        reason = "nonzero_exit"
    started_at = None
    if completed_at is not None and started and duration_ms is not None:
        started_at = completed_at - duration_ms
    elif status == "running":
        started_at = NOW - 1000
    with sqlite3.connect(store.path) as db:
        db.execute(
            "UPDATE runs SET status = ?, started_at = ?, completed_at = ?, failure_reason = ?,"
            " error = ? WHERE id = ?",
            (
                status,
                started_at,
                completed_at,
                reason,
                f"error of {reason}" if reason else None,
                run.id,
            ),
        )
    db.close()
    return run.id


async def test_totals_count_the_runs_completed_in_the_window_and_their_rate(store: Store) -> None:
    runner = await make_runner(store)
    for _ in range(3):
        await add_run(store, runner, "succeeded", completed_at=NOW - 1000)
    await add_run(store, runner, "failed", completed_at=NOW - 2000)
    await add_run(store, runner, "running")
    await add_run(store, runner, "pending")
    totals = await store.totals_since(NOW - DAY_MS)
    assert (totals.succeeded, totals.failed, totals.completed) == (3, 1, 4)
    assert totals.success_rate == 0.75


async def test_the_24_hour_window_includes_its_first_millisecond_and_nothing_before(
    store: Store,
) -> None:
    runner = await make_runner(store)
    since = NOW - DAY_MS
    await add_run(store, runner, "succeeded", completed_at=since, duration_ms=10)
    await add_run(store, runner, "failed", completed_at=since - 1, duration_ms=99_999)
    totals = await store.totals_since(since)
    assert (totals.succeeded, totals.failed) == (1, 0)
    assert totals.median_ms == 10  # the run before the window is not in the median either


async def test_the_median_is_the_middle_duration_or_the_mean_of_the_middle_two(
    store: Store,
) -> None:
    runner = await make_runner(store)
    for ms in (500, 100, 900):
        await add_run(store, runner, "succeeded", completed_at=NOW - 10, duration_ms=ms)
    assert (await store.totals_since(NOW - DAY_MS)).median_ms == 500
    await add_run(store, runner, "failed", completed_at=NOW - 10, duration_ms=700)
    assert (await store.totals_since(NOW - DAY_MS)).median_ms == 600  # (500 + 700) / 2


async def test_a_run_that_never_started_counts_but_has_no_duration(store: Store) -> None:
    runner = await make_runner(store)
    await add_run(store, runner, "failed", completed_at=NOW - 5, started=False, reason="canceled")
    totals = await store.totals_since(NOW - DAY_MS)
    assert (totals.failed, totals.median_ms) == (1, None)
    await add_run(store, runner, "succeeded", completed_at=NOW - 5, duration_ms=40)
    assert (await store.totals_since(NOW - DAY_MS)).median_ms == 40


async def test_nothing_completed_has_no_rate_and_no_median(store: Store) -> None:
    totals = await store.totals_since(NOW - DAY_MS)
    assert (totals.completed, totals.success_rate, totals.median_ms) == (0, None, None)


async def test_active_runs_are_pending_and_running_oldest_first_with_their_runner(
    store: Store,
) -> None:
    a, b = await make_runner(store, "a"), await make_runner(store, "b")
    first = await add_run(store, a, "running")
    await add_run(store, a, "succeeded", completed_at=NOW)
    second = await add_run(store, b, "pending")
    active = await store.active_runs()
    assert [(run.id, name) for run, name in active] == [(first, "a"), (second, "b")]
    assert [run.status for run, _ in active] == [Status.RUNNING, Status.PENDING]
    assert [run.id for run, _ in await store.active_runs(limit=1)] == [first]


async def test_latest_failures_are_newest_completed_first_with_reason_and_error(
    store: Store,
) -> None:
    runner = await make_runner(store)
    old = await add_run(store, runner, "failed", completed_at=NOW - 500, reason="timeout")
    await add_run(store, runner, "succeeded", completed_at=NOW)
    new = await add_run(store, runner, "failed", completed_at=NOW - 100)
    failures = await store.latest_failures()
    assert [run.id for run, _ in failures] == [new, old]
    run, name = failures[1]
    assert (name, run.failure_reason and run.failure_reason.value, run.error) == (
        "r",
        "timeout",
        "error of timeout",
    )
    assert len(await store.latest_failures(limit=1)) == 1


async def test_next_fires_are_enabled_schedules_soonest_first(store: Store) -> None:
    a, b = await make_runner(store, "a"), await make_runner(store, "b")
    fields = {
        "cron": "@hourly",
        "timezone": "UTC",
        "enabled": True,
        "env": [],
        "concurrency_policy": "allow",
        "starting_deadline_seconds": 300,
    }
    sa = await store.create_schedule(a.id, fields)
    sb = await store.create_schedule(b.id, fields)
    off = await store.create_schedule(b.id, {**fields, "enabled": False})
    with sqlite3.connect(store.path) as db:  # b's fires first
        db.execute("UPDATE schedules SET next_run_at = ? WHERE id = ?", (NOW + 10, sb.id))
        db.execute("UPDATE schedules SET next_run_at = ? WHERE id = ?", (NOW + 20, sa.id))
    db.close()
    fires = await store.next_fires()
    assert [(s.id, name) for s, name in fires] == [(sb.id, "b"), (sa.id, "a")]
    assert off.id not in {s.id for s, _ in fires}
    records = await store.runner_records()
    assert (records[a.id].next_fire, records[b.id].next_fire) == (NOW + 20, NOW + 10)


async def test_a_runners_record_is_over_its_last_50_completed_runs(store: Store) -> None:
    runner, idle = await make_runner(store, "busy"), await make_runner(store, "idle")
    for _ in range(10):  # older than the last 50: not counted
        await add_run(store, runner, "failed", completed_at=NOW, duration_ms=9000)
    for i in range(50):
        status = "failed" if i % 5 == 0 else "succeeded"
        await add_run(store, runner, status, completed_at=NOW, duration_ms=100 + i)
    await add_run(store, runner, "running")  # newest: the last status, not in the figures
    records = await store.runner_records()
    record = records[runner.id]
    assert record.last_status is Status.RUNNING
    assert record.recent == 50
    assert record.success_rate == 0.8
    assert record.median_ms == 124.5  # 100..149: the middle two are 124 and 125
    empty = records[idle.id]
    assert (empty.last_status, empty.recent, empty.success_rate, empty.median_ms) == (
        None,
        0,
        None,
        None,
    )
