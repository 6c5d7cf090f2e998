"""The connections to the one SQLite file (WAL), and group commit.

Three connections:

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
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from . import _aiosqlite_shim
from .errors import StoreError

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], T]

# A write waits this long for another process's write lock (`runnerd keys create`,
# a backup), in slices this short so that a closing store stops waiting at once:
# SQLite's own busy wait cannot be interrupted.
WRITE_LOCK_WAIT_SECONDS = 10.0
LOCK_SLICE_MS = 100


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
        self.db = await _aiosqlite_shim.connect(path, f"runnerd-{self.name}")
        self.db.row_factory = sqlite3.Row

    async def close(self, wait_seconds: float | None = None) -> None:
        """Finish the operations in flight, waiting at most `wait_seconds`; past
        that, abort them (their callers get StoreError) and close."""
        await self.finish(wait_seconds)
        await self.shut()

    async def finish(self, wait_seconds: float | None = None) -> None:
        """The first half of close(): the operations in flight end or are aborted."""
        if self._turns is not None:
            turns = self._turns
            done, _ = await asyncio.wait({turns}, timeout=wait_seconds)
            if not done:
                self._closing.set()  # a write waiting for a lock gives up
                if self.db is not None:
                    with contextlib.suppress(ValueError, sqlite3.Error):
                        _aiosqlite_shim.interrupt(self.db)  # a long statement stops
                turns.cancel()
                await asyncio.gather(turns, return_exceptions=True)

    async def shut(self) -> None:
        """The second half of close(): the SQLite connection closes."""
        if self.db is not None:
            db, self.db = self.db, None
            await db.close()

    async def alone(self, fn: Op[T]) -> T:
        """Run `fn(connection)` on the connection's thread, by itself."""
        db = self.db
        if db is None:
            raise StoreError("store is not open")
        return await _aiosqlite_shim.run(db, fn)

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
                        outcomes = await self.alone(lambda db: write_batch(db, ops, closing))  # noqa: B023
                    else:
                        outcomes = await self.alone(lambda db: read_batch(db, ops))  # noqa: B023
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


class Database:
    """The three connections, and the four ways an operation runs on them."""

    def __init__(self) -> None:
        self.writer = _Connection("store-writer", writes=True)
        self.reader = _Connection("store-reader", writes=False)
        self.lookups: sqlite3.Connection | None = None  # on the event loop's thread

    async def open(self, path: Path, prepare: Op[None]) -> None:
        """Open the connections; `prepare` runs first, alone on the writer (the
        schema: made or migrated)."""
        await self.writer.open(path)
        await self.writer.alone(prepare)
        await self.reader.open(path)
        await self.reader.alone(prepare_reader)
        self.lookups = sqlite3.connect(path, timeout=0, isolation_level=None)
        self.lookups.row_factory = sqlite3.Row
        prepare_reader(self.lookups, busy_timeout_ms=0)

    async def close(self, wait_seconds: float | None = None) -> None:
        if self.lookups is not None:
            db, self.lookups = self.lookups, None
            db.close()
        outcomes: list[BaseException | None] = [
            *await asyncio.gather(
                self.reader.finish(wait_seconds),
                self.writer.finish(wait_seconds),
                return_exceptions=True,
            )
        ]
        # One after the other, the writer last: the last connection to close
        # checkpoints the WAL and deletes it, but two closing at the same moment on
        # two threads can each see the other still open, and both leave it.
        for connection in (self.reader, self.writer):
            try:
                await connection.shut()
            except BaseException as e:  # the other still closes
                outcomes.append(e)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def read(self, fn: Op[T]) -> T:
        """`fn` runs inside a read transaction on the reader."""
        return await self.reader.submit(fn)

    async def write(self, fn: Op[T]) -> T:
        """`fn` runs inside a write transaction; its result is returned only after
        that transaction is committed. An exception from it undoes its writes."""
        return await self.writer.submit(fn)

    async def lookup(self, fn: Op[T], *, snapshot: bool = True) -> T:
        """A bounded read by index, right here on the event loop's thread (see the
        module's docstring); on the reader when SQLite is busy. `snapshot`: in one
        read transaction (not needed for a single statement, which is its own)."""
        db = self.lookups
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
        return await self.read(fn)

    async def lookup_one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        params = tuple(params)

        def one(db: sqlite3.Connection) -> sqlite3.Row | None:
            rows: list[sqlite3.Row] = db.execute(sql, params).fetchall()  # the statement ends
            return rows[0] if rows else None

        return await self.lookup(one, snapshot=False)

    async def all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        params = tuple(params)

        def rows(db: sqlite3.Connection) -> list[sqlite3.Row]:
            return db.execute(sql, params).fetchall()

        return await self.read(rows)

    async def one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        params = tuple(params)

        def row(db: sqlite3.Connection) -> sqlite3.Row | None:
            found: sqlite3.Row | None = db.execute(sql, params).fetchone()
            return found

        return await self.read(row)


# -- on the database thread --------------------------------------------------------


def prepare_reader(db: sqlite3.Connection, busy_timeout_ms: int = 10000) -> None:
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db.execute("PRAGMA query_only = ON")


def read_batch(
    db: sqlite3.Connection, ops: list[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """Run one turn's reads in one read transaction (one snapshot). Returns
    (True, result) or (False, exception) per operation, in order."""
    db.execute("BEGIN")
    try:
        return [_attempt(fn, db) for fn in ops]
    finally:
        db.execute("COMMIT")  # ends the read snapshot; nothing to write


def begin_write(db: sqlite3.Connection, closing: threading.Event | None) -> None:
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


def write_batch(
    db: sqlite3.Connection,
    ops: list[Callable[[sqlite3.Connection], Any]],
    closing: threading.Event | None = None,
) -> list[tuple[bool, Any]]:
    """Run one turn's writes in one write transaction, each under its own
    savepoint. Returns (True, result) or (False, exception) per operation, in
    order; raises only when the transaction as a whole fails (then no write of
    it happened)."""
    begin_write(db, closing)
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
