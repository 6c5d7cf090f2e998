"""The fast tier (tests/unit, tests/api) cannot reach a Docker engine, even on a
machine that has one, so a test there that needs one fails instead of passing by luck."""

from __future__ import annotations

import os

import pytest
from conftest import NO_ENGINE, docker_cli

from runnerd.engine import Engine, EngineUnavailable


async def test_an_engine_client_made_in_the_fast_tier_finds_no_engine() -> None:
    assert os.environ["DOCKER_HOST"] == NO_ENGINE
    engine = Engine(None)  # no URL: DOCKER_HOST, as the daemon reads it
    try:
        with pytest.raises(EngineUnavailable):
            await engine.version()
    finally:
        await engine.close()


def test_the_docker_cli_in_the_fast_tier_finds_no_engine() -> None:
    try:
        out = docker_cli("version", "--format", "{{.Server.Version}}", check=False)
    except FileNotFoundError:
        return  # no docker CLI installed at all: nothing to reach an engine with
    assert out.returncode != 0, out.stdout
