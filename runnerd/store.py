"""All of runnerd's SQL, over SQLite (WAL).

Three connections to the one file:

- the writer, an aiosqlite connection (its own thread): every write;
- the reader, an aiosqlite connection: reads of unbounded size (whole
  lists, the scheduler's queries), so they never wait behind a commit;
- a lookup connection on the event loop's own thread, for bounded reads by
  index (a row by its id, one page of a list): those take microseconds, less
  than the hand-off to a thread and back would cost. It never waits for a lock
  (busy timeout 0); when SQLite is busy the reader does the read instead.

Every operation is one function that runs whole on its connection: one
hand-off to its thread, however many statements it holds. Operations that
arrive while a thread is busy are taken together in its next turn:

- on the reader, in one read transaction (one consistent snapshot of what was
  committed when the turn began);
- on the writer, in one write transaction, each under a savepoint of its own so
  a failing one (a broken uniqueness rule, a run no longer pending) is undone
  alone and raised to its caller only.

Nobody is answered before the COMMIT that holds their write (synchronous =
FULL), so whatever the API answered for is on disk, and a read started after a
write was answered sees it; group commit only shares that fsync between the
writes that were waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .crypto import PREFIX as CRYPTO_PREFIX
from .crypto import SecretBox, SecretKeyError, load_key
from .models import (
    ACTIVE_STATUSES,
    ApiKey,
    ContainerRegistry,
    EnvVariable,
    FailureReason,
    Run,
    Runner,
    Scope,
    Status,
    now_ms,
)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], T]

SCHEMA_VERSION = 5

# A write waits this long for another process's write lock (`runnerd keys create`,
# a backup), in slices this short so that a closing store stops waiting at once:
# SQLite's own busy wait cannot be interrupted.
WRITE_LOCK_WAIT_SECONDS = 10.0
_LOCK_SLICE_MS = 100

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
        "CREATE INDEX runs_webhook_pending ON runs (completed_at) WHERE webhook_status = 'pending'",
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
    # run_command and argv exclude each other in the table itself, so two PATCHes
    # that each set one (each checked against the runner before the other's write)
    # cannot leave both set. SQLite adds a CHECK only by rebuilding the table:
    # migrations run with foreign keys off, so dropping the old one cascades to
    # nothing. A row with both (possible before) keeps run_command, the one runs used.
    5: [
        "CREATE TABLE runners_v5 ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, image_name TEXT NOT NULL,"
        " image_tag TEXT NOT NULL, run_command TEXT, argv TEXT, entrypoint TEXT,"
        " timeout_seconds INTEGER NOT NULL, instance_type TEXT NOT NULL,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
        " max_concurrent_runs INTEGER, webhook_url TEXT,"
        " container_registry_id TEXT REFERENCES container_registries (id),"
        " image_pull_policy TEXT, warmed_at INTEGER,"
        " CONSTRAINT run_command_or_argv CHECK (run_command IS NULL OR argv IS NULL))",
        "INSERT INTO runners_v5 SELECT id, name, image_name, image_tag, run_command,"
        " CASE WHEN run_command IS NULL THEN argv END, entrypoint, timeout_seconds,"
        " instance_type, created_at, updated_at, max_concurrent_runs, webhook_url,"
        " container_registry_id, image_pull_policy, warmed_at FROM runners",
        "DROP TABLE runners",
        "ALTER TABLE runners_v5 RENAME TO runners",
    ],
}
# Setting a completed run's webhook status: 'pending' when it has a webhook.
_WEBHOOK_ON_COMPLETION = "webhook_status = CASE WHEN webhook_url IS NOT NULL THEN 'pending' END"

RUNNER_COLUMNS = (
    "name",
    "image_name",
    "image_tag",
    "run_command",
    "argv",
    "entrypoint",
    "timeout_seconds",
    "instance_type",
    "max_concurrent_runs",
    "webhook_url",
    "container_registry_id",
    "image_pull_policy",
)

IDEMPOTENCY_WINDOW_MS = 24 * 3600 * 1000


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    """A uniqueness or state rule was broken; the message says which, naming the field."""


@dataclass
class _Pending:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


class _Connection:
    """One aiosqlite connection (one thread) and the operations queued for it:
    all reads, or (`writes`) all writes."""

    def __init__(self, name: str, *, writes: bool) -> None:
        self.name = name
        self.writes = writes
        self.db: aiosqlite.Connection | None = None
        self._queue: list[_Pending] = []
        self._turns: asyncio.Task[None] | None = None
        self._closing = threading.Event()  # read on the thread: stop waiting for locks

    async def open(self, path: Path) -> None:
        db = aiosqlite.connect(path, isolation_level=None)
        # aiosqlite 0.22 makes its (non-daemon) thread in Connection() and starts it
        # on the first await. As a daemon thread it cannot keep the process alive
        # when a close is cut short; its name says which one hung.
        db._thread.daemon = True
        db._thread.name = f"runnerd-{self.name}"
        self.db = await db
        self.db.row_factory = sqlite3.Row

    async def close(self, wait_seconds: float | None = None) -> None:
        """Finish the operations in flight, waiting at most `wait_seconds`; past
        that, abort them (their callers get StoreError) and close."""
        if self._turns is not None:
            turns = self._turns
            done, _ = await asyncio.wait({turns}, timeout=wait_seconds)
            if not done:
                self._closing.set()  # a write waiting for a lock gives up
                if self.db is not None:
                    with contextlib.suppress(ValueError, sqlite3.Error):
                        self.db._conn.interrupt()  # a long statement stops (thread-safe)
                turns.cancel()
                await asyncio.gather(turns, return_exceptions=True)
        if self.db is not None:
            db, self.db = self.db, None
            await db.close()

    async def alone(self, fn: Op[T]) -> T:
        """Run `fn(connection)` on the connection's thread, by itself."""
        db = self.db
        if db is None:
            raise StoreError("store is not open")
        # aiosqlite runs each call as one function on its thread; `_execute` hands
        # it ours, so a whole operation costs one hop instead of one per statement.
        return await db._execute(fn, db._conn)  # type: ignore[no-any-return]

    async def submit(self, fn: Op[T]) -> T:
        if self.db is None:
            raise StoreError("store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(fn, future))
        if self._turns is None:
            self._turns = asyncio.create_task(self._take_turns(), name=f"runnerd-{self.name}")
        return await future

    async def _take_turns(self) -> None:
        """Hand everything queued to the thread, one batch per turn, until the
        queue is empty."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                ops = [p.fn for p in batch]
                try:
                    if self.writes:
                        # Both lambdas are awaited in this iteration: binding `ops` late is safe.
                        closing = self._closing
                        outcomes = await self.alone(lambda db: _write_batch(db, ops, closing))  # noqa: B023
                    else:
                        outcomes = await self.alone(lambda db: _read_batch(db, ops))  # noqa: B023
                except BaseException as e:  # the COMMIT failed, or the store was closed
                    error = e if isinstance(e, Exception) else StoreError("store closed")
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(error)
                    if not isinstance(e, Exception):
                        raise
                    continue
                for p, (ok, value) in zip(batch, outcomes, strict=True):
                    if p.future.done():  # its caller went away; the work is done anyway
                        continue
                    if ok:
                        p.future.set_result(value)
                    else:
                        p.future.set_exception(value)
        finally:
            self._turns = None
            for p in self._queue:  # only when cancelled: nobody will run them
                if not p.future.done():
                    p.future.set_exception(StoreError("store closed"))
            self._queue = []


class Store:
    def __init__(self, path: Path, secret_key_file: Path | None = None) -> None:
        self.path = path
        self.secret_key_file = secret_key_file or path.parent / "secret.key"
        self._box: SecretBox | None = None
        self._writer = _Connection("store-writer", writes=True)
        self._reader = _Connection("store-reader", writes=False)
        self._lookups: sqlite3.Connection | None = None  # on the event loop's thread
        # Called with each run that reached its final status, after the commit.
        self.on_run_completed: list[Callable[[Run], None]] = []

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._writer.open(self.path)
            await self._writer.alone(_prepare)
            await self._reader.open(self.path)
            await self._reader.alone(_prepare_reader)
            self._lookups = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            self._lookups.row_factory = sqlite3.Row
            _prepare_reader(self._lookups, busy_timeout_ms=0)
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
        row = await self._read(
            lambda db: db.execute("SELECT value FROM meta WHERE key = 'secret_check'").fetchone()
        )
        box = SecretBox(load_key(self.secret_key_file, create=row is None))
        if row is not None:
            if not box.matches(row["value"]):
                raise SecretKeyError(
                    f"the secret key in {self.secret_key_file} is not the key this database "
                    "was encrypted with; restore the original key file from your backup"
                )
            self._box = box
            return

        def encrypt_plain_values(db: sqlite3.Connection) -> None:
            for table, column in (("runner_env_variables", "env_val"), ("runs", "env")):
                rows = db.execute(f"SELECT id, {column} FROM {table}").fetchall()
                db.executemany(
                    f"UPDATE {table} SET {column} = ? WHERE id = ?",
                    [(box.encrypt(v), i) for i, v in rows if not v.startswith(CRYPTO_PREFIX)],
                )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('secret_check', ?)", (box.check_value(),)
            )

        await self._write(encrypt_plain_values)
        self._box = box

    async def close(self, wait_seconds: float | None = None) -> None:
        """Finish what is in flight (at most `wait_seconds`, then abort it) and
        close every connection."""
        self.on_run_completed.clear()  # its listeners hold objects that hold the store
        if self._lookups is not None:
            db, self._lookups = self._lookups, None
            db.close()
        outcomes = await asyncio.gather(
            self._reader.close(wait_seconds),
            self._writer.close(wait_seconds),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- operations on the database thread ------------------------------------

    async def _read(self, fn: Op[T]) -> T:
        """`fn` runs inside a read transaction on the reader."""
        return await self._reader.submit(fn)

    async def _write(self, fn: Op[T]) -> T:
        """`fn` runs inside a write transaction; its result is returned only after
        that transaction is committed. An exception from it undoes its writes."""
        return await self._writer.submit(fn)

    async def _lookup(self, fn: Op[T], *, snapshot: bool = True) -> T:
        """A bounded read by index, right here on the event loop's thread (see the
        module's docstring); on the reader when SQLite is busy. `snapshot`: in one
        read transaction (not needed for a single statement, which is its own)."""
        db = self._lookups
        if db is None:
            raise StoreError("store is not open")
        try:
            if not snapshot:
                return fn(db)
            db.execute("BEGIN")
            try:
                return fn(db)
            finally:
                db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        return await self._read(fn)

    async def _lookup_one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        params = tuple(params)

        def one(db: sqlite3.Connection) -> sqlite3.Row | None:
            rows = db.execute(sql, params).fetchall()  # to the end: the statement is done
            return rows[0] if rows else None

        return await self._lookup(one, snapshot=False)

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        params = tuple(params)
        return await self._read(lambda db: db.execute(sql, params).fetchall())

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        params = tuple(params)
        return await self._read(lambda db: db.execute(sql, params).fetchone())

    async def daemon_id(self) -> str:
        row = await self._one("SELECT value FROM meta WHERE key = 'daemon_id'")
        assert row is not None
        return str(row["value"])

    # -- API keys -----------------------------------------------------------

    async def create_api_key(self, name: str, scope: Scope, secret_hash: str) -> ApiKey:
        key = ApiKey(
            id=str(uuid.uuid4()), name=name, scope=scope, created_at=now_ms(), last_used_at=None
        )

        def insert(db: sqlite3.Connection) -> None:
            with _conflict_as(f"name: an API key named {name!r} already exists"):
                db.execute(
                    "INSERT INTO api_keys (id, name, scope, secret_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key.id, name, scope.value, secret_hash, key.created_at),
                )

        await self._write(insert)
        return key

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._all("SELECT * FROM api_keys ORDER BY created_at, name")
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, name: str) -> bool:
        return await self._write(
            lambda db: db.execute("DELETE FROM api_keys WHERE name = ?", (name,)).rowcount > 0
        )

    async def api_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = await self._lookup_one("SELECT * FROM api_keys WHERE secret_hash = ?", (secret_hash,))
        return _api_key(row) if row else None

    # -- runners ------------------------------------------------------------

    async def create_runner(self, fields: dict[str, Any], env: list[tuple[str, str]]) -> Runner:
        now = now_ms()
        runner_id = str(uuid.uuid4())
        values = [_runner_value(c, fields.get(c)) for c in RUNNER_COLUMNS]
        box = self.box

        def insert(db: sqlite3.Connection) -> Runner:
            with _runner_rules(fields):
                db.execute(
                    f"INSERT INTO runners (id, {', '.join(RUNNER_COLUMNS)}, created_at, updated_at)"
                    f" VALUES (?, {', '.join('?' for _ in RUNNER_COLUMNS)}, ?, ?)",
                    (runner_id, *values, now, now),
                )
            _insert_env(db, box, runner_id, env, now)
            return _runner(_get(db, "runners", runner_id))

        return await self._write(insert)

    async def get_runner(self, runner_id: str) -> Runner | None:
        row = await self._lookup_one("SELECT * FROM runners WHERE id = ?", (runner_id,))
        return _runner(row) if row else None

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
            runner = _runner(row)
            env = [
                _env(r, box)
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

        return await self._lookup(read)

    async def list_runners(self) -> list[Runner]:
        rows = await self._all("SELECT * FROM runners ORDER BY created_at, name")
        return [_runner(r) for r in rows]

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
            if env is not None:
                db.execute("DELETE FROM runner_env_variables WHERE runner_id = ?", (runner_id,))
                _insert_env(db, box, runner_id, env, now)
            return _runner(_get(db, "runners", runner_id))

        return await self._write(update)

    async def delete_runner(self, runner_id: str) -> list[str]:
        """Delete a runner with its env variables and runs; returns the run ids.
        Refused while it has pending or running runs."""

        def delete(db: sqlite3.Connection) -> list[str]:
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
            return run_ids

        return await self._write(delete)

    # -- runner env variables -----------------------------------------------

    async def list_env(self, runner_id: str) -> list[EnvVariable]:
        rows = await self._all(
            "SELECT * FROM runner_env_variables WHERE runner_id = ? ORDER BY env_key", (runner_id,)
        )
        return [self._env_row(r) for r in rows]

    async def get_env(self, runner_id: str, env_id: str) -> EnvVariable | None:
        row = await self._lookup_one(
            "SELECT * FROM runner_env_variables WHERE runner_id = ? AND id = ?", (runner_id, env_id)
        )
        return self._env_row(row) if row else None

    async def create_env(self, runner_id: str, env_key: str, env_val: str) -> EnvVariable:
        now = now_ms()
        env_id = str(uuid.uuid4())
        sealed = self.box.encrypt(env_val)

        def insert(db: sqlite3.Connection) -> None:
            with _conflict_as(f"env_key: {env_key!r} is already set on this runner"):
                db.execute(
                    "INSERT INTO runner_env_variables"
                    " (id, runner_id, env_key, env_val, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (env_id, runner_id, env_key, sealed, now, now),
                )

        await self._write(insert)
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
            with _conflict_as(f"env_key: {fields.get('env_key')!r} is already set on this runner"):
                row = db.execute(
                    f"UPDATE runner_env_variables SET {sets}updated_at = ?"
                    " WHERE runner_id = ? AND id = ? RETURNING *",
                    (*values, now_ms(), runner_id, env_id),
                ).fetchone()
            if row is None:
                raise NotFound(env_id)
            return _env(row, box)

        return await self._write(update)

    async def delete_env(self, runner_id: str, env_id: str) -> bool:
        return await self._write(
            lambda db: (
                db.execute(
                    "DELETE FROM runner_env_variables WHERE runner_id = ? AND id = ?",
                    (runner_id, env_id),
                ).rowcount
                > 0
            )
        )

    # -- runs ---------------------------------------------------------------

    async def create_run(
        self,
        runner: Runner,
        env: list[tuple[str, str]],
        cpu: float,
        mem: int,
        pids: int,
        idempotency_key: str | None = None,
        image: str | None = None,
    ) -> tuple[Run, bool]:
        """Queue a run of `runner` with the merged `env` and the instance type's
        limits; (run, True). With an `idempotency_key` already used for this runner
        in the last 24 hours: (that first run, False) and nothing is queued. The
        UNIQUE index decides, so concurrent requests cannot both insert."""
        now = now_ms()
        run = Run(
            id=str(uuid.uuid4()),
            runner_id=runner.id,
            status=Status.PENDING,
            image=image or runner.image,
            command=runner.run_command,
            argv=runner.argv,
            entrypoint=runner.entrypoint,
            env=list(env),
            timeout_seconds=runner.timeout_seconds,
            instance_type=runner.instance_type,
            cpu=cpu,
            mem=mem,
            pids=pids,
            exit_code=None,
            failure_reason=None,
            error=None,
            container_id=None,
            started_at=None,
            completed_at=None,
            created_at=now,
            updated_at=now,
            webhook_url=runner.webhook_url,
            container_registry_id=runner.container_registry_id,
            image_pull_policy=runner.image_pull_policy or "if_not_present",
        )
        sealed_env = self.box.encrypt(json.dumps(env))
        box = self.box

        def insert(db: sqlite3.Connection) -> tuple[Run, bool]:
            if idempotency_key is not None:
                # A key older than the window is free again.
                db.execute(
                    "UPDATE runs SET idempotency_key = NULL WHERE runner_id = ?"
                    " AND idempotency_key = ? AND created_at < ?",
                    (runner.id, idempotency_key, now - IDEMPOTENCY_WINDOW_MS),
                )
            row = db.execute(
                "INSERT INTO runs (id, runner_id, status, image, command, argv, entrypoint,"
                " env, timeout_seconds, instance_type, cpu, mem, pids, idempotency_key,"
                " webhook_url, container_registry_id, image_pull_policy, created_at, updated_at)"
                " VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (runner_id, idempotency_key)"
                " WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING seq",
                (
                    run.id,
                    run.runner_id,
                    run.image,
                    run.command,
                    _json_or_null(run.argv),
                    run.entrypoint,
                    sealed_env,
                    run.timeout_seconds,
                    run.instance_type,
                    cpu,
                    mem,
                    pids,
                    idempotency_key,
                    run.webhook_url,
                    run.container_registry_id,
                    run.image_pull_policy,
                    now,
                    now,
                ),
            ).fetchone()
            if row is not None:
                run.seq = row[0]
                return run, True
            first = db.execute(
                "SELECT * FROM runs WHERE runner_id = ? AND idempotency_key = ?",
                (runner.id, idempotency_key),
            ).fetchone()
            assert first is not None
            return _run(first, box), False

        return await self._write(insert)

    async def get_run(self, run_id: str, runner_id: str | None = None) -> Run | None:
        if runner_id is None:
            row = await self._lookup_one("SELECT * FROM runs WHERE id = ?", (run_id,))
        else:
            row = await self._lookup_one(
                "SELECT * FROM runs WHERE id = ? AND runner_id = ?", (run_id, runner_id)
            )
        return self._run_row(row) if row else None

    async def list_runs(
        self, runner_id: str, *, limit: int, status: Status | None = None, before: str | None = None
    ) -> list[Run] | None:
        """Newest first. `before` is a run id of this runner: only runs queued
        before it; None when there is no such run."""
        where = ["runner_id = ?"]
        params: list[Any] = [runner_id]
        if status is not None:
            where.append("status = ?")
            params.append(status.value)

        def read(db: sqlite3.Connection) -> list[sqlite3.Row] | None:
            if before is not None:
                row = db.execute(
                    "SELECT seq FROM runs WHERE id = ? AND runner_id = ?", (before, runner_id)
                ).fetchone()
                if row is None:
                    return None
                where.append("seq < ?")
                params.append(row[0])
            return db.execute(
                f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
                (*params, limit),
            ).fetchall()

        rows = await self._lookup(read)  # one page: at most `limit` rows, on an index
        return None if rows is None else [self._run_row(r) for r in rows]

    async def next_pending(self, in_flight: list[str] | None = None) -> Run | None:
        """The oldest pending run that may start now: not already in flight (held by
        the scheduler), and of a runner below its own `max_concurrent_runs`, counting
        its running runs and its runs in flight."""
        in_flight = in_flight or []
        marks = ", ".join("?" for _ in in_flight)  # SQLite takes an empty IN ()
        # `status IN ('pending', 'running')` repeats the partial index's own WHERE:
        # without it SQLite does not use `runs_active` and scans the whole table.
        # A runner's count is its running runs (on the index) plus its in-flight
        # runs not yet running (looked up by id), so each run counts once.
        row = await self._one(
            "SELECT r.* FROM runs r JOIN runners n ON n.id = r.runner_id"
            " WHERE r.status = 'pending' AND r.status IN ('pending', 'running')"
            f" AND r.id NOT IN ({marks})"
            " AND (n.max_concurrent_runs IS NULL OR n.max_concurrent_runs > ("
            "   SELECT count(*) FROM runs x WHERE x.runner_id = r.runner_id"
            "   AND x.status = 'running')"
            f" + (SELECT count(*) FROM runs y WHERE y.id IN ({marks})"
            "   AND y.runner_id = r.runner_id AND y.status <> 'running'))"
            " ORDER BY r.seq LIMIT 1",
            [*in_flight, *in_flight],
        )
        return self._run_row(row) if row else None

    async def cancel_pending(self, run_id: str, error: str) -> Run | None:
        """Pending → failed/canceled at once; None when it is no longer pending."""
        now = now_ms()
        row = await self._write(
            lambda db: db.execute(
                "UPDATE runs SET status = 'failed', failure_reason = 'canceled', error = ?,"
                f" completed_at = ?, updated_at = ?, {_WEBHOOK_ON_COMPLETION}"
                " WHERE id = ? AND status = 'pending' RETURNING *",
                (error, now, now, run_id),
            ).fetchone()
        )
        if row is None:
            return None
        run = self._run_row(row)
        self._completed(run)
        return run

    async def mark_running(self, run_id: str, container_id: str, started_at: int) -> Run:
        def update(db: sqlite3.Connection) -> sqlite3.Row:
            row = db.execute(
                "UPDATE runs SET status = 'running', container_id = ?, started_at = ?,"
                " updated_at = ? WHERE id = ? AND status = 'pending' RETURNING *",
                (container_id, started_at, started_at, run_id),
            ).fetchone()
            if row is None:
                raise Conflict(f"run {run_id} is no longer pending")
            return row

        return self._run_row(await self._write(update))

    async def finish_run(
        self,
        run_id: str,
        status: Status,
        *,
        exit_code: int | None,
        failure_reason: FailureReason | None,
        error: str | None,
        completed_at: int | None = None,
    ) -> Run:
        """Move a pending or running run to its final status; never backwards."""
        assert status in (Status.SUCCEEDED, Status.FAILED)
        completed_at = completed_at or now_ms()

        def update(db: sqlite3.Connection) -> sqlite3.Row:
            row = db.execute(
                "UPDATE runs SET status = ?, exit_code = ?, failure_reason = ?, error = ?,"
                f" completed_at = ?, updated_at = ?, {_WEBHOOK_ON_COMPLETION}"
                " WHERE id = ? AND status IN (?, ?) RETURNING *",
                (
                    status.value,
                    exit_code,
                    failure_reason.value if failure_reason else None,
                    error,
                    completed_at,
                    completed_at,
                    run_id,
                    *[s.value for s in ACTIVE_STATUSES],
                ),
            ).fetchone()
            if row is None:
                raise Conflict(f"run {run_id} has already completed")
            return row

        run = self._run_row(await self._write(update))
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
        sealed = self.box.encrypt(fields["password"])

        def insert(db: sqlite3.Connection) -> ContainerRegistry:
            with _conflict_as(
                f"name: a container registry named {fields['name']!r} already exists"
            ):
                db.execute(
                    "INSERT INTO container_registries (id, name, host, username, password,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        registry_id,
                        fields["name"],
                        fields["host"],
                        fields["username"],
                        sealed,
                        now,
                        now,
                    ),
                )
            return _registry(_get(db, "container_registries", registry_id))

        return await self._write(insert)

    async def get_registry(self, registry_id: str) -> ContainerRegistry | None:
        row = await self._lookup_one(
            "SELECT * FROM container_registries WHERE id = ?", (registry_id,)
        )
        return _registry(row) if row else None

    async def list_registries(self) -> list[ContainerRegistry]:
        rows = await self._all("SELECT * FROM container_registries ORDER BY created_at, name")
        return [_registry(r) for r in rows]

    async def registry_credentials(self, registry_id: str) -> tuple[str, str, str] | None:
        """(host, username, password) for a pull; the only way the password leaves."""
        row = await self._one(
            "SELECT host, username, password FROM container_registries WHERE id = ?", (registry_id,)
        )
        if row is None:
            return None
        return row["host"], row["username"], self.box.decrypt(row["password"])

    async def update_registry(self, registry_id: str, fields: dict[str, str]) -> ContainerRegistry:
        """Set the given fields. A new `host` or `username` needs the `password` in
        the same call (else Conflict naming it): the stored password must never
        go to another host, or as another user. Checked in the write itself, so
        no concurrent change slips between the check and the update."""
        columns = [c for c in ("name", "host", "username", "password") if c in fields]
        values = [self.box.encrypt(fields[c]) if c == "password" else fields[c] for c in columns]

        def update(db: sqlite3.Connection) -> ContainerRegistry:
            if "password" not in fields and ("host" in fields or "username" in fields):
                current = db.execute(
                    "SELECT host, username FROM container_registries WHERE id = ?", (registry_id,)
                ).fetchone()
                if current is None:
                    raise NotFound(registry_id)
                changed = [
                    c for c in ("host", "username") if c in fields and fields[c] != current[c]
                ]
                if changed:
                    raise Conflict(
                        f"password: required when {' and '.join(changed)} changes: the "
                        "stored password is never sent to another host or as another user"
                    )
            sets = "".join(f"{c} = ?, " for c in columns)
            with _conflict_as(
                f"name: a container registry named {fields.get('name')!r} already exists"
            ):
                row = db.execute(
                    f"UPDATE container_registries SET {sets}updated_at = ? WHERE id = ?"
                    " RETURNING *",
                    (*values, now_ms(), registry_id),
                ).fetchone()
            if row is None:
                raise NotFound(registry_id)
            return _registry(row)

        return await self._write(update)

    async def delete_registry(self, registry_id: str) -> None:
        """Refused (Conflict) while a runner uses it."""

        def delete(db: sqlite3.Connection) -> None:
            users = db.execute(
                "SELECT count(*) FROM runners WHERE container_registry_id = ?", (registry_id,)
            ).fetchone()[0]
            if users > 0:
                raise Conflict("the container registry is used by a runner")
            if (
                db.execute("DELETE FROM container_registries WHERE id = ?", (registry_id,)).rowcount
                == 0
            ):
                raise NotFound(registry_id)

        await self._write(delete)

    async def set_warmed(self, runner_id: str, warmed_at: int) -> Runner:
        def update(db: sqlite3.Connection) -> Runner:
            row = db.execute(
                "UPDATE runners SET warmed_at = ? WHERE id = ? RETURNING *", (warmed_at, runner_id)
            ).fetchone()
            if row is None:
                raise NotFound(runner_id)
            return _runner(row)

        return await self._write(update)

    # -- webhooks -------------------------------------------------------------

    async def pending_webhooks(self, limit: int, exclude: list[str]) -> list[Run]:
        """Completed runs whose webhook is still to be delivered, oldest first."""
        marks = ", ".join("?" for _ in exclude)
        rows = await self._all(
            f"SELECT * FROM runs WHERE webhook_status = 'pending' AND id NOT IN ({marks})"
            " ORDER BY completed_at LIMIT ?",
            (*exclude, limit),
        )
        return [self._run_row(r) for r in rows]

    async def set_webhook_status(self, run_id: str, status: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE runs SET webhook_status = ? WHERE id = ?", (status, run_id)
            )
        )

    # -- retention --------------------------------------------------------------

    async def delete_expired_runs(
        self, *, completed_before: int | None, keep_per_runner: int | None, batch: int = 500
    ) -> list[str]:
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
                "  FROM runs WHERE status IN ('succeeded', 'failed')) WHERE newer > ?)"
            )
            params.append(keep_per_runner)
        if not where:
            return []

        def delete(db: sqlite3.Connection) -> list[str]:
            ids = [
                r[0]
                for r in db.execute(
                    f"SELECT id FROM runs WHERE {' OR '.join(where)} LIMIT ?", (*params, batch)
                )
            ]
            db.executemany(
                "DELETE FROM runs WHERE id = ? AND status IN ('succeeded', 'failed')",
                [(i,) for i in ids],
            )
            return ids

        return await self._write(delete)

    async def count_active(self) -> dict[str, int]:
        """How many runs are pending and running now."""
        rows = await self._all(
            "SELECT status, count(*) AS n FROM runs WHERE status IN ('pending', 'running')"
            " GROUP BY status"
        )
        counts = {"pending": 0, "running": 0}
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    async def runs_with_status(self, status: Status) -> list[Run]:
        active = " AND status IN ('pending', 'running')" if status in ACTIVE_STATUSES else ""
        rows = await self._all(
            f"SELECT * FROM runs WHERE status = ?{active} ORDER BY seq", (status.value,)
        )
        return [self._run_row(r) for r in rows]


# -- on the database thread --------------------------------------------------------


def _prepare(db: sqlite3.Connection) -> None:
    """Connection settings, then the schema: made, or migrated to this version."""
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = OFF")  # for the migrations (v5 rebuilds a table)
    db.execute(f"PRAGMA busy_timeout = {_LOCK_SLICE_MS}")  # _begin_write waits longer

    def migrate(db: sqlite3.Connection) -> None:
        for statement in _statements(SCHEMA):
            db.execute(statement)
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database {db_path(db)} is from a newer runnerd (schema "
                f"{version}, this one knows {SCHEMA_VERSION}); upgrade runnerd"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                db.execute(statement)
        if (
            version < SCHEMA_VERSION
            and (broken := db.execute("PRAGMA foreign_key_check").fetchone()) is not None
        ):
            raise StoreError(
                f"the database {db_path(db)} has a {broken[0]} row that refers "
                f"to a missing {broken[2]} row; nothing was migrated"
            )
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('daemon_id', ?)", (str(uuid.uuid4()),)
        )

    [(ok, error)] = _write_batch(db, [migrate])
    if not ok:
        raise error
    db.execute("PRAGMA foreign_keys = ON")


def _prepare_reader(db: sqlite3.Connection, busy_timeout_ms: int = 10000) -> None:
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db.execute("PRAGMA query_only = ON")


def db_path(db: sqlite3.Connection) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "?"


def _read_batch(
    db: sqlite3.Connection, ops: list[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """Run one turn's reads in one read transaction (one snapshot). Returns
    (True, result) or (False, exception) per operation, in order."""
    db.execute("BEGIN")
    try:
        return [_attempt(fn, db) for fn in ops]
    finally:
        db.execute("COMMIT")  # ends the read snapshot; nothing to write


def _begin_write(db: sqlite3.Connection, closing: threading.Event | None) -> None:
    """BEGIN IMMEDIATE, waiting up to WRITE_LOCK_WAIT_SECONDS for another
    process's write lock, one busy_timeout slice at a time; StoreError at once
    when the store is `closing`."""
    deadline = time.monotonic() + WRITE_LOCK_WAIT_SECONDS
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        if closing is not None and closing.is_set():
            raise StoreError("store closed while waiting for another process's write lock")


def _write_batch(
    db: sqlite3.Connection,
    ops: list[Callable[[sqlite3.Connection], Any]],
    closing: threading.Event | None = None,
) -> list[tuple[bool, Any]]:
    """Run one turn's writes in one write transaction, each under its own
    savepoint. Returns (True, result) or (False, exception) per operation, in
    order; raises only when the transaction as a whole fails (then no write of
    it happened)."""
    _begin_write(db, closing)
    try:
        if len(ops) == 1:
            outcomes = [_attempt(ops[0], db)]
            if not outcomes[0][0]:
                db.execute("ROLLBACK")
                return outcomes
        else:
            outcomes = []
            for fn in ops:
                db.execute("SAVEPOINT op")
                outcomes.append(_attempt(fn, db))
                if not outcomes[-1][0]:
                    db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


def _attempt(fn: Callable[[sqlite3.Connection], Any], db: sqlite3.Connection) -> tuple[bool, Any]:
    try:
        return True, fn(db)
    except Exception as e:  # the caller gets it; the batch goes on
        return False, e


class _conflict_as:
    """Turn a broken rule in its block into Conflict with the message given for its
    kind: uniqueness (`message`), a foreign key, a CHECK. Any other stays as it is."""

    def __init__(
        self, message: str, *, foreign_key: str | None = None, check: str | None = None
    ) -> None:
        self.messages = {
            sqlite3.SQLITE_CONSTRAINT_UNIQUE: message,
            sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY: foreign_key,
            sqlite3.SQLITE_CONSTRAINT_CHECK: check,
        }

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> bool:
        if isinstance(error, sqlite3.IntegrityError):
            message = self.messages.get(error.sqlite_errorcode)
            if message is not None:
                raise Conflict(message) from None
        return False


def _runner_rules(fields: dict[str, Any]) -> _conflict_as:
    """The rules a runner write can break, each named by its field. The API checks
    them first; these catch what changed between its check and the write."""
    return _conflict_as(
        f"name: a runner named {fields.get('name')!r} already exists",
        foreign_key=f"container_registry_id: no container registry "
        f"{fields.get('container_registry_id')} (it was deleted meanwhile)",
        check="run_command and argv cannot both be set: the runner was changed meanwhile; "
        "set the other one to null in the same request",
    )


def _get(db: sqlite3.Connection, table: str, row_id: str) -> sqlite3.Row:
    row = db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchone()
    assert row is not None, f"{table} {row_id} vanished inside its own transaction"
    return row


# -- rows → models --------------------------------------------------------------


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _insert_env(
    db: sqlite3.Connection, box: SecretBox, runner_id: str, env: list[tuple[str, str]], now: int
) -> None:
    with _conflict_as("env_variables: an env_key appears twice"):
        db.executemany(
            "INSERT INTO runner_env_variables (id, runner_id, env_key, env_val, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(str(uuid.uuid4()), runner_id, k, box.encrypt(v), now, now) for k, v in env],
        )


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _runner_value(column: str, value: Any) -> Any:
    return _json_or_null(value) if column == "argv" else value


def _api_key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scope=Scope(row["scope"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )


def _registry(row: sqlite3.Row) -> ContainerRegistry:
    return ContainerRegistry(
        id=row["id"],
        name=row["name"],
        host=row["host"],
        username=row["username"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _runner(row: sqlite3.Row) -> Runner:
    return Runner(
        id=row["id"],
        name=row["name"],
        image_name=row["image_name"],
        image_tag=row["image_tag"],
        run_command=row["run_command"],
        argv=json.loads(row["argv"]) if row["argv"] is not None else None,
        entrypoint=row["entrypoint"],
        timeout_seconds=row["timeout_seconds"],
        instance_type=row["instance_type"],
        max_concurrent_runs=row["max_concurrent_runs"],
        webhook_url=row["webhook_url"],
        container_registry_id=row["container_registry_id"],
        image_pull_policy=row["image_pull_policy"],
        warmed_at=row["warmed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _env(row: sqlite3.Row, box: SecretBox) -> EnvVariable:
    return EnvVariable(
        id=row["id"],
        runner_id=row["runner_id"],
        env_key=row["env_key"],
        env_val=box.decrypt(row["env_val"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _run(row: sqlite3.Row, box: SecretBox) -> Run:
    return Run(
        seq=row["seq"],
        id=row["id"],
        runner_id=row["runner_id"],
        status=Status(row["status"]),
        image=row["image"],
        command=row["command"],
        argv=json.loads(row["argv"]) if row["argv"] is not None else None,
        entrypoint=row["entrypoint"],
        env=SealedEnv(box, row["env"]),
        timeout_seconds=row["timeout_seconds"],
        instance_type=row["instance_type"],
        cpu=row["cpu"],
        mem=row["mem"],
        pids=row["pids"],
        exit_code=row["exit_code"],
        failure_reason=FailureReason(row["failure_reason"]) if row["failure_reason"] else None,
        error=row["error"],
        container_id=row["container_id"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        webhook_url=row["webhook_url"],
        webhook_status=row["webhook_status"],
        container_registry_id=row["container_registry_id"],
        image_pull_policy=row["image_pull_policy"] or "if_not_present",
    )


class SealedEnv(Sequence[tuple[str, str]]):
    """A run's env as stored (encrypted), decrypted on first use: only the
    executor needs the values, so listing and polling runs never pay for it."""

    def __init__(self, box: SecretBox, sealed: str) -> None:
        self._box = box
        self._sealed = sealed
        self._pairs: list[tuple[str, str]] | None = None

    def _open(self) -> list[tuple[str, str]]:
        if self._pairs is None:
            self._pairs = [(k, v) for k, v in json.loads(self._box.decrypt(self._sealed))]
        return self._pairs

    def __getitem__(self, index: Any) -> Any:
        return self._open()[index]

    def __len__(self) -> int:
        return len(self._open())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._open())

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, Sequence) else other)

    def __repr__(self) -> str:
        return f"SealedEnv({len(self)} variables)"  # never the values
