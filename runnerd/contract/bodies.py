"""Request bodies as models, and pydantic's errors in the API's words.

`parse_*` take the decoded JSON (`api.read_json` keeps `json.loads` first, so a lone
surrogate reaches the `Text` check instead of failing the decode) and return what the
handlers and the store take, or raise `Invalid` listing every problem as
`field: message`.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
    field_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from ..config import Config
from ..models import (
    RETRYABLE,
    ConcurrencyPolicy,
    EnvVariable,
    FailureReason,
    RetryPolicy,
    now_ms,
)
from ..timefmt import TIME_INPUT_PATTERN, parse_time
from .fields import (
    ARGV_ITEM_MAX,
    ARGV_MAX_ITEMS,
    BACKOFF_RANGE,
    CHAIN_MAX_ITEMS,
    CRON_MAX,
    DEFAULT_STARTING_DEADLINE,
    DEFAULT_TIMEOUT,
    ENTRYPOINT_MAX,
    ENV_MAX_ITEMS,
    IMAGE_NAME,
    IMAGE_TAG,
    MAX_RETRIES,
    NAME_LEN,
    REGISTRY_HOST,
    RUN_AT_AHEAD_MAX_MS,
    RUN_AT_SKEW_MS,
    RUN_COMMAND_MAX,
    RUNNER_MAX_CONCURRENT,
    STARTING_DEADLINE_RANGE,
    TIMEOUT_RANGE,
    TIMEZONE_MAX,
    WEBHOOK_URL_MAX,
    WEBHOOK_URL_PATTERN,
    ConcurrencyPolicyName,
    EnvKey,
    EnvVal,
    Invalid,
    Name,
    PullPolicy,
    Text,
    Whole,
    anchored,
    cron_rule,
    entrypoint_rule,
    fail,
    host_rule,
    image_name_rule,
    image_tag_rule,
    registry_id_rule,
    runner_id_rule,
    time_rule,
    timezone_rule,
    webhook_url_rule,
)


class _Body(BaseModel):
    """A request body: strict types (`3600.0` and `true` are not integers), no
    unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class EnvVariableInput(_Body):
    env_key: EnvKey
    env_val: EnvVal


def _unique_keys(value: Any, handler: ValidatorFunctionWrapHandler) -> list[EnvVariableInput]:
    """A key given twice is a problem even when another item has problems of its own:
    so it is found on the raw items, around the list's own validation."""
    repeated: list[InitErrorDetails] = []
    seen: set[str] = set()
    # Too many items is the one problem of a list that long, as for any other list.
    items_to_check = value if isinstance(value, list) and len(value) <= ENV_MAX_ITEMS else []
    for i, item in enumerate(items_to_check):
        key = item.get("env_key") if isinstance(item, dict) else None
        if isinstance(key, str) and key in seen:
            message = f"{key[:100]!r} appears more than once"
            repeated.append({"type": fail(message), "loc": (i, "env_key"), "input": key})
        if isinstance(key, str):
            seen.add(key)
    try:
        items: list[EnvVariableInput] = handler(value)
    except ValidationError as e:
        raise _with(e, repeated) from None
    if repeated:
        raise _with(None, repeated)
    return items


def _with(error: ValidationError | None, more: list[InitErrorDetails]) -> ValidationError:
    """`error`'s problems and `more`, as one ValidationError (pydantic prefixes the
    field's location when it leaves the validator)."""
    again: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
            "loc": e["loc"],
            "input": e["input"],
        }
        for e in (error.errors(include_url=False) if error else [])
    ]
    return ValidationError.from_exception_data("env_variables", [*again, *more])


EnvList = Annotated[
    list[EnvVariableInput],
    Field(
        max_length=ENV_MAX_ITEMS,
        description="`{env_key, env_val}` pairs; an `env_key` may appear only once "
        "(a repeated one is a 400).",
    ),
    WrapValidator(_unique_keys),
]


# -- request bodies -----------------------------------------------------------------

# The failure reasons a policy may retry: every one but `canceled` (models.RETRYABLE;
# tests/unit/test_unit_contract.py holds the two together).
RetryReason = Literal["nonzero_exit", "timeout", "lost", "start_failed", "image_pull_failed"]


