"""All of runnerd's SQL, over one aiosqlite connection to one SQLite file (WAL).

Every method is one transaction, committed before it returns, so whatever the
API answered for is on disk. One asyncio lock serialises them: the connection
is shared by every coroutine and SQLite transactions must not interleave.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

import aiosqlite

from .crypto import PREFIX as CRYPTO_PREFIX
from .crypto import SecretBox, SecretKeyError, load_key

from .models import (
    ACTIVE_STATUSES, ApiKey, ContainerRegistry, EnvVariable, FailureReason, Run, Runner, Scope, Status, now_ms,
)

SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('full', 'read')),
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE TABLE IF NOT EXISTS runners (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    image_name      TEXT NOT NULL,
    image_tag       TEXT NOT NULL,
    run_command     TEXT,
    argv            TEXT,              -- JSON array, or NULL
    entrypoint      TEXT,
    timeout_seconds INTEGER NOT NULL,
    instance_type   TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runner_env_variables (
    id         TEXT PRIMARY KEY,
    runner_id  TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    env_key    TEXT NOT NULL,
    env_val    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (runner_id, env_key)
);
CREATE TABLE IF NOT EXISTS runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    runner_id       TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    image           TEXT NOT NULL,
    command         TEXT,
    argv            TEXT,              -- JSON array, or NULL
    entrypoint      TEXT,
    env             TEXT NOT NULL,     -- JSON array of [key, value]
    timeout_seconds INTEGER NOT NULL,
    instance_type   TEXT NOT NULL,
    cpu             REAL NOT NULL,
    mem             INTEGER NOT NULL,
    pids            INTEGER NOT NULL,
    exit_code       INTEGER,
    failure_reason  TEXT,
    error           TEXT,
    container_id    TEXT,
    started_at      INTEGER,
    completed_at    INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_runner ON runs (runner_id, seq);
CREATE INDEX IF NOT EXISTS runs_by_runner_status ON runs (runner_id, status, seq);
CREATE INDEX IF NOT EXISTS runs_active ON runs (status, seq) WHERE status IN ('pending', 'running');
"""

# Each later schema version: the statements that bring the one before it up to it.
MIGRATIONS: dict[int, list[str]] = {
    2: [
        "ALTER TABLE runners ADD COLUMN max_concurrent_runs INTEGER",
        "ALTER TABLE runs ADD COLUMN idempotency_key TEXT",
        "CREATE UNIQUE INDEX runs_idempotency ON runs (runner_id, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL",
    ],
    3: [
        "ALTER TABLE runners ADD COLUMN webhook_url TEXT",
        "ALTER TABLE runs ADD COLUMN webhook_url TEXT",
        # NULL: no webhook; 'pending' (to deliver), 'delivered' or 'failed'
        "ALTER TABLE runs ADD COLUMN webhook_status TEXT",
        "CREATE INDEX runs_webhook_pending ON runs (completed_at)"
        " WHERE webhook_status = 'pending'",
        "CREATE INDEX runs_completed ON runs (completed_at)"
        " WHERE status IN ('succeeded', 'failed')",
    ],
    4: [
        "CREATE TABLE container_registries ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, host TEXT NOT NULL,"
        " username TEXT NOT NULL, password TEXT NOT NULL,"  # password: encrypted
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
        "ALTER TABLE runners ADD COLUMN container_registry_id TEXT"
        " REFERENCES container_registries (id)",
        "ALTER TABLE runners ADD COLUMN image_pull_policy TEXT",
        "ALTER TABLE runners ADD COLUMN warmed_at INTEGER",
        "ALTER TABLE runs ADD COLUMN container_registry_id TEXT",
        "ALTER TABLE runs ADD COLUMN image_pull_policy TEXT",
    ],
}
# Setting a completed run's webhook status: 'pending' when it has a webhook.
_WEBHOOK_ON_COMPLETION = ("webhook_status = CASE WHEN webhook_url IS NOT NULL"
                          " THEN 'pending' END")

RUNNER_COLUMNS = ("name", "image_name", "image_tag", "run_command", "argv", "entrypoint",
                  "timeout_seconds", "instance_type", "max_concurrent_runs", "webhook_url",
                  "container_registry_id", "image_pull_policy")

