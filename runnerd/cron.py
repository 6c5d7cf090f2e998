"""When a schedule fires: its `cron` expression, read into the instants it fires at.

Pure: no clock and no I/O; every instant is UTC epoch milliseconds (int). cronsim reads
the five cron fields and walks the *wall times* they name (naive datetimes, so it applies
no time zone rules of its own). This module turns each wall time into one instant in the
schedule's zone, by the DST rules the docs state:

- a wall time a spring-forward skips fires once, at the first moment after the gap;
  several skipped wall times still give that one fire;
- a wall time that occurs twice (fall-back) fires once, at its first occurrence;
- `@every <duration>` counts real elapsed time from an anchor and ignores the zone.

Wall time → instant is non-decreasing in the wall time, so the fire instants are the
mapped wall times in order with repeats dropped: strictly increasing, never two at one
instant, never one before the previous.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from cronsim import CronSim, CronSimError

MACROS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
KNOWN_MACROS = "@hourly, @daily, @weekly, @monthly, @yearly, @every <duration>"

MAX_COUNTED = 100_000  # slots_in counts at most this many fire instants, then stops counting
MAX_LENGTH = 512  # characters in an expression (sixty-item lists fit several times over)
MIN_EVERY_MS = 1000
MAX_EVERY_MS = 366 * 86_400_000

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_ALLOWED = {  # what each field takes, as the error message words it
    "minute": "a number 0-59",
    "hour": "a number 0-23",
    "day-of-month": "a number 1-31",
    "month": "a number 1-12 or a name (JAN-DEC)",
    "day-of-week": "a number 0-7 (0 and 7 are Sunday) or a name (SUN-SAT)",
}
_RANGE = {
    "minute": range(0, 60),
    "hour": range(0, 24),
    "day-of-month": range(1, 32),
    "month": range(1, 13),
    "day-of-week": range(0, 8),
}
_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?", re.IGNORECASE)
_DURATION_FORM = "a duration is like 30s, 5m, 1h30m"
_EPOCH = datetime(1970, 1, 1)
_ZERO = timedelta(0)
_SECOND = timedelta(seconds=1)
_PROBE_START = datetime(2000, 1, 1)  # any start will do: parsing does not depend on it


class CronError(ValueError):
    """A `cron` expression that cannot be used; str(e) names the part that is wrong, in
    the API's words and without a field prefix (the API adds `cron: `)."""


