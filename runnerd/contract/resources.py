"""Resources as the API answers them: the response models (for the OpenAPI document)
and the renderings (plain dicts, for speed on the trigger path)."""

from __future__ import annotations

from datetime import tzinfo
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import models as domain
from ..config import Config
from ..models import ConcurrencyPolicy, FailureReason, Status, Trigger
from ..timefmt import format_ms
from .fields import (
    LOG_STREAM_NAMES,
    RUNNER_MAX_CONCURRENT,
    STARTING_DEADLINE_RANGE,
    TIMEOUT_RANGE,
    Id,
    PullPolicy,
    Timestamp,
    WebhookStatus,
    Whole,
)


class _Resource(BaseModel):
    """A response object: every field always present (null when unset), nothing else."""

    model_config = ConfigDict(extra="forbid")


class InstanceType(_Resource):
    """The runner's instance type; `name`, `cpu` and `mem` are null when the slug is no
    longer in the daemon's config."""

    slug: str
    name: str | None
    cpu: float | None = Field(description="CPUs (fractions allowed)")
    mem: int | None = Field(description="Memory in MiB")


class RetryPolicy(_Resource):
    """When a failed run is tried again (see RetryPolicyInput)."""

    max_retries: int
    backoff_seconds: int
    backoff_max_seconds: int
    retry_on: list[FailureReason]
    retry_exit_codes: list[int] | None


class Runner(_Resource):
    """A container job definition."""

    id: Id
    name: str
    status: Literal["available"]
    image_name: str
    image_tag: str
    run_command: str | None
    argv: list[str] | None
    entrypoint: str | None
    timeout_seconds: Annotated[int, Whole(*TIMEOUT_RANGE)]
    max_concurrent_runs: Annotated[int, Whole(1, RUNNER_MAX_CONCURRENT)] | None
    webhook_url: str | None
    container_registry_id: Id | None
    image_pull_policy: PullPolicy
    warmed_at: Timestamp | None
    instance_type: InstanceType
    retry_policy: RetryPolicy | None = Field(description="Null: runs are never retried.")
    on_success: list[Id]
    on_failure: list[Id]
    created_at: Timestamp
    updated_at: Timestamp


class EnvVariable(_Resource):
    """A default env variable of a runner: every run gets it unless the trigger
    overrides it."""

    id: Id
    env_key: str
    env_val: str
    created_at: Timestamp
    updated_at: Timestamp


class Run(_Resource):
    """One execution of a runner. `command`, `argv` and `entrypoint` are the runner's as
    they were when the run was triggered. `status` goes `pending` → `running` →
    `succeeded` or `failed` (a run that never got a container goes from `pending`
    straight to `failed`), never backwards. `started_at` is set when the container
    starts, `completed_at` when the run ends; `exit_code` is null until the container
    has exited. `failure_reason` is null unless `failed`; `error` is a readable sentence
    when it failed."""

    id: Id
    status: Status
    exit_code: int | None
    started_at: Timestamp | None
    completed_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    command: str | None
    argv: list[str] | None
    entrypoint: str | None
    failure_reason: FailureReason | None = Field(
        description="`nonzero_exit`: the command exited non-zero; `timeout`: stopped after "
        "`timeout_seconds`; `canceled`: through the API or at shutdown; "
        "`image_pull_failed`, `start_failed`: it never ran; `lost`: the container "
        "disappeared."
    )
    error: str | None
    webhook_status: WebhookStatus | None = Field(
        description="Delivery of the runner's webhook for this run: null when there is none."
    )
    timeout_seconds: Annotated[int, Whole(*TIMEOUT_RANGE)] = Field(
        description="The runner's when triggered, unless the trigger set its own."
    )
    trigger: Trigger = Field(
        description="`api`: POST …/runs; `schedule`: a schedule fired (`schedule_id`, "
        "`scheduled_for`); `retry`: it retries the failed attempt `retry_of`; `chain`: the "
        "run `parent_run_id` of another runner ended."
    )
    attempt: Annotated[int, Field(ge=1)] = Field(
        description="1 for a first try; each retry is its previous attempt's + 1."
    )
    retry_of: Id | None
    not_before: Timestamp | None = Field(
        description="A pending run is not started before this time (a delayed run's "
        "`run_at`, a retry's back-off)."
    )
    schedule_id: Id | None = Field(description="The schedule that fired it (or its 1st attempt).")
    scheduled_for: Timestamp | None = Field(description="The schedule's slot it was fired for.")
    parent_run_id: Id | None = Field(description="A chained run's: the run whose end made it.")
    log_incomplete: bool = Field(
        description="True when runnerd knows the stored log may miss output (the engine's "
        "log stream broke or was still streaming when the run was done with, or the log "
        "could not be checked against the engine's copy); the log then holds a note saying "
        "what happened. False otherwise; once true it stays true."
    )
    node: str | None = Field(
        description="The Swarm node the run's container ran on (its name, else hostname); "
        "null on the docker backend and until the run has started there."
    )


