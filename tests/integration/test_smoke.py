"""The issue's headline flow, end to end on the real engine."""

from __future__ import annotations

from conftest import Api


async def test_failed_run_records_exit_code_and_both_streams(api: Api) -> None:
    runner = await api.create_runner(
        run_command='echo out; echo err >&2; echo "greeting=$GREETING"; exit 3',
        env_variables=[{"env_key": "GREETING", "env_val": "default"}],
    )
    run = await api.trigger(
        runner["id"], {"env_variables": [{"env_key": "GREETING", "env_val": "override"}]}
    )
    assert run["status"] == "pending"
    done = await api.wait_done(runner["id"], run["id"])
    assert done["status"] == "failed"
    assert done["exit_code"] == 3
    assert done["failure_reason"] == "nonzero_exit"
    logs = await api.logs(runner["id"], run["id"])
    # stdout and stderr are separate pipes: their relative order is the engine's,
    # the order within each stream is the container's.
    lines = logs.splitlines()
    assert sorted(lines) == [b"err", b"greeting=override", b"out"]
    assert lines.index(b"out") < lines.index(b"greeting=override")
