"""Bad input that needs a real container (issue 3, "Bad input" and "Logs and disk"),
against a real runnerd process: odd ids in log paths next to a real run's log, SQL-
looking strings echoed by a real command, oversized logs cut with one marker, and a
full disk that costs the log, never the run's status. The rest of the bad-input
cases run in process, without Docker: tests/api/test_bad_input.py, whose helpers
these share.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from api.test_bad_input import (
    NOT_FOUND,
    SQL_STRINGS,
    SQLITE_MAGIC,
    as_json,
    assert_alive,
    assert_nothing_outside_data_dir,
    raw,
    raw_http,
    run_ids,
    runner_names,
)
from conftest import Api, Daemon


async def test_dotdot_and_odd_ids_in_paths_are_404_and_never_read_outside_data_dir(
    api: Api, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    runner = await api.create_runner(run_command="echo hi")
    rid = runner["id"]
    run = await api.trigger(rid)
    done = await api.wait_done(rid, run["id"])
    assert done["status"] == "succeeded", done
    real_log = await api.logs(rid, run["id"])
    assert real_log == b"hi\n"

    db_rel = quote("../../runnerd.db", safe="")
    paths = [
        "/v1/runners/..%2F..%2Fetc%2Fpasswd",
        "/v1/runners/..%2F..%2Frunnerd.db",
        "/v1/runners/%00",
        "/v1/runners/%2e%2e",
        "/v1/runners/..%5C..%5Crunnerd.db",
        f"/v1/runners/{rid}/runs/..%2F..%2Frunnerd.db/logs",
        f"/v1/runners/{rid}/runs/{db_rel}/logs",
        f"/v1/runners/{rid}/runs/..%2Frunnerd.db/logs",
        f"/v1/runners/{rid}/runs/%2e%2e%2f%2e%2e%2frunnerd.db/logs",
        f"/v1/runners/{rid}/runs/{run['id']}%2F..%2F..%2Frunnerd.db/logs",
        f"/v1/runners/{rid}/runs/{run['id']}%00/logs",
        f"/v1/runners/{rid}/runs/{run['id']}.log/logs",
        f"/v1/runners/{rid}/runs/{run['id'].upper()}%2F..%2F..%2Frunnerd.db/logs",
        f"/v1/runners/{rid}/runs/%2Fetc%2Fpasswd/logs",
        f"/v1/runners/{rid}/runs/{'a' * 4000}/logs",
        "/v1/runners/" + "f" * 4000,
    ]
    for path in paths:
        status, _, body = await raw(http, "GET", api.url + path, key=api.key)
        assert status == 404, (path, status, body[:300])
        assert as_json(body) == NOT_FOUND, path
        assert SQLITE_MAGIC not in body and b"root:" not in body, path

    # A 10 KB id: longer than the HTTP parser takes for a request line; any clear 4xx.
    for path in (
        "/v1/runners/" + "f" * 10_240,
        f"/v1/runners/{rid}/runs/{'../' * 3000}runnerd.db/logs",
    ):
        status, _, body = await raw(http, "GET", api.url + path, key=api.key)
        assert 400 <= status < 500, (len(path), status, body[:300])
        assert SQLITE_MAGIC not in body

    # Literal `..` segments, written byte for byte (no client normalises them away).
    for path in (
        f"/v1/runners/{rid}/runs/../../../runnerd.db",
        f"/v1/runners/{rid}/runs/../../../../../etc/passwd",
        f"/v1/runners/{rid}/runs/{run['id']}/../../../runnerd.db/logs",
        "/v1/../../../../etc/passwd",
        "/../../runnerd.db",
    ):
        status, response = await raw_http(daemon, path, api.key)
        assert 400 <= status < 500, (path, status, response[:300])
        assert SQLITE_MAGIC not in response and b"root:" not in response, path

    # The real log is still the real log, and the daemon is fine.
    assert await api.logs(rid, run["id"]) == real_log
    assert_alive(daemon)
    assert_nothing_outside_data_dir(daemon)


async def test_sql_looking_strings_are_stored_verbatim_and_the_tables_survive(
    api: Api, daemon: Daemon
) -> None:
    made = []
    for i, s in enumerate(SQL_STRINGS):
        name = (s + f" {i}")[:50]
        runner = await api.create_runner(
            name=name,
            run_command="printf '%s\\n' \"$SQL\"",
            env_variables=[{"env_key": "SQL", "env_val": s}],
        )
        made.append((runner, name, s))
        assert runner["name"] == name
        status, body = await api.post(
            f"/v1/runners/{runner['id']}/env_variables", {"env_key": "SQL_TWO", "env_val": s}
        )
        assert status == 200 and body["env_variable"]["env_val"] == s, body
    for runner, name, s in made:
        status, body = await api.get(f"/v1/runners/{runner['id']}")
        assert status == 200 and body["runner"]["name"] == name, body
        status, body = await api.get(f"/v1/runners/{runner['id']}/env_variables")
        assert {e["env_key"]: e["env_val"] for e in body["env_variables"]} == {
            "SQL": s,
            "SQL_TWO": s,
        }
    # The string reaches the container unchanged, and comes back in the log.
    runner, _, s = made[0]
    run = await api.trigger(
        runner["id"], {"env_variables": [{"env_key": "SQL", "env_val": s + "!"}]}
    )
    done = await api.wait_done(runner["id"], run["id"])
    assert done["status"] == "succeeded", done
    assert await api.logs(runner["id"], run["id"]) == (s + "!\n").encode()
    # A run_command that looks like SQL is stored (and run) verbatim too.
    odd = await api.create_runner(run_command='echo "\'; DROP TABLE runs; --"')
    assert odd["run_command"] == 'echo "\'; DROP TABLE runs; --"'
    run = await api.trigger(odd["id"])
    assert run["command"] == odd["run_command"]
    done = await api.wait_done(odd["id"], run["id"])
    assert await api.logs(odd["id"], run["id"]) == b"'; DROP TABLE runs; --\n"

    names = await runner_names(api)
    for _, name, _ in made:
        assert name in names
    assert len(await run_ids(api, runner["id"])) == 1
    assert_nothing_outside_data_dir(daemon)


# -- logs and disk ----------------------------------------------------------------------------------


async def test_log_past_max_log_bytes_is_cut_with_one_marker_and_the_run_goes_on(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data_dir = tmp_path / "limited-data"
    d = start_daemon(f'[storage]\ndata_dir = "{data_dir}"\nmax_log_bytes = 10000\n')
    api = Api(http, d.url, d.key)
    line = b"0123456789abcdef\n"
    runner = await api.create_runner(
        run_command="yes 0123456789abcdef | head -c 102400; echo finished; exit 0"
    )
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"])
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done

    logs = await api.logs(runner["id"], run["id"])
    lines = logs.split(b"\n")
    markers = [ln for ln in lines if b"log limit" in ln]
    assert len(markers) == 1, markers
    before_marker = logs[: logs.index(markers[0])]
    assert len(before_marker) <= 10_000, len(before_marker)
    assert before_marker == (line * 1000)[: len(before_marker)], "output was changed"
    assert len(before_marker) > 10_000 - 2 * len(line), "much less output than the limit"
    assert logs.endswith(markers[0] + b"\n"), logs[-200:]
    assert b"finished" not in logs  # past the limit, dropped (same pipe: order is certain)
    on_disk = (data_dir / "logs" / f"{run['id']}.log").stat().st_size
    assert on_disk < 40_000, f"{on_disk} bytes on disk for 10000 bytes of output"
    # A tail still works on a cut log.
    assert (await api.logs(runner["id"], run["id"], "?tail=1")).strip() == markers[0]
    assert_alive(d)


async def test_disk_full_while_writing_a_log_still_records_the_run_and_logs_error_once(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    base = Path(tempfile.mkdtemp(prefix="runnerd-diskfull-"))
    data_dir = base / "data"
    logs_dir = data_dir / "logs"
    logs_dir.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(logs_dir)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a 64k tmpfs over {logs_dir} to fill the disk (the test "
            f"needs root and mount permission): {mounted.stderr.strip()}"
        )
    d: Daemon | None = None
    try:
        d = start_daemon(f'[storage]\ndata_dir = "{data_dir}"\n')
        api = Api(http, d.url, d.key)
        runner = await api.create_runner(
            run_command="yes 0123456789abcdef | head -c 1048576; echo end >&2"
        )
        run = await api.trigger(runner["id"])
        done = await api.wait_done(runner["id"], run["id"])
        assert (done["status"], done["exit_code"], done["failure_reason"]) == (
            "succeeded",
            0,
            None,
        ), done

        errors = [ln for ln in d.log_text().splitlines() if "cannot write its log" in ln]
        assert len(errors) == 1, errors
        assert run["id"] in errors[0]
        # What fit is served; the API and the database are fine.
        status, body = await api.get(f"/v1/runners/{runner['id']}/runs/{run['id']}/logs")
        assert status == 200
        assert body == (b"0123456789abcdef\n" * 70_000)[: len(body)]
        assert 0 < len(body) <= 64 * 1024
        assert (await api.run(runner["id"], run["id"]))["status"] == "succeeded"

        # A second run on the full disk: its status too is recorded, its error said once.
        run2 = await api.trigger(runner["id"])
        done2 = await api.wait_done(runner["id"], run2["id"])
        assert (done2["status"], done2["exit_code"]) == ("succeeded", 0), done2
        errors = [ln for ln in d.log_text().splitlines() if "cannot write its log" in ln]
        assert len([ln for ln in errors if run2["id"] in ln]) == 1, errors
        assert_alive(d)
    finally:
        if d is not None and d.proc is not None and d.proc.poll() is None:
            d.stop()
            d.remove_containers()
        umount = subprocess.run(["umount", str(logs_dir)], capture_output=True, text=True)
        if umount.returncode != 0:
            subprocess.run(["umount", "-l", str(logs_dir)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
