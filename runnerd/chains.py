"""Chains: when a run ends, the runs its runner's `on_success` / `on_failure` name.

finish_run marks a completed run `chain_status = 'pending'` in the commit that
completes it (only its last attempt: a run that will be retried is not marked,
nor a canceled one), so a chain survives a crash. This loop makes the marked
runs' chained runs: for each runner its runner names for that outcome *now*, a
run triggered as the API would trigger it (triggers.prepare), with
RUNNERD_PARENT_RUN_ID and RUNNERD_PARENT_STATUS over the runner's env; then, in
one write, queues them and clears the mark. The UNIQUE (parent_run_id,
runner_id) index makes each chained run exactly once, however often a restart
or a second loop tries again.
"""

from __future__ import annotations

import asyncio
import logging

from . import metrics, triggers
from .config import Config
from .models import FailureReason, Run, Status, Trigger, now_ms
from .retry import is_store_fault
from .scheduler import Scheduler
from .store import Store

log = logging.getLogger("runnerd.chains")

BATCH = 100  # parents read per turn
BACKOFF_FIRST = 1.0  # a turn the database refused is tried again after this,
BACKOFF_MAX = 60.0  # doubling up to this

PARENT_RUN_ID = "RUNNERD_PARENT_RUN_ID"
PARENT_STATUS = "RUNNERD_PARENT_STATUS"


class Chains:
    def __init__(self, store: Store, config: Config, scheduler: Scheduler) -> None:
        self.store = store
        self.config = config
        self.scheduler = scheduler
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The loop's task, for the daemon to supervise."""
        return self._task

    def run_completed(self, run: Run) -> None:
        """Store listener: a run completed; it may have chained runs to make. Only
        wakes the loop: the mark in the store says what is to be made."""
        if not run.will_retry and run.failure_reason is not FailureReason.CANCELED:
            self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="runnerd-chains")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        # The first turn sweeps what a crash left marked. Survives every error:
        # back-off and a warning each time (a traceback when it is not the database
        # failing); the marks wait in the store.
        delay = BACKOFF_FIRST
        while True:
            try:
                self._wakeup.clear()
                parents = await self.store.pending_chains(BATCH)
                for parent in parents:
                    await self.chain(parent)
                delay = BACKOFF_FIRST
                if len(parents) < BATCH:
                    await self._wakeup.wait()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning(
                    "chains: cannot make the chained runs: %s; retrying in %.0f s",
                    str(e) or type(e).__name__,
                    delay,
                    exc_info=not is_store_fault(e),
                )
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)

    async def chain(self, parent: Run) -> list[Run]:
        """Make `parent`'s chained runs (those not made yet) and clear its mark;
        the runs made."""
        found = await self.store.runner_for_run(parent.runner_id)
        parent_name = found[0].name if found is not None else parent.runner_id
        targets: list[str] = []
        if found is not None:
            runner = found[0]
            targets = runner.on_success if parent.status is Status.SUCCEEDED else runner.on_failure
        overrides = [(PARENT_RUN_ID, parent.id), (PARENT_STATUS, parent.status.value)]
        now = now_ms()
        runs: list[Run] = []
        names: dict[str, str] = {}
        for target in targets:
            target_found = await self.store.runner_for_run(target)
            if target_found is None:  # deleted after the parent completed
                log.warning(
                    "run %s of %s %s: chained runner %s no longer exists; skipped",
                    parent.id,
                    parent_name,
                    parent.status.value,
                    target,
                )
                continue
            try:
                prepared = triggers.prepare(target_found, self.config, overrides)
            except triggers.NotTriggerable as e:
                log.warning(
                    "run %s of %s %s: chained runner %s cannot run: %s; skipped",
                    parent.id,
                    parent_name,
                    parent.status.value,
                    target_found[0].name,
                    e,
                )
                continue
            names[target] = target_found[0].name
            runs.append(prepared.run(now=now, trigger=Trigger.CHAIN, parent_run_id=parent.id))
        made = await self.store.make_chained(parent.id, runs)
        for run in made:
            metrics.run_chained(parent)
            log.info(
                "run %s of %s %s: chained run %s of %s",
                parent.id,
                parent_name,
                parent.status.value,
                run.id,
                names[run.runner_id],
            )
        if made:
            self.scheduler.wake()
        return made
