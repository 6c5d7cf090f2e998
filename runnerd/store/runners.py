"""Runners and their env variables (values stored encrypted)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from ..crypto import SecretBox
from ..models import ACTIVE_STATUSES, RUNNER_COLUMNS, EnvVariable, RetryPolicy, Runner, now_ms
from .base import Aggregate, json_or_null
from .errors import Conflict, NotFound, conflict_as

# A runner's fields, each a column of the same name; a create or update sets
# RUNNER_COLUMNS (the ones a client sets), the store the rest.
RUNNER_FIELDS = tuple(f.name for f in dataclasses.fields(Runner))
_JSON_COLUMNS = frozenset({"argv", "on_success", "on_failure"})


@dataclass(frozen=True)
class DeletedRunner:
    run_ids: list[str]  # its runs, deleted with it (their logs are the caller's to delete)
    unchained: list[str]  # names of the runners whose on_success/on_failure named it


class Runners(Aggregate):
    async def create_runner(self, fields: dict[str, Any], env: list[tuple[str, str]]) -> Runner:
        now = now_ms()
        runner_id = str(uuid.uuid4())
        values = [_runner_value(c, fields.get(c)) for c in RUNNER_COLUMNS]
        box = self.box

        def insert(db: sqlite3.Connection) -> Runner:
            with _runner_rules(fields):
                row = db.execute(
                    f"INSERT INTO runners (id, {', '.join(RUNNER_COLUMNS)}, created_at, updated_at)"
                    f" VALUES (?, {', '.join('?' for _ in RUNNER_COLUMNS)}, ?, ?) RETURNING *",
                    (runner_id, *values, now, now),
                ).fetchone()
            _check_chains(db, runner_id, fields)
            _insert_env(db, box, runner_id, env, now)
            return runner_from_row(row)

        return await self._db.write(insert)

    async def get_runner(self, runner_id: str) -> Runner | None:
        row = await self._db.lookup_one("SELECT * FROM runners WHERE id = ?", (runner_id,))
        return runner_from_row(row) if row else None

    async def runner_for_run(
        self, runner_id: str
    ) -> tuple[Runner, list[EnvVariable], str | None] | None:
        """What a run of the runner needs, in one read: the runner, its env
        variables and its registry's host (None without a registry)."""
        box = self.box

        def read(db: sqlite3.Connection) -> tuple[Runner, list[EnvVariable], str | None] | None:
            row = db.execute("SELECT * FROM runners WHERE id = ?", (runner_id,)).fetchone()
            if row is None:
                return None
            runner = runner_from_row(row)
            env = [
                env_from_row(r, box)
                for r in db.execute(
                    "SELECT * FROM runner_env_variables WHERE runner_id = ? ORDER BY env_key",
                    (runner_id,),
                )
            ]
            host = None
            if runner.container_registry_id is not None:
                registry = db.execute(
                    "SELECT host FROM container_registries WHERE id = ?",
                    (runner.container_registry_id,),
                ).fetchone()
                host = registry["host"] if registry is not None else None
            return runner, env, host

        return await self._db.lookup(read)

    async def list_runners(self) -> list[Runner]:
        rows = await self._db.all("SELECT * FROM runners ORDER BY created_at, name")
        return [runner_from_row(r) for r in rows]

    async def update_runner(
        self, runner_id: str, fields: dict[str, Any], env: list[tuple[str, str]] | None
    ) -> Runner:
        """Set the given columns; `env` (when not None) replaces all env variables."""
        now = now_ms()
        columns = [c for c in RUNNER_COLUMNS if c in fields]
        box = self.box

        def update(db: sqlite3.Connection) -> Runner:
            sets = "".join(f"{c} = ?, " for c in columns)
            with _runner_rules(fields):
                cur = db.execute(
                    f"UPDATE runners SET {sets}updated_at = ? WHERE id = ?",
                    (*[_runner_value(c, fields[c]) for c in columns], now, runner_id),
                )
            if cur.rowcount == 0:
                raise NotFound(runner_id)
            _check_chains(db, runner_id, fields)
            if env is not None:
                db.execute("DELETE FROM runner_env_variables WHERE runner_id = ?", (runner_id,))
                _insert_env(db, box, runner_id, env, now)
            row = db.execute("SELECT * FROM runners WHERE id = ?", (runner_id,)).fetchone()
            assert row is not None, f"runner {runner_id} vanished inside its own transaction"
            return runner_from_row(row)

        return await self._db.write(update)

    async def delete_runner(self, runner_id: str) -> DeletedRunner:
        """Delete a runner with its env variables and runs, and take it out of
        every other runner's `on_success`/`on_failure` (a chain to it just goes
        away). Refused while it has pending or running runs."""

        def delete(db: sqlite3.Connection) -> DeletedRunner:
            if db.execute("SELECT 1 FROM runners WHERE id = ?", (runner_id,)).fetchone() is None:
                raise NotFound(runner_id)
            active = db.execute(
                "SELECT count(*) FROM runs WHERE runner_id = ? AND status IN (?, ?)",
                (runner_id, *[s.value for s in ACTIVE_STATUSES]),
            ).fetchone()[0]
            if active > 0:
                raise Conflict("the runner has pending or running runs")
            run_ids = [
                r[0] for r in db.execute("SELECT id FROM runs WHERE runner_id = ?", (runner_id,))
            ]
            db.execute("DELETE FROM runs WHERE runner_id = ?", (runner_id,))
            db.execute("DELETE FROM runners WHERE id = ?", (runner_id,))
            return DeletedRunner(run_ids, _unchain(db, runner_id))

        return await self._db.write(delete)

    async def set_warmed(self, runner_id: str, warmed_at: int) -> Runner:
        def update(db: sqlite3.Connection) -> Runner:
            row = db.execute(
                "UPDATE runners SET warmed_at = ? WHERE id = ? RETURNING *", (warmed_at, runner_id)
            ).fetchone()
            if row is None:
                raise NotFound(runner_id)
            return runner_from_row(row)

        return await self._db.write(update)

    # -- env variables ------------------------------------------------------

    async def list_env(self, runner_id: str) -> list[EnvVariable]:
        rows = await self._db.all(
            "SELECT * FROM runner_env_variables WHERE runner_id = ? ORDER BY env_key", (runner_id,)
        )
        return [env_from_row(r, self.box) for r in rows]

    async def get_env(self, runner_id: str, env_id: str) -> EnvVariable | None:
        row = await self._db.lookup_one(
            "SELECT * FROM runner_env_variables WHERE runner_id = ? AND id = ?", (runner_id, env_id)
        )
        return env_from_row(row, self.box) if row else None

    async def create_env(self, runner_id: str, env_key: str, env_val: str) -> EnvVariable:
        now = now_ms()
        env_id = str(uuid.uuid4())
        sealed = self.box.encrypt(env_val)

        def insert(db: sqlite3.Connection) -> None:
            with conflict_as(f"env_key: {env_key!r} is already set on this runner"):
                db.execute(
                    "INSERT INTO runner_env_variables"
                    " (id, runner_id, env_key, env_val, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (env_id, runner_id, env_key, sealed, now, now),
                )

        await self._db.write(insert)
        return EnvVariable(
            id=env_id,
            runner_id=runner_id,
            env_key=env_key,
            env_val=env_val,
            created_at=now,
            updated_at=now,
        )

    async def update_env(self, runner_id: str, env_id: str, fields: dict[str, str]) -> EnvVariable:
        columns = [c for c in ("env_key", "env_val") if c in fields]
        values = [self.box.encrypt(fields[c]) if c == "env_val" else fields[c] for c in columns]
        box = self.box

        def update(db: sqlite3.Connection) -> EnvVariable:
            sets = "".join(f"{c} = ?, " for c in columns)
            with conflict_as(f"env_key: {fields.get('env_key')!r} is already set on this runner"):
                row = db.execute(
                    f"UPDATE runner_env_variables SET {sets}updated_at = ?"
                    " WHERE runner_id = ? AND id = ? RETURNING *",
                    (*values, now_ms(), runner_id, env_id),
                ).fetchone()
            if row is None:
                raise NotFound(env_id)
            return env_from_row(row, box)

        return await self._db.write(update)

    async def delete_env(self, runner_id: str, env_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return (
                db.execute(
                    "DELETE FROM runner_env_variables WHERE runner_id = ? AND id = ?",
                    (runner_id, env_id),
                ).rowcount
                > 0
            )

        return await self._db.write(delete)


def _runner_rules(fields: dict[str, Any]) -> conflict_as:
    """The rules a runner write can break, each named by its field. The API checks
    them first; these catch what changed between its check and the write."""
    return conflict_as(
        f"name: a runner named {fields.get('name')!r} already exists",
        foreign_key=f"container_registry_id: no container registry "
        f"{fields.get('container_registry_id')} (it was deleted meanwhile)",
        check="run_command and argv cannot both be set: the runner was changed meanwhile; "
        "set the other one to null in the same request",
    )


_CHAIN_COLUMNS = ("on_success", "on_failure")


def _check_chains(db: sqlite3.Connection, runner_id: str, fields: dict[str, Any]) -> None:
    """Inside a runner write, after it: every runner its new `on_success` and
    `on_failure` name exists, and the chains (both lists together) make no cycle.
    In the transaction, so two writes that each add one edge cannot close a cycle
    between them. Only a cycle through this runner can be new: the graph had none."""
    changed = [c for c in _CHAIN_COLUMNS if fields.get(c)]
    if not changed:
        return
    for column in changed:
        for target in fields[column]:
            if db.execute("SELECT 1 FROM runners WHERE id = ?", (target,)).fetchone() is None:
                raise Conflict(f"{column}: no runner {target}")
    cycle = _cycle_from(db, runner_id)
    if cycle is not None:
        start = _chain_row(db, runner_id)
        column = next(c for c in _CHAIN_COLUMNS if cycle[1] in start[c])
        names = " → ".join(_chain_row(db, i)["name"] for i in cycle)
        raise Conflict(f"{column}: would make a cycle: {names}")


def _chain_row(db: sqlite3.Connection, runner_id: str) -> dict[str, Any]:
    row = db.execute(
        "SELECT name, on_success, on_failure FROM runners WHERE id = ?", (runner_id,)
    ).fetchone()
    if row is None:  # only named, never a runner: the check above refused that
        return {"name": runner_id, "on_success": [], "on_failure": []}
    return {
        "name": row["name"],
        **{c: json.loads(row[c]) if row[c] else [] for c in _CHAIN_COLUMNS},
    }


def _cycle_from(db: sqlite3.Connection, start: str) -> list[str] | None:
    """A path of runner ids start → … → start along on_success and on_failure, or
    None. Depth first; each runner is read once, so the cost is what `start`
    reaches, not the number of runners."""
    came_from: dict[str, str] = {}
    stack = [start]
    seen = {start}
    while stack:
        current = stack.pop()
        row = _chain_row(db, current)
        for target in dict.fromkeys([*row["on_success"], *row["on_failure"]]):
            if target == start:  # back: the path is start → … → current → start
                path = [current]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target not in seen:
                seen.add(target)
                came_from[target] = current
                stack.append(target)
    return None


def _unchain(db: sqlite3.Connection, runner_id: str) -> list[str]:
    """Take `runner_id` out of every runner's on_success and on_failure; the names
    of the runners changed."""
    rows = db.execute(
        "SELECT id, name, on_success, on_failure FROM runners WHERE"
        " EXISTS (SELECT 1 FROM json_each(runners.on_success) WHERE value = ?1)"
        " OR EXISTS (SELECT 1 FROM json_each(runners.on_failure) WHERE value = ?1)",
        (runner_id,),
    ).fetchall()
    for row in rows:
        kept = [
            json_or_null([i for i in json.loads(row[c] or "[]") if i != runner_id] or None)
            for c in _CHAIN_COLUMNS
        ]
        db.execute(
            "UPDATE runners SET on_success = ?, on_failure = ?, updated_at = ? WHERE id = ?",
            (*kept, now_ms(), row["id"]),
        )
    return [row["name"] for row in rows]


def _insert_env(
    db: sqlite3.Connection, box: SecretBox, runner_id: str, env: list[tuple[str, str]], now: int
) -> None:
    with conflict_as("env_variables: an env_key appears twice"):
        db.executemany(
            "INSERT INTO runner_env_variables (id, runner_id, env_key, env_val, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(str(uuid.uuid4()), runner_id, k, box.encrypt(v), now, now) for k, v in env],
        )


def _runner_value(column: str, value: Any) -> Any:
    if column == "retry_policy":
        return None if value is None else json.dumps(value.to_json())
    if column in ("on_success", "on_failure"):
        return json_or_null(value or None)
    return json_or_null(value) if column in _JSON_COLUMNS else value


def runner_from_row(row: sqlite3.Row) -> Runner:
    values = {f: row[f] for f in RUNNER_FIELDS}
    for column in _JSON_COLUMNS:
        if values[column] is not None:
            values[column] = json.loads(values[column])
    values["on_success"] = values["on_success"] or []
    values["on_failure"] = values["on_failure"] or []
    values["retry_policy"] = RetryPolicy.from_json(
        json.loads(row["retry_policy"]) if row["retry_policy"] else None
    )
    return Runner(**values)


def env_from_row(row: sqlite3.Row, box: SecretBox) -> EnvVariable:
    return EnvVariable(
        id=row["id"],
        runner_id=row["runner_id"],
        env_key=row["env_key"],
        env_val=box.decrypt(row["env_val"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
