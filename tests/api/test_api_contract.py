"""The REST API's contract (issue 2), over real sockets against runnerd's app in process
(tests/api/conftest.py: a real SQLite store, a fake engine and executor): every
400/401/403/404/405/409/413/415 path, the resource shapes, CRUD, and the time format.

Each test gets a fresh app (`daemon`), makes its own runners with unique names and
asserts only on resources it made. Tests that need a config of their own (time
zones) use `start_daemon`. Runs end as the fake executor reads their command
(tests/api/fakes.py); what a real container does is tests/integration's.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from conftest import (
    TEST_IMAGE_NAME,
    TEST_IMAGE_TAG,
    Api,
    Daemon,
    runnerd_cli,
    wait_until,
)
from yarl import URL

from runnerd.api import READ_METHODS, make_app
from runnerd.config import Config

TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

RUNNER_KEYS = {
    "id",
    "name",
    "status",
    "image_name",
    "image_tag",
    "run_command",
    "argv",
    "entrypoint",
    "timeout_seconds",
    "instance_type",
    "created_at",
    "updated_at",
}
# Fields later issues add to R (3: max_concurrent_runs; 4: webhook_url; 5:
# container_registry_id, image_pull_policy, warmed_at). Tolerated, nothing else is.
LATER_RUNNER_KEYS = {
    "max_concurrent_runs",
    "webhook_url",
    "container_registry_id",
    "image_pull_policy",
    "warmed_at",
    "retry_policy",  # issue 12
    "on_success",
    "on_failure",
}
RUN_KEYS = {
    "id",
    "status",
    "exit_code",
    "started_at",
    "completed_at",
    "created_at",
    "updated_at",
    "command",
    "argv",
    "entrypoint",
    "failure_reason",
    "error",
}
LATER_RUN_KEYS = {
    "webhook_status",  # issue 4
    # issue 12
    "timeout_seconds",
    "trigger",
    "attempt",
    "retry_of",
    "not_before",
    "schedule_id",
    "scheduled_for",
    "parent_run_id",
    "log_incomplete",  # issue 14
    "node",  # the swarm backend
}
ENV_KEYS = {"id", "env_key", "env_val", "created_at", "updated_at"}
RUNNER_TIME_FIELDS = ("created_at", "updated_at")
RUN_TIME_FIELDS = ("started_at", "completed_at", "created_at", "updated_at")

UNAUTHORIZED = {"status": 401, "error": "Unauthorized"}
FORBIDDEN = {"status": 403, "error": "Forbidden"}
NOT_FOUND = {"status": 404, "error": "Not Found"}
CONFLICT = {"status": 409, "error": "Conflict"}
MIB = 1024 * 1024
# An image whose pull is refused at once (nothing listens on port 1): runs of it
# fail fast without ever making a container.
UNPULLABLE_IMAGE = "localhost:1/runnerd-contract/absent"


# -- helpers --------------------------------------------------------------------------


def uniq(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def runner_body(**fields: Any) -> dict[str, Any]:
    body = {"name": uniq(), "image_name": TEST_IMAGE_NAME, "image_tag": TEST_IMAGE_TAG}
    body.update(fields)
    return body


def names(error: str, field: str) -> bool:
    """Whether an error message names `field` as a word (so `image_name` does not
    count as naming `name`)."""
    return re.search(rf"(?<![\w]){re.escape(field)}(?!\w)", error) is not None


def assert_errors_name(status: int, body: Any, *fields: str) -> list[str]:
    """A 400 `{"errors": [...]}` with one error naming every one of `fields`."""
    assert status == 400, body
    assert isinstance(body, dict) and set(body) == {"errors"}, body
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    assert all(isinstance(e, str) and e for e in errors), body
    assert any(all(names(e, f) for f in fields) for e in errors), (
        f"no error names {fields}: {errors}"
    )
    return errors


def assert_status_error(status: int, body: Any, expected_status: int) -> None:
    """The `{"status", "error"}` shape with a readable reason."""
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"status", "error"}, body
    assert body["status"] == expected_status, body
    assert isinstance(body["error"], str) and body["error"].strip(), body


def assert_time(value: Any, where: str) -> datetime:
    assert isinstance(value, str) and TIME_RE.match(value), f"{where} = {value!r}"
    return datetime.fromisoformat(value)


def assert_runner_shape(runner: dict[str, Any]) -> None:
    extra = set(runner) - RUNNER_KEYS
    assert RUNNER_KEYS <= set(runner), f"missing {RUNNER_KEYS - set(runner)}: {runner}"
    assert extra <= LATER_RUNNER_KEYS, f"unexpected runner keys {extra}: {runner}"
    assert UUID_RE.match(runner["id"]), runner
    assert runner["status"] == "available", runner
    assert set(runner["instance_type"]) == {"slug", "name", "cpu", "mem"}, runner
    for f in RUNNER_TIME_FIELDS:
        assert_time(runner[f], f"runner.{f}")


def assert_run_shape(run: dict[str, Any]) -> None:
    extra = set(run) - RUN_KEYS
    assert RUN_KEYS <= set(run), f"missing {RUN_KEYS - set(run)}: {run}"
    assert extra <= LATER_RUN_KEYS, f"unexpected run keys {extra}: {run}"
    assert UUID_RE.match(run["id"]), run
    for f in RUN_TIME_FIELDS:
        if run[f] is not None:
            assert_time(run[f], f"run.{f}")


def assert_env_shape(env: dict[str, Any]) -> None:
    assert set(env) == ENV_KEYS, env
    assert UUID_RE.match(env["id"]), env
    for f in ("created_at", "updated_at"):
        assert_time(env[f], f"env_variable.{f}")


async def runner_names(api: Api) -> list[str]:
    status, body = await api.get("/v1/runners")
    assert status == 200, body
    return [r["name"] for r in body["runners"]]


async def run_ids(api: Api, runner_id: str, query: str = "") -> list[str]:
    status, body = await api.get(f"/v1/runners/{runner_id}/runs{query}")
    assert status == 200, body
    for run in body["runs"]:
        assert_run_shape(run)
    return [r["id"] for r in body["runs"]]


async def raw(
    http: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    key: str | None = None,
    data: bytes | str | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, dict[str, str], bytes]:
    """A request with full control of the body and headers; (status, headers, bytes)."""
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if data is not None and content_type is not None:
        headers["Content-Type"] = content_type
    body: Any = data
    if isinstance(data, bytes) and len(data) > 512 * 1024:
        body = io.BytesIO(data)  # aiohttp warns about big raw bytes bodies
    async with http.request(method, url, headers=headers, data=body) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def as_json(body: bytes) -> Any:
    return json.loads(body)


# -- auth -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/runners"),
        ("POST", "/v1/runners"),
        ("GET", "/v1/runners/9e2e21dc-6903-4f7b-a91e-345c7ded2214"),
        ("GET", "/v1/runners/24b8327e-c936-4086-87d3-76bc0828856e/runs"),
        ("GET", "/v1/no-such-route"),
    ],
)
async def test_request_without_authorization_header_is_401(
    api: Api, method: str, path: str
) -> None:
    status, body = await api.request(method, path, key="")
    assert (status, body) == (401, UNAUTHORIZED)


async def test_unknown_or_empty_key_is_401(api: Api) -> None:
    for header in (
        "Bearer rnd_not-a-real-key",
        "rnd_not-a-real-key",
        "Bearer ",
        "Bearer",
        f"Bearer {api.key}x",
        f"Basic {api.key}",
    ):
        status, body = await api.get("/v1/runners", headers={"Authorization": header})
        assert (status, body) == (401, UNAUTHORIZED), header


async def test_bearer_key_and_bare_key_both_authenticate(api: Api) -> None:
    for header in (f"Bearer {api.key}", api.key):
        status, body = await api.get("/v1/runners", headers={"Authorization": header})
        assert status == 200, (header, body)
        assert isinstance(body["runners"], list)
    # and a bare key may write too
    status, body = await api.post("/v1/runners", runner_body(), headers={"Authorization": api.key})
    assert status == 200, body


async def test_healthz_needs_no_key_and_answers_ok(api: Api) -> None:
    status, body = await api.get("/healthz", key="")
    assert (status, body["status"]) == (200, "ok"), body
    assert body["engine"]["version"] and body["engine"]["api_version"], body
    assert set(body["queue"]) == {"pending", "running"}, body


def write_routes() -> list[tuple[str, str]]:
    """Every (method, path template) under /v1 that is not a read, from the app's own
    route table: a route added later is in this list without anyone adding it."""
    app = make_app(Config(), None, None, None, None, None)  # type: ignore[arg-type]  # routes only
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        if path.startswith("/v1/") and route.method not in READ_METHODS:
            routes.add((route.method, path))
    return sorted(routes)


# Plausible bodies, so that a write that got through would do something.
WRITE_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/runners"): runner_body(),
    ("PATCH", "/v1/runners/{runner_id}"): {"timeout_seconds": 5},
    ("POST", "/v1/runners/{runner_id}/env_variables"): {"env_key": "B", "env_val": "2"},
    ("PATCH", "/v1/runners/{runner_id}/env_variables/{env_id}"): {"env_val": "9"},
    ("POST", "/v1/container_registries"): {
        "name": "ro-reg",
        "host": "registry.example.com",
        "username": "u",
        "password": "p",
    },
    ("PATCH", "/v1/container_registries/{registry_id}"): {"name": "renamed-by-ro"},
}


async def test_read_key_can_get_everything_but_every_write_is_403(api: Api, daemon: Daemon) -> None:
    read_key = daemon.create_key(uniq("ro"), "read")
    runner = await api.create_runner(
        run_command="true", env_variables=[{"env_key": "A", "env_val": "1"}]
    )
    rid = runner["id"]
    status, body = await api.get(f"/v1/runners/{rid}/env_variables")
    env_id = body["env_variables"][0]["id"]
    run = await api.trigger(rid)
    await api.wait_done(rid, run["id"])
    status, body = await api.post(
        "/v1/container_registries",
        {"name": uniq("reg"), "host": "registry.example.com", "username": "u", "password": "p"},
    )
    assert status == 200, body
    registry = body["container_registry"]
    status, body = await api.post(f"/v1/runners/{rid}/schedules", {"cron": "@yearly"})
    assert status == 200, body
    schedule = body["schedule"]
    ids = {
        "runner_id": rid,
        "env_id": env_id,
        "run_id": run["id"],
        "registry_id": registry["id"],
        "schedule_id": schedule["id"],
    }

    for path in (
        "/v1/runners",
        f"/v1/runners/{rid}",
        f"/v1/runners/{rid}/runs",
        f"/v1/runners/{rid}/env_variables",
        f"/v1/runners/{rid}/schedules",
        f"/v1/runners/{rid}/schedules/{schedule['id']}",
        "/v1/container_registries",
        f"/v1/container_registries/{registry['id']}",
    ):
        status, body = await api.get(path, key=read_key)
        assert status == 200, (path, body)

    writes = write_routes()
    assert ("POST", "/v1/runners/{runner_id}/warm") in writes, writes  # the table is read
    assert ("DELETE", "/v1/container_registries/{registry_id}") in writes, writes
    for method, template in writes:
        placeholders = set(re.findall(r"{(\w+)}", template))
        assert placeholders <= set(ids), f"{method} {template}: give this test an id for it"
        path = template.format(**ids)
        req = WRITE_BODIES.get((method, template), {})
        status, body = await api.request(method, path, json_body=req, key=read_key)
        assert (status, body) == (403, FORBIDDEN), (method, path)

    # nothing changed
    status, body = await api.get(f"/v1/runners/{rid}")
    assert status == 200 and body["runner"] == runner
    assert await run_ids(api, rid) == [run["id"]]
    status, body = await api.get(f"/v1/runners/{rid}/runs/{run['id']}")
    assert body["run"]["status"] == "succeeded", body
    status, body = await api.get(f"/v1/runners/{rid}/env_variables")
    assert [(e["env_key"], e["env_val"]) for e in body["env_variables"]] == [("A", "1")]
    status, body = await api.get(f"/v1/container_registries/{registry['id']}")
    assert status == 200 and body["container_registry"] == registry, body
    status, body = await api.get(f"/v1/runners/{rid}/schedules/{schedule['id']}")
    assert status == 200 and body["schedule"] == schedule, body


async def test_revoked_key_stops_working_immediately(api: Api, daemon: Daemon) -> None:
    name = uniq("temp")
    key = daemon.create_key(name)
    status, _ = await api.get("/v1/runners", key=key)
    assert status == 200
    runnerd_cli("keys", "revoke", name, "--config", str(daemon.config_path))
    status, body = await api.get("/v1/runners", key=key)
    assert (status, body) == (401, UNAUTHORIZED)
    status, body = await api.post("/v1/runners", runner_body(), key=key)
    assert (status, body) == (401, UNAUTHORIZED)
    status, _ = await api.get("/v1/runners")  # other keys are untouched
    assert status == 200


# -- runners: CRUD ----------------------------------------------------------------------


async def test_create_runner_returns_runner_shape_with_defaults(api: Api) -> None:
    name = uniq()
    status, body = await api.post("/v1/runners", {"name": name, "image_name": TEST_IMAGE_NAME})
    assert status == 200, body
    assert set(body) == {"runner"}, body
    runner = body["runner"]
    assert_runner_shape(runner)
    assert runner["name"] == name
    assert runner["image_name"] == TEST_IMAGE_NAME
    assert runner["image_tag"] == "latest"
    assert runner["run_command"] is None
    assert runner["argv"] is None
    assert runner["entrypoint"] is None
    assert runner["timeout_seconds"] == 3600
    assert runner["instance_type"] == {
        "slug": "standard-s",
        "name": "Standard S",
        "cpu": 1.0,
        "mem": 1024,
    }
    assert runner["created_at"] == runner["updated_at"]
    created = datetime.fromisoformat(runner["created_at"])
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)


async def test_create_runner_with_every_field_stores_each(api: Api) -> None:
    body = runner_body(
        argv=["echo", "a b", "$HOME"],
        entrypoint="/bin/sh -c",
        timeout_seconds=42,
        instance_type="standard-xs",
        env_variables=[
            {"env_key": "ALPHA", "env_val": "1"},
            {"env_key": "_beta2", "env_val": "two words"},
        ],
    )
    status, data = await api.post("/v1/runners", body)
    assert status == 200, data
    runner = data["runner"]
    assert_runner_shape(runner)
    for key in ("name", "image_name", "image_tag", "argv", "entrypoint", "timeout_seconds"):
        assert runner[key] == body[key], key
    assert runner["run_command"] is None
    assert runner["instance_type"] == {
        "slug": "standard-xs",
        "name": "Standard XS",
        "cpu": 0.5,
        "mem": 512,
    }
    status, data = await api.get(f"/v1/runners/{runner['id']}/env_variables")
    assert status == 200, data
    assert sorted((e["env_key"], e["env_val"]) for e in data["env_variables"]) == [
        ("ALPHA", "1"),
        ("_beta2", "two words"),
    ]


async def test_list_and_get_return_the_created_runner(api: Api) -> None:
    a = await api.create_runner(run_command="echo a")
    b = await api.create_runner(argv=["echo", "b"])
    status, body = await api.get("/v1/runners")
    assert status == 200 and set(body) == {"runners"}, body
    listed = {r["id"]: r for r in body["runners"]}
    assert listed[a["id"]] == a
    assert listed[b["id"]] == b
    for r in body["runners"]:
        assert_runner_shape(r)
    for r in (a, b):
        status, body = await api.get(f"/v1/runners/{r['id']}")
        assert (status, body) == (200, {"runner": r})


@pytest.mark.parametrize(
    "patch",
    [
        {"name": "renamed-runner"},
        {"image_name": "registry.example.com:5000/team/job"},
        {"image_tag": "1.36.1-musl_x"},
        {"run_command": "echo patched"},
        {"run_command": None},
        {"argv": ["echo", "x"], "run_command": None},
        {"entrypoint": "/bin/sh -c"},
        {"entrypoint": None},
        {"timeout_seconds": 86400},
        {"instance_type": "standard-m"},
    ],
    ids=lambda p: "+".join(f"{k}={'null' if v is None else 'value'}" for k, v in p.items()),
)
async def test_patch_runner_field_changes_it_and_updated_at_but_not_created_at(
    api: Api, patch: dict[str, Any]
) -> None:
    runner = await api.create_runner(run_command="echo original", entrypoint="/bin/sh")
    if "name" in patch:
        patch = {"name": uniq("renamed")}
    await asyncio.sleep(0.005)  # timestamps have millisecond resolution
    status, body = await api.patch(f"/v1/runners/{runner['id']}", patch)
    assert status == 200, body
    patched = body["runner"]
    assert_runner_shape(patched)
    expected = {**runner, **patch}
    if "instance_type" in patch:
        expected["instance_type"] = {
            "slug": "standard-m",
            "name": "Standard M",
            "cpu": 2.0,
            "mem": 2048,
        }
    for key in RUNNER_KEYS - {"updated_at"}:
        assert patched[key] == expected[key], key
    assert patched["created_at"] == runner["created_at"]
    assert datetime.fromisoformat(patched["updated_at"]) > datetime.fromisoformat(
        runner["updated_at"]
    )
    status, body = await api.get(f"/v1/runners/{runner['id']}")
    assert (status, body) == (200, {"runner": patched})


async def test_patch_env_variables_replaces_the_runners_defaults(api: Api) -> None:
    runner = await api.create_runner(env_variables=[{"env_key": "OLD", "env_val": "1"}])
    status, body = await api.patch(
        f"/v1/runners/{runner['id']}", {"env_variables": [{"env_key": "NEW", "env_val": "2"}]}
    )
    assert status == 200, body
    status, body = await api.get(f"/v1/runners/{runner['id']}/env_variables")
    assert [(e["env_key"], e["env_val"]) for e in body["env_variables"]] == [("NEW", "2")]


async def test_patch_leaving_both_run_command_and_argv_set_is_400_and_changes_nothing(
    api: Api,
) -> None:
    runner = await api.create_runner(run_command="echo a")
    path = f"/v1/runners/{runner['id']}"
    for patch in ({"argv": ["echo", "b"]}, {"argv": ["echo", "b"], "run_command": "echo c"}):
        status, body = await api.patch(path, patch)
        assert_errors_name(status, body, "run_command", "argv")
        status, body = await api.get(path)
        assert body["runner"] == runner
    # switching is one PATCH that clears the other
    status, body = await api.patch(path, {"argv": ["echo", "b"], "run_command": None})
    assert status == 200, body
    switched = body["runner"]
    assert (switched["run_command"], switched["argv"]) == (None, ["echo", "b"])
    status, body = await api.patch(path, {"run_command": "echo d"})
    assert_errors_name(status, body, "run_command", "argv")


@pytest.mark.parametrize(
    "patch,fields",
    [
        ({"timeout_seconds": 0}, ("timeout_seconds",)),
        ({"name": None}, ("name",)),
        ({"name": "ab"}, ("name",)),
        ({"image_name": "Busybox"}, ("image_name",)),
        ({"instance_type": "huge"}, ("instance_type",)),
        ({"colour": "red"}, ("colour",)),
        ({"env_variables": [{"env_key": "1ABC", "env_val": "x"}]}, ("env_variables", "env_key")),
    ],
)
async def test_invalid_patch_is_400_naming_field_and_changes_nothing(
    api: Api, patch: dict[str, Any], fields: tuple[str, ...]
) -> None:
    runner = await api.create_runner()
    status, body = await api.patch(f"/v1/runners/{runner['id']}", patch)
    assert_errors_name(status, body, *fields)
    status, body = await api.get(f"/v1/runners/{runner['id']}")
    assert body["runner"] == runner


async def test_patch_to_another_runners_name_is_400_naming_name(api: Api) -> None:
    a = await api.create_runner()
    b = await api.create_runner()
    status, body = await api.patch(f"/v1/runners/{b['id']}", {"name": a["name"]})
    assert_errors_name(status, body, "name")
    status, body = await api.get(f"/v1/runners/{b['id']}")
    assert body["runner"] == b


async def test_delete_runner_answers_deleted_then_it_is_gone_everywhere(api: Api) -> None:
    runner = await api.create_runner(env_variables=[{"env_key": "A", "env_val": "1"}])
    rid = runner["id"]
    status, body = await api.delete(f"/v1/runners/{rid}")
    assert (status, body) == (200, {"deleted": True})
    for method, path, req in [
        ("GET", f"/v1/runners/{rid}", None),
        ("PATCH", f"/v1/runners/{rid}", {"timeout_seconds": 5}),
        ("DELETE", f"/v1/runners/{rid}", None),
        ("GET", f"/v1/runners/{rid}/runs", None),
        ("POST", f"/v1/runners/{rid}/runs", {}),
        ("GET", f"/v1/runners/{rid}/env_variables", None),
        ("POST", f"/v1/runners/{rid}/env_variables", {"env_key": "B", "env_val": "2"}),
    ]:
        status, body = await api.request(method, path, json_body=req)
        assert (status, body) == (404, NOT_FOUND), (method, path)
    assert runner["name"] not in await runner_names(api)
    # the name is free again
    status, body = await api.post("/v1/runners", runner_body(name=runner["name"]))
    assert status == 200, body


async def test_delete_runner_with_pending_or_running_run_is_409_until_it_ends(api: Api) -> None:
    runner = await api.create_runner(run_command="sleep 30", timeout_seconds=3)
    rid = runner["id"]
    run = await api.trigger(rid)
    status, body = await api.delete(f"/v1/runners/{rid}")  # pending (or just started)
    assert (status, body) == (409, CONFLICT)

    async def running() -> bool:
        return (await api.run(rid, run["id"]))["status"] == "running"

    await wait_until(running, timeout=30, what="the run to start")
    status, body = await api.delete(f"/v1/runners/{rid}")
    assert (status, body) == (409, CONFLICT)
    status, body = await api.get(f"/v1/runners/{rid}")
    assert status == 200, body

    done = await api.wait_done(rid, run["id"], timeout=30)
    assert (done["status"], done["failure_reason"]) == ("failed", "timeout")
    status, body = await api.delete(f"/v1/runners/{rid}")
    assert (status, body) == (200, {"deleted": True})
    status, body = await api.get(f"/v1/runners/{rid}/runs/{run['id']}")
    assert (status, body) == (404, NOT_FOUND)


async def test_unknown_runner_id_is_404_on_every_runner_route(api: Api) -> None:
    rid = str(uuid.uuid4())
    run_id = str(uuid.uuid4())
    for method, path, req in [
        ("GET", f"/v1/runners/{rid}", None),
        ("PATCH", f"/v1/runners/{rid}", {"timeout_seconds": 5}),
        ("DELETE", f"/v1/runners/{rid}", None),
        ("GET", f"/v1/runners/{rid}/runs", None),
        ("POST", f"/v1/runners/{rid}/runs", None),
        ("POST", f"/v1/runners/{rid}/runs", {}),
        ("GET", f"/v1/runners/{rid}/runs/{run_id}", None),
        ("GET", f"/v1/runners/{rid}/runs/{run_id}/logs", None),
        ("GET", f"/v1/runners/{rid}/env_variables", None),
        ("POST", f"/v1/runners/{rid}/env_variables", {"env_key": "A", "env_val": "1"}),
        ("PATCH", f"/v1/runners/{rid}/env_variables/{uuid.uuid4()}", {"env_val": "1"}),
        ("DELETE", f"/v1/runners/{rid}/env_variables/{uuid.uuid4()}", None),
    ]:
        status, body = await api.request(method, path, json_body=req)
        assert (status, body) == (404, NOT_FOUND), (method, path)


@pytest.mark.parametrize(
    "bad_id",
    [
        "not-a-uuid",
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "..%5C..%5Cwindows",
        "%00",
        "x%27%3B%20DROP%20TABLE%20runners%3B%20--",
        "00000000-0000-0000-0000-00000000000g",
        "{" + "0" * 32 + "}",
        "a" * 3000,
    ],
    ids=[
        "word",
        "dotdot-slash",
        "dotdot",
        "backslashes",
        "nul",
        "sql",
        "bad-hex",
        "braces",
        "long",
    ],
)
async def test_malformed_ids_are_404_never_5xx(
    api: Api, http: aiohttp.ClientSession, bad_id: str
) -> None:
    runner = await api.create_runner()
    rid = runner["id"]
    templates = [
        ("GET", "/v1/runners/{x}"),
        ("PATCH", "/v1/runners/{x}"),
        ("DELETE", "/v1/runners/{x}"),
        ("GET", "/v1/runners/{x}/runs"),
        ("POST", "/v1/runners/{x}/runs"),
        ("GET", "/v1/runners/{x}/env_variables"),
        ("POST", "/v1/runners/{x}/env_variables"),
        ("GET", f"/v1/runners/{rid}/runs/{{x}}"),
        ("GET", f"/v1/runners/{rid}/runs/{{x}}/logs"),
        ("GET", "/v1/runners/{x}/runs/{x}/logs"),
        ("PATCH", f"/v1/runners/{rid}/env_variables/{{x}}"),
        ("DELETE", f"/v1/runners/{rid}/env_variables/{{x}}"),
    ]
    for method, template in templates:
        url = URL(api.url + template.format(x=bad_id), encoded=True)
        data = json.dumps({"env_val": "1"}) if method in ("POST", "PATCH") else None
        status, _, body = await raw(http, method, url, key=api.key, data=data)
        assert status == 404, (method, template, status, body[:300])
        assert as_json(body) == NOT_FOUND, (method, template)


# -- runners: validation ----------------------------------------------------------------


async def test_missing_name_and_image_name_are_both_reported(
    api: Api, http: aiohttp.ClientSession
) -> None:
    before = await runner_names(api)
    for payload in (b"{}", b'{"image_tag": "latest"}', b""):
        status, _, body = await raw(
            http, "POST", api.url + "/v1/runners", key=api.key, data=payload
        )
        errors = assert_errors_name(status, as_json(body), "image_name")
        assert any(names(e, "name") and not names(e, "image_name") for e in errors), errors
        assert len(errors) == 2, errors
    assert await runner_names(api) == before


MISSING = object()

INVALID_RUNNER_BODIES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("name-too-short", {"name": "ab"}, ("name",)),
    ("name-too-long", {"name": "n" * 51}, ("name",)),
    ("name-10kb", {"name": "n" * 10240}, ("name",)),
    ("name-with-nul", {"name": "a\u0000bc"}, ("name",)),
    ("name-number", {"name": 12345}, ("name",)),
    ("name-null", {"name": None}, ("name",)),
    ("name-missing", {"name": MISSING}, ("name",)),
    ("image-name-missing", {"image_name": MISSING}, ("image_name",)),
    ("image-name-uppercase", {"image_name": "BusyBox"}, ("image_name",)),
    ("image-name-with-tag", {"image_name": "busybox:1"}, ("image_name",)),
    ("image-name-with-digest", {"image_name": "busybox@sha256:" + "a" * 64}, ("image_name",)),
    ("image-name-empty", {"image_name": ""}, ("image_name",)),
    ("image-name-spaces", {"image_name": "bad image"}, ("image_name",)),
    ("image-name-number", {"image_name": 5}, ("image_name",)),
    ("image-tag-space", {"image_tag": "bad tag"}, ("image_tag",)),
    ("image-tag-leading-dot", {"image_tag": ".hidden"}, ("image_tag",)),
    ("image-tag-leading-dash", {"image_tag": "-x"}, ("image_tag",)),
    ("image-tag-slash", {"image_tag": "a/b"}, ("image_tag",)),
    ("image-tag-too-long", {"image_tag": "t" * 129}, ("image_tag",)),
    ("image-tag-empty", {"image_tag": ""}, ("image_tag",)),
    ("image-tag-number", {"image_tag": 1}, ("image_tag",)),
    ("run-command-too-long", {"run_command": "x" * 1001}, ("run_command",)),
    ("run-command-number", {"run_command": 5}, ("run_command",)),
    ("run-command-array", {"run_command": ["echo", "hi"]}, ("run_command",)),
    (
        "run-command-and-argv",
        {"run_command": "echo a", "argv": ["echo", "b"]},
        ("run_command", "argv"),
    ),
    ("argv-string", {"argv": "echo hi"}, ("argv",)),
    ("argv-number-item", {"argv": ["echo", 1]}, ("argv",)),
    ("argv-null-item", {"argv": ["echo", None]}, ("argv",)),
    ("argv-object", {"argv": {"0": "echo"}}, ("argv",)),
    ("entrypoint-too-long", {"entrypoint": "e" * 501}, ("entrypoint",)),
    ("entrypoint-number", {"entrypoint": 5}, ("entrypoint",)),
    ("timeout-zero", {"timeout_seconds": 0}, ("timeout_seconds",)),
    ("timeout-negative", {"timeout_seconds": -1}, ("timeout_seconds",)),
    ("timeout-86401", {"timeout_seconds": 86401}, ("timeout_seconds",)),
    ("timeout-string", {"timeout_seconds": "10"}, ("timeout_seconds",)),
    ("timeout-true", {"timeout_seconds": True}, ("timeout_seconds",)),
    ("timeout-fraction", {"timeout_seconds": 1.5}, ("timeout_seconds",)),
    ("timeout-null", {"timeout_seconds": None}, ("timeout_seconds",)),
    ("instance-type-unknown", {"instance_type": "huge"}, ("instance_type",)),
    ("instance-type-number", {"instance_type": 5}, ("instance_type",)),
    ("unknown-field", {"colour": "red"}, ("colour",)),
    ("env-not-array", {"env_variables": "A=1"}, ("env_variables",)),
    ("env-item-not-object", {"env_variables": ["A=1"]}, ("env_variables",)),
    (
        "env-key-leading-digit",
        {"env_variables": [{"env_key": "1ABC", "env_val": "x"}]},
        ("env_variables", "env_key"),
    ),
    (
        "env-key-dash",
        {"env_variables": [{"env_key": "A-B", "env_val": "x"}]},
        ("env_variables", "env_key"),
    ),
    (
        "env-key-empty",
        {"env_variables": [{"env_key": "", "env_val": "x"}]},
        ("env_variables", "env_key"),
    ),
    (
        "env-key-number",
        {"env_variables": [{"env_key": 7, "env_val": "x"}]},
        ("env_variables", "env_key"),
    ),
    (
        "env-key-duplicate",
        {"env_variables": [{"env_key": "A", "env_val": "1"}, {"env_key": "A", "env_val": "2"}]},
        ("env_variables", "env_key"),
    ),
    ("env-key-missing", {"env_variables": [{"env_val": "x"}]}, ("env_variables", "env_key")),
    ("env-val-missing", {"env_variables": [{"env_key": "A"}]}, ("env_variables", "env_val")),
    (
        "env-val-number",
        {"env_variables": [{"env_key": "A", "env_val": 5}]},
        ("env_variables", "env_val"),
    ),
    (
        "env-val-null",
        {"env_variables": [{"env_key": "A", "env_val": None}]},
        ("env_variables", "env_val"),
    ),
    (
        "env-item-unknown-field",
        {"env_variables": [{"env_key": "A", "env_val": "1", "secret": True}]},
        ("env_variables", "secret"),
    ),
]


@pytest.mark.parametrize(
    "changes,fields",
    [(c, f) for _, c, f in INVALID_RUNNER_BODIES],
    ids=[i for i, _, _ in INVALID_RUNNER_BODIES],
)
async def test_invalid_runner_body_is_400_naming_the_field_and_creates_nothing(
    api: Api, changes: dict[str, Any], fields: tuple[str, ...]
) -> None:
    body = runner_body()
    for key, value in changes.items():
        if value is MISSING:
            del body[key]
        else:
            body[key] = value
    status, data = await api.post("/v1/runners", body)
    assert_errors_name(status, data, *fields)
    if isinstance(body.get("name"), str):
        assert body["name"] not in await runner_names(api)


async def test_every_problem_in_a_runner_body_is_listed_at_once(api: Api) -> None:
    status, body = await api.post(
        "/v1/runners",
        {
            "name": "ab",
            "image_name": "Bad:Image",
            "image_tag": "-x",
            "run_command": "x" * 1001,
            "entrypoint": "e" * 501,
            "timeout_seconds": 0,
            "instance_type": "huge",
            "colour": "red",
            "env_variables": [{"env_key": "1ABC", "env_val": "x"}, {"env_key": "B"}],
        },
    )
    errors = assert_errors_name(status, body, "image_name")
    for fields in [
        ("image_tag",),
        ("run_command",),
        ("entrypoint",),
        ("timeout_seconds",),
        ("instance_type",),
        ("colour",),
        ("env_variables", "env_key"),
        ("env_variables", "env_val"),
    ]:
        assert any(all(names(e, f) for f in fields) for e in errors), (fields, errors)
    assert any(names(e, "name") and not names(e, "image_name") for e in errors), errors


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "abc"},
        {"name": "n" * 50},
        {"run_command": "x" * 1000},
        {"entrypoint": "e" * 500},
        {"entrypoint": None, "run_command": None, "argv": None},
        {"timeout_seconds": 1},
        {"timeout_seconds": 86400},
        {"image_name": "registry.example.com:5000/team/job", "image_tag": "v1.2_3-rc.4"},
        {"image_tag": "t" * 128},
        {"env_variables": []},
    ],
    ids=[
        "name-3",
        "name-50",
        "run-command-1000",
        "entrypoint-500",
        "nulls",
        "timeout-1",
        "timeout-86400",
        "registry-image",
        "tag-128",
        "no-env",
    ],
)
async def test_runner_body_at_the_limits_is_accepted(api: Api, changes: dict[str, Any]) -> None:
    body = runner_body(**changes)
    if "name" in changes:
        body["name"] = (
            changes["name"][:-12] + uuid.uuid4().hex[:12]
            if len(changes["name"]) > 12
            else uuid.uuid4().hex[: len(changes["name"])]
        )
    status, data = await api.post("/v1/runners", body)
    assert status == 200, data
    for key, value in body.items():
        if key != "env_variables":
            assert data["runner"][key] == value, key


async def test_duplicate_runner_name_is_400_naming_name(api: Api) -> None:
    first = await api.create_runner()
    status, body = await api.post("/v1/runners", runner_body(name=first["name"]))
    assert_errors_name(status, body, "name")
    assert (await runner_names(api)).count(first["name"]) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b'{"name": "abc",}',
        b"\xff\xfe{}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["garbage", "trailing-comma", "not-utf8", "nested-deeply"],
)
async def test_runner_body_that_is_not_json_is_400(
    api: Api, http: aiohttp.ClientSession, payload: bytes
) -> None:
    status, _, body = await raw(http, "POST", api.url + "/v1/runners", key=api.key, data=payload)
    assert status == 400, body[:300]
    errors = as_json(body)["errors"]
    assert errors and all(isinstance(e, str) for e in errors)


@pytest.mark.parametrize(
    "payload",
    [[], [runner_body()], "a string", 42, True],
    ids=["empty-array", "array-of-body", "string", "number", "bool"],
)
async def test_runner_body_that_is_not_an_object_is_400(api: Api, payload: Any) -> None:
    status, body = await api.post("/v1/runners", payload)
    assert status == 400, body
    assert body["errors"], body


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_json_body_with_wrong_content_type_is_415(
    api: Api, http: aiohttp.ClientSession, content_type: str
) -> None:
    runner = await api.create_runner()
    rid = runner["id"]
    status, body = await api.get(f"/v1/runners/{rid}/env_variables")
    for method, path, payload in [
        ("POST", "/v1/runners", runner_body()),
        ("PATCH", f"/v1/runners/{rid}", {"timeout_seconds": 5}),
        ("POST", f"/v1/runners/{rid}/runs", {}),
        ("POST", f"/v1/runners/{rid}/env_variables", {"env_key": "A", "env_val": "1"}),
    ]:
        status, _, body = await raw(
            http,
            method,
            api.url + path,
            key=api.key,
            data=json.dumps(payload),
            content_type=content_type,
        )
        assert_status_error(status, as_json(body), 415)
    assert await run_ids(api, rid) == []
    status, body = await api.get(f"/v1/runners/{rid}")
    assert body["runner"] == runner


# -- runs ---------------------------------------------------------------------------------


async def test_trigger_with_no_body_empty_object_or_env_overrides_returns_pending_run(
    api: Api, http: aiohttp.ClientSession
) -> None:
    runner = await api.create_runner(run_command="true")
    rid = runner["id"]
    status, headers, raw_body = await raw(
        http, "POST", api.url + f"/v1/runners/{rid}/runs", key=api.key
    )
    responses = [(status, as_json(raw_body))]
    responses.append(await api.post(f"/v1/runners/{rid}/runs", {}))
    responses.append(
        await api.post(
            f"/v1/runners/{rid}/runs",
            {
                "env_variables": [
                    {"env_key": "A", "env_val": "1"},
                    {"env_key": "b_2", "env_val": ""},
                ]
            },
        )
    )
    ids = []
    for status, body in responses:
        assert status == 200, body
        assert set(body) == {"run"}, body
        run = body["run"]
        assert_run_shape(run)
        assert run["status"] == "pending"
        assert (
            run["exit_code"],
            run["started_at"],
            run["completed_at"],
            run["failure_reason"],
            run["error"],
        ) == (None, None, None, None, None)
        assert (run["command"], run["argv"], run["entrypoint"]) == ("true", None, None)
        assert run["created_at"] == run["updated_at"]
        ids.append(run["id"])
    assert len(set(ids)) == 3
    assert await run_ids(api, rid) == ids[::-1]
    for run_id in ids:
        status, body = await api.get(f"/v1/runners/{rid}/runs/{run_id}")
        assert status == 200 and body["run"]["id"] == run_id, body


INVALID_TRIGGER_BODIES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("unknown-field", {"colour": "red"}, ("colour",)),
    ("env-not-array", {"env_variables": {"A": "1"}}, ("env_variables",)),
    ("env-item-not-object", {"env_variables": ["A=1"]}, ("env_variables",)),
    (
        "env-key-leading-digit",
        {"env_variables": [{"env_key": "1ABC", "env_val": "x"}]},
        ("env_variables", "env_key"),
    ),
    (
        "env-key-dash",
        {"env_variables": [{"env_key": "A-B", "env_val": "x"}]},
        ("env_variables", "env_key"),
    ),
    (
        "env-key-duplicate",
        {"env_variables": [{"env_key": "A", "env_val": "1"}, {"env_key": "A", "env_val": "2"}]},
        ("env_variables", "env_key"),
    ),
    ("env-val-missing", {"env_variables": [{"env_key": "A"}]}, ("env_variables", "env_val")),
    (
        "env-val-number",
        {"env_variables": [{"env_key": "A", "env_val": 1}]},
        ("env_variables", "env_val"),
    ),
    (
        "env-item-unknown-field",
        {"env_variables": [{"env_key": "A", "env_val": "1", "extra": 1}]},
        ("env_variables", "extra"),
    ),
    ("array", [], ()),
    ("string", "go", ()),
]


@pytest.mark.parametrize(
    "payload,fields",
    [(p, f) for _, p, f in INVALID_TRIGGER_BODIES],
    ids=[i for i, _, _ in INVALID_TRIGGER_BODIES],
)
async def test_invalid_trigger_body_is_400_naming_the_field_and_queues_nothing(
    api: Api, payload: Any, fields: tuple[str, ...]
) -> None:
    runner = await api.create_runner(run_command="true")
    status, body = await api.post(f"/v1/runners/{runner['id']}/runs", payload)
    assert status == 400 and body["errors"], body
    if fields:
        assert_errors_name(status, body, *fields)
    assert await run_ids(api, runner["id"]) == []


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b'{"env_variables": [}', b"\xff"],
    ids=["garbage", "broken", "not-utf8"],
)
async def test_trigger_body_that_is_not_json_is_400_and_queues_nothing(
    api: Api, http: aiohttp.ClientSession, payload: bytes
) -> None:
    runner = await api.create_runner(run_command="true")
    status, _, body = await raw(
        http, "POST", api.url + f"/v1/runners/{runner['id']}/runs", key=api.key, data=payload
    )
    assert status == 400, body
    assert as_json(body)["errors"]
    assert await run_ids(api, runner["id"]) == []


async def test_run_fetched_through_another_runner_is_404(api: Api) -> None:
    a = await api.create_runner(run_command="true")
    b = await api.create_runner(run_command="true")
    run = await api.trigger(a["id"])
    for path in (
        f"/v1/runners/{b['id']}/runs/{run['id']}",
        f"/v1/runners/{b['id']}/runs/{run['id']}/logs",
    ):
        status, body = await api.get(path)
        assert (status, body) == (404, NOT_FOUND), path
    assert run["id"] not in await run_ids(api, b["id"])
    status, body = await api.get(f"/v1/runners/{b['id']}/runs?before={run['id']}")
    assert status in (200, 400), body  # never another runner's page
    if status == 200:
        assert body["runs"] == []
    status, body = await api.get(f"/v1/runners/{a['id']}/runs/{run['id']}")
    assert status == 200, body


async def test_unknown_run_id_is_404(api: Api) -> None:
    runner = await api.create_runner()
    for path in (
        f"/v1/runners/{runner['id']}/runs/{uuid.uuid4()}",
        f"/v1/runners/{runner['id']}/runs/{uuid.uuid4()}/logs",
    ):
        status, body = await api.get(path)
        assert (status, body) == (404, NOT_FOUND), path


async def test_runs_are_listed_newest_first_and_before_pages_without_overlap(api: Api) -> None:
    runner = await api.create_runner(run_command="true")
    rid = runner["id"]
    triggered = [(await api.trigger(rid))["id"] for _ in range(5)]
    newest_first = triggered[::-1]
    assert await run_ids(api, rid) == newest_first

    pages: list[list[str]] = []
    query = "?limit=2"
    while True:
        page = await run_ids(api, rid, query)
        if not page:
            break
        pages.append(page)
        query = f"?limit=2&before={page[-1]}"
        assert len(pages) <= 5, pages
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]
    assert await run_ids(api, rid, f"?before={newest_first[1]}") == newest_first[2:]


async def test_runs_limit_defaults_to_50_and_accepts_1000(api: Api) -> None:
    runner = await api.create_runner(image_name=UNPULLABLE_IMAGE)
    rid = runner["id"]
    triggered = [(await api.trigger(rid))["id"] for _ in range(51)]
    newest_first = triggered[::-1]
    assert await run_ids(api, rid) == newest_first[:50]
    assert await run_ids(api, rid, "?limit=1000") == newest_first
    assert await run_ids(api, rid, "?limit=1") == newest_first[:1]
    assert await run_ids(api, rid, "?limit=51") == newest_first


@pytest.mark.parametrize(
    "query,field",
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("limit=%C2%B2", "limit"),  # '²': str.isdigit() says yes, int() says no
        ("limit=" + "9" * 5000, "limit"),  # past int()'s digit limit
        ("status=bogus", "status"),
        ("status=", "status"),
        ("status=SUCCEEDED", "status"),
        ("before=not-a-uuid", "before"),
        ("before=..%2F..%2Fetc", "before"),
        ("before=", "before"),
    ],
    ids=lambda v: v if len(v) < 30 else v[:12] + "...",
)
async def test_bad_runs_list_query_is_400_naming_the_parameter(
    api: Api, http: aiohttp.ClientSession, query: str, field: str
) -> None:
    runner = await api.create_runner()
    url = URL(f"{api.url}/v1/runners/{runner['id']}/runs?{query}", encoded=True)
    status, _, body = await raw(http, "GET", url, key=api.key)
    assert_errors_name(status, as_json(body), field)


async def test_status_filter_lists_only_runs_with_that_status(api: Api) -> None:
    runner = await api.create_runner(run_command='exit "$CODE"')
    rid = runner["id"]
    ok1 = await api.trigger(rid, {"env_variables": [{"env_key": "CODE", "env_val": "0"}]})
    bad = await api.trigger(rid, {"env_variables": [{"env_key": "CODE", "env_val": "1"}]})
    ok2 = await api.trigger(rid, {"env_variables": [{"env_key": "CODE", "env_val": "0"}]})
    for run in (ok1, bad, ok2):
        await api.wait_done(rid, run["id"])
    assert await run_ids(api, rid, "?status=succeeded") == [ok2["id"], ok1["id"]]
    assert await run_ids(api, rid, "?status=failed") == [bad["id"]]
    assert await run_ids(api, rid, "?status=pending") == []
    assert await run_ids(api, rid, "?status=running") == []
    assert await run_ids(api, rid, f"?status=succeeded&before={ok2['id']}") == [ok1["id"]]
    assert await run_ids(api, rid, "?status=succeeded&limit=1") == [ok2["id"]]


async def test_logs_of_a_run_without_output_are_200_text_plain(
    api: Api, http: aiohttp.ClientSession
) -> None:
    quiet = await api.create_runner(run_command="true")
    never = await api.create_runner(image_name=UNPULLABLE_IMAGE)
    for runner in (quiet, never):
        run = await api.trigger(runner["id"])
        path = f"/v1/runners/{runner['id']}/runs/{run['id']}/logs"
        status, headers, body = await raw(http, "GET", api.url + path, key=api.key)
        assert status == 200, body
        assert headers["Content-Type"].split(";")[0].strip() == "text/plain", headers
        done = await api.wait_done(runner["id"], run["id"])
        for query in ("", "?tail=0", "?tail=10"):
            status, headers, body = await raw(http, "GET", api.url + path + query, key=api.key)
            assert status == 200, body
            assert headers["Content-Type"].split(";")[0].strip() == "text/plain"
            if runner is quiet:
                assert done["status"] == "succeeded", done
                assert body == b"", body


@pytest.mark.parametrize(
    "tail",
    ["-1", "x", "1.5", "", "%C2%B2", "9" * 5000],
    ids=["negative", "word", "fraction", "empty", "superscript", "5000-digits"],
)
async def test_logs_tail_that_is_not_a_whole_number_is_400_naming_tail(
    api: Api, http: aiohttp.ClientSession, tail: str
) -> None:
    runner = await api.create_runner(run_command="true")
    run = await api.trigger(runner["id"])
    url = URL(
        f"{api.url}/v1/runners/{runner['id']}/runs/{run['id']}/logs?tail={tail}", encoded=True
    )
    status, _, body = await raw(http, "GET", url, key=api.key)
    assert_errors_name(status, as_json(body), "tail")


# -- runner env variables -----------------------------------------------------------


async def test_env_variable_create_list_patch_delete(api: Api) -> None:
    runner = await api.create_runner()
    base = f"/v1/runners/{runner['id']}/env_variables"
    status, body = await api.get(base)
    assert (status, body) == (200, {"env_variables": []})

    status, body = await api.post(base, {"env_key": "GREETING", "env_val": "hello"})
    assert status == 200 and set(body) == {"env_variable"}, body
    env = body["env_variable"]
    assert_env_shape(env)
    assert (env["env_key"], env["env_val"]) == ("GREETING", "hello")
    assert env["created_at"] == env["updated_at"]
    status, body = await api.post(base, {"env_key": "OTHER", "env_val": ""})
    assert status == 200, body
    other = body["env_variable"]

    status, body = await api.get(base)
    assert status == 200 and set(body) == {"env_variables"}, body
    assert {e["id"]: e for e in body["env_variables"]} == {env["id"]: env, other["id"]: other}

    await asyncio.sleep(0.005)
    status, body = await api.patch(f"{base}/{env['id']}", {"env_val": "bonjour"})
    assert status == 200, body
    patched = body["env_variable"]
    assert_env_shape(patched)
    assert (patched["id"], patched["env_key"], patched["env_val"]) == (
        env["id"],
        "GREETING",
        "bonjour",
    )
    assert patched["created_at"] == env["created_at"]
    assert datetime.fromisoformat(patched["updated_at"]) > datetime.fromisoformat(env["updated_at"])

    status, body = await api.patch(f"{base}/{env['id']}", {"env_key": "SALUT"})
    assert status == 200, body
    assert (body["env_variable"]["env_key"], body["env_variable"]["env_val"]) == (
        "SALUT",
        "bonjour",
    )

    status, body = await api.delete(f"{base}/{env['id']}")
    assert status == 200, body
    status, body = await api.get(base)
    assert [e["id"] for e in body["env_variables"]] == [other["id"]]
    for method, req in (("DELETE", None), ("PATCH", {"env_val": "x"})):
        status, body = await api.request(method, f"{base}/{env['id']}", json_body=req)
        assert (status, body) == (404, NOT_FOUND), method


async def test_env_variable_duplicate_key_is_400_naming_env_key(api: Api) -> None:
    runner = await api.create_runner(env_variables=[{"env_key": "A", "env_val": "1"}])
    base = f"/v1/runners/{runner['id']}/env_variables"
    status, body = await api.post(base, {"env_key": "A", "env_val": "2"})
    assert_errors_name(status, body, "env_key")
    status, body = await api.post(base, {"env_key": "B", "env_val": "2"})
    assert status == 200, body
    b_id = body["env_variable"]["id"]
    status, body = await api.patch(f"{base}/{b_id}", {"env_key": "A"})
    assert_errors_name(status, body, "env_key")
    status, body = await api.get(base)
    assert sorted((e["env_key"], e["env_val"]) for e in body["env_variables"]) == [
        ("A", "1"),
        ("B", "2"),
    ]
    # the same key on another runner is fine: unique per runner
    other = await api.create_runner()
    status, body = await api.post(
        f"/v1/runners/{other['id']}/env_variables", {"env_key": "A", "env_val": "3"}
    )
    assert status == 200, body


@pytest.mark.parametrize(
    "payload,fields",
    [
        ({"env_key": "1ABC", "env_val": "x"}, ("env_key",)),
        ({"env_key": "A-B", "env_val": "x"}, ("env_key",)),
        ({"env_key": "A B", "env_val": "x"}, ("env_key",)),
        ({"env_key": "", "env_val": "x"}, ("env_key",)),
        ({"env_key": 5, "env_val": "x"}, ("env_key",)),
        ({"env_val": "x"}, ("env_key",)),
        ({"env_key": "A"}, ("env_val",)),
        ({"env_key": "A", "env_val": 5}, ("env_val",)),
        ({"env_key": "A", "env_val": None}, ("env_val",)),
        ({"env_key": "A", "env_val": "x", "colour": 1}, ("colour",)),
    ],
    ids=[
        "leading-digit",
        "dash",
        "space",
        "empty",
        "number",
        "key-missing",
        "val-missing",
        "val-number",
        "val-null",
        "unknown-field",
    ],
)
async def test_invalid_env_variable_create_is_400_naming_the_field(
    api: Api, payload: dict[str, Any], fields: tuple[str, ...]
) -> None:
    runner = await api.create_runner(env_variables=[{"env_key": "KEEP", "env_val": "1"}])
    base = f"/v1/runners/{runner['id']}/env_variables"
    status, body = await api.post(base, payload)
    assert_errors_name(status, body, *fields)
    status, body = await api.get(base)
    assert [e["env_key"] for e in body["env_variables"]] == ["KEEP"]


@pytest.mark.parametrize(
    "payload,fields",
    [
        ({"env_key": "1ABC"}, ("env_key",)),
        ({"env_key": "A-B"}, ("env_key",)),
        ({"env_key": ""}, ("env_key",)),
        ({"env_key": None}, ("env_key",)),
        ({"env_val": 5}, ("env_val",)),
        ({"env_val": None}, ("env_val",)),
        ({"env_val": "x", "colour": 1}, ("colour",)),
    ],
    ids=["leading-digit", "dash", "empty", "null-key", "val-number", "val-null", "unknown-field"],
)
async def test_invalid_env_variable_patch_is_400_naming_the_field_and_changes_nothing(
    api: Api, payload: dict[str, Any], fields: tuple[str, ...]
) -> None:
    runner = await api.create_runner(env_variables=[{"env_key": "KEEP", "env_val": "1"}])
    base = f"/v1/runners/{runner['id']}/env_variables"
    status, body = await api.get(base)
    (keep,) = body["env_variables"]
    status, body = await api.patch(f"{base}/{keep['id']}", payload)
    assert_errors_name(status, body, *fields)
    status, body = await api.get(base)
    assert body["env_variables"] == [keep]


async def test_env_variable_of_another_runner_or_unknown_id_is_404(api: Api) -> None:
    a = await api.create_runner(env_variables=[{"env_key": "A", "env_val": "1"}])
    b = await api.create_runner()
    status, body = await api.get(f"/v1/runners/{a['id']}/env_variables")
    a_env = body["env_variables"][0]
    for env_id in (a_env["id"], str(uuid.uuid4())):
        for method, req in (("PATCH", {"env_val": "x"}), ("DELETE", None)):
            status, body = await api.request(
                method, f"/v1/runners/{b['id']}/env_variables/{env_id}", json_body=req
            )
            assert (status, body) == (404, NOT_FOUND), (method, env_id)
    status, body = await api.get(f"/v1/runners/{a['id']}/env_variables")
    assert body["env_variables"] == [a_env]


# -- other statuses: 405, unknown routes, 413 ----------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("PUT", "/v1/runners"),
        ("DELETE", "/v1/runners"),
        ("PATCH", "/v1/runners"),
        ("PUT", "/v1/runners/{rid}"),
        ("POST", "/v1/runners/{rid}"),
        ("DELETE", "/v1/runners/{rid}/runs"),
        ("PUT", "/v1/runners/{rid}/env_variables"),
        ("GET", "/v1/runners/{rid}/env_variables/{eid}"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_on_a_known_route_is_405(
    api: Api, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    runner = await api.create_runner(env_variables=[{"env_key": "A", "env_val": "1"}])
    status, body = await api.get(f"/v1/runners/{runner['id']}/env_variables")
    eid = body["env_variables"][0]["id"]
    url = api.url + path.format(rid=runner["id"], eid=eid)
    status, headers, body = await raw(http, method, url, key=api.key, data="{}")
    assert_status_error(status, as_json(body), 405)
    assert "Allow" in headers, headers
    status, body = await api.get(f"/v1/runners/{runner['id']}")
    assert body["runner"] == runner


@pytest.mark.parametrize(
    "path",
    [
        "/v1",
        "/v1/",
        "/v1/nope",
        "/v1/runner",
        "/v1/runners/{rid}/nope",
        "/v1/runners/{rid}/runs/{rid}/x/y",
    ],
)
async def test_unknown_path_under_v1_is_404_json(api: Api, path: str) -> None:
    runner = await api.create_runner()
    status, body = await api.get(path.format(rid=runner["id"]))
    assert (status, body) == (404, NOT_FOUND), path


@pytest.mark.parametrize("route", ["runners", "runs", "env", "patch"])
async def test_body_over_one_mib_is_413(api: Api, http: aiohttp.ClientSession, route: str) -> None:
    runner = await api.create_runner(run_command="true")
    rid = runner["id"]
    method, path = {
        "runners": ("POST", "/v1/runners"),
        "runs": ("POST", f"/v1/runners/{rid}/runs"),
        "env": ("POST", f"/v1/runners/{rid}/env_variables"),
        "patch": ("PATCH", f"/v1/runners/{rid}"),
    }[route]
    payload = b'{"pad": "' + b"x" * MIB + b'"}'
    status, _, body = await raw(http, method, api.url + path, key=api.key, data=payload)
    assert_status_error(status, as_json(body), 413)
    assert await run_ids(api, rid) == []


async def test_body_of_exactly_one_mib_is_not_413(api: Api, http: aiohttp.ClientSession) -> None:
    body = runner_body()
    payload = json.dumps(body).encode()
    payload += b" " * (MIB - len(payload))
    assert len(payload) == MIB
    status, _, data = await raw(http, "POST", api.url + "/v1/runners", key=api.key, data=payload)
    assert status == 200, data[:300]
    assert as_json(data)["runner"]["name"] == body["name"]


# -- time format ------------------------------------------------------------------------


async def check_all_times(api: Api, offset: str | None) -> None:
    """Every time field of every resource: the format, and the given UTC offset."""
    runner = await api.create_runner(
        run_command="echo hi", env_variables=[{"env_key": "A", "env_val": "1"}]
    )
    rid = runner["id"]
    run = await api.trigger(rid)
    assert run["started_at"] is None and run["completed_at"] is None
    done = await api.wait_done(rid, run["id"])
    assert done["status"] == "succeeded", done
    status, envs = await api.get(f"/v1/runners/{rid}/env_variables")
    status, listed_runs = await api.get(f"/v1/runners/{rid}/runs")
    status, listed_runners = await api.get("/v1/runners")
    values: dict[str, Any] = {}
    for f in RUNNER_TIME_FIELDS:
        values[f"runner.{f}"] = runner[f]
        for r in listed_runners["runners"]:
            values[f"runners[{r['id']}].{f}"] = r[f]
    for f in RUN_TIME_FIELDS:
        values[f"done.{f}"] = done[f]
        values[f"listed_run.{f}"] = listed_runs["runs"][0][f]
    for f in ("created_at", "updated_at"):
        values[f"trigger.{f}"] = run[f]
        values[f"env.{f}"] = envs["env_variables"][0][f]
    now = datetime.now(UTC)
    for where, value in values.items():
        moment = assert_time(value, where)
        if offset is not None:
            assert value.endswith(offset), f"{where} = {value}"
        if where.startswith(("runner.", "done.", "env.", "trigger.")):
            assert abs(moment - now) < timedelta(minutes=2), f"{where} = {value}"
    created = datetime.fromisoformat(done["created_at"])
    started = datetime.fromisoformat(done["started_at"])
    completed = datetime.fromisoformat(done["completed_at"])
    assert created <= started <= completed, done


async def test_every_time_field_has_milliseconds_and_utc_offset(api: Api) -> None:
    await check_all_times(api, offset=None)


@pytest.mark.parametrize("zone,offset", [("Asia/Kolkata", "+05:30"), ("UTC", "+00:00")])
async def test_configured_timezone_sets_the_offset_of_every_time(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, zone: str, offset: str
) -> None:
    d = await start_daemon(top_level=f'timezone = "{zone}"')
    await check_all_times(Api(http, d.url, d.key), offset=offset)


# -- hostile input never gives a 5xx ----------------------------------------------------


async def test_sql_looking_strings_are_stored_verbatim(api: Api) -> None:
    name = "x'; DROP TABLE runners; --"
    status, body = await api.post(
        "/v1/runners",
        runner_body(
            name=name,
            run_command="echo '\"; DELETE FROM runs; --",
            env_variables=[{"env_key": "Q", "env_val": "' OR '1'='1"}],
        ),
    )
    assert status == 200, body
    runner = body["runner"]
    assert runner["name"] == name
    assert runner["run_command"] == "echo '\"; DELETE FROM runs; --"
    status, body = await api.get(f"/v1/runners/{runner['id']}")
    assert (status, body) == (200, {"runner": runner})
    assert name in await runner_names(api)
    status, body = await api.get(f"/v1/runners/{runner['id']}/env_variables")
    assert body["env_variables"][0]["env_val"] == "' OR '1'='1"
    status, body = await api.post(
        f"/v1/runners/{runner['id']}/env_variables",
        {"env_key": "R", "env_val": '"); DROP TABLE x; --'},
    )
    assert status == 200 and body["env_variable"]["env_val"] == '"); DROP TABLE x; --'


@pytest.mark.parametrize(
    "case",
    [
        "runner.name",
        "runner.run_command",
        "runner.entrypoint",
        "runner.argv",
        "runner.env_val",
        "env.env_val",
        "env.patch_env_val",
        "patch.name",
        "trigger.env_val",
    ],
)
async def test_lone_surrogate_in_a_string_is_400_or_stored_never_5xx(api: Api, case: str) -> None:
    """JSON may carry a lone UTF-16 surrogate (`"\\ud800"`), which no UTF-8 store can hold."""
    bad = "ab\ud800cd"
    runner = await api.create_runner(
        run_command="true", env_variables=[{"env_key": "E", "env_val": "1"}]
    )
    rid = runner["id"]
    status, envs = await api.get(f"/v1/runners/{rid}/env_variables")
    env_id = envs["env_variables"][0]["id"]
    method, path, payload, field = {
        "runner.name": ("POST", "/v1/runners", runner_body(name=bad), "name"),
        "runner.run_command": ("POST", "/v1/runners", runner_body(run_command=bad), "run_command"),
        "runner.entrypoint": ("POST", "/v1/runners", runner_body(entrypoint=bad), "entrypoint"),
        "runner.argv": ("POST", "/v1/runners", runner_body(argv=[bad]), "argv"),
        "runner.env_val": (
            "POST",
            "/v1/runners",
            runner_body(env_variables=[{"env_key": "A", "env_val": bad}]),
            "env_val",
        ),
        "env.env_val": (
            "POST",
            f"/v1/runners/{rid}/env_variables",
            {"env_key": "B", "env_val": bad},
            "env_val",
        ),
        "env.patch_env_val": (
            "PATCH",
            f"/v1/runners/{rid}/env_variables/{env_id}",
            {"env_val": bad},
            "env_val",
        ),
        "patch.name": ("PATCH", f"/v1/runners/{rid}", {"name": bad}, "name"),
        "trigger.env_val": (
            "POST",
            f"/v1/runners/{rid}/runs",
            {"env_variables": [{"env_key": "A", "env_val": bad}]},
            "env_val",
        ),
    }[case]
    status, body = await api.request(method, path, json_body=payload)
    assert status < 500, (status, body)
    assert status in (200, 400), (status, body)
    if status == 400:
        assert_errors_name(status, body, field)
    # the daemon still answers normally
    status, body = await api.get(f"/v1/runners/{rid}")
    assert status == 200, body


@pytest.mark.parametrize("target", ["runner", "trigger", "env"])
async def test_number_with_thousands_of_digits_in_a_body_is_400_not_500(
    api: Api, http: aiohttp.ClientSession, target: str
) -> None:
    """Python's json refuses integers over 4300 digits with a plain ValueError."""
    runner = await api.create_runner(run_command="true")
    big = "9" * 5000
    path, payload = {
        "runner": (
            "/v1/runners",
            f'{{"name": "{uniq()}", "image_name": "busybox", "timeout_seconds": {big}}}',
        ),
        "trigger": (
            f"/v1/runners/{runner['id']}/runs",
            f'{{"env_variables": [{{"env_key": "A", "env_val": {big}}}]}}',
        ),
        "env": (
            f"/v1/runners/{runner['id']}/env_variables",
            f'{{"env_key": "A", "env_val": {big}}}',
        ),
    }[target]
    status, _, body = await raw(http, "POST", api.url + path, key=api.key, data=payload)
    assert status == 400, (status, body[:300])
    assert as_json(body)["errors"]
    assert await run_ids(api, runner["id"]) == []
