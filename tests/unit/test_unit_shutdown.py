"""The stop's bounds and its building blocks: bounded steps, cancelling side tasks.
The real daemon's stop is proven in tests/integration/test_shutdown.py."""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
from pathlib import Path

import pytest

from runnerd import config as config_mod
from runnerd.daemon import _bounded, _busy_threads, _cancel, stop_bounds, stop_seconds

UNIT_FILE = Path(__file__).resolve().parents[2] / "systemd" / "runnerd.service"


def _timeout_stop_sec() -> float:
    match = re.search(r"^TimeoutStopSec=(\d+)s?$", UNIT_FILE.read_text(), re.M)
    assert match, f"no TimeoutStopSec=<seconds> line in {UNIT_FILE}"
    return float(match.group(1))


def test_default_config_stop_deadline_fits_the_units_timeout_stop_sec() -> None:
    bounds = stop_bounds(config_mod.load(None))
    assert bounds.deadline < _timeout_stop_sec()
    assert bounds.total == sum(bounds.phases) < bounds.deadline


@pytest.mark.parametrize(
    "backend",
    ["", '[executor]\nbackend = "swarm"\n[docker]\nnetwork = "bridge"\n'],
    ids=["docker", "swarm"],
)
def test_on_shutdown_stop_with_the_default_grace_also_fits_the_units_timeout_stop_sec(
    tmp_path: Path, backend: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[scheduler]\non_shutdown = "stop"\n' + backend)
    config = config_mod.load(str(path))
    bounds = stop_bounds(config)
    assert bounds.scheduler > stop_seconds(config) >= config.docker.stop_grace_seconds
    assert bounds.deadline < _timeout_stop_sec()


async def test_a_step_that_raises_is_reported_and_does_not_raise() -> None:
    async def boom() -> None:
        raise RuntimeError("injected")

    assert await _bounded("webhooks", boom(), 5) == "webhooks failed (RuntimeError: injected)"


async def test_a_step_that_hangs_even_in_its_cancel_is_left_behind_at_its_bound() -> None:
    """As aiosqlite's close does when cancelled behind a write that waits for a lock."""
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await release.wait()
        finally:
            await release.wait()  # its cleanup hangs too

    problem = await asyncio.wait_for(_bounded("the database", stubborn(), 0.2), 5)
    assert problem == "the database did not stop within 0 s"
    release.set()


async def test_cancel_ends_a_task_that_swallows_one_cancel() -> None:
    """Python 3.11's asyncio.wait_for returns normally when cancelled just as what
    it awaits completes: the systemd notifier's wait for the reconciled queue (as it was),
    cancelled by a SIGTERM right after start, then sleeps on forever."""
    reconciled = asyncio.Event()

    async def side_loop() -> None:
        await asyncio.wait_for(reconciled.wait(), 60)
        while True:
            await asyncio.sleep(30)

    task = asyncio.create_task(side_loop())
    await asyncio.sleep(0)  # in wait_for
    reconciled.set()
    await asyncio.sleep(0)  # the inner wait has completed; wait_for has not resumed
    task.cancel()
    await asyncio.wait({task}, timeout=0.5)
    if sys.version_info < (3, 12):
        assert not task.done(), "one cancel was enough: the hazard is gone in this Python"
    await asyncio.wait_for(_cancel([task]), 5)
    assert task.cancelled()


async def test_busy_threads_names_a_busy_worker_and_not_an_idle_one() -> None:
    release = threading.Event()

    def long_scan() -> None:
        release.wait(30)

    scan = asyncio.get_running_loop().run_in_executor(None, long_scan)
    try:
        deadline = time.monotonic() + 5
        while not any("long_scan" in b for b in _busy_threads()):
            assert time.monotonic() < deadline, _busy_threads()
            await asyncio.sleep(0.01)
    finally:
        release.set()
        await scan
    deadline = time.monotonic() + 5
    while any("long_scan" in b for b in _busy_threads()):  # idle again, waiting for work
        assert time.monotonic() < deadline, _busy_threads()
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("config_text", ["", '[scheduler]\non_shutdown = "stop"\n'])
def test_stop_bounds_are_positive_and_come_from_the_config(
    tmp_path: Path, config_text: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text + "[docker]\nstop_grace_seconds = 30\n")
    bounds = stop_bounds(config_mod.load(str(path)))
    assert all(b > 0 for b in bounds.phases)
    stop_mode = "stop" in config_text
    assert (bounds.scheduler >= 30) is stop_mode