class RetryPolicyInput(_Body):
    """When a failed run is tried again: each attempt is its own run (`attempt`,
    `retry_of`), pending until its back-off has passed. A canceled run is never retried."""

    max_retries: Annotated[
        int,
        Whole(0, MAX_RETRIES),
        Field(description="Retries after the first attempt; 0 (the default): none."),
    ] = 0
    backoff_seconds: Annotated[
        int,
        Whole(*BACKOFF_RANGE),
        Field(description="Before the first retry; doubled for each retry after it."),
    ] = 10
    backoff_max_seconds: Annotated[
        int,
        Whole(*BACKOFF_RANGE),
        Field(description="The longest back-off. Each wait is 80-100 % of its value (jitter)."),
    ] = 600
    retry_on: Annotated[
        list[RetryReason],
        Field(
            max_length=len(RETRYABLE),
            description="The failure reasons that are retried (default all but "
            "`image_pull_failed`; `canceled` never is).",
        ),
    ] = ["nonzero_exit", "timeout", "lost", "start_failed"]  # models.DEFAULT_RETRY_ON
    retry_exit_codes: (
        Annotated[
            list[Annotated[int, Whole(1, 255)]],
            Field(
                min_length=1,
                max_length=255,
                description="For `nonzero_exit`: only these exit codes are retried; null "
                "(the default): any non-zero one.",
            ),
        ]
        | None
    ) = None

    def policy(self) -> RetryPolicy:
        if self.backoff_max_seconds < self.backoff_seconds:
            raise Invalid(
                [
                    f"retry_policy.backoff_max_seconds: must be at least backoff_seconds "
                    f"({self.backoff_seconds}), got {self.backoff_max_seconds}"
                ]
            )
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
            backoff_max_seconds=self.backoff_max_seconds,
            retry_on=tuple(FailureReason(r) for r in dict.fromkeys(self.retry_on)),
            retry_exit_codes=None
            if self.retry_exit_codes is None
            else tuple(sorted(set(self.retry_exit_codes))),
        )


RunnerIds = Annotated[
    list[
        Annotated[
            str,
            Text(36, pattern="^[0-9a-fA-F-]{36}$", rule=runner_id_rule),
            Field(json_schema_extra={"format": "uuid"}),
        ]
    ],
    Field(max_length=CHAIN_MAX_ITEMS),
]


def _config(info: ValidationInfo) -> Config:
    context = info.context
    config = context.get("config") if isinstance(context, dict) else None
    return config if isinstance(config, Config) else Config()


def _now(info: ValidationInfo) -> int:
    context = info.context
    now = context.get("now") if isinstance(context, dict) else None
    return now if isinstance(now, int) else now_ms()


