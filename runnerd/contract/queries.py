"""Query strings and headers: what models cannot say well.

Query values are always strings, checked here by hand so each problem reads as
`parameter: message` like the bodies' problems.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..models import Status
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


def _show_key(key: str) -> str:
    shown = key if len(key) <= 60 else key[:57] + "..."
    return shown if shown.isidentifier() else repr(shown)


class _Checker:
    """Collects every problem of one query instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append(f"{field}: {message}")

    def done(self) -> None:
        if self.errors:
            raise Invalid(self.errors)


def parse_run_list_query(query: Query) -> tuple[int, Status | None, str | None]:
    """`limit`, `status`, `before` of GET …/runs."""
    c = _Checker()
    _known_query(c, query, ("limit", "status", "before"))
    limit = RUNS_LIMIT_DEFAULT
    if "limit" in query:
        raw = query["limit"]
        if not _is_count(raw) or not 1 <= int(raw) <= RUNS_LIMIT_MAX:
            c.fail("limit", f"must be a whole number from 1 to {RUNS_LIMIT_MAX}, got {raw[:20]!r}")
        else:
            limit = int(raw)
    status: Status | None = None
    if "status" in query:
        try:
            status = Status(query["status"])
        except ValueError:
            c.fail(
                "status",
                f"must be one of {', '.join(s.value for s in Status)}, "
                f"got {query['status'][:20]!r}",
            )
    before = query.get("before")
    if before is not None and not is_uuid(before):
        c.fail("before", f"must be a run id (a UUID), got {before[:40]!r}")
    elif before is not None:
        before = before.lower()
    c.done()
    return limit, status, before


def _is_count(raw: str) -> bool:
    """Plain ASCII digits, short enough for int() (which takes '²' and refuses
    very long strings)."""
    return 0 < len(raw) <= 12 and raw.isascii() and raw.isdigit()


def parse_tail(query: Query) -> int | None:
    return parse_text_logs_query(query)[0]


def parse_text_logs_query(query: Query) -> tuple[int | None, bool]:
    """`tail` and `follow` of GET …/logs as text/plain."""
    c = _Checker()
    _known_query(c, query, ("tail", "follow"))
    tail = None
    if "tail" in query:
        raw = query["tail"]
        if not _is_count(raw) or int(raw) > TAIL_MAX:
            c.fail("tail", f"must be a whole number from 0 to {TAIL_MAX}, got {raw[:20]!r}")
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


def parse_json_logs_query(query: Query) -> LogsPage:
    """`limit`, `after`, `before`, `stream` of GET …/logs as JSON."""
    c = _Checker()
    _known_query(c, query, ("limit", "after", "before", "stream"))
    limit = LOGS_LIMIT_DEFAULT
    if "limit" in query:
        raw = query["limit"]
        if not _is_count(raw) or not 1 <= int(raw) <= LOGS_LIMIT_MAX:
            c.fail("limit", f"must be a whole number from 1 to {LOGS_LIMIT_MAX}, got {raw[:20]!r}")
        else:
            limit = int(raw)
    cursors: dict[str, int | None] = {"after": None, "before": None}
    for key in cursors:
        if key in query:
            raw = query[key]
            if not _is_count(raw):
                c.fail(key, f"must be a log entry id from this log, got {raw[:40]!r}")
            else:
                cursors[key] = int(raw)
    if cursors["after"] is not None and cursors["before"] is not None:
        c.fail("before", "cannot be used together with after")
    stream = _stream_filter(c, query)
    c.done()
    return LogsPage(limit, cursors["after"], cursors["before"], stream)


def parse_sse_logs_query(query: Query, last_event_id: str | None) -> tuple[int | None, int | None]:
    """(resume cursor from `Last-Event-ID`, stream filter) of GET …/logs as SSE."""
    c = _Checker()
    _known_query(c, query, ("stream",))
    cursor = None
    if last_event_id is not None and last_event_id.strip():
        if not _is_count(last_event_id.strip()):
            c.fail("Last-Event-ID", f"must be a log entry id (header), got {last_event_id[:40]!r}")
        else:
            cursor = int(last_event_id.strip())
    stream = _stream_filter(c, query)
    c.done()
    return cursor, stream


def _known_query(c: _Checker, query: Query, known: tuple[str, ...]) -> None:
    for key in query:
        if key not in known:
            c.fail(_show_key(key), f"is not a known query parameter (known: {', '.join(known)})")


def _flag(c: _Checker, query: Query, key: str) -> bool:
    raw = query.get(key)
    if raw is None:
        return False
    if raw.lower() in ("true", "1", "yes", ""):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    c.fail(key, f"must be true or false, got {raw[:20]!r}")
    return False


def _stream_filter(c: _Checker, query: Query) -> int | None:
    raw = query.get("stream")
    if raw is None:
        return None
    if raw not in LOG_STREAMS:
        c.fail("stream", f"must be stdout or stderr, got {raw[:20]!r}")
        return None
    return LOG_STREAMS[raw]


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
