"""The dashboard's session rules, in process: login with an API key, the cookie's
attributes, where login may lead, idle expiry, logout, revocation with the real
CLI, CSRF and Origin on every POST route, a read key's limits, the security headers
on every response, and the dashboard switched off.

The POST and GET routes are read from the ui sub-app's router, so a route added
later is held to the same rules without a test naming it."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from runnerd import ui
from runnerd.auth import hash_secret, new_secret
from runnerd.models import Scope, now_ms
from runnerd.ui import run_page, runner_page, sessions
from tests.conftest import Api
from tests.dashboard import Dashboard
from tests.harness import runnerd_cli

from .conftest import InProcessDaemon

StartDaemon = Callable[..., Awaitable[InProcessDaemon]]

EVIL = "http://evil.example"
PUBLIC = '[ui]\npublic_url = "https://runnerd.example.com/"\n'
XSS_NAME = "<script>alert(1)</script>"


def _ui_routes(method: str) -> list[str]:
    """The canonical paths of the ui sub-app's routes for `method`, as attached."""
    app = web.Application()
    ui.attach(app)
    paths = {
        route.resource.canonical
        for route in app[ui.UI_APP].router.routes()
        if route.method == method and route.resource is not None
    }
    return sorted(paths)


POST_ROUTES = _ui_routes("POST")
GET_ROUTES = [p for p in _ui_routes("GET") if p.rstrip("/") != "/ui/static"]


async def read_key(daemon: InProcessDaemon, name: str = "reader") -> str:
    secret = new_secret()
    await daemon.store.create_api_key(name, Scope.READ, hash_secret(secret))
    return secret


def db(daemon: InProcessDaemon) -> sqlite3.Connection:
    """A connection of the test's own to the daemon's database (WAL: it may read
    and write beside the daemon's)."""
    conn = sqlite3.connect(daemon.config.storage.db_path, timeout=10, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def session_row(daemon: InProcessDaemon, token: str) -> sqlite3.Row | None:
    with db(daemon) as conn:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM ui_sessions WHERE id = ?", (hash_secret(token),)
        ).fetchone()
        return row


def set_last_seen(daemon: InProcessDaemon, token: str, at: int) -> None:
    with db(daemon) as conn:
        conn.execute(
            "UPDATE ui_sessions SET last_seen_at = ? WHERE id = ?", (at, hash_secret(token))
        )


def snapshot(daemon: InProcessDaemon) -> list[str]:
    """Everything in the database but when sessions were last seen (a page view
    may touch that): a forged POST must leave this as it was."""
    with db(daemon) as conn:
        conn.execute("BEGIN")
        rows = [
            line for line in conn.iterdump() if not line.startswith('INSERT INTO "ui_sessions"')
        ]
        rows += [
            f"session {r['id']} {r['api_key_id']} {r['created_at']}"
            for r in conn.execute("SELECT * FROM ui_sessions ORDER BY id")
        ]
        conn.execute("ROLLBACK")
        return rows


async def logged_in(daemon: InProcessDaemon, key: str | None = None) -> Dashboard:
    dash = Dashboard(daemon.url)
    r = await dash.login(key or daemon.key)
    assert r.status == 303, r.status
    return dash


_FILLED: dict[str, tuple[str, str]] = {}  # daemon dir → (runner id, run id)


async def fill(daemon: InProcessDaemon, api: Api, canonical: str) -> str:
    """A route's canonical path with its parameters filled from real objects: a
    runner (named as an attacker would) and a run of it that stays running."""
    params = set(re.findall(r"\{(\w+)\}", canonical))
    if not params:
        return canonical
    if (made := _FILLED.get(str(daemon.dir))) is None:  # one per daemon: runs take slots
        runner = await api.create_runner(name=f"{XSS_NAME}-{now_ms()}", run_command="sleep 300")
        run = await api.trigger(runner["id"])
        await api.wait_status(runner["id"], run["id"], "running")
        made = _FILLED[str(daemon.dir)] = (runner["id"], run["id"])
    values = {"rid": made[0], "id": made[1], "run_id": made[1]}
    unknown = params - set(values)
    assert not unknown, f"{canonical}: teach fill() what {sorted(unknown)} are"
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], canonical)


