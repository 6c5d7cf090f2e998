"""Schedules: made, listed, changed and deleted through the API (their env stored
encrypted, like a run's), and fired by runnerd.firing — a fire is one write that
makes the slot's run and moves the schedule on, under the runs' UNIQUE
(schedule_id, scheduled_for), so no slot is fired twice."""

from __future__ import annotations

import json
import sqlite3
import uuid
import zoneinfo
from dataclasses import dataclass
from typing import Any

from .. import cron
from ..crypto import SecretBox
from ..models import ConcurrencyPolicy, Run, Schedule, Status, now_ms
from .base import Aggregate
from .errors import NotFound
from .runs import insert_run

# What a client sets on a schedule (parse_schedule's keys), each a column of that name.
SCHEDULE_COLUMNS = (
    "cron",
    "timezone",
    "enabled",
    "env",
    "concurrency_policy",
    "starting_deadline_seconds",
)
# A change of one of these moves next_run_at: it is computed again from now.
_TIMING = frozenset({"cron", "timezone", "enabled"})


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

    async def create_schedule(self, runner_id: str, fields: dict[str, Any]) -> Schedule:
        """A new schedule of the runner (`fields`: every one of SCHEDULE_COLUMNS); its
        `@every` counts from now, and it fires first at its first slot after now (when
        enabled). NotFound for no such runner."""
        now = now_ms()
        schedule_id = str(uuid.uuid4())
        next_run_at = (
            next_slot(fields["cron"], fields["timezone"], now, now) if fields["enabled"] else None
        )
        values = [_column_value(self.box, c, fields[c]) for c in SCHEDULE_COLUMNS]
        box = self.box

        def insert(db: sqlite3.Connection) -> Schedule:
            # Checked in this transaction: the foreign key alone would fail as well, but
            # with no word of which one.
            if db.execute("SELECT 1 FROM runners WHERE id = ?", (runner_id,)).fetchone() is None:
                raise NotFound(runner_id)
            row = db.execute(
                f"INSERT INTO schedules (id, runner_id, {', '.join(SCHEDULE_COLUMNS)},"
                " anchor_at, next_run_at, created_at, updated_at)"
                f" VALUES (?, ?, {', '.join('?' for _ in SCHEDULE_COLUMNS)}, ?, ?, ?, ?)"
                " RETURNING *",
                (schedule_id, runner_id, *values, now, next_run_at, now, now),
            ).fetchone()
            return schedule_from_row(row, box)

        return await self._db.write(insert)

    async def list_schedules(self, runner_id: str) -> list[Schedule]:
        """The runner's schedules, oldest first."""
        rows = await self._db.all(
            "SELECT * FROM schedules WHERE runner_id = ? ORDER BY created_at, rowid",
            (runner_id,),
        )
        return [schedule_from_row(r, self.box) for r in rows]

    async def get_schedule(self, runner_id: str, schedule_id: str) -> Schedule | None:
        """None for no such schedule, or one of another runner."""
        row = await self._db.lookup_one(
            "SELECT * FROM schedules WHERE id = ? AND runner_id = ?", (schedule_id, runner_id)
        )
        return schedule_from_row(row, self.box) if row else None

    async def update_schedule(
        self, runner_id: str, schedule_id: str, fields: dict[str, Any]
    ) -> Schedule:
        """Set the given columns, in one write, and return the schedule as it is after
        it. A changed `cron` counts `@every` from now; a changed `cron`, `timezone` or
        `enabled` computes `next_run_at` again from now (null when disabled), so slots
        that passed while it was paused are never fired. Anything else leaves
        `next_run_at` as it is: a fire's compare-and-set on it goes through.
        NotFound for no such schedule of the runner."""
        now = now_ms()
        columns = [c for c in SCHEDULE_COLUMNS if c in fields]
        values = [_column_value(self.box, c, fields[c]) for c in columns]
        box = self.box

        def update(db: sqlite3.Connection) -> Schedule:
            row = db.execute(
                "SELECT * FROM schedules WHERE id = ? AND runner_id = ?", (schedule_id, runner_id)
            ).fetchone()
            if row is None:
                raise NotFound(schedule_id)
            sets = [f"{c} = ?" for c in columns]
            params: list[Any] = list(values)
            # Read in this transaction, so two PATCHes at once cannot compute from a row
            # the other one has changed.
            after = {c: fields.get(c, row[c]) for c in _TIMING}
            changed = {c for c in _TIMING if c in fields and fields[c] != _as_given(c, row[c])}
            if "cron" in changed:
                sets.append("anchor_at = ?")
                params.append(now)
            if changed:
                anchor = now if "cron" in changed else row["anchor_at"]
                sets.append("next_run_at = ?")
                params.append(
                    next_slot(after["cron"], after["timezone"], now, anchor)
                    if after["enabled"]
                    else None
                )
            updated: sqlite3.Row = db.execute(
                f"UPDATE schedules SET {''.join(s + ', ' for s in sets)}updated_at = ?"
                " WHERE id = ? RETURNING *",
                (*params, now, schedule_id),
            ).fetchone()
            return schedule_from_row(updated, box)

        return await self._db.write(update)

    async def delete_schedule(self, runner_id: str, schedule_id: str) -> bool:
        """False for no such schedule of the runner. Its runs stay (with their
        `schedule_id`), as a deleted runner's would not."""

        def delete(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "DELETE FROM schedules WHERE id = ? AND runner_id = ?", (schedule_id, runner_id)
            )
            return cur.rowcount > 0

        return await self._db.write(delete)

    async def schedule_ids_of_runner(self, runner_id: str) -> list[str]:
        """For a runner delete: its schedules go with it (the foreign key cascades),
        and the firing loop is told which."""
        rows = await self._db.all("SELECT id FROM schedules WHERE runner_id = ?", (runner_id,))
        return [r[0] for r in rows]

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
        return schedule_from_row(row, self.box) if row is not None else None

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
                (run.scheduled_for, run.id, schedule_id),  # the slot, as the API says
            )
            return Fired(advanced=True, run=run)

        return await self._db.write(write)


def next_slot(expression: str, timezone: str, after_ms: int, anchor_ms: int) -> int | None:
    """The first slot of the schedule strictly after `after_ms`; None when the
    expression never matches again."""
    return cron.parse(expression).next_after(after_ms, zoneinfo.ZoneInfo(timezone), anchor_ms)


def _column_value(box: SecretBox, column: str, value: Any) -> Any:
    if column == "env":
        return box.encrypt(json.dumps([list(pair) for pair in value]))
    if column == "concurrency_policy":
        return ConcurrencyPolicy(value).value
    if column == "enabled":
        return int(bool(value))
    return value


def _as_given(column: str, stored: Any) -> Any:
    """A stored timing column as parse_schedule gives it, to tell a change."""
    return bool(stored) if column == "enabled" else stored


def schedule_from_row(row: sqlite3.Row, box: SecretBox) -> Schedule:
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
