"""`runnerd serve`, the composition root: wires store, engine, executor,
scheduler, side loops, listeners and API into one process, and takes them down in
order on SIGTERM or SIGINT, each step bounded (`stop_bounds`) so that a stop
always ends, and says how it went."""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.thread
import logging
import os
import queue
import selectors
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from aiohttp import web

from . import datadir, metrics, ui
from .api import STOPPING, make_app
from .chains import Chains
from .config import Config
from .engine import (
    LOG_LINE_OVERHEAD,
    LOG_PIECE_OVERHEAD,
    Engine,
    EngineError,
    EngineNotReady,
    connection_limit,
    log_file_bytes,
)
from .executor import Executor
from .firing import Firing
from .logs import EngineCopy, LogStore
from .models import Run
from .notify import notify, tell_systemd
from .retention import Retention
from .scheduler import Scheduler
from .store import Store
from .swarm import STOP_LATENCY_SECONDS, SwarmEngine
from .timefmt import format_ms
from .webhooks import Notifier

log = logging.getLogger("runnerd")

SHUTDOWN_SECONDS = 5.0  # in-flight requests get this long to finish on stop
STEP_SECONDS = 3.0  # any other shutdown step gets this long
DATABASE_WAIT_SECONDS = 2.0  # of the database step: writes in flight finish, or are aborted
HARD_EXIT_SECONDS = 2.0  # past the steps' bounds the process exits, whatever still runs
READY_WAIT_SECONDS = 60.0  # READY=1 waits this long for the queue to be reconciled
ENGINE_CHECK_SECONDS = 5.0  # systemd's STATUS asks the engine at most this often

EXIT_FAILED = 1  # a background task ended (see _until_stopped_or_failed)
EXIT_FORCED = 3  # the stop had to cut a step short or leave a thread behind


@dataclass(frozen=True)
class StopBounds:
    """How long each shutdown step may take. Steps in one phase run side by side;
    `deadline` bounds the whole stop, and the unit's TimeoutStopSec must be above
    it (a unit test checks the default config's)."""

    tasks: float  # side loops (the systemd notifier)
    http: float  # stop accepting; in-flight requests finish
    scheduler: float  # stop claiming runs; with on_shutdown = "stop", stop them
    services: float  # retention, webhooks, the engine client (each)
    database: float  # writes in flight, then close
    threads: float  # worker threads (asyncio.to_thread, log reads) finish

    @property
    def phases(self) -> list[float]:
        return [
            max(self.tasks, self.http, self.scheduler),
            self.services,
            self.database,
            self.threads,
        ]

    @property
    def total(self) -> float:
        return sum(self.phases)

    @property
    def deadline(self) -> float:
        """Seconds after the signal at which the process exits in any case."""
        return self.total + HARD_EXIT_SECONDS


def stop_seconds(config: Config) -> float:
    """How long stopping a run's container may take: its grace, and on Swarm the
    time the swarm takes to relay the stop to the node."""
    extra = STOP_LATENCY_SECONDS if config.executor.backend == "swarm" else 0.0
    return config.docker.stop_grace_seconds + extra


def stop_bounds(config: Config) -> StopBounds:
    """The one place the shutdown's time limits come from."""
    scheduler = STEP_SECONDS
    if config.scheduler.on_shutdown == "stop":  # the containers' stop, then the records
        scheduler = stop_seconds(config) + 5
    # aiohttp waits SHUTDOWN_SECONDS for in-flight requests, cancels them, waits as
    # long again for that to take, and rounds each wait up to a whole second.
    http = 2 * (SHUTDOWN_SECONDS + 1) + 1
    return StopBounds(
        tasks=STEP_SECONDS,
        http=http,
        scheduler=scheduler,
        services=STEP_SECONDS,
        database=STEP_SECONDS,
        threads=STEP_SECONDS,
    )


