"""Execution on the real Docker engine: exit codes, env, commands, logs, timeouts,
concurrency, image failures and container wiring, driven through the HTTP API and
checked against what the engine itself reports."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, log_records, wait_until
from helpers_engine import (
    GATE,
    LABEL_DAEMON,
    LABEL_RUN,
    LABEL_RUNNER,
    EngineProbe,
    engine_probe,
    on_swarm,
    release,
)

from runnerd.logs import STDERR, STDOUT

# Every test here also runs on the swarm backend (the engine probes read the
# swarm's services and tasks there).
pytestmark = pytest.mark.swarm

TIME_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d\Z")


@pytest.fixture
async def engine() -> AsyncIterator[EngineProbe]:
    session, probe = await engine_probe()
    async with session:
        yield probe


def ts(value: str) -> datetime:
    assert TIME_FORMAT.match(value), value
    return datetime.fromisoformat(value)


def assert_same_bytes(got: bytes, expected: bytes) -> None:
    """Byte-for-byte equality, failing with where they differ (not a multi-MB diff)."""
    if got == expected:
        return
    at = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    raise AssertionError(
        f"{len(got)} bytes, expected {len(expected)}; first difference at "
        f"byte {at}: got {got[at : at + 40]!r}, expected "
        f"{expected[at : at + 40]!r}"
    )


def assert_same_lines(got: list[bytes], expected: list[bytes], what: str) -> None:
    if got == expected:
        return
    have = set(got)
    missing = [x for x in expected if x not in have]
    raise AssertionError(
        f"{what}: {len(got)} lines, expected {len(expected)}; "
        f"{len(missing)} missing, e.g. {[m[:12] for m in missing[:5]]}"
    )


def assert_readable(error: Any) -> None:
    """A sentence for a person: a non-empty single-line string, no traceback."""
    assert isinstance(error, str) and error.strip(), error
    assert "Traceback" not in error and "\n" not in error, error
    assert error.rstrip().endswith("."), error


async def run_to_end(
    api: Api, timeout: float = 60, body: Any = None, **runner: Any
) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Create a runner, trigger one run, wait for it: (runner, final run, logs)."""
    r = await api.create_runner(**runner)
    run = await api.trigger(r["id"], body)
    done = await api.wait_done(r["id"], run["id"], timeout=timeout)
    return r, done, await api.logs(r["id"], run["id"])


# -- exit codes --------------------------------------------------------------------------


async def test_nonzero_exit_fails_with_exit_code_error_and_both_streams(
    api: Api, engine: EngineProbe
) -> None:
    runner = await api.create_runner(
        run_command='echo out; echo err >&2; echo "who=$WHO"; exit 3',
        env_variables=[{"env_key": "WHO", "env_val": "default"}],
    )
    run = await api.trigger(
        runner["id"], {"env_variables": [{"env_key": "WHO", "env_val": "override"}]}
    )
    assert run["status"] == "pending"
    assert run["exit_code"] is None and run["started_at"] is None
    done = await api.wait_done(runner["id"], run["id"])
    assert done["status"] == "failed"
    assert done["exit_code"] == 3
    assert done["failure_reason"] == "nonzero_exit"
    assert_readable(done["error"])
    assert "3" in done["error"]
    assert done["started_at"] and done["completed_at"]
    assert ts(done["started_at"]) <= ts(done["completed_at"])
    assert ts(done["created_at"]) <= ts(done["started_at"])
    lines = (await api.logs(runner["id"], run["id"])).splitlines()
    assert sorted(lines) == [b"err", b"out", b"who=override"]
    assert lines.index(b"out") < lines.index(b"who=override")  # one stream keeps its order
    await engine.wait_gone(run["id"])


async def test_true_succeeds_with_exit_code_zero_and_no_error(
    api: Api, engine: EngineProbe
) -> None:
    _, done, logs = await run_to_end(api, argv=["true"])
    assert done["status"] == "succeeded"
    assert done["exit_code"] == 0
    assert done["failure_reason"] is None
    assert done["error"] is None
    assert ts(done["started_at"]) <= ts(done["completed_at"])
    assert logs == b""
    await engine.wait_gone(done["id"])


