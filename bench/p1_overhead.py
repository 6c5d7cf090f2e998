"""P1 per-run overhead: sequential runs of `true`, trigger → completed as a client
sees it, against the same runs driven directly with aiodocker."""

from __future__ import annotations

import time

from .common import (
    Api,
    Context,
    CpuMeter,
    Daemon,
    DirectEngine,
    FigureResult,
    Row,
    fmt_ratio,
    mean,
    ms,
    percentile,
    remove_bench_containers,
    session,
)

TITLE = "per-run overhead"
GOAL = "≤ 1.02×"
LIMIT = 1.02
POLL_INTERVAL = 0.005

METHOD = (
    "One daemon (max_concurrent_runs 4, network none) and one runner whose command is "
    "`true` (run as `sh -c true`, like every run_command). Each runnerd run is timed from "
    "just before `POST …/runs` to the moment the client knows its result: it reads "
    "`GET …/logs?follow=true` until the daemon ends the stream, then `GET`s the run and "
    "checks it `succeeded`. The baseline does the same work directly with aiodocker, with "
    "runnerd's own container config (same limits, `local` log driver, network none): "
    "create, start, wait, read the logs, remove. Runnerd and baseline runs alternate "
    "(ABAB…) so drift in the machine's speed hits both alike; one warm-up run each is not "
    "counted. The ratio is mean runnerd time / mean baseline time. runnerd records a run "
    "completed before it removes the container, so the removal is on the baseline's clock "
    "but not on the client's: a ratio a little under 1.0× is possible. A second row times "
    "the same runnerd runs with tight polling (`GET` the run every 5 ms) instead of "
    "following the logs, against the same baseline."
)


async def run(ctx: Context) -> FigureResult:
    n = 3 if ctx.quick else 30
    result = FigureResult("P1", TITLE, METHOD)
    daemon = Daemon(ctx, "p1")
    direct = DirectEngine()
    try:
        daemon.start()
        async with session() as http:
            api = Api(http, daemon)
            runner_id = await api.create_runner("true")
            cmd = ["sh", "-c", "true"]

            async def runnerd_follow() -> float:
                t0 = time.perf_counter()
                run = await api.trigger(runner_id)
                await api.follow_to_end(runner_id, run["id"])
                done = await api.run(runner_id, run["id"])
                elapsed = time.perf_counter() - t0
                if done["status"] != "succeeded":
                    raise RuntimeError(
                        f"run ended {done['status']} after the follow stream ended: {done}"
                    )
                return elapsed

            async def runnerd_poll() -> float:
                t0 = time.perf_counter()
                run = await api.trigger(runner_id)
                done = await api.wait_completed(runner_id, run["id"], interval=POLL_INTERVAL)
                elapsed = time.perf_counter() - t0
                if done["status"] != "succeeded":
                    raise RuntimeError(f"run ended {done['status']}: {done}")
                return elapsed

            async def baseline() -> float:
                t0 = time.perf_counter()
                code = await direct.run(cmd)
                elapsed = time.perf_counter() - t0
                if code != 0:
                    raise RuntimeError(f"baseline container exited {code}")
                return elapsed

            # warm-up: image metadata, connections, first-use costs on both sides
            await runnerd_follow()
            await runnerd_poll()
            await baseline()
            follow_t: list[float] = []
            poll_t: list[float] = []
            base_t: list[float] = []
            f_cpu, p_cpu, b_cpu = CpuMeter(), CpuMeter(), CpuMeter()
            for i in range(n):
                ctx.log(f"P1: run {i + 1}/{n}")
                with CpuMeter(runnerd=daemon.pid) as m:
                    follow_t.append(await runnerd_follow())
                f_cpu.add(m)
                with CpuMeter() as m:
                    base_t.append(await baseline())
                b_cpu.add(m)
                with CpuMeter(runnerd=daemon.pid) as m:
                    poll_t.append(await runnerd_poll())
                p_cpu.add(m)
                with CpuMeter() as m:
                    base_t.append(await baseline())
                b_cpu.add(m)
    finally:
        await direct.close()
        daemon.close()
        remove_bench_containers()

    b = mean(base_t)
    for label, times in (
        ("P1 per-run overhead (follow logs)", follow_t),
        ("P1 per-run overhead (poll 5 ms)", poll_t),
    ):
        ratio = mean(times) / b
        result.rows.append(
            Row(label, f"{ms(mean(times))}/run", f"{ms(b)}/run", ratio, GOAL, ratio <= LIMIT)
        )
        result.details.append(
            f"{label}: {n} runs, mean {ms(mean(times))}, median {ms(percentile(times, 50))}, "
            f"max {ms(max(times))}; mean overhead over the baseline "
            f"{ms(mean(times) - b)} per run ({fmt_ratio(ratio)})."
        )
    result.details.append(
        "CPU per run — runnerd, following: "
        + f_cpu.per_run(n)
        + "; runnerd, polling: "
        + p_cpu.per_run(n)
        + "; baseline: "
        + b_cpu.per_run(2 * n)
        + "."
    )
    result.details.append(
        f"Baseline (aiodocker create/start/wait/logs/remove): {len(base_t)} runs, mean "
        f"{ms(b)}, median {ms(percentile(base_t, 50))}, max {ms(max(base_t))}."
    )
    return result
