"""The schedules' firing loop on a real SQLite store, with a clock the test moves by
hand and a fake scheduler (no Docker): when a slot fires, missed slots and the
deadline, concurrency policies, changes, racing loops and store faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runnerd import config as config_module
from runnerd.config import Config
from runnerd.firing import REPLACED, Firing
from runnerd.metrics import REGISTRY
from runnerd.models import FailureReason, Run, Runner, Schedule, Status, Trigger, now_ms
from runnerd.store import Store

DEADLINE = 5.0  # generous bound for what should happen at once
MINUTE = 60_000
T0 = (now_ms() // (60 * MINUTE)) * 60 * MINUTE  # the schedules' anchor: a round hour, near now


class FakeClock:
    """Time moves only by `advance`; the loop's wait returns when it passes the
    loop's deadline or something wakes the loop. Back-off sleeps are recorded."""

    def __init__(self, start: int) -> None:
        self.t = start
        self.sleeps: list[float] = []
        self.idle = False  # the loop is waiting, until `self.until`
        self.until: int | None = None
        self._moved = asyncio.Event()

    def now(self) -> int:
        return self.t

    def advance(self, ms: int) -> None:
        self.t += ms
        if self.idle and self.until is not None and self.t >= self.until:
            self.idle = False  # it is woken: settle() waits for its next wait
        self._moved.set()

    async def wait(self, event: asyncio.Event, until: int | None) -> None:
        self.idle, self.until = True, until
        try:
            while not event.is_set() and (until is None or self.t < until):
                self._moved = moved = asyncio.Event()
                waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(moved.wait())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
        finally:
            self.idle = False

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


@dataclass
class FakeScheduler:
    """What the loop asks of the scheduler: wake-ups, and cancels of runs in flight
    (a running one is recorded canceled, as the executor would)."""

    store: Store
    wakes: int = 0
    cancels: list[tuple[str, float]] = field(default_factory=list)
    in_flight: bool = True  # False: as while a run is starting or being re-attached

    def wake(self) -> None:
        self.wakes += 1

    async def cancel(self, run_id: str, why: str, wait_seconds: float) -> bool:
        self.cancels.append((run_id, wait_seconds))
        run = await self.store.get_run(run_id)
        if run is None or run.status is not Status.RUNNING or not self.in_flight:
            return False
        await self.store.finish_run(
            run_id,
            Status.FAILED,
            exit_code=137,
            failure_reason=FailureReason.CANCELED,
            error=why,
        )
        return True


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return config_module.from_dict({"timezone": "UTC", "storage": {"data_dir": str(tmp_path)}})


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    async with Store(config.storage.db_path, config.storage.secret_key_path) as s:
        yield s


@pytest.fixture
async def runner(store: Store) -> Runner:
    return await store.create_runner(
        {
            "name": "job",
            "image_name": "busybox",
            "image_tag": "latest",
            "run_command": "echo hi",
            "argv": None,
            "entrypoint": None,
            "timeout_seconds": 60,
            "instance_type": "standard-s",
        },
        [("FROM_RUNNER", "1")],
    )


@dataclass
class Loop:
    firing: Firing
    clock: FakeClock
    scheduler: FakeScheduler

    async def settle(self) -> None:
        """Until the loop waits again, with no fire in flight and no wake-up unseen."""
        await until(
            lambda: self.clock.idle and not self.firing._fires and not self.firing._wakeup.is_set()
        )

    async def at(self, t: int) -> None:
        """Move the clock to `t` and let the loop do what is due."""
        self.clock.advance(t - self.clock.t)
        await asyncio.sleep(0)
        await self.settle()


@pytest.fixture
async def start(store: Store, config: Config) -> AsyncIterator[Callable[..., Awaitable[Loop]]]:
    loops: list[Firing] = []

    async def start_loop(at: int, on: Store | None = None) -> Loop:
        clock = FakeClock(at)
        scheduler = FakeScheduler(on or store)
        # The fake has what the loop calls of the scheduler.
        firing = Firing(on or store, config, scheduler, clock=clock)  # type: ignore[arg-type]
        firing.start()
        loops.append(firing)
        await asyncio.wait_for(firing.loaded.wait(), DEADLINE)
        loop = Loop(firing, clock, scheduler)
        await loop.settle()
        return loop

    yield start_loop
    for firing in loops:
        await firing.stop()


