"""The scheduler and every background task never stop silently (issue 10): faults
injected under a real `runnerd serve` — the engine answering 500 or nonsense
(through the socket proxy), the database locked by the test's own connection or
on a full disk, the database damaged — and what the daemon does about each: back
off with a warning, keep the run owned, say why on /healthz, or exit non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, wait_until
from faults import (  # noqa: F401 (fixtures)
    daemon_errors,
    engine,
    proxy,
    start_proxied_daemon,
    wait_log_line,
)
from helpers_engine import GATE, EngineProbe, release
from socket_proxy import SocketProxy

BUSY_SECONDS = 10  # the daemon's SQLite busy timeout: a locked write fails after it
DEADLINE = 60  # generous: a locked write takes BUSY_SECONDS per attempt


async def healthz(api: Api) -> tuple[int, Any]:
    return await api.get("/healthz")


async def wait_health(api: Api, status: int, timeout: float = DEADLINE) -> Any:
    async def answered() -> Any:
        code, body = await healthz(api)
        return body if code == status else None

    return await wait_until(answered, timeout=timeout, what=f"/healthz to answer {status}")


@contextlib.contextmanager
def database_locked(daemon: Daemon) -> Iterator[sqlite3.Connection]:
    """Hold the write lock of the daemon's database from another connection, the
    way a backup script or a stuck sqlite3 shell would: its writes wait for the
    busy timeout, then fail with "database is locked". Reads (WAL) go on."""
    db = sqlite3.connect(daemon.data_dir / "runnerd.db", timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("ROLLBACK")
    finally:
        db.close()


def warnings_with(daemon: Daemon, text: str) -> list[str]:
    return [ln for ln in daemon.log_text().splitlines() if " WARNING " in ln and text in ln]


def error_lines(daemon: Daemon) -> list[str]:
    return [ln for ln in daemon.log_text().splitlines() if " ERROR " in ln]


async def containers_of(engine: EngineProbe, run_id: str) -> list[dict[str, Any]]:
    return await engine.for_run(run_id)


@pytest.fixture
def api_for(http: aiohttp.ClientSession) -> Callable[[Daemon], Api]:
    return lambda d: Api(http, d.url, d.key)


# -- the scheduler loop ---------------------------------------------------------------


async def test_scheduler_survives_engine_500_on_container_list(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    proxy: SocketProxy,
    api_for: Callable[[Daemon], Api],
) -> None:
    """Reconciling lists the daemon's containers; a 500 there used to end the loop
    for good (no run started again until a restart) with /healthz saying 200."""
    proxy.fail(r"GET \S*/containers/json", 500, "injected: list failed")
    daemon = await start_proxied_daemon()
    api = api_for(daemon)
    runner = await api.create_runner(run_command="echo ran")
    run = await api.trigger(runner["id"])

    body = await wait_health(api, 503)
    assert "could not list containers" in body["error"], body
    assert "retrying in" in body["error"], body
    await wait_log_line(daemon, "scheduler: cannot reconcile with the engine")
    warning = warnings_with(daemon, "cannot reconcile with the engine")[0]
    assert "injected: list failed" in warning and "retrying in" in warning, warning
    await wait_until(
        lambda: asyncio.sleep(0, proxy.failed >= 2),
        timeout=DEADLINE,
        what="the scheduler to try the list again",
    )
    assert (await api.run(runner["id"], run["id"]))["status"] == "pending"

    proxy.unfail()
    done = await api.wait_done(runner["id"], run["id"], timeout=DEADLINE)
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done
    body = await wait_health(api, 200)
    assert body["status"] == "ok"
    assert error_lines(daemon) == [], daemon_errors(daemon)
    assert daemon.proc is not None and daemon.proc.poll() is None


async def test_scheduler_survives_database_locked_while_starting_a_run(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    proxy: SocketProxy,
    engine: EngineProbe,
    api_for: Callable[[Daemon], Api],
) -> None:
    """The run's move to `running` fails on a locked database: the run stays
    pending, its created container is removed, /healthz says why, and once the
    lock is gone the run starts."""
    daemon = await start_proxied_daemon()
    api = api_for(daemon)
    runner = await api.create_runner(run_command="echo ran")
    proxy.hold(r"POST \S*/containers/create")
    run = await api.trigger(runner["id"])
    await wait_until(
        lambda: asyncio.sleep(0, proxy.held >= 1),
        timeout=DEADLINE,
        what="the container create to be held",
    )
    with database_locked(daemon):
        proxy.release()
        body = await wait_health(api, 503)
        assert run["id"] in body["error"] and "database is locked" in body["error"], body
        assert (await api.run(runner["id"], run["id"]))["status"] == "pending"
        assert await containers_of(engine, run["id"]) == []
        assert warnings_with(daemon, "stays pending: the database failed"), daemon_errors(daemon)
    done = await api.wait_done(runner["id"], run["id"], timeout=DEADLINE)
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done
    await wait_health(api, 200)
    assert error_lines(daemon) == [], daemon_errors(daemon)


# -- recording a run's result ----------------------------------------------------------


async def test_finish_run_on_a_locked_database_is_retried_and_holds_the_slot(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    engine: EngineProbe,
    api_for: Callable[[Daemon], Api],
) -> None:
    daemon = await start_proxied_daemon(max_concurrent_runs=1)
    api = api_for(daemon)
    gated = await api.create_runner(run_command=GATE)
    quick = await api.create_runner(run_command="echo next")
    first = await api.trigger(gated["id"])
    await api.wait_status(gated["id"], first["id"], "running")
    container = await engine.running_container_of(first["id"])
    second = await api.trigger(quick["id"])

    with database_locked(daemon):
        await release(engine, first["id"])
        await wait_log_line(
            daemon,
            f"run {first['id']}: recording it succeeded: the "
            "database failed: database is locked; retrying in",
            DEADLINE,
        )
        # Not recorded: still running, its slot held, its (exited) container kept.
        assert (await api.run(gated["id"], first["id"]))["status"] == "running"
        assert (await api.run(quick["id"], second["id"]))["status"] == "pending"
        state = (await engine.inspect(container["Id"]))["State"]
        assert state["Status"] == "exited", state

    done = await api.wait_done(gated["id"], first["id"], timeout=DEADLINE)
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done
    await engine.wait_gone(first["id"])
    done2 = await api.wait_done(quick["id"], second["id"], timeout=DEADLINE)
    assert done2["status"] == "succeeded", done2
    assert error_lines(daemon) == [], daemon_errors(daemon)


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MiB tmpfs for a daemon's data dir (needs root and mount permission)."""
    base = Path(tempfile.mkdtemp(prefix="runnerd-fulldb-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(base)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs over {base} to fill the disk (the test needs "
            f"root and mount permission): {mounted.stderr.strip()}"
        )
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", str(base)], capture_output=True)
        with contextlib.suppress(OSError):
            base.rmdir()


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte; the filler file, to delete to free it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


async def test_finish_run_on_a_full_disk_is_retried_until_space_frees(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    engine: EngineProbe,
    api_for: Callable[[Daemon], Api],
    small_disk: Path,
) -> None:
    data_dir = small_disk / "data"
    daemon = await start_proxied_daemon(
        f'[storage]\ndata_dir = "{data_dir}"\n', max_concurrent_runs=1
    )
    api = api_for(daemon)
    gated = await api.create_runner(run_command=GATE)
    quick = await api.create_runner(run_command="echo next")
    first = await api.trigger(gated["id"])
    await api.wait_status(gated["id"], first["id"], "running")
    container = await engine.running_container_of(first["id"])
    second = await api.trigger(quick["id"])

    # The WAL emptied, so the next commit must grow a file on the full disk.
    with sqlite3.connect(data_dir / "runnerd.db", timeout=30) as db:
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    filler = fill(small_disk)
    try:
        await release(engine, first["id"])
        await wait_log_line(
            daemon,
            f"run {first['id']}: recording it succeeded: the "
            "database failed: database or disk is full; retrying in",
            DEADLINE,
        )
        assert (await api.run(gated["id"], first["id"]))["status"] == "running"
        assert (await api.run(quick["id"], second["id"]))["status"] == "pending"
        assert (await engine.inspect(container["Id"]))["State"]["Status"] == "exited"
    finally:
        filler.unlink()

    done = await api.wait_done(gated["id"], first["id"], timeout=DEADLINE)
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done
    await engine.wait_gone(first["id"])
    done2 = await api.wait_done(quick["id"], second["id"], timeout=DEADLINE)
    assert done2["status"] == "succeeded", done2


# -- watching a run ------------------------------------------------------------------


async def test_engine_nonsense_on_wait_stops_the_container_before_the_run_is_recorded(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    proxy: SocketProxy,
    engine: EngineProbe,
    api_for: Callable[[Daemon], Api],
) -> None:
    """An exception inside Executor._follow while the container runs (here the
    engine's wait answers 200 without a StatusCode): the run used to be recorded
    `lost` with its container running on, outside every limit."""
    daemon = await start_proxied_daemon(max_concurrent_runs=1)
    api = api_for(daemon)
    gated = await api.create_runner(run_command=GATE, timeout_seconds=600)
    quick = await api.create_runner(run_command="echo next")
    proxy.fail(r"POST \S*/containers/\S+/wait", 200, "injected: not a wait answer")
    run = await api.trigger(gated["id"])
    done = await api.wait_done(gated["id"], run["id"], timeout=DEADLINE)
    proxy.unfail()
    assert (done["status"], done["failure_reason"]) == ("failed", "lost"), done
    assert "stopped it" in done["error"], done
    assert await containers_of(engine, run["id"]) == []  # killed and removed
    errors = [ln for ln in error_lines(daemon) if "cannot watch its container" in ln]
    assert len(errors) == 1 and run["id"] in errors[0] and "KeyError" in errors[0], daemon_errors(
        daemon
    )
    # The daemon goes on: the next run runs.
    nxt = await api.trigger(quick["id"])
    assert (await api.wait_done(quick["id"], nxt["id"]))["status"] == "succeeded"


# -- side loops --------------------------------------------------------------------


async def test_retention_survives_database_locked(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]], api_for: Callable[[Daemon], Api]
) -> None:
    daemon = await start_proxied_daemon(
        "[retention]\nmax_runs_per_runner = 1\nsweep_interval_seconds = 1\n"
    )
    api = api_for(daemon)
    runner = await api.create_runner(run_command="echo ran")
    with database_locked(daemon):
        await wait_log_line(
            daemon, "retention sweep failed: database is locked; trying again in", DEADLINE
        )
    # It keeps going: past the limit, the older run is deleted.
    older = await api.trigger(runner["id"])
    await api.wait_done(runner["id"], older["id"])
    newer = await api.trigger(runner["id"])
    await api.wait_done(runner["id"], newer["id"])

    async def deleted() -> bool:
        status, _ = await api.get(f"/v1/runners/{runner['id']}/runs/{older['id']}")
        return status == 404

    await wait_until(deleted, timeout=DEADLINE, what="retention to delete the older run")
    assert error_lines(daemon) == [], daemon_errors(daemon)


