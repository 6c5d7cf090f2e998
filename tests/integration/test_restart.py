"""Fault injection on a real runnerd process and the real engine: SIGKILL at varied
moments, SIGTERM with either shutdown policy, containers that end, time out or
vanish while the daemon is down, and queued runs across a crash.

What every test checks is the contract of issue 3 ("Restart and crash"): after
the daemon comes back, each run ends with the status and exit code its command
implies, its log is exactly what its container printed (no line lost, none
doubled), it ran once, and no container outlives its run.

The fault moments come from `random.Random(SEED)`; set RUNNERD_TEST_SEED to replay
or vary them (the seed is in the failure messages of the SIGKILL/SIGTERM rounds).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import sqlite3
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from conftest import LABEL_DAEMON, TEST_IMAGE, Api, Daemon, wait_until
from helpers_engine import (
    LABEL_RUN,
    LABEL_RUNNER,
    ContainerEvents,
    engine_api,
    label_filters,
    on_swarm,
)

pytestmark = pytest.mark.swarm  # these run on the swarm backend too (but one)

SEED = int(os.environ.get("RUNNERD_TEST_SEED", "20240611"))

# A steady printer: N numbered lines tagged with the run's own RUN_TAG, on file
# descriptor FD (1 stdout, 2 stderr), then exit CODE.
PRINTER = (
    'i=0; while [ $i -lt $N ]; do i=$((i+1)); echo "$RUN_TAG line $i" >&$FD; '
    "sleep 0.05; done; exit $CODE"
)
QUICK = "echo quick; exit 0"
FAILING = "echo x; exit 7"


# -- helpers ---------------------------------------------------------------------


def api_for(http: aiohttp.ClientSession, daemon: Daemon) -> Api:
    """A client for the daemon's current process (the port changes on restart)."""
    return Api(http, daemon.url, daemon.key)


def ms(iso: str) -> float:
    """An API time (`2026-01-15T10:01:00.000+01:00`) → milliseconds since the epoch."""
    return datetime.fromisoformat(iso).timestamp() * 1000


def env(**pairs: Any) -> dict[str, Any]:
    return {"env_variables": [{"env_key": k, "env_val": str(v)} for k, v in pairs.items()]}


def db_run(daemon: Daemon, run_id: str) -> dict[str, Any]:
    """The run's row as the daemon last committed it, read while no daemon runs."""
    uri = f"file:{daemon.data_dir / 'runnerd.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert row is not None, f"run {run_id} is not in the database"
    return dict(row)


def daemon_containers(daemon: Daemon) -> list[str]:
    """Ids of every container (any state) labelled with this daemon's id. On the
    swarm backend, once the nodes have removed the containers of the services
    runnerd removed: a node does so a moment later, by itself (SWARM_CLEANUP)."""
    labels = {LABEL_DAEMON: daemon.daemon_id()}
    if not on_swarm():
        return engine_api.container_ids(labels)
    deadline = time.monotonic() + SWARM_CLEANUP
    while True:
        status, found = engine_api.get_json(
            "/containers/json", filters=label_filters(labels), all="1"
        )
        assert status == 200, found
        status, services = engine_api.get_json("/services", filters=label_filters(labels))
        assert status == 200, services
        runs = {s["Spec"]["Labels"].get(LABEL_RUN) for s in services}
        if all(c["Labels"].get(LABEL_RUN) in runs for c in found) or time.monotonic() > deadline:
            return [c["Id"] for c in found]
        time.sleep(0.1)


SWARM_CLEANUP = 15.0  # seconds a node may take to remove a removed service's container


def stop_policy_leftovers(daemon: Daemon) -> list[str]:
    """After a SIGTERM with on_shutdown = "stop": what it failed to settle. No run
    may be left `running`, and no container may be left but a never-started one
    of a run that never started (still pending; the next start replaces it)."""
    uri = f"file:{daemon.data_dir / 'runnerd.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        status = dict(db.execute("SELECT id, status FROM runs").fetchall())
    problems = [f"run {rid} left running" for rid, s in status.items() if s == "running"]
    for cid in daemon_containers(daemon):
        c = engine_api.inspect(cid)
        if c is None:  # gone since it was listed
            continue
        state, run_id = c["State"]["Status"], c["Config"]["Labels"].get(LABEL_RUN)
        if state == "created" and status.get(run_id) == "pending":
            continue
        problems.append(f"container {cid} left: {state} {run_id} (run {status.get(run_id)})")
    return problems


