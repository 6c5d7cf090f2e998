"""What every trigger shares (the API, a schedule's fire, a chain): a runner, its
env variables and its registry's host, made into what a new run of it runs.

The run itself is made by the store, inside the write that decides it may be
made (an idempotency key, a schedule's slot, a chain's parent): see `Prepared.run`
and store/runs.insert_run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import images
from .config import Config
from .contract import merge_env
from .models import EnvVariable, Run, Runner


class NotTriggerable(Exception):
    """The runner cannot be run as it is: str(e) is `field: message`."""


@dataclass(frozen=True)
class Prepared:
    runner: Runner
    env: list[tuple[str, str]]  # the runner's defaults, then the trigger's overrides
    cpu: float
    mem: int
    pids: int
    image: str  # the full reference, under its registry's host if it has one

    def run(self, *, now: int, **queued: Any) -> Run:
        """A new pending run (Run.queued's other keywords: trigger, not_before, …)."""
        return Run.queued(
            self.runner,
            self.env,
            cpu=self.cpu,
            mem=self.mem,
            pids=self.pids,
            image=self.image,
            now=now,
            **queued,
        )


def prepare(
    found: tuple[Runner, list[EnvVariable], str | None],
    config: Config,
    overrides: Iterable[tuple[str, str]] = (),
) -> Prepared:
    """`found` is store.runner_for_run's answer. NotTriggerable when the runner's
    instance type is no longer configured."""
    runner, defaults, registry_host = found
    itype = config.instance_types.get(runner.instance_type)
    if itype is None:
        raise NotTriggerable(
            f"instance_type: the runner's instance type {runner.instance_type!r} is no longer "
            f"configured; PATCH the runner to one of {', '.join(sorted(config.instance_types))}"
        )
    return Prepared(
        runner=runner,
        env=merge_env(defaults, list(overrides)),
        cpu=itype.cpu,
        mem=itype.mem,
        pids=itype.pids,
        image=images.reference(runner.image_name, runner.image_tag, registry_host),
    )
