"""aiodocker's private API, used here and nowhere else.

Two things runnerd needs have no public equivalent in aiodocker 0.27 (pinned in
pyproject.toml); each is one function, pinned against the real engine by
tests/integration/test_aiodocker_shim.py: run that before changing the pin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiodocker
import aiohttp

# aiohttp's own timeouts off: engine.py bounds every call with asyncio.timeout.
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)


@asynccontextmanager
async def raw_request(
    docker: aiodocker.Docker, path: str, **kw: Any
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A request whose answer runnerd reads itself: the pull's progress stream,
    with the X-Registry-Auth header runnerd builds. An error answer (4xx, 5xx)
    raises DockerError, a refused connection DockerError(900)."""
    async with docker._query(path, timeout=_NO_TIMEOUT, **kw) as response:
        yield response


async def api_url(docker: aiodocker.Docker, path: str) -> str:
    """The engine's URL for `path` under the API version it speaks (asked once),
    for a request on runnerd's own session (the HTTP/1.0 output stream)."""
    await docker._check_version()
    return str(docker._canonicalize_url(path))
