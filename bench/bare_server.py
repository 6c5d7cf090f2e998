"""P3's baseline: a bare aiohttp server, in a process of its own, whose one
handler parses the trigger's JSON body and answers 200 with a small JSON run.

`python -m bench.bare_server` prints "listening on http://127.0.0.1:PORT" (as
runnerd does) and serves until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

from aiohttp import web


async def trigger(request: web.Request) -> web.Response:
    body = json.loads(await request.read() or b"null")
    env = body.get("env_variables", []) if isinstance(body, dict) else []
    return web.json_response(
        {
            "run": {
                "id": str(uuid.uuid4()),
                "runner_id": request.match_info["runner_id"],
                "status": "pending",
                "env_count": len(env),
            }
        }
    )


async def serve() -> None:
    app = web.Application()
    app.router.add_post("/v1/runners/{runner_id}/runs", trigger)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    for address in runner.addresses:
        print(f"listening on http://{address[0]}:{address[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
