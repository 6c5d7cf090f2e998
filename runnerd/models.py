"""What runnerd keeps: runners, their env variables, runs and API keys.

Plain dataclasses, shared by the store (which reads and writes them), the
scheduler and executor (which move runs along) and the API (which renders them).
Times are integer milliseconds since the epoch, UTC; the API formats them.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields


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
    ) -> Run:
        """A new pending run of `runner`: what it runs is copied from the runner now."""
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
            timeout_seconds=runner.timeout_seconds,
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
        )


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


def now_ms() -> int:
    return time.time_ns() // 1_000_000