async def test_webhook_delivered_on_a_locked_database_is_recorded_once_it_clears(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]], api_for: Callable[[Daemon], Api]
) -> None:
    """A delivery whose outcome cannot be recorded used to be marked `failed` (or
    left pending and sent again): it is recorded `delivered` once it can be."""
    received: list[bytes] = []
    answer = asyncio.Event()

    async def hook(request: aiohttp.web.Request) -> aiohttp.web.Response:
        received.append(await request.read())
        await answer.wait()
        return aiohttp.web.Response(text="ok")

    app = aiohttp.web.Application()
    app.router.add_post("/hook", hook)
    runner_ = aiohttp.web.AppRunner(app)
    await runner_.setup()
    site = aiohttp.web.TCPSite(runner_, "127.0.0.1", 0)
    await site.start()
    port = runner_.addresses[0][1]
    try:
        daemon = await start_proxied_daemon('[webhooks]\nsecret = "a-test-secret-of-24-chars"\n')
        api = api_for(daemon)
        runner = await api.create_runner(
            run_command="echo ran", webhook_url=f"http://127.0.0.1:{port}/hook"
        )
        run = await api.trigger(runner["id"])
        await api.wait_done(runner["id"], run["id"])
        await wait_until(
            lambda: asyncio.sleep(0, len(received) == 1),
            timeout=DEADLINE,
            what="the webhook to arrive",
        )
        with database_locked(daemon):
            answer.set()
            await wait_log_line(
                daemon,
                f"run {run['id']}: recording its webhook delivered: "
                "the database failed: database is locked; retrying in",
                DEADLINE,
            )

        async def delivered() -> bool:
            return (await api.run(runner["id"], run["id"]))["webhook_status"] == "delivered"

        await wait_until(delivered, timeout=DEADLINE, what="the delivery to be recorded")
        assert len(received) == 1
        assert error_lines(daemon) == [], daemon_errors(daemon)
    finally:
        await runner_.cleanup()


