"""The API's time format: exact milliseconds with the configured zone's offset."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from runnerd.timefmt import format_ms, parse_time

# 2026-01-15T09:01:00Z
JAN_15_0901_UTC = 1_768_467_660_000
FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d\Z")


def _ms(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def test_reference_constant_is_what_the_tests_assume() -> None:
    assert _ms(datetime(2026, 1, 15, 9, 1, tzinfo=UTC)) == JAN_15_0901_UTC


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Europe/Berlin", "2026-01-15T10:01:00.000+01:00"),
        ("UTC", "2026-01-15T09:01:00.000+00:00"),
        ("Asia/Kolkata", "2026-01-15T14:31:00.000+05:30"),
        ("America/New_York", "2026-01-15T04:01:00.000-05:00"),
    ],
)
def test_format_ms_renders_milliseconds_and_the_zones_offset(zone: str, expected: str) -> None:
    assert format_ms(JAN_15_0901_UTC, ZoneInfo(zone)) == expected


def test_format_ms_uses_the_summer_offset_in_summer() -> None:
    july = _ms(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    assert format_ms(july, ZoneInfo("Europe/Berlin")) == "2026-07-01T14:00:00.000+02:00"


def test_format_ms_utc_is_rendered_as_plus_zero_not_z() -> None:
    assert format_ms(0, UTC) == "1970-01-01T00:00:00.000+00:00"


def test_format_ms_before_the_epoch_keeps_the_exact_millisecond() -> None:
    assert format_ms(-1, UTC) == "1969-12-31T23:59:59.999+00:00"


def test_format_ms_of_none_is_none() -> None:
    assert format_ms(None, ZoneInfo("UTC")) is None


@pytest.mark.parametrize("ms_part", [1, 7, 9, 99, 123, 999])
def test_format_ms_keeps_the_exact_millisecond(ms_part: int) -> None:
    s = format_ms(JAN_15_0901_UTC + ms_part, ZoneInfo("Europe/Berlin"))
    assert s == f"2026-01-15T10:01:00.{ms_part:03d}+01:00"


def test_format_ms_round_trips_exactly_over_many_values() -> None:
    rng = random.Random(20260115)
    zones = [
        ZoneInfo("UTC"),
        ZoneInfo("Europe/Berlin"),
        ZoneInfo("Asia/Kolkata"),
        ZoneInfo("America/St_Johns"),
    ]
    values = [JAN_15_0901_UTC + d for d in range(0, 2000)]  # every ms ending
    values += [rng.randrange(0, 4_102_444_800_000) for _ in range(3000)]  # up to 2100
    values += [1, 7, 9, 999, 1001, 1_700_000_000_001, 1_700_000_000_007, 1_700_000_000_009]
    for i, ms in enumerate(values):
        tz = zones[i % len(zones)]
        s = format_ms(ms, tz)
        assert s is not None and FORMAT.match(s), s
        assert _ms(datetime.fromisoformat(s)) == ms, (ms, s)
        assert int(s[20:23]) == ms % 1000, (ms, s)


# -- the times the API takes (a trigger's run_at) ------------------------------------


def test_parse_time_reads_back_every_time_the_api_writes() -> None:
    rng = random.Random(20261202)
    zones = [ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/St_Johns")]
    for i in range(2000):
        ms = rng.randrange(0, 4_102_444_800_000)
        s = format_ms(ms, zones[i % len(zones)])
        assert s is not None and parse_time(s) == ms, (ms, s)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-15T09:01:00Z", JAN_15_0901_UTC),
        ("2026-01-15T09:01:00+00:00", JAN_15_0901_UTC),
        ("2026-01-15T09:01:00-00:00", JAN_15_0901_UTC),
        ("2026-01-15T10:01:00.5+01:00", JAN_15_0901_UTC + 500),
        ("2026-01-15T10:01:00.123999+01:00", JAN_15_0901_UTC + 123),  # below a ms: dropped
        ("2026-01-15T10:01:00.123456789+01:00", JAN_15_0901_UTC + 123),
        ("2026-01-15T03:31:00-05:30", JAN_15_0901_UTC),
    ],
)
def test_parse_time_takes_z_any_offset_and_any_fraction(text: str, expected: int) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-01-15T10:01:00", "needs a UTC offset"),
        ("2026-01-15T10:01", "needs a UTC offset"),
        ("2026-01-15 10:01:00Z", "must be a time such as"),
        ("2026-01-15", "must be a time such as"),
        ("1768467660000", "must be a time such as"),
        ("2026-01-15t10:01:00z", "must be a time such as"),
        ("2026-13-01T00:00:00Z", "is not a valid time (month must be in 1..12)"),
        ("2026-01-15T10:01:00+24:00", "is not a valid time (the UTC offset must be less than"),
    ],
)
def test_parse_time_says_what_is_wrong_with_a_bad_time(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_time(text)