@dataclass
class Stopped:
    """How a stop went: `problems` names each step that hung or failed."""

    reason: str | None = None  # what began the stop: "SIGTERM", ...
    problems: list[str] = field(default_factory=list)
    started: float | None = None  # time.monotonic() when the stop began
    failed: bool = False  # a background task ended: the daemon must be restarted

    @property
    def exit_status(self) -> int:
        if self.failed:
            return EXIT_FAILED
        return EXIT_FORCED if self.problems else 0


def wake_log_followers(store: Store, logs: LogStore) -> None:
    """A run's log followers learn that it has completed at once, not at their
    next api.FOLLOW_RECHECK_SECONDS: the log's last write comes before the record.
    (Wherever an app is built in process, its builder wires this too.)"""
    store.on_run_completed.append(lambda run: logs.notify(run.id))


def log_retries(store: Store, tz: tzinfo) -> None:
    """One log line for each retry queued: when a failed attempt's retry was made
    (in the same commit; its id and time follow from the attempt's). (Wherever an
    app is built in process, its builder wires this too.)"""

    def retry_queued(run: Run) -> None:
        if not run.will_retry:
            return
        log.info(
            "run %s failed (%s); retry attempt %d as run %s at %s",
            run.id,
            run.failure_reason.value if run.failure_reason else "?",
            run.attempt + 1,
            run.retry_id,
            format_ms(run.retry_not_before, tz),
        )

    store.on_run_completed.append(retry_queued)


def make_engine(config: Config) -> Engine:
    """The engine client of the configured backend: a Docker (or Podman) engine,
    or a Swarm manager (runnerd/swarm.py)."""
    common: dict[str, Any] = {
        "request_timeout": config.docker.request_timeout_seconds,
        "pull_timeout": config.docker.start_timeout_seconds,
        "pull_stall": config.docker.pull_stall_seconds,
        "max_connections": connection_limit(config.scheduler.max_concurrent_runs),
    }
    if config.executor.backend == "swarm":
        return SwarmEngine(
            config.docker.url,
            placement=config.swarm.placement,
            instance_placement={
                slug: t.placement for slug, t in config.instance_types.items() if t.placement
            },
            stop_grace_seconds=config.docker.stop_grace_seconds,
            **common,
        )
    return Engine(config.docker.url, **common)


