"""Observing the Docker engine directly, independent of runnerd: which containers
exist or run for a daemon or a run, what they were created with, and a way to
release a container that waits for a file (no network inside test containers).

Everything here talks to the engine's own API over its unix socket (or the
docker CLI), never through runnerd.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aiohttp
from conftest import wait_until

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


async def engine_probe() -> tuple[aiohttp.ClientSession, EngineProbe]:
    session = aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=docker_socket()),
        timeout=aiohttp.ClientTimeout(total=30),
    )
    return session, EngineProbe(session)


async def release(probe: EngineProbe, run_id: str) -> None:
    """Let a run running `GATE` finish: create /tmp/go inside its container."""
    container = await probe.running_container_of(run_id)
    proc = await asyncio.create_subprocess_exec(
        "docker",
        "exec",
        container["Id"],
        "touch",
        "/tmp/go",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out, err)
