"""The API contract's models: every problem reported as `field: message`; and the container command."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from runnerd import contract
from runnerd.config import Config, from_dict
from runnerd.contract import (
    IMAGE_NAME,
    RUNNER_FIELDS,
    Invalid,
    RunListQuery,
    TriggerOptions,
    check_command_exclusive,
    is_uuid,
    merge_env,
    parse_env_variable,
    parse_idempotency_key,
    parse_registry,
    parse_run_list_query,
    parse_runner,
    parse_tail,
    parse_trigger,
)
from runnerd.executor import container_command
from runnerd.models import (
    RUNNER_COLUMNS,
    ContainerRegistry,
    EnvVariable,
    Run,
    Runner,
    Status,
    Trigger,
)

CONFIG = Config()


def errors_of(fn: Any, *args: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(Invalid) as info:
        fn(*args, **kwargs)
    assert info.value.errors, "Invalid without errors"
    assert str(info.value) == "; ".join(info.value.errors)
    return info.value.errors


def runner_errors(body: Any, partial: bool = False) -> list[str]:
    return errors_of(parse_runner, body, CONFIG, partial=partial)


def one_error_about(errors: list[str], field: str) -> str:
    matching = [e for e in errors if e.startswith(field)]
    assert len(matching) == 1, errors
    return matching[0]


# -- runners ---------------------------------------------------------------------


def test_parse_runner_fills_in_every_default_on_create() -> None:
    out, env = parse_runner({"name": "nightly", "image_name": "busybox"}, CONFIG, partial=False)
    assert out == {
        "name": "nightly",
        "image_name": "busybox",
        "image_tag": "latest",
        "run_command": None,
        "argv": None,
        "entrypoint": None,
        "timeout_seconds": 3600,
        "instance_type": "standard-s",
        "max_concurrent_runs": None,
        "webhook_url": None,
        "container_registry_id": None,
        "image_pull_policy": "if_not_present",
        "retry_policy": None,
        "on_success": [],
        "on_failure": [],
    }
    assert env == []


def test_parse_runner_default_instance_type_comes_from_the_config() -> None:
    config = from_dict(
        {"default_instance_type": "tiny", "instance_types": {"tiny": {"cpu": 0.1, "mem": 64}}}
    )
    out, _ = parse_runner({"name": "abc", "image_name": "busybox"}, config, partial=False)
    assert out["instance_type"] == "tiny"
    errors = errors_of(
        parse_runner,
        {"name": "abc", "image_name": "busybox", "instance_type": "standard-s"},
        config,
        partial=False,
    )
    assert one_error_about(errors, "instance_type").endswith("got 'standard-s'")


def test_parse_runner_keeps_every_given_value() -> None:
    body = {
        "name": "job-1",
        "image_name": "registry.example.com:5000/team/job",
        "image_tag": "v1.2_rc-3",
        "argv": ["python", "-c", "print(1)"],
        "entrypoint": "/bin/sh -c",
        "timeout_seconds": 86400,
        "instance_type": "standard-m",
        "max_concurrent_runs": 1,
        "env_variables": [{"env_key": "A", "env_val": "1"}, {"env_key": "_b2", "env_val": ""}],
    }
    out, env = parse_runner(body, CONFIG, partial=False)
    assert out == {k: v for k, v in body.items() if k != "env_variables"} | {
        "run_command": None,
        "webhook_url": None,
        "container_registry_id": None,
        "image_pull_policy": "if_not_present",
        "retry_policy": None,
        "on_success": [],
        "on_failure": [],
    }
    assert env == [("A", "1"), ("_b2", "")]


def test_parse_runner_of_an_empty_body_names_both_required_fields() -> None:
    errors = runner_errors({})
    assert one_error_about(errors, "name:") == "name: is required"
    assert one_error_about(errors, "image_name:") == "image_name: is required"
    assert len(errors) == 2
    assert runner_errors(None) == errors  # no body at all: the same


def test_parse_runner_lists_every_problem_each_naming_its_field() -> None:
    errors = runner_errors(
        {
            "name": "x",
            "image_name": "Busybox",
            "image_tag": ".bad",
            "timeout_seconds": 0,
            "instance_type": "huge",
            "max_concurrent_runs": 0,
            "argv": [],
            "entrypoint": "'unclosed",
            "bogus": 1,
            "env_variables": [{"env_key": "1A", "env_val": 2}],
        }
    )
    for field in (
        "name",
        "image_name",
        "image_tag",
        "timeout_seconds",
        "instance_type",
        "max_concurrent_runs",
        "argv",
        "entrypoint",
        "bogus",
        "env_variables[0].env_key",
        "env_variables[0].env_val",
    ):
        assert any(e.startswith(f"{field}:") for e in errors), (field, errors)
    assert len(errors) == 11


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ab"}, "name"),
        ({"name": "x" * 51}, "name"),
        ({"name": 12}, "name"),
        ({"name": None}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": "nul\x00x"}, "name"),
        ({"image_tag": ""}, "image_tag"),
        ({"image_tag": "-x"}, "image_tag"),
        ({"image_tag": "a" * 129}, "image_tag"),
        ({"image_tag": "a:b"}, "image_tag"),
        ({"run_command": ""}, "run_command"),
        ({"run_command": "x" * 1001}, "run_command"),
        ({"run_command": ["ls"]}, "run_command"),
        ({"argv": "ls -l"}, "argv"),
        ({"argv": ["ok", 3]}, "argv[1]"),
        pytest.param({"argv": ["x"] * 257}, "argv", id="argv-257-items"),
        ({"entrypoint": "x" * 501}, "entrypoint"),
        ({"timeout_seconds": 86401}, "timeout_seconds"),
        ({"timeout_seconds": 1.5}, "timeout_seconds"),
        ({"timeout_seconds": True}, "timeout_seconds"),
        ({"timeout_seconds": "60"}, "timeout_seconds"),
        ({"instance_type": 1}, "instance_type"),
        ({"max_concurrent_runs": 1001}, "max_concurrent_runs"),
        ({"max_concurrent_runs": "2"}, "max_concurrent_runs"),
        ({"env_variables": {"A": "1"}}, "env_variables"),
        ({"env_variables": ["A=1"]}, "env_variables[0]"),
        ({"env_variables": [{"env_key": "A"}]}, "env_variables[0].env_val"),
        ({"env_variables": [{"env_val": "1"}]}, "env_variables[0].env_key"),
        ({"env_variables": [{"env_key": "A", "env_val": "1", "x": 1}]}, "env_variables[0].x"),
        (
            {"env_variables": [{"env_key": "A", "env_val": "1"}, {"env_key": "A", "env_val": "2"}]},
            "env_variables[1].env_key",
        ),
        pytest.param(
            {"env_variables": [{"env_key": "A", "env_val": str(i)} for i in range(501)]},
            "env_variables",
            id="env-501-items",
        ),
    ],
)
def test_parse_runner_rejects_a_bad_field_naming_it(body: dict[str, Any], field: str) -> None:
    full = {"name": "valid", "image_name": "busybox", **body}
    errors = runner_errors(full)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{field}:"), errors
    # the same field alone in a PATCH is refused the same way
    assert runner_errors(body, partial=True) == errors


def test_parse_runner_refuses_both_run_command_and_argv_on_create() -> None:
    errors = runner_errors(
        {"name": "abc", "image_name": "busybox", "run_command": "ls", "argv": ["ls"]}
    )
    assert errors == [
        "argv: cannot be set together with run_command: give one (or neither, to run the "
        "image's own CMD)"
    ]


def test_parse_runner_patch_returns_only_the_given_fields() -> None:
    assert parse_runner({}, CONFIG, partial=True) == ({}, None)
    assert parse_runner({"image_tag": "2"}, CONFIG, partial=True) == ({"image_tag": "2"}, None)
    assert parse_runner({"argv": None, "run_command": "echo"}, CONFIG, partial=True) == (
        {"argv": None, "run_command": "echo"},
        None,
    )
    assert parse_runner({"env_variables": []}, CONFIG, partial=True) == ({}, [])
    assert parse_runner({"max_concurrent_runs": None}, CONFIG, partial=True) == (
        {"max_concurrent_runs": None},
        None,
    )


def test_check_command_exclusive_refuses_a_merged_runner_with_both() -> None:
    check_command_exclusive("ls", None)
    check_command_exclusive(None, ["ls"])
    check_command_exclusive(None, None)
    assert errors_of(check_command_exclusive, "ls", ["ls"])[0].startswith(
        "argv: cannot be set together with run_command"
    )


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "team/job",
        "a/b/c/d",
        "registry.example.com:5000/team/job",
        "localhost:5000/a/b",
        "127.0.0.1:5000/x",
        "localhost/x",
        "my-registry.io/x",
        "a.b_c__d---e/f",
        "ghcr.io/owner/repo",
        "x",
    ],
)
def test_image_name_grammar_accepts(image: str) -> None:
    out, _ = parse_runner({"name": "abc", "image_name": image}, CONFIG, partial=False)
    assert out["image_name"] == image


@pytest.mark.parametrize(
    "image",
    [
        "Busybox",
        "team/Job",
        "-x",
        "x-",
        "a//b",
        "/a",
        "a/",
        "a b",
        "a..b",
        "a_.b",
        "registry.example.com:port/x",
        "",
        ":5000/x",
    ],
)
def test_image_name_grammar_rejects(image: str) -> None:
    errors = runner_errors({"name": "abc", "image_name": image})
    assert len(errors) == 1 and errors[0].startswith("image_name:"), errors
    assert IMAGE_NAME.match(image) is None


def test_image_name_longer_than_255_characters_is_rejected() -> None:
    parse_runner({"name": "abc", "image_name": "a" * 255}, CONFIG, partial=False)
    errors = runner_errors({"name": "abc", "image_name": "a" * 256})
    assert len(errors) == 1 and errors[0].startswith("image_name:"), errors


@pytest.mark.parametrize(
    "image",
    [
        "busybox:1.0",
        "team/job:latest",
        "localhost:5000/a/b:v2",
        "busybox@sha256:" + "a" * 64,
    ],
)
def test_image_name_with_a_tag_or_digest_points_to_image_tag(image: str) -> None:
    errors = runner_errors({"name": "abc", "image_name": image})
    assert len(errors) == 1 and errors[0].startswith("image_name:"), errors
    assert "image_tag" in errors[0]


# -- env variables ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["A", "_", "_x", "a1_B", "PATH", "x" * 255])
def test_env_key_accepts(key: str) -> None:
    assert parse_env_variable({"env_key": key, "env_val": "v"}, partial=False) == {
        "env_key": key,
        "env_val": "v",
    }


@pytest.mark.parametrize("key", ["1A", "A-B", "A B", "", "É", "A=B", "A\n", "x" * 256, 5, None])
def test_env_key_rejects(key: Any) -> None:
    errors = errors_of(parse_env_variable, {"env_key": key, "env_val": "v"}, partial=False)
    assert len(errors) == 1 and errors[0].startswith("env_key:"), errors


def test_parse_env_variable_create_needs_both_and_patch_needs_one() -> None:
    errors = errors_of(parse_env_variable, {}, partial=False)
    assert errors == ["env_key: is required", "env_val: is required"]
    assert errors_of(parse_env_variable, {}, partial=True) == [
        "body: must set env_key, env_val or both"
    ]
    assert parse_env_variable({"env_val": "x"}, partial=True) == {"env_val": "x"}
    assert errors_of(parse_env_variable, {"env_val": "x" * (32 * 1024 + 1)}, partial=True)[
        0
    ].startswith("env_val:")


def _env(key: str, val: str) -> EnvVariable:
    return EnvVariable(id=key, runner_id="r", env_key=key, env_val=val, created_at=0, updated_at=0)


def test_merge_env_lets_the_override_win_and_keeps_each_key_once() -> None:
    defaults = [_env("A", "1"), _env("B", "2"), _env("C", "3")]
    merged = merge_env(defaults, [("B", "override"), ("D", "4")])
    assert dict(merged) == {"A": "1", "B": "override", "C": "3", "D": "4"}
    assert len(merged) == len({k for k, _ in merged}) == 4
    assert merge_env(defaults, []) == [("A", "1"), ("B", "2"), ("C", "3")]
    assert merge_env([], [("X", "")]) == [("X", "")]


# -- runs ------------------------------------------------------------------------


def test_parse_trigger_of_no_body_or_an_empty_object_is_a_run_like_any_other_queued_now() -> None:
    plain = TriggerOptions(env=[], not_before=None, timeout_seconds=None)
    assert parse_trigger(None) == plain
    assert parse_trigger({}) == plain
    assert parse_trigger({"env_variables": []}) == plain
    assert parse_trigger({"run_at": None, "timeout_seconds": None}) == plain


def test_parse_trigger_returns_the_overrides_in_order() -> None:
    body = {"env_variables": [{"env_key": "B", "env_val": "2"}, {"env_key": "A", "env_val": ""}]}
    assert parse_trigger(body).env == [("B", "2"), ("A", "")]


# 2026-01-15T09:01:00Z, the clock the run_at tests read
NOW = 1_768_467_660_000


@pytest.mark.parametrize(
    ("run_at", "expected"),
    [
        ("2026-01-15T10:31:00.000+01:00", NOW + 30 * 60_000),  # the API's own format
        ("2026-01-15T09:31:00Z", NOW + 30 * 60_000),
        ("2026-01-15T09:31:00.250Z", NOW + 30 * 60_000 + 250),
        ("2026-01-15T04:31:00.123456-05:00", NOW + 30 * 60_000 + 123),  # Python's isoformat
        ("2026-01-15T15:01:00+05:30", NOW + 30 * 60_000),
        ("2027-01-16T09:01:00Z", NOW + 366 * 86_400_000),  # a year ahead, leap day or not
    ],
)
def test_parse_trigger_takes_run_at_with_any_offset_as_not_before(
    run_at: str, expected: int
) -> None:
    assert parse_trigger({"run_at": run_at}, now=NOW).not_before == expected


def test_parse_trigger_takes_a_run_at_up_to_60_s_in_the_past_as_now() -> None:
    assert parse_trigger({"run_at": "2026-01-15T09:00:00Z"}, now=NOW).not_before == NOW
    assert parse_trigger({"run_at": "2026-01-15T09:01:00Z"}, now=NOW).not_before == NOW


def test_parse_trigger_returns_the_runs_own_timeout() -> None:
    assert parse_trigger({"timeout_seconds": 1}).timeout_seconds == 1
    assert parse_trigger({"timeout_seconds": 86400}).timeout_seconds == 86400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"run_at": "2027-01-16T09:01:00.001Z"},
            "run_at: must be at most 1 year ahead, got 2027-01-16T09:01:00.001Z",
        ),
        (
            {"run_at": "2026-01-15T08:59:59.999Z"},
            "run_at: must not be more than 60 s in the past, got 2026-01-15T08:59:59.999Z "
            "(60 s before the daemon's clock)",
        ),
        (
            {"run_at": "2026-01-15T10:01:00"},
            "run_at: needs a UTC offset (such as 2026-01-15T10:01:00.000+01:00 or Z for UTC), "
            "got '2026-01-15T10:01:00'",
        ),
        (
            {"run_at": "tomorrow"},
            "run_at: must be a time such as 2026-01-15T10:01:00.000+01:00 (or Z for UTC), "
            "got 'tomorrow'",
        ),
        (
            {"run_at": "2026-02-30T10:01:00Z"},
            "run_at: is not a valid time (day is out of range for month), "
            "got '2026-02-30T10:01:00Z'",
        ),
        ({"run_at": 1768467660000}, "run_at: must be a string or null, got a number"),
        ({"timeout_seconds": 0}, "timeout_seconds: must be between 1 and 86400, got 0"),
        ({"timeout_seconds": 86401}, "timeout_seconds: must be between 1 and 86400, got 86401"),
        ({"timeout_seconds": 1.5}, "timeout_seconds: must be a whole number or null, got a number"),
        (
            {"timeout_seconds": "60"},
            "timeout_seconds: must be a whole number or null, got a string",
        ),
    ],
)
def test_parse_trigger_rejects_a_bad_run_at_or_timeout_naming_it(
    body: dict[str, Any], message: str
) -> None:
    assert errors_of(parse_trigger, body, now=NOW) == [message]


def test_parse_trigger_lists_every_problem_of_the_body_at_once() -> None:
    body = {"run_at": "2030-01-01T00:00:00Z", "timeout_seconds": 0, "env_variables": [{}]}
    errors = errors_of(parse_trigger, body, now=NOW)
    assert [e.split(":")[0] for e in errors] == [
        "env_variables[0].env_key",
        "env_variables[0].env_val",
        "run_at",
        "timeout_seconds",
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ("x", "body"),
        ({"env": []}, "env"),
        ({"env_variables": None}, "env_variables"),
        (
            {"env_variables": [{"env_key": "A", "env_val": "1"}, {"env_key": "A", "env_val": "2"}]},
            "env_variables[1].env_key",
        ),
    ],
)
def test_parse_trigger_rejects_naming_the_field(body: Any, field: str) -> None:
    errors = errors_of(parse_trigger, body)
    assert len(errors) == 1 and errors[0].startswith(f"{field}:"), errors


def test_parse_run_list_query_defaults() -> None:
    assert parse_run_list_query({}) == RunListQuery(50, None, None, None)


def test_parse_run_list_query_accepts_its_bounds_and_values() -> None:
    run_id = str(uuid.uuid4())
    assert parse_run_list_query({"limit": "1"}).limit == 1
    assert parse_run_list_query({"limit": "1000"}).limit == 1000
    assert parse_run_list_query({"status": "failed"}).status is Status.FAILED
    assert parse_run_list_query({"trigger": "retry"}).trigger is Trigger.RETRY
    assert parse_run_list_query({"before": run_id}).before == run_id


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "²"}, "limit"),
        pytest.param({"limit": "1" * 5000}, "limit", id="limit-5000-digits"),
        ({"limit": " 5"}, "limit"),
        ({"status": "done"}, "status"),
        ({"trigger": "cron"}, "trigger"),
        ({"before": "not-a-uuid"}, "before"),
        ({"before": str(uuid.uuid4()).replace("-", "")}, "before"),
        ({"page": "2"}, "page"),
    ],
)
def test_parse_run_list_query_rejects_naming_the_parameter(
    query: dict[str, str], field: str
) -> None:
    errors = errors_of(parse_run_list_query, query)
    assert len(errors) == 1 and errors[0].startswith(f"{field}:"), errors


def test_parse_run_list_query_reports_every_bad_parameter() -> None:
    errors = errors_of(
        parse_run_list_query, {"limit": "0", "status": "x", "trigger": "z", "before": "y"}
    )
    assert [e.split()[0] for e in errors] == ["limit:", "status:", "trigger:", "before:"]


def test_parse_run_list_query_gives_before_in_the_stored_lowercase_form() -> None:
    """Path ids are accepted in any case and lowercased (api._uuid); `before` passes
    is_uuid in upper case too but was handed on as given, so the run is not found."""
    run_id = str(uuid.uuid4())
    assert is_uuid(run_id.upper())
    assert parse_run_list_query({"before": run_id.upper()}).before == run_id


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("5", 5), ("1000000", 1_000_000)])
def test_parse_tail_accepts_counts(raw: str, expected: int) -> None:
    assert parse_tail({"tail": raw}) == expected
    assert parse_tail({}) is None


@pytest.mark.parametrize("raw", ["", "-1", "1000001", "x", "²", "1" * 5000, "1.5"])
def test_parse_tail_rejects(raw: str) -> None:
    errors = errors_of(parse_tail, {"tail": raw})
    assert len(errors) == 1 and errors[0].startswith("tail:"), errors


def test_parse_idempotency_key() -> None:
    assert parse_idempotency_key(None) is None
    assert parse_idempotency_key("abc-123_XYZ!~") == "abc-123_XYZ!~"
    assert parse_idempotency_key("k" * 255) == "k" * 255
    for bad in ("", "has space", "k" * 256, "tab\t", "é"):
        assert errors_of(parse_idempotency_key, bad)[0].startswith("Idempotency-Key:")


# -- pydantic's errors in the API's words -----------------------------------------

KNOWN = (
    "name, image_name, image_tag, run_command, argv, entrypoint, timeout_seconds, "
    "instance_type, max_concurrent_runs, webhook_url, container_registry_id, "
    "image_pull_policy, retry_policy, on_success, on_failure, env_variables"
)
PAIR = {"env_key": "A", "env_val": "1"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"foo": 1}, f"foo: is not a known field (known: {KNOWN})"),
        ({"bad key": 1}, f"'bad key': is not a known field (known: {KNOWN})"),
        ({"name": 12}, "name: must be a string, got a number"),
        ({"name": None}, "name: must be a string, not null"),
        ({"run_command": 5}, "run_command: must be a string or null, got a number"),
        ({"name": "ab"}, "name: must be 3 to 50 characters long, got 2"),
        ({"entrypoint": "x" * 501}, "entrypoint: must be at most 500 characters long, got 501"),
        ({"name": "nul\x00x"}, "name: must not contain NUL characters"),
        (
            {"name": "lone \ud800"},
            "name: must be valid Unicode text, without lone surrogates such as \\ud800",
        ),
        ({"timeout_seconds": 0}, "timeout_seconds: must be between 1 and 86400, got 0"),
        ({"timeout_seconds": 3600.0}, "timeout_seconds: must be a whole number, got a number"),
        ({"timeout_seconds": True}, "timeout_seconds: must be a whole number, got a boolean"),
        (
            {"max_concurrent_runs": "2"},
            "max_concurrent_runs: must be a whole number or null, got a string",
        ),
        ({"argv": "ls"}, "argv: must be an array or null, got a string"),
        ({"argv": []}, "argv: must have at least 1 item, got none"),
        (
            {"env_variables": [PAIR] * 501},
            "env_variables: may hold at most 500 items, got 501",
        ),
        ({"env_variables": [5]}, "env_variables[0]: must be a JSON object, got a number"),
        (
            {"env_variables": [{**PAIR, "x": 1}]},
            "env_variables[0].x: is not a known field (known: env_key, env_val)",
        ),
        ({"env_variables": [PAIR, PAIR]}, "env_variables[1].env_key: 'A' appears more than once"),
        (
            {"image_pull_policy": "sometimes"},
            "image_pull_policy: must be one of if_not_present, always, never, got 'sometimes'",
        ),
        (
            {"instance_type": "huge"},
            "instance_type: must be one of standard-m, standard-s, standard-xs, got 'huge'",
        ),
        ({"webhook_url": "ftp://x"}, "webhook_url: must be an http:// or https:// URL"),
    ],
)
def test_each_kind_of_problem_reads_as_field_colon_message(
    body: dict[str, Any], message: str
) -> None:
    assert runner_errors({"name": "valid", "image_name": "busybox", **body}) == [message]


def test_a_repeated_env_key_is_listed_beside_the_other_items_problems() -> None:
    body = {"env_variables": [{"env_key": "A", "env_val": 1}, PAIR, {**PAIR, "x": 1}]}
    assert errors_of(parse_trigger, body) == [
        "env_variables[0].env_val: must be a string, got a number",
        "env_variables[2].x: is not a known field (known: env_key, env_val)",
        "env_variables[1].env_key: 'A' appears more than once",
        "env_variables[2].env_key: 'A' appears more than once",
    ]
    # past the item limit, the limit is the one problem
    assert errors_of(parse_trigger, {"env_variables": [PAIR] * 501}) == [
        "env_variables: may hold at most 500 items, got 501"
    ]


def test_a_body_that_is_not_an_object_is_one_problem_of_the_body() -> None:
    assert runner_errors([1]) == ["body: must be a JSON object, got an array"]
    assert errors_of(parse_trigger, "x") == ["body: must be a JSON object, got a string"]


def test_patch_tells_null_from_absent() -> None:
    assert parse_runner({"webhook_url": None}, CONFIG, partial=True) == (
        {"webhook_url": None},
        None,
    )
    assert parse_runner({}, CONFIG, partial=True) == ({}, None)
    # null only clears what may be null
    assert runner_errors({"timeout_seconds": None}, partial=True) == [
        "timeout_seconds: must be a whole number, got null"
    ]
    assert runner_errors({"image_pull_policy": None}, partial=True)[0].startswith(
        "image_pull_policy:"
    )


def test_webhook_url_needs_an_allowed_host_and_a_secret_from_the_config() -> None:
    body = {"name": "abc", "image_name": "busybox", "webhook_url": "http://hooks.example/x"}
    assert errors_of(parse_runner, body, CONFIG, partial=False) == [
        "webhook_url: needs [webhooks] secret in the daemon's config, to sign deliveries"
    ]
    config = from_dict({"webhooks": {"secret": "s" * 32, "allowed_hosts": ["other.example"]}})
    assert errors_of(parse_runner, body, config, partial=False) == [
        "webhook_url: the host 'hooks.example' is not in the daemon's [webhooks] allowed_hosts"
    ]
    config = from_dict({"webhooks": {"secret": "s" * 32}})
    out, _ = parse_runner(body, config, partial=False)
    assert out["webhook_url"] == "http://hooks.example/x"


def test_container_registry_id_is_lowercased() -> None:
    registry_id = str(uuid.uuid4())
    out, _ = parse_runner({"container_registry_id": registry_id.upper()}, CONFIG, partial=True)
    assert out == {"container_registry_id": registry_id}


def test_registry_create_lists_every_missing_field_and_patch_needs_one() -> None:
    assert errors_of(parse_registry, {}, partial=False) == [
        "name: is required",
        "host: is required",
        "username: is required",
        "password: is required",
    ]
    assert errors_of(parse_registry, None, partial=True) == [
        "body: must set at least one of name, host, username, password"
    ]
    assert errors_of(parse_registry, {"host": "https://ghcr.io"}, partial=True)[0].startswith(
        "host: must be a registry host"
    )
    assert parse_registry({"username": "u"}, partial=True) == {"username": "u"}


# -- the one definition ----------------------------------------------------------


def test_runner_fields_are_the_store_columns_plus_env_variables() -> None:
    assert RUNNER_FIELDS == (*RUNNER_COLUMNS, "env_variables")
    assert tuple(contract.RunnerUpdate.model_fields) == RUNNER_FIELDS


def _runner() -> Runner:
    return Runner(
        id=str(uuid.uuid4()),
        name="abc",
        image_name="busybox",
        image_tag="latest",
        run_command=None,
        argv=["ls"],
        entrypoint=None,
        timeout_seconds=60,
        instance_type="standard-s",
        max_concurrent_runs=None,
        webhook_url=None,
        container_registry_id=None,
        image_pull_policy=None,
        warmed_at=None,
        created_at=1_700_000_000_000,
        updated_at=1_700_000_000_000,
    )


def test_each_rendering_has_exactly_its_models_fields_and_types() -> None:
    tz = CONFIG.tz
    rendered = [
        (contract.Runner, contract.runner_json(_runner(), CONFIG)),
        (contract.Run, contract.run_json(_run(argv=["ls"]), tz)),
        (contract.EnvVariable, contract.env_json(_env("A", "1"), tz)),
        (
            contract.ContainerRegistry,
            contract.registry_json(ContainerRegistry("i", "reg", "ghcr.io", "u", 0, 0), tz),
        ),
        (contract.LogEntry, contract.log_entry_json(7, 2, 1_700_000_000_000_000_000, b"x\n", tz)),
    ]
    for model, data in rendered:
        assert set(data) == set(model.model_fields), model
        model.model_validate(data)  # extra="forbid": a field too many fails too
    assert set(contract.runner_json(_runner(), CONFIG)["instance_type"]) == set(
        contract.InstanceType.model_fields
    )


def test_component_schemas_keep_the_names_the_paths_refer_to() -> None:
    schemas = contract.component_schemas()
    for name in ("RunStatus", "FailureReason", "RunnerCreate", "RunnerUpdate", "Error", "LogPage"):
        assert name in schemas
    assert schemas["RunnerCreate"]["required"] == ["name", "image_name"]
    assert "required" not in schemas["RunnerUpdate"]
    assert schemas["EnvVariableUpdate"]["minProperties"] == 1
    assert all("title" not in s for s in schemas.values())


# -- container command -----------------------------------------------------------


def _run(
    command: str | None = None, argv: list[str] | None = None, entrypoint: str | None = None
) -> Run:
    return Run(
        id="r",
        runner_id="n",
        status=Status.PENDING,
        image="busybox:latest",
        command=command,
        argv=argv,
        entrypoint=entrypoint,
        env=[],
        timeout_seconds=60,
        instance_type="standard-s",
        cpu=1.0,
        mem=1024,
        pids=512,
        exit_code=None,
        failure_reason=None,
        error=None,
        container_id=None,
        started_at=None,
        completed_at=None,
        created_at=0,
        updated_at=0,
    )


@pytest.mark.parametrize(
    ("run", "cmd", "entrypoint"),
    [
        (_run(), None, None),
        (_run(command="echo $HOME && ls"), ["sh", "-c", "echo $HOME && ls"], None),
        (_run(argv=["python", "-c", "print('a b')"]), ["python", "-c", "print('a b')"], None),
        (_run(argv=[""]), [""], None),
        (_run(entrypoint=""), None, [""]),
        (_run(entrypoint="   "), None, [""]),
        (_run(entrypoint="sh -c"), None, ["sh", "-c"]),
        (_run(entrypoint="/bin/tini -- 'my app'"), None, ["/bin/tini", "--", "my app"]),
        (_run(command="date", entrypoint="/bin/sh -e"), ["sh", "-c", "date"], ["/bin/sh", "-e"]),
        (_run(argv=["x"], entrypoint=""), ["x"], [""]),
    ],
)
def test_container_command_maps_command_argv_and_entrypoint(
    run: Run, cmd: list[str] | None, entrypoint: list[str] | None
) -> None:
    assert container_command(run) == (cmd, entrypoint)


def test_container_command_copies_argv() -> None:
    run = _run(argv=["a"])
    cmd, _ = container_command(run)
    assert cmd is not None
    cmd.append("b")
    assert run.argv == ["a"]


def test_the_retry_reasons_a_policy_takes_are_every_failure_reason_but_canceled() -> None:
    from typing import get_args

    from runnerd.contract.bodies import RetryReason
    from runnerd.models import RETRYABLE, FailureReason

    assert set(get_args(RetryReason)) == {r.value for r in RETRYABLE}
    assert set(FailureReason) - RETRYABLE == {FailureReason.CANCELED}
