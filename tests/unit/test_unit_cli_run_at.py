"""`runnerd runs trigger --at`: a wait from now made into a time the API takes, and
an absolute time passed on as it is, for the daemon to check."""

from __future__ import annotations

import argparse
import time

import pytest

from runnerd.client import run_at
from runnerd.timefmt import parse_time


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("+90s", 90),
        ("+10m", 600),
        ("+2h", 7200),
        ("+1d", 86400),
        ("+1h30m", 5400),
        ("+0s", 0),
        ("+366d", 366 * 86400),
    ],
)
def test_a_wait_from_now_becomes_a_time_that_far_ahead(given: str, seconds: int) -> None:
    before = time.time_ns() // 1_000_000
    at = parse_time(run_at(given))  # in the API's own format, with this machine's offset
    after = time.time_ns() // 1_000_000
    assert before + seconds * 1000 <= at <= after + seconds * 1000


def test_an_absolute_time_is_passed_on_unchanged_for_the_daemon_to_check() -> None:
    for given in ("2026-01-15T22:00:00+01:00", "2026-01-15T21:00:00Z", "next tuesday"):
        assert run_at(given) == given


@pytest.mark.parametrize(
    "given", ["+10 minutes", "+", "+1.5h", "+10", "+1w", "+367d", "+99999999999d"]
)
def test_a_bad_wait_is_a_usage_error_saying_what_is_taken(given: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"\+90s|at most a year"):
        run_at(given)
