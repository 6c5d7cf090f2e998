"""P4 big logs: a container writing 1 GiB, captured byte-exact; time against
`docker logs` of the same output into a file; the daemon's peak RSS growth."""

from __future__ import annotations

import asyncio
import hashlib
import time

from .common import (
    Api,
    Context,
    CpuMeter,
    Daemon,
    DirectEngine,
    FigureResult,
    MiB,
    Row,
    RssSampler,
    container_config,
    human_bytes,
    remove_bench_containers,
    session,
)

TITLE = "big logs"
GOAL = "≥ 0.9×; ≤ 50 MiB"
RATIO_LIMIT = 0.9
RSS_LIMIT_KIB = 50 * 1024
LINE = 1024  # bytes per line, newline included: one engine message each


def command(size: int) -> str:
    return f"L=$(head -c {LINE - 1} /dev/zero | tr '\\0' x); yes \"$L\" | head -c {size}"


METHOD = (
    f"The container runs `yes` with a {LINE}-byte line (1023 × `x` and a newline, made "
    "with head/tr) piped into `head -c SIZE`, so it writes exactly SIZE bytes to stdout, "
    f"one engine log message per line. runnerd (`max_log_bytes` raised above SIZE) is "
    "timed from the trigger until the client has the whole output: it follows "
    "`…/logs?follow=true` into a file until the daemon ends the stream, then `GET`s the "
    "run (must be `succeeded`). The baseline creates the same container directly "
    "(runnerd's config, but a `local` log big enough to keep all SIZE bytes), starts it, "
    "waits for it, and runs `docker logs <id> > file` on the kept container. Ratio = "
    "runnerd throughput ÷ baseline throughput, each the bytes delivered to the client per "
    "second (for a byte-exact capture: baseline time ÷ runnerd time). Byte-exactness: the size and "
    "SHA-256 of the followed file and of a second, plain `GET …/logs` (hashed while "
    "streaming) must equal those of the same bytes generated in Python; the baseline "
    "file is checked the same way. RSS growth: the daemon's VmRSS sampled every 20 ms "
    "from /proc (and VmHWM) from just before the trigger to the end of the plain GET, "
    "minus VmRSS before the trigger."
)


