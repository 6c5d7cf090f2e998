"""Dashboard sessions and the rules every request to /ui/ meets.

Login takes an API key (form field `api_key`) and makes a server-side session: a
random token in an HttpOnly, SameSite=Strict cookie (Secure when `[ui] public_url`
is https), stored only as its SHA-256 and tied to the key, so revoking the key ends
the session at once. A session idle past `[ui] session_hours` ends; logout ends it.

Every POST must come from the dashboard's own origin (Origin, else Referer) and,
but for login, carry the session's CSRF token: an HMAC of the cookie's token, so
it is per session, never stored, and useless without the cookie. A read key's
session may GET everything and POST nothing but logout. The key is never put in a
URL, a page or a log; a session's key is named by its name only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..api import CONFIG, READ_METHODS, STORE
from ..auth import hash_secret
from ..models import ApiKey, Scope, UiSession, now_ms

log = logging.getLogger("runnerd.ui")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "runnerd_session"
COOKIE_PATH = "/ui/"
CSRF_FIELD = "csrf_token"
TOUCH_EVERY_MS = 60_000  # last_seen_at is written at most this often per session
PUBLIC_PATHS = frozenset({"/ui/login"})  # answered without a session
SESSION = web.RequestKey("ui_session", UiSession)
TOKEN = web.RequestKey("ui_session_token", str)


def csrf_token(token: str) -> str:
    """The CSRF token of the session whose cookie holds `token`."""
    return hmac.new(token.encode(), b"runnerd-ui-csrf", hashlib.sha256).hexdigest()


def can_act(request: web.Request) -> bool:
    """Whether this request's session may change things (a full key's)."""
    session = request.get(SESSION)
    return session is not None and session.scope is Scope.FULL


def template_context(request: web.Request) -> dict[str, Any]:
    """What every page gets: the session (or None), its CSRF token, can_act."""
    token = request.get(TOKEN)
    return {
        "session": request.get(SESSION),
        "csrf_token": csrf_token(token) if token else "",
        "can_act": can_act(request),
    }


def _idle_ms(request: web.Request) -> int:
    return int(request.config_dict[CONFIG].ui.session_hours * 3600 * 1000)


def _touch_every_ms(idle_ms: int) -> int:
    # Once a minute spares the database a write per page; a session_hours shorter
    # than two minutes touches more often, or an active session would idle out.
    return min(TOUCH_EVERY_MS, idle_ms // 2)


async def current_session(request: web.Request) -> tuple[UiSession, str] | None:
    """The request's live session and its token; None without one (no cookie, an
    unknown or idle one, or its key revoked)."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 200:
        return None
    store = request.config_dict[STORE]
    now, idle_ms = now_ms(), _idle_ms(request)
    token_hash = hash_secret(token)
    session = await store.session_by_hash(token_hash, now - idle_ms)
    if session is None:
        return None
    if now - session.last_seen_at >= _touch_every_ms(idle_ms):
        await store.touch_session(token_hash, now)
        session.last_seen_at = now
    return session, token


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of `url` as a browser writes it in Origin: lower case,
    no default port (`https://Example.com:443/x` → `https://example.com`); None when
    it has none (`null`, a path, garbage)."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, a bad IPv6 address
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def allowed_origin(request: web.Request) -> str | None:
    """The one origin a form may be posted from: public_url's, else the request's
    own (its Host header, as the browser addressed it)."""
    public = request.config_dict[CONFIG].ui.public_url
    return origin_of(public or f"{request.scheme}://{request.host}/")


def _posted_from(request: web.Request) -> str | None:
    """The origin a POST says it came from: Origin, else (some browsers send none
    on a same-origin form) the Referer's; None when neither says."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin_of(origin)  # "null" (a sandboxed frame, a file:) is None
    referer = request.headers.get("Referer")
    return origin_of(referer) if referer else None


def is_static(request: web.Request) -> bool:
    # By the route matched, not the path's spelling: only the static files
    # themselves are served without a session.
    resource = request.match_info.route.resource
    return resource is not None and resource.name == "static"


def forbidden(why: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(reason=f"Forbidden: {why}")


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_static(request):
        return await handler(request)
    found = await current_session(request)
    if found is not None:
        request[SESSION], request[TOKEN] = found
    if request.method in READ_METHODS:
        if found is None and request.path not in PUBLIC_PATHS:
            if request.headers.get("Accept", "").startswith("text/event-stream"):
                raise web.HTTPUnauthorized(reason="Unauthorized: log in again")
            raise web.HTTPSeeOther(login_url(request))
        return await handler(request)
    # A state-changing request: from our own pages only.
    posted_from = _posted_from(request)
    if posted_from is None or posted_from != allowed_origin(request):
        log.warning(
            "dashboard: refused a %s to %s from origin %r (not %s)",
            request.method,
            request.path,
            # Origin as sent ("null"), else the Referer's origin: never a whole URL
            # of another site's, which may hold its secrets.
            request.headers.get("Origin", posted_from),
            allowed_origin(request),
        )
        raise forbidden("the form was not sent from this dashboard")
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    if found is None:
        if request.path == "/ui/logout":  # already ended (idle, revoked): nothing to do
            response = web.HTTPSeeOther(str(request.app.router["login"].url_for()))
            clear_cookie(request, response)
            raise response
        raise forbidden("log in again (your session has ended)")
    form = await request.post()
    given = form.get(CSRF_FIELD)
    # As bytes: compare_digest raises on a str that is not ASCII (a 500, not a 403).
    expected = csrf_token(found[1]).encode()
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected):
        log.warning(
            "dashboard: refused a %s to %s without its CSRF token", request.method, request.path
        )
        raise forbidden("the form's CSRF token is missing or wrong; reload the page")
    if found[0].scope is not Scope.FULL and request.path != "/ui/logout":
        raise forbidden(f"the API key {found[0].key_name!r} may only read")
    return await handler(request)


def login_url(request: web.Request) -> str:
    """The login page, coming back to this page after."""
    return str(request.app.router["login"].url_for().with_query(next=request.path_qs))


async def start_session(request: web.Request, key: ApiKey, response: web.StreamResponse) -> None:
    """A new session for `key`, its cookie set on `response`; idle ones are swept."""
    store = request.config_dict[STORE]
    now = now_ms()
    await store.delete_idle_sessions(now - _idle_ms(request))
    if (old := request.get(TOKEN)) is not None:  # logging in again: the old one ends
        await store.delete_session(hash_secret(old))
    token = secrets.token_urlsafe(32)
    await store.create_session(hash_secret(token), key.id, now)
    log.info("dashboard: logged in with API key %r (%s)", key.name, key.scope.value)
    response.set_cookie(COOKIE, token, **_cookie_attributes(request))


def _cookie_attributes(request: web.Request) -> dict[str, Any]:
    return {
        "path": COOKIE_PATH,
        "httponly": True,
        "samesite": "Strict",
        "secure": request.config_dict[CONFIG].ui.secure_cookie,
    }


def clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
    # With the attributes it was set with: a browser may keep a Secure cookie that
    # a Set-Cookie without Secure tries to overwrite.
    response.del_cookie(COOKIE, **_cookie_attributes(request))


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    """Logout: the session is deleted and its cookie cleared on `response`."""
    token = request.get(TOKEN)
    if token is not None:
        await request.config_dict[STORE].delete_session(hash_secret(token))
        log.info("dashboard: API key %r logged out", request[SESSION].key_name)
    clear_cookie(request, response)
