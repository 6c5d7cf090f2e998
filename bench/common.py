"""What every figure shares: the engine they run on (Docker, or Podman through its
Docker-compatible socket), a real `runnerd serve` process with a temp config and
an API key, a thin HTTP client, the engine baseline (aiodocker, with the container
config runnerd itself uses), memory sampling from /proc, statistics, and the
result rows the report is made of.

The daemon process itself, its config, the docker CLI and the test image's name
come from tests/harness.py, the harness the test suite starts its daemons with (its
docstring says why it lives there); this module adds what only figures need.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp

from runnerd._aiodocker_shim import raw_request
from runnerd.engine import DOCKER, PODMAN, EngineKind, engine_kind
from tests import harness
from tests.harness import TEST_IMAGE, TEST_IMAGE_NAME, TEST_IMAGE_TAG, docker_cli, remove_containers

LABEL_BENCH = "io.runnerd.bench"  # what the baseline puts on its own containers
UNREACHABLE_ENGINE = harness.NO_ENGINE  # runs stay pending: nothing answers there
MiB = 1024 * 1024

# One id per `python -m bench` process: every baseline container carries it, so
# the final sweep removes exactly ours.
SESSION = uuid.uuid4().hex[:12]


# -- results ------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: figure | runnerd | baseline | ratio | goal | met?"""

    figure: str
    runnerd: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None
    error: str | None = None


@dataclass
class FigureResult:
    key: str  # "P1"
    title: str  # "per-run overhead"
    method: str  # one paragraph: how it is measured
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # measured extras for the notes
    size_note: str | None = None  # "ran at N instead of M because …"
    seconds: float = 0.0


@dataclass
class Context:
    quick: bool
    workdir: Path  # a temp dir of this suite run; removed at the end
    profile_dir: Path | None = None
    keep: bool = False  # keep `workdir` (daemon logs and configs) at the end
    profile_gil: bool = False  # py-spy --gil: only samples holding the GIL (CPU, not waits)
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    def tempdir(self, name: str) -> Path:
        d = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}"
        d.mkdir(parents=True)
        return d


def fmt_ratio(x: float | None) -> str:
    """Three significant digits (0.947×, 1.16×, 12.3×): a ratio just short of a
    goal does not show as the goal itself."""
    if x is None:
        return "–"
    return f"{x:#.3g}×" if x < 99.95 else f"{x:.0f}×"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


# -- the engine ---------------------------------------------------------------------------

ENGINES = (DOCKER, PODMAN)
PODMAN_HOST_ENV = "RUNNERD_BENCH_PODMAN_HOST"
TEST_PODMAN_HOST_ENV = "RUNNERD_TEST_PODMAN_HOST"  # tests/run.sh exports where it started it
# Where tests/run.sh starts its rootful `podman system service` by default.
DEFAULT_PODMAN_HOST = "unix:///run/runnerd-test-podman/podman.sock"


def podman_host(given: str | None = None) -> str:
    """The Podman socket: `--podman-host`, else $RUNNERD_BENCH_PODMAN_HOST, else the
    test command's ($RUNNERD_TEST_PODMAN_HOST, or where it starts one by default)."""
    return (
        given
        or os.environ.get(PODMAN_HOST_ENV)
        or os.environ.get(TEST_PODMAN_HOST_ENV)
        or DEFAULT_PODMAN_HOST
    )


