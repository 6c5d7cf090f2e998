"""`runnerd schedules …`, run as a separate process as a user would from a terminal,
against runnerd's app in process (tests/api/conftest.py): schedules need no engine.
The other client commands are tests/integration/test_cli_client.py's."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from conftest import Api

from tests.api.conftest import InProcessDaemon
from tests.api.conftest import cli as run_cli


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


async def cli(daemon: InProcessDaemon, *args: str) -> Result:
    """`runnerd ARGS` against the app in process (conftest's cli)."""
    return Result(*await run_cli(daemon, *args))


def ok(result: Result) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def show(stdout: str) -> dict[str, str]:
    return {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in stdout.splitlines())
    }


async def test_schedules_create_list_update_pause_resume_delete(
    api: Api, daemon: InProcessDaemon
) -> None:
    runner = await api.create_runner(name="nightly-job")

    out = ok(await cli(daemon, "schedules", "list", "nightly-job"))
    assert "has no schedules" in out and "runnerd schedules create nightly-job" in out

    created = show(
        ok(
            await cli(
                daemon,
                "schedules",
                "create",
                "nightly-job",
                "--cron",
                "30 2 * * *",
                "--timezone",
                "Europe/Berlin",
                "-e",
                "MODE=full",
                "-e",
                "LEVEL=3",
                "--concurrency-policy",
                "forbid",
                "--starting-deadline",
                "60",
            )
        )
    )
    schedule_id = created["id"]
    uuid.UUID(schedule_id)
    assert created["cron"] == "30 2 * * *" and created["timezone"] == "Europe/Berlin"
    assert created["enabled"] == "true" and created["concurrency_policy"] == "forbid"
    assert created["starting_deadline_seconds"] == "60"
    assert json.loads(created["env_variables"]) == [
        {"env_key": "MODE", "env_val": "full"},
        {"env_key": "LEVEL", "env_val": "3"},
    ]
    paused_at_birth = json.loads(
        ok(
            await cli(
                daemon,
                "schedules",
                "create",
                runner["id"],
                "--cron",
                "@daily",
                "--disabled",
                "--json",
            )
        )
    )["schedule"]
    assert paused_at_birth["enabled"] is False and paused_at_birth["next_run_at"] is None

    lines = ok(await cli(daemon, "schedules", "list", "nightly-job")).splitlines()
    header, first, second = (re.split(r"\s{2,}", line.strip()) for line in lines)
    assert header == ["ID", "CRON", "TIMEZONE", "ENABLED", "NEXT RUN", "LAST RUN", "MISSED"]
    assert first[:4] == [schedule_id, "30 2 * * *", "Europe/Berlin", "yes"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:00", first[4]), first
    assert first[5:] == ["-", "0"]  # never fired, nothing missed
    assert second == [paused_at_birth["id"], "@daily", second[2], "no", "-", "-", "0"]

    updated = json.loads(
        ok(
            await cli(
                daemon,
                "schedules",
                "update",
                "nightly-job",
                schedule_id,
                "--cron",
                "@every 10m",
                "--clear-env",
                "--json",
            )
        )
    )["schedule"]
    assert updated["cron"] == "@every 10m" and updated["env_variables"] == []
    assert updated["timezone"] == "Europe/Berlin"  # not given: unchanged

    paused = show(ok(await cli(daemon, "schedules", "pause", "nightly-job", schedule_id)))
    assert paused["enabled"] == "false" and paused["next_run_at"] == "-"
    resumed = show(ok(await cli(daemon, "schedules", "resume", "nightly-job", schedule_id)))
    assert resumed["enabled"] == "true" and resumed["next_run_at"] != "-"

    out = ok(await cli(daemon, "schedules", "delete", "nightly-job", schedule_id))
    assert out.strip() == f"deleted schedule {schedule_id} of runner nightly-job"
    status, data = await api.get(f"/v1/runners/{runner['id']}/schedules")
    assert [s["id"] for s in data["schedules"]] == [paused_at_birth["id"]]


async def test_schedules_errors_are_one_line_each_with_an_exit_code(
    api: Api, daemon: InProcessDaemon
) -> None:
    await api.create_runner(name="err-job")
    cases: list[tuple[tuple[str, ...], int, str]] = [
        (("create", "err-job", "--cron", "61 * * * *"), 1, "cron: the minute field '61'"),
        (
            ("create", "err-job", "--cron", "@daily", "--timezone", "Mars/Base"),
            1,
            "timezone: unknown time zone 'Mars/Base'",
        ),
        (("create", "err-job"), 2, "the following arguments are required: --cron"),
        (("update", "err-job", str(uuid.uuid4())), 2, "nothing to update"),
        (("pause", "err-job", str(uuid.uuid4())), 1, "runner 'err-job' has no schedule"),
        (("delete", "err-job", "../runs"), 2, "'../runs' is not a schedule id"),
        (("list", "no-such-runner"), 1, "no runner with the id or name 'no-such-runner'"),
        (("create", "err-job", "--cron", "@daily", "--concurrency-policy", "x"), 2, "invalid"),
    ]
    for args, code, message in cases:
        result: Any = await cli(daemon, "schedules", *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
