"""Operating runnerd (issue 4): Prometheus metrics and /healthz, retention sweeps,
signed webhooks with retries, and the systemd notify protocol — each through a real
runnerd process, its HTTP API and the real engine; webhooks go to an HTTP server
in the test, systemd is a datagram socket in the test. What needs no engine (the
metrics format and token, webhook_url validation) is in tests/api/test_operations.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import socket
import sqlite3
import tempfile
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, wait_until, write_config
from prometheus_client.parser import text_string_to_metric_families
from webhook_receiver import Receiver, receiver  # noqa: F401 (fixture)

SECRET = "0123456789abcdef-secret"
WEBHOOKS = f'[webhooks]\nsecret = "{SECRET}"\n'
METRICS_TOKEN = "s3cret-token-123"
MISSING_IMAGE = "127.0.0.1:1/runnerd/missing"
DAY_MS = 86_400_000


# -- helpers ---------------------------------------------------------------------


def api_for(http: aiohttp.ClientSession, daemon: Daemon) -> Api:
    return Api(http, daemon.url, daemon.key)


async def metrics_text(api: Api, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with api.session.get(api.url + "/metrics", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain"), resp.headers
        return await resp.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """A sample's value; 0 when it is not there yet (a labelled counter not yet used)."""
    return parsed.get((name, frozenset(labels.items())), 0.0)


async def run_to_end(api: Api, runner_id: str, body: Any = None) -> dict[str, Any]:
    run = await api.trigger(runner_id, body)
    return await api.wait_done(runner_id, run["id"])


def log_file(daemon: Daemon, run_id: str) -> Any:
    return daemon.data_dir / "logs" / f"{run_id}.log"


async def run_ids(api: Api, runner_id: str) -> list[str]:
    status, body = await api.get(f"/v1/runners/{runner_id}/runs?limit=1000")
    assert status == 200, body
    return [r["id"] for r in body["runs"]]


# -- metrics -------------------------------------------------------------------------