async def serve(config: Config) -> Stopped:
    """Run until SIGTERM or SIGINT, then stop. Start-up errors are raised (after
    what was started is stopped); a signal during start-up cuts it short."""
    bounds = stop_bounds(config)
    stop = _StopSignal(bounds)
    loop = asyncio.get_running_loop()
    # asyncio.to_thread's threads, named, and ours to shut down without waiting.
    workers = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="runnerd-worker")
    loop.set_default_executor(workers)
    store: Store | None = None
    engine = make_engine(config)
    logs: LogStore | None = None
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    scheduler: Scheduler | None = None
    firing: Firing | None = None
    chains: Chains | None = None
    executor: Executor | None = None
    notifier: Notifier | None = None
    retention: Retention | None = None
    side_tasks: list[asyncio.Task[None]] = []
    try:
        try:
            datadir.lock(config.storage.data_dir)  # one daemon per data dir, until we exit
            max_log_bytes = config.storage.max_log_bytes
            logs = LogStore(
                config.storage.logs_dir,
                max_log_bytes,
                engine_copy=EngineCopy(
                    log_file_bytes(max_log_bytes), LOG_LINE_OVERHEAD, LOG_PIECE_OVERHEAD
                ),
                read_threads=config.storage.log_read_threads,
            )
            logs.prepare()
            store = Store(config.storage.db_path, config.storage.secret_key_path)
            await store.open()
            notifier = Notifier(store, config.webhooks, config.tz)
            retention = Retention(store, logs, config.retention)
            store.on_run_completed += [metrics.run_completed, notifier.run_completed]
            wake_log_followers(store, logs)
            log_retries(store, config.tz)
            try:
                await engine.version()  # logs which engine it is
            except EngineNotReady as e:
                log.warning("%s; runs stay pending meanwhile", e)
            except EngineError as e:
                log.warning("%s; runs stay pending until it does", e)
            daemon_id = await store.daemon_id()
            executor = Executor(
                store,
                engine,
                logs,
                daemon_id=daemon_id,
                network=config.docker.network,
                stop_grace_seconds=config.docker.stop_grace_seconds,
                start_timeout_seconds=config.docker.start_timeout_seconds,
            )
            scheduler = Scheduler(
                store,
                executor,
                max_concurrent_runs=config.scheduler.max_concurrent_runs,
            )
            firing = Firing(store, config, scheduler)
            chains = Chains(store, config, scheduler)
            store.on_run_completed.append(chains.run_completed)
            app = make_app(config, store, logs, scheduler, executor, firing)
            if config.ui.enabled:
                ui.attach(app)
            runner = web.AppRunner(
                app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS, handle_signals=False
            )
            await runner.setup()
            site = web.TCPSite(runner, config.server.host, config.server.port)
            await site.start()
            for address in runner.addresses:
                host, port = address[0], address[1]
                log.info(
                    "listening on http://%s:%d (data in %s)",
                    f"[{host}]" if ":" in host else host,
                    port,
                    config.storage.data_dir,
                )
            scheduler.start()
            firing.start()
            chains.start()
            notifier.start()
            retention.start()
            side_tasks.append(
                asyncio.create_task(
                    tell_systemd(
                        scheduler.reconciled,
                        _service_status(store, engine, scheduler),
                        ready_wait_seconds=READY_WAIT_SECONDS,
                    )
                )
            )
            await _until_stopped_or_failed(
                stop,
                {
                    "the scheduler": scheduler.task,
                    "the schedules": firing.task,
                    "the chains": chains.task,
                    "webhook deliveries": notifier.task,
                    "retention": retention.task,
                    "the systemd watchdog": side_tasks[-1],
                },
            )
        except asyncio.CancelledError:
            if stop.reason is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own cut to the start-up, not a cancel from outside
        log.info("stopping on %s", stop.reason)
    finally:
        stop.begin()
        notify("STOPPING=1")
        if app is not None:
            app[STOPPING].set()  # log followers end their streams
        # Each step is bounded and one that raises does not skip the rest: a stop
        # must end within seconds whatever hangs, and the log names the step that did.
        steps: list[tuple[Any, ...]] = [("the side tasks", _cancel(side_tasks), bounds.tasks)]
        if runner is not None:  # stop accepting, let in-flight requests finish
            steps.append(("the HTTP server", runner.cleanup(), bounds.http))
        if firing is not None:  # no fire after this: the scheduler stops next
            steps.append(("the schedules", firing.stop(), bounds.tasks))
        if chains is not None:  # no chained run after this either
            steps.append(("the chains", chains.stop(), bounds.tasks))
        if scheduler is not None:
            steps.append(
                (
                    "the scheduler",
                    scheduler.stop(
                        stop_runs=config.scheduler.on_shutdown == "stop",
                        grace_seconds=stop_seconds(config),
                    ),
                    bounds.scheduler,
                )
            )
        await stop.phase(steps)
        steps = [("the engine client", _close_engine(executor, engine), bounds.services)]
        if retention is not None:
            steps.append(("retention", retention.stop(), bounds.services))
        if notifier is not None:
            steps.append(("webhooks", notifier.stop(), bounds.services))
        await stop.phase(steps)
        if store is not None:
            await stop.phase(
                [("the database", store.close(DATABASE_WAIT_SECONDS), bounds.database)]
            )
        if logs is not None:
            logs.close()  # the log read pool: its busy threads are waited for below
        workers.shutdown(wait=False, cancel_futures=True)
        await stop.phase([("the worker threads", _threads_idle(), bounds.threads, _busy_threads)])
    return stop.outcome


