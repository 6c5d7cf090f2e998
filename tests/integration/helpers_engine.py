"""Observing and acting on the engine directly, independent of runnerd: which
containers exist or run for a daemon or a run, what they were created with, and
acting on them as an operator would (exec, kill, remove), e.g. to release a
container that waits for a file (no network inside test containers).

Everything here talks to the engine's own API over the unix socket DOCKER_HOST
names (Docker's or Podman's), never through runnerd and never through the docker
CLI: the CLI's own wording and defaults differ by engine, the API is the contract
both serve. `EngineProbe` is the asynchronous client (aiohttp, for coroutines);
`EngineApi` the same calls, synchronous (stdlib http.client), for plain functions
and threads.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
import urllib.parse
from typing import Any

import aiohttp
from conftest import BACKEND_ENV, wait_until

from runnerd.engine import PODMAN, engine_kind
from tests.harness import UnixHTTPConnection
from tests.swarm_cluster import SwarmCluster

LABEL_DAEMON = "io.runnerd.daemon"
LABEL_RUN = "io.runnerd.run"
LABEL_RUNNER = "io.runnerd.runner"

# A command that keeps its container running until `release()` touches /tmp/go.
GATE = "while [ ! -e /tmp/go ]; do sleep 0.05; done"


def docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return "/var/run/docker.sock"


class EngineProbe:
    """A minimal Docker Engine API client over the unix socket."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def _get(self, path: str, **params: str) -> tuple[int, Any]:
        async with self.session.get(f"http://docker{path}", params=params) as resp:
            return resp.status, await resp.json(content_type=None)

    async def _post(self, path: str, body: Any = None, **params: str) -> tuple[int, bytes]:
        async with self.session.post(f"http://docker{path}", params=params, json=body) as resp:
            return resp.status, await resp.read()

    async def containers(self, labels: dict[str, str], *, all: bool) -> list[dict[str, Any]]:
        """Containers carrying every label; only running ones unless `all`."""
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        status, data = await self._get("/containers/json", filters=filters, all="1" if all else "0")
        assert status == 200, data
        return data

    async def running_for_daemon(self, daemon_id: str) -> list[dict[str, Any]]:
        return await self.containers({LABEL_DAEMON: daemon_id}, all=False)

    async def for_run(self, run_id: str) -> list[dict[str, Any]]:
        """Every container (any state) labelled with this run id."""
        return await self.containers({LABEL_RUN: run_id}, all=True)

    async def inspect(self, container_id: str) -> dict[str, Any]:
        status, data = await self._get(f"/containers/{container_id}/json")
        assert status == 200, data
        return data

    async def running_container_of(self, run_id: str, timeout: float = 30) -> dict[str, Any]:
        """The inspect data of the run's container once it is running."""

        async def running() -> dict[str, Any] | None:
            for c in await self.containers({LABEL_RUN: run_id}, all=False):
                return await self.inspect(c["Id"])
            return None

        return await wait_until(
            running, timeout=timeout, what=f"a running container for run {run_id}"
        )

    async def wait_gone(self, run_id: str, timeout: float = 15) -> None:
        """No container of the run is left in the engine (not even a stopped one)."""

        async def gone() -> bool:
            return not await self.for_run(run_id)

        await wait_until(gone, timeout=timeout, what=f"run {run_id}'s container to be removed")

    async def exec(self, container_id: str, *cmd: str) -> int:
        """Run `cmd` inside the running container, to its end; its exit code."""
        status, body = await self._post(f"/containers/{container_id}/exec", exec_config(cmd))
        assert status == 201, (status, body)
        exec_id = json.loads(body)["Id"]
        # Attached, not detached: the answer's stream ends when the command has
        # ended (Podman 4 never marks a detached exec as ended in its inspect data).
        status, body = await self._post(f"/exec/{exec_id}/start", {"Detach": False})
        assert status == 200, (status, body)
        status, data = await self._get(f"/exec/{exec_id}/json")
        assert status == 200 and not data["Running"], (status, data)
        return int(data["ExitCode"])

    async def kill(self, container_id: str, signal: str = "KILL") -> None:
        status, body = await self._post(f"/containers/{container_id}/kill", signal=signal)
        assert status == 204, (status, body)

    async def remove(self, container_id: str) -> None:
        """Remove the container, stopping it first if it runs (`docker rm -f`)."""
        async with self.session.delete(
            f"http://docker/containers/{container_id}", params={"force": "1"}
        ) as resp:
            assert resp.status == 204, (resp.status, await resp.read())


