"""Docker engine outages (issue 3): runnerd talks to the real engine through a unix
socket proxy the test switches off and on (socket_proxy.py), so the engine
"goes away" for runnerd alone — its containers keep running in the real engine,
which the test watches over the engine's own socket.

The proxy runs in the test's event loop, so the daemon is started from a thread
(`asyncio.to_thread`): its start-up talks to the engine through the proxy while
the test waits for it to listen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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
from helpers_engine import LABEL_RUN, RELEASE, EngineProbe
from socket_proxy import SocketProxy

RECOVERY_DEADLINE = 60  # the scheduler backs off up to 30 s; outages here are short


@pytest.fixture
async def daemon(start_proxied_daemon: Callable[..., Awaitable[Daemon]]) -> Daemon:
    """A runnerd whose only way to the engine is the proxy."""
    return await start_proxied_daemon()


@pytest.fixture
def api(http: aiohttp.ClientSession, daemon: Daemon) -> Api:
    return Api(http, daemon.url, daemon.key)


async def healthz(api: Api) -> tuple[int, Any]:
    return await api.get("/healthz")


async def wait_health(api: Api, status: int, timeout: float = 20) -> Any:
    async def answered() -> Any:
        code, body = await healthz(api)
        return body if code == status else None

    return await wait_until(answered, timeout=timeout, what=f"/healthz to answer {status}")


async def wait_logs(
    api: Api, runner_id: str, run_id: str, expected: bytes, timeout: float = 30
) -> None:
    async def has() -> bool:
        return expected in await api.logs(runner_id, run_id)

    await wait_until(has, timeout=timeout, what=f"{expected!r} in the log of run {run_id}")


async def container_of(engine: EngineProbe, run_id: str) -> dict[str, Any]:
    return await engine.running_container_of(run_id)


async def wait_container_exited(engine: EngineProbe, container_id: str) -> dict[str, Any]:
    async def exited() -> dict[str, Any] | None:
        data = await engine.inspect(container_id)
        return data if data["State"]["Status"] == "exited" else None

    return await wait_until(exited, timeout=30, what=f"container {container_id[:12]} to exit")


# -- engine unreachable ---------------------------------------------------------------------


async def test_engine_unreachable_healthz_503_triggers_stay_pending_and_run_when_it_returns(
    api: Api, daemon: Daemon, proxy: SocketProxy, engine: EngineProbe
) -> None:
    runner = await api.create_runner(run_command='echo "ran $N"')
    assert (await healthz(api))[0] == 200

    await proxy.stop()
    body = await wait_health(api, 503)
    assert body["status"] == "unavailable" and body["error"], body

    runs = []
    for i in range(3):
        run = await api.trigger(
            runner["id"], {"env_variables": [{"env_key": "N", "env_val": str(i)}]}
        )
        assert run["status"] == "pending", run
        runs.append(run)

    # The scheduler tried, found no engine and backed off (at least twice) ...
    async def backed_off_twice() -> bool:
        return daemon.log_text().count("stays pending") >= 2

    await wait_until(backed_off_twice, timeout=20, what="the scheduler to back off twice")
    # ... and nothing moved: every run is still pending, and no container exists.
    for run in runs:
        now = await api.run(runner["id"], run["id"])
        assert now["status"] == "pending" and now["started_at"] is None, now
        assert await engine.for_run(run["id"]) == []
    assert (await healthz(api))[0] == 503

    await proxy.start()
    assert (await wait_health(api, 200))["status"] == "ok"
    # No manual step: the queue runs by itself.
    for i, run in enumerate(runs):
        done = await api.wait_done(runner["id"], run["id"], timeout=RECOVERY_DEADLINE)
        assert done["status"] == "succeeded", done
        assert await api.logs(runner["id"], run["id"]) == f"ran {i}\n".encode()
        await engine.wait_gone(run["id"])


async def test_daemon_started_while_engine_unreachable_runs_its_queue_once_it_answers(
    proxy: SocketProxy, start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    await proxy.stop()
    extra = f'[docker]\nurl = "unix://{proxy.path}"\nnetwork = "none"\nstop_grace_seconds = 1\n'
    d: Daemon = await asyncio.to_thread(start_daemon, extra)
    api = Api(http, d.url, d.key)
    assert (await healthz(api))[0] == 503
    runner = await api.create_runner(argv=["echo", "late"])
    run = await api.trigger(runner["id"])
    assert run["status"] == "pending"

    await proxy.start()
    done = await api.wait_done(runner["id"], run["id"], timeout=RECOVERY_DEADLINE)
    assert done["status"] == "succeeded", done
    assert await api.logs(runner["id"], run["id"]) == b"late\n"


# -- engine lost mid-run ----------------------------------------------------------------------


async def test_engine_connection_lost_mid_run_reattaches_and_run_succeeds_with_full_log(
    api: Api, daemon: Daemon, proxy: SocketProxy, engine: EngineProbe
) -> None:
    runner = await api.create_runner(run_command="echo a; sleep 3; echo b")
    run = await api.trigger(runner["id"])
    await wait_logs(api, runner["id"], run["id"], b"a\n")

    await proxy.stop()  # cuts the daemon's wait and log stream mid-run
    await wait_log_line(daemon, f"run {run['id']}: lost touch with the engine")
    assert (await api.run(runner["id"], run["id"]))["status"] == "running"
    await asyncio.sleep(1)  # a short outage; the container runs on meanwhile
    await proxy.start()

    done = await api.wait_done(runner["id"], run["id"], timeout=RECOVERY_DEADLINE)
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0 and done["failure_reason"] is None, done
    assert await api.logs(runner["id"], run["id"]) == b"a\nb\n"
    await engine.wait_gone(run["id"])


async def test_container_exiting_while_engine_unreachable_is_recorded_with_its_exit_and_log(
    api: Api, daemon: Daemon, proxy: SocketProxy, engine: EngineProbe
) -> None:
    runner = await api.create_runner(
        run_command="echo a; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo b; exit 5"
    )
    run = await api.trigger(runner["id"])
    await wait_logs(api, runner["id"], run["id"], b"a\n")
    container = await container_of(engine, run["id"])

    await proxy.stop()
    await wait_log_line(daemon, f"run {run['id']}: lost touch with the engine")
    # The container finishes while runnerd cannot see the engine.
    assert await engine.exec(container["Id"], *RELEASE) == 0
    await wait_container_exited(engine, container["Id"])
    assert (await api.run(runner["id"], run["id"]))["status"] == "running"

    await proxy.start()
    done = await api.wait_done(runner["id"], run["id"], timeout=RECOVERY_DEADLINE)
    assert (done["status"], done["exit_code"], done["failure_reason"]) == (
        "failed",
        5,
        "nonzero_exit",
    ), done
    assert await api.logs(runner["id"], run["id"]) == b"a\nb\n"
    await engine.wait_gone(run["id"])


# -- container killed or removed under the daemon ---------------------------------------------


async def test_container_killed_under_the_daemon_ends_failed_with_exit_137(
    api: Api, engine: EngineProbe
) -> None:
    runner = await api.create_runner(run_command="echo started; sleep 60")
    run = await api.trigger(runner["id"])
    await wait_logs(api, runner["id"], run["id"], b"started\n")
    container = await container_of(engine, run["id"])

    await engine.kill(container["Id"])

    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert done["status"] == "failed", done
    assert done["exit_code"] == 137, done
    assert done["failure_reason"] == "nonzero_exit", done
    assert await api.logs(runner["id"], run["id"]) == b"started\n"
    await engine.wait_gone(run["id"])


async def test_container_killed_while_engine_unreachable_is_reconciled_as_failed_137(
    api: Api, daemon: Daemon, proxy: SocketProxy, engine: EngineProbe
) -> None:
    runner = await api.create_runner(run_command="echo started; sleep 60")
    run = await api.trigger(runner["id"])
    await wait_logs(api, runner["id"], run["id"], b"started\n")
    container = await container_of(engine, run["id"])

    await proxy.stop()
    await wait_log_line(daemon, f"run {run['id']}: lost touch with the engine")
    await engine.kill(container["Id"])
    await wait_container_exited(engine, container["Id"])
    await proxy.start()

    done = await api.wait_done(runner["id"], run["id"], timeout=RECOVERY_DEADLINE)
    assert (done["status"], done["exit_code"]) == ("failed", 137), done
    assert done["failure_reason"] == "nonzero_exit", done
    await engine.wait_gone(run["id"])


async def test_container_removed_while_engine_unreachable_marks_run_lost_never_succeeded(
    api: Api, daemon: Daemon, proxy: SocketProxy, engine: EngineProbe
) -> None:
    runner = await api.create_runner(run_command="echo started; sleep 60")
    run = await api.trigger(runner["id"])
    await wait_logs(api, runner["id"], run["id"], b"started\n")
    container = await container_of(engine, run["id"])

    await proxy.stop()
    await wait_log_line(daemon, f"run {run['id']}: lost touch with the engine")
    await engine.remove(container["Id"])
    await proxy.start()

    done = await api.wait_done(runner["id"], run["id"], timeout=RECOVERY_DEADLINE)
    assert done["status"] == "failed", done
    assert done["failure_reason"] == "lost", done
    assert done["exit_code"] is None, done
    assert isinstance(done["error"], str) and done["error"].strip(), done
    assert await api.logs(runner["id"], run["id"]) == b"started\n"
    assert await engine.containers({LABEL_RUN: run["id"]}, all=True) == []


# -- cancel while the engine is unreachable ---------------------------------------------------


async def test_cancel_while_engine_unreachable_is_not_a_500_and_never_falsifies_the_run(
    api: Api, daemon: Daemon, proxy: SocketProxy, engine: EngineProbe
) -> None:
    """The daemon cannot stop the container without the engine. Acceptable: 503 and
    the run is untouched (ends as it really ends), or 200 and the run ends canceled
    with its container stopped once the engine answers. Not acceptable: a 500, or
    a run that ran to its natural end recorded as canceled."""
    runner = await api.create_runner(
        run_command="echo a; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo b"
    )
    run = await api.trigger(runner["id"])
    await wait_logs(api, runner["id"], run["id"], b"a\n")
    container = await container_of(engine, run["id"])

    await proxy.stop()
    await wait_log_line(daemon, f"run {run['id']}: lost touch with the engine")
    status, body = await api.post(f"/v1/runners/{runner['id']}/runs/{run['id']}/cancel")
    await proxy.start()
    if status != 200:
        # Not canceled: the run goes on; let it finish on its own.
        assert await engine.exec(container["Id"], *RELEASE) == 0
    done = await api.wait_done(runner["id"], run["id"], timeout=RECOVERY_DEADLINE)
    logs = await api.logs(runner["id"], run["id"])
    await engine.wait_gone(run["id"])

    problems = []
    if status not in (200, 503):
        problems.append(f"cancel answered {status} {body}")
    if status == 200 and (done["status"], done["failure_reason"]) != ("failed", "canceled"):
        problems.append(f"cancel answered 200 but the run ended {done}")
    if status != 200 and done["failure_reason"] == "canceled":
        problems.append(
            f"cancel answered {status}, yet the run, which ran to its natural "
            f"end (log {logs!r}), was recorded {done}"
        )
    if status != 200 and done["status"] != "succeeded":
        problems.append(f"the run was not canceled but ended {done}")
    assert not problems, "\n".join(problems) + "\n" + daemon_errors(daemon)


# -- cancel while the engine is slow at one step -------------------------------------------------

CREATE = r"^POST \S*/containers/create"
START = r"^POST \S*/containers/[0-9a-f]{64}/start"


async def test_cancel_while_engine_is_slow_creating_the_container_means_it_never_starts(
    api: Api, daemon: Daemon, proxy: SocketProxy, engine: EngineProbe
) -> None:
    runner = await api.create_runner(run_command="echo ran")
    proxy.hold(CREATE)
    run = await api.trigger(runner["id"])

    async def held() -> bool:
        return proxy.held >= 1

    await wait_until(held, timeout=20, what="the daemon to ask the engine for a container")
    status, body = await api.post(f"/v1/runners/{runner['id']}/runs/{run['id']}/cancel")
    assert status == 200, body
    assert (body["run"]["status"], body["run"]["failure_reason"]) == ("failed", "canceled")
    assert body["run"]["started_at"] is None, body
    proxy.release()

    # The daemon finishes that step: the container made for the canceled run is removed.
    async def removed() -> bool:
        return proxy.seen(r"^DELETE \S*/containers/") >= 1

    await wait_until(removed, timeout=20, what="the daemon to remove the unneeded container")
    await engine.wait_gone(run["id"])
    assert proxy.seen(r"/start") == 0, "the canceled run's container was started"
    assert await api.run(runner["id"], run["id"]) == body["run"]
    assert await api.logs(runner["id"], run["id"]) == b""


async def test_cancel_while_engine_is_slow_starting_the_container_stops_it_once_started(
    api: Api, daemon: Daemon, proxy: SocketProxy, engine: EngineProbe
) -> None:
    runner = await api.create_runner(argv=["sleep", "60"])
    proxy.hold(START)
    run = await api.trigger(runner["id"])

    async def held() -> bool:
        return proxy.held >= 1

    await wait_until(held, timeout=20, what="the daemon to start the container")
    assert (await api.run(runner["id"], run["id"]))["status"] == "running"

    cancel = asyncio.create_task(api.post(f"/v1/runners/{runner['id']}/runs/{run['id']}/cancel"))

    # The executor keeps the cancel while the start is held and applies it right
    # after the container starts; give the request a moment to reach the daemon.
    await asyncio.sleep(0.5)
    assert not cancel.done()
    proxy.release()
    status, body = await cancel
    assert status == 200, (body, daemon_errors(daemon))
    assert (body["run"]["status"], body["run"]["failure_reason"]) == ("failed", "canceled")
    assert body["run"]["exit_code"] == 137, body  # started, then stopped: SIGKILL
    await engine.wait_gone(run["id"])
    assert await api.run(runner["id"], run["id"]) == body["run"]


async def test_engine_lost_while_starting_the_container_still_runs_it_once_it_returns(
    api: Api, daemon: Daemon, proxy: SocketProxy, engine: EngineProbe
) -> None:
    """The store has the run `running` and its container is created, but the start
    request never reaches the engine: once it answers again the container is
    started and the run completes — not `lost`, not failed."""
    runner = await api.create_runner(run_command="echo once")
    proxy.hold(START)
    run = await api.trigger(runner["id"])

    async def held() -> bool:
        return proxy.held >= 1

    await wait_until(held, timeout=20, what="the daemon to start the container")
    await proxy.stop()  # the start request is cut before the engine sees it
    proxy.release()
    await wait_log_line(daemon, f"run {run['id']}: lost touch with the engine")
    assert (await api.run(runner["id"], run["id"]))["status"] == "running"
    await proxy.start()

    done = await api.wait_done(runner["id"], run["id"], timeout=RECOVERY_DEADLINE)
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done
    assert await api.logs(runner["id"], run["id"]) == b"once\n"
    await engine.wait_gone(run["id"])
