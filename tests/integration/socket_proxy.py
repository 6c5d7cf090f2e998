"""A unix-socket proxy in front of the Docker engine that a test switches off and on,
to give a runnerd process an engine that goes away and comes back.

It runs in the test's event loop: `await proxy.start()` listens on `path` and
forwards every connection's bytes both ways to the real engine socket;
`await proxy.stop()` closes the listening socket, removes its file (so new
connections fail at once, as with a stopped engine) and aborts every open
connection (streams, waits and kept-alive connections break mid-way); `start()`
again brings it back on the same path.

`hold(pattern)` makes the engine slow at one step: a request whose request line
matches `pattern` (e.g. `POST /v1.41/containers/.../start`) is held — not
forwarded — until `release()`; `seen(pattern)` counts the requests seen so far.
`fail(pattern, status)` makes the engine refuse one step: a matching request is
answered by the proxy itself with that HTTP status and a Docker-style JSON
`{"message": ...}` (then the connection closes), until `unfail()`.
Requests are recognised at the start of a chunk the client wrote, which is how
aiohttp writes them (headers in one write).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re

from helpers_engine import docker_socket


class SocketProxy:
    def __init__(self, path: str, upstream: str | None = None) -> None:
        self.path = path
        self.upstream = upstream or docker_socket()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0  # accepted so far, over every start
        self.request_lines: list[str] = []
        self._hold: re.Pattern[str] | None = None
        self._released = asyncio.Event()
        self.held = 0  # requests held back so far
        self._fail: tuple[re.Pattern[str], int, str] | None = None
        self.failed = 0  # requests answered with an injected error so far

    def hold(self, pattern: str) -> None:
        self._hold = re.compile(pattern)
        self._released.clear()

    def release(self) -> None:
        self._hold = None
        self._released.set()

    def fail(self, pattern: str, status: int = 500, message: str = "injected engine error") -> None:
        self._fail = (re.compile(pattern), status, message)

    def unfail(self) -> None:
        self._fail = None

    def seen(self, pattern: str) -> int:
        return sum(1 for line in self.request_lines if re.search(pattern, line))

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        assert self._server is None, "proxy already running"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._handle, path=self.path)

    async def stop(self) -> None:
        """Like an engine that died: nothing listens, every connection is cut."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for writer in list(self._writers):
            writer.transport.abort()
            writer.close()
        self._writers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _maybe_hold(self, data: bytes) -> bytes | None:
        """Holds a request while told to; the error answer to send instead of
        forwarding it, when told to fail it."""
        match = re.match(rb"(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n", data)
        if match is None:
            return None
        line = match.group(0).decode("latin-1").strip()
        self.request_lines.append(line)
        if self._fail is not None and self._fail[0].search(line):
            self.failed += 1
            _, status, message = self._fail
            body = json.dumps({"message": message}).encode()
            return (
                f"HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1") + body
        if self._hold is not None and self._hold.search(line):
            self.held += 1
            await self._released.wait()
        return None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_w)
        try:
            engine_r, engine_w = await asyncio.open_unix_connection(self.upstream)
        except OSError:
            client_w.transport.abort()
            client_w.close()
            self._writers.discard(client_w)
            return
        self._writers.add(engine_w)
        pumps = [
            asyncio.ensure_future(self._pump(client_r, engine_w, reply=client_w)),
            asyncio.ensure_future(self._pump(engine_r, client_w)),
        ]
        self._tasks.update(pumps)
        try:
            # An EOF is passed on (half-close) and the other direction goes on; a
            # broken side ends the whole connection.
            pending = set(pumps)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.cancelled() or t.exception() or not t.result() for t in done):
                    break
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for w in (client_w, engine_w):
                self._writers.discard(w)
                w.transport.abort()
                w.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply: asyncio.StreamWriter | None = None,
    ) -> bool:
        """Copy until EOF (True, the EOF passed on) or a broken connection (False).
        `reply`: this pump carries requests, and injected errors go back there."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return True
                if reply is not None:
                    answer = await self._maybe_hold(data)
                    if answer is not None:  # refused: answer it, close the connection
                        reply.write(answer)
                        await reply.drain()
                        return False
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return False
