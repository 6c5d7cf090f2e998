"""The Runner page, in process: every section, env values masked unless a full key
asks, the chart of the last runs, the run history's paging and filters, and the
Trigger run form (through the API's own trigger path), escaped throughout."""

from __future__ import annotations

import re
import uuid
from typing import Any

from conftest import Api

from tests.dashboard import Dashboard
from tests.harness import wait_until

from .conftest import InProcessDaemon

SECRET_VAL = "hunter2-value-never-shown"
XSS = "<script>alert(1)</script>"


def rows(page: str, table: str) -> list[str]:
    """The `tr.run` rows of `table#<table>`, each as its HTML."""
    found = re.search(rf'<table id="{table}">(.*?)</table>', page, re.S)
    assert found, f"no table#{table}"
    return re.findall(r'<tr class="run"[^>]*>.*?</tr>', found.group(1), re.S)


def run_ids(page: str) -> list[str]:
    return re.findall(r'<tr class="run" data-run-id="([0-9a-f-]+)"', page)


def bars(page: str) -> list[tuple[str, str]]:
    """(class, run id) of each bar of svg#runs-chart."""
    svg = re.search(r'<svg id="runs-chart".*?</svg>', page, re.S)
    assert svg, "no svg#runs-chart"
    return re.findall(r'<rect class="bar (\w+)" data-run-id="([0-9a-f-]+)"', svg.group(0))


async def logged_in(daemon: InProcessDaemon, key: str | None = None) -> Dashboard:
    ui = Dashboard(daemon.url)
    r = await ui.login(key or daemon.key)
    assert r.status == 303
    return ui


async def runs_of(api: Api, runner_id: str, query: str = "") -> list[dict[str, Any]]:
    status, data = await api.get(f"/v1/runners/{runner_id}/runs{query}")
    assert status == 200, data
    runs: list[dict[str, Any]] = data["runs"]
    return runs


async def all_done(api: Api, runner_id: str, count: int) -> None:
    async def done() -> bool:
        runs = await runs_of(api, runner_id, "?limit=1000")
        return len(runs) == count and all(r["status"] in ("succeeded", "failed") for r in runs)

    await wait_until(done, timeout=30, what=f"{count} runs of {runner_id} to end")


async def full_runner(api: Api) -> dict[str, Any]:
    """A runner with every section filled: env, a schedule, a retry policy, chains."""
    target = await api.create_runner(name=f"target-{uuid.uuid4().hex[:8]}")
    runner = await api.create_runner(
        run_command="exit $CODE",
        env_variables=[
            {"env_key": "CODE", "env_val": "0"},
            {"env_key": "TOKEN", "env_val": SECRET_VAL},
        ],
        max_concurrent_runs=3,
        retry_policy={"max_retries": 2, "backoff_seconds": 30, "backoff_max_seconds": 300},
        on_success=[target["id"]],
    )
    status, data = await api.post(
        f"/v1/runners/{runner['id']}/schedules",
        {"cron": "0 3 * * *", "timezone": "Europe/Paris", "concurrency_policy": "forbid"},
    )
    assert status == 200, data
    runner["target"] = target
    return runner


async def test_the_runner_page_renders_every_section(daemon: InProcessDaemon, api: Api) -> None:
    runner = await full_runner(api)
    async with await logged_in(daemon) as ui:
        status, page = await ui.get(f"/ui/runners/{runner['id']}")
    assert status == 200, page
    for section in ("settings", "schedules", "retry-policy", "chains", "env"):
        assert f'id="{section}"' in page, section
    settings = page.split('id="settings"')[1].split("</section>")[0]
    assert "exit $CODE" in settings and f"{runner['image_name']}:{runner['image_tag']}" in settings
    assert ">3<" in settings  # max_concurrent_runs
    schedules = page.split('id="schedules"')[1].split("</section>")[0]
    assert "0 3 * * *" in schedules and "Europe/Paris" in schedules and "forbid" in schedules
    retry = page.split('id="retry-policy"')[1].split("</section>")[0]
    assert "30 s, at most 300 s" in retry
    chains = page.split('id="chains"')[1].split("</section>")[0]
    target = runner["target"]
    assert f'href="/ui/runners/{target["id"]}">{target["name"]}</a>' in chains
    assert 'id="runs-chart"' in page and '<table id="runs">' in page
    assert 'id="run-filter"' in page and 'id="trigger-run"' in page


