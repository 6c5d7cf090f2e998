"""The API's contract: what request bodies may hold, and how resources look as JSON.

`parse_*` functions check a decoded JSON body and either return clean values or
raise `Invalid` with every problem found, each naming its field. `*_json`
functions render models in the public shapes.
"""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any
from urllib.parse import urlsplit

from .config import Config
from .models import ContainerRegistry, EnvVariable, Run, Runner, Status
from .timefmt import format_ms

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Docker's reference grammar, without tag or digest: [host[:port]/]path[/path...]
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_NAME = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*\Z")
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")

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
RUNS_LIMIT_DEFAULT, RUNS_LIMIT_MAX = 50, 1000
TAIL_MAX = 1_000_000
LOGS_LIMIT_DEFAULT, LOGS_LIMIT_MAX = 200, 2500
LOG_STREAMS = {"stdout": 1, "stderr": 2}
LOG_STREAM_NAMES = {1: "stdout", 2: "stderr", 3: "stderr"}  # 3: runnerd's own notes

RUNNER_FIELDS = (
    "name",
    "image_name",
    "image_tag",
    "run_command",
    "argv",
    "entrypoint",
    "timeout_seconds",
    "instance_type",
    "max_concurrent_runs",
    "webhook_url",
    "container_registry_id",
    "image_pull_policy",
    "env_variables",
)
PULL_POLICIES = ("if_not_present", "always", "never")
REGISTRY_FIELDS = ("name", "host", "username", "password")
REGISTRY_HOST = re.compile(rf"{_DOMAIN}\Z")
WEBHOOK_URL_MAX = 2000
RUNNER_MAX_CONCURRENT = 1000
IDEMPOTENCY_KEY_MAX = 255


