"""An executor without Docker, for the API tier.

The real scheduler drives `FakeExecutor` as it drives the real executor, and the
API asks it what it asks the real one (warm, the engine's version). A run
ends as its command says, read the way a shell would read the few commands these
tests use: `sleep N` runs N seconds (and past its timeout, times out), `exit N`
(`$VAR` taken from the run's env) and `false` fail with that code, anything else
succeeds at once. Images from a registry at `localhost:1` (where nothing listens)
fail to pull, as they do on a real engine. No output is written: tests about what
a container prints belong in tests/integration.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from typing import Any

from runnerd import images
from runnerd.engine import EngineError, engine_kind
from runnerd.logs import LogStore
from runnerd.models import FailureReason, Run, Runner, Status
from runnerd.store import NotFound, Store

UNPULLABLE_REGISTRY = "localhost:1"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _pullable(ref: str) -> bool:
    return images.registry_host(ref) != UNPULLABLE_REGISTRY


def _outcome(run: Run) -> tuple[float, int]:
    """(seconds the command runs, its exit code)."""
    env = dict(run.env)
    words = shlex.split(run.command) if run.command is not None else list(run.argv or [])
    words = [env.get(w[1:], "") if w.startswith("$") else w for w in words]
    if words[:1] == ["sleep"] and len(words) > 1:
        return float(words[1]), 0
    if words[:1] == ["exit"]:
        return 0.0, int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
    if words[:1] == ["false"]:
        return 0.0, 1
    return 0.0, 0


class FakeExecutor:
    """The scheduler's side of the executor (reconcile, execute, recover, stop_run,
    remove_container) and the API's (warm, engine_version), recording runs and
    warm-ups in the real store as the real executor does."""

    def __init__(self, store: Store, logs: LogStore) -> None:
        self.store = store
        self.logs = logs
        self.pulls: list[str] = []  # every reference pulled, in order
        self._stops: dict[str, asyncio.Event] = {}
        self._why: dict[str, str] = {}

    async def engine_version(self) -> dict[str, Any]:
        return engine_kind({"Version": "fake", "ApiVersion": "1.44"}, {}).as_json()

    async def warm(self, runner_id: str) -> Runner | None:
        found = await self.store.runner_for_run(runner_id)
        if found is None:
            return None
        runner, _env, registry_host = found
        ref = images.reference(runner.image_name, runner.image_tag, registry_host)
        self.pulls.append(ref)
        if not _pullable(ref):
            raise EngineError(f"pulling image {ref} failed: connection refused")
        try:
            return await self.store.set_warmed(runner.id, _now_ms())
        except NotFound:
            return None

    async def reconcile(self) -> list[Run]:
        return await self.store.runs_with_status(Status.RUNNING)  # no containers to clean

    async def remove_container(self, run: Run) -> None:
        pass

    async def execute(self, run: Run) -> Run:
        if not _pullable(run.image):
            return await self.store.finish_run(
                run.id,
                Status.FAILED,
                exit_code=None,
                failure_reason=FailureReason.IMAGE_PULL_FAILED,
                error=f"pulling image {run.image} failed: connection refused.",
            )
        self._stops[run.id] = asyncio.Event()
        await self.store.mark_running(run.id, f"fake-{run.id}", _now_ms())
        return await self._until_done(run)

    async def recover(self, run: Run) -> Run:
        self._stops.setdefault(run.id, asyncio.Event())
        return await self._until_done(run)

    async def stop_run(self, run_id: str, why: str) -> bool:
        stop = self._stops.get(run_id)
        if stop is None:
            return False
        self._why[run_id] = why
        stop.set()
        return True

    async def _until_done(self, run: Run) -> Run:
        writer = await self.logs.open_writer(run.id)  # an empty log, as a quiet run has
        writer.close()
        seconds, code = _outcome(run)
        timed_out = seconds > run.timeout_seconds
        try:
            async with asyncio.timeout(min(seconds, run.timeout_seconds)):
                await self._stops[run.id].wait()
        except TimeoutError:
            pass
        finally:
            del self._stops[run.id]
        why = self._why.pop(run.id, None)
        if why is not None:
            return await self.store.finish_run(
                run.id,
                Status.FAILED,
                exit_code=137,
                failure_reason=FailureReason.CANCELED,
                error=why,
            )
        if timed_out:
            return await self.store.finish_run(
                run.id,
                Status.FAILED,
                exit_code=137,
                failure_reason=FailureReason.TIMEOUT,
                error=f"The run exceeded its timeout of {run.timeout_seconds} "
                f"second{'s' if run.timeout_seconds != 1 else ''} and was stopped.",
            )
        if code != 0:
            return await self.store.finish_run(
                run.id,
                Status.FAILED,
                exit_code=code,
                failure_reason=FailureReason.NONZERO_EXIT,
                error=f"The command exited with code {code}.",
            )
        return await self.store.finish_run(
            run.id, Status.SUCCEEDED, exit_code=0, failure_reason=None, error=None
        )
