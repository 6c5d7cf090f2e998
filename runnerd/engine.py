"""The Docker Engine, as runnerd needs it. The only module that imports aiodocker
(besides _aiodocker_shim, which holds the two private calls it needs).

Everything the engine says goes through here and comes out as `EngineError`
(with a sentence a user can read) or plain data, so the rest of runnerd never
sees an aiodocker type.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import json
import logging
import os
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError
from aiodocker.jsonstream import json_stream_stream
from aiodocker.utils import httpize

from . import metrics
from ._aiodocker_shim import api_url, raw_request
from .images import auth_address

log = logging.getLogger("runnerd.engine")

# Labels on every container runnerd makes: whose it is, and for which run.
LABEL_DAEMON = "io.runnerd.daemon"
LABEL_RUN = "io.runnerd.run"
LABEL_RUNNER = "io.runnerd.runner"

_FRAME = struct.Struct(">BxxxL")  # Docker's multiplexed stream: stream, size
_ENGINE_ERROR = 3  # the stream id of the engine's own messages ("systemerr")
# Output is read from the engine in pieces of up to this size, each split into its
# messages in one go: far fewer awaits (and socket pauses) than one per message.
OUTPUT_READ_BYTES = 256 * 1024
PROGRESS_LOG_SECONDS = 5.0
# Bounds are applied with asyncio.timeout around each call (waiting for a pooled
# connection included), so aiohttp's own timeouts are off everywhere.
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)
VERSION_TIMEOUT_SECONDS = 5.0  # the health probe: an engine slower than this is "down"
# Connections the engine client may hold at once: each running run holds two for
# as long as it runs (its wait and its output stream), and this many more are
# kept for creates, starts, stops, inspects, pulls and the health probe.
CONNECTION_HEADROOM = 32
_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock")

T = TypeVar("T")

DOCKER = "docker"
PODMAN = "podman"
# Limits a run's container is created with, by the names runnerd reports them under.
LIMITS = ("cpu", "memory", "pids")


def connection_limit(max_concurrent_runs: int) -> int:
    """The engine client's connection pool size for that many runs at once."""
    return 2 * max_concurrent_runs + CONNECTION_HEADROOM