class _StopSignal:
    """SIGTERM/SIGINT: the first begins the stop (cutting a start-up short); a
    second one during the stop, or the stop outliving its deadline, ends the
    process at once with an ERROR naming what still ran."""

    def __init__(self, bounds: StopBounds) -> None:
        self.bounds = bounds
        self.reason: str | None = None
        self.outcome = Stopped()
        self._requested = asyncio.Event()
        self._task = asyncio.current_task()  # cut short while starting
        self._running_steps: list[str] = []
        self._timer: threading.Timer | None = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    async def serving(self) -> None:
        self._task = None
        await self._requested.wait()

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.reason is not None:
            hard_exit(f"{name} during the stop", self._running_steps)
        self.request(name)

    def request(self, why: str) -> None:
        """Begin the stop (a signal, or whatever else must end the daemon)."""
        if self.reason is not None:
            return
        self.reason = self.outcome.reason = why
        self._requested.set()
        self.begin()
        if self._task is not None:
            self._task.cancel()

    def begin(self) -> None:
        """Start the deadline (at the signal, or when a failed start-up stops)."""
        if self._timer is not None:
            return
        self.outcome.started = time.monotonic()
        deadline = self.bounds.deadline
        self._timer = threading.Timer(
            deadline,
            lambda: hard_exit(
                f"not stopped {deadline:.0f} s after the stop began", self._running_steps
            ),
        )
        self._timer.daemon = True
        self._timer.name = "runnerd-stop-deadline"
        self._timer.start()

    async def phase(self, steps: list[tuple[Any, ...]]) -> None:
        """Run `steps` (the arguments of `_bounded`) side by side, each within its
        own bound."""
        self._running_steps = [step[0] for step in steps]
        problems = await asyncio.gather(*(_bounded(*step) for step in steps))
        self.outcome.problems += [p for p in problems if p is not None]
        self._running_steps = []


