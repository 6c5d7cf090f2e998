"""Chains on a real SQLite store in tmp_path: the store's rules for on_success and
on_failure (every id a runner, no cycle, a deleted runner taken out), and
runnerd.chains making each chained run exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from runnerd import chains as chains_mod
from runnerd.chains import Chains
from runnerd.config import Config
from runnerd.models import FailureReason, RetryPolicy, Run, Runner, Status, Trigger
from runnerd.store import Conflict, Store


class WakeCounter:
    """The scheduler's one method the chains call."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "data" / "runnerd.db") as s:
        yield s


def make_chains(store: Store, config: Config | None = None) -> Chains:
    return Chains(store, config or Config(), WakeCounter())  # type: ignore[arg-type]


async def make_runner(
    store: Store, name: str, env: list[tuple[str, str]] | None = None, **over: Any
) -> Runner:
    fields: dict[str, Any] = {
        "name": name,
        "image_name": "team/job",
        "image_tag": "1",
        "run_command": "true",
        "argv": None,
        "entrypoint": None,
        "timeout_seconds": 60,
        "instance_type": "standard-s",
    }
    fields.update(over)
    return await store.create_runner(fields, env or [])


async def completed_run(store: Store, runner: Runner, status: Status, **finish: Any) -> Run:
    runner = await store.get_runner(runner.id) or runner  # its current retry policy
    run, _ = await store.create_run(runner, [], 1.0, 1024, 512)
    failure = {"exit_code": 1, "failure_reason": FailureReason.NONZERO_EXIT, "error": "exit 1"}
    ok = {"exit_code": 0, "failure_reason": None, "error": None}
    args = {**(ok if status is Status.SUCCEEDED else failure), **finish}
    return await store.finish_run(run.id, status, **args)


async def chained_runs(store: Store, parent: Run) -> list[Run]:
    runs = []
    for runner in await store.list_runners():
        found = await store.list_runs(runner.id, limit=100)
        runs += [r for r in found or [] if r.parent_run_id == parent.id]
    return runs


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- the store's rules -------------------------------------------------------------


async def test_a_runner_chained_to_itself_is_a_cycle_naming_it(store: Store) -> None:
    a = await make_runner(store, "A")
    with pytest.raises(Conflict, match="^on_success: would make a cycle: A → A$"):
        await store.update_runner(a.id, {"on_success": [a.id]}, None)
    assert (await store.get_runner(a.id)).on_success == []  # type: ignore[union-attr]


async def test_a_cycle_across_on_success_and_on_failure_is_refused(store: Store) -> None:
    a = await make_runner(store, "A")
    b = await make_runner(store, "B")
    await store.update_runner(a.id, {"on_success": [b.id]}, None)
    with pytest.raises(Conflict, match="^on_failure: would make a cycle: B → A → B$"):
        await store.update_runner(b.id, {"on_failure": [a.id]}, None)
    assert (await store.get_runner(b.id)).on_failure == []  # type: ignore[union-attr]


async def test_a_long_cycle_names_every_runner_on_it_in_order(store: Store) -> None:
    names = ["A", "B", "C", "D", "E"]
    runners = [await make_runner(store, n) for n in names]
    for first, then in zip(runners, runners[1:], strict=False):
        await store.update_runner(first.id, {"on_failure": [then.id]}, None)
    with pytest.raises(Conflict, match="^on_success: would make a cycle: E → A → B → C → D → E$"):
        await store.update_runner(runners[-1].id, {"on_success": [runners[0].id]}, None)


async def test_a_diamond_is_not_a_cycle(store: Store) -> None:
    d = await make_runner(store, "D")
    b = await make_runner(store, "B", on_success=[d.id])
    c = await make_runner(store, "C", on_failure=[d.id])
    a = await make_runner(store, "A", on_success=[b.id, c.id], on_failure=[d.id])
    assert (a.on_success, a.on_failure) == ([b.id, c.id], [d.id])
    # And one more edge that closes nothing: D → another runner.
    e = await make_runner(store, "E")
    await store.update_runner(d.id, {"on_success": [e.id]}, None)


async def test_a_cycle_made_with_a_rename_names_the_runner_by_its_new_name(store: Store) -> None:
    b = await make_runner(store, "B")
    a = await make_runner(store, "A", on_success=[b.id])
    with pytest.raises(Conflict, match="^on_success: would make a cycle: B2 → A → B2$"):
        await store.update_runner(b.id, {"name": "B2", "on_success": [a.id]}, None)
    assert (await store.get_runner(b.id)).name == "B"  # type: ignore[union-attr]  # all undone


