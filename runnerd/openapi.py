"""The API's machine-readable description: an OpenAPI 3.1 document, served at
`GET /v1/openapi.json`.

The component schemas come from the models of `contract` (which also validate
requests), so the document and the checks cannot drift apart; this module adds only
what models cannot say: paths, parameters, auth and error responses.
tests/integration/test_openapi.py keeps the rest true by running schemathesis
against a live daemon.
"""

from __future__ import annotations

import copy
from typing import Any

from . import __version__, contract

JSON = "application/json"


# -- small helpers ------------------------------------------------------------------


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(
    schema: dict[str, Any], *, required: bool = True, description: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"required": required, "content": {JSON: {"schema": schema}}}
    if description:
        body["description"] = description
    return body


def ok(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref(schema_name)}}}


def errors(*codes: int) -> dict[str, Any]:
    """References to the shared error responses; 500 is always possible."""
    return {
        str(code): {"$ref": f"#/components/responses/{ERROR_RESPONSES[code][0]}"}
        for code in sorted({*codes, 500})
    }


def param(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/parameters/{name}"}


def query(
    name: str, schema: dict[str, Any], description: str, *, default: object = None
) -> dict[str, Any]:
    """An optional query parameter. Its default is said in words, never as the schema's
    `default`: generated clients send a schema default on every call, and the logs
    endpoint rejects parameters its chosen form does not take (`limit` in text mode,
    `follow` in JSON mode), so a client would fail unless the caller knew to unset
    them. Absent, the server applies the same default."""
    if "default" in schema:
        raise ValueError(f"query parameter {name}: say the default with default=, not in schema")
    if default is not None:
        shown = str(default).lower() if isinstance(default, bool) else default
        description = f"{description} Default: `{shown}`."
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def operation(
    op_id: str,
    tag: str,
    summary: str,
    responses: dict[str, Any],
    *,
    description: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    op["responses"] = responses
    if security is not None:
        op["security"] = security
    return op


# -- error shapes -------------------------------------------------------------------

# code → (component response name, reason text, when)
ERROR_RESPONSES: dict[int, tuple[str, str, str]] = {
    400: (
        "BadRequest",
        "Bad Request",
        "The request is invalid: not JSON, wrong types, values out of range, unknown "
        "fields or query parameters. `errors` lists every problem found, each as "
        "`field: message`.",
    ),
    401: ("Unauthorized", "Unauthorized", "No API key, or an unknown or revoked one."),
    403: ("Forbidden", "Forbidden", "A `read` key on anything but GET (and HEAD)."),
    404: (
        "NotFound",
        "Not Found",
        "No such runner, run, env variable or container registry (a malformed id is a 404 too).",
    ),
    405: (
        "MethodNotAllowed",
        "Method Not Allowed",
        "A method the path does not take; the `Allow` header lists the ones it does.",
    ),
    409: (
        "Conflict",
        "Conflict",
        "Deleting a runner that has pending or running runs; canceling a run that "
        "ended otherwise than canceled.",
    ),
    413: (
        "PayloadTooLarge",
        "Request Entity Too Large",
        "The body is over `[server] max_body_bytes` (default 1 MiB).",
    ),
    415: (
        "UnsupportedMediaType",
        "Unsupported Media Type",
        "A non-empty body whose `Content-Type` is not JSON (`application/json`, "
        "`text/json` or `…+json`; no `Content-Type` at all is read as JSON).",
    ),
    500: (
        "InternalServerError",
        "Internal Server Error",
        "An unexpected failure (a bug). The traceback goes to the daemon's log, never "
        "into the response.",
    ),
    503: (
        "ServiceUnavailable",
        "Service Unavailable",
        "The Docker engine does not answer, or the run is between the store and the "
        "engine (starting, or being re-attached after a restart), or (live logs: `follow` "
        "or `text/event-stream`) `[server] max_log_followers` streams are open already: "
        "nothing was changed, retry shortly (after `Retry-After` seconds when given). "
        "`error` says which, e.g. `Run Is Starting, Retry Cancel`.",
    ),
}


def _error_response(code: int) -> dict[str, Any]:
    _, reason, when = ERROR_RESPONSES[code]
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
    if code == 405:
        response["headers"] = {
            "Allow": {"description": "The methods the path takes.", "schema": {"type": "string"}}
        }
    if code == 503:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying (sent by the log follower cap).",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return response


# -- schemas ------------------------------------------------------------------------

UUID = {"type": "string", "format": "uuid"}

# What a model cannot say: a `text/event-stream` schema describes each event.
LOG_EVENT = {
    "description": "One Server-Sent Event of the stream (as OpenAPI 3.1 reads a "
    "`text/event-stream` schema: each event). Per line of output an "
    "`event: log` whose `id` is the entry's cursor (send it back as "
    "`Last-Event-ID` to resume) and whose `data` is JSON "
    "`{ts, stream, msg}`; last, once the run has completed and all its "
    "output is out, an `event: end` whose `data` is the Run as JSON.",
    "oneOf": [
        {
            "type": "object",
            "required": ["event", "id", "data"],
            "properties": {
                "event": {"const": "log"},
                "id": {"type": "string"},
                "data": {
                    "type": "string",
                    "contentMediaType": JSON,
                    "contentSchema": ref("LogLine"),
                },
            },
        },
        {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"const": "end"},
                "data": {"type": "string", "contentMediaType": JSON, "contentSchema": ref("Run")},
            },
        },
    ],
}

