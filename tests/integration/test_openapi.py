"""The OpenAPI document (issue 4) is valid, complete and true.

- It validates as OpenAPI 3.1.
- Every route the aiohttp app registers is in it with that method, and vice versa.
- schemathesis, against a live daemon with the real Docker engine behind it, finds no
  5xx and no response that breaks the document (status code, content type, body).

How the fuzzing is run: one daemon per operation, seeded with real resources (a
runner whose runs finished, one with a run running and one pending, an env
variable), so most requests reach real handlers instead of 404s. The document is
loaded from `openapi.document()`; in the copy schemathesis fuzzes, only the path ids
are narrowed to the seeded ones (plus arbitrary values from negative generation) and
`instance_type` to the built-in slugs. Each operation gets schemathesis' coverage
cases (boundaries, wrong types, missing fields, other methods, bad content types)
and then `MAX_EXAMPLES` Hypothesis-generated cases, positive and negative,
derandomized (about 1,600 requests in all, ~75 s on 2 cores). The logs endpoint is
asked for each representation (text, JSON, SSE), /metrics with and without its
token. All distinct failures of an operation are collected and reported at once,
each with a curl command that reproduces it.

Safety: no request may make the daemon reach the network. Before a runner body is
sent, every value the daemon would accept for `image_name`, `image_tag`,
`run_command`, `argv`, `entrypoint` and `webhook_url` is replaced with a harmless
one (the offline test image, `echo`, a refused loopback port), so no pull of a
random image and no webhook to a random host can happen; values the daemon rejects
are sent as generated. Triggers are capped at `MAX_TRIGGERS` per daemon.
"""

from __future__ import annotations

import copy
import inspect
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from conftest import TEST_IMAGE_NAME, TEST_IMAGE_TAG, Daemon
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import runnerd
from runnerd import api as runnerd_api
from runnerd import contract, openapi
from runnerd.config import BUILTIN_INSTANCE_TYPES, Config
from runnerd.contract.fields import cron_rule

pytestmark = pytest.mark.docker_only(
    "the API's document and its answers are the same on every engine (the engine tests prove Podman)"
)

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 30  # Hypothesis cases per operation, after the coverage cases
MAX_TRIGGER_EXAMPLES = 20  # …for POST …/runs, whose positive cases queue containers
MAX_TRIGGERS = 60  # runs the fuzzing may queue on one daemon, all told
DOC = openapi.document()
REQUEST_TIMEOUT = 30.0
# Webhooks go here: a loopback port where nothing listens, so every delivery is refused.
SAFE_WEBHOOK_URL = "http://127.0.0.1:9/runnerd-openapi-fuzz"
METRICS_TOKEN = "runnerd-openapi-fuzz-metrics-token"
# Webhooks on (so `webhook_url` is accepted), and /metrics behind a token (so its 401 is
# exercised too). `[server]` given here replaces conftest's, hence `listen` again.
DAEMON_CONFIG = (
    '[server]\nlisten = "127.0.0.1:0"\nmetrics_token = "' + METRICS_TOKEN + '"\n\n'
    '[webhooks]\nsecret = "runnerd-openapi-fuzz-secret-0123456789"\n'
)
SEED_COMMAND = 'echo out; echo err >&2; exit "${EXIT_CODE:-0}"'


# -- the document itself ----------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    validate_openapi(doc)  # raises with the first problem
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["version"] == runnerd.__version__
    loaded = schemathesis.openapi.from_dict(openapi.document())
    results = list(loaded.get_all_operations())
    problems = [str(r.err()) for r in results if not isinstance(r, Ok)]
    assert not problems, problems
    assert len(results) == len(documented_operations(doc))


def test_document_is_a_fresh_json_value_each_time() -> None:
    import json

    first = openapi.document()
    first["paths"].clear()
    assert openapi.document()["paths"], "document() must not hand out shared state"
    assert json.loads(json.dumps(openapi.document())) == openapi.document()


