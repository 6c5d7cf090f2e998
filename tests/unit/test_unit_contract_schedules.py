"""The schedule contract: ScheduleCreate/ScheduleUpdate as parse_schedule reads them (every
problem as `field: message`, the defaults from the config), and the Schedule rendering."""

from __future__ import annotations

import datetime
import typing
from typing import Any

import pytest

from runnerd import config as config_mod
from runnerd import contract
from runnerd.config import Config, from_dict
from runnerd.contract import SCHEDULE_FIELDS, Invalid, parse_schedule, schedule_json
from runnerd.contract.fields import ConcurrencyPolicyName
from runnerd.models import ConcurrencyPolicy, Schedule

BERLIN = from_dict({"timezone": "Europe/Berlin"})


def schedule_errors(body: Any, partial: bool = False, config: Config = BERLIN) -> list[str]:
    with pytest.raises(Invalid) as info:
        parse_schedule(body, config, partial=partial)
    assert info.value.errors, "Invalid without errors"
    return info.value.errors


def test_parse_schedule_fills_in_every_default_on_create() -> None:
    assert parse_schedule({"cron": "*/5 * * * *"}, BERLIN, partial=False) == {
        "cron": "*/5 * * * *",
        "timezone": "Europe/Berlin",  # the daemon's
        "enabled": True,
        "env": [],
        "concurrency_policy": ConcurrencyPolicy.ALLOW,
        "starting_deadline_seconds": 300,
    }


def test_parse_schedule_keeps_every_given_value_and_strips_the_cron_expression() -> None:
    fields = parse_schedule(
        {
            "cron": "  @every 1h30m ",
            "timezone": "America/New_York",
            "enabled": False,
            "env_variables": [{"env_key": "A", "env_val": "1"}, {"env_key": "B", "env_val": ""}],
            "concurrency_policy": "replace",
            "starting_deadline_seconds": 0,
        },
        BERLIN,
        partial=False,
    )
    assert fields == {
        "cron": "@every 1h30m",
        "timezone": "America/New_York",
        "enabled": False,
        "env": [("A", "1"), ("B", "")],
        "concurrency_policy": ConcurrencyPolicy.REPLACE,
        "starting_deadline_seconds": 0,
    }


def test_the_default_time_zone_is_the_hosts_iana_name_without_a_configured_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokyo = from_dict({"timezone": "Asia/Tokyo"}).tz
    monkeypatch.setattr(config_mod, "host_zone", lambda: tokyo)
    assert parse_schedule({"cron": "@daily"}, Config(), partial=False)["timezone"] == "Asia/Tokyo"


def test_the_default_time_zone_is_utc_when_the_host_zone_has_no_iana_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # e.g. TZ holds a POSIX rule: config.host_zone falls back to a fixed offset.
    fixed = datetime.timezone(datetime.timedelta(hours=2))
    monkeypatch.setattr(config_mod, "host_zone", lambda: fixed)
    assert parse_schedule({"cron": "@daily"}, Config(), partial=False)["timezone"] == "UTC"


def test_parse_schedule_patch_returns_only_the_given_fields() -> None:
    assert parse_schedule({"enabled": False}, BERLIN, partial=True) == {"enabled": False}
    assert parse_schedule({"env_variables": []}, BERLIN, partial=True) == {"env": []}
    assert parse_schedule({"concurrency_policy": "forbid"}, BERLIN, partial=True) == {
        "concurrency_policy": ConcurrencyPolicy.FORBID
    }


@pytest.mark.parametrize("body", [None, {}])
def test_a_patch_must_set_at_least_one_field(body: Any) -> None:
    assert schedule_errors(body, partial=True) == [
        "body: must set at least one of " + ", ".join(SCHEDULE_FIELDS)
    ]


def test_a_create_without_cron_says_it_is_required() -> None:
    assert schedule_errors(None) == ["cron: is required"]
    assert schedule_errors({"enabled": True}) == ["cron: is required"]


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 * * * *", "cron: the minute field '61' is out of range 0-59"),
        ("* * *", "cron: has 3 fields; give the 5 standard ones"),
        ("@fortnightly", "cron: unknown macro '@fortnightly'"),
        ("@every 0s", "cron: '@every 0s' is shorter than 1 s"),
        ("   ", "cron: is empty"),
        ("", "cron: is empty"),
        ("* * * * * *" * 100, "cron: must be at most 512 characters long"),
        ("* * \x00 * *", "cron: must not contain NUL characters"),
    ],
)
def test_a_bad_cron_expression_is_named_with_the_part_that_is_wrong(
    cron: str, message: str
) -> None:
    (error,) = schedule_errors({"cron": cron})
    assert error.startswith(message), error


