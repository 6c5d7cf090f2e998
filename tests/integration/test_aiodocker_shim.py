"""Pins the two things runnerd takes from aiodocker's private API (the shim
module runnerd/_aiodocker_shim.py) against the real engine, so an aiodocker
upgrade that changes them fails here: `api_url` is the engine's URL for a path
under the API version it speaks, usable on runnerd's own session; `raw_request`
hands over the response unread, passes runnerd's headers and parameters, and
raises DockerError with the engine's status for an error answer and 900 when
nothing answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiodocker.exceptions import DockerError
from conftest import EngineUnderTest
from helpers_engine import docker_socket

from runnerd._aiodocker_shim import api_url, raw_request
from runnerd.engine import Engine


@pytest.fixture
async def engine(engine_under_test: EngineUnderTest) -> AsyncIterator[Engine]:
    engine = Engine(f"unix://{docker_socket()}")  # DOCKER_HOST: the engine under test
    try:
        yield engine
    finally:
        await engine.close()


async def testapi_url_is_under_the_engine_s_api_version_and_works_on_our_session(
    engine: Engine,
) -> None:
    version = await engine.version()
    url = await api_url(engine.docker, "version")
    assert f"/v{version['ApiVersion']}/version" in url
    async with engine.streams.get(url) as response:  # HTTP/1.0, runnerd's own session
        assert response.status == 200
        assert (await response.json())["ApiVersion"] == version["ApiVersion"]


async def testraw_request_hands_over_the_unread_response_with_our_params(
    engine: Engine,
) -> None:
    async with raw_request(
        engine.docker,
        "containers/json",
        params={"all": True, "filters": '{"label": ["io.runnerd.test-no-such-label"]}'},
        headers={"X-Runnerd-Test": "1"},
    ) as response:
        assert isinstance(response, aiohttp.ClientResponse)
        assert await response.json() == []  # the filter reached the engine


async def testraw_request_raises_the_engine_s_status_for_an_error_answer(
    engine: Engine,
) -> None:
    with pytest.raises(DockerError) as info:
        async with raw_request(engine.docker, "containers/runnerd-no-such-container/json"):
            raise AssertionError("an error answer is not handed over")
    assert info.value.status == 404
    assert "runnerd-no-such-container" in str(info.value.message)


async def testraw_request_raises_900_when_nothing_answers() -> None:
    engine = Engine("unix:///nonexistent/runnerd-test.sock")
    try:
        with pytest.raises(DockerError) as info:
            async with raw_request(engine.docker, "containers/json"):
                raise AssertionError("nothing answered")
        assert info.value.status == 900
    finally:
        await engine.close()
