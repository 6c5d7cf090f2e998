"""Query strings and headers, declared once: what models cannot say well.

Each parameter is one `Param`: its name, limits, description, default and (for the
logs endpoint) the forms that take it. From that one declaration come both the checks
here (the known lists, the limits, the defaults applied when absent) and the OpenAPI
parameter objects (`Param.openapi()`, which `openapi` puts in the document).
Query values are always strings, checked here by hand so each problem reads as
`parameter: message` like the bodies' problems.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from ..models import Status, Trigger
from .fields import (
    IDEMPOTENCY_KEY_MAX,
    LOG_STREAMS,
    LOGS_LIMIT_DEFAULT,
    LOGS_LIMIT_MAX,
    RUNS_LIMIT_DEFAULT,
    RUNS_LIMIT_MAX,
    TAIL_MAX,
    Invalid,
    is_uuid,
)

Query = Mapping[str, str]

# The forms of GET …/logs, by the media type `Accept` chooses.
TEXT, JSON, SSE = "text/plain", "application/json", "text/event-stream"


class _Checker:
    """Collects every problem of one query instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append(f"{field}: {message}")

    def done(self) -> None:
        if self.errors:
            raise Invalid(self.errors)


class _Bad(Exception):
    """One parameter's problem (the message after `name: `)."""


