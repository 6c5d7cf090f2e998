"""The dashboard in a real headless Chromium against a real daemon: logging in,
triggering a run with an env override, the live log, cancelling, a read key's
view and a revoked key's session. What only a browser proves: the forms work as
served (CSRF, Origin, redirects), app.js runs under the CSP, the log streams."""

from __future__ import annotations

import re
from pathlib import Path

from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException

from tests.harness import Daemon, runnerd_cli

from .chrome import Browser, SyncApi, chrome, wait_for

RUN_PAGE = re.compile(r"^/ui/runners/([0-9a-f-]+)/runs/([0-9a-f-]+)$")
TICK = re.compile(r"tick (\d+)")


def log_text(b: Browser) -> str:
    return str(b.find("pre#log").text)


def highest_tick(b: Browser) -> int:
    return max((int(n) for n in TICK.findall(log_text(b))), default=0)


def run_status(b: Browser) -> str:
    return str(b.find("#run-status").get_attribute("data-status") or "")


def wait_running_with_output(api: SyncApi, runner_id: str, run_id: str, text: str) -> None:
    wait_for(
        lambda: (
            api.run(runner_id, run_id)["status"] == "running"
            and text in api.logs(runner_id, run_id)
        ),
        what=f"run {run_id} to be running and to have printed {text!r}",
    )


def test_login_with_a_full_key_through_the_form_shows_the_runners_and_opens_one(
    browser: Browser, api: SyncApi, daemon: Daemon
) -> None:
    runner = api.create_runner("nightly-backup", run_command="echo backing up")
    browser.login(daemon.key)
    browser.get("/ui/runners")
    browser.find("table#runners")
    link = browser.wait().until(
        lambda d: next(
            (a for a in browser.all("a.runner-link") if a.text.strip() == "nightly-backup"),
            None,
        ),
        "a link to runner nightly-backup on /ui/runners",
    )
    link.click()
    browser.wait().until(lambda d: browser.path() == f"/ui/runners/{runner['id']}")
    browser.find("#settings")
    assert "nightly-backup" in browser.find("h1").text
    browser.find("form#trigger-run")


def test_trigger_run_with_an_env_override_lands_on_its_run_page_showing_the_line_and_success(
    browser: Browser, api: SyncApi, daemon: Daemon
) -> None:
    runner = api.create_runner(
        "greeter",
        run_command='echo "$GREETING"',
        env_variables=[{"env_key": "GREETING", "env_val": "the-runner-default"}],
    )
    browser.login(daemon.key)
    browser.get(f"/ui/runners/{runner['id']}")
    env = browser.find("form#trigger-run textarea[name=env]")
    env.clear()
    env.send_keys("GREETING=hello-from-the-browser")
    browser.find("button#trigger").click()

    found = browser.wait().until(
        lambda d: RUN_PAGE.match(browser.path()), "the new run's page after Trigger run"
    )
    assert found.group(1) == runner["id"]
    run_id = found.group(2)
    browser.wait().until(
        lambda d: "hello-from-the-browser" in log_text(browser), "the override's line in pre#log"
    )
    browser.wait().until(lambda d: run_status(browser) == "succeeded", "the run to succeed")
    assert "succeeded" in browser.find("#run-status").text
    assert "the-runner-default" not in log_text(browser)
    run = api.run(runner["id"], run_id)
    assert run["status"] == "succeeded", run
    assert api.logs(runner["id"], run_id).strip() == "hello-from-the-browser"


def test_run_page_shows_lines_printed_after_it_loaded_without_a_reload_and_tells_stderr_apart(
    browser: Browser, api: SyncApi, daemon: Daemon
) -> None:
    runner = api.create_runner(
        "ticker",
        run_command=(
            'i=0; while [ "$i" -lt 40 ]; do i=$((i+1)); echo "tick $i"; '
            'echo "warning $i" >&2; sleep 0.5; done'
        ),
    )
    run = api.trigger(runner["id"])
    wait_running_with_output(api, runner["id"], run["id"], "tick 1")
    browser.login(daemon.key)
    browser.get(f"/ui/runners/{runner['id']}/runs/{run['id']}")
    at_load = highest_tick(browser)
    # A reload would lose this: seeing it afterwards proves the page stayed put.
    browser.driver.execute_script("window.__loadedOnce = 'still the same page';")

    browser.wait().until(
        lambda d: highest_tick(browser) >= at_load + 2,
        f"a tick after {at_load} to appear in pre#log without a reload",
    )
    assert browser.driver.execute_script("return window.__loadedOnce;") == "still the same page"
    assert "data-events" in (browser.find("pre#log").get_attribute("outerHTML") or "")
    stdout = [s.text for s in browser.all("pre#log span.line.stdout")]
    stderr = [s.text for s in browser.all("pre#log span.line.stderr")]
    assert any("tick" in line for line in stdout), stdout
    assert any("warning" in line for line in stderr), stderr
    assert not any("warning" in line for line in stdout), stdout
    assert not any("tick" in line for line in stderr), stderr