class SwarmProbe(EngineProbe):
    """The probe on the swarm backend: a run's container is on whichever node of
    the test swarm its task went to, so a list asks every node, and a call about
    one container (or exec) goes to the node that has it."""

    def __init__(self, sessions: list[aiohttp.ClientSession]) -> None:
        super().__init__(sessions[0])
        self.sessions = sessions
        self._node_of: dict[str, aiohttp.ClientSession] = {}  # container or exec id -> node

    async def _node(self, path: str) -> aiohttp.ClientSession:
        parts = path.split("/")
        if len(parts) > 2 and parts[1] in ("containers", "exec") and parts[2] != "json":
            ref = parts[2]
            if ref not in self._node_of:
                for session in self.sessions:
                    async with session.get(f"http://docker/containers/{ref}/json") as resp:
                        if resp.status == 200:
                            self._node_of[ref] = session
                            break
            return self._node_of.get(ref, self.sessions[0])
        return self.sessions[0]

    async def _get(self, path: str, **params: str) -> tuple[int, Any]:
        if path == "/containers/json":  # every node's, together
            found: list[Any] = []
            for session in self.sessions:
                async with session.get(f"http://docker{path}", params=params) as resp:
                    data = await resp.json(content_type=None)
                    if resp.status != 200:
                        return resp.status, data
                    found.extend(data)
            return 200, found
        self.session = await self._node(path)
        return await super()._get(path, **params)

    async def _post(self, path: str, body: Any = None, **params: str) -> tuple[int, bytes]:
        self.session = await self._node(path)
        status, data = await super()._post(path, body, **params)
        if path.endswith("/exec") and status == 201:  # the exec lives on the same node
            self._node_of[json.loads(data)["Id"]] = self.session
        return status, data

    async def remove(self, container_id: str) -> None:
        self.session = await self._node(f"/containers/{container_id}/json")
        await super().remove(container_id)

    async def wait_gone(self, run_id: str, timeout: float = 15) -> None:
        """As on an engine, and the run's service is gone from the swarm too."""
        await super().wait_gone(run_id, timeout)

        async def no_service() -> bool:
            filters = json.dumps({"label": [f"{LABEL_RUN}={run_id}"]})
            async with self.sessions[0].get(
                "http://docker/services", params={"filters": filters}
            ) as resp:
                assert resp.status == 200, await resp.read()
                return not await resp.json()

        await wait_until(no_service, timeout=timeout, what=f"run {run_id}'s service to go")


def on_swarm() -> bool:
    """The test runs on the swarm backend (see tests/harness.py's BACKEND_ENV)."""
    return os.environ.get(BACKEND_ENV) == "swarm"


async def engine_probe() -> tuple[contextlib.AbstractAsyncContextManager[Any], EngineProbe]:
    """A probe of the engine under test, and the session to close when done."""

    def session_on(path: str) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=path), timeout=aiohttp.ClientTimeout(total=30)
        )

    if on_swarm():
        sessions = [session_on(str(node.socket_path)) for node in SwarmCluster().nodes]
        return _Sessions(sessions), SwarmProbe(sessions)
    session = session_on(docker_socket())
    return session, EngineProbe(session)


class _Sessions:
    """Several sessions closed as one (`async with`), as engine_probe's caller expects."""

    def __init__(self, sessions: list[aiohttp.ClientSession]) -> None:
        self.sessions = sessions

    async def __aenter__(self) -> _Sessions:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self.sessions:
            await session.close()