@dataclass(frozen=True)
class Param:
    """One optional query parameter (or header). Subclasses say its schema and how a
    raw string is read; `forms` are the logs forms that take it, said first in the
    description."""

    name: str
    description: str
    forms: tuple[str, ...] = ()
    default: object = None  # applied when absent, said in the document's description
    where: Literal["query", "header"] = "query"

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def read(self, raw: str) -> object:
        raise NotImplementedError

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI parameter object. The default is said in words, never as the
        schema's `default`: generated clients send a schema default on every call, and
        the logs endpoint rejects parameters its chosen form does not take (`limit` in
        text mode, `follow` in JSON mode), so a client would fail unless the caller knew
        to unset them. Absent, the server applies the same default."""
        description = self.description
        if self.forms:
            description = f"{', '.join(self.forms)}: {description}"
        if self.default is not None:
            shown = str(self.default).lower() if isinstance(self.default, bool) else self.default
            description = f"{description} Default: `{shown}`."
        return {
            "name": self.name,
            "in": self.where,
            "required": False,
            "schema": self.schema(),
            "description": description,
        }


@dataclass(frozen=True)
class Count(Param):
    """A whole number from `low` to `high`."""

    low: int = 1
    high: int = 1

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}

    def read(self, raw: str) -> object:
        if not _is_count(raw) or not self.low <= int(raw) <= self.high:
            raise _Bad(f"must be a whole number from {self.low} to {self.high}, got {raw[:20]!r}")
        return int(raw)


@dataclass(frozen=True)
class Flag(Param):
    """`true`/`1`/`yes`/empty or `false`/`0`/`no`, any case."""

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def read(self, raw: str) -> object:
        if raw.lower() in ("true", "1", "yes", ""):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise _Bad(f"must be true or false, got {raw[:20]!r}")


@dataclass(frozen=True)
class Choice(Param):
    """One of `choices` (name → the value the server uses), said as `said`."""

    choices: Mapping[str, object] = field(default_factory=dict)
    said: str = ""
    ref: str | None = None  # a component schema that lists the choices, else an enum

    def schema(self) -> dict[str, Any]:
        if self.ref:
            return {"$ref": f"#/components/schemas/{self.ref}"}
        return {"type": "string", "enum": list(self.choices)}

    def read(self, raw: str) -> object:
        if raw not in self.choices:
            raise _Bad(f"must be {self.said}, got {raw[:20]!r}")
        return self.choices[raw]


@dataclass(frozen=True)
class RunId(Param):
    """A run id, given back in the stored lowercase form."""

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "uuid"}

    def read(self, raw: str) -> object:
        if not is_uuid(raw):
            raise _Bad(f"must be a run id (a UUID), got {raw[:40]!r}")
        return raw.lower()


@dataclass(frozen=True)
class Cursor(Param):
    """A log entry's id; `not_with` names a cursor it cannot be used together with
    (declared before it)."""

    not_with: str | None = None

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def read(self, raw: str) -> object:
        if not _is_count(raw):
            raise _Bad(f"must be a log entry id from this log, got {raw[:40]!r}")
        return int(raw)


@dataclass(frozen=True)
class Header(Param):
    """A request header; checked by its own function below, its schema declared here."""

    where: Literal["query", "header"] = "header"
    schema_: Mapping[str, Any] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", **self.schema_}


# -- the declarations ---------------------------------------------------------------

# fmt: off
RUN_LIST_QUERY: tuple[Param, ...] = (
    Count("limit", "How many runs at most.", default=RUNS_LIMIT_DEFAULT, high=RUNS_LIMIT_MAX),
    Choice("status", "Only runs in this status.", ref="RunStatus",
           choices={s.value: s for s in Status},
           said=f"one of {', '.join(s.value for s in Status)}"),
    Choice("trigger", "Only runs made by this trigger.", ref="Trigger",
           choices={t.value: t for t in Trigger},
           said=f"one of {', '.join(t.value for t in Trigger)}"),
    RunId("before", "Only runs queued before this run, which must be one of this runner's: "
          "pass the last id of a page to get the next page."),
)
LAST_EVENT_ID = Header("Last-Event-ID", "resume after this entry.", forms=(SSE,))
# Every parameter of GET …/logs, in the document's order; each form takes its `forms`.
LOGS_QUERY: tuple[Param, ...] = (
    Count("tail", "only the last N lines.", forms=(TEXT,), low=0, high=TAIL_MAX),
    Flag("follow", "stream the output live until the run completes.", forms=(TEXT,),
         default=False),
    Count("limit", "entries per page.", forms=(JSON,), default=LOGS_LIMIT_DEFAULT,
          high=LOGS_LIMIT_MAX),
    Cursor("after", "the page after this entry (an opaque cursor: an entry's `id`).",
           forms=(JSON,)),
    Cursor("before", "the page before this entry (an entry's `id`).", forms=(JSON,),
           not_with="after"),
    Choice("stream", "only this stream.", forms=(JSON, SSE), choices=LOG_STREAMS,
           said="stdout or stderr"),
    LAST_EVENT_ID,
)
# The logs endpoint's forms and what each takes, in words for the document.
LOGS_DESCRIPTION = (
    "The run's output, chosen by `Accept`:\n\n"
    "- default (`text/plain`, or anything without `application/json` or `text/event-stream`): "
    "the bytes exactly as the container wrote them, stdout and stderr in the order the engine "
    "received them; query `tail` (the last N lines) and `follow` (`true`: stream as the "
    "container writes, chunked, ending when the run completes). Without `follow`, what has "
    "been written so far (empty while pending).\n"
    "- `application/json` (and not `text/plain`): a page of entries "
    '`{"logs": [{id, ts, stream, msg}]}`; query `limit` (default '
    f"{LOGS_LIMIT_DEFAULT}, max {LOGS_LIMIT_MAX}), `after` or `before` (an "
    "entry's `id`: the page after or before it; not both), `stream` (`stdout` or `stderr`).\n"
    "- `text/event-stream`: Server-Sent Events, live: one `event: log` per line (`id` = the "
    "entry's cursor, `data` = JSON `{ts, stream, msg}`), then `event: end` whose `data` is the "
    "final Run. `Last-Event-ID` resumes after that entry, without gaps or repeats; query "
    "`stream` filters.\n\n"
    "Query parameters that the chosen form does not take are a 400, as are cursors that are "
    "not entry ids of this run's log."
)
IDEMPOTENCY_KEY = Header(
    "Idempotency-Key",
    "Visible ASCII, no spaces. The same key for the same runner within 24 hours returns the "
    "first run instead of queueing another, also under concurrent requests.",
    schema_={"minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX, "pattern": "^[!-~]+$"},
)
# fmt: on


def _logs_form(form: str) -> tuple[Param, ...]:
    return tuple(p for p in LOGS_QUERY if form in p.forms and p.where == "query")


TEXT_LOGS_QUERY, JSON_LOGS_QUERY, SSE_LOGS_QUERY = map(_logs_form, (TEXT, JSON, SSE))


# -- the checks ---------------------------------------------------------------------


def _read(c: _Checker, query: Query, params: tuple[Param, ...]) -> dict[str, object]:
    """Each parameter's value (its default when absent); every problem into `c`."""
    _known(c, query, params)
    return _values(c, query, params)


