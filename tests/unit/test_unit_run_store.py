"""The run store's behaviour, held the same on both implementations: the SQLite
`Store` (on a real file) and the in-memory `MemoryStore` the fast tests use. What
the scheduler, executor, webhooks and retention rely on: claim order, limits,
state moves that never go backwards, completion listeners, webhook and
retention queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runnerd.models import (
    NO_RETRIES,
    FailureReason,
    RetryPolicy,
    Run,
    Runner,
    Status,
    Trigger,
    now_ms,
)
from runnerd.store import Conflict, NotFound, RunStore, Store
from runnerd.store.memory import MemoryStore

# What a test needs beyond RunStore to set itself up: both have these too.
AnyStore = Store | MemoryStore


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    if request.param == "sqlite":
        async with Store(tmp_path / "runnerd.db") as sqlite_store:
            yield sqlite_store
    else:
        async with MemoryStore() as memory_store:
            yield memory_store


def test_both_stores_are_run_stores() -> None:
    def accepts(store: RunStore) -> RunStore:  # mypy checks the structural match
        return store

    assert accepts(MemoryStore()) is not None


async def make_runner(store: AnyStore, name: str = "job", **over: Any) -> Runner:
    fields: dict[str, Any] = {
        "name": name,
        "image_name": "busybox",
        "image_tag": "latest",
        "run_command": "echo hi",
        "argv": None,
        "entrypoint": None,
        "timeout_seconds": 60,
        "instance_type": "standard-s",
    }
    fields.update(over)
    return await store.create_runner(fields, [])


async def queue(store: AnyStore, runner: Runner, env: list[tuple[str, str]] | None = None) -> Run:
    run, created = await store.create_run(runner, env or [], 1.0, 512, 100)
    assert created
    return run


async def finish(store: AnyStore, run: Run, status: Status = Status.SUCCEEDED) -> Run:
    return await store.finish_run(
        run.id,
        status,
        exit_code=0 if status is Status.SUCCEEDED else 1,
        failure_reason=None if status is Status.SUCCEEDED else FailureReason.NONZERO_EXIT,
        error=None,
    )


async def test_runs_are_claimed_oldest_first_across_runners(store: AnyStore) -> None:
    a, b = await make_runner(store, "a"), await make_runner(store, "b")
    first, second, third = await queue(store, a), await queue(store, b), await queue(store, a)
    claimed = []
    for _ in range(3):
        run = await store.next_pending(in_flight=claimed)
        assert run is not None
        claimed.append(run.id)
    assert claimed == [first.id, second.id, third.id]
    assert await store.next_pending(in_flight=claimed) is None


async def test_a_runner_s_limit_counts_its_running_and_in_flight_runs(store: AnyStore) -> None:
    one = await make_runner(store, "one", max_concurrent_runs=1)
    other = await make_runner(store, "other")
    first, second = await queue(store, one), await queue(store, one)
    free = await queue(store, other)
    found = await store.next_pending(in_flight=[first.id])
    assert found is not None and found.id == free.id  # `second` waits: `first` is in flight
    await store.mark_running(first.id, "c1", 1_000)
    found = await store.next_pending(in_flight=[first.id, free.id])
    assert found is None  # counted once, running and in flight
    await finish(store, first)
    found = await store.next_pending(in_flight=[free.id])
    assert found is not None and found.id == second.id


async def test_a_run_moves_pending_running_finished_and_never_back(store: AnyStore) -> None:
    run = await queue(store, await make_runner(store))
    running = await store.mark_running(run.id, "container-1", 1_000)
    assert (running.status, running.container_id, running.started_at) == (
        Status.RUNNING,
        "container-1",
        1_000,
    )
    with pytest.raises(Conflict, match="no longer pending"):
        await store.mark_running(run.id, "container-2", 2_000)
    done = await store.finish_run(
        run.id,
        Status.FAILED,
        exit_code=3,
        failure_reason=FailureReason.NONZERO_EXIT,
        error="exit 3",
        completed_at=5_000,
    )
    assert (done.status, done.exit_code, done.failure_reason, done.error, done.completed_at) == (
        Status.FAILED,
        3,
        FailureReason.NONZERO_EXIT,
        "exit 3",
        5_000,
    )
    with pytest.raises(Conflict, match="already completed"):
        await finish(store, run, Status.SUCCEEDED)
    current = await store.get_run(run.id)
    assert current is not None and current.status is Status.FAILED and current.exit_code == 3


async def test_a_pending_run_can_be_finished_without_running(store: AnyStore) -> None:
    run = await queue(store, await make_runner(store))
    done = await store.finish_run(
        run.id, Status.FAILED, exit_code=None, failure_reason=FailureReason.LOST, error="gone"
    )
    assert done.status is Status.FAILED and done.completed_at is not None


async def test_cancel_pending_cancels_only_a_pending_run(store: AnyStore) -> None:
    runner = await make_runner(store)
    pending, running = await queue(store, runner), await queue(store, runner)
    await store.mark_running(running.id, "c", 1_000)
    canceled = await store.cancel_pending(pending.id, "canceled by a user")
    assert canceled is not None
    assert (canceled.status, canceled.failure_reason, canceled.error) == (
        Status.FAILED,
        FailureReason.CANCELED,
        "canceled by a user",
    )
    assert canceled.completed_at is not None
    assert await store.cancel_pending(pending.id, "again") is None
    assert await store.cancel_pending(running.id, "no") is None
    still = await store.get_run(running.id)
    assert still is not None and still.status is Status.RUNNING
    with pytest.raises(Conflict):
        await store.mark_running(pending.id, "late", 2_000)


async def test_listeners_hear_each_completion_once_and_nothing_else(store: AnyStore) -> None:
    heard: list[tuple[str, Status]] = []
    store.on_run_completed.append(lambda run: heard.append((run.id, run.status)))
    runner = await make_runner(store)
    a, b = await queue(store, runner), await queue(store, runner)
    await store.mark_running(a.id, "c", 1_000)
    assert heard == []
    await finish(store, a)
    await store.cancel_pending(b.id, "x")
    await store.cancel_pending(b.id, "x")  # not pending: nothing happens
    with pytest.raises(Conflict):
        await finish(store, a)
    assert heard == [(a.id, Status.SUCCEEDED), (b.id, Status.FAILED)]


async def test_runs_with_status_in_queue_order(store: AnyStore) -> None:
    runner = await make_runner(store)
    runs = [await queue(store, runner) for _ in range(4)]
    for run in (runs[2], runs[0], runs[3]):
        await store.mark_running(run.id, f"c-{run.id}", 1_000)
    await finish(store, runs[3])
    running = await store.runs_with_status(Status.RUNNING)
    assert [r.id for r in running] == [runs[0].id, runs[2].id]
    assert [r.id for r in await store.runs_with_status(Status.PENDING)] == [runs[1].id]
    assert [r.id for r in await store.runs_with_status(Status.SUCCEEDED)] == [runs[3].id]


async def test_get_run_of_another_runner_is_none_and_reads_are_snapshots(
    store: AnyStore,
) -> None:
    a, b = await make_runner(store, "a"), await make_runner(store, "b")
    run = await queue(store, a, [("KEY", "value")])
    assert await store.get_run(run.id, b.id) is None
    assert await store.get_run("no-such-run") is None
    read = await store.get_run(run.id, a.id)
    assert read is not None and list(read.env) == [("KEY", "value")]
    read.status = Status.SUCCEEDED  # a caller's copy: the store is not changed
    again = await store.get_run(run.id)
    assert again is not None and again.status is Status.PENDING


async def test_completed_runs_with_a_webhook_wait_for_delivery_oldest_first(
    store: AnyStore,
) -> None:
    hooked = await make_runner(store, "hooked", webhook_url="http://127.0.0.1:9/hook")
    plain = await make_runner(store, "plain")
    runs = [await queue(store, hooked) for _ in range(3)]
    silent = await queue(store, plain)
    for completed_at, run in zip((3_000, 1_000, 2_000), runs, strict=True):
        await store.finish_run(
            run.id,
            Status.SUCCEEDED,
            exit_code=0,
            failure_reason=None,
            error=None,
            completed_at=completed_at,
        )
    done = await finish(store, silent)
    assert done.webhook_status is None
    pending = await store.pending_webhooks(10, [])
    assert [r.id for r in pending] == [runs[1].id, runs[2].id, runs[0].id]
    assert all(r.webhook_status == "pending" for r in pending)
    assert [r.id for r in await store.pending_webhooks(1, [runs[1].id])] == [runs[2].id]
    await store.set_webhook_status(runs[1].id, "delivered")
    await store.set_webhook_status(runs[2].id, "failed")
    assert [r.id for r in await store.pending_webhooks(10, [])] == [runs[0].id]
    delivered = await store.get_run(runs[1].id)
    assert delivered is not None and delivered.webhook_status == "delivered"


async def test_registry_credentials_give_the_password_and_none_for_unknown(
    store: AnyStore,
) -> None:
    registry = await store.create_registry(
        {"name": "private", "host": "registry.example:5000", "username": "u", "password": "p"}
    )
    assert await store.registry_credentials(registry.id) == ("registry.example:5000", "u", "p")
    assert await store.registry_credentials("no-such-registry") is None


async def test_expired_runs_are_deleted_by_age_or_count_never_active_ones(
    store: AnyStore,
) -> None:
    a, b = await make_runner(store, "a"), await make_runner(store, "b")
    old = await queue(store, a)
    await store.finish_run(
        old.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None, completed_at=1_000
    )
    recent = [await queue(store, a) for _ in range(3)]
    for run in recent:
        await store.finish_run(
            run.id,
            Status.SUCCEEDED,
            exit_code=0,
            failure_reason=None,
            error=None,
            completed_at=10_000,
        )
    other = await queue(store, b)
    await store.finish_run(
        other.id, Status.FAILED, exit_code=1, failure_reason=None, error=None, completed_at=500
    )
    active = [await queue(store, a), await queue(store, b)]
    await store.mark_running(active[0].id, "c", 1_000)

    assert await store.delete_expired_runs(completed_before=None, keep_per_runner=None) == []
    by_age = await store.delete_expired_runs(completed_before=2_000, keep_per_runner=None)
    assert sorted(by_age) == sorted([old.id, other.id])
    by_count = await store.delete_expired_runs(completed_before=None, keep_per_runner=1)
    assert sorted(by_count) == sorted([recent[0].id, recent[1].id])
    assert await store.delete_expired_runs(completed_before=10**15, keep_per_runner=0) == [
        recent[2].id
    ]
    for run in active:
        assert await store.get_run(run.id) is not None
    for run in [old, other, *recent]:
        assert await store.get_run(run.id) is None


async def test_expired_runs_are_deleted_a_batch_at_a_time(store: AnyStore) -> None:
    runner = await make_runner(store)
    for _ in range(5):
        await finish(store, await queue(store, runner))
    first = await store.delete_expired_runs(completed_before=10**15, keep_per_runner=None, batch=2)
    rest = await store.delete_expired_runs(completed_before=10**15, keep_per_runner=None, batch=10)
    assert len(first) == 2 and len(rest) == 3 and not set(first) & set(rest)


async def test_an_idempotency_key_gives_back_the_first_run(store: AnyStore) -> None:
    runner = await make_runner(store)
    first, created = await store.create_run(runner, [], 1.0, 1, 1, "key-1")
    again, created_again = await store.create_run(runner, [], 1.0, 1, 1, "key-1")
    other, created_other = await store.create_run(runner, [], 1.0, 1, 1, "key-2")
    assert (created, created_again, created_other) == (True, False, True)
    assert again.id == first.id != other.id


async def test_runner_for_run_gives_runner_env_by_key_and_registry_host(store: AnyStore) -> None:
    registry = await store.create_registry(
        {"name": "private", "host": "registry.example:5000", "username": "u", "password": "p"}
    )
    fields: dict[str, Any] = {
        "name": "pulls",
        "image_name": "team/job",
        "image_tag": "1",
        "timeout_seconds": 60,
        "instance_type": "standard-s",
        "container_registry_id": registry.id,
    }
    runner = await store.create_runner(fields, [("ZED", "2"), ("ALPHA", "1")])
    plain = await make_runner(store, "plain")
    found = await store.runner_for_run(runner.id)
    assert found is not None
    got, env, host = found
    assert got.id == runner.id and got.container_registry_id == registry.id
    assert [(e.env_key, e.env_val, e.runner_id) for e in env] == [
        ("ALPHA", "1", runner.id),
        ("ZED", "2", runner.id),
    ]
    assert host == "registry.example:5000"
    assert await store.runner_for_run(plain.id) == (plain, [], None)
    assert await store.runner_for_run("no-such-runner") is None


async def test_set_warmed_records_the_pull_and_refuses_an_unknown_runner(
    store: AnyStore,
) -> None:
    runner = await make_runner(store)
    assert runner.warmed_at is None
    warmed = await store.set_warmed(runner.id, 42_000)
    assert warmed.warmed_at == 42_000
    found = await store.runner_for_run(runner.id)
    assert found is not None and found[0].warmed_at == 42_000
    with pytest.raises(NotFound):
        await store.set_warmed("no-such-runner", 1)


# -- retries (issue #12) ------------------------------------------------------------

RETRY_TWICE = RetryPolicy(max_retries=2, backoff_seconds=10, backoff_max_seconds=600)


async def fail(store: AnyStore, run_id: str, completed_at: int = 5_000, **over: Any) -> Run:
    values: dict[str, Any] = {
        "exit_code": 3,
        "failure_reason": FailureReason.NONZERO_EXIT,
        "error": "The command exited with code 3.",
    }
    values.update(over)
    return await store.finish_run(run_id, Status.FAILED, completed_at=completed_at, **values)


async def test_a_failed_attempt_makes_exactly_one_retry_like_it(store: AnyStore) -> None:
    runner = await make_runner(store, retry_policy=RETRY_TWICE)
    run = await queue(store, runner, [("A", "1")])
    now = now_ms()
    failed = await fail(store, run.id, completed_at=now)
    assert failed.will_retry
    (retry,) = await store.runs_with_status(Status.PENDING)
    assert retry.id == failed.retry_id
    assert (retry.trigger, retry.attempt, retry.retry_of) == (Trigger.RETRY, 2, run.id)
    assert (retry.command, list(retry.env), retry.image, retry.timeout_seconds) == (
        run.command,
        [("A", "1")],
        run.image,
        run.timeout_seconds,
    )
    assert retry.retry_policy == RETRY_TWICE
    assert retry.not_before == failed.retry_not_before
    assert now + 8_000 <= retry.not_before <= now + 10_000
    assert await store.next_pending() is None  # its back-off has not passed
    assert await store.next_not_before() == retry.not_before
    with pytest.raises(Conflict):  # finishing twice makes no second retry
        await fail(store, run.id)
    assert [r.id for r in await store.runs_with_status(Status.PENDING)] == [retry.id]


async def test_each_retry_waits_longer_and_the_last_attempt_is_not_retried(
    store: AnyStore,
) -> None:
    runner = await make_runner(store, retry_policy=RETRY_TWICE)
    first = await queue(store, runner)
    await fail(store, first.id, completed_at=10_000)
    (second,) = await store.runs_with_status(Status.PENDING)
    second_done = await fail(store, second.id, completed_at=50_000)
    (third,) = await store.runs_with_status(Status.PENDING)
    assert (third.attempt, third.retry_of) == (3, second.id)
    assert third.not_before is not None and 50_000 + 16_000 <= third.not_before <= 70_000
    assert second_done.will_retry
    last = await fail(store, third.id, completed_at=90_000)
    assert not last.will_retry
    assert await store.runs_with_status(Status.PENDING) == []
    latest = await store.latest_retry(first.id)
    assert latest is not None and latest.id == third.id
    assert (await store.latest_retry(second.id) or second).id == third.id
    assert await store.latest_retry(third.id) is None


async def test_a_canceled_or_succeeded_run_is_never_retried(store: AnyStore) -> None:
    runner = await make_runner(store, retry_policy=RETRY_TWICE)
    pending, run, ok = [await queue(store, runner) for _ in range(3)]
    canceled = await store.cancel_pending(pending.id, "canceled")
    assert canceled is not None and not canceled.will_retry
    await store.mark_running(run.id, "c", 1_000)
    stopped = await fail(
        store, run.id, exit_code=143, failure_reason=FailureReason.CANCELED, error="canceled"
    )
    assert not stopped.will_retry
    await finish(store, ok)
    assert await store.runs_with_status(Status.PENDING) == []
    assert await store.latest_retry(run.id) is None


async def test_a_reason_or_exit_code_outside_the_policy_is_not_retried(store: AnyStore) -> None:
    policy = RetryPolicy(max_retries=3, retry_exit_codes=(2,))
    runner = await make_runner(store, retry_policy=policy)
    a, b, c = [await queue(store, runner) for _ in range(3)]
    await fail(store, a.id, exit_code=3)
    await fail(store, b.id, exit_code=None, failure_reason=FailureReason.IMAGE_PULL_FAILED)
    assert [r.id for r in await store.runs_with_status(Status.PENDING)] == [c.id]
    await fail(store, c.id, exit_code=2)
    (retry,) = await store.runs_with_status(Status.PENDING)
    assert retry.attempt == 2


async def test_a_runner_without_a_policy_is_never_retried(store: AnyStore) -> None:
    run = await queue(store, await make_runner(store))
    assert run.retry_policy == NO_RETRIES
    assert not (await fail(store, run.id)).will_retry
    assert await store.runs_with_status(Status.PENDING) == []


async def test_the_listener_hears_the_failed_attempt_not_its_retry(store: AnyStore) -> None:
    heard: list[tuple[str, bool]] = []
    store.on_run_completed.append(lambda run: heard.append((run.id, run.will_retry)))
    run = await queue(store, await make_runner(store, retry_policy=RETRY_TWICE))
    await fail(store, run.id)
    assert heard == [(run.id, True)]


# -- log_incomplete (issue #14) -----------------------------------------------------


async def test_a_run_s_log_is_complete_unless_its_finish_says_otherwise(store: AnyStore) -> None:
    runner = await make_runner(store)
    plain, broken = await queue(store, runner), await queue(store, runner)
    assert not plain.log_incomplete
    heard: list[tuple[str, bool]] = []
    store.on_run_completed.append(lambda run: heard.append((run.id, run.log_incomplete)))
    assert not (await finish(store, plain)).log_incomplete
    await store.mark_running(broken.id, "c", 1_000)
    done = await store.finish_run(
        broken.id,
        Status.SUCCEEDED,
        exit_code=0,
        failure_reason=None,
        error=None,
        log_incomplete=True,
    )
    assert done.log_incomplete and done.status is Status.SUCCEEDED
    # Recorded with the final status, so the completion listeners (webhooks) see it.
    assert heard == [(plain.id, False), (broken.id, True)]
    stored = {r.id: r.log_incomplete for r in [await store.get_run(plain.id), done] if r}
    assert stored == {plain.id: False, broken.id: True}
    assert (await store.get_run(broken.id) or plain).log_incomplete


async def test_a_finished_run_is_marked_log_incomplete_once_and_again_changes_nothing(
    store: AnyStore,
) -> None:
    run = await queue(store, await make_runner(store))
    await store.mark_running(run.id, "c", 1_000)
    done = await store.finish_run(
        run.id,
        Status.FAILED,
        exit_code=1,
        failure_reason=FailureReason.NONZERO_EXIT,
        error="exit 1",
        completed_at=5_000,
    )
    heard: list[str] = []
    store.on_run_completed.append(lambda r: heard.append(r.id))
    await store.mark_log_incomplete(run.id)
    marked = await store.get_run(run.id)
    assert marked is not None and marked.log_incomplete
    # Only the flag (and updated_at) moves: the outcome is what finish_run recorded.
    assert (marked.status, marked.exit_code, marked.completed_at, marked.error) == (
        done.status,
        done.exit_code,
        done.completed_at,
        done.error,
    )
    assert marked.updated_at >= done.updated_at
    await store.mark_log_incomplete(run.id)
    again = await store.get_run(run.id)
    assert again is not None and again.log_incomplete and again.updated_at == marked.updated_at
    assert heard == []  # not a second completion
    await store.mark_log_incomplete("no-such-run")  # gone (retention): nothing to mark


async def test_a_later_finish_without_the_flag_keeps_an_earlier_mark(store: AnyStore) -> None:
    run = await queue(store, await make_runner(store))
    await store.mark_running(run.id, "c", 1_000)
    await store.mark_log_incomplete(run.id)  # the stream broke while it ran
    done = await finish(store, run)
    assert done.log_incomplete


async def test_the_retry_of_a_run_with_an_incomplete_log_starts_with_a_complete_one(
    store: AnyStore,
) -> None:
    run = await queue(store, await make_runner(store, retry_policy=RETRY_TWICE))
    failed = await fail(store, run.id, log_incomplete=True)
    assert failed.log_incomplete and failed.will_retry
    (retry,) = await store.runs_with_status(Status.PENDING)
    assert retry.retry_of == run.id and not retry.log_incomplete


# -- node (the swarm backend) ---------------------------------------------------------


async def test_a_running_run_s_node_is_recorded_and_kept_after_it_ends(store: AnyStore) -> None:
    run = await queue(store, await make_runner(store))
    assert run.node is None
    await store.set_node(run.id, "worker-1")  # pending: no container, no node
    pending = await store.get_run(run.id)
    assert pending is not None and pending.node is None and pending.updated_at == run.updated_at

    await store.mark_running(run.id, "svc", 1_000)
    await store.set_node(run.id, "worker-1")
    placed = await store.get_run(run.id)
    assert placed is not None and placed.node == "worker-1"
    assert placed.status is Status.RUNNING and placed.container_id == "svc"
    assert placed.updated_at >= run.updated_at
    await store.set_node(run.id, "worker-1")  # the same node again: nothing moves
    again = await store.get_run(run.id)
    assert again is not None and again.updated_at == placed.updated_at

    done = await finish(store, placed)
    assert done.node == "worker-1"  # the run's record: where it ran
    await store.set_node(run.id, "worker-2")  # ended: its node stays what it was
    ended = await store.get_run(run.id)
    assert ended is not None and ended.node == "worker-1" and ended.updated_at == done.updated_at
    await store.set_node("no-such-run", "worker-1")  # gone (retention): nothing to set


async def test_a_node_is_set_on_its_run_only(store: AnyStore) -> None:
    runner = await make_runner(store)
    placed, other = await queue(store, runner), await queue(store, runner)
    await store.mark_running(placed.id, "svc-1", 1_000)
    await store.mark_running(other.id, "svc-2", 1_000)
    await store.set_node(placed.id, "worker-3")
    running = await store.runs_with_status(Status.RUNNING)
    assert {r.id: r.node for r in running} == {placed.id: "worker-3", other.id: None}


async def test_the_retry_of_a_run_on_a_node_starts_with_no_node(store: AnyStore) -> None:
    run = await queue(store, await make_runner(store, retry_policy=RETRY_TWICE))
    await store.mark_running(run.id, "svc", 1_000)
    await store.set_node(run.id, "worker-1")
    failed = await fail(store, run.id)
    assert failed.node == "worker-1" and failed.will_retry
    (retry,) = await store.runs_with_status(Status.PENDING)
    assert retry.retry_of == run.id and retry.node is None
