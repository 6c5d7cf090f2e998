"""Schedules' `cron` expressions: the syntax, its errors, and the instants they fire at,
DST rules included (a gap's wall times fire once at its end; a repeated wall time fires
at its first occurrence; `@every` counts real time)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest

from runnerd import cron
from runnerd.cron import (
    MACROS,
    MAX_COUNTED,
    Cadence,
    CronError,
    parse,
    parse_duration,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
HOUR = 3_600_000
MINUTE = 60_000


def utc(text: str) -> int:
    """'2026-03-29 01:00' (UTC) → epoch ms."""
    dt = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1000


def local(ms: int, tz: tzinfo) -> str:
    """Epoch ms → '2026-03-29 03:00 +02:00', the wall time and offset in `tz`."""
    dt = datetime.fromtimestamp(ms // 1000, tz)
    return f"{dt:%Y-%m-%d %H:%M} {dt.isoformat()[-6:]}"


def fires(expr: str, tz: tzinfo, after: int, count: int, anchor: int = 0) -> list[int]:
    cadence = parse(expr)
    out: list[int] = []
    for _ in range(count):
        nxt = cadence.next_after(after, tz, anchor)
        assert nxt is not None
        out.append(nxt)
        after = nxt
    return out


def fires_between(expr: str, tz: tzinfo, start: int, end: int) -> list[int]:
    """Every fire instant in (start, end], by next_after."""
    cadence = parse(expr)
    out: list[int] = []
    nxt = cadence.next_after(start, tz, 0)
    while nxt is not None and nxt <= end:
        out.append(nxt)
        nxt = cadence.next_after(nxt, tz, 0)
    return out


# --- syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/15 * * * *", "2026-05-05 10:07", ["10:15", "10:30", "10:45", "11:00"]),
        ("5-10/2 3 * * *", "2026-05-05 00:00", ["03:05", "03:07", "03:09", "05-06 03:05"]),
        ("0,30 9-10 * * *", "2026-05-05 00:00", ["09:00", "09:30", "10:00", "10:30"]),
        ("10/20 * * * *", "2026-05-05 10:00", ["10:10", "10:30", "10:50", "11:10"]),
        # 2026-05-08 is a Friday: MON-FRI skips the weekend.
        ("0 9 * * MON-FRI", "2026-05-08 10:00", ["05-11 09:00", "05-12 09:00"]),
        ("0 9 * * mon,wed", "2026-05-08 10:00", ["05-11 09:00", "05-13 09:00"]),
        # 0 and 7 are both Sunday (2026-05-10).
        ("0 12 * * 7", "2026-05-05 00:00", ["05-10 12:00", "05-17 12:00"]),
        ("0 12 * * 0", "2026-05-05 00:00", ["05-10 12:00", "05-17 12:00"]),
        ("0 0 1 JAN,jul *", "2026-05-05 00:00", ["07-01 00:00", "2027-01-01 00:00"]),
        ("0 0 1 */6 *", "2026-05-05 00:00", ["07-01 00:00", "2027-01-01 00:00"]),
        ("0 0 29 2 *", "2026-01-01 00:00", ["2028-02-29 00:00", "2032-02-29 00:00"]),
        # Day-of-month and day-of-week both restricted: either one (the 13th OR a Friday).
        # 2026-11-13 is a Friday; 2026-11-06 and -20 are Fridays.
        (
            "0 0 13 * FRI",
            "2026-11-01 00:00",
            ["11-06 00:00", "11-13 00:00", "11-20 00:00", "11-27 00:00", "12-04 00:00"],
        ),
        ("0 0 13 * *", "2026-11-01 00:00", ["11-13 00:00", "12-13 00:00"]),
        ("0 0 * * FRI", "2026-11-01 00:00", ["11-06 00:00", "11-13 00:00"]),
        # One of them starting with `*`: both (the 1st, 11th, 21st, 31st AND a Friday).
        # Fridays on those days after 2026-05-01: 07-31, 08-21, 09-11, 12-11.
        (
            "0 0 */10 * FRI",
            "2026-05-01 00:00",
            ["07-31 00:00", "08-21 00:00", "09-11 00:00", "12-11 00:00"],
        ),
    ],
)
def test_cron_fields_fire_at_the_named_times(expr: str, after: str, expected: list[str]) -> None:
    got = fires(expr, UTC, utc(after), len(expected))
    year = after[:5]
    day = after[:11]
    want = []
    for item in expected:
        if len(item) == 5:  # "10:15": the same day
            item = day + item
        elif len(item) == 11:  # "05-11 09:00": the same year
            item = year + item
        want.append(utc(item))
    assert got == want


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_a_macro_fires_as_the_fields_it_stands_for(macro: str) -> None:
    start = utc("2026-01-01 00:00")
    assert fires(macro, BERLIN, start, 5) == fires(MACROS[macro], BERLIN, start, 5)


def test_macros_are_the_usual_ones() -> None:
    assert MACROS == {
        "@hourly": "0 * * * *",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *",
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
    }


def test_parse_keeps_the_expression_as_given_without_outer_whitespace() -> None:
    assert parse("  0 9 * * MON-FRI \n") == Cadence("0 9 * * MON-FRI", None)
    assert parse("\t@daily ") == Cadence("@daily", None)
    assert parse("0\t9  * * *").expr == "0\t9  * * *"


@pytest.mark.parametrize(
    ("expr", "every_ms"),
    [
        ("@every 30s", 30_000),
        ("@every 1s", 1_000),
        ("@every 5m", 300_000),
        ("@every 2h", 7_200_000),
        ("@every 1h30m", 5_400_000),
        ("@every 1h0m30s", 3_630_000),
        ("@every 90m", 5_400_000),
        ("@every   10s", 10_000),
        ("@EVERY 1H", 3_600_000),
        ("@every 8784h", 366 * 86_400_000),
    ],
)
def test_every_reads_its_duration(expr: str, every_ms: int) -> None:
    assert parse(expr) == Cadence(expr, every_ms)


@pytest.mark.parametrize(
    ("text", "ms"),
    [("30s", 30_000), ("5m", 300_000), ("1h30m", 5_400_000), ("2h", 7_200_000)],
)
def test_parse_duration_gives_milliseconds(text: str, ms: int) -> None:
    assert parse_duration(text) == ms
    assert parse_duration("1h0m30s") == 3_630_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'': a duration is like 30s, 5m, 1h30m"),
        ("5x", "'5x': a duration is like 30s, 5m, 1h30m"),
        ("1.5h", "'1.5h': a duration is like 30s, 5m, 1h30m"),
        ("500ms", "'500ms': a duration is like 30s, 5m, 1h30m"),
        ("30m1h", "'30m1h': a duration is like 30s, 5m, 1h30m"),
        ("0s", "'0s' is shorter than 1 s"),
        ("8785h", "'8785h' is longer than 366 days"),
    ],
)
def test_parse_duration_refuses_what_is_not_a_duration(text: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


FIELDS_HINT = "give the 5 standard ones (minute hour day-of-month month day-of-week) or a macro"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "",
            "is empty; give the 5 standard fields (minute hour day-of-month month "
            "day-of-week), a macro such as @daily, or @every <duration>",
        ),
        (
            " \t\n ",
            "is empty; give the 5 standard fields (minute hour day-of-month month "
            "day-of-week), a macro such as @daily, or @every <duration>",
        ),
        ("* * * *", f"has 4 fields; {FIELDS_HINT}"),
        ("0 * * * * *", f"has 6 fields; {FIELDS_HINT}"),
        ("daily", f"has 1 field; {FIELDS_HINT}"),
        ("61 * * * *", "the minute field '61' is out of range 0-59"),
        ("1,61 * * * *", "the minute field '1,61': '61' is out of range 0-59"),
        ("0-61/5 * * * *", "the minute field '0-61/5': '61' is out of range 0-59"),
        ("0 24 * * *", "the hour field '24' is out of range 0-23"),
        ("* * 32 * *", "the day-of-month field '32' is out of range 1-31"),
        ("* * 0 * *", "the day-of-month field '0' is out of range 1-31"),
        ("* * * 13 *", "the month field '13' is out of range 1-12"),
        ("* * * * 8", "the day-of-week field '8' is out of range 0-7"),
        ("0 0 30 2 *", "the day-of-month field '30' never occurs in the month field '2'"),
        ("0 0 31 4,6 *", "the day-of-month field '31' never occurs in the month field '4,6'"),
        ("5-1 * * * *", "the minute field '5-1' is a range that ends before it starts"),
        ("*/0 * * * *", "the minute field '*/0' has a step of 0; a step is at least 1"),
        ("*/x * * * *", "the minute field '*/x' has a step that is not a whole number"),
        ("1,,2 * * * *", "the minute field '1,,2' has an empty list item"),
        (
            "* * * FOO *",
            "the month field 'FOO' is not valid; use a number 1-12 or a name (JAN-DEC), "
            "a range (1-5), a step (*/15, 1-30/5) or a list (1,15,30)",
        ),
        (
            "* * * * MON,FUN",
            "the day-of-week field 'MON,FUN': 'FUN' is not valid; use a number 0-7 "
            "(0 and 7 are Sunday) or a name (SUN-SAT), a range (1-5), a step (*/15, "
            "1-30/5) or a list (1,15,30)",
        ),
        (
            "? * * * *",
            "the minute field '?' is not valid; use a number 0-59, a range (1-5), "
            "a step (*/15, 1-30/5) or a list (1,15,30)",
        ),
        (
            "* * L * *",
            "the day-of-month field 'L': 'L' is not supported; use a number 1-31, "
            "a range (1-5), a step (*/2) or a list (1,15)",
        ),
        (
            "* * * * 5#2",
            "the day-of-week field '5#2': '#' is not supported; use a number 0-7 (0 and 7 "
            "are Sunday) or a name (SUN-SAT), a range (1-5), a step (*/2) or a list (1,15)",
        ),
        ("@every", "'@every' needs a duration, like 30s, 5m, 1h30m"),
        ("@every 0s", "'@every 0s' is shorter than 1 s"),
        ("@every -5m", "'@every -5m': a duration is like 30s, 5m, 1h30m"),
        ("@every 1d", "'@every 1d': a duration is like 30s, 5m, 1h30m"),
        ("@every 1h 30m", "'@every 1h 30m': a duration is like 30s, 5m, 1h30m"),
        ("@every 9000h", "'@every 9000h' is longer than 366 days"),
        (
            "@minutely",
            "unknown macro '@minutely' (known: @hourly, @daily, @weekly, @monthly, "
            "@yearly, @every <duration>)",
        ),
        (
            "@reboot",
            "unknown macro '@reboot' (known: @hourly, @daily, @weekly, @monthly, "
            "@yearly, @every <duration>)",
        ),
        ("@daily 5", "'@daily 5': the macro @daily takes nothing after it"),
        (
            "0 9 * * lundi\u00e9",
            "has the character U+00E9 at position 14; use plain ASCII letters, digits and * , - /",
        ),
        (
            "0\u00a09 * * *",
            "has the character U+00A0 at position 2; use plain ASCII letters, digits and * , - /",
        ),
        (
            "* * * *\x00 *",
            "has the character U+0000 at position 8; use plain ASCII letters, digits and * , - /",
        ),
        ("1," * 300 + "1 * * * *", "is 609 characters long; at most 512"),
    ],
)
def test_a_bad_expression_is_refused_naming_the_part_that_is_wrong(expr: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse(expr)
    assert str(caught.value) == message


def test_a_long_bad_part_is_shortened_in_the_message() -> None:
    minutes = ",".join(str(m) for m in range(50)) + ",99"
    with pytest.raises(CronError) as caught:
        parse(f"{minutes} * * * *")
    message = str(caught.value)
    assert message.startswith("the minute field '0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15...': ")
    assert message.endswith("'99' is out of range 0-59")


def test_parse_raises_only_cron_error_for_any_text() -> None:
    rng = random.Random(12)
    alphabet = string.digits + "*,-/ @#LW?" + "everyhmsJANFRImon" + "\t\u00e9\u00a0"
    pieces = ["*", "*/5", "1-5", "MON", "@every", "@daily", "5m", "0s", "L", "#", ","]
    for _ in range(3000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        else:
            text = " ".join(rng.choice(pieces) for _ in range(rng.randrange(1, 7)))
        try:
            cadence = parse(text)
        except CronError as e:
            assert str(e)
        else:
            assert cadence.expr == text.strip()
            cadence.next_after(utc("2026-01-01 00:00"), BERLIN, 0)


# --- DST ----------------------------------------------------------------------------------
# Europe/Berlin: 2026-03-29 02:00 CET → 03:00 CEST (01:00 UTC); 2026-10-25 03:00 CEST →
# 02:00 CET (01:00 UTC). America/New_York: 2026-03-08 02:00 EST → 03:00 EDT (07:00 UTC);
# 2026-11-01 02:00 EDT → 01:00 EST (06:00 UTC). Australia/Lord_Howe: 2026-10-04 02:00
# +10:30 → 02:30 +11 (15:30 UTC the day before), a 30-minute gap.


@pytest.mark.parametrize(
    ("tz", "expr", "after", "expected"),
    [
        # A fixed time in the spring-forward gap fires once, at the end of the gap.
        (
            BERLIN,
            "30 2 * * *",
            "2026-03-27 12:00",
            ["2026-03-28 02:30 +01:00", "2026-03-29 03:00 +02:00", "2026-03-30 02:30 +02:00"],
        ),
        (
            NEW_YORK,
            "30 2 * * *",
            "2026-03-06 12:00",
            ["2026-03-07 02:30 -05:00", "2026-03-08 03:00 -04:00", "2026-03-09 02:30 -04:00"],
        ),
        # A fixed time in the repeated hour fires once, at its first occurrence.
        (
            BERLIN,
            "30 2 * * *",
            "2026-10-23 12:00",
            ["2026-10-24 02:30 +02:00", "2026-10-25 02:30 +02:00", "2026-10-26 02:30 +01:00"],
        ),
        (
            NEW_YORK,
            "30 1 * * *",
            "2026-10-30 12:00",
            ["2026-10-31 01:30 -04:00", "2026-11-01 01:30 -04:00", "2026-11-02 01:30 -05:00"],
        ),
        # Several wall times in the gap: still one fire, at its end.
        (
            BERLIN,
            "*/15 2 * * *",
            "2026-03-28 12:00",
            ["2026-03-29 03:00 +02:00", "2026-03-30 02:00 +02:00", "2026-03-30 02:15 +02:00"],
        ),
        (
            NEW_YORK,
            "0,20,40 2 * * *",
            "2026-03-07 12:00",
            ["2026-03-08 03:00 -04:00", "2026-03-09 02:00 -04:00", "2026-03-09 02:20 -04:00"],
        ),
        # Wall times in the gap and right after it: one fire at the end of the gap, then on.
        (
            BERLIN,
            "*/30 2-3 * * *",
            "2026-03-28 12:00",
            ["2026-03-29 03:00 +02:00", "2026-03-29 03:30 +02:00", "2026-03-30 02:00 +02:00"],
        ),
        # The repeated hour's wall times fire in its first pass only.
        (
            BERLIN,
            "*/15 2 * * *",
            "2026-10-24 12:00",
            [
                "2026-10-25 02:00 +02:00",
                "2026-10-25 02:15 +02:00",
                "2026-10-25 02:30 +02:00",
                "2026-10-25 02:45 +02:00",
                "2026-10-26 02:00 +01:00",
            ],
        ),
        (
            NEW_YORK,
            "*/20 1 * * *",
            "2026-10-31 12:00",
            [
                "2026-11-01 01:00 -04:00",
                "2026-11-01 01:20 -04:00",
                "2026-11-01 01:40 -04:00",
                "2026-11-02 01:00 -05:00",
            ],
        ),
        # @hourly: 02:00 does not exist in spring (03:00 fires once), occurs twice in autumn.
        (
            BERLIN,
            "@hourly",
            "2026-03-28 23:30",
            ["2026-03-29 01:00 +01:00", "2026-03-29 03:00 +02:00", "2026-03-29 04:00 +02:00"],
        ),
        (
            BERLIN,
            "@hourly",
            "2026-10-24 22:30",
            [
                "2026-10-25 01:00 +02:00",
                "2026-10-25 02:00 +02:00",
                "2026-10-25 03:00 +01:00",
                "2026-10-25 04:00 +01:00",
            ],
        ),
        (
            NEW_YORK,
            "@hourly",
            "2026-11-01 04:30",
            ["2026-11-01 01:00 -04:00", "2026-11-01 02:00 -05:00", "2026-11-01 03:00 -05:00"],
        ),
        # Lord Howe's gap is 30 minutes: 02:15 does not exist, 02:30 is its end.
        (
            LORD_HOWE,
            "15 2 * * *",
            "2026-10-02 12:00",
            ["2026-10-03 02:15 +10:30", "2026-10-04 02:30 +11:00", "2026-10-05 02:15 +11:00"],
        ),
        (
            LORD_HOWE,
            "*/15 2 * * *",
            "2026-10-03 12:00",
            ["2026-10-04 02:30 +11:00", "2026-10-04 02:45 +11:00", "2026-10-05 02:00 +11:00"],
        ),
        # Its fall-back repeats 01:30-02:00 (2026-04-05): 01:40 fires in the first pass.
        (
            LORD_HOWE,
            "*/20 1 * * *",
            "2026-04-04 00:00",
            [
                "2026-04-05 01:00 +11:00",
                "2026-04-05 01:20 +11:00",
                "2026-04-05 01:40 +11:00",
                "2026-04-06 01:00 +10:30",
            ],
        ),
    ],
)
def test_dst_gap_fires_once_at_its_end_and_a_repeated_time_at_its_first_occurrence(
    tz: ZoneInfo, expr: str, after: str, expected: list[str]
) -> None:
    got = fires(expr, tz, utc(after), len(expected))
    assert [local(ms, tz) for ms in got] == expected


def test_every_counts_real_time_across_both_transitions() -> None:
    for tz, start in ((BERLIN, "2026-03-28 20:00"), (BERLIN, "2026-10-24 20:00")):
        anchor = utc(start)
        got = fires("@every 1h", tz, anchor, 10, anchor=anchor)
        assert got == [anchor + k * HOUR for k in range(1, 11)]
    # The same in New York: the zone plays no part.
    anchor = utc("2026-11-01 03:00")
    assert fires("@every 1h", NEW_YORK, anchor, 6, anchor) == fires(
        "@every 1h", UTC, anchor, 6, anchor
    )


def test_every_fires_on_its_anchor_grid() -> None:
    cadence = parse("@every 30s")
    anchor = utc("2026-05-05 10:00")
    assert cadence.next_after(anchor, UTC, anchor) == anchor + 30_000
    assert cadence.next_after(anchor + 29_999, UTC, anchor) == anchor + 30_000
    assert cadence.next_after(anchor + 30_000, UTC, anchor) == anchor + 60_000
    # Before the anchor: the first fire is one period after it (k >= 1).
    assert cadence.next_after(anchor - HOUR, UTC, anchor) == anchor + 30_000


def test_utc_and_fixed_offset_zones_are_plain() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    assert fires("0 9 * * *", india, utc("2026-03-28 12:00"), 2) == [
        utc("2026-03-29 03:30"),
        utc("2026-03-30 03:30"),
    ]
    assert fires("30 2 * * *", UTC, utc("2026-03-28 12:00"), 1) == [utc("2026-03-29 02:30")]


def test_next_after_is_strictly_after_including_within_the_same_second() -> None:
    cadence = parse("* * * * *")
    at = utc("2026-05-05 10:00")
    assert cadence.next_after(at, BERLIN, 0) == at + MINUTE
    assert cadence.next_after(at - 1, BERLIN, 0) == at
    assert cadence.next_after(at + 500, BERLIN, 0) == at + MINUTE


def test_next_after_from_inside_the_repeated_hours_second_pass_skips_to_after_it() -> None:
    # 02:15 CET is the second pass: every 02:xx fired in the first pass already.
    cadence = parse("* * * * *")
    assert cadence.next_after(utc("2026-10-25 01:15"), BERLIN, 0) == utc("2026-10-25 02:00")
    # From inside the gap's end: the next fire is a minute later, not the gap's end again.
    assert parse("*/15 2-3 * * *").next_after(utc("2026-03-29 01:00"), BERLIN, 0) == utc(
        "2026-03-29 01:15"
    )


def test_next_after_is_none_when_it_never_fires_again() -> None:
    assert parse("0 0 1 1 *").next_after(utc("9999-06-01 00:00"), BERLIN, 0) is None
    assert parse("* * * * *").next_after(utc("9999-12-31 23:59"), UTC, 0) is None


# --- an oracle: minute by minute around each transition -------------------------------------

Matcher = Callable[[datetime], bool]

ORACLE_CASES: list[tuple[str, Matcher]] = [
    ("* * * * *", lambda w: True),
    ("*/15 2 * * *", lambda w: w.minute % 15 == 0 and w.hour == 2),
    ("30 2 * * *", lambda w: w.minute == 30 and w.hour == 2),
    ("30 1 * * *", lambda w: w.minute == 30 and w.hour == 1),
    ("0 * * * *", lambda w: w.minute == 0),
    ("*/20 1-3 * * *", lambda w: w.minute % 20 == 0 and 1 <= w.hour <= 3),
    ("45 1,2 * * 0", lambda w: w.minute == 45 and w.hour in (1, 2) and w.isoweekday() == 7),
]
TRANSITIONS = [
    (BERLIN, "2026-03-28 12:00"),
    (BERLIN, "2026-10-24 12:00"),
    (NEW_YORK, "2026-03-07 12:00"),
    (NEW_YORK, "2026-10-31 12:00"),
    (LORD_HOWE, "2026-10-03 00:00"),
    (LORD_HOWE, "2026-04-04 00:00"),
]


def oracle(matches: Matcher, tz: tzinfo, start: int, end: int) -> list[int]:
    """The fire instants in (start, end] by the rules, read minute by minute in real time:
    a matching wall time fires at its first occurrence; the end of a gap fires when a wall
    time the gap skipped matches (or its own wall time does)."""
    out = []
    for ms in range(start + MINUTE, end + 1, MINUTE):
        now = datetime.fromtimestamp(ms // 1000, tz)
        before = datetime.fromtimestamp(ms // 1000 - 60, tz)
        wall, wall_before = now.replace(tzinfo=None), before.replace(tzinfo=None)
        first_occurrence = now.fold == 0
        skipped = []  # wall times the clock jumped over since the last minute
        step = wall_before + timedelta(minutes=1)
        while step < wall:
            skipped.append(step)
            step += timedelta(minutes=1)
        if (first_occurrence and matches(wall)) or any(matches(w) for w in skipped):
            out.append(ms)
    return out


@pytest.mark.parametrize(("tz", "start"), TRANSITIONS, ids=lambda v: str(v))
@pytest.mark.parametrize(("expr", "matches"), ORACLE_CASES, ids=[c[0] for c in ORACLE_CASES])
def test_fires_match_a_minute_by_minute_reading_of_the_rules_around_transitions(
    expr: str, matches: Matcher, tz: ZoneInfo, start: str
) -> None:
    begin = utc(start)
    end = begin + 48 * HOUR
    assert fires_between(expr, tz, begin, end) == oracle(matches, tz, begin, end)


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, LORD_HOWE, UTC], ids=str)
@pytest.mark.parametrize(
    "expr", ["*/15 2 * * *", "30 2 * * *", "0 */3 * * *", "@daily", "5 4 * * SUN", "0 0 13 * FRI"]
)
def test_a_year_of_fires_is_strictly_increasing_and_each_matches_the_expression(
    expr: str, tz: ZoneInfo
) -> None:
    from cronsim import CronSim

    fields = MACROS.get(expr, expr)
    got = fires_between(expr, tz, utc("2026-01-01 00:00"), utc("2027-01-01 00:00"))
    assert got and all(a < b for a, b in zip(got, got[1:], strict=False))
    for ms in got:
        wall = datetime.fromtimestamp(ms // 1000, tz).replace(tzinfo=None)
        if next(CronSim(fields, wall - timedelta(seconds=1))) == wall:
            continue  # its wall time matches
        # Otherwise only the end of a gap, standing in for a skipped wall time that matches.
        before = datetime.fromtimestamp(ms // 1000 - 1, tz).replace(tzinfo=None)
        skipped = next(CronSim(fields, before))
        assert before < skipped < wall, (local(ms, tz), skipped)


# --- slots_in -----------------------------------------------------------------------------


def test_slots_in_counts_cron_fires_in_a_closed_range() -> None:
    hourly = parse("0 * * * *")
    ten, one = utc("2026-05-05 10:00"), utc("2026-05-05 13:00")
    assert hourly.slots_in(ten, one, BERLIN, 0) == (one, 4)
    assert hourly.slots_in(ten + 1, one - 1, BERLIN, 0) == (one - HOUR, 2)
    assert hourly.slots_in(ten, ten, BERLIN, 0) == (ten, 1)


def test_slots_in_is_empty_for_a_range_with_no_fire_or_start_after_end() -> None:
    hourly = parse("@hourly")
    ten = utc("2026-05-05 10:00")
    assert hourly.slots_in(ten + MINUTE, ten + 59 * MINUTE, BERLIN, 0) == (None, 0)
    assert hourly.slots_in(ten + HOUR, ten, BERLIN, 0) == (None, 0)
    every = parse("@every 1h")
    assert every.slots_in(ten + 1, ten + HOUR - 1, BERLIN, ten) == (None, 0)
    assert every.slots_in(ten + HOUR, ten, BERLIN, ten) == (None, 0)
    # The anchor itself is not a fire (k >= 1), nor anything before it.
    assert every.slots_in(ten - 10 * HOUR, ten, BERLIN, ten) == (None, 0)


def test_slots_in_counts_every_by_arithmetic_over_any_range() -> None:
    anchor = utc("2026-05-05 10:00")
    every = parse("@every 1m")
    assert every.slots_in(anchor + 30_000, anchor + 5 * MINUTE, UTC, anchor) == (
        anchor + 5 * MINUTE,
        5,
    )
    assert every.slots_in(anchor + MINUTE, anchor + 5 * MINUTE + 59_999, UTC, anchor) == (
        anchor + 5 * MINUTE,
        5,
    )
    century = 100 * 365 * 86_400_000
    second = parse("@every 1s")
    assert second.slots_in(anchor - HOUR, anchor + century, UTC, anchor) == (
        anchor + century,
        century // 1000,
    )


def test_slots_in_a_gap_counts_the_one_fire_at_its_end() -> None:
    day = utc("2026-03-28 23:00"), utc("2026-03-29 22:59")  # Berlin's spring-forward day
    assert parse("*/15 2 * * *").slots_in(*day, BERLIN, 0) == (utc("2026-03-29 01:00"), 1)
    # The repeated hour's fires, once each.
    autumn = utc("2026-10-24 22:00"), utc("2026-10-25 22:59")
    assert parse("*/15 2 * * *").slots_in(*autumn, BERLIN, 0) == (utc("2026-10-25 00:45"), 4)
    assert parse("@hourly").slots_in(*autumn, BERLIN, 0) == (utc("2026-10-25 22:00"), 24)


def test_slots_in_stops_counting_at_the_cap_but_finds_the_true_latest() -> None:
    year = utc("2026-01-01 00:00"), utc("2027-01-01 00:00") - 1
    latest, count = parse("* * * * *").slots_in(*year, BERLIN, 0)
    assert count == MAX_COUNTED  # a lower bound: a year has 525,600 minutes
    assert latest == utc("2026-12-31 23:59")
    # Under the cap the count is exact.
    days = parse("@daily").slots_in(utc("2026-01-01 00:00"), utc("2036-01-01 00:00"), UTC, 0)
    assert days == (utc("2036-01-01 00:00"), 3652 + 1)


@pytest.mark.parametrize(
    "end",
    [
        "2026-10-25 00:59",  # Berlin 02:59 CEST, the repeated hour's first pass
        "2026-10-25 01:00",  # 02:00 CET, its second pass begins
        "2026-10-25 01:15",  # 02:15 CET: every 02:xx fired in the first pass
        "2026-10-25 01:59",
        "2026-10-25 02:00",
        "2026-03-29 00:59",  # 01:59 CET, just before the gap
        "2026-03-29 01:00",  # 03:00 CEST, its end
        "2026-05-05 10:00",
    ],
)
@pytest.mark.parametrize("expr", ["* * * * *", "*/15 2 * * *", "30 2 * * *", "0 * * * *"])
def test_slots_in_latest_past_the_cap_is_the_latest_found_under_it(
    expr: str, end: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cadence = parse(expr)
    stop = utc(end) + 30_000  # mid-minute
    short = cadence.slots_in(stop - 3 * 86_400_000, stop, BERLIN, 0)
    # A small cap (the real one costs a second per case here), and a start a month back:
    # past the cap for every one of these expressions, so the latest is found walking back.
    monkeypatch.setattr(cron, "MAX_COUNTED", 20)
    capped = cadence.slots_in(stop - 30 * 86_400_000, stop, BERLIN, 0)
    assert capped[1] == 20
    assert short[0] is not None and capped[0] == short[0]
    assert short[0] == fires_between(expr, BERLIN, stop - 3 * 86_400_000, stop)[-1]
