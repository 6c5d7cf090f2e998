"""The Swarm backend: each run a service of Docker's own orchestrator, on
whichever node of the swarm fits (`[executor] backend = "swarm"`, `[docker] url`
naming a manager).

`SwarmEngine` is an `Engine` whose "container" is a service named after the
run, so the executor carries a run the same way on either backend: `create`
makes the service with no replica, the store marks the run running, `start`
scales the service to one, `wait` follows its task to a final state, `output`
reads the task's log, `stop` halts the service, `remove` deletes it.

Checked against Docker 20.10 (API 1.41), where they decide how it is done:

- The service is `Replicated` with one replica and `RestartPolicy: none`, not a
  `ReplicatedJob`: on 20.10 a job's running task keeps running after its service
  is removed, and the tasks of removed jobs are never deleted (moby#44312, fixed
  in 24.0), so a cancel would not stop a job and every run would leave its task
  and container behind. A one-replica service that never restarts runs its
  container once, like a job; removing it stops the container (SIGTERM, then
  SIGKILL after StopGracePeriod) and deletes its task and container. runnerd's
  own retry policy does the retries, each a run of its own.
- Removing a service (or scaling it to 0) deletes its task a moment after the
  container has exited, and with it the exit code and the log. So `stop` halts
  the service instead: an update to a placement no node satisfies, which shuts
  the task down (StopGracePeriod as above) and keeps it, with its exit code and
  all of its log, as the task the update replaced; the replacement stays
  pending. `remove` deletes the service once the run is recorded.
- A task's follow stream does not end when the task ends; `output` ends it
  once the task is in a final state, and the executor then reads the rest.
- Services take no `none` network (config refuses it); every request goes to
  the API version the manager speaks, 1.41 at least (`Limits.Pids` needs it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import aiohttp
from aiodocker.exceptions import DockerError

from ._aiodocker_shim import raw_request
from .engine import (
    ContainerLost,
    ContainerSpec,
    ContainerState,
    Engine,
    EngineError,
    EngineNotReady,
    EngineUnavailable,
    OutputBatch,
    as_engine_error,
    registry_auth,
)

log = logging.getLogger("runnerd.swarm")

MIN_API_VERSION = (1, 41)
# A task in one of these has ended; `rejected` never started (no node could take
# it, or its image could not be had), `orphaned` was on a node that went away.
FINAL_STATES = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})
STARTED_STATES = frozenset({"starting", "running"}) | FINAL_STATES
POLL_FIRST = 0.05  # a task's state is asked for this often at first, doubling up to POLL_MAX
POLL_MAX = 1.0
# How much longer than its grace a stop takes on Swarm: the manager's orchestrator
# and the node's agent relay it (~1-1.5 s on the test swarm, more under load).
STOP_LATENCY_SECONDS = 3.0
STOP_POLL_MAX = 0.2  # a stopped task is asked for at POLL_FIRST, doubling up to this
# The placement a stopped run's service is given: no node's id is this, so the
# task the swarm makes to replace the stopped one is never placed (see stop).
HALTED = "node.id==runnerd-stopped"
NODE_CHECK_SECONDS = 5.0  # how often a running task's node is asked whether it is up
MANAGER_SETTLE_SECONDS = 20.0  # a node Down this soon after the manager answered again is not
TAIL_QUIET_SECONDS = 0.25  # after its task ended, a follow stream quiet this long is done


def _api_version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (0,)


class SwarmEngine(Engine):
    """The Engine of the swarm backend (see the module's docstring).

    `placement` is the constraints every run's service gets ([swarm] placement),
    `instance_placement` those of each instance type, by slug, added to them;
    `stop_grace_seconds` is the services' StopGracePeriod."""

    def __init__(
        self,
        url: str | None = None,
        *,
        placement: tuple[str, ...] = (),
        instance_placement: dict[str, tuple[str, ...]] | None = None,
        stop_grace_seconds: float = 10.0,
        **kw: Any,
    ) -> None:
        super().__init__(url, **kw)
        self.placement = placement
        self.instance_placement = instance_placement or {}
        self.stop_grace_seconds = stop_grace_seconds
        self._exit_codes: dict[str, int] = {}  # of tasks runnerd stopped, seen as they exited
        self._stopping: dict[str, asyncio.Event] = {}  # set once the stopped task has exited
        self._tailed: set[str] = set()  # followed to the end of the task's output
        self._node_names: dict[str, str] = {}  # node id -> its name
        self._placed: dict[str, str] = {}  # service -> the name of its task's node
        self._unanswered_at = -MANAGER_SETTLE_SECONDS  # when the manager last did not answer

    credentials_on_start = True

    # -- the engine ------------------------------------------------------------

    async def version(self) -> dict[str, Any]:
        version = await super().version()
        api = str(version.get("ApiVersion") or "0")
        if _api_version(api) < MIN_API_VERSION:
            raise EngineError(
                f"the engine at [docker] url speaks API {api}; the swarm backend needs "
                f"{'.'.join(map(str, MIN_API_VERSION))} or later (Docker 20.10+)"
            )
        await self._manager()
        return version

    async def _manager(self) -> None:
        """Raises EngineNotReady unless the engine is a swarm manager (see _request)."""
        await self._request("GET", "swarm", "could not inspect the swarm")

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One API call, bounded; its JSON answer (None when empty). A refusal is
        an EngineError with the manager's message and status."""
        kw: dict[str, Any] = {"method": method, "params": params, "headers": dict(headers or {})}
        if body is not None:
            kw["data"] = json.dumps(body)
            kw["headers"]["Content-Type"] = "application/json"

        async def call() -> Any:
            async with raw_request(self.docker, path, **kw) as response:
                raw = await response.read()
            return json.loads(raw) if raw else None

        try:
            return await self._bounded(call(), what, path.split("/")[0])
        except (DockerError, aiohttp.ClientError, OSError, ValueError) as e:
            error = as_engine_error(e, what, path.split("/")[0])
        if isinstance(error, EngineUnavailable) or error.status == 503:
            self._unanswered_at = time.monotonic()
        if error.status == 503:
            # The engine is in no swarm, a worker, or a manager without a leader
            # (moby answers each with 503, "unavailable"): no service call can
            # work until that changes, so runs stay pending meanwhile.
            raise EngineNotReady(
                f"the engine at [docker] url cannot manage the swarm: {error}; the swarm "
                "backend needs a manager's API (point [docker] url at a manager, or make "
                "this engine one: docker swarm init, docker node promote)",
                error.status,
            )
        raise error

    async def _tasks(self, service: str) -> list[dict[str, Any]] | None:
        """The service's tasks, oldest first; None when there is no such service."""
        try:
            tasks = await self._request(
                "GET",
                "tasks",
                f"could not list the tasks of service {service}",
                params={"filters": json.dumps({"service": [service]})},
            )
        except EngineError as e:
            if e.status == 404 or "not found" in str(e):
                return None
            raise
        tasks = [t for t in tasks or [] if t.get("ServiceID")]
        tasks.sort(key=_created)
        return tasks

    async def _service(self, service: str) -> dict[str, Any] | None:
        """The service as the manager has it (Spec, Version, ...); None when there
        is no such service."""
        try:
            found: dict[str, Any] = await self._request(
                "GET", f"services/{service}", f"could not inspect {service}"
            )
        except EngineError as e:
            if e.status == 404:
                return None
            raise
        return found

    async def _replicas(self, service: str) -> int | None:
        """The replicas the service is set to; None when there is no such service."""
        current = await self._service(service)
        if current is None:
            return None
        return int(((current["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1))

    async def node_name(self, node_id: str) -> str:
        """A node's name (its spec's, else its hostname), or its id if unknown."""
        if node_id not in self._node_names:
            try:
                node = await self._request("GET", f"nodes/{node_id}", "could not inspect a node")
            except EngineError:
                return node_id
            name = (node.get("Spec") or {}).get("Name") or (node.get("Description") or {}).get(
                "Hostname"
            )
            self._node_names[node_id] = str(name or node_id)
        return self._node_names[node_id]

    # -- images: the manager's own, pinned by digest for every node ---------------

    async def _pinned(self, ref: str) -> str:
        """`ref` with its digest from the manager's copy (`name:tag@sha256:…`), so
        every node runs the same bytes; `ref` as it is for an image that has no
        registry digest (built or imported locally)."""
        try:
            image = await self._request(
                "GET", f"images/{ref}/json", f"could not inspect image {ref}"
            )
        except EngineError as e:
            if e.status == 404:
                return ref
            raise
        name = ref.split("@")[0].rsplit(":", 1)[0] if "/" in ref or ":" in ref else ref
        for digest in image.get("RepoDigests") or []:
            repo, _, sha = str(digest).partition("@")
            if repo == name or repo.endswith("/" + name):
                return f"{ref}@{sha}"
        return ref

    # -- a run's service ----------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        """Create the run's service with no replica: nothing runs until `start`
        scales it to one. A run is marked running between the two (see Executor),
        so a service with no replica after a crash is one never started, as a
        created container is on an engine. The image is pinned here, and the
        registry's credentials go with the service for the node to pull with."""
        image = await self._pinned(spec.image)
        try:
            await self._request(
                "POST",
                "services/create",
                "could not create the service",
                body=self._service_spec(spec, image),
                headers=registry_auth(spec.credentials),
            )
        except EngineError as e:
            if spec.credentials is not None and spec.credentials.password:
                raise type(e)(str(e).replace(spec.credentials.password, "***"), e.status) from None
            raise
        return spec.name

    def _service_spec(self, spec: ContainerSpec, image: str) -> dict[str, Any]:
        kind = self.known_kind
        container: dict[str, Any] = {
            "Image": image,
            "Env": [f"{k}={v}" for k, v in spec.env],
            "Labels": spec.labels,
            "StopGracePeriod": int(self.stop_grace_seconds * 1e9),
            "StopSignal": "SIGTERM",
        }
        if spec.entrypoint is not None:
            container["Command"] = spec.entrypoint
            if spec.cmd is not None:
                container["Args"] = spec.cmd
        elif spec.cmd is not None:
            # Swarm's Command is the entrypoint; keeping the image's, only Args is set.
            container["Args"] = spec.cmd
        constraints = [*self.placement, *self.instance_placement.get(spec.instance_type, ())]
        template: dict[str, Any] = {
            "ContainerSpec": container,
            "Resources": {
                "Limits": {
                    "NanoCPUs": int(spec.cpu * 1e9),
                    "MemoryBytes": spec.mem_mib * 1024 * 1024,
                    "Pids": spec.pids,
                }
            },
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": constraints},
            "LogDriver": {
                "Name": "local",
                "Options": (kind.log_config(spec.log_file_bytes).get("Config") or {})
                if kind is not None
                else {},
            },
        }
        if spec.network not in ("", "default"):
            template["Networks"] = [{"Target": spec.network}]
        return {
            "Name": spec.name,
            "Labels": spec.labels,
            "TaskTemplate": template,
            "Mode": {"Replicated": {"Replicas": 0}},  # `start` makes it one
        }

    async def start(self, container_id: str) -> None:
        """Scale the run's service to one replica, then wait until its task has
        started (or ended): a task no node can take, or whose image cannot be
        had, is an EngineError with the swarm's reason, and the service is removed."""

        def one(spec: dict[str, Any]) -> None:
            spec["Mode"] = {"Replicated": {"Replicas": 1}}

        if not await self._update(container_id, one, "start"):
            raise EngineError(f"could not start service {container_id}: there is no such service")
        delay = POLL_FIRST
        # As long as a pull may take: a node pulls the image as the task starts.
        deadline = time.monotonic() + self.pull_timeout
        while True:
            if time.monotonic() > deadline:
                await self.remove(container_id)
                raise EngineError(
                    f"the swarm did not start the run's task within {self.pull_timeout:g} s "
                    "([docker] start_timeout_seconds)"
                )
            tasks = await self._tasks(container_id)
            if tasks is None:
                raise EngineError(f"service {container_id} disappeared as it was started")
            task = tasks[0] if tasks else None
            status = (task or {}).get("Status") or {}
            state = status.get("State", "")
            err = status.get("Err") or ""
            if state in ("rejected",) or (state == "failed" and _never_ran(status)):
                await self.remove(container_id)
                raise EngineError(f"the swarm could not start the run's task: {err or state}")
            if state == "pending" and err.startswith("no suitable node"):
                await self.remove(container_id)
                raise EngineError(
                    f"no node of the swarm can take the run: {err} (see [swarm] placement "
                    "and the instance type's placement)"
                )
            if state in STARTED_STATES:
                if task and task.get("NodeID"):
                    self._placed[container_id] = await self.node_name(str(task["NodeID"]))
                return
            await asyncio.sleep(delay)
            delay = min(POLL_MAX, delay * 2)

    def node_of(self, container_id: str) -> str | None:
        return self._placed.get(container_id)

    async def _task_state(self, service: str) -> tuple[dict[str, Any] | None, bool]:
        """(the service's task, whether the service exists)."""
        tasks = await self._tasks(service)
        if tasks is None:
            return None, False
        # The run's task is the first: one the swarm makes when that one's node goes
        # down (it may, whatever the restart policy) is never the run's.
        return (tasks[0] if tasks else None), True

    async def wait(self, container_id: str) -> int | None:
        """Until the run's task has ended: its exit code; None for one runnerd
        stopped that did not end within the stop's bound. ContainerLost when it ended without
        one otherwise (its node went away, the swarm shut it down)."""
        delay = POLL_FIRST
        node_checked = time.monotonic()
        while True:
            stopping = self._stopping.get(container_id)
            if stopping is not None:  # stop() watches it exit, and keeps its code
                await stopping.wait()
                return self._exit_codes.get(container_id)
            task, exists = await self._task_state(container_id)
            if not exists or task is None:
                raise ContainerLost(f"the swarm no longer knows service {container_id}")
            status = task.get("Status") or {}
            if status.get("State") in ("complete", "failed") and not _never_ran(status):
                return int((status.get("ContainerStatus") or {}).get("ExitCode") or 0)
            check_node = time.monotonic() - node_checked >= NODE_CHECK_SECONDS
            why = await self._lost(task, check_node)
            if check_node:
                node_checked = time.monotonic()
            if why is not None:
                raise ContainerLost(why)
            await asyncio.sleep(delay)
            delay = min(POLL_MAX, delay * 2)

    async def _lost(self, task: dict[str, Any], check_node: bool = True) -> str | None:
        """Why a task that has not ended with a result never will, or None. The
        swarm ends a task without one (rejected, orphaned, shut down); a node that
        dies leaves its task "running" with desired state shutdown, and no task
        replaces it (restart condition none): its node is Down."""
        status = task.get("Status") or {}
        state = status.get("State", "")
        node_id = str(task.get("NodeID") or "")
        if state in FINAL_STATES:
            node = await self.node_name(node_id) if node_id else "(none)"
            return (
                f"its task on node {node} was {state}"
                f"{': ' + status['Err'] if status.get('Err') else ''}"
            )
        if not node_id or not (check_node or task.get("DesiredState") in ("shutdown", "remove")):
            return None
        try:
            node = await self._request("GET", f"nodes/{node_id}", "could not inspect a node")
        except EngineError as e:
            if e.status != 404:
                raise
            return f"its node {node_id} left the swarm"
        node_state = str((node.get("Status") or {}).get("State") or "")
        # A manager that has just come back has every node Down until its agent
        # reconnects (seen on the test swarm): not a node that died.
        settling = time.monotonic() - self._unanswered_at < MANAGER_SETTLE_SECONDS
        if node_state in ("down", "disconnected") and not settling:
            name = await self.node_name(node_id)
            return f"its node {name} is {node_state}, and its container with it"
        return None

    async def stop(self, container_id: str, grace_seconds: float) -> bool:
        """Halt the service (see _halt): the swarm stops its task (SIGTERM, SIGKILL
        after StopGracePeriod) and keeps it, with its exit code and all of its log,
        until `remove`. Returns once the task has ended, its exit code kept for
        `wait`; False when it was not running."""
        task, exists = await self._task_state(container_id)
        state = ((task or {}).get("Status") or {}).get("State", "")
        if not exists or task is None or state in FINAL_STATES:
            return False
        stopped = self._stopping[container_id] = asyncio.Event()
        try:
            await self._halt(container_id)
            task_id = str(task["ID"])
            deadline = time.monotonic() + self.stop_grace_seconds + self.request_timeout
            delay = POLL_FIRST
            while time.monotonic() < deadline:
                try:
                    seen = await self._request(
                        "GET", f"tasks/{task_id}", "could not inspect a task"
                    )
                except EngineError as e:
                    if e.status == 404:  # the service was removed meanwhile
                        break
                    raise
                status = seen.get("Status") or {}
                if status.get("State") in FINAL_STATES:
                    code = (status.get("ContainerStatus") or {}).get("ExitCode")
                    if code not in (None, -1) and not _never_ran(status):
                        self._exit_codes[container_id] = int(code)
                    break
                await asyncio.sleep(delay)
                delay = min(STOP_POLL_MAX, delay * 2)
        finally:
            stopped.set()
        return True

    async def _halt(self, service: str) -> None:
        """Update the service with a placement no node satisfies (HALTED), stop
        first: the swarm shuts its task down and makes a replacement that stays
        pending. Measured on Docker 20.10: removing the service, or scaling it to
        0 replicas, deletes the task as soon as its container has exited, and
        with it the exit code and what of the log runnerd had not read yet; a
        task an update replaced is kept (task history) until the service goes."""

        def halted(spec: dict[str, Any]) -> None:
            spec["TaskTemplate"].setdefault("Placement", {})["Constraints"] = [HALTED]
            spec["UpdateConfig"] = {"Parallelism": 1, "Order": "stop-first"}

        await self._update(service, halted, "stop")

    async def _update(
        self, service: str, change: Callable[[dict[str, Any]], None], what: str
    ) -> bool:
        """Apply `change` to the service's spec; False when there is no such
        service. The registry's credentials stay those it was created with (the
        manager keeps them when an update sends none)."""
        for attempt in range(3):
            current = await self._service(service)
            if current is None:
                return False
            spec = current["Spec"]
            change(spec)
            try:
                await self._request(
                    "POST",
                    f"services/{service}/update",
                    f"could not {what} service {service}",
                    params={"version": str(current["Version"]["Index"])},
                    body=spec,
                )
                return True
            except EngineError as e:
                if e.status == 404:
                    return False
                # The swarm changed the service between the read and the update.
                if "out of sequence" not in str(e) or attempt == 2:
                    raise
        return False  # not reached: the last attempt returns or raises

    async def remove(self, container_id: str) -> None:
        """Delete the run's service (stopping its container) and forget it."""
        await self._delete(container_id)
        self._stopping.pop(container_id, None)
        self._tailed.discard(container_id)
        self._placed.pop(container_id, None)
        self._exit_codes.pop(container_id, None)

    async def _delete(self, container_id: str) -> None:
        try:
            await self._request(
                "DELETE", f"services/{container_id}", "could not remove the service"
            )
        except EngineError as e:
            if e.status != 404:
                raise

    async def inspect(self, container_id: str) -> ContainerState | None:
        """The run's task as a container: running, or exited with its code; None
        when there is no such service. A task that ended without a result, or
        whose node is down, is `lost`, saying why."""
        task, exists = await self._task_state(container_id)
        if not exists:
            return None
        if task is None and await self._replicas(container_id) == 0:
            return ContainerState(  # created, never started (see create)
                id=container_id,
                status="created",
                running=False,
                exit_code=0,
                started_at="",
                labels={},
            )
        status = (task or {}).get("Status") or {}
        node_id = str((task or {}).get("NodeID") or "")
        node = await self.node_name(node_id) if node_id else None
        code = int((status.get("ContainerStatus") or {}).get("ExitCode") or 0)
        ended = status.get("State") in ("complete", "failed") and not _never_ran(status)
        lost = None if ended or task is None else await self._lost(task)
        shown = "exited" if ended or lost else "running"
        return ContainerState(
            id=container_id,
            status=shown,
            running=shown == "running",
            exit_code=code,
            started_at=str(status.get("Timestamp") or ""),
            labels={},
            node=node,
            lost=lost,
        )

    async def list_containers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """The services carrying every given label, as the executor's reconcile
        reads containers: "Id" (the service's name), "Labels"."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        services = await self._request(
            "GET", "services", "could not list services", params={"filters": json.dumps(filters)}
        )
        return [
            {"Id": s["Spec"]["Name"], "Labels": (s.get("Spec") or {}).get("Labels") or {}}
            for s in services or []
        ]

    async def output(
        self, container_id: str, since_ns: int = 0, follow: bool = True
    ) -> AsyncIterator[OutputBatch]:
        """The task's output (as Engine.output); following, it ends once the task
        has ended (the swarm's follow stream would not)."""
        task, exists = await self._task_state(container_id)
        if not exists or task is None:
            if not follow and container_id in self._stopping and container_id in self._tailed:
                # Stopped by runnerd and deleted by the swarm as it exited, after the
                # follow stream gave all it had: there is nothing more to read.
                return
            raise EngineError(f"service {container_id} has no task whose output could be read")
        path = f"tasks/{task['ID']}/logs"
        if not follow:
            async for batch in self._task_logs(path, container_id, since_ns, False):
                yield batch
            return
        ended = asyncio.ensure_future(self._ended(container_id))
        reader = self._task_logs(path, container_id, since_ns, True)
        try:
            while True:
                nxt = asyncio.ensure_future(reader.__anext__())
                if not ended.done():
                    await asyncio.wait({nxt, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    # The task has ended: the stream gives what it still holds,
                    # then would never end; it is cut once it goes quiet.
                    await asyncio.wait({nxt}, timeout=TAIL_QUIET_SECONDS)
                if not nxt.done():
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    self._tailed.add(container_id)
                    return
                try:
                    batch = nxt.result()
                except StopAsyncIteration:
                    self._tailed.add(container_id)
                    return
                yield batch
        finally:
            ended.cancel()
            await asyncio.gather(ended, return_exceptions=True)
            await reader.aclose()

    async def _task_logs(
        self, path: str, name: str, since_ns: int, follow: bool
    ) -> AsyncGenerator[OutputBatch, None]:
        """The task's log stream. The manager relays it from the task's node over
        gRPC, and reports that relay breaking (the manager or the node going down)
        inside the stream, as "rpc error: …": that is the stream breaking, raised
        as EngineUnavailable so that the executor reads on from where it was once
        the swarm answers, not a log that lost output."""
        async for batch in self._logs(path, name, since_ns, follow):
            if batch.error is not None and "rpc error:" in batch.error:
                if batch.records:
                    yield OutputBatch(batch.records)
                raise EngineUnavailable(f"the swarm broke off the task's log: {batch.error}")
            yield batch

    async def _ended(self, container_id: str) -> None:
        try:
            await self.wait(container_id)
        except EngineError:
            pass


def _created(task: dict[str, Any]) -> tuple[str, str]:
    """A sort key for a task's CreatedAt ("2026-12-03T12:42:10.69Z"): Go drops
    the fraction's trailing zeros, so it is compared padded."""
    text = str(task.get("CreatedAt") or "").rstrip("Z")
    whole, _, fraction = text.partition(".")
    return whole, fraction.ljust(9, "0")


def _never_ran(status: dict[str, Any]) -> bool:
    """A failed task whose container never ran its command (it could not be made
    or started): the swarm says so in Err, where a command that ran and failed
    reads "task: non-zero exit (N)"."""
    err = str(status.get("Err") or "")
    return bool(err) and not err.startswith("task: non-zero exit")