class Invalid(Exception):
    """A request failed validation; `errors` lists every problem, each naming its field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except (ValueError, AttributeError):
        return False


class _Checker:
    """Collects every problem of one request instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, message: str) -> None:
        self.errors.append(message)

    def done(self) -> None:
        if self.errors:
            raise Invalid(self.errors)

    def object(
        self, body: Any, allowed: tuple[str, ...], where: str | None = None
    ) -> dict[str, Any]:
        if body is None and where is None:
            return {}  # an empty request body
        if not isinstance(body, dict):
            self.fail(f"{where or 'body'} must be a JSON object, got {_json_type(body)}")
            return {}
        for key in body:
            if key not in allowed:
                name = f"{where}.{_show_key(key)}" if where else _show_key(key)
                self.fail(f"{name} is not a known field (known: {', '.join(allowed)})")
        return {k: v for k, v in body.items() if k in allowed}

    def text(
        self, field: str, value: Any, *, min_len: int = 0, max_len: int, nullable: bool = False
    ) -> str | None:
        if value is None:
            if not nullable:
                self.fail(f"{field} must be a string, not null")
            return None
        if not isinstance(value, str):
            self.fail(
                f"{field} must be a string{' or null' if nullable else ''}, got {_json_type(value)}"
            )
            return None
        if "\x00" in value:
            self.fail(f"{field} must not contain NUL characters")
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(
                f"{field} must be valid Unicode text, without lone surrogates such as \\ud800"
            )
            return None
        if not min_len <= len(value) <= max_len:
            self.fail(
                f"{field} must be {min_len} to {max_len} characters long, got {len(value)}"
                if min_len
                else f"{field} must be at most {max_len} characters long, got {len(value)}"
            )
            return None
        return value

    def integer(self, field: str, value: Any, lo: int, hi: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{field} must be a whole number, got {_json_type(value)}")
            return None
        if not lo <= value <= hi:
            self.fail(f"{field} must be between {lo} and {hi}, got {value}")
            return None
        return value


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


# -- runners ----------------------------------------------------------------------


def parse_runner(
    body: Any, config: Config, *, partial: bool
) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
    """A runner create (`partial=False`) or PATCH body → (column values, env or None).

    On create, defaults are filled in; on PATCH only the given fields are returned."""
    c = _Checker()
    data = c.object(body, RUNNER_FIELDS)
    out: dict[str, Any] = {}

    def given(key: str) -> bool:
        return key in data

    if given("name") or not partial:
        if not given("name"):
            c.fail("name is required")
        else:
            name = c.text("name", data["name"], min_len=NAME_LEN[0], max_len=NAME_LEN[1])
            if name is not None and any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
                c.fail("name must not contain control characters")
            elif name is not None:
                out["name"] = name
    if given("image_name") or not partial:
        if not given("image_name"):
            c.fail("image_name is required")
        else:
            image = c.text("image_name", data["image_name"], min_len=1, max_len=255)
            if image is not None:
                if IMAGE_NAME.match(image):
                    out["image_name"] = image
                elif re.match(rf"{IMAGE_NAME.pattern[:-2]}[:@]", image):
                    c.fail("image_name must not include a tag or digest; put the tag in image_tag")
                else:
                    c.fail(
                        f"image_name {image!r} is not a valid image name (e.g. 'busybox' or "
                        "'registry.example.com:5000/team/job'; lowercase path)"
                    )
    if given("image_tag") or not partial:
        tag = c.text("image_tag", data.get("image_tag", "latest"), min_len=1, max_len=128)
        if tag is not None:
            if IMAGE_TAG.match(tag):
                out["image_tag"] = tag
            else:
                c.fail(
                    "image_tag must be 1-128 of letters, digits, '_', '.' and '-', "
                    "not starting with '.' or '-'"
                )
    if given("run_command") or not partial:
        command = c.text(
            "run_command",
            data.get("run_command"),
            min_len=1,
            max_len=RUN_COMMAND_MAX,
            nullable=True,
        )
        if command is not None or data.get("run_command") is None:
            out["run_command"] = command
    if given("argv") or not partial:
        argv = _argv(c, data.get("argv"))
        if argv is not None or data.get("argv") is None:
            out["argv"] = argv
    if not partial and out.get("run_command") is not None and out.get("argv") is not None:
        c.fail(
            "run_command and argv cannot both be set: give one (or neither, to run the "
            "image's own CMD)"
        )
    if given("entrypoint") or not partial:
        entrypoint = c.text(
            "entrypoint", data.get("entrypoint"), max_len=ENTRYPOINT_MAX, nullable=True
        )
        if entrypoint is not None:
            try:
                shlex.split(entrypoint)
                out["entrypoint"] = entrypoint
            except ValueError as e:
                c.fail(f"entrypoint cannot be split into words: {e}")
        elif data.get("entrypoint") is None:
            out["entrypoint"] = None
    if given("timeout_seconds") or not partial:
        timeout = c.integer(
            "timeout_seconds", data.get("timeout_seconds", DEFAULT_TIMEOUT), *TIMEOUT_RANGE
        )
        if timeout is not None:
            out["timeout_seconds"] = timeout
    if given("instance_type") or not partial:
        slug = data.get("instance_type", config.default_instance_type)
        if not isinstance(slug, str) or slug not in config.instance_types:
            c.fail(
                f"instance_type must be one of {', '.join(sorted(config.instance_types))}, "
                f"got {slug!r}"
                if isinstance(slug, str)
                else f"instance_type must be a string, got {_json_type(slug)}"
            )
        else:
            out["instance_type"] = slug
    if given("max_concurrent_runs") or not partial:
        limit = data.get("max_concurrent_runs")
        if limit is None:
            out["max_concurrent_runs"] = None
        elif (
            limit := c.integer("max_concurrent_runs", limit, 1, RUNNER_MAX_CONCURRENT)
        ) is not None:
            out["max_concurrent_runs"] = limit
    if given("webhook_url") or not partial:
        url = c.text(
            "webhook_url",
            data.get("webhook_url"),
            min_len=1,
            max_len=WEBHOOK_URL_MAX,
            nullable=True,
        )
        if url is not None:
            problem = _webhook_url_problem(url)
            if problem:
                c.fail(f"webhook_url {problem}")
            elif not config.webhooks.allows(host := urlsplit(url).hostname or ""):
                c.fail(
                    f"webhook_url: the host {host[:100]!r} is not in the daemon's "
                    "[webhooks] allowed_hosts"
                )
            elif config.webhooks.secret is None:
                c.fail(
                    "webhook_url needs [webhooks] secret in the daemon's config, to sign deliveries"
                )
            else:
                out["webhook_url"] = url
        elif data.get("webhook_url") is None:
            out["webhook_url"] = None
    if given("container_registry_id") or not partial:
        registry_id = data.get("container_registry_id")
        if registry_id is None:
            out["container_registry_id"] = None
        elif not isinstance(registry_id, str) or not is_uuid(registry_id):
            c.fail("container_registry_id must be the id (a UUID) of a container registry, or null")
        else:
            out["container_registry_id"] = registry_id.lower()
    if given("image_pull_policy") or not partial:
        policy = data.get("image_pull_policy", "if_not_present")
        if policy not in PULL_POLICIES:
            c.fail(
                f"image_pull_policy must be one of {', '.join(PULL_POLICIES)}, got {policy!r}"[:200]
            )
        else:
            out["image_pull_policy"] = policy
    env: list[tuple[str, str]] | None = None
    if given("env_variables"):
        env = _env_list(c, data["env_variables"], "env_variables")
    elif not partial:
        env = []
    c.done()
    return out, env


def _webhook_url_problem(url: str) -> str | None:
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


def check_command_exclusive(run_command: str | None, argv: list[str] | None) -> None:
    """After a PATCH is merged: run_command and argv still exclude each other."""
    if run_command is not None and argv is not None:
        raise Invalid(
            [
                "run_command and argv cannot both be set: set the other one to null "
                "in the same request"
            ]
        )


def _argv(c: _Checker, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        c.fail(f"argv must be an array of strings or null, got {_json_type(value)}")
        return None
    if not 1 <= len(value) <= ARGV_MAX_ITEMS:
        c.fail(f"argv must have 1 to {ARGV_MAX_ITEMS} items, got {len(value)}")
        return None
    ok = True
    for i, item in enumerate(value):
        if c.text(f"argv[{i}]", item, max_len=ARGV_ITEM_MAX) is None:
            ok = False
    return list(value) if ok else None


def _env_list(c: _Checker, value: Any, field: str) -> list[tuple[str, str]] | None:
    if not isinstance(value, list):
        c.fail(f"{field} must be an array of {{env_key, env_val}} objects, got {_json_type(value)}")
        return None
    if len(value) > ENV_MAX_ITEMS:
        c.fail(f"{field} may hold at most {ENV_MAX_ITEMS} items, got {len(value)}")
        return None
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            c.fail(f"{where} must be an object with env_key and env_val, got {_json_type(item)}")
            continue
        before = len(c.errors)
        data = c.object(item, ("env_key", "env_val"), where)
        key = val = None
        if "env_key" not in data:
            c.fail(f"{where}.env_key is required")
        else:
            key = _env_key(c, data["env_key"], f"{where}.env_key")
        if "env_val" not in data:
            c.fail(f"{where}.env_val is required")
        else:
            val = c.text(f"{where}.env_val", data["env_val"], max_len=ENV_VAL_MAX)
        if key is not None:
            if key in seen:
                c.fail(f"{where}.env_key {key!r} appears more than once")
            seen.add(key)
        if key is not None and val is not None and len(c.errors) == before:
            out.append((key, val))
    return out


def _env_key(c: _Checker, value: Any, field: str) -> str | None:
    key = c.text(field, value, min_len=1, max_len=ENV_KEY_MAX)
    if key is not None and not ENV_KEY.match(key):
        c.fail(
            f"{field} {key!r} is not a valid name: use letters, digits and '_', "
            "not starting with a digit"
        )
        return None
    return key


def parse_registry(body: Any, *, partial: bool) -> dict[str, str]:
    """A container registry create (`partial=False`) or PATCH body."""
    c = _Checker()
    data = c.object(body, REGISTRY_FIELDS)
    out: dict[str, str] = {}
    limits = {
        "name": (NAME_LEN[0], NAME_LEN[1]),
        "host": (1, 255),
        "username": (1, 255),
        "password": (1, 4096),
    }
    for field in REGISTRY_FIELDS:
        if field not in data:
            if not partial:
                c.fail(f"{field} is required")
            continue
        value = c.text(field, data[field], min_len=limits[field][0], max_len=limits[field][1])
        if value is None:
            continue
        if field == "host" and not REGISTRY_HOST.match(value):
            c.fail(
                f"host must be a registry host such as 'registry.example.com:5000' or "
                f"'ghcr.io' (no scheme, no path), got {value[:100]!r}"
            )
            continue
        out[field] = value
    if partial and not data and not c.errors:
        c.fail("body must set at least one of " + ", ".join(REGISTRY_FIELDS))
    c.done()
    return out


def registry_json(registry: ContainerRegistry, tz: tzinfo) -> dict[str, Any]:
    """Never the password."""
    return {
        "id": registry.id,
        "name": registry.name,
        "host": registry.host,
        "username": registry.username,
        "created_at": format_ms(registry.created_at, tz),
        "updated_at": format_ms(registry.updated_at, tz),
    }


def parse_env_variable(body: Any, *, partial: bool) -> dict[str, str]:
    """A runner env variable create (`partial=False`) or PATCH body."""
    c = _Checker()
    data = c.object(body, ("env_key", "env_val"))
    out: dict[str, str] = {}
    if "env_key" in data or not partial:
        if "env_key" not in data:
            c.fail("env_key is required")
        elif (key := _env_key(c, data["env_key"], "env_key")) is not None:
            out["env_key"] = key
    if "env_val" in data or not partial:
        if "env_val" not in data:
            c.fail("env_val is required")
        else:
            val = c.text("env_val", data["env_val"], max_len=ENV_VAL_MAX)
            if val is not None:
                out["env_val"] = val
    if partial and not data and not c.errors:
        c.fail("body must set env_key, env_val or both")
    c.done()
    return out


# -- runs -----------------------------------------------------------------------


def parse_trigger(body: Any) -> list[tuple[str, str]]:
    """A trigger body (`{}` or `{"env_variables": [...]}`) → the env overrides."""
    c = _Checker()
    data = c.object(body, ("env_variables",))
    env: list[tuple[str, str]] | None = []
    if "env_variables" in data:
        env = _env_list(c, data["env_variables"], "env_variables")
    c.done()
    return env or []


def parse_idempotency_key(value: str | None) -> str | None:
    """The `Idempotency-Key` header: 1-255 visible ASCII characters, or absent."""
    if value is None:
        return None
    if not 1 <= len(value) <= IDEMPOTENCY_KEY_MAX or not all(33 <= ord(ch) <= 126 for ch in value):
        raise Invalid(
            [
                f"Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX} visible "
                "ASCII characters without spaces"
            ]
        )
    return value


def merge_env(
    defaults: list[EnvVariable], overrides: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The runner's defaults, then the run's overrides, each key once."""
    merged = {e.env_key: e.env_val for e in defaults}
    merged.update(overrides)
    return list(merged.items())


def parse_run_list_query(query: Any) -> tuple[int, Status | None, str | None]:
    """`limit`, `status`, `before` of GET …/runs."""
    c = _Checker()
    for key in query:
        if key not in ("limit", "status", "before"):
            c.fail(
                f"{_show_key(key)} is not a known query parameter (known: limit, status, before)"
            )
    limit = RUNS_LIMIT_DEFAULT
    if "limit" in query:
        raw = query["limit"]
        if not _is_count(raw) or not 1 <= int(raw) <= RUNS_LIMIT_MAX:
            c.fail(f"limit must be a whole number from 1 to {RUNS_LIMIT_MAX}, got {raw[:20]!r}")
        else:
            limit = int(raw)
    status: Status | None = None
    if "status" in query:
        try:
            status = Status(query["status"])
        except ValueError:
            c.fail(
                f"status must be one of {', '.join(s.value for s in Status)}, "
                f"got {query['status'][:20]!r}"
            )
    before = query.get("before")
    if before is not None and not is_uuid(before):
        c.fail(f"before must be a run id (a UUID), got {before[:40]!r}")
    elif before is not None:
        before = before.lower()
    c.done()
    return limit, status, before


def _is_count(raw: str) -> bool:
    """Plain ASCII digits, short enough for int() (which takes '²' and refuses
    very long strings)."""
    return 0 < len(raw) <= 12 and raw.isascii() and raw.isdigit()


def parse_tail(query: Any) -> int | None:
    return parse_text_logs_query(query)[0]


def parse_text_logs_query(query: Any) -> tuple[int | None, bool]:
    """`tail` and `follow` of GET …/logs as text/plain."""
    c = _Checker()
    _known_query(c, query, ("tail", "follow"))
    tail = None
    if "tail" in query:
        raw = query["tail"]
        if not _is_count(raw) or int(raw) > TAIL_MAX:
            c.fail(f"tail must be a whole number from 0 to {TAIL_MAX}, got {raw[:20]!r}")
        else:
            tail = int(raw)
    follow = _flag(c, query, "follow")
    c.done()
    return tail, follow


@dataclass
class LogsPage:
    limit: int
    after: int | None
    before: int | None
    stream: int | None


def parse_json_logs_query(query: Any) -> LogsPage:
    """`limit`, `after`, `before`, `stream` of GET …/logs as JSON."""
    c = _Checker()
    _known_query(c, query, ("limit", "after", "before", "stream"))
    limit = LOGS_LIMIT_DEFAULT
    if "limit" in query:
        raw = query["limit"]
        if not _is_count(raw) or not 1 <= int(raw) <= LOGS_LIMIT_MAX:
            c.fail(f"limit must be a whole number from 1 to {LOGS_LIMIT_MAX}, got {raw[:20]!r}")
        else:
            limit = int(raw)
    cursors: dict[str, int | None] = {"after": None, "before": None}
    for key in cursors:
        if key in query:
            raw = query[key]
            if not _is_count(raw):
                c.fail(f"{key} must be a log entry id from this log, got {raw[:40]!r}")
            else:
                cursors[key] = int(raw)
    if cursors["after"] is not None and cursors["before"] is not None:
        c.fail("after and before cannot be used together")
    stream = _stream_filter(c, query)
    c.done()
    return LogsPage(limit, cursors["after"], cursors["before"], stream)


def parse_sse_logs_query(query: Any, last_event_id: str | None) -> tuple[int | None, int | None]:
    """(resume cursor from `Last-Event-ID`, stream filter) of GET …/logs as SSE."""
    c = _Checker()
    _known_query(c, query, ("stream",))
    cursor = None
    if last_event_id is not None and last_event_id.strip():
        if not _is_count(last_event_id.strip()):
            c.fail(f"Last-Event-ID header must be a log entry id, got {last_event_id[:40]!r}")
        else:
            cursor = int(last_event_id.strip())
    stream = _stream_filter(c, query)
    c.done()
    return cursor, stream


def _known_query(c: _Checker, query: Any, known: tuple[str, ...]) -> None:
    for key in query:
        if key not in known:
            c.fail(f"{_show_key(key)} is not a known query parameter (known: {', '.join(known)})")


def _flag(c: _Checker, query: Any, key: str) -> bool:
    raw = query.get(key)
    if raw is None:
        return False
    if raw.lower() in ("true", "1", "yes", ""):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    c.fail(f"{key} must be true or false, got {raw[:20]!r}")
    return False


def _stream_filter(c: _Checker, query: Any) -> int | None:
    raw = query.get("stream")
    if raw is None:
        return None
    if raw not in LOG_STREAMS:
        c.fail(f"stream must be stdout or stderr, got {raw[:20]!r}")
        return None
    return LOG_STREAMS[raw]


# -- rendering ------------------------------------------------------------------


def runner_json(runner: Runner, config: Config) -> dict[str, Any]:
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


def env_json(env: EnvVariable, tz: tzinfo) -> dict[str, Any]:
    return {
        "id": env.id,
        "env_key": env.env_key,
        "env_val": env.env_val,
        "created_at": format_ms(env.created_at, tz),
        "updated_at": format_ms(env.updated_at, tz),
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


def run_json(run: Run, tz: tzinfo) -> dict[str, Any]:
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
