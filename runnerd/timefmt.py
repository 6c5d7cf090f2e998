"""The API's one time format: `2026-01-15T10:01:00.000+01:00`, in the configured zone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def format_ms(ms: int | None, tz: tzinfo) -> str | None:
    """Milliseconds since the epoch → ISO 8601 with milliseconds and UTC offset."""
    if ms is None:
        return None
    dt = (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)  # exact, no float
    return dt.isoformat(timespec="milliseconds")
