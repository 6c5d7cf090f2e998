"""`runnerd serve`: wires store, engine, executor, scheduler, side loops and API
into one process, and takes them down in order on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Awaitable

from aiohttp import web

from . import datadir
from . import metrics
from .api import STOPPING, make_app
from .config import Config
from .engine import (
    LOG_LINE_OVERHEAD, LOG_PIECE_OVERHEAD, Engine, EngineError, connection_limit,
    log_file_bytes,
)
from .executor import Executor
from .logs import EngineCopy, LogStore
from .notify import notify, watchdog_interval
from .retention import Retention
from .scheduler import Scheduler
from .store import Store
from .webhooks import Notifier

log = logging.getLogger("runnerd")

SHUTDOWN_SECONDS = 5.0  # in-flight requests get this long to finish on stop
STEP_SECONDS = 5.0  # any other shutdown step gets this long
READY_WAIT_SECONDS = 60.0  # READY=1 waits this long for the queue to be reconciled


async def serve(config: Config) -> None:
    datadir.lock(config.storage.data_dir)  # one daemon per data dir, until we exit
    max_log_bytes = config.storage.max_log_bytes
    logs = LogStore(config.storage.logs_dir, max_log_bytes, engine_copy=EngineCopy(
        log_file_bytes(max_log_bytes), LOG_LINE_OVERHEAD, LOG_PIECE_OVERHEAD),
        read_threads=config.storage.log_read_threads)
    logs.prepare()
    store = Store(config.storage.db_path, config.storage.secret_key_path)
    await store.open()
    engine = Engine(config.docker.url, request_timeout=config.docker.request_timeout_seconds,
                    pull_timeout=config.docker.start_timeout_seconds,
                    pull_stall=config.docker.pull_stall_seconds,
                    max_connections=connection_limit(config.scheduler.max_concurrent_runs))
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
                            stop_grace_seconds=config.docker.stop_grace_seconds,
                            start_timeout_seconds=config.docker.start_timeout_seconds)
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
        side_tasks.append(asyncio.create_task(_tell_systemd(store, scheduler)))
        await _until_stopped_or_failed({
            "the scheduler": scheduler.task, "webhook deliveries": notifier.task,
            "retention": retention.task, "the systemd watchdog": side_tasks[-1]})
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


async def _tell_systemd(store: Store, scheduler: Scheduler) -> None:
    """READY=1 once the API listens and the queue is reconciled; then watchdog
    pings from this event loop (a hung loop stops them, and systemd restarts us)
    carrying the queue depth as STATUS."""
    try:
        await asyncio.wait_for(scheduler.reconciled.wait(), READY_WAIT_SECONDS)
        status = "STATUS=serving"
    except TimeoutError:
        status = "STATUS=serving; the Docker engine does not answer yet"
        log.warning("the queue is not reconciled yet (engine down?); telling systemd we are "
                    "ready anyway")
    notify("READY=1", status)
    interval = watchdog_interval() or 30.0
    while True:
        await asyncio.sleep(interval)
        try:
            queue = await store.count_active()
            status = f"STATUS=serving; {queue['pending']} pending, {queue['running']} running"
        except Exception:  # the ping itself must not depend on the database
            status = "STATUS=serving"
        notify("WATCHDOG=1", status)


async def _until_stopped_or_failed(tasks: dict[str, asyncio.Task[None] | None]) -> None:
    """Until SIGTERM or SIGINT; or until one of the background tasks ends, which
    none does on its own: each survives what it can (see its loop), and past that
    runnerd exits non-zero, with one ERROR line naming the task and its error,
    for the service manager to restart it. (The systemd watchdog task survives
    nothing: without its pings systemd would kill runnerd anyway, later.)"""
    watched = {task: name for name, task in tasks.items() if task is not None}
    stopped = asyncio.ensure_future(_until_stopped())
    try:
        done, _ = await asyncio.wait({stopped, *watched}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        await asyncio.gather(stopped, return_exceptions=True)
    for task in done:
        if task in watched:
            error = None if task.cancelled() else task.exception()
            log.error("%s stopped: %s; exiting, for the service manager to restart runnerd",
                      watched[task], "cancelled" if task.cancelled() else
                      "it returned" if error is None else
                      f"{type(error).__name__}: {str(error) or '(no message)'}")
            raise SystemExit(1)


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
