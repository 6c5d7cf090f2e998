"""SIGTERM always ends a real runnerd process within its stop bound
(daemon.stop_bounds), whatever hangs: another process holding the database's
write lock, a shutdown step that raises or hangs, a side loop that swallows its
cancel, a log scan still running in a worker thread, an engine that does not
answer during start-up; and across many start/SIGTERM cycles under load no run is
lost or run twice. Exit status 0 means a clean stop, 3 (EXIT_FORCED) one that had
to cut a step short, and the daemon's last line says which.

Faults in runnerd's own code are injected with a sitecustomize module on the
daemon's PYTHONPATH (`inject`), which patches one step in the real process; every
such fault logs an "injected:" line, which the test waits for, so an injection
that no longer hits its target fails loudly instead of passing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, EngineUnderTest, wait_until, write_config
from faults import daemon_errors, proxy, wait_log_line  # noqa: F401
from helpers_engine import engine_api
from socket_proxy import SocketProxy

from runnerd import config as config_mod
from runnerd.daemon import EXIT_FORCED, stop_bounds

SEED = int(os.environ.get("RUNNERD_TEST_SEED", "20261201"))
# Start/SIGTERM cycles per engine. They hunt races in runnerd's own start and stop,
# the same code on both; on Podman (a cycle takes ~2 s there, ~0.7 s on Docker)
# each moment of the workload eight times proves the engine's side (reconcile,
# re-attach, containers left running) in a quarter of the time.
CYCLES_ON_DOCKER = 200
EACH_MOMENT_ON_PODMAN = 8
CYCLES_ENV = os.environ.get("RUNNERD_SHUTDOWN_CYCLES")  # both engines, when set
SLACK = 5.0  # past the daemon's own deadline: a loaded machine reaping the process


def bound(daemon: Daemon) -> float:
    """How long a stop of this daemon may take, from its own config."""
    return stop_bounds(config_mod.load(str(daemon.config_path))).deadline + SLACK


async def stop(daemon: Daemon) -> int:
    """SIGTERM; the exit status, or AssertionError when not exited within bound."""
    return await asyncio.to_thread(daemon.stop, signal.SIGTERM, bound(daemon))


def last_line(daemon: Daemon) -> str:
    lines = daemon.log_text().strip().splitlines()
    return lines[-1] if lines else ""


@pytest.fixture
def inject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Put `code` in a sitecustomize module that every runnerd started after this
    runs first."""

    def put(code: str) -> None:
        d = tmp_path / "inject"
        d.mkdir(exist_ok=True)
        (d / "sitecustomize.py").write_text(textwrap.dedent(code))
        monkeypatch.setenv(
            "PYTHONPATH",
            os.pathsep.join(p for p in (str(d), os.environ.get("PYTHONPATH", "")) if p),
        )

    return put


