"""Schedules firing: the loop that makes each schedule's run at its slot.

In memory it holds only (next_run_at, schedule_id) of the enabled schedules: a
heap, and a dict of each schedule's current next_run_at, so an entry a change
made stale is skipped when it comes up (nothing is rebuilt). The loop sleeps
until the heap's top or a change (`changed()`, `removed()`): no scan, no tick,
so 10,000 schedules cost in proportion to what fires.

A fire reads the schedule and its runner afresh, decides which slot fires (the
latest one inside `starting_deadline_seconds`; older ones are missed, counted),
applies `concurrency_policy`, and makes the run in one write that moves the
schedule on only if it is still at the slot the fire was for (store.fire_schedule).
That compare-and-set and the runs' UNIQUE (schedule_id, scheduled_for) make every
slot fire at most once, whatever restarts, kills or racing loops do; the write
being one commit makes it fire at least once inside the deadline.

Fires due at the same moment run side by side (bounded), so the store's group
commit takes them in one transaction. A database that cannot serve (locked,
full) backs a fire off and it is tried again; anything else ends the loop, and
the daemon, which supervises `task`, exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import zoneinfo
from datetime import tzinfo
from typing import Protocol

from . import cron, metrics, triggers
from .config import Config
from .engine import EngineError
from .models import ConcurrencyPolicy, Run, Schedule, Status, Trigger, now_ms
from .retry import retry_store
from .scheduler import WALL_CLOCK_RECHECK, Scheduler
from .store import Store
from .timefmt import format_ms

log = logging.getLogger("runnerd.firing")

FIRES_AT_ONCE = 32  # fires in flight together: enough for one group commit to take many
# The loop's own lateness (a busy event loop, a slow commit) is not a missed fire:
# a slot is fired if it is at most this late, even with starting_deadline_seconds 0.
ON_TIME_MS = 1000
REPLACED = "Replaced by the schedule's next fire."


class Clock(Protocol):
    """What the loop asks of time (tests give it one they move by hand)."""

    def now(self) -> int:
        """Milliseconds since the epoch."""
        ...

    async def wait(self, event: asyncio.Event, until: int | None) -> None:
        """Return when `event` is set or the time `until` has come (None: no limit)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> int:
        return now_ms()

    async def wait(self, event: asyncio.Event, until: int | None) -> None:
        # Slots are wall-clock times, the sleep is on the loop's monotonic clock: a
        # long wait is cut into pieces (the loop looks again after each), so a wall
        # clock stepped forward (NTP at boot) delays a fire by at most a piece.
        timeout = (
            None if until is None else min(WALL_CLOCK_RECHECK, max(0.0, (until - now_ms()) / 1000))
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Firing:
    def __init__(
        self,
        store: Store,
        config: Config,
        scheduler: Scheduler,
        *,
        clock: Clock | None = None,
        fires_at_once: int = FIRES_AT_ONCE,
    ) -> None:
        self.store = store
        self.config = config
        self.scheduler = scheduler
        self.clock: Clock = clock or RealClock()
        self._task: asyncio.Task[None] | None = None
        self._heap: list[tuple[int, str]] = []
        self._next: dict[str, int] = {}  # schedule id → its next_run_at: the heap's live entries
        self._wakeup = asyncio.Event()
        self._fires: set[asyncio.Task[None]] = set()
        self._room = asyncio.Semaphore(fires_at_once)
        self._fatal: BaseException | None = None  # a fire failed in a way no retry fixes
        self.loaded = asyncio.Event()  # the enabled schedules are in memory

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
        fires, self._fires = list(self._fires), set()
        for fire in fires:
            fire.cancel()
        await asyncio.gather(*fires, return_exceptions=True)

    def changed(self, schedule: Schedule) -> None:
        """A schedule was created or changed (its `next_run_at` is the store's)."""
        self._follow(schedule)

    def removed(self, schedule_id: str) -> None:
        """A schedule was deleted (or its runner was)."""
        self._forget(schedule_id)

    def _follow(self, schedule: Schedule) -> None:
        """Expect the schedule at its next_run_at (as stored), or not at all."""
        if schedule.enabled and schedule.next_run_at is not None:
            self._expect(schedule.id, schedule.next_run_at)
        else:
            self._forget(schedule.id)

    def _forget(self, schedule_id: str) -> None:
        self._next.pop(schedule_id, None)  # its heap entries are skipped when they come up

    def _expect(self, schedule_id: str, at: int) -> None:
        if self._next.get(schedule_id) == at:
            return
        self._next[schedule_id] = at
        heapq.heappush(self._heap, (at, schedule_id))
        if len(self._heap) > 2 * len(self._next) + 1024:
            # Mostly stale entries (schedules changed again and again before firing):
            # keep the heap in proportion to the schedules.
            self._heap = [(t, s) for s, t in self._next.items()]
            heapq.heapify(self._heap)
        self._wakeup.set()

    # -- the loop -------------------------------------------------------------------

    async def _loop(self) -> None:
        due = await retry_store(
            "schedules: loading them", self.store.schedules_due, log, self.clock.sleep
        )
        for schedule_id, at in due:
            if schedule_id not in self._next:  # a change made meanwhile is newer
                self._next[schedule_id] = at
                self._heap.append((at, schedule_id))
        heapq.heapify(self._heap)
        self.loaded.set()
        log.info("schedules: %d enabled", len(self._next))
        while True:
            if self._fatal is not None:
                raise self._fatal
            self._wakeup.clear()  # before looking, so a change meanwhile wakes the wait
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                at, schedule_id = heapq.heappop(self._heap)
                if self._next.get(schedule_id) != at:
                    continue  # stale: changed, removed, or a repeat of an entry just taken
                del self._next[schedule_id]  # until the fire says where it goes next
                self._spawn(schedule_id, at)
            top = self._heap[0][0] if self._heap else None
            await self.clock.wait(self._wakeup, top)

    def _spawn(self, schedule_id: str, due: int) -> None:
        task = asyncio.create_task(self._fire(schedule_id, due), name=f"fire-{schedule_id}")
        self._fires.add(task)
        task.add_done_callback(self._fire_done)

    def _fire_done(self, task: asyncio.Task[None]) -> None:
        self._fires.discard(task)
        if task.cancelled() or self._fatal is not None:
            return
        e = task.exception()
        if e is not None:
            self._fatal = e
            self._wakeup.set()

    async def _fire(self, schedule_id: str, due: int) -> None:
        async with self._room:
            await retry_store(
                f"schedule {schedule_id}: firing",
                lambda: self._fire_once(schedule_id, due),
                log,
                self.clock.sleep,
            )

    async def _fire_once(self, schedule_id: str, due: int) -> None:
        """Fire `schedule_id` for its slot `due` (its next_run_at when the loop took
        it): make the run of the slot that fires, if one does, and move it on."""
        schedule = await self.store.schedule_to_fire(schedule_id)
        if schedule is None:
            return  # deleted
        if not schedule.enabled or schedule.next_run_at != due:
            self._follow(schedule)  # changed since: follow the store
            return
        found = await self.store.runner_for_run(schedule.runner_id)
        now = self.clock.now()
        try:
            cadence = _cadence(schedule.cron)
            zone = _zone(schedule.timezone)
        except (cron.CronError, ValueError, zoneinfo.ZoneInfoNotFoundError) as e:
            # Accepted when it was made, refused now (the zone database changed): the
            # schedule waits for a PATCH rather than failing the loop for everyone.
            log.warning("schedule %s cannot fire: %s; PATCH its cron or timezone", schedule.id, e)
            await self._write(schedule, due, None, 0, None, skipped="not_triggerable")
            return
        latest, count = cadence.slots_in(due, now, zone, schedule.anchor_at)
        window = max(schedule.starting_deadline_seconds * 1000, ON_TIME_MS)
        slot = latest if latest is not None and now - latest <= window else None
        missed = count - 1 if slot is not None else count
        next_run_at = cadence.next_after(now, zone, schedule.anchor_at)
        if slot is None:
            await self._write(schedule, due, next_run_at, missed, None)
            return
        if found is None:
            log.warning(
                "schedule %s: the fire for %s is skipped: its runner is gone",
                schedule.id,
                self._at(slot),
            )
            await self._write(schedule, due, next_run_at, missed, None, skipped="not_triggerable")
            return
        try:
            prepared = triggers.prepare(found, self.config, schedule.env)
        except triggers.NotTriggerable as e:
            log.warning(
                "schedule %s: the fire for %s is skipped: %s", schedule.id, self._at(slot), e
            )
            await self._write(schedule, due, next_run_at, missed, None, skipped="not_triggerable")
            return
        if schedule.concurrency_policy is not ConcurrencyPolicy.ALLOW:
            active = await self.store.active_schedule_runs(schedule.id)
            if active and schedule.concurrency_policy is ConcurrencyPolicy.FORBID:
                log.info(
                    "schedule %s: the fire for %s is skipped: its run %s is still %s"
                    " (concurrency_policy forbid)",
                    schedule.id,
                    self._at(slot),
                    active[0][0],
                    active[0][1].value,
                )
                await self._write(schedule, due, next_run_at, missed, None, skipped="forbid")
                return
            if active:
                await self._replace(schedule, active)
        run = prepared.run(
            now=self.clock.now(),  # created_at: right before the write
            trigger=Trigger.SCHEDULE,
            schedule_id=schedule.id,
            scheduled_for=slot,
        )
        await self._write(schedule, due, next_run_at, missed, run)

    async def _write(
        self,
        schedule: Schedule,
        due: int,
        next_run_at: int | None,
        missed: int,
        run: Run | None,
        *,
        skipped: str | None = None,
    ) -> None:
        """The fire's one write, then what follows it here: the schedule's next
        entry, the metrics and log lines (only for the loop whose write it was)."""
        fired = await self.store.fire_schedule(
            schedule.id, due=due, next_run_at=next_run_at, missed=missed, run=run
        )
        if not fired.advanced:
            # Moved meanwhile (a change through the API, another loop): follow the store.
            current = await self.store.schedule_to_fire(schedule.id)
            if current is not None:
                self._follow(current)
            return
        if next_run_at is not None:
            self._expect(schedule.id, next_run_at)
        if missed:
            metrics.schedule_missed(missed)
            log.info(
                "schedule %s: %d slot%s missed while runnerd was down or busy (since %s); %s",
                schedule.id,
                missed,
                "" if missed == 1 else "s",
                self._at(due),
                "the latest fires"
                if run is not None or skipped is not None
                else f"none was inside starting_deadline_seconds "
                f"({schedule.starting_deadline_seconds})",
            )
        if skipped is not None:
            metrics.schedule_skipped(skipped)
        if fired.run is not None:
            metrics.schedule_fired()
            log.info(
                "schedule %s fired run %s for %s",
                schedule.id,
                fired.run.id,
                self._at(fired.run.scheduled_for),
            )
            self.scheduler.wake()

    async def _replace(self, schedule: Schedule, active: list[tuple[str, Status]]) -> None:
        """concurrency_policy replace: cancel the schedule's active runs before its
        new one is made (a pending one at once; a running one stopped, waited for)."""
        log.info(
            "schedule %s: replacing its run%s %s (concurrency_policy replace)",
            schedule.id,
            "" if len(active) == 1 else "s",
            ", ".join(run_id for run_id, _ in active),
        )
        wait = self.config.docker.stop_grace_seconds + 5

        async def cancel(run_id: str, status: Status) -> None:
            if status is Status.PENDING:
                if await self.store.cancel_pending(run_id, REPLACED) is not None:
                    # If it was being started (pulling, creating), that stops now.
                    await self.scheduler.cancel(run_id, REPLACED, wait_seconds=0)
                    return
            try:  # running (or it started meanwhile)
                stopped = await self.scheduler.cancel(run_id, REPLACED, wait_seconds=wait)
            except EngineError as e:
                log.warning("schedule %s: run %s could not be stopped: %s", schedule.id, run_id, e)
                return
            if not stopped:
                log.warning(
                    "schedule %s: run %s could not be stopped now (it is starting, or"
                    " being re-attached); the new run is made anyway",
                    schedule.id,
                    run_id,
                )

        await asyncio.gather(*(cancel(run_id, status) for run_id, status in active))

    def _at(self, ms: int | None) -> str:
        return format_ms(ms, self.config.tz) or "-"


@functools.lru_cache(maxsize=4096)
def _cadence(expr: str) -> cron.Cadence:
    return cron.parse(expr)  # a fire must not re-read its expression each time


def _zone(name: str) -> tzinfo:
    return zoneinfo.ZoneInfo(name)  # ZoneInfo keeps its own cache
