"""Queue policy: which pending run starts next, and how many run at once.

One loop claims pending runs oldest first while fewer than `max_concurrent_runs`
are in flight (and the run's runner is under its own `max_concurrent_runs`, and
the run's `not_before` has come), and hands each to the executor in a task of its
own. A trigger wakes it at once (`wake()`), and it sleeps until the earliest
`not_before` when only delayed runs wait; there is no polling delay. The loop is
the only thing that starts runs, so the limits hold whatever requests interleave.

Before the first claim it has the executor reconcile with the engine (containers
of ended runs are removed) and re-attaches the runs an earlier process left
`running` (or has them finalised). When the engine does not answer, runs stay
pending and the loop backs off before trying again. The scheduler holds no
engine: the executor is its one way to containers.

Nothing stops the loop but `stop()`: an error from the engine or the database in
any step (reconciling, claiming, a run's start) is logged with the back-off, and
`health` says why no run is claimed meanwhile (`/healthz` answers 503 with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from .engine import EngineError, EngineUnavailable
from .models import ACTIVE_STATUSES, FailureReason, Run, Status, now_ms
from .retry import is_database_damaged, is_store_fault, retry_store
from .store import Conflict, RunStore

log = logging.getLogger("runnerd.scheduler")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
WALL_CLOCK_RECHECK = 60.0  # the longest sleep before the wall clock is read again


@dataclass(frozen=True)
class Health:
    """Whether the scheduler is claiming runs; `why` not, when it is not."""

    ok: bool
    why: str | None = None


class RunTaskFailed(Exception):
    """A run's task ended with an error it cannot survive (a damaged database):
    it ends the scheduler's loop with it, and the daemon exits."""


class RunExecutor(Protocol):
    """What the scheduler needs of the executor (runnerd.executor.Executor)."""

    async def reconcile(self) -> list[Run]: ...
    async def execute(self, run: Run) -> Run: ...
    async def recover(self, run: Run) -> Run: ...
    async def stop_run(self, run_id: str, why: str) -> bool: ...
    async def remove_container(self, run: Run) -> None: ...


Step = Callable[[Run], Awaitable[Run]]  # execute or recover


