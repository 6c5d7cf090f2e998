"""Queue policy: which pending run starts next, and how many run at once.

One loop claims pending runs oldest first while a slot of the global semaphore
is free and hands each to the executor in a task of its own. A trigger wakes it
at once (`wake()`); there is no polling delay. When the engine does not answer,
the run stays pending and the loop backs off before trying again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .engine import EngineUnavailable
from .models import ACTIVE_STATUSES, FailureReason, Run, Status
from .store import Conflict, Store

log = logging.getLogger("runnerd.scheduler")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


class RunExecutor(Protocol):
    async def execute(self, run: Run) -> Run: ...


class Scheduler:
    def __init__(self, store: Store, executor: RunExecutor, *, max_concurrent_runs: int) -> None:
        self.store = store
        self.executor = executor
        self.max_concurrent_runs = max_concurrent_runs
        self._slots = asyncio.Semaphore(max_concurrent_runs)
        self._wakeup = asyncio.Event()
        self._active: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._backoff = 0.0

    @property
    def active_run_ids(self) -> set[str]:
        return set(self._active)

    def wake(self) -> None:
        """A run was queued (or a slot may have freed): look at the queue now."""
        self._wakeup.set()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="runnerd-scheduler")

    async def stop(self) -> None:
        """Stop claiming runs and cancel the ones in flight (their containers stay
        as they are; their runs stay as the store has them)."""
        tasks = [t for t in (self._loop_task, *self._active.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self._claim_and_start()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler step failed; retrying in %.0f s", BACKOFF_MAX)
                await asyncio.sleep(BACKOFF_MAX)

    async def _claim_and_start(self) -> None:
        await self._slots.acquire()
        try:
            if self._backoff:
                await asyncio.sleep(self._backoff)  # the engine is down: triggers can wait
            self._wakeup.clear()  # before the query, so a trigger during it is not missed
            run = await self.store.next_pending(exclude=self._active)
        except BaseException:
            self._slots.release()
            raise
        if run is None:
            self._slots.release()
            await self._wakeup.wait()
            return
        self._active[run.id] = asyncio.create_task(self._execute(run), name=f"run-{run.id}")

    async def _execute(self, run: Run) -> None:
        try:
            await self.executor.execute(run)
            self._backoff = 0.0
        except EngineUnavailable as e:
            self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._backoff * 2))
            log.warning("run %s stays pending: %s; retrying in %.1f s", run.id, e, self._backoff)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s: unexpected error in the executor", run.id)
            await self._fail_after_bug(run)
        finally:
            self._active.pop(run.id, None)
            self._slots.release()
            self.wake()

    async def _fail_after_bug(self, run: Run) -> None:
        """A bug must not leave the run pending (it would be claimed again at once)."""
        current = await self.store.get_run(run.id)
        if current is None or current.status not in ACTIVE_STATUSES:
            return
        reason = FailureReason.START_FAILED if current.status is Status.PENDING \
            else FailureReason.LOST
        try:
            await self.store.finish_run(
                run.id, Status.FAILED, exit_code=None, failure_reason=reason,
                error="runnerd hit an internal error running this run; "
                      "the daemon's log has the details.")
        except Conflict:
            pass
