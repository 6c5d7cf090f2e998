"""P6 deep queue: 100,000 pending runs accepted (seeded offline), then a fixed
sample drained on the engine; the daemon's memory while draining, against a
1,000-deep queue."""

from __future__ import annotations

import asyncio
import time

from .common import (
    Api,
    Context,
    Daemon,
    FigureResult,
    Row,
    RssSampler,
    count_runs,
    seed_runs,
    session,
    template_run,
)

TITLE = "deep queue"
GOAL = "RSS ≤ 1.10× of 1,000-deep"
RSS_RATIO_LIMIT = 1.10
BASE_DEPTH = 1_000
CONCURRENCY = 8

METHOD = (
    "A queue of pending runs of `true` is seeded offline with sqlite3 into a stopped "
    "daemon's database (rows copied from a run queued through runnerd's own "
    "`Store.create_run`). Draining all 100,000 would mean 100,000 containers (hours at "
    "this engine's ~0.3 s per container), so the daemon (`max_concurrent_runs = 8`, real "
    "engine) is started on the full queue and timed until a fixed sample of runs has "
    "completed (progress read from its database, read-only); it is then stopped and its "
    "containers removed. The daemon's VmRSS is sampled every 20 ms from /proc (and VmHWM) "
    "from the moment it listens until the sample is drained. The baseline is the same with "
    "a 1,000-deep queue, in the same run. Ratio = peak RSS with the deep queue ÷ peak RSS "
    "with 1,000: memory independent of queue length means ≈ 1.0× (goal: ≤ 1.10×). A second "
    "row compares how fast the sample drains at both depths (no goal in the issue)."
)


async def drain(ctx: Context, depth: int, sample: int) -> dict[str, float]:
    daemon = Daemon(ctx, f"p6-{depth}", max_concurrent_runs=CONCURRENCY)
    try:
        daemon.start()
        async with session() as http:
            runner_id = await Api(http, daemon).create_runner("true")
        daemon.stop()
        template = await template_run(daemon.db_path, runner_id, daemon.data_dir / "secret.key")
        t0 = time.perf_counter()
        await asyncio.to_thread(seed_runs, daemon.db_path, template, depth, completed=False)
        seed_t = time.perf_counter() - t0
        ctx.log(f"P6: {depth:,} pending runs seeded in {seed_t:.1f} s; draining {sample}")
        daemon.start()
        with RssSampler(daemon.pid) as rss:
            t0 = time.perf_counter()
            while count_runs(daemon.db_path, "status IN ('succeeded', 'failed')") < sample:
                if daemon.proc is None or daemon.proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited:\n{daemon.log_tail()}")
                if time.perf_counter() - t0 > 900:
                    raise RuntimeError(f"{sample} runs did not drain within 900 s")
                await asyncio.sleep(0.02)
            drain_t = time.perf_counter() - t0
        failed = count_runs(daemon.db_path, "status = 'failed'")
        if failed:
            raise RuntimeError(f"{failed} runs failed while draining:\n{daemon.log_tail()}")
        return {
            "start_kib": rss.rss_before,
            "peak_kib": rss.peak_kib,
            "drain_s": drain_t,
            "seed_s": seed_t,
            "samples": len(rss.samples),
        }
    finally:
        daemon.close()


async def run(ctx: Context) -> FigureResult:
    deep, sample = (2_000, 16) if ctx.quick else (100_000, 200)
    result = FigureResult("P6", TITLE, METHOD)
    base = await drain(ctx, BASE_DEPTH, sample)
    big = await drain(ctx, deep, sample)
    ratio = big["peak_kib"] / base["peak_kib"]
    result.rows.append(
        Row(
            f"P6 {TITLE}: daemon RSS while draining ({deep:,} pending)",
            f"peak {big['peak_kib'] / 1024:.1f} MiB",
            f"peak {base['peak_kib'] / 1024:.1f} MiB ({BASE_DEPTH:,} pending)",
            ratio,
            GOAL,
            ratio <= RSS_RATIO_LIMIT,
        )
    )
    r_rate, b_rate = sample / big["drain_s"], sample / base["drain_s"]
    result.rows.append(
        Row(
            f"P6 {TITLE}: drain rate of the first {sample} ({deep:,} pending)",
            f"{r_rate:.2f} runs/s",
            f"{b_rate:.2f} runs/s ({BASE_DEPTH:,} pending)",
            r_rate / b_rate,
            "(none)",
            None,
        )
    )
    for depth, m in ((deep, big), (BASE_DEPTH, base)):
        result.details.append(
            f"{depth:,} pending (seeded in {m['seed_s']:.1f} s): VmRSS "
            f"{m['start_kib'] / 1024:.1f} MiB when listening, peak {m['peak_kib'] / 1024:.1f} "
            f"MiB while the first {sample} drained in {m['drain_s']:.1f} s "
            f"({int(m['samples'])} samples)."
        )
    result.size_note = (
        f"{deep:,} runs accepted (seeded); {sample} of them drained, not all: at ~0.3 s of "
        "engine time per container, draining 100,000 would take hours on this machine."
    )
    return result