def app_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route `make_app` registers; HEAD only where no GET is."""
    params = list(inspect.signature(runnerd_api.make_app).parameters)
    app = runnerd_api.make_app(Config(), *[None] * (len(params) - 1))  # routes only
    routes = {
        (r.method.upper(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None
    }
    return {(m, p) for m, p in routes if not (m == "HEAD" and ("GET", p) in routes)}


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_is_documented_and_every_documented_operation_is_routed() -> None:
    routes = app_routes()
    documented = documented_operations(openapi.document())
    assert sorted(routes - documented) == [], "routes missing from the OpenAPI document"
    assert sorted(documented - routes) == [], "documented operations the app does not route"


def test_document_limits_are_the_ones_enforced() -> None:
    """Spot checks that the numbers came from `contract`, the models enforcing them."""
    s = openapi.document()["components"]["schemas"]
    create = s["RunnerCreate"]["properties"]
    assert (create["name"]["minLength"], create["name"]["maxLength"]) == contract.NAME_LEN
    assert (
        create["timeout_seconds"]["minimum"],
        create["timeout_seconds"]["maximum"],
    ) == contract.TIMEOUT_RANGE
    # nullable fields: `anyOf: [{the value}, {type: null}]`
    assert create["run_command"]["anyOf"][0]["maxLength"] == contract.RUN_COMMAND_MAX
    assert create["max_concurrent_runs"]["anyOf"][0]["maximum"] == contract.RUNNER_MAX_CONCURRENT
    assert create["webhook_url"]["anyOf"][0]["maxLength"] == 2000
    assert s["RunnerCreate"]["additionalProperties"] is False
    assert set(create) == set(contract.RUNNER_FIELDS)
    env_key = s["EnvVariableInput"]["properties"]["env_key"]
    assert env_key["pattern"] == "^[A-Za-z_][A-Za-z0-9_]*$"
    for name in ("A_1", "_x"):
        assert re.search(env_key["pattern"], name)
    for name in ("1A", "A-B", ""):
        assert not re.search(env_key["pattern"], name)
    time_pattern = s["Timestamp"]["pattern"]
    assert re.search(time_pattern, "2026-01-15T10:01:00.000+01:00")
    assert not re.search(time_pattern, "2026-01-15T10:01:00+01:00")
    assert not re.search(time_pattern, "2026-01-15T10:01:00.000Z")


def test_served_document_needs_no_key_and_is_the_module_one(daemon: Daemon) -> None:
    if ("GET", "/v1/openapi.json") not in app_routes():
        pytest.skip("GET /v1/openapi.json is not routed yet (the route test says so too)")
    response = requests.get(f"{daemon.url}/v1/openapi.json", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == openapi.document()


# -- schemathesis against a live daemon ---------------------------------------------


@dataclass
class Seed:
    runners: list[str]
    runs: list[str]
    finished_runs: list[str]
    env_ids: list[str]
    schedule_ids: list[str]
    session: requests.Session
    url: str
    key: str
    triggers: int = 0  # runs the fuzzing queued


def seed(daemon: Daemon) -> Seed:
    """Real resources for the fuzzing to find: runner A (with a webhook to a refused
    loopback port) with a succeeded and a failed run (logs on both streams) and an env
    variable; runner B (no webhook, one run at a time) with a run running `sleep` and
    one pending behind it."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {daemon.key}"

    def call(method: str, path: str, body: Any = None) -> Any:
        response = session.request(method, daemon.url + path, json=body, timeout=REQUEST_TIMEOUT)
        assert response.status_code == 200, (method, path, response.text)
        return response.json()

    base = {"image_name": TEST_IMAGE_NAME, "image_tag": TEST_IMAGE_TAG, "timeout_seconds": 120}
    a = call(
        "POST",
        "/v1/runners",
        {
            **base,
            "name": "openapi-seed-a",
            "webhook_url": SAFE_WEBHOOK_URL,
            "run_command": SEED_COMMAND,
            "env_variables": [{"env_key": "GREETING", "env_val": "hi"}],
        },
    )["runner"]
    b = call(
        "POST",
        "/v1/runners",
        {**base, "name": "openapi-seed-b", "run_command": "sleep 600", "max_concurrent_runs": 1},
    )["runner"]
    a_ok = call("POST", f"/v1/runners/{a['id']}/runs")["run"]
    a_fail = call(
        "POST",
        f"/v1/runners/{a['id']}/runs",
        {"env_variables": [{"env_key": "EXIT_CODE", "env_val": "3"}]},
    )["run"]
    b_running = call("POST", f"/v1/runners/{b['id']}/runs")["run"]
    b_pending = call("POST", f"/v1/runners/{b['id']}/runs")["run"]
    env = call("GET", f"/v1/runners/{a['id']}/env_variables")["env_variables"]
    schedule = call("POST", f"/v1/runners/{a['id']}/schedules", {"cron": "@yearly"})["schedule"]

    def status(runner: dict[str, Any], run: dict[str, Any]) -> str:
        return call("GET", f"/v1/runners/{runner['id']}/runs/{run['id']}")["run"]["status"]

    deadline = time.monotonic() + 60
    while not (
        status(a, a_ok) == "succeeded"
        and status(a, a_fail) == "failed"
        and status(b, b_running) == "running"
    ):
        assert time.monotonic() < deadline, "seed runs did not get going within 60 s"
        time.sleep(0.1)
    assert status(b, b_pending) == "pending"
    return Seed(
        runners=[a["id"], b["id"]],
        runs=[a_ok["id"], a_fail["id"], b_running["id"], b_pending["id"]],
        finished_runs=[a_ok["id"], a_fail["id"]],
        env_ids=[e["id"] for e in env],
        schedule_ids=[schedule["id"]],
        session=session,
        url=daemon.url,
        key=daemon.key,
    )


