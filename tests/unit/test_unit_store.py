"""The SQLite store: runners, env, runs and their state rules, on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runnerd.models import FailureReason, Run, Runner, Scope, Status, Trigger
from runnerd.store import (
    IDEMPOTENCY_WINDOW_MS,
    SCHEMA_V1,
    SCHEMA_VERSION,
    Conflict,
    Database,
    NotFound,
    Store,
    StoreError,
)
from runnerd.store.connection import _Connection


@contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A second, plain connection to the file, as another process would open it."""
    db = sqlite3.connect(path)
    try:
        with db:  # commits
            yield db
    finally:
        db.close()


def runner_fields(name: str = "nightly", **over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": name,
        "image_name": "team/job",
        "image_tag": "1.2",
        "run_command": None,
        "argv": ["python", "-m", "job", "--flag=a b"],
        "entrypoint": "/bin/sh -c",
        "timeout_seconds": 60,
        "instance_type": "standard-s",
    }
    fields.update(over)
    return fields


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "data" / "runnerd.db") as s:
        yield s


async def make_runner(store: Store, name: str = "nightly", **over: Any) -> Runner:
    return await store.create_runner(runner_fields(name, **over), [])


async def queue(store: Store, runner: Runner, env: list[tuple[str, str]] | None = None) -> Run:
    run, created = await store.create_run(runner, env or [], 1.0, 1024, 512)
    assert created
    return run


# -- runners ---------------------------------------------------------------------


async def test_runner_create_get_list_update_delete(store: Store) -> None:
    r = await store.create_runner(runner_fields("one"), [("A", "1"), ("B", "2")])
    assert (r.name, r.image_name, r.image_tag, r.image) == (
        "one",
        "team/job",
        "1.2",
        "team/job:1.2",
    )
    assert r.argv == ["python", "-m", "job", "--flag=a b"]
    assert r.run_command is None and r.entrypoint == "/bin/sh -c"
    assert r.timeout_seconds == 60 and r.instance_type == "standard-s"
    assert r.created_at == r.updated_at > 0
    assert await store.get_runner(r.id) == r
    assert [(e.env_key, e.env_val) for e in await store.list_env(r.id)] == [("A", "1"), ("B", "2")]

    r2 = await make_runner(store, "two", argv=None, run_command="echo hi")
    assert [x.id for x in await store.list_runners()] == [r.id, r2.id]
    assert r2.argv is None and r2.run_command == "echo hi"

    updated = await store.update_runner(r.id, {"image_tag": "2.0", "argv": None}, None)
    assert updated.image_tag == "2.0" and updated.argv is None
    assert updated.name == "one" and updated.updated_at >= r.updated_at
    assert len(await store.list_env(r.id)) == 2  # env None: left as is

    updated = await store.update_runner(r.id, {}, [("C", "3")])
    assert [(e.env_key, e.env_val) for e in await store.list_env(r.id)] == [("C", "3")]

    assert (await store.delete_runner(r.id)).run_ids == []
    assert await store.get_runner(r.id) is None
    assert [x.id for x in await store.list_runners()] == [r2.id]


async def test_update_or_delete_of_an_unknown_runner_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update_runner("nope", {"image_tag": "x"}, None)
    with pytest.raises(NotFound):
        await store.delete_runner("nope")
    assert await store.get_runner("nope") is None


async def test_duplicate_runner_name_raises_conflict_naming_the_field(store: Store) -> None:
    await make_runner(store, "same")
    with pytest.raises(Conflict) as info:
        await make_runner(store, "same")
    assert str(info.value).startswith("name")
    assert len(await store.list_runners()) == 1


async def test_renaming_a_runner_to_a_taken_name_raises_conflict_and_changes_nothing(
    store: Store,
) -> None:
    await make_runner(store, "taken")
    r = await make_runner(store, "mine")
    with pytest.raises(Conflict) as info:
        await store.update_runner(r.id, {"name": "taken", "image_tag": "9"}, [("X", "1")])
    assert str(info.value).startswith("name")
    after = await store.get_runner(r.id)
    assert after is not None and after.name == "mine" and after.image_tag == "1.2"
    assert await store.list_env(r.id) == []


