"""One run, start to finish, on the Docker engine; and everything else the
daemon asks of the engine.

The executor takes a pending run the scheduler handed it and carries it to a
final status: image present (pulled when not), container created and started,
output streamed to the run's log file as it arrives, timeout enforced, exit code
recorded, container removed. Every step's outcome is written to the store.

It is also the one way the rest of runnerd reaches the engine: reconciling with
it after a start (`reconcile`), warming a runner's image (`warm`), the engine's
version for /healthz (`engine_version`). The scheduler and the API hold no engine.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from typing import Any, cast

from . import images, metrics
from .engine import (
    LABEL_DAEMON,
    LABEL_RUN,
    LABEL_RUNNER,
    ContainerLost,
    ContainerSpec,
    Engine,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ImageNotFound,
    RegistryCredentials,
    log_file_bytes,
)
from .logs import EngineCopy, LogStore, LogWriter
from .models import ACTIVE_STATUSES, FailureReason, Run, Runner, Status, now_ms
from .retry import retry_store
from .store import Conflict, NotFound, RunStore

log = logging.getLogger("runnerd.executor")

OUTPUT_DRAIN_SECONDS = 30  # after exit, how long the rest of the output may take
QUIET_START_SECONDS = 0.5  # a run not over by then is followed live; before, read once at exit


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


class _SharedPull:
    """One pull under way and how many callers wait for it."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.waiters = 0


