"""Shared fixtures: a real runnerd process on a real engine, and a client for it.

Tests that need an engine use the `daemon` fixture (or `start_daemon` for a custom
config); under them is `engine_under_test`. Every test of
tests/integration that uses it runs once per engine, Docker and Podman (ids
`[docker]`, `[podman]`; RUNNERD_TEST_ENGINES=docker limits them), and while it runs
DOCKER_HOST names that engine, so runnerd, the docker CLI and the tests' own probes
all talk to it. The other tiers that need an engine (tests/browser, tests/systemd)
and tests marked `docker_only` run on Docker alone. No engine answering is a
failure, never a skip: the README's test command (tests/run.sh) installs and starts
both. The process itself is tests/harness.py's `Daemon`, shared with bench/.
tests/api/conftest.py gives the same fixture names an in-process app without Docker.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

# Re-exported: test modules import these from conftest.
from tests.harness import (  # noqa: F401
    BACKEND_ENV,
    LABEL_DAEMON,
    NO_ENGINE,
    TEST_IMAGE,
    TEST_IMAGE_NAME,
    TEST_IMAGE_TAG,
    Daemon,
    EngineUnderTest,
    docker_cli,
    engine_api,
    engine_for,
    engines_under_test,
    log_records,
    runnerd_cli,
    wait_until,
    write_config,
)
from tests.swarm_cluster import SwarmCluster

TESTS = Path(__file__).parent
# The fast tier (`bash tests/run.sh --fast`): these run with no Docker engine at all.
FAST_TIERS = ("unit", "api")


def _tier(item: pytest.Item | pytest.FunctionDefinition) -> str:
    return item.path.relative_to(TESTS).parts[0]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test of tests/integration that needs an engine runs once per engine
    under test, unless it is marked `docker_only`. Session scope: pytest then runs
    all of one engine's tests before the other's, each engine checked once."""
    if (
        "engine_under_test" in metafunc.fixturenames
        and _tier(metafunc.definition) == "integration"
        and metafunc.definition.get_closest_marker("docker_only") is None
    ):
        try:
            names = [e.name for e in engines_under_test()]
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None
        if metafunc.definition.get_closest_marker("swarm_only") is not None:
            names = [n for n in names if n == "swarm"]
        elif (
            metafunc.definition.get_closest_marker("swarm") is None
            or metafunc.definition.get_closest_marker("no_swarm") is not None
        ):
            names = [n for n in names if n != "swarm"]
        metafunc.parametrize("engine_under_test", names, indirect=True, scope="session", ids=names)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its hook is registered later)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup` (tests/run.sh's full tier), one xdist worker runs
    all of an engine's tests (the swarm's: its three dockerds), so the engines run
    side by side and no engine sees two tests of ours at once more than it did
    with one engine. Tests with no engine have no group: they fill in wherever a
    worker is free."""
    for item in items:
        if "engine_under_test" in getattr(item, "fixturenames", ()):
            callspec = getattr(item, "callspec", None)
            name = callspec.params.get("engine_under_test", "docker") if callspec else "docker"
            item.add_marker(pytest.mark.xdist_group(f"engine-{name}"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test of the fast tier that asks for the engine fails before it gets one."""
    if _tier(item) in FAST_TIERS and "engine_under_test" in getattr(item, "fixturenames", ()):
        pytest.fail(
            f"{item.nodeid} needs a Docker engine: it belongs in tests/integration, "
            "not in the fast tier (tests/unit, tests/api)"
        )


@pytest.fixture(autouse=True)
def no_docker_in_the_fast_tier(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In tests/unit and tests/api, DOCKER_HOST names a socket that does not exist,
    so whatever reaches for an engine there (aiodocker, the docker CLI) fails at
    once, even on a machine that has one: the fast tier proves it needs none."""
    if _tier(request.node) in FAST_TIERS:
        monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)


@pytest.fixture(autouse=True)
def docker_host_is_the_engine_under_test(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a test of an engine runs, DOCKER_HOST is that engine's address (the
    `engine_under_test` fixture sets it for the session's fixtures too; this holds it for the
    test, whatever ran on that worker before)."""
    if "engine_under_test" in request.fixturenames and _tier(request.node) not in FAST_TIERS:
        under_test = request.getfixturevalue("engine_under_test")
        monkeypatch.setenv("DOCKER_HOST", under_test.host)
        if under_test.name == "swarm":
            monkeypatch.setenv(BACKEND_ENV, "swarm")
        else:
            monkeypatch.delenv(BACKEND_ENV, raising=False)


@pytest.fixture(scope="session")
def engine_under_test(request: pytest.FixtureRequest) -> Iterator[EngineUnderTest]:
    """The engine under test (a parameter in tests/integration, else Docker). It
    answers and has the test image, or every test on it fails loudly; for the
    fixtures built on it (module- and session-scoped ones too) DOCKER_HOST is its
    address, except the swarm's (see below)."""
    under_test = engine_for(getattr(request, "param", "docker"))
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        if under_test.name == "swarm":
            # Started here, by the worker that runs the swarm's tests, and taken
            # away at the end of its session: nothing of it outlives the suite.
            cluster = SwarmCluster(heartbeat_period=1.0)  # a killed node is Down in ~2 s
            assert cluster.manager_host == under_test.host, cluster.manager_host
            cluster.start()
            stack.callback(cluster.stop)
            _SWARMS.append(cluster)
            stack.callback(_SWARMS.remove, cluster)
        else:
            # Not for the swarm: its settings (and BACKEND_ENV) are its tests' alone
            # (docker_host_is_the_engine_under_test), as the session fixtures of the
            # other tests its worker runs (rootless, systemd) must see Docker.
            mp.setenv("DOCKER_HOST", under_test.host)
        check = stack.enter_context(pytest.MonkeyPatch.context())
        check.setenv("DOCKER_HOST", under_test.host)
        try:
            status, version = engine_api("GET", "/version", timeout=30)
        except OSError as e:
            status, version = 0, str(e)
        if status != 200:
            pytest.fail(
                f"no {under_test.name} engine answers at {under_test.host} ({version}); run "
                "the suite with tests/run.sh, which starts Docker and Podman, or test "
                "on the engines you have with RUNNERD_TEST_ENGINES=docker (or podman)"
            )
        status, _ = engine_api("GET", f"/images/{quote(TEST_IMAGE, safe='')}/json", timeout=30)
        if status != 200:
            pytest.fail(
                f"test image {TEST_IMAGE} is missing on {under_test.name} "
                f"({under_test.host}); tests/run.sh imports it"
            )
        check.undo()
        yield under_test


_SWARMS: list[SwarmCluster] = []  # the test swarm, while the swarm is under test


@pytest.fixture
def swarm_cluster(engine_under_test: EngineUnderTest) -> SwarmCluster:
    """The test swarm (tests marked swarm_only): its nodes, to stop or kill one."""
    assert engine_under_test.name == "swarm" and _SWARMS, engine_under_test
    return _SWARMS[-1]


@pytest.fixture(scope="session")
def docker_engine(engine_under_test: EngineUnderTest) -> str:
    """The version of the engine under test, which answers and has the test image
    (the fixture the tests and `start_daemon` depend on)."""
    status, version = engine_api("GET", "/version", host=engine_under_test.host, timeout=30)
    assert status == 200, version
    return str(version["Version"])


@pytest.fixture
def start_daemon(tmp_path: Path, docker_engine: str) -> Iterator[Callable[..., Daemon]]:
    """Start runnerd processes with custom config; all are stopped and their
    containers removed at the end of the test."""
    started: list[Daemon] = []

    def start(
        extra_config: str = "",
        *,
        max_concurrent_runs: int = 4,
        top_level: str = "",
        name: str | None = None,
    ) -> Daemon:
        d = tmp_path / (name or f"daemon{len(started)}")
        d.mkdir()
        config_path = d / "config.toml"
        write_config(
            config_path,
            d / "data",
            extra_config,
            max_concurrent_runs=max_concurrent_runs,
            top_level=top_level,
        )
        daemon = Daemon(dir=d, config_path=config_path, extra_config=extra_config)
        daemon.key = daemon.create_key("test")
        daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        daemon.remove_containers()


@pytest.fixture
def daemon(start_daemon: Callable[..., Daemon]) -> Daemon:
    return start_daemon()


class Api:
    """A thin client: every call returns (status, parsed JSON body or text)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, key: str | None) -> None:
        self.session = session
        self.url = url
        self.key = key

    def headers(self, key: str | None = None) -> dict[str, str]:
        key = key if key is not None else self.key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        key: str | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        headers = {**self.headers(key), **kwargs.pop("headers", {})}
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body)
            headers.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as resp:
            raw = await resp.read()
            if resp.content_type == "application/json":
                return resp.status, json.loads(raw)
            return resp.status, raw

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json_body=body, **kw)

    async def patch(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PATCH", path, json_body=body, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kw)

    # -- conveniences for the common flow --

    async def create_runner(self, **fields: Any) -> dict[str, Any]:
        body = {
            "name": f"runner-{time.monotonic_ns()}",
            "image_name": TEST_IMAGE_NAME,
            "image_tag": TEST_IMAGE_TAG,
            **fields,
        }
        status, data = await self.post("/v1/runners", body)
        assert status == 200, data
        return data["runner"]

    async def trigger(self, runner_id: str, body: Any = None) -> dict[str, Any]:
        status, data = await self.post(f"/v1/runners/{runner_id}/runs", body)
        assert status == 200, data
        return data["run"]

    async def run(self, runner_id: str, run_id: str) -> dict[str, Any]:
        status, data = await self.get(f"/v1/runners/{runner_id}/runs/{run_id}")
        assert status == 200, data
        return data["run"]

    async def wait_status(
        self, runner_id: str, run_id: str, status: str, timeout: float = 30
    ) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            run = await self.run(runner_id, run_id)
            return run if run["status"] == status else None

        return await wait_until(reached, timeout=timeout, what=f"run {run_id} to be {status}")

    async def wait_done(self, runner_id: str, run_id: str, timeout: float = 60) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            run = await self.run(runner_id, run_id)
            return run if run["status"] in ("succeeded", "failed") else None

        return await wait_until(done, timeout=timeout, what=f"run {run_id} to complete")

    async def logs(self, runner_id: str, run_id: str, query: str = "") -> bytes:
        status, body = await self.get(f"/v1/runners/{runner_id}/runs/{run_id}/logs{query}")
        assert status == 200, body
        return body


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@pytest.fixture
def api(http: aiohttp.ClientSession, daemon: Daemon) -> Api:
    return Api(http, daemon.url, daemon.key)