async def test_duplicate_env_key_in_a_runner_create_raises_conflict_and_creates_nothing(
    store: Store,
) -> None:
    with pytest.raises(Conflict):
        await store.create_runner(runner_fields("dup"), [("A", "1"), ("A", "2")])
    assert await store.list_runners() == []


# -- env variables ---------------------------------------------------------------


async def test_env_create_update_delete_and_duplicate_key_conflict(store: Store) -> None:
    r = await make_runner(store)
    e = await store.create_env(r.id, "TOKEN", "abc")
    assert (e.runner_id, e.env_key, e.env_val) == (r.id, "TOKEN", "abc")
    assert await store.get_env(r.id, e.id) == e
    with pytest.raises(Conflict) as info:
        await store.create_env(r.id, "TOKEN", "other")
    assert str(info.value).startswith("env_key")
    other = await store.create_env(r.id, "OTHER", "1")
    with pytest.raises(Conflict):
        await store.update_env(r.id, other.id, {"env_key": "TOKEN"})
    changed = await store.update_env(r.id, e.id, {"env_val": "xyz"})
    assert (changed.env_key, changed.env_val) == ("TOKEN", "xyz")
    with pytest.raises(NotFound):
        await store.update_env(r.id, "nope", {"env_val": "1"})
    assert await store.delete_env(r.id, e.id) is True
    assert await store.delete_env(r.id, e.id) is False
    assert [x.env_key for x in await store.list_env(r.id)] == ["OTHER"]


async def test_the_same_env_key_may_be_set_on_two_runners(store: Store) -> None:
    a, b = await make_runner(store, "aaa"), await make_runner(store, "bbb")
    await store.create_env(a.id, "K", "1")
    await store.create_env(b.id, "K", "2")
    assert (await store.list_env(b.id))[0].env_val == "2"


async def test_env_of_another_runner_is_not_visible_through_this_runner(store: Store) -> None:
    a, b = await make_runner(store, "aaa"), await make_runner(store, "bbb")
    e = await store.create_env(a.id, "K", "1")
    assert await store.get_env(b.id, e.id) is None
    assert await store.delete_env(b.id, e.id) is False


# -- runs ------------------------------------------------------------------------


async def test_create_run_snapshots_the_runner_and_env(store: Store) -> None:
    r = await make_runner(store, run_command=None, argv=["a", "b"], entrypoint="")
    run, created = await store.create_run(r, [("K", "v"), ("EMPTY", "")], 0.5, 256, 128)
    assert created
    assert run.status is Status.PENDING
    assert (run.runner_id, run.image, run.command, run.argv, run.entrypoint) == (
        r.id,
        "team/job:1.2",
        None,
        ["a", "b"],
        "",
    )
    assert run.env == [("K", "v"), ("EMPTY", "")]
    assert (run.timeout_seconds, run.instance_type, run.cpu, run.mem, run.pids) == (
        60,
        "standard-s",
        0.5,
        256,
        128,
    )
    assert run.exit_code is None and run.failure_reason is None and run.started_at is None
    # editing the runner later does not change the queued run
    await store.update_runner(r.id, {"image_tag": "3", "argv": None, "run_command": "x"}, [])
    again = await store.get_run(run.id)
    assert again == run


async def test_get_run_scoped_to_another_runner_is_none(store: Store) -> None:
    a, b = await make_runner(store, "aaa"), await make_runner(store, "bbb")
    run = await queue(store, a)
    assert await store.get_run(run.id, a.id) == run
    assert await store.get_run(run.id, b.id) is None