@dataclass(frozen=True)
class Cadence:
    """A parsed `cron` expression: when a schedule fires."""

    expr: str  # the expression as given (stripped)
    every_ms: int | None  # for `@every <duration>`, else None
    # The five cron fields cronsim reads (a macro expanded); "" for @every.
    _fields: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = "" if self.every_ms is not None else MACROS.get(self.expr.lower(), self.expr)
        object.__setattr__(self, "_fields", fields)

    def next_after(self, after_ms: int, tz: tzinfo, anchor_ms: int) -> int | None:
        """The first fire instant strictly after `after_ms`, or None when it never fires
        again (cronsim gives up after 50 years without a match).

        `@every`: anchor_ms + k*every_ms for the smallest k >= 1 that is > after_ms (real
        elapsed time; `tz` is ignored). Cron: the wall times in `tz`, by the DST rules in
        the module docstring (`anchor_ms` is ignored).
        """
        if self.every_ms is not None:
            k = max(1, (after_ms - anchor_ms) // self.every_ms + 1)
            return anchor_ms + k * self.every_ms
        for instant in self._forward(after_ms, tz):
            return instant
        return None

    def slots_in(
        self, start_ms: int, end_ms: int, tz: tzinfo, anchor_ms: int
    ) -> tuple[int | None, int]:
        """(the latest fire instant in [start_ms, end_ms], how many fire instants there
        are in [start_ms, end_ms]); (None, 0) when there are none, or start_ms > end_ms.

        For missed fires: the latest may fire, the rest are counted as missed. `@every`
        is arithmetic, whatever the range. Cron counts at most MAX_COUNTED instants and
        then stops: a count of MAX_COUNTED is a lower bound. The latest is exact either
        way (found by walking back from end_ms).
        """
        if start_ms > end_ms:
            return None, 0
        every = self.every_ms
        if every is not None:
            first = max(1, -((anchor_ms - start_ms) // every))  # ceil((start - anchor) / every)
            last = (end_ms - anchor_ms) // every
            if last < first:
                return None, 0
            return anchor_ms + last * every, last - first + 1
        count = 0
        latest: int | None = None
        for instant in self._forward(start_ms - 1, tz):
            if instant > end_ms:
                return latest, count
            latest = instant
            count += 1
            if count == MAX_COUNTED:
                break
        else:
            return latest, count  # it never fires again
        return self._latest_at_or_before(end_ms, tz), count

    def _forward(self, after_ms: int, tz: tzinfo) -> Iterator[int]:
        """The fire instants strictly after `after_ms`, in order."""
        # Every wall time that maps after `after_ms` is later than after_ms's own wall
        # time (the mapping is non-decreasing), so cronsim starts there. In a repeated
        # hour's second pass the next few wall times map to their first occurrence,
        # before `after_ms`: the filter drops them, as it drops a gap's repeats.
        previous = after_ms
        try:
            for wall in CronSim(self._fields, _wall(after_ms // 1000, tz)):
                instant = _instant(wall, tz)
                if instant > previous:
                    previous = instant
                    yield instant
        except OverflowError:  # walked past year 9999
            return

    def _latest_at_or_before(self, end_ms: int, tz: tzinfo) -> int | None:
        local = datetime.fromtimestamp(end_ms // 1000, tz)
        wall = local.replace(tzinfo=None, fold=0)
        if local.fold:
            # `end_ms` is in a repeated hour's second pass: wall times up to the end of
            # the repeat map to their first occurrence, before end_ms. Start past them.
            first = wall.replace(tzinfo=tz, fold=0).utcoffset() or _ZERO
            wall += first - (local.utcoffset() or _ZERO)
        try:
            for candidate in CronSim(self._fields, wall + _SECOND, reverse=True):
                instant = _instant(candidate, tz)
                if instant <= end_ms:
                    return instant
        except OverflowError:
            pass
        return None


def parse(expr: str) -> Cadence:
    """Read a `cron` expression: 5 fields, a macro, or `@every <duration>`. Raises
    CronError (and nothing else, for any str) naming the part that is wrong."""
    text = expr.strip()
    if not text:
        raise CronError(
            "is empty; give the 5 standard fields (minute hour day-of-month month "
            "day-of-week), a macro such as @daily, or @every <duration>"
        )
    if len(text) > MAX_LENGTH:
        raise CronError(f"is {len(text)} characters long; at most {MAX_LENGTH}")
    for position, char in enumerate(text, start=1):
        if not (" " <= char <= "~" or char == "\t"):
            raise CronError(
                f"has the character U+{ord(char):04X} at position {position}; "
                "use plain ASCII letters, digits and * , - /"
            )
    words = text.split()
    if words[0].startswith("@"):
        return _parse_macro(text, words)
    if len(words) != len(FIELDS):
        plural = "field" if len(words) == 1 else "fields"
        raise CronError(
            f"has {len(words)} {plural}; give the 5 standard ones "
            "(minute hour day-of-month month day-of-week) or a macro"
        )
    _refuse_extensions(words)
    try:
        CronSim(text, _PROBE_START)
    except CronSimError:
        raise CronError(_diagnose(words)) from None
    return Cadence(text, None)


def parse_duration(text: str) -> int:
    """`30s`, `5m`, `1h30m`, `2h`, `1h0m30s` → milliseconds (whole seconds, 1 s to 366
    days). Raises CronError naming the text."""
    return _duration_ms(text.strip(), text.strip())


def _parse_macro(text: str, words: list[str]) -> Cadence:
    name = words[0].lower()
    if name == "@every":
        if len(words) == 1:
            raise CronError(f"'{_shown(text)}' needs a duration, like 30s, 5m, 1h30m")
        return Cadence(text, _duration_ms(text[len(words[0]) :].strip(), text))
    if name not in MACROS:
        raise CronError(f"unknown macro '{_shown(words[0])}' (known: {KNOWN_MACROS})")
    if len(words) > 1:
        raise CronError(f"'{_shown(text)}': the macro {name} takes nothing after it")
    return Cadence(text, None)


def _duration_ms(duration: str, shown: str) -> int:
    match = _DURATION.fullmatch(duration)
    if not duration or match is None:
        raise CronError(f"'{_shown(shown)}': {_DURATION_FORM}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    ms = ((hours * 60 + minutes) * 60 + seconds) * 1000
    if ms < MIN_EVERY_MS:
        raise CronError(f"'{_shown(shown)}' is shorter than 1 s")
    if ms > MAX_EVERY_MS:
        raise CronError(f"'{_shown(shown)}' is longer than 366 days")
    return ms


def _refuse_extensions(words: list[str]) -> None:
    """cronsim also reads L, LW and #n (last day, last weekday, nth weekday): not part of
    the five standard fields runnerd promises, so they are refused rather than kept by
    accident. No month or day name has an L or a #, so a plain look finds them."""
    for index, marks in ((2, "L"), (4, "L#")):
        text = words[index]
        for mark in marks:
            if mark in text.upper():
                raise CronError(
                    f"the {FIELDS[index]} field '{_shown(text)}': '{mark}' is not "
                    f"supported; use {_ALLOWED[FIELDS[index]]}, a range (1-5), "
                    "a step (*/2) or a list (1,15)"
                )


def _diagnose(words: list[str]) -> str:
    """Why cronsim refused `words`: try each field, then each list item, alone (all other
    fields `*`) to find the part it refuses, then say what is wrong with that part."""
    for index, text in enumerate(words):
        if _accepted(index, text):
            continue
        for item in text.split(","):
            if not _accepted(index, item):
                return _wrong_item(FIELDS[index], text, item)
        return _wrong_item(FIELDS[index], text, text)  # not reached: read item by item
    # Each field is fine alone: cronsim refuses a day-of-month no listed month has.
    return (
        f"the day-of-month field '{_shown(words[2])}' never occurs in the month field "
        f"'{_shown(words[3])}'"
    )


def _accepted(index: int, text: str) -> bool:
    probe = ["*"] * len(FIELDS)
    probe[index] = text
    try:
        CronSim(" ".join(probe), _PROBE_START)
    except CronSimError:
        return False
    return True


def _wrong_item(name: str, text: str, item: str) -> str:
    """The message for `item` (a list item of field `name`, whose text is `text`)."""

    def wrong(part: str, what: str) -> str:
        where = f"the {name} field '{_shown(text)}'"
        return f"{where} {what}" if part == text else f"{where}: '{_shown(part)}' {what}"

    if item == "":
        return wrong(text, "has an empty list item")
    base, slash, step = item.partition("/")
    if slash and not step.isdigit():
        return wrong(item, "has a step that is not a whole number")
    if slash and int(step) == 0:
        return wrong(item, "has a step of 0; a step is at least 1")
    ends = base.split("-", 1)
    for end in ends:
        if end.isdigit() and int(end) not in _RANGE[name]:
            bounds = _RANGE[name]
            return wrong(end, f"is out of range {bounds[0]}-{bounds[-1]}")
    if len(ends) == 2 and all(end.isdigit() for end in ends) and int(ends[0]) > int(ends[1]):
        return wrong(item, "is a range that ends before it starts")
    return wrong(
        item,
        f"is not valid; use {_ALLOWED[name]}, a range (1-5), a step (*/15, 1-30/5) "
        "or a list (1,15,30)",
    )


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _wall(seconds: int, tz: tzinfo) -> datetime:
    """The wall time in `tz` at an instant (whole seconds since the epoch), with fold=0:
    cronsim's `replace` calls would carry a fold=1 into the wall times it yields."""
    return datetime.fromtimestamp(seconds, tz).replace(tzinfo=None, fold=0)


def _instant(wall: datetime, tz: tzinfo) -> int:
    """The one instant (epoch ms) a wall time in `tz` fires at, by the DST rules."""
    # fold=0 given, not kept from `wall`: that reads a repeated wall time at its first pass.
    first = wall.replace(tzinfo=tz, fold=0).utcoffset() or _ZERO
    later = wall.replace(tzinfo=tz, fold=1).utcoffset() or _ZERO
    if first >= later:
        # The same offset both ways: a plain wall time. First above later: it occurs
        # twice (fall-back), and fold=0 is its first occurrence.
        return _ms(wall - first)
    # `first` below `later`: the wall time is skipped by a gap; it fires at the first
    # instant after the gap, which lies between its two readings (wall - later is still
    # before the gap, wall - first already after it). Gaps are not all one hour (Lord
    # Howe's is 30 min), so find the transition, to the second (tzdata's precision).
    low = _ms(wall - later) // 1000  # before the gap: its wall time is earlier than `wall`
    high = _ms(wall - first) // 1000  # after the gap: its wall time is later
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(middle, tz) < wall:
            low = middle
        else:
            high = middle
    return high * 1000


def _ms(utc: datetime) -> int:
    delta = utc - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
