"""An in-memory `RunStore`, for fast unit tests of the scheduler, the executor,
webhooks and retention: the same answers as the SQLite store (the shared
behaviour tests in tests/unit/test_unit_run_store.py prove it), no file, no
threads. Every read returns copies, as the SQLite store returns fresh rows."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

from ..models import (
    ACTIVE_STATUSES,
    NO_RETRIES,
    TERMINAL_STATUSES,
    ContainerRegistry,
    EnvVariable,
    FailureReason,
    Run,
    Runner,
    Status,
    now_ms,
)
from .errors import Conflict, NotFound
from .protocol import RunStore
from .runs import IDEMPOTENCY_WINDOW_MS


async def _round_trip() -> None:
    """Every operation suspends its caller once, as a database round trip does:
    code that works only because a store call never yields would fail here too."""
    await asyncio.sleep(0)


class MemoryStore:
    def __init__(self) -> None:
        self.on_run_completed: list[Callable[[Run], None]] = []
        self.runners: dict[str, Runner] = {}
        self.runs: dict[str, Run] = {}  # in queue order (insertion order)
        self.env: dict[str, list[EnvVariable]] = {}  # by runner id, by key
        self.registries: dict[str, tuple[ContainerRegistry, str]] = {}  # with the password
        self._idempotency: dict[tuple[str, str], str] = {}  # (runner, key) → run id
        self._seq = 0

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, wait_seconds: float | None = None) -> None:
        self.on_run_completed.clear()

    # -- set-up, as the API does it on the SQLite store ------------------------

    async def create_runner(self, fields: dict[str, Any], env: list[tuple[str, str]]) -> Runner:
        """A runner with `fields` and its env variables."""
        await _round_trip()
        now = now_ms()
        values: dict[str, Any] = {f.name: None for f in dataclasses.fields(Runner)}
        values.update(retry_policy=NO_RETRIES, on_success=[], on_failure=[])  # as read back
        values.update(fields, id=str(uuid.uuid4()), created_at=now, updated_at=now)
        values["retry_policy"] = values["retry_policy"] or NO_RETRIES
        runner = Runner(**values)
        self.runners[runner.id] = runner
        self.env[runner.id] = [
            EnvVariable(str(uuid.uuid4()), runner.id, k, v, now, now) for k, v in sorted(env)
        ]
        return copy.deepcopy(runner)

    async def get_runner(self, runner_id: str) -> Runner | None:
        await _round_trip()
        return copy.deepcopy(self.runners.get(runner_id))

    async def create_registry(self, fields: dict[str, str]) -> ContainerRegistry:
        await _round_trip()
        now = now_ms()
        registry = ContainerRegistry(
            id=str(uuid.uuid4()),
            name=fields["name"],
            host=fields["host"],
            username=fields["username"],
            created_at=now,
            updated_at=now,
        )
        self.registries[registry.id] = (registry, fields["password"])
        return copy.deepcopy(registry)

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
        await _round_trip()
        if runner.id not in self.runners:
            raise NotFound(runner.id)
        now = now_ms()
        if idempotency_key is not None:
            first = self.runs.get(self._idempotency.get((runner.id, idempotency_key), ""))
            if first is not None and first.created_at >= now - IDEMPOTENCY_WINDOW_MS:
                return copy.deepcopy(first), False
        self._seq += 1
        run = Run.queued(
            runner, env, cpu=cpu, mem=mem, pids=pids, image=image, now=now, seq=self._seq, **queued
        )
        self.runs[run.id] = run
        if idempotency_key is not None:
            self._idempotency[(runner.id, idempotency_key)] = run.id
        return copy.deepcopy(run), True

    # -- RunStore --------------------------------------------------------------

    async def get_run(self, run_id: str, runner_id: str | None = None) -> Run | None:
        await _round_trip()
        run = self.runs.get(run_id)
        if run is None or (runner_id is not None and run.runner_id != runner_id):
            return None
        return copy.deepcopy(run)

    async def runner_for_run(
        self, runner_id: str
    ) -> tuple[Runner, list[EnvVariable], str | None] | None:
        await _round_trip()
        runner = self.runners.get(runner_id)
        if runner is None:
            return None
        found = self.registries.get(runner.container_registry_id or "")
        host = found[0].host if found is not None else None
        return copy.deepcopy(runner), copy.deepcopy(self.env.get(runner_id, [])), host

    async def set_warmed(self, runner_id: str, warmed_at: int) -> Runner:
        await _round_trip()
        runner = self.runners.get(runner_id)
        if runner is None:
            raise NotFound(runner_id)
        runner.warmed_at = warmed_at
        return copy.deepcopy(runner)

    async def next_pending(self, in_flight: list[str] | None = None) -> Run | None:
        await _round_trip()
        held = set(in_flight or [])
        now = now_ms()
        for run in self.runs.values():
            if run.status is not Status.PENDING or run.id in held:
                continue
            if run.not_before is not None and run.not_before > now:
                continue
            limit = self.runners[run.runner_id].max_concurrent_runs
            if limit is None or limit > sum(
                1
                for other in self.runs.values()
                if other.runner_id == run.runner_id
                and (other.status is Status.RUNNING or other.id in held)
            ):
                return copy.deepcopy(run)
        return None

    async def next_not_before(self) -> int | None:
        await _round_trip()
        now = now_ms()
        waiting = [
            r.not_before
            for r in self.runs.values()
            if r.status is Status.PENDING and r.not_before is not None and r.not_before > now
        ]
        return min(waiting, default=None)

    async def cancel_pending(self, run_id: str, error: str) -> Run | None:
        await _round_trip()
        run = self.runs.get(run_id)
        if run is None or run.status is not Status.PENDING:
            return None
        self._complete(run, Status.FAILED, None, FailureReason.CANCELED, error, now_ms())
        return self._completed(run)

    async def latest_retry(self, run_id: str) -> Run | None:
        await _round_trip()
        latest = None
        retries = {r.retry_of: r for r in self.runs.values() if r.retry_of is not None}
        while (retry := retries.get(run_id)) is not None:
            latest, run_id = retry, retry.id
        return copy.deepcopy(latest)

    async def mark_running(self, run_id: str, container_id: str, started_at: int) -> Run:
        await _round_trip()
        run = self.runs.get(run_id)
        if run is None or run.status is not Status.PENDING:
            raise Conflict(f"run {run_id} is no longer pending")
        run.status = Status.RUNNING
        run.container_id = container_id
        run.started_at = run.updated_at = started_at
        return copy.deepcopy(run)

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
        await _round_trip()
        assert status in TERMINAL_STATUSES
        run = self.runs.get(run_id)
        if run is None or run.status not in ACTIVE_STATUSES:
            raise Conflict(f"run {run_id} has already completed")
        self._complete(run, status, exit_code, failure_reason, error, completed_at or now_ms())
        run.log_incomplete = run.log_incomplete or log_incomplete
        if run.will_retry:  # as the SQLite store does in the same commit
            assert run.completed_at is not None
            self._seq += 1
            retry = run.retry(now=run.completed_at, not_before=run.retry_not_before)
            retry.seq = self._seq
            self.runs[retry.id] = retry
        return self._completed(run)

    async def mark_log_incomplete(self, run_id: str) -> None:
        await _round_trip()
        run = self.runs.get(run_id)
        if run is not None and not run.log_incomplete:
            run.log_incomplete = True
            run.updated_at = max(run.updated_at, now_ms())

    async def set_node(self, run_id: str, node: str) -> None:
        await _round_trip()
        run = self.runs.get(run_id)
        if run is not None and run.status is Status.RUNNING and run.node != node:
            run.node = node
            run.updated_at = max(run.updated_at, now_ms())

    async def runs_with_status(self, status: Status) -> list[Run]:
        await _round_trip()
        return [copy.deepcopy(r) for r in self.runs.values() if r.status is status]

    async def registry_credentials(self, registry_id: str) -> tuple[str, str, str] | None:
        await _round_trip()
        found = self.registries.get(registry_id)
        if found is None:
            return None
        registry, password = found
        return registry.host, registry.username, password

    async def pending_webhooks(self, limit: int, exclude: list[str]) -> list[Run]:
        await _round_trip()
        pending = [
            r for r in self.runs.values() if r.webhook_status == "pending" and r.id not in exclude
        ]
        pending.sort(key=lambda r: r.completed_at or 0)
        return [copy.deepcopy(r) for r in pending[:limit]]

    async def set_webhook_status(self, run_id: str, status: str) -> None:
        await _round_trip()
        if run_id in self.runs:
            self.runs[run_id].webhook_status = status

    async def delete_expired_runs(
        self, *, completed_before: int | None, keep_per_runner: int | None, batch: int = 500
    ) -> list[str]:
        await _round_trip()
        if completed_before is None and keep_per_runner is None:
            return []
        completed = [r for r in self.runs.values() if r.status in TERMINAL_STATUSES]
        expired: set[str] = set()
        if completed_before is not None:
            expired.update(
                r.id
                for r in completed
                if r.completed_at is not None and r.completed_at < completed_before
            )
        if keep_per_runner is not None:
            newer: dict[str, int] = {}
            for run in reversed(completed):  # newest first
                newer[run.runner_id] = newer.get(run.runner_id, 0) + 1
                if newer[run.runner_id] > keep_per_runner:
                    expired.add(run.id)
        ids = [r.id for r in completed if r.id in expired][:batch]
        for run_id in ids:
            del self.runs[run_id]
        return ids

    def _complete(
        self,
        run: Run,
        status: Status,
        exit_code: int | None,
        failure_reason: FailureReason | None,
        error: str | None,
        completed_at: int,
    ) -> None:
        run.status = status
        run.exit_code = exit_code
        run.failure_reason = failure_reason
        run.error = error
        run.completed_at = run.updated_at = completed_at
        run.webhook_status = "pending" if run.webhook_url is not None else None

    def _completed(self, run: Run) -> Run:
        for listener in self.on_run_completed:
            listener(copy.deepcopy(run))
        return copy.deepcopy(run)


def _is_a_run_store(store: MemoryStore) -> RunStore:
    return store  # mypy checks here that MemoryStore has all of RunStore
