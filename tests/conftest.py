"""Shared fixtures: a real runnerd process on a real Docker engine, and a client for it.

Tests that need Docker use the `daemon` fixture (or `start_daemon` for a custom
config). No engine answering is a failure, never a skip: the README's test
command (tests/run.sh) installs and starts one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

TEST_IMAGE = os.environ.get("RUNNERD_TEST_IMAGE", "runnerd-test/busybox:latest")
TEST_IMAGE_NAME, _, TEST_IMAGE_TAG = TEST_IMAGE.rpartition(":")
LABEL_DAEMON = "io.runnerd.daemon"
START_DEADLINE = 30.0
LISTENING = re.compile(r"listening on (http://\S+)")


def docker_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=120
    )


def runnerd_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runnerd", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


async def wait_until(
    predicate: Callable[[], Awaitable[Any]],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Daemon:
    """A runnerd process started by a test, with its own data dir and API key."""

    dir: Path
    config_path: Path
    extra_config: str
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    key: str = ""
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.dir / "daemon.log"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def daemon_id(self) -> str:
        with sqlite3.connect(self.data_dir / "runnerd.db") as db:
            return db.execute("SELECT value FROM meta WHERE key = 'daemon_id'").fetchone()[0]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def create_key(self, name: str, scope: str = "full") -> str:
        out = runnerd_cli(
            "keys", "create", "--name", name, "--scope", scope, "--config", str(self.config_path)
        )
        return out.stdout.strip().splitlines()[-1]

    def start(self) -> None:
        log = open(self.log_path, "ab")
        offset = log.tell()  # a restarted daemon appends: only its own lines count
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runnerd", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log_path.read_bytes()[offset:].decode("utf-8", "replace"))
            if match:
                self.url = match.group(1)
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"runnerd exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            time.sleep(0.05)
        raise AssertionError(
            f"runnerd did not listen within {START_DEADLINE} s:\n{self.log_text()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"runnerd did not exit within {timeout} s of signal {sig}"
            ) from None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def remove_containers(self) -> list[str]:
        """Remove every container this daemon made; returns their ids."""
        try:
            daemon_id = self.daemon_id()
        except sqlite3.Error:
            return []
        ids = docker_cli(
            "ps", "-aq", "--filter", f"label={LABEL_DAEMON}={daemon_id}", check=False
        ).stdout.split()
        if ids:
            docker_cli("rm", "-f", *ids, check=False)
        return ids


def write_config(
    path: Path,
    data_dir: Path,
    extra: str = "",
    *,
    max_concurrent_runs: int = 4,
    top_level: str = "",
) -> None:
    """A test config: loopback on a free port, no network for containers, short grace.
    `top_level` is TOML for top-level keys (e.g. `timezone = "UTC"`), written first;
    `extra` is TOML appended verbatim; tables given there replace these."""
    sections = {
        "server": 'listen = "127.0.0.1:0"',
        "storage": f'data_dir = "{data_dir}"',
        "docker": 'network = "none"\nstop_grace_seconds = 1',
        "scheduler": f"max_concurrent_runs = {max_concurrent_runs}",
    }
    given = set(re.findall(r"^\[(\w+)\]", extra, re.M))
    text = "".join(f"[{name}]\n{body}\n\n" for name, body in sections.items() if name not in given)
    path.write_text((top_level + "\n" if top_level else "") + text + extra)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine answers and the test image is there, or the run fails loudly."""
    version = docker_cli("version", "--format", "{{.Server.Version}}", check=False)
    if version.returncode != 0:
        pytest.fail(
            "no Docker engine answers; run the suite with tests/run.sh, which "
            f"starts one:\n{version.stderr}"
        )
    if docker_cli("image", "inspect", TEST_IMAGE, check=False).returncode != 0:
        pytest.fail(f"test image {TEST_IMAGE} is missing; tests/run.sh builds it")
    return version.stdout.strip()


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
