"""P8 dashboard: every page of the web dashboard (#13) timed with 1,000,000 runs
stored, seeded offline as in P5, against the same pages with 1,000 runs."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from tests.dashboard import Dashboard

from .common import (
    UNREACHABLE_ENGINE,
    Api,
    Context,
    Daemon,
    FigureResult,
    Row,
    ms,
    percentile,
    seed_history,
    seed_runs,
    session,
    template_run,
)
from .p5_history import sample_ids

TITLE = "dashboard"
GOAL = "every page p99 ≤ 50 ms at 1,000,000 runs"
PAGE_P99_LIMIT = 0.050
SMALL = 1_000
OTHER_RUNNERS = 9  # besides the big one, each with a few runs of its own
OTHER_RUNS = 5
PENDING = 5  # pending runs: the overview's active runs (the engine is unreachable)

METHOD = (
    "The world the pages show: 10 runners, one of them with the big history (seeded "
    "offline as in P5: rows copied from a run queued through runnerd's own "
    "`Store.create_run`, one run a second ending now, 1 in 20 `failed`), the 9 others "
    f"with {OTHER_RUNS} runs each; {PENDING} pending runs (the overview's active runs: the "
    "daemon runs with an engine it cannot reach, so they stay pending and no container "
    "competes for the CPU); the big runner has two env variables, a retry policy, an "
    "`on_failure` chain and a schedule, two other runners a schedule each; one container "
    "registry. One dashboard user logs in once through `POST /ui/login` (a session "
    "cookie, as a browser) and GETs each page sequentially (10 warm-ups, then N timed, "
    "the whole body read): the overview `/ui/` (its 24 h figures cover the last 86,400 "
    "runs at the full size), `/ui/runners`, the big runner's page (first page of its "
    "history and chart of its last 50 runs), the same with `?before=` a run id at a "
    "random depth, and with `?status=failed`, a run page at a random depth (seeded runs "
    "have no log, so its log part is empty), and `/ui/container_registries`. Every "
    "answer must be 200 and hold its page's table or element id (e.g. `table#runs`), so "
    "a broken page cannot look fast. The baseline is the same daemon and pages with "
    "1,000 runs in the big history, in the same run before the rest is seeded; ratio = "
    "p99 at the full size ÷ p99 at 1,000. Goal (absolute): every page p99 ≤ 50 ms with "
    "1,000,000 runs stored."
)


@dataclass
class Page:
    label: str
    marks: tuple[str, ...]  # what the body must hold (ids of the DOM contract)


PAGES = {
    "overview": Page("overview /ui/", ('id="totals"', 'id="active-runs"')),
    "runners": Page("runners /ui/runners", ('id="runners"',)),
    "runner": Page("runner page, first page", ('id="runs"', 'id="runs-chart"')),
    "before": Page("runner page, before= at a random depth", ('id="runs"',)),
    "failed": Page("runner page, status=failed", ('id="runs"',)),
    "run": Page("run page at a random depth", ('id="run-status"',)),
    "registries": Page("container registries", ('id="registries"',)),
}


@dataclass
class World:
    big: str  # the runner with the big history
    others: list[str]


async def build_world(daemon: Daemon) -> World:
    """Runners, settings, schedules and a registry through the API (daemon running)."""
    async with session() as http:
        api = Api(http, daemon)
        others = [await api.create_runner("true") for _ in range(OTHER_RUNNERS)]
        big = await api.create_runner(
            "true",
            retry_policy={"max_retries": 2, "backoff_seconds": 10},
            on_failure=[others[0]],
        )
        for key, val in (("DATABASE_URL", "postgres://bench@db/bench"), ("TOKEN", "s3cret")):
            await api.ok(
                "POST", f"/v1/runners/{big}/env_variables", {"env_key": key, "env_val": val}
            )
        await api.create_schedule(big, "*/5 * * * *")
        await api.create_schedule(others[1], "0 3 * * *", timezone="Europe/Paris")
        await api.create_schedule(others[2], "@every 1h")
        await api.ok(
            "POST",
            "/v1/container_registries",
            {"name": "bench", "host": "registry.example.com", "username": "u", "password": "pw"},
        )
    return World(big, others)


async def seed_world(daemon: Daemon, world: World) -> dict[str, object]:
    """The small history (daemon stopped): every runner's runs and the pending ones;
    the big runner's template row, for seeding the rest later."""
    secret = daemon.data_dir / "secret.key"
    big_template = await template_run(daemon.db_path, world.big, secret)
    for rid in world.others:
        template = await template_run(daemon.db_path, rid, secret)
        await asyncio.to_thread(seed_runs, daemon.db_path, template, OTHER_RUNS, completed=True)
    await asyncio.to_thread(seed_runs, daemon.db_path, big_template, SMALL, completed=True)
    await asyncio.to_thread(seed_runs, daemon.db_path, big_template, PENDING, completed=False)
    return big_template