async def test_list_runs_is_newest_first_and_honours_limit_and_status(store: Store) -> None:
    r, other = await make_runner(store, "aaa"), await make_runner(store, "bbb")
    runs = [await queue(store, r) for _ in range(5)]
    await queue(store, other)
    await store.finish_run(
        runs[1].id, Status.FAILED, exit_code=1, failure_reason=FailureReason.NONZERO_EXIT, error="x"
    )
    await store.finish_run(
        runs[3].id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None
    )
    assert [x.id for x in await store.list_runs(r.id, limit=50)] == [x.id for x in runs[::-1]]
    assert [x.id for x in await store.list_runs(r.id, limit=2)] == [runs[4].id, runs[3].id]
    assert [x.id for x in await store.list_runs(r.id, limit=50, status=Status.PENDING)] == [
        runs[4].id,
        runs[2].id,
        runs[0].id,
    ]
    assert [x.id for x in await store.list_runs(r.id, limit=50, status=Status.FAILED)] == [
        runs[1].id
    ]


async def test_list_runs_before_pages_cover_every_run_once(store: Store) -> None:
    r = await make_runner(store)
    ids = [(await queue(store, r)).id for _ in range(23)]
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        page = await store.list_runs(r.id, limit=5, before=before)
        if not page:
            break
        pages += 1
        assert len(page) <= 5
        seen += [x.id for x in page]
        before = page[-1].id
    assert pages == 5
    assert seen == ids[::-1]
    assert len(set(seen)) == len(seen)


async def test_list_runs_before_combined_with_status_pages_that_status_only(store: Store) -> None:
    r = await make_runner(store)
    runs = [await queue(store, r) for _ in range(9)]
    for x in runs[::3]:
        await store.finish_run(x.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None)
    page1 = await store.list_runs(r.id, limit=2, status=Status.PENDING)
    page2 = await store.list_runs(r.id, limit=2, status=Status.PENDING, before=page1[-1].id)
    page3 = await store.list_runs(r.id, limit=2, status=Status.PENDING, before=page2[-1].id)
    pending = [x.id for i, x in enumerate(runs) if i % 3][::-1]
    assert [x.id for x in page1 + page2 + page3] == pending[:6]


async def test_list_runs_filters_by_trigger_alone_and_with_status_and_pages(store: Store) -> None:
    r, other = await make_runner(store, "aaa"), await make_runner(store, "bbb")
    made = []
    for i in range(6):
        trigger = Trigger.RETRY if i % 2 else Trigger.API
        run, _ = await store.create_run(r, [], 1.0, 1024, 512, trigger=trigger)
        made.append(run)
    await store.create_run(other, [], 1.0, 1024, 512, trigger=Trigger.RETRY)
    await store.finish_run(
        made[3].id, Status.FAILED, exit_code=1, failure_reason=FailureReason.NONZERO_EXIT, error="x"
    )
    retries = [x.id for x in made[1::2]][::-1]
    found = await store.list_runs(r.id, limit=50, trigger=Trigger.RETRY)
    assert [x.id for x in found or []] == retries
    page1 = await store.list_runs(r.id, limit=2, trigger=Trigger.RETRY)
    assert page1 is not None
    page2 = await store.list_runs(r.id, limit=2, trigger=Trigger.RETRY, before=page1[-1].id)
    assert [x.id for x in page1 + (page2 or [])] == retries
    both = await store.list_runs(r.id, limit=50, status=Status.PENDING, trigger=Trigger.RETRY)
    assert [x.id for x in both or []] == [made[5].id, made[1].id]
    assert await store.list_runs(r.id, limit=50, trigger=Trigger.CHAIN) == []


async def test_list_runs_before_a_run_of_another_runner_is_none(store: Store) -> None:
    a, b = await make_runner(store, "aaa"), await make_runner(store, "bbb")
    await queue(store, a)
    foreign = await queue(store, b)
    await queue(store, a)
    assert await store.list_runs(a.id, limit=10, before=foreign.id) is None
    assert await store.list_runs(a.id, limit=10, before=str(uuid.uuid4())) is None