def container_state(run_id: str) -> str | None:
    """The engine's status of the run's container (running, exited, ...); None if gone."""
    return engine_api.state(f"runnerd-{run_id}")


async def no_containers_left(daemon: Daemon, timeout: float = 20) -> None:
    async def none_left() -> bool:
        return not daemon_containers(daemon)

    await wait_until(
        none_left,
        timeout=timeout,
        interval=0.2,
        what=f"no container labelled {LABEL_DAEMON}={daemon.daemon_id()}: "
        f"{daemon_containers(daemon)}",
    )


async def wait_running_with_output(
    api: Api, runner_id: str, run_id: str, needle: bytes, timeout: float = 30
) -> dict[str, Any]:
    """The run is `running` and `needle` is already in its log."""

    async def ready() -> dict[str, Any] | None:
        run = await api.run(runner_id, run_id)
        if run["status"] != "running":
            assert run["status"] == "pending", run
            return None
        return run if needle in await api.logs(runner_id, run_id) else None

    return await wait_until(ready, timeout=timeout, what=f"run {run_id} running, printing")


def assert_no_tracebacks(daemon: Daemon) -> None:
    text = daemon.log_text()
    assert "Traceback" not in text and "unexpected error" not in text, text[-6000:]


class EngineEvents:
    """The engine's events for one daemon's containers, recorded from before its
    first run: how often each run's container was started (a second start would
    mean a run executed twice)."""

    def __init__(self, daemon: Daemon) -> None:
        self.events = ContainerEvents({LABEL_DAEMON: daemon.daemon_id()})

    def close(self) -> None:
        self.events.close()

    def starts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for action, attributes in self.events.actions():
            if action == "start":
                run_id = attributes.get(LABEL_RUN, "")
                counts[run_id] = counts.get(run_id, 0) + 1
        return counts


@dataclass
class Job:
    """One triggered run and what its container must print and exit with."""

    runner_id: str
    run_id: str
    output: bytes
    exit_code: int
    kind: str


class Observer:
    """Everything a client could see across restarts, checked for consistency:
    a run's started_at never changes once set, and a completed run never changes
    status, exit code or failure reason again."""

    def __init__(self) -> None:
        self.started_at: dict[str, str] = {}
        self.final: dict[str, tuple[str, int | None, str | None]] = {}

    def see(self, run: dict[str, Any], where: str) -> None:
        rid = run["id"]
        if run["started_at"] is not None:
            first = self.started_at.setdefault(rid, run["started_at"])
            assert run["started_at"] == first, (
                f"run {rid} started again ({where}): started_at {first} -> {run['started_at']}"
            )
        if run["status"] in ("succeeded", "failed"):
            final = (run["status"], run["exit_code"], run["failure_reason"])
            first_final = self.final.setdefault(rid, final)
            assert final == first_final, (
                f"completed run {rid} changed ({where}): {first_final} -> {final}"
            )
        elif rid in self.final:
            raise AssertionError(f"completed run {rid} went back to {run['status']} ({where})")

    async def poll(self, api: Api, runner_ids: list[str], where: str) -> dict[str, dict]:
        runs: dict[str, dict] = {}
        for runner_id in runner_ids:
            status, body = await api.get(f"/v1/runners/{runner_id}/runs?limit=100")
            assert status == 200, body
            for run in body["runs"]:
                self.see(run, where)
                runs[run["id"]] = run
        return runs

    def see_db(self, daemon: Daemon, run_ids: list[str], where: str) -> None:
        """The committed rows, read while the daemon is dead: started_at in the
        database is what the API showed (milliseconds, compared as such)."""
        for rid in run_ids:
            row = db_run(daemon, rid)
            if row["started_at"] is not None and rid in self.started_at:
                assert abs(ms(self.started_at[rid]) - row["started_at"]) < 1, (
                    f"run {rid} ({where}): database started_at {row['started_at']} "
                    f"!= {self.started_at[rid]}"
                )


