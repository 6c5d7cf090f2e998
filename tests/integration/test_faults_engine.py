"""A hung registry or engine never pins a slot, and a cancel reaches the work (issue 10).

Faults are injected, never mocked: a real `runnerd serve` pulls from a real
docker-registry (registry.py) through `StallingRegistryProxy`, a TCP proxy on
127.0.0.1 that stops forwarding a blob's bytes mid-way until told to go on
(dockerd treats 127.0.0.0/8 registries as insecure, so plain HTTP works); and it
talks to the real engine through the socket proxy (socket_proxy.py), which
holds one request unanswered and here also tells which requests are still open:
a pull runnerd stopped is its `images/create` request closed. (dockerd then
ends the pull, "Not continuing with pull after error: context canceled" in its
log; Docker 20.10 still keeps its stalled connection to the registry open.)

Each pull here is of an image made for the test (busybox and random bytes, so
its layer is new to the engine and really downloaded), pushed to the registry
and removed from the engine before the test pulls it.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import os
import re
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, wait_until
from faults import (  # noqa: F401 (fixtures)
    daemon_errors,
    engine,
    start_proxied_daemon,
    wait_log_line,
)
from helpers_engine import EngineProbe, engine_api
from registry import Registry, free_port
from socket_proxy import SocketProxy

DEADLINE = 60  # for "it happens at all"; the bounds configured below are seconds
BLOB = re.compile(rb"GET /v2/\S+/blobs/sha256:[0-9a-f]{64} HTTP/1\.[01]\r\n")
LAYER_NOISE_BYTES = 3 * 1024 * 1024  # incompressible: the blob is this big at least
PULL = r"^POST \S*/images/create\?"

_connection: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("connection")


class TrackingProxy(SocketProxy):
    """A SocketProxy that knows which connections are open, and the last request
    each carried (each connection's pumps run in its handler's context)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.open: list[dict[str, Any]] = []

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        conn: dict[str, Any] = {"line": ""}
        _connection.set(conn)
        self.open.append(conn)
        try:
            await super()._handle(client_r, client_w)
        finally:
            self.open.remove(conn)

    async def _maybe_hold(self, data: bytes) -> bytes | None:
        match = re.match(rb"(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n", data)
        if match is not None:
            _connection.get()["line"] = match.group(0).decode("latin-1").strip()
        return await super()._maybe_hold(data)

    def open_requests(self, pattern: str) -> int:
        """Open connections whose last request matches (e.g. a pull still going)."""
        return sum(1 for c in self.open if re.search(pattern, c["line"]))


@pytest.fixture
async def proxy() -> AsyncIterator[TrackingProxy]:
    d = tempfile.mkdtemp(prefix="runnerd-proxy-", dir="/tmp")  # unix socket paths are short
    p = TrackingProxy(os.path.join(d, "docker.sock"))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
        shutil.rmtree(d, ignore_errors=True)


class StallingRegistryProxy:
    """127.0.0.1:<port> → the registry. While `stall()` is on, the answer to a blob
    GET is cut after `after_bytes` and the rest held back until `release()`.
    `stalled` counts answers held so far."""

    def __init__(self, upstream_port: int, after_bytes: int = 256 * 1024) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.after_bytes = after_bytes
        self.stalled = 0
        self._stall = False
        self._released = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def stall(self) -> None:
        self._stall = True
        self._released.clear()

    def release(self) -> None:
        self._stall = False
        self._released.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):  # their pumps end with the connections
            w.transport.abort()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, up_w))
        state = {"blob": False, "sent": 0}

        async def requests() -> None:  # dockerd → registry
            while data := await client_r.read(65536):
                if re.match(rb"(GET|HEAD|POST|PUT|PATCH|DELETE) ", data):
                    state["blob"], state["sent"] = bool(BLOB.match(data)), 0
                up_w.write(data)
                await up_w.drain()

        async def answers() -> None:  # registry → dockerd
            while data := await up_r.read(65536):
                if self._stall and state["blob"]:
                    room = max(0, self.after_bytes - state["sent"])
                    if len(data) > room:
                        client_w.write(data[:room])
                        await client_w.drain()
                        state["sent"] += room
                        data = data[room:]
                        self.stalled += 1
                        await self._released.wait()
                client_w.write(data)
                await client_w.drain()
                state["sent"] += len(data)

        pumps = [asyncio.ensure_future(requests()), asyncio.ensure_future(answers())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in pumps:
                t.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (client_w, up_w):
                self._writers.discard(w)
                w.transport.abort()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, docker_engine: str) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("stall-registry"))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