def use_engine(name: str, podman: str | None = None) -> str | None:
    """Point everything this process and its children start at engine `name`: for
    Podman, DOCKER_HOST names its socket, which the docker CLI, aiodocker (the
    baseline) and every runnerd daemon (`[docker] url` unset) all honour, so the
    baselines run on the same engine as runnerd. Docker is DOCKER_HOST as given, or
    the local socket. The address, or None for Docker's default."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    if name == PODMAN:
        os.environ["DOCKER_HOST"] = podman_host(podman)
    return os.environ.get("DOCKER_HOST")


def detect_engine(timeout: float = 120.0) -> EngineKind:
    """What answers at DOCKER_HOST (or the local socket), classified as runnerd
    classifies it (engine_kind), from its /version and /info. Bounded by `timeout`,
    not by runnerd's 5 s health-probe bound: a busy Podman service here has taken
    over a minute to answer /info, and the bench should wait for it, not give up."""

    async def ask() -> EngineKind:
        docker = aiodocker.Docker()
        try:
            async with asyncio.timeout(timeout):
                version = await docker.version()
                info = await docker.system.info()
        except TimeoutError:
            raise RuntimeError(f"/version and /info took over {timeout:.0f} s") from None
        finally:
            await docker.close()
        return engine_kind(version, info)

    return asyncio.run(ask())


# The engine the figures run on: set once by check_engine() before any figure runs
# (one `python -m bench` process measures one engine).
_engine: EngineKind | None = None


def engine() -> EngineKind:
    if _engine is None:
        raise RuntimeError("check_engine() has not run: no engine chosen")
    return _engine


def engine_title(kind: EngineKind) -> str:
    """ "Docker" or "Podman": how a figure's key names the engine it ran on."""
    return "Podman" if kind.name == PODMAN else "Docker"


def engine_version() -> str:
    out = docker_cli("version", "--format", "{{.Server.Version}}", check=False)
    if out.returncode != 0:
        raise RuntimeError(f"no engine answers: {out.stderr.strip()}")
    return out.stdout.strip()


def check_engine(name: str = DOCKER) -> EngineKind:
    """The engine that answers, which must be `name` (a figure labelled Docker but
    measured on Podman, or the other way, would be worse than none), with the test
    image; it becomes `engine()` for the figures."""
    global _engine
    where = os.environ.get("DOCKER_HOST") or "the local socket"
    try:
        kind = detect_engine()
    except Exception as e:  # noqa: BLE001 - said in one sentence
        raise RuntimeError(f"no engine answers at {where}: {e}") from None
    if kind.name != name:
        raise RuntimeError(
            f"--engine {name}, but {kind.label} answers at {where}"
            + (f" (--engine {kind.name} measures it)" if kind.name in ENGINES else "")
        )
    if docker_cli("image", "inspect", TEST_IMAGE, check=False).returncode != 0:
        raise RuntimeError(
            f"the test image {TEST_IMAGE} is missing on {kind.label}; `bash tests/run.sh` "
            "builds it (offline, from busybox-static)"
        )
    _engine = kind
    return kind


# -- a real runnerd process -----------------------------------------------------------