async def test_single_trigger_starts_at_once_and_completes_within_seconds(api: Api) -> None:
    runner = await api.create_runner(argv=["true"])
    run = await api.trigger(runner["id"])
    # No scheduler polling interval: a generous deadline, no timing assertion beyond it.
    done = await api.wait_done(runner["id"], run["id"], timeout=20)
    assert done["status"] == "succeeded"


# -- env ---------------------------------------------------------------------------------


ENV_PRINT = 'echo "A=${A-unset} B=${B-unset} C=${C-unset}"'


async def test_run_env_overrides_runner_defaults_for_that_run_only(api: Api) -> None:
    runner = await api.create_runner(
        run_command=ENV_PRINT,
        env_variables=[{"env_key": "A", "env_val": "1"}, {"env_key": "B", "env_val": "2"}],
    )
    first = await api.trigger(
        runner["id"],
        {"env_variables": [{"env_key": "B", "env_val": "3"}, {"env_key": "C", "env_val": "4"}]},
    )
    done = await api.wait_done(runner["id"], first["id"])
    assert done["status"] == "succeeded", done
    assert await api.logs(runner["id"], first["id"]) == b"A=1 B=3 C=4\n"

    second = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], second["id"])
    assert done["status"] == "succeeded", done
    assert await api.logs(runner["id"], second["id"]) == b"A=1 B=2 C=unset\n"


async def test_queued_run_keeps_env_it_was_triggered_with(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, engine: EngineProbe
) -> None:
    d = start_daemon(max_concurrent_runs=1)
    api = Api(http, d.url, d.key)
    blocker_runner = await api.create_runner(run_command=GATE)
    blocker = await api.trigger(blocker_runner["id"])
    await engine.running_container_of(blocker["id"])  # holds the only slot

    runner = await api.create_runner(
        run_command=ENV_PRINT,
        env_variables=[{"env_key": "A", "env_val": "1"}, {"env_key": "B", "env_val": "2"}],
    )
    queued = await api.trigger(
        runner["id"],
        {"env_variables": [{"env_key": "B", "env_val": "3"}, {"env_key": "C", "env_val": "4"}]},
    )
    # Edit the runner's defaults while that run waits in the queue.
    status, env = await api.get(f"/v1/runners/{runner['id']}/env_variables")
    assert status == 200, env
    a = next(e for e in env["env_variables"] if e["env_key"] == "A")
    status, body = await api.patch(
        f"/v1/runners/{runner['id']}/env_variables/{a['id']}", {"env_val": "7"}
    )
    assert status == 200, body
    later = await api.trigger(runner["id"])
    assert (await api.run(runner["id"], queued["id"]))["status"] == "pending"

    await release(engine, blocker["id"])
    for run in (blocker, queued, later):
        rid = blocker_runner["id"] if run is blocker else runner["id"]
        done = await api.wait_done(rid, run["id"])
        assert done["status"] == "succeeded", done
    # Env is snapshotted at trigger time: the queued run never sees the edit.
    assert await api.logs(runner["id"], queued["id"]) == b"A=1 B=3 C=4\n"
    assert await api.logs(runner["id"], later["id"]) == b"A=7 B=2 C=unset\n"


# -- command forms -----------------------------------------------------------------------


async def test_argv_exec_form_passes_each_argument_whole(api: Api) -> None:
    argv = ["sh", "-c", 'printf "[%s]\\n" "$0" "$1"', "a  b", "c*"]
    _, done, logs = await run_to_end(api, argv=argv)
    assert done["status"] == "succeeded", done
    assert done["argv"] == argv and done["command"] is None
    assert logs == b"[a  b]\n[c*]\n"

    _, done, logs = await run_to_end(api, argv=["echo", "x  y", "$HOME"])
    assert done["status"] == "succeeded", done
    assert logs == b"x  y $HOME\n"  # no shell: no word splitting, no expansion


async def test_run_command_runs_as_sh_c(api: Api) -> None:
    _, done, logs = await run_to_end(api, run_command="x=shell; echo $x | tr a-z A-Z")
    assert done["status"] == "succeeded", done
    assert done["command"] == "x=shell; echo $x | tr a-z A-Z"
    assert logs == b"SHELL\n"


