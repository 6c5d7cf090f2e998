"""`runnerd serve`: wires store, engine, executor, scheduler, side loops and API
into one process, and takes them down in order on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Awaitable, Callable

from aiohttp import web

from . import metrics
from .api import STOPPING, make_app
from .config import Config
from .engine import (
    LOG_LINE_OVERHEAD, LOG_PIECE_OVERHEAD, Engine, EngineError, log_file_bytes,
)
from .executor import Executor
from .logs import EngineCopy, LogStore
from .notify import notify, tell_systemd
from .retention import Retention
from .scheduler import Scheduler
from .store import Store
from .webhooks import Notifier

log = logging.getLogger("runnerd")

SHUTDOWN_SECONDS = 5.0  # in-flight requests get this long to finish on stop
STEP_SECONDS = 5.0  # any other shutdown step gets this long
READY_WAIT_SECONDS = 60.0  # READY=1 waits this long for the queue to be reconciled
ENGINE_CHECK_SECONDS = 5.0  # systemd's STATUS asks the engine at most this often


async def serve(config: Config) -> None:
    max_log_bytes = config.storage.max_log_bytes
    logs = LogStore(config.storage.logs_dir, max_log_bytes, engine_copy=EngineCopy(
        log_file_bytes(max_log_bytes), LOG_LINE_OVERHEAD, LOG_PIECE_OVERHEAD))
    logs.prepare()
    store = Store(config.storage.db_path, config.storage.secret_key_path)
    await store.open()
    engine = Engine(config.docker.url)
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    scheduler: Scheduler | None = None
    notifier = Notifier(store, config.webhooks, config.tz)
    retention = Retention(store, logs, config.retention)
    side_tasks: list[asyncio.Task[None]] = []
    store.on_run_completed += [metrics.run_completed, notifier.run_completed]
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
        app = make_app(config, store, engine, logs, scheduler, executor)
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
        notifier.start()
        retention.start()
        side_tasks.append(asyncio.create_task(tell_systemd(
            scheduler.reconciled, _service_status(store, engine, scheduler),
            ready_wait_seconds=READY_WAIT_SECONDS)))
        await _until_stopped()
        log.info("stopping")
    finally:
        notify("STOPPING=1")
        for task in side_tasks:
            task.cancel()
        await asyncio.gather(*side_tasks, return_exceptions=True)
        if app is not None:
            app[STOPPING].set()  # log followers end their streams
        # Each step is bounded: a stop must end within seconds whatever hangs, and
        # the log names the step that did.
        if runner is not None:  # stop accepting, let in-flight requests finish
            await _bounded("the HTTP server", runner.cleanup(), SHUTDOWN_SECONDS + 5)
        if scheduler is not None:
            await _bounded("the scheduler", scheduler.stop(
                stop_runs=config.scheduler.on_shutdown == "stop",
                grace_seconds=config.docker.stop_grace_seconds),
                config.docker.stop_grace_seconds + 20)
        await _bounded("retention", retention.stop(), STEP_SECONDS)
        await _bounded("webhooks", notifier.stop(), STEP_SECONDS)
        await _bounded("the engine client", engine.close(), STEP_SECONDS)
        await _bounded("the database", store.close(), STEP_SECONDS)
        log.info("stopped")


async def _bounded(what: str, step: Awaitable[None], seconds: float) -> None:
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.error("stopping: %s did not stop within %.0f s; going on without it", what, seconds)


def _service_status(store: Store, engine: Engine,
                    scheduler: Scheduler) -> Callable[[], Awaitable[str]]:
    """systemd's STATUS text: the queue counts, and whether the engine answers
    (asked at most every ENGINE_CHECK_SECONDS, not at every check)."""
    engine_note = ""
    next_check = 0.0

    async def status() -> str:
        nonlocal engine_note, next_check
        queue = await store.count_active()
        now = asyncio.get_running_loop().time()
        if now >= next_check:
            next_check = now + ENGINE_CHECK_SECONDS
            try:
                async with asyncio.timeout(ENGINE_CHECK_SECONDS / 2):  # within the check's bound
                    await engine.version()
                engine_note = ""
            except (EngineError, TimeoutError):
                engine_note = "; the Docker engine does not answer, runs stay pending"
        reconciling = "" if scheduler.reconciled.is_set() else \
            "; not reconciled with the Docker engine yet"
        return (f"serving; {queue['pending']} pending, {queue['running']} running"
                f"{engine_note or reconciling}")

    return status


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
