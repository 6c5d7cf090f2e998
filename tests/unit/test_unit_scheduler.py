"""Queue policy with a fake executor: limits, order, wake-ups, engine outages, bugs, stop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import runnerd.scheduler as scheduler_module
from runnerd.engine import LABEL_DAEMON, LABEL_RUN, EngineError, EngineUnavailable
from runnerd.executor import Executor
from runnerd.logs import LogStore
from runnerd.models import FailureReason, Run, Runner, Status, now_ms
from runnerd.scheduler import Scheduler
from runnerd.store import Conflict, Store
from runnerd.store.memory import MemoryStore

DEADLINE = 5.0  # generous bound for things that should happen at once


class FakeExecutor:
    """Records every call; each run waits for its own Event, then is finished in the store.

    `failures[run_id]` is a list of exceptions raised by the next calls for that
    run (before it is marked running, unless `fail_after_running` holds it)."""

    def __init__(self, store: AnyStore) -> None:
        self.store = store
        self.cond = asyncio.Condition()
        self.started: list[str] = []  # execute() calls, in order (repeats on retry)
        self.recovered: list[str] = []  # recover() calls
        self.cancelled: list[str] = []  # calls that got CancelledError
        self.stop_requests: list[tuple[str, str]] = []
        self.running: set[str] = set()  # inside execute() or recover()
        self.waiting: set[str] = set()  # started, marked running, waiting for release
        self.max_running = 0
        self.release: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.exit_codes: dict[str, int] = {}
        self.stop_reasons: dict[str, str] = {}
        self.failures: dict[str, list[BaseException]] = defaultdict(list)
        self.fail_after_running: set[str] = set()
        self.gates: dict[str, asyncio.Event] = {}  # hold a run before it is watched
        # What reconcile() does; by default, as the executor with no containers
        # to clean up: the runs left running, to re-attach.
        self.reconciler: Callable[[], Awaitable[list[Run]]] = lambda: self.store.runs_with_status(
            Status.RUNNING
        )
        self.removed: list[str] = []  # remove_container() calls

    async def reconcile(self) -> list[Run]:
        return await self.reconciler()

    async def remove_container(self, run: Run) -> None:
        self.removed.append(run.id)

    async def _enter(self, run_id: str, log: list[str]) -> None:
        async with self.cond:
            log.append(run_id)
            self.running.add(run_id)
            self.max_running = max(self.max_running, len(self.running))
            self.cond.notify_all()

    async def _leave(self, run_id: str) -> None:
        async with self.cond:
            self.running.discard(run_id)
            self.cond.notify_all()

    async def execute(self, run: Run) -> Run:
        await self._enter(run.id, self.started)
        try:
            if self.failures[run.id] and run.id not in self.fail_after_running:
                raise self.failures[run.id].pop(0)
            if run.id in self.gates:
                await self.gates[run.id].wait()
            await self.store.mark_running(run.id, f"container-{run.id}", 1_000)
            if self.failures[run.id]:
                raise self.failures[run.id].pop(0)
            return await self._until_released(run)
        except asyncio.CancelledError:
            self.cancelled.append(run.id)
            raise
        finally:
            await self._leave(run.id)

    async def recover(self, run: Run) -> Run:
        await self._enter(run.id, self.recovered)
        try:
            if run.id in self.gates:  # e.g. still reading the store before re-attaching
                await self.gates[run.id].wait()
            return await self._until_released(run)
        except asyncio.CancelledError:
            self.cancelled.append(run.id)
            raise
        finally:
            await self._leave(run.id)

    async def stop_run(self, run_id: str, why: str) -> bool:
        self.stop_requests.append((run_id, why))
        if run_id not in self.waiting:
            return False
        self.stop_reasons[run_id] = why
        self.release[run_id].set()
        return True

    async def _until_released(self, run: Run) -> Run:
        async with self.cond:
            self.waiting.add(run.id)
            self.cond.notify_all()
        try:
            await self.release[run.id].wait()
        finally:
            self.waiting.discard(run.id)
        if run.id in self.stop_reasons:
            return await self.store.finish_run(
                run.id,
                Status.FAILED,
                exit_code=137,
                failure_reason=FailureReason.CANCELED,
                error=self.stop_reasons[run.id],
            )
        code = self.exit_codes.get(run.id, 0)
        return await self.store.finish_run(
            run.id,
            Status.SUCCEEDED if code == 0 else Status.FAILED,
            exit_code=code,
            failure_reason=None if code == 0 else FailureReason.NONZERO_EXIT,
            error=None,
        )

    async def until(self, predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
        async with asyncio.timeout(timeout):
            async with self.cond:
                await self.cond.wait_for(predicate)


# Every test runs on the in-memory store and on the SQLite one: the scheduler needs
# only a RunStore, and the two must not differ in anything it relies on.
AnyStore = Store | MemoryStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    if request.param == "sqlite":
        async with Store(tmp_path / "runnerd.db") as sqlite_store:
            yield sqlite_store
    else:
        async with MemoryStore() as memory_store:
            yield memory_store


@pytest.fixture
def fake(store: AnyStore) -> FakeExecutor:
    return FakeExecutor(store)


@pytest.fixture
async def make_scheduler(
    store: AnyStore, fake: FakeExecutor
) -> AsyncIterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def make(max_concurrent_runs: int = 2) -> Scheduler:
        s = Scheduler(store, fake, max_concurrent_runs=max_concurrent_runs)
        made.append(s)
        return s

    yield make
    for s in made:
        async with asyncio.timeout(DEADLINE):
            await s.stop()


async def make_runner(store: AnyStore, name: str = "job", **over: Any) -> Runner:
    fields: dict[str, Any] = {
        "name": name,
        "image_name": "busybox",
        "image_tag": "latest",
        "run_command": "true",
        "argv": None,
        "entrypoint": None,
        "timeout_seconds": 60,
        "instance_type": "standard-s",
    }
    fields.update(over)
    return await store.create_runner(fields, [])


async def queue(store: AnyStore, runner: Runner, n: int = 1) -> list[str]:
    ids = []
    for _ in range(n):
        run, _created = await store.create_run(runner, [], 1.0, 1024, 512)
        ids.append(run.id)
    return ids


async def settle(store: AnyStore, rounds: int = 10) -> None:
    """Let the scheduler do whatever it would do now: yields plus store round trips
    (the store works in a thread, so bare yields are not enough). Never a sleep."""
    for _ in range(rounds):
        await asyncio.sleep(0)
        await store.next_pending()
        await asyncio.sleep(0)


async def status_of(store: AnyStore, run_id: str) -> Run:
    run = await store.get_run(run_id)
    assert run is not None
    return run


async def until_status(
    store: AnyStore, run_id: str, status: Status, timeout: float = DEADLINE
) -> Run:
    async with asyncio.timeout(timeout):
        while (run := await status_of(store, run_id)).status is not status:
            await asyncio.sleep(0)
    return run


# -- limits and order ------------------------------------------------------------


async def test_never_more_than_max_concurrent_runs_execute_and_exactly_that_many_when_queued(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    ids = await queue(store, runner, 8)
    sched = make_scheduler(max_concurrent_runs=3)
    sched.start()
    await fake.until(lambda: len(fake.running) == 3)
    await settle(store)
    assert fake.started == ids[:3]
    assert len(fake.running) == 3 and sched.active_run_ids == set(ids[:3])
    for i, run_id in enumerate(ids):
        fake.release[run_id].set()
        expected = min(3, len(ids) - i - 1)
        await fake.until(lambda: run_id not in fake.running and len(fake.running) == expected)
        await settle(store)
        assert len(fake.running) == expected
    assert fake.max_running == 3
    assert fake.started == ids
    for run_id in ids:
        assert (await status_of(store, run_id)).status is Status.SUCCEEDED


async def test_runs_start_oldest_first_across_runners(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    a, b = await make_runner(store, "aaa"), await make_runner(store, "bbb")
    order = []
    for runner in (b, a, a, b, a):
        order += await queue(store, runner)
    sched = make_scheduler(max_concurrent_runs=1)
    sched.start()
    for i, run_id in enumerate(order):
        await fake.until(lambda: len(fake.started) == i + 1)
        assert fake.started[-1] == run_id
        fake.release[run_id].set()
    await until_status(store, order[-1], Status.SUCCEEDED)
    assert fake.started == order
    assert fake.max_running == 1


async def test_a_runner_at_its_own_limit_waits_while_other_runners_start(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    limited = await make_runner(store, "limited", max_concurrent_runs=1)
    other = await make_runner(store, "other")
    l_ids = await queue(store, limited, 3)
    o_ids = await queue(store, other, 2)
    sched = make_scheduler(max_concurrent_runs=4)
    sched.start()
    await fake.until(lambda: len(fake.running) == 3)
    await settle(store)
    assert fake.running == {l_ids[0], *o_ids}
    fake.release[l_ids[0]].set()
    await fake.until(lambda: l_ids[1] in fake.running)
    await settle(store)
    assert fake.running == {l_ids[1], *o_ids}
    fake.release[l_ids[1]].set()
    fake.release[l_ids[2]].set()
    await until_status(store, l_ids[2], Status.SUCCEEDED)
    assert fake.started == [l_ids[0], *o_ids, l_ids[1], l_ids[2]]


# -- wake-ups --------------------------------------------------------------------


async def test_a_run_queued_while_idle_starts_at_once_after_wake(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    sched = make_scheduler()
    sched.start()
    async with asyncio.timeout(DEADLINE):
        await sched.reconciled.wait()
    await settle(store)
    (run_id,) = await queue(store, runner)
    await settle(store)
    assert fake.started == []  # nothing polls: the trigger's wake() is what starts it
    sched.wake()
    await fake.until(lambda: fake.started == [run_id], timeout=1.0)


async def test_finishing_a_run_frees_its_slot_for_the_next_without_a_wake(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    first, second = await queue(store, runner, 2)
    sched = make_scheduler(max_concurrent_runs=1)
    sched.start()
    await fake.until(lambda: fake.started == [first])
    fake.release[first].set()
    await fake.until(lambda: fake.started == [first, second], timeout=1.0)


# -- delayed runs (not_before) ---------------------------------------------------


async def queue_at(store: AnyStore, runner: Runner, not_before: int) -> str:
    run, _created = await store.create_run(runner, [], 1.0, 1024, 512, not_before=not_before)
    return run.id


def record_start_times(fake: FakeExecutor) -> dict[str, int]:
    """When each run was handed to the executor (the clock the store reads)."""
    starts: dict[str, int] = {}
    execute = fake.execute

    async def timed(run: Run) -> Run:
        starts.setdefault(run.id, now_ms())
        return await execute(run)

    fake.execute = timed  # type: ignore[method-assign]  # the scheduler looks it up per run
    return starts


async def test_a_delayed_run_starts_at_its_time_not_before_and_without_a_wake(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    starts = record_start_times(fake)
    runner = await make_runner(store)
    not_before = now_ms() + 400
    run_id = await queue_at(store, runner, not_before)
    sched = make_scheduler()
    sched.start()
    async with asyncio.timeout(DEADLINE):
        await sched.reconciled.wait()
    await settle(store)
    assert fake.started == [] and (await status_of(store, run_id)).status is Status.PENDING
    await fake.until(lambda: fake.started == [run_id])  # nothing calls wake()
    assert not_before <= starts[run_id] < not_before + 1000  # on time: the loop slept until it


async def test_an_earlier_delayed_run_queued_while_the_loop_sleeps_wakes_it_earlier(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    starts = record_start_times(fake)
    runner = await make_runner(store)
    later = await queue_at(store, runner, now_ms() + 60_000)
    sched = make_scheduler()
    sched.start()
    async with asyncio.timeout(DEADLINE):
        await sched.reconciled.wait()
    await settle(store)  # the loop now sleeps until `later`'s time, a minute away
    soon_at = now_ms() + 300
    soon = await queue_at(store, runner, soon_at)
    sched.wake()  # as every trigger does
    await fake.until(lambda: fake.started == [soon])
    assert soon_at <= starts[soon] < soon_at + 1000
    assert (await status_of(store, later)).status is Status.PENDING


async def test_a_due_run_behind_a_delayed_one_is_not_held_up(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store, max_concurrent_runs=1)  # and the daemon's limit is 1
    delayed = await queue_at(store, runner, now_ms() + 60_000)  # older: first in the queue
    (due,) = await queue(store, runner)
    sched = make_scheduler(max_concurrent_runs=1)
    sched.start()
    await fake.until(lambda: fake.started == [due])
    fake.release[due].set()
    await until_status(store, due, Status.SUCCEEDED)
    await settle(store)
    assert fake.started == [due]
    assert (await status_of(store, delayed)).status is Status.PENDING


async def test_a_delayed_run_whose_time_has_passed_starts_at_once(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    """As after a restart: the daemon was down when its time came."""
    runner = await make_runner(store)
    run_id = await queue_at(store, runner, now_ms() - 5_000)
    sched = make_scheduler()
    sched.start()
    await fake.until(lambda: fake.started == [run_id], timeout=1.0)


async def test_a_delayed_run_canceled_while_it_waits_never_starts(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    canceled = await queue_at(store, runner, now_ms() + 300)
    marker = await queue_at(store, runner, now_ms() + 600)  # due after the canceled one
    sched = make_scheduler()
    sched.start()
    async with asyncio.timeout(DEADLINE):
        await sched.reconciled.wait()
    assert await store.cancel_pending(canceled, "The run was canceled before it started.")
    await fake.until(lambda: fake.started == [marker])
    await settle(store)
    assert fake.started == [marker]
    assert (await status_of(store, canceled)).failure_reason is FailureReason.CANCELED


# -- engine outages and executor bugs --------------------------------------------


async def test_engine_unavailable_leaves_the_run_pending_and_it_is_retried(
    store: AnyStore,
    fake: FakeExecutor,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler_module, "BACKOFF_FIRST", 0.01)
    runner = await make_runner(store)
    (run_id,) = await queue(store, runner)
    fake.failures[run_id] = [EngineUnavailable("engine down"), EngineUnavailable("still down")]
    sched = make_scheduler()
    sched.start()
    await fake.until(lambda: fake.started.count(run_id) >= 1)
    await fake.until(lambda: fake.started.count(run_id) == 3 and run_id in fake.waiting)
    assert fake.failures[run_id] == []
    assert (await status_of(store, run_id)).status is Status.RUNNING
    fake.release[run_id].set()
    done = await until_status(store, run_id, Status.SUCCEEDED)
    assert done.failure_reason is None


async def test_a_run_stays_pending_while_the_engine_is_unavailable(
    store: AnyStore,
    fake: FakeExecutor,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler_module, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(scheduler_module, "BACKOFF_MAX", 0.02)
    runner = await make_runner(store)
    (run_id,) = await queue(store, runner)
    fake.failures[run_id] = [EngineUnavailable("down")] * 5
    sched = make_scheduler()
    sched.start()
    await fake.until(lambda: fake.started.count(run_id) >= 3)
    assert (await status_of(store, run_id)).status is Status.PENDING
    await fake.until(lambda: run_id in fake.running and not fake.failures[run_id])
    fake.release[run_id].set()
    await until_status(store, run_id, Status.SUCCEEDED)


async def test_a_run_triggered_after_the_engine_came_back_starts_without_the_outage_backoff(
    store: AnyStore,
    fake: FakeExecutor,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After an outage the first retry waits the backoff; once a run has started again
    the engine answers, so a new trigger must start at once, not after another backoff
    (which, with the real 30 s cap, would delay every claim until some run *finishes*)."""
    monkeypatch.setattr(scheduler_module, "BACKOFF_FIRST", 2.0)
    runner = await make_runner(store)
    (first,) = await queue(store, runner)
    fake.failures[first] = [EngineUnavailable("engine down")]
    sched = make_scheduler(max_concurrent_runs=4)
    sched.start()
    await fake.until(lambda: first in fake.waiting)  # retried after 2 s; now it runs
    (second,) = await queue(store, runner)
    sched.wake()
    await fake.until(lambda: second in fake.running, timeout=1.0)


