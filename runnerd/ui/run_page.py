"""The Run page: status, times, exit code, why it failed, its attempt chain, its
log (live while it runs, over Server-Sent Events), the raw log's download and the
Cancel run button."""

from __future__ import annotations

from aiohttp import web


def add_routes(r: web.UrlDispatcher) -> None:
    pass
