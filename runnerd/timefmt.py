"""The API's one time format: `2026-01-15T10:01:00.000+01:00`, in the configured zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

# What the API takes (e.g. a trigger's `run_at`): its own format, and also `Z` for
# UTC and any fraction of a second or none (what other clients' RFC 3339 looks like).
# Always with an offset: a time without one would depend on whose clock reads it.
TIME_INPUT_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)
_TIME_INPUT = re.compile(TIME_INPUT_PATTERN)
_NO_OFFSET = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EXAMPLE = "2026-01-15T10:01:00.000+01:00"


def format_ms(ms: int | None, tz: tzinfo) -> str | None:
    """Milliseconds since the epoch → ISO 8601 with milliseconds and UTC offset."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)  # whole seconds: exact, no float rounding
    dt = datetime.fromtimestamp(seconds, tz).replace(microsecond=millis * 1000)
    return dt.isoformat(timespec="milliseconds")


def parse_time(text: str) -> int:
    """A time the API takes → milliseconds since the epoch (a fraction below the
    millisecond is dropped). ValueError, its message for a person, when `text` is
    not such a time."""
    if not _TIME_INPUT.match(text):
        if _NO_OFFSET.match(text):
            raise ValueError(f"needs a UTC offset (such as {EXAMPLE} or Z for UTC), got {text!r}")
        raise ValueError(f"must be a time such as {EXAMPLE} (or Z for UTC), got {text[:60]!r}")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as e:
        why = "the UTC offset must be less than 24:00" if "offset" in str(e) else str(e)
        raise ValueError(f"is not a valid time ({why}), got {text!r}") from None
    return (dt - _EPOCH) // timedelta(milliseconds=1)
