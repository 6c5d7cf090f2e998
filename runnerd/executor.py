"""One run, start to finish, on the Docker engine.

The executor takes a pending run the scheduler handed it and carries it to a
final status: image present (pulled when not), container created and started,
output streamed to the run's log file as it arrives, timeout enforced, exit code
recorded, container removed. Every step's outcome is written to the store.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time

from .engine import (
    LABEL_DAEMON, LABEL_RUN, LABEL_RUNNER, ContainerSpec, Engine, EngineError, EngineUnavailable,
)
from .logs import LogStore, LogWriter
from .models import FailureReason, Run, Status, now_ms
from .store import Conflict, Store

log = logging.getLogger("runnerd.executor")

OUTPUT_DRAIN_SECONDS = 30  # after exit, how long the rest of the output may take


def container_name(run_id: str) -> str:
    """One name per run: the engine refuses a second container for the same run."""
    return f"runnerd-{run_id}"


def container_command(run: Run) -> tuple[list[str] | None, list[str] | None]:
    """(Cmd, Entrypoint) for the engine: `command` runs as `sh -c`, `argv` as is,
    `entrypoint` is split like a shell would (an empty string clears the image's)."""
    cmd: list[str] | None = None
    if run.command is not None:
        cmd = ["sh", "-c", run.command]
    elif run.argv is not None:
        cmd = list(run.argv)
    entrypoint: list[str] | None = None
    if run.entrypoint is not None:
        entrypoint = shlex.split(run.entrypoint) or [""]
    return cmd, entrypoint


class Executor:
    def __init__(self, store: Store, engine: Engine, logs: LogStore, *, daemon_id: str,
                 network: str, stop_grace_seconds: float) -> None:
        self.store = store
        self.engine = engine
        self.logs = logs
        self.daemon_id = daemon_id
        self.network = network
        self.stop_grace_seconds = stop_grace_seconds

    async def execute(self, run: Run) -> Run:
        """Run it to a final status. Raises EngineUnavailable, leaving the run
        pending, when the engine does not answer before the container started."""
        if not await self._ensure_image(run):
            return await self._current(run)
        container_id = await self._start(run)
        if container_id is None:
            return await self._current(run)
        try:
            return await self._supervise(run, container_id)
        finally:
            try:
                await self.engine.remove(container_id)
            except EngineError as e:
                log.warning("run %s: could not remove container %s: %s",
                            run.id, container_id[:12], e)

    async def _ensure_image(self, run: Run) -> bool:
        try:
            if await self.engine.has_image(run.image):
                return True
            await self.engine.pull(run.image)
            return True
        except EngineUnavailable:
            raise
        except EngineError as e:
            log.info("run %s failed: image %s could not be pulled: %s", run.id, run.image, e)
            await self._finish(run, exit_code=None, reason=FailureReason.IMAGE_PULL_FAILED,
                               error=f"{e}.")
            return False

    async def _start(self, run: Run) -> str | None:
        cmd, entrypoint = container_command(run)
        spec = ContainerSpec(
            name=container_name(run.id), image=run.image, cmd=cmd, entrypoint=entrypoint,
            env=run.env, cpu=run.cpu, mem_mib=run.mem, pids=run.pids, network=self.network,
            labels={LABEL_DAEMON: self.daemon_id, LABEL_RUN: run.id, LABEL_RUNNER: run.runner_id})
        container_id: str | None = None
        try:
            container_id = await self.engine.create(spec)
            await self.store.set_container(run.id, container_id)
            await self.engine.start(container_id)
        except EngineUnavailable:
            if container_id is not None:
                await self._remove_quietly(container_id)
            raise
        except EngineError as e:
            log.info("run %s failed: container did not start: %s", run.id, e)
            if container_id is not None:
                await self._remove_quietly(container_id)
            await self._finish(run, exit_code=None, reason=FailureReason.START_FAILED,
                               error=f"{e}.")
            return None
        await self.store.mark_running(run.id, container_id, now_ms())
        log.info("run %s started in container %s", run.id, container_id[:12])
        return container_id

    async def _supervise(self, run: Run, container_id: str) -> Run:
        run = await self._current(run)
        assert run.started_at is not None
        writer = self.logs.writer(run.id)
        output = asyncio.create_task(self._copy_output(run, container_id, writer))
        timed_out = False
        try:
            deadline = run.started_at / 1000 + run.timeout_seconds
            try:
                exit_code = await asyncio.wait_for(self.engine.wait(container_id),
                                                   max(0.0, deadline - time.time()))
            except TimeoutError:
                timed_out = True
                log.info("run %s timed out after %d s; stopping its container",
                         run.id, run.timeout_seconds)
                await self.engine.stop(container_id, self.stop_grace_seconds)
                exit_code = await self.engine.wait(container_id)
            await self._drain(run, output)
        except EngineError as e:
            output.cancel()
            await asyncio.gather(output, return_exceptions=True)
            writer.close()
            log.warning("run %s lost: %s", run.id, e)
            return await self._finish(run, exit_code=None, reason=FailureReason.LOST,
                                      error=f"{e}.")
        except BaseException:
            output.cancel()
            await asyncio.gather(output, return_exceptions=True)
            writer.close()
            raise
        writer.close()
        if timed_out:
            return await self._finish(
                run, exit_code=exit_code, reason=FailureReason.TIMEOUT,
                error=f"The run exceeded its timeout of {run.timeout_seconds} seconds "
                      "and was stopped.")
        if exit_code != 0:
            return await self._finish(run, exit_code=exit_code,
                                      reason=FailureReason.NONZERO_EXIT,
                                      error=f"The command exited with code {exit_code}.")
        return await self._finish(run, exit_code=0, reason=None, error=None)

    async def _copy_output(self, run: Run, container_id: str, writer: LogWriter) -> None:
        broken = False
        async for chunk in self.engine.output(container_id):
            if broken:
                continue  # keep reading so the container is never blocked on output
            try:
                writer.write(chunk.stream, chunk.ts_ns, chunk.data)
            except OSError as e:
                broken = True  # e.g. disk full: said once, not per line
                log.error("run %s: cannot write its log %s: %s; dropping further output",
                          run.id, writer.path, e.strerror or e)

    async def _drain(self, run: Run, output: asyncio.Task[None]) -> None:
        """The container has exited: let the rest of its output arrive."""
        try:
            await asyncio.wait_for(asyncio.shield(output), OUTPUT_DRAIN_SECONDS)
        except TimeoutError:
            output.cancel()
            log.warning("run %s: output still streaming %d s after exit; log may be cut",
                        run.id, OUTPUT_DRAIN_SECONDS)
        except EngineError as e:
            log.warning("run %s: output stream broke: %s; log may be cut", run.id, e)

    async def _finish(self, run: Run, *, exit_code: int | None, reason: FailureReason | None,
                      error: str | None) -> Run:
        status = Status.SUCCEEDED if reason is None else Status.FAILED
        try:
            done = await self.store.finish_run(run.id, status, exit_code=exit_code,
                                               failure_reason=reason, error=error)
        except Conflict:
            return await self._current(run)  # someone else completed it (e.g. cancel)
        log.info("run %s %s (exit code %s%s)", run.id, status.value, exit_code,
                 f", {reason.value}" if reason else "")
        return done

    async def _current(self, run: Run) -> Run:
        fresh = await self.store.get_run(run.id)
        return fresh if fresh is not None else run

    async def _remove_quietly(self, container_id: str) -> None:
        try:
            await self.engine.remove(container_id)
        except EngineError as e:
            log.warning("could not remove container %s: %s", container_id[:12], e)
