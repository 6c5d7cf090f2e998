"""The web dashboard: server-rendered pages under /ui/ over the same store queries
the API answers from (another view of it, not a second data path).

`attach` mounts it on the API's app as a sub-app with its own middlewares: HTML
error pages, the security headers, and the session rules (sessions.py). Pages are
Jinja2 templates in templates/ (autoescaped), the assets in static/: the vendored
pico.css (MIT, its licence beside it), ui.css, and app.js for the live parts. No
build step and nothing fetched from elsewhere: it works on an air-gapped host.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .. import contract
from . import pages, run_page, runner_page, sessions, views

log = logging.getLogger("runnerd.ui")

STATIC_DIR = Path(__file__).parent / "static"
UI_APP = web.AppKey("ui_app", web.Application)  # on the API's app: the dashboard's

# No inline script or style anywhere: the pages load /ui/static/ only. img-src data:
# is for pico.css's icons (inline SVG in CSS); a chart is SVG in the page itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def attach(app: web.Application) -> None:
    """Serve the dashboard under /ui/ of `app` (the API's); / and /ui redirect there."""
    ui = web.Application(middlewares=[errors_middleware, sessions.middleware])
    env = aiohttp_jinja2.setup(
        ui,
        loader=jinja2.PackageLoader("runnerd.ui", "templates"),
        autoescape=True,  # everything a user typed is escaped, in every template
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the test, not the page
    )
    views.register(env)
    ui.on_response_prepare.append(security_headers)
    r = ui.router
    r.add_static("/static/", STATIC_DIR, name="static", append_version=True)
    pages.add_routes(r)
    runner_page.add_routes(r)
    run_page.add_routes(r)
    static = r["static"]
    env.globals["static"] = lambda name: str(static.url_for(filename=name))
    # Before the sub-app: its prefix would take /ui too, where the cookie (Path=/ui/)
    # is not sent, and a logged-in user would be asked to log in again.
    app.router.add_get("/", to_dashboard)
    app.router.add_get("/ui", to_dashboard)
    app.add_subapp("/ui/", ui)
    app[UI_APP] = ui


async def to_dashboard(request: web.Request) -> web.Response:
    # The API's app answers these, so they get the dashboard's headers here.
    raise web.HTTPFound("/ui/", headers=SECURITY_HEADERS)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every dashboard response, streamed ones (live logs, downloads) included."""
    response.headers.update(SECURITY_HEADERS)
    if not sessions.is_static(request):
        # Pages, logs and streams hold what a key may see: no cache keeps them, not
        # even where a handler asked for less (no-cache still stores).
        response.headers["Cache-Control"] = "no-store"


@web.middleware
async def errors_middleware(request: web.Request, handler: sessions.Handler) -> web.StreamResponse:
    """Errors leave as a page, not the API's JSON; redirects pass through."""
    try:
        return await handler(request)
    except contract.Invalid as e:
        return error_page(request, 400, "Bad request", e.errors)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error_page(request, e.status, e.reason, [])
    except ConnectionResetError:
        raise  # the client went away: nothing to answer
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_page(request, 500, "Internal Server Error", [])


def error_page(request: web.Request, status: int, title: str, errors: list[str]) -> web.Response:
    return views.page(
        request, "error.html", {"status": status, "title": title, "errors": errors}, status=status
    )
