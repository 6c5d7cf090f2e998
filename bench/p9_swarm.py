"""P9 swarm backend: runs of `true` on runnerd's swarm backend, on a real three-node
swarm this figure brings up for itself (tests/swarm_cluster.py), against the docker
backend, against the same services driven directly through the manager's API, and
against P1's bare Docker baseline.

Opt-in (not in the default figure list, so not in `--quick` as the test suite runs
it): it needs root, starts three extra dockerds, and takes a minute or more even
at quick sizes. Run it with `python -m bench --only P9`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from runnerd.config import StorageConfig
from runnerd.engine import log_file_bytes
from runnerd.swarm import POLL_FIRST, POLL_MAX
from tests.harness import TEST_IMAGE
from tests.swarm_cluster import API, SwarmCluster

from .common import (
    LABEL_BENCH,
    SESSION,
    Api,
    Context,
    CpuMeter,
    Daemon,
    DirectEngine,
    FigureResult,
    MiB,
    Row,
    count_runs,
    engine,
    fmt_ratio,
    mean,
    ms,
    percentile,
    remove_bench_containers,
    session,
)

TITLE = "swarm backend"
GOAL = "(none)"
# Its own cluster, beside the one the test suite may be running (/run/runnerd-swarm,
# 127.0.0.11-13): another state dir, other addresses (so another VXLAN port too).
STATE_DIR = Path("/run/runnerd-bench-swarm")
ADDRESSES = ("127.0.0.31", "127.0.0.32", "127.0.0.33")
CONCURRENCY = 4
TRIGGER_CLIENTS = 4  # concurrent POSTs while queueing a burst
BARE_POLL = 0.01  # the bare baseline asks for its task's state this often
BARE_TIMEOUT = 120.0
CMD = ["sh", "-c", "true"]  # what runnerd runs for run_command `true`

METHOD = (
    "Opt-in (`python -m bench --only P9`; needs root): the figure brings up its own "
    "three-node swarm on this machine with tests/swarm_cluster.py (three extra dockerds "
    "beside the main engine, state dir /run/runnerd-bench-swarm, Swarm on 127.0.0.31-33, "
    "node 1 the manager; every node may run tasks) and takes it down at the end. Two "
    "daemons run side by side, both `max_concurrent_runs = 4` with a runner of `true`: "
    "one on the docker backend (the main engine, network none, as P1), one with "
    '`[executor] backend = "swarm"` and `[docker] url` the manager (network bridge: '
    "services take no none). The bare Swarm baseline drives the swarm directly over the "
    "manager's API (aiohttp on its socket, API 1.41) with the service runnerd makes for "
    "a run (`RestartPolicy: none`, the same image, `sh -c true`, limits, `local` log "
    "driver and network), but created at one replica where runnerd creates it at none "
    "and then scales it to one: create the service, poll its task every 10 ms "
    "until it is complete, read the task's logs, delete the service. The bare Docker "
    "baseline is P1's (aiodocker on the main engine: create, start, wait, logs, remove), "
    "so that bare Swarm − bare Docker is what Swarm itself costs a run. (a) Per-run "
    "latency: N sequential runs per side, the four sides alternating (docker backend, "
    "swarm backend, bare Swarm, bare Docker, …; one warm-up each not counted); a "
    "runnerd run is timed from just before `POST …/runs` until the client has followed "
    "its logs to the end and `GET`s it `succeeded` (as P1), a bare run until the "
    "delete (remove) is answered. Rows: median on the swarm backend ÷ median on the "
    "docker backend (what moving to the swarm costs a run), and ÷ median of bare Swarm "
    "(what runnerd adds on top of Swarm). (b) Drain: M runs queued at once (4 "
    "concurrent POSTs; the daemon drains while they arrive) until all are recorded "
    "completed (read from the daemon's database), in two bursts per side alternating as "
    "in (a); the bare sides run the same number of runs at most 4 at a time. The spread "
    "is the API's `node` of each drained run. (c) runnerd's own CPU (utime + stime of "
    "the daemon's process, /proc) per run, during (a) and during (b). On one 2-core "
    "machine the three nodes share the same two cores, so the figure cannot show "
    "throughput scaling with nodes: what it shows is that the work is spread, and what "
    "runnerd adds per run."
)


def main_dockerd_pid() -> int | None:
    """The machine's own dockerd: a swarm node's (this cluster's, or the test
    suite's) always has `--data-root=` on its command line."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "dockerd":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if not any(a.startswith(b"--data-root=") for a in args):
            return int(entry)
    return None


def service_spec(name: str, cmd: list[str]) -> dict[str, Any]:
    """The service runnerd's SwarmEngine makes for a run of the standard-s instance
    type with network bridge (runnerd/swarm.py `_service_spec`), labelled as the
    bench's own."""
    log = engine().log_config(log_file_bytes(StorageConfig.max_log_bytes))
    labels = {LABEL_BENCH: SESSION}
    return {
        "Name": name,
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": TEST_IMAGE,
                "Args": cmd,
                "Env": [],
                "Labels": labels,
                "StopGracePeriod": int(1e9),
                "StopSignal": "SIGTERM",
            },
            "Resources": {"Limits": {"NanoCPUs": int(1e9), "MemoryBytes": 1024 * MiB, "Pids": 512}},
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": []},
            "LogDriver": {"Name": "local", "Options": log.get("Config") or {}},
            "Networks": [{"Target": "bridge"}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }


class BareSwarm:
    """The baseline: a run as a program would drive the swarm itself, over the
    manager's API — create the service, poll its task, read its logs, delete it."""

    def __init__(self, host: str) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=host.removeprefix("unix://")),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        self.base = f"http://localhost{API}"
        # per run: seconds from the create to the task first seen started, and complete
        self.started: list[float] = []
        self.completed: list[float] = []

    async def close(self) -> None:
        await self.http.close()

    async def call(
        self, method: str, path: str, params: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, Any]:
        kw: dict[str, Any] = {"params": params}
        if body is not None:
            kw["json"] = body
        async with self.http.request(method, self.base + path, **kw) as resp:
            raw = await resp.read()
            if resp.content_type == "application/json" and raw:
                return resp.status, json.loads(raw)
            return resp.status, raw

    async def run(self, cmd: list[str]) -> tuple[int, str]:
        """One run, start to finish: its exit code and the id of its node."""
        name = f"runnerd-bench-{uuid.uuid4()}"
        t0 = time.perf_counter()
        status, body = await self.call("POST", "/services/create", body=service_spec(name, cmd))
        if status != 201:
            raise RuntimeError(f"the manager did not create a service: {status} {body!r}"[:500])
        started = None
        try:
            filters = {"filters": json.dumps({"service": [name]})}
            while True:
                status, tasks = await self.call("GET", "/tasks", filters)
                if status != 200:
                    raise RuntimeError(f"the manager did not list tasks: {status} {tasks!r}"[:500])
                task = tasks[0] if tasks else {}
                state = (task.get("Status") or {}).get("State", "")
                if started is None and state in ("starting", "running", "complete", "failed"):
                    started = time.perf_counter() - t0
                if state in ("complete", "failed"):
                    break
                if state in ("rejected", "orphaned", "shutdown", "remove"):
                    raise RuntimeError(f"the bare service's task ended {state}: {task['Status']}")
                if time.perf_counter() - t0 > BARE_TIMEOUT:
                    raise RuntimeError(f"the bare service's task was still {state!r}")
                await asyncio.sleep(BARE_POLL)
            self.started.append(started)
            self.completed.append(time.perf_counter() - t0)
            status, _ = await self.call(
                "GET", f"/tasks/{task['ID']}/logs", {"stdout": "1", "stderr": "1"}
            )
            if status != 200:
                raise RuntimeError(f"the manager did not give the task's logs: {status}")
        finally:
            await self.call("DELETE", f"/services/{name}")
        code = int(((task.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode") or 0)
        return code, str(task.get("NodeID") or "")


def nodes_of(db_path: Path, run_ids: list[str]) -> Counter[str]:
    """How many of these runs ran on each node (the runs' `node`, as the API shows it)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as db:
        found: Counter[str] = Counter()
        for i in range(0, len(run_ids), 500):
            chunk = run_ids[i : i + 500]
            marks = ",".join("?" for _ in chunk)
            for (node,) in db.execute(f"SELECT node FROM runs WHERE id IN ({marks})", chunk):
                found[str(node)] += 1
    return found


async def run(ctx: Context) -> FigureResult:
    n = 3 if ctx.quick else 30
    m = 8 if ctx.quick else 100
    result = FigureResult("P9", TITLE, METHOD)
    if os.geteuid() != 0:
        raise RuntimeError("P9 starts its own swarm of dockerds: it needs root")
    dockerd = main_dockerd_pid()
    cluster = SwarmCluster(STATE_DIR, ADDRESSES)
    docker_d = Daemon(ctx, "p9-docker", max_concurrent_runs=CONCURRENCY)
    swarm_d: Daemon | None = None
    bare: BareSwarm | None = None
    direct = DirectEngine()
    try:
        ctx.log(f"P9: starting a three-node swarm in {STATE_DIR} on {', '.join(ADDRESSES)}")
        t0 = time.perf_counter()
        cluster.start()
        cluster_up = time.perf_counter() - t0
        node_names = {node.node_id: node.name for node in cluster.nodes}

        def meter(daemon: Daemon | None) -> CpuMeter:
            """CPU of the daemon (if any), the main dockerd and each node's dockerd."""
            procs = {"runnerd": daemon.pid} if daemon is not None else {}
            found = CpuMeter(**procs, **{f"{nd.name} dockerd": nd.pid for nd in cluster.nodes})
            found.pids["dockerd"] = dockerd
            return found

        swarm_d = Daemon(
            ctx,
            "p9-swarm",
            max_concurrent_runs=CONCURRENCY,
            docker_url=cluster.manager_host,
            backend="swarm",
        )
        docker_d.start()
        swarm_d.start()
        bare = BareSwarm(cluster.manager_host)
        async with session() as http:
            apis = {"docker": Api(http, docker_d), "swarm": Api(http, swarm_d)}
            daemons = {"docker": docker_d, "swarm": swarm_d}
            runners = {k: await api.create_runner("true") for k, api in apis.items()}

            async def one_run(kind: str) -> tuple[float, str | None]:
                api, runner_id = apis[kind], runners[kind]
                t0 = time.perf_counter()
                run = await api.trigger(runner_id)
                await api.follow_to_end(runner_id, run["id"])
                done = await api.run(runner_id, run["id"])
                elapsed = time.perf_counter() - t0
                if done["status"] != "succeeded":
                    raise RuntimeError(f"{kind} run ended {done['status']}: {done}")
                return elapsed, done.get("node")

            async def bare_run() -> tuple[float, str]:
                assert bare is not None
                t0 = time.perf_counter()
                code, node_id = await bare.run(CMD)
                elapsed = time.perf_counter() - t0
                if code != 0:
                    raise RuntimeError(f"bare service's container exited {code}")
                return elapsed, node_names.get(node_id, node_id)

            async def direct_run() -> float:
                t0 = time.perf_counter()
                code = await direct.run(CMD)
                elapsed = time.perf_counter() - t0
                if code != 0:
                    raise RuntimeError(f"bare Docker container exited {code}")
                return elapsed

            # warm-up: image metadata, connections, node names, first-use costs
            await one_run("docker")
            await one_run("swarm")
            await bare_run()
            await direct_run()
            bare.started.clear()
            bare.completed.clear()

            # (a) sequential runs, the three sides alternating
            times: dict[str, list[float]] = {"docker": [], "swarm": [], "bare": [], "direct": []}
            seq_nodes: dict[str, Counter[str]] = {"swarm": Counter(), "bare": Counter()}
            seq_cpu = {k: meter(None) for k in times}
            for i in range(n):
                ctx.log(f"P9: sequential run {i + 1}/{n}")
                for kind in ("docker", "swarm"):
                    with meter(daemons[kind]) as used:
                        elapsed, node = await one_run(kind)
                    seq_cpu[kind].add(used)
                    times[kind].append(elapsed)
                    if kind == "swarm":
                        seq_nodes["swarm"][str(node)] += 1
                with meter(None) as used:
                    elapsed, node = await bare_run()
                seq_cpu["bare"].add(used)
                times["bare"].append(elapsed)
                seq_nodes["bare"][node] += 1
                with meter(None) as used:
                    times["direct"].append(await direct_run())
                seq_cpu["direct"].add(used)

            # (b) drain: bursts of queued runs, 4 at a time
            async def runnerd_burst(kind: str, count: int) -> tuple[float, list[str]]:
                api, runner_id, daemon = apis[kind], runners[kind], daemons[kind]
                done_sql = "status IN ('succeeded', 'failed')"
                before = count_runs(daemon.db_path, done_sql)
                sem = asyncio.Semaphore(TRIGGER_CLIENTS)
                ids: list[str] = []

                async def trigger() -> None:
                    async with sem:
                        ids.append((await api.trigger(runner_id))["id"])

                t0 = time.perf_counter()
                await asyncio.gather(*(trigger() for _ in range(count)))
                deadline = t0 + 60 + 10 * count
                while count_runs(daemon.db_path, done_sql) - before < count:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"the {kind} burst of {count} runs did not drain")
                    await asyncio.sleep(0.02)
                return time.perf_counter() - t0, ids

            async def bare_burst(count: int) -> tuple[float, Counter[str]]:
                sem = asyncio.Semaphore(CONCURRENCY)
                placed: Counter[str] = Counter()

                async def one() -> None:
                    async with sem:
                        placed[(await bare_run())[1]] += 1

                t0 = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(count)))
                return time.perf_counter() - t0, placed

            async def direct_burst(count: int) -> float:
                sem = asyncio.Semaphore(CONCURRENCY)

                async def one() -> None:
                    async with sem:
                        await direct_run()

                t0 = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(count)))
                return time.perf_counter() - t0

            drain_t = {"docker": 0.0, "swarm": 0.0, "bare": 0.0, "direct": 0.0}
            drain_cpu = {k: meter(None) for k in drain_t}
            drained: list[str] = []
            bare_nodes: Counter[str] = Counter()
            half = m // 2
            for i, size in enumerate((half, m - half)):
                for kind in ("docker", "swarm"):
                    ctx.log(f"P9: burst {i + 1}/2 of {size} runs: {kind} backend")
                    with meter(daemons[kind]) as used:
                        elapsed, ids = await runnerd_burst(kind, size)
                    drain_cpu[kind].add(used)
                    drain_t[kind] += elapsed
                    if kind == "swarm":
                        drained += ids
                ctx.log(f"P9: burst {i + 1}/2 of {size} runs: bare swarm")
                with meter(None) as used:
                    elapsed, placed = await bare_burst(size)
                drain_cpu["bare"].add(used)
                drain_t["bare"] += elapsed
                bare_nodes += placed
                ctx.log(f"P9: burst {i + 1}/2 of {size} runs: bare Docker")
                with meter(None) as used:
                    drain_t["direct"] += await direct_burst(size)
                drain_cpu["direct"].add(used)
            for kind, daemon in daemons.items():
                failed = count_runs(daemon.db_path, "status != 'succeeded'")
                if failed:
                    raise RuntimeError(f"{failed} runs on the {kind} backend did not succeed")
            spread = nodes_of(swarm_d.db_path, drained)
    finally:
        try:
            await direct.close()
            if bare is not None:
                await bare.close()
            docker_d.close()
            if swarm_d is not None:
                swarm_d.close()  # before the cluster goes: it removes its services
        finally:
            ctx.log(f"P9: taking the swarm in {STATE_DIR} down")
            cluster.stop()
            remove_bench_containers()

    # -- the rows ------------------------------------------------------------------
    p50 = {k: percentile(v, 50) for k, v in times.items()}
    p90 = {k: percentile(v, 90) for k, v in times.items()}

    def lat(kind: str) -> str:
        return f"p50 {ms(p50[kind])}, p90 {ms(p90[kind])}"

    nodes = [nd.name for nd in cluster.nodes]

    def spread_text(counts: Counter[str]) -> str:
        names = nodes + sorted(set(counts) - set(nodes))
        return "/".join(str(counts.get(name, 0)) for name in names)

    ratio = p50["swarm"] / p50["docker"]
    result.rows.append(
        Row(
            f"P9 swarm backend: run of `true`, trigger → completed, swarm ÷ docker backend "
            f"({n} sequential runs)",
            f"swarm: {lat('swarm')}",
            f"docker: {lat('docker')}",
            ratio,
            GOAL,
            None,
        )
    )
    ratio = p50["swarm"] / p50["bare"]
    result.rows.append(
        Row(
            "P9 swarm backend: run of `true`, runnerd on the swarm ÷ the same service "
            "through the bare Swarm API",
            f"runnerd: {lat('swarm')}",
            f"bare Swarm: {lat('bare')}",
            ratio,
            GOAL,
            None,
        )
    )
    tp = {k: m / v for k, v in drain_t.items()}
    result.rows.append(
        Row(
            f"P9 swarm backend: drain of {m} queued runs, 4 at a time, swarm ÷ docker backend "
            f"(runs per node 1/2/3: {spread_text(spread)})",
            f"swarm: {tp['swarm']:.2f} runs/s",
            f"docker: {tp['docker']:.2f} runs/s",
            tp["swarm"] / tp["docker"],
            GOAL,
            None,
        )
    )
    result.rows.append(
        Row(
            f"P9 swarm backend: drain of {m} runs, 4 at a time, runnerd on the swarm ÷ "
            "the bare Swarm API",
            f"runnerd: {tp['swarm']:.2f} runs/s",
            f"bare Swarm: {tp['bare']:.2f} runs/s",
            tp["swarm"] / tp["bare"],
            GOAL,
            None,
        )
    )
    cpu = {k: seq_cpu[k].used.get("runnerd", 0.0) / n for k in ("docker", "swarm")}
    dcpu = {k: drain_cpu[k].used.get("runnerd", 0.0) / m for k in ("docker", "swarm")}
    result.rows.append(
        Row(
            "P9 swarm backend: runnerd's own CPU per run, swarm ÷ docker backend "
            "(sequential; in the drain)",
            f"swarm: {cpu['swarm'] * 1000:.1f} ms; {dcpu['swarm'] * 1000:.1f} ms",
            f"docker: {cpu['docker'] * 1000:.1f} ms; {dcpu['docker'] * 1000:.1f} ms",
            cpu["swarm"] / cpu["docker"] if cpu["docker"] else None,
            GOAL,
            None,
        )
    )

    # -- the notes -----------------------------------------------------------------
    result.details.append(
        f"The swarm came up in {cluster_up:.1f} s (three dockerds, image loaded, nodes "
        f"Ready) and was taken down at the end; nodes {', '.join(nodes)}."
    )
    for kind, label in (
        ("docker", "runnerd, docker backend"),
        ("swarm", "runnerd, swarm backend"),
        ("bare", "bare Swarm API"),
        ("direct", "bare Docker (aiodocker)"),
    ):
        v = times[kind]
        result.details.append(
            f"(a) {label}: {n} runs, p50 {ms(p50[kind])}, p90 {ms(p90[kind])}, "
            f"mean {ms(mean(v))}, min {ms(min(v))}, max {ms(max(v))}."
        )
    result.details.append(
        f"(a) What Swarm itself costs a run over a plain container: bare Swarm p50 − "
        f"bare Docker p50 = {ms(p50['bare'] - p50['direct'])}; what runnerd adds on Docker: "
        f"{ms(p50['docker'] - p50['direct'])} at p50 "
        f"({fmt_ratio(p50['docker'] / p50['direct'])}); what runnerd adds on "
        f"top of Swarm: {ms(p50['swarm'] - p50['bare'])} at p50 "
        f"({fmt_ratio(p50['swarm'] / p50['bare'])}), {ms(p90['swarm'] - p90['bare'])} at p90 "
        f"({fmt_ratio(p90['swarm'] / p90['bare'])}). p90 swarm ÷ docker: "
        f"{fmt_ratio(p90['swarm'] / p90['docker'])}."
    )
    if bare.started:
        result.details.append(
            f"(a) The bare Swarm runs' tasks (polled every {BARE_POLL * 1000:.0f} ms) were "
            f"seen started (`starting` or later) at p50 {ms(percentile(bare.started[:n], 50))} "
            f"and complete at p50 {ms(percentile(bare.completed[:n], 50))} after the create. "
            f"runnerd's swarm engine polls a task's state at {POLL_FIRST * 1000:.0f} ms, "
            f"doubling up to {POLL_MAX:.0f} s, until it has started and again until it has "
            "ended (runnerd/swarm.py)."
        )
    result.details.append(
        f"(a) Nodes of the sequential runs (1/2/3): runnerd {spread_text(seq_nodes['swarm'])}, "
        f"bare {spread_text(seq_nodes['bare'])}."
    )
    for kind, label in (
        ("docker", "runnerd, docker backend"),
        ("swarm", "runnerd, swarm backend"),
        ("bare", "bare Swarm API"),
        ("direct", "bare Docker (aiodocker)"),
    ):
        result.details.append(
            f"(b) {label}: {m} runs in two bursts, {drain_t[kind]:.1f} s in all "
            f"({tp[kind]:.2f} runs/s, {drain_t[kind] / m * 1000:.0f} ms/run)."
        )
    result.details.append(
        f"(b) Runs per node (1/2/3) in the drain: runnerd {spread_text(spread)}, "
        f"bare {spread_text(bare_nodes)}."
    )
    for phase, meters, runs in (("(a)", seq_cpu, n), ("(b)", drain_cpu, m)):
        result.details.append(
            f"{phase} CPU per run — runnerd on docker: {meters['docker'].per_run(runs, 1)}; "
            f"runnerd on swarm: {meters['swarm'].per_run(runs, 1)}; bare Swarm: "
            f"{meters['bare'].per_run(runs, 1)}; bare Docker: {meters['direct'].per_run(runs, 1)}."
        )
    return result
