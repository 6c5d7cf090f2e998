"""Retention: completed runs past `[retention]` limits are deleted with their logs.

A periodic sweep, retroactive (it applies to runs completed before the limits
were set) and batched, so it never holds the database for long. Pending and
running runs are never touched.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .config import RetentionConfig
from .logs import LogStore
from .retry import is_store_fault
from .store import RunStore

log = logging.getLogger("runnerd.retention")

RETRY_FIRST = 1.0  # a failed sweep is tried again after this, doubling up to the interval


class Retention:
    def __init__(self, store: RunStore, logs: LogStore, config: RetentionConfig) -> None:
        self.store = store
        self.logs = logs
        self.config = config
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.config.max_age_days is not None or self.config.max_runs_per_runner is not None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The sweep loop's task (None when retention is off), for the daemon to supervise."""
        return self._task

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._loop(), name="runnerd-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def sweep(self) -> int:
        """Delete everything past the limits now; how many runs were deleted."""
        cutoff = None
        if self.config.max_age_days is not None:
            cutoff = int((time.time() - self.config.max_age_days * 86400) * 1000)
        deleted = 0
        while True:
            ids = await self.store.delete_expired_runs(
                completed_before=cutoff, keep_per_runner=self.config.max_runs_per_runner
            )
            if not ids:
                break
            await asyncio.to_thread(self.logs.delete, ids)
            deleted += len(ids)
        if deleted:
            log.info("retention: deleted %d completed runs and their logs", deleted)
        return deleted

    async def _loop(self) -> None:
        # Survives every error: a warning (with a traceback when it is not the
        # database failing), then the sweep is tried again sooner than the next
        # interval, backing off up to it. Deleting can always wait.
        delay = RETRY_FIRST
        while True:
            try:
                await self.sweep()
                delay = RETRY_FIRST
                wait = self.config.sweep_interval_seconds
            except asyncio.CancelledError:
                raise
            except Exception as e:
                wait = min(delay, self.config.sweep_interval_seconds)
                delay = wait * 2
                log.warning(
                    "retention sweep failed: %s; trying again in %.0f s",
                    str(e) or type(e).__name__,
                    wait,
                    exc_info=not is_store_fault(e),
                )
            await asyncio.sleep(wait)
