"""Schedules firing: the loop that makes each schedule's run at its slot.

(Being written for #12: the interface below is what the API and the daemon use.)
"""

from __future__ import annotations

import asyncio
import logging

from .config import Config
from .models import Schedule
from .scheduler import Scheduler
from .store import Store

log = logging.getLogger("runnerd.firing")


class Firing:
    def __init__(self, store: Store, config: Config, scheduler: Scheduler) -> None:
        self.store = store
        self.config = config
        self.scheduler = scheduler
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The loop's task, for the daemon to supervise."""
        return self._task

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="runnerd-firing")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def changed(self, schedule: Schedule) -> None:
        """A schedule was created or changed (its `next_run_at` is the store's)."""

    def removed(self, schedule_id: str) -> None:
        """A schedule was deleted (or its runner was)."""

    async def _loop(self) -> None:
        await asyncio.Event().wait()
