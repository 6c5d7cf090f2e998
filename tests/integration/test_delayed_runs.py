"""Delayed runs and a run's own timeout on a real daemon and the real engine: a run
with `run_at` stays pending until its time (across a restart too), then runs; a
canceled one never gets a container; `timeout_seconds` of the trigger is the one
enforced; and the CLI's `runs trigger --at --timeout` and `runs list` columns."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import pytest
from conftest import LABEL_DAEMON, Api, Daemon
from helpers_engine import engine_api

from runnerd.timefmt import parse_time

pytestmark = pytest.mark.swarm  # these run on the swarm backend too


def ms_now() -> int:
    return time.time_ns() // 1_000_000


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def api_for(http: aiohttp.ClientSession, daemon: Daemon) -> Api:
    """A client for the daemon's current process (the port changes on restart)."""
    return Api(http, daemon.url, daemon.key)


def daemon_containers(daemon: Daemon) -> list[str]:
    return engine_api.container_ids({LABEL_DAEMON: daemon.daemon_id()})


async def stays_pending_until(api: Api, runner_id: str, run_id: str, until_ms: int) -> None:
    """The run is pending every time it is looked at before `until_ms`."""
    while ms_now() < until_ms - 200:  # (the last look well before the time)
        run = await api.run(runner_id, run_id)
        assert run["status"] == "pending" and run["started_at"] is None, run
        await asyncio.sleep(0.1)


async def test_a_delayed_run_stays_pending_until_its_time_then_runs(
    daemon: Daemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="echo delayed")
    at = ms_now() + 3000
    run = await api.trigger(runner["id"], {"run_at": utc(at)})
    assert run["status"] == "pending" and parse_time(run["not_before"]) == at, run
    await stays_pending_until(api, runner["id"], run["id"], at)
    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert done["status"] == "succeeded", done
    started = parse_time(done["started_at"])
    assert started >= at, done
    assert started < at + 5000, f"started {started - at} ms after its time: {done}"
    assert await api.logs(runner["id"], run["id"]) == b"delayed\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_delayed_run_survives_a_restart_while_it_waits(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, sig: signal.Signals
) -> None:
    daemon = start_daemon()
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo after the restart")
    # Far enough off for the restart to be over well before it: a loaded CI machine
    # restarting on Podman has taken more than 7 s.
    at = ms_now() + 15000
    run = await api.trigger(runner["id"], {"run_at": utc(at)})
    daemon.stop(sig)
    daemon.start()
    api = api_for(http, daemon)
    assert ms_now() < at - 1000, "the restart took too long for this test to mean anything"
    back = await api.run(runner["id"], run["id"])
    assert back["status"] == "pending" and back["not_before"] == run["not_before"], back
    await stays_pending_until(api, runner["id"], run["id"], at)
    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert done["status"] == "succeeded" and parse_time(done["started_at"]) >= at, done
    assert await api.logs(runner["id"], run["id"]) == b"after the restart\n"


async def test_the_triggers_timeout_seconds_is_the_one_enforced(daemon: Daemon, api: Api) -> None:
    runner = await api.create_runner(run_command="sleep 30", timeout_seconds=600)
    run = await api.trigger(runner["id"], {"timeout_seconds": 1})
    assert run["timeout_seconds"] == 1
    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert (done["status"], done["failure_reason"]) == ("failed", "timeout"), done
    took = (parse_time(done["completed_at"]) - parse_time(done["started_at"])) / 1000
    assert 0.9 <= took < 1 + 1 + 10, f"stopped after {took:.1f} s: {done}"  # + stop grace
    assert "timeout of 1 second and" in done["error"], done


async def test_a_delayed_run_canceled_while_it_waits_never_gets_a_container(
    daemon: Daemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="echo should not run")
    run = await api.trigger(runner["id"], {"run_at": utc(ms_now() + 2000)})
    status, body = await api.post(f"/v1/runners/{runner['id']}/runs/{run['id']}/cancel")
    assert status == 200, body
    assert (body["run"]["status"], body["run"]["failure_reason"]) == ("failed", "canceled")
    # a run due after the canceled one's time: once it has run, that time has passed
    marker_runner = await api.create_runner(run_command="echo marker")
    marker = await api.trigger(marker_runner["id"], {"run_at": utc(ms_now() + 2500)})
    await api.wait_done(marker_runner["id"], marker["id"], timeout=30)
    after = await api.run(runner["id"], run["id"])
    assert after == body["run"], after  # unchanged: never started
    assert await api.logs(runner["id"], run["id"]) == b""
    assert len(daemon_containers(daemon)) <= 1  # the marker's, if not yet removed


