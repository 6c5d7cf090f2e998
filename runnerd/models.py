"""What runnerd keeps: runners, their env variables, schedules, runs and API keys.

Plain dataclasses, shared by the store (which reads and writes them), the
scheduler and executor (which move runs along) and the API (which renders them).
Times are integer milliseconds since the epoch, UTC; the API formats them.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any


class Status(str, enum.Enum):
    PENDING = "pending"  # queued, no container yet
    RUNNING = "running"  # container started
    SUCCEEDED = "succeeded"  # exited 0
    FAILED = "failed"  # see FailureReason


TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED})
ACTIVE_STATUSES = frozenset({Status.PENDING, Status.RUNNING})


class FailureReason(str, enum.Enum):
    NONZERO_EXIT = "nonzero_exit"
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    IMAGE_PULL_FAILED = "image_pull_failed"
    START_FAILED = "start_failed"
    LOST = "lost"


class Trigger(str, enum.Enum):
    """What made a run."""

    API = "api"  # POST …/runs
    SCHEDULE = "schedule"  # a schedule fired (`schedule_id`, `scheduled_for`)
    RETRY = "retry"  # the retry of a failed attempt (`retry_of`)
    CHAIN = "chain"  # a run of another runner ended (`parent_run_id`)


class ConcurrencyPolicy(str, enum.Enum):
    """What a schedule does when its fire time comes while its last run is active."""

    ALLOW = "allow"  # fire regardless
    FORBID = "forbid"  # skip the fire (counted, logged)
    REPLACE = "replace"  # cancel the active run, then fire


# Retried unless a policy says otherwise: everything but a pull that failed (a
# missing image does not appear by waiting) and, never, a cancel.
DEFAULT_RETRY_ON: tuple[FailureReason, ...] = (
    FailureReason.NONZERO_EXIT,
    FailureReason.TIMEOUT,
    FailureReason.LOST,
    FailureReason.START_FAILED,
)
RETRYABLE = frozenset(DEFAULT_RETRY_ON) | {FailureReason.IMAGE_PULL_FAILED}


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed run is tried again, and after how long. The runner's policy is
    copied onto each run it triggers, as the command is."""

    max_retries: int = 0  # 0: never retried; a run is tried at most 1 + max_retries times
    backoff_seconds: int = 10  # before the first retry; doubled for each one after it
    backoff_max_seconds: int = 600
    retry_on: tuple[FailureReason, ...] = DEFAULT_RETRY_ON
    retry_exit_codes: tuple[int, ...] | None = None  # None: any non-zero exit code

    def retries(self, attempt: int, reason: FailureReason | None, exit_code: int | None) -> bool:
        """Whether attempt number `attempt`, failed with `reason`, gets another one."""
        if attempt > self.max_retries or reason not in RETRYABLE or reason not in self.retry_on:
            return False  # a cancel is never retried, whatever retry_on holds
        if reason is FailureReason.NONZERO_EXIT and self.retry_exit_codes is not None:
            return exit_code in self.retry_exit_codes
        return True

    def backoff_ms(self, attempt: int, rand: random.Random | None = None) -> int:
        """How long after attempt `attempt` failed its retry waits: backoff_seconds,
        doubled per attempt up to backoff_max_seconds, then between 80 % and 100 % of
        that (jitter, so retries of many runs that failed together spread out)."""
        base = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** min(attempt - 1, 30))
        return int(base * 1000 * (0.8 + 0.2 * (rand or random).random()))

    def to_json(self) -> dict[str, object]:
        return {
            "max_retries": self.max_retries,
            "backoff_seconds": self.backoff_seconds,
            "backoff_max_seconds": self.backoff_max_seconds,
            "retry_on": [r.value for r in self.retry_on],
            "retry_exit_codes": None
            if self.retry_exit_codes is None
            else list(self.retry_exit_codes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RetryPolicy:
        """From `to_json`'s shape (the store's column, a parsed request); missing
        keys take their defaults, and None is the default policy (no retries)."""
        if not data:
            return NO_RETRIES
        default = cls()
        codes = data.get("retry_exit_codes")
        retry_on = data.get("retry_on")
        return cls(
            max_retries=int(data.get("max_retries", default.max_retries)),
            backoff_seconds=int(data.get("backoff_seconds", default.backoff_seconds)),
            backoff_max_seconds=int(data.get("backoff_max_seconds", default.backoff_max_seconds)),
            retry_on=default.retry_on
            if retry_on is None
            else tuple(FailureReason(r) for r in retry_on),
            retry_exit_codes=None if codes is None else tuple(int(c) for c in codes),
        )


NO_RETRIES = RetryPolicy()

# The namespace of retries' ids: a retry's id is derived from the attempt it retries.
_RETRY_IDS = uuid.UUID("5d0c2a4e-6f1b-4c3e-9a57-2b8e1f0d7c93")


class Scope(str, enum.Enum):
    FULL = "full"  # every method
    READ = "read"  # GET only


@dataclass
class EnvVariable:
    """A default env variable of a runner; every run of it gets it unless overridden."""

    id: str
    runner_id: str
    env_key: str
    env_val: str
    created_at: int
    updated_at: int


@dataclass
class Runner:
    """A container job definition. `run_command` (run as `sh -c`) and `argv` (exec
    form) exclude each other; with neither the image's own CMD runs."""

    id: str
    name: str
    image_name: str
    image_tag: str
    run_command: str | None
    argv: list[str] | None
    entrypoint: str | None
    timeout_seconds: int
    instance_type: str  # slug into the config's instance types
    max_concurrent_runs: int | None  # None: only the daemon's limit; 1: never overlap
    webhook_url: str | None  # POSTed to when a run completes
    container_registry_id: str | None  # whose host and credentials pull the image
    image_pull_policy: str | None  # if_not_present (None), always, never
    warmed_at: int | None  # last POST …/warm that pulled the image
    created_at: int
    updated_at: int
    retry_policy: RetryPolicy = NO_RETRIES  # copied onto each run it triggers
    # Runner ids triggered when a run of this one succeeds / fails for good (after its
    # retries); the store refuses a change that would make a cycle.
    on_success: list[str] = field(default_factory=list)
    on_failure: list[str] = field(default_factory=list)

    @property
    def image(self) -> str:
        return f"{self.image_name}:{self.image_tag}"


# What a client sets on a runner: the store's columns, the API's fields (plus
# `env_variables`); runnerd sets the rest.
RUNNER_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(Runner) if f.name not in ("id", "warmed_at", "created_at", "updated_at")
)


@dataclass
class Run:
    """One execution of a runner. What it runs is copied from the runner when it
    is triggered, so editing the runner later never changes a queued run.

    `env` is the merged environment (runner defaults, then the run's overrides)
    as (key, value) pairs; `cpu`, `mem` (MiB) and `pids` are the instance type's
    limits at trigger time.
    """

    id: str
    runner_id: str
    status: Status
    image: str
    command: str | None
    argv: list[str] | None
    entrypoint: str | None
    env: Sequence[tuple[str, str]]  # the store's is decrypted on first use
    timeout_seconds: int
    instance_type: str
    cpu: float
    mem: int
    pids: int
    exit_code: int | None
    failure_reason: FailureReason | None
    error: str | None
    container_id: str | None
    started_at: int | None
    completed_at: int | None
    created_at: int
    updated_at: int
    webhook_url: str | None = None  # copied from the runner at trigger time
    webhook_status: str | None = None  # None, "pending", "delivered" or "failed"
    container_registry_id: str | None = None
    image_pull_policy: str = "if_not_present"
    seq: int = 0  # queue order; also the cursor for `before=` pages
    trigger: Trigger = Trigger.API
    attempt: int = 1  # 1 for the first try; a retry is the previous attempt's + 1
    retry_of: str | None = None  # the attempt this one retries
    not_before: int | None = None  # a pending run is not started before this time
    schedule_id: str | None = None  # the schedule that fired it (kept by its retries)
    scheduled_for: int | None = None  # the schedule's slot it was fired for
    parent_run_id: str | None = None  # the run whose end triggered it (a chain)
    retry_policy: RetryPolicy = NO_RETRIES  # the runner's, when it was triggered
    # True when runnerd knows its stored log may miss output (the engine's stream
    # broke, or its log could not be checked against the engine's copy); the log
    # itself then holds a note saying what happened. Never cleared.
    log_incomplete: bool = False
    node: str | None = None  # the Swarm node its container ran on; None on plain Docker

    @property
    def will_retry(self) -> bool:
        """Whether this run, ended `failed`, gets a retry: then that retry is (or will
        be, on the same commit) a pending run with `retry_of` = this run's id."""
        return self.status is Status.FAILED and self.retry_policy.retries(
            self.attempt, self.failure_reason, self.exit_code
        )

    @classmethod
    def queued(
        cls,
        runner: Runner,
        env: list[tuple[str, str]],
        *,
        cpu: float,
        mem: int,
        pids: int,
        image: str | None,
        now: int,
        seq: int = 0,
        trigger: Trigger = Trigger.API,
        timeout_seconds: int | None = None,
        not_before: int | None = None,
        schedule_id: str | None = None,
        scheduled_for: int | None = None,
        parent_run_id: str | None = None,
    ) -> Run:
        """A new pending run of `runner`: what it runs is copied from the runner now
        (`timeout_seconds`, when given, overrides the runner's for this run)."""
        return cls(
            seq=seq,
            id=str(uuid.uuid4()),
            runner_id=runner.id,
            status=Status.PENDING,
            image=image or runner.image,
            command=runner.run_command,
            argv=runner.argv,
            entrypoint=runner.entrypoint,
            env=list(env),
            timeout_seconds=timeout_seconds or runner.timeout_seconds,
            instance_type=runner.instance_type,
            cpu=cpu,
            mem=mem,
            pids=pids,
            exit_code=None,
            failure_reason=None,
            error=None,
            container_id=None,
            started_at=None,
            completed_at=None,
            created_at=now,
            updated_at=now,
            webhook_url=runner.webhook_url,
            container_registry_id=runner.container_registry_id,
            image_pull_policy=runner.image_pull_policy or "if_not_present",
            trigger=trigger,
            not_before=not_before,
            schedule_id=schedule_id,
            scheduled_for=scheduled_for,
            parent_run_id=parent_run_id,
            retry_policy=runner.retry_policy,
        )

    @property
    def retry_id(self) -> str:
        """The id its retry gets (when `will_retry`). Derived from this run's id, as
        is the retry's `retry_not_before`: a completion listener can name the retry
        the store made in the same commit without reading it back."""
        return str(uuid.uuid5(_RETRY_IDS, self.id))

    @property
    def retry_not_before(self) -> int:
        """When its retry may start: its back-off after this run completed, the
        jitter seeded by this run's id (runs that failed together still spread out)."""
        assert self.completed_at is not None, "only a completed run is retried"
        return self.completed_at + self.retry_policy.backoff_ms(
            self.attempt, random.Random(self.id)
        )

    def retry(self, *, now: int, not_before: int) -> Run:
        """The next attempt of this failed run: the same command, env and limits, its
        own id (`retry_id`), pending until `not_before`. Kept: what fired it
        (schedule, parent)."""
        return dataclasses.replace(
            self,
            id=self.retry_id,
            seq=0,
            status=Status.PENDING,
            exit_code=None,
            failure_reason=None,
            error=None,
            container_id=None,
            started_at=None,
            completed_at=None,
            created_at=now,
            updated_at=now,
            webhook_status=None,
            log_incomplete=False,  # its own log, not this attempt's
            node=None,  # its own container's node, not this attempt's
            trigger=Trigger.RETRY,
            attempt=self.attempt + 1,
            retry_of=self.id,
            not_before=not_before,
        )


@dataclass
class Schedule:
    """When a runner is triggered by the clock. `env` (overrides for the runs it
    fires) is stored encrypted, like a run's. `next_run_at` is the slot it fires
    next (None while disabled, or when the expression never fires again)."""

    id: str
    runner_id: str
    cron: str  # five fields, a macro or `@every <duration>` (runnerd.cron)
    timezone: str  # an IANA name
    enabled: bool
    env: list[tuple[str, str]]
    concurrency_policy: ConcurrencyPolicy
    starting_deadline_seconds: int
    anchor_at: int  # `@every` counts from here: creation, or the last change of `cron`
    next_run_at: int | None
    last_run_at: int | None
    last_run_id: str | None
    missed_count: int
    created_at: int
    updated_at: int


@dataclass
class ContainerRegistry:
    """A registry runnerd pulls from with credentials; the password never leaves
    the store except to the engine."""

    id: str
    name: str
    host: str
    username: str
    created_at: int
    updated_at: int


@dataclass
class ApiKey:
    id: str
    name: str
    scope: Scope
    created_at: int
    last_used_at: int | None


@dataclass
class UiSession:
    """A dashboard login: the key it was made with (its name and scope as they are
    now) and when it was last used. Its id is the hash of the cookie's token."""

    id: str
    api_key_id: str
    key_name: str
    scope: Scope
    created_at: int
    last_seen_at: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000