# Built once: the document is served often and pydantic's schema building is not free.
COMPONENT_SCHEMAS: dict[str, Any] = {**contract.component_schemas(), "LogEvent": LOG_EVENT}

PARAMETERS: dict[str, Any] = {
    "RunnerId": {
        "name": "runner_id",
        "in": "path",
        "required": True,
        "schema": UUID,
        "description": "A runner's id.",
    },
    "RunId": {
        "name": "run_id",
        "in": "path",
        "required": True,
        "schema": UUID,
        "description": "A run's id; the run must belong to the runner.",
    },
    "EnvId": {
        "name": "env_id",
        "in": "path",
        "required": True,
        "schema": UUID,
        "description": "An env variable's id; it must belong to the runner.",
    },
    "RegistryId": {
        "name": "registry_id",
        "in": "path",
        "required": True,
        "schema": UUID,
        "description": "A container registry's id.",
    },
}

SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key made with `runnerd keys create --name NAME [--scope "
        "full|read]`, sent as `Authorization: Bearer <key>`. The bare key "
        "(`Authorization: <key>`) is accepted too. A `read` key may only GET "
        "(and HEAD); anything else is a 403.",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`[server] metrics_token` of the daemon's config, as "
        "`Authorization: Bearer <token>`; needed only when it is set.",
    },
}


# -- operations ---------------------------------------------------------------------

RUNNERS = "runners"
ENV = "env variables"
RUNS = "runs"
REGISTRIES = "container registries"
OPS = "operations"

LOGS_DESCRIPTION = (
    "The run's output, chosen by `Accept`:\n\n"
    "- default (`text/plain`, or anything without `application/json` or "
    "`text/event-stream`): the bytes exactly as the container wrote them, stdout and stderr "
    "in the order the engine received them; query `tail` (the last N lines) and `follow` "
    "(`true`: stream as the container writes, chunked, ending when the run completes). "
    "Without `follow`, what has been written so far (empty while pending).\n"
    "- `application/json` (and not `text/plain`): a page of entries "
    '`{"logs": [{id, ts, stream, msg}]}`; query `limit` (default '
    f"{contract.LOGS_LIMIT_DEFAULT}, max {contract.LOGS_LIMIT_MAX}), `after` or `before` "
    "(an entry's `id`: the page after or before it; not both), `stream` (`stdout` or "
    "`stderr`).\n"
    "- `text/event-stream`: Server-Sent Events, live: one `event: log` per line (`id` = the "
    "entry's cursor, `data` = JSON `{ts, stream, msg}`), then `event: end` whose `data` is "
    "the final Run. `Last-Event-ID` resumes after that entry, without gaps or repeats; query "
    "`stream` filters.\n\n"
    "Query parameters that the chosen form does not take are a 400, as are cursors that are "
    "not entry ids of this run's log."
)


