"""The API's machine-readable description: an OpenAPI 3.1 document, served at
`GET /v1/openapi.json`.

The component schemas come from the models of `contract` (which also validate
requests), and the query parameters and headers from `contract.queries`' declarations
(which also check them), so the document and the checks cannot drift apart; this
module adds only what neither says: paths, path ids, auth and error responses. Each
operation is one row of `PATHS`; `_operation` turns a row into OpenAPI.
tests/integration/test_openapi.py keeps the rest true by running schemathesis
against a live daemon, and checks that every route of `make_app` is documented.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from . import __version__, contract

JSON = "application/json"
UUID = {"type": "string", "format": "uuid"}
TEXT = {"text/plain": {"schema": {"type": "string"}}}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


# -- error shapes -------------------------------------------------------------------

# code → (component response name, when); the reason is the one aiohttp sends.
# fmt: off
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is invalid: not JSON, wrong types, values out of range, "
          "unknown fields or query parameters. `errors` lists every problem found, each as "
          "`field: message`."),
    401: ("Unauthorized", "No API key, or an unknown or revoked one."),
    403: ("Forbidden", "A `read` key on anything but GET (and HEAD)."),
    404: ("NotFound", "No such runner, run, env variable, schedule or container registry (a "
          "malformed id is a 404 too)."),
    405: ("MethodNotAllowed",
          "A method the path does not take; the `Allow` header lists the ones it does."),
    409: ("Conflict", "Deleting a runner that has pending or running runs; canceling a run that "
          "ended otherwise than canceled (and has no pending retry)."),
    413: ("PayloadTooLarge", "The body is over `[server] max_body_bytes` (default 1 MiB)."),
    415: ("UnsupportedMediaType", "A non-empty body whose `Content-Type` is not JSON "
          "(`application/json`, `text/json` or `…+json`; no `Content-Type` at all is read as "
          "JSON)."),
    500: ("InternalServerError", "An unexpected failure (a bug). The traceback goes to the "
          "daemon's log, never into the response."),
    503: ("ServiceUnavailable", "The Docker engine does not answer, or the run is between the "
          "store and the engine (starting, or being re-attached after a restart), or (live "
          "logs: `follow` or `text/event-stream`) `[server] max_log_followers` streams are open "
          "already: nothing was changed, retry shortly (after `Retry-After` seconds when "
          "given). `error` says which, e.g. `Run Is Starting, Retry Cancel`."),
}
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    405: {"Allow": {"description": "The methods the path takes.", "schema": {"type": "string"}}},
    503: {"Retry-After": {
        "description": "Seconds to wait before retrying (sent by the log follower cap).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }},
}
# fmt: on


def _error_response(code: int) -> dict[str, Any]:
    reason, when = HTTPStatus(code).phrase, ERROR_RESPONSES[code][1]
    if code == 400:
        schema = ref("ValidationErrors")
        example: dict[str, Any] = {
            "errors": ["timeout_seconds: must be between 1 and 86400, got 0"]
        }
    else:
        # A plain reference, the status in words: generators (openapi-python-client)
        # cannot merge `allOf: [Error, {status: {const: N}}]` and drop the response.
        schema = ref("Error")
        example = {"status": code, "error": reason}
    response: dict[str, Any] = {
        "description": f"{code} {reason}: {when}" if code != 400 else when,
        "content": {JSON: {"schema": schema, "example": example}},
    }
    if code in ERROR_HEADERS:
        response["headers"] = ERROR_HEADERS[code]
    return response


# -- schemas, path parameters, security --------------------------------------------------


# Built once: the document is served often and pydantic's schema building is not free.
COMPONENT_SCHEMAS: dict[str, Any] = contract.component_schemas()

# A path's `{name}` → its description; the component is the name in CamelCase.
PATH_IDS = {
    "runner_id": "A runner's id.",
    "run_id": "A run's id; the run must belong to the runner.",
    "env_id": "An env variable's id; it must belong to the runner.",
    "registry_id": "A container registry's id.",
    "schedule_id": "A schedule's id; it must belong to the runner.",
}


def _camel(name: str) -> str:
    return "".join(word.capitalize() for word in name.split("_"))


PARAMETERS: dict[str, Any] = {
    _camel(name): {"name": name, "in": "path", "required": True, "schema": UUID, "description": d}
    for name, d in PATH_IDS.items()
}

SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key made with `runnerd keys create --name NAME [--scope "
        "full|read]`, sent as `Authorization: Bearer <key>`. The bare key (`Authorization: "
        "<key>`) is accepted too. A `read` key may only GET (and HEAD); anything else is a 403.",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`[server] metrics_token` of the daemon's config, as "
        "`Authorization: Bearer <token>`; needed only when it is set.",
    },
}
PUBLIC: tuple[dict[str, list[str]], ...] = ()  # no key needed


# -- operations ---------------------------------------------------------------------

RUNNERS, ENV, RUNS, SCHEDULES = "runners", "env variables", "runs", "schedules"
REGISTRIES, OPS = "container registries", "operations"


@dataclass(frozen=True)
class Op:
    """One operation. Its error responses follow from what it takes: 401 unless public,
    403 (a `read` key) unless a GET, 404 with an id in the path, 400/413/415 with a body,
    400 with query parameters, 500 always; `also` adds the rest."""

    op_id: str
    summary: str
    ok: str  # the 200 response's description
    schema: str | Mapping[str, Any]  # the 200's model, or its content by media type
    description: str | None = None
    body: str | None = None  # the request body's model
    body_required: bool = True
    params: tuple[contract.Param, ...] = ()  # query parameters and headers
    also: tuple[int, ...] = ()
    responses: Mapping[str, Any] | None = None  # besides the 200 and the errors
    security: tuple[dict[str, list[str]], ...] | None = None  # None: the document's


def _tag(path: str) -> str:
    """The resource the path is under."""
    under = {
        "/runs": RUNS,
        "/env_variables": ENV,
        "/schedules": SCHEDULES,
        "/container_registries": REGISTRIES,
    }
    return next(
        (tag for part, tag in under.items() if part in path),
        RUNNERS if "/v1/runners" in path else OPS,
    )


def _operation(method: str, path: str, op: Op) -> dict[str, Any]:
    content = {JSON: {"schema": ref(op.schema)}} if isinstance(op.schema, str) else op.schema
    codes = {500, *op.also}
    if op.security != PUBLIC:
        codes |= {401} if method == "get" else {401, 403}
    if "{" in path:
        codes.add(404)
    if op.body:
        codes |= {400, 413, 415}
    if any(p.where == "query" for p in op.params):
        codes.add(400)
    errors = {
        str(c): {"$ref": f"#/components/responses/{ERROR_RESPONSES[c][0]}"} for c in sorted(codes)
    }
    out: dict[str, Any] = {"operationId": op.op_id, "tags": [_tag(path)], "summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.params:
        out["parameters"] = [p.openapi() for p in op.params]
    if op.body:
        schema = {"schema": ref(op.body)}
        out["requestBody"] = {"required": op.body_required, "content": {JSON: schema}}
    out["responses"] = {
        "200": {"description": op.ok, "content": content},
        **(op.responses or {}),
        **errors,
    }
    if op.security is not None:
        out["security"] = list(op.security)
    return out


HEALTH_503 = {
    "503": {
        "description": "The Docker engine does not answer, or the scheduler is not claiming runs.",
        "content": {JSON: {"schema": ref("HealthUnavailable")}},
    }
}
OPENAPI_200 = {JSON: {"schema": {"type": "object", "required": ["openapi", "info", "paths"]}}}
LOGS_200 = {
    **TEXT,
    JSON: {"schema": ref("LogPage")},
    "text/event-stream": {"schema": ref("LogEvent")},
}
# Tables, laid out by hand (ruff would give every argument a line of its own).
# path → method → Op(operationId, summary, 200's description, 200's model, description, ...);
# the order is the document's.
# fmt: off
PATHS: dict[str, dict[str, Op]] = {
    "/healthz": {
        "get": Op("getHealth", "Whether the daemon and its Docker engine answer",
                  "The Docker engine answers.", "Health", "No key needed.",
                  responses=HEALTH_503, security=PUBLIC),
    },
    "/metrics": {
        "get": Op("getMetrics", "Prometheus metrics",
                  "The metrics in Prometheus' text exposition format.", TEXT,
                  "Runs by final status and failure_reason, runs pending and running, run "
                  "duration and queue wait histograms, image pulls, Docker API errors, HTTP "
                  "requests by route and status with latency. Needs `[server] metrics_token` as "
                  "a bearer token when that is set, else no key.",
                  security=({}, {"metricsToken": []})),
    },
    "/v1/openapi.json": {
        "get": Op("getOpenApi", "This document", "The OpenAPI 3.1 document of this API.",
                  OPENAPI_200, "No key needed.", security=PUBLIC),
    },
    "/v1/runners": {
        "get": Op("listRunners", "List runners, oldest first", "All runners.", "RunnerList"),
        "post": Op("createRunner", "Create a runner", "The new runner.", "RunnerResponse",
                   body="RunnerCreate"),
    },
    "/v1/runners/{runner_id}": {
        "get": Op("getRunner", "Show a runner", "The runner.", "RunnerResponse"),
        "patch": Op("updateRunner", "Change a runner", "The runner as it is now.", "RunnerResponse",
                    "Runs already triggered keep what they were triggered with.",
                    body="RunnerUpdate", body_required=False),
        "delete": Op("deleteRunner", "Delete a runner",
                     "Deleted, with its env variables, schedules, runs and logs.", "Deleted",
                     "409 while it has pending or running runs.", also=(409,)),
    },
    "/v1/runners/{runner_id}/warm": {
        "post": Op("warmRunner", "Pull the runner's image now", "Pulled; `warmed_at` is set.",
                   "RunnerResponse", "Pulls whatever the pull policy; 400 with the registry's "
                   "answer when the pull fails.", also=(400, 503)),
    },
    "/v1/container_registries": {
        "get": Op("listContainerRegistries", "List container registries", "All registries.",
                  "ContainerRegistryList"),
        "post": Op("createContainerRegistry", "Add a container registry", "The new registry.",
                   "ContainerRegistryResponse", body="ContainerRegistryCreate"),
    },
    "/v1/container_registries/{registry_id}": {
        "get": Op("getContainerRegistry", "Show a container registry", "The registry.",
                  "ContainerRegistryResponse"),
        "patch": Op("updateContainerRegistry", "Change a container registry",
                    "The registry as it is now.", "ContainerRegistryResponse",
                    body="ContainerRegistryUpdate"),
        "delete": Op("deleteContainerRegistry", "Delete a container registry", "Deleted.",
                     "Deleted", "409 while a runner uses it.", also=(409,)),
    },
    "/v1/runners/{runner_id}/env_variables": {
        "get": Op("listEnvVariables", "List a runner's env variables, by key",
                  "The runner's env variables.", "EnvVariableList"),
        "post": Op("createEnvVariable", "Add an env variable to a runner", "The new env variable.",
                   "EnvVariableResponse", body="EnvVariableCreate"),
    },
    "/v1/runners/{runner_id}/env_variables/{env_id}": {
        "patch": Op("updateEnvVariable", "Change an env variable", "The env variable as it is now.",
                    "EnvVariableResponse", body="EnvVariableUpdate"),
        "delete": Op("deleteEnvVariable", "Delete an env variable", "Deleted.", "Deleted"),
    },
    "/v1/runners/{runner_id}/runs": {
        "get": Op("listRuns", "List a runner's runs, newest first", "A page of runs.", "RunList",
                  "Unknown query parameters are a 400.", params=contract.RUN_LIST_QUERY),
        "post": Op("triggerRun", "Trigger a run",
                   "The run, `pending`: it is queued and runs asynchronously. With an "
                   "`Idempotency-Key` already used for this runner, the first run as it is now.",
                   "RunResponse",
                   "The run's environment is the runner's env variables, then the body's "
                   "overrides on top. With `run_at` the run stays `pending` until then "
                   "(`not_before`); `timeout_seconds` replaces the runner's for this run. A "
                   "runner whose instance type is no longer configured is a 400.",
                   body="TriggerRequest", body_required=False,
                   params=(contract.IDEMPOTENCY_KEY,)),
    },
    "/v1/runners/{runner_id}/schedules": {
        "get": Op("listSchedules", "List a runner's schedules, oldest first",
                  "The runner's schedules.", "ScheduleList"),
        "post": Op("createSchedule", "Add a schedule to a runner", "The new schedule.",
                   "ScheduleResponse",
                   "`timezone` defaults to the daemon's. When enabled, `next_run_at` is the "
                   "first slot after now (`@every` counts from now).", body="ScheduleCreate"),
    },
    "/v1/runners/{runner_id}/schedules/{schedule_id}": {
        "get": Op("getSchedule", "Show a schedule", "The schedule.", "ScheduleResponse"),
        "patch": Op("updateSchedule", "Change, pause or resume a schedule",
                    "The schedule as it is now.", "ScheduleResponse",
                    "Only what is given changes. A change of `cron`, `timezone` or `enabled` "
                    "computes `next_run_at` again from now: slots that passed while it was "
                    "paused are neither fired nor counted as missed.",
                    body="ScheduleUpdate"),
        "delete": Op("deleteSchedule", "Delete a schedule",
                     "Deleted; it fires no more. Its runs stay.", "Deleted"),
    },
    "/v1/runners/{runner_id}/runs/{run_id}": {
        "get": Op("getRun", "Show a run", "The run.", "RunResponse"),
    },
    "/v1/runners/{runner_id}/runs/{run_id}/logs": {
        "get": Op("getRunLogs", "A run's output: text, live text, JSON pages or SSE",
                  "The output, in the form `Accept` asked for.", LOGS_200,
                  contract.LOGS_DESCRIPTION, params=contract.LOGS_QUERY, also=(503,)),
    },
    "/v1/runners/{runner_id}/runs/{run_id}/cancel": {
        "post": Op("cancelRun", "Cancel a run",
                   "The run, `failed`/`canceled` (a running run whose container takes longer "
                   "than `stop_grace_seconds` + 15 s to stop: as it is then).", "RunResponse",
                   "Pending: ends `failed`/`canceled` at once and never starts. Running: the "
                   "container is stopped (SIGTERM, then SIGKILL after `stop_grace_seconds`), then "
                   "the run ends `failed`/`canceled` with the exit code it ended with; either "
                   "way it is never retried. Failed, with a retry still pending (its latest "
                   "attempt, following `retry_of`): that retry is canceled, and the answer is "
                   "this run, unchanged. Already canceled (or its retry): 200 again, unchanged. "
                   "Ended otherwise: 409. 503 when the Docker "
                   "engine does not answer or the run is between the store and the engine: "
                   "nothing changed, retry. No body.", also=(409, 503)),
    },
}
# fmt: on


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, ops in PATHS.items():
        ids = [
            {"$ref": f"#/components/parameters/{_camel(n)}"} for n in re.findall(r"{(\w+)}", path)
        ]
        item: dict[str, Any] = {"parameters": ids} if ids else {}
        paths[path] = item | {method: _operation(method, path, op) for method, op in ops.items()}
    return paths


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document; a fresh dict on every call."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runnerd",
            "version": __version__,
            "summary": "Runners (container job definitions) and runs (their executions on a "
            "Docker engine) over REST.",
            "description": (
                "All endpoints but `/healthz`, `/metrics` and `/v1/openapi.json` need an API "
                "key. Bodies are JSON (`Content-Type: application/json`). Ids are UUIDs; a "
                "malformed id is a 404. Times look like `2026-01-15T10:01:00.000+01:00` "
                "(milliseconds and UTC offset) in the daemon's configured time zone. Integer "
                "fields take JSON integers (`3600.0` is a 400). Every "
                'GET also answers HEAD. Errors: 400 `{"errors": ["…"]}`, every other '
                'error `{"status": <code>, "error": "<reason>"}`; a method a path does '
                "not take is a 405 with an `Allow` header, an unknown path a 404."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/", "description": "The daemon (by default http://127.0.0.1:8420)."}],
        "security": [{"apiKey": []}],
        "tags": [
            {"name": RUNNERS, "description": "Container job definitions."},
            {"name": ENV, "description": "A runner's default env variables."},
            {"name": RUNS, "description": "Executions of a runner, and their output."},
            {"name": SCHEDULES, "description": "When the clock triggers a runner."},
            {"name": REGISTRIES, "description": "Private registries images are pulled from."},
            {"name": OPS, "description": "Health, metrics and this document."},
        ],
        "paths": copy.deepcopy(_paths()),
        "components": {
            "schemas": copy.deepcopy(COMPONENT_SCHEMAS),
            "parameters": copy.deepcopy(PARAMETERS),
            "responses": copy.deepcopy(
                {name: _error_response(code) for code, (name, _) in ERROR_RESPONSES.items()}
            ),
            "securitySchemes": copy.deepcopy(SECURITY_SCHEMES),
        },
    }
