"""Fault injection shared by the tests that break things under a real daemon.

Fixtures (import them into a test module: `from faults import proxy, engine,
start_proxied_daemon`):
- `engine`: an EngineProbe on the engine's own socket, to watch what really runs;
- `proxy`: a SocketProxy (socket_proxy.py) in front of the engine, which a test
  switches off and on, slows (`hold`) or makes refuse a step (`fail`);
- `start_proxied_daemon(extra_config="", **kw)`: a runnerd whose only way to the
  engine is that proxy (started from a thread: its start-up talks to the engine
  through the proxy, which runs in the test's loop).

Helpers to read a daemon's log: `wait_log_line`, `daemon_errors`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from conftest import Daemon, wait_until
from helpers_engine import EngineProbe, engine_probe
from socket_proxy import SocketProxy


@pytest.fixture
async def engine() -> AsyncIterator[EngineProbe]:
    session, probe = await engine_probe()
    async with session:
        yield probe


@pytest.fixture
async def proxy() -> AsyncIterator[SocketProxy]:
    # A short path: unix socket paths are limited to ~107 bytes, tmp_path is long.
    d = tempfile.mkdtemp(prefix="runnerd-proxy-", dir="/tmp")
    p = SocketProxy(os.path.join(d, "docker.sock"))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start_proxied_daemon(
    proxy: SocketProxy, start_daemon: Callable[..., Daemon]
) -> Callable[..., Awaitable[Daemon]]:
    """Start a runnerd whose [docker] url is the proxy; `extra_config` is more TOML
    (without a [docker] table: this one is written)."""

    async def start(extra_config: str = "", **kw: Any) -> Daemon:
        extra = (
            f'[docker]\nurl = "unix://{proxy.path}"\nnetwork = "none"\n'
            "stop_grace_seconds = 1\n" + extra_config
        )
        return await asyncio.to_thread(start_daemon, extra, **kw)

    return start


async def wait_log_line(daemon: Daemon, text: str, timeout: float = 20) -> None:
    async def logged() -> bool:
        return text in daemon.log_text()

    await wait_until(logged, timeout=timeout, what=f"the daemon to log {text!r}")


def daemon_errors(daemon: Daemon) -> str:
    """The daemon log's warnings, errors and tracebacks, for failure messages."""
    lines = daemon.log_text().splitlines()
    keep = [
        ln
        for ln in lines
        if " WARNING " in ln
        or " ERROR " in ln
        or ln.startswith(("Traceback", "  ", "runnerd.", "aiohttp.", "aiodocker."))
    ]
    return "\n".join(keep[-40:])