def _paths() -> dict[str, Any]:
    runner_id, run_id, env_id = param("RunnerId"), param("RunId"), param("EnvId")
    return {
        "/healthz": {
            "get": operation(
                "getHealth",
                OPS,
                "Whether the daemon and its Docker engine answer",
                {
                    "200": ok("Health", "The Docker engine answers."),
                    "503": {
                        "description": "The Docker engine does not answer, or the scheduler "
                        "is not claiming runs.",
                        "content": {JSON: {"schema": ref("HealthUnavailable")}},
                    },
                    **errors(),
                },
                description="No key needed.",
                security=[],
            )
        },
        "/metrics": {
            "get": operation(
                "getMetrics",
                OPS,
                "Prometheus metrics",
                {
                    "200": {
                        "description": "The metrics in Prometheus' text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **errors(401),
                },
                description="Runs by final status and failure_reason, runs pending and running, "
                "run duration and queue wait histograms, image pulls, Docker API "
                "errors, HTTP requests by route and status with latency. Needs "
                "`[server] metrics_token` as a bearer token when that is set, "
                "else no key.",
                security=[{}, {"metricsToken": []}],
            )
        },
        "/v1/openapi.json": {
            "get": operation(
                "getOpenApi",
                OPS,
                "This document",
                {
                    "200": {
                        "description": "The OpenAPI 3.1 document of this API.",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["openapi", "info", "paths"],
                                }
                            }
                        },
                    },
                    **errors(),
                },
                description="No key needed.",
                security=[],
            )
        },
        "/v1/runners": {
            "get": operation(
                "listRunners",
                RUNNERS,
                "List runners, oldest first",
                {"200": ok("RunnerList", "All runners."), **errors(401)},
            ),
            "post": operation(
                "createRunner",
                RUNNERS,
                "Create a runner",
                {"200": ok("RunnerResponse", "The new runner."), **errors(400, 401, 403, 413, 415)},
                body=json_body(ref("RunnerCreate")),
            ),
        },
        "/v1/runners/{runner_id}": {
            "parameters": [runner_id],
            "get": operation(
                "getRunner",
                RUNNERS,
                "Show a runner",
                {"200": ok("RunnerResponse", "The runner."), **errors(401, 404)},
            ),
            "patch": operation(
                "updateRunner",
                RUNNERS,
                "Change a runner",
                {
                    "200": ok("RunnerResponse", "The runner as it is now."),
                    **errors(400, 401, 403, 404, 413, 415),
                },
                description="Runs already triggered keep what they were triggered with.",
                body=json_body(ref("RunnerUpdate"), required=False),
            ),
            "delete": operation(
                "deleteRunner",
                RUNNERS,
                "Delete a runner",
                {
                    "200": ok("Deleted", "Deleted, with its env variables, runs and logs."),
                    **errors(401, 403, 404, 409),
                },
                description="409 while it has pending or running runs.",
            ),
        },
        "/v1/runners/{runner_id}/warm": {
            "parameters": [runner_id],
            "post": operation(
                "warmRunner",
                RUNNERS,
                "Pull the runner's image now",
                {
                    "200": ok("RunnerResponse", "Pulled; `warmed_at` is set."),
                    **errors(400, 401, 403, 404, 503),
                },
                description="Pulls whatever the pull policy; 400 with the registry's answer "
                "when the pull fails.",
            ),
        },
        "/v1/container_registries": {
            "get": operation(
                "listContainerRegistries",
                REGISTRIES,
                "List container registries",
                {"200": ok("ContainerRegistryList", "All registries."), **errors(401)},
            ),
            "post": operation(
                "createContainerRegistry",
                REGISTRIES,
                "Add a container registry",
                {
                    "200": ok("ContainerRegistryResponse", "The new registry."),
                    **errors(400, 401, 403, 413, 415),
                },
                body=json_body(ref("ContainerRegistryCreate")),
            ),
        },
        "/v1/container_registries/{registry_id}": {
            "parameters": [param("RegistryId")],
            "get": operation(
                "getContainerRegistry",
                REGISTRIES,
                "Show a container registry",
                {"200": ok("ContainerRegistryResponse", "The registry."), **errors(401, 404)},
            ),
            "patch": operation(
                "updateContainerRegistry",
                REGISTRIES,
                "Change a container registry",
                {
                    "200": ok("ContainerRegistryResponse", "The registry as it is now."),
                    **errors(400, 401, 403, 404, 413, 415),
                },
                body=json_body(ref("ContainerRegistryUpdate")),
            ),
            "delete": operation(
                "deleteContainerRegistry",
                REGISTRIES,
                "Delete a container registry",
                {"200": ok("Deleted", "Deleted."), **errors(401, 403, 404, 409)},
                description="409 while a runner uses it.",
            ),
        },
        "/v1/runners/{runner_id}/env_variables": {
            "parameters": [runner_id],
            "get": operation(
                "listEnvVariables",
                ENV,
                "List a runner's env variables, by key",
                {"200": ok("EnvVariableList", "The runner's env variables."), **errors(401, 404)},
            ),
            "post": operation(
                "createEnvVariable",
                ENV,
                "Add an env variable to a runner",
                {
                    "200": ok("EnvVariableResponse", "The new env variable."),
                    **errors(400, 401, 403, 404, 413, 415),
                },
                body=json_body(ref("EnvVariableCreate")),
            ),
        },
        "/v1/runners/{runner_id}/env_variables/{env_id}": {
            "parameters": [runner_id, env_id],
            "patch": operation(
                "updateEnvVariable",
                ENV,
                "Change an env variable",
                {
                    "200": ok("EnvVariableResponse", "The env variable as it is now."),
                    **errors(400, 401, 403, 404, 413, 415),
                },
                body=json_body(ref("EnvVariableUpdate")),
            ),
            "delete": operation(
                "deleteEnvVariable",
                ENV,
                "Delete an env variable",
                {"200": ok("Deleted", "Deleted."), **errors(401, 403, 404)},
            ),
        },
        "/v1/runners/{runner_id}/runs": {
            "parameters": [runner_id],
            "get": operation(
                "listRuns",
                RUNS,
                "List a runner's runs, newest first",
                {"200": ok("RunList", "A page of runs."), **errors(400, 401, 404)},
                description="Unknown query parameters are a 400.",
                parameters=[
                    query(
                        "limit",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": contract.RUNS_LIMIT_MAX,
                        },
                        "How many runs at most.",
                        default=contract.RUNS_LIMIT_DEFAULT,
                    ),
                    query("status", ref("RunStatus"), "Only runs in this status."),
                    query(
                        "before",
                        UUID,
                        "Only runs queued before this run, which must be "
                        "one of this runner's: pass the last id of a page "
                        "to get the next page.",
                    ),
                ],
            ),
            "post": operation(
                "triggerRun",
                RUNS,
                "Trigger a run",
                {
                    "200": ok(
                        "RunResponse",
                        "The run, `pending`: it is queued and runs "
                        "asynchronously. With an `Idempotency-Key` already "
                        "used for this runner, the first run as it is now.",
                    ),
                    **errors(400, 401, 403, 404, 413, 415),
                },
                description="The run's environment is the runner's env variables, then the "
                "body's overrides on top. A runner whose instance type is no "
                "longer configured is a 400.",
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": contract.IDEMPOTENCY_KEY_MAX,
                            "pattern": "^[!-~]+$",
                        },
                        "description": "Visible ASCII, no spaces. The same key for the same "
                        "runner within 24 hours returns the first run instead "
                        "of queueing another, also under concurrent requests.",
                    }
                ],
                body=json_body(ref("TriggerRequest"), required=False),
            ),
        },
        "/v1/runners/{runner_id}/runs/{run_id}": {
            "parameters": [runner_id, run_id],
            "get": operation(
                "getRun",
                RUNS,
                "Show a run",
                {"200": ok("RunResponse", "The run."), **errors(401, 404)},
            ),
        },
        "/v1/runners/{runner_id}/runs/{run_id}/logs": {
            "parameters": [runner_id, run_id],
            "get": operation(
                "getRunLogs",
                RUNS,
                "A run's output: text, live text, JSON pages or SSE",
                {
                    "200": {
                        "description": "The output, in the form `Accept` asked for.",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            JSON: {"schema": ref("LogPage")},
                            "text/event-stream": {"schema": ref("LogEvent")},
                        },
                    },
                    **errors(400, 401, 404, 503),
                },
                description=LOGS_DESCRIPTION,
                parameters=[
                    query(
                        "tail",
                        {"type": "integer", "minimum": 0, "maximum": contract.TAIL_MAX},
                        "text/plain: only the last N lines.",
                    ),
                    query(
                        "follow",
                        {"type": "boolean"},
                        "text/plain: stream the output live until the run completes.",
                        default=False,
                    ),
                    query(
                        "limit",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": contract.LOGS_LIMIT_MAX,
                        },
                        "application/json: entries per page.",
                        default=contract.LOGS_LIMIT_DEFAULT,
                    ),
                    query(
                        "after",
                        {"type": "string"},
                        "application/json: the page after this entry (an opaque cursor: "
                        "an entry's `id`).",
                    ),
                    query(
                        "before",
                        {"type": "string"},
                        "application/json: the page before this entry (an entry's `id`).",
                    ),
                    query(
                        "stream",
                        {"type": "string", "enum": list(contract.LOG_STREAMS)},
                        "application/json, text/event-stream: only this stream.",
                    ),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "text/event-stream: resume after this entry.",
                    },
                ],
            ),
        },
        "/v1/runners/{runner_id}/runs/{run_id}/cancel": {
            "parameters": [runner_id, run_id],
            "post": operation(
                "cancelRun",
                RUNS,
                "Cancel a run",
                {
                    "200": ok(
                        "RunResponse",
                        "The run, `failed`/`canceled` (a running run "
                        "whose container takes longer than "
                        "`stop_grace_seconds` + 15 s to stop: as it is "
                        "then).",
                    ),
                    **errors(401, 403, 404, 409, 503),
                },
                description="Pending: ends `failed`/`canceled` at once and never starts. "
                "Running: the container is stopped (SIGTERM, then SIGKILL after "
                "`stop_grace_seconds`), then the run ends `failed`/`canceled` "
                "with the exit code it ended with. Already canceled: 200 again, "
                "unchanged. Ended otherwise: 409. 503 when the Docker engine does "
                "not answer or the run is between the store and the engine: "
                "nothing changed, retry. No body.",
            ),
        },
    }


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
            {"name": REGISTRIES, "description": "Private registries images are pulled from."},
            {"name": OPS, "description": "Health, metrics and this document."},
        ],
        "paths": _paths(),
        "components": {
            "schemas": copy.deepcopy(COMPONENT_SCHEMAS),
            "parameters": copy.deepcopy(PARAMETERS),
            "responses": {
                name: _error_response(code) for code, (name, _, _) in ERROR_RESPONSES.items()
            },
            "securitySchemes": copy.deepcopy(SECURITY_SCHEMES),
        },
    }