async def stalling(registry: Registry) -> AsyncIterator[StallingRegistryProxy]:
    p = StallingRegistryProxy(registry.port)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def push_new_image(reg: Registry) -> str:
    """A new image (busybox and incompressible noise) in the registry as
    `team/stall-<hex>:v1`, absent from the engine; its repository:tag."""
    repository, tag = f"team/stall-{secrets.token_hex(6)}", "v1"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        noise = os.urandom(LAYER_NOISE_BYTES)
        info = tarfile.TarInfo("noise")
        info.size = len(noise)
        tar.addfile(info, io.BytesIO(noise))
    engine_api.import_tar(buf.getvalue(), f"{reg.host}/{repository}", tag)
    reg.push(repository, tag)
    return f"{repository}:{tag}"


@pytest.fixture
def new_image(registry: Registry) -> Iterator[Callable[[], str]]:
    """Makes new images in the registry; removes their pulled copies at the end
    (pulled through the stalling proxy, so under another host: by repository)."""
    made: list[str] = []

    def make() -> str:
        made.append(push_new_image(registry))
        return made[-1]

    yield make
    for ref in engine_api.image_tags():
        if any(ref.endswith("/" + repo_tag) for repo_tag in made):
            engine_api.remove_image(ref)


async def stalled_runner(
    api: Api, registry: Registry, stalling: StallingRegistryProxy, repo_tag: str
) -> dict[str, Any]:
    """A runner of `repo_tag`, pulled through the stalling proxy with the
    registry's credentials."""
    status, data = await api.post(
        "/v1/container_registries",
        {
            "name": f"stall-{secrets.token_hex(4)}",
            "host": stalling.host,
            "username": registry.username,
            "password": registry.password,
        },
    )
    assert status == 200, data
    name, tag = repo_tag.split(":")
    return await api.create_runner(
        image_name=name,
        image_tag=tag,
        container_registry_id=data["container_registry"]["id"],
        argv=["/bin/busybox", "echo", "pulled"],
    )


async def wait_stalled(stalling: StallingRegistryProxy, at_least: int = 1) -> None:
    async def stalled() -> bool:
        return stalling.stalled >= at_least

    await wait_until(stalled, timeout=DEADLINE, what="the engine to download a blob and stall")


async def wait_pull_closed(proxy: TrackingProxy) -> None:
    async def closed() -> bool:
        return proxy.open_requests(PULL) == 0

    await wait_until(closed, timeout=DEADLINE, what="runnerd to close its pull request")


