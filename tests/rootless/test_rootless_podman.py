"""runnerd as an unprivileged user on that user's rootless Podman: runs succeed and
fail with their exit codes, logs are byte-exact, and /healthz (and the daemon's
log) say which limits the engine cannot apply. Fixtures: conftest.py."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

from conftest import Api, log_records, wait_until

from runnerd.logs import STDERR, STDOUT

from .podman_user import Session, UserDaemon

# Keeps its container running until /tmp/go exists in it (no network to signal it).
GATE = "while [ ! -e /tmp/go ]; do sleep 0.05; done"


def containers_of_run(engine: Session, run_id: str) -> list[dict[str, Any]]:
    filters = json.dumps({"label": [f"io.runnerd.run={run_id}"]})
    return engine.engine_json(f"/containers/json?all=1&filters={urllib.parse.quote(filters)}")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


async def test_a_run_succeeds_with_exit_code_zero_and_its_env_on_rootless_podman(
    rootless_api: Api,
) -> None:
    runner = await rootless_api.create_runner(
        run_command='echo "greeting=$GREETING"; echo "default=$ONLY_DEFAULT"; echo "uid=$(id -u)"',
        env_variables=[
            {"env_key": "GREETING", "env_val": "default"},
            {"env_key": "ONLY_DEFAULT", "env_val": "kept"},
        ],
    )
    run = await rootless_api.trigger(
        runner["id"], {"env_variables": [{"env_key": "GREETING", "env_val": "override"}]}
    )
    done = await rootless_api.wait_done(runner["id"], run["id"])
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0
    assert done["failure_reason"] is None and done["error"] is None
    logs = await rootless_api.logs(runner["id"], run["id"])
    # uid 0 inside the container: the user's own uid, mapped (see the next test).
    assert logs == b"greeting=override\ndefault=kept\nuid=0\n"


async def test_a_failing_command_fails_with_nonzero_exit_and_its_exit_code(
    rootless_api: Api,
) -> None:
    runner = await rootless_api.create_runner(run_command="echo about to fail >&2; exit 7")
    run = await rootless_api.trigger(runner["id"])
    done = await rootless_api.wait_done(runner["id"], run["id"])
    assert done["status"] == "failed", done
    assert done["exit_code"] == 7
    assert done["failure_reason"] == "nonzero_exit"
    assert "7" in done["error"], done["error"]
    assert await rootless_api.logs(runner["id"], run["id"]) == b"about to fail\n"


async def test_runnerd_the_engine_and_the_runs_container_hold_no_root_on_the_host(
    rootless_api: Api, rootless_daemon: UserDaemon, rootless_engine: Session
) -> None:
    user = rootless_engine.user
    assert rootless_daemon.proc is not None and rootless_engine.service is not None
    # setpriv execs: these pids are runnerd and podman themselves.
    for what, pid in (("runnerd", rootless_daemon.pid), ("podman", rootless_engine.service.pid)):
        uids = proc_status(pid)["Uid"].split()
        assert uids == [str(user.uid)] * 4, f"{what} runs as {uids}, not {user.name}"

    runner = await rootless_api.create_runner(run_command=GATE)
    run = await rootless_api.trigger(runner["id"])
    await rootless_api.wait_status(runner["id"], run["id"], "running")

    async def container_pid() -> int | None:
        for c in containers_of_run(rootless_engine, run["id"]):
            state = rootless_engine.engine_json(f"/containers/{c['Id']}/json")["State"]
            if state.get("Running") and state.get("Pid"):
                return int(state["Pid"])
        return None

    pid = await wait_until(container_pid, timeout=30, what="the run's container to run")
    # The container's root is the user on the host, in a user namespace mapping
    # uid 0 to the user and the rest to its subordinate range (/etc/subuid).
    assert proc_status(pid)["Uid"].split()[0] == str(user.uid)
    uid_map = [line.split() for line in Path(f"/proc/{pid}/uid_map").read_text().splitlines()]
    assert uid_map[0] == ["0", str(user.uid), "1"], uid_map
    assert len(uid_map) == 2 and uid_map[1][0] == "1" and int(uid_map[1][1]) >= 100000, uid_map

    released = rootless_engine.podman("exec", f"runnerd-{run['id']}", "touch", "/tmp/go")
    assert released.returncode == 0, released.stderr
    done = await rootless_api.wait_done(runner["id"], run["id"])
    assert done["status"] == "succeeded", done


async def test_the_log_is_byte_exact_per_stream_with_a_last_line_without_newline(
    rootless_api: Api, rootless_daemon: UserDaemon
) -> None:
    # 300 numbered lines on each stream, one writer alternating between them, a
    # 20,000-byte line (Podman splits lines into 8192-byte records) and a last
    # line without a newline: 60 kB or so.
    n, pad = 300, "p" * 90
    command = (
        f'i=0; while [ $i -lt {n} ]; do echo "out $i {pad}"; echo "err $i {pad}" >&2;'
        " i=$((i + 1)); done;"
        " head -c 20000 /dev/zero | tr '\\0' L; echo;"
        " printf 'the end, no newline'"
    )
    runner = await rootless_api.create_runner(run_command=command)
    run = await rootless_api.trigger(runner["id"])
    done = await rootless_api.wait_done(runner["id"], run["id"])
    assert done["status"] == "succeeded", done
    assert done["log_incomplete"] is False  # checked against the engine's copy
    stdout = (
        b"".join(f"out {i} {pad}\n".encode() for i in range(n))
        + b"L" * 20000
        + b"\n"
        + b"the end, no newline"
    )
    stderr = b"".join(f"err {i} {pad}\n".encode() for i in range(n))

    # Each stream exactly, from the log file (which keeps each piece's stream)...
    records = log_records(rootless_daemon.data_dir / "logs" / f"{run['id']}.log")
    assert b"".join(d for s, _, d in records if s == STDOUT) == stdout
    assert b"".join(d for s, _, d in records if s == STDERR) == stderr
    assert {s for s, _, _ in records} == {STDOUT, STDERR}
    # ...and the API's log is that file's output, in its order: every byte, nothing else.
    logs = await rootless_api.logs(runner["id"], run["id"])
    assert logs == b"".join(d for _, _, d in records)
    assert len(logs) == len(stdout) + len(stderr)


async def test_healthz_says_rootless_podman_and_the_limits_it_cannot_apply(
    rootless_api: Api, rootless_daemon: UserDaemon, rootless_engine: Session
) -> None:
    status, body = await rootless_api.get("/healthz")
    assert status == 200, body
    engine = body["engine"]
    assert engine["name"] == "podman"
    assert engine["rootless"] is True
    info = rootless_engine.engine_json("/info")
    assert engine["version"] == info["ServerVersion"]
    assert engine["cgroup_version"] == info["CgroupVersion"]
    if info["CgroupVersion"] == "1":  # this kind of host: no delegation, no limit applies
        assert engine["unenforced_limits"] == ["cpu", "memory", "pids"]
        # The operator is told at start, in the daemon's log, not only in /healthz.
        assert (
            "the engine cannot apply a run's cpu, memory, pids limits (rootless on cgroup v1)"
            in rootless_daemon.log_text()
        )
    else:  # cgroup v2: what the user's cgroup lacks (of the controllers runnerd uses)
        flags = {"cpu": "CpuCfsQuota", "memory": "MemoryLimit", "pids": "PidsLimit"}
        assert engine["unenforced_limits"] == [k for k, f in flags.items() if not info.get(f)]