class Executor:
    """Carries runs to a final status; survives engine outages and daemon restarts.

    The store is the truth for a run's status, the engine for its container; a
    run moves to `running` in the store *before* its container is started, so a
    cancel that wins that race means the container never starts, and a crash
    leaves a running run whose container the next start can find by its name.

    A run's way to a container (image, pull, create) is a task of its own, bounded
    by `start_timeout_seconds` and cut short by a cancel: a hung registry or
    engine never holds a slot for longer, and a canceled run stops waiting at once.
    """

    def __init__(
        self,
        store: RunStore,
        engine: Engine,
        logs: LogStore,
        *,
        daemon_id: str,
        network: str,
        stop_grace_seconds: float,
        engine_retry_seconds: float = 30.0,
        start_timeout_seconds: float = 3600.0,
    ) -> None:
        self.store = store
        self.engine = engine
        self.logs = logs
        self.daemon_id = daemon_id
        self.network = network
        self.stop_grace_seconds = stop_grace_seconds
        self.engine_retry_seconds = engine_retry_seconds
        self.start_timeout_seconds = start_timeout_seconds
        self._containers: dict[str, str] = {}  # run id -> container id, while watched
        self._cancels: dict[str, str] = {}  # run id -> why it is being stopped
        self._pulls: dict[str, _SharedPull] = {}  # image ref -> the pull under way
        self._preparing: dict[str, asyncio.Task[str | None]] = {}  # run id -> image + create
        # run id -> what its preparation is at: the failure if the start deadline
        # passes there, and how the error says it
        self._stage: dict[str, tuple[FailureReason, str]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()  # removals of containers no run wants
        # Images seen on the engine: a run of one is created without asking first.
        # Removed behind runnerd's back, the create says 404 and the run pulls then.
        self._present: set[str] = set()
        self._log_incomplete: set[str] = set()  # runs whose log may miss output
        self._lost: dict[str, str] = {}  # run id -> why the engine lost its container

    # -- entry points ---------------------------------------------------------

    async def execute(self, run: Run) -> Run:
        """A pending run, to its final status. Raises EngineUnavailable, leaving
        the run pending, when the engine does not answer before it started."""
        try:
            created = await self._create_and_start(run)
            if created is None:
                return await self._current(run)
            container_id, started = created
            return await self._follow(run, container_id, just_started=started)
        finally:
            self._cancels.pop(run.id, None)

    async def recover(self, run: Run) -> Run:
        """A run the store has as `running` from before a restart: re-attach to its
        container, finalise it if it exited meanwhile, or mark it lost."""
        try:
            return await self._follow(run, run.container_id or container_name(run.id))
        finally:
            self._cancels.pop(run.id, None)

    async def reconcile(self) -> list[Run]:
        """After a start, before any run is claimed: the runs an earlier process
        left `running`, for the scheduler to re-attach (`recover`); containers of
        runs that have ended (the process died between recording and removing) are
        removed. Raises EngineError when the engine does not answer, having
        changed nothing the next try would not do again."""
        running = await self.store.runs_with_status(Status.RUNNING)
        containers = await self.engine.list_containers({LABEL_DAEMON: self.daemon_id})
        running_ids = {r.id for r in running}
        for c in containers:
            run_id = (c.get("Labels") or {}).get(LABEL_RUN, "")
            if run_id in running_ids:
                continue
            run = await self.store.get_run(run_id) if run_id else None
            if run is None or run.status not in ACTIVE_STATUSES:
                try:
                    await self.engine.remove(c["Id"])
                    log.info("removed container %s of ended run %s", c["Id"][:12], run_id)
                except EngineError as e:
                    log.warning("could not remove container %s: %s", c["Id"][:12], e)
        return running

    async def remove_container(self, run: Run) -> None:
        """Remove a run's container (killing it first) when nothing watches it any
        more; an engine that does not answer is logged, not raised."""
        try:
            await self.engine.remove(run.container_id or container_name(run.id))
        except EngineError as e:
            log.warning("run %s: could not remove its container: %s", run.id, e)

    async def warm(self, runner_id: str) -> Runner | None:
        """Pull the runner's image now, whatever its pull policy, with its
        registry's credentials, and record when: the runner as it is now, or None
        when there is no such runner. Raises EngineUnavailable, or EngineError
        with the pull's error."""
        found = await self.store.runner_for_run(runner_id)
        if found is None:
            return None
        runner, _env, registry_host = found
        ref = images.reference(runner.image_name, runner.image_tag, registry_host)
        await self.pull(ref, runner.container_registry_id)
        try:
            warmed = await self.store.set_warmed(runner.id, now_ms())
        except NotFound:
            return None  # deleted while its image was being pulled
        log.info("runner %s warmed: image %s pulled", runner.id, ref)
        return warmed

    async def engine_version(self) -> dict[str, Any]:
        """Which engine answers, for /healthz: name (docker, podman), version,
        api_version, rootless, cgroup_version, unenforced_limits; EngineError when
        it does not answer."""
        await self.engine.version()
        return (await self.engine.kind()).as_json()

    async def stop_run(self, run_id: str, why: str) -> bool:
        """Cancel an in-flight run: its container is stopped (SIGTERM, then SIGKILL
        after the grace) and the run ends `failed`/`canceled` with `why` as the
        error. True when the container was signalled now; False when the run is
        not being watched yet (the cancel is kept and applied as soon as it is:
        before its container starts, or right after) or had already exited (its
        own result stands)."""
        first = run_id not in self._cancels
        self._cancels.setdefault(run_id, why)
        preparing = self._preparing.get(run_id)
        if preparing is not None:  # pulling or creating: that stops now
            preparing.cancel()
        container_id = self._containers.get(run_id)
        if container_id is None:
            return False
        try:
            signalled = await self.engine.stop(container_id, self.stop_grace_seconds)
        except EngineError:
            if first:  # not stopped: the run must not be recorded as canceled
                self._cancels.pop(run_id, None)
            raise
        if not signalled and first:
            self._cancels.pop(run_id, None)
        return signalled

    # -- steps ----------------------------------------------------------------

    async def _ensure_image(self, run: Run) -> bool:
        """Apply the run's pull policy; False (the run failed) when it cannot."""
        try:
            policy = run.image_pull_policy
            if policy != "always" and (
                run.image in self._present or await self.engine.has_image(run.image)
            ):
                self._present.add(run.image)
                return True
            if policy == "never":
                raise EngineError(
                    f"image {run.image} is not present and the runner's "
                    'image_pull_policy is "never"'
                )
            # A pull is long: not for a run canceled while it was being picked.
            current = await self.store.get_run(run.id)
            if current is not None and current.status is not Status.PENDING:
                return False
            self._stage[run.id] = (
                FailureReason.IMAGE_PULL_FAILED,
                f"the pull of image {run.image} was still going",
            )
            await self.pull(run.image, run.container_registry_id)
            return True
        except EngineUnavailable:
            raise
        except EngineError as e:
            log.info("run %s failed: image %s could not be pulled: %s", run.id, run.image, e)
            await self._finish(
                run, exit_code=None, reason=FailureReason.IMAGE_PULL_FAILED, error=f"{e}."
            )
            return False

    async def pull(self, ref: str, registry_id: str | None) -> None:
        """Pull `ref` with the registry's credentials. Concurrent pulls of the same
        reference share one: the engine is asked once, every caller gets the result.
        A caller canceled meanwhile stops waiting at once; the pull itself goes on
        while another caller waits for it, and is stopped when none does."""
        shared = self._pulls.get(ref)
        if shared is None:
            shared = _SharedPull(asyncio.ensure_future(self._pull(ref, registry_id)))
            self._pulls[ref] = shared

            def done(_: object, shared: _SharedPull = shared) -> None:
                if self._pulls.get(ref) is shared:
                    del self._pulls[ref]

            shared.task.add_done_callback(done)
        shared.waiters += 1
        try:
            await asyncio.shield(shared.task)
        finally:
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                log.info("stopping the pull of image %s: nothing waits for it any more", ref)
                shared.task.cancel()
                if self._pulls.get(ref) is shared:
                    del self._pulls[ref]

    async def _pull(self, ref: str, registry_id: str | None) -> None:
        credentials = None
        if registry_id is not None:
            found = await self.store.registry_credentials(registry_id)
            if found is None:
                raise EngineError(f"could not pull image {ref}: its container registry was deleted")
            credentials = RegistryCredentials(*found)
        await self.engine.pull(ref, credentials)
        self._present.add(ref)

    async def _prepare(self, run: Run) -> str | None:
        """Image and container of a run, in a task that a cancel (stop_run) cuts
        short and that may take `start_timeout_seconds` at most; the container's
        id, or None when the run ended here (failed, or canceled).

        A cancel here is recorded by whoever made it: the API has already marked
        the run canceled; a daemon that stops leaves it pending, for its next start."""
        if run.id in self._cancels:  # canceled while being picked
            return None
        self._stage[run.id] = (
            FailureReason.IMAGE_PULL_FAILED,
            f"the engine was looking up image {run.image}",
        )
        preparing = asyncio.ensure_future(self._image_and_container(run))
        self._preparing[run.id] = preparing
        try:
            await asyncio.wait({preparing}, timeout=self.start_timeout_seconds)
        except asyncio.CancelledError:  # the daemon stops: so does the preparation
            preparing.cancel()
            raise
        finally:
            self._preparing.pop(run.id, None)
            reason, stage = self._stage.pop(run.id, (FailureReason.START_FAILED, "?"))
        if not preparing.done():
            preparing.cancel()
            await asyncio.gather(preparing, return_exceptions=True)
            if preparing.cancelled():
                seconds = f"{self.start_timeout_seconds:g}"
                log.warning("run %s failed: not started within %s s: %s", run.id, seconds, stage)
                await self._finish(
                    run,
                    exit_code=None,
                    reason=reason,
                    error=f"The run did not start within [docker] start_timeout_seconds "
                    f"({seconds} s): {stage}.",
                )
                return None
        if preparing.cancelled():  # canceled (stop_run): it is not to start
            log.info("run %s: its start was stopped (canceled); %s", run.id, stage)
            return None
        return preparing.result()

    async def _image_and_container(self, run: Run) -> str | None:
        if not await self._ensure_image(run):
            return None
        self._stage[run.id] = (FailureReason.START_FAILED, "the engine was creating its container")
        cmd, entrypoint = container_command(run)
        credentials = None
        if self.engine.credentials_on_start and run.container_registry_id is not None:
            found = await self.store.registry_credentials(run.container_registry_id)
            credentials = RegistryCredentials(*found) if found is not None else None
        spec = ContainerSpec(
            name=container_name(run.id),
            image=run.image,
            cmd=cmd,
            entrypoint=entrypoint,
            env=list(run.env),
            cpu=run.cpu,
            mem_mib=run.mem,
            pids=run.pids,
            network=self.network,
            log_file_bytes=(
                self.logs.engine_copy.max_bytes
                if self.logs.engine_copy
                else log_file_bytes(self.logs.max_log_bytes)
            ),
            labels={LABEL_DAEMON: self.daemon_id, LABEL_RUN: run.id, LABEL_RUNNER: run.runner_id},
            instance_type=run.instance_type,
            credentials=credentials,
        )
        try:
            try:
                container_id = await self._create(spec)
            except EngineTimeout:
                raise
            except EngineError as e:
                if isinstance(e, ImageNotFound) and run.image in self._present:
                    # The image was removed since runnerd saw it: apply the pull
                    # policy again (which records the run failed if it cannot).
                    self._present.discard(run.image)
                    if not await self._ensure_image(run):
                        return None
                elif e.status == 409:
                    # The name is taken: a container created for this run before a
                    # crash, never started. Start over with a fresh one.
                    await self.engine.remove(spec.name)
                else:
                    raise
                container_id = await self._create(spec)
        except EngineTimeout as e:
            # Failed, not left pending: a run whose create hangs would be picked
            # first again and hold its slot for ever. The engine may still make the
            # container: removed here if it did by now, else at the next start.
            log.warning("run %s failed: %s", run.id, e)
            await self._remove_quietly(spec.name)
            await self._finish(
                run, exit_code=None, reason=FailureReason.START_FAILED, error=f"{e}."
            )
            return None
        except EngineUnavailable:
            raise
        except EngineError as e:
            log.info("run %s failed: container could not be created: %s", run.id, e)
            await self._finish(
                run, exit_code=None, reason=FailureReason.START_FAILED, error=f"{e}."
            )
            return None
        return container_id

    async def _create(self, spec: ContainerSpec) -> str:
        """The engine's create, which a cancel of the caller does not cut: the
        request runs on (bounded), and the container it makes is removed."""
        creating = asyncio.ensure_future(self.engine.create(spec))
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            creating.add_done_callback(self._remove_when_created)
            raise

    def _remove_when_created(self, creating: asyncio.Future[str]) -> None:
        if creating.cancelled() or creating.exception() is not None:
            return
        self._remove_in_background(creating.result())

    def _remove_in_background(self, container_id: str) -> None:
        """Remove a container no run wants any more (one just made for a run that
        was canceled, or an ended run's, once its outcome is recorded) without
        holding a slot for it: the scheduler starts the next run while the engine
        removes this one. close() gives what is left a moment; the next start
        removes the rest, with the containers of other ended runs."""
        task = asyncio.ensure_future(self._remove_quietly(container_id))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanup_done)

    def _cleanup_done(self, task: asyncio.Task[None]) -> None:
        self._cleanups.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "could not remove a container no run wants: %s; it is removed at the next start",
                task.exception(),
            )

    async def close(self, wait_seconds: float = 1.0) -> None:
        """Before the engine client closes: the removals of containers no run wants
        get `wait_seconds` to finish, then are stopped (the next start removes
        what is left, with the containers of other ended runs)."""
        if self._cleanups:
            _, pending = await asyncio.wait(set(self._cleanups), timeout=wait_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _create_and_start(self, run: Run) -> tuple[str, bool] | None:
        """(container id, whether it surely started); None when the run ended here."""
        container_id = await self._prepare(run)
        if container_id is None:
            return None
        if run.id in self._cancels:  # canceled while pulling or creating: never starts
            await self._remove_quietly(container_id)
            await self.store.cancel_pending(run.id, self._cancels[run.id])
            return None
        try:
            metrics.run_started(await self.store.mark_running(run.id, container_id, now_ms()))
        except Conflict:
            # Canceled (through the store) while we were pulling or creating.
            await self._remove_quietly(container_id)
            return None
        except Exception:
            # Not recorded (the database failed): the run stays pending, and its
            # container must not be left behind.
            await self._remove_quietly(container_id)
            raise
        try:
            await self.engine.start(container_id)
            self._containers[run.id] = container_id  # a cancel from here on stops it
            if run.id in self._cancels:  # canceled between the store and the start
                await self.engine.stop(container_id, self.stop_grace_seconds)
        except EngineTimeout as e:
            # The engine took the start and did not answer: the container is
            # removed (force: whether it started or not) and the run failed, so a
            # hung start never holds the slot.
            log.warning("run %s failed: %s", run.id, e)
            self._containers.pop(run.id, None)
            await self._remove_quietly(container_id)
            await self._finish(
                run, exit_code=None, reason=FailureReason.START_FAILED, error=f"{e}."
            )
            return None
        except EngineUnavailable:
            # Running in the store, container state unknown: following it settles
            # that once the engine answers again.
            return container_id, False
        except EngineError as e:
            log.info("run %s failed: container did not start: %s", run.id, e)
            self._containers.pop(run.id, None)
            await self._remove_quietly(container_id)
            await self._finish(
                run, exit_code=None, reason=FailureReason.START_FAILED, error=f"{e}."
            )
            return None
        node = self.engine.node_of(container_id)
        if node is not None:
            log.info("run %s started as service %s on node %s", run.id, container_id, node)
            await self._record_node(run, node)
        else:
            log.info("run %s started in container %s", run.id, container_id[:12])
        return container_id, True

    async def _follow(self, run: Run, container_id: str, just_started: bool = False) -> Run:
        """Watch a running run's container until it ends, then record and remove it.
        `just_started`: this process has just started it, so its state is known.

        Losing the engine does not decide anything: once it answers again the run
        is settled from what it reports (still running: watch on; exited: its
        exit code; gone: `lost`). Any other error while watching (its log cannot
        be opened, the engine answered nonsense, a bug) stops the container
        before the run is recorded: it never runs on unwatched, outside the limits."""
        run = await retry_store(f"run {run.id}: reading it", lambda: self._current(run))
        self._containers[run.id] = container_id
        writer: LogWriter | None = None
        try:
            writer = await self.logs.open_writer(run.id, self._engine_copy())
            if run.id in self._cancels:  # canceled before we were watching
                try:
                    await self.engine.stop(container_id, self.stop_grace_seconds)
                except EngineError as e:
                    log.warning("run %s: could not stop it for its cancel: %s", run.id, e)
            while True:
                try:
                    outcome = await self._watch(run, container_id, writer, just_started)
                    if outcome is not None:
                        if self._exact_follow():
                            # The follow stream can end before the engine logged the
                            # very last message; a plain read over the last moments
                            # catches it.
                            await asyncio.to_thread(writer.prepare_resume)
                            try:
                                await self._copy_output(run, container_id, writer, follow=False)
                            except EngineUnavailable:
                                raise  # waited for, then read again (below)
                            except EngineError as e:
                                self._incomplete(
                                    run,
                                    writer,
                                    f"runnerd could not read the end of the output from "
                                    f"the engine ({e})",
                                )
                        else:
                            writer = await self._check_output(run, container_id, writer)
                    break
                except EngineError as e:
                    log.warning(
                        "run %s: lost touch with the engine (%s); waiting for it", run.id, e
                    )
                    await self._wait_for_engine()
                    just_started = False  # who knows what happened meanwhile
                    await asyncio.to_thread(writer.prepare_resume)
        except Exception as e:
            log.error(
                "run %s: cannot watch its container: %s; stopping it",
                run.id,
                f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
                exc_info=not isinstance(e, OSError),
            )
            self._containers.pop(run.id, None)
            await self._stop_for_good(run, container_id)
            self._cancels.pop(run.id, None)
            return await self._finish(
                run,
                exit_code=None,
                reason=FailureReason.LOST,
                error="runnerd could not watch the run's container and stopped it, so its "
                "result is unknown; the daemon's log has the details.",
            )
        finally:
            self._containers.pop(run.id, None)
            if writer is not None:
                writer.close()
        why = self._cancels.pop(run.id, None)
        if outcome is None:
            lost = self._lost.pop(run.id, None)
            if lost:
                log.warning("run %s lost: %s", run.id, lost)
            done = await self._finish(
                run,
                exit_code=None,
                reason=FailureReason.LOST,
                error=f"The run was lost: {lost}, so its result is unknown."
                if lost
                else "The run's container disappeared: the engine no longer knows it, so "
                "its result is unknown.",
            )
            if lost:
                self._remove_in_background(container_id)
            return done
        exit_code, timed_out = outcome
        if why is not None:
            done = await self._finish(
                run, exit_code=exit_code, reason=FailureReason.CANCELED, error=why
            )
        elif timed_out:
            done = await self._finish(
                run,
                exit_code=exit_code,
                reason=FailureReason.TIMEOUT,
                error=f"The run exceeded its timeout of {run.timeout_seconds} "
                f"second{'s' if run.timeout_seconds != 1 else ''} and was stopped.",
            )
        elif exit_code != 0:
            done = await self._finish(
                run,
                exit_code=exit_code,
                reason=FailureReason.NONZERO_EXIT,
                error=f"The command exited with code {exit_code}.",
            )
        else:
            done = await self._finish(run, exit_code=0, reason=None, error=None)
        self._remove_in_background(container_id)
        return done

    async def _stop_for_good(self, run: Run, container_id: str) -> None:
        """Kill and remove a container nobody can watch; until the engine has done
        it, the run stays in flight (holding its slot), waiting for the engine."""
        while True:
            try:
                await self.engine.remove(container_id)  # forced: kills it first
                return
            except EngineError as e:
                log.warning(
                    "run %s: could not stop its container: %s; waiting for the engine", run.id, e
                )
                await self._wait_for_engine()

    async def _watch(
        self, run: Run, container_id: str, writer: LogWriter, just_started: bool = False
    ) -> tuple[int | None, bool] | None:
        """(exit code, timed out) once the container has exited and its output is
        in the log; None when the engine has no such container, or lost it (why
        is kept in _lost). The exit code is None when the engine could not tell it
        (a swarm task runnerd stopped on a node that did not answer)."""
        ended_with: int | None = None  # the exit code of a container that ended unwatched
        if not just_started:  # (a container just started is running or exited: wait() tells)
            state = await self.engine.inspect(container_id)
            if state is None:
                return None
            if state.node is not None and run.node is None:
                await self._record_node(run, state.node)
            if state.lost is not None:
                self._lost[run.id] = state.lost
                self._incomplete(
                    run, writer, f"the run was lost ({state.lost}): its output stops here"
                )
                return None
            if state.status == "created":  # marked running, then the daemon or engine died
                await self.engine.start(container_id)
            elif state.status in ("exited", "dead"):
                ended_with = state.exit_code
        assert run.started_at is not None
        deadline = run.started_at / 1000 + run.timeout_seconds
        waiting = (
            None
            if ended_with is not None
            else asyncio.ensure_future(self.engine.wait(container_id))
        )
        output: asyncio.Task[None] | None = None
        try:
            timed_out = False
            if waiting is not None and just_started:
                # A run that is over within QUIET_START_SECONDS has its output read
                # once, after it exited (the read below): the engine is spared a
                # follow stream per short run. Longer runs are followed live.
                await asyncio.wait(
                    {waiting}, timeout=min(QUIET_START_SECONDS, max(0.001, deadline - time.time()))
                )
            if waiting is not None and not waiting.done():
                output = asyncio.create_task(self._copy_output(run, container_id, writer))
            try:
                if waiting is None:
                    exit_code = ended_with  # ended while nobody watched
                else:
                    exit_code = await asyncio.wait_for(
                        asyncio.shield(waiting), max(0.001, deadline - time.time())
                    )
            except ContainerLost as e:  # its node went away: nothing more to read or wait for
                self._lost[run.id] = str(e)
                self._incomplete(run, writer, f"the run was lost ({e}): its output stops here")
                return None
            except TimeoutError:
                timed_out = True
                log.info(
                    "run %s timed out after %d s; stopping its container",
                    run.id,
                    run.timeout_seconds,
                )
                await self.engine.stop(container_id, self.stop_grace_seconds)
                assert waiting is not None  # only the wait on it can time out
                exit_code = await asyncio.shield(waiting)
            if output is not None:
                await self._drain(run, output)
            return exit_code, timed_out
        finally:
            for task in (waiting, output):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(
                *(t for t in (waiting, output) if t is not None), return_exceptions=True
            )

    def _engine_copy(self) -> EngineCopy | None:
        """What the engine keeps of a run's output (see logs.EngineCopy)."""
        kind = self.engine.known_kind
        if kind is None:  # not asked yet: runs start only once it answered
            return self.logs.engine_copy
        limits = kind.engine_copy(self.logs.max_log_bytes)
        return EngineCopy(*limits) if limits is not None else None

    def _exact_follow(self) -> bool:
        kind = self.engine.known_kind
        return kind is None or kind.exact_follow

    def _incomplete(self, run: Run, writer: LogWriter, why: str) -> None:
        """The log may miss output: a note in it says why, and the run is marked."""
        if run.id not in self._log_incomplete:
            log.warning("run %s: its log may be incomplete: %s", run.id, why)
        self._log_incomplete.add(run.id)
        writer.note(f"this log may be incomplete: {why}")

    async def _check_output(self, run: Run, container_id: str, writer: LogWriter) -> LogWriter:
        """For an engine whose follow stream is not a faithful copy (Podman's): the
        whole output read again from the engine's own copy once the container has
        exited, compared with the log and the log repaired from it where they
        differ (logs.LogCheck). The writer to go on with.

        The engine not answering is raised (the caller waits for it and checks
        again: the container, and so its output, is kept until the run is
        recorded); any other error reading the copy leaves the log as it is,
        marked incomplete."""
        check = self.logs.check(run.id, writer)
        try:
            async for batch in self.engine.output(container_id, follow=False):
                if batch.error is not None:
                    self._incomplete(
                        run,
                        check.writer,
                        f"the engine reported an error while runnerd read its copy of the "
                        f"output to check this log: {batch.error}",
                    )
                check.feed(cast("list[tuple[int, int, bytes | memoryview]]", batch.records))
            result = check.finish()
        except EngineUnavailable:
            check.finish()
            raise
        except EngineError as e:
            self._incomplete(
                run,
                check.writer,
                f"runnerd could not read the engine's copy of the output to check this "
                f"log against it ({e}); the live stream it was written from may have "
                "missed or repeated lines",
            )
            return check.writer
        except OSError as e:  # the log cannot be written (e.g. disk full)
            log.error(
                "run %s: cannot write its log %s: %s; dropping further output",
                run.id,
                check.writer.path,
                e.strerror or e,
            )
            return check.writer
        if result.removed:  # the live stream got something wrong, not just late
            log.info(
                "run %s: its log was repaired from the engine's copy of the output "
                "(the live stream had %d bytes right, then missed or repeated some: "
                "%d bytes written from the copy, %d removed)",
                run.id,
                result.matched,
                result.added,
                result.removed,
            )
        elif result.added:  # a run over before it was followed, or a stream that ended early
            log.debug(
                "run %s: %d bytes of output read from the engine's copy after the %d "
                "the live stream gave",
                run.id,
                result.added,
                result.matched,
            )
        return check.writer

    async def _copy_output(
        self, run: Run, container_id: str, writer: LogWriter, follow: bool = True
    ) -> None:
        async for batch in self.engine.output(
            container_id, since_ns=writer.since_ns, follow=follow
        ):
            try:
                if batch.error is not None:
                    self._incomplete(
                        run,
                        writer,
                        f"the engine reported an error while runnerd read this output: "
                        f"{batch.error}",
                    )
                # (append only reads the records: a list of memoryviews is fine)
                writer.append(cast("list[tuple[int, int, bytes | memoryview]]", batch.records))
            except OSError as e:  # raised once (e.g. disk full); later output is dropped
                log.error(
                    "run %s: cannot write its log %s: %s; dropping further output",
                    run.id,
                    writer.path,
                    e.strerror or e,
                )

    async def _drain(self, run: Run, output: asyncio.Task[None]) -> None:
        """The container has exited: let the rest of its output arrive. What does
        not is read by the last, plain read (from the newest record in the log)."""
        try:
            await asyncio.wait_for(asyncio.shield(output), OUTPUT_DRAIN_SECONDS)
        except TimeoutError:
            log.warning(
                "run %s: output still streaming %d s after exit; reading the rest plainly",
                run.id,
                OUTPUT_DRAIN_SECONDS,
            )
        except EngineError as e:
            log.warning("run %s: output stream broke: %s; reading the rest plainly", run.id, e)

    async def _wait_for_engine(self) -> None:
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            try:
                await self.engine.version()
                return
            except EngineError:
                delay = min(self.engine_retry_seconds, delay * 2)

    async def _finish(
        self, run: Run, *, exit_code: int | None, reason: FailureReason | None, error: str | None
    ) -> Run:
        """Record the run's outcome; while the database refuses it, tried again
        (the run stays `running` and in flight, and its container is kept)."""
        status = Status.SUCCEEDED if reason is None else Status.FAILED
        incomplete = run.id in self._log_incomplete
        self._log_incomplete.discard(run.id)
        try:
            done = await retry_store(
                f"run {run.id}: recording it {status.value}",
                lambda: self.store.finish_run(
                    run.id,
                    status,
                    exit_code=exit_code,
                    failure_reason=reason,
                    error=error,
                    log_incomplete=incomplete,
                ),
            )
        except Conflict:  # someone else completed it (e.g. cancel)
            if incomplete:
                await retry_store(
                    f"run {run.id}: marking its log incomplete",
                    lambda: self.store.mark_log_incomplete(run.id),
                )
            return await self._current(run)
        log.info(
            "run %s %s (exit code %s%s)",
            run.id,
            status.value,
            exit_code,
            f", {reason.value}" if reason else "",
        )
        return done

    async def _record_node(self, run: Run, node: str) -> None:
        """Which node the run runs on (swarm): for the API, CLI and dashboard. Not
        worth holding a run for: a database that refuses it is logged."""
        try:
            await self.store.set_node(run.id, node)
        except Exception as e:
            log.warning("run %s: could not record its node %s: %s", run.id, node, e)

    async def _current(self, run: Run) -> Run:
        fresh = await self.store.get_run(run.id)
        return fresh if fresh is not None else run

    async def _remove_quietly(self, container_id: str) -> None:
        try:
            await self.engine.remove(container_id)
        except EngineError as e:
            log.warning(
                "could not remove container %s: %s; it is removed at the next start",
                container_id[:12],
                e,
            )