class RunnerCreate(_Body):
    """A new runner. Unknown fields are a 400."""

    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["run_command", "argv"],
                "properties": {"run_command": {"type": "string"}, "argv": {"type": "array"}},
            }
        }
    )

    name: Name
    image_name: Annotated[
        str,
        Text(255, 1, anchored(IMAGE_NAME), image_name_rule),
        Field(
            description="A Docker image name without tag or digest, e.g. `busybox` or "
            "`registry.example.com:5000/team/job` (lowercase path)."
        ),
    ]
    image_tag: Annotated[
        str,
        Text(128, 1, anchored(IMAGE_TAG), image_tag_rule),
        Field(description="Letters, digits, `_`, `.` and `-`, not starting with `.` or `-`."),
    ] = "latest"
    run_command: (
        Annotated[
            str,
            Text(RUN_COMMAND_MAX, 1),
            Field(
                description="Run as `sh -c run_command` (the image needs a `sh`). Excludes "
                "`argv`: at most one of the two may be non-null (on PATCH: after merging "
                "with the runner); with neither, the image's own CMD runs."
            ),
        ]
        | None
    ) = None
    argv: (
        Annotated[
            list[Annotated[str, Text(ARGV_ITEM_MAX)]],
            Field(
                min_length=1,
                max_length=ARGV_MAX_ITEMS,
                description="The command in exec form. Excludes `run_command`.",
            ),
        ]
        | None
    ) = None
    entrypoint: (
        Annotated[
            str,
            Text(ENTRYPOINT_MAX, rule=entrypoint_rule),
            Field(
                description="Replaces the image's ENTRYPOINT, split into words like a shell "
                'would (unbalanced quotes are a 400); `""` clears it; null keeps the image\'s.'
            ),
        ]
        | None
    ) = None
    timeout_seconds: Annotated[
        int,
        Whole(*TIMEOUT_RANGE),
        Field(
            description="Counted from `started_at`; past it the container is stopped and "
            "the run fails with `timeout`."
        ),
    ] = DEFAULT_TIMEOUT
    # Its default is the config's `default_instance_type`, filled in by parse_runner.
    instance_type: str = Field(
        default_factory=str,  # not validated, not in the schema
        description="The slug of an instance type of the daemon's config (built in: "
        "`standard-xs`, `standard-s`, `standard-m`); default the config's "
        "`default_instance_type`. Any other value is a 400.",
        examples=["standard-s"],
    )
    max_concurrent_runs: (
        Annotated[
            int,
            Whole(1, RUNNER_MAX_CONCURRENT),
            Field(
                description="At most this many runs of this runner at once; null (the "
                "default): only the daemon's limit; 1: runs never overlap."
            ),
        ]
        | None
    ) = None
    webhook_url: (
        Annotated[
            str,
            Text(WEBHOOK_URL_MAX, 1, WEBHOOK_URL_PATTERN, webhook_url_rule),
            Field(
                json_schema_extra={"format": "uri"},
                description='An http:// or https:// URL POSTed `{"run": Run, "runner_id": …}` '
                "when a run completes, signed with `X-Runnerd-Signature: sha256=<hex "
                "HMAC-SHA256 of the body>`. Needs `[webhooks] secret` in the daemon's config "
                "(without it a non-null value is a 400). Null: no webhook.",
            ),
        ]
        | None
    ) = None
    container_registry_id: (
        Annotated[
            str,
            Text(36, pattern="^[0-9a-fA-F-]{36}$", rule=registry_id_rule),
            Field(
                json_schema_extra={"format": "uuid"},
                description="A container registry whose host and credentials pull the "
                "image; `image_name` may then omit the host. An unknown id is a 400.",
            ),
        ]
        | None
    ) = None
    image_pull_policy: PullPolicy = Field(
        default="if_not_present",
        description="`if_not_present`: pull only when the image is missing; `always`: pull "
        "before every run; `never`: fail (`image_pull_failed`) when missing.",
    )
    retry_policy: RetryPolicyInput | None = Field(
        default=None,
        description="Retries of failed runs; null (the default): never retried. Copied onto "
        "each run when it is triggered, like the command.",
    )
    on_success: RunnerIds = Field(
        default=[],
        description="Runner ids triggered (once each, `trigger: chain`) when a run of this "
        "runner succeeds; the chained run gets `RUNNERD_PARENT_RUN_ID` and "
        "`RUNNERD_PARENT_STATUS` in its env. Unknown ids, and a change that would make a "
        "cycle of chains, are a 400.",
    )
    on_failure: RunnerIds = Field(
        default=[],
        description="Runner ids triggered when a run of this runner fails for good (after "
        "its retries; not when canceled).",
    )
    env_variables: EnvList = []

    @field_validator("on_success", "on_failure")
    @classmethod
    def _lower_ids(cls, ids: list[str]) -> list[str]:
        return list(dict.fromkeys(i.lower() for i in ids))

    @field_validator("instance_type")
    @classmethod
    def _known_instance_type(cls, slug: str, info: ValidationInfo) -> str:
        known = _config(info).instance_types
        if slug not in known:
            raise fail(f"must be one of {', '.join(sorted(known))}, got {slug!r}")
        return slug

    @field_validator("webhook_url")
    @classmethod
    def _allowed_webhook(cls, url: str | None, info: ValidationInfo) -> str | None:
        config = _config(info)
        if url is None:
            return None
        if not config.webhooks.allows(host := urlsplit(url).hostname or ""):
            raise fail(f"the host {host[:100]!r} is not in the daemon's [webhooks] allowed_hosts")
        if config.webhooks.secret is None:
            raise fail("needs [webhooks] secret in the daemon's config, to sign deliveries")
        return url

    @field_validator("container_registry_id")
    @classmethod
    def _lower_id(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None


def _partial(model: type[_Body], name: str, doc: str, *, at_least_one: bool) -> type[_Body]:
    """`model` with every field optional and without defaults: a PATCH body, where
    `model_fields_set` tells a field given as null from one not given. Its field
    validators come along with the base class."""

    def schema_extra(schema: dict[str, Any]) -> None:
        for prop in schema.get("properties", {}).values():
            prop.pop("default", None)  # absent means unchanged, not a default
        if at_least_one:
            schema["minProperties"] = 1

    base = type(f"_{name}", (model,), {"model_config": ConfigDict(json_schema_extra=schema_extra)})
    fields: dict[str, Any] = {
        key: (
            Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation,
            Field(default=None, description=info.description, examples=info.examples),
        )
        for key, info in model.model_fields.items()
    }
    partial: type[_Body] = create_model(name, __base__=base, __doc__=doc, **fields)
    return partial


RunnerUpdate = _partial(
    RunnerCreate,
    "RunnerUpdate",
    "Any fields of a runner, changed together; the others keep their values. "
    "`env_variables`, when given, replaces all of the runner's env variables. To switch "
    "between `run_command` and `argv`, set the old one to null in the same request. An "
    "empty body or `{}` changes nothing. Unknown fields are a 400.",
    at_least_one=False,
)


class EnvVariableCreate(_Body):
    """`env_key` is unique per runner: one already there is a 400."""

    env_key: EnvKey
    env_val: EnvVal


EnvVariableUpdate = _partial(
    EnvVariableCreate, "EnvVariableUpdate", "Sets `env_key`, `env_val` or both.", at_least_one=True
)


class TriggerRequest(_Body):
    """What this run does differently from the runner's other runs: env overrides on
    top of the runner's env variables, a later start, its own timeout. An empty body
    or `{}` is valid: a run like any other, queued now."""

    env_variables: EnvList = []
    run_at: (
        Annotated[
            str,
            Text(40, 1, TIME_INPUT_PATTERN, time_rule),
            Field(
                json_schema_extra={"format": "date-time"},
                description="Not started before this time: the run stays `pending`, with it "
                "as `not_before`, until then. With a UTC offset (`+01:00`, or `Z`); at most a "
                "year (366 days) ahead; up to 60 s in the past is taken as now, further back "
                "is a 400. Null (the default): now.",
                examples=["2026-01-15T10:01:00.000+01:00"],
            ),
        ]
        | None
    ) = None
    timeout_seconds: (
        Annotated[
            int,
            Whole(*TIMEOUT_RANGE),
            Field(
                description="This run's timeout instead of the runner's: counted from "
                "`started_at`, past it the container is stopped and the run fails with "
                "`timeout`. Null (the default): the runner's."
            ),
        ]
        | None
    ) = None

    @field_validator("run_at")
    @classmethod
    def _within_limits(cls, run_at: str | None, info: ValidationInfo) -> str | None:
        if run_at is None:
            return None
        now = _now(info)
        at = parse_time(run_at)  # Text's rule has checked that it parses
        if at > now + RUN_AT_AHEAD_MAX_MS:
            raise fail(f"must be at most 1 year ahead, got {run_at}")
        if at < now - RUN_AT_SKEW_MS:
            ago = (now - at) // 1000
            raise fail(
                f"must not be more than {RUN_AT_SKEW_MS // 1000} s in the past, got {run_at} "
                f"({ago} s before the daemon's clock)"
            )
        return run_at


class ScheduleCreate(_Body):
    """A new schedule of the runner: when the clock triggers it. Unknown fields are a 400."""

    cron: Annotated[
        str,
        Text(CRON_MAX, rule=cron_rule),
        Field(
            json_schema_extra={"minLength": 1},
            description="The five standard fields (minute hour day-of-month month "
            "day-of-week, with names, ranges, lists and steps; a day-of-month and a "
            "day-of-week both restricted match either), a macro (`@hourly`, `@daily`, "
            "`@weekly`, `@monthly`, `@yearly`) or `@every <duration>` (`30s`, `5m`, "
            "`1h30m`; at least 1 s). A bad expression is a 400 naming the part that is wrong.",
            examples=["*/15 9-17 * * MON-FRI"],
        ),
    ]
    # Its default is the daemon's zone, filled in by parse_schedule.
    timezone: Annotated[
        str,
        Text(TIMEZONE_MAX, 1, rule=timezone_rule),
        Field(
            default_factory=str,  # not in the schema: the default depends on the config
            description="The IANA time zone the cron fields are read in, e.g. "
            "`Europe/Berlin`; default the daemon's `timezone` (else the host's zone). A wall "
            "time a spring-forward skips fires once, at the first moment after the gap; a wall "
            "time that occurs twice fires once, at its first occurrence. `@every` ignores it.",
            examples=["Europe/Berlin"],
        ),
    ]
    enabled: bool = Field(
        default=True,
        description="False: paused (`next_run_at` null). Slots that pass while paused are "
        "neither fired nor counted as missed when it is enabled again.",
    )
    env_variables: EnvList = Field(
        default=[],
        description="Env overrides for the runs it fires, on top of the runner's env "
        "variables, as a trigger's `env_variables`. On PATCH it replaces all of them.",
    )
    concurrency_policy: ConcurrencyPolicyName = Field(
        default="allow",
        description="When a fire comes while a run of this schedule is pending or running: "
        "`allow` fires anyway, `forbid` skips the fire (counted, logged), `replace` cancels "
        "that run, then fires. The runner's `max_concurrent_runs` applies on top.",
    )
    starting_deadline_seconds: Annotated[
        int,
        Whole(*STARTING_DEADLINE_RANGE),
        Field(
            description="After the daemon or the engine was down: a slot missed by at most "
            "this long still fires (only the latest missed slot, once); older ones are skipped "
            "and counted in `missed_count`."
        ),
    ] = DEFAULT_STARTING_DEADLINE

    @field_validator("cron")
    @classmethod
    def _stripped(cls, expression: str) -> str:
        return expression.strip()


ScheduleUpdate = _partial(
    ScheduleCreate,
    "ScheduleUpdate",
    "Any fields of a schedule, changed together; the others keep their values. A new "
    "`cron` counts `@every` from now; a change of `cron`, `timezone` or `enabled` computes "
    "`next_run_at` again from now. At least one field; unknown fields are a 400.",
    at_least_one=True,
)


class ContainerRegistryCreate(_Body):
    name: Annotated[str, Text(NAME_LEN[1], NAME_LEN[0]), Field(description="Unique.")]
    host: Annotated[
        str,
        Text(255, 1, anchored(REGISTRY_HOST), host_rule),
        Field(description="e.g. `registry.example.com:5000` or `ghcr.io`; no scheme, no path."),
    ]
    username: Annotated[str, Text(255, 1)]
    password: Annotated[
        str,
        Text(4096, 1),
        Field(
            description="Stored encrypted; never shown again.",
            json_schema_extra={"writeOnly": True},
        ),
    ]


ContainerRegistryUpdate = _partial(
    ContainerRegistryCreate,
    "ContainerRegistryUpdate",
    "Sets any of the registry's fields.",
    at_least_one=True,
)


# -- pydantic's errors in the API's words ---------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _show_key(key: str) -> str:
    shown = key if len(key) <= 60 else key[:57] + "..."
    return shown if shown.isidentifier() else repr(shown)


def _where(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{_show_key(part)}"
    return out or "body"


def _nullable(model: type[BaseModel], loc: tuple[int | str, ...]) -> bool:
    if len(loc) != 1 or (info := model.model_fields.get(str(loc[0]))) is None:
        return False
    kind = info.annotation
    return get_origin(kind) in (Union, types.UnionType) and type(None) in get_args(kind)


def _message(model: type[BaseModel], error: ErrorDetails) -> str:
    """One pydantic error as `field: message`."""
    kind, loc, value, ctx = error["type"], error["loc"], error["input"], error.get("ctx", {})
    where = _where(loc)
    or_null = " or null" if _nullable(model, loc) else ""
    if kind == "runnerd":
        return f"{where}: {ctx['message']}"
    if kind == "missing":
        return f"{where}: is required"
    if kind == "extra_forbidden":
        known = (model if len(loc) == 1 else EnvVariableInput).model_fields
        return f"{where}: is not a known field (known: {', '.join(known)})"
    if kind == "string_type":
        if value is None:
            return f"{where}: must be a string, not null"
        return f"{where}: must be a string{or_null}, got {_json_type(value)}"
    if kind == "bool_type":
        return f"{where}: must be true or false, got {_json_type(value)}"
    if kind == "int_type":
        return f"{where}: must be a whole number{or_null}, got {_json_type(value)}"
    if kind == "list_type":
        return f"{where}: must be an array{or_null}, got {_json_type(value)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where}: must be a JSON object, got {_json_type(value)}"
    if kind == "too_short":
        return f"{where}: must have at least {ctx['min_length']} item, got none"
    if kind == "too_long":
        return f"{where}: may hold at most {ctx['max_length']} items, got {ctx['actual_length']}"
    if kind == "literal_error":
        expected = str(ctx["expected"]).replace("'", "").replace(" or ", ", ")
        return f"{where}: must be one of {expected}, got {value!r}"[:200]
    return f"{where}: {error['msg'][:1].lower()}{error['msg'][1:]}"  # any other: pydantic's


def _validate(
    model: type[_Body], body: Any, config: Config | None = None, now: int | None = None
) -> _Body:
    """`body` (decoded JSON; None for an empty body) as `model`, or `Invalid` listing
    every problem. `config` and `now` are for the validators that need them."""
    try:
        context = {"config": config, "now": now}
        return model.model_validate({} if body is None else body, context=context)
    except ValidationError as e:
        raise Invalid([_message(model, err) for err in e.errors(include_url=False)]) from None


# -- parsing what the handlers take -------------------------------------------------

Env = list[tuple[str, str]]


def _env(items: list[EnvVariableInput]) -> Env:
    return [(item.env_key, item.env_val) for item in items]


def parse_runner(body: Any, config: Config, *, partial: bool) -> tuple[dict[str, Any], Env | None]:
    """A runner create (`partial=False`) or PATCH body → (column values, env or None).

    On create, defaults are filled in; on PATCH only the given fields are returned."""
    model = RunnerUpdate if partial else RunnerCreate
    try:
        runner = _validate(model, body, config)
    except Invalid as e:
        # Both set is a problem too, when each is fine by itself.
        if (
            not partial
            and isinstance(body, dict)
            and not any(err.startswith(("run_command", "argv")) for err in e.errors)
        ):
            if body.get("run_command") is not None and body.get("argv") is not None:
                e.errors.append(_BOTH_COMMANDS)
        raise Invalid(e.errors) from None
    given = runner.model_fields_set
    fields = {
        key: getattr(runner, key)
        for key in RUNNER_FIELDS
        if key != "env_variables" and (key in given or not partial)
    }
    if "retry_policy" in fields:
        given_policy = fields["retry_policy"]
        fields["retry_policy"] = given_policy.policy() if given_policy is not None else None
    if not partial:
        if "instance_type" not in given:
            fields["instance_type"] = config.default_instance_type
        if fields["run_command"] is not None and fields["argv"] is not None:
            raise Invalid([_BOTH_COMMANDS])
    env = getattr(runner, "env_variables", [])
    return fields, _env(env) if "env_variables" in given or not partial else None


_BOTH_COMMANDS = (
    "argv: cannot be set together with run_command: give one (or neither, to run the "
    "image's own CMD)"
)


def check_command_exclusive(run_command: str | None, argv: list[str] | None) -> None:
    """After a PATCH is merged: run_command and argv still exclude each other."""
    if run_command is not None and argv is not None:
        raise Invalid(
            [
                "argv: cannot be set together with run_command: set the other one to null "
                "in the same request"
            ]
        )


def parse_env_variable(body: Any, *, partial: bool) -> dict[str, str]:
    """A runner env variable create (`partial=False`) or PATCH body."""
    env = _validate(EnvVariableUpdate if partial else EnvVariableCreate, body)
    given = env.model_fields_set
    if partial and not given:
        raise Invalid(["body: must set env_key, env_val or both"])
    return {key: getattr(env, key) for key in ("env_key", "env_val") if key in given or not partial}


def parse_registry(body: Any, *, partial: bool) -> dict[str, str]:
    """A container registry create (`partial=False`) or PATCH body."""
    registry = _validate(ContainerRegistryUpdate if partial else ContainerRegistryCreate, body)
    given = registry.model_fields_set
    if partial and not given:
        raise Invalid(["body: must set at least one of " + ", ".join(REGISTRY_FIELDS)])
    return {key: getattr(registry, key) for key in REGISTRY_FIELDS if key in given or not partial}


def parse_schedule(body: Any, config: Config, *, partial: bool) -> dict[str, Any]:
    """A schedule create (`partial=False`) or PATCH body → the store's fields: `cron`,
    `timezone`, `enabled`, `env`, `concurrency_policy`, `starting_deadline_seconds`.

    On create, defaults are filled in (`timezone`: the daemon's zone); on PATCH only the
    given fields are returned, and at least one must be."""
    schedule = _validate(ScheduleUpdate if partial else ScheduleCreate, body, config)
    given = schedule.model_fields_set
    if partial and not given:
        raise Invalid(["body: must set at least one of " + ", ".join(SCHEDULE_FIELDS)])
    fields: dict[str, Any] = {}
    for key in SCHEDULE_FIELDS:
        if partial and key not in given:
            continue
        value = getattr(schedule, key)
        if key == "env_variables":
            fields["env"] = _env(value)
        elif key == "concurrency_policy":
            fields[key] = ConcurrencyPolicy(value)
        else:
            fields[key] = value
    if not partial and "timezone" not in given:
        fields["timezone"] = default_timezone(config)
    return fields


def default_timezone(config: Config) -> str:
    """A schedule's zone when none is given: the daemon's `timezone`, else the host
    zone's IANA name, else UTC (a host zone without a name, e.g. a POSIX rule in $TZ)."""
    if config.timezone is not None:
        return config.timezone
    key = getattr(config.tz, "key", None)
    return key if isinstance(key, str) and key else "UTC"


@dataclass(frozen=True)
class TriggerOptions:
    """A trigger body as the handler takes it: Run.queued's `not_before` and
    `timeout_seconds` (None: now, and the runner's)."""

    env: Env  # the overrides, on top of the runner's env variables
    not_before: int | None = None
    timeout_seconds: int | None = None


def parse_trigger(body: Any, now: int | None = None) -> TriggerOptions:
    """A trigger body (empty, `{}`, or any of `env_variables`, `run_at`,
    `timeout_seconds`) → what the run does differently. `now` (default: the clock)
    is what `run_at`'s limits count from; a `run_at` a little in the past is now."""
    if body is None or body == {}:
        return TriggerOptions([])  # the usual trigger: no model to build
    now = now_ms() if now is None else now
    trigger = _validate(TriggerRequest, body, now=now)
    assert isinstance(trigger, TriggerRequest)
    return TriggerOptions(
        env=_env(trigger.env_variables),
        not_before=None if trigger.run_at is None else max(now, parse_time(trigger.run_at)),
        timeout_seconds=trigger.timeout_seconds,
    )


def merge_env(defaults: list[EnvVariable], overrides: Env) -> Env:
    """The runner's defaults, then the run's overrides, each key once."""
    merged = {e.env_key: e.env_val for e in defaults}
    merged.update(overrides)
    return list(merged.items())


RUNNER_FIELDS: tuple[str, ...] = tuple(RunnerCreate.model_fields)
REGISTRY_FIELDS: tuple[str, ...] = tuple(ContainerRegistryCreate.model_fields)
SCHEDULE_FIELDS: tuple[str, ...] = tuple(ScheduleCreate.model_fields)