def check_jobs(
    jobs: list[Job], runs: dict[str, dict], logs: dict[str, bytes], seed_note: str
) -> None:
    problems = []
    for job in jobs:
        run = runs[job.run_id]
        want_status = "succeeded" if job.exit_code == 0 else "failed"
        want_reason = None if job.exit_code == 0 else "nonzero_exit"
        got = (run["status"], run["exit_code"], run["failure_reason"])
        if got != (want_status, job.exit_code, want_reason):
            problems.append(
                f"{job.kind} run {job.run_id}: (status, exit_code, reason) = {got}, "
                f"want {(want_status, job.exit_code, want_reason)}; "
                f"error={run['error']!r}"
            )
        if logs[job.run_id] != job.output:
            got_lines, want_lines = logs[job.run_id].splitlines(), job.output.splitlines()
            missing = [x for x in want_lines if x not in got_lines]
            doubled = sorted({x for x in got_lines if got_lines.count(x) > 1})
            problems.append(
                f"{job.kind} run {job.run_id}: log has {len(got_lines)} lines, "
                f"want {len(want_lines)}; missing {missing[:5]}, "
                f"doubled {doubled[:5]}, head {logs[job.run_id][:120]!r}"
            )
    assert not problems, f"{seed_note}\n" + "\n".join(problems)


# -- 1. SIGKILL / SIGTERM rounds over a mixed workload ---------------------------------


STOP_POLICY = '[scheduler]\nmax_concurrent_runs = 3\non_shutdown = "stop"\n'


