"""The store's own rules, on a real SQLite file: what a runner or registry write may
break between the API's check and the write (a deleted registry, a concurrent
PATCH), each told apart and named by its field; the v5 migration that puts
the run_command/argv rule into the table; and the v9 one that gives runs a node."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runnerd.models import Status
from runnerd.store import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION, Conflict, Store, StoreError


@contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A second, plain connection to the file, as another process would open it."""
    db = sqlite3.connect(path)
    try:
        with db:  # commits
            yield db
    finally:
        db.close()


def runner_fields(name: str, **over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": name,
        "image_name": "team/job",
        "image_tag": "1",
        "run_command": None,
        "argv": None,
        "entrypoint": None,
        "timeout_seconds": 60,
        "instance_type": "standard-s",
    }
    fields.update(over)
    return fields


REGISTRY = {
    "name": "acme",
    "host": "registry.example.com",
    "username": "bot",
    "password": "the-old-password",
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "data" / "runnerd.db") as s:
        yield s


def make_v4_database(path: Path) -> None:
    """A database as runnerd with schema 4 left it."""
    with raw_db(path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.executescript(SCHEMA_V1)
        for version in (2, 3, 4):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('schema_version', '4')")


# -- runner writes --------------------------------------------------------------------


async def test_runner_write_whose_registry_was_deleted_raises_conflict_naming_the_registry(
    store: Store,
) -> None:
    registry = await store.create_registry(dict(REGISTRY))
    gone = registry.id
    await store.delete_registry(gone)
    with pytest.raises(Conflict) as info:
        await store.create_runner(runner_fields("r1", container_registry_id=gone), [])
    assert str(info.value).startswith("container_registry_id:") and gone in str(info.value)
    assert await store.list_runners() == []

    runner = await store.create_runner(runner_fields("r2"), [])
    with pytest.raises(Conflict) as info:
        await store.update_runner(runner.id, {"container_registry_id": gone}, None)
    assert str(info.value).startswith("container_registry_id:")
    assert (await store.get_runner(runner.id)).container_registry_id is None


async def test_runner_name_taken_still_raises_conflict_naming_name(store: Store) -> None:
    await store.create_runner(runner_fields("taken"), [])
    with pytest.raises(Conflict) as info:
        await store.create_runner(runner_fields("taken"), [])
    assert str(info.value).startswith("name:")


async def test_runner_write_with_both_run_command_and_argv_is_refused_by_the_table(
    store: Store,
) -> None:
    # What two concurrent PATCHes (one setting each, each checked against the runner
    # before the other's write) would write without the table's CHECK.
    runner = await store.create_runner(runner_fields("cmd", run_command="echo a"), [])
    with pytest.raises(Conflict) as info:
        await store.update_runner(runner.id, {"argv": ["echo", "b"]}, None)
    assert "run_command" in str(info.value) and "argv" in str(info.value)
    after = await store.get_runner(runner.id)
    assert (after.run_command, after.argv) == ("echo a", None)
    with pytest.raises(Conflict):
        await store.create_runner(runner_fields("both", run_command="x", argv=["y"]), [])


# -- registry writes ------------------------------------------------------------------


async def test_registry_host_or_username_change_without_password_raises_conflict_naming_password(
    store: Store,
) -> None:
    registry = await store.create_registry(dict(REGISTRY))
    for change in (
        {"host": "evil.example.com"},
        {"username": "other"},
        {"host": "evil.example.com", "name": "renamed"},
    ):
        with pytest.raises(Conflict) as info:
            await store.update_registry(registry.id, change)
        assert str(info.value).startswith("password:"), change
    assert await store.registry_credentials(registry.id) == (
        "registry.example.com",
        "bot",
        "the-old-password",
    )

    # The same host or username again is no change; with the password, any change goes.
    await store.update_registry(registry.id, {"host": "registry.example.com", "name": "n2"})
    await store.update_registry(registry.id, {"host": "evil.example.com", "password": "new"})
    assert await store.registry_credentials(registry.id) == ("evil.example.com", "bot", "new")


# -- the v5 migration ----------------------------------------------------------------


async def test_a_schema_4_database_gets_the_command_check_keeping_runners_env_and_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runnerd.db"
    make_v4_database(path)
    with raw_db(path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("INSERT INTO container_registries VALUES ('cr', 'acme', 'h', 'u', 'p', 1, 1)")
        db.execute(
            "INSERT INTO runners (id, name, image_name, image_tag, run_command, argv,"
            " timeout_seconds, instance_type, created_at, updated_at, max_concurrent_runs,"
            " webhook_url, container_registry_id, image_pull_policy, warmed_at)"
            " VALUES ('r1', 'old', 'busybox', 'latest', NULL, '[\"echo\", \"x\"]', 60,"
            " 'standard-s', 1, 2, 3, 'http://hook/', 'cr', 'always', 5)"
        )
        # Both set: a schema-4 database could hold this after two racing PATCHes.
        db.execute(
            "INSERT INTO runners (id, name, image_name, image_tag, run_command, argv,"
            " timeout_seconds, instance_type, created_at, updated_at)"
            " VALUES ('r2', 'raced', 'busybox', 'latest', 'echo cmd', '[\"echo\"]', 60,"
            " 'standard-s', 1, 1)"
        )
        db.execute("INSERT INTO runner_env_variables VALUES ('e1', 'r1', 'K', 'v', 1, 1)")
        db.execute(
            "INSERT INTO runs (id, runner_id, status, image, env, timeout_seconds,"
            " instance_type, cpu, mem, pids, created_at, updated_at)"
            " VALUES ('run1', 'r1', 'succeeded', 'busybox:latest', '[]', 60, 'standard-s',"
            " 1, 1, 1, 1, 1)"
        )

    async with Store(path) as store:
        r1 = await store.get_runner("r1")
        assert (
            r1.argv,
            r1.max_concurrent_runs,
            r1.webhook_url,
            r1.container_registry_id,
            r1.image_pull_policy,
            r1.warmed_at,
            r1.updated_at,
        ) == (["echo", "x"], 3, "http://hook/", "cr", "always", 5, 2)
        r2 = await store.get_runner("r2")
        assert (r2.run_command, r2.argv) == ("echo cmd", None)  # what its runs ran
        assert [e.env_key for e in await store.list_env("r1")] == ["K"]
        run1 = await store.get_run("run1")
        assert run1.status is Status.SUCCEEDED
        assert not run1.log_incomplete  # schema 8: a run from before has no such mark
        assert run1.node is None  # schema 9: nor a node
        with pytest.raises(Conflict):
            await store.update_runner("r1", {"run_command": "echo y"}, None)
        # Foreign keys hold on the rebuilt table, in both directions.
        with pytest.raises(Conflict):
            await store.delete_registry("cr")
        assert (await store.delete_runner("r1")).run_ids == ["run1"]
        assert await store.get_run("run1") is None

    with raw_db(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        sql = db.execute("SELECT sql FROM sqlite_schema WHERE name = 'runners'").fetchone()[0]
        assert db.execute("SELECT count(*) FROM runner_env_variables").fetchone() == (0,)
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            db.execute("UPDATE runners SET argv = '[\"a\"]' WHERE id = 'r2'")
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION == 9
    assert "run_command_or_argv" in sql


async def test_a_dangling_registry_reference_stops_the_migration_changing_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runnerd.db"
    make_v4_database(path)
    with raw_db(path) as db:  # foreign keys off: as a hand edit could leave it
        db.execute(
            "INSERT INTO runners (id, name, image_name, image_tag, timeout_seconds,"
            " instance_type, created_at, updated_at, container_registry_id)"
            " VALUES ('r1', 'old', 'busybox', 'latest', 60, 'standard-s', 1, 1, 'gone')"
        )
    store = Store(path)
    with pytest.raises(StoreError, match="missing container_registries"):
        await store.open()
    await store.close()
    with raw_db(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "4",
        )
        assert db.execute("SELECT name FROM runners").fetchall() == [("old",)]


# -- the v9 migration ----------------------------------------------------------------


def run_columns(db: sqlite3.Connection) -> list[str]:
    return [row[1] for row in db.execute("PRAGMA table_xinfo('runs')")]


async def test_a_schema_8_database_gets_the_node_column_its_runs_none_until_set(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runnerd.db"
    with raw_db(path) as db:
        db.executescript(SCHEMA_V1)
        for version in range(2, 9):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('schema_version', '8')")
        assert "node" not in run_columns(db)
        db.execute(
            "INSERT INTO runners (id, name, image_name, image_tag, timeout_seconds,"
            " instance_type, created_at, updated_at)"
            " VALUES ('r1', 'old', 'busybox', 'latest', 60, 'standard-s', 1, 1)"
        )
        db.execute(
            "INSERT INTO runs (id, runner_id, status, image, env, timeout_seconds,"
            " instance_type, cpu, mem, pids, created_at, updated_at)"
            " VALUES ('run1', 'r1', 'running', 'busybox:latest', '[]', 60, 'standard-s',"
            " 1, 1, 1, 1, 1)"
        )

    async with Store(path) as store:
        run1 = await store.get_run("run1")
        assert run1 is not None and run1.node is None
        await store.set_node("run1", "worker-2")  # a run running across the upgrade
        again = await store.get_run("run1")
        assert again is not None and again.node == "worker-2"

    with raw_db(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert run_columns(db)[-1] == "node"
    assert version == ("9",)