class ScheduleEnvVariable(_Resource):
    """An env override of the runs a schedule fires."""

    env_key: str
    env_val: str


class Schedule(_Resource):
    """When the clock triggers a runner. Each fire is a run with `trigger: schedule`,
    `schedule_id` and `scheduled_for` (its slot), made at most once per slot."""

    id: Id
    cron: str
    timezone: str
    enabled: bool
    env_variables: list[ScheduleEnvVariable]
    concurrency_policy: ConcurrencyPolicy
    starting_deadline_seconds: Annotated[int, Whole(*STARTING_DEADLINE_RANGE)]
    next_run_at: Timestamp | None = Field(
        description="The slot it fires next; null while disabled, or when the expression "
        "never matches again."
    )
    last_run_at: Timestamp | None = Field(description="The slot of its last fire.")
    last_run_id: Id | None = Field(description="The run its last fire made.")
    missed_count: Annotated[int, Field(ge=0)] = Field(
        description="Slots not fired because they were missed by more than "
        "`starting_deadline_seconds` (or were not the latest one missed)."
    )
    created_at: Timestamp
    updated_at: Timestamp


class ContainerRegistry(_Resource):
    """A registry runnerd pulls from with credentials. Never the password."""

    id: Id
    name: str
    host: str
    username: str
    created_at: Timestamp
    updated_at: Timestamp


LogStream = Literal["stdout", "stderr"]


class LogEntry(_Resource):
    id: str = Field(description="This entry's cursor, for `after`/`before`.")
    ts: Timestamp
    stream: LogStream
    msg: str = Field(
        description="One line without its newline (or a part of a very long line), decoded "
        "as UTF-8 with undecodable bytes replaced."
    )


class LogLine(_Resource):
    """The `data` of an `event: log`."""

    ts: Timestamp
    stream: LogStream
    msg: str


class LogPage(_Resource):
    logs: list[LogEntry]


def log_event_schema() -> dict[str, Any]:
    """The `LogEvent` component: what a model cannot say, a `text/event-stream` schema
    (as OpenAPI 3.1 reads it: each event), whose `data` is a model as JSON."""

    def event(name: str, data: type[BaseModel], *, with_id: bool) -> dict[str, Any]:
        data_schema = {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": f"#/components/schemas/{data.__name__}"},
        }
        id_ = {"id": {"type": "string"}} if with_id else {}
        return {
            "type": "object",
            "required": ["event", *id_, "data"],
            "properties": {"event": {"const": name}, **id_, "data": data_schema},
        }

    return {
        "description": "One Server-Sent Event of the stream (as OpenAPI 3.1 reads a "
        "`text/event-stream` schema: each event). Per line of output an `event: log` whose "
        "`id` is the entry's cursor (send it back as `Last-Event-ID` to resume) and whose "
        "`data` is JSON `{ts, stream, msg}`; last, once the run has completed and all its "
        "output is out, an `event: end` whose `data` is the Run as JSON.",
        "oneOf": [event("log", LogLine, with_id=True), event("end", Run, with_id=False)],
    }


class RunnerResponse(_Resource):
    runner: Runner


class RunnerList(_Resource):
    runners: list[Runner]


class EnvVariableResponse(_Resource):
    env_variable: EnvVariable


class EnvVariableList(_Resource):
    env_variables: list[EnvVariable]


class RunResponse(_Resource):
    run: Run


class RunList(_Resource):
    runs: list[Run]


class ScheduleResponse(_Resource):
    schedule: Schedule


class ScheduleList(_Resource):
    schedules: list[Schedule]


class ContainerRegistryResponse(_Resource):
    container_registry: ContainerRegistry


class ContainerRegistryList(_Resource):
    container_registries: list[ContainerRegistry]


class Deleted(_Resource):
    deleted: Literal[True]


class ValidationErrors(_Resource):
    """Every problem found, each as `field: message`."""

    errors: list[str] = Field(min_length=1)


class Error(_Resource):
    status: Annotated[int, Whole(400, 599)]
    error: str


class QueueDepth(_Resource):
    """How many runs are pending and running now."""

    pending: Annotated[int, Field(ge=0)]
    running: Annotated[int, Field(ge=0)]


class EngineVersion(BaseModel):
    """Which engine answers: Docker or Podman, its version, and the limits it
    cannot apply to a run's container (rootless on cgroup v1 applies none)."""

    model_config = ConfigDict(extra="allow")

    name: Literal["docker", "podman"] | None = None
    version: str | None = None
    api_version: str | None = None
    rootless: bool | None = None
    cgroup_version: str | None = Field(default=None, description='"1" or "2"; null: unknown.')
    unenforced_limits: list[Literal["cpu", "memory", "pids"]] = Field(
        default_factory=list,
        description="Limits of an instance type the engine cannot apply: runs go without them.",
    )