async def test_an_unknown_runner_id_is_refused_naming_the_field_and_the_id(store: Store) -> None:
    a = await make_runner(store, "A")
    ghost = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(Conflict, match=f"^on_failure: no runner {ghost}$"):
        await make_runner(store, "B", on_failure=[ghost])
    assert [r.name for r in await store.list_runners()] == ["A"]  # nothing was made
    with pytest.raises(Conflict, match=f"^on_success: no runner {ghost}$"):
        await store.update_runner(a.id, {"on_success": [ghost]}, None)


async def test_two_concurrent_changes_cannot_make_a_cycle_between_them(store: Store) -> None:
    a = await make_runner(store, "A")
    b = await make_runner(store, "B")
    results = await asyncio.gather(
        store.update_runner(a.id, {"on_success": [b.id]}, None),
        store.update_runner(b.id, {"on_success": [a.id]}, None),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(refused) == 1 and "would make a cycle" in str(refused[0])
    a2, b2 = await store.get_runner(a.id), await store.get_runner(b.id)
    assert a2 is not None and b2 is not None
    assert len(a2.on_success) + len(b2.on_success) == 1


async def test_deleting_a_runner_takes_it_out_of_every_chain(store: Store) -> None:
    b = await make_runner(store, "B")
    c = await make_runner(store, "C")
    a = await make_runner(store, "A", on_success=[b.id, c.id])
    x = await make_runner(store, "X", on_failure=[b.id])
    y = await make_runner(store, "Y", on_failure=[c.id])

    deleted = await store.delete_runner(b.id)

    assert sorted(deleted.unchained) == ["A", "X"]
    a2, x2, y2 = [await store.get_runner(r.id) for r in (a, x, y)]
    assert a2 is not None and x2 is not None and y2 is not None
    assert (a2.on_success, x2.on_failure, y2.on_failure) == ([c.id], [], [c.id])
    assert a2.updated_at >= a.updated_at
    assert (await store.delete_runner(c.id)).unchained == ["A", "Y"]


# -- what finish_run marks ---------------------------------------------------------


async def test_a_failed_run_with_retries_left_is_not_chained_but_its_last_attempt_is(
    store: Store,
) -> None:
    c = await make_runner(store, "C")
    policy = RetryPolicy(max_retries=1, backoff_seconds=1)
    a = await make_runner(store, "A", on_failure=[c.id], retry_policy=policy)
    first = await completed_run(store, a, Status.FAILED)
    assert await store.pending_chains(10) == []
    retry = next(r for r in await store.runs_with_status(Status.PENDING) if r.retry_of == first.id)
    last = await store.finish_run(
        retry.id,
        Status.FAILED,
        exit_code=1,
        failure_reason=FailureReason.NONZERO_EXIT,
        error="exit 1",
    )
    assert [p.id for p in await store.pending_chains(10)] == [last.id]


async def test_a_canceled_run_is_not_chained(store: Store) -> None:
    c = await make_runner(store, "C")
    a = await make_runner(store, "A", on_failure=[c.id])
    run, _ = await store.create_run(a, [], 1.0, 1024, 512)
    await store.cancel_pending(run.id, "canceled")
    assert await store.pending_chains(10) == []


# -- the chained runs ----------------------------------------------------------------


async def test_a_success_chains_on_success_targets_with_the_parent_in_their_env(
    store: Store,
) -> None:
    # B's own default for RUNNERD_PARENT_STATUS is overridden by the chain's.
    b = await make_runner(store, "B", env=[("RUNNERD_PARENT_STATUS", "stale"), ("KEEP", "1")])
    c = await make_runner(store, "C")
    f = await make_runner(store, "F")
    a = await make_runner(store, "A", on_success=[b.id, c.id], on_failure=[f.id])
    parent = await completed_run(store, a, Status.SUCCEEDED)
    chains = make_chains(store)

    made = await chains.chain(parent)

    assert sorted(r.runner_id for r in made) == sorted([b.id, c.id])
    stored = {r.runner_id: r for r in await chained_runs(store, parent)}
    assert set(stored) == {b.id, c.id}  # not F: that is for failures
    run_b = stored[b.id]
    assert (run_b.trigger, run_b.parent_run_id, run_b.status) == (
        Trigger.CHAIN,
        parent.id,
        Status.PENDING,
    )
    assert dict(run_b.env) == {
        "KEEP": "1",
        "RUNNERD_PARENT_RUN_ID": parent.id,
        "RUNNERD_PARENT_STATUS": "succeeded",
    }
    assert await store.pending_chains(10) == []  # the mark is cleared
    assert chains.scheduler.wakes == 1  # type: ignore[attr-defined]


async def test_a_failure_chains_only_the_on_failure_targets(store: Store) -> None:
    s = await make_runner(store, "S")
    f = await make_runner(store, "F")
    a = await make_runner(store, "A", on_success=[s.id], on_failure=[f.id])
    parent = await completed_run(store, a, Status.FAILED)
    made = await make_chains(store).chain(parent)
    assert [r.runner_id for r in made] == [f.id]
    assert dict(made[0].env)["RUNNERD_PARENT_STATUS"] == "failed"


async def test_the_same_parent_chained_twice_or_by_two_loops_makes_one_run_per_target(
    store: Store,
) -> None:
    b = await make_runner(store, "B")
    c = await make_runner(store, "C")
    a = await make_runner(store, "A", on_success=[b.id, c.id])
    parent = await completed_run(store, a, Status.SUCCEEDED)
    one, two = make_chains(store), make_chains(store)

    made = await asyncio.gather(one.chain(parent), two.chain(parent))
    again = await one.chain(parent)  # as after a crash before the mark was cleared

    assert sorted(len(m) for m in made) in ([0, 2], [1, 1]) and again == []
    assert sorted(r.runner_id for r in await chained_runs(store, parent)) == sorted([b.id, c.id])


async def test_a_target_deleted_or_not_triggerable_is_skipped_with_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    gone = await make_runner(store, "Gone")
    odd = await make_runner(store, "Odd", instance_type="retired")  # not in the config
    ok = await make_runner(store, "Ok")
    a = await make_runner(store, "A", on_success=[gone.id, odd.id, ok.id])
    parent = await completed_run(store, a, Status.SUCCEEDED)
    # Deleted after the parent completed: the store's cleanup took it out of A's
    # list, so put it back as it was when the run ended, from another connection.
    await store.delete_runner(gone.id)
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:
        db.execute(
            "UPDATE runners SET on_success = ? WHERE id = ?",
            (json.dumps([gone.id, odd.id, ok.id]), a.id),
        )

    with caplog.at_level(logging.INFO, logger="runnerd.chains"):
        made = await make_chains(store).chain(parent)

    assert [r.runner_id for r in made] == [ok.id]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"chained runner {gone.id} no longer exists" in w for w in warnings)
    assert any("chained runner Odd cannot run: instance_type:" in w for w in warnings)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [f"run {parent.id} of A succeeded: chained run {made[0].id} of Ok"]
    assert await store.pending_chains(10) == []


