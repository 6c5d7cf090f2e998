"""A trigger's `run_at` and `timeout_seconds`, through the API (the real app, store
and scheduler; a fake executor): stored and shown, honoured, and every bad value a
400 that names the field and queues nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import Api

from runnerd.timefmt import parse_time


def ms_now() -> int:
    return time.time_ns() // 1_000_000


def utc(ms: int) -> str:
    """A time as a client in UTC writes it (`Z`, microseconds)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def run_ids(api: Api, runner_id: str) -> list[str]:
    status, body = await api.get(f"/v1/runners/{runner_id}/runs")
    assert status == 200, body
    return [r["id"] for r in body["runs"]]


async def test_a_delayed_run_is_pending_with_not_before_then_starts_at_its_time(api: Api) -> None:
    runner = await api.create_runner(run_command="true")
    at = ms_now() + 1500
    run = await api.trigger(runner["id"], {"run_at": utc(at)})
    assert run["status"] == "pending" and run["trigger"] == "api" and run["attempt"] == 1
    assert parse_time(run["not_before"]) == at  # shown in the daemon's zone, the same time
    status, body = await api.get(f"/v1/runners/{runner['id']}/runs")
    assert status == 200 and body["runs"][0]["not_before"] == run["not_before"], body
    assert (await api.run(runner["id"], run["id"]))["status"] == "pending"
    done = await api.wait_done(runner["id"], run["id"], timeout=10)
    assert done["status"] == "succeeded", done
    assert parse_time(done["started_at"]) >= at
    assert done["not_before"] == run["not_before"]


async def test_a_run_without_run_at_has_no_not_before(api: Api) -> None:
    runner = await api.create_runner(run_command="true")
    for body in (None, {}, {"run_at": None, "timeout_seconds": None}):
        run = await api.trigger(runner["id"], body)
        assert run["not_before"] is None and run["timeout_seconds"] == 3600, run


async def test_run_at_up_to_60_s_in_the_past_is_taken_as_now(api: Api) -> None:
    runner = await api.create_runner(run_command="true")
    before = ms_now()
    run = await api.trigger(runner["id"], {"run_at": utc(before - 50_000)})
    after = ms_now()
    assert before <= parse_time(run["not_before"]) <= after
    done = await api.wait_done(runner["id"], run["id"], timeout=10)
    assert done["status"] == "succeeded", done


async def test_run_at_takes_any_utc_offset(api: Api) -> None:
    runner = await api.create_runner(run_command="true")
    at = (ms_now() // 1000 + 3600) * 1000
    marquesas = timezone(-timedelta(hours=9, minutes=30))
    run_at = datetime.fromtimestamp(at / 1000, marquesas).isoformat()  # …T…:…:00-09:30
    assert run_at.endswith("-09:30")
    run = await api.trigger(runner["id"], {"run_at": run_at})
    assert parse_time(run["not_before"]) == at


async def test_timeout_seconds_is_the_runs_own_and_leaves_the_runner_as_it_is(api: Api) -> None:
    runner = await api.create_runner(run_command="sleep 30", timeout_seconds=600)
    run = await api.trigger(runner["id"], {"timeout_seconds": 1})
    assert run["timeout_seconds"] == 1
    done = await api.wait_done(runner["id"], run["id"], timeout=15)
    assert (done["status"], done["failure_reason"]) == ("failed", "timeout"), done
    assert (await api.trigger(runner["id"]))["timeout_seconds"] == 600
    status, body = await api.get(f"/v1/runners/{runner['id']}")
    assert status == 200 and body["runner"]["timeout_seconds"] == 600


async def test_a_delayed_run_can_be_canceled_while_it_waits(api: Api) -> None:
    runner = await api.create_runner(run_command="true")
    run = await api.trigger(runner["id"], {"run_at": utc(ms_now() + 3_600_000)})
    status, body = await api.post(f"/v1/runners/{runner['id']}/runs/{run['id']}/cancel")
    assert status == 200, body
    canceled = body["run"]
    assert (canceled["status"], canceled["failure_reason"]) == ("failed", "canceled")
    assert canceled["started_at"] is None and canceled["not_before"] == run["not_before"]


async def test_with_an_idempotency_key_the_first_delayed_run_wins(api: Api) -> None:
    runner = await api.create_runner(run_command="true")
    headers = {"Idempotency-Key": "nightly-42"}
    path = f"/v1/runners/{runner['id']}/runs"
    first_at, second_at = ms_now() + 3_600_000, ms_now() + 7_200_000
    s1, b1 = await api.post(path, {"run_at": utc(first_at)}, headers=headers)
    s2, b2 = await api.post(path, {"run_at": utc(second_at), "timeout_seconds": 5}, headers=headers)
    assert (s1, s2) == (200, 200), (b1, b2)
    assert b2["run"]["id"] == b1["run"]["id"]
    assert parse_time(b2["run"]["not_before"]) == first_at
    assert b2["run"]["timeout_seconds"] == 3600
    assert await run_ids(api, runner["id"]) == [b1["run"]["id"]]


def _in(ms_from_now: int) -> str:
    return utc(ms_now() + ms_from_now)


BAD_BODIES: list[tuple[str, Any, str]] = [
    (
        "past-a-year",
        {"run_at": _in(367 * 86_400_000)},
        "run_at: must be at most 1 year ahead, got ",
    ),
    ("past", {"run_at": _in(-120_000)}, "run_at: must not be more than 60 s in the past, got "),
    ("no-offset", {"run_at": "2026-01-15T10:01:00"}, "run_at: needs a UTC offset"),
    ("not-a-time", {"run_at": "in an hour"}, "run_at: must be a time such as "),
    ("epoch-ms", {"run_at": 1768467660000}, "run_at: must be a string or null, got a number"),
    ("bad-date", {"run_at": "2026-02-30T10:01:00Z"}, "run_at: is not a valid time (day is out"),
    ("timeout-0", {"timeout_seconds": 0}, "timeout_seconds: must be between 1 and 86400, got 0"),
    ("timeout-big", {"timeout_seconds": 86401}, "timeout_seconds: must be between 1 and 86400"),
    ("timeout-str", {"timeout_seconds": "5"}, "timeout_seconds: must be a whole number or null"),
]


@pytest.mark.parametrize(
    ("body", "message"), [(b, m) for _, b, m in BAD_BODIES], ids=[i for i, _, _ in BAD_BODIES]
)
async def test_a_bad_run_at_or_timeout_is_a_400_naming_it_and_queues_nothing(
    api: Api, body: Any, message: str
) -> None:
    runner = await api.create_runner(run_command="true")
    status, answer = await api.post(f"/v1/runners/{runner['id']}/runs", body)
    assert status == 400, answer
    assert len(answer["errors"]) == 1 and answer["errors"][0].startswith(message), answer
    assert await run_ids(api, runner["id"]) == []