def expected(size: int) -> str:
    """SHA-256 of the SIZE bytes the container writes."""
    block = (b"x" * (LINE - 1) + b"\n") * (MiB // LINE)
    h = hashlib.sha256()
    full, rest = divmod(size, len(block))
    for _ in range(full):
        h.update(block)
    h.update(block[:rest])
    return h.hexdigest()


def file_digest(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


async def run(ctx: Context) -> FigureResult:
    size = 64 * MiB if ctx.quick else 1024 * MiB
    result = FigureResult("P4", TITLE, METHOD)
    ctx.log(f"P4: hashing the expected {human_bytes(size)}")
    want = await asyncio.to_thread(expected, size)
    work = ctx.tempdir("p4-out")
    daemon = Daemon(ctx, "p4", max_log_bytes=size + 16 * MiB)
    direct = DirectEngine()
    cmd = ["sh", "-c", command(size)]
    try:
        # -- baseline: the engine alone, then `docker logs` into a file
        ctx.log(f"P4: baseline, {human_bytes(size)}")
        base_file = work / "docker-logs.out"
        log_mib = size * 2 // MiB + 64  # room for the local driver's framing
        with CpuMeter() as base_cpu:
            t0 = time.perf_counter()
            cid = await direct.create(
                container_config(cmd, log_max_size=f"{log_mib}m", log_max_file="1")
            )
            try:
                await direct.start(cid)
                code = await direct.wait(cid)
                with open(base_file, "wb") as out:
                    proc = await asyncio.create_subprocess_exec(
                        "docker", "logs", cid, stdout=out, stderr=asyncio.subprocess.PIPE
                    )
                    _, err = await proc.communicate()
                base_t = time.perf_counter() - t0
            except BaseException:
                await direct.remove(cid)
                raise
        await direct.remove(cid)
        if code != 0 or proc.returncode != 0:
            raise RuntimeError(
                f"baseline: exit {code}, docker logs {proc.returncode}: {err.decode()[:300]}"
            )
        base_n, base_sha = await asyncio.to_thread(file_digest, str(base_file))
        base_file.unlink()

        # -- runnerd: trigger, follow the logs to their end, get the run
        ctx.log(f"P4: runnerd, {human_bytes(size)}")
        daemon.start()
        follow_file = work / "follow.out"
        async with session() as http:
            api = Api(http, daemon)
            runner_id = await api.create_runner(command(size))
            with RssSampler(daemon.pid) as rss:
                with open(follow_file, "wb") as out, CpuMeter(runnerd=daemon.pid) as run_cpu:
                    t0 = time.perf_counter()
                    run = await api.trigger(runner_id)
                    await api.follow_to_end(runner_id, run["id"], on_chunk=out.write)
                    done = await api.run(runner_id, run["id"])
                    run_t = time.perf_counter() - t0
                if done["status"] != "succeeded":
                    raise RuntimeError(f"the run ended {done['status']}: {done}")
                # the stored log, read back and hashed while it streams
                h = hashlib.sha256()
                got_n = 0
                t1 = time.perf_counter()
                async with http.get(
                    f"{daemon.url}/v1/runners/{runner_id}/runs/{run['id']}/logs",
                    headers=api.headers,
                ) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"GET logs answered {resp.status}")
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        h.update(chunk)
                        got_n += len(chunk)
                read_t = time.perf_counter() - t1
        follow_n, follow_sha = await asyncio.to_thread(file_digest, str(follow_file))
        follow_file.unlink()
    finally:
        await direct.close()
        daemon.close()
        remove_bench_containers()

    exact = {
        "followed": (follow_n, follow_sha),
        "GET logs": (got_n, h.hexdigest()),
        "docker logs": (base_n, base_sha),
    }
    wrong = [
        f"{k}: {n} bytes, sha256 {s[:12]}…" for k, (n, s) in exact.items() if n != size or s != want
    ]
    growth = rss.growth_kib
    # throughput: the bytes the client got per second (a lossy capture counts only
    # what arrived), over the baseline's
    r_tp, b_tp = follow_n / MiB / run_t, base_n / MiB / base_t
    ratio = r_tp / b_tp
    met = ratio >= RATIO_LIMIT and growth <= RSS_LIMIT_KIB and not wrong
    result.rows.append(
        Row(
            f"P4 {TITLE} ({human_bytes(size)}, byte-exact: {'yes' if not wrong else 'NO'})",
            f"{r_tp:.1f} MiB/s ({human_bytes(follow_n)} in {run_t:.1f} s), "
            f"RSS +{growth / 1024:.1f} MiB",
            f"{b_tp:.1f} MiB/s ({human_bytes(base_n)} in {base_t:.1f} s)",
            ratio,
            GOAL,
            met,
        )
    )
    result.details.append(
        f"runnerd: trigger → whole output followed → run succeeded in {run_t:.1f} s; the "
        f"stored log read back with a plain GET in {read_t:.1f} s "
        f"({size / MiB / read_t:.0f} MiB/s). Baseline: create/start/wait + `docker logs` "
        f"into a file in {base_t:.1f} s."
    )
    result.details.append(
        f"CPU, runnerd side: {run_cpu.summary()}. Baseline side: "
        f"{base_cpu.summary()} (the container's own CPU is not counted)."
    )
    result.details.append(
        f"Daemon VmRSS {rss.rss_before / 1024:.1f} MiB before the trigger, peak "
        f"{rss.peak_kib / 1024:.1f} MiB ({len(rss.samples)} samples): growth "
        f"{growth / 1024:.1f} MiB ({'met' if growth <= RSS_LIMIT_KIB else 'missed'}, ≤ 50 MiB)."
    )
    if wrong:
        result.details.append(
            f"NOT byte-exact (want {size} bytes, sha256 {want[:12]}…): " + "; ".join(wrong)
        )
    else:
        result.details.append(
            f"Byte-exact: the followed stream, the plain GET and `docker logs` each gave "
            f"{size} bytes with sha256 {want[:16]}…, as generated in Python."
        )
    return result