# -- what no task survives ------------------------------------------------------------


def damage(db_path: Path) -> None:
    """Overwrite every page but the header page of the database with garbage, the
    way a failing disk or a stray `dd` would (the WAL emptied into it first)."""
    with sqlite3.connect(db_path, timeout=30) as db:
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        page = db.execute("PRAGMA page_size").fetchone()[0]
    size = db_path.stat().st_size
    with open(db_path, "r+b") as f:
        f.seek(page)
        f.write(b"\xff" * (size - page))
        f.flush()
        os.fsync(f.fileno())


async def test_damaged_database_brings_the_daemon_down_with_exit_1(
    start_proxied_daemon: Callable[..., Awaitable[Daemon]],
    engine: EngineProbe,
    api_for: Callable[[Daemon], Api],
) -> None:
    """No retry records a run in a damaged database: runnerd exits non-zero (for
    systemd to restart it, which then says what is wrong) with one ERROR line
    naming the task and the error, instead of running on unable to record."""
    daemon = await start_proxied_daemon()
    api = api_for(daemon)
    gated = await api.create_runner(run_command=GATE)
    run = await api.trigger(gated["id"])
    await api.wait_status(gated["id"], run["id"], "running")
    damage(daemon.data_dir / "runnerd.db")
    await release(engine, run["id"])
    assert daemon.proc is not None
    code = await asyncio.to_thread(daemon.proc.wait, DEADLINE)
    assert code == 1, daemon.log_text()
    errors = error_lines(daemon)
    assert len(errors) == 1, daemon_errors(daemon)
    assert "the scheduler stopped" in errors[0], errors
    assert "DatabaseError: database disk image is malformed" in errors[0], errors
    assert "restart" in errors[0], errors
