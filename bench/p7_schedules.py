"""P7 schedules: how late a schedule's fire makes its run (slot → run created), with
1 schedule, with 1 among 10,000 that are not due, and with 10,000 that all fire; the
daemon's CPU and memory holding 10,000 schedules against holding 1."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runnerd.models import now_ms

from .common import (
    Api,
    Context,
    CpuMeter,
    Daemon,
    FigureResult,
    Row,
    RssSampler,
    count_runs,
    cpu_seconds,
    percentile,
    session,
)
from .report import loadavg

TITLE = "schedules"
GOAL = "fire lateness p99 ≤ 50 ms with 10,000 schedules"
P99_LIMIT_MS = 50.0
CREATE_CONCURRENCY = 16  # schedules created in flight at once through the API
WATCH_INTERVAL = 0.005  # s between two looks of the watcher at the database
SETTLE_S = 30.0  # after a window, how long its last slots' runs may take to appear
# A runner whose image is absent, with image_pull_policy "never": each fired run fails
# at once with image_pull_failed (one image inspect), so no container loads the engine.
ABSENT_IMAGE = ("runnerd-bench/absent", "never-pulled")
# Where the not-due schedules' `0 0 1 <month> *` is counted (their zones differ, as
# users' would); the month is half a year away, so none is due during the figure.
ZONES = ("UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney")

METHOD = (
    "Each fire makes a run carrying the slot it was fired for (`scheduled_for`); its "
    "lateness is the run's `created_at` − `scheduled_for`, both integer milliseconds of "
    "the daemon's clock (the firing loop stamps `created_at` right before the fire's "
    "write), read from its database (read-only; WAL lets a reader in while it writes). A "
    "watcher thread in the bench also reads the new schedule runs every 5 ms and records "
    "when each was first visible: `committed` lateness (first seen − slot) adds the wait "
    "for the write and its commit, and up to 5 ms of polling: an upper bound. The "
    "runner's image is absent and its `image_pull_policy` is `never`: each fired run "
    "fails at once with `image_pull_failed` (one image inspect, no container), so the "
    "engine is not loaded and the daemon still takes every run to its end. Schedules are "
    f"created through the API, {CREATE_CONCURRENCY} requests in flight. Row A: one "
    "runner, one `@every 1s` schedule, its fires in a 60 s window. Row B: the same daemon "
    "after 9,999 schedules are added that are enabled but not due (`0 0 1 <month> *` half "
    "a year away, in five time zones), restarted (so it loads all 10,000 at start), the "
    "same 60 s window; ratio = p99 ÷ row A's p99 (with 60 fires, p99 is the latest one). "
    "Row C: a fresh daemon, 10,000 `@every 60s` schedules created evenly over a minute "
    "(each counts from its creation, so their slots are spread the same way: ~167 fires a "
    "second, every second), then every fire in the next full minute (one per schedule, "
    "after the last was created: no API load in it). Row C′ (no goal): the same created "
    "back to back, so each minute their slots come in a burst as long as the creation "
    "took, at the API's creation rate (a thundering herd: it shows where one event loop "
    "saturates). Row D: the daemon's CPU (/proc, CPU seconds per minute) and peak VmRSS "
    "(sampled every 20 ms, and VmHWM) during row B's window ÷ the same during row A's: "
    "both fire the one `@every 1s` schedule, so the ratio is what holding 9,999 more "
    "schedules costs. Each window's busiest second of daemon CPU (sampled every 0.1 s) "
    "shows whether its event loop, one core at most, was saturated. Goal: p99 ≤ 50 ms "
    "with 10,000 schedules (rows B and C)."
)


@dataclass(frozen=True)
class Fire:
    schedule_id: str
    scheduled_for: int  # ms: the slot
    created_at: int  # ms: the run's own created_at
    seen_at: int  # ms: when the watcher first saw the run committed

    @property
    def lateness_ms(self) -> int:
        return self.created_at - self.scheduled_for

    @property
    def committed_ms(self) -> int:
        return self.seen_at - self.scheduled_for


class FireWatch:
    """A thread reading the schedule runs a live daemon commits, every `interval` s
    (read-only, by their increasing seq), noting when each was first visible."""

    def __init__(self, db_path: Path, interval: float = WATCH_INTERVAL) -> None:
        self.db_path = db_path
        self.interval = interval
        self.fires: list[Fire] = []  # appended by the thread only
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="p7-watch", daemon=True)

    def __enter__(self) -> FireWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def seen(self, pick: Callable[[Fire], bool] = lambda f: True) -> list[Fire]:
        if self.error is not None:
            raise RuntimeError(f"the fire watcher failed: {self.error!r}")
        return [f for f in list(self.fires) if pick(f)]

    def _run(self) -> None:
        try:
            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
            try:
                self._watch(db)
            finally:
                db.close()
        except BaseException as e:  # noqa: BLE001 - reported to the figure by `seen`
            self.error = e

    def _watch(self, db: sqlite3.Connection) -> None:
        last = int(db.execute("SELECT coalesce(max(seq), 0) FROM runs").fetchone()[0])
        while not self._stop.wait(self.interval):
            try:
                rows = db.execute(
                    "SELECT seq, schedule_id, scheduled_for, created_at FROM runs"
                    " WHERE seq > ? AND trigger = 'schedule' ORDER BY seq",
                    (last,),
                ).fetchall()
            except sqlite3.OperationalError:  # busy for a moment (a checkpoint): look again
                continue
            seen = now_ms()
            for seq, schedule_id, scheduled_for, created_at in rows:
                self.fires.append(Fire(schedule_id, scheduled_for, created_at, seen))
                last = seq


class CpuTrace:
    """A thread sampling a process's CPU time every `interval` s: the busiest second
    shows whether the daemon's one event loop was saturated (a minute's average hides
    a few seconds' burst)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (monotonic s, CPU s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="p7-cpu", daemon=True)

    def __enter__(self) -> CpuTrace:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic(), cpu_seconds(self.pid)))
            except OSError:
                return
            if self._stop.wait(self.interval):
                return

    def busiest_second(self) -> float:
        """The most CPU seconds the process used in any 1 s span of the trace."""
        best, j = 0.0, 0
        for i, (t0, c0) in enumerate(self.samples):
            j = max(j, i)
            while j + 1 < len(self.samples) and self.samples[j + 1][0] - t0 <= 1.0:
                j += 1
            best = max(best, self.samples[j][1] - c0)
        return best


