"""Runs: queued, claimed, finished, listed, expired. A run's env is stored
encrypted and decrypted only when used (SealedEnv)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from ..crypto import SecretBox
from ..models import (
    ACTIVE_STATUSES,
    NO_RETRIES,
    FailureReason,
    RetryPolicy,
    Run,
    Runner,
    Status,
    Trigger,
    now_ms,
)
from .base import Aggregate, json_or_null
from .errors import Conflict

IDEMPOTENCY_WINDOW_MS = 24 * 3600 * 1000

# Setting a completed run's webhook status: 'pending' when it has a webhook.
WEBHOOK_ON_COMPLETION = "webhook_status = CASE WHEN webhook_url IS NOT NULL THEN 'pending' END"


class Runs(Aggregate):
    # Called with each run that reached its final status, after the commit.
    on_run_completed: list[Callable[[Run], None]]

    async def create_run(
        self,
        runner: Runner,
        env: list[tuple[str, str]],
        cpu: float,
        mem: int,
        pids: int,
        idempotency_key: str | None = None,
        image: str | None = None,
        **queued: Any,
    ) -> tuple[Run, bool]:
        """Queue a run of `runner` with the merged `env` and the instance type's
        limits (`queued`: Run.queued's other keywords: trigger, not_before, …);
        (run, True). With an `idempotency_key` already used for this runner in the
        last 24 hours: (that first run, False) and nothing is queued. The UNIQUE
        index decides, so concurrent requests cannot both insert."""
        now = now_ms()
        run = Run.queued(runner, env, cpu=cpu, mem=mem, pids=pids, image=image, now=now, **queued)
        sealed_env = self.box.encrypt(json.dumps(env))
        box = self.box

        def insert(db: sqlite3.Connection) -> tuple[Run, bool]:
            if idempotency_key is not None:
                # A key older than the window is free again.
                db.execute(
                    "UPDATE runs SET idempotency_key = NULL WHERE runner_id = ?"
                    " AND idempotency_key = ? AND created_at < ?",
                    (runner.id, idempotency_key, now - IDEMPOTENCY_WINDOW_MS),
                )
            if insert_run(db, run, sealed_env, idempotency_key):
                return run, True
            first = db.execute(
                "SELECT * FROM runs WHERE runner_id = ? AND idempotency_key = ?",
                (runner.id, idempotency_key),
            ).fetchone()
            assert first is not None
            return run_from_row(first, box), False

        return await self._db.write(insert)

    async def get_run(self, run_id: str, runner_id: str | None = None) -> Run | None:
        if runner_id is None:
            row = await self._db.lookup_one("SELECT * FROM runs WHERE id = ?", (run_id,))
        else:
            row = await self._db.lookup_one(
                "SELECT * FROM runs WHERE id = ? AND runner_id = ?", (run_id, runner_id)
            )
        return run_from_row(row, self.box) if row else None

    async def list_runs(
        self,
        runner_id: str,
        *,
        limit: int,
        status: Status | None = None,
        trigger: Trigger | None = None,
        before: str | None = None,
    ) -> list[Run] | None:
        """Newest first. `before` is a run id of this runner: only runs queued
        before it; None when there is no such run. Each filter, and the two
        together, has its index (runs_by_runner_status, runs_by_runner_trigger,
        runs_by_runner_status_trigger): a page is one index range however many
        runs the runner has."""
        where = ["runner_id = ?"]
        params: list[Any] = [runner_id]
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if trigger is not None:
            where.append("trigger = ?")
            params.append(trigger.value)

        def read(db: sqlite3.Connection) -> list[sqlite3.Row] | None:
            if before is not None:
                row = db.execute(
                    "SELECT seq FROM runs WHERE id = ? AND runner_id = ?", (before, runner_id)
                ).fetchone()
                if row is None:
                    return None
                where.append("seq < ?")
                params.append(row[0])
            rows: list[sqlite3.Row] = db.execute(
                f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            return rows

        rows = await self._db.lookup(read)  # one page: at most `limit` rows, on an index
        return None if rows is None else [run_from_row(r, self.box) for r in rows]

    async def next_pending(self, in_flight: list[str] | None = None) -> Run | None:
        """The oldest pending run that may start now: its `not_before` (if any) has
        come, it is not already in flight (held by the scheduler), and its runner is
        below its own `max_concurrent_runs`, counting its running runs and its runs in
        flight."""
        in_flight = in_flight or []
        marks = ", ".join("?" for _ in in_flight)  # SQLite takes an empty IN ()
        # `status IN ('pending', 'running')` repeats the partial index's own WHERE:
        # without it SQLite does not use `runs_active` and scans the whole table.
        # A runner's count is its running runs (on the index) plus its in-flight
        # runs not yet running (looked up by id), so each run counts once.
        row = await self._db.one(
            "SELECT r.* FROM runs r JOIN runners n ON n.id = r.runner_id"
            " WHERE r.status = 'pending' AND r.status IN ('pending', 'running')"
            " AND (r.not_before IS NULL OR r.not_before <= ?)"
            f" AND r.id NOT IN ({marks})"
            " AND (n.max_concurrent_runs IS NULL OR n.max_concurrent_runs > ("
            "   SELECT count(*) FROM runs x WHERE x.runner_id = r.runner_id"
            "   AND x.status = 'running')"
            f" + (SELECT count(*) FROM runs y WHERE y.id IN ({marks})"
            "   AND y.runner_id = r.runner_id AND y.status <> 'running'))"
            " ORDER BY r.seq LIMIT 1",
            [now_ms(), *in_flight, *in_flight],
        )
        return run_from_row(row, self.box) if row else None

    async def next_not_before(self) -> int | None:
        """When the earliest pending run that waits for its `not_before` may start
        (a delayed run, a retry's back-off); None when none waits."""
        row = await self._db.one(
            "SELECT min(not_before) FROM runs WHERE status = 'pending'"
            " AND not_before IS NOT NULL AND not_before > ?",
            (now_ms(),),
        )
        return row[0] if row is not None else None

    async def cancel_pending(self, run_id: str, error: str) -> Run | None:
        """Pending → failed/canceled at once; None when it is no longer pending."""
        now = now_ms()

        def update(db: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = db.execute(
                "UPDATE runs SET status = 'failed', failure_reason = 'canceled', error = ?,"
                f" completed_at = ?, updated_at = ?, {WEBHOOK_ON_COMPLETION}"
                " WHERE id = ? AND status = 'pending' RETURNING *",
                (error, now, now, run_id),
            ).fetchone()
            return row

        row = await self._db.write(update)
        if row is None:
            return None
        run = run_from_row(row, self.box)
        self._completed(run)
        return run

    async def latest_retry(self, run_id: str) -> Run | None:
        """The last attempt retrying run `run_id`, following `retry_of` from it (its
        retry, that one's retry, …); None when it has no retry. A pending one is the
        retry still to come, which cancelling `run_id` cancels."""
        row = await self._db.lookup_one(
            "WITH RECURSIVE attempts(id, attempt) AS ("
            " SELECT id, attempt FROM runs WHERE retry_of = ?"
            " UNION ALL SELECT r.id, r.attempt FROM runs r JOIN attempts a ON r.retry_of = a.id)"
            " SELECT * FROM runs WHERE id = (SELECT id FROM attempts ORDER BY attempt DESC"
            " LIMIT 1)",
            (run_id,),
        )
        return run_from_row(row, self.box) if row else None

    async def mark_running(self, run_id: str, container_id: str, started_at: int) -> Run:
        def update(db: sqlite3.Connection) -> sqlite3.Row:
            row: sqlite3.Row | None = db.execute(
                "UPDATE runs SET status = 'running', container_id = ?, started_at = ?,"
                " updated_at = ? WHERE id = ? AND status = 'pending' RETURNING *",
                (container_id, started_at, started_at, run_id),
            ).fetchone()
            if row is None:
                raise Conflict(f"run {run_id} is no longer pending")
            return row

        return run_from_row(await self._db.write(update), self.box)

    async def finish_run(
        self,
        run_id: str,
        status: Status,
        *,
        exit_code: int | None,
        failure_reason: FailureReason | None,
        error: str | None,
        completed_at: int | None = None,
        log_incomplete: bool = False,
    ) -> Run:
        """Move a pending or running run to its final status; never backwards. In
        the same commit, what its end makes (so a crash can neither lose it nor make
        it twice): the retry of a failed attempt that its policy retries (pending
        until its back-off ends), or else, when its runner chains runs on this
        outcome, the mark that they are still to be made (runnerd.chains)."""
        assert status in (Status.SUCCEEDED, Status.FAILED)
        completed_at = completed_at or now_ms()
        box = self.box

        def update(db: sqlite3.Connection) -> sqlite3.Row:
            row: sqlite3.Row | None = db.execute(
                "UPDATE runs SET status = ?, exit_code = ?, failure_reason = ?, error = ?,"
                " log_incomplete = log_incomplete OR ?,"
                f" completed_at = ?, updated_at = ?, {WEBHOOK_ON_COMPLETION}"
                " WHERE id = ? AND status IN (?, ?) RETURNING *",
                (
                    status.value,
                    exit_code,
                    failure_reason.value if failure_reason else None,
                    error,
                    int(log_incomplete),
                    completed_at,
                    completed_at,
                    run_id,
                    *[s.value for s in ACTIVE_STATUSES],
                ),
            ).fetchone()
            if row is None:
                raise Conflict(f"run {run_id} has already completed")
            return _follow_up(db, row, run_from_row(row, box))

        run = run_from_row(await self._db.write(update), self.box)
        self._completed(run)
        return run

    async def mark_log_incomplete(self, run_id: str) -> None:
        """Record that the stored log of this run (finished or not) may miss output.
        Idempotent: marking it again, or marking a run that is gone, changes nothing
        (updated_at moves only on the first mark). Its webhook, if already sent, is
        not sent again: the flag is read from the run afterwards."""
        now = now_ms()

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE runs SET log_incomplete = 1, updated_at = max(updated_at, ?)"
                " WHERE id = ? AND log_incomplete = 0",
                (now, run_id),
            )

        await self._db.write(update)

    async def set_node(self, run_id: str, node: str) -> None:
        """Record the Swarm node the run's container runs on. Only while the run is
        running: nothing for a run pending, finished or gone. Setting the node it
        already has changes nothing (updated_at moves only when the node does)."""
        now = now_ms()

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE runs SET node = ?, updated_at = max(updated_at, ?)"
                " WHERE id = ? AND status = 'running' AND node IS NOT ?",
                (node, now, run_id, node),
            )

        await self._db.write(update)

    def _completed(self, run: Run) -> None:
        for listener in self.on_run_completed:
            listener(run)

    async def count_active(self) -> dict[str, int]:
        """How many runs are pending and running now."""
        rows = await self._db.all(
            "SELECT status, count(*) AS n FROM runs WHERE status IN ('pending', 'running')"
            " GROUP BY status"
        )
        counts = {"pending": 0, "running": 0}
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    async def runs_with_status(self, status: Status) -> list[Run]:
        active = " AND status IN ('pending', 'running')" if status in ACTIVE_STATUSES else ""
        rows = await self._db.all(
            f"SELECT * FROM runs WHERE status = ?{active} ORDER BY seq", (status.value,)
        )
        return [run_from_row(r, self.box) for r in rows]

    # -- chains (runnerd.chains) ------------------------------------------------

    async def pending_chains(self, limit: int) -> list[Run]:
        """Completed runs whose chained runs are still to be made (finish_run
        marked them), oldest completion first."""
        rows = await self._db.all(
            "SELECT * FROM runs WHERE chain_status = 'pending' ORDER BY completed_at LIMIT ?",
            (limit,),
        )
        return [run_from_row(r, self.box) for r in rows]

    async def make_chained(self, parent_id: str, runs: list[Run]) -> list[Run]:
        """In one write: queue each of `runs` (chained runs of the run `parent_id`)
        and clear the parent's mark. A run already made for this parent and runner
        (the UNIQUE index: a second loop, or the same parent again after a crash)
        and a run of a runner deleted meanwhile are left out; returns the runs made."""
        sealed = [(run, self.box.encrypt(json.dumps(list(run.env)))) for run in runs]

        def write(db: sqlite3.Connection) -> list[Run]:
            made = []
            for run, env in sealed:
                if db.execute("SELECT 1 FROM runners WHERE id = ?", (run.runner_id,)).fetchone():
                    if insert_run(db, run, env):
                        made.append(run)
            db.execute("UPDATE runs SET chain_status = NULL WHERE id = ?", (parent_id,))
            return made

        return await self._db.write(write)

    # -- retention ------------------------------------------------------------

    async def delete_expired_runs(
        self, *, completed_before: int | None, keep_per_runner: int | None, batch: int = 500
    ) -> list[str]:
        """Delete up to `batch` completed runs that are past either limit: completed
        before `completed_before`, or beyond the newest `keep_per_runner` completed
        runs of their runner. Pending and running runs are never touched."""
        where = []
        params: list[Any] = []
        if completed_before is not None:
            where.append("(status IN ('succeeded', 'failed') AND completed_at < ?)")
            params.append(completed_before)
        if keep_per_runner is not None:
            where.append(
                "id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER ("
                "  PARTITION BY runner_id ORDER BY seq DESC) AS newer"
                "  FROM runs WHERE status IN ('succeeded', 'failed')) WHERE newer > ?)"
            )
            params.append(keep_per_runner)
        if not where:
            return []

        def delete(db: sqlite3.Connection) -> list[str]:
            ids = [
                r[0]
                for r in db.execute(
                    # A run whose chained runs are still to be made waits for them.
                    f"SELECT id FROM runs WHERE ({' OR '.join(where)}) AND chain_status IS NULL"
                    " LIMIT ?",
                    (*params, batch),
                )
            ]
            db.executemany(
                "DELETE FROM runs WHERE id = ? AND status IN ('succeeded', 'failed')",
                [(i,) for i in ids],
            )
            return ids

        return await self._db.write(delete)


def _follow_up(db: sqlite3.Connection, row: sqlite3.Row, run: Run) -> sqlite3.Row:
    """Inside finish_run's write: the ended `run`'s retry, or its chain mark. The
    row as it is after that."""
    assert run.completed_at is not None
    if run.will_retry:
        retry = run.retry(now=run.completed_at, not_before=run.retry_not_before)
        insert_run(db, retry, row["env"])  # the same sealed env; runs_retry_of: once
        return row
    if run.failure_reason is FailureReason.CANCELED:
        return row  # a cancel is the user's (or shutdown's) stop: nothing follows it
    column = "on_success" if run.status is Status.SUCCEEDED else "on_failure"
    targets = db.execute(f"SELECT {column} FROM runners WHERE id = ?", (run.runner_id,)).fetchone()
    if targets is None or not json.loads(targets[0] or "[]"):
        return row
    marked: sqlite3.Row = db.execute(
        "UPDATE runs SET chain_status = 'pending' WHERE id = ? RETURNING *", (run.id,)
    ).fetchone()
    return marked


# A run's columns as insert_run writes them (seq and status aside).
_INSERTED = (
    "id, runner_id, image, command, argv, entrypoint, env, timeout_seconds, instance_type,"
    " cpu, mem, pids, idempotency_key, webhook_url, container_registry_id, image_pull_policy,"
    " created_at, updated_at, trigger, attempt, retry_of, not_before, schedule_id,"
    " scheduled_for, parent_run_id, retry_policy"
)


def insert_run(
    db: sqlite3.Connection, run: Run, sealed_env: str, idempotency_key: str | None = None
) -> bool:
    """Insert a new pending run (inside the caller's write transaction) and set its
    `seq`; False, inserting nothing, when a UNIQUE index already holds its place:
    the idempotency key, the schedule's slot, the retry of its attempt, or the
    chain's run of this runner for that parent."""
    marks = ", ".join("?" * (_INSERTED.count(",") + 1))
    row = db.execute(
        f"INSERT INTO runs (status, {_INSERTED}) VALUES ('pending', {marks})"
        " ON CONFLICT DO NOTHING RETURNING seq",
        (
            run.id,
            run.runner_id,
            run.image,
            run.command,
            json_or_null(run.argv),
            run.entrypoint,
            sealed_env,
            run.timeout_seconds,
            run.instance_type,
            run.cpu,
            run.mem,
            run.pids,
            idempotency_key,
            run.webhook_url,
            run.container_registry_id,
            run.image_pull_policy,
            run.created_at,
            run.updated_at,
            run.trigger.value,
            run.attempt,
            run.retry_of,
            run.not_before,
            run.schedule_id,
            run.scheduled_for,
            run.parent_run_id,
            _policy_json(run.retry_policy),
        ),
    ).fetchone()
    if row is None:
        return False
    run.seq = row[0]
    return True


def _policy_json(policy: RetryPolicy) -> str | None:
    return None if policy == NO_RETRIES else json.dumps(policy.to_json())


def run_from_row(row: sqlite3.Row, box: SecretBox) -> Run:
    return Run(
        seq=row["seq"],
        id=row["id"],
        runner_id=row["runner_id"],
        status=Status(row["status"]),
        image=row["image"],
        command=row["command"],
        argv=json.loads(row["argv"]) if row["argv"] is not None else None,
        entrypoint=row["entrypoint"],
        env=SealedEnv(box, row["env"]),
        timeout_seconds=row["timeout_seconds"],
        instance_type=row["instance_type"],
        cpu=row["cpu"],
        mem=row["mem"],
        pids=row["pids"],
        exit_code=row["exit_code"],
        failure_reason=FailureReason(row["failure_reason"]) if row["failure_reason"] else None,
        error=row["error"],
        container_id=row["container_id"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        webhook_url=row["webhook_url"],
        webhook_status=row["webhook_status"],
        container_registry_id=row["container_registry_id"],
        image_pull_policy=row["image_pull_policy"] or "if_not_present",
        trigger=Trigger(row["trigger"]),
        attempt=row["attempt"],
        retry_of=row["retry_of"],
        not_before=row["not_before"],
        schedule_id=row["schedule_id"],
        scheduled_for=row["scheduled_for"],
        parent_run_id=row["parent_run_id"],
        retry_policy=RetryPolicy.from_json(
            json.loads(row["retry_policy"]) if row["retry_policy"] else None
        ),
        log_incomplete=bool(row["log_incomplete"]),
        node=row["node"],
    )


class SealedEnv(Sequence[tuple[str, str]]):
    """A run's env as stored (encrypted), decrypted on first use: only the
    executor needs the values, so listing and polling runs never pay for it."""

    def __init__(self, box: SecretBox, sealed: str) -> None:
        self._box = box
        self._sealed = sealed
        self._pairs: list[tuple[str, str]] | None = None

    def _open(self) -> list[tuple[str, str]]:
        if self._pairs is None:
            self._pairs = [(k, v) for k, v in json.loads(self._box.decrypt(self._sealed))]
        return self._pairs

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, str]]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, str] | Sequence[tuple[str, str]]:
        return self._open()[index]

    def __len__(self) -> int:
        return len(self._open())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._open())

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, Sequence) else other)

    def __repr__(self) -> str:
        return f"SealedEnv({len(self)} variables)"  # never the values