async def cancel(api: Api, runner: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    status, body = await api.post(f"/v1/runners/{runner['id']}/runs/{run['id']}/cancel")
    assert status == 200, body
    assert (body["run"]["status"], body["run"]["failure_reason"]) == ("failed", "canceled")
    assert body["run"]["started_at"] is None, body
    return body["run"]


# -- a stalled registry ------------------------------------------------------------------------


async def test_stalled_registry_fails_the_pull_with_a_stall_error_and_frees_the_slot(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    http: aiohttp.ClientSession,
    registry: Registry,
    proxy: TrackingProxy,
    stalling: StallingRegistryProxy,
    new_image: Callable[[], str],
) -> None:
    daemon = await start_proxied_daemon("pull_stall_seconds = 2\n", max_concurrent_runs=1)
    api = Api(http, daemon.url, daemon.key)
    repo_tag = new_image()
    stalled = await stalled_runner(api, registry, stalling, repo_tag)
    local = await api.create_runner(argv=["echo", "next"])
    stalling.stall()
    run = await api.trigger(stalled["id"])
    await wait_stalled(stalling)
    assert proxy.open_requests(PULL) == 1
    behind = await api.trigger(local["id"])  # waits for the one slot

    done = await api.wait_done(stalled["id"], run["id"], timeout=DEADLINE)
    assert (done["status"], done["failure_reason"]) == ("failed", "image_pull_failed"), done
    assert (
        f"could not pull image {stalling.host}/{repo_tag}: it stalled: no progress "
        "for 2 s" in done["error"]
    ), done
    assert done["started_at"] is None, done
    await wait_pull_closed(proxy)  # runnerd hung up, and so the engine stopped the pull
    next_run = await api.wait_done(local["id"], behind["id"], timeout=DEADLINE)
    assert next_run["status"] == "succeeded", (next_run, daemon_errors(daemon))
    assert await api.logs(local["id"], behind["id"]) == b"next\n"
    assert "pull of image" in daemon.log_text() and "aborted: it stalled" in daemon.log_text()


async def test_cancel_of_a_run_pulling_from_a_stalled_registry_stops_the_pull(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    http: aiohttp.ClientSession,
    registry: Registry,
    proxy: TrackingProxy,
    stalling: StallingRegistryProxy,
    new_image: Callable[[], str],
) -> None:
    daemon = await start_proxied_daemon(max_concurrent_runs=2)
    api = Api(http, daemon.url, daemon.key)

    # Two runs share one pull: cancelling one leaves the other's going ...
    runner = await stalled_runner(api, registry, stalling, new_image())
    stalling.stall()
    first = await api.trigger(runner["id"])
    second = await api.trigger(runner["id"])
    await wait_stalled(stalling)
    await wait_log_line(daemon, "pulling image")
    await cancel(api, runner, first)
    assert (await api.run(runner["id"], second["id"]))["status"] == "pending"
    assert proxy.open_requests(PULL) == 1 and "stopping the pull" not in daemon.log_text()
    stalling.release()  # the registry goes on: the pull the second run waits for completes
    done = await api.wait_done(runner["id"], second["id"], timeout=DEADLINE)
    assert done["status"] == "succeeded", (
        f"{done['failure_reason']}: {done['error']}\n{daemon.log_tail(40)}"
    )
    assert await api.logs(runner["id"], second["id"]) == b"pulled\n"
    assert (await api.run(runner["id"], first["id"]))["failure_reason"] == "canceled"

    # ... and cancelling both stops it, at the engine too; their slots are free.
    runner = await stalled_runner(api, registry, stalling, new_image())
    stalling.stall()
    runs = [await api.trigger(runner["id"]) for _ in range(2)]
    await wait_stalled(stalling, at_least=2)
    assert proxy.open_requests(PULL) == 1  # one pull for both
    for run in runs:
        await cancel(api, runner, run)
    await wait_log_line(daemon, "stopping the pull of image")
    await wait_pull_closed(proxy)
    local = await api.create_runner(argv=["echo", "free"])
    after = [await api.trigger(local["id"]) for _ in range(2)]
    for run in after:
        done = await api.wait_done(local["id"], run["id"], timeout=DEADLINE)
        assert done["status"] == "succeeded", (done, daemon_errors(daemon))
    for run in runs:  # still canceled: the stopped pull did not fail them over again
        now = await api.run(runner["id"], run["id"])
        assert (now["failure_reason"], now["error"]) == (
            "canceled",
            "The run was canceled before it started.",
        ), now


# -- an engine that takes a request and never answers ---------------------------------------------

CREATE_OF = r"^POST \S*/containers/create\?name=runnerd-{run_id}"
START = r"^POST \S*/containers/[0-9a-f]{64}/start"


async def test_engine_hanging_on_create_never_pins_a_slot(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    http: aiohttp.ClientSession,
    proxy: TrackingProxy,
    engine: EngineProbe,
) -> None:
    daemon = await start_proxied_daemon("request_timeout_seconds = 2\n", max_concurrent_runs=1)
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(argv=["echo", "ran"])
    # Only the first run's create hangs (its name is in the request line).
    proxy.hold(r"^POST \S*/containers/create\?name=runnerd-")
    hung = await api.trigger(runner["id"])
    proxy.hold(CREATE_OF.format(run_id=hung["id"]))
    behind = await api.trigger(runner["id"])

    done = await api.wait_done(runner["id"], hung["id"], timeout=DEADLINE)
    assert (done["status"], done["failure_reason"]) == ("failed", "start_failed"), done
    assert (
        done["error"] == "could not create the container: the Docker engine did not "
        "answer within 2 s."
    ), done
    next_run = await api.wait_done(runner["id"], behind["id"], timeout=DEADLINE)
    assert next_run["status"] == "succeeded", (next_run, daemon_errors(daemon))
    assert proxy.held >= 1
    proxy.release()


async def test_engine_hanging_on_start_never_pins_a_slot(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    http: aiohttp.ClientSession,
    proxy: TrackingProxy,
    engine: EngineProbe,
) -> None:
    daemon = await start_proxied_daemon("request_timeout_seconds = 2\n", max_concurrent_runs=1)
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(argv=["sleep", "60"])
    proxy.hold(START)
    runs = [await api.trigger(runner["id"]) for _ in range(2)]
    for run in runs:  # one after the other on the one slot
        done = await api.wait_done(runner["id"], run["id"], timeout=DEADLINE)
        assert (done["status"], done["failure_reason"]) == ("failed", "start_failed"), done
        assert (
            done["error"] == "could not start the container: the Docker engine did not "
            "answer within 2 s."
        ), done
        await engine.wait_gone(run["id"])  # removed: it can never start behind our back
    assert proxy.held == 2
    proxy.release()
    quick = await api.create_runner(argv=["echo", "after"])
    run = await api.trigger(quick["id"])
    done = await api.wait_done(quick["id"], run["id"], timeout=DEADLINE)
    assert done["status"] == "succeeded", (done, daemon_errors(daemon))


async def test_engine_slow_to_remove_a_container_does_not_hold_the_next_run(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    http: aiohttp.ClientSession,
    proxy: TrackingProxy,
    engine: EngineProbe,
) -> None:
    """An ended run's slot is free once its outcome is recorded: the next run
    starts, runs and is recorded while the engine still sits on removing the last
    one's container (issue 16: the engine removes while runnerd starts the next)."""
    # Engine calls time out far later than the wait below: were the removal in the
    # slot, the second run could not even start before the test gave up.
    daemon = await start_proxied_daemon("request_timeout_seconds = 300\n", max_concurrent_runs=1)
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(argv=["echo", "ran"])
    proxy.hold(r"^DELETE ")
    first = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], first["id"], timeout=DEADLINE)
    assert done["status"] == "succeeded", (done, daemon_errors(daemon))

    async def removing() -> bool:
        return proxy.open_requests(r"^DELETE ") >= 1

    await wait_until(removing, timeout=DEADLINE, what="the daemon to ask for the removal")
    second = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], second["id"], timeout=DEADLINE)
    assert done["status"] == "succeeded", (done, daemon_errors(daemon))
    assert proxy.open_requests(r"^DELETE ") >= 1  # the first removal: still unanswered
    assert await engine.for_run(first["id"])  # its container is still there

    proxy.release()
    for run in (first, second):
        await engine.wait_gone(run["id"], timeout=DEADLINE)
    assert "could not remove" not in daemon.log_text(), daemon_errors(daemon)