async def test_next_pending_is_the_oldest_and_skips_runs_in_flight(store: Store) -> None:
    a, b = await make_runner(store, "aaa"), await make_runner(store, "bbb")
    r1, r2, r3 = await queue(store, a), await queue(store, b), await queue(store, a)
    assert (await store.next_pending()).id == r1.id
    assert (await store.next_pending(in_flight=[])).id == r1.id
    assert (await store.next_pending(in_flight=[r1.id])).id == r2.id
    assert (await store.next_pending(in_flight=[r1.id, r2.id])).id == r3.id
    assert await store.next_pending(in_flight=[r1.id, r2.id, r3.id]) is None
    await store.mark_running(r1.id, "c1", 1000)
    assert (await store.next_pending()).id == r2.id


async def test_next_pending_takes_as_many_in_flight_ids_as_the_config_allows(store: Store) -> None:
    r = await make_runner(store, max_concurrent_runs=1000)
    (run,) = [await queue(store, r)]
    in_flight = [f"run-{i}" for i in range(1000)]  # max_concurrent_runs may be 1000
    assert (await store.next_pending(in_flight=in_flight)).id == run.id


async def test_next_pending_of_an_empty_queue_is_none(store: Store) -> None:
    assert await store.next_pending() is None


async def test_mark_running_moves_only_a_pending_run(store: Store) -> None:
    r = await make_runner(store)
    run = await queue(store, r)
    running = await store.mark_running(run.id, "cid", 1234)
    assert (running.status, running.container_id, running.started_at) == (
        Status.RUNNING,
        "cid",
        1234,
    )
    with pytest.raises(Conflict):
        await store.mark_running(run.id, "cid2", 2000)
    assert (await store.get_run(run.id)).container_id == "cid"
    await store.finish_run(run.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None)
    with pytest.raises(Conflict):
        await store.mark_running(run.id, "cid3", 3000)
    assert (await store.get_run(run.id)).status is Status.SUCCEEDED


async def test_finish_run_never_moves_a_run_backwards(store: Store) -> None:
    r = await make_runner(store)
    run = await queue(store, r)
    done = await store.finish_run(
        run.id,
        Status.FAILED,
        exit_code=None,
        failure_reason=FailureReason.CANCELED,
        error="canceled",
        completed_at=5000,
    )
    assert (done.status, done.failure_reason, done.error, done.completed_at) == (
        Status.FAILED,
        FailureReason.CANCELED,
        "canceled",
        5000,
    )
    with pytest.raises(Conflict):
        await store.finish_run(
            run.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None
        )
    after = await store.get_run(run.id)
    assert after == done


async def test_finish_run_from_running_records_exit_code(store: Store) -> None:
    r = await make_runner(store)
    run = await queue(store, r)
    await store.mark_running(run.id, "cid", 1000)
    done = await store.finish_run(
        run.id,
        Status.FAILED,
        exit_code=3,
        failure_reason=FailureReason.NONZERO_EXIT,
        error="exit 3",
    )
    assert (done.status, done.exit_code, done.started_at) == (Status.FAILED, 3, 1000)
    assert done.completed_at is not None and done.completed_at >= 1000
    assert await store.runs_with_status(Status.RUNNING) == []
    assert [x.id for x in await store.runs_with_status(Status.FAILED)] == [run.id]