async def _mixed_workload_rounds(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, *, fault: str, rounds: int
) -> None:
    """A daemon with 3 slots and 12+ runs of steady printers (stdout or stderr,
    some failing after printing), quick and failing runs; `rounds` times: a random
    moment, then the fault, then a restart (new runs are queued after the first
    two). Then every run is checked against what its container printed.

    fault: "sigkill" (in round 3 killed again right after the restart, while it
    reconciles and re-attaches); "sigterm-leave" (containers keep running and are
    re-attached); "sigterm-stop" (running runs end failed/canceled with the
    output they printed so far; nothing is left running or behind)."""
    rng = random.Random(f"{SEED}-{fault}")
    seed_note = f"(fault {fault}, RUNNERD_TEST_SEED={SEED})"
    if fault == "sigterm-stop":
        daemon = start_daemon(STOP_POLICY)
    else:
        daemon = start_daemon(max_concurrent_runs=3)
    events = EngineEvents(daemon)
    try:
        api = api_for(http, daemon)
        printer = await api.create_runner(
            run_command=PRINTER,
            env_variables=[
                {"env_key": "N", "env_val": "10"},
                {"env_key": "CODE", "env_val": "0"},
                {"env_key": "RUN_TAG", "env_val": "untagged"},
                {"env_key": "FD", "env_val": "1"},
            ],
        )
        quick = await api.create_runner(run_command=QUICK)
        failing = await api.create_runner(run_command=FAILING)
        runner_ids = [printer["id"], quick["id"], failing["id"]]
        jobs: list[Job] = []

        async def trigger(kind: str, n: int = 0, code: int = 0, fd: int = 1) -> None:
            if kind == "printer":
                tag = f"p{len(jobs)}"
                run = await api.trigger(printer["id"], env(N=n, CODE=code, RUN_TAG=tag, FD=fd))
                out = b"".join(f"{tag} line {i}\n".encode() for i in range(1, n + 1))
                jobs.append(
                    Job(
                        printer["id"], run["id"], out, code, f"printer(N={n}, fd {fd}, exit {code})"
                    )
                )
            elif kind == "quick":
                run = await api.trigger(quick["id"])
                jobs.append(Job(quick["id"], run["id"], b"quick\n", 0, "quick"))
            else:
                run = await api.trigger(failing["id"])
                jobs.append(Job(failing["id"], run["id"], b"x\n", 7, "failing"))
            assert run["status"] == "pending"

        # 12 runs for 3 slots: some start at once, some finish at once, the
        # rest wait; printers span several rounds, some fail after printing.
        for kind, n, code, fd in [
            ("printer", 50, 0, 1),
            ("quick", 0, 0, 1),
            ("printer", 70, 0, 2),
            ("failing", 0, 0, 1),
            ("printer", 30, 7, 1),
            ("quick", 0, 0, 1),
            ("printer", 60, 0, 1),
            ("failing", 0, 0, 1),
            ("printer", 20, 0, 1),
            ("quick", 0, 0, 1),
            ("printer", 40, 7, 2),
            ("failing", 0, 0, 1),
        ]:
            await trigger(kind, n, code, fd)

        observer = Observer()
        for round_no in range(1, rounds + 1):
            where = f"round {round_no} {seed_note}"
            # Let the workload move for a random moment, watching it meanwhile.
            until = time.monotonic() + rng.uniform(0.1, 1.5)
            while True:
                runs = await observer.poll(api, runner_ids, where)
                if time.monotonic() >= until:
                    break
                await asyncio.sleep(0.05)
            states = sorted(r["status"] for r in runs.values())
            if fault == "sigkill":
                daemon.kill()
            else:
                began = time.monotonic()
                rc = daemon.stop(signal.SIGTERM, timeout=15)
                took = time.monotonic() - began
                assert rc == 0, f"exit code {rc} on SIGTERM, {where}:\n{daemon.log_text()[-4000:]}"
                assert took < 10, f"SIGTERM took {took:.1f} s, {where}"
            print(f"round {round_no}: {fault} with runs {states}")
            observer.see_db(daemon, [j.run_id for j in jobs], f"after {fault}, {where}")
            if fault == "sigterm-stop":
                # Every run this process had in flight is recorded and stopped.
                left = stop_policy_leftovers(daemon)
                assert not left, (
                    f"after SIGTERM with the stop policy, {where}: {left}\n"
                    f"{daemon.log_text()[-4000:]}"
                )
            daemon.start()
            if fault == "sigkill" and round_no == 3:
                # Killed again at once: while re-attaching and reconciling.
                daemon.kill()
                observer.see_db(daemon, [j.run_id for j in jobs], f"second SIGKILL, {where}")
                daemon.start()
            api = api_for(http, daemon)
            await observer.poll(api, runner_ids, f"just after restart, {where}")
            if round_no <= 2:  # new work queued right after a restart, hit later
                await trigger("printer", 25, 0)
                await trigger("quick")

        async def all_done() -> dict[str, dict] | None:
            runs = await observer.poll(api, runner_ids, f"after the rounds {seed_note}")
            done = all(runs[j.run_id]["status"] in ("succeeded", "failed") for j in jobs)
            return runs if done else None

        runs = await wait_until(
            all_done, timeout=120, interval=0.2, what=f"every run to complete {seed_note}"
        )
        logs = {j.run_id: await api.logs(j.runner_id, j.run_id) for j in jobs}
        if fault == "sigterm-stop":
            # Runs the stop policy canceled: the exit code they ended with, and
            # the lines printed until then, in order, each once.
            canceled = [j for j in jobs if runs[j.run_id]["failure_reason"] == "canceled"]
            for job in canceled:
                run = runs[job.run_id]
                # canceled before its container started: no exit code, no output
                assert run["status"] == "failed" and (
                    run["exit_code"] is not None or run["started_at"] is None
                ), f"{job.kind} {run} {seed_note}"
                assert job.output.startswith(logs[job.run_id]), (
                    f"{job.kind} run {job.run_id}: log {logs[job.run_id]!r} is not a prefix "
                    f"of its output {seed_note}"
                )
            print(f"{len(canceled)} runs canceled by the stop policy")
            jobs_exact = [j for j in jobs if j not in canceled]
        else:
            jobs_exact = jobs
        check_jobs(jobs_exact, runs, logs, seed_note)
        for job in jobs:
            assert observer.started_at.get(job.run_id) == runs[job.run_id]["started_at"], (
                f"run {job.run_id}: started_at changed {seed_note}"
            )

        await no_containers_left(daemon)
        events.close()
        starts = events.starts()
        twice = {rid: n for rid, n in starts.items() if n > 1}
        assert not twice, f"containers started more than once {seed_note}: {twice}"
        assert set(starts) == {j.run_id for j in jobs}, (
            f"runs whose container never started {seed_note}: "
            f"{sorted({j.run_id for j in jobs} - set(starts))}"
        )
        assert_no_tracebacks(daemon)
    finally:
        events.close()


