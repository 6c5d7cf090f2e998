"""Private registries, pull policy, warm-up and secrets at rest (issue 5), on a
real registry: Debian's docker-registry on 127.0.0.1 with htpasswd auth, holding
the test image as `<host>/team/job:v1` (see registry.py). Each test removes the
image from the engine itself when it needs it absent.

What the engine asked the registry comes from the registry's access log; how
often runnerd pulled, from its `runnerd_image_pulls_total` counter. Registry CRUD
and validation, which need no engine, are in tests/api/test_registries.py; image
references in tests/unit/test_unit_images.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest
from api.test_registries import REGISTRY_KEYS, RecordingApi
from conftest import Api, Daemon, wait_until
from cryptography.fernet import Fernet
from helpers_engine import engine_api
from registry import REPOSITORY, TAG, Registry

TIME_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(?:Z|[+-]\d\d:\d\d)\Z")
SERVE_DEADLINE = 30.0


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, docker_engine: str) -> Iterator[Registry]:
    """A registry on 127.0.0.1:<free port> with the test image pushed into it."""
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        reg.push_test_image()
        yield reg
    finally:
        reg.stop()
        engine_api.remove_image(reg.image_ref)


@pytest.fixture
def rapi(http: aiohttp.ClientSession, daemon: Daemon) -> RecordingApi:
    return RecordingApi(http, daemon.url, daemon.key)


async def make_registry(
    api: Api, reg: Registry, *, password: str | None = None, host: str | None = None
) -> dict[str, Any]:
    body = {
        "name": f"reg-{secrets.token_hex(4)}",
        "host": host or reg.host,
        "username": reg.username,
        "password": password or reg.password,
    }
    status, data = await api.post("/v1/container_registries", body)
    assert status == 200, data
    cr = data["container_registry"]
    assert set(cr) == REGISTRY_KEYS, cr
    return cr


async def private_runner(api: Api, cr: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image_name": REPOSITORY,
        "image_tag": TAG,
        "run_command": "echo hello from the private image",
    }
    if cr is not None:
        body["container_registry_id"] = cr["id"]
    return await api.create_runner(**{**body, **fields})


async def run_once(
    api: Api, runner: dict[str, Any], body: Any = None, timeout: float = 60
) -> dict[str, Any]:
    run = await api.trigger(runner["id"], body)
    return await api.wait_done(runner["id"], run["id"], timeout=timeout)


async def image_pulls(api: Api) -> dict[str, float]:
    """runnerd's pull counter by result: {"ok": n, "error": m}."""
    status, body = await api.get("/metrics")
    assert status == 200, body
    text = body.decode() if isinstance(body, bytes) else str(body)
    counts = {"ok": 0.0, "error": 0.0}
    for result, value in re.findall(
        r'^runnerd_image_pulls_total\{result="(\w+)"\} (\S+)$', text, re.M
    ):
        counts[result] = float(value)
    return counts


async def manifest_requests(reg: Registry, since: int, at_least: int = 1) -> list[Any]:
    """The registry's manifest requests since `since`, once at least `at_least` are
    logged (it writes a request's line as it completes, maybe just after the
    engine already has its answer)."""

    async def logged() -> list[Any] | None:
        found = reg.manifest_requests(since)
        return found if len(found) >= at_least else None

    try:
        return await wait_until(logged, timeout=5, what="the registry's log")
    except AssertionError:
        raise AssertionError(
            f"expected {at_least} manifest request(s) since the mark, "
            f"the registry logged: {reg.requests(since)}"
        ) from None


def raw_files(data_dir: Path) -> dict[Path, bytes]:
    """Every file runnerd keeps in its data dir (database, WAL, run logs), raw."""
    return {p: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}


def assert_not_in_files(files: dict[Path, bytes], *secrets_: str) -> None:
    for secret in secrets_:
        found = [str(p) for p, raw in files.items() if secret.encode() in raw]
        assert not found, f"{secret[:8]}… found in plain text in {found}"


