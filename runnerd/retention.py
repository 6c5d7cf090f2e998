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
from .store import Store

log = logging.getLogger("runnerd.retention")


class Retention:
    def __init__(self, store: Store, logs: LogStore, config: RetentionConfig) -> None:
        self.store = store
        self.logs = logs
        self.config = config
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.config.max_age_days is not None or self.config.max_runs_per_runner is not None

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
                completed_before=cutoff, keep_per_runner=self.config.max_runs_per_runner)
            if not ids:
                break
            await asyncio.to_thread(self.logs.delete, ids)
            deleted += len(ids)
        if deleted:
            log.info("retention: deleted %d completed runs and their logs", deleted)
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention sweep failed; trying again at the next interval")
            await asyncio.sleep(self.config.sweep_interval_seconds)
