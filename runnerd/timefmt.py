"""The API's one time format: `2026-01-15T10:01:00.000+01:00`, in the configured zone."""

from __future__ import annotations

from datetime import datetime, tzinfo


def format_ms(ms: int | None, tz: tzinfo) -> str | None:
    """Milliseconds since the epoch → ISO 8601 with milliseconds and UTC offset."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)  # whole seconds: exact, no float rounding
    dt = datetime.fromtimestamp(seconds, tz).replace(microsecond=millis * 1000)
    return dt.isoformat(timespec="milliseconds")