class EngineError(Exception):
    """The engine refused or failed; `str()` is readable by a user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EngineUnavailable(EngineError):
    """The engine does not answer at all."""


class EngineNotReady(EngineUnavailable):
    """The engine answers but cannot run anything yet, e.g. the swarm backend's
    engine is not a swarm manager (any more); `str()` says why. Runs stay pending,
    as while it does not answer."""


class EngineTimeout(EngineUnavailable):
    """The engine took the request but did not answer it in time."""


class ImageNotFound(EngineError):
    pass


class ContainerLost(EngineError):
    """A run's container ended without a result (a swarm task whose node went
    away, or that the swarm shut down): `str()` says where and why."""


@dataclass
class ContainerSpec:
    """What to run: the container runnerd creates for one run."""

    name: str
    image: str
    cmd: list[str] | None
    entrypoint: list[str] | None
    env: list[tuple[str, str]]
    cpu: float
    mem_mib: int
    pids: int
    network: str
    log_file_bytes: int  # the size of the engine's log file for it (see log_file_bytes())
    labels: dict[str, str] = field(default_factory=dict)
    instance_type: str = ""  # its slug (the swarm backend places runs by it)
    # The image's registry credentials, for an engine whose nodes pull it themselves
    # as the run starts (Engine.credentials_on_start)
    credentials: RegistryCredentials | None = None

    def __repr__(self) -> str:  # env values are secrets: only their names are shown
        shown = ", ".join(
            f"{f.name}={[k for k, _ in self.env]!r}"
            if f.name == "env"
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"ContainerSpec({shown})"


@dataclass
class RegistryCredentials:
    host: str
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"RegistryCredentials(host={self.host!r}, username={self.username!r})"


def registry_auth(credentials: RegistryCredentials | None) -> dict[str, str]:
    """The X-Registry-Auth header that hands the engine a registry's credentials
    (for a pull, or a swarm service whose nodes pull); none without credentials."""
    if credentials is None:
        return {}
    auth = {
        "username": credentials.username,
        "password": credentials.password,
        "serveraddress": auth_address(credentials.host),
    }
    encoded = base64.urlsafe_b64encode(json.dumps(auth).encode("utf-8")).decode("ascii")
    return {"X-Registry-Auth": encoded}


@dataclass
class ContainerState:
    """What the engine says of a container: `status` is Docker's (created,
    running, exited, ...), `exit_code` meaningful once it is not running."""

    id: str
    status: str
    running: bool
    exit_code: int
    started_at: str
    labels: dict[str, str]
    node: str | None = None  # where it runs, on an engine of several nodes (Swarm)
    lost: str | None = None  # it ended without a result: why (its node went away, ...)


# The `local` log driver stores each message as a protobuf entry (stream name, time,
# the line without its newline) between two 4-byte lengths: at most this many bytes
# besides the message itself (27-29 measured on 20.10). A piece of a line (a message
# not ending in a newline: the end of a line longer than the engine's buffer, or a
# last line without one) also carries a 64-character id and an ordinal.
LOG_LINE_OVERHEAD = 32
LOG_PIECE_OVERHEAD = 112


# The engine keeps at least this much of a container's log in all (in more files
# when they are small), so a daemon that restarts while a run writes can read on.
LOG_KEEP_BYTES = 256 * 1024 * 1024


def log_file_bytes(max_log_bytes: int) -> int:
    """The size of the engine's log file for a run that keeps up to `max_log_bytes`
    of output: twice that, so lines of ~30 bytes and more fit with their framing
    (runnerd cuts a log whose framed size could pass it: see LogWriter)."""
    return 2 * max_log_bytes + 1024 * 1024


@dataclass(frozen=True)
class EngineKind:
    """Which engine answers, and what runnerd does differently for it. Every
    per-engine choice is made here, from what `/version` and `/info` say:

    - Docker: the `local` log driver (raw bytes, rotated at `log_file_bytes`),
      whose follow stream is a faithful copy of the output (`exact_follow`).
    - Podman (`Components` names a "Podman Engine"): it has no `local` driver,
      so `k8s-file`, never rotated (conmon's rotation truncates the file, which
      would lose the start of the output). Its follow stream drops and repeats
      data and its timestamps are whole seconds, so after each run the log is
      checked against a plain read of the engine's copy, and repaired from it.

    `unenforced_limits` are the limits (of LIMITS) the engine says it cannot
    apply: rootless on cgroup v1, or a controller the cgroup lacks."""

    name: str  # DOCKER or PODMAN
    version: str
    api_version: str
    rootless: bool = False
    cgroup_version: str = ""  # "1", "2"; "" when the engine does not say
    unenforced_limits: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """For people: "Podman 4.3.1 (rootless)"."""
        name = "Podman" if self.name == PODMAN else "Docker"
        return f"{name} {self.version}{' (rootless)' if self.rootless else ''}"

    @property
    def exact_follow(self) -> bool:
        """The follow stream is a faithful copy of the output: nothing to check."""
        return self.name != PODMAN

    @property
    def joins_line_pieces(self) -> bool:
        """The engine logs a long line in pieces as its pipe gave them, and
        runnerd joins them into lines (see _LineJoiner); Docker logs lines."""
        return self.name == PODMAN

    @property
    def log_driver(self) -> str:
        return "k8s-file" if self.name == PODMAN else "local"

    def log_config(self, log_file_bytes: int) -> dict[str, Any]:
        """The container's HostConfig.LogConfig."""
        if self.name == PODMAN:
            return {"Type": self.log_driver}  # no max-size: see the class
        # "local" keeps raw bytes (json-file mangles non-UTF-8). One file holds
        # everything runnerd keeps, so it is never rotated while runnerd reads it:
        # Docker 20.10's follow reader skips or repeats messages across a rotation
        # when it lags behind the container. Older files keep it readable (for a
        # resume after a daemon restart) once the container writes past it.
        return {
            "Type": self.log_driver,
            "Config": {
                "max-size": str(log_file_bytes),
                "max-file": str(max(2, -(-LOG_KEEP_BYTES // log_file_bytes))),
                "compress": "false",
            },
        }

    def engine_copy(self, max_log_bytes: int) -> tuple[int, int, int] | None:
        """(bytes, per line, per piece) the engine's copy of a run's output holds
        before it rotates (see logs.EngineCopy); None: it never rotates."""
        if self.name == PODMAN:
            return None
        return log_file_bytes(max_log_bytes), LOG_LINE_OVERHEAD, LOG_PIECE_OVERHEAD

    def as_json(self) -> dict[str, Any]:
        """For /healthz."""
        return {
            "name": self.name,
            "version": self.version,
            "api_version": self.api_version,
            "rootless": self.rootless,
            "cgroup_version": self.cgroup_version or None,
            "unenforced_limits": list(self.unenforced_limits),
        }


def engine_kind(version: Mapping[str, Any], info: Mapping[str, Any]) -> EngineKind:
    """What `/version` and `/info` say about the engine."""
    components = version.get("Components") or []
    podman = next(
        (
            c
            for c in components
            if isinstance(c, dict) and "podman" in str(c.get("Name", "")).lower()
        ),
        None,
    )
    # Rootless Docker says so in SecurityOptions ("name=rootless"); Podman (4.3,
    # measured) never does, only in a field of its own, "Rootless": true.
    security = [str(o) for o in info.get("SecurityOptions") or []]
    rootless = any("name=rootless" in o for o in security) or info.get("Rootless") is True
    cgroup = str(info.get("CgroupVersion") or "")
    # No delegation on cgroup v1: no limit applies, whatever the flags below say
    # (rootless Podman 4.3 on cgroup v1 reports all three true, and ignores them).
    if rootless and cgroup == "1":
        unenforced: tuple[str, ...] = LIMITS
    else:
        flags = {"cpu": "CpuCfsQuota", "memory": "MemoryLimit", "pids": "PidsLimit"}
        unenforced = tuple(name for name in LIMITS if info.get(flags[name]) is False)
    return EngineKind(
        name=PODMAN if podman is not None else DOCKER,
        version=str((podman or version).get("Version") or version.get("Version") or "?"),
        api_version=str(version.get("ApiVersion") or "?"),
        rootless=rootless,
        cgroup_version=cgroup,
        unenforced_limits=unenforced,
    )


@dataclass
class OutputBatch:
    """The messages of one read from the engine, in the order it logged them:
    (stream: 1 stdout or 2 stderr, time in ns the engine received it, bytes).
    `error` instead is what the engine said went wrong while reading its log."""

    records: list[tuple[int, int, memoryview]]
    error: str | None = None


class Engine:
    """The engine client. Every call is bounded: short calls by `request_timeout`
    seconds, a pull by `pull_timeout` in all and by `pull_stall` without a progress
    event; only a container's wait and its output stream last as long as it runs.
    `max_connections` sizes the connection pool (see connection_limit())."""

    def __init__(
        self,
        url: str | None = None,
        *,
        request_timeout: float = 60.0,
        pull_timeout: float = 3600.0,
        pull_stall: float = 120.0,
        max_connections: int = connection_limit(4),
    ) -> None:
        self._url = url
        self.request_timeout = request_timeout
        self.pull_timeout = pull_timeout
        self.pull_stall = pull_stall
        self.max_connections = max_connections
        self._docker: aiodocker.Docker | None = None
        self._kind: EngineKind | None = None
        self._kind_of: tuple[Any, Any] = (None, None)  # the /version it was detected from
        self._streams: aiohttp.ClientSession | None = None

    # Whether a run's ContainerSpec carries its registry credentials: the engine
    # pulls the image again where the run starts (the swarm backend's nodes).
    credentials_on_start = False

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            url, connector = self._connector()
            try:
                self._docker = aiodocker.Docker(url=url, connector=connector, timeout=_NO_TIMEOUT)
            except ValueError as e:
                raise EngineUnavailable(f"cannot find the Docker engine: {e}") from None
        return self._docker

    def _connector(self) -> tuple[str | None, aiohttp.BaseConnector | None]:
        """(the URL for aiodocker, a pool of `max_connections` to the engine) for
        the addresses runnerd documents (unix socket, tcp/http/https); no pool for
        the others (ssh, DOCKER_TLS_VERIFY's client certificates): aiodocker makes
        one, of aiohttp's default size (100)."""
        url = self._url or os.environ.get("DOCKER_HOST")
        if url is None:
            url = next((f"unix://{p}" for p in _SOCKETS if os.path.exists(p)), None)
        if url is None:
            return self._url, None  # aiodocker says what it could not find
        if url.startswith("unix://"):
            # aiodocker's own name for a unix socket in URLs (the path is the pool's)
            return "unix://localhost", aiohttp.UnixConnector(
                url[len("unix://") :], limit=self.max_connections
            )
        if (
            url.startswith(("tcp://", "http://", "https://"))
            and os.environ.get("DOCKER_TLS_VERIFY", "0") != "1"
        ):
            return url, aiohttp.TCPConnector(limit=self.max_connections)
        log.warning(
            "the Docker engine client's connection pool is aiohttp's default (100) "
            "for %s, not sized from [scheduler] max_concurrent_runs",
            url,
        )
        return url, None

    def _timed_out(self, what: str, operation: str) -> EngineTimeout:
        metrics.engine_error(operation)
        return EngineTimeout(
            f"{what}: the Docker engine did not answer within {self.request_timeout:g} s"
        )

    async def _bounded(self, call: Awaitable[T], what: str, operation: str) -> T:
        """`call` within request_timeout; past it an EngineTimeout saying so."""
        try:
            async with asyncio.timeout(self.request_timeout):
                return await call
        except TimeoutError:
            raise self._timed_out(what, operation) from None

    def _container(self, container_id: str) -> aiodocker.containers.DockerContainer:
        """A handle on the container for aiodocker's calls (no request is made)."""
        return self.docker.containers.container(container_id)

    @property
    def streams(self) -> aiohttp.ClientSession:
        """A session for output streams, on the engine client's connections, that
        speaks HTTP/1.0: the engine then sends a stream as it is, where over
        HTTP/1.1 it makes every message an HTTP chunk, each costing aiohttp a
        callback and a buffer entry (a quarter of the daemon's time for a flood of
        short lines). The connection closes at the end of the stream."""
        if self._streams is None:
            self._streams = aiohttp.ClientSession(
                connector=self.docker.connector,
                connector_owner=False,
                version=aiohttp.HttpVersion10,
                timeout=_NO_TIMEOUT,
            )
        return self._streams

    async def close(self) -> None:
        if self._streams is not None:
            streams, self._streams = self._streams, None
            await streams.close()
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()
            if docker.connector is not None and not docker.connector.closed:
                await docker.connector.close()  # ours (passed in), not aiodocker's to close

    async def version(self) -> dict[str, Any]:
        """The engine's version info; raises EngineUnavailable when it does not answer."""
        try:
            async with asyncio.timeout(min(VERSION_TIMEOUT_SECONDS, self.request_timeout)):
                version = await self.docker.version()
        except (DockerError, aiohttp.ClientError, OSError, TimeoutError) as e:
            raise EngineUnavailable(f"the Docker engine does not answer: {_reason(e)}") from None
        await self._detect(version)
        return version

    async def kind(self) -> EngineKind:
        """Which engine answers (asked once, then again when its version changes,
        as after an upgrade); raises EngineUnavailable when it does not answer."""
        if self._kind is None:
            await self.version()
        assert self._kind is not None
        return self._kind

    @property
    def known_kind(self) -> EngineKind | None:
        """The engine last seen, without asking; None before it first answered."""
        return self._kind

    async def _detect(self, version: dict[str, Any]) -> None:
        seen = (version.get("Version"), version.get("ApiVersion"))
        if self._kind is not None and seen == self._kind_of:
            return
        try:
            # Bounded like any call, not by the health probe's few seconds: a busy
            # Podman service has been seen to take over a minute for /info.
            async with asyncio.timeout(self.request_timeout):
                info = await self.docker.system.info()
        except (DockerError, aiohttp.ClientError, OSError, TimeoutError) as e:
            raise EngineUnavailable(f"the Docker engine does not answer: {_reason(e)}") from None
        kind = engine_kind(version, info)
        if kind != self._kind:
            log.info(
                "the engine is %s (API %s%s)%s",
                kind.label,
                kind.api_version,
                f", cgroup v{kind.cgroup_version}" if kind.cgroup_version else "",
                ""
                if kind.exact_follow
                else "; each run's log is checked against the engine's copy when it ends",
            )
            if kind.unenforced_limits:
                log.warning(
                    "the engine cannot apply a run's %s limits%s: runs go without them",
                    ", ".join(kind.unenforced_limits),
                    " (rootless on cgroup v1)"
                    if kind.rootless and kind.cgroup_version == "1"
                    else "",
                )
        self._kind, self._kind_of = kind, seen

    # -- images ---------------------------------------------------------------

    async def has_image(self, ref: str) -> bool:
        try:
            await self._bounded(
                self.docker.images.inspect(ref), f"could not inspect image {ref}", "inspect_image"
            )
            return True
        except DockerError as e:
            if e.status == 404:
                return False
            raise as_engine_error(e, f"could not inspect image {ref}", "inspect_image") from None
        except (aiohttp.ClientError, OSError) as e:
            raise as_engine_error(e, f"could not inspect image {ref}", "inspect_image") from None

    async def pull(self, ref: str, credentials: RegistryCredentials | None = None) -> None:
        """Pull `ref` (with the registry's credentials, sent as X-Registry-Auth).
        Progress goes to the log at most every PROGRESS_LOG_SECONDS; an error
        names what the registry answered, never the credentials.

        A pull with no progress event for `pull_stall` seconds, or not done after
        `pull_timeout`, is aborted with an EngineError saying so. Aborting (that,
        or the caller's cancel) closes the request, which makes the engine stop
        the pull."""
        log.info(
            "pulling image %s%s",
            ref,
            f" as {credentials.username} from {credentials.host}" if credentials else "",
        )
        started = last_report = time.monotonic()
        # The header is made here, not by aiodocker's `images.pull(auth=...)`: that
        # one overwrites serveraddress with the name's first part ("myorg" for
        # Docker Hub's myorg/job) and raises ValueError for a name without one
        # ("busybox").
        headers = registry_auth(credentials)
        layers: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        try:
            async with (
                asyncio.timeout(self.pull_timeout) as total,
                asyncio.timeout(self.pull_stall) as stall,
            ):
                async with raw_request(
                    self.docker,
                    "images/create",
                    method="POST",
                    params={"fromImage": ref},
                    headers=headers,
                ) as response:
                    try:
                        # Raises DockerError for an error reported inside the stream.
                        async for event in json_stream_stream(response):
                            stall.reschedule(loop.time() + self.pull_stall)
                            if event.get("id") and event.get("status"):
                                layers[event["id"]] = event["status"]
                            if time.monotonic() - last_report >= PROGRESS_LOG_SECONDS:
                                last_report = time.monotonic()
                                done = sum(
                                    1
                                    for s in layers.values()
                                    if s in ("Pull complete", "Already exists")
                                )
                                log.info(
                                    "pulling image %s: %d of %d layers done", ref, done, len(layers)
                                )
                    finally:
                        response.close()  # unread to the end: the engine stops the pull
        except TimeoutError:
            metrics.image_pulled(ok=False)
            metrics.engine_error("pull")
            if total.expired():
                why = f"not done after {self.pull_timeout:g} s"
            else:
                why = (
                    f"it stalled: no progress for {self.pull_stall:g} s (the registry "
                    "or the engine stopped sending)"
                )
            log.warning("pull of image %s aborted: %s", ref, why)
            raise EngineError(f"could not pull image {ref}: {why}") from None
        except (DockerError, aiohttp.ClientError, OSError) as e:
            metrics.image_pulled(ok=False)
            error = as_engine_error(e, f"could not pull image {ref}", "pull")
            if credentials is not None and credentials.password:
                error = type(error)(str(error).replace(credentials.password, "***"), error.status)
            raise error from None
        metrics.image_pulled(ok=True)
        log.info("pulled image %s in %.1f s", ref, time.monotonic() - started)

    # -- containers -----------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        kind = await self.kind()
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{k}={v}" for k, v in spec.env],
            "Labels": spec.labels,
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "Tty": False,
            "OpenStdin": False,
            "HostConfig": {
                "NanoCpus": int(spec.cpu * 1e9),
                "Memory": spec.mem_mib * 1024 * 1024,
                "MemorySwap": spec.mem_mib * 1024 * 1024,  # no swap beyond the limit
                "PidsLimit": spec.pids,
                "NetworkMode": spec.network,
                "LogConfig": kind.log_config(spec.log_file_bytes),
                "AutoRemove": False,
            },
        }
        if spec.cmd is not None:
            config["Cmd"] = spec.cmd
        if spec.entrypoint is not None:
            config["Entrypoint"] = spec.entrypoint
        try:
            container = await self._bounded(
                self.docker.containers.create(config, name=spec.name),
                "could not create the container",
                "create",
            )
        except DockerError as e:
            if e.status == 500 and "name is already in use" in str(e.message):
                e = DockerError(409, str(e.message))  # Podman answers a name conflict with 500
            raise as_engine_error(e, "could not create the container", "create") from None
        except (aiohttp.ClientError, OSError) as e:
            raise as_engine_error(e, "could not create the container", "create") from None
        return str(container.id)

    async def start(self, container_id: str) -> None:
        try:
            await self._bounded(
                self._container(container_id).start(), "could not start the container", "start"
            )
        except (DockerError, aiohttp.ClientError, OSError) as e:
            raise as_engine_error(e, "could not start the container", "start") from None

    def node_of(self, container_id: str) -> str | None:
        """The node a started container runs on, on an engine of several (Swarm);
        None on one engine."""
        return None

    async def wait(self, container_id: str) -> int | None:
        """Block until the container exits; its exit code (None: not known, as
        for a swarm task that runnerd stopped)."""
        try:
            data = await self._container(container_id).wait(timeout=_NO_TIMEOUT)
        except (DockerError, aiohttp.ClientError, OSError) as e:
            raise as_engine_error(e, "lost the container while waiting for it", "wait") from None
        if data.get("Error") and data["Error"].get("Message"):
            log.warning(
                "engine reported on wait for %s: %s", container_id[:12], data["Error"]["Message"]
            )
        return int(data["StatusCode"])

    async def stop(self, container_id: str, grace_seconds: float) -> bool:
        """SIGTERM (whatever the image's STOPSIGNAL), then SIGKILL once the grace
        period (which may be fractional) has passed; returns when it has exited.
        False when it was not running (already exited, or gone)."""
        if not await self._signal(container_id, "SIGTERM"):
            return False
        try:
            await asyncio.wait_for(self.wait(container_id), grace_seconds)
        except TimeoutError:
            await self._signal(container_id, "SIGKILL")
        return True

    async def _signal(self, container_id: str, signal: str) -> bool:
        """False when the container is not running (or gone) any more."""
        try:
            await self._bounded(
                self._container(container_id).kill(signal=signal, timeout=_NO_TIMEOUT),
                "could not signal the container",
                "kill",
            )
            return True
        except DockerError as e:
            if e.status in (404, 409) or _not_running(e):  # gone, or not running
                return False
            raise as_engine_error(e, "could not signal the container", "kill") from None
        except (aiohttp.ClientError, OSError) as e:
            raise as_engine_error(e, "could not signal the container", "kill") from None

    async def remove(self, container_id: str) -> None:
        try:
            await self._bounded(
                self._container(container_id).delete(force=True, v=True, timeout=_NO_TIMEOUT),
                "could not remove the container",
                "remove",
            )
        except DockerError as e:
            if e.status == 404:
                return
            raise as_engine_error(e, "could not remove the container", "remove") from None
        except (aiohttp.ClientError, OSError) as e:
            raise as_engine_error(e, "could not remove the container", "remove") from None

    async def output(
        self, container_id: str, since_ns: int = 0, follow: bool = True
    ) -> AsyncIterator[OutputBatch]:
        """The container's output from its start (or `since_ns`, inclusive), in
        batches of the messages the engine logged, as raw bytes with their stream
        and time. Following, it ends when the container has exited; the engine may
        then still hold a last message (a final line without newline): read once
        more without `follow` to get it."""
        async for batch in self._logs(
            f"containers/{container_id}/logs", container_id, since_ns, follow
        ):
            yield batch

    async def _logs(
        self, path: str, name: str, since_ns: int, follow: bool
    ) -> AsyncGenerator[OutputBatch, None]:
        """The log stream at `path` (a container's, or a swarm task's: the same
        multiplexed, timestamped format), as `output` gives it."""
        params: dict[str, Any] = {
            "follow": follow,
            "stdout": True,
            "stderr": True,
            "timestamps": True,
        }
        if since_ns:
            params["since"] = f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}"
        try:
            url = await api_url(self.docker, path)
            async with self.streams.get(url, params=httpize(params)) as response:
                if response.status >= 400:
                    raise DockerError(response.status, _error_message(await response.read()))
                splitter = _FrameSplitter()
                joiner = (
                    _LineJoiner()
                    if self._kind is not None and self._kind.joins_line_pieces
                    else None
                )
                ends = _LineEnds() if joiner is None else None
                content = response.content
                while True:
                    # read() also raises the stream's buffer limits to this size.
                    data = await content.read(OUTPUT_READ_BYTES)
                    if not data:
                        if splitter.pending:
                            log.warning("output of %s ended inside a message", name[:12])
                        if joiner is not None and joiner.pending:
                            yield OutputBatch(joiner.flush())
                        return
                    for batch in splitter.feed(data):
                        if joiner is not None:
                            batch.records = joiner.feed(batch.records)
                        elif ends is not None:
                            ends.feed(batch.records)
                        if batch.error is not None:
                            log.warning(
                                "the engine reported on the output of %s: %s",
                                name[:12],
                                batch.error,
                            )
                        yield batch
        except DockerError as e:
            raise as_engine_error(e, "could not read the container's output", "logs") from None
        except (aiohttp.ClientError, OSError) as e:
            raise as_engine_error(e, "lost the container's output stream", "logs") from None

    async def inspect(self, container_id: str) -> ContainerState | None:
        """The container's state, or None when the engine has no such container."""
        try:
            data = await self._bounded(
                self._container(container_id).show(),
                "could not inspect the container",
                "inspect",
            )
        except DockerError as e:
            if e.status == 404:
                return None
            raise as_engine_error(e, "could not inspect the container", "inspect") from None
        except (aiohttp.ClientError, OSError) as e:
            raise as_engine_error(e, "could not inspect the container", "inspect") from None
        state = data.get("State") or {}
        return ContainerState(
            id=data["Id"],
            status=state.get("Status", ""),
            running=bool(state.get("Running")),
            exit_code=int(state.get("ExitCode") or 0),
            started_at=state.get("StartedAt", ""),
            labels=(data.get("Config") or {}).get("Labels") or {},
        )

    async def list_containers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """All containers (running or not) carrying every given label: each one's
        "Id", "Labels", "State" and "Status" as the engine lists them."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        try:
            containers = await self._bounded(
                self.docker.containers.list(all=True, filters=json.dumps(filters)),
                "could not list containers",
                "list",
            )
        except (DockerError, aiohttp.ClientError, OSError) as e:
            raise as_engine_error(e, "could not list containers", "list") from None
        return [
            {"Id": c.id, **{k: c[k] for k in ("Labels", "State", "Status") if k in c}}
            for c in containers
        ]


class _FrameSplitter:
    """Splits Docker's multiplexed log stream, fed in pieces of any size, into
    messages: each an 8-byte frame header (stream, size) and a payload
    `2026-11-28T19:44:30.123456789Z <message>`. A message's bytes are a memoryview
    of the piece they came in (no copy)."""

    def __init__(self) -> None:
        self._rest = b""  # the start of a message cut by the end of the last piece
        self._second = b""  # the cached date and time to the second, and its ns
        self._second_ns = 0

    @property
    def pending(self) -> int:
        return len(self._rest)

    def feed(self, data: bytes) -> list[OutputBatch]:
        buf = self._rest + data if self._rest else data
        view = memoryview(buf)
        end = len(buf)
        pos = 0
        batches: list[OutputBatch] = []
        records: list[tuple[int, int, memoryview]] = []
        unpack = _FRAME.unpack_from
        while pos + 8 <= end:
            stream, size = unpack(buf, pos)
            start = pos + 8
            stop = start + size
            if stop > end:
                break
            pos = stop
            if stream == _ENGINE_ERROR:
                if records:
                    batches.append(OutputBatch(records))
                    records = []
                text = bytes(view[start:stop]).decode("utf-8", "replace").strip()
                batches.append(OutputBatch([], error=text or "(no message)"))
                continue
            # The engine's stamp: 30 bytes (nanoseconds always 9 digits), a space.
            if (
                size > 30
                and buf[start + 30] == 0x20
                and buf[start + 19] == 0x2E
                and buf[start + 29] == 0x5A
            ):
                second = buf[start : start + 19]
                if second != self._second and not self._cache_second(second):
                    ts_ns, skip = time.time_ns(), 0
                else:
                    try:
                        ts_ns, skip = self._second_ns + int(buf[start + 20 : start + 29]), 31
                    except ValueError:
                        ts_ns, skip = time.time_ns(), 0
            else:
                ts_ns, skip = self._stamp(buf[start:stop])
            records.append((2 if stream == 2 else 1, ts_ns, view[start + skip : stop]))
        if records or not batches:
            batches.append(OutputBatch(records))
        self._rest = buf[pos:] if pos < end else b""
        return batches

    def _cache_second(self, second: bytes) -> bool:
        try:
            tm = time.strptime(second.decode("ascii"), "%Y-%m-%dT%H:%M:%S")
        except (ValueError, UnicodeDecodeError):
            return False
        self._second, self._second_ns = second, calendar.timegm(tm) * 1_000_000_000
        return True

    def _stamp(self, payload: bytes) -> tuple[int, int]:
        """(ns, bytes before the message) of a payload whose stamp is not in the
        usual form; (now, 0) when it has none: every byte is kept."""
        space = payload.find(b" ", 0, 40)
        if space < 20 or payload[19:20] not in (b".", b"Z"):
            return time.time_ns(), 0
        second = payload[:19]
        if second != self._second and not self._cache_second(second):
            return time.time_ns(), 0
        frac = payload[20:space].rstrip(b"Z")
        nanos = int(frac.ljust(9, b"0")[:9]) if frac.isdigit() else 0
        return self._second_ns + nanos, space + 1


# Podman's pieces of a line are joined up to this size, as Docker's own log reader
# cuts a longer line into messages of 16 KiB.
LINE_JOIN_BYTES = 16 * 1024


# Docker's log drivers keep a line longer than their buffer as messages of this size.
DOCKER_PIECE_BYTES = 16 * 1024


class _LineEnds:
    """Gives a long line back its newline. Docker logs a line longer than 16 KiB
    as pieces, and its logs API (a container's, a swarm task's) gives the `local`
    driver's pieces all without a newline, the last one too (moby's reader adds
    one only to a message that is not a piece), so the line's own is lost. A
    message of exactly DOCKER_PIECE_BYTES without a newline is such a piece; the
    next message of its stream ends that line, and gets its newline back unless it
    has one (json-file's readers keep it). What this cannot tell apart: a line
    longer than 16 KiB that ends the output without a newline gets one."""

    def __init__(self) -> None:
        self._open = [False, False, False]  # by stream: inside a long line

    def feed(self, records: list[tuple[int, int, memoryview]]) -> None:
        """Mend `records` in place (the stream's messages in order, batch by batch)."""
        is_open = self._open
        for i, (stream, ts_ns, data) in enumerate(records):
            if stream > 2:
                continue
            n = len(data)
            piece = n == DOCKER_PIECE_BYTES and data[n - 1] != 0x0A
            if is_open[stream] and not piece:
                is_open[stream] = False
                if n == 0 or data[n - 1] != 0x0A:
                    records[i] = (stream, ts_ns, memoryview(bytes(data) + b"\n"))
            elif piece:
                is_open[stream] = True


class _LineJoiner:
    """Podman's conmon logs what each read of a pipe gave (up to 8 KiB), so a line
    often comes in pieces, and the pieces of stdout and stderr lines interleave:
    read in order, a line of one stream would be torn by the other. Joined here,
    per stream, into whole lines of up to LINE_JOIN_BYTES, as Docker's engine
    logs them: each stamped with its first piece's time, and placed where its
    last piece came. The pieces still held are given by flush() at the end."""

    def __init__(self) -> None:
        # stream -> its pieces held since the last newline: (time, bytes)
        self._held: dict[int, list[tuple[int, memoryview]]] = {1: [], 2: []}
        self._sizes = {1: 0, 2: 0}

    @property
    def pending(self) -> bool:
        return bool(self._held[1] or self._held[2])

    def feed(self, records: list[tuple[int, int, memoryview]]) -> list[tuple[int, int, memoryview]]:
        out: list[tuple[int, int, memoryview]] = []
        held, sizes = self._held, self._sizes
        for stream, ts_ns, data in records:
            pieces = held[stream]
            n = len(data)
            if n and data[n - 1] != 0x0A and sizes[stream] + n < LINE_JOIN_BYTES:
                pieces.append((ts_ns, data))
                sizes[stream] += n
            elif pieces:
                pieces.append((ts_ns, data))
                out.append((stream, pieces[0][0], memoryview(b"".join(p for _, p in pieces))))
                pieces.clear()
                sizes[stream] = 0
            else:
                out.append((stream, ts_ns, data))
        return out

    def flush(self) -> list[tuple[int, int, memoryview]]:
        """The pieces held (lines without their newline yet), in the order they began."""
        out = [
            (stream, pieces[0][0], memoryview(b"".join(p for _, p in pieces)))
            for stream, pieces in self._held.items()
            if pieces
        ]
        out.sort(key=lambda r: r[1])
        for stream in self._held:
            self._held[stream] = []
            self._sizes[stream] = 0
        return out


def _error_message(body: bytes) -> str:
    """The message of an error answer: JSON {"message": ...}, or the text."""
    text = body.decode("utf-8", "replace")
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        return text.strip()
    return str(message) if message else text.strip()


def _reason(e: BaseException) -> str:
    if isinstance(e, DockerError):
        return str(e.message).strip()
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e).strip() or type(e).__name__


def as_engine_error(e: BaseException, what: str, operation: str) -> EngineError:
    metrics.engine_error(operation)
    if isinstance(e, DockerError):
        if e.status == 900:  # aiodocker's "cannot connect"
            return EngineUnavailable(f"{what}: the Docker engine does not answer", e.status)
        if e.status == 404 and "image" in str(e.message).lower():
            return ImageNotFound(f"{what}: {_reason(e)}", e.status)
        return EngineError(f"{what}: {_reason(e)}", e.status)
    if isinstance(
        e, (aiohttp.ClientConnectionError, ConnectionError, FileNotFoundError, TimeoutError)
    ):
        return EngineUnavailable(f"{what}: the Docker engine does not answer ({_reason(e)})")
    return EngineError(f"{what}: {_reason(e)}")


def _not_running(e: DockerError) -> bool:
    """Podman's answer to a signal for a container that is not running: a 500
    "container state improper" (Docker's is a 409), e.g. when two cancels race
    and the first one's SIGKILL has already ended it."""
    return e.status == 500 and "container state improper" in str(e.message)
