"""How the pages show values: the template filters every page shares (times in the
daemon's time zone, durations, statuses), registered once on the Jinja2
environment. Pages get the API's own JSON shapes (contract.*_json), so a value
reads the same in a page as in the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..models import Run
from . import sessions


def register(env: jinja2.Environment) -> None:
    env.filters["when"] = when
    env.filters["duration"] = duration


def page(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """`template` rendered with `context` and what every page gets (the session, its
    CSRF token, whether it may act)."""
    response = aiohttp_jinja2.render_template(
        template, request, {**sessions.template_context(request), **context}
    )
    response.set_status(status)
    return response


def run_href(run: Run) -> str:
    """A run's page."""
    return f"/ui/runners/{run.runner_id}/runs/{run.id}"


def when(api_time: str | None) -> str:
    """An API time (`2026-01-15T10:01:00.000+01:00`) as a page shows it:
    `2026-01-15 10:01:00`, in the offset it was given in; "—" for none."""
    if not api_time:
        return "—"
    parsed = datetime.fromisoformat(api_time)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def duration(ms: int | float | None) -> str:
    """Milliseconds as a person reads them: 850 ms, 12.4 s, 3 m 04 s, 2 h 05 m."""
    if ms is None:
        return "—"
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60} m {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} m"


__all__ = ["register", "when", "duration"]
