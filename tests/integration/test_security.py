"""Security holes, each proven by the fault it injects against a real `runnerd serve`:
a registry PATCH that would send the stored password to a new host, a second daemon
on the same data directory, non-UTF-8 bytes in the metrics Authorization header, and
webhook URLs outside `[webhooks] allowed_hosts`.

Registries here are HTTP servers in the test that answer every request like a
registry asking for a login (401 with a Basic challenge) and record the credentials
the real Docker engine sent them: what a host on the other end of a pull learns.
Non-UTF-8 Authorization bytes, which need no engine, are tests/api/test_security.py's.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import Api, Daemon, runnerd_cli, wait_until, write_config
from webhook_receiver import Receiver, receiver  # noqa: F401 (fixture)

SERVE_DEADLINE = 30.0
SECRET = "0123456789abcdef-secret"


def serve_until_exit(config_path: Any) -> subprocess.CompletedProcess[str]:
    """`runnerd serve` with a config it must refuse to run with."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runnerd", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=SERVE_DEADLINE)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(
            f"runnerd started although it should not have:\n{err[-2000:]}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# -- registries: a new host needs the password --------------------------------------------


@dataclass
class RecordingRegistry:
    """A registry that asks every request for a login and records each one."""

    host: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, request.headers.get("Authorization")))
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            status=401,
            headers={
                "WWW-Authenticate": 'Basic realm="recorder"',
                "Docker-Distribution-API-Version": "registry/2.0",
            },
        )

    def credentials(self) -> set[tuple[str, str]]:
        """Every (username, password) it was sent as Basic auth."""
        found = set()
        for _, _, auth in self.requests:
            if auth and auth.lower().startswith("basic "):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                found.add((user, password))
        return found


@pytest.fixture
async def registries() -> AsyncIterator[Callable[[], Any]]:
    runners: list[web.AppRunner] = []

    async def start() -> RecordingRegistry:
        rec = RecordingRegistry()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", rec.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        rec.host = f"127.0.0.1:{runner.addresses[0][1]}"
        return rec

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_registry_patch_of_host_or_username_without_password_is_400_and_the_old_password_never_reaches_the_new_host(
    api: Api, registries: Callable[[], Any]
) -> None:
    old, new = await registries(), await registries()
    old_password = "old-pw-" + secrets.token_hex(12)
    new_password = "new-pw-" + secrets.token_hex(12)
    status, data = await api.post(
        "/v1/container_registries",
        {"name": "moving", "host": old.host, "username": "puller", "password": old_password},
    )
    assert status == 200, data
    cr = data["container_registry"]
    path = f"/v1/container_registries/{cr['id']}"
    runner = await api.create_runner(
        image_name="team/job", image_tag="v1", run_command="true", container_registry_id=cr["id"]
    )

    for change, field_ in (
        ({"host": new.host}, "host"),
        ({"username": "other"}, "username"),
        ({"host": new.host, "name": "moved"}, "host"),
    ):
        status, data = await api.patch(path, change)
        assert status == 400, (change, data)
        [error] = data["errors"]
        assert error.startswith("password:") and field_ in error, error
    status, data = await api.get(path)
    assert status == 200 and data["container_registry"] == cr, data
    # Unchanged values are no change; the name alone needs no password either.
    status, data = await api.patch(path, {"host": old.host, "username": "puller"})
    assert status == 200, data

    # The registry still points at the old host, with the old credentials.
    status, data = await api.post(f"/v1/runners/{runner['id']}/warm")
    assert status == 400 and "unauthorized" in " ".join(data["errors"]).lower(), data
    assert ("puller", old_password) in old.credentials(), old.requests  # the recorder sees them
    assert new.requests == []

    status, data = await api.patch(path, {"host": new.host, "password": new_password})
    assert status == 200 and data["container_registry"]["host"] == new.host, data
    status, data = await api.post(f"/v1/runners/{runner['id']}/warm")
    assert status == 400, data
    assert new.credentials() == {("puller", new_password)}, new.requests
    assert not any(
        old_password in (auth and base64.b64decode(auth.split()[-1]).decode("latin-1") or "")
        for _, _, auth in new.requests
    )


# -- one daemon per data directory -------------------------------------------------------


