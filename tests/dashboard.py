"""A dashboard user for tests and the bench: an aiohttp session with its own cookie
jar that logs in with an API key, GETs pages and posts forms as a browser does
(Origin header, the CSRF token read from the last page). Works against the
in-process app (tests/api) and a daemon process alike: it needs only a base URL."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


class Dashboard:
    def __init__(self, url: str, *, origin: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.origin = origin or self.url  # what a browser on our pages sends
        # unsafe: keep cookies for an IP address host (127.0.0.1), as a browser does.
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf: str | None = None

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> Dashboard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get(self, path: str, **kw: Any) -> tuple[int, str]:
        """(status, body) of a page, following redirects; remembers its CSRF token."""
        async with self.http.get(self.url + path, **kw) as r:
            text = await r.text()
            if found := CSRF.search(text):
                self.csrf = found.group(1)
            return r.status, text

    async def post(
        self,
        path: str,
        form: dict[str, str] | None = None,
        *,
        csrf: bool = True,
        origin: str | None = "",
        follow: bool = False,
    ) -> aiohttp.ClientResponse:
        """POST a form as our pages do: Origin our own (or `origin`, None for no
        header), the CSRF token of the last page fetched unless `csrf` is False.
        Not following redirects: the response's Location tells where it led."""
        data = dict(form or {})
        if csrf and self.csrf is not None and "csrf_token" not in data:
            data["csrf_token"] = self.csrf
        headers = {}
        if origin is not None:
            headers["Origin"] = origin or self.origin
        r = await self.http.post(
            self.url + path, data=data, headers=headers, allow_redirects=follow
        )
        await r.read()
        r.release()
        return r

    async def login(self, key: str) -> aiohttp.ClientResponse:
        r = await self.post("/ui/login", {"api_key": key}, csrf=False)
        if r.status == 303:
            await self.get(r.headers["Location"])  # as a browser would: picks up the token
        return r

    def session_cookie(self) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == "runnerd_session":
                return cookie.value
        return None