async def test_cancel_of_a_run_whose_create_is_held_frees_its_slot_at_once(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    http: aiohttp.ClientSession,
    proxy: TrackingProxy,
    engine: EngineProbe,
) -> None:
    daemon = await start_proxied_daemon(max_concurrent_runs=1)  # default timeouts: 60 s
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(argv=["echo", "ran"])
    proxy.hold(r"^POST \S*/containers/create\?name=runnerd-")
    held = await api.trigger(runner["id"])
    proxy.hold(CREATE_OF.format(run_id=held["id"]))

    async def asked() -> bool:
        return proxy.held >= 1

    await wait_until(asked, timeout=DEADLINE, what="the daemon to ask for a container")
    await cancel(api, runner, held)
    # The slot is free while the engine still sits on that create.
    behind = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], behind["id"], timeout=DEADLINE)
    assert done["status"] == "succeeded", (done, daemon_errors(daemon))
    assert proxy.held == 1

    proxy.release()  # the engine makes the container after all: runnerd removes it
    await engine.wait_gone(held["id"])
    assert proxy.seen(r"/start") == 1  # the second run's only
    assert (await api.run(runner["id"], held["id"]))["failure_reason"] == "canceled"


# -- the connection pool -----------------------------------------------------------------------------

MANY_RUNS = 60  # 2 connections each: more than aiohttp's default pool of 100


