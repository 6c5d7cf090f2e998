"""What the scheduler, the executor, webhook delivery and retention need of the
store: a run's life from the queue to its final status (and, for a warm, the
runner it pulls for), and nothing else. The
SQLite `Store` and the in-memory `MemoryStore` both are one; one set of behaviour
tests (tests/unit/test_unit_run_store.py) holds them to the same answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..models import EnvVariable, FailureReason, Run, Runner, Status


class RunStore(Protocol):
    # Called with each run that reached its final status, after it is stored.
    on_run_completed: list[Callable[[Run], None]]

    async def get_run(self, run_id: str, runner_id: str | None = None) -> Run | None: ...

    async def runner_for_run(
        self, runner_id: str
    ) -> tuple[Runner, list[EnvVariable], str | None] | None:
        """The runner, its env variables (by key) and its registry's host (None
        without one); None for no such runner."""
        ...

    async def set_warmed(self, runner_id: str, warmed_at: int) -> Runner:
        """Record a pull by POST …/warm; NotFound for no such runner."""
        ...

    async def next_pending(self, in_flight: list[str] | None = None) -> Run | None:
        """The oldest pending run whose `not_before` has come, not in `in_flight`, whose
        runner is below its `max_concurrent_runs` (counting its running and in-flight
        runs)."""
        ...

    async def next_not_before(self) -> int | None:
        """The earliest future `not_before` of a pending run; None when none waits."""
        ...

    async def cancel_pending(self, run_id: str, error: str) -> Run | None:
        """Pending → failed/canceled; None when it is no longer pending."""
        ...

    async def mark_running(self, run_id: str, container_id: str, started_at: int) -> Run:
        """Pending → running; Conflict when it is no longer pending."""
        ...

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
        """Pending or running → succeeded/failed; Conflict when already completed.
        `log_incomplete` True marks its stored log as possibly missing output (a
        mark made before is kept: False never clears it)."""
        ...

    async def mark_log_incomplete(self, run_id: str) -> None:
        """Mark the stored log of a run (typically one already finished) as possibly
        missing output; idempotent, and nothing for a run that is gone."""
        ...

    async def set_node(self, run_id: str, node: str) -> None:
        """Record the Swarm node a running run's container runs on; nothing for a
        run that is not running (pending, finished or gone)."""
        ...

    async def runs_with_status(self, status: Status) -> list[Run]:
        """In queue order."""
        ...

    async def registry_credentials(self, registry_id: str) -> tuple[str, str, str] | None:
        """(host, username, password), or None for no such registry."""
        ...

    async def pending_webhooks(self, limit: int, exclude: list[str]) -> list[Run]:
        """Completed runs whose webhook is still to be delivered, oldest first."""
        ...

    async def set_webhook_status(self, run_id: str, status: str) -> None: ...

    async def delete_expired_runs(
        self, *, completed_before: int | None, keep_per_runner: int | None, batch: int = 500
    ) -> list[str]:
        """Delete up to `batch` completed runs past either limit; their ids."""
        ...
