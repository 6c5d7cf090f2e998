"""Big outputs on the real engine while runnerd lags behind the container: the
daemon is stopped (SIGSTOP) while its container writes, so the engine holds all of
the output unread, as when a slow daemon falls behind a fast writer."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon, EngineUnderTest, wait_until
from helpers_engine import GATE, RELEASE, engine_api

pytestmark = pytest.mark.swarm  # these run on the swarm backend too

MiB = 1024 * 1024


def container_state(run_id: str) -> str | None:
    return engine_api.state(f"runnerd-{run_id}")


async def run_while_daemon_is_stopped(
    api: Api, daemon: Daemon, command: str, timeout: float = 120
) -> tuple[dict[str, Any], str]:
    """Trigger a run of `command`; once the daemon reads its output, stop the daemon
    until the command has run and its container exited, then let it go on. The
    output starts with "ready\n". (the finished run, its runner id)"""
    runner = await api.create_runner(
        run_command=f"echo ready; {GATE}; {command}", timeout_seconds=600
    )
    run = await api.trigger(runner["id"])

    async def reading() -> bool:
        return await api.logs(runner["id"], run["id"]) == b"ready\n"

    await wait_until(reading, timeout=60, what="the daemon to read the output")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        assert engine_api.exec(f"runnerd-{run['id']}", *RELEASE) == 0
        await wait_until(
            lambda: asyncio.to_thread(lambda: container_state(run["id"]) == "exited"),
            timeout=timeout,
            interval=0.2,
            what="the container to exit",
        )
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    return await api.wait_done(runner["id"], run["id"], timeout=timeout), runner["id"]


async def get_logs(api: Api, runner_id: str, run_id: str) -> bytes:
    async with api.session.get(
        f"{api.url}/v1/runners/{runner_id}/runs/{run_id}/logs",
        headers=api.headers(),
        timeout=aiohttp.ClientTimeout(total=300),
    ) as resp:
        assert resp.status == 200, resp.status
        return await resp.read()


def first_difference(got: bytes, expected: bytes, line: int) -> str:
    at = next(
        (
            i
            for i in range(0, min(len(got), len(expected)), line)
            if got[i : i + line] != expected[i : i + line]
        ),
        min(len(got), len(expected)),
    )
    return (
        f"{len(got)} bytes, expected {len(expected)}; first difference in line "
        f"{at // line}: got {got[at : at + 20]!r}, expected {expected[at : at + 20]!r}"
    )


async def test_output_past_what_the_engine_kept_before_is_captured_byte_exact_after_a_lag(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # 300 MiB: more than the 4 x 64 MiB files the engine kept of a run before, which
    # it rotated while runnerd lagged (its follow stream then skips whole files).
    lines, width = 300 * 1024, 1024
    d = start_daemon(
        f'[storage]\ndata_dir = "{tmp_path / "big-data"}"\nmax_log_bytes = {lines * width + MiB}\n'
    )
    api = Api(http, d.url, d.key)
    pad = "x" * (width - 11)
    # %-formatting: awk's own % signs stay readable as %%.
    command = (
        'awk \'BEGIN { p = sprintf("%%%ds", ""); gsub(/ /, "x", p);'  # noqa: UP031
        ' for (i = 0; i < %d; i++) printf "%%09d %%s\\n", i, p }\'' % (len(pad), lines)
    )
    done, runner_id = await run_while_daemon_is_stopped(api, d, command)
    assert done["status"] == "succeeded", done
    got = await get_logs(api, runner_id, done["id"])
    assert got.startswith(b"ready\n"), got[:20]
    got = got[len(b"ready\n") :]
    expected = b"".join(b"%09d %s\n" % (i, pad.encode()) for i in range(lines))
    if got != expected:
        raise AssertionError(first_difference(got, expected, width))
    assert b"[runnerd]" not in got[-200:]


async def test_many_short_lines_are_cut_with_a_marker_before_the_engine_could_rotate_them(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    tmp_path: Path,
    engine_under_test: EngineUnderTest,
) -> None:
    # 600,000 numbered lines: Docker stores ~30 bytes more for each, so its 5 MiB
    # file (for a 2 MiB limit) is full after ~140,000 lines, long before the limit.
    # Read after a lag past its rotations, ~300,000 lines in the middle went missing
    # without a word; instead the log ends, exact so far, with a marker. Podman's
    # copy (k8s-file) never rotates, so there runnerd's own limit is what cuts it.
    d = start_daemon(
        f'[storage]\ndata_dir = "{tmp_path / "short-data"}"\nmax_log_bytes = {2 * MiB}\n'
    )
    api = Api(http, d.url, d.key)
    done, runner_id = await run_while_daemon_is_stopped(api, d, "seq 1 600000")
    assert done["status"] == "succeeded", done
    got = await get_logs(api, runner_id, done["id"])
    text, marker = got.rstrip(b"\n").rsplit(b"\n", 1)
    ready, *kept = text.split(b"\n")
    assert ready == b"ready"
    assert kept == [str(i).encode() for i in range(1, len(kept) + 1)], (
        f"{len(kept)} lines kept, not 1..{len(kept)} in order"
    )
    if engine_under_test.name in ("docker", "swarm"):  # the swarm's nodes are dockerds
        assert marker.startswith(b"[runnerd] log limit of the engine reached"), marker
        assert b"short lines" in marker, marker
        # cut before the engine's 5 MiB file could fill: ~30 bytes of framing a line
        assert 100_000 < len(kept) and len(text) + 30 * len(kept) < 5 * MiB, len(kept)
    else:
        assert marker == (
            b"[runnerd] log limit of %d bytes reached; further output of this run is dropped"
            % (2 * MiB)
        ), marker
        # every whole line up to the limit, none past it
        assert 2 * MiB - len(b"600000\n") < len(text) + 1 <= 2 * MiB, len(text)
    assert got.count(b"[runnerd]") == 1