async def test_many_running_runs_do_not_starve_creates_and_stops(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, engine: EngineProbe
) -> None:
    """Every running run holds two engine connections (its wait and its output
    stream): with a pool of aiohttp's default 100, the creates of runs past the
    50th would wait for a connection until they time out, and so would stops."""
    daemon = start_daemon(max_concurrent_runs=MANY_RUNS)
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="echo up; sleep 600")
    runs = [await api.trigger(runner["id"]) for _ in range(MANY_RUNS)]

    async def all_followed() -> bool:
        for run in runs:
            now = await api.run(runner["id"], run["id"])
            assert now["status"] in ("pending", "running"), (now, daemon_errors(daemon))
            if now["status"] != "running" or b"up\n" not in await api.logs(runner["id"], run["id"]):
                return False
        return True

    await wait_until(
        all_followed, timeout=180, interval=0.5, what=f"{MANY_RUNS} runs to be running and followed"
    )

    # A stop needs connections beyond the ones the runs hold: it is not starved.
    stopped = await asyncio.gather(
        *(api.post(f"/v1/runners/{runner['id']}/runs/{run['id']}/cancel") for run in runs[:5])
    )
    for status, body in stopped:
        assert status == 200, body
        assert (body["run"]["status"], body["run"]["failure_reason"]) == ("failed", "canceled")
    # Nor is a create for the slots they freed.
    quick = await api.create_runner(argv=["echo", "squeezed in"])
    more = [await api.trigger(quick["id"]) for _ in range(5)]
    for run in more:
        done = await api.wait_done(quick["id"], run["id"], timeout=DEADLINE)
        assert done["status"] == "succeeded", (done, daemon_errors(daemon))


async def test_engine_500s_on_the_plain_read_after_the_run_gives_log_incomplete_and_a_note(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    http: aiohttp.ClientSession,
    proxy: TrackingProxy,
) -> None:
    # After a run ends, runnerd reads the output once more without following: the
    # last moments on Docker, the whole copy to check the log against on Podman.
    # The engine refusing that read is never a silent difference: the run is
    # recorded with its exit code, its log keeps what the live stream gave, says
    # why it may be incomplete, and the run is marked log_incomplete.
    daemon = await start_proxied_daemon()
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="echo live; sleep 2; echo end")
    proxy.fail(r"GET \S*/containers/\S+/logs\?follow=0", 500, "injected: logs read failed")
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"], timeout=DEADLINE)
    assert (done["status"], done["exit_code"], done["log_incomplete"]) == (
        "succeeded",
        0,
        True,
    ), (done, daemon_errors(daemon))
    assert proxy.failed >= 1
    log_text = await api.logs(runner["id"], run["id"])
    assert log_text.startswith(b"live\n"), log_text
    assert b"[runnerd] this log may be incomplete: " in log_text, log_text
    assert b"injected: logs read failed" in log_text, log_text
    assert "its log may be incomplete" in daemon.log_text()
    proxy.unfail()
    # A run the engine answers for is complete, and says nothing of the kind.
    ok = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], ok["id"], timeout=DEADLINE)
    assert (done["status"], done["log_incomplete"]) == ("succeeded", False), done
    assert await api.logs(runner["id"], ok["id"]) == b"live\nend\n"