IDEMPOTENCY_WINDOW_MS = 24 * 3600 * 1000


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    """A uniqueness or state rule was broken; the message says which, naming the field."""


class Store:
    def __init__(self, path: Path, secret_key_file: Path | None = None) -> None:
        self.path = path
        self.secret_key_file = secret_key_file or path.parent / "secret.key"
        self._box: SecretBox | None = None
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        # Called with each run that reached its final status, after the commit.
        self.on_run_completed: list[Callable[[Run], None]] = []

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            await self._db.execute("PRAGMA busy_timeout = 10000")
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA synchronous = FULL")
            await self._db.execute("PRAGMA foreign_keys = ON")
            async with self._tx() as db:
                for statement in _statements(SCHEMA):
                    await db.execute(statement)
                await db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")
                async with db.execute(
                        "SELECT value FROM meta WHERE key = 'schema_version'") as cur:
                    row = await cur.fetchone()
                version = int(row[0]) if row else 1
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"the database {self.path} is from a newer runnerd (schema "
                        f"{version}, this one knows {SCHEMA_VERSION}); upgrade runnerd")
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[target]:
                        await db.execute(statement)
                await db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                                 (str(SCHEMA_VERSION),))
                await db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('daemon_id', ?)",
                    (str(uuid.uuid4()),))
            await self._open_secrets()
        except BaseException:
            await self.close()
            raise

    @property
    def box(self) -> SecretBox:
        assert self._box is not None, "store is not open"
        return self._box

    async def _open_secrets(self) -> None:
        """Load the secret key; on first use make it and encrypt what was stored in
        plain text before; refuse a key that is not this database's."""
        row = await self._one("SELECT value FROM meta WHERE key = 'secret_check'")
        box = SecretBox(load_key(self.secret_key_file, create=row is None))
        if row is not None:
            if not box.matches(row["value"]):
                raise SecretKeyError(
                    f"the secret key in {self.secret_key_file} is not the key this database "
                    "was encrypted with; restore the original key file from your backup")
            self._box = box
            return
        async with self._tx() as db:
            async with db.execute("SELECT id, env_val FROM runner_env_variables") as cur:
                env_rows = list(await cur.fetchall())
            await db.executemany(
                "UPDATE runner_env_variables SET env_val = ? WHERE id = ?",
                [(box.encrypt(v), i) for i, v in env_rows if not v.startswith(CRYPTO_PREFIX)])
            async with db.execute("SELECT id, env FROM runs") as cur:
                run_rows = list(await cur.fetchall())
            await db.executemany(
                "UPDATE runs SET env = ? WHERE id = ?",
                [(box.encrypt(v), i) for i, v in run_rows if not v.startswith(CRYPTO_PREFIX)])
            await db.execute("INSERT INTO meta (key, value) VALUES ('secret_check', ?)",
                             (box.check_value(),))
        self._box = box

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, holding the lock; rolled back on any error."""
        assert self._db is not None, "store is not open"
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        assert self._db is not None, "store is not open"
        async with self._lock:
            async with self._db.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def daemon_id(self) -> str:
        row = await self._one("SELECT value FROM meta WHERE key = 'daemon_id'")
        assert row is not None
        return str(row["value"])

    # -- API keys -----------------------------------------------------------

    async def create_api_key(self, name: str, scope: Scope, secret_hash: str) -> ApiKey:
        key = ApiKey(id=str(uuid.uuid4()), name=name, scope=scope, created_at=now_ms(),
                     last_used_at=None)
        try:
            async with self._tx() as db:
                await db.execute(
                    "INSERT INTO api_keys (id, name, scope, secret_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key.id, name, scope.value, secret_hash, key.created_at))
        except sqlite3.IntegrityError:
            raise Conflict(f"an API key named {name!r} already exists") from None
        return key

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._all("SELECT * FROM api_keys ORDER BY created_at, name")
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, name: str) -> bool:
        async with self._tx() as db:
            cur = await db.execute("DELETE FROM api_keys WHERE name = ?", (name,))
            return cur.rowcount > 0

    async def api_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = await self._one("SELECT * FROM api_keys WHERE secret_hash = ?", (secret_hash,))
        return _api_key(row) if row else None

    # -- runners ------------------------------------------------------------

    async def create_runner(self, fields: dict[str, Any],
                            env: list[tuple[str, str]]) -> Runner:
        now = now_ms()
        runner_id = str(uuid.uuid4())
        values = [_runner_value(c, fields.get(c)) for c in RUNNER_COLUMNS]
        try:
            async with self._tx() as db:
                await db.execute(
                    f"INSERT INTO runners (id, {', '.join(RUNNER_COLUMNS)}, created_at, updated_at)"
                    f" VALUES (?, {', '.join('?' for _ in RUNNER_COLUMNS)}, ?, ?)",
                    (runner_id, *values, now, now))
                await _insert_env(db, self.box, runner_id, env, now)
        except sqlite3.IntegrityError:
            raise Conflict(f"name: a runner named {fields['name']!r} already exists") from None
        runner = await self.get_runner(runner_id)
        assert runner is not None
        return runner

    async def get_runner(self, runner_id: str) -> Runner | None:
        row = await self._one("SELECT * FROM runners WHERE id = ?", (runner_id,))
        return _runner(row) if row else None

    async def list_runners(self) -> list[Runner]:
        rows = await self._all("SELECT * FROM runners ORDER BY created_at, name")
        return [_runner(r) for r in rows]

    async def update_runner(self, runner_id: str, fields: dict[str, Any],
                            env: list[tuple[str, str]] | None) -> Runner:
        """Set the given columns; `env` (when not None) replaces all env variables."""
        now = now_ms()
        columns = [c for c in RUNNER_COLUMNS if c in fields]
        try:
            async with self._tx() as db:
                sets = "".join(f"{c} = ?, " for c in columns)
                cur = await db.execute(
                    f"UPDATE runners SET {sets}updated_at = ? WHERE id = ?",
                    (*[_runner_value(c, fields[c]) for c in columns], now, runner_id))
                if cur.rowcount == 0:
                    raise NotFound(runner_id)
                if env is not None:
                    await db.execute("DELETE FROM runner_env_variables WHERE runner_id = ?",
                                     (runner_id,))
                    await _insert_env(db, self.box, runner_id, env, now)
        except sqlite3.IntegrityError:
            raise Conflict(f"name: a runner named {fields.get('name')!r} already exists") from None
        runner = await self.get_runner(runner_id)
        assert runner is not None
        return runner

    async def delete_runner(self, runner_id: str) -> list[str]:
        """Delete a runner with its env variables and runs; returns the run ids.
        Refused while it has pending or running runs."""
        async with self._tx() as db:
            async with db.execute("SELECT 1 FROM runners WHERE id = ?", (runner_id,)) as cur:
                if await cur.fetchone() is None:
                    raise NotFound(runner_id)
            async with db.execute(
                    "SELECT count(*) FROM runs WHERE runner_id = ? AND status IN (?, ?)",
                    (runner_id, *[s.value for s in ACTIVE_STATUSES])) as cur:
                row = await cur.fetchone()
                if row is not None and row[0] > 0:
                    raise Conflict("the runner has pending or running runs")
            async with db.execute("SELECT id FROM runs WHERE runner_id = ?", (runner_id,)) as cur:
                run_ids = [r[0] for r in await cur.fetchall()]
            await db.execute("DELETE FROM runs WHERE runner_id = ?", (runner_id,))
            await db.execute("DELETE FROM runners WHERE id = ?", (runner_id,))
        return run_ids

    # -- runner env variables -----------------------------------------------

    async def list_env(self, runner_id: str) -> list[EnvVariable]:
        rows = await self._all(
            "SELECT * FROM runner_env_variables WHERE runner_id = ? ORDER BY env_key",
            (runner_id,))
        return [self._env_row(r) for r in rows]

    async def get_env(self, runner_id: str, env_id: str) -> EnvVariable | None:
        row = await self._one(
            "SELECT * FROM runner_env_variables WHERE runner_id = ? AND id = ?",
            (runner_id, env_id))
        return self._env_row(row) if row else None

    async def create_env(self, runner_id: str, env_key: str, env_val: str) -> EnvVariable:
        now = now_ms()
        env_id = str(uuid.uuid4())
        try:
            async with self._tx() as db:
                await db.execute(
                    "INSERT INTO runner_env_variables"
                    " (id, runner_id, env_key, env_val, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (env_id, runner_id, env_key, self.box.encrypt(env_val), now, now))
        except sqlite3.IntegrityError:
            raise Conflict(f"env_key: {env_key!r} is already set on this runner") from None
        env = await self.get_env(runner_id, env_id)
        assert env is not None
        return env

    async def update_env(self, runner_id: str, env_id: str, fields: dict[str, str]) -> EnvVariable:
        columns = [c for c in ("env_key", "env_val") if c in fields]
        try:
            async with self._tx() as db:
                sets = "".join(f"{c} = ?, " for c in columns)
                cur = await db.execute(
                    f"UPDATE runner_env_variables SET {sets}updated_at = ?"
                    " WHERE runner_id = ? AND id = ?",
                    (*[self.box.encrypt(fields[c]) if c == "env_val" else fields[c]
                       for c in columns], now_ms(), runner_id, env_id))
                if cur.rowcount == 0:
                    raise NotFound(env_id)
        except sqlite3.IntegrityError:
            raise Conflict(
                f"env_key: {fields.get('env_key')!r} is already set on this runner") from None
        env = await self.get_env(runner_id, env_id)
        assert env is not None
        return env

    async def delete_env(self, runner_id: str, env_id: str) -> bool:
        async with self._tx() as db:
            cur = await db.execute(
                "DELETE FROM runner_env_variables WHERE runner_id = ? AND id = ?",
                (runner_id, env_id))
            return cur.rowcount > 0

    # -- runs ---------------------------------------------------------------

    async def create_run(self, runner: Runner, env: list[tuple[str, str]], cpu: float,
                         mem: int, pids: int, idempotency_key: str | None = None,
                         image: str | None = None) -> tuple[Run, bool]:
        """Queue a run of `runner` with the merged `env` and the instance type's
        limits; (run, True). With an `idempotency_key` already used for this runner
        in the last 24 hours: (that first run, False) and nothing is queued. The
        UNIQUE index decides, so concurrent requests cannot both insert."""
        now = now_ms()
        run_id = str(uuid.uuid4())
        async with self._tx() as db:
            if idempotency_key is not None:
                # A key older than the window is free again.
                await db.execute(
                    "UPDATE runs SET idempotency_key = NULL WHERE runner_id = ?"
                    " AND idempotency_key = ? AND created_at < ?",
                    (runner.id, idempotency_key, now - IDEMPOTENCY_WINDOW_MS))
            cur = await db.execute(
                "INSERT INTO runs (id, runner_id, status, image, command, argv, entrypoint,"
                " env, timeout_seconds, instance_type, cpu, mem, pids, idempotency_key,"
                " webhook_url, container_registry_id, image_pull_policy, created_at, updated_at)"
                " VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (runner_id, idempotency_key)"
                " WHERE idempotency_key IS NOT NULL DO NOTHING",
                (run_id, runner.id, image or runner.image, runner.run_command,
                 _json_or_null(runner.argv),
                 runner.entrypoint, self.box.encrypt(json.dumps(env)), runner.timeout_seconds,
                 runner.instance_type, cpu, mem, pids, idempotency_key, runner.webhook_url,
                 runner.container_registry_id, runner.image_pull_policy or "if_not_present",
                 now, now))
            created = cur.rowcount == 1
            if not created:
                async with db.execute(
                        "SELECT id FROM runs WHERE runner_id = ? AND idempotency_key = ?",
                        (runner.id, idempotency_key)) as c:
                    row = await c.fetchone()
                    assert row is not None
                    run_id = row[0]
        run = await self.get_run(run_id)
        assert run is not None
        return run, created

    async def get_run(self, run_id: str, runner_id: str | None = None) -> Run | None:
        if runner_id is None:
            row = await self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
        else:
            row = await self._one("SELECT * FROM runs WHERE id = ? AND runner_id = ?",
                                  (run_id, runner_id))
        return self._run_row(row) if row else None

    async def list_runs(self, runner_id: str, *, limit: int, status: Status | None = None,
                        before: str | None = None) -> list[Run]:
        """Newest first. `before` is a run id: only runs queued before it."""
        where = ["runner_id = ?"]
        params: list[Any] = [runner_id]
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if before is not None:
            where.append("seq < (SELECT seq FROM runs WHERE id = ? AND runner_id = ?)")
            params += [before, runner_id]
        rows = await self._all(
            f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*params, limit))
        return [self._run_row(r) for r in rows]

    async def next_pending(self, in_flight: list[str] | None = None) -> Run | None:
        """The oldest pending run that may start now: not already in flight (held by
        the scheduler), and of a runner below its own `max_concurrent_runs`, counting
        its running runs and its runs in flight."""
        in_flight = in_flight or []
        marks = ", ".join("?" for _ in in_flight)  # SQLite takes an empty IN ()
        row = await self._one(
            "SELECT r.* FROM runs r JOIN runners n ON n.id = r.runner_id"
            f" WHERE r.status = 'pending' AND r.id NOT IN ({marks})"
            " AND (n.max_concurrent_runs IS NULL OR n.max_concurrent_runs > ("
            "   SELECT count(*) FROM runs x WHERE x.runner_id = r.runner_id"
            f"  AND (x.status = 'running' OR x.id IN ({marks}))))"
            " ORDER BY r.seq LIMIT 1",
            [*in_flight, *in_flight])
        return self._run_row(row) if row else None

    async def cancel_pending(self, run_id: str, error: str) -> Run | None:
        """Pending → failed/canceled at once; None when it is no longer pending."""
        now = now_ms()
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE runs SET status = 'failed', failure_reason = 'canceled', error = ?,"
                f" completed_at = ?, updated_at = ?, {_WEBHOOK_ON_COMPLETION}"
                " WHERE id = ? AND status = 'pending'",
                (error, now, now, run_id))
            if cur.rowcount == 0:
                return None
        run = await self.get_run(run_id)
        assert run is not None
        self._completed(run)
        return run

    async def mark_running(self, run_id: str, container_id: str, started_at: int) -> Run:
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE runs SET status = 'running', container_id = ?, started_at = ?,"
                " updated_at = ? WHERE id = ? AND status = 'pending'",
                (container_id, started_at, started_at, run_id))
            if cur.rowcount == 0:
                raise Conflict(f"run {run_id} is no longer pending")
        run = await self.get_run(run_id)
        assert run is not None
        return run

    async def finish_run(self, run_id: str, status: Status, *, exit_code: int | None,
                         failure_reason: FailureReason | None, error: str | None,
                         completed_at: int | None = None) -> Run:
        """Move a pending or running run to its final status; never backwards."""
        assert status in (Status.SUCCEEDED, Status.FAILED)
        completed_at = completed_at or now_ms()
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE runs SET status = ?, exit_code = ?, failure_reason = ?, error = ?,"
                f" completed_at = ?, updated_at = ?, {_WEBHOOK_ON_COMPLETION}"
                " WHERE id = ? AND status IN (?, ?)",
                (status.value, exit_code, failure_reason.value if failure_reason else None,
                 error, completed_at, completed_at, run_id,
                 *[s.value for s in ACTIVE_STATUSES]))
            if cur.rowcount == 0:
                raise Conflict(f"run {run_id} has already completed")
        run = await self.get_run(run_id)
        assert run is not None
        self._completed(run)
        return run

    def _run_row(self, row: sqlite3.Row) -> Run:
        return _run(row, self.box)

    def _env_row(self, row: sqlite3.Row) -> EnvVariable:
        return _env(row, self.box)

    def _completed(self, run: Run) -> None:
        for listener in self.on_run_completed:
            listener(run)

    # -- container registries ---------------------------------------------------

    async def create_registry(self, fields: dict[str, str]) -> ContainerRegistry:
        now = now_ms()
        registry_id = str(uuid.uuid4())
        try:
            async with self._tx() as db:
                await db.execute(
                    "INSERT INTO container_registries (id, name, host, username, password,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (registry_id, fields["name"], fields["host"], fields["username"],
                     self.box.encrypt(fields["password"]), now, now))
        except sqlite3.IntegrityError:
            raise Conflict(f"name: a container registry named {fields['name']!r} "
                           "already exists") from None
        registry = await self.get_registry(registry_id)
        assert registry is not None
        return registry

    async def get_registry(self, registry_id: str) -> ContainerRegistry | None:
        row = await self._one("SELECT * FROM container_registries WHERE id = ?", (registry_id,))
        return _registry(row) if row else None

    async def list_registries(self) -> list[ContainerRegistry]:
        rows = await self._all("SELECT * FROM container_registries ORDER BY created_at, name")
        return [_registry(r) for r in rows]

    async def registry_credentials(self, registry_id: str) -> tuple[str, str, str] | None:
        """(host, username, password) for a pull; the only way the password leaves."""
        row = await self._one("SELECT host, username, password FROM container_registries"
                              " WHERE id = ?", (registry_id,))
        if row is None:
            return None
        return row["host"], row["username"], self.box.decrypt(row["password"])

    async def update_registry(self, registry_id: str, fields: dict[str, str]) -> ContainerRegistry:
        columns = [c for c in ("name", "host", "username", "password") if c in fields]
        values = [self.box.encrypt(fields[c]) if c == "password" else fields[c] for c in columns]
        try:
            async with self._tx() as db:
                sets = "".join(f"{c} = ?, " for c in columns)
                cur = await db.execute(
                    f"UPDATE container_registries SET {sets}updated_at = ? WHERE id = ?",
                    (*values, now_ms(), registry_id))
                if cur.rowcount == 0:
                    raise NotFound(registry_id)
        except sqlite3.IntegrityError:
            raise Conflict(f"name: a container registry named {fields.get('name')!r} "
                           "already exists") from None
        registry = await self.get_registry(registry_id)
        assert registry is not None
        return registry

    async def delete_registry(self, registry_id: str) -> None:
        """Refused (Conflict) while a runner uses it."""
        async with self._tx() as db:
            async with db.execute("SELECT count(*) FROM runners WHERE container_registry_id = ?",
                                  (registry_id,)) as cur:
                row = await cur.fetchone()
                if row is not None and row[0] > 0:
                    raise Conflict("the container registry is used by a runner")
            cur2 = await db.execute("DELETE FROM container_registries WHERE id = ?",
                                    (registry_id,))
            if cur2.rowcount == 0:
                raise NotFound(registry_id)

    async def set_warmed(self, runner_id: str, warmed_at: int) -> Runner:
        async with self._tx() as db:
            await db.execute("UPDATE runners SET warmed_at = ? WHERE id = ?",
                             (warmed_at, runner_id))
        runner = await self.get_runner(runner_id)
        if runner is None:
            raise NotFound(runner_id)
        return runner

    # -- webhooks -------------------------------------------------------------

    async def pending_webhooks(self, limit: int, exclude: list[str]) -> list[Run]:
        """Completed runs whose webhook is still to be delivered, oldest first."""
        marks = ", ".join("?" for _ in exclude)
        rows = await self._all(
            f"SELECT * FROM runs WHERE webhook_status = 'pending' AND id NOT IN ({marks})"
            " ORDER BY completed_at LIMIT ?", (*exclude, limit))
        return [self._run_row(r) for r in rows]

    async def set_webhook_status(self, run_id: str, status: str) -> None:
        async with self._tx() as db:
            await db.execute("UPDATE runs SET webhook_status = ? WHERE id = ?", (status, run_id))

    # -- retention --------------------------------------------------------------

    async def delete_expired_runs(self, *, completed_before: int | None,
                                  keep_per_runner: int | None, batch: int = 500) -> list[str]:
        """Delete up to `batch` completed runs that are past either limit: completed
        before `completed_before`, or beyond the newest `keep_per_runner` completed
        runs of their runner. Pending and running runs are never touched."""
        where = []
        params: list[Any] = []
        if completed_before is not None:
            where.append("(status IN ('succeeded', 'failed') AND completed_at < ?)")
            params.append(completed_before)
        if keep_per_runner is not None:
            where.append(
                "id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER ("
                "  PARTITION BY runner_id ORDER BY seq DESC) AS newer"
                "  FROM runs WHERE status IN ('succeeded', 'failed')) WHERE newer > ?)")
            params.append(keep_per_runner)
        if not where:
            return []
        async with self._tx() as db:
            async with db.execute(
                    f"SELECT id FROM runs WHERE {' OR '.join(where)} LIMIT ?",
                    (*params, batch)) as cur:
                ids = [r[0] for r in await cur.fetchall()]
            await db.executemany("DELETE FROM runs WHERE id = ? AND status IN"
                                 " ('succeeded', 'failed')", [(i,) for i in ids])
        return ids

    async def count_active(self) -> dict[str, int]:
        """How many runs are pending and running now."""
        rows = await self._all(
            "SELECT status, count(*) AS n FROM runs WHERE status IN ('pending', 'running')"
            " GROUP BY status")
        counts = {"pending": 0, "running": 0}
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    async def runs_with_status(self, status: Status) -> list[Run]:
        rows = await self._all("SELECT * FROM runs WHERE status = ? ORDER BY seq",
                               (status.value,))
        return [self._run_row(r) for r in rows]


# -- rows → models --------------------------------------------------------------


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


async def _insert_env(db: aiosqlite.Connection, box: SecretBox, runner_id: str,
                      env: list[tuple[str, str]], now: int) -> None:
    await db.executemany(
        "INSERT INTO runner_env_variables (id, runner_id, env_key, env_val, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(str(uuid.uuid4()), runner_id, k, box.encrypt(v), now, now) for k, v in env])


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _runner_value(column: str, value: Any) -> Any:
    return _json_or_null(value) if column == "argv" else value


def _api_key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(id=row["id"], name=row["name"], scope=Scope(row["scope"]),
                  created_at=row["created_at"], last_used_at=row["last_used_at"])


def _registry(row: sqlite3.Row) -> ContainerRegistry:
    return ContainerRegistry(id=row["id"], name=row["name"], host=row["host"],
                             username=row["username"], created_at=row["created_at"],
                             updated_at=row["updated_at"])


def _runner(row: sqlite3.Row) -> Runner:
    return Runner(
        id=row["id"], name=row["name"], image_name=row["image_name"],
        image_tag=row["image_tag"], run_command=row["run_command"],
        argv=json.loads(row["argv"]) if row["argv"] is not None else None,
        entrypoint=row["entrypoint"], timeout_seconds=row["timeout_seconds"],
        instance_type=row["instance_type"], max_concurrent_runs=row["max_concurrent_runs"],
        webhook_url=row["webhook_url"], container_registry_id=row["container_registry_id"],
        image_pull_policy=row["image_pull_policy"], warmed_at=row["warmed_at"],
        created_at=row["created_at"], updated_at=row["updated_at"])


def _env(row: sqlite3.Row, box: SecretBox) -> EnvVariable:
    return EnvVariable(id=row["id"], runner_id=row["runner_id"], env_key=row["env_key"],
                       env_val=box.decrypt(row["env_val"]), created_at=row["created_at"],
                       updated_at=row["updated_at"])


def _run(row: sqlite3.Row, box: SecretBox) -> Run:
    return Run(
        seq=row["seq"], id=row["id"], runner_id=row["runner_id"], status=Status(row["status"]),
        image=row["image"], command=row["command"],
        argv=json.loads(row["argv"]) if row["argv"] is not None else None,
        entrypoint=row["entrypoint"], env=[(k, v) for k, v in json.loads(box.decrypt(row["env"]))],
        timeout_seconds=row["timeout_seconds"], instance_type=row["instance_type"],
        cpu=row["cpu"], mem=row["mem"], pids=row["pids"], exit_code=row["exit_code"],
        failure_reason=FailureReason(row["failure_reason"]) if row["failure_reason"] else None,
        error=row["error"], container_id=row["container_id"], started_at=row["started_at"],
        completed_at=row["completed_at"], created_at=row["created_at"],
        updated_at=row["updated_at"], webhook_url=row["webhook_url"],
        webhook_status=row["webhook_status"],
        container_registry_id=row["container_registry_id"],
        image_pull_policy=row["image_pull_policy"] or "if_not_present")
