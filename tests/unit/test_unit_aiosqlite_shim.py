"""Pins what runnerd takes from aiosqlite's private API (runnerd/store/_aiosqlite_shim.py):
a function runs whole on the connection's own (daemon, named) thread, in the order
given, its exceptions come back as they were raised, and a long statement can be
interrupted from the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiosqlite
import pytest

from runnerd.store import _aiosqlite_shim as shim


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await shim.connect(tmp_path / "shim.db", "runnerd-test-shim")
    try:
        yield connection
    finally:
        await connection.close()


async def test_a_function_runs_on_the_connection_s_daemon_thread_with_its_name(
    db: aiosqlite.Connection,
) -> None:
    def where(conn: sqlite3.Connection) -> tuple[str, bool, int]:
        thread = threading.current_thread()
        return thread.name, thread.daemon, conn.execute("SELECT 41 + 1").fetchone()[0]

    assert await shim.run(db, where) == ("runnerd-test-shim", True, 42)
    assert threading.current_thread().name != "runnerd-test-shim"


async def test_the_function_gets_the_connection_in_autocommit_mode(
    db: aiosqlite.Connection,
) -> None:
    assert await shim.run(db, lambda conn: conn.isolation_level) is None


async def test_an_exception_comes_back_as_raised(db: aiosqlite.Connection) -> None:
    class Broken(Exception):
        pass

    error = Broken("on the thread")

    def fail(conn: sqlite3.Connection) -> None:
        raise error

    with pytest.raises(Broken) as info:
        await shim.run(db, fail)
    assert info.value is error
    assert await shim.run(db, lambda conn: 1) == 1  # the thread survives it


async def test_functions_run_in_the_order_they_were_given(db: aiosqlite.Connection) -> None:
    seen: list[int] = []

    def step(i: int) -> Callable[[sqlite3.Connection], None]:
        def append(conn: sqlite3.Connection) -> None:
            seen.append(i)

        return append

    await asyncio.gather(*(shim.run(db, step(i)) for i in range(50)))
    assert seen == list(range(50))


async def test_interrupt_stops_a_long_statement_from_the_event_loop(
    db: aiosqlite.Connection,
) -> None:
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    )
    started = threading.Event()

    def long(conn: sqlite3.Connection) -> object:
        started.set()
        return conn.execute(endless).fetchone()

    task = asyncio.ensure_future(shim.run(db, long))
    assert await asyncio.to_thread(started.wait, 5.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not task.done() and loop.time() < deadline:  # until the statement is under way
        shim.interrupt(db)
        await asyncio.sleep(0.01)
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        await asyncio.wait_for(task, 5.0)


async def test_interrupt_on_a_closed_connection_raises_value_error(tmp_path: Path) -> None:
    connection = await shim.connect(tmp_path / "closed.db", "runnerd-test-closed")
    await connection.close()
    with pytest.raises(ValueError):
        shim.interrupt(connection)
