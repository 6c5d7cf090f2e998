"""The `runnerd` client commands (runners, env, runs, logs), run as a separate process
against a real daemon on the real engine, as a user would from a terminal."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from typing import Any

from aiohttp import web
from conftest import TEST_IMAGE_NAME, TEST_IMAGE_TAG, Api, Daemon

IMAGE = f"{TEST_IMAGE_NAME}:{TEST_IMAGE_TAG}"
EXIT_TIMEOUT, EXIT_NOT_STARTED = 124, 125


def _env(url: str | None, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNERD_")}
    if url is not None:
        env["RUNNERD_URL"] = url
    if token is not None:
        env["RUNNERD_TOKEN"] = token
    return env


def cli_at(
    url: str | None, token: str | None, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`runnerd ARGS` with RUNNERD_URL/RUNNERD_TOKEN set (or unset when None)."""
    result = subprocess.run(
        [sys.executable, "-m", "runnerd", *args],
        capture_output=True,
        text=True,
        env=_env(url, token),
        timeout=timeout,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def cli(daemon: Daemon, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return cli_at(daemon.url, daemon.key, *args, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def table(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()]


def show(stdout: str) -> dict[str, str]:
    return {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in stdout.splitlines())
    }


# -- runners and env variables -----------------------------------------------------------


def test_runners_and_env_variables(daemon: Daemon) -> None:
    created = ok(
        cli(
            daemon,
            "runners",
            "create",
            "--name",
            "cli-hello",
            "--image",
            IMAGE,
            "--command",
            "echo hi",
            "--timeout",
            "60",
            "-e",
            "GREETING=hello",
        )
    )
    fields = show(created)
    assert fields["name"] == "cli-hello"
    assert fields["image_name"] == TEST_IMAGE_NAME and fields["image_tag"] == TEST_IMAGE_TAG
    runner_id = fields["id"]
    uuid.UUID(runner_id)

    # the flags work as well as the environment variables
    listed = ok(cli_at(None, None, "runners", "list", "--url", daemon.url, "--token", daemon.key))
    rows = table(listed)
    assert rows[0] == ["NAME", "ID", "IMAGE", "INSTANCE", "TYPE", "TIMEOUT"]
    assert ["cli-hello", runner_id, IMAGE, "standard-s", "60s"] in rows

    by_name = show(ok(cli(daemon, "runners", "show", "cli-hello")))
    assert by_name["id"] == runner_id and by_name["run_command"] == "echo hi"
    assert show(ok(cli(daemon, "runners", "show", runner_id)))["name"] == "cli-hello"
    raw = as_json(cli(daemon, "runners", "show", "cli-hello", "--json"))
    assert raw["runner"]["id"] == runner_id
    assert {
        "name",
        "image_name",
        "image_tag",
        "run_command",
        "argv",
        "timeout_seconds",
        "instance_type",
    } <= raw["runner"].keys()
    assert [r["name"] for r in as_json(cli(daemon, "runners", "list", "--json"))["runners"]] == [
        "cli-hello"
    ]

    # switching from run_command to argv clears the other in the same request
    updated = as_json(
        cli(
            daemon,
            "runners",
            "update",
            "cli-hello",
            "--argv-json",
            '["echo", "a b"]',
            "--timeout",
            "120",
            "--json",
        )
    )["runner"]
    assert updated["argv"] == ["echo", "a b"] and updated["run_command"] is None
    assert updated["timeout_seconds"] == 120
    assert (
        show(ok(cli(daemon, "runners", "update", runner_id, "--name", "cli-renamed")))["name"]
        == "cli-renamed"
    )

    # env: set creates or changes by key, unset deletes by key
    out = ok(cli(daemon, "env", "set", "cli-renamed", "A=1", "GREETING=bonjour", "B=x=y"))
    assert out.splitlines() == ["created A", "updated GREETING", "created B"]
    env_rows = table(ok(cli(daemon, "env", "list", "cli-renamed")))
    assert env_rows[0] == ["KEY", "VALUE"]
    assert ["A", "1"] in env_rows and ["B", "x=y"] in env_rows
    assert ["GREETING", "bonjour"] in env_rows
    before = {
        e["env_key"]: e
        for e in as_json(cli(daemon, "env", "list", "cli-renamed", "--json"))["env_variables"]
    }
    ok(cli(daemon, "env", "set", "cli-renamed", "A=2"))
    after = {
        e["env_key"]: e
        for e in as_json(cli(daemon, "env", "list", "cli-renamed", "--json"))["env_variables"]
    }
    assert after["A"]["env_val"] == "2" and after["A"]["id"] == before["A"]["id"]  # PATCHed

    missing = cli(daemon, "env", "unset", "cli-renamed", "B", "NOPE")
    assert missing.returncode == 1
    assert "no env variable 'NOPE'" in missing.stderr
    assert "B" in {
        e["env_key"]
        for e in as_json(cli(daemon, "env", "list", "cli-renamed", "--json"))["env_variables"]
    }
    assert ok(cli(daemon, "env", "unset", "cli-renamed", "B", "A")).splitlines() == [
        "deleted B",
        "deleted A",
    ]
    assert [
        e["env_key"]
        for e in as_json(cli(daemon, "env", "list", "cli-renamed", "--json"))["env_variables"]
    ] == ["GREETING"]

    assert "deleted runner cli-renamed" in ok(cli(daemon, "runners", "delete", "cli-renamed"))
    assert "no runners" in ok(cli(daemon, "runners", "list"))
    gone = cli(daemon, "runners", "show", "cli-renamed")
    assert gone.returncode == 1
    assert gone.stderr.strip() == (
        "runnerd: no runner with the id or name 'cli-renamed' (see: runnerd runners list)"
    )


# -- runs and logs -------------------------------------------------------------------------


async def test_trigger_list_show_and_logs(daemon: Daemon, api: Api) -> None:
    ok(
        cli(
            daemon,
            "runners",
            "create",
            "--name",
            "cli-runs",
            "--image",
            IMAGE,
            "--command",
            'echo "hello $WHO"; echo oops >&2',
            "-e",
            "WHO=default",
        )
    )
    triggered = as_json(cli(daemon, "runs", "trigger", "cli-runs", "-e", "WHO=cli", "--json"))
    run_id = triggered["run"]["id"]
    assert triggered["run"]["status"] == "pending"
    runner_id = (await api.get("/v1/runners"))[1]["runners"][0]["id"]
    await api.wait_done(runner_id, run_id)

    rows = table(ok(cli(daemon, "runs", "list", "cli-runs")))
    assert rows[0] == [
        *("ID", "STATUS", "TRIGGER", "ATTEMPT", "EXIT", "STARTED", "COMPLETED", "REASON")
    ]
    assert rows[1][:5] == [run_id, "succeeded", "api", "1", "0"] and rows[1][-1] == "-"
    listed = as_json(
        cli(daemon, "runs", "list", runner_id, "--status", "succeeded", "--limit", "5", "--json")
    )
    assert [r["id"] for r in listed["runs"]] == [run_id]
    assert as_json(cli(daemon, "runs", "list", "cli-runs", "--status", "failed", "--json")) == {
        "runs": []
    }

    shown = show(ok(cli(daemon, "runs", "show", "cli-runs", run_id)))
    assert shown["id"] == run_id and shown["status"] == "succeeded"
    assert shown["exit_code"] == "0"
    raw = as_json(cli(daemon, "runs", "show", "cli-runs", run_id, "--json"))["run"]
    assert {
        "id",
        "status",
        "exit_code",
        "started_at",
        "completed_at",
        "failure_reason",
        "error",
    } <= raw.keys()

    logs = ok(cli(daemon, "logs", "cli-runs", run_id))
    assert sorted(logs.splitlines()) == ["hello cli", "oops"]
    assert logs.encode() == await api.logs(runner_id, run_id)
    assert len(ok(cli(daemon, "logs", "cli-runs", run_id, "--tail", "1")).splitlines()) == 1
    entries = as_json(cli(daemon, "logs", "cli-runs", run_id, "--json"))["logs"]
    assert sorted((e["stream"], e["msg"]) for e in entries) == [
        ("stderr", "oops"),
        ("stdout", "hello cli"),
    ]
    # -f of a completed run prints it all and ends
    assert ok(cli(daemon, "logs", "cli-runs", run_id, "-f")) == logs

    unknown_run = cli(daemon, "runs", "show", "cli-runs", str(uuid.uuid4()))
    assert unknown_run.returncode == 1
    assert "runner 'cli-runs' has no run" in unknown_run.stderr


def test_wait_exits_with_the_runs_exit_code(daemon: Daemon) -> None:
    ok(
        cli(
            daemon,
            "runners",
            "create",
            "--name",
            "cli-exit",
            "--image",
            IMAGE,
            "--command",
            'echo "out-$CODE"; exit $CODE',
        )
    )
    failed = cli(daemon, "runs", "trigger", "cli-exit", "-e", "CODE=3", "--wait")
    assert failed.returncode == 3, failed.stderr
    assert failed.stdout == "out-3\n"
    assert "The command exited with code 3." in failed.stderr

    succeeded = cli(daemon, "runs", "trigger", "cli-exit", "-e", "CODE=0", "--wait")
    assert succeeded.returncode == 0, succeeded.stderr
    assert succeeded.stdout == "out-0\n"
    assert succeeded.stderr == ""

    # --json --wait: the final run on stdout instead of the output, same exit code
    scripted = cli(daemon, "runs", "trigger", "cli-exit", "-e", "CODE=7", "--wait", "--json")
    assert scripted.returncode == 7
    run = json.loads(scripted.stdout)["run"]
    assert (run["status"], run["exit_code"], run["failure_reason"]) == ("failed", 7, "nonzero_exit")


def test_wait_gives_distinct_codes_for_timeout_and_start_failure(daemon: Daemon) -> None:
    ok(
        cli(
            daemon,
            "runners",
            "create",
            "--name",
            "cli-slow",
            "--image",
            IMAGE,
            "--argv-json",
            '["sleep", "30"]',
            "--timeout",
            "1",
        )
    )
    timed_out = cli(daemon, "runs", "trigger", "cli-slow", "--wait")
    assert timed_out.returncode == EXIT_TIMEOUT, (timed_out.stdout, timed_out.stderr)
    assert "failed (timeout)" in timed_out.stderr
    assert "timeout of 1 second" in timed_out.stderr  # the run's own `error`

    ok(
        cli(
            daemon,
            "runners",
            "create",
            "--name",
            "cli-broken",
            "--image",
            IMAGE,
            "--argv-json",
            '["/no/such/program"]',
        )
    )
    not_started = cli(daemon, "runs", "trigger", "cli-broken", "--wait")
    assert not_started.returncode == EXIT_NOT_STARTED, not_started.stderr
    assert "failed (start_failed)" in not_started.stderr
    assert "/no/such/program" in not_started.stderr


async def test_logs_follow_prints_lines_while_the_run_is_running(daemon: Daemon, api: Api) -> None:
    runner = await api.create_runner(
        name="cli-follow", run_command="echo first; sleep 3; echo second"
    )
    run = await api.trigger(runner["id"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runnerd",
        "logs",
        "cli-follow",
        run["id"],
        "-f",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(daemon.url, daemon.key),
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert first == b"first\n"
        assert (await api.run(runner["id"], run["id"]))["status"] == "running"
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout == b"second\n"
    assert (await api.run(runner["id"], run["id"]))["status"] == "succeeded"


# -- errors --------------------------------------------------------------------------------


def test_api_errors_are_shown_as_messages(daemon: Daemon) -> None:
    ok(
        cli(
            daemon,
            "runners",
            "create",
            "--name",
            "cli-errors",
            "--image",
            IMAGE,
            "--command",
            "true",
        )
    )
    bad_env = cli(daemon, "runs", "trigger", "cli-errors", "-e", "1BAD=x", "-e", "OK=1")
    assert bad_env.returncode == 1
    assert bad_env.stderr == (
        "runnerd: env_variables[0].env_key: '1BAD' is not a valid name: "
        "use letters, digits and '_', not starting with a digit\n"
    )
    assert bad_env.stdout == ""

    several = cli(
        daemon, "runners", "create", "--name", "x", "--image", "Not An Image", "--timeout", "0"
    )
    assert several.returncode == 1
    lines = several.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("runnerd: ") for line in lines)
    assert any("name: must be 3 to 50 characters" in line for line in lines)
    assert any("timeout_seconds: must be between 1 and 86400, got 0" in line for line in lines)

    unknown = cli(daemon, "runs", "trigger", "no-such-runner")
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "runnerd: no runner with the id or name 'no-such-runner' (see: runnerd runners list)\n"
    )

    not_found = cli(daemon, "runs", "cancel", "cli-errors", "not-a-run-id")
    assert not_found.returncode == 1
    assert "has no run 'not-a-run-id'" in not_found.stderr

    bad_key = cli_at(daemon.url, "rnd_not-a-key", "runners", "list")
    assert bad_key.returncode == 1
    assert bad_key.stderr.splitlines()[0] == "runnerd: 401 Unauthorized"

    read_key = daemon.create_key("reader", "read")
    forbidden = cli_at(daemon.url, read_key, "runners", "delete", "cli-errors")
    assert forbidden.returncode == 1
    assert forbidden.stderr.splitlines()[0] == "runnerd: 403 Forbidden"

    usage = cli(daemon, "runs", "trigger", "cli-errors", "-e", "NO_EQUALS_SIGN")
    assert usage.returncode == 2 and "expected KEY=VAL" in usage.stderr


def test_no_token_and_no_daemon_are_clean_messages() -> None:
    no_token = cli_at("http://127.0.0.1:9", None, "runners", "list")
    assert no_token.returncode == 2
    assert no_token.stderr.startswith(
        "runnerd: no API token: pass --token KEY or set RUNNERD_TOKEN"
    )

    unreachable = cli_at("http://127.0.0.1:9", "some-key", "runs", "trigger", "x", "--wait")
    assert unreachable.returncode == 1
    assert unreachable.stderr == (
        "runnerd: cannot reach the daemon at http://127.0.0.1:9: Connection refused\n"
    )
    flags = cli_at(None, None, "runners", "list", "--url", "http://127.0.0.1:9/", "--token", "k")
    assert flags.returncode == 1 and "cannot reach the daemon at http://127.0.0.1:9" in flags.stderr


# -- following without the daemon's `follow` -------------------------------------------------


async def _fake_daemon(mode: str, state: dict[str, Any]) -> web.AppRunner:
    """A stand-in daemon whose logs endpoint cannot follow: it rejects `follow`
    ("old") or ends a follow stream at once though the run goes on ("early")."""
    runner = {
        "id": state["runner_id"],
        "name": "fake",
        "image_name": "x",
        "image_tag": "y",
        "timeout_seconds": 60,
        "instance_type": {"slug": "s"},
    }

    def authorized(request: web.Request) -> None:
        if request.headers.get("Authorization") != "Bearer fake-key":
            raise web.HTTPUnauthorized()

    async def runners(request: web.Request) -> web.Response:
        authorized(request)
        return web.json_response({"runners": [runner]})

    async def run(request: web.Request) -> web.Response:
        authorized(request)
        state["status_reads"] += 1
        return web.json_response(
            {
                "run": {
                    "id": state["run_id"],
                    "status": state["status"],
                    "exit_code": None,
                    "failure_reason": None,
                    "error": None,
                }
            }
        )

    async def logs(request: web.Request) -> web.StreamResponse:
        authorized(request)
        if "follow" in request.query:
            if mode == "old":
                return web.json_response(
                    {"errors": ["follow is not a known query parameter (known: tail)"]}, status=400
                )
            return web.Response(body=state["log"], content_type="text/plain")
        return web.Response(body=state["log"], content_type="text/plain")

    app = web.Application()
    app.router.add_get("/v1/runners", runners)
    app.router.add_get("/v1/runners/{runner_id}/runs/{run_id}", run)
    app.router.add_get("/v1/runners/{runner_id}/runs/{run_id}/logs", logs)
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    await web.TCPSite(app_runner, "127.0.0.1", 0).start()
    return app_runner


async def _follow_against_fake(mode: str) -> None:
    state: dict[str, Any] = {
        "runner_id": str(uuid.uuid4()),
        "run_id": str(uuid.uuid4()),
        "status": "running",
        "log": b"one\n",
        "status_reads": 0,
    }
    app_runner = await _fake_daemon(mode, state)
    port = app_runner.addresses[0][1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runnerd",
        "logs",
        "fake",
        state["run_id"],
        "-f",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(f"http://127.0.0.1:{port}", "fake-key"),
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"one\n"
        state["log"] += b"two\n"
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"two\n"
        reads = state["status_reads"]
        state["log"] += b"three, no newline"  # written, then the run completes
        state["status"] = "succeeded"
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
        await app_runner.cleanup()
    assert proc.returncode == 0, stderr
    assert stdout == b"three, no newline"  # each byte once
    assert state["status_reads"] > reads


async def test_follow_polls_when_the_daemon_cannot_follow() -> None:
    await _follow_against_fake("old")


async def test_follow_polls_when_the_follow_stream_ends_early() -> None:
    await _follow_against_fake("early")