def fuzzing_document(s: Seed) -> dict[str, Any]:
    """A copy of the document whose path ids are the seeded ones; the logs endpoint
    only gets finished runs (a follower of a running one waits for it to end)."""
    doc = copy.deepcopy(openapi.document())
    params = doc["components"]["parameters"]
    for name, ids in (
        ("RunnerId", s.runners),
        ("RunId", s.runs),
        ("EnvId", s.env_ids),
        ("ScheduleId", s.schedule_ids),
    ):
        params[name]["schema"] = {**params[name]["schema"], "enum": list(ids)}
    logs_item = doc["paths"]["/v1/runners/{runner_id}/runs/{run_id}/logs"]
    logs_item["parameters"] = [
        p
        if p != {"$ref": "#/components/parameters/RunId"}
        else {**params["RunId"], "schema": {**params["RunId"]["schema"], "enum": s.finished_runs}}
        for p in logs_item["parameters"]
    ]
    for body in ("RunnerCreate", "RunnerUpdate"):
        doc["components"]["schemas"][body]["properties"]["instance_type"]["enum"] = sorted(
            BUILTIN_INSTANCE_TYPES
        )
    # Warming pulls from the image's registry whatever the pull policy: for the test
    # image that is Docker Hub, off this machine. Never fuzzed; tested on a loopback
    # registry in test_registries.py.
    del doc["paths"]["/v1/runners/{runner_id}/warm"]
    return doc


def _valid_text(value: Any, max_len: int, min_len: int = 0) -> bool:
    return isinstance(value, str) and min_len <= len(value) <= max_len and "\x00" not in value


def make_harmless(body: Any) -> None:
    """Replace every runner field value the daemon would accept, and that could make it
    pull an image, run something long or call a host, with a harmless one."""
    if not isinstance(body, dict):
        return
    image = body.get("image_name")
    if isinstance(image, str) and contract.IMAGE_NAME.match(image):
        body["image_name"] = TEST_IMAGE_NAME
    tag = body.get("image_tag")
    if isinstance(tag, str) and contract.IMAGE_TAG.match(tag):
        body["image_tag"] = TEST_IMAGE_TAG
    if _valid_text(body.get("run_command"), contract.RUN_COMMAND_MAX, 1):
        body["run_command"] = "echo fuzz"
    argv = body.get("argv")
    if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
        body["argv"] = ["echo", "fuzz"]
    entrypoint = body.get("entrypoint")
    if isinstance(entrypoint, str):
        try:
            shlex.split(entrypoint)
            body["entrypoint"] = ""
        except ValueError:
            pass  # rejected by the daemon as it is
    url = body.get("webhook_url")
    if isinstance(url, str) and re.search(r"(?i)https?:", url):
        body["webhook_url"] = SAFE_WEBHOOK_URL
    # No pull may leave this machine: registries point at a closed loopback port, and
    # `always` (which would pull the test image from Docker Hub) becomes the default.
    host = body.get("host")
    if isinstance(host, str) and contract.REGISTRY_HOST.match(host):
        body["host"] = "127.0.0.1:1"
    if body.get("image_pull_policy") == "always":
        body["image_pull_policy"] = "if_not_present"
    # A schedule the fuzzing makes or changes never fires while the test runs.
    if isinstance(body.get("cron"), str) and cron_rule(body["cron"]) is None:
        body["cron"] = "@yearly"


@dataclass
class Findings:
    label: str
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    distinct: dict[tuple[str, ...], str] = field(default_factory=dict)

    def add(self, key: tuple[str, ...], report: str) -> None:
        self.distinct.setdefault(key, report)

    def report(self) -> str:
        return (
            f"{len(self.distinct)} distinct problem(s) in {self.requests} requests to "
            f"{self.label} (statuses seen: {dict(sorted(self.statuses.items()))}):\n\n"
            + "\n\n".join(self.distinct.values())
        )