async def until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def add_schedule(
    store: Store,
    runner: Runner,
    *,
    cron: str = "@every 60s",
    next_run_at: int | None = T0 + MINUTE,
    anchor_at: int = T0,
    concurrency_policy: str = "allow",
    starting_deadline_seconds: int = 300,
    env: list[tuple[str, str]] | None = None,
) -> str:
    """A schedule row, as the API's create would leave it (written with a second
    connection to the file)."""
    schedule_id = str(uuid.uuid4())
    with db(store) as conn:
        conn.execute(
            "INSERT INTO schedules (id, runner_id, cron, timezone, enabled, env,"
            " concurrency_policy, starting_deadline_seconds, anchor_at, next_run_at,"
            " created_at, updated_at) VALUES (?, ?, ?, 'UTC', 1, ?, ?, ?, ?, ?, ?, ?)",
            (
                schedule_id,
                runner.id,
                cron,
                store.box.encrypt(json.dumps(env or [])),
                concurrency_policy,
                starting_deadline_seconds,
                anchor_at,
                next_run_at,
                anchor_at,
                anchor_at,
            ),
        )
    return schedule_id


@contextlib.contextmanager
def db(store: Store) -> Iterator[sqlite3.Connection]:
    """A second connection to the store's file: what the API (or another process)
    would have written, under the loop's feet."""
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


async def schedule(store: Store, schedule_id: str) -> Schedule:
    found = await store.schedule_to_fire(schedule_id)
    assert found is not None
    return found


def patch_schedule(store: Store, schedule_id: str, **columns: Any) -> None:
    sets = ", ".join(f"{c} = ?" for c in columns)
    with db(store) as conn:
        conn.execute(f"UPDATE schedules SET {sets} WHERE id = ?", (*columns.values(), schedule_id))


async def runs_of(store: Store, schedule_id: str) -> list[Run]:
    with db(store) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM runs WHERE schedule_id = ? ORDER BY seq", (schedule_id,)
            )
        ]
    runs = [await store.get_run(i) for i in ids]
    return [r for r in runs if r is not None]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def store_fault() -> sqlite3.OperationalError:
    e = sqlite3.OperationalError("database is locked")
    e.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]  # as SQLite sets it
    return e


# -- when a slot fires ---------------------------------------------------------------


async def test_a_schedule_fires_at_its_slot_and_not_before(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner, env=[("FROM_SCHEDULE", "2")])
    fires = metric("runnerd_schedule_fires_total")
    loop = await start(T0 + MINUTE - 1)
    assert await runs_of(store, sid) == []

    await loop.at(T0 + MINUTE)
    [run] = await runs_of(store, sid)
    assert (run.trigger, run.schedule_id, run.scheduled_for) == (Trigger.SCHEDULE, sid, T0 + MINUTE)
    assert run.created_at == T0 + MINUTE  # made at the slot, by the loop's clock
    assert run.status is Status.PENDING
    assert dict(run.env) == {"FROM_RUNNER": "1", "FROM_SCHEDULE": "2"}
    assert loop.scheduler.wakes == 1
    assert metric("runnerd_schedule_fires_total") == fires + 1
    s = await schedule(store, sid)
    assert (s.next_run_at, s.last_run_id, s.last_run_at) == (
        T0 + 2 * MINUTE,
        run.id,
        run.scheduled_for,  # the slot (here also when it was made)
    )
    assert s.missed_count == 0


async def test_the_next_slot_fires_after_the_first(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner)
    loop = await start(T0)
    await loop.at(T0 + MINUTE + 20)  # a little late: not a missed slot
    await loop.at(T0 + 2 * MINUTE - 1)
    assert len(await runs_of(store, sid)) == 1
    await loop.at(T0 + 2 * MINUTE)
    assert [r.scheduled_for for r in await runs_of(store, sid)] == [T0 + MINUTE, T0 + 2 * MINUTE]
    assert (await schedule(store, sid)).missed_count == 0


async def test_a_cron_schedule_fires_at_its_wall_times(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner, cron="*/5 * * * *", next_run_at=T0 + 5 * MINUTE)
    loop = await start(T0)
    await loop.at(T0 + 5 * MINUTE)
    assert [r.scheduled_for for r in await runs_of(store, sid)] == [T0 + 5 * MINUTE]
    assert (await schedule(store, sid)).next_run_at == T0 + 10 * MINUTE


