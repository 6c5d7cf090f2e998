"""The dashboard's aggregates: the figures the Overview and Runners pages show that
no single API resource holds (the last 24 hours' totals, active runs across all
runners, the next fires, the latest failures, each runner's recent record). Every
query is bounded and read by an index, so a page stays fast with a million runs."""

from __future__ import annotations

import sqlite3
import statistics
from dataclasses import dataclass

from ..models import Run, Schedule, Status
from .base import Aggregate
from .runs import run_from_row
from .schedules import schedule_from_row

DAY_MS = 24 * 3600 * 1000
RECENT_RUNS = 50  # a runner's record: its last 50 completed runs


@dataclass(frozen=True)
class Totals:
    """Runs that completed since `since` (ms)."""

    since: int
    succeeded: int
    failed: int
    median_ms: float | None  # completed_at − started_at, of those that started

    @property
    def completed(self) -> int:
        return self.succeeded + self.failed

    @property
    def success_rate(self) -> float | None:
        """0..1; None with nothing completed."""
        return self.succeeded / self.completed if self.completed else None


@dataclass(frozen=True)
class RunnerRecord:
    """A runner's line on the Runners page."""

    runner_id: str
    last_status: Status | None  # of its newest run (active or not); None: never run
    next_fire: int | None  # the soonest next_run_at of its enabled schedules
    recent: int  # how many completed runs the two figures are over (≤ RECENT_RUNS)
    success_rate: float | None  # 0..1 over `recent`
    median_ms: float | None  # over those of `recent` that started


def _median_of(durations: list[int]) -> float | None:
    return float(statistics.median(durations)) if durations else None


class Dashboard(Aggregate):
    async def totals_since(self, since: int) -> Totals:
        """Succeeded/failed counts of the runs completed at `since` or later, and the
        exact median duration of those that started (a run canceled while pending
        never did)."""

        def read(db: sqlite3.Connection) -> Totals:
            # Both statements read only the covering index runs_outcomes (completed_at,
            # status, started_at): with 86,400 runs in the window (one a second) the
            # counts take ~6 ms and the median's sort ~9 ms, so it can stay exact.
            completed, failed, started = db.execute(
                "SELECT count(*), coalesce(sum(status = 'failed'), 0), count(started_at)"
                " FROM runs WHERE status IN ('succeeded', 'failed') AND completed_at >= ?",
                (since,),
            ).fetchone()
            median = None
            if started:
                # The middle one (odd count) or the middle two (even count).
                middle = [
                    d
                    for (d,) in db.execute(
                        "SELECT completed_at - started_at AS d FROM runs"
                        " WHERE status IN ('succeeded', 'failed') AND completed_at >= ?"
                        " AND started_at IS NOT NULL ORDER BY d LIMIT ? OFFSET ?",
                        (since, 2 - started % 2, (started - 1) // 2),
                    )
                ]
                median = sum(middle) / len(middle)
            return Totals(
                since=since, succeeded=completed - failed, failed=failed, median_ms=median
            )

        return await self._db.read(read)

    async def active_runs(self, limit: int = 100) -> list[tuple[Run, str]]:
        """Pending and running runs of every runner, oldest first, with their runner's name."""
        rows = await self._db.all(
            "SELECT r.*, n.name AS runner_name FROM runs r JOIN runners n ON n.id = r.runner_id"
            " WHERE r.status IN ('pending', 'running') ORDER BY r.seq LIMIT ?",
            (limit,),
        )
        return [(run_from_row(row, self.box), row["runner_name"]) for row in rows]

    async def next_fires(self, limit: int = 10) -> list[tuple[Schedule, str]]:
        """Enabled schedules by their next slot, soonest first, with their runner's name."""
        rows = await self._db.all(
            "SELECT s.*, n.name AS runner_name FROM schedules s"
            " JOIN runners n ON n.id = s.runner_id"
            " WHERE s.enabled AND s.next_run_at IS NOT NULL ORDER BY s.next_run_at LIMIT ?",
            (limit,),
        )
        return [(schedule_from_row(row, self.box), row["runner_name"]) for row in rows]

    async def latest_failures(self, limit: int = 10) -> list[tuple[Run, str]]:
        """Failed runs, the latest completed first, with their runner's name."""
        rows = await self._db.all(
            "SELECT r.*, n.name AS runner_name FROM runs r JOIN runners n ON n.id = r.runner_id"
            " WHERE r.status = 'failed' ORDER BY r.completed_at DESC LIMIT ?",
            (limit,),
        )
        return [(run_from_row(row, self.box), row["runner_name"]) for row in rows]

    async def runner_records(self, recent: int = RECENT_RUNS) -> dict[str, RunnerRecord]:
        """Each runner's record by its id: newest run's status, next fire, success
        rate and median duration of its last `recent` completed runs."""

        def read(db: sqlite3.Connection) -> dict[str, RunnerRecord]:
            records = {}
            next_fires = dict(
                db.execute(
                    "SELECT runner_id, min(next_run_at) FROM schedules"
                    " WHERE enabled AND next_run_at IS NOT NULL GROUP BY runner_id"
                ).fetchall()
            )
            for (runner_id,) in db.execute("SELECT id FROM runners").fetchall():
                last = db.execute(
                    "SELECT status FROM runs WHERE runner_id = ? ORDER BY seq DESC LIMIT 1",
                    (runner_id,),
                ).fetchone()
                # By runs_by_runner (runner_id, seq), newest first: only the few
                # active runs are read and skipped.
                rows = db.execute(
                    "SELECT status, completed_at - started_at FROM runs"
                    " WHERE runner_id = ? AND status IN ('succeeded', 'failed')"
                    " ORDER BY seq DESC LIMIT ?",
                    (runner_id, recent),
                ).fetchall()
                succeeded = sum(1 for status, _ in rows if status == "succeeded")
                records[runner_id] = RunnerRecord(
                    runner_id=runner_id,
                    last_status=Status(last[0]) if last else None,
                    next_fire=next_fires.get(runner_id),
                    recent=len(rows),
                    success_rate=succeeded / len(rows) if rows else None,
                    median_ms=_median_of([d for _, d in rows if d is not None]),
                )
            return records

        return await self._db.read(read)
