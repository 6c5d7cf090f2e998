"""A client generated from the served OpenAPI document works (issue 11).

Once for the module, `openapi-python-client` generates a client from what a real
daemon serves at GET /v1/openapi.json, as a new user would, with `--fail-on-warning`:
a response it cannot model (the old `allOf: [Error, {status: {const: N}}]`) or any
other part it would silently leave out fails the generation. Every operation of the
document is then driven through that client, with `raise_on_unexpected_status`, so a
status the document does not list is a failure too. Success and error bodies parse
into the generated models: 400 into `ValidationErrors`, every other error into
`Error`.

An httpx hook records each request's operation; the last test asserts that every
operation of the document was called (so a new endpoint without a call here fails).
Run it with the rest of the module: alone it reports every operation as not driven.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from conftest import TEST_IMAGE_NAME, TEST_IMAGE_TAG, Daemon, EngineUnderTest, write_config
from helpers_engine import engine_api
from registry import REPOSITORY, TAG, Registry

pytestmark = pytest.mark.docker_only(
    "the generated client speaks the API, which is the same on every engine"
)

PACKAGE = "runnerd_generated_client"
GENERATE_DEADLINE = 120.0  # seconds; it takes about 2 on an idle machine
RUN_DEADLINE = 60.0
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MIB = 1024 * 1024
# A pull refused at once (nothing listens on port 1): warm answers 400 quickly.
UNPULLABLE_IMAGE = "localhost:1/runnerd-generated-client/absent"
# One live log stream at most, so the follower cap's 503 is reachable.
CONFIG = '[server]\nlisten = "127.0.0.1:0"\nmax_log_followers = 1\n'


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, docker_engine: str) -> Iterator[Daemon]:
    """One runnerd for the module (conftest's is per test), with one log follower."""
    d = tmp_path_factory.mktemp("generated-client")
    config_path = d / "config.toml"
    write_config(config_path, d / "data", CONFIG)
    daemon = Daemon(dir=d, config_path=config_path, extra_config=CONFIG)
    daemon.key = daemon.create_key("test")
    daemon.start()
    yield daemon
    try:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
    finally:
        daemon.remove_containers()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, docker_engine: str) -> Iterator[Registry]:
    """A registry on loopback holding the test image, for a warm-up that pulls."""
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        reg.push_test_image()
        yield reg
    finally:
        reg.stop()
        engine_api.remove_image(reg.image_ref)