async def test_an_unknown_or_invalid_runner_id_is_a_404_page(daemon: InProcessDaemon) -> None:
    async with await logged_in(daemon) as ui:
        for path in (f"/ui/runners/{uuid.uuid4()}", "/ui/runners/not-an-id"):
            status, page = await ui.get(path)
            assert status == 404 and "<h1>404" in page, path


async def test_env_values_are_masked_by_default_and_revealed_to_a_full_key_on_request(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await full_runner(api)
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(f"/ui/runners/{runner['id']}")
        assert "TOKEN" in page and SECRET_VAL not in page and "••••••" in page
        assert 'id="reveal-env"' in page
        status, revealed = await ui.get(f"/ui/runners/{runner['id']}?reveal=env")
        assert status == 200 and SECRET_VAL in revealed.split('id="env"')[1].split("</section>")[0]
    assert SECRET_VAL not in daemon.log_text()


async def test_a_read_key_sees_env_values_masked_even_when_it_asks(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await full_runner(api)
    async with await logged_in(daemon, daemon.create_key("reader", "read")) as ui:
        status, page = await ui.get(f"/ui/runners/{runner['id']}?reveal=env")
    assert status == 200
    assert "TOKEN" in page and SECRET_VAL not in page and "••••••" in page
    assert 'id="reveal-env"' not in page


async def test_the_chart_has_a_bar_per_run_classed_by_outcome(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit $CODE")
    made = []
    for code in ("0", "4", "0"):
        made.append(
            await api.trigger(
                runner["id"], {"env_variables": [{"env_key": "CODE", "env_val": code}]}
            )
        )
    await all_done(api, runner["id"], 3)
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(f"/ui/runners/{runner['id']}")
    chart = bars(page)
    assert chart == [
        ("succeeded", made[0]["id"]),
        ("failed", made[1]["id"]),
        ("succeeded", made[2]["id"]),
    ]  # oldest on the left
    assert f'<a href="/ui/runners/{runner["id"]}/runs/{made[1]["id"]}"><rect' in page
    assert f"<title>{made[1]['id']}: failed," in page


async def test_the_history_pages_by_50_and_the_older_link_keeps_the_filters(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="true")
    for _ in range(53):
        await api.trigger(runner["id"])
    await all_done(api, runner["id"], 53)
    newest_first = [r["id"] for r in await runs_of(api, runner["id"], "?limit=1000")]
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(f"/ui/runners/{runner['id']}")
        assert run_ids(page) == newest_first[:50]
        assert len(bars(page)) == 50
        older = re.search(r'<a id="older" href="([^"]+)"', page)
        assert older and older.group(1) == f"?before={newest_first[49]}"
        _, page2 = await ui.get(f"/ui/runners/{runner['id']}" + older.group(1))
        assert run_ids(page2) == newest_first[50:] and 'id="older"' not in page2
        _, filtered = await ui.get(f"/ui/runners/{runner['id']}?status=succeeded&trigger=api")
        older = re.search(r'<a id="older" href="([^"]+)"', filtered)
        assert older
        assert older.group(1).replace("&amp;", "&") == (
            f"?status=succeeded&trigger=api&before={newest_first[49]}"
        )


async def test_the_history_filters_by_status_and_by_trigger(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(
        run_command="exit 3",
        retry_policy={"max_retries": 1, "backoff_seconds": 3600, "backoff_max_seconds": 3600},
    )
    first = await api.trigger(runner["id"])
    await api.wait_done(runner["id"], first["id"])
    retry, _ = await wait_until(
        lambda: _two_runs(api, runner["id"]), timeout=30, what="the retry to be queued"
    )
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(f"/ui/runners/{runner['id']}?trigger=retry")
        assert run_ids(page) == [retry["id"]]
        _, page = await ui.get(f"/ui/runners/{runner['id']}?trigger=api")
        assert run_ids(page) == [first["id"]]
        _, page = await ui.get(f"/ui/runners/{runner['id']}?status=failed")
        assert run_ids(page) == [first["id"]]
        _, page = await ui.get(f"/ui/runners/{runner['id']}?status=pending&trigger=retry")
        assert run_ids(page) == [retry["id"]]
        _, page = await ui.get(f"/ui/runners/{runner['id']}?status=&trigger=")  # "any"
        assert run_ids(page) == [retry["id"], first["id"]]
        assert "selected>retry" not in page
        _, page = await ui.get(f"/ui/runners/{runner['id']}?trigger=schedule")
        assert run_ids(page) == [] and "No runs match" in page
        # the chart stays the runner's last runs, whatever the filter
        assert [b[1] for b in bars(page)] == [first["id"], retry["id"]]


async def _two_runs(api: Api, runner_id: str) -> list[dict[str, Any]] | None:
    runs = await runs_of(api, runner_id)
    return runs if len(runs) == 2 else None


async def test_the_history_marks_runs_whose_log_may_be_incomplete(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(run_command="exit 0")
    plain, marked = [(await api.trigger(runner["id"]))["id"] for _ in range(2)]
    await all_done(api, runner["id"], 2)
    await daemon.store.mark_log_incomplete(marked)
    async with await logged_in(daemon) as ui:
        status, page = await ui.get(f"/ui/runners/{runner['id']}")
    assert status == 200
    by_id = dict(zip(run_ids(page), rows(page, "runs"), strict=True))
    assert 'class="log-incomplete"' not in by_id[plain]
    mark = re.search(r'<span class="log-incomplete" title="([^"]*)"[^>]*>⚠</span>', by_id[marked])
    assert mark and mark.group(1) == "The log may be incomplete: see the notes in the log"


async def test_a_bad_filter_value_is_a_400_page_naming_the_field(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner()
    async with await logged_in(daemon) as ui:
        for query, field in (
            ("status=done", "status:"),
            ("trigger=cron", "trigger:"),
            ("before=nope", "before:"),
            (f"before={uuid.uuid4()}", "before:"),
        ):
            status, page = await ui.get(f"/ui/runners/{runner['id']}?{query}")
            assert status == 400 and f"<li>{field}" in page, (query, page)


async def test_the_api_lists_runs_by_trigger(api: Api) -> None:
    runner = await api.create_runner(
        run_command="exit 3",
        retry_policy={"max_retries": 1, "backoff_seconds": 3600, "backoff_max_seconds": 3600},
    )
    first = await api.trigger(runner["id"])
    await api.wait_done(runner["id"], first["id"])
    retry, _ = await wait_until(
        lambda: _two_runs(api, runner["id"]), timeout=30, what="the retry to be queued"
    )
    assert [r["id"] for r in await runs_of(api, runner["id"], "?trigger=retry")] == [retry["id"]]
    assert [r["id"] for r in await runs_of(api, runner["id"], "?trigger=api")] == [first["id"]]
    assert await runs_of(api, runner["id"], "?trigger=chain") == []
    assert [r["id"] for r in await runs_of(api, runner["id"], "?trigger=retry&status=pending")] == [
        retry["id"]
    ]
    assert await runs_of(api, runner["id"], "?trigger=retry&status=failed") == []
    status, data = await api.get(f"/v1/runners/{runner['id']}/runs?trigger=cron")
    assert status == 400 and data["errors"][0].startswith("trigger: must be one of api, schedule")


async def test_the_trigger_form_makes_a_run_with_the_env_override_and_opens_its_page(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await full_runner(api)
    async with await logged_in(daemon) as ui:
        await ui.get(f"/ui/runners/{runner['id']}")
        r = await ui.post(f"/ui/runners/{runner['id']}/runs", {"env": "\nCODE=7\r\n\nEXTRA=a=b\n"})
    assert r.status == 303, r.status
    [run] = await runs_of(api, runner["id"])
    assert r.headers["Location"] == f"/ui/runners/{runner['id']}/runs/{run['id']}"
    assert run["trigger"] == "api"
    done = await api.wait_done(runner["id"], run["id"])
    assert done["exit_code"] == 7  # `exit $CODE` read the override, not the runner's 0
    stored = await daemon.store.get_run(run["id"])
    assert stored is not None
    assert dict(stored.env) == {"CODE": "7", "TOKEN": SECRET_VAL, "EXTRA": "a=b"}


async def test_a_trigger_form_line_without_equals_is_a_400_naming_the_line_and_no_run(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner()
    async with await logged_in(daemon) as ui:
        await ui.get(f"/ui/runners/{runner['id']}")
        async with ui.http.post(
            daemon.url + f"/ui/runners/{runner['id']}/runs",
            data={"env": "GOOD=1\nNOEQUALS", "csrf_token": ui.csrf or ""},
            headers={"Origin": daemon.url},
            allow_redirects=False,
        ) as r:
            page = await r.text()
    assert r.status == 400
    assert "env: line 2 has no &#39;=&#39;" in page
    assert re.search(r'<textarea[^>]*name="env"[^>]*>GOOD=1\nNOEQUALS</textarea>', page)
    assert await runs_of(api, runner["id"]) == []


async def test_a_trigger_form_the_api_rejects_names_the_field_and_makes_no_run(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner()
    async with await logged_in(daemon) as ui:
        await ui.get(f"/ui/runners/{runner['id']}")
        async with ui.http.post(
            daemon.url + f"/ui/runners/{runner['id']}/runs",
            data={"env": "1BAD=x", "csrf_token": ui.csrf or ""},
            headers={"Origin": daemon.url},
            allow_redirects=False,
        ) as r:
            page = await r.text()
    assert r.status == 400
    assert "<li>env_variables[0].env_key:" in page
    assert await runs_of(api, runner["id"]) == []


async def test_a_read_key_sees_no_trigger_form_and_its_post_is_refused(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner()
    async with await logged_in(daemon, daemon.create_key("reader", "read")) as ui:
        status, page = await ui.get(f"/ui/runners/{runner['id']}")
        assert status == 200 and 'id="trigger-run"' not in page and 'id="trigger"' not in page
        r = await ui.post(f"/ui/runners/{runner['id']}/runs", {"env": "A=1"})
    assert r.status == 403
    assert await runs_of(api, runner["id"]) == []


async def test_a_forged_trigger_post_is_refused_and_makes_no_run(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner()
    async with await logged_in(daemon) as ui:
        await ui.get(f"/ui/runners/{runner['id']}")
        r = await ui.post(f"/ui/runners/{runner['id']}/runs", origin="http://evil.example")
        assert r.status == 403
        r = await ui.post(f"/ui/runners/{runner['id']}/runs", csrf=False)
        assert r.status == 403
    assert await runs_of(api, runner["id"]) == []


async def test_what_a_user_typed_is_escaped_everywhere_on_the_page(
    daemon: InProcessDaemon, api: Api
) -> None:
    runner = await api.create_runner(
        name=XSS,
        run_command=f"echo '{XSS}'",
        env_variables=[{"env_key": "XSS", "env_val": XSS}],
    )
    await api.trigger(runner["id"])
    async with await logged_in(daemon) as ui:
        _, page = await ui.get(f"/ui/runners/{runner['id']}?reveal=env")
        assert XSS not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        async with ui.http.post(
            daemon.url + f"/ui/runners/{runner['id']}/runs",
            data={"env": f"{XSS}=1\n{XSS}", "csrf_token": ui.csrf or ""},
            headers={"Origin": daemon.url},
            allow_redirects=False,
        ) as r:
            rejected = await r.text()
    assert r.status == 400 and XSS not in rejected
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rejected


async def test_a_trigger_post_for_an_unknown_runner_is_a_404_page(daemon: InProcessDaemon) -> None:
    async with await logged_in(daemon) as ui:
        for runner_id in (str(uuid.uuid4()), "not-an-id"):
            r = await ui.post(f"/ui/runners/{runner_id}/runs", {"env": "A=1"})
            assert r.status == 404, runner_id
            assert r.content_type == "text/html"