class Health(BaseModel):
    """The Docker engine answers. More fields may be added."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok"]
    engine: EngineVersion = Field(default_factory=EngineVersion)
    queue: QueueDepth = Field(default_factory=lambda: QueueDepth(pending=0, running=0))


class HealthUnavailable(BaseModel):
    """The Docker engine does not answer, or the scheduler is not claiming runs (backing
    off after an engine or database error); `error` says why. More fields may be added."""

    model_config = ConfigDict(extra="allow")

    status: Literal["unavailable"]
    error: str
    queue: QueueDepth = Field(default_factory=lambda: QueueDepth(pending=0, running=0))


# -- rendering ------------------------------------------------------------------------
# Plain dicts: building a model per resource would cost the trigger path; each
# function's keys are pinned to its model's fields by tests/unit/test_unit_contract.py.


def runner_json(runner: domain.Runner, config: Config) -> dict[str, Any]:
    tz = config.tz
    itype = config.instance_types.get(runner.instance_type)
    return {
        "id": runner.id,
        "name": runner.name,
        "status": "available",
        "image_name": runner.image_name,
        "image_tag": runner.image_tag,
        "run_command": runner.run_command,
        "argv": runner.argv,
        "entrypoint": runner.entrypoint,
        "timeout_seconds": runner.timeout_seconds,
        "max_concurrent_runs": runner.max_concurrent_runs,
        "webhook_url": runner.webhook_url,
        "container_registry_id": runner.container_registry_id,
        "image_pull_policy": runner.image_pull_policy or "if_not_present",
        "warmed_at": format_ms(runner.warmed_at, tz),
        "instance_type": {
            "slug": runner.instance_type,
            "name": itype.name if itype else None,
            "cpu": itype.cpu if itype else None,
            "mem": itype.mem if itype else None,
        },
        "retry_policy": None
        if runner.retry_policy == domain.NO_RETRIES
        else runner.retry_policy.to_json(),
        "on_success": runner.on_success,
        "on_failure": runner.on_failure,
        "created_at": format_ms(runner.created_at, tz),
        "updated_at": format_ms(runner.updated_at, tz),
    }


def env_json(env: domain.EnvVariable, tz: tzinfo) -> dict[str, Any]:
    return {
        "id": env.id,
        "env_key": env.env_key,
        "env_val": env.env_val,
        "created_at": format_ms(env.created_at, tz),
        "updated_at": format_ms(env.updated_at, tz),
    }


def registry_json(registry: domain.ContainerRegistry, tz: tzinfo) -> dict[str, Any]:
    """Never the password."""
    return {
        "id": registry.id,
        "name": registry.name,
        "host": registry.host,
        "username": registry.username,
        "created_at": format_ms(registry.created_at, tz),
        "updated_at": format_ms(registry.updated_at, tz),
    }


def schedule_json(schedule: domain.Schedule, tz: tzinfo) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "env_variables": [{"env_key": k, "env_val": v} for k, v in schedule.env],
        "concurrency_policy": schedule.concurrency_policy.value,
        "starting_deadline_seconds": schedule.starting_deadline_seconds,
        "next_run_at": format_ms(schedule.next_run_at, tz),
        "last_run_at": format_ms(schedule.last_run_at, tz),
        "last_run_id": schedule.last_run_id,
        "missed_count": schedule.missed_count,
        "created_at": format_ms(schedule.created_at, tz),
        "updated_at": format_ms(schedule.updated_at, tz),
    }


def log_entry_json(offset: int, stream: int, ts_ns: int, data: bytes, tz: tzinfo) -> dict[str, Any]:
    """One piece of output: a line (or a part of a very long line), decoded as
    UTF-8 with undecodable bytes replaced; `id` is its cursor."""
    msg = data.decode("utf-8", "replace")
    return {
        "id": str(offset),
        "ts": format_ms(ts_ns // 1_000_000, tz),
        "stream": LOG_STREAM_NAMES.get(stream, "stdout"),
        "msg": msg[:-1] if msg.endswith("\n") else msg,
    }


def run_json(run: domain.Run, tz: tzinfo) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status.value,
        "exit_code": run.exit_code,
        "started_at": format_ms(run.started_at, tz),
        "completed_at": format_ms(run.completed_at, tz),
        "created_at": format_ms(run.created_at, tz),
        "updated_at": format_ms(run.updated_at, tz),
        "command": run.command,
        "argv": run.argv,
        "entrypoint": run.entrypoint,
        "failure_reason": run.failure_reason.value if run.failure_reason else None,
        "error": run.error,
        "webhook_status": run.webhook_status,
        "timeout_seconds": run.timeout_seconds,
        "trigger": run.trigger.value,
        "attempt": run.attempt,
        "retry_of": run.retry_of,
        "not_before": format_ms(run.not_before, tz),
        "schedule_id": run.schedule_id,
        "scheduled_for": format_ms(run.scheduled_for, tz),
        "parent_run_id": run.parent_run_id,
        "log_incomplete": run.log_incomplete,
        "node": run.node,
    }
