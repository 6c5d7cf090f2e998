"""Log reads on a real daemon: a tail and a page before a cursor of a large log of
short lines are exactly its last lines (guided by the index beside the log, rebuilt
when it is missing), and live log streams past `[server] max_log_followers` are
refused with a 503 naming the key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, wait_until
from helpers_engine import RELEASE, engine_api

from runnerd.logs import HEADER

pytestmark = pytest.mark.swarm  # these run on the swarm backend too

JSON = {"Accept": "application/json"}
SSE = {"Accept": "text/event-stream"}
LINES = 200_000


def record_offsets(path: Path) -> list[int]:
    """The offset of every record of a log file: its entries' ids."""
    data = path.read_bytes()
    offsets, pos = [], 0
    while pos + HEADER.size <= len(data):
        offsets.append(pos)
        pos += HEADER.size + HEADER.unpack_from(data, pos)[2]
    return offsets


async def test_tail_of_a_large_log_of_short_lines_is_exactly_its_last_lines(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # One log read thread: concurrent reads queue for it, none fails.
    daemon = start_daemon(
        f'[storage]\ndata_dir = "{tmp_path / "logs-daemon" / "data"}"\nlog_read_threads = 1\n',
        name="logs-daemon",
    )
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command=f"seq 1 {LINES}", timeout_seconds=300)
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"], timeout=240)
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done

    full = await api.logs(runner["id"], run["id"])
    assert full == b"".join(b"%d\n" % i for i in range(1, LINES + 1)), full[-200:]
    lines = full.splitlines(keepends=True)
    log_path = daemon.data_dir / "logs" / f"{run['id']}.log"
    index_path = log_path.with_suffix(".idx")
    assert log_path.stat().st_size > 3 * 1024 * 1024  # many records: one per line
    assert index_path.exists()

    async def check_reads() -> None:
        for n in (5, 1, 1000):
            assert await api.logs(runner["id"], run["id"], f"?tail={n}") == b"".join(lines[-n:]), n
        offsets = record_offsets(log_path)
        status, body = await api.get(
            f"/v1/runners/{runner['id']}/runs/{run['id']}/logs?before={offsets[-1]}&limit=5",
            headers=JSON,
        )
        assert status == 200, body
        assert [(e["id"], e["msg"]) for e in body["logs"]] == [
            (str(offsets[i]), str(i + 1)) for i in range(len(offsets) - 6, len(offsets) - 1)
        ]

    await check_reads()
    tails = await asyncio.gather(
        *(api.logs(runner["id"], run["id"], f"?tail={n}") for n in range(1, 41))
    )
    assert tails == [b"".join(lines[-n:]) for n in range(1, 41)]
    # A log from before there were indexes: read whole once, indexed again.
    daemon.stop()
    index_path.unlink()
    daemon.start()
    api = Api(http, daemon.url, daemon.key)
    await check_reads()
    assert index_path.exists()


async def open_stream(api: Api, runner_id: str, run_id: str, sse: bool) -> aiohttp.ClientResponse:
    url = f"{api.url}/v1/runners/{runner_id}/runs/{run_id}/logs"
    if sse:
        return await api.session.get(url, headers={**api.headers(), **SSE})
    return await api.session.get(url, params={"follow": "true"}, headers=api.headers())


async def test_live_log_streams_past_the_configured_cap_get_503_naming_the_key(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = start_daemon('[server]\nlisten = "127.0.0.1:0"\nmax_log_followers = 2\n')
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(run_command="echo started; sleep 600", timeout_seconds=900)
    run = await api.trigger(runner["id"])
    await api.wait_status(runner["id"], run["id"], "running", timeout=60)
    streams: list[aiohttp.ClientResponse] = []
    try:
        streams.append(await open_stream(api, runner["id"], run["id"], sse=False))
        streams.append(await open_stream(api, runner["id"], run["id"], sse=True))
        assert [s.status for s in streams] == [200, 200]
        assert await asyncio.wait_for(streams[0].content.readline(), 60) == b"started\n"

        for sse in (False, True):
            refused = await open_stream(api, runner["id"], run["id"], sse=sse)
            body: Any = json.loads(await refused.read())
            assert refused.status == 503, body
            assert body["status"] == 503
            assert "max_log_followers" in body["error"] and "2" in body["error"], body
            assert refused.headers.get("Retry-After")
        # Reads that are not live are not counted.
        assert await api.logs(runner["id"], run["id"], "?tail=1") == b"started\n"
        refusals = [ln for ln in daemon.log_text().splitlines() if "max_log_followers" in ln]
        assert len(refusals) == 1, refusals  # one line for the stretch at the cap

        # A client that leaves a quiet run (no output to write) frees its slot too.
        streams.pop(0).close()

        async def admitted() -> bool:
            s = await open_stream(api, runner["id"], run["id"], sse=False)
            if s.status == 200:
                streams.append(s)
                return True
            s.close()
            return False

        await wait_until(admitted, timeout=30, what="a follower to be admitted again")
        assert await asyncio.wait_for(streams[-1].content.readline(), 60) == b"started\n"
    finally:
        for s in streams:
            s.close()
    daemon.stop()
    assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]


async def test_log_index_torn_by_a_crash_is_repaired_and_the_log_stays_exact(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    """The daemon died while appending to a run's log index (and its last entries
    never reached the disk); the restarted daemon resumes the run from the log."""
    daemon = start_daemon()
    api = Api(http, daemon.url, daemon.key)
    runner = await api.create_runner(
        run_command="seq 1 30000; while [ ! -e /tmp/go ]; do sleep 0.1; done; seq 30001 60000",
        timeout_seconds=300,
    )
    run = await api.trigger(runner["id"])

    async def first_half_read() -> bool:
        tail = await api.logs(runner["id"], run["id"], "?tail=1")
        return tail == b"30000\n"

    await wait_until(first_half_read, timeout=120, what="the first half of the output")
    daemon.kill()
    index_path = daemon.data_dir / "logs" / f"{run['id']}.idx"
    index = index_path.read_bytes()
    assert len(index) > 200, len(index)  # entries beyond the header
    index_path.write_bytes(index[: len(index) // 2 - 7])  # half lost, the last entry torn

    daemon.start()
    api = Api(http, daemon.url, daemon.key)
    await api.wait_status(runner["id"], run["id"], "running", timeout=60)
    # The tail of the resumed log is right before any more output arrives.
    assert await api.logs(runner["id"], run["id"], "?tail=2") == b"29999\n30000\n"
    assert await asyncio.to_thread(engine_api.exec, f"runnerd-{run['id']}", *RELEASE) == 0
    done = await api.wait_done(runner["id"], run["id"], timeout=120)
    assert (done["status"], done["exit_code"]) == ("succeeded", 0), done
    assert await api.logs(runner["id"], run["id"]) == b"".join(b"%d\n" % i for i in range(1, 60001))
    assert await api.logs(runner["id"], run["id"], "?tail=3") == b"59998\n59999\n60000\n"
    assert index_path.stat().st_size > len(index)  # repaired and grown
    assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]