async def test_delete_runner_is_refused_while_a_run_is_active_then_deletes_runs_and_env(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runnerd.db"
    async with Store(path) as store:
        r = await store.create_runner(runner_fields(), [("A", "1")])
        keep = await make_runner(store, "keep")
        kept_run = await queue(store, keep)
        old = await queue(store, r)
        await store.finish_run(
            old.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None
        )
        active = await queue(store, r)
        with pytest.raises(Conflict):
            await store.delete_runner(r.id)  # pending
        await store.mark_running(active.id, "cid", 1)
        with pytest.raises(Conflict):
            await store.delete_runner(r.id)  # running
        assert await store.get_runner(r.id) is not None
        assert len(await store.list_runs(r.id, limit=10)) == 2
        await store.finish_run(
            active.id,
            Status.FAILED,
            exit_code=1,
            failure_reason=FailureReason.NONZERO_EXIT,
            error="x",
        )

        deleted = await store.delete_runner(r.id)
        assert sorted(deleted.run_ids) == sorted([old.id, active.id])
        assert await store.get_runner(r.id) is None
        assert await store.get_run(old.id) is None and await store.get_run(active.id) is None
        assert await store.list_env(r.id) == []
        assert await store.get_run(kept_run.id) is not None
    with raw_db(path) as db:
        assert db.execute("SELECT count(*) FROM runner_env_variables").fetchone()[0] == 0
        assert (
            db.execute("SELECT count(*) FROM runs WHERE runner_id = ?", (r.id,)).fetchone()[0] == 0
        )


# -- api keys, durability --------------------------------------------------------


async def test_api_key_by_hash_finds_the_key_and_nothing_else(store: Store) -> None:
    k = await store.create_api_key("ci", Scope.READ, "hash-1")
    await store.create_api_key("admin", Scope.FULL, "hash-2")
    found = await store.api_key_by_hash("hash-1")
    assert found is not None and (found.id, found.name, found.scope) == (k.id, "ci", Scope.READ)
    assert await store.api_key_by_hash("hash-3") is None
    with pytest.raises(Conflict):
        await store.create_api_key("ci", Scope.FULL, "hash-9")
    assert await store.revoke_api_key("ci") is True
    assert await store.api_key_by_hash("hash-1") is None
    assert await store.revoke_api_key("ci") is False


async def test_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "runnerd.db"
    async with Store(path):
        with raw_db(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "runnerd.db"
    async with Store(path) as store:
        r = await store.create_runner(runner_fields(), [("A", "1")])
        run = await queue(store, r, [("A", "2")])
        await store.create_api_key("k", Scope.FULL, "h")
        daemon_id = await store.daemon_id()
    async with Store(path) as store:
        assert await store.get_runner(r.id) == r
        assert await store.get_run(run.id) == run
        assert [(e.env_key, e.env_val) for e in await store.list_env(r.id)] == [("A", "1")]
        assert (await store.api_key_by_hash("h")).name == "k"
        assert await store.daemon_id() == daemon_id  # the id is made once


async def test_a_closed_store_can_be_closed_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "runnerd.db")
    await store.open()
    await store.close()
    await store.close()


# -- per-runner limits, idempotent triggers, cancel, schema ------------------------


async def test_runner_max_concurrent_runs_is_stored_and_none_by_default(store: Store) -> None:
    plain = await make_runner(store, "plain")
    assert plain.max_concurrent_runs is None
    one = await make_runner(store, "one", max_concurrent_runs=1)
    assert one.max_concurrent_runs == 1
    changed = await store.update_runner(one.id, {"max_concurrent_runs": None}, None)
    assert changed.max_concurrent_runs is None


async def test_next_pending_skips_a_runner_at_its_own_limit_without_blocking_others(
    store: Store,
) -> None:
    limited = await make_runner(store, "limited", max_concurrent_runs=1)
    free = await make_runner(store, "free")
    l1, l2 = await queue(store, limited), await queue(store, limited)
    f1 = await queue(store, free)
    assert (await store.next_pending()).id == l1.id
    # l1 is in flight (claimed, not yet running): l2 must wait, f1 may go
    assert (await store.next_pending(in_flight=[l1.id])).id == f1.id
    await store.mark_running(l1.id, "c", 1)
    assert (await store.next_pending()).id == f1.id  # l1 running counts too
    assert await store.next_pending(in_flight=[f1.id]) is None
    await store.finish_run(l1.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None)
    assert (await store.next_pending(in_flight=[f1.id])).id == l2.id


async def test_next_pending_counts_running_and_in_flight_runs_once_each(store: Store) -> None:
    r = await make_runner(store, max_concurrent_runs=2)
    a, b, c = await queue(store, r), await queue(store, r), await queue(store, r)
    await store.mark_running(a.id, "ca", 1)
    # a is both running and in flight: one slot used, b may start
    assert (await store.next_pending(in_flight=[a.id])).id == b.id
    assert await store.next_pending(in_flight=[a.id, b.id]) is None
    assert c.status is Status.PENDING


async def test_a_repeated_idempotency_key_returns_the_first_run_and_queues_nothing(
    store: Store,
) -> None:
    r, other = await make_runner(store, "aaa"), await make_runner(store, "bbb")
    first, created = await store.create_run(r, [("A", "1")], 1.0, 1024, 512, "key-1")
    assert created
    again, created = await store.create_run(r, [("A", "2")], 1.0, 1024, 512, "key-1")
    assert not created and again == first
    elsewhere, created = await store.create_run(other, [], 1.0, 1024, 512, "key-1")
    assert created and elsewhere.id != first.id
    fresh, created = await store.create_run(r, [], 1.0, 1024, 512, "key-2")
    assert created and fresh.id != first.id
    no_key_1, c1 = await store.create_run(r, [], 1.0, 1024, 512)
    no_key_2, c2 = await store.create_run(r, [], 1.0, 1024, 512)
    assert c1 and c2 and no_key_1.id != no_key_2.id
    assert len(await store.list_runs(r.id, limit=10)) == 4


async def test_an_idempotency_key_older_than_the_window_queues_a_new_run(tmp_path: Path) -> None:
    path = tmp_path / "runnerd.db"
    async with Store(path) as store:
        r = await make_runner(store)
        old, _ = await store.create_run(r, [], 1.0, 1024, 512, "k")
        with raw_db(path) as db:  # age it past the 24 h window
            db.execute(
                "UPDATE runs SET created_at = created_at - ? WHERE id = ?",
                (IDEMPOTENCY_WINDOW_MS + 1000, old.id),
            )
        new, created = await store.create_run(r, [], 1.0, 1024, 512, "k")
        assert created and new.id != old.id
        again, created = await store.create_run(r, [], 1.0, 1024, 512, "k")
        assert not created and again.id == new.id


async def test_cancel_pending_fails_a_pending_run_only(store: Store) -> None:
    r = await make_runner(store)
    pending, running = await queue(store, r), await queue(store, r)
    await store.mark_running(running.id, "c", 1)
    done = await store.cancel_pending(pending.id, "canceled by a user")
    assert done is not None
    assert (done.status, done.failure_reason, done.error) == (
        Status.FAILED,
        FailureReason.CANCELED,
        "canceled by a user",
    )
    assert done.completed_at is not None
    assert await store.cancel_pending(pending.id, "again") is None
    assert await store.cancel_pending(running.id, "x") is None
    assert (await store.get_run(running.id)).status is Status.RUNNING


async def test_a_schema_1_database_is_migrated_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "runnerd.db"
    with raw_db(path) as db:
        db.executescript(SCHEMA_V1)
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute(
            "INSERT INTO runners (id, name, image_name, image_tag, timeout_seconds,"
            " instance_type, created_at, updated_at)"
            " VALUES ('r1', 'old', 'busybox', 'latest', 60, 'standard-s', 1, 1)"
        )
    async with Store(path) as store:
        r = await store.get_runner("r1")
        assert r is not None and r.name == "old" and r.max_concurrent_runs is None
        run, created = await store.create_run(r, [], 1.0, 1, 1, "k")
        assert created
        assert (await store.create_run(r, [], 1.0, 1, 1, "k"))[0].id == run.id
    with raw_db(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)


async def test_a_database_from_a_newer_runnerd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runnerd.db"
    async with Store(path):
        pass
    with raw_db(path) as db:
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    store = Store(path)
    with pytest.raises(StoreError, match="newer"):
        await store.open()
    await store.close()


# -- group commit, query plans, sealed env ------------------------------------------


async def test_concurrent_writes_share_transactions_and_a_failing_one_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runnerd.db"
    async with Store(path) as store:
        taken = await make_runner(store, "taken")
        turns = 0
        real = _Connection.alone

        async def counting(self: _Connection, fn: Any) -> Any:
            nonlocal turns
            turns += 1
            return await real(self, fn)

        monkeypatch.setattr(_Connection, "alone", counting)
        names = [f"r{i}" for i in range(40)]
        outcomes = await asyncio.gather(
            *(make_runner(store, n) for n in names[:20]),
            make_runner(store, "taken"),  # breaks the name rule inside a shared turn
            *(queue(store, taken) for _ in range(10)),
            *(make_runner(store, n) for n in names[20:]),
            return_exceptions=True,
        )
        monkeypatch.undo()
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1 and isinstance(failures[0], Conflict)
        assert "name" in str(failures[0])
        assert turns < len(outcomes) / 4  # 51 writes in a handful of transactions
    async with Store(path) as store:  # every write that was answered is on disk
        assert sorted(r.name for r in await store.list_runners()) == sorted(names + ["taken"])
        assert len(await store.list_runs(taken.id, limit=100)) == 10


async def test_reads_in_the_same_turn_as_writes_are_answered(store: Store) -> None:
    r = await make_runner(store)
    writes = [queue(store, r) for _ in range(5)]
    reads = [store.get_runner(r.id) for _ in range(5)]
    results = await asyncio.gather(*writes, *reads)
    assert all(x == r for x in results[5:])
    assert len(await store.list_runs(r.id, limit=10)) == 5


@pytest.mark.parametrize("query", ["next_pending", "runs_with_status"])
async def test_the_scheduler_s_queries_search_the_active_index_not_the_whole_table(
    tmp_path: Path, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runnerd.db"
    captured: list[tuple[str, tuple[Any, ...]]] = []
    async with Store(path) as store:
        r = await make_runner(store, max_concurrent_runs=2)
        await queue(store, r)
        for name in ("all", "one"):  # every query with its parameters

            def spy(real: Any) -> Any:
                async def query(self: Database, sql: str, params: Any = ()) -> Any:
                    captured.append((sql, tuple(params)))
                    return await real(self, sql, params)

                return query

            monkeypatch.setattr(Database, name, spy(getattr(Database, name)))
        if query == "next_pending":
            await store.next_pending(in_flight=["x"])
        else:
            await store.runs_with_status(Status.RUNNING)
    assert captured
    with raw_db(path) as db:
        plans = [
            row[3]
            for sql, params in captured
            for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)
        ]
    assert any("runs_active" in p for p in plans), plans
    assert not any(p.startswith("SCAN") for p in plans), plans


async def test_a_run_s_env_is_decrypted_only_when_used_and_never_printed(store: Store) -> None:
    r = await make_runner(store)
    run = await queue(store, r, [("TOKEN", "s3cret")])
    [listed] = await store.list_runs(r.id, limit=1)
    assert "s3cret" not in repr(listed)
    assert list(listed.env) == [("TOKEN", "s3cret")] == list(run.env)


async def test_a_lookup_that_finds_the_database_busy_is_done_by_the_reader(tmp_path: Path) -> None:
    # In WAL mode a reader sees SQLITE_BUSY only in rare moments (another process
    # recovering the WAL index); the loop-thread connection then hands the read on.
    async with Store(tmp_path / "runnerd.db") as store:
        r = await make_runner(store)
        run = await queue(store, r)
        real = store._db.lookups
        assert real is not None

        class Busy:
            calls = 0

            def execute(self, *args: Any) -> Any:
                Busy.calls += 1
                error = sqlite3.OperationalError("database is locked")
                error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
                raise error

        store._db.lookups = Busy()  # type: ignore[assignment]
        try:
            found = await store.get_run(run.id)
            page = await store.list_runs(r.id, limit=5)
        finally:
            store._db.lookups = real
        assert Busy.calls == 2
        assert found is not None and found.id == run.id
        assert page is not None and [x.id for x in page] == [run.id]


# -- lifecycle: threads and closing ---------------------------------------------------


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("runnerd-store-")]


