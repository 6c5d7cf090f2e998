"""P11 trigger → container started (issue #16's P8): how long after a trigger the
engine has the run's container started (its own `State.StartedAt`), p50/p99,
against aiodocker's create + start alone."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import time
from typing import Any

import aiodocker

from runnerd._aiodocker_shim import raw_request

from .common import (
    Api,
    Context,
    CpuMeter,
    Daemon,
    DirectEngine,
    FigureResult,
    Row,
    container_config,
    ms,
    percentile,
    remove_bench_containers,
    session,
)

TITLE = "trigger → container started"
GOAL = "≤ 1.05×"
LIMIT = 1.05
SLEEP = 1  # the runner's command: alive long enough to inspect after its start event

METHOD = (
    "Issue #16's P8. runnerd records a run's `started_at` when it marks the run running, "
    "just before it asks the engine to start the container, so the figure is taken from "
    "the engine instead: the time the engine says the run's container started "
    "(`State.StartedAt` of `docker inspect`, nanoseconds) minus the run's `created_at` "
    "(the API's answer to the trigger, whole ms, truncated: it errs up to 1 ms on "
    "runnerd's side). One daemon (max_concurrent_runs 4, network none) and a runner of "
    f"`sleep {SLEEP}`; the bench follows the engine's event stream (`start` events of "
    "containers, read throughout, so nothing polls the engine while a run starts); on "
    "the `start` event of `runnerd-<run id>` it inspects the container, then waits for "
    "the run to end (`succeeded`) and for runnerd to remove its container before the "
    "next: runs never overlap. The baseline is aiodocker alone, with runnerd's container "
    "config: t0 = the wall clock just before create, then create and start, and the "
    "container's `State.StartedAt` minus t0 (one clock: same machine); then the "
    "container is removed. Runnerd and baseline alternate (ABAB…), one warm-up each not "
    "counted, 30 each. Rows: p50 and p99 (nearest rank: of 30, the largest) on each "
    "side; ratio = runnerd's ÷ the baseline's at the same percentile. The notes add the "
    "client's own view (POST sent → StartedAt) and where runnerd's time goes."
)

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def epoch_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time with up to 9 fractional
    digits: the engine's `2026-01-15T09:01:00.123456789Z` or the API's
    `2026-01-15T10:01:00.000+01:00` (datetime alone stops at microseconds)."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    whole = datetime.datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3]))
    return int(whole.timestamp()) * 1_000_000_000 + int((m[2] or "").ljust(9, "0"))


class StartEvents:
    """The engine's `start` events of containers, from its event stream, by
    container name: the time (ns) of each, and waiting for one."""

    def __init__(self) -> None:
        self.docker = aiodocker.Docker()
        self.seen: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Future[int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._ready.wait(), 30)

    async def _read(self) -> None:
        filters = json.dumps({"type": ["container"], "event": ["start"]})
        async with raw_request(self.docker, "events", params={"filters": filters}) as resp:
            self._ready.set()
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                name = str(event.get("Actor", {}).get("Attributes", {}).get("name", ""))
                at = int(event["timeNano"])
                self.seen[name] = at
                waiter = self._waiters.pop(name, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(at)

    async def wait(self, name: str, timeout: float = 60) -> int:
        if name in self.seen:
            return self.seen[name]
        waiter = self._waiters.setdefault(name, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise RuntimeError(f"no start event for {name} within {timeout:.0f} s") from None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.docker.close()


async def started(direct: DirectEngine, name: str) -> tuple[int, str]:
    """(the engine's `State.StartedAt` in ns, the name) of a started container."""
    info: dict[str, Any] = await direct.request_json(f"containers/{name}/json")
    at = epoch_ns(str(info["State"]["StartedAt"]))
    if at <= 0:
        raise RuntimeError(f"{name} has not started: {info['State']}")
    return at, str(info["Name"]).lstrip("/")


async def run(ctx: Context) -> FigureResult:
    n = 3 if ctx.quick else 30
    result = FigureResult("P11", TITLE, METHOD)
    daemon = Daemon(ctx, "p11")
    direct = DirectEngine()
    events = StartEvents()
    r_t: list[float] = []  # StartedAt − created_at
    post_t: list[float] = []  # StartedAt − POST sent
    accept_t: list[float] = []  # created_at − POST sent
    marked_t: list[float] = []  # API started_at (marked running) − created_at
    r_event_t: list[float] = []  # start event − StartedAt
    b_t: list[float] = []  # StartedAt − t0 (before create)
    b_create_t: list[float] = []  # create answered − t0
    b_event_t: list[float] = []
    try:
        daemon.start()
        await events.start()
        async with session() as http:
            api = Api(http, daemon)
            runner_id = await api.create_runner(f"sleep {SLEEP}")

            async def runnerd_one(keep: bool) -> None:
                t_post = time.time_ns()
                run = await api.trigger(runner_id)
                created = epoch_ns(run["created_at"])
                name = f"runnerd-{run['id']}"
                event_at = await events.wait(name)
                started_ns, _ = await started(direct, name)
                done = await api.wait_completed(runner_id, run["id"], interval=0.1, timeout=120)
                if done["status"] != "succeeded":
                    raise RuntimeError(f"run ended {done['status']}: {done}")
                deadline = time.monotonic() + 30
                while await direct.exists(name):  # runnerd removes it after recording it
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"runnerd did not remove {name} within 30 s")
                    await asyncio.sleep(0.05)
                if keep:
                    r_t.append((started_ns - created) / 1e9)
                    post_t.append((started_ns - t_post) / 1e9)
                    accept_t.append((created - t_post) / 1e9)
                    marked_t.append((epoch_ns(done["started_at"]) - created) / 1e9)
                    r_event_t.append((event_at - started_ns) / 1e9)

            async def baseline_one(keep: bool) -> None:
                config = container_config(["sh", "-c", f"sleep {SLEEP}"])
                t0 = time.time_ns()
                cid = await direct.create(config)
                try:
                    created = time.time_ns()
                    await direct.start(cid)
                    started_ns, name = await started(direct, cid)
                    event_at = await events.wait(name)
                finally:
                    await direct.remove(cid)
                if keep:
                    b_t.append((started_ns - t0) / 1e9)
                    b_create_t.append((created - t0) / 1e9)
                    b_event_t.append((event_at - started_ns) / 1e9)

            await runnerd_one(keep=False)
            await baseline_one(keep=False)
            r_cpu, b_cpu = CpuMeter(), CpuMeter()
            for i in range(n):
                ctx.log(f"P11: run {i + 1}/{n}")
                with CpuMeter(runnerd=daemon.pid) as m:
                    await runnerd_one(keep=True)
                r_cpu.add(m)
                with CpuMeter() as m:
                    await baseline_one(keep=True)
                b_cpu.add(m)
    finally:
        await events.close()
        await direct.close()
        daemon.close()
        remove_bench_containers()

    for p in (50, 99):
        r, b = percentile(r_t, p), percentile(b_t, p)
        result.rows.append(
            Row(
                f"P11 {TITLE} (#16's P8): p{p}, created_at → engine's StartedAt",
                f"p{p} {ms(r)}",
                f"p{p} {ms(b)} (aiodocker create + start)",
                r / b,
                GOAL,
                r / b <= LIMIT,
            )
        )

    def spread(values: list[float]) -> str:
        return (
            f"p50 {ms(percentile(values, 50))}, p99 {ms(percentile(values, 99))}, "
            f"min {ms(min(values))}"
        )

    result.details.append(
        f"runnerd, created_at → StartedAt ({n} runs): {spread(r_t)}; baseline, before "
        f"create → StartedAt ({n}): {spread(b_t)}. Ratios: p50 "
        f"{percentile(r_t, 50) / percentile(b_t, 50):.3f}×, p99 "
        f"{percentile(r_t, 99) / percentile(b_t, 99):.3f}×."
    )
    result.details.append(
        f"The client's view, POST sent → StartedAt: {spread(post_t)} (the POST answered, "
        f"i.e. created_at − POST sent: {spread(accept_t)}; ratio of p50 to the baseline's "
        f"{percentile(post_t, 50) / percentile(b_t, 50):.3f}×)."
    )
    result.details.append(
        f"Inside runnerd: created_at → its own started_at (marked running, before the "
        f"engine's start): {spread(marked_t)}; the baseline's create took "
        f"{spread(b_create_t)} of its total. The engine's start event came "
        f"{ms(percentile(r_event_t, 50))} (p50) after StartedAt for runnerd's containers, "
        f"{ms(percentile(b_event_t, 50))} for the baseline's."
    )
    result.details.append(
        f"CPU per run — runnerd side: {r_cpu.per_run(n)}; baseline side: {b_cpu.per_run(n)} "
        f"(runnerd's runs include their {SLEEP} s sleep, the follow and the removal)."
    )
    return result
