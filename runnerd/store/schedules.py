"""Schedules: made, listed, changed and deleted through the API (their env stored
encrypted, like a run's), and fired by runnerd.firing — a fire is one write that
makes the slot's run and moves the schedule on, under the runs' UNIQUE
(schedule_id, scheduled_for), so no slot is fired twice."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from ..crypto import SecretBox
from ..models import ConcurrencyPolicy, Run, Schedule, Status, now_ms
from .base import Aggregate
from .runs import insert_run


@dataclass(frozen=True)
class Fired:
    """What `fire_schedule` did. `advanced`: the schedule was still at the slot the
    fire was for, and now points at its next one (False: someone else moved it: a
    change through the API, or another loop that fired it first; nothing written).
    `run`: the run made for the slot (None when none was asked for, or the slot
    already had one)."""

    advanced: bool
    run: Run | None = None


class Schedules(Aggregate):
    # -- through the API ----------------------------------------------------------

    # -- firing -------------------------------------------------------------------

    async def schedules_due(self) -> list[tuple[str, int]]:
        """(id, next_run_at) of every enabled schedule that fires again, soonest
        first: what the firing loop holds in memory (on the index schedules_due)."""
        rows = await self._db.all(
            "SELECT id, next_run_at FROM schedules"
            " WHERE enabled AND next_run_at IS NOT NULL ORDER BY next_run_at"
        )
        return [(r[0], r[1]) for r in rows]

    async def schedule_to_fire(self, schedule_id: str) -> Schedule | None:
        """A schedule as it is now, by its id alone (the firing loop knows no runner)."""
        row = await self._db.lookup_one("SELECT * FROM schedules WHERE id = ?", (schedule_id,))
        return _schedule_from_row(row, self.box) if row is not None else None

    async def active_schedule_runs(self, schedule_id: str) -> list[tuple[str, Status]]:
        """(id, status) of the runs this schedule fired (and their retries) that are
        pending or running: what concurrency_policy forbid and replace look at."""

        def read(db: sqlite3.Connection) -> list[tuple[str, Status]]:
            return [
                (r[0], Status(r[1]))
                for r in db.execute(
                    "SELECT id, status FROM runs WHERE schedule_id = ?"
                    " AND status IN ('pending', 'running') ORDER BY seq",
                    (schedule_id,),
                )
            ]

        return await self._db.lookup(read, snapshot=False)  # a few rows, on runs_by_schedule

    async def fire_schedule(
        self,
        schedule_id: str,
        *,
        due: int,
        next_run_at: int | None,
        missed: int,
        run: Run | None,
    ) -> Fired:
        """One fire, one write: only if the schedule is still enabled and at `due`,
        move it to `next_run_at`, add `missed` to its missed_count and, with a `run`
        (made for one of its slots: `run.scheduled_for`), insert it and record it as
        the last. The compare-and-set and the runs' UNIQUE (schedule_id,
        scheduled_for) make a slot's run once, whatever loops or restarts race."""
        sealed_env = None if run is None else self.box.encrypt(json.dumps(list(run.env)))
        now = now_ms()

        def write(db: sqlite3.Connection) -> Fired:
            moved = db.execute(
                "UPDATE schedules SET next_run_at = ?, missed_count = missed_count + ?,"
                " updated_at = ? WHERE id = ? AND next_run_at = ? AND enabled",
                (next_run_at, missed, now, schedule_id, due),
            ).rowcount
            if not moved:
                return Fired(advanced=False)
            if run is None or sealed_env is None or not insert_run(db, run, sealed_env):
                return Fired(advanced=True)
            db.execute(
                "UPDATE schedules SET last_run_at = ?, last_run_id = ? WHERE id = ?",
                (run.created_at, run.id, schedule_id),
            )
            return Fired(advanced=True, run=run)

        return await self._db.write(write)


def _schedule_from_row(row: sqlite3.Row, box: SecretBox) -> Schedule:
    # The firing section's own reading of a row (part *sched* writes the shared
    # `schedule_from_row`; the two become one when both are on main).
    return Schedule(
        id=row["id"],
        runner_id=row["runner_id"],
        cron=row["cron"],
        timezone=row["timezone"],
        enabled=bool(row["enabled"]),
        env=[(k, v) for k, v in json.loads(box.decrypt(row["env"]))],
        concurrency_policy=ConcurrencyPolicy(row["concurrency_policy"]),
        starting_deadline_seconds=row["starting_deadline_seconds"],
        anchor_at=row["anchor_at"],
        next_run_at=row["next_run_at"],
        last_run_at=row["last_run_at"],
        last_run_id=row["last_run_id"],
        missed_count=row["missed_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