class Daemon(harness.Daemon):
    """The harness's daemon with what figures add: a config from keyword arguments,
    a full API key made on first start, an optional profile, and `close`.

    The config is the test suite's: loopback on a free port, network `none`
    (this engine has no bridge), short stop grace; `docker_url` points it at
    another engine (UNREACHABLE_ENGINE: runs stay pending). `backend = "swarm"`
    makes it runnerd's swarm backend on the swarm whose manager `docker_url`
    names (network `bridge`: services take no `none`)."""

    def __init__(
        self,
        ctx: Context,
        name: str,
        *,
        max_concurrent_runs: int = 4,
        docker_url: str | None = None,
        max_log_bytes: int | None = None,
        on_shutdown: str = "leave",
        backend: str = "docker",
    ) -> None:
        d = ctx.tempdir(name)
        super().__init__(dir=d, config_path=d / "config.toml")
        self.ctx = ctx
        self.name = name
        self.max_concurrent_runs = max_concurrent_runs
        self.docker_url = docker_url
        self.max_log_bytes = max_log_bytes
        self.on_shutdown = on_shutdown
        self.backend = backend
        self._profiler: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self.write_config()

    def write_config(self) -> None:
        swarm = self.backend == "swarm"
        docker = [f'network = "{"bridge" if swarm else "none"}"', "stop_grace_seconds = 1"]
        if self.docker_url:
            docker.append(f'url = "{self.docker_url}"')
        storage = [f'data_dir = "{self.data_dir}"']
        if self.max_log_bytes:
            storage.append(f"max_log_bytes = {self.max_log_bytes}")
        executor = f'[executor]\nbackend = "{self.backend}"\n\n' if swarm else ""
        harness.write_config(
            self.config_path,
            self.data_dir,
            "[storage]\n" + "\n".join(storage) + "\n\n"
            "[docker]\n" + "\n".join(docker) + "\n\n" + executor + "[scheduler]\n"
            f"max_concurrent_runs = {self.max_concurrent_runs}\n"
            f'on_shutdown = "{self.on_shutdown}"\n',
        )

    def start(self, timeout: float = 120.0) -> float:
        """Start the process; seconds from spawning it to its "listening on" line."""
        if not self.key:
            self.key = self.create_key("bench")
        elapsed = super().start(timeout)
        self._starts += 1
        self._start_profiler()
        return elapsed

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Stop it if it runs (one that outlives `timeout` is killed); figures go on."""
        self._stop_profiler()
        if self.proc is None:
            return None
        try:
            return super().stop(sig, timeout)
        except harness.DaemonFailed:
            return None
        finally:
            self.proc = None

    def remove_containers(self) -> list[str]:
        """Remove every container it made (on the swarm backend: every service it
        made, through the manager `docker_url` names); their ids or names."""
        if self.backend != "swarm":
            return super().remove_containers()
        try:
            label = f"{harness.LABEL_DAEMON}={self.daemon_id()}"
        except sqlite3.Error:
            return []
        filters = json.dumps({"label": [label]})
        status, listed = harness.engine_api(
            "GET", "/services", {"filters": filters}, host=self.docker_url
        )
        if status != 200:
            raise RuntimeError(f"the swarm did not list services ({status}): {listed}")
        names = [str(s["Spec"]["Name"]) for s in listed]
        for name in names:
            harness.engine_api("DELETE", f"/services/{name}", host=self.docker_url)
        return names

    def close(self) -> None:
        """Stop it, remove every container it made, delete its data dir (its log
        and config stay in the suite's temp dir, kept with --keep)."""
        try:
            self.stop()
        finally:
            self.remove_containers()
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- memory, from /proc -----------------------------------------------------

    def status_kib(self, field_name: str) -> int:
        return proc_status_kib(self.pid, field_name)

    # -- optional profile of the daemon (--profile DIR) -------------------------

    def _start_profiler(self) -> None:
        if self.ctx.profile_dir is None or shutil.which("py-spy") is None:
            return
        self.ctx.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.ctx.profile_dir / f"{self.name}-{self._starts}.folded"
        self._profiler = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--threads",
                *(["--gil"] if self.ctx.profile_gil else []),
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _stop_profiler(self) -> None:
        if self._profiler is None:
            return
        self._profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            self._profiler.wait(30)
        except subprocess.TimeoutExpired:
            self._profiler.kill()
            self._profiler.wait(5)
        self._profiler = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_process() -> tuple[str, int | None]:
    """The engine's process, when it runs on this machine (for its CPU time): its
    name in CPU summaries and its pid. Docker's is `dockerd`; Podman's is the
    `podman system service` serving DOCKER_HOST's socket (each container's conmon,
    which writes its log file, is a process of its own, not counted)."""
    podman = _engine is not None and _engine.name == PODMAN
    name = "podman service" if podman else "dockerd"
    socket = (os.environ.get("DOCKER_HOST") or "").removeprefix("unix://")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            if not podman and comm == "dockerd":
                return name, int(entry)
            if podman and comm == "podman":
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
                if b"service" in args and any(socket.encode() in a for a in args):
                    return name, int(entry)
        except OSError:
            continue
    return name, None


class CpuMeter:
    """CPU seconds used by the daemon, the engine (dockerd or the podman service)
    and this process between enter and exit — where the machine's 2 cores went."""

    def __init__(self, **processes: int | None) -> None:
        name, pid = engine_process()
        self.pids = {**processes, name: pid, "bench client": os.getpid()}
        self.used: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        import resource

        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children: docker CLI
        out = {"bench's finished children": kids.ru_utime + kids.ru_stime}
        for name, pid in self.pids.items():
            if pid is None:
                continue
            try:
                out[name] = cpu_seconds(pid)
            except OSError:
                pass
        return out

    def __enter__(self) -> CpuMeter:
        self._start = self._read()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        self.wall = time.perf_counter() - self._t0
        self.used = {k: end[k] - v for k, v in self._start.items() if k in end}

    def add(self, other: CpuMeter) -> None:
        for k, v in other.used.items():
            self.used[k] = self.used.get(k, 0.0) + v
        self.wall = getattr(self, "wall", 0.0) + other.wall

    def per_run(self, runs: int, decimals: int = 0) -> str:
        """The CPU of each process over `runs` runs, in ms each (the processes
        that used under 0.5 ms a run left out)."""
        return ", ".join(
            f"{k} {v / runs * 1000:.{decimals}f} ms"
            for k, v in self.used.items()
            if v >= 0.0005 * runs
        )

    def summary(self) -> str:
        return (
            ", ".join(f"{k} {v:.1f} s" for k, v in self.used.items() if v >= 0.05)
            + f" of CPU in {self.wall:.1f} s wall"
        )


def proc_status_kib(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, …)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


class RssSampler:
    """Samples a process's VmRSS every `interval` s in a thread (independent of
    the event loop, which may be busy); `peak_kib` also counts VmHWM growth, so a
    peak between two samples is not missed."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.hwm_before = proc_status_kib(pid, "VmHWM")
        self.hwm_after = self.hwm_before
        self.rss_before = proc_status_kib(pid, "VmRSS")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(proc_status_kib(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.hwm_after = proc_status_kib(self.pid, "VmHWM")
        except (OSError, KeyError):
            pass

    @property
    def peak_kib(self) -> int:
        peak = max(self.samples, default=self.rss_before)
        if self.hwm_after > self.hwm_before:  # the high-water mark rose during the window
            peak = max(peak, self.hwm_after)
        return peak

    @property
    def growth_kib(self) -> int:
        return self.peak_kib - self.rss_before


# -- HTTP ------------------------------------------------------------------------------


class Api:
    """A thin client of one daemon: calls return (status, parsed JSON or bytes)."""

    def __init__(self, session: aiohttp.ClientSession, daemon: Daemon) -> None:
        self.session = session
        self.url = daemon.url
        self.headers = {"Authorization": f"Bearer {daemon.key}"}
        self.json_headers = {**self.headers, "Content-Type": "application/json"}

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if body is not None:
            kwargs = {"headers": self.json_headers, "data": json.dumps(body)}
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            raw = await resp.read()
            if resp.content_type == "application/json":
                return resp.status, json.loads(raw)
            return resp.status, raw

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = await self.request(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}: {data!r}"[:500])
        return data

    async def create_runner(self, command: str, **fields: Any) -> str:
        body = {
            "name": f"bench-{uuid.uuid4().hex[:10]}",
            "image_name": TEST_IMAGE_NAME,
            "image_tag": TEST_IMAGE_TAG,
            "run_command": command,
            "timeout_seconds": 3600,
            **fields,
        }
        return (await self.ok("POST", "/v1/runners", body))["runner"]["id"]

    async def trigger(self, runner_id: str, body: Any = None) -> dict[str, Any]:
        return (
            await self.ok("POST", f"/v1/runners/{runner_id}/runs", body if body is not None else {})
        )["run"]

    async def create_schedule(self, runner_id: str, cron: str, **fields: Any) -> dict[str, Any]:
        """POST a schedule (`fields`: timezone, enabled, env_variables, …); the schedule."""
        body = {"cron": cron, **fields}
        return (await self.ok("POST", f"/v1/runners/{runner_id}/schedules", body))["schedule"]

    async def run(self, runner_id: str, run_id: str) -> dict[str, Any]:
        return (await self.ok("GET", f"/v1/runners/{runner_id}/runs/{run_id}"))["run"]

    async def follow_to_end(
        self, runner_id: str, run_id: str, on_chunk: Callable[[bytes], None] | None = None
    ) -> int:
        """Read `…/logs?follow=true` until the daemon ends the stream; bytes read."""
        n = 0
        async with self.session.get(
            f"{self.url}/v1/runners/{runner_id}/runs/{run_id}/logs",
            params={"follow": "true"},
            headers=self.headers,
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"follow answered {resp.status}: {await resp.text()}"[:500])
            async for chunk in resp.content.iter_any():
                n += len(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)
        return n

    async def wait_completed(
        self, runner_id: str, run_id: str, *, interval: float, timeout: float = 600
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = await self.run(runner_id, run_id)
            if run["status"] in ("succeeded", "failed"):
                return run
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} did not complete within {timeout:.0f} s")
            await asyncio.sleep(interval)


def session(limit: int = 100, timeout: float = 3600) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit), timeout=aiohttp.ClientTimeout(total=timeout)
    )


def count_runs(db_path: Path, where: str) -> int:
    """Count runs straight from a live daemon's database (read-only; WAL lets a
    reader in while the daemon writes), so progress checks put no load on its API."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as db:
        return int(db.execute(f"SELECT count(*) FROM runs WHERE {where}").fetchone()[0])


