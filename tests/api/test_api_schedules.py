"""Schedules over the API (issue 12), against runnerd's app in process
(tests/api/conftest.py): create, list, show, change, pause and resume, delete; where
`next_run_at` lands; validation; 404s; a runner's delete taking its schedules along;
and the firing loop told of every change. Firing itself is tests/unit/test_unit_firing.py's
and tests/integration/test_schedules_firing.py's."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import Api

from runnerd import api as api_mod
from runnerd.contract import parse_schedule
from runnerd.models import Schedule
from tests.api.conftest import InProcessDaemon

SCHEDULE_KEYS = {
    "id",
    "cron",
    "timezone",
    "enabled",
    "env_variables",
    "concurrency_policy",
    "starting_deadline_seconds",
    "next_run_at",
    "last_run_at",
    "last_run_id",
    "missed_count",
    "created_at",
    "updated_at",
}


def ms(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def base(runner: dict[str, Any]) -> str:
    return f"/v1/runners/{runner['id']}/schedules"


async def create(api: Api, runner: dict[str, Any], **body: Any) -> dict[str, Any]:
    status, data = await api.post(base(runner), body)
    assert status == 200, data
    assert set(data) == {"schedule"}
    return dict(data["schedule"])


async def patch(api: Api, runner: dict[str, Any], schedule_id: str, **body: Any) -> dict[str, Any]:
    status, data = await api.patch(f"{base(runner)}/{schedule_id}", body)
    assert status == 200, data
    return dict(data["schedule"])


class Told:
    """What the app told the firing loop, in order (and the loop is still told)."""

    def __init__(self, daemon: InProcessDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, Schedule | None]] = []
        firing = daemon.client.server.app[api_mod.FIRING]
        changed, removed = firing.changed, firing.removed

        def on_changed(schedule: Schedule) -> None:
            self.calls.append(("changed", schedule.id, schedule))
            changed(schedule)

        def on_removed(schedule_id: str) -> None:
            self.calls.append(("removed", schedule_id, None))
            removed(schedule_id)

        monkeypatch.setattr(firing, "changed", on_changed)
        monkeypatch.setattr(firing, "removed", on_removed)

    def ids(self) -> list[tuple[str, str]]:
        return [(kind, schedule_id) for kind, schedule_id, _ in self.calls]


@pytest.fixture
def told(daemon: InProcessDaemon, monkeypatch: pytest.MonkeyPatch) -> Told:
    return Told(daemon, monkeypatch)


# -- create, show, list ---------------------------------------------------------------


async def test_a_schedule_made_with_only_cron_has_every_default(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner = await api.create_runner()
    before = now_ms()
    schedule = await create(api, runner, cron="*/5 * * * *")
    assert set(schedule) == SCHEDULE_KEYS
    uuid.UUID(schedule["id"])
    host_zone = getattr(daemon.config.tz, "key", None) or "UTC"  # the test config sets none
    assert schedule["timezone"] == (daemon.config.timezone or host_zone)
    assert schedule["enabled"] is True
    assert schedule["env_variables"] == []
    assert schedule["concurrency_policy"] == "allow"
    assert schedule["starting_deadline_seconds"] == 300
    assert schedule["last_run_at"] is None and schedule["last_run_id"] is None
    assert schedule["missed_count"] == 0
    assert schedule["created_at"] == schedule["updated_at"]
    # The first slot after now: a multiple of five minutes, at most five minutes ahead.
    next_run = ms(schedule["next_run_at"])
    assert before < next_run <= ms(schedule["created_at"]) + 5 * 60_000
    assert next_run % (5 * 60_000) == 0

    status, data = await api.get(f"{base(runner)}/{schedule['id']}")
    assert status == 200 and data == {"schedule": schedule}


async def test_the_default_time_zone_is_the_daemons_configured_one(
    start_daemon: Callable[..., Any], api: Api
) -> None:
    daemon = await start_daemon(top_level='timezone = "America/New_York"')
    api = Api(api.session, daemon.url, daemon.key)
    runner = await api.create_runner()
    schedule = await create(api, runner, cron="@daily")
    assert schedule["timezone"] == "America/New_York"
    assert schedule["created_at"].endswith(("-05:00", "-04:00"))  # times in the daemon's zone


async def test_next_run_at_is_the_first_wall_time_in_the_schedules_zone(api: Api) -> None:
    runner = await api.create_runner()
    for zone in ("Asia/Tokyo", "America/Los_Angeles", "UTC"):
        schedule = await create(api, runner, cron="30 9 * * *", timezone=zone)
        assert schedule["timezone"] == zone
        fires = datetime.fromisoformat(schedule["next_run_at"]).astimezone(zoneinfo.ZoneInfo(zone))
        assert (fires.hour, fires.minute, fires.second) == (9, 30, 0), (zone, fires)
        created = datetime.fromisoformat(schedule["created_at"])
        assert created < fires <= created + timedelta(days=1)


async def test_every_counts_from_the_moment_it_was_made(api: Api) -> None:
    runner = await api.create_runner()
    schedule = await create(api, runner, cron="@every 1h30m")
    assert ms(schedule["next_run_at"]) == ms(schedule["created_at"]) + 90 * 60_000


async def test_a_schedule_made_disabled_has_no_next_run(api: Api) -> None:
    runner = await api.create_runner()
    schedule = await create(api, runner, cron="@hourly", enabled=False)
    assert schedule["enabled"] is False and schedule["next_run_at"] is None


async def test_every_given_field_is_kept_and_the_list_is_oldest_first(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner = await api.create_runner()
    other = await api.create_runner()
    env = [{"env_key": "MODE", "env_val": "nightly"}, {"env_key": "EMPTY", "env_val": ""}]
    first = await create(
        api,
        runner,
        cron="0 3 * * MON-FRI",
        timezone="Europe/Berlin",
        enabled=True,
        env_variables=env,
        concurrency_policy="forbid",
        starting_deadline_seconds=0,
    )
    assert first["cron"] == "0 3 * * MON-FRI"
    assert first["env_variables"] == env
    assert first["concurrency_policy"] == "forbid"
    assert first["starting_deadline_seconds"] == 0
    second = await create(api, runner, cron="@every 10s", concurrency_policy="replace")
    await create(api, other, cron="@daily")

    status, data = await api.get(base(runner))
    assert status == 200, data
    assert [s["id"] for s in data["schedules"]] == [first["id"], second["id"]]
    assert data["schedules"][0] == first
    status, data = await api.get(base(await api.create_runner()))
    assert status == 200 and data == {"schedules": []}


async def test_env_values_are_stored_encrypted(api: Api, daemon: InProcessDaemon) -> None:
    runner = await api.create_runner()
    secret = "sched-" + uuid.uuid4().hex
    schedule = await create(
        api, runner, cron="@daily", env_variables=[{"env_key": "TOKEN", "env_val": secret}]
    )
    with sqlite3.connect(daemon.data_dir / "runnerd.db") as db:
        (stored,) = db.execute(
            "SELECT env FROM schedules WHERE id = ?", (schedule["id"],)
        ).fetchone()
    assert secret not in stored and "TOKEN" not in stored
    got = await daemon.store.get_schedule(runner["id"], schedule["id"])
    assert got is not None and got.env == [("TOKEN", secret)]


async def test_a_runner_may_have_ten_thousand_schedules_and_more(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner = await api.create_runner()
    fields = parse_schedule({"cron": "@yearly", "enabled": False}, daemon.config, partial=False)
    await asyncio.gather(
        *(daemon.store.create_schedule(runner["id"], fields) for _ in range(10_000))
    )
    one_more = await create(api, runner, cron="@every 5m")
    status, data = await api.get(base(runner))
    assert status == 200
    assert len(data["schedules"]) == 10_001 and data["schedules"][-1] == one_more


# -- change, pause, resume -------------------------------------------------------------


async def test_pause_clears_next_run_and_resume_skips_the_slots_that_passed(api: Api) -> None:
    runner = await api.create_runner()
    schedule = await create(api, runner, cron="@every 1s")
    anchor = ms(schedule["created_at"])
    first_slot = ms(schedule["next_run_at"])
    assert first_slot == anchor + 1000

    paused = await patch(api, runner, schedule["id"], enabled=False)
    assert paused["enabled"] is False and paused["next_run_at"] is None
    assert paused["cron"] == schedule["cron"] and paused["env_variables"] == []

    while now_ms() <= first_slot + 1000:  # two slots pass while it is paused
        await asyncio.sleep(0.05)
    resumed = await patch(api, runner, schedule["id"], enabled=True)
    assert resumed["enabled"] is True
    next_run = ms(resumed["next_run_at"])
    # The first slot after the resume, still counted from when it was made: the slots
    # that passed meanwhile are neither fired nor missed.
    assert ms(resumed["updated_at"]) < next_run <= ms(resumed["updated_at"]) + 1000
    assert (next_run - anchor) % 1000 == 0
    assert resumed["missed_count"] == 0


async def test_a_new_cron_counts_every_from_the_change(api: Api) -> None:
    runner = await api.create_runner()
    schedule = await create(api, runner, cron="@every 1h")
    changed = await patch(api, runner, schedule["id"], cron=" @every 2h ")
    assert changed["cron"] == "@every 2h"
    assert ms(changed["next_run_at"]) == ms(changed["updated_at"]) + 2 * 3600_000
    assert changed["created_at"] == schedule["created_at"]


async def test_a_new_time_zone_moves_next_run_to_the_wall_time_there(api: Api) -> None:
    runner = await api.create_runner()
    schedule = await create(api, runner, cron="0 9 * * *", timezone="UTC")
    changed = await patch(api, runner, schedule["id"], timezone="Asia/Tokyo")
    fires = datetime.fromisoformat(changed["next_run_at"]).astimezone(
        zoneinfo.ZoneInfo("Asia/Tokyo")
    )
    assert (fires.hour, fires.minute) == (9, 0)
    assert changed["timezone"] == "Asia/Tokyo" and changed["cron"] == "0 9 * * *"


async def test_a_change_that_is_not_timing_keeps_next_run_at(api: Api) -> None:
    runner = await api.create_runner()
    schedule = await create(
        api, runner, cron="@every 1h", env_variables=[{"env_key": "A", "env_val": "1"}]
    )
    for body in (
        {"env_variables": [{"env_key": "B", "env_val": "2"}]},
        {"concurrency_policy": "forbid", "starting_deadline_seconds": 60},
        {"enabled": True},  # as it is: not a resume
        {"cron": "@every 1h", "timezone": schedule["timezone"]},  # as they are
    ):
        changed = await patch(api, runner, schedule["id"], **body)
        assert changed["next_run_at"] == schedule["next_run_at"], body
    assert changed["env_variables"] == [{"env_key": "B", "env_val": "2"}]  # replaced, not added
    assert changed["concurrency_policy"] == "forbid"
    assert changed["starting_deadline_seconds"] == 60
    assert ms(changed["updated_at"]) >= ms(schedule["updated_at"])
    cleared = await patch(api, runner, schedule["id"], env_variables=[])
    assert cleared["env_variables"] == []


async def test_a_change_keeps_what_a_fire_wrote_meanwhile(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner = await api.create_runner()
    schedule = await create(api, runner, cron="@every 1h")
    # A fire between the API's read and its write moves the schedule on: the change
    # sets only its own columns, so it cannot put the fired slot back.
    fired_slot, next_slot = ms(schedule["next_run_at"]), ms(schedule["next_run_at"]) + 3600_000
    run_id = str(uuid.uuid4())
    with sqlite3.connect(daemon.data_dir / "runnerd.db", timeout=10) as db:
        db.execute(
            "UPDATE schedules SET next_run_at = ?, last_run_at = ?, last_run_id = ?,"
            " missed_count = 2 WHERE id = ?",
            (next_slot, fired_slot, run_id, schedule["id"]),
        )
    for body in ({"env_variables": [{"env_key": "A", "env_val": "1"}]}, {"enabled": True}):
        changed = await patch(api, runner, schedule["id"], **body)
        assert ms(changed["next_run_at"]) == next_slot, body
        assert ms(changed["last_run_at"]) == fired_slot and changed["last_run_id"] == run_id
        assert changed["missed_count"] == 2
    paused = await patch(api, runner, schedule["id"], enabled=False)
    assert paused["next_run_at"] is None and paused["last_run_id"] == run_id


async def test_a_cron_change_on_a_paused_schedule_leaves_it_paused(api: Api) -> None:
    runner = await api.create_runner()
    schedule = await create(api, runner, cron="@hourly", enabled=False)
    changed = await patch(api, runner, schedule["id"], cron="@every 5m")
    assert changed["enabled"] is False and changed["next_run_at"] is None
    resumed = await patch(api, runner, schedule["id"], enabled=True)
    assert ms(resumed["next_run_at"]) == ms(changed["updated_at"]) + 5 * 60_000


async def test_changes_made_at_once_each_compute_from_the_schedule_as_the_other_left_it(
    api: Api,
) -> None:
    runner = await api.create_runner()
    tokyo = zoneinfo.ZoneInfo("Asia/Tokyo")
    for _ in range(5):
        schedule = await create(api, runner, cron="0 12 * * *", timezone="UTC")
        path = f"{base(runner)}/{schedule['id']}"
        await asyncio.gather(
            api.patch(path, {"cron": "0 9 * * *"}), api.patch(path, {"timezone": "Asia/Tokyo"})
        )
        status, data = await api.get(path)
        fires = datetime.fromisoformat(data["schedule"]["next_run_at"]).astimezone(tokyo)
        assert (fires.hour, fires.minute) == (9, 0), data  # both changes, whichever came first


# -- delete ------------------------------------------------------------------------------


async def test_delete_answers_deleted_and_the_schedule_is_gone(api: Api) -> None:
    runner = await api.create_runner()
    keep = await create(api, runner, cron="@daily")
    gone = await create(api, runner, cron="@hourly")
    status, data = await api.delete(f"{base(runner)}/{gone['id']}")
    assert status == 200 and data == {"deleted": True}
    status, _ = await api.get(f"{base(runner)}/{gone['id']}")
    assert status == 404
    status, data = await api.delete(f"{base(runner)}/{gone['id']}")
    assert status == 404, data
    status, data = await api.get(base(runner))
    assert [s["id"] for s in data["schedules"]] == [keep["id"]]


async def test_deleting_a_runner_deletes_its_schedules(api: Api, daemon: InProcessDaemon) -> None:
    runner = await api.create_runner()
    other = await api.create_runner()
    ids = [(await create(api, runner, cron=c))["id"] for c in ("@daily", "@every 1h", "0 0 1 * *")]
    kept = await create(api, other, cron="@daily")
    status, data = await api.delete(f"/v1/runners/{runner['id']}")
    assert status == 200, data
    # The rows went with the runner (the foreign key's ON DELETE CASCADE), nothing else did.
    with sqlite3.connect(daemon.data_dir / "runnerd.db") as db:
        left = [r[0] for r in db.execute("SELECT id FROM schedules ORDER BY created_at")]
    assert left == [kept["id"]], ids
    status, _ = await api.get(f"{base(runner)}/{ids[0]}")
    assert status == 404


# -- the firing loop is told -------------------------------------------------------------


async def test_every_write_tells_the_firing_loop(api: Api, told: Told) -> None:
    runner = await api.create_runner()
    first = await create(api, runner, cron="@every 1h")
    second = await create(api, runner, cron="@daily")
    paused = await patch(api, runner, first["id"], enabled=False)
    await api.delete(f"{base(runner)}/{second['id']}")
    third = await create(api, runner, cron="@hourly")
    status, _ = await api.patch(f"{base(runner)}/{third['id']}", {"cron": "nope"})
    assert status == 400  # a refused change tells nothing
    await api.delete(f"/v1/runners/{runner['id']}")
    assert told.ids() == [
        ("changed", first["id"]),
        ("changed", second["id"]),
        ("changed", first["id"]),
        ("removed", second["id"]),
        ("changed", third["id"]),
        ("removed", first["id"]),
        ("removed", third["id"]),
    ]
    # What the loop is given is the schedule as stored: the pause has no next slot.
    told_paused = told.calls[2][2]
    assert told_paused is not None and told_paused.next_run_at is None
    assert paused["next_run_at"] is None


async def test_a_runner_that_cannot_be_deleted_keeps_its_schedules(api: Api, told: Told) -> None:
    runner = await api.create_runner(run_command="sleep 30", timeout_seconds=5)
    schedule = await create(api, runner, cron="@daily")
    await api.trigger(runner["id"])  # pending or running: the delete is a 409
    status, data = await api.delete(f"/v1/runners/{runner['id']}")
    assert status == 409, data
    assert ("removed", schedule["id"]) not in told.ids()
    status, data = await api.get(f"{base(runner)}/{schedule['id']}")
    assert status == 200 and data["schedule"]["next_run_at"] == schedule["next_run_at"]


# -- 404s and bad input -----------------------------------------------------------------


async def test_unknown_runners_and_schedules_and_another_runners_schedule_are_404(
    api: Api,
) -> None:
    runner = await api.create_runner()
    other = await api.create_runner()
    theirs = await create(api, other, cron="@daily")
    missing = str(uuid.uuid4())
    for method, path, body in (
        ("GET", f"/v1/runners/{missing}/schedules", None),
        ("POST", f"/v1/runners/{missing}/schedules", {"cron": "@daily"}),
        ("GET", f"{base(runner)}/{missing}", None),
        ("PATCH", f"{base(runner)}/{missing}", {"enabled": False}),
        ("DELETE", f"{base(runner)}/{missing}", None),
        ("GET", f"{base(runner)}/{theirs['id']}", None),
        ("PATCH", f"{base(runner)}/{theirs['id']}", {"enabled": False}),
        ("DELETE", f"{base(runner)}/{theirs['id']}", None),
        ("GET", f"{base(runner)}/not-a-uuid", None),
        ("GET", "/v1/runners/../schedules", None),
    ):
        status, data = await api.request(method, path, json_body=body)
        assert status == 404, (method, path, data)
    status, data = await api.get(f"{base(other)}/{theirs['id']}")
    assert status == 200 and data["schedule"]["enabled"] is True  # untouched


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "cron: is required"),
        ({"cron": "61 * * * *"}, "cron: the minute field '61' is out of range 0-59"),
        ({"cron": "@daily", "timezone": "Mars/Base"}, "timezone: unknown time zone 'Mars/Base'"),
        ({"cron": "@daily", "concurrency_policy": "never"}, "concurrency_policy: must be one of"),
        (
            {"cron": "@daily", "starting_deadline_seconds": 86401},
            "starting_deadline_seconds: must be between 0 and 86400, got 86401",
        ),
        ({"cron": "@daily", "enabled": "false"}, "enabled: must be true or false, got a string"),
        ({"cron": "@daily", "runner_id": "x"}, "runner_id: is not a known field"),
    ],
)
async def test_a_bad_create_is_a_400_naming_the_field(
    api: Api, body: dict[str, Any], error: str
) -> None:
    runner = await api.create_runner()
    status, data = await api.post(base(runner), body)
    assert status == 400, data
    assert len(data["errors"]) == 1 and data["errors"][0].startswith(error), data
    status, data = await api.get(base(runner))
    assert data["schedules"] == []  # nothing was made


async def test_a_bad_patch_is_a_400_and_changes_nothing(api: Api) -> None:
    runner = await api.create_runner()
    schedule = await create(api, runner, cron="@daily")
    path = f"{base(runner)}/{schedule['id']}"
    for body, error in (
        (None, "body: must set at least one of cron, timezone"),
        ({}, "body: must set at least one of cron, timezone"),
        ({"cron": None}, "cron: must be a string, not null"),
        ({"cron": "@every 0s"}, "cron: '@every 0s' is shorter than 1 s"),
        ({"timezone": "UTC", "starting_deadline_seconds": -1}, "starting_deadline_seconds:"),
    ):
        status, data = await api.patch(path, body)
        assert status == 400, (body, data)
        assert data["errors"][0].startswith(error), (body, data)
    status, data = await api.get(path)
    assert data == {"schedule": schedule}