def count_pending(db_path: Path) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM runs WHERE status = 'pending'").fetchone()[0])


Measure = dict[str, list[float] | str]  # a page's times, or what was wrong with it


async def measure(
    ctx: Context, daemon: Daemon, world: World, n: int
) -> tuple[Measure, dict[str, int]]:
    """Each page's times (or the reason it failed), and its body's size."""
    ids = sample_ids(daemon.db_path, world.big, 500)
    rnd = random.Random(13)
    runner = f"/ui/runners/{world.big}"
    paths = {
        "overview": lambda: "/ui/",
        "runners": lambda: "/ui/runners",
        "runner": lambda: runner,
        "before": lambda: f"{runner}?before={rnd.choice(ids)}",
        "failed": lambda: f"{runner}?status=failed",
        "run": lambda: f"{runner}/runs/{rnd.choice(ids)}",
        "registries": lambda: "/ui/container_registries",
    }
    out: Measure = {}
    sizes: dict[str, int] = {}
    async with Dashboard(daemon.url) as ui:
        r = await ui.login(daemon.key)
        if r.status != 303:
            raise RuntimeError(f"POST /ui/login answered {r.status}, not 303")
        for kind, page in PAGES.items():
            path_of = paths[kind]

            async def get() -> int:
                path = path_of()  # noqa: B023 - called within this iteration only
                status, body = await ui.get(path, allow_redirects=False)
                if status != 200:
                    raise AssertionError(f"GET {path} answered {status}")
                missing = [m for m in page.marks if m not in body]  # noqa: B023
                if missing:
                    raise AssertionError(f"GET {path}: no {', '.join(missing)} in the page")
                return len(body.encode())

            try:
                for _ in range(10):
                    sizes[kind] = await get()
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    await get()
                    times.append(time.perf_counter() - t0)
                out[kind] = times
            except AssertionError as e:
                ctx.log(f"P8: {page.label}: {e}")
                out[kind] = str(e)
    return out, sizes


async def run(ctx: Context) -> FigureResult:
    total = 20_000 if ctx.quick else 1_000_000
    n = 50 if ctx.quick else 200
    result = FigureResult("P8", TITLE, METHOD)
    daemon = Daemon(ctx, "p8", docker_url=UNREACHABLE_ENGINE)
    try:
        daemon.start()
        world = await build_world(daemon)
        daemon.stop()
        template = await seed_world(daemon, world)

        # -- baseline: 1,000 runs in the big history
        ctx.log(f"P8: {SMALL:,} runs: {n} GETs of each page")
        daemon.start()
        small, small_sizes = await measure(ctx, daemon, world, n)
        daemon.stop()

        # -- the full history
        seed_t = await seed_history(ctx, "P8", daemon.db_path, template, total - SMALL, SMALL)
        ctx.log(f"P8: {total:,} runs seeded in {seed_t:.0f} s; {n} GETs of each page")
        daemon.start()
        big, big_sizes = await measure(ctx, daemon, world, n)
        daemon.stop()
        pending = count_pending(daemon.db_path)
        db_mib = daemon.db_path.stat().st_size / (1 << 20)
    finally:
        daemon.close()

    size = f"{total:,}"
    for kind, page in PAGES.items():
        label = f"P8 {TITLE}: {page.label} ({size} runs)"
        b, r = small[kind], big[kind]
        if isinstance(r, str) or isinstance(b, str):
            error = r if isinstance(r, str) else f"at {SMALL:,} runs: {b}"
            result.rows.append(Row(label, "", "", None, "p99 ≤ 50 ms", None, error=error))
            continue
        b99, r99 = percentile(b, 99), percentile(r, 99)
        result.rows.append(
            Row(
                label,
                f"p50 {ms(percentile(r, 50))}, p99 {ms(r99)}",
                f"p50 {ms(percentile(b, 50))}, p99 {ms(b99)} ({SMALL:,} runs)",
                r99 / b99,
                "p99 ≤ 50 ms",
                r99 <= PAGE_P99_LIMIT,
            )
        )
    result.details.append(
        f"Seeded {total - SMALL:,} runs in {seed_t:.0f} s; the database is {db_mib:.0f} MiB. "
        f"{n} timed GETs of each page at each size; {pending} runs still pending at the end "
        f"(of {PENDING} seeded)."
    )
    for kind, page in PAGES.items():
        r, b = big[kind], small[kind]
        if isinstance(r, str) or isinstance(b, str):
            continue
        result.details.append(
            f"{page.label}: max {ms(max(r))}, {big_sizes[kind] / 1024:.1f} KiB with {size} "
            f"runs; max {ms(max(b))}, {small_sizes[kind] / 1024:.1f} KiB with {SMALL:,}."
        )
    return result
