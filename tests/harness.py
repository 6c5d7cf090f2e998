"""The one harness that starts real runnerd processes, for the test suite and for bench/.

A `Daemon` is `python -m runnerd serve` with its own config (`write_config`), data dir
and API key, started until it logs "listening on", stopped by signal, its containers
removed by label; around it the engines the suite runs on (`engines_under_test`), a
small client of the engine's API (`engine_api`), the docker CLI, the runnerd CLI, the
test image's name and `wait_until`. Everything that talks to an engine talks to the
one DOCKER_HOST names when it is called, as runnerd itself does. tests/conftest.py builds its fixtures on these and bench/common.py
its figures, so both set a daemon up the same way.

Why here, imported as `tests.harness`: `python -m pytest` and `python -m bench` both
run from the repository root, and `python -m` puts that directory first on sys.path,
so both find this file as module `tests.harness` (`tests/` is a namespace package:
no `__init__.py`, so pytest still imports conftest and test modules by their own
names, as `from conftest import …` expects). pyproject.toml's pytest `pythonpath`
puts the root on sys.path for a bare `pytest` too. It is test infrastructure, so it
lives with the tests, and bench/ depends on tests/, never the other way round.

Nothing here needs pytest: bench runs without it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from runnerd.logs import HEADER

TEST_IMAGE = os.environ.get("RUNNERD_TEST_IMAGE", "runnerd-test/busybox:latest")
TEST_IMAGE_NAME, _, TEST_IMAGE_TAG = TEST_IMAGE.rpartition(":")
LABEL_DAEMON = "io.runnerd.daemon"  # what runnerd puts on its containers
START_DEADLINE = 30.0
LISTENING = re.compile(rb"listening on (http://\S+)")
# An engine address where nothing answers: a daemon given it keeps runs pending, and
# a test tier that must not touch Docker points DOCKER_HOST at it, so any use fails.
NO_ENGINE = "unix:///nonexistent/runnerd-no-engine.sock"

# The engines the integration tests run on, each at its own DOCKER_HOST. Docker's
# is whatever answered before the suite started (DOCKER_HOST then, else the
# default socket); Podman's is the rootful service tests/run.sh starts.
# RUNNERD_TEST_ENGINES limits them (e.g. "docker" on a machine without Podman).
ENGINE_NAMES = ("docker", "podman", "swarm")
DOCKER_DEFAULT_HOST = "unix:///var/run/docker.sock"
PODMAN_DEFAULT_HOST = "unix:///run/runnerd-test-podman/podman.sock"
# The third "engine" is runnerd's swarm backend on a three-node swarm of extra
# dockerds that the tests start themselves (tests/swarm_cluster.py), at its
# manager's socket. Only tests marked `swarm` run on it.
# Where it lives and which loopback addresses its nodes advertise; set these two to
# run a second suite beside one already running (both are machine-wide).
SWARM_STATE_DIR = Path(os.environ.get("RUNNERD_TEST_SWARM_DIR") or "/run/runnerd-swarm")
SWARM_ADDRESSES = tuple(
    (os.environ.get("RUNNERD_TEST_SWARM_ADDRESSES") or "127.0.0.11,127.0.0.12,127.0.0.13").split(
        ","
    )
)
SWARM_DEFAULT_HOST = f"unix://{SWARM_STATE_DIR}/node1/sock"  # SwarmCluster().manager_host
# Which executor backend a daemon gets (write_config): "swarm" while a swarm test runs.
BACKEND_ENV = "RUNNERD_TEST_BACKEND"
ENGINES_ENV = "RUNNERD_TEST_ENGINES"
PODMAN_HOST_ENV = "RUNNERD_TEST_PODMAN_HOST"
# Read once, at import: a test tier later points DOCKER_HOST elsewhere (NO_ENGINE,
# or the engine under test), and the engines' own addresses must not move with it.
_DOCKER_HOST_AT_START = os.environ.get("DOCKER_HOST") or DOCKER_DEFAULT_HOST


@dataclass(frozen=True)
class EngineUnderTest:
    """One engine the suite runs on: its name ("docker" or "podman") and address."""

    name: str
    host: str


def engines_under_test() -> list[EngineUnderTest]:
    """The engines RUNNERD_TEST_ENGINES names (default: both), in ENGINE_NAMES order.
    A name that is not an engine is an error, so a typo cannot silently drop one."""
    hosts = {name: engine_for(name).host for name in ENGINE_NAMES}
    wanted = [n.strip() for n in os.environ.get(ENGINES_ENV, ",".join(ENGINE_NAMES)).split(",")]
    wanted = [n for n in wanted if n]
    unknown = sorted(set(wanted) - set(ENGINE_NAMES))
    if unknown or not wanted:
        raise ValueError(
            f"{ENGINES_ENV}={os.environ.get(ENGINES_ENV)!r}: name engines among "
            f"{', '.join(ENGINE_NAMES)}, comma-separated"
        )
    return [EngineUnderTest(n, hosts[n]) for n in ENGINE_NAMES if n in wanted]


def engine_for(name: str) -> EngineUnderTest:
    """The engine called `name`, at its address, whether or not it is under test."""
    if name == "docker":
        return EngineUnderTest(name, _DOCKER_HOST_AT_START)
    if name == "podman":
        return EngineUnderTest(name, os.environ.get(PODMAN_HOST_ENV) or PODMAN_DEFAULT_HOST)
    if name == "swarm":
        return EngineUnderTest(name, SWARM_DEFAULT_HOST)
    raise ValueError(f"no engine called {name!r}")


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client's connection, to a unix socket (an engine's API)."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def engine_api(
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    *,
    host: str | None = None,
    timeout: float = 120,
) -> tuple[int, Any]:
    """One request to the engine's API (Docker's, which Podman serves too) at
    `host` (default: DOCKER_HOST now, else the default socket); returns the status
    and the parsed JSON body (None when empty, the text when not JSON). Unix
    sockets only: the suite's engines all listen on one."""
    host = host or os.environ.get("DOCKER_HOST") or DOCKER_DEFAULT_HOST
    if not host.startswith("unix://"):
        raise ValueError(f"the test harness talks to engines on unix sockets, not {host}")
    conn = UnixHTTPConnection(host[len("unix://") :], timeout)
    try:
        conn.request(method, path + ("?" + urlencode(params) if params else ""))
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    if not raw:
        return resp.status, None
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