async def test_entrypoint_is_split_into_words_and_gets_argv(api: Api) -> None:
    _, done, logs = await run_to_end(api, entrypoint="sh -c", argv=["echo from-entrypoint"])
    assert done["status"] == "succeeded", done
    assert done["entrypoint"] == "sh -c"
    assert logs == b"from-entrypoint\n"


async def test_no_command_runs_the_images_cmd(api: Api) -> None:
    # The image's CMD is ["sh"]: with no stdin it reads EOF and exits 0.
    _, done, logs = await run_to_end(api)
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0
    assert done["command"] is None and done["argv"] is None and done["entrypoint"] is None
    assert logs == b""


# -- logs --------------------------------------------------------------------------------


async def test_logs_keep_last_line_without_newline_and_non_utf8_bytes(api: Api) -> None:
    _, done, logs = await run_to_end(api, argv=["printf", "a\\nb"])
    assert done["status"] == "succeeded", done
    assert logs == b"a\nb"

    r, done, logs = await run_to_end(api, argv=["printf", "\\377\\376x\\n\\200end"])
    assert done["status"] == "succeeded", done
    assert logs == b"\xff\xfex\n\x80end"
    assert await api.logs(r["id"], done["id"], "?tail=1") == b"\x80end"


async def test_logs_tail_gives_last_lines(api: Api) -> None:
    r, done, logs = await run_to_end(api, argv=["printf", "1\\n2\\n3\\n4\\n"])
    assert done["status"] == "succeeded", done
    assert logs == b"1\n2\n3\n4\n"
    assert await api.logs(r["id"], done["id"], "?tail=2") == b"3\n4\n"
    assert await api.logs(r["id"], done["id"], "?tail=1") == b"4\n"
    assert await api.logs(r["id"], done["id"], "?tail=0") == b""
    assert await api.logs(r["id"], done["id"], "?tail=4") == b"1\n2\n3\n4\n"
    assert await api.logs(r["id"], done["id"], "?tail=100") == b"1\n2\n3\n4\n"