async def release(probe: EngineProbe, run_id: str) -> None:
    """Let a run running `GATE` finish: create /tmp/go inside its container."""
    container = await probe.running_container_of(run_id)
    try:
        code: int | None = await probe.exec(container["Id"], *RELEASE)
    except AssertionError:  # the exec's end could not be read (container gone)
        code = None
    if code != 0:
        # The touch ends the run at once: its container may exit (and runnerd remove
        # it) before the exec's own end is read, which the engine then reports as a
        # failure. Released all the same, unless the container still runs.
        still = await probe.containers({LABEL_RUN: run_id}, all=False)
        assert not still, f"release of run {run_id}: exec ended {code}, the container runs on"


RELEASE = ("touch", "/tmp/go")  # the command that lets a container running `GATE` go on


def exec_config(cmd: tuple[str, ...]) -> dict[str, Any]:
    # Output attached (and discarded by the caller): that is what makes the start
    # call last until the command ends.
    return {"Cmd": list(cmd), "AttachStdout": True, "AttachStderr": True}


def label_filters(labels: dict[str, str]) -> str:
    return json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})


def registry_auth(auth: dict[str, str]) -> str:
    """The X-Registry-Auth header's value: the credentials' JSON, base64url."""
    return base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()


def stream_errors(body: bytes, what: str) -> None:
    """An image operation answers 200 and then streams JSON progress objects; a
    failure on the way is an object with an "error" (both engines)."""
    decoder = json.JSONDecoder()
    text, at = body.decode("utf-8", "replace"), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return
        item, at = decoder.raw_decode(text, at)
        if isinstance(item, dict) and item.get("error"):
            raise AssertionError(f"{what} failed: {item['error']}")


