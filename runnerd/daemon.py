"""`runnerd serve`: wires store, engine, executor, scheduler and API into one
process, and takes them down in order on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .api import STOPPING, make_app
from .config import Config
from .engine import Engine, EngineError
from .executor import Executor
from .logs import LogStore
from .scheduler import Scheduler
from .store import Store

log = logging.getLogger("runnerd")

SHUTDOWN_SECONDS = 5.0  # in-flight requests get this long to finish on stop


async def serve(config: Config) -> None:
    logs = LogStore(config.storage.logs_dir, config.storage.max_log_bytes)
    logs.prepare()
    store = Store(config.storage.db_path)
    await store.open()
    engine = Engine(config.docker.url)
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    scheduler: Scheduler | None = None
    try:
        try:
            version = await engine.version()
            log.info("Docker engine %s answers", version.get("Version", "?"))
        except EngineError as e:
            log.warning("%s; runs stay pending until it does", e)
        daemon_id = await store.daemon_id()
        executor = Executor(store, engine, logs, daemon_id=daemon_id,
                            network=config.docker.network,
                            stop_grace_seconds=config.docker.stop_grace_seconds)
        scheduler = Scheduler(store, executor, engine=engine, daemon_id=daemon_id,
                              max_concurrent_runs=config.scheduler.max_concurrent_runs)
        app = make_app(config, store, engine, logs, scheduler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS,
                               handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, config.server.host, config.server.port)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            log.info("listening on http://%s:%d (data in %s)",
                     f"[{host}]" if ":" in host else host, port, config.storage.data_dir)
        scheduler.start()
        await _until_stopped()
        log.info("stopping")
    finally:
        if app is not None:
            app[STOPPING].set()  # log followers end their streams
        if runner is not None:
            await runner.cleanup()  # stop accepting, let in-flight requests finish
        if scheduler is not None:
            await scheduler.stop(stop_runs=config.scheduler.on_shutdown == "stop",
                                 grace_seconds=config.docker.stop_grace_seconds)
        await engine.close()
        await store.close()
        log.info("stopped")


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