@dataclass
class Window:
    """The fires of the slots in [start, end) and what the daemon used meanwhile."""

    start: int
    end: int
    expected: int
    fires: list[Fire]
    cpu: CpuMeter
    rss: RssSampler
    trace: CpuTrace
    load: str  # the machine's load average when the window began (it is shared)

    @property
    def missing(self) -> int:
        return self.expected - len(self.fires)

    def p(self, q: float, committed: bool = False) -> float:
        values = [f.committed_ms if committed else f.lateness_ms for f in self.fires]
        return float(percentile([float(v) for v in values], q)) if values else float("nan")

    @property
    def cpu_per_minute(self) -> float:
        return self.cpu.used.get("runnerd", 0.0) / self.cpu.wall * 60

    @property
    def met(self) -> bool:
        return self.p(99) <= P99_LIMIT_MS and not self.missing

    def lateness(self) -> str:
        text = (
            f"p50 {self.p(50):.1f} ms, p99 {self.p(99):.1f} ms ({len(self.fires):,} fires; "
            f"committed p99 {self.p(99, committed=True):.1f} ms"
        )
        if self.missing:
            text += f"; **{self.missing:,} missing**"
        return text + ")"

    def detail(self, what: str) -> str:
        return (
            f"{what}: {len(self.fires):,} of {self.expected:,} fires in the "
            f"{(self.end - self.start) / 1000:.0f} s window; lateness p50 {self.p(50):.1f} ms, "
            f"p99 {self.p(99):.1f} ms, max {self.p(100):.1f} ms; committed p50 "
            f"{self.p(50, True):.1f} ms, p99 {self.p(99, True):.1f} ms, max "
            f"{self.p(100, True):.1f} ms; daemon CPU {self.cpu_per_minute:.2f} s/min "
            f"(busiest second {self.trace.busiest_second():.2f} s), peak "
            f"VmRSS {self.rss.peak_kib / 1024:.1f} MiB ({self.cpu.summary()}; load average "
            f"{self.load} at its start)."
        )


async def sleep_until(at_ms: int) -> None:
    await asyncio.sleep(max(0.0, (at_ms - now_ms()) / 1000))


async def measure(
    daemon: Daemon,
    watch: FireWatch,
    start: int,
    end: int,
    expected: int,
    pick: Callable[[Fire], bool],
) -> Window:
    """Meter the daemon from `start` to `end`, then wait (up to SETTLE_S) for the runs
    of the `expected` slots in [start, end) that `pick` selects."""
    await sleep_until(start)
    load = loadavg()
    with (
        CpuMeter(runnerd=daemon.pid) as cpu,
        RssSampler(daemon.pid) as rss,
        CpuTrace(daemon.pid) as trace,
    ):
        await sleep_until(end)

    def in_window(f: Fire) -> bool:
        return start <= f.scheduled_for < end and pick(f)

    deadline = time.monotonic() + SETTLE_S
    while len(fires := watch.seen(in_window)) < expected and time.monotonic() < deadline:
        if not daemon.alive():
            raise RuntimeError(f"the daemon exited:\n{daemon.log_tail()}")
        await asyncio.sleep(0.05)
    return Window(start, end, expected, fires, cpu, rss, trace, load)