# -- the CLI ----------------------------------------------------------------------


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNERD_")}
    env.update(RUNNERD_URL=daemon.url, RUNNERD_TOKEN=daemon.key)
    result = subprocess.run(
        [sys.executable, "-m", "runnerd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def show(stdout: str) -> dict[str, str]:
    return {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in stdout.splitlines())
    }


async def test_cli_triggers_a_delayed_run_with_its_own_timeout_and_lists_it(
    daemon: Daemon, api: Api
) -> None:
    await api.create_runner(name="cli-delayed", run_command="echo later")
    before = ms_now()
    shown = show(ok(cli(daemon, "runs", "trigger", "cli-delayed", "--at", "+1h", "--timeout", "5")))
    assert shown["status"] == "pending" and shown["trigger"] == "api", shown
    assert shown["attempt"] == "1" and shown["timeout_seconds"] == "5", shown
    not_before = parse_time(shown["not_before"])
    assert before + 3_600_000 <= not_before <= ms_now() + 3_600_000, shown
    for key in ("retry_of", "schedule_id", "scheduled_for", "parent_run_id"):
        assert shown[key] == "-", shown  # `runs show`/`trigger` print every field

    now_run = ok(cli(daemon, "runs", "trigger", "cli-delayed", "--json"))
    assert '"not_before": null' in now_run
    lines = ok(cli(daemon, "runs", "list", "cli-delayed")).splitlines()
    header = lines[0].split()
    assert header == [
        *("ID", "STATUS", "TRIGGER", "ATTEMPT", "EXIT", "STARTED", "COMPLETED", "REASON"),
        *("NOT", "BEFORE"),
    ], lines
    delayed_row = next(line.split() for line in lines[1:] if shown["id"] in line)
    assert delayed_row[1:4] == ["pending", "api", "1"], delayed_row
    expected = datetime.fromisoformat(shown["not_before"]).strftime("%Y-%m-%d %H:%M:%S")
    assert " ".join(delayed_row[-2:]) == expected, (delayed_row, expected)

    at = utc(ms_now() + 60_000)  # the API's own format passes through as it is
    assert parse_time(
        show(ok(cli(daemon, "runs", "trigger", "cli-delayed", "--at", at)))["not_before"]
    ) == parse_time(at)

    waited = cli(daemon, "runs", "trigger", "cli-delayed", "--at", "+2s", "--wait")
    assert ok(waited) == "later\n"  # --wait waits through the delay, then for the output
    final = json.loads(
        ok(cli(daemon, "runs", "trigger", "cli-delayed", "--at", "+1s", "--wait", "--json"))
    )["run"]
    assert final["status"] == "succeeded", final
    assert parse_time(final["started_at"]) >= parse_time(final["not_before"]), final

    bad = cli(daemon, "runs", "trigger", "cli-delayed", "--at", "+10 minutes")
    assert bad.returncode == 2 and "+90s, +10m, +2h" in bad.stderr, bad.stderr
    far = cli(daemon, "runs", "trigger", "cli-delayed", "--at", "+367d")
    assert far.returncode == 2 and "at most a year (366 days)" in far.stderr, far.stderr
    far = cli(daemon, "runs", "trigger", "cli-delayed", "--at", utc(ms_now() + 367 * 86_400_000))
    assert far.returncode == 1, far
    assert "runnerd: run_at: must be at most 1 year ahead" in far.stderr, far.stderr
    short = cli(daemon, "runs", "trigger", "cli-delayed", "--timeout", "0")
    assert short.returncode == 1, short
    assert "runnerd: timeout_seconds: must be between 1 and 86400, got 0" in short.stderr


async def test_cli_runs_list_without_waiting_runs_has_no_not_before_column(
    daemon: Daemon, api: Api
) -> None:
    runner = await api.create_runner(name="cli-plain", run_command="true")
    run = await api.trigger(runner["id"])
    await api.wait_done(runner["id"], run["id"])
    lines = ok(cli(daemon, "runs", "list", "cli-plain")).splitlines()
    assert lines[0].split()[-1] == "REASON", lines
    assert lines[1].split()[:5] == [run["id"], "succeeded", "api", "1", "0"], lines
