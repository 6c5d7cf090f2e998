"""The contract's constants and field types: each check next to its JSON schema.

`Text` and `Whole` are Annotated metadata: pydantic runs their check after its own
strict type check and puts their limits into the OpenAPI components.
"""

from __future__ import annotations

import re
import shlex
import uuid
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler, WithJsonSchema
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from .. import cron
from ..timefmt import parse_time

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
# A trigger's `run_at`: at most a year ahead (366 days: the same date next year is
# always in), and a little in the past is taken as now (the client's clock is behind).
RUN_AT_AHEAD_MAX_MS = 366 * 86_400_000
RUN_AT_SKEW_MS = 60_000


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


def fail(message: str) -> PydanticCustomError:
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
            raise fail("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise fail(
                "must be valid Unicode text, without lone surrogates such as \\ud800"
            ) from None
        if not self.min_len <= len(value) <= self.max_len:
            raise fail(
                f"must be {self.min_len} to {self.max_len} characters long, got {len(value)}"
                if self.min_len
                else f"must be at most {self.max_len} characters long, got {len(value)}"
            )
        if self.rule is not None and (problem := self.rule(value)) is not None:
            raise fail(problem)
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
            raise fail(f"must be between {self.lo} and {self.hi}, got {value}")
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


def name_rule(name: str) -> str | None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "must not contain control characters"
    return None


def image_name_rule(image: str) -> str | None:
    if IMAGE_NAME.match(image):
        return None
    if re.match(rf"{IMAGE_NAME.pattern[:-2]}[:@]", image):
        return "must not include a tag or digest; put the tag in image_tag"
    return (
        f"{image!r} is not a valid image name (e.g. 'busybox' or "
        "'registry.example.com:5000/team/job'; lowercase path)"
    )


def image_tag_rule(tag: str) -> str | None:
    if IMAGE_TAG.match(tag):
        return None
    return "must be 1-128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'"


def entrypoint_rule(entrypoint: str) -> str | None:
    try:
        shlex.split(entrypoint)
    except ValueError as e:
        return f"cannot be split into words: {e}"
    return None


def webhook_url_rule(url: str) -> str | None:
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


def env_key_rule(key: str) -> str | None:
    if ENV_KEY.match(key):
        return None
    return f"{key!r} is not a valid name: use letters, digits and '_', not starting with a digit"


def host_rule(host: str) -> str | None:
    if REGISTRY_HOST.match(host):
        return None
    return (
        "must be a registry host such as 'registry.example.com:5000' or "
        f"'ghcr.io' (no scheme, no path), got {host[:100]!r}"
    )


def time_rule(value: str) -> str | None:
    try:
        parse_time(value)
    except ValueError as e:
        return str(e)
    return None


def registry_id_rule(value: str) -> str | None:
    if is_uuid(value):
        return None
    return "must be the id (a UUID) of a container registry, or null"


def runner_id_rule(value: str) -> str | None:
    if is_uuid(value):
        return None
    return "must be the id (a UUID) of a runner"


# A runner's retries (RetryPolicy).
MAX_RETRIES = 20
BACKOFF_RANGE = (1, 86400)
CHAIN_MAX_ITEMS = 50  # runners triggered by one outcome (on_success, on_failure)

# A schedule's fields.
CRON_MAX = cron.MAX_LENGTH
TIMEZONE_MAX = 255
STARTING_DEADLINE_RANGE = (0, 86400)
DEFAULT_STARTING_DEADLINE = 300
ConcurrencyPolicyName = Literal["allow", "forbid", "replace"]  # models.ConcurrencyPolicy
CONCURRENCY_POLICIES: tuple[str, ...] = get_args(ConcurrencyPolicyName)


def cron_rule(expression: str) -> str | None:
    try:
        cron.parse(expression)
    except cron.CronError as e:
        return str(e)
    return None


def timezone_rule(name: str) -> str | None:
    """An IANA name zoneinfo can load, as the config's `timezone` is checked."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: not a key (`../x`, `/etc/localtime`, ``) or not a zone file.
        return (
            f"unknown time zone {name[:100]!r} (use an IANA name such as 'Europe/Berlin' or 'UTC')"
        )
    return None


Name = Annotated[
    str,
    Text(NAME_LEN[1], NAME_LEN[0], "^[^\\u0000-\\u001f\\u007f]*$", name_rule),
    Field(description="Unique; no control characters. A name already taken is a 400."),
]
EnvKey = Annotated[
    str,
    Text(ENV_KEY_MAX, 1, anchored(ENV_KEY), env_key_rule),
    Field(description="A variable name: letters, digits and `_`, not starting with a digit."),
]
EnvVal = Annotated[str, Text(ENV_VAL_MAX), Field(description="Any text without NUL characters.")]


# -- in responses -------------------------------------------------------------------

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