async def test_twenty_million_bytes_of_output_come_back_byte_for_byte(
    api: Api, engine: EngineProbe
) -> None:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    size = 20_000_000
    _, done, logs = await run_to_end(
        api, timeout=120, run_command=f"yes {alphabet} | head -c {size}"
    )
    assert done["status"] == "succeeded", done
    line = alphabet.encode() + b"\n"
    expected = (line * (size // len(line) + 1))[:size]
    assert_same_bytes(logs, expected)
    await engine.wait_gone(done["id"])


async def test_lines_longer_than_the_engines_16_kib_pieces_keep_their_newlines(
    api: Api,
) -> None:
    # Docker keeps such a line as 16 KiB pieces, and its logs API gives the last
    # piece without the line's newline (runnerd.engine._LineEnds gives it back).
    # 16,384 is one whole piece then an empty one; 16,383 one message with its newline.
    lengths = {"a": 40_000, "b": 16_384, "c": 16_383, "d": 70_000, "e": 5}
    command = "; ".join(f"head -c {n} /dev/zero | tr '\\0' {c}; echo" for c, n in lengths.items())
    _, done, logs = await run_to_end(api, run_command=f"{command}; printf end")
    assert done["status"] == "succeeded", done
    expected = b"".join(c.encode() * n + b"\n" for c, n in lengths.items()) + b"end"
    assert_same_bytes(logs, expected)


async def test_many_mb_of_interleaved_stdout_and_stderr_are_all_kept_in_order(
    api: Api, daemon: Daemon
) -> None:
    # 50,000 numbered 100-byte lines on each stream (5,000,000 bytes each); one
    # writer alternates between the two pipes, so the engine interleaves them.
    n, width = 50_000, 100
    pad = "x" * (width - len("out 0000000 ") - 1)
    # %-formatting: awk's own % signs stay readable as %%.
    command = (
        "awk 'BEGIN { for (i = 0; i < %d; i++) {"  # noqa: UP031
        ' printf "out %%07d %s\\n", i;'
        ' printf "err %%07d %s\\n", i > "/dev/stderr" } }\'' % (n, pad, pad)
    )
    _, done, logs = await run_to_end(api, timeout=120, run_command=command)
    assert done["status"] == "succeeded", done

    def expected(stream: str) -> list[bytes]:
        return [f"{stream} {i:07d} {pad}".encode() for i in range(n)]

    lines = logs.split(b"\n")
    assert lines.pop() == b"", lines[-1][:40]
    assert_same_lines([x for x in lines if x.startswith(b"out ")], expected("out"), "stdout")
    assert_same_lines([x for x in lines if x.startswith(b"err ")], expected("err"), "stderr")
    assert len(logs) == 2 * n * width  # nothing else, no torn lines
    # The two streams really were interleaved (not one after the other)...
    kinds = [x[:3] for x in lines]
    assert kinds.index(b"err") < len(kinds) - 1 - kinds[::-1].index(b"out")
    assert kinds.index(b"out") < len(kinds) - 1 - kinds[::-1].index(b"err")
    # ...and the log file keeps which stream each piece came from.
    records = log_records(daemon.data_dir / "logs" / f"{done['id']}.log")
    assert all(ts_ns > 0 for _, ts_ns, _ in records)
    for stream, name in ((STDOUT, "out"), (STDERR, "err")):
        data = b"".join(d for s, _, d in records if s == stream)
        assert_same_lines(data.split(b"\n")[:-1], expected(name), f"log file stream {stream}")


async def test_logs_are_readable_while_the_run_is_running(api: Api) -> None:
    runner = await api.create_runner(run_command="echo started; sleep 5; echo done")
    run = await api.trigger(runner["id"])

    async def started() -> bytes | None:
        logs = await api.logs(runner["id"], run["id"])
        return logs if b"started" in logs else None

    logs = await wait_until(started, timeout=30, what="'started' in the logs")
    assert b"done" not in logs
    assert (await api.run(runner["id"], run["id"]))["status"] == "running"
    done = await api.wait_done(runner["id"], run["id"])
    assert done["status"] == "succeeded", done
    assert await api.logs(runner["id"], run["id"]) == b"started\ndone\n"


# -- timeout -----------------------------------------------------------------------------


async def test_timeout_stops_a_sigterm_ignoring_container_and_removes_it(
    api: Api, engine: EngineProbe
) -> None:
    # `sleep` as PID 1 has no SIGTERM handler, so the kernel ignores SIGTERM.
    runner = await api.create_runner(argv=["sleep", "120"], timeout_seconds=2)
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert done["status"] == "failed"
    assert done["failure_reason"] == "timeout"
    assert_readable(done["error"])
    assert "2" in done["error"], done["error"]
    assert ts(done["completed_at"]) - ts(done["started_at"]) >= timedelta(seconds=2)
    await engine.wait_gone(run["id"])


async def test_timeout_sends_sigterm_then_sigkill_after_the_grace(
    api: Api, engine: EngineProbe
) -> None:
    # Traps SIGTERM (says so) and keeps going: only the SIGKILL ends it.
    runner = await api.create_runner(
        run_command="trap 'echo got-TERM' TERM; echo ready; while :; do sleep 0.1; done",
        timeout_seconds=2,
    )
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert done["status"] == "failed"
    assert done["failure_reason"] == "timeout"
    assert done["exit_code"] in (137, None), done  # 128 + SIGKILL, when recorded
    assert await api.logs(runner["id"], run["id"]) == b"ready\ngot-TERM\n"
    await engine.wait_gone(run["id"])


async def test_timeout_is_a_failure_even_when_the_container_then_exits_zero(
    api: Api, engine: EngineProbe
) -> None:
    runner = await api.create_runner(
        run_command="trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done", timeout_seconds=1
    )
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"], timeout=30)
    assert done["status"] == "failed"
    assert done["failure_reason"] == "timeout"
    assert done["exit_code"] in (0, None), done
    assert await api.logs(runner["id"], run["id"]) == b"bye\n"
    await engine.wait_gone(run["id"])


# -- concurrency -------------------------------------------------------------------------


async def test_twenty_runs_never_exceed_four_containers_and_really_run_four_at_once(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, engine: EngineProbe
) -> None:
    d = start_daemon(max_concurrent_runs=4)
    api = Api(http, d.url, d.key)
    daemon_id = d.daemon_id()
    runner = await api.create_runner(argv=["sleep", "1"])
    stop = asyncio.Event()
    engine_counts: list[int] = []
    api_counts: list[int] = []

    async def watch_engine() -> None:
        while not stop.is_set():
            engine_counts.append(len(await engine.running_for_daemon(daemon_id)))
            await asyncio.sleep(0.05)

    async def watch_api() -> None:
        while not stop.is_set():
            status, body = await api.get(
                f"/v1/runners/{runner['id']}/runs?status=running&limit=1000"
            )
            assert status == 200, body
            api_counts.append(len(body["runs"]))
            await asyncio.sleep(0.05)

    watchers = [asyncio.create_task(watch_engine()), asyncio.create_task(watch_api())]
    try:
        runs = await asyncio.gather(*(api.trigger(runner["id"]) for _ in range(20)))
        assert len({r["id"] for r in runs}) == 20
        done = await asyncio.gather(
            *(api.wait_done(runner["id"], r["id"], timeout=120) for r in runs)
        )
    finally:
        stop.set()
        await asyncio.gather(*watchers)
    assert [r["status"] for r in done] == ["succeeded"] * 20, done
    assert max(engine_counts) <= 4, engine_counts
    assert max(engine_counts) == 4, engine_counts  # the limit is used, not just respected
    assert 1 <= max(api_counts) <= 4, api_counts

    async def none_left() -> bool:
        return not await engine.containers({LABEL_DAEMON: daemon_id}, all=True)

    await wait_until(none_left, timeout=15, what="all of the daemon's containers removed")


# -- image failures ----------------------------------------------------------------------


async def test_missing_image_fails_with_readable_error_and_daemon_keeps_serving(
    api: Api, engine: EngineProbe
) -> None:
    # A registry on loopback where nothing listens: the pull fails without leaving the host.
    image = "127.0.0.1:1/runnerd/missing"
    bad = await api.create_runner(image_name=image, argv=["true"])
    run = await api.trigger(bad["id"])
    done = await api.wait_done(bad["id"], run["id"], timeout=60)
    assert done["status"] == "failed"
    assert done["failure_reason"] == "image_pull_failed"
    assert done["exit_code"] is None
    assert done["started_at"] is None  # no container ever started
    assert done["completed_at"] is not None
    assert_readable(done["error"])
    assert image in done["error"], done["error"]
    assert await engine.for_run(run["id"]) == []

    status, health = await api.get("/healthz")
    assert status == 200 and health["status"] == "ok", health
    _, ok, logs = await run_to_end(api, argv=["echo", "still-serving"])
    assert ok["status"] == "succeeded", ok
    assert logs == b"still-serving\n"


# -- container wiring --------------------------------------------------------------------


LIMITS_PRINT = (
    "if [ -e /sys/fs/cgroup/cpu.max ]; then"
    ' echo "cpu=$(cat /sys/fs/cgroup/cpu.max)"; echo "mem=$(cat /sys/fs/cgroup/memory.max)";'
    ' echo "pids=$(cat /sys/fs/cgroup/pids.max)";'
    " else"
    ' echo "cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)";'
    ' echo "mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)";'
    ' echo "pids=$(cat /sys/fs/cgroup/pids/pids.max)";'
    " fi;"
    # The network interfaces the container sees (its own network namespace's, as
    # /proc/net/dev lists them): with network "none", only loopback.
    """ echo "net=$(sed -n 's/^ *\\([^:]*\\):.*/\\1/p' /proc/net/dev)"; """ + GATE
)

INSTANCE_TYPES = """
[instance_types.tiny]
name = "Tiny"
cpu = 0.25
mem = 64
pids = 32

[instance_types.big]
name = "Big"
cpu = 1.5
mem = 256
pids = 100
"""


async def test_container_gets_instance_limits_network_labels_name_and_merged_env(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, engine: EngineProbe
) -> None:
    d = start_daemon(INSTANCE_TYPES, top_level='default_instance_type = "tiny"')
    api = Api(http, d.url, d.key)
    daemon_id = d.daemon_id()
    env = [{"env_key": "A", "env_val": "1"}, {"env_key": "B", "env_val": "2"}]
    tiny = await api.create_runner(run_command=LIMITS_PRINT, env_variables=env)
    big = await api.create_runner(run_command=LIMITS_PRINT, instance_type="big")
    assert tiny["instance_type"] == {"slug": "tiny", "name": "Tiny", "cpu": 0.25, "mem": 64}
    assert big["instance_type"] == {"slug": "big", "name": "Big", "cpu": 1.5, "mem": 256}
    tiny_run = await api.trigger(
        tiny["id"],
        {
            "env_variables": [
                {"env_key": "B", "env_val": "3 with spaces"},
                {"env_key": "C", "env_val": "4"},
            ]
        },
    )
    big_run = await api.trigger(big["id"])

    expected = {
        tiny_run["id"]: (tiny, 250_000_000, 64, 32, "cpu=25000 100000"),
        big_run["id"]: (big, 1_500_000_000, 256, 100, "cpu=150000 100000"),
    }
    for run_id, (runner, nano_cpus, mem, pids, cpu_line) in expected.items():
        c = await engine.running_container_of(run_id)
        host = c["HostConfig"]
        assert host["NanoCpus"] == nano_cpus
        assert host["Memory"] == mem * 1024 * 1024
        assert host["PidsLimit"] == pids
        if on_swarm():
            # A service's task container: named "<service>.<slot>.<task id>", on
            # network "bridge" (the test swarm's nodes have none: --bridge=none,
            # so loopback alone, as the log below shows).
            assert host["NetworkMode"] == "bridge"
            assert c["Name"].startswith(f"/runnerd-{run_id}.1."), c["Name"]
        else:
            assert host["NetworkMode"] == "none"
            assert c["Name"] == f"/runnerd-{run_id}"
        labels = c["Config"]["Labels"]
        assert labels[LABEL_DAEMON] == daemon_id
        assert labels[LABEL_RUN] == run_id
        assert labels[LABEL_RUNNER] == runner["id"]
        if run_id == tiny_run["id"]:
            container_env = c["Config"]["Env"]
            assert {"A=1", "B=3 with spaces", "C=4"} <= set(container_env), container_env
            assert "B=2" not in container_env

        # The kernel enforces them: the container reads its own cgroup limits. And
        # it has no network but loopback (what network "none" means, whatever the
        # engine says of it: Docker lists a network "none", Podman none at all).
        async def limits_printed(run_id: str = run_id) -> bytes | None:
            logs = await api.logs(runner["id"], run_id)
            return logs if logs.count(b"\n") >= 4 else None

        logs = await wait_until(limits_printed, timeout=30, what="the cgroup limits printed")
        assert logs == f"{cpu_line}\nmem={mem * 1024 * 1024}\npids={pids}\nnet=lo\n".encode()

    for run_id, (runner, *_) in expected.items():
        await release(engine, run_id)
        done = await api.wait_done(runner["id"], run_id)
        assert done["status"] == "succeeded", done
        await engine.wait_gone(run_id)


# -- status lifecycle --------------------------------------------------------------------


async def test_status_moves_forward_only_and_exit_code_waits_for_completion(api: Api) -> None:
    runner = await api.create_runner(argv=["sleep", "2"])
    run = await api.trigger(runner["id"])
    order = ["pending", "running", "succeeded"]
    seen = [run]

    async def finished() -> bool:
        seen.append(await api.run(runner["id"], run["id"]))
        return seen[-1]["status"] in ("succeeded", "failed")

    await wait_until(finished, timeout=60, interval=0.02, what="the run to complete")
    statuses = [r["status"] for r in seen]
    assert statuses[0] == "pending"
    assert statuses[-1] == "succeeded", seen[-1]
    assert "running" in statuses, statuses
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    for r in seen:
        if r["status"] == "pending":
            assert r["started_at"] is None and r["completed_at"] is None
        if r["status"] == "running":
            assert r["started_at"] is not None, r
            assert r["completed_at"] is None, r
        if r["status"] != "succeeded":
            assert r["exit_code"] is None, r
            assert r["failure_reason"] is None and r["error"] is None, r
    started = {r["started_at"] for r in seen if r["started_at"]}
    assert len(started) == 1, started  # set once, never changed
    final = seen[-1]
    assert final["exit_code"] == 0
    assert ts(final["started_at"]) <= ts(final["completed_at"])
