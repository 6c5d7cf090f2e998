"""Bounded engine calls, the connection pool's size, shared pulls that stop when
nobody waits, the [docker] keys that set the bounds, and a ContainerSpec repr
without env values. Against a fake engine on 127.0.0.1 that takes a request and
never answers (the real engine and registry: tests/integration/test_faults_engine.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import pytest

from runnerd.config import ConfigError, from_dict
from runnerd.engine import (
    ContainerSpec,
    Engine,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    connection_limit,
)
from runnerd.executor import Executor

DEADLINE = 5.0


class HangingEngine:
    """Answers /version and /info; takes every other request and never answers it, except a
    pull, which sends `events` progress lines and then nothing more."""

    def __init__(self, events: int = 1) -> None:
        self.events = events
        self.requests: list[str] = []
        self.url = ""
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if request.path.endswith("/version"):
            return aiohttp.web.json_response({"ApiVersion": "1.41", "Version": "hanging"})
        if request.path.endswith("/info"):  # asked with /version: which engine it is
            return aiohttp.web.json_response({})
        if request.path.endswith("/images/create"):
            response = aiohttp.web.StreamResponse()
            await response.prepare(request)
            for i in range(self.events):
                await response.write(b'{"status":"Downloading","id":"layer%d"}\r\n' % i)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


@pytest.fixture
async def hanging() -> AsyncIterator[HangingEngine]:
    engine = HangingEngine()
    await engine.start()
    yield engine
    await engine.stop()


def spec(**kw: Any) -> ContainerSpec:
    fields: dict[str, Any] = dict(
        name="runnerd-x",
        image="busybox",
        cmd=["true"],
        entrypoint=None,
        env=[("API_TOKEN", "s3cr3t-value"), ("MODE", "prod-only-value")],
        cpu=1.0,
        mem_mib=64,
        pids=64,
        network="none",
        log_file_bytes=1 << 20,
    )
    return ContainerSpec(**{**fields, **kw})


def test_container_spec_repr_shows_env_names_never_values() -> None:
    text = repr(spec())
    assert "s3cr3t-value" not in text and "prod-only-value" not in text, text
    assert "API_TOKEN" in text and "MODE" in text and "image='busybox'" in text, text
    assert "s3cr3t-value" not in str(spec()) and "s3cr3t-value" not in f"{[spec()]}"


@pytest.mark.parametrize(
    "call", ["create", "start", "inspect", "list", "has_image", "remove", "kill"]
)
async def test_an_engine_that_never_answers_a_call_times_it_out(
    hanging: HangingEngine, call: str
) -> None:
    engine = Engine(hanging.url, request_timeout=0.2)
    calls = {
        "create": lambda: engine.create(spec()),
        "start": lambda: engine.start("c0ffee"),
        "inspect": lambda: engine.inspect("c0ffee"),
        "list": lambda: engine.list_containers({"a": "b"}),
        "has_image": lambda: engine.has_image("busybox"),
        "remove": lambda: engine.remove("c0ffee"),
        "kill": lambda: engine.stop("c0ffee", 1),
    }
    try:
        with pytest.raises(EngineTimeout) as e:
            await asyncio.wait_for(calls[call](), DEADLINE)
        assert isinstance(e.value, EngineUnavailable)
        assert str(e.value).endswith(": the Docker engine did not answer within 0.2 s"), e.value
    finally:
        await engine.close()


async def test_a_pull_without_progress_is_aborted_with_a_stall_error(
    hanging: HangingEngine,
) -> None:
    engine = Engine(hanging.url, pull_stall=0.3, pull_timeout=60)
    try:
        with pytest.raises(EngineError) as e:
            await asyncio.wait_for(engine.pull("team/job:v1"), DEADLINE)
        assert not isinstance(e.value, EngineUnavailable)  # the run fails: image_pull_failed
        assert str(e.value) == (
            "could not pull image team/job:v1: it stalled: no progress "
            "for 0.3 s (the registry or the engine stopped sending)"
        )
    finally:
        await engine.close()


async def test_a_pull_that_makes_progress_is_still_bounded_in_all(hanging: HangingEngine) -> None:
    hanging.events = 10_000
    engine = Engine(hanging.url, pull_stall=60, pull_timeout=0.3)
    try:
        with pytest.raises(EngineError) as e:
            await asyncio.wait_for(engine.pull("team/job:v1"), DEADLINE)
        assert str(e.value) == "could not pull image team/job:v1: not done after 0.3 s"
    finally:
        await engine.close()


async def test_the_connection_pool_is_sized_for_two_connections_per_running_run(
    tmp_path: Any,
) -> None:
    assert connection_limit(1000) == 2 * 1000 + 32
    for url in (f"unix://{tmp_path}/docker.sock", "tcp://127.0.0.1:2375", "http://127.0.0.1:2375"):
        engine = Engine(url, max_connections=connection_limit(300))
        try:
            assert engine.docker.connector.limit == 632, url
        finally:
            await engine.close()
        assert engine._docker is None


class PullingEngine:
    """An engine whose pulls wait until told, and which notes the ones cut short."""

    def __init__(self) -> None:
        self.pulls: list[str] = []
        self.canceled: list[str] = []
        self.go = asyncio.Event()

    async def pull(self, ref: str, credentials: Any = None) -> None:
        self.pulls.append(ref)
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.canceled.append(ref)
            raise


def executor(engine: PullingEngine) -> Executor:
    return Executor(
        None,
        engine,
        None,
        daemon_id="d",
        network="none",  # type: ignore[arg-type]
        stop_grace_seconds=1,
    )


async def test_a_shared_pull_goes_on_while_one_caller_waits_and_stops_when_none_does() -> None:
    engine = PullingEngine()
    ex = executor(engine)
    first = asyncio.ensure_future(ex.pull("team/job:v1", None))
    second = asyncio.ensure_future(ex.pull("team/job:v1", None))
    await asyncio.sleep(0.01)
    assert engine.pulls == ["team/job:v1"]  # one pull for both

    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert engine.canceled == [] and not second.done()
    engine.go.set()
    await asyncio.wait_for(second, DEADLINE)  # the pull the second caller waited for ended

    engine.go.clear()
    callers = [asyncio.ensure_future(ex.pull("team/other:v1", None)) for _ in range(2)]
    await asyncio.sleep(0.01)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert engine.canceled == ["team/other:v1"]  # nobody waits: the pull is stopped
    again = asyncio.ensure_future(ex.pull("team/other:v1", None))  # a new caller: a new pull
    await asyncio.sleep(0.01)
    assert engine.pulls == ["team/job:v1", "team/other:v1", "team/other:v1"]
    engine.go.set()
    await asyncio.wait_for(again, DEADLINE)


def test_the_docker_bounds_have_defaults_and_name_their_key_when_wrong() -> None:
    docker = from_dict({}).docker
    assert (
        docker.request_timeout_seconds,
        docker.pull_stall_seconds,
        docker.start_timeout_seconds,
    ) == (60, 120, 3600)
    docker = from_dict(
        {
            "docker": {
                "request_timeout_seconds": 5,
                "pull_stall_seconds": 30.5,
                "start_timeout_seconds": 600,
            }
        }
    ).docker
    assert (
        docker.request_timeout_seconds,
        docker.pull_stall_seconds,
        docker.start_timeout_seconds,
    ) == (5, 30.5, 600)
    for key, bad in (
        ("request_timeout_seconds", 0),
        ("request_timeout_seconds", "60"),
        ("pull_stall_seconds", 0.5),
        ("start_timeout_seconds", 10**9),
    ):
        with pytest.raises(ConfigError, match=f"^docker.{key}: must be a number from"):
            from_dict({"docker": {key: bad}})