async def test_schedules_due_at_the_same_moment_all_fire_once(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    ids = [add_schedule(store, runner) for _ in range(100)]
    loop = await start(T0)
    await loop.at(T0 + MINUTE)
    with db(store) as conn:
        rows = conn.execute("SELECT schedule_id, scheduled_for FROM runs").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert {r[1] for r in rows} == {T0 + MINUTE}


async def test_the_loop_reads_nothing_while_no_slot_is_due(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    for _ in range(50):
        add_schedule(store, runner, next_run_at=T0 + 10 * MINUTE)
    loop = await start(T0)
    reads: list[str] = []
    read = store.schedule_to_fire

    async def counted(schedule_id: str) -> Schedule | None:
        reads.append(schedule_id)
        return await read(schedule_id)

    async def scanned() -> list[tuple[str, int]]:
        reads.append("all")
        return []

    store.schedule_to_fire = counted  # type: ignore[method-assign]  # counts the loop's reads
    store.schedules_due = scanned  # type: ignore[method-assign]
    for minute in range(1, 10):  # time passes: no scan, no tick
        await loop.at(T0 + minute * MINUTE)
    assert reads == []
    await loop.at(T0 + 10 * MINUTE)
    assert len(reads) == 50


# -- changes -------------------------------------------------------------------------


async def test_changed_takes_effect_without_waiting_for_the_old_top(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner, next_run_at=T0 + 60 * MINUTE)
    loop = await start(T0)
    patch_schedule(store, sid, next_run_at=T0 + MINUTE)  # as a PATCH would
    loop.firing.changed(await schedule(store, sid))
    await loop.at(T0 + MINUTE)
    assert [r.scheduled_for for r in await runs_of(store, sid)] == [T0 + MINUTE]


async def test_a_new_schedule_fires_once_changed_is_called(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    loop = await start(T0)
    sid = add_schedule(store, runner)  # made after the loop loaded
    loop.firing.changed(await schedule(store, sid))
    await loop.at(T0 + MINUTE)
    assert len(await runs_of(store, sid)) == 1


async def test_removed_and_disabled_schedules_do_not_fire(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    gone, paused = add_schedule(store, runner), add_schedule(store, runner)
    loop = await start(T0)
    loop.firing.removed(gone)
    patch_schedule(store, paused, enabled=0, next_run_at=None)
    loop.firing.changed(await schedule(store, paused))
    await loop.at(T0 + 10 * MINUTE)
    assert await runs_of(store, gone) == [] and await runs_of(store, paused) == []


async def test_a_stale_heap_entry_after_a_patch_is_ignored(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner, next_run_at=T0 + MINUTE)
    loop = await start(T0)
    reads: list[str] = []
    read = store.schedule_to_fire

    async def counted(schedule_id: str) -> Schedule | None:
        reads.append(schedule_id)
        return await read(schedule_id)

    store.schedule_to_fire = counted  # type: ignore[method-assign]  # counts the loop's reads
    patch_schedule(store, sid, next_run_at=T0 + 5 * MINUTE)
    loop.firing.changed(await read(sid))
    await loop.at(T0 + MINUTE)  # the old entry comes up: skipped, nothing read
    assert reads == []
    await loop.at(T0 + 5 * MINUTE)
    assert [r.scheduled_for for r in await runs_of(store, sid)] == [T0 + 5 * MINUTE]
    assert reads == [sid]


async def test_a_fire_follows_the_store_when_the_schedule_moved_under_it(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    # Changed by someone who did not tell this loop (another process's write).
    sid = add_schedule(store, runner, next_run_at=T0 + MINUTE)
    loop = await start(T0)
    patch_schedule(store, sid, next_run_at=T0 + 3 * MINUTE)
    await loop.at(T0 + MINUTE)
    assert await runs_of(store, sid) == []
    await loop.at(T0 + 3 * MINUTE)
    assert [r.scheduled_for for r in await runs_of(store, sid)] == [T0 + 3 * MINUTE]


# -- missed slots and the deadline ---------------------------------------------------


async def test_down_over_five_slots_inside_the_deadline_fires_only_the_latest(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner, starting_deadline_seconds=300)
    missed = metric("runnerd_schedule_missed_slots_total")
    await start(T0 + 5 * MINUTE + 30_000)  # slots T0+1..5 min passed while "down"
    [run] = await runs_of(store, sid)
    assert run.scheduled_for == T0 + 5 * MINUTE
    s = await schedule(store, sid)
    assert (s.missed_count, s.next_run_at) == (4, T0 + 6 * MINUTE)
    # A late fire: its run is made now, and last_run_at is still the slot it was for.
    assert (run.created_at, s.last_run_at) == (T0 + 5 * MINUTE + 30_000, T0 + 5 * MINUTE)
    assert metric("runnerd_schedule_missed_slots_total") == missed + 4


async def test_down_past_the_deadline_fires_nothing_and_counts_every_slot(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner, starting_deadline_seconds=30)
    await start(T0 + 5 * MINUTE + 45_000)  # the latest slot is 45 s old
    assert await runs_of(store, sid) == []
    s = await schedule(store, sid)
    assert (s.missed_count, s.next_run_at) == (5, T0 + 6 * MINUTE)


async def test_deadline_zero_fires_on_time_and_never_late(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    on_time = add_schedule(store, runner, starting_deadline_seconds=0)
    late = add_schedule(store, runner, starting_deadline_seconds=0, next_run_at=T0 + 2 * MINUTE)
    loop = await start(T0)
    await loop.at(T0 + MINUTE + 200)  # the loop's own lateness is not a missed fire
    assert len(await runs_of(store, on_time)) == 1
    loop.clock.t = T0 + 2 * MINUTE + 1500  # as if the process had been frozen past it
    await loop.at(loop.clock.t)
    assert await runs_of(store, late) == []
    assert (await schedule(store, late)).missed_count == 1


# -- concurrency policies ------------------------------------------------------------


async def active_run(store: Store, runner: Runner, sid: str, *, running: bool = False) -> Run:
    run, _ = await store.create_run(
        runner,
        [],
        1.0,
        512,
        100,
        trigger=Trigger.SCHEDULE,
        schedule_id=sid,
        scheduled_for=T0,
    )
    if running:
        run = await store.mark_running(run.id, "c0ffee", now_ms())
    return run


async def test_forbid_skips_the_fire_while_a_run_of_the_schedule_is_active(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner, concurrency_policy="forbid")
    earlier = await active_run(store, runner, sid, running=True)
    skipped = metric("runnerd_schedule_skipped_fires_total", reason="forbid")
    loop = await start(T0)
    await loop.at(T0 + MINUTE)
    assert [r.id for r in await runs_of(store, sid)] == [earlier.id]
    s = await schedule(store, sid)
    assert (s.next_run_at, s.missed_count) == (T0 + 2 * MINUTE, 0)  # skipped is not missed
    assert metric("runnerd_schedule_skipped_fires_total", reason="forbid") == skipped + 1

    await store.finish_run(
        earlier.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None
    )
    await loop.at(T0 + 2 * MINUTE)
    assert [r.scheduled_for for r in await runs_of(store, sid)] == [T0, T0 + 2 * MINUTE]


async def test_replace_cancels_the_active_pending_run_then_fires(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner, concurrency_policy="replace")
    earlier = await active_run(store, runner, sid)
    loop = await start(T0)
    await loop.at(T0 + MINUTE)
    old, new = await runs_of(store, sid)
    assert old.id == earlier.id
    assert (old.status, old.failure_reason, old.error) == (
        Status.FAILED,
        FailureReason.CANCELED,
        REPLACED,
    )
    assert (new.status, new.scheduled_for) == (Status.PENDING, T0 + MINUTE)
    assert loop.scheduler.cancels == [(earlier.id, 0)]  # in case it was being started


async def test_replace_stops_the_running_run_and_waits_for_it(
    store: Store, runner: Runner, config: Config, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner, concurrency_policy="replace")
    earlier = await active_run(store, runner, sid, running=True)
    loop = await start(T0)
    await loop.at(T0 + MINUTE)
    old, new = await runs_of(store, sid)
    assert (old.id, old.failure_reason) == (earlier.id, FailureReason.CANCELED)
    assert (new.status, new.scheduled_for) == (Status.PENDING, T0 + MINUTE)
    assert loop.scheduler.cancels == [(earlier.id, config.docker.stop_grace_seconds + 5)]


async def test_replace_still_fires_when_the_running_run_cannot_be_stopped_now(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]], caplog: Any
) -> None:
    sid = add_schedule(store, runner, concurrency_policy="replace")
    earlier = await active_run(store, runner, sid, running=True)
    loop = await start(T0)
    loop.scheduler.in_flight = False
    await loop.at(T0 + MINUTE)
    old, new = await runs_of(store, sid)
    assert (old.id, old.status) == (earlier.id, Status.RUNNING)
    assert new.scheduled_for == T0 + MINUTE  # the slot is not lost
    assert "could not be stopped now" in caplog.text


async def test_allow_fires_beside_an_active_run(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner)
    await active_run(store, runner, sid, running=True)
    loop = await start(T0)
    await loop.at(T0 + MINUTE)
    assert len(await runs_of(store, sid)) == 2
    assert loop.scheduler.cancels == []


async def test_a_runner_that_cannot_run_skips_the_fire_and_moves_on(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner)
    with db(store) as conn:  # its instance type left the config
        conn.execute("UPDATE runners SET instance_type = 'gone' WHERE id = ?", (runner.id,))
    skipped = metric("runnerd_schedule_skipped_fires_total", reason="not_triggerable")
    loop = await start(T0)
    await loop.at(T0 + MINUTE)
    assert await runs_of(store, sid) == []
    assert (await schedule(store, sid)).next_run_at == T0 + 2 * MINUTE
    assert metric("runnerd_schedule_skipped_fires_total", reason="not_triggerable") == skipped + 1
    assert loop.firing.task is not None and not loop.firing.task.done()


# -- exactly once --------------------------------------------------------------------


async def test_two_loops_racing_the_same_slot_make_one_run(
    store: Store, runner: Runner, config: Config, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner)
    async with Store(config.storage.db_path, config.storage.secret_key_path) as other:
        # Both loops decide before either writes: the compare-and-set decides.
        arrived = 0
        both = asyncio.Event()

        def held(s: Store) -> None:
            write = s.fire_schedule

            async def fire(*args: Any, **kw: Any) -> Any:
                nonlocal arrived
                arrived += 1
                if arrived == 2:
                    both.set()
                await asyncio.wait_for(both.wait(), DEADLINE)
                return await write(*args, **kw)

            s.fire_schedule = fire  # type: ignore[method-assign]  # holds each write

        held(store)
        held(other)
        one, two = await start(T0), await start(T0, on=other)
        one.clock.advance(MINUTE)
        two.clock.advance(MINUTE)
        await until(lambda: both.is_set())
        await one.settle()
        await two.settle()
    [run] = await runs_of(store, sid)
    assert run.scheduled_for == T0 + MINUTE
    s = await schedule(store, sid)
    assert (s.next_run_at, s.last_run_id, s.missed_count) == (T0 + 2 * MINUTE, run.id, 0)


async def test_a_slot_that_already_has_its_run_is_not_fired_again(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    sid = add_schedule(store, runner)
    loop = await start(T0)
    await loop.at(T0 + MINUTE)
    [first] = await runs_of(store, sid)
    patch_schedule(store, sid, next_run_at=T0 + MINUTE)  # e.g. a backup restored from before it
    loop.firing.changed(await schedule(store, sid))
    await loop.at(T0 + MINUTE + 10)
    assert [r.id for r in await runs_of(store, sid)] == [first.id]  # the UNIQUE slot held
    assert (await schedule(store, sid)).next_run_at == T0 + 2 * MINUTE


async def test_a_store_fault_during_a_fire_backs_off_and_the_fire_happens_once(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]], caplog: Any
) -> None:
    sid = add_schedule(store, runner)
    write = store.fire_schedule
    faults = [store_fault(), store_fault()]

    async def failing(*args: Any, **kw: Any) -> Any:
        if faults:
            raise faults.pop()
        return await write(*args, **kw)

    store.fire_schedule = failing  # type: ignore[method-assign]  # the database refuses twice
    loop = await start(T0)
    await loop.at(T0 + MINUTE)
    assert [r.scheduled_for for r in await runs_of(store, sid)] == [T0 + MINUTE]
    assert loop.clock.sleeps == [0.5, 1.0]
    assert caplog.text.count("the database failed: database is locked") == 2
    assert loop.firing.task is not None and not loop.firing.task.done()


async def test_an_unexpected_error_in_a_fire_ends_the_loop(
    store: Store, runner: Runner, start: Callable[..., Awaitable[Loop]]
) -> None:
    add_schedule(store, runner)

    async def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug")

    store.fire_schedule = broken  # type: ignore[method-assign]
    loop = await start(T0)
    loop.clock.advance(MINUTE)
    task = loop.firing.task
    assert task is not None
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(asyncio.shield(task), DEADLINE)