async def test_second_daemon_on_the_same_data_dir_exits_non_zero_naming_the_directory_and_the_first_pid(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    assert daemon.proc is not None
    second = serve_until_exit(daemon.config_path)

    assert second.returncode != 0, second
    assert str(daemon.data_dir.resolve()) in second.stderr, second.stderr
    assert f"pid {daemon.proc.pid}" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr, second.stderr
    assert "listening on" not in second.stderr, second.stderr
    # The first goes on serving, and the CLI still works beside it.
    key = daemon.create_key("beside-the-daemon")
    status, body = await Api(http, daemon.url, key).get("/v1/runners")
    assert status == 200, body
    assert daemon.proc.poll() is None
    assert runnerd_cli("keys", "list", "--config", str(daemon.config_path)).returncode == 0


async def test_daemon_killed_with_sigkill_restarts_on_its_data_dir_at_once(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="true")
    daemon.kill()  # no clean-up ran: only the kernel released the lock

    daemon.start()

    api = Api(http, daemon.url, daemon.key)
    status, body = await api.get(f"/v1/runners/{runner['id']}")
    assert status == 200, body
    assert daemon.proc is not None
    lock_file = daemon.data_dir / "runnerd.lock"
    assert lock_file.read_text().strip() == str(daemon.proc.pid)
    # ... and it holds the lock in turn.
    second = serve_until_exit(daemon.config_path)
    assert second.returncode != 0 and f"pid {daemon.proc.pid}" in second.stderr, second


# -- metrics ---------------------------------------------------------------------------------


async def test_metrics_token_with_surrounding_spaces_stops_serve_with_exit_2_naming_the_key(
    tmp_path: Any,
) -> None:
    config = tmp_path / "config.toml"
    write_config(
        config, tmp_path / "data", '[server]\nlisten = "127.0.0.1:0"\nmetrics_token = " x "\n'
    )
    result = serve_until_exit(config)
    assert result.returncode == 2, result
    assert "server.metrics_token" in result.stderr and "spaces" in result.stderr, result.stderr


# -- webhooks: allowed_hosts ---------------------------------------------------------------


def webhooks_config(allowed: list[str] | None) -> str:
    text = f'[webhooks]\nsecret = "{SECRET}"\n'
    if allowed is not None:
        text += f"allowed_hosts = {json.dumps(allowed)}\n"
    return text


async def test_webhook_url_whose_host_is_not_in_allowed_hosts_is_400_naming_webhook_url(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    daemon = start_daemon(webhooks_config(["127.0.0.1", "Hooks.Example.com"]))
    api = Api(http, daemon.url, daemon.key)
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "https://hooks.example.com.evil.net/x",
        "http://10.0.0.1/",
    ):
        status, data = await api.post(
            "/v1/runners",
            {"name": f"hook-{secrets.token_hex(3)}", "image_name": "busybox", "webhook_url": url},
        )
        assert status == 400, (url, data)
        [error] = data["errors"]
        assert error.startswith("webhook_url") and "allowed_hosts" in error, error

    runner = await api.create_runner(run_command="true", webhook_url=receiver.url)
    status, data = await api.patch(
        f"/v1/runners/{runner['id']}", {"webhook_url": "http://192.168.0.1/admin"}
    )
    assert status == 400 and data["errors"][0].startswith("webhook_url"), data
    status, data = await api.patch(
        f"/v1/runners/{runner['id']}", {"webhook_url": "https://HOOKS.example.com/ci"}
    )
    assert status == 200, data
    status, data = await api.get(f"/v1/runners/{runner['id']}")
    assert data["runner"]["webhook_url"] == "https://HOOKS.example.com/ci"


async def test_webhook_to_a_host_allowed_hosts_no_longer_lists_is_not_sent(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    daemon = start_daemon(webhooks_config(None))  # absent: any host
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="true", webhook_url=receiver.url)
    run = await api.trigger(runner["id"])
    await api.wait_done(runner["id"], run["id"])

    async def delivered() -> bool:
        return len(receiver.bodies) == 1

    await wait_until(delivered, timeout=30, what="the first delivery")

    daemon.stop()  # the config changes under the runner's stored webhook_url
    write_config(daemon.config_path, daemon.data_dir, webhooks_config(["hooks.example.com"]))
    daemon.start()
    api = Api(http, daemon.url, daemon.key)
    run = await api.trigger(runner["id"])
    await api.wait_done(runner["id"], run["id"])

    async def failed() -> bool:
        return (await api.run(runner["id"], run["id"]))["webhook_status"] == "failed"

    await wait_until(failed, timeout=30, what="webhook_status failed")
    assert len(receiver.bodies) == 1
    assert (
        f"run {run['id']}: webhook not sent: its host '127.0.0.1' is not in [webhooks] "
        "allowed_hosts" in daemon.log_text()
    )