@pytest.fixture(scope="module")
def served(daemon: Daemon) -> dict[str, Any]:
    response = requests.get(f"{daemon.url}/v1/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="module")
def gen(
    tmp_path_factory: pytest.TempPathFactory, served: dict[str, Any]
) -> Iterator[types.ModuleType]:
    """The generated package, imported."""
    root = tmp_path_factory.mktemp("generated")
    path = root / "openapi.json"
    path.write_text(json.dumps(served))
    bin_dir = str(Path(sys.executable).parent)  # its post-hooks run the venv's ruff
    started = time.monotonic()
    done = subprocess.run(
        [
            os.path.join(bin_dir, "openapi-python-client"),
            "generate",
            "--path",
            str(path),
            "--output-path",
            str(root / PACKAGE),
            "--meta",
            "none",
            "--fail-on-warning",
        ],
        env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=GENERATE_DEADLINE,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, f"generation failed:\n{done.stdout}\n{done.stderr}"
    assert took < GENERATE_DEADLINE, f"generation took {took:.1f} s"
    sys.path.insert(0, str(root))
    try:
        package = importlib.import_module(PACKAGE)
        importlib.import_module(f"{PACKAGE}.models")  # now `package.models`
        yield package
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


# -- the client, and what it called -----------------------------------------------------


class Called:
    """(METHOD, documented path) → the statuses it answered, from an httpx hook."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.paths = list(document["paths"])
        self.statuses: dict[tuple[str, str], set[int]] = {}

    def template(self, path: str) -> str:
        parts = path.split("/")
        for candidate in self.paths:
            pattern = candidate.split("/")
            if len(pattern) == len(parts) and all(
                p == q or (p.startswith("{") and p.endswith("}"))
                for p, q in zip(pattern, parts, strict=True)
            ):
                return candidate
        raise AssertionError(f"the client called {path}, which is not in the document")

    def record(self, response: httpx.Response) -> None:
        key = (response.request.method, self.template(response.request.url.path))
        self.statuses.setdefault(key, set()).add(response.status_code)


# What the client called, per engine, for the whole session: under xdist a worker may
# run another module's test between two of this one's, which ends this module's
# fixtures (the daemon, the document) and makes them again.
_CALLED: dict[str, Called] = {}


@pytest.fixture(scope="module")
def called(served: dict[str, Any], engine_under_test: EngineUnderTest) -> Called:
    return _CALLED.setdefault(engine_under_test.name, Called(served))


Client = Callable[..., Any]


@pytest.fixture
def client(gen: types.ModuleType, daemon: Daemon, called: Called) -> Iterator[Client]:
    """`client(key=…, accept=…, content_type=…)`: a fresh generated client (its
    `with_headers` would change a shared httpx client), closed at the end;
    `key=None` for one without a key."""
    made: list[Any] = []

    def make(
        key: str | None = daemon.key, accept: str | None = None, content_type: str | None = None
    ) -> Any:
        def on_request(request: httpx.Request) -> None:
            if content_type is not None:  # the generated code always says JSON
                request.headers["Content-Type"] = content_type

        common: dict[str, Any] = {
            "base_url": daemon.url,
            "headers": {"Accept": accept} if accept else {},
            "raise_on_unexpected_status": True,
            "timeout": httpx.Timeout(30.0),
            "httpx_args": {"event_hooks": {"request": [on_request], "response": [called.record]}},
        }
        c = gen.Client(**common) if key is None else gen.AuthenticatedClient(token=key, **common)
        made.append(c)
        return c

    yield make
    for c in made:
        c.get_httpx_client().close()


def op(gen: types.ModuleType, tag: str, name: str) -> Any:
    """The generated module of one operation, e.g. op(gen, "runners", "create_runner")."""
    return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")


def uniq(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_runner(gen: types.ModuleType, c: Any, **fields: Any) -> Any:
    m = gen.models
    given = {"name": uniq(), "image_name": TEST_IMAGE_NAME, "image_tag": TEST_IMAGE_TAG, **fields}
    body = m.RunnerCreate(**given)
    r = op(gen, "runners", "create_runner").sync_detailed(client=c, body=body)
    assert r.status_code == 200, r.content
    assert isinstance(r.parsed, m.RunnerResponse)
    return r.parsed.runner


def trigger(gen: types.ModuleType, c: Any, runner_id: Any, **kw: Any) -> Any:
    r = op(gen, "runs", "trigger_run").sync_detailed(runner_id, client=c, **kw)
    assert r.status_code == 200, r.content
    assert isinstance(r.parsed, gen.models.RunResponse)
    return r.parsed.run


def wait_run(
    gen: types.ModuleType, c: Any, runner_id: Any, run_id: Any, statuses: tuple[str, ...]
) -> Any:
    deadline = time.monotonic() + RUN_DEADLINE
    while True:
        r = op(gen, "runs", "get_run").sync_detailed(runner_id, run_id, client=c)
        assert r.status_code == 200, r.content
        assert isinstance(r.parsed, gen.models.RunResponse)
        if r.parsed.run.status.value in statuses:
            return r.parsed.run
        assert time.monotonic() < deadline, f"run {run_id} never reached {statuses}"
        time.sleep(0.05)


def error(gen: types.ModuleType, r: Any, status: int) -> Any:
    """A non-400 error: the status, parsed into the generated `Error`."""
    assert r.status_code == status, (r.status_code, r.content)
    assert isinstance(r.parsed, gen.models.Error), r.parsed
    assert r.parsed.status == status
    assert r.parsed.error
    return r.parsed


def invalid(gen: types.ModuleType, r: Any, field: str) -> list[str]:
    """A 400, parsed into the generated `ValidationErrors`, one error naming `field`."""
    assert r.status_code == 400, (r.status_code, r.content)
    assert isinstance(r.parsed, gen.models.ValidationErrors), r.parsed
    assert any(field in e for e in r.parsed.errors), r.parsed.errors
    errors: list[str] = r.parsed.errors
    return errors


# -- the operations ----------------------------------------------------------------------


def test_runners_are_created_listed_shown_changed_and_deleted(
    gen: types.ModuleType, client: Client
) -> None:
    m, c = gen.models, client()
    runner = make_runner(
        gen,
        c,
        run_command="echo hi",
        timeout_seconds=120,
        env_variables=[m.EnvVariableInput(env_key="A", env_val="1")],
    )
    assert isinstance(runner, m.Runner) and runner.timeout_seconds == 120

    listed = op(gen, "runners", "list_runners").sync_detailed(client=c)
    assert isinstance(listed.parsed, m.RunnerList)
    assert runner.id in {r.id for r in listed.parsed.runners}
    shown = op(gen, "runners", "get_runner").sync_detailed(runner.id, client=c)
    assert isinstance(shown.parsed, m.RunnerResponse) and shown.parsed.runner.name == runner.name

    # Only the named field changes: the update model sends no defaults of its own.
    new_name = uniq()
    changed = op(gen, "runners", "update_runner").sync_detailed(
        runner.id, client=c, body=m.RunnerUpdate(name=new_name)
    )
    assert isinstance(changed.parsed, m.RunnerResponse), changed.content
    after = changed.parsed.runner
    assert after.name == new_name
    assert (after.timeout_seconds, after.image_tag, after.run_command) == (
        120,
        TEST_IMAGE_TAG,
        "echo hi",
    )
    env = op(gen, "env_variables", "list_env_variables").sync_detailed(runner.id, client=c)
    assert isinstance(env.parsed, m.EnvVariableList)
    assert [(e.env_key, e.env_val) for e in env.parsed.env_variables] == [("A", "1")]

    deleted = op(gen, "runners", "delete_runner").sync_detailed(runner.id, client=c)
    assert isinstance(deleted.parsed, m.Deleted) and deleted.parsed.deleted is True
    gone = op(gen, "runners", "get_runner").sync_detailed(runner.id, client=c)
    error(gen, gone, 404)


def test_env_variables_are_added_listed_changed_and_deleted(
    gen: types.ModuleType, client: Client
) -> None:
    m, c = gen.models, client()
    runner = make_runner(gen, c)
    envs = op(gen, "env_variables", "create_env_variable")
    made = envs.sync_detailed(runner.id, client=c, body=m.EnvVariableCreate("KEY", "one"))
    assert isinstance(made.parsed, m.EnvVariableResponse), made.content
    env = made.parsed.env_variable
    assert (env.env_key, env.env_val) == ("KEY", "one")

    again = envs.sync_detailed(runner.id, client=c, body=m.EnvVariableCreate("KEY", "two"))
    invalid(gen, again, "env_key")

    update = op(gen, "env_variables", "update_env_variable")
    changed = update.sync_detailed(
        runner.id, env.id, client=c, body=m.EnvVariableUpdate(env_val="two")
    )
    assert isinstance(changed.parsed, m.EnvVariableResponse), changed.content
    assert (changed.parsed.env_variable.env_key, changed.parsed.env_variable.env_val) == (
        "KEY",
        "two",
    )
    listed = op(gen, "env_variables", "list_env_variables").sync_detailed(runner.id, client=c)
    assert isinstance(listed.parsed, m.EnvVariableList)
    assert [e.id for e in listed.parsed.env_variables] == [env.id]

    delete = op(gen, "env_variables", "delete_env_variable")
    deleted = delete.sync_detailed(runner.id, env.id, client=c)
    assert isinstance(deleted.parsed, m.Deleted), deleted.content
    error(gen, delete.sync_detailed(runner.id, env.id, client=c), 404)


def test_container_registries_are_added_listed_changed_and_deleted(
    gen: types.ModuleType, client: Client
) -> None:
    m, c = gen.models, client()
    registries = "container_registries"
    made = op(gen, registries, "create_container_registry").sync_detailed(
        client=c,
        body=m.ContainerRegistryCreate(
            name=uniq("reg"), host="registry.invalid:5000", username="u", password="secret-pw"
        ),
    )
    assert isinstance(made.parsed, m.ContainerRegistryResponse), made.content
    registry = made.parsed.container_registry
    assert "secret-pw" not in made.content.decode()

    listed = op(gen, registries, "list_container_registries").sync_detailed(client=c)
    assert isinstance(listed.parsed, m.ContainerRegistryList)
    assert registry.id in {r.id for r in listed.parsed.container_registries}
    shown = op(gen, registries, "get_container_registry").sync_detailed(registry.id, client=c)
    assert isinstance(shown.parsed, m.ContainerRegistryResponse)
    update = op(gen, registries, "update_container_registry")
    new_name = uniq("reg")
    changed = update.sync_detailed(
        registry.id, client=c, body=m.ContainerRegistryUpdate(name=new_name)
    )
    assert isinstance(changed.parsed, m.ContainerRegistryResponse), changed.content
    assert changed.parsed.container_registry.name == new_name
    # The stored password never goes to another user: changing it needs the password.
    alone = update.sync_detailed(
        registry.id, client=c, body=m.ContainerRegistryUpdate(username="v")
    )
    invalid(gen, alone, "password")

    delete = op(gen, registries, "delete_container_registry")
    runner = make_runner(gen, c, container_registry_id=str(registry.id))
    error(gen, delete.sync_detailed(registry.id, client=c), 409)  # a runner uses it
    op(gen, "runners", "delete_runner").sync_detailed(runner.id, client=c)
    deleted = delete.sync_detailed(registry.id, client=c)
    assert isinstance(deleted.parsed, m.Deleted), deleted.content


def test_a_generated_clients_run_at_and_timeout_seconds_are_taken_as_sent(
    gen: types.ModuleType, client: Client
) -> None:
    """`run_at` is a `date-time` in the document: the generated client sends a
    datetime as Python writes it (microseconds, `+00:00`), and gets it back as one."""
    m, c = gen.models, client()
    runner = make_runner(gen, c, run_command="true")
    at = datetime.now(UTC).replace(microsecond=123456) + timedelta(hours=1)
    body = m.TriggerRequest(run_at=at, timeout_seconds=5)
    run = trigger(gen, c, runner.id, body=body)
    assert run.status.value == "pending" and run.timeout_seconds == 5
    assert run.not_before == at.replace(microsecond=123000)  # milliseconds are kept
    cancel = op(gen, "runs", "cancel_run").sync_detailed(runner.id, run.id, client=c)
    assert cancel.status_code == 200, cancel.content
    too_far = m.TriggerRequest(run_at=at + timedelta(days=400))
    invalid(
        gen,
        op(gen, "runs", "trigger_run").sync_detailed(runner.id, client=c, body=too_far),
        "run_at",
    )


def test_schedules_are_added_listed_changed_paused_and_deleted(
    gen: types.ModuleType, client: Client
) -> None:
    m, c = gen.models, client()
    runner = make_runner(gen, c)
    made = op(gen, "schedules", "create_schedule").sync_detailed(
        runner.id,
        client=c,
        body=m.ScheduleCreate(
            cron="0 3 * * *",
            timezone="Europe/Berlin",
            env_variables=[m.EnvVariableInput(env_key="A", env_val="1")],
            concurrency_policy=m.ScheduleCreateConcurrencyPolicy("forbid"),
        ),
    )
    assert isinstance(made.parsed, m.ScheduleResponse), made.content
    schedule = made.parsed.schedule
    assert schedule.concurrency_policy == m.ConcurrencyPolicy.FORBID
    assert [(e.env_key, e.env_val) for e in schedule.env_variables] == [("A", "1")]
    assert schedule.next_run_at is not None and schedule.last_run_at is None

    listed = op(gen, "schedules", "list_schedules").sync_detailed(runner.id, client=c)
    assert isinstance(listed.parsed, m.ScheduleList)
    assert [s.id for s in listed.parsed.schedules] == [schedule.id]
    shown = op(gen, "schedules", "get_schedule").sync_detailed(runner.id, schedule.id, client=c)
    assert (
        isinstance(shown.parsed, m.ScheduleResponse) and shown.parsed.schedule.cron == "0 3 * * *"
    )
    # Only the named field changes: the update model sends no defaults of its own.
    paused = op(gen, "schedules", "update_schedule").sync_detailed(
        runner.id, schedule.id, client=c, body=m.ScheduleUpdate(enabled=False)
    )
    assert isinstance(paused.parsed, m.ScheduleResponse), paused.content
    after = paused.parsed.schedule
    assert after.enabled is False and after.next_run_at is None
    assert (after.cron, after.timezone) == ("0 3 * * *", "Europe/Berlin")
    bad = op(gen, "schedules", "create_schedule").sync_detailed(
        runner.id, client=c, body=m.ScheduleCreate(cron="61 * * * *")
    )
    invalid(gen, bad, "cron")

    delete = op(gen, "schedules", "delete_schedule")
    deleted = delete.sync_detailed(runner.id, schedule.id, client=c)
    assert isinstance(deleted.parsed, m.Deleted), deleted.content
    error(gen, delete.sync_detailed(runner.id, schedule.id, client=c), 404)
    op(gen, "runners", "delete_runner").sync_detailed(runner.id, client=c)


def test_a_run_is_triggered_listed_shown_and_its_logs_read_in_every_form(
    gen: types.ModuleType, client: Client
) -> None:
    m, c = gen.models, client()
    runner = make_runner(gen, c, run_command='echo "out $GREETING"; echo err >&2')
    overrides = m.TriggerRequest(env_variables=[m.EnvVariableInput("GREETING", "hello")])
    run = trigger(gen, c, runner.id, body=overrides, idempotency_key=uniq("key"))
    run = wait_run(gen, c, runner.id, run.id, ("succeeded", "failed"))
    assert run.status.value == "succeeded", run.error

    runs = op(gen, "runs", "list_runs")
    listed = runs.sync_detailed(runner.id, client=c)  # no `limit` sent: the server's default
    assert isinstance(listed.parsed, m.RunList)
    assert [r.id for r in listed.parsed.runs] == [run.id]
    only = runs.sync_detailed(runner.id, client=c, limit=1, status=m.RunStatus.SUCCEEDED)
    assert isinstance(only.parsed, m.RunList) and len(only.parsed.runs) == 1
    invalid(gen, runs.sync_detailed(runner.id, client=c, before=uuid.uuid4()), "before")

    logs = op(gen, "runs", "get_run_logs")
    # Text, with nothing but what the caller gave: no JSON-only parameter rides along.
    text = logs.sync_detailed(runner.id, run.id, client=c)
    assert text.status_code == 200, text.content
    # stdout and stderr in the order the engine got them: either may come first.
    assert sorted(text.parsed.splitlines(keepends=True)) == ["err\n", "out hello\n"]
    tail = logs.sync_detailed(runner.id, run.id, client=c, tail=1)
    assert tail.status_code == 200 and tail.parsed.count("\n") == 1, tail.content
    followed = logs.sync_detailed(runner.id, run.id, client=c, follow=True)
    assert followed.status_code == 200 and followed.content == text.content
    # The form decides what a parameter means: `limit` is JSON's, so text says 400.
    invalid(gen, logs.sync_detailed(runner.id, run.id, client=c, limit=5), "limit")

    # JSON pages, again with nothing the text form would reject (`follow`).
    as_json = client(accept="application/json")
    page = logs.sync_detailed(runner.id, run.id, client=as_json)
    assert page.status_code == 200, page.content
    entries = m.LogPage.from_dict(json.loads(page.content)).logs
    assert sorted(e.msg for e in entries) == ["err", "out hello"]
    first = logs.sync_detailed(runner.id, run.id, client=as_json, limit=1)
    (head,) = m.LogPage.from_dict(json.loads(first.content)).logs
    rest = logs.sync_detailed(runner.id, run.id, client=as_json, after=head.id)
    assert [e.msg for e in m.LogPage.from_dict(json.loads(rest.content)).logs] == [
        e.msg for e in entries[1:]
    ]
    stderr = logs.sync_detailed(runner.id, run.id, client=as_json, stream=m.GetRunLogsStream.STDERR)
    assert [e.msg for e in m.LogPage.from_dict(json.loads(stderr.content)).logs] == ["err"]

    # Server-Sent Events: a completed run's stream ends, so a plain call reads it all.
    sse = logs.sync_detailed(runner.id, run.id, client=client(accept="text/event-stream"))
    assert sse.status_code == 200, sse.content
    events = [
        dict(line.split(": ", 1) for line in e.splitlines()) for e in sse.parsed.split("\n\n")
    ]
    events = [e for e in events if e]
    assert [e["event"] for e in events] == ["log", "log", "end"], events
    lines = [m.LogLine.from_dict(json.loads(e["data"])) for e in events[:-1]]
    assert sorted(line.msg for line in lines) == ["err", "out hello"]
    final = m.Run.from_dict(json.loads(events[-1]["data"]))
    assert final.id == run.id and final.status.value == "succeeded"
    resumed = logs.sync_detailed(
        runner.id,
        run.id,
        client=client(accept="text/event-stream"),
        last_event_id=events[0]["id"],
    )
    assert resumed.parsed.count("event: log") == 1, resumed.content

    again = trigger(gen, c, runner.id, idempotency_key="same")
    assert trigger(gen, c, runner.id, idempotency_key="same").id == again.id
    wait_run(gen, c, runner.id, again.id, ("succeeded", "failed"))


def test_a_running_run_is_canceled_and_live_logs_past_the_cap_answer_503(
    gen: types.ModuleType, client: Client, daemon: Daemon
) -> None:
    m, c = gen.models, client()
    runner = make_runner(gen, c, argv=["sleep", "30"])
    run = trigger(gen, c, runner.id)
    wait_run(gen, c, runner.id, run.id, ("running",))
    error(gen, op(gen, "runners", "delete_runner").sync_detailed(runner.id, client=c), 409)

    logs = op(gen, "runs", "get_run_logs")
    url = f"{daemon.url}/v1/runners/{runner.id}/runs/{run.id}/logs?follow=true"
    # The one follower the config allows: headers are out once the stream is open.
    with requests.get(
        url, headers={"Authorization": f"Bearer {daemon.key}"}, stream=True, timeout=30
    ) as held:
        assert held.status_code == 200
        refused = logs.sync_detailed(runner.id, run.id, client=client(accept="text/event-stream"))
        assert "max_log_followers" in error(gen, refused, 503).error
        assert refused.headers["Retry-After"].isdigit()
        error(gen, logs.sync_detailed(runner.id, run.id, client=c, follow=True), 503)

    cancel = op(gen, "runs", "cancel_run")
    canceled = cancel.sync_detailed(runner.id, run.id, client=c)
    assert isinstance(canceled.parsed, m.RunResponse), canceled.content
    assert (canceled.parsed.run.status.value, canceled.parsed.run.failure_reason) == (
        "failed",
        "canceled",
    )
    again = cancel.sync_detailed(runner.id, run.id, client=c)  # canceled already: as before
    assert isinstance(again.parsed, m.RunResponse) and again.parsed.run.id == run.id

    done = make_runner(gen, c, run_command="true")
    finished = trigger(gen, c, done.id)
    wait_run(gen, c, done.id, finished.id, ("succeeded",))
    error(gen, cancel.sync_detailed(done.id, finished.id, client=c), 409)


def test_warm_pulls_from_a_registry_and_answers_a_failed_pull_as_400(
    gen: types.ModuleType, client: Client, registry: Registry
) -> None:
    m, c = gen.models, client()
    warm = op(gen, "runners", "warm_runner")
    made = op(gen, "container_registries", "create_container_registry").sync_detailed(
        client=c,
        body=m.ContainerRegistryCreate(
            name=uniq("reg"),
            host=registry.host,
            username=registry.username,
            password=registry.password,
        ),
    )
    assert isinstance(made.parsed, m.ContainerRegistryResponse), made.content
    private = make_runner(
        gen,
        c,
        image_name=REPOSITORY,
        image_tag=TAG,
        container_registry_id=str(made.parsed.container_registry.id),
    )
    assert private.warmed_at is None
    registry.remove_local()
    warmed = warm.sync_detailed(private.id, client=c)
    assert isinstance(warmed.parsed, m.RunnerResponse), warmed.content
    assert warmed.parsed.runner.warmed_at is not None
    assert registry.has_local(registry.image_ref)

    unpullable = make_runner(gen, c, image_name=UNPULLABLE_IMAGE)
    invalid(gen, warm.sync_detailed(unpullable.id, client=c), "image_name")
    error(gen, warm.sync_detailed(uuid.uuid4(), client=c), 404)


def test_health_metrics_and_the_document_are_read_without_a_key(
    gen: types.ModuleType, client: Client, served: dict[str, Any]
) -> None:
    m, c, anonymous = gen.models, client(), client(key=None)
    health = op(gen, "operations", "get_health").sync_detailed(client=anonymous)
    assert isinstance(health.parsed, m.Health), health.content
    assert health.parsed.status == "ok"
    assert isinstance(health.parsed.queue, m.QueueDepth)

    metrics = op(gen, "operations", "get_metrics").sync_detailed(client=c)
    assert metrics.status_code == 200 and "runnerd_" in metrics.parsed

    document = op(gen, "operations", "get_open_api").sync_detailed(client=anonymous)
    assert document.status_code == 200
    assert json.loads(document.content) == served
    assert isinstance(document.parsed, m.GetOpenApiResponse200)


def test_error_responses_parse_into_their_models(
    gen: types.ModuleType, client: Client, daemon: Daemon
) -> None:
    m = gen.models
    create = op(gen, "runners", "create_runner")
    body = m.RunnerCreate(name=uniq(), image_name=TEST_IMAGE_NAME)

    # 400: every problem, each naming its field.
    bad = m.RunnerCreate(name="", image_name=TEST_IMAGE_NAME, timeout_seconds=0)
    errors = invalid(gen, create.sync_detailed(client=client(), body=bad), "timeout_seconds")
    assert any("name" in e and "timeout_seconds" not in e for e in errors), errors

    error(gen, create.sync_detailed(client=client(key="not-a-key"), body=body), 401)
    read_only = client(key=daemon.create_key(uniq("reader"), scope="read"))
    error(gen, create.sync_detailed(client=read_only, body=body), 403)
    listed = op(gen, "runners", "list_runners").sync_detailed(client=read_only)
    assert isinstance(listed.parsed, m.RunnerList)  # a read key reads

    runner = make_runner(gen, client())
    error(
        gen, op(gen, "runs", "get_run").sync_detailed(runner.id, uuid.uuid4(), client=client()), 404
    )

    envs = op(gen, "env_variables", "create_env_variable")
    huge = m.EnvVariableCreate("BIG", "x" * (MIB + 1024))  # over [server] max_body_bytes
    error(gen, envs.sync_detailed(runner.id, client=client(), body=huge), 413)
    small = m.EnvVariableCreate("SMALL", "x")
    error(
        gen,
        envs.sync_detailed(runner.id, client=client(content_type="text/plain"), body=small),
        415,
    )


def test_no_query_parameter_has_a_default_that_a_client_would_send(
    served: dict[str, Any],
) -> None:
    """Generated clients send a schema's `default` on every call; the logs endpoint
    rejects the parameters of another form, so defaults are said in words only."""
    with_default = [
        f"{method.upper()} {path} ?{p['name']}"
        for path, item in served["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
        for p in operation.get("parameters", [])
        if p.get("in") == "query" and "default" in p["schema"]
    ]
    assert with_default == []


def test_every_documented_operation_was_driven_through_the_generated_client(
    called: Called, served: dict[str, Any]
) -> None:
    documented = {
        (method.upper(), path)
        for path, item in served["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert sorted(documented - set(called.statuses)) == [], "operations no test here called"
    # Every error the document lists for an operation, reached here, parsed; the
    # statuses seen, for the record when this fails.
    seen = {status for statuses in called.statuses.values() for status in statuses}
    assert {400, 401, 403, 404, 409, 413, 415, 503} <= seen, sorted(seen)