async def first_fire(daemon: Daemon, watch: FireWatch, schedule_id: str, after: int) -> None:
    """Wait for a fire of `schedule_id` made after `after`: the loop has loaded."""
    deadline = time.monotonic() + 60
    while not watch.seen(lambda f: f.schedule_id == schedule_id and f.created_at >= after):
        if not daemon.alive():
            raise RuntimeError(f"the daemon exited:\n{daemon.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"schedule {schedule_id} did not fire within 60 s")
        await asyncio.sleep(0.02)


async def create_schedules(
    ctx: Context,
    api: Api,
    runner_id: str,
    specs: Sequence[tuple[str, str | None]],
    spread_s: float = 0.0,
) -> tuple[list[str], float]:
    """Create a schedule per (cron, timezone) through the API, CREATE_CONCURRENCY at a
    time (with `spread_s`, the i-th not before i × spread_s / len(specs) from the
    start: evenly over that time); their ids, and the seconds it took."""
    ids: list[str] = []
    todo = iter(enumerate(specs))
    t0 = time.perf_counter()
    step = spread_s / max(1, len(specs))

    async def worker() -> None:
        for i, (cron, zone) in todo:  # one shared iterator: each spec is taken once
            wait = t0 + i * step - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            fields = {"timezone": zone} if zone else {}
            ids.append(str((await api.create_schedule(runner_id, cron, **fields))["id"]))
            if len(ids) % 2_000 == 0:
                ctx.log(f"P7: {len(ids):,} schedules created")

    await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
    return ids, time.perf_counter() - t0


def not_due_cron() -> str:
    """Midnight on the 1st of the month half a year from now: never due in a figure."""
    month = (datetime.datetime.now(datetime.UTC).month + 5) % 12 + 1
    return f"0 0 1 {month} *"


async def create_runner(api: Api) -> str:
    name, tag = ABSENT_IMAGE
    return await api.create_runner(
        "true", image_name=name, image_tag=tag, image_pull_policy="never"
    )


@dataclass
class AmongMany:
    alone: Window  # row A
    among: Window  # row B
    create_s: float  # creating the n − 1 not-due schedules
    start_s: float  # the restart with n schedules: spawn → listening


async def one_among_many(ctx: Context, n: int, seconds: int) -> AmongMany:
    """Rows A, B and D: one `@every 1s` schedule alone, then among n − 1 not due."""
    daemon = Daemon(ctx, "p7-among")
    try:
        daemon.start()
        started = now_ms()
        async with session(limit=CREATE_CONCURRENCY) as http:
            api = Api(http, daemon)
            runner_id = await create_runner(api)
            every = str((await api.create_schedule(runner_id, "@every 1s"))["id"])

            def mine(f: Fire) -> bool:
                return f.schedule_id == every

            with FireWatch(daemon.db_path) as watch:
                await first_fire(daemon, watch, every, started)
                start = now_ms() + 1500
                ctx.log(f"P7: 1 schedule, {seconds} s window")
                alone = await measure(daemon, watch, start, start + seconds * 1000, seconds, mine)
            cron = not_due_cron()
            specs = [(cron, ZONES[i % len(ZONES)]) for i in range(n - 1)]
            _, create_s = await create_schedules(ctx, api, runner_id, specs)
        ctx.log(f"P7: {n - 1:,} not-due schedules created in {create_s:.1f} s; restarting")
        daemon.stop()
        start_s = daemon.start()
        started = now_ms()
        with FireWatch(daemon.db_path) as watch:
            await first_fire(daemon, watch, every, started)
            start = now_ms() + 1500
            ctx.log(f"P7: 1 among {n:,} schedules, {seconds} s window")
            among = await measure(daemon, watch, start, start + seconds * 1000, seconds, mine)
        return AmongMany(alone, among, create_s, start_s)
    finally:
        daemon.close()


@dataclass
class AllFiring:
    window: Window  # row C
    create_s: float
    overlap: bool  # the creation outlasted a period: some fired while others were created
    burst_s: float  # from the window's first slot to its last
    finished: int  # the window's runs already ended when its last one appeared

    @property
    def rate(self) -> float:
        """Fires per second during the burst."""
        return len(self.window.fires) / self.burst_s if self.burst_s else float("nan")


async def all_firing(ctx: Context, n: int, period: int, *, spread: bool) -> AllFiring:
    """Row C: n `@every <period>s` schedules, every fire in one full period. With
    `spread` they are created evenly over a period, so their slots are too (n / period
    fires a second); without, back to back (row C′: a burst at the API's creation
    rate each period)."""
    daemon = Daemon(ctx, "p7-spread" if spread else "p7-burst")
    try:
        daemon.start()
        async with session(limit=CREATE_CONCURRENCY) as http:
            api = Api(http, daemon)
            runner_id = await create_runner(api)
            first = now_ms()
            ids, create_s = await create_schedules(
                ctx,
                api,
                runner_id,
                [(f"@every {period}s", None)] * n,
                spread_s=period if spread else 0.0,
            )
        ctx.log(f"P7: {n:,} `@every {period}s` schedules created in {create_s:.1f} s")
        start = now_ms() + 200
        created = set(ids)
        with FireWatch(daemon.db_path) as watch:
            window = await measure(
                daemon,
                watch,
                start,
                start + period * 1000,
                n,  # any `period`-long window holds exactly one slot of each
                lambda f: f.schedule_id in created,
            )
        slots = [f.scheduled_for for f in window.fires]
        finished = count_runs(
            daemon.db_path, "trigger = 'schedule' AND status IN ('succeeded', 'failed')"
        )
        return AllFiring(
            window,
            create_s,
            overlap=start - first > period * 1000 + 200,
            burst_s=(max(slots) - min(slots)) / 1000 if slots else 0.0,
            finished=finished,
        )
    finally:
        daemon.close()


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


async def run(ctx: Context) -> FigureResult:
    n, seconds, period = (100, 10, 10) if ctx.quick else (10_000, 60, 60)
    result = FigureResult("P7", TITLE, METHOD)
    many = await one_among_many(ctx, n, seconds)
    alone, among = many.alone, many.among
    everyone = await all_firing(ctx, n, period, spread=True)
    burst = await all_firing(ctx, n, period, spread=False)

    base = f"p50 {alone.p(50):.1f} ms, p99 {alone.p(99):.1f} ms (1 schedule)"
    result.rows.append(
        Row(
            f"P7 {TITLE}: fire lateness, 1 `@every 1s` schedule",
            alone.lateness(),
            "–",
            None,
            f"p99 ≤ {P99_LIMIT_MS:.0f} ms",
            alone.met,
        )
    )
    result.rows.append(
        Row(
            f"P7 {TITLE}: fire lateness, 1 `@every 1s` among {n:,} schedules",
            among.lateness(),
            base,
            ratio(among.p(99), alone.p(99)),
            GOAL,
            among.met,
        )
    )
    result.rows.append(
        Row(
            f"P7 {TITLE}: fire lateness, {n:,} `@every {period}s` schedules, all firing "
            f"({n // period:,}/s)",
            everyone.window.lateness(),
            base,
            ratio(everyone.window.p(99), alone.p(99)),
            GOAL,
            everyone.window.met,
        )
    )
    result.rows.append(
        Row(
            f"P7 {TITLE}: fire lateness, {n:,} all firing in a burst ({burst.rate:,.0f}/s)",
            burst.window.lateness(),
            base,
            ratio(burst.window.p(99), alone.p(99)),
            "(none: a thundering herd, to show the limit)",
            None,
        )
    )
    result.rows.append(
        Row(
            f"P7 {TITLE}: daemon CPU holding {n:,} schedules (1 firing)",
            f"{among.cpu_per_minute:.2f} s/min",
            f"{alone.cpu_per_minute:.2f} s/min (1 schedule)",
            ratio(among.cpu_per_minute, alone.cpu_per_minute),
            "(none; issue: in proportion to what fires)",
            None,
        )
    )
    result.rows.append(
        Row(
            f"P7 {TITLE}: daemon peak RSS holding {n:,} schedules (1 firing)",
            f"{among.rss.peak_kib / 1024:.1f} MiB",
            f"{alone.rss.peak_kib / 1024:.1f} MiB (1 schedule)",
            ratio(among.rss.peak_kib, alone.rss.peak_kib),
            "(none; issue: in proportion to what fires)",
            None,
        )
    )
    result.details.append(alone.detail("A, 1 schedule"))
    result.details.append(
        among.detail(f"B, 1 among {n:,}")
        + f" The {n - 1:,} not-due schedules were created in {many.create_s:.1f} s "
        f"({(n - 1) / many.create_s:.0f}/s); the daemon then restarted with them "
        f"(spawn → listening) in {many.start_s:.2f} s."
    )
    for what, fired in ((f"C, {n:,} all firing", everyone), ("C′, the same in a burst", burst)):
        result.details.append(
            fired.window.detail(what)
            + f" They were created in {fired.create_s:.1f} s ({n / fired.create_s:.0f}/s), "
            f"so their slots came in a {fired.burst_s:.1f} s burst "
            f"({fired.rate:.0f} fires/s)"
            + (
                " (the creation outlasted a period: some fired while others were being created)"
                if fired.overlap
                else ""
            )
            + f"; {fired.finished:,} of the runs had ended when the window's last run appeared."
        )
    if ctx.quick:
        result.size_note = f"{n} schedules, {seconds} s windows, `@every {period}s` (quick)."
    return result
