"""The dashboard's Run page, in process (the real app, store, scheduler and log
store; the fake executor, which writes no output, so the tests write log records
through the app's LogStore as the executor would): every field, the failure box,
the attempt and chain links, the log's bounded tail with stdout and stderr told
apart, the live log over SSE (with a session, resuming without gaps or repeats),
the raw download, and Cancel run with the API's rules."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from conftest import Api

from runnerd.logs import LogStore
from runnerd.ui import run_page
from tests.dashboard import Dashboard
from tests.harness import wait_until

from .conftest import InProcessDaemon

STDOUT, STDERR = 1, 2


def write(logs: LogStore, run_id: str, records: list[tuple[int, bytes]]) -> None:
    """Append records to the run's log as the executor does (and wake followers)."""
    writer = logs.writer(run_id)
    try:
        writer.append([(stream, time.time_ns(), data) for stream, data in records])
    finally:
        writer.close()


def page_url(run: dict[str, Any], runner_id: str) -> str:
    return f"/ui/runners/{runner_id}/runs/{run['id']}"


def element(page: str, pattern: str) -> str:
    """The first match of `pattern` (its group 1) in the page; fails the test if none."""
    found = re.search(pattern, page, re.S)
    assert found, f"no {pattern!r} in the page"
    return found.group(1)


def log_lines(page: str) -> list[tuple[str, str, str]]:
    """(class, entry id, text) of each line of pre#log."""
    pre = element(page, r'<pre id="log"[^>]*>(.*?)</pre>')
    return [
        (cls, entry_id, html.unescape(text))
        for cls, entry_id, text in re.findall(
            r'<span class="line (\w+)" data-id="(\d+)">(.*?)\n</span>', pre, re.S
        )
    ]


async def logged_in(daemon: InProcessDaemon, key: str | None = None) -> Dashboard:
    ui = Dashboard(daemon.url)
    r = await ui.login(key or daemon.key)
    assert r.status == 303
    return ui


async def running(api: Api, seconds: int = 60, **fields: Any) -> tuple[str, dict[str, Any]]:
    runner = await api.create_runner(run_command=f"sleep {seconds}", **fields)
    run = await api.trigger(runner["id"])
    await api.wait_status(runner["id"], run["id"], "running")
    return runner["id"], run


