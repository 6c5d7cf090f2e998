"""Which database errors pass, and trying a store operation again until it does.

The store lets sqlite3's own errors through. Some say the database cannot serve
for a while (locked past the busy timeout, disk full, an I/O error): the
background tasks back off and try again. Others say it is damaged (malformed,
not a database) or that runnerd has a bug: no retry fixes those.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger("runnerd")

T = TypeVar("T")

RETRY_FIRST = 0.5  # an operation the database refused is tried again after this,
RETRY_MAX = 30.0  # doubling up to this

_PASSING = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_NOMEM,
    }
)


def is_store_fault(e: BaseException) -> bool:
    """The database cannot serve now, but may again soon."""
    return (
        isinstance(e, sqlite3.OperationalError)
        and (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF in _PASSING
    )


def is_database_damaged(e: BaseException) -> bool:
    """The database failed in a way no retry fixes."""
    return isinstance(e, sqlite3.DatabaseError) and not is_store_fault(e)


async def retry_store(
    what: str,
    op: Callable[[], Awaitable[T]],
    logger: logging.Logger = log,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`op()`, tried again with back-off (a warning each time) while the database
    cannot serve: an outcome (a run's result, a webhook's delivery, a schedule's
    fire) must not be dropped because the disk was full or the database locked for
    a while. `sleep`: the back-off's (a test's clock)."""
    delay = RETRY_FIRST
    while True:
        try:
            return await op()
        except sqlite3.OperationalError as e:
            if not is_store_fault(e):
                raise
            logger.warning("%s: the database failed: %s; retrying in %.1f s", what, e, delay)
            await sleep(delay)
            delay = min(RETRY_MAX, delay * 2)