def test_cancel_run_button_on_a_sleeping_run_ends_it_canceled_and_the_api_agrees(
    browser: Browser, api: SyncApi, daemon: Daemon
) -> None:
    runner = api.create_runner("long-sleeper", run_command="echo sleeping; sleep 300")
    run = api.trigger(runner["id"])
    wait_running_with_output(api, runner["id"], run["id"], "sleeping")
    browser.login(daemon.key)
    browser.get(f"/ui/runners/{runner['id']}/runs/{run['id']}")
    assert run_status(browser) == "running"
    browser.find("form#cancel-run button#cancel").click()

    def canceled(_: object) -> bool:
        try:  # a page may ask "are you sure?" first: say yes
            browser.driver.switch_to.alert.accept()
        except NoAlertPresentException:
            pass
        try:
            text = browser.all("#run-status")
            return bool(text) and text[0].text.strip().endswith("canceled")
        except StaleElementReferenceException:  # the page was replaced (the POST's redirect)
            return False

    browser.wait().until(canceled, "#run-status to end with 'canceled'")
    assert browser.path() == f"/ui/runners/{runner['id']}/runs/{run['id']}"
    assert browser.find("#run-status").get_attribute("data-failure-reason") == "canceled"
    done = api.run(runner["id"], run["id"])
    assert done["status"] == "failed" and done["failure_reason"] == "canceled", done


def test_read_key_sees_the_pages_but_no_trigger_cancel_or_active_run_cancel(
    browser: Browser, api: SyncApi, daemon: Daemon
) -> None:
    runner = api.create_runner("watched-job", run_command="echo watched; sleep 300")
    run = api.trigger(runner["id"])
    wait_running_with_output(api, runner["id"], run["id"], "watched")
    read_key = daemon.create_key("dashboard-viewer", scope="read")
    browser.login(read_key)

    browser.get("/ui/")
    rows = browser.wait().until(lambda d: browser.all("table#active-runs tr.run"), "active run")
    assert len(rows) == 1
    assert browser.all("form.cancel-run") == []
    browser.get("/ui/runners")
    assert [a.text for a in browser.all("table#runners a.runner-link")] == ["watched-job"]
    browser.get(f"/ui/runners/{runner['id']}")
    browser.find("#settings")
    browser.find("table#runs tr.run")
    assert browser.all("button#trigger") == [] and browser.all("form#trigger-run") == []
    browser.get(f"/ui/runners/{runner['id']}/runs/{run['id']}")
    assert run_status(browser) == "running"
    browser.wait().until(lambda d: "watched" in log_text(browser), "the log of the run")
    assert browser.all("button#cancel") == [] and browser.all("form#cancel-run") == []
    browser.get("/ui/container_registries")
    browser.find("table#registries")
    assert api.run(runner["id"], run["id"])["status"] == "running"


def test_revoked_key_session_is_logged_out_on_its_next_page_load(
    browser: Browser, api: SyncApi, daemon: Daemon
) -> None:
    api.create_runner("soon-unseen", run_command="echo hi")
    key = daemon.create_key("short-lived-operator")
    browser.login(key)
    browser.get("/ui/runners")
    browser.find("table#runners a.runner-link")

    runnerd_cli("keys", "revoke", "short-lived-operator", "--config", str(daemon.config_path))
    browser.get("/ui/runners")
    browser.find("input#api_key")
    assert browser.path() == "/ui/login"
    assert browser.all("button#logout") == []
    assert browser.all("a.runner-link") == []


def test_console_check_catches_an_inline_script_and_style_the_csp_blocks_and_a_js_error(
    tmp_path: Path, daemon: Daemon
) -> None:
    """The check every browser test ends with can fail: what a page would do wrong
    (inline script, a style attribute, an uncaught error) shows up in it."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    driver = chrome(profile)
    try:
        b = Browser(driver, daemon.url)
        b.get("/ui/login")
        b.find("input#api_key")
        assert b.errors() == []
        driver.execute_script(
            "var s = document.createElement('script'); s.textContent = 'window.x = 1';"
            "document.body.appendChild(s);"
            "var d = document.createElement('div'); d.setAttribute('style', 'color: red');"
            "document.body.appendChild(d);"
            "setTimeout(function () { throw new Error('uncaught-in-the-page'); }, 0);"
        )
        errors = b.wait().until(lambda _: len(b.errors()) >= 3 and b.errors(), "3 errors")
    finally:
        driver.quit()
    text = "\n".join(errors)
    assert "script-src 'self'" in text and "style-src 'self'" in text, text
    assert "uncaught-in-the-page" in text, text
