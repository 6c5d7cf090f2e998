"""The dashboard's live log with a real daemon process and a real container: the
Run page's tail, then its Server-Sent Events (session auth) carrying on from the
page's last line, stdout and stderr told apart, with lines the container prints
after the stream opened."""

from __future__ import annotations

import asyncio
import html
import json
import re
from typing import Any

from conftest import Api, Daemon

from tests.dashboard import Dashboard

# Prints a numbered pair of lines (stdout, stderr) every 0.1 s for a minute: the
# test waits for numbers printed after it connected, then cancels the run.
TICKER = "i=0; while [ $i -lt 600 ]; do echo out $i; echo err $i >&2; i=$((i+1)); sleep 0.1; done"
LINE = re.compile(r'<span class="line (\w+)" data-id="(\d+)">(.*?)\n</span>', re.S)


def shown_lines(page: str) -> list[tuple[str, str, str]]:
    pre = re.search(r'<pre id="log"[^>]*>(.*?)</pre>', page, re.S)
    assert pre, "no pre#log"
    return [(c, i, html.unescape(t)) for c, i, t in LINE.findall(pre.group(1))]


def last_number(lines: list[tuple[str, str, str]], stream: str) -> int:
    numbers = [int(t.split()[1]) for c, _, t in lines if c == stream]
    return max(numbers, default=-1)


async def test_a_container_s_lines_arrive_live_on_the_dashboard_stdout_and_stderr_apart(
    daemon: Daemon, api: Api
) -> None:
    runner = await api.create_runner(run_command=TICKER)
    run = await api.trigger(runner["id"])
    page_path = f"/ui/runners/{runner['id']}/runs/{run['id']}"
    await api.wait_status(runner["id"], run["id"], "running")
    async with Dashboard(daemon.url) as ui:
        assert (await ui.login(daemon.key)).status == 303
        status, page = await ui.get(page_path)
        assert status == 200
        shown = shown_lines(page)
        found = re.search(r'data-events="([^"]*)"', page)
        assert found, "a running run's log is live"
        events_url = html.unescape(found.group(1))
        out: list[int] = []
        err: list[int] = []
        async with ui.http.get(ui.url + events_url, headers={"Accept": "text/event-stream"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            # The stream is open: whatever is on the page now was printed before.
            _, now = await ui.get(page_path)
            opened_at = min(
                last_number(shown_lines(now), "stdout"), last_number(shown_lines(now), "stderr")
            )

            async def until_after_open() -> None:
                event: dict[str, Any] = {}
                while not (out and err and min(out[-1], err[-1]) > opened_at + 2):
                    line = (await r.content.readline()).decode().rstrip("\n")
                    if line:
                        field, _, value = line.partition(": ")
                        event[field] = value
                        continue
                    if event.get("event") == "log":
                        entry = json.loads(event["data"])
                        stream, number = entry["msg"].split()
                        assert entry["stream"] == ("stdout" if stream == "out" else "stderr")
                        (out if stream == "out" else err).append(int(number))
                    event = {}

            await asyncio.wait_for(until_after_open(), 60)
        # Carried on from the page's last line: no repeat, no gap, in each stream.
        assert out == list(range(last_number(shown, "stdout") + 1, out[-1] + 1))
        assert err == list(range(last_number(shown, "stderr") + 1, err[-1] + 1))
        await ui.get(page_path)
        cancel = await ui.post(page_path + "/cancel")
        assert cancel.status == 303
    ended = await api.wait_done(runner["id"], run["id"])
    assert (ended["status"], ended["failure_reason"]) == ("failed", "canceled")