# -- the engine baseline: aiodocker directly, runnerd's own container config ---------------


def container_config(
    cmd: list[str], *, log_max_size: str = "64m", log_max_file: str = "4"
) -> dict[str, Any]:
    """The container runnerd creates for a run of instance type standard-s
    (runnerd/engine.py `Engine.create`), labelled as the bench's own. On Docker its
    log is `local`, of `log_max_file` files of `log_max_size`; on Podman the log
    config is runnerd's for Podman (`k8s-file`, never rotated: the sizes do not apply)."""
    if engine().name == PODMAN:
        log_config = engine().log_config(0)
    else:
        log_config = {
            "Type": "local",
            "Config": {"max-size": log_max_size, "max-file": log_max_file, "compress": "false"},
        }
    return {
        "Image": TEST_IMAGE,
        "Cmd": cmd,
        "Env": [],
        "Labels": {LABEL_BENCH: SESSION},
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "OpenStdin": False,
        "HostConfig": {
            "NanoCpus": int(1.0 * 1e9),
            "Memory": 1024 * MiB,
            "MemorySwap": 1024 * MiB,
            "PidsLimit": 512,
            "NetworkMode": "none",
            "LogConfig": log_config,
            "AutoRemove": False,
        },
    }


class DirectEngine:
    """The baseline: what a run costs when a program drives the engine itself
    with aiodocker — create, start, wait, read the logs, remove. It talks to
    DOCKER_HOST (or the local socket), as runnerd's daemons do: the same engine."""

    def __init__(self) -> None:
        self.docker = aiodocker.Docker()

    async def close(self) -> None:
        await self.docker.close()

    async def create(self, config: dict[str, Any]) -> str:
        container = await self.docker.containers.create(
            config, name=f"runnerd-bench-{uuid.uuid4()}"
        )
        return str(container.id)

    async def request_json(self, path: str, **kw: Any) -> Any:
        """The engine's JSON answer to a request (through runnerd's one shim of
        aiodocker's private API: the same raw request runnerd makes)."""
        async with raw_request(self.docker, path, **kw) as resp:
            return await resp.json()

    async def start(self, cid: str) -> None:
        async with raw_request(self.docker, f"containers/{cid}/start", method="POST"):
            pass

    async def wait(self, cid: str) -> int:
        data = await self.request_json(f"containers/{cid}/wait", method="POST")
        return int(data["StatusCode"])

    async def exists(self, name: str) -> bool:
        """A container of that id or name exists (in any state)."""
        try:
            async with raw_request(self.docker, f"containers/{name}/json"):
                return True
        except aiodocker.exceptions.DockerError as e:
            if e.status == 404:
                return False
            raise

    async def logs(self, cid: str) -> bytes:
        async with raw_request(
            self.docker,
            f"containers/{cid}/logs",
            params={"stdout": True, "stderr": True, "follow": False},
        ) as resp:
            return await resp.read()

    async def remove(self, cid: str) -> None:
        async with raw_request(
            self.docker, f"containers/{cid}", method="DELETE", params={"force": True, "v": True}
        ):
            pass

    async def run(self, cmd: list[str]) -> int:
        """One run, start to finish; its exit code."""
        cid = await self.create(container_config(cmd))
        try:
            await self.start(cid)
            code = await self.wait(cid)
            await self.logs(cid)
            return code
        finally:
            await self.remove(cid)


