"""systemd's notify loop (runnerd/notify.py) against a real datagram socket, and the
journald log format (runnerd/cli.py). The real systemd is in tests/systemd/."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from runnerd import notify
from runnerd.cli import JournalFormatter


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's, named by $NOTIFY_SOCKET."""
    tmp = tempfile.mkdtemp(prefix="rnd-", dir="/tmp")  # short: AF_UNIX limits the path
    path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(notify, "STATUS_EVERY_SECONDS", 0.01)
    yield sock
    sock.close()
    shutil.rmtree(tmp, ignore_errors=True)


async def receive(sock: socket.socket, timeout: float = 10) -> dict[str, str]:
    raw = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), timeout)
    return dict(line.split("=", 1) for line in raw.decode().splitlines())


async def test_watchdog_pings_go_on_while_the_status_check_hangs(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "STATUS_TIMEOUT_SECONDS", 0.2)
    unstuck = asyncio.Event()
    hangs = 0

    async def status() -> str:
        nonlocal hangs
        if not unstuck.is_set():
            hangs += 1
            await unstuck.wait()  # a query that never returns
        return "serving; 1 pending, 0 running"

    ready = asyncio.Event()
    ready.set()
    task = asyncio.create_task(notify.tell_systemd(ready, status, ready_wait_seconds=5))
    try:
        pings = 0
        first_status = ""
        while pings < 5 or not first_status:  # pings before, around and after READY
            message = await receive(notify_socket)
            if message.get("WATCHDOG") == "1":
                pings += 1
            if message.get("READY") == "1":
                first_status = message["STATUS"]
        assert first_status == "serving; status unknown: reading it took over 0.2 s"
        assert hangs >= 1
        unstuck.set()
        while (message := await receive(notify_socket)).get("STATUS") is None:
            assert message == {"WATCHDOG": "1"}, message
        assert message == {"STATUS": "serving; 1 pending, 0 running"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_status_is_sent_with_ready_and_once_per_change(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC")  # only STATUS on the socket
    texts = ["serving; 0 pending, 0 running"]
    checks = 0

    async def status() -> str:
        nonlocal checks
        checks += 1
        return texts[-1]

    ready = asyncio.Event()
    task = asyncio.create_task(notify.tell_systemd(ready, status, ready_wait_seconds=30))
    try:
        await asyncio.sleep(0)
        assert checks == 0  # nothing before READY...
        ready.set()
        assert await receive(notify_socket) == {  # ...which carries the counts at once
            "READY": "1",
            "STATUS": "serving; 0 pending, 0 running",
        }
        for text in (
            "serving; 1 pending, 0 running",
            "serving; 0 pending, 1 running",
            "serving; 0 pending, 0 running; the Docker engine does not answer",
        ):
            seen = checks
            texts.append(text)
            assert await receive(notify_socket) == {"STATUS": text}
            assert checks > seen
            # unchanged text is not sent again, however often it is checked
            while checks < seen + 5:
                await asyncio.sleep(0.01)
            with pytest.raises(TimeoutError):
                await receive(notify_socket, timeout=0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_without_notify_socket_nothing_is_checked_and_the_task_runs_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon supervises it like its other side tasks: it must not end by itself."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setattr(notify, "STATUS_EVERY_SECONDS", 0.001)
    checks = 0

    async def status() -> str:
        nonlocal checks
        checks += 1
        return "serving"

    ready = asyncio.Event()
    ready.set()
    task = asyncio.create_task(notify.tell_systemd(ready, status, ready_wait_seconds=1))
    await asyncio.sleep(0.05)  # many status periods
    assert not task.done()
    assert checks == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def record(level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("runnerd.test", level, __file__, 1, msg, None, exc_info)


def test_journal_formatter_prefixes_each_level_with_its_syslog_priority() -> None:
    f = JournalFormatter("%(levelname)s %(name)s: %(message)s")
    assert f.format(record(logging.CRITICAL, "c")) == "<2>CRITICAL runnerd.test: c"
    assert f.format(record(logging.ERROR, "e")) == "<3>ERROR runnerd.test: e"
    assert f.format(record(logging.WARNING, "w")) == "<4>WARNING runnerd.test: w"
    assert f.format(record(logging.INFO, "i")) == "<6>INFO runnerd.test: i"
    assert f.format(record(logging.DEBUG, "d")) == "<7>DEBUG runnerd.test: d"


def test_journal_formatter_prefixes_every_line_of_a_traceback() -> None:
    lines = (
        JournalFormatter("%(message)s")
        .format(record(logging.ERROR, "two\nlines", exc=True))
        .split("\n")
    )
    assert lines[:2] == ["<3>two", "<3>lines"]
    assert any("ValueError: boom" in line for line in lines)
    assert all(line.startswith("<3>") for line in lines), lines


LOG_A_WARNING = (
    "from runnerd.cli import setup_logging; import logging; setup_logging(); "
    "logging.getLogger('runnerd').warning('engine gone')"
)


def test_log_lines_get_priorities_only_when_stderr_is_the_journal_stream(tmp_path) -> None:
    """journald's stream is told apart by $JOURNAL_STREAM naming stderr's device and
    inode; a process that inherited the variable but logs elsewhere gets plain lines."""
    out = tmp_path / "stderr"
    with out.open("w") as f:
        st = os.fstat(f.fileno())
        stream = f"{st.st_dev}:{st.st_ino}"
        for journal_stream in (stream, f"{st.st_dev}:{st.st_ino + 1}", ""):
            f.truncate(0)
            f.seek(0)
            subprocess.run(
                [sys.executable, "-c", LOG_A_WARNING],
                stderr=f,
                check=True,
                env={**os.environ, "JOURNAL_STREAM": journal_stream},
                timeout=30,
            )
            f.flush()
            line = out.read_text().strip()
            if journal_stream == stream:
                assert line == "<4>WARNING runnerd: engine gone", line
            else:
                assert line.endswith(" WARNING runnerd: engine gone"), line
                assert not line.startswith("<"), line  # with our own timestamp instead


def test_bad_config_error_is_at_err_priority_when_stderr_is_the_journal_stream(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[docker]\nnetwrok = "none"\n')
    out = tmp_path / "stderr"
    with out.open("w") as f:
        st = os.fstat(f.fileno())
        done = subprocess.run(
            [sys.executable, "-m", "runnerd", "serve", "--config", str(bad)],
            stderr=f,
            timeout=30,
            env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
        )
    assert done.returncode == 2
    assert out.read_text().startswith("<3>runnerd: bad config: docker.netwrok: unknown key")
