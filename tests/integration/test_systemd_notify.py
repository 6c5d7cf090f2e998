"""systemd's notify protocol from a real `runnerd serve`, with faults injected: a
datagram socket stands in for systemd's ($NOTIFY_SOCKET). The real systemd is in
tests/systemd/."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator

import pytest
from conftest import Daemon, wait_until
from faults import proxy, start_proxied_daemon  # noqa: F401 (fixtures)
from socket_proxy import SocketProxy

WATCHDOG_SECONDS = 4  # WatchdogSec: runnerd pings every 2 s; systemd kills at 4 s
# SQLite's WAL-index (the -shm file) keeps its locks in bytes 120-127; 123-127 are the
# five read marks, one of which every transaction, read or write, must hold shared.
SHM_READ_LOCKS = (123, 5)


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    tmp = tempfile.mkdtemp(prefix="rnd-", dir="/tmp")  # short: AF_UNIX limits the path
    path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_SECONDS * 1_000_000))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()
    shutil.rmtree(tmp, ignore_errors=True)


async def next_datagram(sock: socket.socket, timeout: float) -> dict[str, str]:
    raw = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), timeout)
    return dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)


async def until_ready(sock: socket.socket) -> dict[str, str]:
    while (message := await next_datagram(sock, 30)).get("READY") != "1":
        assert message == {"WATCHDOG": "1"}, message
    return message


async def test_watchdog_pings_go_on_while_the_database_is_locked(
    start_daemon: Callable[..., Daemon], notify_socket: socket.socket
) -> None:
    """Another process takes every read lock of the database: each of runnerd's
    queries waits (busy timeout), its STATUS check gives up, and the watchdog pings
    still come within WatchdogSec — systemd never sees a hang that is not one."""
    daemon = start_daemon()
    ready = await until_ready(notify_socket)
    assert ready["STATUS"] == "serving; 0 pending, 0 running", ready

    fd = os.open(daemon.data_dir / "runnerd.db-shm", os.O_RDWR)
    try:

        async def locked() -> bool:
            try:  # not while one of runnerd's transactions holds a read mark
                fcntl.lockf(
                    fd,
                    fcntl.LOCK_EX | fcntl.LOCK_NB,
                    SHM_READ_LOCKS[1],
                    SHM_READ_LOCKS[0],
                    os.SEEK_SET,
                )
                return True
            except OSError:
                return False

        await wait_until(locked, timeout=10, what="the database's read locks")

        pings = 0
        while True:  # each datagram within WatchdogSec, or systemd would have killed us
            message = await next_datagram(notify_socket, WATCHDOG_SECONDS)
            if message.get("WATCHDOG") == "1":
                pings += 1
            elif message.get("STATUS", "").startswith("serving; status unknown"):
                break  # a status check hung on the lock and was given up
            else:
                raise AssertionError(f"unexpected while locked: {message}")
        assert message["STATUS"] == "serving; status unknown: reading it took over 5 s"
        assert pings >= 1, "no ping while the status check hung"
        for _ in range(2):  # and pings go on while the next checks hang too
            assert await next_datagram(notify_socket, WATCHDOG_SECONDS) == {"WATCHDOG": "1"}
    finally:
        os.close(fd)  # releases the locks

    async def status_back() -> bool:
        message = await next_datagram(notify_socket, WATCHDOG_SECONDS)
        return message.get("STATUS") == "serving; 0 pending, 0 running"

    await wait_until(status_back, timeout=30, what="STATUS with the queue counts again")
    assert daemon.stop() == 0, daemon.log_text()


async def test_status_reports_the_engine_outage_and_its_end(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    proxy: SocketProxy,
    notify_socket: socket.socket,
) -> None:
    """The engine goes away behind a socket proxy: STATUS says so within seconds
    (not only at the next watchdog tick), and says it no more once it is back."""
    daemon = await start_proxied_daemon()
    ready = await until_ready(notify_socket)
    assert ready["STATUS"] == "serving; 0 pending, 0 running", ready

    async def status_becomes(text: str) -> None:
        while (message := await next_datagram(notify_socket, 30)).get("STATUS") != text:
            assert message.get("WATCHDOG") == "1" or "STATUS" in message, message

    await proxy.stop()
    await status_becomes(
        "serving; 0 pending, 0 running; the Docker engine does not answer, runs stay pending"
    )
    await proxy.start()
    await status_becomes("serving; 0 pending, 0 running")
    assert await asyncio.to_thread(daemon.stop) == 0, daemon.log_text()
