"""P3 trigger acceptance: POST …/runs from concurrent clients with execution
paused, against a bare aiohttp handler that parses the same JSON."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from .common import (
    UNREACHABLE_ENGINE,
    Api,
    Context,
    CpuMeter,
    Daemon,
    FigureResult,
    Row,
    ms,
    percentile,
    session,
)

TITLE = "trigger acceptance"
GOAL = "≥ 0.6×; p99 ≤ 15 ms"
RATIO_LIMIT = 0.6
P99_LIMIT = 0.015
CLIENTS = 32
BODY = json.dumps(
    {
        "env_variables": [
            {"env_key": "BENCH", "env_val": "1"},
            {"env_key": "TRIGGERED_BY", "env_val": "bench"},
        ]
    }
)

METHOD = (
    "Execution is paused by starting the daemon with an engine it cannot reach "
    '(`[docker] url = "unix:///nonexistent/…"`): triggers are accepted and queued, runs '
    "stay pending, no container is made. 32 concurrent clients (one aiohttp session, 32 "
    "connections kept alive, in the bench process) POST `…/runs` with a two-variable "
    "`env_variables` body in a closed loop, each sending its next request as soon as the "
    "last is answered; every answer must be 200. The baseline is a bare aiohttp server in "
    "a separate process (`bench/bare_server.py`) whose handler parses the same JSON body "
    "and answers 200 with a small JSON run. Each side gets a 1 s warm-up, then the sides "
    "alternate in rounds (baseline, runnerd, …); req/s counts the answers of all rounds, "
    "and p50/p99 are over every request's latency. Ratio = runnerd req/s ÷ bare req/s. "
    "The client and the server under test share the 2 cores, so with the fast bare server "
    "the client is part of the limit: the ratio errs on runnerd's side."
)


async def load(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], seconds: float
) -> tuple[int, list[float]]:
    """(answers, latencies) of CLIENTS closed-loop clients over `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    errors: list[str] = []

    async def client() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with http.post(url, data=BODY, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors.append(f"{resp.status}")
                    return
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    if errors:
        raise RuntimeError(f"{len(errors)} requests were not answered 200 (e.g. {errors[0]})")
    return len(latencies), latencies


class BareServer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_server"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.search(r"listening on (http://\S+)", line)
        if not m:
            self.close()
            raise RuntimeError(f"the bare server did not start: {line!r}")
        self.url = m.group(1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def run(ctx: Context) -> FigureResult:
    rounds, seconds = (1, 2.0) if ctx.quick else (2, 5.0)
    result = FigureResult("P3", TITLE, METHOD)
    daemon = Daemon(ctx, "p3", docker_url=UNREACHABLE_ENGINE)
    bare: BareServer | None = None
    try:
        daemon.start()
        bare = BareServer()
        async with session(limit=CLIENTS) as http:
            api = Api(http, daemon)
            runner_id = await api.create_runner("true")
            r_url = f"{daemon.url}/v1/runners/{runner_id}/runs"
            b_url = f"{bare.url}/v1/runners/{runner_id}/runs"
            await load(http, b_url, api.json_headers, 1.0)
            await load(http, r_url, api.json_headers, 1.0)
            r_n = b_n = 0
            r_lat: list[float] = []
            b_lat: list[float] = []
            r_cpu, b_cpu = CpuMeter(), CpuMeter()
            for i in range(rounds):
                ctx.log(
                    f"P3: round {i + 1}/{rounds}: bare server, then runnerd, {seconds:.0f} s each"
                )
                with CpuMeter(bare_server=bare.proc.pid) as m:
                    n, lat = await load(http, b_url, api.json_headers, seconds)
                b_cpu.add(m)
                b_n, b_lat = b_n + n, b_lat + lat
                with CpuMeter(runnerd=daemon.pid) as m:
                    n, lat = await load(http, r_url, api.json_headers, seconds)
                r_cpu.add(m)
                r_n, r_lat = r_n + n, r_lat + lat
            pending = (await api.ok("GET", f"/v1/runners/{runner_id}/runs?limit=1"))["runs"]
            if not pending or pending[0]["status"] != "pending":
                raise RuntimeError(f"runs did not stay pending: {pending}")
    finally:
        if bare is not None:
            bare.close()
        daemon.close()

    total = rounds * seconds
    r_rps, b_rps = r_n / total, b_n / total
    ratio = r_rps / b_rps
    r_p99, b_p99 = percentile(r_lat, 99), percentile(b_lat, 99)
    result.rows.append(
        Row(
            f"P3 {TITLE} ({CLIENTS} clients)",
            f"{r_rps:.0f} req/s, p99 {ms(r_p99)}",
            f"{b_rps:.0f} req/s, p99 {ms(b_p99)}",
            ratio,
            GOAL,
            ratio >= RATIO_LIMIT and r_p99 <= P99_LIMIT,
        )
    )
    result.details.append(
        f"runnerd: {r_n} triggers in {total:.0f} s = {r_rps:.0f} req/s; latency p50 "
        f"{ms(percentile(r_lat, 50))}, p99 {ms(r_p99)}, max {ms(max(r_lat))}. "
        f"Ratio {'met' if ratio >= RATIO_LIMIT else 'missed'} (≥ 0.6×), p99 "
        f"{'met' if r_p99 <= P99_LIMIT else 'missed'} (≤ 15 ms)."
    )
    result.details.append(
        f"bare aiohttp: {b_n} requests in {total:.0f} s = {b_rps:.0f} req/s; latency p50 "
        f"{ms(percentile(b_lat, 50))}, p99 {ms(b_p99)}, max {ms(max(b_lat))}."
    )
    result.details.append(
        f"CPU while loading runnerd: {r_cpu.summary()}; while loading "
        f"the bare server: {b_cpu.summary()}."
    )
    result.details.append(
        f"With {CLIENTS} clients always waiting, mean latency ≈ {CLIENTS} ÷ throughput "
        f"(Little's law): a p99 ≤ 15 ms at this concurrency needs roughly ≥ "
        f"{CLIENTS / P99_LIMIT:.0f} req/s."
    )
    return result
