"""The dashboard's pages: each handler reads through the store's queries (the
ones the API uses, or the dashboard's own aggregates in the store), shapes values
with the API's contract.*_json, and renders its template. Actions (trigger,
cancel) go through the same paths as the API's, then redirect (POST/redirect/GET).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..api import CONFIG, STORE
from ..auth import hash_secret
from ..contract.resources import registry_json, run_json, runner_json, schedule_json
from ..models import now_ms
from ..store.dashboard import DAY_MS, RECENT_RUNS
from ..timefmt import format_ms
from . import sessions, views

log = logging.getLogger("runnerd.ui")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/login", login_page, name="login")
    r.add_post("/login", login)
    r.add_post("/logout", logout, name="logout")
    r.add_get("/", overview, name="overview")
    r.add_get("/runners", runners, name="runners")
    r.add_get("/container_registries", registries, name="registries")


# -- login and logout ------------------------------------------------------------------


def _safe_next(value: Any) -> str:
    """Where to go after login: a dashboard path only (never another site)."""
    if isinstance(value, str) and value.startswith("/ui/") and not value.startswith("/ui//"):
        # No backslash, space or control character: browsers drop or turn them into
        # "/", which could make "/ui/\t/x" "/ui//x" after this check.
        if urlsplit(value).netloc == "" and not any(
            c == "\\" or c <= " " or c == "\x7f" for c in value
        ):
            return value
    return "/ui/"


async def login_page(request: web.Request) -> web.StreamResponse:
    if sessions.SESSION in request:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    return views.page(
        request, "login.html", {"next": _safe_next(request.query.get("next")), "error": None}
    )


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    secret = form.get("api_key")
    next_url = _safe_next(form.get("next"))
    store = request.config_dict[STORE]
    key = None
    if isinstance(secret, str) and secret.strip():
        key = await store.api_key_by_hash(hash_secret(secret.strip()))
    if key is None:
        log.warning("dashboard: a login with an unknown API key from %s", request.remote)
        return views.page(
            request,
            "login.html",
            {"next": next_url, "error": "api_key: that is not a valid API key"},
            status=401,
        )
    response = web.HTTPSeeOther(next_url)
    await sessions.start_session(request, key, response)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther(str(request.app.router["login"].url_for()))
    await sessions.end_session(request, response)
    raise response


# -- overview ------------------------------------------------------------------------


async def overview(request: web.Request) -> web.StreamResponse:
    """The last 24 hours' totals, what is active now, what fires next, what failed."""
    store = request.config_dict[STORE]
    tz = request.config_dict[CONFIG].tz
    now = now_ms()
    totals = await store.totals_since(now - DAY_MS)
    active = [
        {
            **run_json(run, tz),
            "runner_id": run.runner_id,
            "runner_name": name,
            # Running: since it started; pending: since it was queued.
            "elapsed_ms": now - (run.started_at or run.created_at),
        }
        for run, name in await store.active_runs()
    ]
    upcoming = [
        {**schedule_json(schedule, tz), "runner_id": schedule.runner_id, "runner_name": name}
        for schedule, name in await store.next_fires()
    ]
    failures = [
        {**run_json(run, tz), "runner_id": run.runner_id, "runner_name": name}
        for run, name in await store.latest_failures()
    ]
    return views.page(
        request,
        "overview.html",
        {"totals": totals, "active": active, "upcoming": upcoming, "failures": failures},
    )


# -- runners and registries ----------------------------------------------------------


async def runners(request: web.Request) -> web.StreamResponse:
    """Every runner with its newest run's status, next fire and recent record."""
    store = request.config_dict[STORE]
    config = request.config_dict[CONFIG]
    records = await store.runner_records()
    rows = []
    for runner in await store.list_runners():
        record = records.get(runner.id)
        rows.append(
            {
                **runner_json(runner, config),
                "last_status": record.last_status.value if record and record.last_status else None,
                "next_fire": format_ms(record.next_fire if record else None, config.tz),
                "recent": record.recent if record else 0,
                "success_rate": record.success_rate if record else None,
                "median_ms": record.median_ms if record else None,
            }
        )
    return views.page(request, "runners.html", {"runners": rows, "recent_runs": RECENT_RUNS})


async def registries(request: web.Request) -> web.StreamResponse:
    """The container registries, as the API lists them: never a password."""
    store = request.config_dict[STORE]
    tz = request.config_dict[CONFIG].tz
    found = [registry_json(r, tz) for r in await store.list_registries()]
    return views.page(request, "registries.html", {"registries": found})
