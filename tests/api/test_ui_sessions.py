"""The dashboard's session rules, in process: login with an API key, the cookie's
attributes, CSRF and Origin on every POST, a read key's limits, logout, revocation."""

from __future__ import annotations

from tests.dashboard import Dashboard

from .conftest import InProcessDaemon


async def test_a_page_without_a_session_redirects_to_login(daemon: InProcessDaemon) -> None:
    async with Dashboard(daemon.url) as ui:
        async with ui.http.get(daemon.url + "/ui/runners", allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/ui/login?next=/ui/runners"


async def test_login_with_a_full_key_opens_the_overview(daemon: InProcessDaemon) -> None:
    async with Dashboard(daemon.url) as ui:
        r = await ui.login(daemon.key)
        assert r.status == 303 and r.headers["Location"] == "/ui/"
        cookie = r.cookies["runnerd_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
        status, page = await ui.get("/ui/")
        assert status == 200 and "<h1>Overview</h1>" in page
        assert daemon.key not in page and daemon.key not in daemon.log_text()


async def test_a_post_from_another_origin_is_refused(daemon: InProcessDaemon) -> None:
    async with Dashboard(daemon.url) as ui:
        await ui.login(daemon.key)
        r = await ui.post("/ui/logout", origin="http://evil.example")
        assert r.status == 403
        status, _ = await ui.get("/ui/")
        assert status == 200  # still logged in: the forged logout changed nothing