def serve_expecting_failure(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    """`runnerd serve` with the daemon's config, which must refuse to start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runnerd", "serve", "--config", str(daemon.config_path)],
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


# -- pulling from the private registry ------------------------------------------------


async def test_private_image_is_pulled_with_the_registry_credentials(
    rapi: RecordingApi, registry: Registry
) -> None:
    cr = await make_registry(rapi, registry)
    runner = await private_runner(rapi, cr)
    assert runner["image_pull_policy"] == "if_not_present"
    registry.remove_local()
    mark = registry.mark()

    run = await run_once(rapi, runner)

    assert run["status"] == "succeeded", run
    assert await rapi.logs(runner["id"], run["id"]) == b"hello from the private image\n"
    assert registry.has_local(registry.image_ref)  # pulled under the registry's host
    # The registry answers nobody without valid credentials: a 200 means they were sent.
    assert [r.status for r in await manifest_requests(registry, mark)] == [200], registry.requests(
        mark
    )
    rapi.assert_never_said(registry.password)


async def test_wrong_password_fails_the_run_with_what_the_registry_answered(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, registry: Registry
) -> None:
    daemon = start_daemon()
    api = RecordingApi(http, daemon.url, daemon.key)
    wrong = "wrong-pw-" + secrets.token_hex(12)
    cr = await make_registry(api, registry, password=wrong)
    runner = await private_runner(api, cr)
    registry.remove_local()
    mark = registry.mark()

    run = await run_once(api, runner)

    assert run["status"] == "failed" and run["failure_reason"] == "image_pull_failed", run
    assert run["exit_code"] is None
    assert registry.image_ref in run["error"], run["error"]
    assert "unauthorized" in run["error"] and "authentication required" in run["error"], run[
        "error"
    ]
    assert wrong not in run["error"]
    assert any(r.status == 401 for r in await manifest_requests(registry, mark)), registry.requests(
        mark
    )
    assert not registry.has_local(registry.image_ref)
    api.assert_never_said(wrong)
    assert wrong not in daemon.log_text()


async def test_unknown_image_fails_the_run_with_a_readable_error(
    rapi: RecordingApi, registry: Registry
) -> None:
    cr = await make_registry(rapi, registry)
    missing_repo = await private_runner(rapi, cr, image_name="team/missing")
    missing_tag = await private_runner(rapi, cr, image_tag="no-such-tag")

    for runner, ref in (
        (missing_repo, f"{registry.host}/team/missing:{TAG}"),
        (missing_tag, f"{registry.host}/{REPOSITORY}:no-such-tag"),
    ):
        run = await run_once(rapi, runner)
        assert run["status"] == "failed" and run["failure_reason"] == "image_pull_failed", run
        assert ref in run["error"], run["error"]
        assert "manifest unknown" in run["error"] or "not found" in run["error"], run["error"]
        assert "Traceback" not in run["error"]
    rapi.assert_never_said(registry.password)


async def test_host_in_the_image_name_is_where_the_image_is_pulled_from(
    rapi: RecordingApi, registry: Registry
) -> None:
    # No registry: the host comes from the name; the registry is asked, and
    # without credentials it refuses.
    anonymous = await rapi.create_runner(
        image_name=f"{registry.host}/{REPOSITORY}", image_tag=TAG, run_command="echo hi"
    )
    registry.remove_local()
    mark = registry.mark()
    run = await run_once(rapi, anonymous)
    assert run["status"] == "failed" and run["failure_reason"] == "image_pull_failed", run
    assert registry.host in run["error"], run["error"]
    assert "basic auth" in run["error"] or "unauthorized" in run["error"], run["error"]

    async def contacted() -> bool:
        return bool(registry.requests(mark))

    await wait_until(contacted, timeout=5, what="a request to the registry named in image_name")

    # A registry whose host the name already carries: pulled from there, the
    # host not doubled.
    cr = await make_registry(rapi, registry)
    named = await private_runner(rapi, cr, image_name=f"{registry.host}/{REPOSITORY}")
    mark = registry.mark()
    run = await run_once(rapi, named)
    assert run["status"] == "succeeded", run
    await manifest_requests(registry, mark)
    assert registry.has_local(registry.image_ref)


# -- pull policy ------------------------------------------------------------------------


async def test_if_not_present_is_the_default_and_pulls_only_when_absent(
    rapi: RecordingApi, registry: Registry
) -> None:
    cr = await make_registry(rapi, registry)
    runner = await private_runner(rapi, cr)
    assert runner["image_pull_policy"] == "if_not_present"
    registry.remove_local()
    before = await image_pulls(rapi)
    mark = registry.mark()

    first = await run_once(rapi, runner)
    assert first["status"] == "succeeded", first
    assert (await image_pulls(rapi))["ok"] == before["ok"] + 1
    second = await run_once(rapi, runner)
    assert second["status"] == "succeeded", second
    assert (await image_pulls(rapi))["ok"] == before["ok"] + 1
    assert len(await manifest_requests(registry, mark)) == 1, registry.requests(mark)


async def test_an_image_removed_between_runs_is_pulled_again_by_the_next_run(
    rapi: RecordingApi, registry: Registry
) -> None:
    # runnerd remembers which images the engine has instead of asking before every
    # run; an image removed behind its back must still be pulled, not fail the run.
    cr = await make_registry(rapi, registry)
    runner = await private_runner(rapi, cr)
    first = await run_once(rapi, runner)
    assert first["status"] == "succeeded", first
    registry.remove_local()
    before = await image_pulls(rapi)

    second = await run_once(rapi, runner)

    assert second["status"] == "succeeded", second
    assert (await image_pulls(rapi))["ok"] == before["ok"] + 1
    assert registry.has_local(registry.image_ref)


async def test_never_fails_the_run_cleanly_when_the_image_was_removed_after_a_run(
    rapi: RecordingApi, registry: Registry
) -> None:
    cr = await make_registry(rapi, registry)
    runner = await private_runner(rapi, cr, image_pull_policy="never")
    status, data = await rapi.post(f"/v1/runners/{runner['id']}/warm")
    assert status == 200, data
    assert (await run_once(rapi, runner))["status"] == "succeeded"
    registry.remove_local()
    mark = registry.mark()

    run = await run_once(rapi, runner)

    assert run["status"] == "failed" and run["failure_reason"] == "image_pull_failed", run
    assert registry.image_ref in run["error"] and "never" in run["error"], run["error"]
    assert registry.requests(mark) == []


async def test_always_pulls_again_although_the_image_is_present(
    rapi: RecordingApi, registry: Registry
) -> None:
    cr = await make_registry(rapi, registry)
    runner = await private_runner(rapi, cr, image_pull_policy="always")
    assert runner["image_pull_policy"] == "always"
    status, data = await rapi.post(f"/v1/runners/{runner['id']}/warm")
    assert status == 200, data
    assert registry.has_local(registry.image_ref)
    before = await image_pulls(rapi)
    mark = registry.mark()

    for _ in range(2):
        run = await run_once(rapi, runner)
        assert run["status"] == "succeeded", run

    assert (await image_pulls(rapi))["ok"] == before["ok"] + 2
    assert len(await manifest_requests(registry, mark, 2)) == 2, registry.requests(mark)


async def test_never_with_the_image_absent_fails_without_contacting_the_registry(
    rapi: RecordingApi, registry: Registry
) -> None:
    cr = await make_registry(rapi, registry)
    runner = await private_runner(rapi, cr, image_pull_policy="never")
    registry.remove_local()
    before = await image_pulls(rapi)
    mark = registry.mark()

    run = await run_once(rapi, runner)

    assert run["status"] == "failed" and run["failure_reason"] == "image_pull_failed", run
    assert registry.image_ref in run["error"] and "never" in run["error"], run["error"]
    assert registry.requests(mark) == []
    assert await image_pulls(rapi) == before
    assert not registry.has_local(registry.image_ref)

    # Warm pulls whatever the policy; then `never` runs the image it has.
    status, data = await rapi.post(f"/v1/runners/{runner['id']}/warm")
    assert status == 200, data
    mark = registry.mark()
    run = await run_once(rapi, runner)
    assert run["status"] == "succeeded", run
    assert registry.requests(mark) == []


# -- warm-up -------------------------------------------------------------------------------


async def test_warm_pulls_the_image_and_sets_warmed_at(
    rapi: RecordingApi, registry: Registry
) -> None:
    cr = await make_registry(rapi, registry)
    runner = await private_runner(rapi, cr)
    assert runner["warmed_at"] is None
    registry.remove_local()
    before = await image_pulls(rapi)
    mark = registry.mark()

    status, data = await rapi.post(f"/v1/runners/{runner['id']}/warm")

    assert status == 200, data
    warmed = data["runner"]
    assert warmed["id"] == runner["id"]
    assert warmed["warmed_at"] is not None and TIME_FORMAT.match(warmed["warmed_at"]), warmed
    assert registry.has_local(registry.image_ref)
    assert (await image_pulls(rapi))["ok"] == before["ok"] + 1
    await manifest_requests(registry, mark)
    status, data = await rapi.get(f"/v1/runners/{runner['id']}")
    assert status == 200 and data["runner"]["warmed_at"] == warmed["warmed_at"], data
    rapi.assert_never_said(registry.password)


async def test_warm_with_a_wrong_password_answers_400_with_the_pull_error(
    rapi: RecordingApi, registry: Registry
) -> None:
    wrong = "wrong-warm-pw-" + secrets.token_hex(12)
    cr = await make_registry(rapi, registry, password=wrong)
    runner = await private_runner(rapi, cr)
    registry.remove_local()

    status, data = await rapi.post(f"/v1/runners/{runner['id']}/warm")

    assert status == 400, data
    message = " ".join(data["errors"])
    assert "unauthorized" in message and registry.image_ref in message, message
    status, data = await rapi.get(f"/v1/runners/{runner['id']}")
    assert status == 200 and data["runner"]["warmed_at"] is None, data

    # The right password, set by PATCH, is the one the next pull uses.
    status, data = await rapi.patch(
        f"/v1/container_registries/{cr['id']}", {"password": registry.password}
    )
    assert status == 200, data
    status, data = await rapi.post(f"/v1/runners/{runner['id']}/warm")
    assert status == 200 and data["runner"]["warmed_at"] is not None, data
    assert registry.has_local(registry.image_ref)
    rapi.assert_never_said(wrong, registry.password)


# -- shared pulls ---------------------------------------------------------------------------


async def test_ten_concurrent_runs_of_an_absent_image_make_one_pull(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, registry: Registry
) -> None:
    daemon = start_daemon(max_concurrent_runs=10)
    api = RecordingApi(http, daemon.url, daemon.key)
    cr = await make_registry(api, registry)
    runner = await private_runner(api, cr, max_concurrent_runs=10)
    registry.remove_local()
    before = await image_pulls(api)
    mark = registry.mark()

    runs = await asyncio.gather(*(api.trigger(runner["id"]) for _ in range(10)))
    done = await asyncio.gather(*(api.wait_done(runner["id"], r["id"], timeout=90) for r in runs))

    assert [r["status"] for r in done] == ["succeeded"] * 10, done
    after = await image_pulls(api)
    assert after["ok"] == before["ok"] + 1 and after["error"] == before["error"], after
    assert len(await manifest_requests(registry, mark)) == 1, registry.requests(mark)


# -- secrets at rest ---------------------------------------------------------------------------


async def test_secrets_are_encrypted_at_rest_and_the_key_file_is_required(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    registry: Registry,
    tmp_path: Path,
) -> None:
    daemon = start_daemon()
    api = RecordingApi(http, daemon.url, daemon.key)
    env_value = "envval-" + secrets.token_hex(16)
    run_value = "runval-" + secrets.token_hex(16)
    cr = await make_registry(api, registry)
    runner = await private_runner(
        api,
        cr,
        env_variables=[{"env_key": "SECRET_ENV", "env_val": env_value}],
        run_command='printf %s "$SECRET_ENV" | sha256sum; printf %s "$RUN_SECRET" | sha256sum',
    )
    expected_output = "".join(
        f"{hashlib.sha256(v.encode()).hexdigest()}  -\n" for v in (env_value, run_value)
    ).encode()
    override = {"env_variables": [{"env_key": "RUN_SECRET", "env_val": run_value}]}
    registry.remove_local()  # the password is used for a real pull

    run = await run_once(api, runner, override)
    assert run["status"] == "succeeded", run
    assert await api.logs(runner["id"], run["id"]) == expected_output  # values arrive intact

    # Encrypted in the database, and nowhere in plain text: database, WAL, run
    # logs, daemon log.
    db_path = daemon.data_dir / "runnerd.db"
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        stored_pw = db.execute("SELECT password FROM container_registries").fetchone()[0]
        stored_env = db.execute("SELECT env_val FROM runner_env_variables").fetchone()[0]
        stored_run_env = db.execute("SELECT env FROM runs").fetchone()[0]
    for what, stored in (
        ("registry password", stored_pw),
        ("runner env value", stored_env),
        ("run env", stored_run_env),
    ):
        assert stored.startswith("enc:v2:"), f"the {what} is not stored encrypted"
    files = raw_files(daemon.data_dir)
    assert db_path in files
    assert_not_in_files(files, registry.password, env_value, run_value)
    assert registry.password not in daemon.log_text()
    assert env_value not in daemon.log_text() and run_value not in daemon.log_text()

    key_file = daemon.data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    original_key = key_file.read_bytes()
    Fernet(original_key.strip())  # a real Fernet key

    assert daemon.stop() == 0
    assert_not_in_files(raw_files(daemon.data_dir), registry.password, env_value, run_value)

    # A lost key: a clear error naming the file, no traceback, no new key made.
    backup = tmp_path / "secret.key.backup"
    key_file.rename(backup)
    failed = serve_expecting_failure(daemon)
    assert failed.returncode != 0
    assert str(key_file) in failed.stderr and "missing" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    assert not key_file.exists()

    # Another key: refused, never garbage.
    key_file.write_bytes(Fernet.generate_key() + b"\n")
    os.chmod(key_file, 0o600)
    failed = serve_expecting_failure(daemon)
    assert failed.returncode != 0
    assert str(key_file) in failed.stderr and "not the key" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr

    # Not a key at all.
    key_file.write_bytes(b"this is not a fernet key\n")
    failed = serve_expecting_failure(daemon)
    assert failed.returncode != 0
    assert str(key_file) in failed.stderr and "Fernet key" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr

    # The original key back: everything reads back as it was written.
    backup.replace(key_file)
    daemon.start()
    api.url = daemon.url
    status, data = await api.get(f"/v1/runners/{runner['id']}/env_variables")
    assert status == 200, data
    assert [(e["env_key"], e["env_val"]) for e in data["env_variables"]] == [
        ("SECRET_ENV", env_value)
    ]
    registry.remove_local()  # the password must decrypt for this pull
    run = await run_once(api, runner, override)
    assert run["status"] == "succeeded", run
    assert await api.logs(runner["id"], run["id"]) == expected_output

    api.assert_never_said(registry.password, run_value)
    assert registry.password not in daemon.log_text()


async def test_configured_secret_key_file_is_made_there_with_mode_0600(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys" / "runnerd.key"
    data_dir = tmp_path / "custom" / "data"
    daemon = start_daemon(
        f'[storage]\ndata_dir = "{data_dir}"\nsecret_key_file = "{key_file}"\n', name="custom"
    )
    assert daemon.data_dir == data_dir
    api = RecordingApi(http, daemon.url, daemon.key)
    value = "cfgval-" + secrets.token_hex(16)
    runner = await api.create_runner(env_variables=[{"env_key": "K", "env_val": value}])
    assert runner["id"]

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (data_dir / "secret.key").exists()
    assert_not_in_files(raw_files(data_dir), value)


# -- what reaches the engine: Docker Hub credentials ------------------------------------------


class FakeEngine:
    """Just enough of the Docker Engine API on 127.0.0.1 for `warm`: it records
    each pull (`images/create`) with its decoded X-Registry-Auth, and answers
    the way dockerd streams: progress lines, or an error inside the stream."""

    def __init__(self) -> None:
        self.pulls: list[tuple[str, dict[str, Any] | None]] = []
        self.stream_error: dict[str, str] = {}  # fromImage -> the error it streams
        self.url = ""
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        path = request.path
        if path.endswith("/version"):
            return aiohttp.web.json_response({"ApiVersion": "1.41", "Version": "fake"})
        if path.endswith("/containers/json"):
            return aiohttp.web.json_response([])
        if path.endswith("/images/create") and request.method == "POST":
            image = request.query.get("fromImage", "")
            header = request.headers.get("X-Registry-Auth")
            auth = (
                json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
                if header
                else None
            )
            self.pulls.append((image, auth))
            response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(b'{"status":"Pulling from fake","id":"latest"}\r\n')
            if image in self.stream_error:
                message = self.stream_error[image]
                await response.write(
                    json.dumps({"errorDetail": {"message": message}, "error": message}).encode()
                    + b"\r\n"
                )
            else:
                await response.write(b'{"status":"Status: Downloaded newer image"}\r\n')
            await response.write_eof()
            return response
        return aiohttp.web.json_response({"message": f"fake engine: no {path}"}, status=404)


@pytest.fixture
async def fake_engine() -> Any:
    engine = FakeEngine()
    await engine.start()
    yield engine
    await engine.stop()


async def test_docker_hub_credentials_are_sent_for_names_with_and_without_a_namespace(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, fake_engine: FakeEngine
) -> None:
    # In a thread: the fake engine answers from this event loop while runnerd starts.
    daemon = await asyncio.to_thread(
        start_daemon, f'[docker]\nurl = "{fake_engine.url}"\nnetwork = "none"\n'
    )
    api = RecordingApi(http, daemon.url, daemon.key)
    password = "hub-pw-" + secrets.token_hex(12)
    status, data = await api.post(
        "/v1/container_registries",
        {"name": "hub", "host": "docker.io", "username": "hubuser", "password": password},
    )
    assert status == 200, data
    hub = data["container_registry"]
    expected_auth = {
        "username": "hubuser",
        "password": password,
        "serveraddress": "https://index.docker.io/v1/",
    }

    for image_name in ("myorg/private", "busybox"):
        runner = await api.create_runner(
            image_name=image_name, image_tag="1.0", container_registry_id=hub["id"]
        )
        status, data = await api.post(f"/v1/runners/{runner['id']}/warm")
        assert status == 200, (image_name, data)
        assert data["runner"]["warmed_at"] is not None
        image, auth = fake_engine.pulls[-1]
        assert image.endswith(f"{image_name}:1.0"), image
        assert auth == expected_auth, (image_name, auth)
    api.assert_never_said(password)


async def test_an_error_inside_the_pull_stream_fails_warm_without_the_password(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, fake_engine: FakeEngine
) -> None:
    # In a thread: the fake engine answers from this event loop while runnerd starts.
    daemon = await asyncio.to_thread(
        start_daemon, f'[docker]\nurl = "{fake_engine.url}"\nnetwork = "none"\n'
    )
    api = RecordingApi(http, daemon.url, daemon.key)
    password = "echoed-pw-" + secrets.token_hex(12)
    status, data = await api.post(
        "/v1/container_registries",
        {"name": "echo", "host": "registry.example.com", "username": "u", "password": password},
    )
    assert status == 200, data
    runner = await api.create_runner(
        image_name="team/job",
        image_tag="v1",
        container_registry_id=data["container_registry"]["id"],
    )
    # A registry that (badly) echoes what it was sent, after the pull started.
    fake_engine.stream_error["registry.example.com/team/job:v1"] = (
        f"denied: user u with password {password} may not read team/job"
    )

    status, data = await api.post(f"/v1/runners/{runner['id']}/warm")

    assert status == 400, data
    message = " ".join(data["errors"])
    assert "denied: user u with password" in message and "may not read team/job" in message
    api.assert_never_said(password)
    assert password not in daemon.log_text()
