"""The dashboard's Overview, Runners and Container registries pages, in process (the
real store and scheduler, the fake executor of tests/api/fakes.py): each renders
what the API holds, a read key sees no action, a password never shows, and what a
user typed is escaped."""

from __future__ import annotations

import re
import secrets

from conftest import Api

from tests.dashboard import Dashboard
from tests.harness import wait_until

from .conftest import InProcessDaemon

XSS = "<script>alert(1)</script>"


def section(page: str, element_id: str) -> str:
    """The HTML of the element with `element_id` up to its closing tag (tables and
    sections are not nested in these pages)."""
    start = page.index(f'id="{element_id}"')
    tag = page[page.rindex("<", 0, start) + 1 :].split(None, 1)[0]
    return page[start : page.index(f"</{tag}>", start)]


# The fake executor exits with $CODE (0 when unset); a `sleep 600` runner keeps running.
EXITS = {"run_command": "exit $CODE"}


async def finished_runs(api: Api, runner_id: str, *codes: int) -> list[dict[str, object]]:
    """Runs of `runner_id` (made with EXITS) that exited with `codes`, one by one."""
    runs = []
    for code in codes:
        env = [{"env_key": "CODE", "env_val": str(code)}]
        run = await api.trigger(runner_id, {"env_variables": env})
        runs.append(await api.wait_done(runner_id, run["id"]))
    return runs


async def running(api: Api, **fields: str) -> tuple[dict[str, object], dict[str, object]]:
    """(a new runner, its run that is running)."""
    runner = await api.create_runner(run_command="sleep 600", **fields)
    runner_id = runner["id"]
    run = await api.trigger(runner_id)

    async def started() -> dict[str, object] | None:
        found = await api.run(runner_id, run["id"])
        return found if found["status"] == "running" else None

    return runner, await wait_until(started, timeout=30, what="the run to start")


async def test_the_overview_totals_the_last_24_hours(api: Api, daemon: InProcessDaemon) -> None:
    runner = await api.create_runner(**EXITS)
    await finished_runs(api, runner["id"], 0, 0, 0, 1)
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        status, page = await ui.get("/ui/")
    assert status == 200
    totals = section(page, "totals")
    assert re.search(r'id="total-succeeded">3<', totals), totals
    assert re.search(r'id="total-failed">1<', totals), totals
    assert "75 %" in totals
    assert 'id="median-duration">' in totals and "No runs in the last 24 hours" not in totals


