"""P4 big logs: a container writing 1 GiB (256 MiB on Podman), captured byte-exact;
time against the engine's own plain read (`docker logs`) of the same output into a
file; the daemon's peak RSS growth."""

from __future__ import annotations

import asyncio
import hashlib
import time

from runnerd.engine import PODMAN, EngineKind
from runnerd.executor import container_name

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
    engine,
    human_bytes,
    remove_bench_containers,
    session,
)

TITLE = "big logs"
GOAL = "≥ 0.95×; ≤ 50 MiB"
RATIO_LIMIT = 0.95
RSS_LIMIT_KIB = 50 * 1024
LINE = 1024  # bytes per line, newline included: one engine message each
# The output, by engine. Podman's is a quarter of Docker's: its conmon writes every
# line into a k8s-file log and its API serves that file back several times slower
# than Docker's `local` log (256 MiB here: ~8 s to write, ~9 s to read back), and
# runnerd reads the output twice there, so 1 GiB would take minutes per side.
SIZES = {"docker": 1024 * MiB, "podman": 256 * MiB}
QUICK_SIZES = {"docker": 64 * MiB, "podman": 32 * MiB}


def size_for(kind: EngineKind, quick: bool) -> int:
    return (QUICK_SIZES if quick else SIZES)[kind.name]


def command(size: int) -> str:
    return f"L=$(head -c {LINE - 1} /dev/zero | tr '\\0' x); yes \"$L\" | head -c {size}"


METHOD_DOCKER = (
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
    "minus VmRSS before the trigger. Time after exit: the baseline also waits on "
    "runnerd's container (by its name, `runnerd-<run id>`) and notes when it exits; "
    "runnerd's time from then until the client has everything is what its reading costs "
    "once the output is complete."
)
METHOD = METHOD_DOCKER

METHOD_PODMAN = (
    "The same figure on Podman (`python -m bench --engine podman`), every side on the "
    "same Podman service: runnerd's daemon, the baseline's aiodocker and `docker logs` all "
    "talk to its Docker-compatible socket (DOCKER_HOST). The container is runnerd's for "
    "Podman: `k8s-file` log, never rotated (Podman has no `local` driver). On Podman "
    "runnerd reads the output twice: it follows the engine's stream live (Podman's follow "
    "stream drops and repeats data), and after the container exits it checks what it "
    "captured against a plain read of the engine's copy, repairing from it where they "
    "differ; runnerd's time includes that second read. The baseline is the engine's own "
    "plain read: create, start, wait, then `docker logs <id> > file` on the stopped "
    "container. Everything else (sizes and SHA-256 of the followed file, a plain `GET "
    "…/logs` and the baseline's file against Python's, RSS sampling, ratio, the time "
    "after exit) as for Docker's P4."
)


def method(kind: EngineKind) -> str:
    return METHOD_PODMAN if kind.name == PODMAN else METHOD_DOCKER


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


async def exited_after(direct: DirectEngine, name: str, t0: float, timeout: float) -> float:
    """Seconds from `t0` (perf_counter) to the exit of container `name`, once it
    exists (looked for every 20 ms up to `timeout`)."""
    deadline = time.perf_counter() + timeout
    while not await direct.exists(name):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"container {name} did not appear within {timeout:.0f} s")
        await asyncio.sleep(0.02)
    await direct.wait(name)
    return time.perf_counter() - t0


async def run(ctx: Context) -> FigureResult:
    kind = engine()
    podman = kind.name == PODMAN
    size = size_for(kind, ctx.quick)
    result = FigureResult("P4", TITLE, method(kind))
    if podman and not ctx.quick:
        result.size_note = (
            f"{human_bytes(size)} on Podman, against Docker's {human_bytes(SIZES['docker'])}: "
            "Podman's k8s-file log is several times slower to write and to read back than "
            "Docker's `local` log (see the baseline's MiB/s), and runnerd reads the output "
            "twice on Podman, so 1 GiB would take minutes a side on this machine."
        )
    ctx.log(f"P4: hashing the expected {human_bytes(size)}")
    want = await asyncio.to_thread(expected, size)
    work = ctx.tempdir("p4-out")
    daemon = Daemon(ctx, "p4", max_log_bytes=size + 16 * MiB)
    direct = DirectEngine()
    cmd = ["sh", "-c", command(size)]
    try:
        # -- baseline: the engine alone, then its plain read (`docker logs`) into a file
        ctx.log(f"P4: baseline on {kind.label}, {human_bytes(size)}")
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
                base_ran = time.perf_counter() - t0
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
                    exited = asyncio.create_task(
                        exited_after(direct, container_name(run["id"]), t0, timeout=600)
                    )
                    try:
                        await api.follow_to_end(runner_id, run["id"], on_chunk=out.write)
                        done = await api.run(runner_id, run["id"])
                        run_t = time.perf_counter() - t0
                        exit_t = await asyncio.wait_for(exited, 30)
                    finally:
                        exited.cancel()
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
    how = "; runnerd reads it twice: live follow, then a check against a plain read"
    how = how if podman else ""
    result.rows.append(
        Row(
            f"P4 {TITLE} ({human_bytes(size)}, byte-exact: {'yes' if not wrong else 'NO'}{how})",
            f"{r_tp:.1f} MiB/s ({human_bytes(follow_n)} in {run_t:.1f} s), "
            f"RSS +{growth / 1024:.1f} MiB",
            f"{b_tp:.1f} MiB/s ({human_bytes(base_n)} in {base_t:.1f} s)",
            ratio,
            GOAL,
            met,
        )
    )
    after = run_t - exit_t
    base_read = base_t - base_ran
    result.details.append(
        f"runnerd: trigger → whole output followed → run succeeded in {run_t:.1f} s; its "
        f"container exited {exit_t:.1f} s after the trigger, so {after:.1f} s came after "
        f"the exit{' (the check against the plain read, and any repair)' if podman else ''}; "
        f"the stored log read back with a plain GET in {read_t:.1f} s "
        f"({size / MiB / read_t:.0f} MiB/s). Baseline: create/start/wait in {base_ran:.1f} s, "
        f"then `docker logs` into a file in {base_read:.1f} s "
        f"({base_n / MiB / base_read:.0f} MiB/s): {base_t:.1f} s in all."
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
            f"{size} bytes with sha256 {want[:16]}…, as generated in Python "
            f"(on {kind.label})."
        )
    return result
