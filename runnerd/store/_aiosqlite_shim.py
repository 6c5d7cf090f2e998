"""The one place runnerd uses aiosqlite's private API (aiosqlite 0.22).

aiosqlite has no public way to run a function of ours on its connection's
thread, to name or demote that thread, or to interrupt a statement. Each is one
function here; tests/unit/test_unit_aiosqlite_shim.py pins what they do, so an
aiosqlite upgrade that changes them fails there, not in production.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

T = TypeVar("T")


def connect(path: Path, thread_name: str) -> aiosqlite.Connection:
    """An aiosqlite connection (to be awaited) in autocommit mode, whose thread
    is a daemon named `thread_name`.

    aiosqlite makes its (non-daemon) thread in Connection() and starts it on the
    first await. As a daemon thread it cannot keep the process alive when a
    close is cut short; its name says which one hung."""
    db = aiosqlite.connect(path, isolation_level=None)
    db._thread.daemon = True
    db._thread.name = thread_name
    return db


async def run(db: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn(connection)` on the connection's thread, after what is queued before
    it; its result or exception comes back here.

    aiosqlite runs each call as one function on its thread; `_execute` hands it
    ours, so a whole operation costs one hop instead of one per statement."""
    result: T = await db._execute(fn, db._conn)  # type: ignore[no-untyped-call]  # untyped upstream
    return result


def interrupt(db: aiosqlite.Connection) -> None:
    """Stop the statement running on the connection's thread (thread-safe);
    ValueError when the connection is not open."""
    db._conn.interrupt()