class DaemonFailed(AssertionError):
    """The daemon did not start or stop as it should (an AssertionError, so a test
    reports it as a failure, not an error in the harness)."""


def docker_cli(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def log_records(path: Path) -> list[tuple[int, int, bytes]]:
    """(stream, ts_ns, data) of each record of a run's log file (format in runnerd.logs)."""
    raw = path.read_bytes()
    out, at = [], 0
    while at < len(raw):
        stream, ts_ns, length = HEADER.unpack_from(raw, at)
        at += HEADER.size
        out.append((stream, ts_ns, raw[at : at + length]))
        at += length
    return out


def runnerd_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runnerd", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def create_key(config_path: Path, name: str, scope: str = "full") -> str:
    """A new API key made with `runnerd keys create`, as an operator makes one;
    returns its secret."""
    out = runnerd_cli(
        "keys",
        "create",
        "--name",
        name,
        "--scope",
        scope,
        "--config",
        str(config_path),
        check=False,
    )
    if out.returncode != 0:
        raise DaemonFailed(f"runnerd keys create failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def remove_containers(label: str) -> list[str]:
    """Remove every container carrying `label` (`key=value`) from the engine
    DOCKER_HOST names, through its API (on the swarm backend: every service);
    returns their ids. One already gone (its run removed it meanwhile) is fine;
    any other refusal fails."""
    filters = json.dumps({"label": [label]})
    if os.environ.get(BACKEND_ENV) == "swarm":
        status, listed = engine_api("GET", "/services", {"filters": filters})
        if status != 200:
            raise AssertionError(f"the swarm did not list services ({status}): {listed}")
        names = [str(s["Spec"]["Name"]) for s in listed]
        for name in names:
            status, body = engine_api("DELETE", f"/services/{quote(name)}")
            if status not in (200, 204, 404):
                raise AssertionError(f"the swarm did not remove service {name} ({status}): {body}")
        return names
    status, listed = engine_api("GET", "/containers/json", {"all": "1", "filters": filters})
    if status != 200:
        raise AssertionError(f"the engine did not list containers ({status}): {listed}")
    ids = [str(c["Id"]) for c in listed]
    for cid in ids:
        for _ in range(10):
            status, body = engine_api(
                "DELETE", f"/containers/{quote(cid)}", {"force": "1"}, timeout=300
            )
            # Podman refuses a forced removal of a container that is exiting at that
            # moment ("could not be stopped: ... container state improper: stopped",
            # 500): once it has stopped, the removal goes through.
            if not (status == 500 and "container state improper" in str(body)):
                break
            time.sleep(0.2)
        # 404: gone meanwhile; 409 "removal ... already in progress": runnerd removes it.
        if status == 404 or (status == 409 and "in progress" in str(body)):
            continue
        if status not in (200, 204):
            raise AssertionError(f"the engine did not remove container {cid} ({status}): {body}")
    return ids


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
    swarm = os.environ.get(BACKEND_ENV) == "swarm"
    sections = {
        "server": 'listen = "127.0.0.1:0"',
        "storage": f'data_dir = "{data_dir}"',
        # Swarm services take no "none" network: the test swarm's nodes have no
        # bridge (--bridge=none), so "bridge" gives no address either.
        "docker": f'network = "{"bridge" if swarm else "none"}"\nstop_grace_seconds = 1',
        "scheduler": f"max_concurrent_runs = {max_concurrent_runs}",
    }
    if swarm:
        sections["executor"] = 'backend = "swarm"'
    given = set(re.findall(r"^\[(\w+)\]", extra, re.M))
    text = "".join(f"[{name}]\n{body}\n\n" for name, body in sections.items() if name not in given)
    path.write_text((top_level + "\n" if top_level else "") + text + extra)


@dataclass
class Daemon:
    """A runnerd process with its own data dir and API key; its output goes to
    `log_path` (appended to across restarts)."""

    dir: Path
    config_path: Path
    extra_config: str = ""
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    key: str = ""
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.dir / "daemon.log"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "runnerd.db"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def daemon_id(self) -> str:
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return str(db.execute("SELECT value FROM meta WHERE key = 'daemon_id'").fetchone()[0])

    def alive(self) -> bool:
        """The process runs (it has not exited)."""
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def create_key(self, name: str, scope: str = "full") -> str:
        return create_key(self.config_path, name, scope)

    cwd: str | None = None  # where the process starts (None: here)

    def command(self, *args: str) -> list[str]:
        """The command line of `runnerd <args>` (a subclass may run it otherwise)."""
        return [sys.executable, "-m", "runnerd", *args]

    def start(self, timeout: float = START_DEADLINE) -> float:
        """Start the process; seconds from spawning it to its "listening on" line."""
        log = open(self.log_path, "ab")
        offset = log.tell()  # a restarted daemon appends: only its own lines count
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command("serve", "--config", str(self.config_path)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
        )
        log.close()
        deadline = t0 + timeout
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            seen = b""
            while True:
                seen += f.read()
                match = LISTENING.search(seen)
                if match:
                    self.url = match.group(1).decode()
                    return time.perf_counter() - t0
                if self.proc.poll() is not None:
                    raise DaemonFailed(
                        f"runnerd exited with {self.proc.returncode}:\n{self.log_text()}"
                    )
                if time.perf_counter() > deadline:
                    self.stop(signal.SIGKILL)
                    raise DaemonFailed(
                        f"runnerd did not listen within {timeout:.0f} s:\n{self.log_text()}"
                    )
                time.sleep(0.002)  # fine-grained: bench times the start-up with it

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the process and wait for it; its exit status. One that outlives
        `timeout` is killed, and that is a failure."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise DaemonFailed(f"runnerd did not exit within {timeout} s of signal {sig}") from None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def remove_containers(self) -> list[str]:
        """Remove every container this daemon made; returns their ids."""
        try:
            daemon_id = self.daemon_id()
        except sqlite3.Error:
            return []
        return remove_containers(f"{LABEL_DAEMON}={daemon_id}")