def assert_security_headers(r: aiohttp.ClientResponse, what: str) -> None:
    csp = r.headers.get("Content-Security-Policy", "")
    assert csp == ui.CONTENT_SECURITY_POLICY, (what, csp)
    assert r.headers.get("X-Content-Type-Options") == "nosniff", what
    assert r.headers.get("Referrer-Policy") == "same-origin", what
    assert r.headers.get("X-Frame-Options") == "DENY", what


# -- the policy itself -----------------------------------------------------------------


def test_the_csp_allows_no_inline_script_or_style_and_no_framing() -> None:
    directives = dict(
        d.strip().split(" ", 1) for d in ui.CONTENT_SECURITY_POLICY.split(";") if d.strip()
    )
    assert "unsafe" not in ui.CONTENT_SECURITY_POLICY  # unsafe-inline, unsafe-eval
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'self'"


def test_the_route_lists_hold_the_foundations_routes() -> None:
    # So the parametrized tests below cannot pass by testing nothing.
    assert {"/ui/login", "/ui/logout"} <= set(POST_ROUTES)
    assert {"/ui/", "/ui/login"} <= set(GET_ROUTES)


# -- login -----------------------------------------------------------------------------


async def test_a_page_without_a_session_redirects_to_login(daemon: InProcessDaemon) -> None:
    async with Dashboard(daemon.url) as dash:
        async with dash.http.get(daemon.url + "/ui/runners", allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/ui/login?next=/ui/runners"


async def test_login_with_a_full_key_sets_a_strict_httponly_cookie_for_ui_only(
    daemon: InProcessDaemon,
) -> None:
    async with Dashboard(daemon.url) as dash:
        r = await dash.login(daemon.key)
        assert r.status == 303 and r.headers["Location"] == "/ui/"
        cookie = r.cookies["runnerd_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/ui/"
        assert not cookie["secure"]  # no https public_url: the daemon may be plain http
        assert not cookie["max-age"] and not cookie["expires"]  # ends with the browser
        status, page = await dash.get("/ui/")
        assert status == 200 and "<h1>Overview</h1>" in page
        assert 'id="logout"' in page


async def test_login_with_a_read_key_opens_the_overview_without_actions(
    daemon: InProcessDaemon,
) -> None:
    async with Dashboard(daemon.url) as dash:
        r = await dash.login(await read_key(daemon))
        assert r.status == 303 and r.headers["Location"] == "/ui/"
        assert r.cookies["runnerd_session"]["httponly"]
        status, page = await dash.get("/ui/")
        assert status == 200 and "<h1>Overview</h1>" in page
        assert "reader (read)" in page  # the nav names the key, by its name


async def test_an_https_public_url_makes_the_cookie_secure(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(PUBLIC)
    async with Dashboard(daemon.url, origin="https://runnerd.example.com") as dash:
        r = await dash.post("/ui/login", {"api_key": daemon.key}, csrf=False)
        assert r.status == 303
        cookie = r.cookies["runnerd_session"]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"


async def test_an_unknown_key_gets_a_401_page_naming_api_key_and_no_cookie(
    daemon: InProcessDaemon,
) -> None:
    wrong = new_secret()
    async with Dashboard(daemon.url) as dash:
        r = await dash.post("/ui/login", {"api_key": wrong}, csrf=False)
        assert r.status == 401
        assert "Set-Cookie" not in r.headers and dash.session_cookie() is None
        async with dash.http.post(
            daemon.url + "/ui/login", data={"api_key": wrong}, headers={"Origin": daemon.url}
        ) as r2:
            page = await r2.text()
        assert r2.status == 401
        assert 'id="login-error"' in page and "api_key" in page
        assert wrong not in page
    log = daemon.log_text()
    assert "WARNING runnerd.ui: dashboard: a login with an unknown API key" in log
    assert wrong not in log


async def test_an_empty_or_garbled_key_is_refused_as_unknown(daemon: InProcessDaemon) -> None:
    async with Dashboard(daemon.url) as dash:
        for form in ({"api_key": "   "}, {}, {"api_key": "é\x00" * 50}, {"api_key": "x" * 100_000}):
            r = await dash.post("/ui/login", form, csrf=False)
            assert r.status == 401 and dash.session_cookie() is None


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example",
        "https://evil.example",
        "http://evil.example/ui/",
        "/ui//evil.example",
        "\\\\evil.example",
        "/\\evil.example",
        "/ui/\\evil.example",
        "/ui/\t/evil.example",
        "/ui/\r\nSet-Cookie: x=1",
        "/evil",
        "ui/",
        "javascript:alert(1)",
    ],
)
async def test_next_never_leads_out_of_the_dashboard(
    daemon: InProcessDaemon, next_url: str
) -> None:
    async with Dashboard(daemon.url) as dash:
        async with dash.http.get(
            daemon.url + "/ui/login", params={"next": next_url}, allow_redirects=False
        ) as r:
            page = await r.text()
        assert r.status == 200
        assert 'name="next" value="/ui/"' in page  # the form would lead to the overview
        r2 = await dash.post("/ui/login", {"api_key": daemon.key, "next": next_url}, csrf=False)
        assert r2.status == 303 and r2.headers["Location"] == "/ui/", r2.headers["Location"]
        # Logged in already, the login page sends it on: to the overview, still.
        async with dash.http.get(
            daemon.url + "/ui/login", params={"next": next_url}, allow_redirects=False
        ) as r3:
            assert r3.status == 303 and r3.headers["Location"] == "/ui/"


async def test_next_inside_the_dashboard_is_followed_after_login(
    daemon: InProcessDaemon,
) -> None:
    async with Dashboard(daemon.url) as dash:
        async with dash.http.get(daemon.url + "/ui/runners?status=failed") as r:
            page = await r.text()  # redirected to the login page, carrying next
        assert 'name="next" value="/ui/runners?status=failed"' in page
        r2 = await dash.post(
            "/ui/login", {"api_key": daemon.key, "next": "/ui/runners?status=failed"}, csrf=False
        )
        assert r2.status == 303 and r2.headers["Location"] == "/ui/runners?status=failed"


async def test_the_key_and_the_session_token_appear_in_no_url_page_or_log(
    daemon: InProcessDaemon, api: Api
) -> None:
    seen: list[str] = []  # every URL, Location and body the browser got
    tokens: list[str] = []
    async with Dashboard(daemon.url) as dash:
        for _ in range(2):  # a second login makes a second session
            r = await dash.login(daemon.key)
            seen.append(r.headers["Location"])
            token = dash.session_cookie()
            assert token is not None and token != daemon.key
            tokens.append(token)
            for canonical in GET_ROUTES:
                path = await fill(daemon, api, canonical)
                async with dash.http.get(daemon.url + path, allow_redirects=False) as page:
                    seen += [str(page.url), page.headers.get("Location", "")]
                    if page.content_type != "text/event-stream":  # a live log never ends
                        seen.append(await page.text())
        r = await dash.post("/ui/logout")
        assert r.status == 303
        seen.append(r.headers["Location"])
    log = daemon.log_text()
    assert "logged in with API key 'test'" in log  # the log names the key, by name only
    for token in tokens:
        for secret in (daemon.key, token, hash_secret(token)):
            assert not any(secret in text for text in seen)
            assert secret not in log
        assert sessions.csrf_token(token) not in log  # in pages by design, not in logs


# -- idle expiry and activity ----------------------------------------------------------


async def test_a_session_idle_past_session_hours_ends(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon("[ui]\nsession_hours = 2\n")
    idle_ms = 2 * 3600 * 1000
    async with await logged_in(daemon) as dash:
        token = dash.session_cookie()
        assert token is not None
        set_last_seen(daemon, token, now_ms() - idle_ms + 60_000)  # a minute to spare
        status, _ = await dash.get("/ui/", allow_redirects=False)
        assert status == 200
        set_last_seen(daemon, token, now_ms() - idle_ms - 1)
        async with dash.http.get(daemon.url + "/ui/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/ui/login?next=/ui/"
        # A new login sweeps the idle session's row away.
        await dash.login(daemon.key)
        assert session_row(daemon, token) is None


async def test_activity_keeps_a_session_alive_writing_last_seen_at_once_a_minute(
    daemon: InProcessDaemon,
) -> None:
    async with await logged_in(daemon) as dash:
        token = dash.session_cookie()
        assert token is not None
        row = session_row(daemon, token)
        assert row is not None
        recent = now_ms() - 30_000
        set_last_seen(daemon, token, recent)
        await dash.get("/ui/")
        row = session_row(daemon, token)
        assert row is not None and row["last_seen_at"] == recent  # not written: too soon
        stale = now_ms() - sessions.TOUCH_EVERY_MS - 1
        set_last_seen(daemon, token, stale)
        before = now_ms()
        await dash.get("/ui/")
        row = session_row(daemon, token)
        assert row is not None and row["last_seen_at"] >= before  # seen now


async def test_a_session_shorter_than_a_minute_is_touched_often_enough_to_live(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon("[ui]\nsession_hours = 0.01\n")  # 36 s
    async with await logged_in(daemon) as dash:
        token = dash.session_cookie()
        assert token is not None
        set_last_seen(daemon, token, now_ms() - 20_000)  # active 20 s ago
        before = now_ms()
        status, _ = await dash.get("/ui/", allow_redirects=False)
        assert status == 200
        row = session_row(daemon, token)
        assert row is not None and row["last_seen_at"] >= before


# -- logout and revocation -------------------------------------------------------------


async def test_logout_deletes_the_session_clears_the_cookie_and_the_old_cookie_fails(
    daemon: InProcessDaemon,
) -> None:
    async with await logged_in(daemon) as dash:
        token = dash.session_cookie()
        assert token is not None and session_row(daemon, token) is not None
        r = await dash.post("/ui/logout")
        assert r.status == 303 and r.headers["Location"] == "/ui/login"
        cleared = r.cookies["runnerd_session"]
        assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/ui/"
        assert session_row(daemon, token) is None
        assert dash.session_cookie() is None
    async with aiohttp.ClientSession() as http:  # the old cookie, kept by hand
        async with http.get(
            daemon.url + "/ui/",
            headers={"Cookie": f"runnerd_session={token}"},
            allow_redirects=False,
        ) as r2:
            assert r2.status == 303 and r2.headers["Location"].startswith("/ui/login")
    assert "dashboard: API key 'test' logged out" in daemon.log_text()


async def test_logout_after_the_session_ended_leads_to_login(daemon: InProcessDaemon) -> None:
    async with await logged_in(daemon) as dash:
        token = dash.session_cookie()
        assert token is not None
        set_last_seen(daemon, token, 0)  # idled out in another tab
        r = await dash.post("/ui/logout")
        assert r.status == 303 and r.headers["Location"] == "/ui/login"
        assert dash.session_cookie() is None


async def test_revoking_the_key_with_the_cli_ends_its_sessions_at_once(
    daemon: InProcessDaemon,
) -> None:
    key = daemon.create_key("alice")  # with the real CLI, as an operator would
    async with await logged_in(daemon, key) as one, await logged_in(daemon, key) as two:
        assert (await one.get("/ui/"))[0] == 200
        with db(daemon) as conn:
            [(count,)] = conn.execute(
                "SELECT count(*) FROM ui_sessions s JOIN api_keys k ON k.id = s.api_key_id"
                " WHERE k.name = 'alice'"
            )
            [(key_id,)] = conn.execute("SELECT id FROM api_keys WHERE name = 'alice'")
        assert count == 2
        out = runnerd_cli("keys", "revoke", "alice", "--config", str(daemon.config_path))
        assert out.returncode == 0, out.stderr
        for dash in (one, two):
            async with dash.http.get(daemon.url + "/ui/", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/ui/login?next=/ui/"
        # The CLI's store has foreign keys on: its delete cascaded to the sessions.
        with db(daemon) as conn:
            [(left,)] = conn.execute(
                "SELECT count(*) FROM ui_sessions WHERE api_key_id = ?", (key_id,)
            )
        assert left == 0
        # The test key's own session is untouched.
    async with await logged_in(daemon) as other:
        assert (await other.get("/ui/"))[0] == 200


# -- CSRF and Origin on every POST route -----------------------------------------------


async def _post_raw(
    dash: Dashboard, path: str, form: dict[str, str], headers: dict[str, str]
) -> int:
    async with dash.http.post(
        dash.url + path, data=form, headers=headers, allow_redirects=False
    ) as r:
        await r.read()
        assert_security_headers(r, f"POST {path}")
        return r.status


@pytest.mark.parametrize("canonical", POST_ROUTES)
async def test_a_forged_post_is_refused_and_changes_nothing(
    daemon: InProcessDaemon, api: Api, canonical: str
) -> None:
    path = await fill(daemon, api, canonical)
    async with await logged_in(daemon) as dash, await logged_in(daemon) as other:
        assert dash.csrf and other.csrf and dash.csrf != other.csrf
        own = {"Origin": daemon.url}
        form = {"api_key": daemon.key} if canonical == "/ui/login" else {}
        before = snapshot(daemon)
        forged: list[tuple[str, dict[str, str], dict[str, str]]] = [
            ("another site's Origin", {**form, "csrf_token": dash.csrf}, {"Origin": EVIL}),
            ("Origin: null", {**form, "csrf_token": dash.csrf}, {"Origin": "null"}),
            ("another site's Referer", {**form, "csrf_token": dash.csrf},
             {"Referer": EVIL + "/page?secret=theirs"}),
            ("neither Origin nor Referer", {**form, "csrf_token": dash.csrf}, {}),
            ("our host on another port", {**form, "csrf_token": dash.csrf},
             {"Origin": daemon.url.rsplit(":", 1)[0] + ":1"}),
            ("our host over https", {**form, "csrf_token": dash.csrf},
             {"Origin": daemon.url.replace("http://", "https://")}),
        ]  # fmt: skip
        if canonical != "/ui/login":  # login has no session yet, so no token to check
            forged += [
                ("no csrf_token", form, own),
                ("an empty csrf_token", {**form, "csrf_token": ""}, own),
                ("a wrong csrf_token", {**form, "csrf_token": "0" * 64}, own),
                ("a csrf_token not in ASCII", {**form, "csrf_token": "é" * 64}, own),
                ("another session's csrf_token", {**form, "csrf_token": other.csrf}, own),
                ("the session token as csrf_token",
                 {**form, "csrf_token": dash.session_cookie() or ""}, own),
            ]  # fmt: skip
        for why, data, headers in forged:
            status = await _post_raw(dash, path, data, headers)
            assert status == 403, (why, status)
        assert snapshot(daemon) == before  # no run made, none canceled, still logged in
        assert (await dash.get("/ui/", allow_redirects=False))[0] == 200
        log = daemon.log_text()
        assert log.count("WARNING runnerd.ui: dashboard: refused a POST") == len(forged)
        assert "secret=theirs" not in log and "from origin 'http://evil.example'" in log


@pytest.mark.parametrize("canonical", POST_ROUTES)
async def test_a_post_with_its_token_and_a_same_origin_referer_gets_past_the_checks(
    daemon: InProcessDaemon, api: Api, canonical: str
) -> None:
    path = await fill(daemon, api, canonical)
    async with await logged_in(daemon) as dash:
        assert dash.csrf
        form = {"csrf_token": dash.csrf}
        if canonical == "/ui/login":
            form["api_key"] = daemon.key
        # Some browsers send no Origin on a same-origin form: the Referer speaks then.
        status = await _post_raw(dash, path, form, {"Referer": daemon.url + "/ui/"})
        assert status != 403, status
    assert "refused a POST" not in daemon.log_text()


@pytest.mark.parametrize("canonical", [p for p in POST_ROUTES if p != "/ui/login"])
async def test_a_read_keys_post_is_refused_but_logout_works(
    daemon: InProcessDaemon, api: Api, canonical: str
) -> None:
    path = await fill(daemon, api, canonical)
    async with await logged_in(daemon, await read_key(daemon)) as dash:
        assert dash.csrf
        token = dash.session_cookie()
        assert token is not None
        before = snapshot(daemon)
        status = await _post_raw(dash, path, {"csrf_token": dash.csrf}, {"Origin": daemon.url})
        if canonical == "/ui/logout":
            assert status == 303 and session_row(daemon, token) is None
        else:
            assert status == 403, status
            assert snapshot(daemon) == before


async def test_with_public_url_the_allowed_origin_is_its_not_the_host_headers(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(PUBLIC)
    async with Dashboard(daemon.url) as dash:
        # The browser is at https://runnerd.example.com; the daemon sees the proxy's Host.
        assert (await dash.post("/ui/login", {"api_key": daemon.key}, csrf=False)).status == 403
        r = await dash.post(
            "/ui/login", {"api_key": daemon.key}, csrf=False, origin="https://runnerd.example.com"
        )
        assert r.status == 303
        token = r.cookies["runnerd_session"].value
    cookie = {"Cookie": f"runnerd_session={token}"}  # Secure: the jar keeps it off http
    async with aiohttp.ClientSession() as http:
        async with http.get(daemon.url + "/ui/", headers=cookie) as page:
            found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', await page.text())
            assert found is not None
        form = {"csrf_token": found.group(1)}
        for origin in (
            daemon.url,
            "http://runnerd.example.com",
            "https://runnerd.example.com:8443",
        ):
            async with http.post(
                daemon.url + "/ui/logout",
                data=form,
                headers={**cookie, "Origin": origin},
                allow_redirects=False,
            ) as r:
                assert r.status == 403, origin
        # The public origin, even spelt with its default port and in capitals.
        async with http.post(
            daemon.url + "/ui/logout",
            data=form,
            headers={**cookie, "Origin": "https://RUNNERD.example.com:443"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
    assert "refused a POST to /ui/logout" in daemon.log_text()


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8420/ui/", "http://127.0.0.1:8420"),
        ("HTTP://Example.COM:80/x", "http://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("http://[::1]:8420/", "http://[::1]:8420"),
        ("null", None),
        ("", None),
        ("/ui/", None),
        ("file:///etc/passwd", None),
        ("http://example.com:x/", None),
        ("http://[::1/", None),
    ],
)
def test_an_origin_is_compared_as_a_browser_writes_it(url: str, origin: str | None) -> None:
    assert sessions.origin_of(url) == origin


# -- headers on every response ---------------------------------------------------------


async def test_every_dashboard_response_carries_the_security_headers(
    daemon: InProcessDaemon, api: Api
) -> None:
    async with Dashboard(daemon.url) as anon:
        for path in ("/", "/ui", "/ui/", "/ui/login", "/ui/runners", "/ui/static/app.js",
                     "/ui/static/pico.min.css", "/ui/static/nope.css"):  # fmt: skip
            async with anon.http.get(daemon.url + path, allow_redirects=False) as r:
                assert_security_headers(r, path)
                if not path.startswith("/ui/static/") and path not in ("/", "/ui"):
                    assert r.headers.get("Cache-Control") == "no-store", path
        r = await anon.post("/ui/login", {"api_key": "wrong"}, csrf=False)  # the 401 page
        assert r.status == 401
        assert_security_headers(r, "401 login")
        assert r.headers.get("Cache-Control") == "no-store"
    async with await logged_in(daemon) as dash:
        for canonical in [*GET_ROUTES, "/ui/no-such-page"]:
            path = await fill(daemon, api, canonical)
            # Streamed responses (a live log) are checked by their headers only.
            async with dash.http.get(daemon.url + path, allow_redirects=False) as r:
                assert r.status < 500, (path, r.status)
                assert_security_headers(r, path)
                assert r.headers.get("Cache-Control") == "no-store", path
        r = await dash.post("/ui/logout", origin=EVIL)  # the 403 page
        assert r.status == 403
        assert_security_headers(r, "403")


async def test_static_assets_are_served_without_a_session(daemon: InProcessDaemon) -> None:
    async with aiohttp.ClientSession() as http:
        for name in ("app.js", "pico.min.css", "ui.css", "pico.LICENSE.md"):
            async with http.get(f"{daemon.url}/ui/static/{name}", allow_redirects=False) as r:
                assert r.status == 200, name
                assert (
                    "Cache-Control" not in r.headers or "no-store" not in r.headers["Cache-Control"]
                )
        async with http.get(daemon.url + "/ui/static/pico.LICENSE.md") as r:
            assert "MIT" in await r.text()


async def test_a_garbled_or_huge_cookie_is_no_session(daemon: InProcessDaemon) -> None:
    async with aiohttp.ClientSession() as http:
        for value in ("%C3%A9", "x" * 4000, '"quoted"', daemon.key):
            async with http.get(
                daemon.url + "/ui/",
                headers={"Cookie": f"runnerd_session={value}"},
                allow_redirects=False,
            ) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/ui/login"), value


async def test_a_path_that_only_looks_static_still_needs_a_session(
    daemon: InProcessDaemon,
) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/ui/static/../", "/ui/static/%2e%2e/", "/ui/static/../runners"):
            url = aiohttp.client.URL(daemon.url + path, encoded=True)
            async with http.get(url, allow_redirects=False) as r:
                assert r.status in (303, 403, 404), (path, r.status)
                if r.status != 404:
                    assert r.headers["Location"].startswith("/ui/login")


# -- redirects into the dashboard, and switched off ------------------------------------


async def test_root_and_ui_lead_to_the_dashboard_with_or_without_a_session(
    daemon: InProcessDaemon,
) -> None:
    async with await logged_in(daemon) as dash:
        for path in ("/", "/ui"):
            async with dash.http.get(daemon.url + path, allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/ui/", path
            status, page = await dash.get(path)  # followed: the overview, no new login
            assert status == 200 and "<h1>Overview</h1>" in page, path


async def test_with_the_dashboard_disabled_ui_and_root_are_404_and_the_api_works(
    start_daemon: StartDaemon, http: aiohttp.ClientSession
) -> None:
    daemon = await start_daemon("[ui]\nenabled = false\n")
    for path in ("/", "/ui", "/ui/", "/ui/login", "/ui/static/app.js"):
        async with http.get(daemon.url + path, allow_redirects=False) as r:
            assert r.status == 404, path
    async with http.post(
        daemon.url + "/ui/login",
        data={"api_key": daemon.key},
        headers={"Origin": daemon.url},
        allow_redirects=False,
    ) as r:
        assert r.status == 404 and "Set-Cookie" not in r.headers
    api = Api(http, daemon.url, daemon.key)
    status, body = await api.get("/v1/runners")
    assert status == 200 and body["runners"] == []


# -- escaping --------------------------------------------------------------------------


async def test_a_next_value_with_markup_is_escaped_in_the_login_form(
    daemon: InProcessDaemon,
) -> None:
    async with Dashboard(daemon.url) as dash:
        status, page = await dash.get("/ui/login", params={"next": '/ui/"><script>x</script>'})
        assert status == 200
        assert "<script>x" not in page
        assert 'value="/ui/&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in page


async def test_no_page_shows_a_runners_name_unescaped(daemon: InProcessDaemon, api: Api) -> None:
    async with await logged_in(daemon) as dash:
        for canonical in GET_ROUTES:
            path = await fill(daemon, api, canonical)  # each holds a runner named XSS_NAME
            async with dash.http.get(daemon.url + path, allow_redirects=False) as r:
                if r.headers.get("Content-Type", "").startswith("text/html"):
                    assert XSS_NAME not in await r.text(), path


def test_autoescape_is_on_for_html_templates() -> None:
    import aiohttp_jinja2

    app = web.Application()
    ui.attach(app)
    env = aiohttp_jinja2.get_env(app[ui.UI_APP])
    autoescape: Any = env.autoescape
    assert autoescape is True or autoescape("page.html")
    rendered = env.from_string("<p title={{ v }}>{{ v }}</p>").render(v='<b a="1">&')
    assert rendered == "<p title=&lt;b a=&#34;1&#34;&gt;&amp;>&lt;b a=&#34;1&#34;&gt;&amp;</p>"


async def test_an_action_route_runs_only_for_a_full_keys_genuine_post(
    start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An action of the test's own beside the real ones, so the read-key rule is
    # proven even where no real action route exists yet.
    calls: list[str] = []

    async def poke(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(text="poked")

    add_routes = runner_page.add_routes

    def with_poke(r: web.UrlDispatcher) -> None:
        add_routes(r)
        r.add_post("/test-poke", poke)

    monkeypatch.setattr(runner_page, "add_routes", with_poke)
    daemon = await start_daemon()
    async with await logged_in(daemon, await read_key(daemon)) as reader:
        assert reader.csrf
        status = await _post_raw(
            reader, "/ui/test-poke", {"csrf_token": reader.csrf}, {"Origin": daemon.url}
        )
        assert status == 403 and calls == []
    async with await logged_in(daemon) as full:
        assert full.csrf
        assert await _post_raw(full, "/ui/test-poke", {}, {"Origin": daemon.url}) == 403
        assert calls == []
        status = await _post_raw(
            full, "/ui/test-poke", {"csrf_token": full.csrf}, {"Origin": daemon.url}
        )
        assert status == 200 and calls == ["/ui/test-poke"]
    assert "API key 'reader' may only read" not in daemon.log_text()  # a page, not a log


async def test_a_handlers_own_cache_control_gives_way_to_no_store(
    start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def cached(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "max-age=3600"})
        response.content_type = "text/event-stream"
        await response.prepare(request)  # streamed: headers leave before the body
        await response.write(b"data: x\n\n")
        return response

    add_routes = run_page.add_routes

    def with_cached(r: web.UrlDispatcher) -> None:
        add_routes(r)
        r.add_get("/test-cached", cached)

    monkeypatch.setattr(run_page, "add_routes", with_cached)
    daemon = await start_daemon()
    async with await logged_in(daemon) as dash:
        async with dash.http.get(daemon.url + "/ui/test-cached") as r:
            assert r.status == 200 and await r.text() == "data: x\n\n"
            assert r.headers["Cache-Control"] == "no-store"
            assert_security_headers(r, "a streamed response")


async def test_logging_in_again_ends_the_session_before(daemon: InProcessDaemon) -> None:
    async with await logged_in(daemon) as dash:
        first = dash.session_cookie()
        assert first is not None
        await dash.login(await read_key(daemon))
        second = dash.session_cookie()
        assert second is not None and second != first
        assert session_row(daemon, first) is None and session_row(daemon, second) is not None
        status, page = await dash.get("/ui/")
        assert status == 200 and "reader (read)" in page


async def test_route_parameters_are_filled_from_a_real_runner_and_run(
    daemon: InProcessDaemon, api: Api
) -> None:
    # The parametrized tests fill the routes other helpers add this way.
    path = await fill(daemon, api, "/ui/runners/{rid}/runs/{id}/cancel")
    _, _, rid, _, run_id, _ = path.removeprefix("/").split("/")
    run = await api.run(rid, run_id)
    assert run["status"] == "running"
    status, body = await api.get(f"/v1/runners/{rid}")
    assert status == 200 and body["runner"]["name"].startswith(XSS_NAME)
    with pytest.raises(AssertionError, match="teach fill"):
        await fill(daemon, api, "/ui/things/{thing_id}")


POST_FORM = re.compile(r"<form\b[^>]*\bmethod=\"post\"[^>]*>.*?</form>", re.S | re.I)


async def _pages(daemon: InProcessDaemon, api: Api, dash: Dashboard) -> list[tuple[str, str]]:
    """(path, HTML) of every GET route's page, filled from a real runner and run."""
    found = []
    for canonical in GET_ROUTES:
        path = await fill(daemon, api, canonical)
        async with dash.http.get(daemon.url + path, allow_redirects=False) as r:
            if r.status == 200 and r.content_type == "text/html":
                found.append((path, await r.text()))
    return found


async def test_a_read_key_sees_every_page_and_no_form_but_logout(
    daemon: InProcessDaemon, api: Api
) -> None:
    async with await logged_in(daemon, await read_key(daemon)) as dash:
        pages = await _pages(daemon, api, dash)
        assert "/ui/" in dict(pages)
        for path, page in pages:
            actions = re.findall(r'action="([^"]*)"', " ".join(POST_FORM.findall(page)))
            assert actions == ["/ui/logout"], (path, actions)


async def test_every_post_form_a_full_key_sees_carries_its_sessions_token(
    daemon: InProcessDaemon, api: Api
) -> None:
    async with await logged_in(daemon) as dash:
        token = dash.session_cookie()
        assert token is not None
        expected = f'<input type="hidden" name="csrf_token" value="{sessions.csrf_token(token)}">'
        for path, page in await _pages(daemon, api, dash):
            forms = POST_FORM.findall(page)
            assert forms, path  # the nav's logout at least
            for form in forms:
                assert expected in form, (path, form)