async def test_store_threads_are_named_daemon_threads_that_end_at_close(tmp_path: Path) -> None:
    """Pins how the store drives aiosqlite 0.22's thread (made in Connection(),
    started on the first await): a daemon thread cannot keep the process alive."""
    store = Store(tmp_path / "runnerd.db")
    await store.open()
    threads = _store_threads()
    assert sorted(t.name for t in threads) == ["runnerd-store-reader", "runnerd-store-writer"]
    assert all(t.daemon and t.is_alive() for t in threads)
    await store.close()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)


async def test_close_while_a_write_waits_for_another_process_lock_aborts_it_promptly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runnerd.db"
    store = Store(path)
    await store.open()
    runner = await make_runner(store)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # as `runnerd keys create` or a backup would hold it
    try:
        waiting = asyncio.create_task(queue(store, runner))
        await asyncio.sleep(0.3)  # the write is in its lock wait (10 s at most)
        assert not waiting.done()
        await asyncio.wait_for(store.close(wait_seconds=0.2), 5)  # not the 10 s lock wait
        with pytest.raises(StoreError, match="closed"):
            await waiting
        for _ in range(100):  # the thread ends right after its last call
            if not any(t.is_alive() for t in _store_threads()):
                break
            await asyncio.sleep(0.02)
        assert not [(t.name, t.is_alive()) for t in _store_threads() if t.is_alive()]
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with Store(path) as store:  # the aborted write left nothing behind
        assert await store.list_runs(runner.id, limit=10) == []