def remove_bench_containers() -> int:
    return len(remove_containers(f"{LABEL_BENCH}={SESSION}"))


# -- offline seeding ----------------------------------------------------------------------


async def template_run(db_path: Path, runner_id: str, secret_key: Path) -> dict[str, Any]:
    """Queue one run through runnerd's own Store (the daemon stopped) and read its
    row back: the template seeded rows copy, column for column — so `env` holds
    the store's encrypted `[]`, exactly as a trigger writes it."""
    from runnerd.store import Store  # the format is the store's: learn it from it

    store = Store(db_path, secret_key)
    await store.open()
    try:
        runner = await store.get_runner(runner_id)
        assert runner is not None, runner_id
        run, _ = await store.create_run(runner, [], 1.0, 1024, 512)
    finally:
        await store.close()
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM runs WHERE id = ?", (run.id,)).fetchone())
        db.execute("DELETE FROM runs WHERE id = ?", (run.id,))
    return row


def seed_runs(
    db_path: Path,
    template: dict[str, Any],
    n: int,
    *,
    completed: bool,
    batch: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Insert `n` runs copied from `template` with sqlite3, straight into a stopped
    daemon's database: completed (succeeded, 1 in 20 failed) or pending."""
    columns = [c for c in template if c != "seq"]
    sql = f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    base_ms = int(time.time() * 1000) - n * 1000  # one run a second, ending now
    idx = {c: i for i, c in enumerate(columns)}
    proto = [template[c] for c in columns]
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")
        done = 0
        while done < n:
            rows = []
            for i in range(done, min(n, done + batch)):
                row = list(proto)
                created = base_ms + i * 1000
                row[idx["id"]] = str(uuid.uuid4())
                row[idx["created_at"]] = created
                row[idx["updated_at"]] = created
                if completed:
                    failed = i % 20 == 0
                    row[idx["status"]] = "failed" if failed else "succeeded"
                    row[idx["exit_code"]] = 1 if failed else 0
                    row[idx["failure_reason"]] = "nonzero_exit" if failed else None
                    row[idx["error"]] = "The command exited with code 1." if failed else None
                    row[idx["container_id"]] = uuid.uuid4().hex * 2
                    row[idx["started_at"]] = created + 100
                    row[idx["completed_at"]] = created + 400
                    row[idx["updated_at"]] = created + 400
                else:
                    row[idx["status"]] = "pending"
                rows.append(row)
            db.execute("BEGIN")
            db.executemany(sql, rows)
            db.execute("COMMIT")
            done += len(rows)
            if progress is not None:
                progress(done)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


async def seed_history(
    ctx: Context, figure: str, db_path: Path, template: dict[str, Any], n: int, already: int
) -> float:
    """`seed_runs` of `n` completed runs after `already` (off the event loop), logging
    progress every 200,000 as `figure`; the seconds it took."""
    t0 = time.perf_counter()

    def progress(done: int) -> None:
        if done % 200_000 == 0:
            ctx.log(f"{figure}: seeded {already + done:,} runs")

    await asyncio.to_thread(seed_runs, db_path, template, n, completed=True, progress=progress)
    return time.perf_counter() - t0