class Events:
    """A live log read as a browser's EventSource does: `event`, `id`, `data`."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        event: dict[str, Any] = {}
        while True:
            raw = await asyncio.wait_for(self.response.content.readline(), timeout)
            assert raw, "the stream ended"
            line = raw.decode().rstrip("\n")
            if not line:
                if event:
                    return event
                continue
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value


@contextlib.asynccontextmanager
async def open_events(
    ui: Dashboard, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Events]:
    async with ui.http.get(
        ui.url + path, headers={"Accept": "text/event-stream", **(headers or {})}
    ) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        yield Events(r)


# -- the page ---------------------------------------------------------------------


async def test_the_run_page_shows_every_field_of_a_succeeded_run(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 0")
    run = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    async with await logged_in(daemon) as ui:
        status, page = await ui.get(page_url(run, runner["id"]))
    assert status == 200
    assert element(page, r'id="run-status"[^>]*>([^<]*)<') == "succeeded"
    assert 'data-status="succeeded"' in page and 'data-failure-reason=""' in page
    assert element(page, r'id="exit-code">([^<]*)<') == "0"
    for name in ("created_at", "started_at", "completed_at"):
        shown = run[name].replace("T", " ")[:19]
        assert element(page, rf'id="{name.replace("_", "-")}">([^<]*)<') == shown
    assert element(page, r'id="duration">([^<]*)<') != "—"
    assert element(page, r'id="image"><code>([^<]*)<') == run_page_image(runner)
    slug = element(page, r'id="instance-type">([^<]*)<').strip()
    assert slug == runner["instance_type"]["slug"]
    assert element(page, r'id="trigger">([^<]*)<') == "api"
    assert element(page, r'id="attempts">\s*<h2>([^<]*)<') == "Attempt 1"
    assert 'id="failure" class="failure error" hidden' in page
    assert (
        element(page, r'id="download-log" href="([^"]*)"') == page_url(run, runner["id"]) + "/log"
    )
    assert "data-events" not in page  # an ended run's log is not live
    assert 'id="cancel-run"' not in page  # nothing to cancel


async def test_a_run_whose_log_may_be_incomplete_says_so_prominently(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 0")
    plain = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    marked = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    await daemon.store.mark_log_incomplete(marked["id"])  # as the executor does
    async with await logged_in(daemon) as ui:
        _, plain_page = await ui.get(page_url(plain, runner["id"]))
        _, page = await ui.get(page_url(marked, runner["id"]))
    assert 'id="log-incomplete" class="warning" hidden' in plain_page
    warning = element(page, r'(<article id="log-incomplete"[^>]*>.*?</article>)')
    assert "hidden" not in element(warning, r"(<article[^>]*>)")
    assert "The log may be incomplete" in warning and "notes runnerd wrote in the log" in warning
    # The run itself is as it ended: only its log is in doubt.
    assert element(page, r'id="run-status"[^>]*>([^<]*)<') == "succeeded"


def run_page_image(runner: dict[str, Any]) -> str:
    return f"{runner['image_name']}:{runner['image_tag']}"


async def test_an_unknown_run_is_a_404_page(daemon: InProcessDaemon, api: Api) -> None:
    runner = await api.create_runner(run_command="exit 0")
    async with await logged_in(daemon) as ui:
        for run_id in ("0b7c7c55-7d0c-4c59-9d59-2f2f2f2f2f2f", "not-a-uuid"):
            status, page = await ui.get(f"/ui/runners/{runner['id']}/runs/{run_id}")
            assert status == 404 and "<h1>404 Not Found</h1>" in page


async def test_a_failed_run_shows_its_reason_and_error_prominently(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 3")
    run = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(page_url(run, runner["id"]))
    assert element(page, r'id="run-status"[^>]*>([^<]*)<') == "failed: nonzero_exit"
    assert 'data-status="failed"' in page and 'data-failure-reason="nonzero_exit"' in page
    assert element(page, r'id="exit-code">([^<]*)<') == "3"
    failure = element(page, r'(<article id="failure"[^>]*>.*?</article>)')
    assert "hidden" not in failure.split(">")[0] and 'class="failure error"' in failure
    assert "nonzero_exit" in failure and "The command exited with code 3." in failure


async def test_a_retried_run_links_its_previous_and_next_attempts(
    daemon: InProcessDaemon, api: Api
) -> None:
    policy = {"max_retries": 1, "backoff_seconds": 1, "backoff_max_seconds": 1}
    runner = await api.create_runner(run_command="exit 1", retry_policy=policy)
    first = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])

    async def second_done() -> dict[str, Any] | None:
        _, data = await api.get(f"/v1/runners/{runner['id']}/runs")
        done = [r for r in data["runs"] if r["attempt"] == 2 and r["status"] == "failed"]
        return done[0] if done else None

    second = await wait_until(second_done, timeout=30, what="attempt 2 to fail")
    async with await logged_in(daemon) as ui:
        _, page1 = await ui.get(page_url(first, runner["id"]))
        _, page2 = await ui.get(page_url(second, runner["id"]))
    assert element(page1, r'id="next-attempt" href="([^"]*)"') == page_url(second, runner["id"])
    assert 'id="previous-attempt"' not in page1
    assert element(page2, r'id="previous-attempt" href="([^"]*)"') == page_url(first, runner["id"])
    assert 'id="next-attempt"' not in page2
    assert element(page2, r'id="attempts">\s*<h2>([^<]*)<') == "Attempt 2"
    assert element(page2, r'id="trigger">([^<]*)<') == "retry"


async def test_a_chained_run_links_its_parent_run(daemon: InProcessDaemon, api: Api) -> None:
    child = await api.create_runner(run_command="exit 0")
    parent = await api.create_runner(run_command="exit 0", on_success=[child["id"]])
    parent_run = await api.wait_done(parent["id"], (await api.trigger(parent["id"]))["id"])

    async def chained() -> dict[str, Any] | None:
        _, data = await api.get(f"/v1/runners/{child['id']}/runs")
        return data["runs"][0] if data["runs"] else None

    child_run = await wait_until(chained, timeout=30, what="the chained run")
    assert child_run["parent_run_id"] == parent_run["id"]
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(page_url(child_run, child["id"]))
    assert element(page, r'id="parent-run" href="([^"]*)"') == page_url(parent_run, parent["id"])


async def test_the_log_shows_stdout_and_stderr_lines_told_apart_and_escaped(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 0")
    run = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    write(
        daemon.logs,
        run["id"],
        [(STDOUT, b"out one\n"), (STDERR, b"<script>alert(1)</script>\n"), (STDOUT, b"out two\n")],
    )
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(page_url(run, runner["id"]))
    lines = log_lines(page)
    assert [(cls, text) for cls, _, text in lines] == [
        ("stdout", "out one"),
        ("stderr", "<script>alert(1)</script>"),
        ("stdout", "out two"),
    ]
    assert "<script>alert(1)</script>" not in page
    assert 'id="log-cut"' not in page


async def test_the_page_shows_only_the_log_s_tail_and_says_where_the_rest_is(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 0")
    many = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    write(daemon.logs, many["id"], [(STDOUT, b"line %d\n" % i) for i in range(1500)])
    big = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    write(daemon.logs, big["id"], [(STDERR, b"x" * 4000 + b" %d\n" % i) for i in range(200)])
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(page_url(many, runner["id"]))
        _, big_page = await ui.get(page_url(big, runner["id"]))
    lines = log_lines(page)
    assert len(lines) == run_page.TAIL_ENTRIES
    assert lines[0][2] == "line 500" and lines[-1][2] == "line 1499"
    assert 'id="log-cut"' in page and "download the raw log" in page
    big_lines = log_lines(big_page)
    assert sum(len(text) + 1 for _, _, text in big_lines) <= run_page.TAIL_BYTES
    assert len(big_lines) < 200 and big_lines[-1][2].endswith(" 199")
    assert 'id="log-cut"' in big_page


# -- the live log -------------------------------------------------------------------


async def test_the_live_log_streams_what_is_written_after_the_page_without_repeats(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner_id, run = await running(api)
    write(daemon.logs, run["id"], [(STDOUT, b"before one\n"), (STDERR, b"before two\n")])
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(page_url(run, runner_id))
        shown = log_lines(page)
        assert [text for _, _, text in shown] == ["before one", "before two"]
        events_url = html.unescape(element(page, r'data-events="([^"]*)"'))
        assert events_url == page_url(run, runner_id) + f"/events?after={shown[-1][1]}"
        async with open_events(ui, events_url) as events:
            write(daemon.logs, run["id"], [(STDOUT, b"after one\n"), (STDERR, b"after two\n")])
            first, second = await events.next(), await events.next()
            assert (first["event"], first["data"]["stream"], first["data"]["msg"]) == (
                "log",
                "stdout",
                "after one",
            )
            assert (second["data"]["stream"], second["data"]["msg"]) == ("stderr", "after two")
            assert int(first["id"]) > int(shown[-1][1])


async def test_the_live_log_resumes_after_last_event_id_which_wins_over_after(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner_id, run = await running(api)
    write(daemon.logs, run["id"], [(STDOUT, b"l%d\n" % i) for i in range(5)])
    path = page_url(run, runner_id) + "/events"
    async with await logged_in(daemon) as ui:
        async with open_events(ui, path) as events:
            got = [await events.next() for _ in range(5)]
        assert [e["data"]["msg"] for e in got] == ["l0", "l1", "l2", "l3", "l4"]
        # A dropped connection: the browser resumes after the last event it had.
        async with open_events(
            ui, f"{path}?after={got[0]['id']}", {"Last-Event-ID": got[2]["id"]}
        ) as events:
            write(daemon.logs, run["id"], [(STDERR, b"l5\n")])
            resumed = [await events.next() for _ in range(3)]
        assert [e["data"]["msg"] for e in resumed] == ["l3", "l4", "l5"]
        assert resumed[2]["data"]["stream"] == "stderr"
        async with open_events(ui, f"{path}?after={got[3]['id']}") as events:
            after = [await events.next() for _ in range(2)]
        assert [e["data"]["msg"] for e in after] == ["l4", "l5"]
        async with ui.http.get(
            ui.url + f"{path}?after=12345678", headers={"Accept": "text/event-stream"}
        ) as r:
            assert r.status == 400 and "after: 12345678 is not a log entry id" in await r.text()


async def test_the_live_log_ends_with_the_final_run(daemon: InProcessDaemon, api: Api) -> None:
    runner_id, run = await running(api, seconds=1)
    async with await logged_in(daemon) as ui:
        async with open_events(ui, page_url(run, runner_id) + "/events") as events:
            write(daemon.logs, run["id"], [(STDOUT, b"bye\n")])
            assert (await events.next())["data"]["msg"] == "bye"
            end = await events.next(timeout=30)
            assert end["event"] == "end" and end["data"]["status"] == "succeeded"


async def test_the_live_log_s_final_run_carries_the_incomplete_log_mark(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner_id, run = await running(api)  # 60 s: it ends when canceled, not before
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(page_url(run, runner_id))
        assert 'id="log-incomplete" class="warning" hidden' in page  # app.js reveals it
        async with open_events(ui, page_url(run, runner_id) + "/events") as events:
            await daemon.store.mark_log_incomplete(run["id"])  # the stream broke mid-run
            status, _ = await api.post(f"/v1/runners/{runner_id}/runs/{run['id']}/cancel")
            assert status == 200
            end = await events.next(timeout=30)
    assert end["event"] == "end"
    assert (end["data"]["status"], end["data"]["log_incomplete"]) == ("failed", True)


async def test_the_live_log_without_a_session_is_401(daemon: InProcessDaemon, api: Api) -> None:
    runner_id, run = await running(api)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            daemon.url + page_url(run, runner_id) + "/events",
            headers={"Accept": "text/event-stream"},
            allow_redirects=False,
        ) as r:
            assert r.status == 401


# -- the raw log ----------------------------------------------------------------------


async def test_the_raw_log_downloads_as_the_container_wrote_it(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 0")
    run = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    records = [(STDOUT, b"one\n"), (STDERR, b"two \xff\n"), (STDOUT, b"three")]
    write(daemon.logs, run["id"], records)
    async with await logged_in(daemon) as ui:
        async with ui.http.get(ui.url + page_url(run, runner["id"]) + "/log") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert r.headers["Content-Disposition"] == f'attachment; filename="run-{run["id"]}.log"'
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            body = await r.read()
    assert body == b"".join(data for _, data in records)
    assert body == await api.logs(runner["id"], run["id"])


# -- cancel ------------------------------------------------------------------------------


async def test_cancel_of_a_running_run_ends_it_canceled_and_returns_to_its_page(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner_id, run = await running(api)
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(page_url(run, runner_id))
        action = element(page, r'<form method="post" action="([^"]*)" id="cancel-run"')
        assert 'id="cancel"' in page
        r = await ui.post(action)
        assert r.status == 303 and r.headers["Location"] == page_url(run, runner_id)
        _, page = await ui.get(page_url(run, runner_id))
    ended = await api.run(runner_id, run["id"])
    assert (ended["status"], ended["failure_reason"]) == ("failed", "canceled")
    assert element(page, r'id="run-status"[^>]*>([^<]*)<') == "failed: canceled"
    assert 'id="cancel-run"' not in page


async def test_cancel_of_an_ended_run_is_a_409_page(daemon: InProcessDaemon, api: Api) -> None:
    runner = await api.create_runner(run_command="exit 0")
    run = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    async with await logged_in(daemon) as ui:
        await ui.get(page_url(run, runner["id"]))
        r = await ui.post(page_url(run, runner["id"]) + "/cancel")
        assert r.status == 409
    assert (await api.run(runner["id"], run["id"]))["status"] == "succeeded"


async def test_a_read_key_sees_no_cancel_and_its_cancel_is_refused(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner_id, run = await running(api)
    reader = daemon.create_key("reader", "read")
    async with await logged_in(daemon, reader) as ui:
        status, page = await ui.get(page_url(run, runner_id))
        assert status == 200 and 'id="run-status"' in page
        assert 'id="cancel-run"' not in page and 'id="cancel"' not in page
        r = await ui.post(page_url(run, runner_id) + "/cancel")
        assert r.status == 403
    assert (await api.run(runner_id, run["id"]))["status"] == "running"


async def test_a_forged_cancel_changes_nothing(daemon: InProcessDaemon, api: Api) -> None:
    runner_id, run = await running(api)
    async with await logged_in(daemon) as ui:
        await ui.get(page_url(run, runner_id))
        assert (await ui.post(page_url(run, runner_id) + "/cancel", csrf=False)).status == 403
        forged = await ui.post(page_url(run, runner_id) + "/cancel", origin="http://evil.example")
        assert forged.status == 403
    assert (await api.run(runner_id, run["id"]))["status"] == "running"


async def test_cancel_of_a_failed_run_with_a_waiting_retry_cancels_the_retry(
    daemon: InProcessDaemon, api: Api
) -> None:
    policy = {"max_retries": 2, "backoff_seconds": 3600, "backoff_max_seconds": 3600}
    runner = await api.create_runner(run_command="exit 1", retry_policy=policy)
    first = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(page_url(first, runner["id"]))
        retry_path = element(page, r'id="next-attempt" href="([^"]*)"')
        assert 'id="cancel"' in page  # the run ended, but its retry is still to come
        r = await ui.post(page_url(first, runner["id"]) + "/cancel")
        assert r.status == 303 and r.headers["Location"] == page_url(first, runner["id"])
        _, page = await ui.get(page_url(first, runner["id"]))
        assert 'id="cancel-run"' not in page
        _, retry_page = await ui.get(retry_path)
    assert element(retry_page, r'id="run-status"[^>]*>([^<]*)<') == "failed: canceled"
    assert (await api.run(runner["id"], first["id"]))["failure_reason"] == "nonzero_exit"


async def test_a_runner_name_typed_as_markup_is_shown_escaped(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(name="<script>alert(1)</script>", run_command="exit 0")
    run = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    async with await logged_in(daemon) as ui:
        status, page = await ui.get(page_url(run, runner["id"]))
    assert status == 200
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
