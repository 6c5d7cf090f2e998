"""The Runner page: its settings, schedules, retry policy and chains, env variable
keys, a chart of its last 50 runs, its run history, and the Trigger run form."""

from __future__ import annotations

from aiohttp import web


def add_routes(r: web.UrlDispatcher) -> None:
    pass
