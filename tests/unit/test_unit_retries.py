"""Retries without a store: when a policy retries a failed attempt, how long its
retry waits (doubling, the cap, the jitter), what the retry copies, and how a
runner's `retry_policy` is parsed (each problem naming its field)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from runnerd.config import Config
from runnerd.contract import Invalid, parse_runner
from runnerd.models import (
    DEFAULT_RETRY_ON,
    NO_RETRIES,
    FailureReason,
    RetryPolicy,
    Run,
    Runner,
    Status,
    Trigger,
)

CONFIG = Config()


# -- RetryPolicy.retries ----------------------------------------------------------


def test_a_policy_retries_each_attempt_up_to_max_retries_then_stops() -> None:
    policy = RetryPolicy(max_retries=2)
    assert policy.retries(1, FailureReason.NONZERO_EXIT, 3)
    assert policy.retries(2, FailureReason.NONZERO_EXIT, 3)
    assert not policy.retries(3, FailureReason.NONZERO_EXIT, 3)  # the last attempt


def test_the_default_policy_never_retries() -> None:
    assert NO_RETRIES.max_retries == 0
    assert not any(NO_RETRIES.retries(1, reason, 1) for reason in FailureReason)


def test_by_default_every_reason_is_retried_but_a_failed_pull_and_a_cancel() -> None:
    policy = RetryPolicy(max_retries=1)
    retried = {r for r in FailureReason if policy.retries(1, r, None)}
    assert retried == set(DEFAULT_RETRY_ON)
    assert FailureReason.IMAGE_PULL_FAILED not in retried
    assert FailureReason.CANCELED not in retried


def test_a_cancel_is_never_retried_even_when_every_reason_is_listed() -> None:
    policy = RetryPolicy(max_retries=5, retry_on=tuple(FailureReason))
    assert not policy.retries(1, FailureReason.CANCELED, None)
    assert not policy.retries(1, None, None)  # succeeded: no reason


def test_retry_on_limits_the_reasons_retried() -> None:
    policy = RetryPolicy(max_retries=1, retry_on=(FailureReason.TIMEOUT,))
    assert policy.retries(1, FailureReason.TIMEOUT, 137)
    assert not policy.retries(1, FailureReason.NONZERO_EXIT, 1)
    assert not policy.retries(1, FailureReason.LOST, None)


def test_retry_exit_codes_limits_which_nonzero_exits_are_retried() -> None:
    policy = RetryPolicy(max_retries=1, retry_exit_codes=(1, 2))
    assert policy.retries(1, FailureReason.NONZERO_EXIT, 1)
    assert policy.retries(1, FailureReason.NONZERO_EXIT, 2)
    assert not policy.retries(1, FailureReason.NONZERO_EXIT, 3)
    assert policy.retries(1, FailureReason.TIMEOUT, 137)  # the list is for nonzero_exit only


# -- RetryPolicy.backoff_ms -------------------------------------------------------


class _Fixed(random.Random):
    """A Random whose random() is always `value`: the jitter's ends."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_doubles_per_attempt_up_to_the_maximum() -> None:
    policy = RetryPolicy(max_retries=10, backoff_seconds=10, backoff_max_seconds=60)
    top = _Fixed(0.999999)
    waits = [policy.backoff_ms(attempt, top) for attempt in range(1, 7)]
    assert [round(w / 1000) for w in waits] == [10, 20, 40, 60, 60, 60]


def test_backoff_jitter_stays_between_80_and_100_percent() -> None:
    policy = RetryPolicy(backoff_seconds=5, backoff_max_seconds=600)
    assert policy.backoff_ms(1, _Fixed(0.0)) == 4000
    assert policy.backoff_ms(2, _Fixed(0.0)) == 8000
    rand = random.Random(7)
    waits = [policy.backoff_ms(2, rand) for _ in range(2000)]
    assert all(8000 <= w < 10000 for w in waits)
    assert max(waits) - min(waits) > 1500  # it does spread out


def test_backoff_of_a_late_attempt_does_not_overflow() -> None:
    policy = RetryPolicy(max_retries=20, backoff_seconds=86400, backoff_max_seconds=86400)
    assert policy.backoff_ms(20, _Fixed(0.999999)) <= 86400 * 1000


def test_the_policy_survives_its_json_round_trip() -> None:
    policy = RetryPolicy(
        max_retries=3,
        backoff_seconds=2,
        backoff_max_seconds=30,
        retry_on=(FailureReason.TIMEOUT, FailureReason.LOST),
        retry_exit_codes=(1, 7),
    )
    assert RetryPolicy.from_json(policy.to_json()) == policy
    assert RetryPolicy.from_json(None) is NO_RETRIES


# -- Run.retry --------------------------------------------------------------------