class EngineApi:
    """The engine's API, synchronous: one connection per call, on the socket
    DOCKER_HOST names when the call is made. On the swarm backend, as SwarmProbe:
    a container list asks every node of the test swarm, a call about one container
    (or exec) goes to the node that has it, and `runnerd-<run id>` (the name of the
    run's container on an engine, of its service on a swarm) names the run's
    newest container there."""

    def __init__(self, timeout: float = 120) -> None:
        self.timeout = timeout
        self._node_of: dict[str, str] = {}  # container or exec id -> its node's socket

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> tuple[int, bytes]:
        """One call: `body` is sent as JSON, or `data` as it is."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        payload = data if body is None else json.dumps(body).encode()
        if not on_swarm():
            return self._call(docker_socket(), method, path + query, payload, headers)
        nodes = [str(node.socket_path) for node in SwarmCluster().nodes]
        if method == "GET" and path == "/events":  # every node's, in the order they were
            events: list[tuple[int, bytes]] = []
            for socket in nodes:  # one `until` for all: the later ones answer at once
                status, answer = self._call(socket, method, path + query, payload, headers)
                if status != 200:
                    return status, answer
                lines = [line for line in answer.splitlines() if line.strip()]
                events += [(json.loads(line).get("timeNano", 0), line) for line in lines]
            return 200, b"\n".join(line for _, line in sorted(events, key=lambda e: e[0]))
        if method == "GET" and path == "/containers/json":  # every node's, together
            found: list[Any] = []
            for socket in nodes:
                status, answer = self._call(socket, method, path + query, payload, headers)
                if status != 200:
                    return status, answer
                found.extend(json.loads(answer))
            return 200, json.dumps(found).encode()
        socket, path = self._node(nodes, path)
        status, answer = self._call(socket, method, path + query, payload, headers)
        if path.endswith("/exec") and status == 201:  # the exec lives on the same node
            self._node_of[json.loads(answer)["Id"]] = socket
        return status, answer

    def _node(self, nodes: list[str], path: str) -> tuple[str, str]:
        """The node a call about one container or exec goes to, and the path with
        a run's `runnerd-<run id>` replaced by its container's id there."""
        parts = path.split("/")
        if len(parts) < 3 or parts[1] not in ("containers", "exec") or parts[2] in _NOT_IDS:
            return nodes[0], path
        ref = urllib.parse.unquote(parts[2])
        if ref not in self._node_of:
            for socket in nodes:
                if self._call(socket, "GET", f"/containers/{parts[2]}/json")[0] == 200:
                    self._node_of[ref] = socket
                    break
            else:
                if ref.startswith("runnerd-"):
                    run = ref[len("runnerd-") :]
                    filters = label_filters({LABEL_RUN: run})
                    newest: tuple[int, str, str] | None = None
                    for socket in nodes:
                        query = urllib.parse.urlencode({"filters": filters, "all": "1"})
                        status, answer = self._call(socket, "GET", f"/containers/json?{query}")
                        assert status == 200, (status, answer)
                        for c in json.loads(answer):
                            if newest is None or c["Created"] > newest[0]:
                                newest = (c["Created"], c["Id"], socket)
                    if newest is not None:
                        self._node_of[newest[1]] = newest[2]
                        parts[2] = ref = newest[1]
        return self._node_of.get(ref, nodes[0]), "/".join(parts)

    def _call(
        self,
        socket: str,
        method: str,
        path: str,
        payload: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        conn = UnixHTTPConnection(socket, self.timeout)
        try:
            conn.request(
                method,
                path,
                body=payload,
                headers={"Content-Type": "application/json", **(headers or {})},
            )
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str, **params: str) -> tuple[int, Any]:
        status, body = self.request("GET", path, **params)
        return status, json.loads(body) if body.strip() else None

    # -- containers ----------------------------------------------------------------

    def container_ids(self, labels: dict[str, str], *, all: bool = True) -> list[str]:
        """Ids of the containers carrying every label (any state unless not `all`)."""
        status, data = self.get_json(
            "/containers/json", filters=label_filters(labels), all="1" if all else "0"
        )
        assert status == 200, data
        return [c["Id"] for c in data]

    def inspect(self, ref: str) -> dict[str, Any] | None:
        """The container's inspect data (by id or name); None if there is none."""
        status, data = self.get_json(f"/containers/{urllib.parse.quote(ref)}/json")
        if status == 404:
            return None
        assert status == 200, (status, data)
        return data

    def state(self, ref: str) -> str | None:
        """The container's status (created, running, exited, ...); None if gone."""
        data = self.inspect(ref)
        return None if data is None else str(data["State"]["Status"])

    def exec(self, ref: str, *cmd: str) -> int:
        """Run `cmd` inside the running container, to its end; its exit code."""
        status, body = self.request(
            "POST", f"/containers/{urllib.parse.quote(ref)}/exec", exec_config(cmd)
        )
        assert status == 201, (status, body)
        exec_id = json.loads(body)["Id"]
        status, body = self.request("POST", f"/exec/{exec_id}/start", {"Detach": False})
        assert status == 200, (status, body)
        status, data = self.get_json(f"/exec/{exec_id}/json")
        assert status == 200 and not data["Running"], (status, data)
        return int(data["ExitCode"])

    def kill(self, ref: str, signal: str = "KILL") -> None:
        status, body = self.request(
            "POST", f"/containers/{urllib.parse.quote(ref)}/kill", signal=signal
        )
        assert status == 204, (status, body)

    def remove(self, ref: str) -> None:
        """Remove the container, stopping it first if it runs (`docker rm -f`)."""
        status, body = self.request("DELETE", f"/containers/{urllib.parse.quote(ref)}", force="1")
        assert status == 204, (status, body)

    def create(self, name: str, config: dict[str, Any]) -> str:
        """Create (not start) a container named `name`; its id."""
        status, body = self.request("POST", "/containers/create", config, name=name)
        assert status == 201, (status, body)
        return str(json.loads(body)["Id"])

    # -- images --------------------------------------------------------------------

    def has_image(self, ref: str) -> bool:
        status, body = self.request("GET", f"/images/{ref}/json")
        assert status in (200, 404), (status, body)
        return status == 200

    def remove_image(self, ref: str) -> None:
        """Remove the image named `ref` if the engine has it."""
        status, body = self.request("DELETE", f"/images/{ref}", force="1")
        assert status in (200, 404), (status, body)

    def tag(self, ref: str, repository: str, tag: str) -> None:
        """Give the image `ref` the further name `repository:tag`."""
        status, body = self.request("POST", f"/images/{ref}/tag", repo=repository, tag=tag)
        assert status == 201, (status, body)

    def push(self, repository: str, tag: str, auth: dict[str, str]) -> None:
        """Push `repository:tag` (named with its registry's host) with these
        credentials (username, password, serveraddress). The registries the tests
        push to are plain HTTP on loopback: Docker allows that for 127.0.0.0/8 by
        itself, Podman when asked (`tlsVerify=false`, which Docker ignores)."""
        status, body = self.request(
            "POST",
            f"/images/{repository}/push",
            headers={"X-Registry-Auth": registry_auth(auth)},
            tag=tag,
            tlsVerify="false",
        )
        assert status == 200, (status, body)
        stream_errors(body, f"push of {repository}:{tag}")

    def import_tar(self, tar: bytes, repository: str, tag: str) -> None:
        """A new image `repository:tag` of one layer, the tar's files (`docker import`)."""
        status, body = self.request(
            "POST",
            "/images/create",
            data=tar,
            headers={"Content-Type": "application/x-tar"},
            fromSrc="-",
            # The tag within `repo`: Podman ignores the `tag` parameter of an import.
            repo=f"{repository}:{tag}",
        )
        assert status == 200, (status, body)
        stream_errors(body, f"import of {repository}:{tag}")

    def image_tags(self) -> list[str]:
        """Every repository:tag the engine holds (Podman's carry its `localhost/`
        or registry prefix, as the engine names them)."""
        status, data = self.get_json("/images/json")
        assert status == 200, data
        return [tag for image in data for tag in image.get("RepoTags") or ()]