def exercise(case: schemathesis.Case, s: Seed, findings: Findings) -> None:
    """Send one case and check the response; the logs endpoint once per representation
    (`Accept`), /metrics with and without its token."""
    op = case.operation
    if op.label in (
        "POST /v1/runners",
        "PATCH /v1/runners/{runner_id}",
        "POST /v1/runners/{runner_id}/schedules",
        "PATCH /v1/runners/{runner_id}/schedules/{schedule_id}",
    ):
        make_harmless(case.body)
    if op.label == "POST /v1/runners/{runner_id}/runs" and s.triggers >= MAX_TRIGGERS:
        return
    method, path = op.label.split(" ", 1)
    security = DOC["paths"][path][method.lower()].get("security", DOC["security"])
    secret = (
        METRICS_TOKEN
        if {"metricsToken": []} in security
        else s.key
        if {"apiKey": []} in security
        else None
    )
    variants: list[dict[str, str]] = [{"Authorization": f"Bearer {secret}"} if secret else {}]
    if op.label == "GET /v1/runners/{runner_id}/runs/{run_id}/logs":
        variants = [
            {**variants[0], "Accept": accept}
            for accept in ("text/plain", "application/json", "text/event-stream")
        ]
    elif op.label == "GET /metrics":
        variants.append({})
    for sent in variants:
        findings.requests += 1
        shown = (
            ", ".join(f"{k}: {'[key]' if k == 'Authorization' else v}" for k, v in sent.items())
            or "no extra headers"
        )
        try:
            response = case.call(base_url=s.url, headers=sent, timeout=REQUEST_TIMEOUT)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL):
            continue  # the client refused to send it: nothing reached the daemon
        except requests.RequestException as e:
            findings.add(
                ("network", type(e).__name__),
                f"[{op.label}; {shown}] request failed: {e!r}\n{case.as_curl_command(sent)}",
            )
            continue
        status = response.status_code
        findings.statuses[status] = findings.statuses.get(status, 0) + 1
        if op.label == "POST /v1/runners/{runner_id}/runs" and status == 200:
            s.triggers += 1
        checks = list(CHECKS)
        if (
            op.label == "POST /v1/runners/{runner_id}/runs/{run_id}/cancel"
            and status == 503
            and "Retry" in response.text
        ):
            # Documented: the run was between the store and the engine; retry.
            checks.remove(not_a_server_error)
        try:
            case.validate_response(response, checks=checks, headers=sent)
        except FailureGroup as group:
            for failure in group.exceptions:
                findings.add(
                    (type(failure).__name__, str(status), failure.title, shown),
                    f"[{op.label}; {shown}] {group}",
                )


def operation_labels() -> list[str]:
    not_fuzzed = {"/v1/runners/{runner_id}/warm"}  # see fuzzing_document
    return [
        f"{m} {p}"
        for m, p in sorted(documented_operations(openapi.document()), key=lambda mp: (mp[1], mp[0]))
        if p not in not_fuzzed
    ]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("label", operation_labels())
def test_schemathesis_finds_no_server_error_and_no_response_off_the_document(
    label: str, start_daemon: Callable[..., Daemon]
) -> None:
    method, path = label.split(" ", 1)
    if (method, path) not in app_routes():
        pytest.skip(f"{label} is not routed yet (the route test says so too)")
    daemon = start_daemon(DAEMON_CONFIG)
    s = seed(daemon)
    schema = schemathesis.openapi.from_dict(fuzzing_document(s))
    schema.config.update(base_url=daemon.url)
    op = schema.find_operation_by_label(label)
    assert op is not None, label
    findings = Findings(label)

    # 1. schemathesis' coverage cases: boundaries, wrong types, missing and extra
    #    fields, other methods, malformed content types. Deterministic.
    generation = schema.config.generation_for(operation=op, phase="coverage")
    for case in schema.iter_coverage_cases(
        op,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=generation,
    ):
        exercise(case, s, findings)

    # 2. Hypothesis-generated cases, valid and invalid, derandomized.
    examples = (
        MAX_TRIGGER_EXAMPLES if label == "POST /v1/runners/{runner_id}/runs" else MAX_EXAMPLES
    )

    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(
        case=st.one_of(
            op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)
        )
    )
    def fuzz(case: schemathesis.Case) -> None:
        exercise(case, s, findings)

    fuzz()

    # No request made the daemon pull an image: every run it made used the test image.
    for runner_id in s.runners:
        response = s.session.get(
            f"{s.url}/v1/runners/{runner_id}/runs?limit=1000", timeout=REQUEST_TIMEOUT
        )
        if response.status_code == 200:
            reasons = {r["failure_reason"] for r in response.json()["runs"]}
            assert "image_pull_failed" not in reasons, response.text
    assert s.triggers <= MAX_TRIGGERS
    print(
        f"{label}: {findings.requests} requests, statuses {dict(sorted(findings.statuses.items()))}"
    )
    assert not findings.distinct, findings.report()
