"""The API's contract, defined once: every request body and resource as a pydantic model.

From these models come request validation (`parse_*`, which raise `Invalid` listing
every problem as `field: message`), the OpenAPI document's component schemas
(`component_schemas()`, used by `openapi`) and the constants the CLI client uses.
Rendering (`*_json`) stays hand-written dicts for speed on the trigger path; a unit
test pins each to its response model's field list.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from .bodies import (
    REGISTRY_FIELDS,
    RUNNER_FIELDS,
    SCHEDULE_FIELDS,
    ContainerRegistryCreate,
    ContainerRegistryUpdate,
    Env,
    EnvList,
    EnvVariableCreate,
    EnvVariableInput,
    EnvVariableUpdate,
    RunnerCreate,
    RunnerUpdate,
    ScheduleCreate,
    ScheduleUpdate,
    TriggerOptions,
    TriggerRequest,
    check_command_exclusive,
    default_timezone,
    merge_env,
    parse_env_variable,
    parse_registry,
    parse_runner,
    parse_schedule,
    parse_trigger,
)
from .fields import (
    ARGV_ITEM_MAX,
    ARGV_MAX_ITEMS,
    CONCURRENCY_POLICIES,
    DEFAULT_TIMEOUT,
    ENTRYPOINT_MAX,
    ENV_KEY,
    ENV_KEY_MAX,
    ENV_MAX_ITEMS,
    ENV_VAL_MAX,
    IDEMPOTENCY_KEY_MAX,
    IMAGE_NAME,
    IMAGE_TAG,
    LOG_STREAM_NAMES,
    LOG_STREAMS,
    LOGS_LIMIT_DEFAULT,
    LOGS_LIMIT_MAX,
    NAME_LEN,
    NO_NUL,
    PULL_POLICIES,
    REGISTRY_HOST,
    RUN_AT_AHEAD_MAX_MS,
    RUN_AT_SKEW_MS,
    RUN_COMMAND_MAX,
    RUNNER_MAX_CONCURRENT,
    RUNS_LIMIT_DEFAULT,
    RUNS_LIMIT_MAX,
    TAIL_MAX,
    TIME_PATTERN,
    TIMEOUT_RANGE,
    TIMESTAMP,
    WEBHOOK_STATUSES,
    WEBHOOK_URL_MAX,
    WEBHOOK_URL_PATTERN,
    EnvKey,
    EnvVal,
    Id,
    Invalid,
    Name,
    PullPolicy,
    Text,
    Timestamp,
    WebhookStatus,
    Whole,
    anchored,
    is_uuid,
)
from .queries import (
    IDEMPOTENCY_KEY,
    LOGS_DESCRIPTION,
    LOGS_QUERY,
    RUN_LIST_QUERY,
    LogsPage,
    Param,
    Query,
    RunListQuery,
    parse_idempotency_key,
    parse_json_logs_query,
    parse_run_list_query,
    parse_sse_logs_query,
    parse_tail,
    parse_text_logs_query,
)
from .resources import (
    ContainerRegistry,
    ContainerRegistryList,
    ContainerRegistryResponse,
    Deleted,
    EngineVersion,
    EnvVariable,
    EnvVariableList,
    EnvVariableResponse,
    Error,
    Health,
    HealthUnavailable,
    InstanceType,
    LogEntry,
    LogLine,
    LogPage,
    LogStream,
    QueueDepth,
    Run,
    RunList,
    Runner,
    RunnerList,
    RunnerResponse,
    RunResponse,
    Schedule,
    ScheduleEnvVariable,
    ScheduleList,
    ScheduleResponse,
    ValidationErrors,
    env_json,
    log_entry_json,
    log_event_schema,
    registry_json,
    run_json,
    runner_json,
    schedule_json,
)

REQUESTS: tuple[type[BaseModel], ...] = (
    RunnerCreate,
    RunnerUpdate,
    EnvVariableInput,
    EnvVariableCreate,
    EnvVariableUpdate,
    TriggerRequest,
    ScheduleCreate,
    ScheduleUpdate,
    ContainerRegistryCreate,
    ContainerRegistryUpdate,
)
RESPONSES: tuple[type[BaseModel], ...] = (
    InstanceType,
    Runner,
    EnvVariable,
    Run,
    Schedule,
    ContainerRegistry,
    LogEntry,
    LogLine,
    LogPage,
    RunnerResponse,
    RunnerList,
    EnvVariableResponse,
    EnvVariableList,
    RunResponse,
    RunList,
    ScheduleResponse,
    ScheduleList,
    ContainerRegistryResponse,
    ContainerRegistryList,
    Deleted,
    ValidationErrors,
    Error,
    QueueDepth,
    Health,
    HealthUnavailable,
)


class _ComponentNames(GenerateJsonSchema):
    """Components named as the API says them (`RunStatus`, not the enum's `Status`),
    without pydantic's generated `title`s."""

    RENAMED = {"Status": "RunStatus"}

    def normalize_name(self, name: str) -> str:
        name = super().normalize_name(name)
        return self.RENAMED.get(name, name)

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def component_schemas() -> dict[str, Any]:
    """Every model's JSON schema, keyed by component name, `$ref`s into
    `#/components/schemas/`."""
    _, top = models_json_schema(
        [(m, "validation") for m in REQUESTS] + [(m, "serialization") for m in RESPONSES],
        ref_template="#/components/schemas/{model}",
        schema_generator=_ComponentNames,
    )
    schemas: dict[str, Any] = {"Timestamp": dict(TIMESTAMP), **top["$defs"]}
    schemas["LogEvent"] = log_event_schema()
    for schema in schemas.values():
        schema.pop("title", None)
    with_refs: dict[str, Any] = _with_timestamp_refs(schemas)
    return with_refs


def _with_timestamp_refs(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("x-runnerd-timestamp"):
            return {"$ref": "#/components/schemas/Timestamp"}
        return {key: _with_timestamp_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_timestamp_refs(item) for item in node]
    return node


__all__ = [
    "ARGV_ITEM_MAX",
    "ARGV_MAX_ITEMS",
    "CONCURRENCY_POLICIES",
    "ContainerRegistry",
    "ContainerRegistryCreate",
    "ContainerRegistryList",
    "ContainerRegistryResponse",
    "ContainerRegistryUpdate",
    "DEFAULT_TIMEOUT",
    "Deleted",
    "ENTRYPOINT_MAX",
    "ENV_KEY",
    "ENV_KEY_MAX",
    "ENV_MAX_ITEMS",
    "ENV_VAL_MAX",
    "EngineVersion",
    "Env",
    "EnvKey",
    "EnvList",
    "EnvVal",
    "EnvVariable",
    "EnvVariableCreate",
    "EnvVariableInput",
    "EnvVariableList",
    "EnvVariableResponse",
    "EnvVariableUpdate",
    "Error",
    "Health",
    "HealthUnavailable",
    "IDEMPOTENCY_KEY",
    "IDEMPOTENCY_KEY_MAX",
    "IMAGE_NAME",
    "IMAGE_TAG",
    "Id",
    "InstanceType",
    "Invalid",
    "LOGS_DESCRIPTION",
    "LOGS_LIMIT_DEFAULT",
    "LOGS_QUERY",
    "LOGS_LIMIT_MAX",
    "LOG_STREAMS",
    "LOG_STREAM_NAMES",
    "LogEntry",
    "LogLine",
    "LogPage",
    "LogStream",
    "LogsPage",
    "NAME_LEN",
    "NO_NUL",
    "Name",
    "PULL_POLICIES",
    "Param",
    "PullPolicy",
    "Query",
    "QueueDepth",
    "REGISTRY_FIELDS",
    "REGISTRY_HOST",
    "REQUESTS",
    "RESPONSES",
    "RUNNER_FIELDS",
    "SCHEDULE_FIELDS",
    "RUNNER_MAX_CONCURRENT",
    "RUN_LIST_QUERY",
    "RUNS_LIMIT_DEFAULT",
    "RUNS_LIMIT_MAX",
    "RUN_AT_AHEAD_MAX_MS",
    "RUN_AT_SKEW_MS",
    "RUN_COMMAND_MAX",
    "Run",
    "RunList",
    "RunResponse",
    "Runner",
    "RunnerCreate",
    "RunnerList",
    "RunnerResponse",
    "RunnerUpdate",
    "Schedule",
    "ScheduleCreate",
    "ScheduleEnvVariable",
    "ScheduleList",
    "ScheduleResponse",
    "ScheduleUpdate",
    "TAIL_MAX",
    "TIMEOUT_RANGE",
    "TIMESTAMP",
    "TIME_PATTERN",
    "Text",
    "Timestamp",
    "TriggerOptions",
    "TriggerRequest",
    "ValidationErrors",
    "WEBHOOK_STATUSES",
    "WEBHOOK_URL_MAX",
    "WEBHOOK_URL_PATTERN",
    "WebhookStatus",
    "Whole",
    "anchored",
    "check_command_exclusive",
    "component_schemas",
    "default_timezone",
    "env_json",
    "is_uuid",
    "log_entry_json",
    "merge_env",
    "parse_env_variable",
    "parse_idempotency_key",
    "parse_json_logs_query",
    "parse_registry",
    "RunListQuery",
    "parse_run_list_query",
    "parse_runner",
    "parse_schedule",
    "parse_sse_logs_query",
    "parse_tail",
    "parse_text_logs_query",
    "parse_trigger",
    "registry_json",
    "run_json",
    "runner_json",
    "schedule_json",
]