async def test_the_overview_lists_the_latest_failure_with_its_reason(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner = await api.create_runner(**EXITS)
    [failed] = await finished_runs(api, runner["id"], 7)
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        _, page = await ui.get("/ui/")
    failures = section(page, "failures")
    assert f"/ui/runners/{runner['id']}/runs/{failed['id']}" in failures
    assert "nonzero_exit" in failures and str(failed["error"]) in failures
    assert runner["name"] in failures


async def test_an_empty_overview_says_so(daemon: InProcessDaemon) -> None:
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        status, page = await ui.get("/ui/")
    assert status == 200
    assert "No runs in the last 24 hours." in section(page, "totals")
    assert "No active runs." in section(page, "active-runs")
    assert "No enabled schedules." in section(page, "upcoming")
    assert "No failed runs." in section(page, "failures")


async def test_an_active_run_shows_its_elapsed_time_link_and_cancel_form(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner, run = await running(api)
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        _, page = await ui.get("/ui/")
    active = section(page, "active-runs")
    row = active[active.index(f'data-run-id="{run["id"]}"') :]
    assert f'href="/ui/runners/{runner["id"]}/runs/{run["id"]}"' in row
    assert re.search(r'class="elapsed">\d+(\.\d)? (ms|s)<', row), row
    form = re.search(r'<form[^>]*class="[^"]*cancel-run[^"]*"[^>]*>', row)
    assert form is not None, row
    assert f'action="/ui/runners/{runner["id"]}/runs/{run["id"]}/cancel"' in form.group(0)
    assert f'name="csrf_token" value="{ui.csrf}"' in row


async def test_a_read_key_sees_the_active_run_but_no_cancel_form(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner, run = await running(api)
    reader = daemon.create_key("reader", "read")
    async with Dashboard(daemon.url) as ui:
        await ui.login(reader)
        status, page = await ui.get("/ui/")
    assert status == 200
    assert run["id"] in section(page, "active-runs")
    assert "cancel-run" not in page and "/cancel" not in page


async def test_the_overview_lists_the_next_scheduled_fires(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner = await api.create_runner()
    status, body = await api.post(f"/v1/runners/{runner['id']}/schedules", {"cron": "@daily"})
    assert status in (200, 201), body
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        _, page = await ui.get("/ui/")
    upcoming = section(page, "upcoming")
    assert runner["name"] in upcoming and "@daily" in upcoming
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", upcoming), upcoming


async def test_the_runners_page_shows_each_runners_recent_record(
    api: Api, daemon: InProcessDaemon
) -> None:
    busy = await api.create_runner(**EXITS)
    idle = await api.create_runner()
    await finished_runs(api, busy["id"], 0, 1)
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        status, page = await ui.get("/ui/runners")
    assert status == 200
    table = section(page, "runners")
    busy_row = table[table.index(f'data-runner-id="{busy["id"]}"') :]
    busy_row = busy_row[: busy_row.index("</tr>")]
    assert f'<a class="runner-link" href="/ui/runners/{busy["id"]}">{busy["name"]}</a>' in busy_row
    assert f"{busy['image_name']}:{busy['image_tag']}" in busy_row
    assert "status-failed" in busy_row  # its last run failed
    assert "50 %" in busy_row
    idle_row = table[table.index(f'data-runner-id="{idle["id"]}"') :]
    assert "never run" in idle_row[: idle_row.index("</tr>")]


async def test_the_registries_page_never_shows_a_password(
    api: Api, daemon: InProcessDaemon
) -> None:
    password = "pw-" + secrets.token_hex(12)
    body = {"name": "private", "host": "registry.example.com:5000", "username": "bot"}
    status, data = await api.post("/v1/container_registries", {**body, "password": password})
    assert status in (200, 201), data
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        status, page = await ui.get("/ui/container_registries")
    assert status == 200
    table = section(page, "registries")
    assert all(value in table for value in body.values())
    assert password not in page


async def test_an_empty_registries_page_says_so(daemon: InProcessDaemon) -> None:
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        _, page = await ui.get("/ui/container_registries")
    assert "No container registries." in section(page, "registries")


async def test_a_runner_named_like_a_script_is_escaped_on_every_page(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner = await api.create_runner(name=XSS, **EXITS)
    await finished_runs(api, runner["id"], 2)
    await running(api, name=XSS + "!")
    status, body = await api.post(f"/v1/runners/{runner['id']}/schedules", {"cron": "@daily"})
    assert status in (200, 201), body
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        for path, where in (
            ("/ui/", "active-runs"),
            ("/ui/", "failures"),
            ("/ui/", "upcoming"),
            ("/ui/runners", "runners"),
        ):
            status, page = await ui.get(path)
            assert status == 200, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section(page, where), (path, where)
            assert XSS not in page, path


async def test_the_overviews_cancel_form_cancels_the_active_run(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner, run = await running(api)
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        _, page = await ui.get("/ui/")
        action = re.search(r'<form method="post" action="([^"]+)" class="inline cancel-run">', page)
        assert action is not None, section(page, "active-runs")
        r = await ui.post(action.group(1))
        assert r.status == 303, r.status
        done = await api.wait_done(str(runner["id"]), str(run["id"]))
        assert (done["status"], done["failure_reason"]) == ("failed", "canceled")
        _, page = await ui.get("/ui/")
    assert "No active runs." in section(page, "active-runs")
    assert str(run["id"]) in section(page, "failures")
