"""P5 history: 1,000,000 runs in the database, seeded offline; list pages, get,
trigger latencies and daemon start-up, against the same daemon with 1,000 runs."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable

from .common import (
    UNREACHABLE_ENGINE,
    Api,
    Context,
    Daemon,
    FigureResult,
    Row,
    mean,
    ms,
    percentile,
    seed_history,
    seed_runs,
    session,
    template_run,
)

TITLE = "history"
GOAL = "list p99 ≤ 5 ms; start ≤ 3 s"
LIST_P99_LIMIT = 0.005
START_LIMIT = 3.0
SMALL = 1_000
STARTS = 3  # start-ups timed at each size; the median counts

METHOD = (
    "One runner; its history is seeded offline with sqlite3 into the stopped daemon's "
    "database: every row is a copy of a run first queued through runnerd's own "
    "`Store.create_run` (so `env` holds the store's encrypted `[]`), with a fresh id and "
    "times, 19 in 20 `succeeded` and 1 in 20 `failed`; the database is checkpointed and "
    "not ANALYZEd (as a live one would be). The daemon runs with an engine it cannot reach, "
    "so triggered runs stay pending and no container competes for the CPU. One client "
    "sends each request kind sequentially (10 warm-ups, then N timed): the first page of "
    "the runner's runs (`GET …/runs`, default limit 50); `before=` pages from run ids at "
    "random depths of the history; `GET` of a run at a random depth; and `POST …/runs`. "
    'Start-up is the time from spawning `runnerd serve` to its "listening on" log line '
    "(median of 3). The baseline is the same daemon and requests with 1,000 runs of "
    "history, measured in the same run before the rest is seeded; the ratio is p99 at the "
    "full size ÷ p99 at 1,000 runs (start-up: median ÷ median), so 1.0× means the history "
    "costs nothing. The goals are absolute: list p99 ≤ 5 ms (first page and `before=`), "
    "start-up ≤ 3 s. The runs the timed triggers queued are then recorded failed offline, "
    "and the daemon is restarted with the real engine to time sequential runs of `true` "
    "(trigger → completed, polling every 5 ms) at each size: what a large history does to "
    "the scheduler (no goal in the issue)."
)

Measure = dict[str, list[float]]


async def measure(ctx: Context, daemon: Daemon, runner_id: str, ids: list[str], n: int) -> Measure:
    out: Measure = {}
    async with session(limit=1) as http:
        api = Api(http, daemon)
        base = f"/v1/runners/{runner_id}/runs"
        rnd = random.Random(7)

        async def timed(kind: str, call: Callable[[], Awaitable[object]]) -> None:
            for _ in range(10):
                await call()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                await call()
                times.append(time.perf_counter() - t0)
            out[kind] = times

        async def first_page() -> None:
            data = await api.ok("GET", base)
            assert len(data["runs"]) == 50, len(data["runs"])

        async def before_page() -> None:
            await api.ok("GET", f"{base}?before={rnd.choice(ids)}")

        async def get_run() -> None:
            await api.ok("GET", f"{base}/{rnd.choice(ids)}")

        async def trigger() -> None:
            await api.trigger(runner_id)

        for kind, call in (
            ("list", first_page),
            ("before", before_page),
            ("get", get_run),
            ("trigger", trigger),
        ):
            await timed(kind, call)
    return out


def sample_ids(db_path, runner_id: str, k: int) -> list[str]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        lo, hi = db.execute(
            "SELECT min(seq), max(seq) FROM runs WHERE runner_id = ?", (runner_id,)
        ).fetchone()
        seqs = random.Random(11).sample(range(lo, hi + 1), min(k * 2, hi - lo + 1))
        marks = ",".join("?" for _ in seqs)
        rows = db.execute(f"SELECT id FROM runs WHERE seq IN ({marks})", seqs).fetchall()
    return [r[0] for r in rows][:k]


def settle_pending(db_path) -> int:
    """The measured triggers left pending runs: record them failed/canceled
    (offline, daemon stopped), so no later start executes them."""
    with sqlite3.connect(db_path) as db:
        now = int(time.time() * 1000)
        return db.execute(
            "UPDATE runs SET status = 'failed', failure_reason = 'canceled', error = 'bench',"
            " completed_at = ?, updated_at = ? WHERE status = 'pending'",
            (now, now),
        ).rowcount


async def run_latency(ctx: Context, daemon: Daemon, runner_id: str, k: int) -> list[float]:
    """Trigger → completed of `k` sequential runs of `true`, with the real engine
    (polling the run every 5 ms); the daemon is restarted against the engine."""
    daemon.docker_url = None
    daemon.write_config()
    daemon.start()
    try:
        async with session() as http:
            api = Api(http, daemon)
            times = []
            for i in range(k + 1):  # the first is a warm-up
                t0 = time.perf_counter()
                run = await api.trigger(runner_id)
                done = await api.wait_completed(runner_id, run["id"], interval=0.005)
                if done["status"] != "succeeded":
                    raise RuntimeError(f"a run of `true` ended {done['status']}: {done}")
                if i:
                    times.append(time.perf_counter() - t0)
        return times
    finally:
        daemon.stop()
        daemon.remove_containers()
        daemon.docker_url = UNREACHABLE_ENGINE
        daemon.write_config()


def timed_starts(daemon: Daemon) -> list[float]:
    starts = []
    for _ in range(STARTS):
        starts.append(daemon.start())
        daemon.stop()
    return starts


async def run(ctx: Context) -> FigureResult:
    total = 20_000 if ctx.quick else 1_000_000
    n = 100 if ctx.quick else 200
    k = 3 if ctx.quick else 10
    result = FigureResult("P5", TITLE, METHOD)
    daemon = Daemon(ctx, "p5", docker_url=UNREACHABLE_ENGINE)
    try:
        daemon.start()
        async with session() as http:
            runner_id = await Api(http, daemon).create_runner("true")
        daemon.stop()
        template = await template_run(daemon.db_path, runner_id, daemon.data_dir / "secret.key")

        # -- baseline: 1,000 runs of history
        await asyncio.to_thread(seed_runs, daemon.db_path, template, SMALL, completed=True)
        ctx.log(f"P5: {SMALL} runs: start-ups and {n} requests of each kind")
        small_starts = timed_starts(daemon)
        daemon.start()
        small = await measure(ctx, daemon, runner_id, sample_ids(daemon.db_path, runner_id, 500), n)
        daemon.stop()
        settle_pending(daemon.db_path)
        small["run"] = await run_latency(ctx, daemon, runner_id, k)

        # -- the full history
        seed_t = await seed_history(ctx, "P5", daemon.db_path, template, total - SMALL, SMALL)
        ctx.log(f"P5: {total:,} runs seeded in {seed_t:.0f} s; start-ups and requests")
        big_starts = timed_starts(daemon)
        daemon.start()
        big = await measure(ctx, daemon, runner_id, sample_ids(daemon.db_path, runner_id, 500), n)
        daemon.stop()
        settle_pending(daemon.db_path)
        ctx.log(f"P5: {k} runs of `true` with {total:,} runs of history")
        big["run"] = await run_latency(ctx, daemon, runner_id, k)
        db_mib = daemon.db_path.stat().st_size / (1 << 20)
    finally:
        daemon.close()

    size = f"{total:,}"
    labels = {
        "list": ("list first page", True),
        "before": ("list before= page", True),
        "get": ("get run", False),
        "trigger": ("trigger", False),
    }
    for kind, (label, has_goal) in labels.items():
        b99, r99 = percentile(small[kind], 99), percentile(big[kind], 99)
        met = r99 <= LIST_P99_LIMIT if has_goal else None
        result.rows.append(
            Row(
                f"P5 {TITLE}: {label} ({size} runs)",
                f"p50 {ms(percentile(big[kind], 50))}, p99 {ms(r99)}",
                f"p50 {ms(percentile(small[kind], 50))}, p99 {ms(b99)} ({SMALL:,} runs)",
                r99 / b99,
                "p99 ≤ 5 ms" if has_goal else "(none)",
                met,
            )
        )
    b_run, r_run = mean(small["run"]), mean(big["run"])
    result.rows.append(
        Row(
            f"P5 {TITLE}: run of `true`, trigger → completed ({size} runs)",
            f"{ms(r_run)}/run",
            f"{ms(b_run)}/run ({SMALL:,} runs)",
            r_run / b_run,
            "(none)",
            None,
        )
    )
    b_start, r_start = percentile(small_starts, 50), percentile(big_starts, 50)
    result.rows.append(
        Row(
            f"P5 {TITLE}: start-up ({size} runs)",
            f"{r_start:.2f} s",
            f"{b_start:.2f} s ({SMALL:,} runs)",
            r_start / b_start,
            "≤ 3 s",
            r_start <= START_LIMIT,
        )
    )
    result.details.append(
        f"Seeded {total - SMALL:,} runs in {seed_t:.0f} s; the database is "
        f"{db_mib:.0f} MiB. {n} timed requests of each kind at each size."
    )
    result.details.append(
        "Start-ups (s): "
        + ", ".join(f"{s:.2f}" for s in big_starts)
        + f" with {size} runs; "
        + ", ".join(f"{s:.2f}" for s in small_starts)
        + f" with {SMALL:,}."
    )
    result.details.append(
        f"Run of `true` (daemon restarted with the real engine, {k} sequential runs, polled "
        f"every 5 ms): " + ", ".join(f"{x * 1000:.0f}" for x in big["run"]) + f" ms with "
        f"{size} runs; "
        + ", ".join(f"{x * 1000:.0f}" for x in small["run"])
        + f" ms with {SMALL:,}."
    )
    for kind, (label, _) in labels.items():
        result.details.append(
            f"{label}: max {ms(max(big[kind]))} with {size} runs, "
            f"{ms(max(small[kind]))} with {SMALL:,}."
        )
    return result
