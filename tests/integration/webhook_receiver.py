"""An HTTP server in the test that receives runnerd's webhook deliveries, on
127.0.0.1. Import the fixture into a test module: `from webhook_receiver import
Receiver, receiver`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web


@dataclass
class Receiver:
    """Records each POST to `url` and answers per `respond` (200 without it)."""

    url: str = ""
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    respond: Callable[[int], Awaitable[int]] | None = None

    @property
    def bodies(self) -> list[bytes]:
        return [body for body, _ in self.requests]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((body, dict(request.headers)))
        status = await self.respond(len(self.requests)) if self.respond else 200
        return web.Response(status=status, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/hook"
    yield rec
    await runner.cleanup()