async def test_a_write_waits_for_another_process_lock_and_then_commits(tmp_path: Path) -> None:
    path = tmp_path / "runnerd.db"
    async with Store(path) as store:
        runner = await make_runner(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        waiting = asyncio.create_task(queue(store, runner))
        await asyncio.sleep(0.5)  # several lock slices
        assert not waiting.done()
        other.execute("ROLLBACK")
        other.close()
        run = await asyncio.wait_for(waiting, 5)
        assert [r.id for r in await store.list_runs(runner.id, limit=10)] == [run.id]


async def test_close_clears_run_completed_listeners(tmp_path: Path) -> None:
    """They hold the daemon's parts, which hold the store: a reference cycle that
    would keep the connections from being collected."""
    store = Store(tmp_path / "runnerd.db")
    await store.open()
    store.on_run_completed.append(lambda run: None)
    await store.close()
    assert store.on_run_completed == []


class _Recording:
    """A connection that notes each statement (and its parameters) it runs."""

    def __init__(self, db: sqlite3.Connection, seen: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.db, self.seen = db, seen

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self.seen.append((sql, tuple(params)))
        return self.db.execute(sql, params)


@pytest.mark.parametrize(
    ("status", "trigger", "index"),
    [
        (None, None, "runs_by_runner"),
        (Status.FAILED, None, "runs_by_runner_status"),
        (None, Trigger.RETRY, "runs_by_runner_trigger"),
        (Status.FAILED, Trigger.RETRY, "runs_by_runner_status_trigger"),
    ],
)
async def test_a_run_history_page_is_one_index_range_whatever_its_filters(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    status: Status | None,
    trigger: Trigger | None,
    index: str,
) -> None:
    """With a million runs a page must not scan: each filter (GET …/runs, the Runner
    page) has an index whose order is the page's, so SQLite reads `limit` entries."""
    path = tmp_path / "runnerd.db"
    seen: list[tuple[str, tuple[Any, ...]]] = []
    async with Store(path) as store:
        r = await make_runner(store)
        last = await queue(store, r)
        real = Database.lookup

        async def recording(self: Database, fn: Any, **kw: Any) -> Any:
            return await real(self, lambda db: fn(_Recording(db, seen)), **kw)

        monkeypatch.setattr(Database, "lookup", recording)
        await store.list_runs(r.id, limit=50, status=status, trigger=trigger, before=last.id)
        monkeypatch.undo()
    page = [(sql, params) for sql, params in seen if "ORDER BY seq DESC" in sql]
    assert len(page) == 1
    with raw_db(path) as db:
        plans = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + page[0][0], page[0][1])]
    assert len(plans) == 1 and plans[0].startswith(f"SEARCH runs USING INDEX {index} ("), plans
    assert "seq<?" in plans[0], plans  # `before` is in the range too, not a filter on it
