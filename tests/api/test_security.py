"""Security holes that need no engine, against runnerd's app in process
(tests/api/conftest.py): non-UTF-8 bytes in the metrics Authorization header. The
rest (registries, a second daemon, webhooks) is tests/integration/test_security.py's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conftest import Daemon


async def raw_request(url: str, head: bytes) -> tuple[int, bytes]:
    """Send a request's head as raw bytes (aiohttp's client sends only valid text)."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest


async def test_metrics_with_non_utf8_authorization_bytes_is_401_without_a_traceback(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = await start_daemon('[server]\nlisten = "127.0.0.1:0"\nmetrics_token = "tok-123"\n')
    for value in (b"Bearer \xff\xfe\x80abc", b"\xc3\x28", b"Bearer tok-123\xff"):
        for path in (b"/metrics", b"/v1/runners"):
            status, rest = await raw_request(
                daemon.url,
                b"GET "
                + path
                + b" HTTP/1.1\r\nHost: x\r\nAuthorization: "
                + value
                + b"\r\nConnection: close\r\n\r\n",
            )
            assert status == 401, (path, value, rest[-300:])
    status, rest = await raw_request(
        daemon.url,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-123\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status == 200, rest[-300:]
    log = daemon.log_text()
    assert "Traceback" not in log and "failed" not in log, log[-3000:]
