"""Retries through the API (runnerd's app in process, the real store and scheduler,
the fake executor of tests/api/fakes.py): every attempt is a run in the runs list,
and what cancel does to a failed run's pending retry, to a pending retry itself and
to a running attempt. The real daemon and engine, restarts and webhooks:
tests/integration/test_retries.py."""

from __future__ import annotations

import json
from typing import Any

from conftest import Api, Daemon
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import wait_until

from .conftest import cli

# Fails at once in the fake executor; its retry waits an hour unless said otherwise.
FAILING = {"run_command": "exit 3"}


def policy(**over: Any) -> dict[str, Any]:
    return {"max_retries": 2, "backoff_seconds": 3600, "backoff_max_seconds": 3600, **over}


async def runs_of(api: Api, runner_id: str) -> list[dict[str, Any]]:
    status, data = await api.get(f"/v1/runners/{runner_id}/runs")
    assert status == 200, data
    runs: list[dict[str, Any]] = data["runs"]
    return runs


async def failed_with_retry(api: Api, **over: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A runner whose first run failed and whose retry waits: (runner id, attempt 1,
    attempt 2)."""
    runner = await api.create_runner(**FAILING, retry_policy=policy(**over))
    first = await api.trigger(runner["id"])
    first = await api.wait_done(runner["id"], first["id"])
    assert (first["status"], first["exit_code"]) == ("failed", 3), first
    retry, attempt1 = await runs_of(api, runner["id"])  # newest first
    return runner["id"], attempt1, retry


async def cancel(api: Api, runner_id: str, run_id: str) -> tuple[int, Any]:
    return await api.post(f"/v1/runners/{runner_id}/runs/{run_id}/cancel")


async def retries_counted(api: Api, reason: str) -> float:
    async with api.session.get(api.url + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        if family.name == "runnerd_run_retries":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels == {"reason": reason}:
                    return sample.value
    return 0.0


async def test_a_failed_attempt_s_retry_is_a_pending_run_that_waits_its_back_off(
    api: Api, daemon: Daemon
) -> None:
    before = await retries_counted(api, "nonzero_exit")
    runner_id, first, retry = await failed_with_retry(api)
    assert retry["status"] == "pending" and retry["started_at"] is None
    assert (retry["trigger"], retry["attempt"], retry["retry_of"]) == ("retry", 2, first["id"])
    assert (first["trigger"], first["attempt"], first["retry_of"]) == ("api", 1, None)
    assert retry["not_before"] is not None and retry["not_before"] > first["completed_at"]
    assert retry["command"] == first["command"]
    assert await retries_counted(api, "nonzero_exit") == before + 1
    assert (
        f"run {first['id']} failed (nonzero_exit); retry attempt 2 as run {retry['id']}"
        f" at {retry['not_before']}"
    ) in daemon.log_text()


async def test_the_runs_list_shows_every_attempt_linked_newest_first(api: Api) -> None:
    runner = await api.create_runner(
        **FAILING, retry_policy=policy(backoff_seconds=1, backoff_max_seconds=1)
    )
    await api.trigger(runner["id"])

    async def three_failed() -> list[dict[str, Any]] | None:
        runs = await runs_of(api, runner["id"])
        return runs if len(runs) == 3 and all(r["status"] == "failed" for r in runs) else None

    third, second, first = await wait_until(three_failed, timeout=15, what="three attempts")
    assert [r["attempt"] for r in (first, second, third)] == [1, 2, 3]
    assert (second["retry_of"], third["retry_of"]) == (first["id"], second["id"])
    assert [r["trigger"] for r in (first, second, third)] == ["api", "retry", "retry"]
    assert await runs_of(api, runner["id"]) == [third, second, first]  # no fourth


async def test_cancel_of_a_failed_run_cancels_its_pending_retry_and_answers_the_run(
    api: Api,
) -> None:
    runner_id, first, retry = await failed_with_retry(api)
    status, data = await cancel(api, runner_id, first["id"])
    assert status == 200, data
    assert data["run"] == first  # the run asked for, unchanged
    canceled = await api.run(runner_id, retry["id"])
    assert (canceled["status"], canceled["failure_reason"]) == ("failed", "canceled")
    assert canceled["started_at"] is None and canceled["error"].startswith(
        "The run was canceled before it started"
    )
    # A canceled attempt is never retried; cancelling again answers as the first time.
    assert [r["id"] for r in await runs_of(api, runner_id)] == [retry["id"], first["id"]]
    assert await cancel(api, runner_id, first["id"]) == (200, {"run": first})


async def test_cancel_of_the_pending_retry_itself_ends_it_and_nothing_follows(api: Api) -> None:
    runner_id, first, retry = await failed_with_retry(api)
    status, data = await cancel(api, runner_id, retry["id"])
    assert status == 200, data
    assert (data["run"]["status"], data["run"]["failure_reason"]) == ("failed", "canceled")
    assert len(await runs_of(api, runner_id)) == 2
    assert (await cancel(api, runner_id, first["id"]))[0] == 200  # its retry is canceled


async def test_cancel_follows_the_retries_to_the_latest_attempt(api: Api) -> None:
    runner = await api.create_runner(
        **FAILING, retry_policy=policy(backoff_seconds=1, backoff_max_seconds=3600)
    )
    first = await api.trigger(runner["id"])

    async def third_waits() -> dict[str, Any] | None:
        runs = await runs_of(api, runner["id"])
        return runs[0] if len(runs) == 3 else None

    third = await wait_until(third_waits, timeout=10, what="attempt 3 to be queued")
    assert (third["attempt"], third["status"]) == (3, "pending")  # waits ~2 s … 2 h
    status, _ = await cancel(api, runner["id"], first["id"])
    assert status == 200
    third = await api.run(runner["id"], third["id"])
    assert third["failure_reason"] == "canceled"


async def test_a_failed_run_without_a_retry_is_still_a_conflict(api: Api) -> None:
    runner = await api.create_runner(**FAILING)  # no retry_policy
    run = await api.wait_done(runner["id"], (await api.trigger(runner["id"]))["id"])
    assert run["status"] == "failed"
    assert (await cancel(api, runner["id"], run["id"]))[0] == 409
    last = await api.create_runner(**FAILING, retry_policy=policy(max_retries=0))
    run = await api.wait_done(last["id"], (await api.trigger(last["id"]))["id"])
    assert (await cancel(api, last["id"], run["id"]))[0] == 409
    assert len(await runs_of(api, last["id"])) == 1


async def test_a_canceled_running_attempt_is_never_retried(api: Api) -> None:
    runner = await api.create_runner(run_command="sleep 30", retry_policy=policy(backoff_seconds=1))
    run = await api.trigger(runner["id"])
    await api.wait_status(runner["id"], run["id"], "running")
    status, data = await cancel(api, runner["id"], run["id"])
    assert status == 200, data
    assert data["run"]["failure_reason"] == "canceled"
    assert [r["id"] for r in await runs_of(api, runner["id"])] == [run["id"]]


async def test_a_canceled_pending_attempt_is_never_retried(api: Api) -> None:
    runner = await api.create_runner(
        run_command="sleep 30", max_concurrent_runs=1, retry_policy=policy(backoff_seconds=1)
    )
    busy = await api.trigger(runner["id"])
    await api.wait_status(runner["id"], busy["id"], "running")
    waiting = await api.trigger(runner["id"])
    status, data = await cancel(api, runner["id"], waiting["id"])
    assert status == 200, data
    assert data["run"]["failure_reason"] == "canceled"
    assert len(await runs_of(api, runner["id"])) == 2
    await cancel(api, runner["id"], busy["id"])


async def test_a_bad_retry_policy_is_a_400_naming_the_field_and_null_clears_it(api: Api) -> None:
    runner = await api.create_runner(retry_policy=policy())
    path = f"/v1/runners/{runner['id']}"
    status, data = await api.patch(
        path, {"retry_policy": {"backoff_seconds": 60, "backoff_max_seconds": 30}}
    )
    assert status == 400, data
    assert data["errors"] == [
        "retry_policy.backoff_max_seconds: must be at least backoff_seconds (60), got 30"
    ]
    status, data = await api.patch(path, {"retry_policy": {"max_retries": 21, "retry_on": []}})
    assert status == 400 and data["errors"][0].startswith("retry_policy.max_retries:"), data
    assert (await api.get(path))[1]["runner"]["retry_policy"] == runner["retry_policy"]
    status, data = await api.patch(path, {"retry_policy": None})
    assert status == 200 and data["runner"]["retry_policy"] is None, data


# -- the CLI's retry and chain options, against this app --------------------------


async def cli_runner(api: Api, *args: str) -> dict[str, Any]:
    code, out, err = await cli(api, *args, "--json")
    assert code == 0, (code, out, err)
    runner: dict[str, Any] = json.loads(out)["runner"]
    return runner


async def test_cli_sets_changes_and_clears_retries_and_chains(api: Api) -> None:
    next_job = await api.create_runner(name="next-job")
    runner = await cli_runner(
        api,
        *("runners", "create", "--name", "flaky", "--image", "busybox", "--command", "exit 3"),
        *("--max-retries", "2", "--backoff", "5", "--retry-on", "nonzero_exit,timeout"),
        *("--retry-exit-codes", "1,2", "--on-failure", "next-job", "--on-success", ""),
    )
    assert runner["retry_policy"] == {
        "max_retries": 2,
        "backoff_seconds": 5,
        "backoff_max_seconds": 600,
        "retry_on": ["nonzero_exit", "timeout"],
        "retry_exit_codes": [1, 2],
    }
    assert (runner["on_failure"], runner["on_success"]) == ([next_job["id"]], [])

    # An update changes only the options given, the rest of the policy stays.
    changed = await cli_runner(
        api, "runners", "update", "flaky", "--max-retries", "4", "--retry-exit-codes", "any"
    )
    assert changed["retry_policy"] == {
        **runner["retry_policy"],
        "max_retries": 4,
        "retry_exit_codes": None,
    }
    assert changed["on_failure"] == [next_job["id"]]

    code, out, _ = await cli(api, "runners", "show", "flaky")
    assert code == 0
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["retry_policy"].strip() == (
        "4 retries on nonzero_exit, timeout; back-off 5 s, doubled up to 600 s"
    )
    assert next_job["id"] in lines["on_failure"]

    code, out, _ = await cli(api, "runners", "update", "flaky", "--retry-exit-codes", "1,3")
    assert "4 retries on nonzero_exit (exit codes 1, 3), timeout;" in out, (code, out)
    cleared = await cli_runner(
        api, "runners", "update", "flaky", "--no-retries", "--on-failure", ""
    )
    assert (cleared["retry_policy"], cleared["on_failure"]) == (None, [])


async def test_cli_refuses_bad_retry_options_naming_them(api: Api) -> None:
    await api.create_runner(name="job-x")
    code, _, err = await cli(
        api, "runners", "update", "job-x", "--no-retries", "--max-retries", "1"
    )
    assert code == 2 and "--no-retries" in err, err
    code, _, err = await cli(api, "runners", "update", "job-x", "--max-retries", "99")
    assert code == 1 and "retry_policy.max_retries:" in err, err
    code, _, err = await cli(api, "runners", "update", "job-x", "--retry-exit-codes", "x")
    assert code == 2 and "--retry-exit-codes" in err, err
    code, _, err = await cli(api, "runners", "update", "job-x", "--on-success", "no-such-runner")
    assert code == 1 and "no-such-runner" in err, err