@contextlib.contextmanager
def write_lock(daemon: Daemon) -> Iterator[None]:
    """Hold runnerd.db's write lock from this process, as `runnerd keys create` or a
    backup tool holding a transaction would."""
    db = sqlite3.connect(daemon.data_dir / "runnerd.db", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


def uses_file(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    return False


def container_state(run_id: str) -> str:
    return engine_api.state(f"runnerd-{run_id}") or "gone"


async def runs_that_end_while_the_lock_is_held(
    api: Api, daemon: Daemon, locked: contextlib.ExitStack
) -> list[str]:
    """Three runs running, then the write lock taken; returns once their containers
    have exited, so the daemon's writes of their ends wait for the lock."""
    runner = await api.create_runner(run_command="sleep 1; echo done")
    runs = [(await api.trigger(runner["id"]))["id"] for _ in range(3)]
    for run_id in runs:
        await api.wait_status(runner["id"], run_id, "running")
    locked.enter_context(write_lock(daemon))

    async def exited() -> bool:
        states = await asyncio.gather(*(asyncio.to_thread(container_state, r) for r in runs))
        return all(s in ("exited", "gone") for s in states)

    await wait_until(exited, timeout=30, what="the runs' containers to exit")
    return [runner["id"], *runs]


async def all_succeed_after_restart(
    http: aiohttp.ClientSession, daemon: Daemon, runner_id: str, runs: list[str]
) -> None:
    await asyncio.to_thread(daemon.start)
    api = Api(http, daemon.url, daemon.key)
    for run_id in runs:
        run = await api.wait_done(runner_id, run_id)
        assert run["status"] == "succeeded", (run, daemon_errors(daemon))
        assert await api.logs(runner_id, run_id) == b"done\n"


# -- the database write lock ---------------------------------------------------------


async def test_sigterm_while_another_process_holds_the_database_write_lock_exits_within_bound(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = await asyncio.to_thread(start_daemon)
    api = Api(http, daemon.url, daemon.key)
    with contextlib.ExitStack() as locked:
        runner_id, *runs = await runs_that_end_while_the_lock_is_held(api, daemon, locked)
        status = await stop(daemon)  # while the lock is still held
    assert status == 0, daemon.log_text()
    assert "exit status 0" in last_line(daemon)
    await all_succeed_after_restart(http, daemon, runner_id, runs)  # none lost


async def test_sigterm_while_runnerd_keys_create_waits_for_the_database_write_lock_exits_within_bound(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = await asyncio.to_thread(start_daemon)
    api = Api(http, daemon.url, daemon.key)
    with contextlib.ExitStack() as locked:
        runner_id, *runs = await runs_that_end_while_the_lock_is_held(api, daemon, locked)
        keys = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runnerd",
                "keys",
                "create",
                "--name",
                "late",
                "--config",
                str(daemon.config_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            async def waiting() -> bool:  # it has opened the database: its write waits
                assert keys.poll() is None, keys.communicate()
                return uses_file(keys.pid, daemon.data_dir / "runnerd.db")

            await wait_until(waiting, timeout=30, what="keys create to open the database")
            status = await stop(daemon)
        except BaseException:
            keys.kill()
            raise
    assert status == 0, daemon.log_text()
    out, err = await asyncio.to_thread(keys.communicate, timeout=60)
    assert keys.returncode == 0, err  # the lock is free: the key is made after all
    await all_succeed_after_restart(http, daemon, runner_id, runs)
    api = Api(http, daemon.url, daemon.key)
    status_code, _ = await api.get("/v1/runners", key=out.strip().splitlines()[-1])
    assert status_code == 200


# -- steps that raise, hang, or swallow their cancel ----------------------------------


HANGING_WEBHOOKS_STOP = """
    import asyncio
    import logging
    import runnerd.webhooks

    async def stop(self):
        logging.getLogger("runnerd").info("injected: webhooks' stop hangs")
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass  # and ignores every cancel

    runnerd.webhooks.Notifier.stop = stop
"""


async def test_a_shutdown_step_that_raises_does_not_skip_the_later_ones(
    start_daemon: Callable[..., Daemon], inject: Callable[[str], None]
) -> None:
    inject("""
        import logging
        import runnerd.scheduler

        _stop = runnerd.scheduler.Scheduler.stop

        async def stop(self, **kw):
            await _stop(self, **kw)
            logging.getLogger("runnerd").info("injected: the scheduler's stop raises")
            raise RuntimeError("injected fault")

        runnerd.scheduler.Scheduler.stop = stop
    """)
    daemon = await asyncio.to_thread(start_daemon)
    wal = daemon.data_dir / "runnerd.db-wal"
    assert wal.exists()
    status = await stop(daemon)
    log = daemon.log_text()
    assert "injected: the scheduler's stop raises" in log
    assert "stopping: the scheduler failed (RuntimeError: injected fault); going on" in log
    assert status == EXIT_FORCED, log
    assert "forced: the scheduler failed" in last_line(daemon)
    assert f"exit status {EXIT_FORCED}" in last_line(daemon)
    assert not wal.exists(), "the database was not closed: a later step was skipped"


async def test_a_shutdown_step_that_hangs_is_cut_off_at_its_bound_and_the_stop_is_forced(
    start_daemon: Callable[..., Daemon], inject: Callable[[str], None]
) -> None:
    inject(HANGING_WEBHOOKS_STOP)
    daemon = await asyncio.to_thread(start_daemon)
    wal = daemon.data_dir / "runnerd.db-wal"
    status = await stop(daemon)
    log = daemon.log_text()
    assert "injected: webhooks' stop hangs" in log
    assert "stopping: webhooks did not stop within 3 s; going on without it" in log
    assert status == EXIT_FORCED, log
    assert "forced: webhooks did not stop within 3 s" in last_line(daemon)
    assert not wal.exists(), "the database was not closed: a later step was skipped"


async def test_a_second_sigterm_during_the_stop_exits_at_once_naming_the_step(
    start_daemon: Callable[..., Daemon], inject: Callable[[str], None]
) -> None:
    inject(HANGING_WEBHOOKS_STOP)
    daemon = await asyncio.to_thread(start_daemon)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    await wait_log_line(daemon, "injected: webhooks' stop hangs")
    status = await stop(daemon)  # the second one
    assert status == EXIT_FORCED, daemon.log_text()
    line = last_line(daemon)
    assert "stopping: SIGTERM during the stop (in step: " in line and "webhooks" in line, line
    assert f"exiting now (exit status {EXIT_FORCED})" in line


async def test_a_step_that_blocks_the_event_loop_is_ended_by_the_hard_exit_at_the_deadline(
    start_daemon: Callable[..., Daemon], inject: Callable[[str], None]
) -> None:
    inject("""
        import logging
        import time
        import runnerd.retention

        def blocking_stop(self):
            logging.getLogger("runnerd").info("injected: retention's stop blocks the loop")
            time.sleep(600)

        async def stop(self):
            blocking_stop(self)

        runnerd.retention.Retention.stop = stop
    """)
    daemon = await asyncio.to_thread(start_daemon)
    deadline = stop_bounds(config_mod.load(str(daemon.config_path))).deadline
    status = await stop(daemon)
    assert status == EXIT_FORCED, daemon.log_text()
    line = last_line(daemon)
    assert f"stopping: not stopped {deadline:.0f} s after the stop began (in step: " in line, line
    assert "MainThread in sitecustomize.py" in line and "blocking_stop" in line, line


async def test_sigterm_when_a_side_loop_swallows_its_cancel_exits_within_bound(
    start_daemon: Callable[..., Daemon], inject: Callable[[str], None]
) -> None:
    """What Python 3.11's asyncio.wait_for does to the systemd notifier's wait for
    the reconciled queue when SIGTERM comes right as reconciling ends: the daemon
    logged "stopping" and then nothing, for good."""
    inject("""
        import asyncio
        import logging
        import runnerd.daemon

        assert hasattr(runnerd.daemon, "tell_systemd"), "the injection point moved"

        async def swallowing(ready, status_text, **kw):
            logging.getLogger("runnerd").info("injected: a side loop that swallows a cancel")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
            while True:
                await asyncio.sleep(30)

        runnerd.daemon.tell_systemd = swallowing
    """)
    daemon = await asyncio.to_thread(start_daemon)
    await wait_log_line(daemon, "injected: a side loop that swallows a cancel")
    status = await stop(daemon)
    assert status == 0, daemon.log_text()
    assert "exit status 0" in last_line(daemon)


# -- threads ------------------------------------------------------------------------


async def test_sigterm_during_a_long_log_scan_exits_within_bound(
    start_daemon: Callable[..., Daemon], inject: Callable[[str], None], http: aiohttp.ClientSession
) -> None:
    inject("""
        import logging
        import time
        import runnerd.logs

        _page = runnerd.logs.LogStore.page

        def slow_log_scan(self, *args, **kw):
            logging.getLogger("runnerd").info("injected: a log scan that takes 120 s")
            time.sleep(120)
            return _page(self, *args, **kw)

        runnerd.logs.LogStore.page = slow_log_scan
    """)
    daemon = await asyncio.to_thread(start_daemon)
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="echo hi")
    run = await api.trigger(runner["id"])
    await api.wait_done(runner["id"], run["id"])
    page = asyncio.create_task(
        api.get(
            f"/v1/runners/{runner['id']}/runs/{run['id']}/logs",
            headers={"Accept": "application/json"},
        )
    )
    try:
        await wait_log_line(daemon, "injected: a log scan that takes 120 s")
        status = await stop(daemon)  # the scan goes on in its thread
    finally:
        page.cancel()
        await asyncio.gather(page, return_exceptions=True)
    log = daemon.log_text()
    assert status == EXIT_FORCED, log
    assert "the worker threads did not stop within" in log
    assert "slow_log_scan" in log, log  # the ERROR line names the busy thread's work
    assert "the worker threads did not stop within" in last_line(daemon)
    assert "HTTP server" not in last_line(daemon)  # its request was cut off in time


# -- start-up ------------------------------------------------------------------------


async def test_sigterm_during_start_up_while_the_engine_does_not_answer_exits_within_bound(
    tmp_path: Path, proxy: SocketProxy, docker_engine: str
) -> None:  # noqa: F811
    d = tmp_path / "daemon"
    d.mkdir()
    config_path = d / "config.toml"
    write_config(
        config_path, d / "data", f'[docker]\nurl = "unix://{proxy.path}"\nnetwork = "none"\n'
    )
    daemon = Daemon(dir=d, config_path=config_path, extra_config="")
    proxy.hold(r"GET .*/version")
    log = open(daemon.log_path, "ab")
    daemon.proc = subprocess.Popen(
        [sys.executable, "-m", "runnerd", "serve", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:

        async def asked() -> bool:
            return proxy.held > 0

        await wait_until(asked, timeout=30, what="the daemon to ask the engine its version")
        status = await stop(daemon)
    finally:
        proxy.release()
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
    assert status == 0, daemon.log_text()
    assert "stopping on SIGTERM" in daemon.log_text()
    assert "listening" not in daemon.log_text()


# -- many cycles ---------------------------------------------------------------------


class Workload:
    """What one data dir has been asked to run across the cycles, and the moments
    at which a cycle's SIGTERM comes."""

    OUTPUTS = {
        "quick": "echo quick",
        "printer": "seq 1 300",
        "slow": "echo start; sleep 1.5; echo end",
    }
    EXPECTED = {
        "quick": b"quick\n",
        "printer": "".join(f"{i}\n" for i in range(1, 301)).encode(),
        "slow": b"start\nend\n",
    }
    BACKLOG = 4  # at most this many runs not yet completed, so the drain stays short

    def __init__(self, http: aiohttp.ClientSession, daemon: Daemon, rng: random.Random) -> None:
        self.http = http
        self.daemon = daemon
        self.rng = rng
        self.runners: dict[str, str] = {}  # kind -> runner id
        self.accepted: dict[str, str] = {}  # run id -> kind (answered 200)
        self.done: set[str] = set()
        self.api = Api(http, daemon.url, daemon.key)

    async def setup(self) -> None:
        for kind, command in self.OUTPUTS.items():
            self.runners[kind] = (await self.api.create_runner(run_command=command))["id"]

    def restarted(self) -> None:
        self.api = Api(self.http, self.daemon.url, self.daemon.key)

    async def backlog(self) -> list[tuple[str, str]]:
        """(runner id, run id) of accepted runs not known to be completed."""
        left = []
        for run_id, kind in self.accepted.items():
            if run_id in self.done:
                continue
            run = await self.api.run(self.runners[kind], run_id)
            if run["status"] in ("succeeded", "failed"):
                self.done.add(run_id)
            else:
                left.append((self.runners[kind], run_id))
        return left

    async def trigger(self, kind: str | None = None) -> str | None:
        if len(await self.backlog()) >= self.BACKLOG:
            return None
        kind = kind or self.rng.choice(list(self.OUTPUTS))
        run = await self.api.trigger(self.runners[kind])
        self.accepted[run["id"]] = kind
        return run["id"]

    # -- the moments: each returns when SIGTERM should come -----------------------

    async def right_after_start(self) -> None:
        return None

    async def after_a_few_415s(self) -> None:
        for _ in range(3):
            status, _ = await self.api.request(
                "POST",
                f"/v1/runners/{self.runners['quick']}/runs",
                data=b"{}",
                headers={"Content-Type": "text/plain"},
            )
            assert status == 415

    async def after_a_trigger(self) -> None:
        await self.trigger()

    async def with_a_trigger_in_flight(self) -> Callable[[], Awaitable[None]]:
        async def send() -> None:
            try:
                status, body = await self.api.post(f"/v1/runners/{self.runners['quick']}/runs")
            except aiohttp.ClientError:
                return  # cut off by the stop: it may or may not have been queued
            if status == 200:
                self.accepted[body["run"]["id"]] = "quick"

        task = asyncio.create_task(send())
        await asyncio.sleep(self.rng.uniform(0, 0.02))

        async def after() -> None:
            await task

        return after

    async def while_a_run_is_running(self) -> None:
        run_id = await self.trigger("slow")
        if run_id is not None:

            async def running() -> bool:
                run = await self.api.run(self.runners["slow"], run_id)
                return run["status"] != "pending"

            await wait_until(running, timeout=60, what=f"run {run_id} to start")

    async def with_a_log_follower(self) -> Callable[[], Awaitable[None]]:
        left = await self.backlog()
        run_id = await self.trigger("printer") if not left else None
        runner_id, run_id = left[0] if left else (self.runners["printer"], run_id)
        response = await self.http.get(
            f"{self.api.url}/v1/runners/{runner_id}/runs/{run_id}/logs?follow=true",
            headers=self.api.headers(),
        )
        assert response.status == 200

        async def after() -> None:  # the stream ends with the daemon, never hangs
            async with response:
                with contextlib.suppress(aiohttp.ClientError):
                    await asyncio.wait_for(response.read(), 30)

        return after

    async def while_output_is_written(self) -> None:
        run_id = await self.trigger("printer")
        if run_id is not None:
            await asyncio.sleep(self.rng.uniform(0, 0.3))

    MOMENTS = (
        "right_after_start",
        "after_a_few_415s",
        "after_a_trigger",
        "with_a_trigger_in_flight",
        "while_a_run_is_running",
        "with_a_log_follower",
        "while_output_is_written",
    )


@pytest.mark.timeout(1800)
async def test_start_sigterm_cycles_under_mixed_workload_all_exit_within_bound(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    engine_under_test: EngineUnderTest,
) -> None:
    if CYCLES_ENV:
        cycles = int(CYCLES_ENV)
    elif engine_under_test.name == "docker":
        cycles = CYCLES_ON_DOCKER
    else:
        cycles = EACH_MOMENT_ON_PODMAN * len(Workload.MOMENTS)
    rng = random.Random(SEED)
    daemon = await asyncio.to_thread(start_daemon, max_concurrent_runs=2)
    work = Workload(http, daemon, rng)
    await work.setup()
    moments = [Workload.MOMENTS[i % len(Workload.MOMENTS)] for i in range(cycles)]
    rng.shuffle(moments)
    for cycle, moment in enumerate(moments):
        if cycle:
            await asyncio.to_thread(daemon.start)
            work.restarted()
        after = await getattr(work, moment)()
        where = f"cycle {cycle} ({moment}, seed {SEED})"
        try:
            status = await stop(daemon)
        except AssertionError as e:
            raise AssertionError(f"{where}: {e}\n{daemon_errors(daemon)}") from None
        assert status == 0, f"{where}: exit status {status}\n{daemon_errors(daemon)}"
        if after is not None:
            await after()
    # Drain: every run answered 200 completes once, with all its output once.
    await asyncio.to_thread(daemon.start)
    work.restarted()

    async def stored() -> dict[str, tuple[str, dict[str, Any]]]:
        """Every run in the database: id -> (kind, run)."""
        runs = {}
        for kind, runner_id in work.runners.items():
            status, body = await work.api.get(f"/v1/runners/{runner_id}/runs?limit=1000")
            assert status == 200, body
            runs |= {r["id"]: (kind, r) for r in body["runs"]}
        return runs

    async def drained() -> dict[str, tuple[str, dict[str, Any]]] | None:
        runs = await stored()
        done = all(r["status"] in ("succeeded", "failed") for _, r in runs.values())
        return runs if done else None

    runs = await wait_until(drained, timeout=300, interval=0.5, what="every run to complete")
    assert set(work.accepted) <= set(runs)  # none answered 200 is lost
    for run_id, (kind, run) in runs.items():  # each ran once: its output is there once
        assert run["status"] == "succeeded", (run, daemon_errors(daemon))
        assert await work.api.logs(work.runners[kind], run_id) == Workload.EXPECTED[kind], run
    assert not [ln for ln in daemon.log_text().splitlines() if " ERROR " in ln], daemon_errors(
        daemon
    )
