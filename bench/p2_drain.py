"""P2 drain throughput: a burst of queued runs of `true` at max_concurrent_runs 8,
against aiodocker with a semaphore of 8."""

from __future__ import annotations

import asyncio
import time

from .common import (
    Api,
    Context,
    CpuMeter,
    Daemon,
    DirectEngine,
    FigureResult,
    Row,
    count_runs,
    remove_bench_containers,
    session,
)

TITLE = "drain throughput"
GOAL = "≥ 1.0×"
LIMIT = 1.0
CONCURRENCY = 8
TRIGGER_CLIENTS = 8  # concurrent POSTs while queueing the burst

METHOD = (
    "One daemon with `max_concurrent_runs = 8` and a runner of `true`. The clock starts, "
    "the runs are triggered as fast as 8 concurrent clients can POST them (the daemon "
    "starts draining while they arrive), and stops when the last one is recorded "
    "completed (progress is read from the daemon's database, read-only, every 20 ms, so "
    "the check puts no load on its API); every run must have succeeded. The baseline "
    "drives the same number of runs directly with aiodocker, at most 8 at a time "
    "(asyncio.Semaphore(8)): create, start, wait, read logs, remove, with runnerd's own "
    "container config. Ratio = runnerd runs/s ÷ baseline runs/s. One warm-up run each "
    "is not counted. Baseline and runnerd bursts alternate (baseline, runnerd, baseline, "
    "runnerd) and each side's throughput is the total of its two bursts."
)


async def run(ctx: Context) -> FigureResult:
    n = 16 if ctx.quick else 200
    half = n // 2
    result = FigureResult("P2", TITLE, METHOD)
    daemon = Daemon(ctx, "p2", max_concurrent_runs=CONCURRENCY)
    direct = DirectEngine()
    cmd = ["sh", "-c", "true"]
    try:
        daemon.start()
        async with session() as http:
            api = Api(http, daemon)
            runner_id = await api.create_runner("true")

            async def runnerd_burst(count: int) -> float:
                before = count_runs(daemon.db_path, "status IN ('succeeded', 'failed')")
                sem = asyncio.Semaphore(TRIGGER_CLIENTS)

                async def one() -> None:
                    async with sem:
                        await api.trigger(runner_id)

                t0 = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(count)))
                while True:
                    done = count_runs(daemon.db_path, "status IN ('succeeded', 'failed')")
                    if done - before >= count:
                        break
                    await asyncio.sleep(0.02)
                elapsed = time.perf_counter() - t0
                return elapsed

            async def baseline_burst(count: int) -> float:
                sem = asyncio.Semaphore(CONCURRENCY)

                async def one() -> None:
                    async with sem:
                        code = await direct.run(cmd)
                        if code != 0:
                            raise RuntimeError(f"baseline container exited {code}")

                t0 = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(count)))
                return time.perf_counter() - t0

            await runnerd_burst(1)
            await baseline_burst(1)
            base_t = run_t = 0.0
            r_cpu, b_cpu = CpuMeter(), CpuMeter()
            for i, size in enumerate((half, n - half)):
                ctx.log(f"P2: burst {i + 1}/2 of {size} runs: baseline")
                with CpuMeter() as m:
                    base_t += await baseline_burst(size)
                b_cpu.add(m)
                ctx.log(f"P2: burst {i + 1}/2 of {size} runs: runnerd")
                with CpuMeter(runnerd=daemon.pid) as m:
                    run_t += await runnerd_burst(size)
                r_cpu.add(m)
            failed = count_runs(daemon.db_path, "status != 'succeeded'")
            if failed:
                raise RuntimeError(f"{failed} runnerd runs did not succeed")
    finally:
        await direct.close()
        daemon.close()
        remove_bench_containers()

    r_tp, b_tp = n / run_t, n / base_t
    ratio = r_tp / b_tp
    result.rows.append(
        Row(
            f"P2 {TITLE} ({n} runs, 8 at a time)",
            f"{r_tp:.2f} runs/s",
            f"{b_tp:.2f} runs/s",
            ratio,
            GOAL,
            ratio >= LIMIT,
        )
    )
    result.details.append(
        f"{n} runs each side in two bursts: runnerd {run_t:.1f} s in all "
        f"({run_t / n * 1000:.0f} ms/run), baseline {base_t:.1f} s "
        f"({base_t / n * 1000:.0f} ms/run)."
    )
    result.details.append(
        f"CPU, runnerd side: {r_cpu.summary()}; baseline side: {b_cpu.summary()}."
    )
    return result