@pytest.mark.parametrize(
    "name", ["Mars/Base", "", "Europe/Berlin ", "../etc/passwd", "/etc/localtime", "zone.tab"]
)
def test_an_unknown_time_zone_is_refused_naming_it(name: str) -> None:
    (error,) = schedule_errors({"cron": "@daily", "timezone": name})
    if name:
        assert error.startswith(f"timezone: unknown time zone {name!r}"), error
    else:
        assert error == "timezone: must be 1 to 255 characters long, got 0"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"timezone": None}, "timezone: must be a string, not null"),
        ({"enabled": "yes"}, "enabled: must be true or false, got a string"),
        ({"enabled": 1}, "enabled: must be true or false, got a number"),
        ({"enabled": None}, "enabled: must be true or false, got null"),
        (
            {"concurrency_policy": "sometimes"},
            "concurrency_policy: must be one of allow, forbid, replace, got 'sometimes'",
        ),
        (
            {"starting_deadline_seconds": -1},
            "starting_deadline_seconds: must be between 0 and 86400, got -1",
        ),
        (
            {"starting_deadline_seconds": 86401},
            "starting_deadline_seconds: must be between 0 and 86400, got 86401",
        ),
        (
            {"starting_deadline_seconds": 1.5},
            "starting_deadline_seconds: must be a whole number, got a number",
        ),
        (
            {"starting_deadline_seconds": True},
            "starting_deadline_seconds: must be a whole number, got a boolean",
        ),
        ({"env_variables": "A=1"}, "env_variables: must be an array, got a string"),
        (
            {"env_variables": [{"env_key": "1A", "env_val": "x"}]},
            "env_variables[0].env_key: '1A' is not a valid name",
        ),
        ({"next_run_at": None}, "next_run_at: is not a known field (known: cron, timezone,"),
    ],
)
def test_each_bad_field_is_named_on_create_and_on_patch(body: dict[str, Any], message: str) -> None:
    for partial in (False, True):
        errors = schedule_errors({"cron": "@daily", **body} if not partial else body, partial)
        assert len(errors) == 1 and errors[0].startswith(message), (partial, errors)


def test_every_problem_is_listed_at_once() -> None:
    errors = schedule_errors(
        {
            "cron": "* *",
            "timezone": "Nowhere/Land",
            "concurrency_policy": 3,
            "env_variables": [{"env_key": "A", "env_val": "1"}, {"env_key": "A", "env_val": "2"}],
            "colour": "blue",
        }
    )
    assert sorted(e.split(":")[0] for e in errors) == [
        "colour",
        "concurrency_policy",
        "cron",
        "env_variables[1].env_key",
        "timezone",
    ], errors


def test_a_body_that_is_not_an_object_is_one_problem_of_the_body() -> None:
    assert schedule_errors(["@daily"]) == ["body: must be a JSON object, got an array"]


def test_the_concurrency_policies_taken_are_the_models_policies() -> None:
    assert set(typing.get_args(ConcurrencyPolicyName)) == {p.value for p in ConcurrencyPolicy}


def _schedule(**fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "id": "3f1c4c64-2b0b-4a43-9d38-2c2f2d8f5f0a",
        "runner_id": "b5b2c9f0-39a4-4e79-a0b6-9d7c1f0f2f11",
        "cron": "0 9 * * MON-FRI",
        "timezone": "Europe/Berlin",
        "enabled": True,
        "env": [("A", "1")],
        "concurrency_policy": ConcurrencyPolicy.FORBID,
        "starting_deadline_seconds": 300,
        "anchor_at": 1_700_000_000_000,
        "next_run_at": 1_700_000_060_000,
        "last_run_at": None,
        "last_run_id": None,
        "missed_count": 2,
        "created_at": 1_700_000_000_000,
        "updated_at": 1_700_000_000_000,
    }
    values.update(fields)
    return Schedule(**values)


def test_schedule_json_has_exactly_the_models_fields_in_the_daemons_zone() -> None:
    data = schedule_json(_schedule(), BERLIN.tz)
    assert set(data) == set(contract.Schedule.model_fields)
    contract.Schedule.model_validate(data)  # extra="forbid": a field too many fails too
    assert data["env_variables"] == [{"env_key": "A", "env_val": "1"}]
    assert data["concurrency_policy"] == "forbid"
    assert data["next_run_at"] == "2023-11-14T23:14:20.000+01:00"
    assert data["last_run_at"] is None and data["missed_count"] == 2
    assert "runner_id" not in data and "anchor_at" not in data


def test_the_schedule_schemas_say_what_is_required_and_default_no_time_zone() -> None:
    schemas = contract.component_schemas()
    create, update = schemas["ScheduleCreate"], schemas["ScheduleUpdate"]
    assert create["required"] == ["cron"]
    assert "default" not in create["properties"]["timezone"]  # it depends on the daemon
    assert create["properties"]["starting_deadline_seconds"]["default"] == 300
    assert "required" not in update and update["minProperties"] == 1
    assert all("default" not in prop for prop in update["properties"].values())
    assert schemas["ConcurrencyPolicy"]["enum"] == ["allow", "forbid", "replace"]
    assert set(schemas["Schedule"]["required"]) == set(contract.Schedule.model_fields)
