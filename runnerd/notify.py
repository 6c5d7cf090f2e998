"""systemd's notify protocol (sd_notify): READY, STATUS and watchdog pings.

A datagram to $NOTIFY_SOCKET; without it (not under systemd, or Type=simple)
every call does nothing, so the daemon works unchanged anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable

log = logging.getLogger("runnerd")

STATUS_EVERY_SECONDS = 1.0  # STATUS= is checked, and sent if it changed, this often
STATUS_TIMEOUT_SECONDS = 5.0  # a status check that takes longer is given up


def _address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return None
    return "\0" + addr[1:] if addr.startswith("@") else addr  # '@': abstract namespace


def notify(*fields: str) -> bool:
    """Send `KEY=value` fields; False when not under systemd or the send failed."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(fields).encode(), address)
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half systemd's WatchdogSec), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2


async def tell_systemd(
    ready: asyncio.Event, status_text: Callable[[], Awaitable[str]], *, ready_wait_seconds: float
) -> None:
    """Until cancelled:

    - WATCHDOG=1 every half WatchdogSec, from a loop that waits on nothing but the
      clock: a hung event loop stops the pings, a slow database or engine does not;
    - READY=1, with a first STATUS, once `ready` is set (or after
      `ready_wait_seconds` anyway);
    - then STATUS= the text of `status_text()` whenever it changes, checked once a
      second (so at most one STATUS a second), each check bounded in time.

    Outside systemd (no $NOTIFY_SOCKET) it sends and checks nothing, but, like every
    side task of the daemon, still runs until cancelled: its end means a failure."""
    if _address() is None:
        await asyncio.Event().wait()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_watchdog(watchdog_interval()), name="runnerd-watchdog")
        tasks.create_task(
            _ready_and_status(ready, status_text, ready_wait_seconds), name="runnerd-status"
        )


async def _watchdog(interval: float | None) -> None:
    if interval is None:  # no WatchdogSec
        return
    while True:
        await asyncio.sleep(interval)
        notify("WATCHDOG=1")


async def _ready_and_status(
    ready: asyncio.Event, status_text: Callable[[], Awaitable[str]], ready_wait_seconds: float
) -> None:
    try:
        # Not asyncio.wait_for: in 3.11 it swallows a cancel that comes just as
        # `ready` is set, and the task would go on as if never cancelled.
        async with asyncio.timeout(ready_wait_seconds):
            await ready.wait()
    except TimeoutError:
        log.warning(
            "the queue is not reconciled yet (engine down?); telling systemd we are ready anyway"
        )
    sent = await _status(status_text)
    notify("READY=1", f"STATUS={sent}")
    while True:
        await asyncio.sleep(STATUS_EVERY_SECONDS)
        status = await _status(status_text)
        if status != sent:
            notify(f"STATUS={status}")
            sent = status


async def _status(status_text: Callable[[], Awaitable[str]]) -> str:
    try:
        return await asyncio.wait_for(status_text(), STATUS_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"serving; status unknown: reading it took over {STATUS_TIMEOUT_SECONDS:g} s"
    except Exception as e:  # STATUS only informs: it must never stop the pings
        return f"serving; status unknown: {e}"