async def test_the_loop_chains_a_run_as_it_completes_and_sweeps_marks_left_at_start(
    store: Store,
) -> None:
    b = await make_runner(store, "B")
    a = await make_runner(store, "A", on_success=[b.id])
    left = await completed_run(store, a, Status.SUCCEEDED)  # before the loop: a crash's mark
    chains = make_chains(store)
    store.on_run_completed.append(chains.run_completed)
    chains.start()
    try:

        async def chained(parent: Run) -> bool:
            return len(await chained_runs(store, parent)) == 1

        await eventually(lambda: chained(left))
        later = await completed_run(store, a, Status.SUCCEEDED)
        await eventually(lambda: chained(later))
        assert chains.task is not None and not chains.task.done()
    finally:
        await chains.stop()


async def test_the_loop_backs_off_and_retries_when_the_database_fails(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    b = await make_runner(store, "B")
    a = await make_runner(store, "A", on_success=[b.id])
    parent = await completed_run(store, a, Status.SUCCEEDED)
    monkeypatch.setattr(chains_mod, "BACKOFF_FIRST", 0.05)
    real = store.pending_chains
    failures = 0

    async def failing_twice(limit: int) -> list[Run]:
        nonlocal failures
        if failures < 2:
            failures += 1
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
            raise error
        return await real(limit)

    monkeypatch.setattr(store, "pending_chains", failing_twice)
    chains = make_chains(store)
    with caplog.at_level(logging.WARNING, logger="runnerd.chains"):
        chains.start()
        try:

            async def chained() -> bool:
                return len(await chained_runs(store, parent)) == 1

            await eventually(chained)
        finally:
            await chains.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "database or disk is full" in warnings[0].getMessage()
    assert not any(r.exc_info for r in warnings)  # a database fault: no traceback


async def test_retention_keeps_a_run_until_its_chained_runs_are_made(store: Store) -> None:
    b = await make_runner(store, "B")
    a = await make_runner(store, "A", on_success=[b.id])
    parent = await completed_run(store, a, Status.SUCCEEDED)
    everything = {"completed_before": 10**15, "keep_per_runner": 0}
    assert await store.delete_expired_runs(**everything) == []
    await make_chains(store).chain(parent)
    assert await store.delete_expired_runs(**everything) == [parent.id]
