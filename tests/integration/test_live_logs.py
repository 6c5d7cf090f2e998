"""Live and structured logs (issue 4): `?follow=true` text streams, Server-Sent
Events with Last-Event-ID resume, JSON pages with cursors and stream filters,
slow followers dropped instead of buffered, followers ended on shutdown — all
through the real HTTP API with containers on the real engine."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from conftest import Api, Daemon, wait_until

pytestmark = pytest.mark.swarm  # these run on the swarm backend too

SSE = {"Accept": "text/event-stream"}
JSON = {"Accept": "application/json"}


# -- helpers ---------------------------------------------------------------------


def logs_url(api: Api, runner_id: str, run_id: str) -> str:
    return f"{api.url}/v1/runners/{runner_id}/runs/{run_id}/logs"


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Events of an SSE stream as {"id", "event", "data"}, until the stream ends."""
    event: dict[str, Any] = {}
    data: list[str] = []
    while True:
        raw = await resp.content.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if event or data:
                event["data"] = "\n".join(data)
                yield event
            event, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            event[name] = value


async def read_sse(
    api: Api,
    runner_id: str,
    run_id: str,
    *,
    timeout: float = 60,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every event of an SSE logs stream, read until the daemon ends it."""

    async def read() -> list[dict[str, Any]]:
        async with api.session.get(
            logs_url(api, runner_id, run_id), headers={**api.headers(), **SSE, **(headers or {})}
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            return [e async for e in sse_events(resp)]

    return await asyncio.wait_for(read(), timeout)


async def json_logs(api: Api, runner_id: str, run_id: str, query: str = "") -> tuple[int, Any]:
    return await api.get(f"/v1/runners/{runner_id}/runs/{run_id}/logs{query}", headers=JSON)


async def completed_run(api: Api, command: str) -> tuple[str, str]:
    """A runner running `command`, one run of it carried to success: (runner, run)."""
    runner = await api.create_runner(run_command=command)
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"])
    assert done["status"] == "succeeded", done
    return runner["id"], run["id"]


def log_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == "log"]


def assert_400_naming(status: int, body: Any, word: str) -> None:
    assert status == 400, (status, body)
    assert isinstance(body, dict) and body.get("errors"), body
    assert any(word in e for e in body["errors"]), (word, body)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# -- ?follow=true (text/plain) -----------------------------------------------------


async def test_follow_delivers_a_line_while_running_before_the_next_and_ends_with_full_output(
    api: Api,
) -> None:
    runner = await api.create_runner(run_command="echo first; sleep 2; echo second; sleep 2")
    rid = runner["id"]
    run = await api.trigger(rid)
    async with api.session.get(
        logs_url(api, rid, run["id"]), params={"follow": "true"}, headers=api.headers()
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        first = await asyncio.wait_for(resp.content.readline(), 30)
        assert first == b"first\n"
        # Seen while the container still runs, and before it printed the next line.
        assert (await api.run(rid, run["id"]))["status"] == "running"
        assert b"second" not in await api.logs(rid, run["id"])
        rest = await asyncio.wait_for(resp.content.read(), 30)  # ends by itself
    assert first + rest == b"first\nsecond\n"
    done = await api.run(rid, run["id"])
    assert done["status"] == "succeeded" and done["exit_code"] == 0, done


async def test_follow_with_tail_after_completion_gives_the_last_line_and_ends_at_once(
    api: Api,
) -> None:
    rid, run_id = await completed_run(api, "echo one; echo two; echo three")

    async def follow() -> bytes:
        async with api.session.get(
            logs_url(api, rid, run_id),
            params={"follow": "true", "tail": "1"},
            headers=api.headers(),
        ) as resp:
            assert resp.status == 200
            return await resp.read()

    assert await asyncio.wait_for(follow(), 10) == b"three\n"


async def test_follow_of_a_pending_run_waits_and_streams_once_it_starts(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon(max_concurrent_runs=1)
    api = Api(http, daemon.url, daemon.key)
    blocker_runner = await api.create_runner(run_command="sleep 60")
    blocker = await api.trigger(blocker_runner["id"])
    await wait_until(
        lambda: _status_is(api, blocker_runner["id"], blocker["id"], "running"),
        timeout=30,
        what="the blocking run to run",
    )
    runner = await api.create_runner(run_command="echo started; sleep 1; echo done")
    rid = runner["id"]
    run = await api.trigger(rid)
    assert (await api.run(rid, run["id"]))["status"] == "pending"

    async with http.get(
        logs_url(api, rid, run["id"]), params={"follow": "true"}, headers=api.headers()
    ) as resp:
        assert resp.status == 200
        reading = asyncio.ensure_future(resp.content.read())
        try:
            done, _ = await asyncio.wait({reading}, timeout=0.5)
            assert not done, "the follow of a pending run ended before the run started"
            assert (await api.run(rid, run["id"]))["status"] == "pending"
            status, body = await api.post(
                f"/v1/runners/{blocker_runner['id']}/runs/{blocker['id']}/cancel"
            )
            assert status == 200, body
            output = await asyncio.wait_for(reading, 60)
        finally:
            reading.cancel()
    assert output == b"started\ndone\n"
    assert (await api.run(rid, run["id"]))["status"] == "succeeded"


async def _status_is(api: Api, runner_id: str, run_id: str, status: str) -> bool:
    return (await api.run(runner_id, run_id))["status"] == status


# -- Server-Sent Events ------------------------------------------------------------


async def test_sse_sends_one_log_event_per_line_with_its_stream_then_end_with_the_run(
    api: Api,
) -> None:
    runner = await api.create_runner(
        run_command="echo out; echo err >&2; sleep 1; for i in 1 2 3; do echo line$i; done"
    )
    rid = runner["id"]
    run = await api.trigger(rid)
    events = await read_sse(api, rid, run["id"])  # connected while pending or running

    logs = log_events(events)
    assert [e.get("event") for e in events] == ["log"] * len(logs) + ["end"], events
    entries = [json.loads(e["data"]) for e in logs]
    assert all(set(x) == {"ts", "stream", "msg"} for x in entries), entries
    by_msg = {x["msg"]: x["stream"] for x in entries}
    assert by_msg == {
        "out": "stdout",
        "err": "stderr",
        "line1": "stdout",
        "line2": "stdout",
        "line3": "stdout",
    }, entries
    assert len(entries) == 5  # one event per line, none repeated
    assert [x["msg"] for x in entries][-3:] == ["line1", "line2", "line3"]
    ids = [int(e["id"]) for e in logs]
    assert ids == sorted(set(ids)), ids

    end = json.loads(events[-1]["data"])
    assert end["id"] == run["id"]
    assert end["status"] == "succeeded" and end["exit_code"] == 0, end


async def test_sse_resume_from_last_event_id_gives_exactly_the_events_after_it(api: Api) -> None:
    rid, run_id = await completed_run(
        api, "for i in 1 2 3 4 5 6; do echo line$i; done; echo tail >&2"
    )
    everything = log_events(await read_sse(api, rid, run_id))
    assert len(everything) == 7, everything

    resumed = await read_sse(api, rid, run_id, headers={"Last-Event-ID": everything[1]["id"]})
    assert resumed[-1]["event"] == "end"
    rest = log_events(resumed)
    # No gap and no repeat: the events after the 2nd, exactly, ids included.
    assert [(e["id"], e["data"]) for e in rest] == [(e["id"], e["data"]) for e in everything[2:]]
    joined = [json.loads(e["data"])["msg"] for e in everything[:2] + rest]
    assert joined == [json.loads(e["data"])["msg"] for e in everything]


async def test_sse_resume_while_live_continues_without_gaps_or_repeats(api: Api) -> None:
    runner = await api.create_runner(run_command="echo a; echo b; sleep 1; echo c; sleep 1; echo d")
    rid = runner["id"]
    run = await api.trigger(rid)
    async with api.session.get(
        logs_url(api, rid, run["id"]), headers={**api.headers(), **SSE}
    ) as resp:
        assert resp.status == 200
        first_two = []
        async for event in sse_events(resp):
            first_two.append(event)
            if len(first_two) == 2:
                break
    assert [json.loads(e["data"])["msg"] for e in first_two] == ["a", "b"]
    rest = await read_sse(api, rid, run["id"], headers={"Last-Event-ID": first_two[1]["id"]})
    assert [json.loads(e["data"])["msg"] for e in log_events(rest)] == ["c", "d"]
    assert rest[-1]["event"] == "end" and json.loads(rest[-1]["data"])["status"] == "succeeded"


async def test_sse_bad_last_event_id_is_400(api: Api) -> None:
    rid, run_id = await completed_run(api, "echo out; echo more")
    for bad in ("abc", "7", "-1"):
        async with api.session.get(
            logs_url(api, rid, run_id), headers={**api.headers(), **SSE, "Last-Event-ID": bad}
        ) as resp:
            body = (
                await resp.json() if resp.content_type == "application/json" else await resp.text()
            )
            assert_400_naming(resp.status, body, "Last-Event-ID")


# -- JSON pages ------------------------------------------------------------------


async def test_json_logs_keep_stdout_and_stderr_apart_each_in_order(api: Api) -> None:
    rid, run_id = await completed_run(
        api, "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"
    )
    status, body = await json_logs(api, rid, run_id)
    assert status == 200, body
    assert set(body) == {"logs"}
    entries = body["logs"]
    assert all(set(e) == {"id", "ts", "stream", "msg"} for e in entries), entries
    assert sorted((e["msg"], e["stream"]) for e in entries) == sorted(
        [(f"out{i}", "stdout") for i in range(1, 6)] + [(f"err{i}", "stderr") for i in range(1, 6)]
    )

    status, body = await json_logs(api, rid, run_id, "?stream=stdout")
    assert status == 200, body
    assert [(e["msg"], e["stream"]) for e in body["logs"]] == [
        (f"out{i}", "stdout") for i in range(1, 6)
    ]
    status, body = await json_logs(api, rid, run_id, "?stream=stderr")
    assert status == 200, body
    assert [(e["msg"], e["stream"]) for e in body["logs"]] == [
        (f"err{i}", "stderr") for i in range(1, 6)
    ]


async def test_json_logs_limit_defaults_to_200_and_allows_up_to_2500(api: Api) -> None:
    rid, run_id = await completed_run(api, "seq 1 300")
    status, body = await json_logs(api, rid, run_id)
    assert status == 200, body
    assert [e["msg"] for e in body["logs"]] == [str(i) for i in range(1, 201)]
    status, body = await json_logs(api, rid, run_id, "?limit=2500")
    assert status == 200, body
    assert [e["msg"] for e in body["logs"]] == [str(i) for i in range(1, 301)]
    status, body = await json_logs(api, rid, run_id, "?limit=2501")
    assert_400_naming(status, body, "limit")
    status, body = await json_logs(api, rid, run_id, "?limit=0")
    assert_400_naming(status, body, "limit")


async def test_json_logs_after_cursor_pages_the_whole_log_without_overlap(api: Api) -> None:
    rid, run_id = await completed_run(api, "seq 1 300")
    seen: list[str] = []
    ids: list[str] = []
    query = "?limit=70"
    for _ in range(10):
        status, body = await json_logs(api, rid, run_id, query)
        assert status == 200, body
        page = body["logs"]
        if not page:
            break
        assert len(page) <= 70
        seen += [e["msg"] for e in page]
        ids += [e["id"] for e in page]
        query = f"?limit=70&after={page[-1]['id']}"
    assert seen == [str(i) for i in range(1, 301)]
    assert len(set(ids)) == 300


async def test_json_logs_before_cursor_gives_the_entries_just_before_it(api: Api) -> None:
    rid, run_id = await completed_run(api, "seq 1 300")
    status, body = await json_logs(api, rid, run_id, "?limit=2500")
    assert status == 200, body
    entries = body["logs"]
    cursor = entries[149]["id"]  # the line "150"
    status, body = await json_logs(api, rid, run_id, f"?before={cursor}&limit=5")
    assert status == 200, body
    assert [e["msg"] for e in body["logs"]] == ["145", "146", "147", "148", "149"]
    assert [e["id"] for e in body["logs"]] == [e["id"] for e in entries[144:149]]
    status, body = await json_logs(api, rid, run_id, f"?before={entries[0]['id']}")
    assert status == 200 and body["logs"] == [], body


async def test_json_logs_bad_cursor_both_cursors_or_bad_stream_is_400(api: Api) -> None:
    rid, run_id = await completed_run(api, "echo out; echo err >&2; echo more")
    status, body = await json_logs(api, rid, run_id)
    assert status == 200, body
    first, second = body["logs"][0]["id"], body["logs"][1]["id"]
    for query, word in [
        ("?after=7", "after"),
        ("?after=abc", "after"),
        ("?before=7", "before"),
        ("?after=-5", "after"),
        ("?after=99999999", "after"),
        (f"?after={first}&before={second}", "before: cannot be used together with after"),
        ("?stream=bogus", "stream"),
    ]:
        status, body = await json_logs(api, rid, run_id, query)
        assert_400_naming(status, body, word)


# -- slow and stalled followers -----------------------------------------------------


async def test_stalled_follower_never_slows_the_daemon_and_is_dropped(
    daemon: Daemon, api: Api
) -> None:
    # ~50 MB of 1 KiB lines, written as fast as the container can.
    runner = await api.create_runner(
        run_command="l=x; for i in 1 2 3 4 5 6 7 8 9 10; do l=$l$l; done; "
        'yes "$l" | head -n 48000; echo end'
    )
    rid = runner["id"]
    assert daemon.proc is not None
    pid = daemon.proc.pid
    rss_before = rss_kib(pid)
    run = await api.trigger(rid)

    # A client that asks to follow, then never reads a byte.
    url = urlsplit(daemon.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url.hostname, url.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    try:
        writer.write(
            f"GET /v1/runners/{rid}/runs/{run['id']}/logs?follow=true HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\nAuthorization: Bearer {daemon.key}\r\n\r\n".encode()
        )
        await writer.drain()

        rss_max = rss_before

        async def completed_while_others_are_answered() -> bool:
            nonlocal rss_max
            # Every other request still answers promptly while the follower stalls.
            status, _ = await asyncio.wait_for(api.get("/healthz"), 5)
            assert status == 200
            current = await asyncio.wait_for(api.run(rid, run["id"]), 5)
            status, _ = await asyncio.wait_for(api.get("/v1/runners"), 5)
            assert status == 200
            rss_max = max(rss_max, rss_kib(pid))
            return current["status"] in ("succeeded", "failed")

        await wait_until(
            completed_while_others_are_answered,
            timeout=75,
            interval=0.2,
            what="the run to complete while a follower stalls",
        )
        done = await api.run(rid, run["id"])
        assert done["status"] == "succeeded", done

        # The daemon gives up on the stalled client instead of buffering for it.
        async def dropped() -> bool:
            return "dropping a client that stopped reading" in daemon.log_text()

        await wait_until(dropped, timeout=30, what="the stalled follower to be dropped")
        received = 0
        try:
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < 50_000_000, "the stalled follower was sent the whole log"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionResetError, BrokenPipeError):
            pass
    assert daemon.proc.poll() is None, daemon.log_text()
    assert (rss_max - rss_before) < 200 * 1024, (
        f"daemon RSS grew by {(rss_max - rss_before) // 1024} MiB while a follower stalled"
    )
    # The full log was still written: the follower did not hold the container back.
    tail = await api.logs(rid, run["id"], "?tail=1")
    assert tail == b"end\n"


# -- shutdown ----------------------------------------------------------------------


async def test_followers_end_cleanly_when_the_daemon_shuts_down(daemon: Daemon, api: Api) -> None:
    runner = await api.create_runner(run_command="echo started; sleep 60")
    rid = runner["id"]
    run = await api.trigger(rid)
    url = logs_url(api, rid, run["id"])

    async with (
        api.session.get(url, params={"follow": "true"}, headers=api.headers()) as text,
        api.session.get(url, headers={**api.headers(), **SSE}) as sse,
    ):
        assert text.status == 200 and sse.status == 200
        assert await asyncio.wait_for(text.content.readline(), 30) == b"started\n"
        events = sse_events(sse)
        first = await asyncio.wait_for(events.__anext__(), 30)
        assert json.loads(first["data"])["msg"] == "started"

        stopping = asyncio.ensure_future(asyncio.to_thread(daemon.stop))
        try:
            text_rest = await asyncio.wait_for(text.content.read(), 5)
            sse_rest = await asyncio.wait_for(_collect(events), 5)
        finally:
            exit_code = await stopping
    assert text_rest == b""  # a clean end of the chunked body, nothing more
    assert sse_rest == []  # no `end` event: the run did not complete
    assert exit_code == 0, daemon.log_text()


async def _collect(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e async for e in events]