def _known(c: _Checker, query: Query, params: tuple[Param, ...]) -> None:
    known = [p.name for p in params]
    for key in query:
        if key not in known:
            c.fail(_show_key(key), f"is not a known query parameter (known: {', '.join(known)})")


def _values(c: _Checker, query: Query, params: tuple[Param, ...]) -> dict[str, object]:
    values: dict[str, object] = {}
    for p in params:
        values[p.name] = p.default
        if p.name not in query:
            continue
        try:
            values[p.name] = p.read(query[p.name])
        except _Bad as bad:
            c.fail(p.name, str(bad))
            continue
        if isinstance(p, Cursor) and p.not_with and values.get(p.not_with) is not None:
            c.fail(p.name, f"cannot be used together with {p.not_with}")
    return values


def _show_key(key: str) -> str:
    shown = key if len(key) <= 60 else key[:57] + "..."
    return shown if shown.isidentifier() else repr(shown)


def _is_count(raw: str) -> bool:
    """Plain ASCII digits, short enough for int() (which takes '²' and refuses
    very long strings)."""
    return 0 < len(raw) <= 12 and raw.isascii() and raw.isdigit()


@dataclass(frozen=True)
class RunListQuery:
    limit: int
    status: Status | None
    trigger: Trigger | None
    before: str | None


def parse_run_list_query(query: Query) -> RunListQuery:
    """`limit`, `status`, `trigger`, `before` of GET …/runs."""
    c = _Checker()
    v = _read(c, query, RUN_LIST_QUERY)
    c.done()
    return RunListQuery(
        cast(int, v["limit"]),
        cast("Status | None", v["status"]),
        cast("Trigger | None", v["trigger"]),
        cast("str | None", v["before"]),
    )


def parse_tail(query: Query) -> int | None:
    return parse_text_logs_query(query)[0]


def parse_text_logs_query(query: Query) -> tuple[int | None, bool]:
    """`tail` and `follow` of GET …/logs as text/plain."""
    c = _Checker()
    v = _read(c, query, TEXT_LOGS_QUERY)
    c.done()
    return cast("int | None", v["tail"]), cast(bool, v["follow"])


@dataclass
class LogsPage:
    limit: int
    after: int | None
    before: int | None
    stream: int | None


def parse_json_logs_query(query: Query) -> LogsPage:
    """`limit`, `after`, `before`, `stream` of GET …/logs as JSON."""
    c = _Checker()
    v = _read(c, query, JSON_LOGS_QUERY)
    c.done()
    return LogsPage(
        cast(int, v["limit"]),
        cast("int | None", v["after"]),
        cast("int | None", v["before"]),
        cast("int | None", v["stream"]),
    )


def parse_sse_logs_query(query: Query, last_event_id: str | None) -> tuple[int | None, int | None]:
    """(resume cursor from `Last-Event-ID`, stream filter) of GET …/logs as SSE."""
    c = _Checker()
    _known(c, query, SSE_LOGS_QUERY)
    cursor = None
    if last_event_id is not None and last_event_id.strip():
        if not _is_count(last_event_id.strip()):
            c.fail(
                LAST_EVENT_ID.name, f"must be a log entry id (header), got {last_event_id[:40]!r}"
            )
        else:
            cursor = int(last_event_id.strip())
    v = _values(c, query, SSE_LOGS_QUERY)
    c.done()
    return cursor, cast("int | None", v["stream"])


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
