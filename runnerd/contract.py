"""The API's contract, defined once: every request body and resource as a pydantic model.

From these models come request validation (`parse_*`, which raise `Invalid` listing
every problem as `field: message`), the OpenAPI document's component schemas
(`component_schemas()`, used by `openapi`) and the constants the CLI client uses.
Rendering (`*_json`) stays hand-written dicts for speed on the trigger path; a unit
test pins each to its response model's field list.
"""

from __future__ import annotations

import re
import shlex
import types
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from . import models as domain
from .config import Config
from .models import FailureReason, Status
from .timefmt import format_ms

# -- constants (the CLI client and openapi import these) ---------------------------

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Docker's reference grammar, without tag or digest: [host[:port]/]path[/path...]
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_NAME = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*\Z")
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
REGISTRY_HOST = re.compile(rf"{_DOMAIN}\Z")

NAME_LEN = (3, 50)
RUN_COMMAND_MAX = 1000
ENTRYPOINT_MAX = 500
ARGV_MAX_ITEMS = 256
ARGV_ITEM_MAX = 4096
ENV_KEY_MAX = 255
ENV_VAL_MAX = 32 * 1024
ENV_MAX_ITEMS = 500
TIMEOUT_RANGE = (1, 86400)
DEFAULT_TIMEOUT = 3600
RUNNER_MAX_CONCURRENT = 1000
WEBHOOK_URL_MAX = 2000
IDEMPOTENCY_KEY_MAX = 255
RUNS_LIMIT_DEFAULT, RUNS_LIMIT_MAX = 50, 1000
TAIL_MAX = 1_000_000
LOGS_LIMIT_DEFAULT, LOGS_LIMIT_MAX = 200, 2500
LOG_STREAMS = {"stdout": 1, "stderr": 2}
LOG_STREAM_NAMES = {1: "stdout", 2: "stderr", 3: "stderr"}  # 3: runnerd's own notes
PullPolicy = Literal["if_not_present", "always", "never"]
PULL_POLICIES: tuple[str, ...] = get_args(PullPolicy)
WebhookStatus = Literal["pending", "delivered", "failed"]
WEBHOOK_STATUSES: tuple[str, ...] = get_args(WebhookStatus)
NO_NUL = "^[^\\u0000]*$"  # no string the API takes may hold a NUL character
# `2026-01-15T10:01:00.000+01:00`: milliseconds and a UTC offset, always.
TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}"
    r"[+-][0-9]{2}:[0-9]{2}$"
)
WEBHOOK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+([/?#]\S*)?$"


def anchored(pattern: re.Pattern[str]) -> str:
    """A Python `…\\Z` regex as an anchored ECMA-262 pattern, for the document."""
    body = pattern.pattern.removesuffix(r"\Z")
    return f"^{body}$"


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except (ValueError, AttributeError):
        return False


class Invalid(Exception):
    """A request failed validation; `errors` lists every problem as `field: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# -- field types: a check and its JSON schema, side by side --------------------------


def _fail(message: str) -> PydanticCustomError:
    # The message goes in as context: a literal template would read `{…}` as placeholders.
    return PydanticCustomError("runnerd", "{message}", {"message": message})


@dataclass(frozen=True)
class Text:
    """Annotated metadata for a string field: length, no NUL, no lone surrogate
    (json.loads lets `"\\ud800"` through), then an optional `rule` that returns a
    problem or None."""

    max_len: int
    min_len: int = 0
    pattern: str = NO_NUL
    rule: Callable[[str], str | None] | None = None

    def check(self, value: str) -> str:
        if "\x00" in value:
            raise _fail("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(
                "must be valid Unicode text, without lone surrogates such as \\ud800"
            ) from None
        if not self.min_len <= len(value) <= self.max_len:
            raise _fail(
                f"must be {self.min_len} to {self.max_len} characters long, got {len(value)}"
                if self.min_len
                else f"must be at most {self.max_len} characters long, got {len(value)}"
            )
        if self.rule is not None and (problem := self.rule(value)) is not None:
            raise _fail(problem)
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler.resolve_ref_schema(handler(schema))
        out.update(maxLength=self.max_len, pattern=self.pattern)
        if self.min_len:
            out["minLength"] = self.min_len
        return out


@dataclass(frozen=True)
class Whole:
    """Annotated metadata for an integer field in [lo, hi] (strict: no 3600.0, no true)."""

    lo: int
    hi: int

    def check(self, value: int) -> int:
        if not self.lo <= value <= self.hi:
            raise _fail(f"must be between {self.lo} and {self.hi}, got {value}")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler.resolve_ref_schema(handler(schema))
        out.update(minimum=self.lo, maximum=self.hi)
        return out


def _name_rule(name: str) -> str | None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "must not contain control characters"
    return None


def _image_name_rule(image: str) -> str | None:
    if IMAGE_NAME.match(image):
        return None
    if re.match(rf"{IMAGE_NAME.pattern[:-2]}[:@]", image):
        return "must not include a tag or digest; put the tag in image_tag"
    return (
        f"{image!r} is not a valid image name (e.g. 'busybox' or "
        "'registry.example.com:5000/team/job'; lowercase path)"
    )


def _image_tag_rule(tag: str) -> str | None:
    if IMAGE_TAG.match(tag):
        return None
    return "must be 1-128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'"


def _entrypoint_rule(entrypoint: str) -> str | None:
    try:
        shlex.split(entrypoint)
    except ValueError as e:
        return f"cannot be split into words: {e}"
    return None


def _webhook_url_rule(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "must not contain spaces or control characters"
    return None


def _env_key_rule(key: str) -> str | None:
    if ENV_KEY.match(key):
        return None
    return f"{key!r} is not a valid name: use letters, digits and '_', not starting with a digit"


def _host_rule(host: str) -> str | None:
    if REGISTRY_HOST.match(host):
        return None
    return (
        "must be a registry host such as 'registry.example.com:5000' or "
        f"'ghcr.io' (no scheme, no path), got {host[:100]!r}"
    )


def _registry_id_rule(value: str) -> str | None:
    if is_uuid(value):
        return None
    return "must be the id (a UUID) of a container registry, or null"


Name = Annotated[
    str,
    Text(NAME_LEN[1], NAME_LEN[0], "^[^\\u0000-\\u001f\\u007f]*$", _name_rule),
    Field(description="Unique; no control characters. A name already taken is a 400."),
]
EnvKey = Annotated[
    str,
    Text(ENV_KEY_MAX, 1, anchored(ENV_KEY), _env_key_rule),
    Field(description="A variable name: letters, digits and `_`, not starting with a digit."),
]
EnvVal = Annotated[str, Text(ENV_VAL_MAX), Field(description="Any text without NUL characters.")]


class _Body(BaseModel):
    """A request body: strict types (`3600.0` and `true` are not integers), no
    unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class EnvVariableInput(_Body):
    env_key: EnvKey
    env_val: EnvVal


def _unique_keys(items: list[EnvVariableInput]) -> list[EnvVariableInput]:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.env_key in seen:
            raise PydanticCustomError(
                "duplicate_env_key",
                "{message}",
                {"message": f"{item.env_key!r} appears more than once", "index": i},
            )
        seen.add(item.env_key)
    return items


EnvList = Annotated[
    list[EnvVariableInput],
    Field(
        max_length=ENV_MAX_ITEMS,
        description="`{env_key, env_val}` pairs; an `env_key` may appear only once "
        "(a repeated one is a 400).",
    ),
    AfterValidator(_unique_keys),  # runs once every item is valid
]


# -- request bodies -----------------------------------------------------------------


def _config(info: ValidationInfo) -> Config:
    context = info.context
    config = context.get("config") if isinstance(context, dict) else None
    return config if isinstance(config, Config) else Config()


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
        Text(255, 1, anchored(IMAGE_NAME), _image_name_rule),
        Field(
            description="A Docker image name without tag or digest, e.g. `busybox` or "
            "`registry.example.com:5000/team/job` (lowercase path)."
        ),
    ]
    image_tag: Annotated[
        str,
        Text(128, 1, anchored(IMAGE_TAG), _image_tag_rule),
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
            Text(ENTRYPOINT_MAX, rule=_entrypoint_rule),
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
            Text(WEBHOOK_URL_MAX, 1, WEBHOOK_URL_PATTERN, _webhook_url_rule),
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
            Text(36, pattern="^[0-9a-fA-F-]{36}$", rule=_registry_id_rule),
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
    env_variables: EnvList = []

    @field_validator("instance_type")
    @classmethod
    def _known_instance_type(cls, slug: str, info: ValidationInfo) -> str:
        known = _config(info).instance_types
        if slug not in known:
            raise _fail(f"must be one of {', '.join(sorted(known))}, got {slug!r}")
        return slug

    @field_validator("webhook_url")
    @classmethod
    def _allowed_webhook(cls, url: str | None, info: ValidationInfo) -> str | None:
        config = _config(info)
        if url is None:
            return None
        if not config.webhooks.allows(host := urlsplit(url).hostname or ""):
            raise _fail(f"the host {host[:100]!r} is not in the daemon's [webhooks] allowed_hosts")
        if config.webhooks.secret is None:
            raise _fail("needs [webhooks] secret in the daemon's config, to sign deliveries")
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
    """Env overrides for this run only, on top of the runner's env variables. An empty
    body or `{}` is valid."""

    env_variables: EnvList = []


class ContainerRegistryCreate(_Body):
    name: Annotated[str, Text(NAME_LEN[1], NAME_LEN[0]), Field(description="Unique.")]
    host: Annotated[
        str,
        Text(255, 1, anchored(REGISTRY_HOST), _host_rule),
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
    if kind == "duplicate_env_key":
        return f"{where}[{ctx['index']}].env_key: {ctx['message']}"
    if kind == "missing":
        return f"{where}: is required"
    if kind == "extra_forbidden":
        known = (model if len(loc) == 1 else EnvVariableInput).model_fields
        return f"{where}: is not a known field (known: {', '.join(known)})"
    if kind == "string_type":
        if value is None:
            return f"{where}: must be a string, not null"
        return f"{where}: must be a string{or_null}, got {_json_type(value)}"
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
        return f"{where}: must be one of {ctx['expected']}, got {value!r}"[:200]
    return f"{where}: {error['msg'][:1].lower()}{error['msg'][1:]}"  # any other: pydantic's


def _validate(model: type[_Body], body: Any, config: Config | None = None) -> _Body:
    """`body` (decoded JSON; None for an empty body) as `model`, or `Invalid` listing
    every problem."""
    try:
        return model.model_validate({} if body is None else body, context={"config": config})
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


def parse_trigger(body: Any) -> Env:
    """A trigger body (`{}` or `{"env_variables": [...]}`) → the env overrides."""
    if body is None or body == {}:
        return []  # the usual trigger: no model to build
    trigger = _validate(TriggerRequest, body)
    assert isinstance(trigger, TriggerRequest)
    return _env(trigger.env_variables)


def parse_idempotency_key(value: str | None) -> str | None:
    """The `Idempotency-Key` header: 1-255 visible ASCII characters, or absent."""
    if value is None:
        return None
    if not 1 <= len(value) <= IDEMPOTENCY_KEY_MAX or not all(33 <= ord(ch) <= 126 for ch in value):
        raise Invalid(
            [
                f"Idempotency-Key: must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII "
                "characters without spaces (header)"
            ]
        )
    return value


def merge_env(defaults: list[domain.EnvVariable], overrides: Env) -> Env:
    """The runner's defaults, then the run's overrides, each key once."""
    merged = {e.env_key: e.env_val for e in defaults}
    merged.update(overrides)
    return list(merged.items())


RUNNER_FIELDS: tuple[str, ...] = tuple(RunnerCreate.model_fields)
REGISTRY_FIELDS: tuple[str, ...] = tuple(ContainerRegistryCreate.model_fields)


# -- resources, as the API answers them ------------------------------------------------

TIMESTAMP = {
    "type": "string",
    "format": "date-time",
    "pattern": TIME_PATTERN,
    "examples": ["2026-01-15T10:01:00.000+01:00"],
}
# One component every time field refers to, so generated clients share one type.
# (A marker, swapped for the `$ref` after generation: pydantic resolves every `$ref` it meets.)
Timestamp = Annotated[str, WithJsonSchema({"x-runnerd-timestamp": True})]
Id = Annotated[str, Field(json_schema_extra={"format": "uuid"})]


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
    """The Docker engine's version."""

    model_config = ConfigDict(extra="allow")

    version: str | None = None
    api_version: str | None = None


class Health(BaseModel):
    """The Docker engine answers. More fields may be added."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok"]
    engine: EngineVersion | None = None
    queue: QueueDepth | None = None


class HealthUnavailable(BaseModel):
    """The Docker engine does not answer, or the scheduler is not claiming runs (backing
    off after an engine or database error); `error` says why. More fields may be added."""

    model_config = ConfigDict(extra="allow")

    status: Literal["unavailable"]
    error: str
    queue: QueueDepth | None = None


REQUESTS: tuple[type[BaseModel], ...] = (
    RunnerCreate,
    RunnerUpdate,
    EnvVariableInput,
    EnvVariableCreate,
    EnvVariableUpdate,
    TriggerRequest,
    ContainerRegistryCreate,
    ContainerRegistryUpdate,
)
RESPONSES: tuple[type[BaseModel], ...] = (
    InstanceType,
    Runner,
    EnvVariable,
    Run,
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
    }
