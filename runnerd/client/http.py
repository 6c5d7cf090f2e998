"""The connection to the daemon: one aiohttp session per command, JSON in and out,
every error status as ApiError."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from ..contract import is_uuid
from .errors import ApiError, CliError

DEFAULT_URL = "http://127.0.0.1:8420"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10)
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)


class Client:
    """One daemon, one aiohttp session for the lifetime of a command."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._session: aiohttp.ClientSession | None = None
        # what an interrupted `--wait`/`-f` tells the user: (runner ref, run id)
        self.watching: tuple[str, str] | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}", "User-Agent": "runnerd-cli"},
            timeout=REQUEST_TIMEOUT,
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Client(...)`"
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        """The decoded JSON answer; ApiError for any status >= 400."""
        kwargs: dict[str, Any] = {"params": params, "headers": dict(headers or {})}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
            kwargs["headers"]["Content-Type"] = "application/json"
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            raw = await resp.read()
            data = _decode_json(raw)
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason or "", data)
            if data is None:
                raise CliError(
                    f"{method} {path}: the daemon answered {resp.status} "
                    "without a JSON body; is --url a runnerd daemon?"
                )
            return data

    @asynccontextmanager
    async def stream(
        self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A response to read as it arrives (no overall timeout); ApiError on >= 400."""
        async with self.session.get(
            self.url + path, params=params, headers=headers, timeout=STREAM_TIMEOUT
        ) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason or "", _decode_json(await resp.read()))
            yield resp

    async def read_bytes(self, path: str, params: dict[str, str] | None = None) -> bytes:
        async with self.stream(path, params) as resp:
            return await resp.read()

    # -- lookups --

    async def runner(self, ref: str) -> dict[str, Any]:
        """A runner by id or by name."""
        if is_uuid(ref):
            try:
                return _object(await self.request("GET", f"/v1/runners/{ref.lower()}"), "runner")
            except ApiError as e:
                if e.status != 404:
                    raise
        runners = (await self.request("GET", "/v1/runners"))["runners"]
        for r in runners:
            if isinstance(r, dict) and r.get("name") == ref:
                return r
        raise CliError(f"no runner with the id or name {ref!r} (see: runnerd runners list)")

    async def run(self, runner: dict[str, Any], run_id: str) -> dict[str, Any]:
        try:
            return _object(await self.request("GET", run_path(runner, run_id)), "run")
        except ApiError as e:
            if e.status == 404:
                raise CliError(
                    f"runner {runner['name']!r} has no run {run_id!r} "
                    f"(see: runnerd runs list {runner['name']})"
                ) from None
            raise


def _decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw.strip() else None
    except ValueError:
        return None


def _object(data: Any, key: str) -> dict[str, Any]:
    """The object under `key` of an answer; a clean error when the answer has none."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, dict):
        raise CliError(f"the daemon's answer has no {key!r} object; is --url a runnerd daemon?")
    return value


def run_path(runner: dict[str, Any], run_id: str) -> str:
    return f"/v1/runners/{runner['id']}/runs/{run_id.lower()}"
