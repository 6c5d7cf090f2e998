"""The Runner page: its settings, schedules, retry policy and chains, env variable
keys, a chart of its last 50 runs, its run history, and the Trigger run form."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from .. import api, contract
from ..api import CONFIG, STORE
from ..models import Run, Status, Trigger, now_ms
from . import charts, sessions, views

PAGE_SIZE = 50  # runs in the history's page, and in the chart
MASK = "••••••"  # an env value as a page shows it unless a full key asks to see it
HISTORY_FILTERS = ("status", "trigger")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/runners/{rid}", runner_page, name="runner")
    r.add_post("/runners/{rid}/runs", trigger_run, name="trigger-run")


def run_duration_ms(run: Run, now: int) -> int | None:
    """How long it took, or has taken so far while running; None before it started."""
    if run.started_at is None:
        return None
    return max(0, (run.completed_at or now) - run.started_at)


def parse_env_lines(text: str) -> tuple[list[dict[str, str]], list[str]]:
    """The Trigger run form's `env` textarea, one `KEY=value` a line (blank lines
    ignored), as the API's `env_variables`; and the errors, each naming its line.
    Keys and values are checked by the API's own rules afterwards."""
    env: list[dict[str, str]] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            errors.append(f"env: line {number} has no '=': write it as KEY=value")
            continue
        env.append({"env_key": key.strip(), "env_val": value})
    return env, errors


async def runner_page(request: web.Request) -> web.StreamResponse:
    return await render(request, env_text="", errors=[], status=200)


async def trigger_run(request: web.Request) -> web.StreamResponse:
    """The Trigger run form: its env lines become the API's trigger body and go
    through api.trigger, the same path as POST /v1/runners/{id}/runs."""
    runner_id = api.path_id(request, "rid")
    form = await request.post()
    raw = form.get("env", "")
    env_text = raw if isinstance(raw, str) else ""
    env, errors = parse_env_lines(env_text)
    if not errors:
        body: dict[str, Any] = {"env_variables": env} if env else {}
        try:
            run = await api.trigger(request, runner_id, body, None)
        except contract.Invalid as e:
            errors = e.errors
        else:
            raise web.HTTPSeeOther(views.run_href(run))
    return await render(request, env_text=env_text, errors=errors, status=400)


def history_filters(request: web.Request) -> contract.RunListQuery:
    """The history's `status`, `trigger` and `before` by the API's own rules (a bad
    value is a 400 naming it); an empty value, as the filter form sends for "any",
    is no filter."""
    given = {k: v for k in (*HISTORY_FILTERS, "before") if (v := request.query.get(k, ""))}
    return contract.parse_run_list_query({**given, "limit": str(PAGE_SIZE)})


async def render(
    request: web.Request, *, env_text: str, errors: list[str], status: int
) -> web.StreamResponse:
    store = request.config_dict[STORE]
    config = request.config_dict[CONFIG]
    runner = await store.get_runner(api.path_id(request, "rid"))
    if runner is None:
        raise web.HTTPNotFound()
    q = history_filters(request)
    runs = await store.list_runs(
        runner.id, limit=q.limit, status=q.status, trigger=q.trigger, before=q.before
    )
    if runs is None:
        raise contract.Invalid([f"before: no run {q.before} of this runner"])
    unfiltered = q.status is None and q.trigger is None and q.before is None
    latest = runs if unfiltered else await store.list_runs(runner.id, limit=PAGE_SIZE)
    assert latest is not None  # no `before`: always a list
    now = now_ms()
    chart = charts.runs_chart(
        [
            charts.Bar(r.id, r.status.value, run_duration_ms(r, now), views.run_href(r))
            for r in reversed(latest)  # oldest on the left
        ]
    )
    reveal = request.query.get("reveal") == "env" and sessions.can_act(request)
    env = [
        {"env_key": e.env_key, "env_val": e.env_val if reveal else MASK}
        for e in await store.list_env(runner.id)
    ]
    schedules = [
        contract.schedule_json(s, config.tz) for s in await store.list_schedules(runner.id)
    ]
    chains = {
        outcome: [await chain_target(request, target) for target in targets]
        for outcome, targets in (
            ("on_success", runner.on_success),
            ("on_failure", runner.on_failure),
        )
    }
    filters = {
        "status": q.status.value if q.status else None,
        "trigger": q.trigger.value if q.trigger else None,
    }
    older = None
    if len(runs) == PAGE_SIZE:  # the next page keeps the filters
        kept = {k: v for k, v in filters.items() if v is not None}
        older = "?" + urlencode({**kept, "before": runs[-1].id})
    history = [
        {
            **contract.run_json(r, config.tz),
            "href": views.run_href(r),
            "duration_ms": run_duration_ms(r, now),
        }
        for r in runs
    ]
    return views.page(
        request,
        "runner.html",
        {
            "nav": "runners",
            "runner": contract.runner_json(runner, config),
            "registry": await store.get_registry(runner.container_registry_id)
            if runner.container_registry_id
            else None,
            "schedules": schedules,
            "chains": chains,
            "env": env,
            "revealed": reveal,
            "chart": chart,
            "runs": history,
            "older": older,
            "filters": filters,
            "statuses": [s.value for s in Status],
            "triggers": [t.value for t in Trigger],
            "env_text": env_text,
            "errors": errors,
        },
        status=status,
    )


async def chain_target(request: web.Request, runner_id: str) -> dict[str, Any]:
    """A runner a chain names: its id, name (None when it is gone) and page."""
    target = await request.config_dict[STORE].get_runner(runner_id)
    return {
        "id": runner_id,
        "name": target.name if target else None,
        "href": f"/ui/runners/{runner_id}",
    }