async def _bounded(
    what: str, step: Awaitable[None], seconds: float, busy: Callable[[], list[str]] | None = None
) -> str | None:
    """Run one shutdown step for at most `seconds`. One that hangs is cancelled
    and left behind, not awaited (its own cleanup may hang too, as a database
    close behind a lock wait can); one that raises is logged. Either way the
    steps after it run. `busy` names what is still at work, for the log. Returns
    what went wrong, or None."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        still = busy() if busy is not None else []
        detail = f" (busy: {', '.join(still)})" if still else ""
        log.error(
            "stopping: %s did not stop within %.0f s%s; going on without it", what, seconds, detail
        )
        return f"{what} did not stop within {seconds:.0f} s"
    error = asyncio.CancelledError() if task.cancelled() else task.exception()
    if error is not None:
        log.error("stopping: %s failed (%s); going on", what, _describe(error), exc_info=error)
        return f"{what} failed ({_describe(error)})"
    return None


async def _close_engine(executor: Executor | None, engine: Engine) -> None:
    """The executor's last engine calls (removing containers no run wants), then
    the client: no request may start on a closed one."""
    if executor is not None:
        await executor.close(wait_seconds=min(1.0, STEP_SECONDS / 3))
    await engine.close()


async def _cancel(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait until they end, cancelling again any that lives
    on: Python 3.11's asyncio.wait_for swallows a cancel that arrives just as
    what it waits for completes (the task then goes on as if never cancelled)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)


async def _threads_idle() -> None:
    """Until no worker thread is busy (a log scan, a file delete)."""
    while _busy_threads():
        await asyncio.sleep(0.05)


def _busy_threads(*, daemon: bool = False) -> list[str]:
    """Threads other than this one that would keep the process alive (with
    `daemon`, also daemon threads in our code) and are doing something, each with
    where, e.g. "runnerd-worker_0 in logs.py:214 tail_start" (or, seen from the
    deadline's timer, "MainThread in ..."). A pool's thread waiting for work is
    not busy."""
    frames = sys._current_frames()
    busy = []
    for thread in threading.enumerate():
        if (
            thread is threading.current_thread()
            or (thread.daemon and not daemon)
            or thread.ident not in frames
        ):
            continue
        ours: FrameType | None = None  # innermost frame of our code
        first: FrameType | None = None  # innermost at all
        frame: FrameType | None = frames[thread.ident]
        while frame is not None and ours is None:
            filename = frame.f_code.co_filename
            if filename.startswith(_OUR_CODE):
                ours = frame
            if first is None and filename not in _PLUMBING:
                first = frame
            frame = frame.f_back
        if first is None or (thread.daemon and ours is None):
            continue  # waiting for work, or not ours to name
        where = f"{thread.name} in {_location(first)}"
        if ours is not None and ours is not first:
            where += f" (from {_location(ours)})"
        busy.append(where)
    return busy


def _location(frame: FrameType) -> str:
    return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}"


_OUR_CODE = str(Path(__file__).parent) + os.sep
# Where a thread that waits for work sits: a pool's worker loop, its queue, an
# event loop's select.
_PLUMBING = {
    threading.__file__,
    concurrent.futures.thread.__file__,
    queue.__file__,
    selectors.__file__,
    asyncio.base_events.__file__,
    asyncio.events.__file__,
}


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _until_stopped_or_failed(
    stop: _StopSignal, tasks: dict[str, asyncio.Task[None] | None]
) -> None:
    """Until SIGTERM or SIGINT; or until one of the background tasks ends, which
    none does on its own: each survives what it can (see its loop), and past that
    runnerd stops and exits non-zero, with one ERROR line naming the task and its
    error, for the service manager to restart it. (The systemd watchdog task
    survives nothing: without its pings systemd would kill runnerd anyway, later.)"""
    watched = {task: name for name, task in tasks.items() if task is not None}
    serving = asyncio.ensure_future(stop.serving())
    try:
        done, _ = await asyncio.wait({serving, *watched}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    for task in done:
        if task in watched:
            error = None if task.cancelled() else task.exception()
            log.error(
                "%s stopped: %s; exiting, for the service manager to restart runnerd",
                watched[task],
                "cancelled"
                if task.cancelled()
                else "it returned"
                if error is None
                else f"{type(error).__name__}: {str(error) or '(no message)'}",
            )
            stop.outcome.failed = True
            stop.request(f"{watched[task]} stopped")
            return


def hard_exit(why: str, steps: list[str]) -> NoReturn:
    """Exit now with EXIT_FORCED, after one ERROR line saying what still ran."""
    still = [f"in step: {', '.join(steps)}"] if steps else []
    busy = _busy_threads(daemon=True)
    if busy:
        still.append(f"busy threads: {', '.join(busy)}")
    detail = f" ({'; '.join(still)})" if still else ""
    message = f"stopping: {why}{detail}; exiting now (exit status {EXIT_FORCED})"
    # From a thread of its own: a log handler stuck on a full pipe must not keep
    # the process alive either.
    writer = threading.Thread(target=log.error, args=(message,), daemon=True)
    writer.start()
    writer.join(1.0)
    exit_now(EXIT_FORCED)


def exit_now(status: int) -> NoReturn:
    """Flush the logs and end the process without the interpreter's exit, which
    would wait for every non-daemon thread (a pool's busy worker) however long
    it takes; everything of ours is closed by now."""
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def _service_status(
    store: Store, engine: Engine, scheduler: Scheduler
) -> Callable[[], Awaitable[str]]:
    """systemd's STATUS text: the queue counts, whether the engine answers (asked
    at most every ENGINE_CHECK_SECONDS, not at every check: the scheduler only
    notices an outage while it tries to start runs), and why the scheduler is not
    claiming runs when it is not."""
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
            except EngineNotReady as e:
                engine_note = f"; {e}; runs stay pending"
            except (EngineError, TimeoutError):
                engine_note = "; the Docker engine does not answer, runs stay pending"
        health = scheduler.health
        note = engine_note or (
            f"; not claiming runs: {health.why}"
            if not health.ok
            else ""
            if scheduler.reconciled.is_set()
            else "; not reconciled with the Docker engine yet"
        )
        return f"serving; {queue['pending']} pending, {queue['running']} running{note}"

    return status