async def test_metrics_count_runs_by_outcome_queue_durations_and_http_routes(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon(max_concurrent_runs=1)
    api = api_for(http, daemon)
    blocker = await api.create_runner(run_command="sleep 60")
    ok = await api.create_runner(run_command="echo fine")
    bad = await api.create_runner(run_command="exit 3")
    before = samples(await metrics_text(api))  # /metrics needs no key by default

    blocking = await api.trigger(blocker["id"])
    await api.wait_status(blocker["id"], blocking["id"], "running")
    ok_run = await api.trigger(ok["id"])
    bad_run = await api.trigger(bad["id"])
    queued = samples(await metrics_text(api))
    assert value(queued, "runnerd_runs", status="pending") == 2
    assert value(queued, "runnerd_runs", status="running") == 1

    status, body = await api.post(f"/v1/runners/{blocker['id']}/runs/{blocking['id']}/cancel")
    assert status == 200, body
    assert (await api.wait_done(ok["id"], ok_run["id"]))["status"] == "succeeded"
    failed = await api.wait_done(bad["id"], bad_run["id"])
    assert (failed["status"], failed["failure_reason"]) == ("failed", "nonzero_exit")
    after = samples(await metrics_text(api))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("runnerd_runs_completed_total", status="succeeded", failure_reason="") == 1
    assert (
        delta("runnerd_runs_completed_total", status="failed", failure_reason="nonzero_exit") == 1
    )
    assert delta("runnerd_runs_completed_total", status="failed", failure_reason="canceled") == 1
    assert delta("runnerd_run_duration_seconds_count") == 3
    assert delta("runnerd_run_queue_wait_seconds_count") == 3
    assert value(after, "runnerd_runs", status="pending") == 0
    assert value(after, "runnerd_runs", status="running") == 0
    # Requests are counted by route pattern, never by the raw ids in the path.
    assert (
        delta(
            "runnerd_http_requests_total",
            method="POST",
            route="/v1/runners/{runner_id}/runs",
            status="200",
        )
        == 3
    )
    assert (
        delta(
            "runnerd_http_request_duration_seconds_count",
            method="POST",
            route="/v1/runners/{runner_id}/runs",
        )
        == 3
    )
    for (name, labels), _ in after.items():
        if name.startswith("runnerd_http_"):
            route = dict(labels).get("route", "")
            assert not any(r["id"] in route for r in (blocker, ok, bad)), (name, labels)


async def test_metrics_count_a_failed_image_pull_and_the_engine_error(api: Api) -> None:
    before = samples(await metrics_text(api))
    runner = await api.create_runner(image_name=MISSING_IMAGE, image_tag="latest")
    run = await run_to_end(api, runner["id"])
    assert (run["status"], run["failure_reason"]) == ("failed", "image_pull_failed"), run
    after = samples(await metrics_text(api))
    assert value(after, "runnerd_image_pulls_total", result="error") > value(
        before, "runnerd_image_pulls_total", result="error"
    )
    assert value(after, "runnerd_docker_api_errors_total", operation="pull") > value(
        before, "runnerd_docker_api_errors_total", operation="pull"
    )


# -- health ------------------------------------------------------------------------


async def test_healthz_reports_engine_version_and_queue_depth(api: Api, docker_engine: str) -> None:
    status, body = await api.get("/healthz", key="")
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["engine"]["version"] == docker_engine
    assert body["queue"] == {"pending": 0, "running": 0}

    runner = await api.create_runner(run_command="sleep 60")
    run = await api.trigger(runner["id"])
    await api.wait_status(runner["id"], run["id"], "running")
    status, body = await api.get("/healthz", key="")
    assert status == 200 and body["queue"] == {"pending": 0, "running": 1}, body


# -- retention -----------------------------------------------------------------------


async def test_retention_keeps_only_the_newest_completed_runs_and_deletes_the_rest_with_logs(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon("[retention]\nmax_runs_per_runner = 2\nsweep_interval_seconds = 1\n")
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo kept-or-not")
    ids = []
    for _ in range(5):
        run = await run_to_end(api, runner["id"])
        assert run["status"] == "succeeded", run
        ids.append(run["id"])
    newest_two = ids[:-3:-1]  # the list is newest first

    # A sweep deletes the rows, then their logs: the logs go a moment after the
    # runs leave the API, so both are waited for.
    async def swept() -> bool:
        gone = not any(log_file(daemon, i).exists() for i in ids[:3])
        return gone and await run_ids(api, runner["id"]) == newest_two

    await wait_until(swept, timeout=15, what="the sweep to keep only the newest 2 runs")
    for run_id in ids[:3]:
        status, _ = await api.get(f"/v1/runners/{runner['id']}/runs/{run_id}")
        assert status == 404
    for run_id in newest_two:
        assert log_file(daemon, run_id).exists(), run_id
        assert await api.logs(runner["id"], run_id) == b"kept-or-not\n"


async def test_retention_never_deletes_or_counts_pending_and_running_runs(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon("[retention]\nmax_runs_per_runner = 2\nsweep_interval_seconds = 1\n")
    api = api_for(http, daemon)
    long_env = {"env_variables": [{"env_key": "LONG", "env_val": "1"}]}
    # Runner A: at most 2 runs at a time, so a third long one waits, pending.
    a = await api.create_runner(
        run_command='if [ "$LONG" = 1 ]; then echo long; sleep 60; else echo quick; fi',
        max_concurrent_runs=2,
    )
    long1 = await api.trigger(a["id"], long_env)
    await api.wait_status(a["id"], long1["id"], "running")
    quick = [(await run_to_end(api, a["id"]))["id"] for _ in range(2)]
    long2 = await api.trigger(a["id"], long_env)
    await api.wait_status(a["id"], long2["id"], "running")
    waiting = await api.trigger(a["id"], long_env)
    assert (await api.run(a["id"], waiting["id"]))["status"] == "pending"

    # Runner B's oldest of 3 completed runs goes: proof that sweeps ran after
    # runner A had 5 runs, 2 of them completed.
    b = await api.create_runner(run_command="echo b")
    b_runs = [(await run_to_end(api, b["id"]))["id"] for _ in range(3)]

    async def swept() -> bool:  # the row, then the log (see above)
        gone = not log_file(daemon, b_runs[0]).exists()
        return gone and b_runs[0] not in await run_ids(api, b["id"])

    await wait_until(swept, timeout=15, what="the sweep to delete runner B's oldest run")
    # Runner A keeps all: its running and pending runs are neither deleted nor
    # counted against its 2 completed runs.
    assert await run_ids(api, a["id"]) == [
        waiting["id"],
        long2["id"],
        quick[1],
        quick[0],
        long1["id"],
    ]
    assert (await api.run(a["id"], long1["id"]))["status"] == "running"
    assert (await api.run(a["id"], waiting["id"]))["status"] == "pending"
    assert all(log_file(daemon, i).exists() for i in (long1["id"], long2["id"], *quick))


async def test_retention_max_age_applies_retroactively_after_a_restart(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon()  # no retention yet
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo aging")
    ids = [(await run_to_end(api, runner["id"]))["id"] for _ in range(3)]
    assert all(log_file(daemon, i).exists() for i in ids)
    assert daemon.stop() == 0

    # Two runs completed two days ago (as if the daemon had run that long).
    old = ids[:2]
    with sqlite3.connect(daemon.data_dir / "runnerd.db") as db:
        db.executemany(
            "UPDATE runs SET created_at = created_at - ?, started_at = started_at - ?,"
            " completed_at = completed_at - ? WHERE id = ?",
            [(2 * DAY_MS, 2 * DAY_MS, 2 * DAY_MS, i) for i in old],
        )
    db.close()
    write_config(
        daemon.config_path,
        daemon.data_dir,
        "[retention]\nmax_age_days = 1\nsweep_interval_seconds = 1\n",
    )
    daemon.start()
    api = api_for(http, daemon)

    async def swept() -> bool:
        return await run_ids(api, runner["id"]) == [ids[2]]

    await wait_until(swept, timeout=15, what="the runs older than max_age_days to be deleted")

    # The rows go first, then their log files (never a run without its log); the sweep
    # logs once it has deleted the files and read its last (empty) batch.
    async def logged() -> bool:
        return "retention: deleted 2 completed runs" in daemon.log_text()

    await wait_until(logged, timeout=15, what="the sweep's log line")
    assert not any(log_file(daemon, i).exists() for i in old)
    assert log_file(daemon, ids[2]).exists()


async def test_deleting_a_runner_deletes_its_runs_and_their_log_files(
    daemon: Daemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="echo bye")
    other = await api.create_runner(run_command="echo stays")
    ids = [(await run_to_end(api, runner["id"]))["id"] for _ in range(2)]
    other_run = (await run_to_end(api, other["id"]))["id"]
    assert all(log_file(daemon, i).exists() for i in ids)

    status, body = await api.delete(f"/v1/runners/{runner['id']}")
    assert (status, body) == (200, {"deleted": True})
    assert not any(log_file(daemon, i).exists() for i in ids)
    status, _ = await api.get(f"/v1/runners/{runner['id']}/runs")
    assert status == 404
    with sqlite3.connect(daemon.data_dir / "runnerd.db") as db:
        left = db.execute(
            f"SELECT count(*) FROM runs WHERE id IN ({','.join('?' * len(ids))})", ids
        ).fetchone()[0]
    db.close()
    assert left == 0
    assert log_file(daemon, other_run).exists()
    assert await api.logs(other["id"], other_run) == b"stays\n"


# -- webhooks ------------------------------------------------------------------------


def assert_signed(body: bytes, headers: dict[str, str]) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers.get("X-Runnerd-Signature", ""), expected), headers


async def wait_webhook(
    api: Api, runner_id: str, run_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        run = await api.run(runner_id, run_id)
        return run if run["webhook_status"] == status else None

    return await wait_until(reached, timeout=timeout, what=f"webhook_status {status}")


async def test_webhook_posts_the_completed_run_signed_with_hmac_sha256(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    api = api_for(http, start_daemon(WEBHOOKS))
    runner = await api.create_runner(run_command="exit 4", webhook_url=receiver.url)
    assert runner["webhook_url"] == receiver.url
    run = await run_to_end(api, runner["id"])
    done = await wait_webhook(api, runner["id"], run["id"], "delivered")

    assert len(receiver.requests) == 1
    body, headers = receiver.requests[0]
    assert_signed(body, headers)
    assert headers["Content-Type"].startswith("application/json")
    payload = json.loads(body)
    assert set(payload) == {"run", "runner_id", "will_retry"}
    assert payload["runner_id"] == runner["id"]
    assert payload["will_retry"] is False  # the runner has no retry_policy
    sent = payload["run"]
    assert sent["id"] == run["id"]
    assert (sent["status"], sent["exit_code"], sent["failure_reason"]) == (
        "failed",
        4,
        "nonzero_exit",
    )
    assert sent["completed_at"] == done["completed_at"]


async def test_webhook_is_retried_after_a_500_with_the_same_signed_body(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async def fail_first(n: int) -> int:
        return 500 if n == 1 else 200

    receiver.respond = fail_first
    api = api_for(http, start_daemon(WEBHOOKS))
    runner = await api.create_runner(run_command="echo hi", webhook_url=receiver.url)
    run = await run_to_end(api, runner["id"])
    await wait_webhook(api, runner["id"], run["id"], "delivered")

    assert len(receiver.requests) == 2
    (body1, headers1), (body2, headers2) = receiver.requests
    assert body1 == body2
    assert headers1["X-Runnerd-Signature"] == headers2["X-Runnerd-Signature"]
    assert_signed(body2, headers2)
    assert json.loads(body2)["run"]["status"] == "succeeded"


async def test_webhook_to_a_receiver_that_always_fails_ends_failed(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async def always_500(n: int) -> int:
        return 500

    receiver.respond = always_500
    api = api_for(http, start_daemon(WEBHOOKS + "max_retry_seconds = 2\n"))
    runner = await api.create_runner(run_command="echo hi", webhook_url=receiver.url)
    run = await run_to_end(api, runner["id"])
    await wait_webhook(api, runner["id"], run["id"], "failed", timeout=30)
    assert 1 <= len(receiver.requests) <= 4, len(receiver.requests)


async def test_run_of_a_runner_without_webhook_url_has_webhook_status_null(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    api = api_for(http, start_daemon(WEBHOOKS))
    runner = await api.create_runner(run_command="echo hi")
    assert runner["webhook_url"] is None
    run = await run_to_end(api, runner["id"])
    assert run["webhook_status"] is None
    assert receiver.requests == []


async def test_stalled_webhook_receiver_does_not_delay_the_scheduler(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async def stall(n: int) -> int:
        await asyncio.sleep(30)
        return 200

    receiver.respond = stall
    api = api_for(http, start_daemon(WEBHOOKS + "timeout_seconds = 20\n", max_concurrent_runs=1))
    runner = await api.create_runner(run_command="echo hi", webhook_url=receiver.url)
    first = await run_to_end(api, runner["id"])
    assert first["status"] == "succeeded"

    async def stalled() -> bool:
        return len(receiver.requests) >= 1

    await wait_until(stalled, timeout=10, what="the receiver to get the first delivery")
    # While that delivery hangs, runs keep starting and completing, well inside
    # the 20 s the delivery may take.
    for _ in range(3):
        run = await api.trigger(runner["id"])
        done = await api.wait_done(runner["id"], run["id"], timeout=15)
        assert done["status"] == "succeeded", done
    assert (await api.run(runner["id"], first["id"]))["webhook_status"] == "pending"


# -- systemd notify --------------------------------------------------------------------


@pytest.fixture
def notify_socket() -> Any:
    """A datagram socket standing in for systemd's (a short path: AF_UNIX limits it)."""
    tmp = tempfile.mkdtemp(prefix="rnd-", dir="/tmp")
    path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()
    shutil.rmtree(tmp, ignore_errors=True)


async def next_datagram(sock: socket.socket, timeout: float) -> dict[str, str]:
    raw = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), timeout)
    fields = dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)
    return fields


async def test_systemd_gets_ready_watchdog_pings_and_stopping(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    notify_socket: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = start_daemon()
    api = api_for(http, daemon)

    while (ready := await next_datagram(sock, 30)).get("READY") != "1":
        assert ready == {"WATCHDOG": "1"}, ready  # pings may come first
    assert ready.get("STATUS") == "serving; 0 pending, 0 running", ready  # the queue depth
    status, body = await api.get("/healthz", key="")  # ready means serving
    assert status == 200, body

    pings = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while pings < 2:
        message = await next_datagram(sock, max(0.01, deadline - loop.time()))
        if message.get("WATCHDOG") == "1":
            pings += 1
    assert pings >= 2

    stop = asyncio.ensure_future(asyncio.to_thread(daemon.stop))
    try:
        while True:
            message = await next_datagram(sock, 10)
            if message.get("STOPPING") == "1":
                break
            assert message.get("WATCHDOG") == "1" or "STATUS" in message, message
    finally:
        assert await stop == 0, daemon.log_text()