class Scheduler:
    def __init__(
        self,
        store: RunStore,
        executor: RunExecutor,
        *,
        max_concurrent_runs: int,
    ) -> None:
        self.store = store
        self.executor = executor
        self.max_concurrent_runs = max_concurrent_runs
        self._wakeup = asyncio.Event()
        self._active: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._backoff = 0.0
        self._retry_at = 0.0  # loop time before which the engine is not tried again
        self._problem: str | None = None  # why runs are not claimed now, while backing off
        self._fatal: RunTaskFailed | None = None  # a run's task could not survive its error
        self.reconciled = asyncio.Event()

    @property
    def active_run_ids(self) -> set[str]:
        return set(self._active)

    @property
    def health(self) -> Health:
        """Not ok while the loop backs off after an error (engine or database), or
        when its task has ended (it never should: the daemon then exits)."""
        task = self._loop_task
        if task is not None and task.done():
            return Health(False, self._problem or "the scheduler stopped")
        if self._problem is not None:
            return Health(False, self._problem)
        return Health(True)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The loop's task, for the daemon to supervise."""
        return self._loop_task

    def wake(self) -> None:
        """A run was queued (or a slot may have freed): look at the queue now."""
        self._wakeup.set()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="runnerd-scheduler")

    async def cancel(self, run_id: str, why: str, wait_seconds: float) -> bool:
        """Stop a run in flight here (running, or still pulling or creating) and
        wait (bounded; not at all for 0) until it is recorded. False when no run
        of that id is in flight in this process."""
        task = self._active.get(run_id)
        if task is None:
            return False
        await self.executor.stop_run(run_id, why)  # kept and applied if not watched yet
        if wait_seconds <= 0:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(task), wait_seconds)
        except TimeoutError:
            log.warning("run %s: still stopping after %.0f s", run_id, wait_seconds)
        return True

    async def stop(self, *, stop_runs: bool = False, grace_seconds: float = 10.0) -> None:
        """Stop claiming runs. With `stop_runs`, stop their containers and record
        them `failed`/`canceled`; otherwise leave the containers running, for the
        next start to re-attach."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        why = 'runnerd was shut down and stopped the run (on_shutdown = "stop").'
        in_flight = list(self._active)
        if stop_runs and in_flight:
            # The grace, then a little for the records: the daemon bounds this whole
            # step at grace + 5 s (daemon.stop_bounds), and the leftovers below
            # need their share of it.
            await asyncio.gather(
                *(self.cancel(run_id, why, grace_seconds + 2) for run_id in in_flight),
                return_exceptions=True,
            )
        tasks = list(self._active.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if stop_runs:
            await self._stop_leftovers(in_flight, why)

    async def _stop_leftovers(self, run_ids: list[str], why: str) -> None:
        """Backstop for `stop`: a run still `running` after its task ended (it was
        cut off mid-start) gets its container removed and is recorded canceled."""
        for run_id in run_ids:
            run = await self.store.get_run(run_id)
            if run is None or run.status is not Status.RUNNING:
                continue
            await self.executor.remove_container(run)
            try:
                await self.store.finish_run(
                    run_id,
                    Status.FAILED,
                    exit_code=None,
                    failure_reason=FailureReason.CANCELED,
                    error=why,
                )
            except Conflict:
                pass

    async def _loop(self) -> None:
        # Survives the engine or the database not answering (an error, a 500, a
        # lock, a full disk): back-off, a warning per attempt, and `health` says
        # why; a restart would not bring them back sooner, and the API stays up
        # meanwhile. Anything else (a damaged database, a bug) ends the loop, and
        # the daemon, which supervises it, exits non-zero for systemd to restart it.
        delay = BACKOFF_FIRST
        while True:
            try:
                if self._fatal is not None:
                    raise self._fatal
                if not self.reconciled.is_set():
                    for run in await self.executor.reconcile():
                        log.info("run %s was running before the restart: re-attaching", run.id)
                        self._spawn(run, self.executor.recover)
                    self.reconciled.set()
                await self._claim_and_start()
                delay = BACKOFF_FIRST
            except Exception as e:
                if not isinstance(e, EngineError) and not is_store_fault(e):
                    self._problem = f"the scheduler stopped: {_describe(e)}"
                    raise
                what = "reconcile with the engine" if not self.reconciled.is_set() else "claim runs"
                self._problem = f"cannot {what}: {_describe(e)}; retrying in {delay:.1f} s"
                log.warning("scheduler: %s", self._problem)
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)

    async def _claim_and_start(self) -> None:
        delay = self._retry_at - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)  # the engine was down: triggers can wait
        self._wakeup.clear()  # before the query, so a trigger during it is not missed
        run = None
        if len(self._active) < self.max_concurrent_runs:
            run = await self.store.next_pending(in_flight=list(self._active))
        self._problem = None  # claiming again (a run that fails to start says so anew)
        if self._fatal is not None:  # a run's task failed during the claim: start nothing
            return
        if run is None:
            # A delayed run (`run_at`, a retry's back-off) is claimable once its time
            # comes: sleep until the earliest, or a wake-up before. The sleep is on the
            # loop's monotonic clock, `not_before` on the wall clock: a long one is cut
            # into pieces, so a wall clock stepped forward (NTP at boot) delays the run
            # by at most a piece.
            not_before = await self.store.next_not_before()
            timeout = (
                None
                if not_before is None
                else min(WALL_CLOCK_RECHECK, max(0.0, (not_before - now_ms()) / 1000))
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            return
        self._spawn(run, self.executor.execute)

    def _spawn(self, run: Run, step: Step) -> None:
        if run.id not in self._active:  # (a reconcile retried after a partial failure)
            task = asyncio.create_task(self._execute(run, step), name=f"run-{run.id}")
            task.add_done_callback(self._run_task_done)
            self._active[run.id] = task

    def _run_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._fatal is not None:
            return
        e = task.exception()
        if e is None:
            return
        self._fatal = RunTaskFailed(f"{task.get_name()}: {type(e).__name__}: {_describe(e)}")
        self._fatal.__cause__ = e
        self.wake()

    async def _execute(self, run: Run, step: Step) -> None:
        # A run's task survives its own errors: the engine or the database not
        # answering leaves the run pending and backs the whole loop off (they are
        # down for every run); a bug fails a pending run, and a running one stays
        # owned (its slot held) and is watched again, since its container may be
        # running on.
        delay = BACKOFF_FIRST
        try:
            while True:
                try:
                    await step(run)
                    self._backoff = 0.0
                    return
                except Exception as e:
                    if is_database_damaged(e):
                        raise  # the daemon exits: no run can be recorded any more
                    if await self._stays_pending(run, e):
                        return
                    log.exception("run %s: unexpected error in the executor", run.id)
                if not await self._fail_after_bug(run):
                    return
                log.warning("run %s is still running: watching it again in %.1f s", run.id, delay)
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)
                step = self.executor.recover
        finally:
            self._active.pop(run.id, None)
            self.wake()

    async def _stays_pending(self, run: Run, e: Exception) -> bool:
        """True when `e` is the engine or the database not answering and the run is
        still pending: it is claimed again after the back-off."""
        if isinstance(e, EngineUnavailable):
            why = str(e)
        elif is_store_fault(e):
            why = f"the database failed: {_describe(e)}"
            current = await retry_store(
                f"run {run.id}: reading it", lambda: self.store.get_run(run.id)
            )
            if current is not None and current.status is not Status.PENDING:
                return False  # it started: its container may be running
        else:
            return False
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._backoff * 2))
        self._retry_at = asyncio.get_running_loop().time() + self._backoff
        self._problem = f"run {run.id} stays pending: {why}; retrying in {self._backoff:.1f} s"
        log.warning("%s", self._problem)
        return True

    async def _fail_after_bug(self, run: Run) -> bool:
        """A bug must not leave the run pending (it would be claimed again at once):
        it is recorded failed. True when the run is running: its container may be
        running, so it must neither be recorded `lost` nor lose its slot."""
        current = await retry_store(f"run {run.id}: reading it", lambda: self.store.get_run(run.id))
        if current is None or current.status not in ACTIVE_STATUSES:
            return False
        if current.status is Status.RUNNING:
            return True
        try:
            await retry_store(
                f"run {run.id}: recording its failure",
                lambda: self.store.finish_run(
                    run.id,
                    Status.FAILED,
                    exit_code=None,
                    failure_reason=FailureReason.START_FAILED,
                    error="runnerd hit an internal error running this run; "
                    "the daemon's log has the details.",
                ),
            )
        except Conflict:
            pass
        return False


def _describe(e: BaseException) -> str:
    """An error for a log line or /healthz: its message, or its type without one."""
    return str(e) or type(e).__name__
