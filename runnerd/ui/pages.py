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

from ..api import STORE
from ..auth import hash_secret
from . import sessions, views

log = logging.getLogger("runnerd.ui")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/login", login_page, name="login")
    r.add_post("/login", login)
    r.add_post("/logout", logout, name="logout")
    r.add_get("/", overview, name="overview")


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
    return views.page(request, "overview.html", {})