_NOT_IDS = ("json", "create", "prune")  # /containers/<these>: no container's id

engine_api = EngineApi()


_PODMAN: dict[str, bool] = {}  # socket -> whether Podman answers there


def is_podman() -> bool:
    """Whether the engine DOCKER_HOST names is Podman (as runnerd tells them apart)."""
    sock = docker_socket()
    if sock not in _PODMAN:
        status, version = engine_api.get_json("/version")
        assert status == 200, version
        _PODMAN[sock] = engine_kind(version, {}).name == PODMAN
    return _PODMAN[sock]


class ContainerEvents:
    """The engine's events for containers carrying every label, from the second
    this is made: `actions()` reads them then, as (action, the container's labels
    and attributes) in the engine's order. Read once, not followed: Podman 4.3's
    followed stream was seen to stop delivering events of containers made after a
    restart of runnerd. The actions differ by engine (Podman adds init, cleanup,
    remove); `start` is in both."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.since = int(time.time())
        self.filters = json.dumps({**json.loads(label_filters(labels)), "type": ["container"]})
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        """Nothing is held open (kept for the callers' try/finally)."""

    def read(self) -> list[dict[str, Any]]:
        """Every event so far. Docker answers once `until` has passed (it ignores
        `stream`). Podman, with stream=false, answers once it has read its events
        file to the end, but gives only what it read before `until`: with `until`
        a second off, a long file on a loaded machine outlasted it and a test saw
        none of its events. So Podman's `until` is far off; it answers at the end
        of the file all the same."""
        until = int(time.time()) + (120 if is_podman() else 1)
        status, body = EngineApi(timeout=180).request(
            "GET",
            "/events",
            filters=self.filters,
            since=str(self.since),
            until=str(until),
            stream="false",
        )
        assert status == 200, (status, body[:500])
        self.events = [json.loads(line) for line in body.splitlines() if line.strip()]
        return self.events

    def actions(self) -> list[tuple[str, dict[str, str]]]:
        return [
            (e.get("Action", ""), e.get("Actor", {}).get("Attributes", {})) for e in self.read()
        ]