async def test_an_unexpected_executor_error_fails_the_run_and_the_scheduler_keeps_going(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    broken, fine = await queue(store, runner, 2)
    fake.failures[broken] = [RuntimeError("bug in the executor")]
    sched = make_scheduler(max_concurrent_runs=1)
    sched.start()
    failed = await until_status(store, broken, Status.FAILED)
    assert failed.failure_reason is FailureReason.START_FAILED
    assert failed.error and "internal error" in failed.error
    await fake.until(lambda: fine in fake.running)
    fake.release[fine].set()
    await until_status(store, fine, Status.SUCCEEDED)
    assert fake.started.count(broken) == 1  # never claimed again


async def test_an_executor_error_after_the_run_started_keeps_it_owned_and_watches_it_again(
    store: AnyStore,
    fake: FakeExecutor,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its container may be running: never `lost` for a bug, and its slot stays held."""
    monkeypatch.setattr(scheduler_module, "BACKOFF_FIRST", 0.01)
    runner = await make_runner(store)
    run_id, waiting = await queue(store, runner, 2)
    fake.failures[run_id] = [ValueError("bug while following")]
    fake.fail_after_running.add(run_id)
    sched = make_scheduler(max_concurrent_runs=1)
    sched.start()
    await fake.until(lambda: fake.recovered == [run_id] and run_id in fake.waiting)
    assert (await status_of(store, run_id)).status is Status.RUNNING
    await settle(store)
    assert fake.started == [run_id]  # the slot stayed held: the second run waits
    fake.release[run_id].set()
    await until_status(store, run_id, Status.SUCCEEDED)
    await fake.until(lambda: waiting in fake.running)


# -- restart reconciliation ------------------------------------------------------


async def test_runs_left_running_are_recovered_and_hold_their_slots(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    left_running, pending = await queue(store, runner, 2)
    await store.mark_running(left_running, "old-container", 1)
    sched = make_scheduler(max_concurrent_runs=1)
    sched.start()
    await fake.until(lambda: fake.recovered == [left_running])
    await settle(store)
    assert fake.started == []  # the recovered run fills the only slot
    fake.release[left_running].set()
    await fake.until(lambda: fake.started == [pending])
    assert (await status_of(store, left_running)).status is Status.SUCCEEDED


# -- cancel and stop -------------------------------------------------------------


async def test_cancel_stops_an_in_flight_run_and_waits_until_it_is_recorded(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    (run_id,) = await queue(store, runner)
    sched = make_scheduler()
    sched.start()
    await fake.until(lambda: run_id in fake.waiting)
    async with asyncio.timeout(DEADLINE):
        assert await sched.cancel(run_id, "canceled by alice", wait_seconds=DEADLINE) is True
    run = await status_of(store, run_id)
    assert (run.status, run.failure_reason, run.error) == (
        Status.FAILED,
        FailureReason.CANCELED,
        "canceled by alice",
    )
    assert await sched.cancel("not-in-flight", "x", wait_seconds=1) is False


async def test_cancel_of_a_run_not_watched_yet_is_handed_to_the_executor_and_waited_for(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    """A run being re-attached after a restart is in flight, but its executor cannot
    stop it yet (stop_run → False: it keeps the cancel and applies it once it
    watches the run). cancel() hands the cancel over and waits for the run, bounded
    by wait_seconds, without hanging past it."""
    runner = await make_runner(store)
    (run_id,) = await queue(store, runner)
    await store.mark_running(run_id, "old-container", 1)
    fake.gates[run_id] = asyncio.Event()
    sched = make_scheduler()
    sched.start()
    await fake.until(lambda: fake.recovered == [run_id])
    async with asyncio.timeout(2.0):
        stopped = await sched.cancel(run_id, "canceled by alice", wait_seconds=0.3)
    assert fake.stop_requests == [(run_id, "canceled by alice")]
    assert stopped is True
    assert (await status_of(store, run_id)).status is Status.RUNNING
    fake.gates[run_id].set()
    fake.release[run_id].set()
    await until_status(store, run_id, Status.SUCCEEDED)


async def test_stop_cancels_in_flight_executions_promptly_and_starts_nothing_more(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    a, b, queued = await queue(store, runner, 3)
    sched = make_scheduler(max_concurrent_runs=2)
    sched.start()
    await fake.until(lambda: fake.waiting == {a, b})
    async with asyncio.timeout(1.0):
        await sched.stop()
    assert sorted(fake.cancelled) == sorted([a, b])
    assert fake.running == set() and sched.active_run_ids == set()
    # left as the store has them, for the next start to re-attach
    assert (await status_of(store, a)).status is Status.RUNNING
    assert (await status_of(store, queued)).status is Status.PENDING
    sched.wake()
    await settle(store)
    assert queued not in fake.started


async def test_stop_with_stop_runs_records_the_runs_canceled(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    a, b = await queue(store, runner, 2)
    sched = make_scheduler(max_concurrent_runs=2)
    sched.start()
    await fake.until(lambda: fake.waiting == {a, b})
    async with asyncio.timeout(DEADLINE):
        await sched.stop(stop_runs=True, grace_seconds=0)
    for run_id in (a, b):
        run = await status_of(store, run_id)
        assert (run.status, run.failure_reason) == (Status.FAILED, FailureReason.CANCELED)
        assert run.error and "shut down" in run.error
    assert fake.cancelled == []


async def test_stop_with_stop_runs_removes_the_container_of_a_run_cut_off_mid_start(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    """A run still `running` after its task was cut off (here: re-attaching, not yet
    watched, so the stop could not reach it) has its container removed through the
    executor and is recorded canceled."""
    runner = await make_runner(store)
    (run_id,) = await queue(store, runner)
    await store.mark_running(run_id, "old-container", 1)
    fake.gates[run_id] = asyncio.Event()  # never set: it never gets watched
    sched = make_scheduler()
    sched.start()
    await fake.until(lambda: fake.recovered == [run_id])
    async with asyncio.timeout(DEADLINE):
        await sched.stop(stop_runs=True, grace_seconds=0)  # waits 2 s for it, in vain
    assert fake.removed == [run_id]
    run = await status_of(store, run_id)
    assert (run.status, run.failure_reason) == (Status.FAILED, FailureReason.CANCELED)
    assert run.error and "shut down" in run.error


async def test_stop_of_a_scheduler_that_never_started_returns(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    sched = make_scheduler()
    async with asyncio.timeout(1.0):
        await sched.stop()


async def test_finish_conflict_after_a_cancel_does_not_break_the_scheduler(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    """The run was completed elsewhere (e.g. canceled via the API) while the executor
    held it; the executor's own finish then conflicts, which must not stall the queue."""
    runner = await make_runner(store)
    first, second = await queue(store, runner, 2)
    sched = make_scheduler(max_concurrent_runs=1)
    sched.start()
    await fake.until(lambda: first in fake.waiting)
    await store.finish_run(
        first,
        Status.FAILED,
        exit_code=None,
        failure_reason=FailureReason.CANCELED,
        error="elsewhere",
    )
    fake.release[first].set()  # its finish_run raises Conflict inside the executor
    await fake.until(lambda: second in fake.running)
    assert (await status_of(store, first)).error == "elsewhere"
    fake.release[second].set()
    await until_status(store, second, Status.SUCCEEDED)
    with pytest.raises(Conflict):
        await store.finish_run(
            first, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None
        )


# -- surviving faults, and the health it reports ---------------------------------


def store_fault(message: str = "database is locked") -> sqlite3.OperationalError:
    """What the store raises when SQLite is locked past its busy timeout."""
    e = sqlite3.OperationalError(message)
    e.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    return e


class FlakyEngine:
    """Reconciliation's engine: the container list fails `failures` times first,
    then lists `containers` (with the daemon's label)."""

    def __init__(
        self, failures: list[Exception], containers: list[dict[str, Any]] | None = None
    ) -> None:
        self.failures = failures
        self.containers = containers or []
        self.lists = 0
        self.removed: list[str] = []

    async def list_containers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        self.lists += 1
        if self.failures:
            raise self.failures.pop(0)
        return [c for c in self.containers if labels.items() <= c["Labels"].items()]

    async def remove(self, container_id: str) -> None:
        self.removed.append(container_id)


def reconciling_executor(store: AnyStore, engine: FlakyEngine, tmp_path: Path) -> Executor:
    return Executor(
        store,
        engine,  # type: ignore[arg-type]  # reconcile lists and removes containers, nothing more
        LogStore(tmp_path / "logs"),
        daemon_id="d",
        network="none",
        stop_grace_seconds=1,
    )


async def test_reconcile_removes_containers_of_ended_runs_and_returns_runs_left_running(
    store: AnyStore, tmp_path: Path
) -> None:
    runner = await make_runner(store)
    running, ended, pending = await queue(store, runner, 3)
    await store.mark_running(running, "c-running", 1)
    await store.mark_running(ended, "c-ended", 1)
    await store.finish_run(ended, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None)

    def container(cid: str, run_id: str, daemon: str = "d") -> dict[str, Any]:
        return {"Id": cid, "Labels": {LABEL_DAEMON: daemon, LABEL_RUN: run_id}}

    engine = FlakyEngine(
        [],
        [
            container("c-running", running),
            container("c-ended", ended),
            container("c-pending", pending),  # created, never started, before a crash
            container("c-unknown", "no-such-run"),
            container("c-other", "no-such-run", daemon="another daemon"),
        ],
    )
    left_running = await reconciling_executor(store, engine, tmp_path).reconcile()
    assert [r.id for r in left_running] == [running]
    assert engine.removed == ["c-ended", "c-unknown"]


async def until_health(sched: Scheduler, ok: bool, timeout: float = DEADLINE) -> str | None:
    async with asyncio.timeout(timeout):
        while sched.health.ok is not ok:
            await asyncio.sleep(0.001)
    return sched.health.why


async def test_scheduler_survives_engine_500_on_container_list_while_reconciling(
    store: AnyStore, fake: FakeExecutor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(scheduler_module, "BACKOFF_FIRST", 0.05)
    engine = FlakyEngine([EngineError("could not list containers: HTTP 500", status=500)] * 3)
    # the real reconciliation, on a flaky engine
    fake.reconciler = reconciling_executor(store, engine, tmp_path).reconcile
    sched = Scheduler(store, fake, max_concurrent_runs=2)
    runner = await make_runner(store)
    (run_id,) = await queue(store, runner)
    sched.start()
    try:
        why = await until_health(sched, False)
        assert why and "reconcile" in why and "HTTP 500" in why and "retrying in" in why
        assert (await status_of(store, run_id)).status is Status.PENDING
        await fake.until(lambda: run_id in fake.waiting)
        assert engine.lists == 4 and sched.reconciled.is_set()
        assert sched.health.ok
    finally:
        fake.release[run_id].set()
        await sched.stop()


async def test_scheduler_survives_store_error_on_claim(
    store: AnyStore,
    fake: FakeExecutor,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler_module, "BACKOFF_FIRST", 0.05)
    runner = await make_runner(store)
    (run_id,) = await queue(store, runner)
    real = store.next_pending
    faults = [store_fault("disk I/O error")] * 2

    async def flaky(*a: Any, **kw: Any) -> Any:
        if faults:
            raise faults.pop(0)
        return await real(*a, **kw)

    monkeypatch.setattr(store, "next_pending", flaky)
    sched = make_scheduler()
    sched.start()
    why = await until_health(sched, False)
    assert why and "claim runs" in why and "disk I/O error" in why
    await fake.until(lambda: run_id in fake.waiting)
    assert sched.health.ok
    fake.release[run_id].set()
    await until_status(store, run_id, Status.SUCCEEDED)


async def test_store_error_starting_a_run_leaves_it_pending_and_it_is_retried(
    store: AnyStore,
    fake: FakeExecutor,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Health is bad only until the retry succeeds: a back-off long enough that a loaded
    # machine's event loop still lets until_health see it (0.05 s was missed, rarely).
    monkeypatch.setattr(scheduler_module, "BACKOFF_FIRST", 0.5)
    runner = await make_runner(store)
    (run_id,) = await queue(store, runner)
    fake.failures[run_id] = [store_fault()]
    sched = make_scheduler()
    sched.start()
    why = await until_health(sched, False)
    assert why and run_id in why and "database is locked" in why
    assert (await status_of(store, run_id)).status is Status.PENDING
    await fake.until(lambda: fake.started.count(run_id) == 2 and run_id in fake.waiting)
    fake.release[run_id].set()
    await until_status(store, run_id, Status.SUCCEEDED)
    assert sched.health.ok


async def test_a_bug_in_the_scheduler_loop_ends_it_and_health_says_so(
    store: AnyStore,
    fake: FakeExecutor,
    make_scheduler: Callable[..., Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*a: Any, **kw: Any) -> Any:
        raise TypeError("bug in the claim")

    monkeypatch.setattr(store, "next_pending", broken)
    sched = make_scheduler()
    sched.start()
    assert sched.task is not None
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(TypeError):
            await asyncio.shield(sched.task)
    assert not sched.health.ok and "bug in the claim" in (sched.health.why or "")


async def test_a_damaged_database_in_a_runs_task_ends_the_scheduler_loop(
    store: AnyStore, fake: FakeExecutor, make_scheduler: Callable[..., Scheduler]
) -> None:
    runner = await make_runner(store)
    (run_id,) = await queue(store, runner)
    fake.failures[run_id] = [sqlite3.DatabaseError("database disk image is malformed")]
    sched = make_scheduler()
    sched.start()
    assert sched.task is not None
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(scheduler_module.RunTaskFailed, match=f"run-{run_id}: DatabaseError"):
            await asyncio.shield(sched.task)
    assert (await status_of(store, run_id)).status is Status.PENDING


def test_real_sqlite_errors_are_classed_as_passing_or_damaged(tmp_path: Path) -> None:
    """What the loop retries and what ends it, on SQLite's own errors."""
    from runnerd.retry import is_database_damaged, is_store_fault

    path = tmp_path / "t.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("INSERT INTO t VALUES (1)")
    assert is_store_fault(locked.value) and not is_database_damaged(locked.value)
    holder.execute("ROLLBACK")
    holder.close()
    other.close()

    with pytest.raises(sqlite3.OperationalError) as no_table:  # a bug: not retried
        sqlite3.connect(path).execute("SELECT * FROM missing")
    assert not is_store_fault(no_table.value) and is_database_damaged(no_table.value)

    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(sqlite3.DatabaseError) as damaged:
        sqlite3.connect(path).execute("SELECT * FROM t")
    assert is_database_damaged(damaged.value) and not is_store_fault(damaged.value)