def _failed_run(**over: Any) -> Run:
    runner = Runner(
        id="r1",
        name="job",
        image_name="busybox",
        image_tag="latest",
        run_command="exit 3",
        argv=None,
        entrypoint=None,
        timeout_seconds=60,
        instance_type="standard-s",
        max_concurrent_runs=None,
        webhook_url="http://hook.example/x",
        container_registry_id=None,
        image_pull_policy=None,
        warmed_at=None,
        created_at=0,
        updated_at=0,
        retry_policy=RetryPolicy(max_retries=2, backoff_seconds=10),
    )
    run = Run.queued(
        runner, [("A", "1")], cpu=1.0, mem=512, pids=100, image=None, now=1000, schedule_id="s1"
    )
    run.status = Status.FAILED
    run.exit_code = 3
    run.failure_reason = FailureReason.NONZERO_EXIT
    run.started_at, run.completed_at = 2000, 5000
    run.webhook_status = "pending"
    for key, value in over.items():
        setattr(run, key, value)
    return run


def test_the_retry_copies_what_runs_and_starts_afresh() -> None:
    run = _failed_run()
    assert run.will_retry
    retry = run.retry(now=5000, not_before=run.retry_not_before)
    assert retry.id == run.retry_id != run.id
    assert (retry.status, retry.trigger, retry.attempt, retry.retry_of) == (
        Status.PENDING,
        Trigger.RETRY,
        2,
        run.id,
    )
    assert (retry.command, list(retry.env), retry.image, retry.timeout_seconds) == (
        "exit 3",
        [("A", "1")],
        run.image,
        60,
    )
    assert retry.schedule_id == "s1" and retry.retry_policy == run.retry_policy
    assert retry.exit_code is retry.failure_reason is retry.completed_at is None
    assert retry.started_at is retry.webhook_status is None
    assert retry.not_before is not None and 5000 + 8000 <= retry.not_before <= 5000 + 10000


def test_the_retry_s_id_and_time_follow_from_the_attempt() -> None:
    run = _failed_run()
    assert run.retry_id == _failed_run(id=run.id).retry_id
    assert run.retry_not_before == _failed_run(id=run.id).retry_not_before
    other = _failed_run()
    assert other.retry_id != run.retry_id


def test_a_canceled_succeeded_or_last_attempt_will_not_retry() -> None:
    assert not _failed_run(failure_reason=FailureReason.CANCELED).will_retry
    assert not _failed_run(status=Status.SUCCEEDED, failure_reason=None, exit_code=0).will_retry
    assert not _failed_run(attempt=3).will_retry
    assert _failed_run(attempt=2).will_retry


# -- the contract: a runner's retry_policy ----------------------------------------


def _parse(policy: Any, partial: bool = False) -> dict[str, Any]:
    body = {"retry_policy": policy}
    if not partial:
        body |= {"name": "job", "image_name": "busybox"}
    fields, _ = parse_runner(body, CONFIG, partial=partial)
    return fields


def _errors(policy: Any) -> list[str]:
    with pytest.raises(Invalid) as info:
        _parse(policy)
    return info.value.errors


def test_retry_policy_missing_fields_take_their_defaults() -> None:
    assert _parse({"max_retries": 2})["retry_policy"] == RetryPolicy(max_retries=2)
    assert _parse({})["retry_policy"] == NO_RETRIES


def test_retry_policy_null_means_never_retried_also_in_a_patch() -> None:
    assert _parse(None)["retry_policy"] is None
    assert _parse(None, partial=True) == {"retry_policy": None}


def test_retry_policy_keeps_given_values_reasons_once_and_codes_sorted() -> None:
    policy = _parse(
        {
            "max_retries": 20,
            "backoff_seconds": 1,
            "backoff_max_seconds": 1,
            "retry_on": ["timeout", "image_pull_failed", "timeout"],
            "retry_exit_codes": [7, 1, 7],
        }
    )["retry_policy"]
    assert policy == RetryPolicy(
        max_retries=20,
        backoff_seconds=1,
        backoff_max_seconds=1,
        retry_on=(FailureReason.TIMEOUT, FailureReason.IMAGE_PULL_FAILED),
        retry_exit_codes=(1, 7),
    )


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"max_retries": 21}, "retry_policy.max_retries"),
        ({"max_retries": -1}, "retry_policy.max_retries"),
        ({"max_retries": "2"}, "retry_policy.max_retries"),
        ({"backoff_seconds": 0}, "retry_policy.backoff_seconds"),
        ({"backoff_max_seconds": 86401}, "retry_policy.backoff_max_seconds"),
        ({"retry_on": ["canceled"]}, "retry_policy.retry_on[0]"),
        ({"retry_on": "timeout"}, "retry_policy.retry_on"),
        ({"retry_exit_codes": [0]}, "retry_policy.retry_exit_codes[0]"),
        ({"retry_exit_codes": [256]}, "retry_policy.retry_exit_codes[0]"),
        ({"retry_exit_codes": []}, "retry_policy.retry_exit_codes"),
        ({"max_retry": 2}, "retry_policy.max_retry"),
        ("3", "retry_policy"),
        ({"backoff_seconds": 60, "backoff_max_seconds": 30}, "retry_policy.backoff_max_seconds"),
    ],
)
def test_a_bad_retry_policy_is_refused_naming_its_field(policy: Any, field: str) -> None:
    errors = _errors(policy)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{field}:"), errors


def test_a_backoff_max_below_the_backoff_says_both_values() -> None:
    (error,) = _errors({"backoff_seconds": 60, "backoff_max_seconds": 30})
    assert "60" in error and "30" in error
