"""The API tier's app: runnerd's real aiohttp app in this process, served by
pytest-aiohttp's `aiohttp_client` on a loopback port, over a real SQLite store and
log store in the test's temp dir, with the real scheduler driving a fake executor
(tests/api/fakes.py). No Docker, no daemon process.

The fixtures keep tests/conftest.py's names — `daemon`, `start_daemon` — so a test
moved here from tests/integration reads as it did there; `api` and `http` are
conftest's own, over this `daemon`. `build_app` is the one place the app is put
together the way daemon.serve does it.

Docker is out of reach here: tests/conftest.py points DOCKER_HOST at a socket that
does not exist for every test in tests/unit and tests/api, and fails a test there
that asks for `docker_engine`, since a test that needs Docker belongs in
tests/integration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Api

from runnerd import config as config_mod
from runnerd import metrics, ui
from runnerd.api import make_app
from runnerd.auth import hash_secret, new_secret
from runnerd.chains import Chains
from runnerd.config import Config
from runnerd.daemon import log_retries, wake_log_followers
from runnerd.firing import Firing
from runnerd.logs import LogStore
from runnerd.models import Scope
from runnerd.scheduler import Scheduler
from runnerd.store import Store
from tests.harness import create_key, write_config

from .fakes import FakeExecutor

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@dataclass
class InProcessDaemon:
    """What tests ask of a daemon, for the in-process app: its URL and key, its
    directories, its log (runnerd's log records, written as the daemon writes them)."""

    dir: Path
    config_path: Path
    config: Config
    store: Store
    logs: LogStore
    scheduler: Scheduler
    executor: FakeExecutor
    client: TestClient[web.Request, web.Application]
    url: str
    key: str

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "daemon.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def create_key(self, name: str, scope: str = "full") -> str:
        """A key made by `runnerd keys create` on this data dir, as an operator would."""
        return create_key(self.config_path, name, scope)

    def alive(self) -> bool:
        """The app still serves and the scheduler's loop has not ended."""
        task = self.scheduler.task
        return not self.client.server.closed and task is not None and not task.done()


async def build_app(
    config: Config, stack: AsyncExitStack
) -> tuple[web.Application, Store, LogStore, Scheduler, FakeExecutor]:
    """The parts daemon.serve wires, minus Docker: (app, store, logs, scheduler,
    executor). Each is closed by `stack`, in the reverse order."""
    logs = LogStore(config.storage.logs_dir, config.storage.max_log_bytes)
    logs.prepare()
    stack.callback(logs.close)
    store = Store(config.storage.db_path, config.storage.secret_key_path)
    await store.open()
    stack.push_async_callback(store.close)
    store.on_run_completed.append(metrics.run_completed)
    wake_log_followers(store, logs)
    log_retries(store, config.tz)
    executor = FakeExecutor(store, logs)
    scheduler = Scheduler(store, executor, max_concurrent_runs=config.scheduler.max_concurrent_runs)
    firing = Firing(store, config, scheduler)
    chains = Chains(store, config, scheduler)
    store.on_run_completed.append(chains.run_completed)
    app = make_app(config, store, logs, scheduler, executor, firing)  # type: ignore[arg-type]  # the fake has what the API calls
    if config.ui.enabled:
        ui.attach(app)
    scheduler.start()
    stack.push_async_callback(scheduler.stop)
    firing.start()
    stack.push_async_callback(firing.stop)
    chains.start()
    stack.push_async_callback(chains.stop)
    return app, store, logs, scheduler, executor


@pytest.fixture
async def start_daemon(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> AsyncIterator[Callable[..., Awaitable[InProcessDaemon]]]:
    """Start in-process apps with a custom config (same arguments as
    tests/conftest.py's `start_daemon`, awaited); all are closed at the end."""
    async with AsyncExitStack() as stack:
        made = 0

        async def start(
            extra_config: str = "",
            *,
            max_concurrent_runs: int = 4,
            top_level: str = "",
            name: str | None = None,
        ) -> InProcessDaemon:
            nonlocal made
            d = tmp_path / (name or f"daemon{made}")
            made += 1
            d.mkdir()
            config_path = d / "config.toml"
            write_config(
                config_path,
                d / "data",
                extra_config,
                max_concurrent_runs=max_concurrent_runs,
                top_level=top_level,
            )
            config = config_mod.load(config_path)
            handler = logging.FileHandler(d / "daemon.log")
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            # As `runnerd serve` logs: every logger's records (aiohttp's errors too),
            # runnerd's from INFO up.
            root, runnerd_log = logging.getLogger(), logging.getLogger("runnerd")
            level = runnerd_log.level
            root.addHandler(handler)
            runnerd_log.setLevel(logging.INFO)

            def unhook() -> None:
                root.removeHandler(handler)
                runnerd_log.setLevel(level)
                handler.close()

            stack.callback(unhook)
            app, store, logs, scheduler, executor = await build_app(config, stack)
            client = await aiohttp_client(app)
            stack.push_async_callback(client.close)  # before the parts under it
            secret = new_secret()
            await store.create_api_key("test", Scope.FULL, hash_secret(secret))
            return InProcessDaemon(
                dir=d,
                config_path=config_path,
                config=config,
                store=store,
                logs=logs,
                scheduler=scheduler,
                executor=executor,
                client=client,
                url=str(client.make_url("")).rstrip("/"),
                key=secret,
            )

        yield start


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[InProcessDaemon]]) -> InProcessDaemon:
    return await start_daemon()


async def cli(to: Api | InProcessDaemon, *args: str) -> tuple[int, str, str]:
    """`runnerd ARGS` in a process of its own, with RUNNERD_URL and RUNNERD_TOKEN
    naming the app this loop serves (so it is awaited, not run: the app answers it
    meanwhile); (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNERD_")}
    env |= {"RUNNERD_URL": to.url, "RUNNERD_TOKEN": to.key or ""}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runnerd",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"Traceback" not in err, err
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