async def test_sigkill_rounds_during_mixed_workload_lose_no_line_and_run_nothing_twice(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    await _mixed_workload_rounds(start_daemon, http, fault="sigkill", rounds=5)


async def test_sigterm_rounds_with_leave_policy_during_mixed_workload_lose_no_line(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    await _mixed_workload_rounds(start_daemon, http, fault="sigterm-leave", rounds=3)


async def test_sigterm_rounds_with_stop_policy_during_mixed_workload_cancel_only_running(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    await _mixed_workload_rounds(start_daemon, http, fault="sigterm-stop", rounds=3)


# -- 2. SIGTERM, on_shutdown = "leave" ----------------------------------------------


async def test_sigterm_leave_keeps_container_running_and_restart_completes_it(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon(max_concurrent_runs=1)
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo start; sleep 4; echo done")
    # A second run, queued behind the first: SIGTERM must not lose it either.
    blocker = await api.create_runner(run_command="echo queued")
    run = await api.trigger(runner["id"])
    queued = await api.trigger(blocker["id"])
    await wait_running_with_output(api, runner["id"], run["id"], b"start\n")
    started_at = (await api.run(runner["id"], run["id"]))["started_at"]
    assert (await api.run(blocker["id"], queued["id"]))["status"] == "pending"

    began = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0, daemon.log_text()[-3000:]
    print(f"SIGTERM took {time.monotonic() - began:.2f} s")
    assert container_state(run["id"]) == "running", daemon.log_text()[-3000:]
    row = db_run(daemon, run["id"])
    assert row["status"] == "running" and row["exit_code"] is None, row

    daemon.start()
    api = api_for(http, daemon)
    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert (done["status"], done["exit_code"], done["failure_reason"]) == ("succeeded", 0, None), (
        done
    )
    assert done["started_at"] == started_at, done
    assert await api.logs(runner["id"], run["id"]) == b"start\ndone\n"
    other = await api.wait_done(blocker["id"], queued["id"], timeout=30)
    assert other["status"] == "succeeded", other
    assert await api.logs(blocker["id"], queued["id"]) == b"queued\n"
    await no_containers_left(daemon)
    assert_no_tracebacks(daemon)


# -- 3. SIGTERM, on_shutdown = "stop" -----------------------------------------------


async def test_sigterm_stop_policy_stops_container_and_marks_run_canceled(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon('[scheduler]\nmax_concurrent_runs = 4\non_shutdown = "stop"\n')
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo start; sleep 60")
    run = await api.trigger(runner["id"])
    await wait_running_with_output(api, runner["id"], run["id"], b"start\n")

    began = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=15) == 0, daemon.log_text()[-3000:]
    print(f"SIGTERM took {time.monotonic() - began:.2f} s")
    row = db_run(daemon, run["id"])  # what this process committed, before any restart
    assert (row["status"], row["failure_reason"]) == ("failed", "canceled"), row
    assert row["exit_code"] is not None, row
    assert row["error"], row
    assert daemon_containers(daemon) == [], daemon.log_text()[-3000:]

    daemon.start()
    api = api_for(http, daemon)
    after = await api.run(runner["id"], run["id"])
    assert (after["status"], after["failure_reason"], after["exit_code"]) == (
        "failed",
        "canceled",
        row["exit_code"],
    ), after
    assert await api.logs(runner["id"], run["id"]) == b"start\n"
    assert_no_tracebacks(daemon)


async def test_sigterm_stop_policy_while_a_burst_of_runs_is_starting_leaves_none_running(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    """SIGTERM lands while runs are between being claimed and having a watched
    container (pulling/creating, just recorded `running`, being started)."""
    rng = random.Random(f"{SEED}-burst")
    daemon = start_daemon('[scheduler]\nmax_concurrent_runs = 8\non_shutdown = "stop"\n')
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo start; sleep 60")
    runs: list[dict[str, Any]] = []
    for attempt in range(1, 5):
        # Runs still pending from the attempt before start at once after the
        # restart, the new burst after them: some are long running, some starting.
        runs += [await api.trigger(runner["id"]) for _ in range(6)]
        time.sleep(rng.uniform(0, 0.15))  # injection moment: amid the starts
        began = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=15) == 0, daemon.log_text()[-3000:]
        assert time.monotonic() - began < 10
        left = stop_policy_leftovers(daemon)
        assert not left, f"attempt {attempt}: {left}\n{daemon.log_text()[-3000:]}"
        for run in runs:
            row = db_run(daemon, run["id"])
            assert row["status"] == "pending" or (row["status"], row["failure_reason"]) == (
                "failed",
                "canceled",
            ), row
            # a run canceled before its container started has no exit code
            assert (
                row["status"] == "pending"
                or row["exit_code"] is not None
                or row["started_at"] is None
            ), row
        daemon.start()
        api = api_for(http, daemon)


# -- 4. a container that exits while the daemon is down ----------------------------------


async def test_container_exiting_while_daemon_is_killed_is_finalised_with_its_exit_code(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon()
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo a; sleep 1; echo b; exit 5")
    run = await api.trigger(runner["id"])
    await wait_running_with_output(api, runner["id"], run["id"], b"a\n")
    daemon.kill()

    async def exited() -> bool:
        return container_state(run["id"]) == "exited"

    await wait_until(exited, timeout=20, interval=0.1, what="the container to exit")
    assert db_run(daemon, run["id"])["status"] == "running"

    daemon.start()
    api = api_for(http, daemon)
    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert (done["status"], done["exit_code"], done["failure_reason"]) == (
        "failed",
        5,
        "nonzero_exit",
    ), done
    assert await api.logs(runner["id"], run["id"]) == b"a\nb\n"
    await no_containers_left(daemon)
    assert container_state(run["id"]) is None
    assert_no_tracebacks(daemon)


# -- 5. timeouts across a restart ---------------------------------------------------------


async def _timeout_runner(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    runner = await api.create_runner(argv=["sleep", "120"], timeout_seconds=3)
    run = await api.trigger(runner["id"])
    running = await api.wait_status(runner["id"], run["id"], "running")
    return runner, running


def _assert_timed_out(done: dict[str, Any], started_at: str) -> None:
    assert (done["status"], done["failure_reason"]) == ("failed", "timeout"), done
    assert done["exit_code"] is not None, done
    assert done["started_at"] == started_at, done
    took = (ms(done["completed_at"]) - ms(started_at)) / 1000
    assert took >= 2.9, f"stopped after {took:.1f} s, before its 3 s timeout: {done}"


async def test_sigkill_during_timeout_still_enforces_it_from_started_at(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    rng = random.Random(SEED + 5)
    daemon = start_daemon()
    api = api_for(http, daemon)
    runner, running = await _timeout_runner(api)
    await asyncio.sleep(rng.uniform(0.8, 1.2))  # injection moment: mid-timeout
    daemon.kill()
    await asyncio.sleep(rng.uniform(0.8, 1.2))  # down, but not past the deadline
    daemon.start()
    api = api_for(http, daemon)
    done = await api.wait_done(runner["id"], running["id"], timeout=30)
    _assert_timed_out(done, running["started_at"])
    took = (ms(done["completed_at"]) - ms(running["started_at"])) / 1000
    # deadline 3 s + stop grace 1 s + generous slack for a loaded machine
    assert took < 3 + 1 + 10, f"timeout enforced only after {took:.1f} s: {done}"
    await no_containers_left(daemon)
    assert_no_tracebacks(daemon)


async def test_daemon_down_past_the_timeout_enforces_it_at_once_on_restart(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon()
    api = api_for(http, daemon)
    runner, running = await _timeout_runner(api)
    daemon.kill()
    deadline_ms = ms(running["started_at"]) + 3000

    async def past_deadline() -> bool:
        return time.time() * 1000 > deadline_ms + 500

    await wait_until(past_deadline, timeout=10, what="the run's timeout to pass")
    assert container_state(running["id"]) == "running"  # nobody enforced it meanwhile

    restarted = time.time()
    daemon.start()
    api = api_for(http, daemon)
    done = await api.wait_done(runner["id"], running["id"], timeout=30)
    _assert_timed_out(done, running["started_at"])
    late = ms(done["completed_at"]) / 1000 - restarted
    assert late < 1 + 10, f"timeout enforced {late:.1f} s after the restart: {done}"
    await no_containers_left(daemon)
    assert_no_tracebacks(daemon)


# -- 6. the container vanishes while the daemon is down -----------------------------------


async def test_container_removed_while_daemon_is_killed_marks_run_lost(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon()
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo begin; sleep 30")
    run = await api.trigger(runner["id"])
    await wait_running_with_output(api, runner["id"], run["id"], b"begin\n")
    daemon.kill()
    if on_swarm():  # the run's service: removing its container would fail its task
        status, body = engine_api.request("DELETE", f"/services/runnerd-{run['id']}")
        assert status == 200, (status, body)
    else:
        engine_api.remove(f"runnerd-{run['id']}")

    daemon.start()
    api = api_for(http, daemon)
    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert (done["status"], done["failure_reason"]) == ("failed", "lost"), done
    assert isinstance(done["error"], str) and "container" in done["error"].lower(), done
    assert await api.logs(runner["id"], run["id"]) == b"begin\n"  # what it printed stays
    await no_containers_left(daemon)
    assert_no_tracebacks(daemon)


# -- 7. queued runs across a crash ----------------------------------------------------------


async def test_sigkill_with_pending_queue_runs_every_queued_run_exactly_once(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon(max_concurrent_runs=1)
    events = EngineEvents(daemon)
    try:
        api = api_for(http, daemon)
        runner = await api.create_runner(
            run_command=PRINTER,
            env_variables=[
                {"env_key": "N", "env_val": "5"},
                {"env_key": "CODE", "env_val": "0"},
                {"env_key": "RUN_TAG", "env_val": "untagged"},
                {"env_key": "FD", "env_val": "1"},
            ],
        )
        first = await api.trigger(runner["id"], env(N=40, RUN_TAG="first"))
        await wait_running_with_output(api, runner["id"], first["id"], b"first line 1\n")
        queued = [await api.trigger(runner["id"], env(N=5, RUN_TAG=f"q{i}")) for i in range(3)]
        daemon.kill()  # right after the last 200: every answered trigger is committed
        for q in queued:
            assert db_run(daemon, q["id"])["status"] == "pending"

        daemon.start()
        api = api_for(http, daemon)
        expected = {first["id"]: ("first", 40)} | {
            q["id"]: (f"q{i}", 5) for i, q in enumerate(queued)
        }
        done = {rid: await api.wait_done(runner["id"], rid, timeout=60) for rid in expected}
        for rid, (tag, n) in expected.items():
            assert (done[rid]["status"], done[rid]["exit_code"]) == ("succeeded", 0), done[rid]
            want = b"".join(f"{tag} line {i}\n".encode() for i in range(1, n + 1))
            assert await api.logs(runner["id"], rid) == want, rid
        # One at a time (max_concurrent_runs = 1), in the order they were queued.
        order = [first["id"], *(q["id"] for q in queued)]
        for before, after in itertools.pairwise(order):
            assert ms(done[after]["started_at"]) >= ms(done[before]["completed_at"]), (
                done[before],
                done[after],
            )
        await no_containers_left(daemon)
        events.close()
        assert events.starts() == {rid: 1 for rid in expected}, events.starts()
        assert_no_tracebacks(daemon)
    finally:
        events.close()


# -- 8. what a crash leaves half-done: a created container, a torn log record ----------------


@pytest.mark.no_swarm  # a swarm backend creates nothing before the start
async def test_container_created_before_a_crash_for_a_pending_run_is_replaced_not_started(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    """The daemon died between creating a run's container and recording the run
    `running`: the run is pending and a never-started container has its name."""
    daemon = start_daemon(max_concurrent_runs=1)
    events = EngineEvents(daemon)
    try:
        api = api_for(http, daemon)
        runner = await api.create_runner(
            run_command=PRINTER,
            env_variables=[
                {"env_key": "N", "env_val": "5"},
                {"env_key": "CODE", "env_val": "0"},
                {"env_key": "RUN_TAG", "env_val": "untagged"},
                {"env_key": "FD", "env_val": "1"},
            ],
        )
        first = await api.trigger(runner["id"], env(N=30, RUN_TAG="first"))
        await wait_running_with_output(api, runner["id"], first["id"], b"first line 1\n")
        second = await api.trigger(runner["id"], env(N=5, RUN_TAG="second"))
        daemon.kill()
        assert db_run(daemon, second["id"])["status"] == "pending"
        engine_api.create(
            f"runnerd-{second['id']}",
            {
                "Image": TEST_IMAGE,
                "Cmd": ["sh", "-c", "echo stale container; exit 3"],
                "Labels": {
                    LABEL_DAEMON: daemon.daemon_id(),
                    LABEL_RUN: second["id"],
                    LABEL_RUNNER: runner["id"],
                },
                "HostConfig": {"NetworkMode": "none"},
            },
        )

        daemon.start()
        api = api_for(http, daemon)
        for run, tag, n in ((first, "first", 30), (second, "second", 5)):
            done = await api.wait_done(runner["id"], run["id"], timeout=60)
            assert (done["status"], done["exit_code"]) == ("succeeded", 0), done
            want = b"".join(f"{tag} line {i}\n".encode() for i in range(1, n + 1))
            assert await api.logs(runner["id"], run["id"]) == want
        await no_containers_left(daemon)
        events.close()
        assert events.starts() == {first["id"]: 1, second["id"]: 1}, events.starts()
        assert_no_tracebacks(daemon)
    finally:
        events.close()


LOG_HEADER = struct.Struct(">BqI")  # runnerd's log record header: stream, ts ns, length


async def test_log_record_torn_by_a_crash_is_cut_and_its_line_written_again(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    """The daemon died in the middle of appending a record to a run's log file."""
    daemon = start_daemon()
    api = api_for(http, daemon)
    runner = await api.create_runner(
        run_command=PRINTER,
        env_variables=[
            {"env_key": "N", "env_val": "40"},
            {"env_key": "CODE", "env_val": "0"},
            {"env_key": "RUN_TAG", "env_val": "torn"},
            {"env_key": "FD", "env_val": "1"},
        ],
    )
    run = await api.trigger(runner["id"])
    await wait_running_with_output(api, runner["id"], run["id"], b"torn line 5\n")
    daemon.kill()

    path = daemon.data_dir / "logs" / f"{run['id']}.log"
    data = path.read_bytes()
    offset, last = 0, None
    while offset + LOG_HEADER.size <= len(data):
        _, _, length = LOG_HEADER.unpack_from(data, offset)
        if offset + LOG_HEADER.size + length > len(data):
            break
        last = (offset, length)
        offset += LOG_HEADER.size + length
    assert last is not None, data
    # Keep the last record's header and half its payload: a write cut short.
    with open(path, "r+b") as f:
        f.truncate(last[0] + LOG_HEADER.size + last[1] // 2)

    daemon.start()
    api = api_for(http, daemon)
    done = await api.wait_done(runner["id"], run["id"], timeout=60)
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done
    want = b"".join(f"torn line {i}\n".encode() for i in range(1, 41))
    assert await api.logs(runner["id"], run["id"]) == want
    await no_containers_left(daemon)
    assert_no_tracebacks(daemon)
